/*
 * tstore_sqlite_db.c — the SQLite back-end's plumbing: status names, errors
 * kept on the handle, prepared-statement helpers, the back-end's own write
 * transactions, and the meta table (name -> value) that holds the master
 * key check, the current data key and the re-encryption position.
 *
 * Every helper resets what it steps and clears bindings, since values are
 * bound SQLITE_STATIC (without a copy) from the caller's buffers.
 */
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsq.h"

/* ---- errors and statements ------------------------------------------- */

const char *tstore_status_name(tstore_status st)
{
    switch (st) {
    case TSTORE_OK:
        return "ok";
    case TSTORE_DUPLICATE:
        return "duplicate";
    case TSTORE_NOT_FOUND:
        return "not found";
    case TSTORE_INVALID:
        return "invalid";
    case TSTORE_BUSY:
        return "busy";
    case TSTORE_FULL:
        return "full";
    case TSTORE_IO:
        return "io";
    case TSTORE_CORRUPT:
        return "corrupt";
    case TSTORE_KEY:
        return "key";
    case TSTORE_VERSION:
        return "version";
    case TSTORE_NOMEM:
        return "out of memory";
    case TSTORE_STOPPED:
        return "stopped";
    }
    return "unknown";
}

bool tstore_device_valid(const char *device)
{
    if (!device || !device[0])
        return false;
    size_t i = 0;
    for (; device[i]; i++) {
        unsigned char c = (unsigned char)device[i];
        if (i >= TSTORE_DEVICE_MAX || c < 0x21 || c == 0x7f)
            return false;
    }
    return true;
}

tstore_status tsq_fail(tsq *s, tstore_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(s->err, sizeof s->err, fmt, ap) < 0)
        s->err[0] = '\0';
    va_end(ap);
    return st;
}

static tstore_status map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TSTORE_BUSY;
    case SQLITE_FULL:
        return TSTORE_FULL;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_FORMAT:
        return TSTORE_CORRUPT;
    case SQLITE_NOMEM:
        return TSTORE_NOMEM;
    default:
        return TSTORE_IO;
    }
}

tstore_status tsq_sqlerr(tsq *s, int rc, const char *what)
{
    tstore_status st = map_rc(rc);
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if (st == TSTORE_FULL)
        return tsq_fail(s, st, "%s: disk full (%s)", what, msg);
    if (st == TSTORE_CORRUPT)
        return tsq_fail(s, st, "corrupt: %s: %s", what, msg);
    return tsq_fail(s, st, "%s: %s", what, msg);
}

void tsq_done(tsq *s, enum tsq_stmt id)
{
    /* reset repeats the last step's error, which the caller already saw. */
    (void)sqlite3_reset(s->st[id]);
    (void)sqlite3_clear_bindings(s->st[id]);
}

tstore_status tsq_run(tsq *s, enum tsq_stmt id, const char *what)
{
    int rc = sqlite3_step(s->st[id]);
    tstore_status st = TSTORE_OK;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        st = tsq_sqlerr(s, rc, what);
    tsq_done(s, id);
    return st;
}

static tstore_status bind_rc(tsq *s, int rc)
{
    return rc == SQLITE_OK ? TSTORE_OK : tsq_sqlerr(s, rc, "binding a parameter");
}

tstore_status tsq_bind_int(tsq *s, enum tsq_stmt id, int i, int64_t v)
{
    return bind_rc(s, sqlite3_bind_int64(s->st[id], i, (sqlite3_int64)v));
}

tstore_status tsq_bind_blob(tsq *s, enum tsq_stmt id, int i, const void *p, size_t n)
{
    if (n > INT_MAX)
        return tsq_fail(s, TSTORE_INVALID, "value too large");
    /* A zero-length blob with a NULL pointer would bind SQL NULL. */
    static const uint8_t empty[1];
    return bind_rc(s, sqlite3_bind_blob(s->st[id], i, p ? p : empty, (int)n, SQLITE_STATIC));
}

tstore_status tsq_bind_blob_copy(tsq *s, enum tsq_stmt id, int i, const void *p, size_t n)
{
    if (n > INT_MAX)
        return tsq_fail(s, TSTORE_INVALID, "value too large");
    return bind_rc(s, sqlite3_bind_blob(s->st[id], i, p, (int)n, SQLITE_TRANSIENT));
}

tstore_status tsq_bind_text(tsq *s, enum tsq_stmt id, int i, const char *text)
{
    return bind_rc(s, sqlite3_bind_text(s->st[id], i, text, -1, SQLITE_STATIC));
}

tstore_status tsq_bind_null(tsq *s, enum tsq_stmt id, int i)
{
    return bind_rc(s, sqlite3_bind_null(s->st[id], i));
}

