/*
 * tsq.h — what the files of the SQLite telemetry back-end share
 * (tstore_sqlite.c: open, schema, devices, append, query;
 * tstore_sqlite_db.c: errors, statement helpers, meta; tstore_sqlite_keys.c:
 * the master key and data keys; tstore_sqlite_maint.c: deletion, retention,
 * re-encryption, master key rotation): the handle, its prepared statements
 * and the helpers that turn SQLite results into tstore_status values with a
 * message kept on the handle.
 */
#ifndef MOAT_TELEMETRY_TSQ_H
#define MOAT_TELEMETRY_TSQ_H

#include <sqlite3.h>

#include "hmap.h"
#include "tcrypt.h"
#include "tstore.h"

#if defined(__GNUC__) || defined(__clang__)
#define TSQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TSQ_PRINTF(a, b)
#endif

/* Data keys held at once: the current one and those of rows not yet
 * re-encrypted (normally one or two). */
#define TSQ_KEYS_MAX 8

enum tsq_stmt {
    ST_BEGIN,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_DATA_VERSION,
    ST_META_GET,
    ST_META_PUT,
    ST_META_DEL,
    ST_MAX_ROW,
    ST_KEY_GET,
    ST_KEY_ALL,
    ST_KEY_INSERT,
    ST_KEY_UPDATE,
    ST_KEY_DELETE,
    ST_DEV_FIND,
    ST_DEV_INSERT,
    ST_DEV_ADD,
    ST_DEV_GET,
    ST_DEV_NEXT,
    ST_DEV_DELETE,
    ST_DEV_REKEY,
    ST_DEV_OLDKEY,
    ST_DEV_TOTALS,
    ST_INSERT,
    ST_TAG_EXISTS,
    ST_QUERY_ASC,
    ST_QUERY_DESC,
    ST_DEL_DEVICE_BATCH,
    ST_DEL_BEFORE,
    ST_OLDEST,
    ST_DEL_ID,
    ST_RE_SCAN,
    ST_RE_GET,
    ST_RE_UPDATE,
    ST_OLDKEY_ANY,
    ST_CHECKPOINT,
    ST_COUNT
};

/* A device seen in the current transaction or before: its row number and
 * the counts this transaction adds to it (flushed at commit). */
typedef struct tsq_dev {
    char id[TSTORE_DEVICE_MAX + 1];
    int64_t no;
    uint64_t add_rows, add_bytes;
    struct tsq_dev *next_dirty; /* in tsq.dirty while it has counts to flush */
    bool dirty;
} tsq_dev;

typedef struct tsq {
    tstore iface;
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    char *path_db, *path_master, *path_master_new;

    tcrypt_datakey *keys[TSQ_KEYS_MAX]; /* unwrapped, in sodium_malloc'd memory */
    size_t nkeys;
    int64_t live[TSQ_KEYS_MAX]; /* ids of every data key in the store */
    size_t nlive;
    int64_t current_key;

    bool in_write;       /* between begin and commit/rollback */
    bool failed;         /* a write of this transaction failed */
    bool next_row_known; /* next_row is right (no other writer since) */
    int64_t next_row;
    int64_t data_version; /* last seen PRAGMA data_version */

    hmap devs; /* device id -> tsq_dev; cleared when another connection commits */
    tsq_dev *dirty;

    /* Scratch: 0 = an opened record (query views point here), 1 = a
     * record being written, 2 = its ciphertext. Wiped when freed. */
    uint8_t *buf[3];
    size_t cap[3];
    uint8_t row_sh[TCRYPT_STREAM_HASH_LEN], row_tag[TCRYPT_DEDUPE_LEN]; /* bound by seal_row */
    char err[384];
} tsq;

/* ---- errors ---------------------------------------------------------- */

tstore_status tsq_fail(tsq *s, tstore_status st, const char *fmt, ...) TSQ_PRINTF(3, 4);
/* Map a failed SQLite call: BUSY, FULL, CORRUPT or IO, with "what: message". */
tstore_status tsq_sqlerr(tsq *s, int rc, const char *what);

/* ---- statements ------------------------------------------------------ */

