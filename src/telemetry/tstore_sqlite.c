/*
 * tstore_sqlite.c — the telemetry store (tstore.h) in DATA_DIR/telemetry.db:
 * opening and the schema, devices, group-committed appends, and queries.
 * Keys are in tstore_sqlite_keys.c, plumbing in tstore_sqlite_db.c;
 * deletion, retention, re-encryption and master key rotation in
 * tstore_sqlite_maint.c.
 *
 * Tables (docs/telemetry.md has the full picture):
 *   meta       name -> value: master key check, current data key, counters
 *   data_keys  id, the data key wrapped by the master key
 *   devices    no, keyed hash of the device id (the index), the id sealed,
 *              counts of its readings and bytes (for size caps and stats)
 *   readings   id, device no, time received, stream hash, dedupe tag, key id,
 *              and one sealed record: stream, device time, seq, payload
 *
 * The hub calls append for every reading it receives, so that path does no
 * SQL parsing and no allocation in the steady state: statements are prepared
 * once, a device's row number is cached (the cache is dropped when another
 * connection commits, seen through PRAGMA data_version), and a transaction's
 * per-device counts are added up in memory and written once at commit.
 */
#include "tstore_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tsq.h"

/* ---- schema ----------------------------------------------------------- */

/*
 * Version 1. readings(id) is assigned by the store (max + 1 under the write
 * lock) because the id is part of the row's associated data and so must be
 * known before the row is sealed. devices(no) is AUTOINCREMENT: a deleted
 * device's number is never given to another, so a stale cache entry can
 * never file readings under someone else. Data key ids come from the
 * last_key_id counter in meta and are never reused either: a handle holding
 * an old key by id must never meet a different key under that id.
 */
static const char SCHEMA[] =
    "CREATE TABLE meta(name TEXT PRIMARY KEY NOT NULL, value NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE data_keys("
    " id INTEGER PRIMARY KEY, wrapped BLOB NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE devices("
    " no INTEGER PRIMARY KEY AUTOINCREMENT, hash BLOB NOT NULL UNIQUE,"
    " key_id INTEGER NOT NULL REFERENCES data_keys(id), id_ct BLOB NOT NULL,"
    " rows INTEGER NOT NULL, bytes INTEGER NOT NULL);"
    "CREATE INDEX devices_key ON devices(key_id);"
    "CREATE TABLE readings("
    " id INTEGER PRIMARY KEY, dev INTEGER NOT NULL REFERENCES devices(no),"
    " received INTEGER NOT NULL, sh BLOB NOT NULL, tag BLOB UNIQUE,"
    " key_id INTEGER NOT NULL REFERENCES data_keys(id), ct BLOB NOT NULL);"
    "CREATE INDEX readings_dev ON readings(dev, received);";

/*
 * The query walks readings_dev in (received, id) order: since and the
 * cursor narrow the range the index seeks to, so a later page costs no more
 * than the first. The stream is filtered by its keyed hash (one per live
 * data key, ?5..?8) and then exactly, once the record is open.
 */
#define QUERY_COLS "SELECT id, received, sh, tag, key_id, ct FROM readings"
#define QUERY_WHERE                                                                                \
    " WHERE dev = ?1 AND received >= ?2 AND received < ?3"                                         \
    " AND (?4 = 0 OR sh IN (?5, ?6, ?7, ?8))"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_META_GET] = "SELECT value FROM meta WHERE name = ?1",
    [ST_META_PUT] = "INSERT INTO meta(name, value) VALUES(?1, ?2)"
                    " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
    [ST_META_DEL] = "DELETE FROM meta WHERE name = ?1",
    [ST_MAX_ROW] = "SELECT max(id) FROM readings",
    [ST_KEY_GET] = "SELECT wrapped FROM data_keys WHERE id = ?1",
    [ST_KEY_ALL] = "SELECT id, wrapped FROM data_keys ORDER BY id",
    [ST_KEY_INSERT] = "INSERT INTO data_keys(id, wrapped, created) VALUES(?1, ?2, ?3)",
    [ST_KEY_UPDATE] = "UPDATE data_keys SET wrapped = ?2 WHERE id = ?1",
    [ST_KEY_DELETE] = "DELETE FROM data_keys WHERE id = ?1",
    [ST_DEV_FIND] = "SELECT no FROM devices WHERE hash = ?1",
    [ST_DEV_INSERT] = "INSERT INTO devices(hash, key_id, id_ct, rows, bytes)"
                      " VALUES(?1, ?2, ?3, 0, 0)",
    [ST_DEV_ADD] = "UPDATE devices SET rows = rows + ?2, bytes = bytes + ?3 WHERE no = ?1",
    [ST_DEV_GET] = "SELECT hash, key_id, id_ct, rows, bytes FROM devices WHERE no = ?1",
    [ST_DEV_NEXT] = "SELECT hash, key_id, id_ct, rows, bytes, no FROM devices WHERE no >= ?1"
                    " ORDER BY no LIMIT ?2",
    [ST_DEV_DELETE] = "DELETE FROM devices WHERE no = ?1",
    [ST_DEV_REKEY] = "UPDATE devices SET hash = ?2, key_id = ?3, id_ct = ?4 WHERE no = ?1",
    [ST_DEV_OLDKEY] = "SELECT hash, key_id, id_ct, no FROM devices WHERE key_id != ?1 LIMIT ?2",
    [ST_DEV_TOTALS] = "SELECT count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0)"
                      " FROM devices",
    [ST_INSERT] = "INSERT INTO readings(id, dev, received, sh, tag, key_id, ct)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_TAG_EXISTS] = "SELECT 1 FROM readings WHERE tag = ?1",
    [ST_QUERY_ASC] = QUERY_COLS QUERY_WHERE " AND (received > ?9 OR id > ?10)"
                                            " ORDER BY received, id",
    [ST_QUERY_DESC] = QUERY_COLS QUERY_WHERE " AND (received < ?9 OR id < ?10)"
                                             " ORDER BY received DESC, id DESC",
    [ST_DEL_DEVICE_BATCH] = "DELETE FROM readings WHERE id IN"
                            " (SELECT id FROM readings WHERE dev = ?1 LIMIT ?2)"
                            " RETURNING length(ct)",
    [ST_DEL_BEFORE] = "DELETE FROM readings WHERE id IN"
                      " (SELECT id FROM readings WHERE dev = ?1 AND received < ?2"
                      " ORDER BY received, id LIMIT ?3) RETURNING length(ct)",
    [ST_OLDEST] = "SELECT id, length(ct) FROM readings WHERE dev = ?1 ORDER BY received, id"
                  " LIMIT ?2",
    [ST_DEL_ID] = "DELETE FROM readings WHERE id = ?1",
    [ST_RE_SCAN] = "SELECT id, key_id FROM readings WHERE id >= ?1 AND id < ?2"
                   " ORDER BY id LIMIT ?3",
    [ST_RE_GET] = "SELECT id, received, sh, tag, key_id, ct, dev FROM readings WHERE id = ?1",
    [ST_RE_UPDATE] = "UPDATE readings SET sh = ?2, tag = ?3, key_id = ?4, ct = ?5 WHERE id = ?1",
    [ST_OLDKEY_ANY] = "SELECT 1 FROM readings WHERE key_id != ?1 LIMIT 1",
    [ST_CHECKPOINT] = "PRAGMA wal_checkpoint(TRUNCATE)",
};

