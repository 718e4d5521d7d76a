/*
 * tstore.h — the telemetry store, as an interface: what devices publish
 * under moat/{id}/up/... kept encrypted at rest and queried back.
 *
 * A store is a table of operations plus an opaque context, like the broker's
 * store (src/hub/store.h) and BearSSL's classes: the SQLite back-end is
 * tstore_sqlite.c, and a PostgreSQL one is one more table of the same
 * operations. Callers use the inline wrappers below (tstore_append(ts, ...)).
 *
 * How the hub uses it (one worker thread, one handle):
 *
 *     tstore_begin(ts);                         // once per event-loop pass
 *     for each reading of each PUBLISH in the pass:
 *         switch (tstore_append(ts, &r)) {
 *         case TSTORE_OK:        break;          // stored
 *         case TSTORE_DUPLICATE: break;          // (device, seq) seen: drop it, still ack
 *         default:               ...             // the pass is lost: see commit
 *         }
 *     if (tstore_commit(ts) == TSTORE_OK)       // one fsync for the whole pass
 *         flush PUBACKs;                        // only now: acknowledged = durable
 *     else
 *         do not acknowledge; alert (tstore_error(ts) says why: disk full...)
 *
 * Duplicates are refused by (device, sequence number): the SDK's queue gives
 * each reading a number that is unique for the device across all its streams
 * and never reused, so a reading sent again after a lost PUBACK (or inside a
 * re-sent batch) is recognised whatever its stream. Readings without a
 * sequence number (plain MQTT publishes) are never deduplicated.
 *
 * Everything a reading says except the hub's own receive time is encrypted
 * (docs/telemetry.md has the data model and the key hierarchy). A store is
 * used by one thread; several handles (moatd, moatctl) may open the same
 * data directory at once.
 */
#ifndef MOAT_TELEMETRY_TSTORE_H
#define MOAT_TELEMETRY_TSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#if defined(__GNUC__) || defined(__clang__)
#define TSTORE_MUST_CHECK __attribute__((warn_unused_result))
#else
#define TSTORE_MUST_CHECK
#endif

typedef enum tstore_status {
    TSTORE_OK = 0,
    TSTORE_DUPLICATE, /* append: this (device, seq) is already stored */
    TSTORE_NOT_FOUND, /* no such store (opened without create) */
    TSTORE_INVALID,   /* an argument breaks the limits below, or a call out of order */
    TSTORE_BUSY,      /* another writer held the lock longer than the busy timeout */
    TSTORE_FULL,      /* the disk (or the file size limit) is full */
    TSTORE_IO,        /* an I/O or other back-end error (see tstore_error) */
    TSTORE_CORRUPT,   /* stored data fails its checks: bad layout, or a ciphertext
                         that does not authenticate (tampered, swapped rows) */
    TSTORE_KEY,       /* master key missing, unreadable, or not the store's */
    TSTORE_VERSION,   /* the store's schema is newer than this program */
    TSTORE_NOMEM,
    TSTORE_STOPPED /* a callback asked to stop */
} tstore_status;

/* Short name of a status ("ok", "duplicate", ...). */
const char *tstore_status_name(tstore_status st);

/* ---- limits ----------------------------------------------------------- */

#define TSTORE_DEVICE_MAX     63u       /* bytes of a device id */
#define TSTORE_STREAM_MAX     256u      /* bytes of a stream name (a topic's tail) */
#define TSTORE_PAYLOAD_MAX    16777216u /* bytes of one payload */
#define TSTORE_PAGE_MAX       1000u     /* readings per query page */
#define TSTORE_PAGE_MAX_BYTES 4194304u  /* payload bytes per page (at least one reading) */
#define TSTORE_SLICE_MAX      100000u   /* rows per background slice */

/* ---- readings --------------------------------------------------------- */

/*
 * One reading. For append, every view belongs to the caller and is read
 * during the call only. Handed out by query, the views point into the
 * store's buffers and are valid during the callback only.
 */
