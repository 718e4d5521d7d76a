/*
 * tstore_sqlite_maint.c — the telemetry store's housekeeping: erasing a
 * device, retention, re-encryption under a new data key, and rotation of
 * the master key.
 *
 * Each of these runs as short write transactions of a bounded number of
 * rows, so it can share the file with a hub that commits every loop pass:
 * the hub waits at most one slice for the write lock, never a whole purge.
 * Work that must survive an interruption (re-encryption) keeps its position
 * in the meta table, committed with the rows it covers; retention needs no
 * memory between runs because what it deletes is defined by the data.
 */
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tsq.h"

/* Rows deleted per transaction when erasing a device. */
#define ERASE_BATCH 5000
/* Devices read per retention slice (their policies are asked outside the
 * write transaction). */
#define RETENTION_DEVICES 32

/* ---- shared pieces ---------------------------------------------------- */

/* Step a DELETE ... RETURNING length(ct), counting rows and bytes. */
static tstore_status delete_counting(tsq *s, enum tsq_stmt id, uint64_t *rows, uint64_t *bytes)
{
    int rc;
    *rows = *bytes = 0;
    while ((rc = sqlite3_step(s->st[id])) == SQLITE_ROW) {
        (*rows)++;
        *bytes += (uint64_t)sqlite3_column_int64(s->st[id], 0);
    }
    tsq_done(s, id);
    return rc == SQLITE_DONE ? TSTORE_OK : tsq_sqlerr(s, rc, "deleting readings");
}

/* Take rows and bytes off a device's counts; drop its row when none are
 * left, so a device whose readings are all gone leaves nothing behind. */
static tstore_status uncount(tsq *s, int64_t dev, uint64_t rows, uint64_t bytes, bool *gone)
{
    *gone = false;
    tstore_status st = tsq_bind_int(s, ST_DEV_ADD, 1, dev);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_DEV_ADD, 2, -(int64_t)rows);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_DEV_ADD, 3, -(int64_t)bytes);
    if (st != TSTORE_OK) {
        tsq_done(s, ST_DEV_ADD);
        return st;
    }
    if ((st = tsq_run(s, ST_DEV_ADD, "counting a device's readings")) != TSTORE_OK)
        return st;
    if ((st = tsq_bind_int(s, ST_DEV_GET, 1, dev)) != TSTORE_OK) {
        tsq_done(s, ST_DEV_GET);
        return st;
    }
    int rc = sqlite3_step(s->st[ST_DEV_GET]);
    int64_t left = rc == SQLITE_ROW ? sqlite3_column_int64(s->st[ST_DEV_GET], 3) : 0;
    tsq_done(s, ST_DEV_GET);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return tsq_sqlerr(s, rc, "reading a device's counts");
    if (rc == SQLITE_ROW && left <= 0) {
        if ((st = tsq_bind_int(s, ST_DEV_DELETE, 1, dev)) != TSTORE_OK) {
            tsq_done(s, ST_DEV_DELETE);
            return st;
        }
        /* The foreign key refuses this if a reading is still there (the
         * counts were wrong): then the device simply stays. */
        int drc = sqlite3_step(s->st[ST_DEV_DELETE]);
        tsq_done(s, ST_DEV_DELETE);
        if (drc == SQLITE_DONE)
            *gone = true;
        else if ((drc & 0xff) != SQLITE_CONSTRAINT)
            return tsq_sqlerr(s, drc, "deleting a device");
    }
    return TSTORE_OK;
}

/* Delete up to limit readings of dev (the oldest first when before is set:
 * only those received before it). */
static tstore_status delete_batch(tsq *s, int64_t dev, bool use_before, int64_t before,
                                  size_t limit, uint64_t *rows, bool *gone)
{
    uint64_t bytes = 0;
    enum tsq_stmt id = use_before ? ST_DEL_BEFORE : ST_DEL_DEVICE_BATCH;
    tstore_status st = tsq_bind_int(s, id, 1, dev);
    if (st == TSTORE_OK && use_before)
        st = tsq_bind_int(s, id, 2, before);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, id, use_before ? 3 : 2, (int64_t)limit);
    if (st != TSTORE_OK) {
        tsq_done(s, id);
        return st;
    }
    if ((st = delete_counting(s, id, rows, &bytes)) != TSTORE_OK)
        return st;
    return *rows ? uncount(s, dev, *rows, bytes, gone) : TSTORE_OK;
}