/* ---- devices ---------------------------------------------------------- */

void tsq_devs_clear(tsq *s)
{
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    tsq_dev *all = NULL;
    /* Collect first: the map must not change while it is walked. */
    while ((e = hmap_next(&s->devs, &bucket, &it)) != NULL) {
        tsq_dev *d = e->value;
        d->next_dirty = all;
        all = d;
    }
    hmap_free(&s->devs);
    while (all) {
        tsq_dev *next = all->next_dirty;
        free(all);
        all = next;
    }
    (void)hmap_init(&s->devs); /* an empty map without buckets needs no memory */
    s->dirty = NULL;
}

tstore_status tsq_device_find(tsq *s, const char *device, int64_t *no)
{
    *no = 0;
    for (size_t i = 0; i < s->nlive && *no == 0; i++) {
        const tcrypt_datakey *k;
        tstore_status st = tsq_key(s, s->live[i], &k);
        if (st != TSTORE_OK)
            return st;
        uint8_t h[TCRYPT_DEVICE_HASH_LEN];
        tcrypt_device_hash(k, device, h);
        if ((st = tsq_bind_blob(s, ST_DEV_FIND, 1, h, sizeof h)) != TSTORE_OK) {
            tsq_done(s, ST_DEV_FIND);
            return st;
        }
        int rc = sqlite3_step(s->st[ST_DEV_FIND]);
        if (rc == SQLITE_ROW)
            *no = sqlite3_column_int64(s->st[ST_DEV_FIND], 0);
        tsq_done(s, ST_DEV_FIND);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return tsq_sqlerr(s, rc, "looking up a device");
    }
    return TSTORE_OK;
}

tstore_status tsq_device_id(tsq *s, enum tsq_stmt id, int col, char out[TSTORE_DEVICE_MAX + 1])
{
    sqlite3_stmt *q = s->st[id];
    out[0] = '\0';
    int n = sqlite3_column_bytes(q, col + 2);
    if (sqlite3_column_type(q, col) != SQLITE_BLOB ||
        sqlite3_column_bytes(q, col) != TCRYPT_DEVICE_HASH_LEN ||
        sqlite3_column_type(q, col + 1) != SQLITE_INTEGER ||
        sqlite3_column_type(q, col + 2) != SQLITE_BLOB || n <= (int)TCRYPT_SEAL_OVERHEAD ||
        (size_t)n > TCRYPT_SEAL_OVERHEAD + TSTORE_DEVICE_MAX)
        return tsq_fail(s, TSTORE_CORRUPT, "corrupt: a devices row breaks the layout");
    uint8_t hash[TCRYPT_DEVICE_HASH_LEN], ct[TCRYPT_SEAL_OVERHEAD + TSTORE_DEVICE_MAX];
    memcpy(hash, sqlite3_column_blob(q, col), sizeof hash);
    memcpy(ct, sqlite3_column_blob(q, col + 2), (size_t)n);
    int64_t key_id = sqlite3_column_int64(q, col + 1);
    const tcrypt_datakey *k;
    tstore_status st = tsq_key(s, key_id, &k);
    if (st != TSTORE_OK)
        return st;
    uint8_t ad[TCRYPT_AD_MAX];
    size_t adlen = tcrypt_device_ad(key_id, hash, ad);
    size_t len = (size_t)n - TCRYPT_SEAL_OVERHEAD;
    if (!tcrypt_open(k, ad, adlen, ct, (size_t)n, (uint8_t *)out))
        return tsq_fail(s, TSTORE_CORRUPT,
                        "corrupt: a device id does not authenticate (the devices row was "
                        "altered or moved)");
    out[len] = '\0';
    if (!tstore_device_valid(out))
        return tsq_fail(s, TSTORE_CORRUPT, "corrupt: a stored device id is malformed");
    uint8_t again[TCRYPT_DEVICE_HASH_LEN];
    tcrypt_device_hash(k, out, again);
    if (sodium_memcmp(again, hash, sizeof hash) != 0)
        return tsq_fail(s, TSTORE_CORRUPT, "corrupt: a device's index does not match its id");
    return TSTORE_OK;
}