tstore_status tsq_reserve(tsq *s, int which, size_t n)
{
    if (n <= s->cap[which])
        return TSTORE_OK;
    size_t cap = s->cap[which] ? s->cap[which] : 256;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    uint8_t *p = malloc(cap);
    if (!p)
        return tsq_fail(s, TSTORE_NOMEM, "out of memory");
    if (s->buf[which]) {
        /* Old contents may be plaintext: wipe before handing memory back. */
        sodium_memzero(s->buf[which], s->cap[which]);
        free(s->buf[which]);
    }
    s->buf[which] = p;
    s->cap[which] = cap;
    return TSTORE_OK;
}

tstore_status tsq_write_begin(tsq *s)
{
    if (s->in_write)
        return tsq_fail(s, TSTORE_INVALID, "not allowed inside the caller's transaction");
    int rc = sqlite3_step(s->st[ST_BEGIN]);
    tsq_done(s, ST_BEGIN);
    if (rc != SQLITE_DONE)
        return tsq_sqlerr(s, rc, "starting a transaction");
    tstore_status st = tsq_refresh(s, false);
    if (st != TSTORE_OK) {
        (void)sqlite3_step(s->st[ST_ROLLBACK]);
        tsq_done(s, ST_ROLLBACK);
    }
    return st;
}

tstore_status tsq_write_end(tsq *s, tstore_status st)
{
    if (st == TSTORE_OK) {
        int rc = sqlite3_step(s->st[ST_COMMIT]);
        tsq_done(s, ST_COMMIT);
        if (rc == SQLITE_DONE)
            return TSTORE_OK;
        st = tsq_sqlerr(s, rc, "committing");
    }
    if (!sqlite3_get_autocommit(s->db)) {
        (void)sqlite3_step(s->st[ST_ROLLBACK]);
        tsq_done(s, ST_ROLLBACK);
    }
    /* What this handle cached may describe the rolled-back state. */
    tsq_devs_clear(s);
    s->next_row_known = false;
    return st;
}

/* ---- meta ------------------------------------------------------------- */

tstore_status tsq_meta_get_int(tsq *s, const char *name, int64_t *out, bool *found)
{
    *found = false;
    tstore_status st = tsq_bind_text(s, ST_META_GET, 1, name);
    if (st != TSTORE_OK)
        return st;
    sqlite3_stmt *q = s->st[ST_META_GET];
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(q, 0) != SQLITE_INTEGER)
            st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: meta value '%s' is not an integer", name);
        else {
            *out = sqlite3_column_int64(q, 0);
            *found = true;
        }
    } else if (rc != SQLITE_DONE) {
        st = tsq_sqlerr(s, rc, "reading meta");
    }
    tsq_done(s, ST_META_GET);
    return st;
}

tstore_status tsq_meta_put_int(tsq *s, const char *name, int64_t v)
{
    tstore_status st = tsq_bind_text(s, ST_META_PUT, 1, name);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_META_PUT, 2, v);
    if (st != TSTORE_OK) {
        tsq_done(s, ST_META_PUT);
        return st;
    }
    return tsq_run(s, ST_META_PUT, "writing meta");
}

tstore_status tsq_meta_put_blob(tsq *s, const char *name, const void *p, size_t n)
{
    tstore_status st = tsq_bind_text(s, ST_META_PUT, 1, name);
    if (st == TSTORE_OK)
        st = tsq_bind_blob(s, ST_META_PUT, 2, p, n);
    if (st != TSTORE_OK) {
        tsq_done(s, ST_META_PUT);
        return st;
    }
    return tsq_run(s, ST_META_PUT, "writing meta");
}

tstore_status tsq_meta_del(tsq *s, const char *name)
{
    tstore_status st = tsq_bind_text(s, ST_META_DEL, 1, name);
    if (st != TSTORE_OK) {
        tsq_done(s, ST_META_DEL);
        return st;
    }
    return tsq_run(s, ST_META_DEL, "writing meta");
}

tstore_status tsq_meta_get_check(tsq *s, uint8_t out[TCRYPT_CHECK_LEN])
{
    tstore_status st = tsq_bind_text(s, ST_META_GET, 1, "master_check");
    if (st != TSTORE_OK)
        return st;
    sqlite3_stmt *q = s->st[ST_META_GET];
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(q, 0) != SQLITE_BLOB ||
            sqlite3_column_bytes(q, 0) != TCRYPT_CHECK_LEN)
            st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: bad master key check value");
        else
            memcpy(out, sqlite3_column_blob(q, 0), TCRYPT_CHECK_LEN);
    } else if (rc == SQLITE_DONE) {
        st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: no master key check value");
    } else {
        st = tsq_sqlerr(s, rc, "reading meta");
    }
    tsq_done(s, ST_META_GET);
    return st;
}