static tstore_status checkpoint(tsq *s, bool *wiped)
{
    /* TRUNCATE: copy every page back (the zeroed ones secure_delete made),
     * then cut the log to nothing, so old frames holding the deleted rows
     * do not linger in -wal. busy = 1 if a reader kept it from finishing. */
    sqlite3_stmt *q = s->st[ST_CHECKPOINT];
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *wiped = sqlite3_column_int64(q, 0) == 0;
    tsq_done(s, ST_CHECKPOINT);
    if (rc != SQLITE_ROW && (rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
        return tsq_sqlerr(s, rc, "checkpointing");
    return TSTORE_OK;
}

/* ---- erasing a device ------------------------------------------------- */

tstore_status tsq_delete_device(void *ctx, const char *device, uint64_t *deleted, bool *wiped)
{
    tsq *s = ctx;
    *deleted = 0;
    *wiped = false;
    if (!tstore_device_valid(device))
        return tsq_fail(s, TSTORE_INVALID, "delete: invalid device id");
    tstore_status st = TSTORE_OK;
    for (bool done = false; !done && st == TSTORE_OK;) {
        int64_t dev = 0;
        uint64_t rows = 0;
        bool gone = false;
        if ((st = tsq_write_begin(s)) != TSTORE_OK)
            break;
        st = tsq_device_find(s, device, &dev);
        if (st == TSTORE_OK && dev != 0)
            st = delete_batch(s, dev, false, 0, ERASE_BATCH, &rows, &gone);
        if (st == TSTORE_OK && dev != 0 && rows < ERASE_BATCH && !gone) {
            /* Counts said more than there was: the row goes anyway. */
            st = tsq_bind_int(s, ST_DEV_DELETE, 1, dev);
            if (st == TSTORE_OK)
                st = tsq_run(s, ST_DEV_DELETE, "deleting a device");
            else
                tsq_done(s, ST_DEV_DELETE);
        }
        done = dev == 0 || rows < ERASE_BATCH;
        if ((st = tsq_write_end(s, st)) == TSTORE_OK)
            *deleted += rows;
    }
    tsq_devs_clear(s);
    if (st == TSTORE_OK)
        st = checkpoint(s, wiped);
    return st;
}

/* ---- retention -------------------------------------------------------- */

typedef struct ret_dev {
    int64_t no;
    char id[TSTORE_DEVICE_MAX + 1];
    bool skip;
    tstore_retention_policy policy;
} ret_dev;

/* Up to RETENTION_DEVICES devices from run->next_device, ids decrypted. */
static tstore_status retention_read(tsq *s, const tstore_retention_run *run, ret_dev *out,
                                    size_t *n)
{
    bool own = false;
    *n = 0;
    int rc = sqlite3_step(s->st[ST_BEGIN_READ]);
    tsq_done(s, ST_BEGIN_READ);
    if (rc != SQLITE_DONE)
        return tsq_sqlerr(s, rc, "starting a read");
    own = true;
    tstore_status st = tsq_refresh(s, false);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_DEV_NEXT, 1, run->next_device);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_DEV_NEXT, 2, RETENTION_DEVICES);
    while (st == TSTORE_OK && (rc = sqlite3_step(s->st[ST_DEV_NEXT])) == SQLITE_ROW) {
        ret_dev *d = &out[*n];
        memset(d, 0, sizeof *d);
        d->no = sqlite3_column_int64(s->st[ST_DEV_NEXT], 5);
        st = tsq_device_id(s, ST_DEV_NEXT, 0, d->id);
        if (st == TSTORE_OK)
            (*n)++;
    }
    if (st == TSTORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        st = tsq_sqlerr(s, rc, "listing devices");
    tsq_done(s, ST_DEV_NEXT);
    if (own && !sqlite3_get_autocommit(s->db)) {
        (void)sqlite3_step(s->st[ST_ROLLBACK]);
        tsq_done(s, ST_ROLLBACK);
    }
    return st;
}

/* The size cap: delete the oldest readings until the device's bytes are at
 * most max_bytes, or the budget is spent. */
static tstore_status cap_size(tsq *s, int64_t dev, uint64_t max_bytes, size_t budget,
                              uint64_t *deleted, bool *finished)
{
    *deleted = 0;
    *finished = true;
    tstore_status st = tsq_bind_int(s, ST_DEV_GET, 1, dev);
    int rc = st == TSTORE_OK ? sqlite3_step(s->st[ST_DEV_GET]) : SQLITE_DONE;
    int64_t bytes = rc == SQLITE_ROW ? sqlite3_column_int64(s->st[ST_DEV_GET], 4) : 0;
    tsq_done(s, ST_DEV_GET);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return tsq_sqlerr(s, rc, "reading a device's counts");
    if (st != TSTORE_OK || bytes <= 0 || (uint64_t)bytes <= max_bytes)
        return st;
    uint64_t excess = (uint64_t)bytes - max_bytes, freed = 0;
    /* Collect the ids first: rows must not be deleted under an open scan. */
    int64_t *ids = malloc(budget * sizeof *ids);
    size_t n = 0;
    if (!ids)
        return tsq_fail(s, TSTORE_NOMEM, "out of memory");
    st = tsq_bind_int(s, ST_OLDEST, 1, dev);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_OLDEST, 2, (int64_t)budget);
    while (st == TSTORE_OK && freed < excess &&
           (rc = sqlite3_step(s->st[ST_OLDEST])) == SQLITE_ROW) {
        ids[n++] = sqlite3_column_int64(s->st[ST_OLDEST], 0);
        freed += (uint64_t)sqlite3_column_int64(s->st[ST_OLDEST], 1);
    }
    if (st == TSTORE_OK && freed < excess && rc != SQLITE_DONE && rc != SQLITE_ROW)
        st = tsq_sqlerr(s, rc, "finding the oldest readings");
    tsq_done(s, ST_OLDEST);
    for (size_t i = 0; i < n && st == TSTORE_OK; i++) {
        st = tsq_bind_int(s, ST_DEL_ID, 1, ids[i]);
        if (st == TSTORE_OK)
            st = tsq_run(s, ST_DEL_ID, "deleting a reading");
        else
            tsq_done(s, ST_DEL_ID);
    }
    free(ids);
    bool gone;
    if (st == TSTORE_OK && n)
        st = uncount(s, dev, n, freed, &gone);
    *deleted = n;
    *finished = freed >= excess;
    return st;
}