/* The device's row number for an append, creating its row the first time. */
static tstore_status device_for_append(tsq *s, const char *device, tsq_dev **out)
{
    size_t dlen = strlen(device);
    tsq_dev *d = hmap_get(&s->devs, (const uint8_t *)device, dlen);
    if (d) {
        *out = d;
        return TSTORE_OK;
    }
    int64_t no = 0;
    tstore_status st = tsq_device_find(s, device, &no);
    if (st != TSTORE_OK)
        return st;
    if (no == 0) {
        const tcrypt_datakey *k;
        if ((st = tsq_key(s, s->current_key, &k)) != TSTORE_OK)
            return st;
        uint8_t h[TCRYPT_DEVICE_HASH_LEN], ad[TCRYPT_AD_MAX];
        uint8_t ct[TCRYPT_SEAL_OVERHEAD + TSTORE_DEVICE_MAX];
        tcrypt_device_hash(k, device, h);
        size_t adlen = tcrypt_device_ad(k->id, h, ad);
        tcrypt_seal(k, ad, adlen, (const uint8_t *)device, dlen, ct);
        st = tsq_bind_blob(s, ST_DEV_INSERT, 1, h, sizeof h);
        if (st == TSTORE_OK)
            st = tsq_bind_int(s, ST_DEV_INSERT, 2, k->id);
        if (st == TSTORE_OK)
            st = tsq_bind_blob(s, ST_DEV_INSERT, 3, ct, dlen + TCRYPT_SEAL_OVERHEAD);
        if (st != TSTORE_OK) {
            tsq_done(s, ST_DEV_INSERT);
            return st;
        }
        if ((st = tsq_run(s, ST_DEV_INSERT, "adding a device")) != TSTORE_OK)
            return st;
        no = sqlite3_last_insert_rowid(s->db);
    }
    /* Bound the cache; entries with counts to flush must stay. */
    if (s->devs.count >= 65536 && s->dirty == NULL)
        tsq_devs_clear(s);
    d = calloc(1, sizeof *d);
    if (!d)
        return tsq_fail(s, TSTORE_NOMEM, "out of memory");
    memcpy(d->id, device, dlen + 1);
    d->no = no;
    if (!hmap_put(&s->devs, (const uint8_t *)d->id, dlen, d)) {
        free(d);
        return tsq_fail(s, TSTORE_NOMEM, "out of memory");
    }
    *out = d;
    return TSTORE_OK;
}

/* ---- rows ------------------------------------------------------------- */

tstore_status tsq_seal_row(tsq *s, enum tsq_stmt stmt, int first, int64_t id,
                           const tstore_reading *r, size_t *sealed_len)
{
    const tcrypt_datakey *k;
    tstore_status st = tsq_key(s, s->current_key, &k);
    if (st != TSTORE_OK)
        return st;
    size_t len = tcrypt_record_len(r);
    if ((st = tsq_reserve(s, 1, len)) != TSTORE_OK ||
        (st = tsq_reserve(s, 2, len + TCRYPT_SEAL_OVERHEAD)) != TSTORE_OK)
        return st;
    tcrypt_stream_hash(k, r->device, r->stream, s->row_sh);
    if (r->has_seq)
        tcrypt_dedupe_tag(k, r->device, r->seq, s->row_tag);
    tcrypt_row row = {.id = id,
                      .key_id = k->id,
                      .received_ms = r->received_ms,
                      .stream_hash = s->row_sh,
                      .dedupe = r->has_seq ? s->row_tag : NULL,
                      .device = r->device};
    uint8_t ad[TCRYPT_AD_MAX];
    size_t adlen = tcrypt_row_ad(&row, ad);
    tcrypt_record_encode(r, s->buf[1]);
    tcrypt_seal(k, ad, adlen, s->buf[1], len, s->buf[2]);
    sodium_memzero(s->buf[1], len);
    *sealed_len = len + TCRYPT_SEAL_OVERHEAD;
    st = tsq_bind_blob(s, stmt, first, s->row_sh, sizeof s->row_sh);
    if (st == TSTORE_OK)
        st = r->has_seq ? tsq_bind_blob(s, stmt, first + 1, s->row_tag, sizeof s->row_tag)
                        : tsq_bind_null(s, stmt, first + 1);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, stmt, first + 2, k->id);
    if (st == TSTORE_OK)
        st = tsq_bind_blob(s, stmt, first + 3, s->buf[2], *sealed_len);
    return st;
}

