/*
 * alert_store.c — the alerts table in DATA_DIR/alerts.db (see alert_store.h).
 *
 * Same connection habits as the registry: WAL (moatctl reads while the hub
 * writes), synchronous=NORMAL (an alert lost in a power cut is raised again
 * by the condition that caused it; no acknowledgement depends on it),
 * defensive mode, untrusted schema, a versioned schema, and rows checked
 * when read back: a value that breaks the schema's rules is CORRUPT.
 */
#include "alert_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#define SCHEMA_VERSION 1

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS alerts("
    " id INTEGER PRIMARY KEY,"
    " kind TEXT NOT NULL,"
    " subject TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK(state IN ('open','cleared','event')),"
    " raised_ms INTEGER NOT NULL,"
    " last_ms INTEGER NOT NULL,"
    " cleared_ms INTEGER,"
    " count INTEGER NOT NULL DEFAULT 1,"
    " details TEXT NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(kind, subject)"
    " WHERE state = 'open';"
    "CREATE INDEX IF NOT EXISTS alerts_last ON alerts(last_ms);";

struct alert_store {
    sqlite3 *db;
    bool readonly;
    char err[256];
};

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static monitor_status
fail(alert_store *s, monitor_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(s->err, sizeof s->err, fmt, ap) < 0)
        s->err[0] = '\0';
    va_end(ap);
    return st;
}

static monitor_status sqlerr(alert_store *s, int rc, const char *what)
{
    monitor_status st;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        st = MONITOR_BUSY;
        break;
    case SQLITE_NOMEM:
        st = MONITOR_NOMEM;
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        st = MONITOR_CORRUPT;
        break;
    default:
        st = MONITOR_IO;
    }
    return fail(s, st, "%s: %s", what, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

const char *alert_store_errmsg(const alert_store *s)
{
    return s ? s->err : "no alert store";
}

static monitor_status exec(alert_store *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? MONITOR_OK : sqlerr(s, rc, what);
}

static monitor_status prepare(alert_store *s, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, out, NULL);
    if (rc != SQLITE_OK) {
        *out = NULL;
        return sqlerr(s, rc, "alert store query");
    }
    return MONITOR_OK;
}

static monitor_status schema(alert_store *s, bool create)
{
    sqlite3_stmt *q = NULL;
    monitor_status st = prepare(s, "PRAGMA user_version", &q);
    if (st != MONITOR_OK)
        return st;
    int64_t v = -1;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    else
        st = sqlerr(s, rc, "reading the alert store's version");
    sqlite3_finalize(q);
    if (st != MONITOR_OK)
        return st;
    if (v == SCHEMA_VERSION)
        return MONITOR_OK;
    if (v > SCHEMA_VERSION)
        return fail(s, MONITOR_CORRUPT,
                    "alerts.db schema version %lld is newer than this program's", (long long)v);
    if (v != 0 || !create)
        return fail(s, MONITOR_CORRUPT, "not a moat alert store (schema version %lld)",
                    (long long)v);
    if ((st = exec(s, "BEGIN IMMEDIATE", "starting a transaction")) != MONITOR_OK)
        return st;
    st = exec(s, SCHEMA, "creating the alert store");
    if (st == MONITOR_OK)
        st = exec(s, "PRAGMA user_version=1", "setting the alert store's version");
    if (st == MONITOR_OK)
        return exec(s, "COMMIT", "committing");
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

monitor_status alert_store_open(const char *path, int flags, alert_store **out, char *err,
                                size_t errlen)
{
    *out = NULL;
    bool create = flags & ALERT_STORE_CREATE, readonly = flags & ALERT_STORE_READONLY;
    if (!path || (create && readonly)) {
        if (err && errlen)
            snprintf(err, errlen, "alert_store_open: invalid arguments");
        return MONITOR_INVALID;
    }
    struct stat sb;
    if (!create && stat(path, &sb) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? MONITOR_NOT_FOUND : MONITOR_IO;
    }
    if (create) {
        /* 0600 from the start, like every file in the data directory. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || close(fd) != 0) {
            if (err && errlen)
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return MONITOR_IO;
        }
    }
    alert_store *s = calloc(1, sizeof *s);
    if (!s)
        return MONITOR_NOMEM;
    s->readonly = readonly;
    monitor_status st = MONITOR_OK;
    int oflags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX |
                 SQLITE_OPEN_NOFOLLOW;
    int rc = sqlite3_open_v2(path, &s->db, oflags, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_extended_result_codes(s->db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(s->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    if (rc != SQLITE_OK)
        st = sqlerr(s, rc, path);
    if (st == MONITOR_OK && !readonly) {
        st = exec(s, "PRAGMA journal_mode=WAL", "switching to WAL");
        if (st == MONITOR_OK)
            st = exec(s, "PRAGMA synchronous=NORMAL", "setting synchronous");
    }
    if (st == MONITOR_OK)
        st = schema(s, create);
    if (st != MONITOR_OK) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, s->err);
        alert_store_close(s);
        return st;
    }
    *out = s;
    return MONITOR_OK;
}

void alert_store_close(alert_store *s)
{
    if (!s)
        return;
    (void)sqlite3_close_v2(s->db);
    free(s);
}

/* ---- writing --------------------------------------------------------------- */

static monitor_status run(alert_store *s, const char *sql, const alert *a, int64_t since,
                          int *changes)
{
    sqlite3_stmt *q = NULL;
    monitor_status st = prepare(s, sql, &q);
    if (st != MONITOR_OK)
        return st;
    const char *kind = alert_kind_name(a->kind);
    /* Named parameters: each statement uses the ones it needs. */
    int rc = SQLITE_OK;
    int i;
    if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(q, ":kind")) > 0)
        rc = sqlite3_bind_text(q, i, kind, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(q, ":subject")) > 0)
        rc = sqlite3_bind_text(q, i, a->subject, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(q, ":now")) > 0)
        rc = sqlite3_bind_int64(q, i, a->time_ms);
    if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(q, ":details")) > 0)
        rc = sqlite3_bind_text(q, i, a->details, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(q, ":since")) > 0)
        rc = sqlite3_bind_int64(q, i, since);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        st = sqlerr(s, rc, "recording an alert");
    else
        *changes = sqlite3_changes(s->db);
    sqlite3_finalize(q);
    return st;
}