/* Apply one device's policy within the budget; *finished false if the
 * budget ran out first. */
static tstore_status retention_device(tsq *s, const ret_dev *d, int64_t now_ms, size_t budget,
                                      uint64_t *deleted, bool *finished)
{
    const tstore_retention_policy *p = &d->policy;
    uint64_t rows = 0;
    bool gone = false;
    tstore_status st = TSTORE_OK;
    *deleted = 0;
    *finished = true;
    if (p->erase) {
        st = delete_batch(s, d->no, false, 0, budget, &rows, &gone);
        *deleted = rows;
        *finished = rows < budget;
        if (st == TSTORE_OK && *finished && !gone) {
            st = tsq_bind_int(s, ST_DEV_DELETE, 1, d->no);
            if (st == TSTORE_OK)
                st = tsq_run(s, ST_DEV_DELETE, "deleting a device");
            else
                tsq_done(s, ST_DEV_DELETE);
        }
        return st;
    }
    if (p->max_age_ms > 0) {
        int64_t cutoff = now_ms >= INT64_MIN + p->max_age_ms ? now_ms - p->max_age_ms : INT64_MIN;
        st = delete_batch(s, d->no, true, cutoff, budget, &rows, &gone);
        *deleted = rows;
        if (st != TSTORE_OK || rows == budget || gone) {
            *finished = rows < budget;
            return st;
        }
    }
    if (p->max_bytes > 0) {
        uint64_t more = 0;
        st = cap_size(s, d->no, p->max_bytes, budget - (size_t)*deleted, &more, finished);
        *deleted += more;
    }
    return st;
}