tstore_status tsq_open_row(tsq *s, enum tsq_stmt stmt, const char *device, tstore_reading *r,
                           int64_t *row_id)
{
    sqlite3_stmt *q = s->st[stmt];
    int64_t id = sqlite3_column_int64(q, 0);
    int tag_type = sqlite3_column_type(q, 3);
    int n = sqlite3_column_bytes(q, 5);
    if (sqlite3_column_type(q, 0) != SQLITE_INTEGER ||
        sqlite3_column_type(q, 1) != SQLITE_INTEGER || sqlite3_column_type(q, 2) != SQLITE_BLOB ||
        sqlite3_column_bytes(q, 2) != TCRYPT_STREAM_HASH_LEN ||
        !(tag_type == SQLITE_NULL ||
          (tag_type == SQLITE_BLOB && sqlite3_column_bytes(q, 3) == TCRYPT_DEDUPE_LEN)) ||
        sqlite3_column_type(q, 4) != SQLITE_INTEGER || sqlite3_column_type(q, 5) != SQLITE_BLOB ||
        n < (int)TCRYPT_SEAL_OVERHEAD)
        return tsq_fail(s, TSTORE_CORRUPT, "corrupt: reading %lld breaks the layout",
                        (long long)id);
    int64_t key_id = sqlite3_column_int64(q, 4);
    const tcrypt_datakey *k;
    tstore_status st = tsq_key(s, key_id, &k);
    if (st != TSTORE_OK)
        return st;
    tcrypt_row row = {.id = id,
                      .key_id = key_id,
                      .received_ms = sqlite3_column_int64(q, 1),
                      .stream_hash = sqlite3_column_blob(q, 2),
                      .dedupe = tag_type == SQLITE_NULL ? NULL : sqlite3_column_blob(q, 3),
                      .device = device};
    uint8_t ad[TCRYPT_AD_MAX];
    size_t adlen = tcrypt_row_ad(&row, ad);
    size_t len = (size_t)n - TCRYPT_SEAL_OVERHEAD;
    if ((st = tsq_reserve(s, 0, len ? len : 1)) != TSTORE_OK)
        return st;
    if (!tcrypt_open(k, ad, adlen, sqlite3_column_blob(q, 5), (size_t)n, s->buf[0]))
        return tsq_fail(s, TSTORE_CORRUPT,
                        "corrupt: reading %lld does not authenticate (its row was altered, or "
                        "a ciphertext was moved from another row or device)",
                        (long long)id);
    if (!tcrypt_record_decode(s->buf[0], len, r) || r->has_seq != (row.dedupe != NULL))
        return tsq_fail(s, TSTORE_CORRUPT, "corrupt: reading %lld holds a malformed record",
                        (long long)id);
    r->device = device;
    r->received_ms = row.received_ms;
    *row_id = id;
    return TSTORE_OK;
}

/* ---- group commit ----------------------------------------------------- */

static tstore_status sq_begin(void *ctx)
{
    tsq *s = ctx;
    if (s->in_write)
        return tsq_fail(s, TSTORE_INVALID, "begin: a transaction is already open");
    if (!sqlite3_get_autocommit(s->db))
        return tsq_fail(s, TSTORE_INVALID, "begin: a read is still open");
    tstore_status st = tsq_write_begin(s);
    if (st != TSTORE_OK)
        return st;
    s->in_write = true;
    s->failed = false;
    s->dirty = NULL;
    if (!s->next_row_known) {
        sqlite3_stmt *q = s->st[ST_MAX_ROW];
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            s->next_row = sqlite3_column_int64(q, 0) + 1; /* NULL reads as 0 */
        tsq_done(s, ST_MAX_ROW);
        if (rc != SQLITE_ROW)
            st = tsq_sqlerr(s, rc, "reading the last row id");
        else
            s->next_row_known = true;
    }
    const tcrypt_datakey *k;
    if (st == TSTORE_OK)
        st = tsq_key(s, s->current_key, &k);
    if (st != TSTORE_OK) {
        s->in_write = false;
        (void)tsq_write_end(s, st);
    }
    return st;
}

static tstore_status check_reading(tsq *s, const tstore_reading *r)
{
    if (!r || !tstore_device_valid(r->device))
        return tsq_fail(s, TSTORE_INVALID, "append: invalid device id");
    if (!r->stream.ptr || r->stream.len == 0 || r->stream.len > TSTORE_STREAM_MAX)
        return tsq_fail(s, TSTORE_INVALID, "append: stream name of 1 to %u bytes expected",
                        TSTORE_STREAM_MAX);
    if ((!r->payload.ptr && r->payload.len) || r->payload.len > TSTORE_PAYLOAD_MAX)
        return tsq_fail(s, TSTORE_INVALID, "append: payload larger than %u bytes",
                        TSTORE_PAYLOAD_MAX);
    return TSTORE_OK;
}

/* During a re-encryption a (device, seq) stored under the old data key has
 * a tag under that key: look for it there too. */
static tstore_status seen_under_old_keys(tsq *s, const tstore_reading *r, bool *seen)
{
    *seen = false;
    for (size_t i = 0; i < s->nlive && !*seen; i++) {
        if (s->live[i] == s->current_key)
            continue;
        const tcrypt_datakey *k;
        tstore_status st = tsq_key(s, s->live[i], &k);
        if (st != TSTORE_OK)
            return st;
        uint8_t tag[TCRYPT_DEDUPE_LEN];
        tcrypt_dedupe_tag(k, r->device, r->seq, tag);
        if ((st = tsq_bind_blob(s, ST_TAG_EXISTS, 1, tag, sizeof tag)) != TSTORE_OK) {
            tsq_done(s, ST_TAG_EXISTS);
            return st;
        }
        int rc = sqlite3_step(s->st[ST_TAG_EXISTS]);
        tsq_done(s, ST_TAG_EXISTS);
        if (rc == SQLITE_ROW)
            *seen = true;
        else if (rc != SQLITE_DONE)
            return tsq_sqlerr(s, rc, "looking for a duplicate");
    }
    return TSTORE_OK;
}