monitor_status alert_store_record(alert_store *s, const alert *a, bool *changed)
{
    bool dummy;
    changed = changed ? changed : &dummy;
    *changed = false;
    if (s->readonly)
        return fail(s, MONITOR_INVALID, "alert store opened read-only");
    if (!alert_kind_name(a->kind) || a->state < ALERT_RAISE || a->state > ALERT_EVENT)
        return fail(s, MONITOR_INVALID, "not an alert");
    monitor_status st = exec(s, "BEGIN IMMEDIATE", "starting a transaction");
    if (st != MONITOR_OK)
        return st;
    int n = 0;
    switch (a->state) {
    case ALERT_RAISE:
        st = run(s,
                 "UPDATE alerts SET last_ms = :now, count = count + 1, details = :details"
                 " WHERE kind = :kind AND subject = :subject AND state = 'open'",
                 a, 0, &n);
        if (st == MONITOR_OK && n == 0) {
            st = run(s,
                     "INSERT INTO alerts(kind, subject, state, raised_ms, last_ms, details)"
                     " VALUES(:kind, :subject, 'open', :now, :now, :details)",
                     a, 0, &n);
            *changed = st == MONITOR_OK;
        }
        break;
    case ALERT_CLEAR:
        st = run(s,
                 "UPDATE alerts SET state = 'cleared', cleared_ms = :now, last_ms = :now"
                 " WHERE kind = :kind AND subject = :subject AND state = 'open'",
                 a, 0, &n);
        *changed = st == MONITOR_OK && n > 0;
        break;
    case ALERT_EVENT:
        st = run(s,
                 "UPDATE alerts SET last_ms = :now, count = count + 1, details = :details"
                 " WHERE id = (SELECT max(id) FROM alerts WHERE kind = :kind"
                 " AND subject = :subject AND state = 'event' AND last_ms >= :since)",
                 a, a->time_ms - ALERT_STORE_COALESCE_MS, &n);
        if (st == MONITOR_OK && n == 0) {
            st = run(s,
                     "INSERT INTO alerts(kind, subject, state, raised_ms, last_ms, details)"
                     " VALUES(:kind, :subject, 'event', :now, :now, :details)",
                     a, 0, &n);
            *changed = st == MONITOR_OK;
        }
        break;
    }
    if (st == MONITOR_OK)
        return exec(s, "COMMIT", "committing an alert");
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    *changed = false;
    return st;
}