typedef struct tstore_reading {
    const char *device;  /* NUL-terminated, 1..TSTORE_DEVICE_MAX bytes, no controls */
    codec_bytes stream;  /* 1..TSTORE_STREAM_MAX bytes */
    codec_bytes payload; /* 0..TSTORE_PAYLOAD_MAX bytes */
    int64_t received_ms; /* the hub's clock when the PUBLISH arrived, ms since epoch */
    bool has_device_time;
    int64_t device_time_ms; /* the device's own clock, when it said */
    bool has_seq;
    uint64_t seq; /* the device queue's sequence number, when it has one */
} tstore_reading;

/* Where a page ended: give it back as `after` for the next page. Opaque to
 * callers, but two integers, so a service-facing API can carry it. */
typedef struct tstore_cursor {
    int64_t received_ms;
    int64_t row;
} tstore_cursor;

typedef struct tstore_query {
    const char *device; /* required */
    codec_bytes stream; /* len 0: every stream */
    int64_t since_ms;   /* received_ms >= since_ms (INT64_MIN: no bound) */
    int64_t until_ms;   /* received_ms <  until_ms (INT64_MAX: no bound) */
    size_t limit;       /* readings in this page, 1..TSTORE_PAGE_MAX; 0 = the maximum */
    bool newest_first;  /* order by receive time descending */
    bool has_after;     /* continue after `after` (from the previous page) */
    tstore_cursor after;
} tstore_query;

typedef struct tstore_page {
    size_t count;       /* readings handed to the callback */
    bool more;          /* another page follows: query again with after = next */
    tstore_cursor next; /* the last reading of this page */
} tstore_page;

/* Called once per reading; non-zero stops the query (TSTORE_STOPPED). */
typedef int (*tstore_reading_cb)(void *ctx, const tstore_reading *r);

/* ---- retention -------------------------------------------------------- */

/* What to keep of one device's readings. Zero fields mean "no limit". */
typedef struct tstore_retention_policy {
    int64_t max_age_ms; /* readings received before now - max_age_ms go */
    uint64_t max_bytes; /* beyond this many stored bytes, the oldest go */
    bool erase;         /* the device no longer exists: everything goes */
} tstore_retention_policy;

/* Fills *out for device (zeroed before the call). A non-OK status skips the
 * device in this run (it is tried again next run). */
typedef tstore_status (*tstore_policy_cb)(void *ctx, const char *device,
                                          tstore_retention_policy *out);

/* Progress of a retention run, kept by the caller between slices. Zero it to
 * start a run; done says the run has visited every device. */
typedef struct tstore_retention_run {
    int64_t next_device; /* back-end position */
    bool done;
    uint64_t devices; /* visited so far */
    uint64_t deleted; /* readings deleted so far */
    uint64_t skipped; /* devices whose policy callback failed */
} tstore_retention_run;

/* ---- re-encryption and stats ----------------------------------------- */

typedef struct tstore_reencrypt_progress {
    bool done;             /* every row is under the current data key; old keys deleted */
    uint64_t rewritten;    /* rows re-encrypted by this call */
    uint64_t remaining;    /* rows still to visit (an upper bound) */
    uint64_t keys_deleted; /* old data keys deleted by this call */
    bool wiped;            /* done, and the old ciphertexts overwritten in the files */
} tstore_reencrypt_progress;

typedef struct tstore_stats {
    uint64_t devices;
    uint64_t readings;
    uint64_t bytes;      /* stored ciphertext bytes of readings */
    uint64_t data_keys;  /* data keys in the store (2 while re-encrypting) */
    int64_t current_key; /* id of the data key new rows are written with */
    bool reencrypt_pending;
} tstore_stats;

/* ---- the interface ---------------------------------------------------- */