static tstore_status sq_append(void *ctx, const tstore_reading *r)
{
    tsq *s = ctx;
    if (!s->in_write)
        return tsq_fail(s, TSTORE_INVALID, "append outside a transaction");
    if (s->failed)
        return TSTORE_IO; /* the message of the first failure stays */
    tstore_status st = check_reading(s, r);
    if (st != TSTORE_OK)
        return st; /* a refused argument does not spoil the transaction */
    tsq_dev *d = NULL;
    bool seen = false;
    size_t sealed = 0;
    if ((st = device_for_append(s, r->device, &d)) != TSTORE_OK)
        goto out;
    if (r->has_seq && s->nlive > 1) {
        if ((st = seen_under_old_keys(s, r, &seen)) != TSTORE_OK)
            goto out;
        if (seen)
            return TSTORE_DUPLICATE;
    }
    st = tsq_bind_int(s, ST_INSERT, 1, s->next_row);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_INSERT, 2, d->no);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_INSERT, 3, r->received_ms);
    if (st == TSTORE_OK)
        st = tsq_seal_row(s, ST_INSERT, 4, s->next_row, r, &sealed);
    if (st != TSTORE_OK) {
        tsq_done(s, ST_INSERT);
        goto out;
    }
    int rc = sqlite3_step(s->st[ST_INSERT]);
    tsq_done(s, ST_INSERT);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return TSTORE_DUPLICATE; /* only this statement is undone */
    if (rc != SQLITE_DONE) {
        st = tsq_sqlerr(s, rc, "storing a reading");
        goto out;
    }
    s->next_row++;
    d->add_rows++;
    d->add_bytes += sealed;
    if (!d->dirty) {
        d->dirty = true;
        d->next_dirty = s->dirty;
        s->dirty = d;
    }
out:
    if (st != TSTORE_OK)
        s->failed = true;
    return st;
}

static tstore_status sq_commit(void *ctx)
{
    tsq *s = ctx;
    if (!s->in_write)
        return tsq_fail(s, TSTORE_INVALID, "commit without begin");
    s->in_write = false;
    tstore_status st = s->failed ? TSTORE_IO : TSTORE_OK;
    for (tsq_dev *d = s->dirty; d && st == TSTORE_OK; d = d->next_dirty) {
        st = tsq_bind_int(s, ST_DEV_ADD, 1, d->no);
        if (st == TSTORE_OK)
            st = tsq_bind_int(s, ST_DEV_ADD, 2, (int64_t)d->add_rows);
        if (st == TSTORE_OK)
            st = tsq_bind_int(s, ST_DEV_ADD, 3, (int64_t)d->add_bytes);
        if (st == TSTORE_OK)
            st = tsq_run(s, ST_DEV_ADD, "counting a device's readings");
        else
            tsq_done(s, ST_DEV_ADD);
    }
    for (tsq_dev *d = s->dirty; d; d = d->next_dirty) {
        d->dirty = false;
        d->add_rows = d->add_bytes = 0;
    }
    s->dirty = NULL;
    bool known = s->next_row_known;
    st = tsq_write_end(s, st);
    if (st == TSTORE_OK)
        s->next_row_known = known; /* our own commit: nobody else wrote */
    return st;
}

static void sq_rollback(void *ctx)
{
    tsq *s = ctx;
    if (!s->in_write)
        return;
    s->in_write = false;
    (void)tsq_write_end(s, TSTORE_INVALID);
}

/* ---- query ------------------------------------------------------------ */

static tstore_status read_begin(tsq *s, bool *own)
{
    *own = false;
    if (s->in_write)
        return TSTORE_OK; /* the caller's transaction is the snapshot */
    int rc = sqlite3_step(s->st[ST_BEGIN_READ]);
    tsq_done(s, ST_BEGIN_READ);
    if (rc != SQLITE_DONE)
        return tsq_sqlerr(s, rc, "starting a read");
    *own = true;
    return tsq_refresh(s, false);
}

static void read_end(tsq *s, bool own)
{
    if (own && !sqlite3_get_autocommit(s->db)) {
        (void)sqlite3_step(s->st[ST_ROLLBACK]);
        tsq_done(s, ST_ROLLBACK);
    }
}

static tstore_status bind_query(tsq *s, enum tsq_stmt id, const tstore_query *q, int64_t dev)
{
    int64_t since = q->since_ms, until = q->until_ms;
    int64_t after_rx = 0, after_row = 0;
    if (q->has_after) {
        /* Seek straight to the cursor; the (received, id) test then skips
         * what the last page already gave at the cursor's millisecond. */
        after_rx = q->after.received_ms;
        after_row = q->after.row;
        if (q->newest_first) {
            if (after_rx < INT64_MAX && after_rx + 1 < until)
                until = after_rx + 1;
        } else if (after_rx > since) {
            since = after_rx;
        }
    } else {
        /* No cursor: a test that every row passes. */
        after_rx = q->newest_first ? INT64_MAX : INT64_MIN;
        after_row = q->newest_first ? INT64_MAX : INT64_MIN;
    }
    tstore_status st = tsq_bind_int(s, id, 1, dev);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, id, 2, since);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, id, 3, until);
    bool by_stream = q->stream.len > 0 && s->nlive <= 4;
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, id, 4, by_stream ? 1 : 0);
    /* One hash per live data key; the last repeats to fill the four slots.
     * They are copied by SQLite (TRANSIENT) since they live on our stack. */
    for (size_t i = 0; i < 4 && st == TSTORE_OK; i++) {
        uint8_t h[TCRYPT_STREAM_HASH_LEN] = {0};
        if (by_stream) {
            const tcrypt_datakey *k;
            st = tsq_key(s, s->live[i < s->nlive ? i : s->nlive - 1], &k);
            if (st != TSTORE_OK)
                break;
            tcrypt_stream_hash(k, q->device, q->stream, h);
        }
        st = tsq_bind_blob_copy(s, id, 5 + (int)i, h, sizeof h);
    }
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, id, 9, after_rx);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, id, 10, after_row);
    return st;
}