/* ---- reading ---------------------------------------------------------------- */

static const char *text_col(sqlite3_stmt *q, int col)
{
    if (sqlite3_column_type(q, col) != SQLITE_TEXT)
        return NULL;
    const char *t = (const char *)sqlite3_column_text(q, col);
    int n = sqlite3_column_bytes(q, col);
    return t && n >= 0 && strlen(t) == (size_t)n ? t : NULL;
}

monitor_status alert_store_list(alert_store *s, const alert_filter *f, alert_row_cb cb, void *ctx)
{
    alert_filter none = {0};
    f = f ? f : &none;
    sqlite3_stmt *q = NULL;
    monitor_status st = prepare(
        s,
        "SELECT id, kind, subject, state, raised_ms, last_ms, cleared_ms, count, details FROM"
        " (SELECT * FROM alerts WHERE (?1 = 0 OR state = 'open') AND (?2 IS NULL OR kind = ?2)"
        "  AND last_ms >= ?3 ORDER BY id DESC LIMIT ?4) ORDER BY id",
        &q);
    if (st != MONITOR_OK)
        return st;
    const char *kind = f->kind ? alert_kind_name(f->kind) : NULL;
    int rc = sqlite3_bind_int(q, 1, f->open_only ? 1 : 0);
    if (rc == SQLITE_OK)
        rc = kind ? sqlite3_bind_text(q, 2, kind, -1, SQLITE_STATIC) : sqlite3_bind_null(q, 2);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 3, f->since_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 4,
                                f->limit == 0 || f->limit > INT64_MAX ? -1 : (int64_t)f->limit);
    if (rc != SQLITE_OK) {
        st = sqlerr(s, rc, "listing alerts");
        goto out;
    }
    for (;;) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = sqlerr(s, rc, "listing alerts");
            break;
        }
        alert_row r = {.id = sqlite3_column_int64(q, 0),
                       .kind = alert_kind_parse(text_col(q, 1)),
                       .subject = text_col(q, 2),
                       .state = text_col(q, 3),
                       .raised_ms = sqlite3_column_int64(q, 4),
                       .last_ms = sqlite3_column_int64(q, 5),
                       .cleared_ms = sqlite3_column_int64(q, 6),
                       .count = sqlite3_column_int64(q, 7),
                       .details = text_col(q, 8)};
        if (!r.kind || !r.subject || !r.state || !r.details ||
            sqlite3_column_type(q, 4) != SQLITE_INTEGER ||
            sqlite3_column_type(q, 5) != SQLITE_INTEGER) {
            st = fail(s, MONITOR_CORRUPT, "alerts.db corrupt: alert %lld", (long long)r.id);
            break;
        }
        if (cb(ctx, &r) != 0)
            break;
    }
out:
    sqlite3_finalize(q);
    return st;
}

monitor_status alert_store_count_open(alert_store *s, int64_t *out)
{
    sqlite3_stmt *q = NULL;
    monitor_status st = prepare(s, "SELECT count(*) FROM alerts WHERE state = 'open'", &q);
    if (st != MONITOR_OK)
        return st;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(q, 0);
    else
        st = sqlerr(s, rc, "counting open alerts");
    sqlite3_finalize(q);
    return st;
}

monitor_status alert_store_prune(alert_store *s, int64_t older_than_ms, size_t max_rows)
{
    if (s->readonly)
        return fail(s, MONITOR_INVALID, "alert store opened read-only");
    sqlite3_stmt *q = NULL;
    monitor_status st = prepare(s, "DELETE FROM alerts WHERE state != 'open' AND last_ms < ?1", &q);
    if (st != MONITOR_OK)
        return st;
    int rc = sqlite3_bind_int64(q, 1, older_than_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        st = sqlerr(s, rc, "pruning alerts");
    sqlite3_finalize(q);
    if (st != MONITOR_OK || max_rows == 0)
        return st;
    if ((st = prepare(s,
                      "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE state != 'open'"
                      " ORDER BY id DESC LIMIT -1 OFFSET ?1)",
                      &q)) != MONITOR_OK)
        return st;
    rc = sqlite3_bind_int64(q, 1, max_rows > INT64_MAX ? INT64_MAX : (int64_t)max_rows);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        st = sqlerr(s, rc, "pruning alerts");
    sqlite3_finalize(q);
    return st;
}