tstore_status tsq_retention(void *ctx, tstore_policy_cb policy, void *pctx, int64_t now_ms,
                            size_t max_rows, tstore_retention_run *run)
{
    tsq *s = ctx;
    if (!policy || !run || max_rows == 0 || max_rows > TSTORE_SLICE_MAX)
        return tsq_fail(s, TSTORE_INVALID, "retention: 1 to %u rows per slice", TSTORE_SLICE_MAX);
    if (s->in_write)
        return tsq_fail(s, TSTORE_INVALID, "retention: not inside the caller's transaction");
    if (run->done)
        return TSTORE_OK;
    ret_dev devs[RETENTION_DEVICES];
    size_t n = 0;
    tstore_status st = retention_read(s, run, devs, &n);
    if (st != TSTORE_OK)
        return st;
    if (n == 0) {
        run->done = true;
        return TSTORE_OK;
    }
    /* Policies are looked up with no transaction open here, so a slow
     * lookup (the registry) never holds the write lock. */
    for (size_t i = 0; i < n; i++)
        devs[i].skip = policy(pctx, devs[i].id, &devs[i].policy) != TSTORE_OK;
    if ((st = tsq_write_begin(s)) != TSTORE_OK)
        return st;
    size_t budget = max_rows;
    uint64_t deleted = 0, visited = 0, skipped = 0;
    int64_t next = run->next_device;
    for (size_t i = 0; i < n && st == TSTORE_OK && budget > 0; i++) {
        uint64_t rows = 0;
        bool finished = true;
        if (devs[i].skip)
            skipped++;
        else
            st = retention_device(s, &devs[i], now_ms, budget, &rows, &finished);
        if (st != TSTORE_OK)
            break;
        deleted += rows;
        budget -= (size_t)rows;
        if (!finished)
            break; /* this device again next slice */
        visited++;
        next = devs[i].no + 1;
    }
    if ((st = tsq_write_end(s, st)) != TSTORE_OK)
        return st;
    tsq_devs_clear(s); /* device rows may be gone */
    run->next_device = next;
    run->deleted += deleted;
    run->devices += visited;
    run->skipped += skipped;
    return TSTORE_OK;
}

/* ---- master key rotation --------------------------------------------- */