static tstore_status sq_query(void *ctx, const tstore_query *q, tstore_reading_cb cb, void *cbctx,
                              tstore_page *page)
{
    tsq *s = ctx;
    memset(page, 0, sizeof *page);
    if (!q || !cb || !tstore_device_valid(q->device))
        return tsq_fail(s, TSTORE_INVALID, "query: invalid device id");
    if (q->stream.len > TSTORE_STREAM_MAX || (q->stream.len && !q->stream.ptr))
        return tsq_fail(s, TSTORE_INVALID, "query: stream name longer than %u bytes",
                        TSTORE_STREAM_MAX);
    if (q->limit > TSTORE_PAGE_MAX)
        return tsq_fail(s, TSTORE_INVALID, "query: at most %u readings per page", TSTORE_PAGE_MAX);
    size_t limit = q->limit ? q->limit : TSTORE_PAGE_MAX;
    if (q->since_ms >= q->until_ms)
        return TSTORE_OK;
    bool own;
    int64_t dev = 0;
    tstore_status st = read_begin(s, &own);
    if (st == TSTORE_OK)
        st = tsq_device_find(s, q->device, &dev);
    if (st != TSTORE_OK || dev == 0)
        goto out;
    enum tsq_stmt id = q->newest_first ? ST_QUERY_DESC : ST_QUERY_ASC;
    if ((st = bind_query(s, id, q, dev)) != TSTORE_OK) {
        tsq_done(s, id);
        goto out;
    }
    size_t bytes = 0;
    int rc;
    while ((rc = sqlite3_step(s->st[id])) == SQLITE_ROW) {
        tstore_reading r;
        int64_t row = 0;
        memset(&r, 0, sizeof r);
        if ((st = tsq_open_row(s, id, q->device, &r, &row)) != TSTORE_OK)
            break;
        if (q->stream.len && (r.stream.len != q->stream.len ||
                              memcmp(r.stream.ptr, q->stream.ptr, q->stream.len) != 0))
            continue; /* a stream hash collision */
        if (page->count == limit ||
            (page->count > 0 && r.payload.len > TSTORE_PAGE_MAX_BYTES - bytes)) {
            page->more = true;
            break;
        }
        bytes += r.payload.len;
        if (cb(cbctx, &r) != 0) {
            st = tsq_fail(s, TSTORE_STOPPED, "query: stopped by the caller");
            break;
        }
        page->count++;
        page->next.received_ms = r.received_ms;
        page->next.row = row;
    }
    if (st == TSTORE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = tsq_sqlerr(s, rc, "reading readings");
    tsq_done(s, id);
    if (s->buf[0])
        sodium_memzero(s->buf[0], s->cap[0]);
out:
    read_end(s, own);
    return st;
}

/* ---- stats ------------------------------------------------------------ */

static tstore_status sq_stats(void *ctx, const char *device, tstore_stats *out)
{
    tsq *s = ctx;
    memset(out, 0, sizeof *out);
    if (device && !tstore_device_valid(device))
        return tsq_fail(s, TSTORE_INVALID, "stats: invalid device id");
    bool own, found = false;
    int64_t v = 0, dev = 0;
    tstore_status st = read_begin(s, &own);
    if (st == TSTORE_OK && device)
        st = tsq_device_find(s, device, &dev);
    enum tsq_stmt id = device ? ST_DEV_GET : ST_DEV_TOTALS;
    if (st == TSTORE_OK && (!device || dev != 0)) {
        if (device)
            st = tsq_bind_int(s, id, 1, dev);
        int rc = st == TSTORE_OK ? sqlite3_step(s->st[id]) : SQLITE_OK;
        sqlite3_stmt *q = s->st[id];
        if (rc == SQLITE_ROW) {
            int c = device ? 3 : 1; /* rows, bytes columns */
            out->devices = device ? 1 : (uint64_t)sqlite3_column_int64(q, 0);
            out->readings = (uint64_t)sqlite3_column_int64(q, c);
            out->bytes = (uint64_t)sqlite3_column_int64(q, c + 1);
        } else if (st == TSTORE_OK && rc != SQLITE_DONE) {
            st = tsq_sqlerr(s, rc, "reading counts");
        }
        tsq_done(s, id);
    }
    if (st == TSTORE_OK)
        st = tsq_meta_get_int(s, "reencrypt_until", &v, &found);
    out->data_keys = s->nlive;
    out->current_key = s->current_key;
    out->reencrypt_pending = found;
    read_end(s, own);
    return st;
}

/* ---- open and close --------------------------------------------------- */

static const char *sq_error(void *ctx)
{
    tsq *s = ctx;
    return s->err;
}

static void destroy(tsq *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < ST_COUNT; i++)
        (void)sqlite3_finalize(s->st[i]);
    if (s->db) {
        if (!sqlite3_get_autocommit(s->db))
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        (void)sqlite3_close_v2(s->db);
    }
    for (size_t i = 0; i < s->nkeys; i++)
        tcrypt_datakey_free(s->keys[i]);
    tsq_devs_clear(s);
    hmap_free(&s->devs);
    for (size_t i = 0; i < 3; i++) {
        if (s->buf[i]) {
            sodium_memzero(s->buf[i], s->cap[i]);
            free(s->buf[i]);
        }
    }
    free(s->path_db);
    free(s->path_master);
    free(s->path_master_new);
    free(s);
}