typedef struct tstore_ops {
    /* Group commit: begin a write transaction; append any number of
     * readings; commit makes them all durable with one sync (or none: a
     * failed append fails the commit, which then rolls everything back). */
    tstore_status (*begin)(void *ctx);
    tstore_status (*append)(void *ctx, const tstore_reading *r);
    tstore_status (*commit)(void *ctx);
    void (*rollback)(void *ctx);

    /* One page of a device's readings in receive-time order. Outside a
     * write transaction the page is read from one consistent snapshot. */
    tstore_status (*query)(void *ctx, const tstore_query *q, tstore_reading_cb cb, void *cbctx,
                           tstore_page *page);

    /* Erase every reading of device (in bounded transactions, outside any
     * write transaction of the caller) and make sure the bytes are gone
     * from the files, not only unlinked: *wiped says the old pages were
     * overwritten and the write-ahead log truncated (false if a reader kept
     * the log busy; the next checkpoint finishes the job). */
    tstore_status (*delete_device)(void *ctx, const char *device, uint64_t *deleted, bool *wiped);

    /* One slice of retention: visits devices from run->next_device, asks
     * policy for each, deletes at most max_rows readings (one short
     * transaction), and advances run. Call until run->done. */
    tstore_status (*retention)(void *ctx, tstore_policy_cb policy, void *pctx, int64_t now_ms,
                               size_t max_rows, tstore_retention_run *run);

    /* device NULL: the whole store; else one device (zero if unknown). */
    tstore_status (*stats)(void *ctx, const char *device, tstore_stats *out);

    /* Key management (docs/telemetry.md). rotate_master makes a new master
     * key, re-wraps every data key under it and replaces the key file;
     * *rewrapped counts the data keys. reencrypt_start makes a new data key
     * that new rows use from now on (*started false: a re-encryption was
     * already under way and continues); reencrypt_step moves at most
     * max_rows rows to it, then deletes the old keys once no row needs them.
     * Rows under any key stay readable throughout; an interrupted run
     * resumes where it stopped. */
    tstore_status (*rotate_master)(void *ctx, uint64_t *rewrapped);
    tstore_status (*reencrypt_start)(void *ctx, bool *started);
    tstore_status (*reencrypt_step)(void *ctx, size_t max_rows, tstore_reencrypt_progress *p);

    /* Why the last call that failed failed, one line; "" if none did. */
    const char *(*error)(void *ctx);
    void (*close)(void *ctx);
} tstore_ops;

typedef struct tstore {
    const tstore_ops *ops;
    void *ctx;
} tstore;

TSTORE_MUST_CHECK static inline tstore_status tstore_begin(tstore *t)
{
    return t->ops->begin(t->ctx);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_append(tstore *t, const tstore_reading *r)
{
    return t->ops->append(t->ctx, r);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_commit(tstore *t)
{
    return t->ops->commit(t->ctx);
}

static inline void tstore_rollback(tstore *t)
{
    t->ops->rollback(t->ctx);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_query_page(tstore *t, const tstore_query *q,
                                                                tstore_reading_cb cb, void *cbctx,
                                                                tstore_page *page)
{
    return t->ops->query(t->ctx, q, cb, cbctx, page);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_delete_device(tstore *t, const char *device,
                                                                   uint64_t *deleted, bool *wiped)
{
    return t->ops->delete_device(t->ctx, device, deleted, wiped);
}

/*
 * tstore_apply_retention: one bounded slice of retention (see ops above).
 * The hub calls it from a timer with a few thousand rows per slice; moatctl
 * telemetry purge loops until run.done. tstore_registry_policy
 * (tstore_registry.h) is a policy callback reading group settings.
 */
TSTORE_MUST_CHECK static inline tstore_status
tstore_apply_retention(tstore *t, tstore_policy_cb policy, void *pctx, int64_t now_ms,
                       size_t max_rows, tstore_retention_run *run)
{
    return t->ops->retention(t->ctx, policy, pctx, now_ms, max_rows, run);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_get_stats(tstore *t, const char *device,
                                                               tstore_stats *out)
{
    return t->ops->stats(t->ctx, device, out);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_rotate_master(tstore *t, uint64_t *rewrapped)
{
    return t->ops->rotate_master(t->ctx, rewrapped);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_reencrypt_start(tstore *t, bool *started)
{
    return t->ops->reencrypt_start(t->ctx, started);
}

TSTORE_MUST_CHECK static inline tstore_status tstore_reencrypt_step(tstore *t, size_t max_rows,
                                                                    tstore_reencrypt_progress *p)
{
    return t->ops->reencrypt_step(t->ctx, max_rows, p);
}

static inline const char *tstore_error(tstore *t)
{
    return t->ops->error(t->ctx);
}

/* Closes the store; an open transaction is rolled back. NULL is fine. */
static inline void tstore_close(tstore *t)
{
    if (t)
        t->ops->close(t->ctx);
}

/* True for a device id the store accepts (see tstore_reading). */
bool tstore_device_valid(const char *device);

#endif /* MOAT_TELEMETRY_TSTORE_H */