tstore_status tsq_rotate_master(void *ctx, uint64_t *rewrapped)
{
    tsq *s = ctx;
    *rewrapped = 0;
    tcrypt_master *old = NULL, *neu = NULL;
    struct {
        int64_t id;
        uint8_t wrapped[TCRYPT_WRAPPED_LEN];
    } keys[TSQ_KEYS_MAX];
    size_t nkeys = 0;
    bool wrote_new = false;
    char why[320];
    uint8_t *raw = sodium_malloc(TCRYPT_KEY_LEN);
    if (!raw)
        return tsq_fail(s, TSTORE_NOMEM, "out of memory");
    /* The write lock first: it keeps two rotations (and a rotation and a
     * key being added) from interleaving. */
    tstore_status st = tsq_write_begin(s);
    if (st != TSTORE_OK)
        goto out_free;
    if ((st = tsq_master(s, &old)) != TSTORE_OK || (st = tcrypt_master_new(&neu)) != TSTORE_OK)
        goto out;
    /* The new key is on disk (beside the old one) before any data key is
     * wrapped under it: whatever happens next, the key the store needs
     * exists in a file. */
    if ((st = tcrypt_master_write(neu, s->path_master_new, why, sizeof why)) != TSTORE_OK) {
        st = tsq_fail(s, st, "writing the new master key: %s", why);
        goto out;
    }
    wrote_new = true;
    int rc;
    while ((rc = sqlite3_step(s->st[ST_KEY_ALL])) == SQLITE_ROW && nkeys < TSQ_KEYS_MAX) {
        sqlite3_stmt *q = s->st[ST_KEY_ALL];
        int64_t id = sqlite3_column_int64(q, 0);
        if (sqlite3_column_type(q, 1) != SQLITE_BLOB ||
            sqlite3_column_bytes(q, 1) != TCRYPT_WRAPPED_LEN ||
            !tcrypt_unwrap(old, id, sqlite3_column_blob(q, 1), raw)) {
            st = tsq_fail(s, TSTORE_CORRUPT,
                          "corrupt: data key %lld does not open under the "
                          "master key",
                          (long long)id);
            break;
        }
        keys[nkeys].id = id;
        tcrypt_wrap(neu, id, raw, keys[nkeys].wrapped);
        nkeys++;
    }
    if (st == TSTORE_OK && rc != SQLITE_DONE)
        st = rc == SQLITE_ROW ? tsq_fail(s, TSTORE_CORRUPT, "corrupt: too many data keys")
                              : tsq_sqlerr(s, rc, "listing data keys");
    tsq_done(s, ST_KEY_ALL);
    for (size_t i = 0; i < nkeys && st == TSTORE_OK; i++) {
        st = tsq_bind_int(s, ST_KEY_UPDATE, 1, keys[i].id);
        if (st == TSTORE_OK)
            st = tsq_bind_blob(s, ST_KEY_UPDATE, 2, keys[i].wrapped, TCRYPT_WRAPPED_LEN);
        if (st == TSTORE_OK)
            st = tsq_run(s, ST_KEY_UPDATE, "re-wrapping a data key");
        else
            tsq_done(s, ST_KEY_UPDATE);
    }
    if (st == TSTORE_OK) {
        uint8_t check[TCRYPT_CHECK_LEN];
        tcrypt_master_check(neu, check);
        st = tsq_meta_put_blob(s, "master_check", check, sizeof check);
    }
out:
    st = tsq_write_end(s, st);
    if (st != TSTORE_OK) {
        /* Nothing changed in the store: the old key stays the key. */
        if (wrote_new)
            (void)unlink(s->path_master_new);
        goto out_free;
    }
    /* Committed: the store is under the new key. Replace the old file; if
     * this fails, the next open finds master.key.new and finishes. */
    if (rename(s->path_master_new, s->path_master) != 0 && errno != ENOENT) {
        st = tsq_fail(s, TSTORE_IO,
                      "the data keys are re-wrapped but %s could not replace %s (%s): do not "
                      "delete %s; the next open finishes the rotation",
                      s->path_master_new, s->path_master, strerror(errno), s->path_master_new);
        goto out_free;
    }
    if ((st = tcrypt_sync_dir(s->path_master, why, sizeof why)) != TSTORE_OK)
        st = tsq_fail(s, st, "syncing the data directory: %s", why);
    *rewrapped = nkeys;
out_free:
    sodium_memzero(keys, sizeof keys);
    sodium_free(raw);
    tcrypt_master_free(old);
    tcrypt_master_free(neu);
    return st;
}

/* ---- re-encryption ---------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

tstore_status tsq_reencrypt_start(void *ctx, bool *started)
{
    tsq *s = ctx;
    *started = false;
    tcrypt_master *m = NULL;
    uint8_t *raw = NULL;
    int64_t v = 0, last = 0;
    bool found = false;
    tstore_status st = tsq_write_begin(s);
    if (st != TSTORE_OK)
        return st;
    if ((st = tsq_meta_get_int(s, "reencrypt_until", &v, &found)) != TSTORE_OK || found)
        goto out; /* one is under way: reencrypt_step continues it */
    if ((st = tsq_meta_get_int(s, "last_key_id", &last, &found)) != TSTORE_OK)
        goto out;
    if (!found || last < 1 || last == INT64_MAX) {
        st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: bad last_key_id");
        goto out;
    }
    if ((st = tsq_master(s, &m)) != TSTORE_OK)
        goto out;
    if (!(raw = tcrypt_raw_new())) {
        st = tsq_fail(s, TSTORE_NOMEM, "out of memory");
        goto out;
    }
    int64_t id = last + 1;
    uint8_t wrapped[TCRYPT_WRAPPED_LEN];
    tcrypt_wrap(m, id, raw, wrapped);
    sqlite3_stmt *q = s->st[ST_MAX_ROW];
    int rc = sqlite3_step(q);
    int64_t until = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) + 1 : 0;
    tsq_done(s, ST_MAX_ROW);
    if (rc != SQLITE_ROW) {
        st = tsq_sqlerr(s, rc, "reading the last row id");
        goto out;
    }
    st = tsq_bind_int(s, ST_KEY_INSERT, 1, id);
    if (st == TSTORE_OK)
        st = tsq_bind_blob(s, ST_KEY_INSERT, 2, wrapped, sizeof wrapped);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_KEY_INSERT, 3, now_ms());
    if (st == TSTORE_OK)
        st = tsq_run(s, ST_KEY_INSERT, "storing a data key");
    else
        tsq_done(s, ST_KEY_INSERT);
    /* From this commit on, every new row is written under the new key (a
     * writer re-reads current_key when another connection commits), so
     * only rows below `until` can be under an old one. */
    if (st == TSTORE_OK)
        st = tsq_meta_put_int(s, "last_key_id", id);
    if (st == TSTORE_OK)
        st = tsq_meta_put_int(s, "current_key", id);
    if (st == TSTORE_OK)
        st = tsq_meta_put_int(s, "reencrypt_until", until);
    if (st == TSTORE_OK)
        st = tsq_meta_put_int(s, "reencrypt_cursor", 0);
    if (st == TSTORE_OK)
        *started = true;