static void sq_close(void *ctx)
{
    destroy(ctx);
}

static const tstore_ops sqlite_ops = {
    .begin = sq_begin,
    .append = sq_append,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .query = sq_query,
    .delete_device = tsq_delete_device,
    .retention = tsq_retention,
    .stats = sq_stats,
    .rotate_master = tsq_rotate_master,
    .reencrypt_start = tsq_reencrypt_start,
    .reencrypt_step = tsq_reencrypt_step,
    .error = sq_error,
    .close = sq_close,
};

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    if (a > 4000 || b > 64)
        return NULL;
    char *p = malloc(a + b + 2);
    if (p)
        (void)snprintf(p, a + b + 2, "%s/%s", dir, name);
    return p;
}

static tstore_status exec(tsq *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? TSTORE_OK : tsq_sqlerr(s, rc, what);
}

static tstore_status pragma_text(tsq *s, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    tstore_status st = TSTORE_OK;
    out[0] = '\0';
    if (rc != SQLITE_OK)
        return tsq_sqlerr(s, rc, sql);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(q, 0);
        (void)snprintf(out, outlen, "%s", t ? (const char *)t : "");
    } else {
        st = tsq_sqlerr(s, rc, sql);
    }
    (void)sqlite3_finalize(q);
    return st;
}

/* Per connection, so every open sets them. */
static tstore_status configure(tsq *s)
{
    int rc = sqlite3_extended_result_codes(s->db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(s->db, 5000);
    /* A tampered file must not make SQLite run functions hidden in views or
     * triggers; foreign keys keep rows from pointing at deleted keys. */
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, (int *)NULL);
    if (rc != SQLITE_OK)
        return tsq_sqlerr(s, rc, "configuring the connection");
    char v[16];
    tstore_status st = pragma_text(s, "PRAGMA journal_mode = WAL", v, sizeof v);
    if (st == TSTORE_OK && strcmp(v, "wal") != 0)
        return tsq_fail(s, TSTORE_IO, "cannot use WAL journal mode (got \"%s\")", v);
    /* FULL: a commit the hub acknowledges on is synced to the WAL (NORMAL
     * would sync only at checkpoints). secure_delete: deleted readings are
     * overwritten with zeros, not left in free pages. */
    if (st == TSTORE_OK)
        st = exec(s, "PRAGMA synchronous = FULL", "synchronous");
    if (st == TSTORE_OK)
        st = exec(s, "PRAGMA secure_delete = ON", "secure_delete");
    /* The index pages an append touches stay in memory across passes. */
    if (st == TSTORE_OK)
        st = exec(s, "PRAGMA cache_size = -32768", "cache_size");
    if (st == TSTORE_OK)
        st = exec(s, "PRAGMA wal_autocheckpoint = 4096", "wal_autocheckpoint");
    if (st == TSTORE_OK)
        st = pragma_text(s, "PRAGMA secure_delete", v, sizeof v);
    if (st == TSTORE_OK && strcmp(v, "1") != 0)
        return tsq_fail(s, TSTORE_IO, "this SQLite cannot turn on secure_delete");
    if (st == TSTORE_OK)
        st = pragma_text(s, "PRAGMA foreign_keys", v, sizeof v);
    if (st == TSTORE_OK && strcmp(v, "1") != 0)
        return tsq_fail(s, TSTORE_IO, "this SQLite does not enforce foreign keys");
    return st;
}

static tstore_status prepare_all(tsq *s)
{
    for (size_t i = 0; i < ST_COUNT; i++) {
        int rc =
            sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK)
            return tsq_sqlerr(s, rc, stmt_sql[i]);
    }
    return TSTORE_OK;
}

/* Whether the file holds a store this build can use; *empty for a new file. */
static tstore_status schema_verdict(tsq *s, bool *empty)
{
    char v[32], n[32];
    *empty = false;
    tstore_status st = pragma_text(s, "PRAGMA user_version", v, sizeof v);
    if (st == TSTORE_OK)
        st = pragma_text(s, "SELECT count(*) FROM sqlite_master", n, sizeof n);
    if (st != TSTORE_OK)
        return st;
    if (strcmp(v, "0") == 0) {
        if (strcmp(n, "0") != 0)
            return tsq_fail(s, TSTORE_CORRUPT,
                            "not a moat telemetry store (tables without a "
                            "schema version)");
        *empty = true;
        return TSTORE_OK;
    }
    if (strcmp(v, "1") != 0) {
        bool digits = v[0] != '\0' && v[0] != '-';
        return tsq_fail(s, digits ? TSTORE_VERSION : TSTORE_CORRUPT,
                        "telemetry store schema version %s is not %d: %s", v,
                        TSTORE_SQLITE_SCHEMA_VERSION,
                        digits ? "upgrade this program" : "damaged file");
    }
    return TSTORE_OK;
}

/* The master key check and data key 1, in the transaction that made the
 * schema, so a store never exists without its first key. */