/* Reset a statement and clear its bindings (bound SQLITE_STATIC). */
void tsq_done(tsq *s, enum tsq_stmt id);
/* Step a statement that returns no rows, then reset it. */
tstore_status tsq_run(tsq *s, enum tsq_stmt id, const char *what);
tstore_status tsq_bind_int(tsq *s, enum tsq_stmt id, int i, int64_t v);
tstore_status tsq_bind_blob(tsq *s, enum tsq_stmt id, int i, const void *p, size_t n);
/* As tsq_bind_blob, but SQLite copies the bytes (for values on the stack). */
tstore_status tsq_bind_blob_copy(tsq *s, enum tsq_stmt id, int i, const void *p, size_t n);
tstore_status tsq_bind_text(tsq *s, enum tsq_stmt id, int i, const char *text);
tstore_status tsq_bind_null(tsq *s, enum tsq_stmt id, int i);

/* Begin/commit a write transaction of the back-end's own (maintenance
 * calls); refuses when the caller's transaction is open. */
tstore_status tsq_write_begin(tsq *s);
tstore_status tsq_write_end(tsq *s, tstore_status st);

/* ---- meta, keys, devices --------------------------------------------- */

tstore_status tsq_meta_get_int(tsq *s, const char *name, int64_t *out, bool *found);
tstore_status tsq_meta_put_int(tsq *s, const char *name, int64_t v);
tstore_status tsq_meta_put_blob(tsq *s, const char *name, const void *p, size_t n);
tstore_status tsq_meta_del(tsq *s, const char *name);
/* The master key check value stored at creation (and by each rotation). */
tstore_status tsq_meta_get_check(tsq *s, uint8_t out[TCRYPT_CHECK_LEN]);

/* Read the master key file and check it is the store's own (completing a
 * rotation that stopped after its commit, see tstore_sqlite_maint.c). */
tstore_status tsq_master(tsq *s, tcrypt_master **out);

/* The working keys of data key id, unwrapping (master key read) when not
 * held yet. */
tstore_status tsq_key(tsq *s, int64_t id, const tcrypt_datakey **out);

/* Re-read what another connection may have changed (the current key, the
 * live keys, the next row id) if PRAGMA data_version moved, or if force.
 * Inside a transaction. */
tstore_status tsq_refresh(tsq *s, bool force);

/* Forget held keys that are no longer live. */
void tsq_keys_prune(tsq *s);

/* Grow scratch buffer which (0..2) to at least n bytes. */
tstore_status tsq_reserve(tsq *s, int which, size_t n);

/* Decrypt the device id of a devices row (hash, key_id, id_ct columns at
 * col, col + 1, col + 2 of statement id) into out. */
tstore_status tsq_device_id(tsq *s, enum tsq_stmt id, int col, char out[TSTORE_DEVICE_MAX + 1]);

/* Look a device up by id under every live data key: *no = 0 if unknown. */
tstore_status tsq_device_find(tsq *s, const char *device, int64_t *no);

/* Drop the device cache (rollback, another writer, deletion). */
void tsq_devs_clear(tsq *s);

/* Open a readings row (columns id, received, sh, tag, key_id, ct starting at
 * col 0 of statement id, as in ST_QUERY_*) of device into r; the record
 * views point into scratch buffer 0. */
tstore_status tsq_open_row(tsq *s, enum tsq_stmt id, const char *device, tstore_reading *r,
                           int64_t *row);

/* Seal reading r as row id of device dev_no under the current key and bind
 * the columns sh, tag, key_id, ct at parameters first..first+3 of
 * statement st (ST_INSERT or ST_RE_UPDATE). *sealed_len gets ct's length. */
tstore_status tsq_seal_row(tsq *s, enum tsq_stmt st, int first, int64_t id, const tstore_reading *r,
                           size_t *sealed_len);

/* ---- maintenance (tstore_sqlite_maint.c) ----------------------------- */

tstore_status tsq_delete_device(void *ctx, const char *device, uint64_t *deleted, bool *wiped);
tstore_status tsq_retention(void *ctx, tstore_policy_cb policy, void *pctx, int64_t now_ms,
                            size_t max_rows, tstore_retention_run *run);
tstore_status tsq_rotate_master(void *ctx, uint64_t *rewrapped);
tstore_status tsq_reencrypt_start(void *ctx, bool *started);
tstore_status tsq_reencrypt_step(void *ctx, size_t max_rows, tstore_reencrypt_progress *p);

#endif /* MOAT_TELEMETRY_TSQ_H */