out:
    tcrypt_raw_free(raw);
    tcrypt_master_free(m);
    st = tsq_write_end(s, st);
    if (st == TSTORE_OK)
        s->current_key = 0; /* our own commit: make the next refresh re-read */
    else
        *started = false;
    return st;
}

/* Re-seal up to budget devices rows still under an old key. */
static tstore_status rekey_devices(tsq *s, size_t budget, size_t *done)
{
    struct {
        int64_t no;
        char id[TSTORE_DEVICE_MAX + 1];
    } *list = calloc(budget, sizeof *list);
    size_t n = 0;
    *done = 0;
    if (!list)
        return tsq_fail(s, TSTORE_NOMEM, "out of memory");
    tstore_status st = tsq_bind_int(s, ST_DEV_OLDKEY, 1, s->current_key);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_DEV_OLDKEY, 2, (int64_t)budget);
    int rc = SQLITE_DONE;
    while (st == TSTORE_OK && n < budget &&
           (rc = sqlite3_step(s->st[ST_DEV_OLDKEY])) == SQLITE_ROW) {
        list[n].no = sqlite3_column_int64(s->st[ST_DEV_OLDKEY], 3);
        st = tsq_device_id(s, ST_DEV_OLDKEY, 0, list[n].id);
        n++;
    }
    if (st == TSTORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        st = tsq_sqlerr(s, rc, "listing devices");
    tsq_done(s, ST_DEV_OLDKEY);
    const tcrypt_datakey *k = NULL;
    if (st == TSTORE_OK)
        st = tsq_key(s, s->current_key, &k);
    for (size_t i = 0; i < n && st == TSTORE_OK; i++) {
        uint8_t h[TCRYPT_DEVICE_HASH_LEN], ad[TCRYPT_AD_MAX];
        uint8_t ct[TCRYPT_SEAL_OVERHEAD + TSTORE_DEVICE_MAX];
        size_t dlen = strlen(list[i].id);
        tcrypt_device_hash(k, list[i].id, h);
        size_t adlen = tcrypt_device_ad(k->id, h, ad);
        tcrypt_seal(k, ad, adlen, (const uint8_t *)list[i].id, dlen, ct);
        st = tsq_bind_int(s, ST_DEV_REKEY, 1, list[i].no);
        if (st == TSTORE_OK)
            st = tsq_bind_blob(s, ST_DEV_REKEY, 2, h, sizeof h);
        if (st == TSTORE_OK)
            st = tsq_bind_int(s, ST_DEV_REKEY, 3, k->id);
        if (st == TSTORE_OK)
            st = tsq_bind_blob(s, ST_DEV_REKEY, 4, ct, dlen + TCRYPT_SEAL_OVERHEAD);
        if (st == TSTORE_OK)
            st = tsq_run(s, ST_DEV_REKEY, "re-encrypting a device id");
        else
            tsq_done(s, ST_DEV_REKEY);
    }
    sodium_memzero(list, budget * sizeof *list);
    free(list);
    *done = n;
    return st;
}