static tstore_status first_key(tsq *s)
{
    tcrypt_master *m = NULL;
    uint8_t *raw = NULL;
    char why[320];
    tstore_status st = tcrypt_master_load(s->path_master, &m, why, sizeof why);
    if (st != TSTORE_OK)
        return tsq_fail(s, st, "master key: %s", why);
    uint8_t check[TCRYPT_CHECK_LEN], wrapped[TCRYPT_WRAPPED_LEN];
    if (!(raw = tcrypt_raw_new())) {
        st = tsq_fail(s, TSTORE_NOMEM, "out of memory");
        goto out;
    }
    tcrypt_master_check(m, check);
    tcrypt_wrap(m, 1, raw, wrapped);
    st = tsq_meta_put_blob(s, "master_check", check, sizeof check);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_KEY_INSERT, 1, 1);
    if (st == TSTORE_OK)
        st = tsq_bind_blob(s, ST_KEY_INSERT, 2, wrapped, sizeof wrapped);
    if (st == TSTORE_OK)
        st = tsq_bind_int(s, ST_KEY_INSERT, 3, 0);
    if (st == TSTORE_OK)
        st = tsq_run(s, ST_KEY_INSERT, "storing the first data key");
    else
        tsq_done(s, ST_KEY_INSERT);
    if (st == TSTORE_OK)
        st = tsq_meta_put_int(s, "current_key", 1);
    if (st == TSTORE_OK)
        st = tsq_meta_put_int(s, "last_key_id", 1);
out:
    tcrypt_raw_free(raw);
    tcrypt_master_free(m);
    return st;
}

static tstore_status create(tsq *s)
{
    bool empty;
    tstore_status st = exec(s, "BEGIN IMMEDIATE", "creating the store");
    if (st != TSTORE_OK)
        return st;
    /* Again under the lock: another process may have created it meanwhile. */
    st = schema_verdict(s, &empty);
    if (st == TSTORE_OK && empty) {
        char pragma[48];
        (void)snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d",
                       TSTORE_SQLITE_SCHEMA_VERSION);
        st = exec(s, SCHEMA, "creating the schema");
        if (st == TSTORE_OK)
            st = exec(s, pragma, "creating the schema");
    }
    if (st == TSTORE_OK)
        st = prepare_all(s);
    if (st == TSTORE_OK && empty)
        st = first_key(s);
    if (st == TSTORE_OK)
        return exec(s, "COMMIT", "creating the store");
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    memcpy(s->err, keep, sizeof keep);
    return st;
}

/* Read the current key once at open: this is where a wrong master key is
 * refused, before the hub accepts a single reading. */
static tstore_status check_keys(tsq *s)
{
    bool own;
    const tcrypt_datakey *k;
    tstore_status st = read_begin(s, &own);
    if (st == TSTORE_OK)
        st = tsq_refresh(s, true);
    if (st == TSTORE_OK)
        st = tsq_key(s, s->current_key, &k);
    read_end(s, own);
    return st;
}

tstore_status tstore_sqlite_open(const char *dir, int flags, tstore **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!dir || !*dir || !tcrypt_init()) {
        if (err && errlen)
            (void)snprintf(err, errlen, "tstore_sqlite_open: invalid arguments");
        return TSTORE_INVALID;
    }
    tsq *s = calloc(1, sizeof *s);
    if (!s || !hmap_init(&s->devs)) {
        free(s);
        if (err && errlen)
            (void)snprintf(err, errlen, "out of memory");
        return TSTORE_NOMEM;
    }
    tstore_status st = TSTORE_OK;
    s->path_db = join(dir, TSTORE_SQLITE_FILE);
    s->path_master = join(dir, TSTORE_MASTER_FILE);
    s->path_master_new = join(dir, TSTORE_MASTER_FILE ".new");
    if (!s->path_db || !s->path_master || !s->path_master_new) {
        st = tsq_fail(s, TSTORE_INVALID, "data directory path too long");
        goto out;
    }
    /* Created here, 0600 from the start (SQLite gives -wal and -shm the
     * same mode); without CREATE a missing file is reported, not made. An
     * existing file is never open()ed and close()d here: closing any
     * descriptor of it would drop the POSIX locks another handle of this
     * process holds on it (a second handle in moatd would let an outside
     * sqlite3 delete the WAL under the running writer). */
    struct stat sb;
    if (lstat(s->path_db, &sb) != 0) {
        if (errno != ENOENT || !(flags & TSTORE_OPEN_CREATE)) {
            st = tsq_fail(s, errno == ENOENT ? TSTORE_NOT_FOUND : TSTORE_IO, "%s: %s", s->path_db,
                          strerror(errno));
            goto out;
        }
        int fd = open(s->path_db, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_CREAT | O_EXCL, 0600);
        if (fd < 0 && errno != EEXIST) {
            st = tsq_fail(s, TSTORE_IO, "%s: %s", s->path_db, strerror(errno));
            goto out;
        }
        if (fd >= 0)
            (void)close(fd); /* new: no lock of ours can be on it yet */
    }
    int rc =
        sqlite3_open_v2(s->path_db, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        st = tsq_sqlerr(s, rc, "opening");
        goto out;
    }
    bool empty = false;
    st = configure(s);
    if (st == TSTORE_OK)
        st = schema_verdict(s, &empty);
    if (st == TSTORE_OK && empty && !(flags & TSTORE_OPEN_CREATE))
        st = tsq_fail(s, TSTORE_NOT_FOUND, "no telemetry stored yet (empty store)");
    if (st == TSTORE_OK)
        st = empty ? create(s) : prepare_all(s);
    if (st == TSTORE_OK)
        st = check_keys(s);
out:
    if (st != TSTORE_OK) {
        if (err && errlen) {
            /* Messages about the key file name it already. */
            bool named = strstr(s->err, dir) != NULL;
            (void)snprintf(err, errlen, "%s%s%s", named ? "" : (s->path_db ? s->path_db : dir),
                           named ? "" : ": ", s->err);
        }
        destroy(s);
        return st;
    }
    s->iface.ops = &sqlite_ops;
    s->iface.ctx = s;
    *out = &s->iface;
    return TSTORE_OK;
}