/* The device id of devices row no (for a readings row's AD). */
static tstore_status device_of(tsq *s, int64_t no, char out[TSTORE_DEVICE_MAX + 1])
{
    tstore_status st = tsq_bind_int(s, ST_DEV_GET, 1, no);
    int rc = st == TSTORE_OK ? sqlite3_step(s->st[ST_DEV_GET]) : SQLITE_DONE;
    if (st == TSTORE_OK && rc == SQLITE_ROW)
        st = tsq_device_id(s, ST_DEV_GET, 0, out);
    else if (st == TSTORE_OK && rc == SQLITE_DONE)
        st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: a reading refers to a missing device");
    else if (st == TSTORE_OK)
        st = tsq_sqlerr(s, rc, "reading a device");
    tsq_done(s, ST_DEV_GET);
    return st;
}

/* Open row id under its old key and seal it again under the current one. */
static tstore_status reseal(tsq *s, int64_t id, char dev_id[TSTORE_DEVICE_MAX + 1], int64_t *dev_no)
{
    tstore_status st = tsq_bind_int(s, ST_RE_GET, 1, id);
    int rc = st == TSTORE_OK ? sqlite3_step(s->st[ST_RE_GET]) : SQLITE_DONE;
    if (st != TSTORE_OK || rc != SQLITE_ROW) {
        tsq_done(s, ST_RE_GET);
        if (st != TSTORE_OK)
            return st;
        return rc == SQLITE_DONE ? TSTORE_OK : tsq_sqlerr(s, rc, "reading a reading");
    }
    int64_t no = sqlite3_column_int64(s->st[ST_RE_GET], 6);
    if (no != *dev_no) {
        /* Rows of one device often come together: keep the last id. */
        st = device_of(s, no, dev_id);
        if (st != TSTORE_OK) {
            tsq_done(s, ST_RE_GET);
            return st;
        }
        *dev_no = no;
    }
    tstore_reading r;
    int64_t row = 0;
    memset(&r, 0, sizeof r);
    st = tsq_open_row(s, ST_RE_GET, dev_id, &r, &row);
    if (st == TSTORE_OK) {
        size_t sealed;
        /* r's views point into scratch 0; seal_row uses 1 and 2. */
        st = tsq_bind_int(s, ST_RE_UPDATE, 1, id);
        if (st == TSTORE_OK)
            st = tsq_seal_row(s, ST_RE_UPDATE, 2, id, &r, &sealed);
    }
    tsq_done(s, ST_RE_GET);
    if (st == TSTORE_OK)
        st = tsq_run(s, ST_RE_UPDATE, "re-encrypting a reading");
    else
        tsq_done(s, ST_RE_UPDATE);
    sodium_memzero(s->buf[0], s->cap[0]);
    return st;
}

/* The scan reached `until`: make sure nothing still needs an old key, then
 * delete the old keys. */
static tstore_status reencrypt_finish(tsq *s, tstore_reencrypt_progress *p, bool *restart)
{
    *restart = false;
    tstore_status st = tsq_bind_int(s, ST_OLDKEY_ANY, 1, s->current_key);
    int rc = st == TSTORE_OK ? sqlite3_step(s->st[ST_OLDKEY_ANY]) : SQLITE_DONE;
    tsq_done(s, ST_OLDKEY_ANY);
    if (st != TSTORE_OK)
        return st;
    if (rc == SQLITE_ROW) {
        /* A row below the cursor under an old key (written by a program that
         * ignored current_key): go round once more rather than lose it. */
        *restart = true;
        return TSTORE_OK;
    }
    if (rc != SQLITE_DONE)
        return tsq_sqlerr(s, rc, "looking for rows under old keys");
    for (size_t i = 0; i < s->nlive && st == TSTORE_OK; i++) {
        if (s->live[i] == s->current_key)
            continue;
        st = tsq_bind_int(s, ST_KEY_DELETE, 1, s->live[i]);
        if (st == TSTORE_OK)
            st = tsq_run(s, ST_KEY_DELETE, "deleting an old data key");
        else
            tsq_done(s, ST_KEY_DELETE);
        if (st == TSTORE_OK)
            p->keys_deleted++;
    }
    if (st == TSTORE_OK)
        st = tsq_meta_del(s, "reencrypt_until");
    if (st == TSTORE_OK)
        st = tsq_meta_del(s, "reencrypt_cursor");
    return st;
}

tstore_status tsq_reencrypt_step(void *ctx, size_t max_rows, tstore_reencrypt_progress *p)
{
    tsq *s = ctx;
    memset(p, 0, sizeof *p);
    if (max_rows == 0 || max_rows > TSTORE_SLICE_MAX)
        return tsq_fail(s, TSTORE_INVALID, "reencrypt: 1 to %u rows per slice", TSTORE_SLICE_MAX);
    int64_t until = 0, cursor = 0;
    bool found = false, found2 = false;
    int64_t *ids = NULL;
    size_t nids = 0, scanned = 0, devs = 0;
    tstore_status st = tsq_write_begin(s);
    if (st != TSTORE_OK)
        return st;
    if ((st = tsq_meta_get_int(s, "reencrypt_until", &until, &found)) != TSTORE_OK ||
        (st = tsq_meta_get_int(s, "reencrypt_cursor", &cursor, &found2)) != TSTORE_OK)
        goto out;
    if (!found) {
        p->done = true; /* nothing under way */
        goto out;
    }
    if ((st = rekey_devices(s, max_rows, &devs)) != TSTORE_OK)
        goto out;
    size_t budget = max_rows > devs ? max_rows - devs : 1;
    if (!(ids = malloc(budget * sizeof *ids))) {
        st = tsq_fail(s, TSTORE_NOMEM, "out of memory");
        goto out;
    }
    /* Find the rows first (ids only), then rewrite them: a table must not
     * change under an open scan of it. */
    st = tsq_bind_int(s, ST_RE_SCAN, 1, cursor);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_RE_SCAN, 2, until);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_RE_SCAN, 3, (int64_t)budget);
    int rc = SQLITE_DONE;
    while (st == TSTORE_OK && (rc = sqlite3_step(s->st[ST_RE_SCAN])) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s->st[ST_RE_SCAN], 0);
        if (sqlite3_column_int64(s->st[ST_RE_SCAN], 1) != s->current_key)
            ids[nids++] = id;
        cursor = id + 1;
        scanned++;
    }
    if (st == TSTORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        st = tsq_sqlerr(s, rc, "scanning readings");
    tsq_done(s, ST_RE_SCAN);
    char dev_id[TSTORE_DEVICE_MAX + 1] = "";
    int64_t dev_no = 0;
    for (size_t i = 0; i < nids && st == TSTORE_OK; i++)
        st = reseal(s, ids[i], dev_id, &dev_no);
    sodium_memzero(dev_id, sizeof dev_id);
    if (st != TSTORE_OK)
        goto out;
    p->rewritten = nids;
    if (scanned < budget && devs < max_rows) {
        cursor = until; /* the scan reached the end */
        bool restart = false;
        st = reencrypt_finish(s, p, &restart);
        if (st == TSTORE_OK && restart) {
            sqlite3_stmt *q = s->st[ST_MAX_ROW];
            rc = sqlite3_step(q);
            until = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) + 1 : until;
            tsq_done(s, ST_MAX_ROW);
            cursor = 0;
            st = tsq_meta_put_int(s, "reencrypt_until", until);
            if (st == TSTORE_OK)
                st = tsq_meta_put_int(s, "reencrypt_cursor", 0);
        } else if (st == TSTORE_OK) {
            p->done = true;
        }
    } else {
        st = tsq_meta_put_int(s, "reencrypt_cursor", cursor);
    }
    p->remaining = p->done || until <= cursor ? 0 : (uint64_t)(until - cursor);
out:
    free(ids);
    st = tsq_write_end(s, st);
    if (st == TSTORE_OK && (p->keys_deleted || p->rewritten))
        s->current_key = 0; /* keys changed under our own commit: re-read */
    /* The old key may be why the operator re-encrypts: its ciphertexts must
     * not stay behind in old pages of the log. */
    if (st == TSTORE_OK && p->done && p->keys_deleted)
        st = checkpoint(s, &p->wiped);
    if (st != TSTORE_OK)
        memset(p, 0, sizeof *p);
    return st;
}
