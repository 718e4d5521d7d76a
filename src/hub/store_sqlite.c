/*
 * store_sqlite.c — broker_store (store.h) over one SQLite file.
 *
 * The broker keeps its state in memory and writes through this store what
 * must survive a restart: persistent sessions with their subscriptions,
 * queued deliveries and QoS 2 packet ids, the messages those queues, the
 * retained topics and the wills of open connections point at, the retained
 * topics and the wills themselves. At start-up
 * load() hands it all back. Each loop pass is one write transaction (group
 * commit), so durability costs one fsync per pass, not one per message.
 *
 * Client ids, topics and filters come from the wire: they are stored as BLOBs
 * with their exact lengths and never pass through a C string function. What
 * is read back is checked (column types, ranges, lengths) before it reaches
 * the broker: bad stored data fails the load with a "corrupt" error instead
 * of handing the broker values its structures cannot hold.
 *
 * Statements are prepared once at open and reset after each use. A write
 * that fails marks the transaction as failed, and commit then rolls it back
 * instead of making half a loop pass durable.
 */
#include "store_sqlite.h"

#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schema ------------------------------------------------------------- */

/*
 * Version 1. Blob columns hold wire bytes; integers are SQLite's 64-bit
 * signed integers (uint64 times are stored bit for bit). Message ids and
 * queue sequence numbers stay below 2^63 so that ORDER BY and max() work.
 *
 * Tables keyed by something other than an integer are WITHOUT ROWID: the
 * primary key is then the only b-tree, instead of a rowid table plus an index.
 *
 * The references to msgs are DEFERRABLE INITIALLY DEFERRED: within a pass the
 * broker may delete a message before the queue row that pointed at it, or
 * write them in either order; only the state at COMMIT has to be consistent.
 * queue(msg_id) and retained(msg_id) are indexed because every delete from
 * msgs looks up its children there.
 */
static const char schema_v1[] =
    "CREATE TABLE msgs("
    " id INTEGER PRIMARY KEY,"
    " topic BLOB NOT NULL, payload BLOB NOT NULL, props BLOB NOT NULL, origin BLOB NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, expires_at INTEGER NOT NULL);"
    "CREATE TABLE sessions("
    " client_id BLOB PRIMARY KEY, kind INTEGER NOT NULL, principal BLOB NOT NULL,"
    " version INTEGER NOT NULL, expiry_interval INTEGER NOT NULL, expires_at INTEGER NOT NULL)"
    " WITHOUT ROWID;"
    "CREATE TABLE subs("
    " client_id BLOB NOT NULL, filter BLOB NOT NULL, options INTEGER NOT NULL,"
    " sub_id INTEGER NOT NULL, PRIMARY KEY(client_id, filter)) WITHOUT ROWID;"
    "CREATE TABLE queue("
    " client_id BLOB NOT NULL, seq INTEGER NOT NULL,"
    " msg_id INTEGER NOT NULL REFERENCES msgs(id) DEFERRABLE INITIALLY DEFERRED,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, state INTEGER NOT NULL,"
    " packet_id INTEGER NOT NULL, sub_ids BLOB NOT NULL,"
    " PRIMARY KEY(client_id, seq)) WITHOUT ROWID;"
    "CREATE INDEX queue_msg ON queue(msg_id);"
    "CREATE TABLE qos2("
    " client_id BLOB NOT NULL, packet_id INTEGER NOT NULL,"
    " PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;"
    "CREATE TABLE retained("
    " topic BLOB PRIMARY KEY,"
    " msg_id INTEGER NOT NULL REFERENCES msgs(id) DEFERRABLE INITIALLY DEFERRED) WITHOUT ROWID;"
    "CREATE INDEX retained_msg ON retained(msg_id);";

/*
 * Version 2, applied to a version 1 file (new files get version 1, then
 * this): queue rows say whether they came through a share group, and the
 * wills of live connections are kept so that a crash does not lose them.
 */
static const char schema_v2[] =
    "ALTER TABLE queue ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE wills("
    " client_id BLOB PRIMARY KEY, kind INTEGER NOT NULL, principal BLOB NOT NULL,"
    " msg_id INTEGER NOT NULL REFERENCES msgs(id) DEFERRABLE INITIALLY DEFERRED,"
    " delay INTEGER NOT NULL, expiry INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX wills_msg ON wills(msg_id);";

/* ---- prepared statements ------------------------------------------------ */

enum stmt_id {
    ST_BEGIN,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_MSG_PUT,
    ST_MSG_DELETE,
    ST_MSG_MAX_ID,
    ST_SESSION_PUT,
    ST_SESSION_DELETE,
    ST_SESSION_DELETE_SUBS,
    ST_SESSION_DELETE_QUEUE,
    ST_SESSION_DELETE_QOS2,
    ST_SUB_PUT,
    ST_SUB_DELETE,
    ST_QUEUE_PUT,
    ST_QUEUE_DELETE,
    ST_QOS2_PUT,
    ST_QOS2_DELETE,
    ST_RETAINED_PUT,
    ST_RETAINED_DELETE,
    ST_WILL_PUT,
    ST_WILL_DELETE,
    ST_FK_CHECK,
    ST_LOAD_MSGS,
    ST_LOAD_SESSIONS,
    ST_LOAD_SUBS,
    ST_LOAD_QUEUE,
    ST_LOAD_QOS2,
    ST_LOAD_RETAINED,
    ST_LOAD_WILLS,
    ST_COUNT
};

/* Puts are upserts: the broker rewrites a row when its state changes (a
 * delivery moving from PUBLISH sent to PUBREL sent, a session going offline). */
static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_MSG_PUT] = "INSERT INTO msgs(id, topic, payload, props, origin, qos, retain, expires_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO UPDATE SET"
                   " topic = ?2, payload = ?3, props = ?4, origin = ?5, qos = ?6, retain = ?7,"
                   " expires_at = ?8",
    [ST_MSG_DELETE] = "DELETE FROM msgs WHERE id = ?1",
    [ST_MSG_MAX_ID] = "SELECT max(id) FROM msgs",
    [ST_SESSION_PUT] = "INSERT INTO sessions(client_id, kind, principal, version, expiry_interval,"
                       " expires_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(client_id) DO"
                       " UPDATE SET kind = ?2, principal = ?3, version = ?4, expiry_interval = ?5,"
                       " expires_at = ?6",
    [ST_SESSION_DELETE] = "DELETE FROM sessions WHERE client_id = ?1",
    [ST_SESSION_DELETE_SUBS] = "DELETE FROM subs WHERE client_id = ?1",
    [ST_SESSION_DELETE_QUEUE] = "DELETE FROM queue WHERE client_id = ?1",
    [ST_SESSION_DELETE_QOS2] = "DELETE FROM qos2 WHERE client_id = ?1",
    [ST_SUB_PUT] = "INSERT INTO subs(client_id, filter, options, sub_id) VALUES(?1, ?2, ?3, ?4)"
                   " ON CONFLICT(client_id, filter) DO UPDATE SET options = ?3, sub_id = ?4",
    [ST_SUB_DELETE] = "DELETE FROM subs WHERE client_id = ?1 AND filter = ?2",
    [ST_QUEUE_PUT] = "INSERT INTO queue(client_id, seq, msg_id, qos, retain, state, packet_id,"
                     " sub_ids, shared) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                     " ON CONFLICT(client_id, seq) DO UPDATE SET msg_id = ?3, qos = ?4,"
                     " retain = ?5, state = ?6, packet_id = ?7, sub_ids = ?8, shared = ?9",
    [ST_QUEUE_DELETE] = "DELETE FROM queue WHERE client_id = ?1 AND seq = ?2",
    [ST_QOS2_PUT] = "INSERT INTO qos2(client_id, packet_id) VALUES(?1, ?2) ON CONFLICT DO NOTHING",
    [ST_QOS2_DELETE] = "DELETE FROM qos2 WHERE client_id = ?1 AND packet_id = ?2",
    [ST_RETAINED_PUT] = "INSERT INTO retained(topic, msg_id) VALUES(?1, ?2)"
                        " ON CONFLICT(topic) DO UPDATE SET msg_id = ?2",
    [ST_RETAINED_DELETE] = "DELETE FROM retained WHERE topic = ?1",
    [ST_WILL_PUT] = "INSERT INTO wills(client_id, kind, principal, msg_id, delay, expiry)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(client_id) DO UPDATE SET"
                    " kind = ?2, principal = ?3, msg_id = ?4, delay = ?5, expiry = ?6",
    [ST_WILL_DELETE] = "DELETE FROM wills WHERE client_id = ?1",
    [ST_FK_CHECK] = "PRAGMA foreign_key_check",
    [ST_LOAD_MSGS] = "SELECT id, topic, payload, props, origin, qos, retain, expires_at"
                     " FROM msgs ORDER BY id",
    [ST_LOAD_SESSIONS] = "SELECT client_id, kind, principal, version, expiry_interval, expires_at"
                         " FROM sessions ORDER BY client_id",
    [ST_LOAD_SUBS] = "SELECT client_id, filter, options, sub_id FROM subs"
                     " ORDER BY client_id, filter",
    [ST_LOAD_QUEUE] = "SELECT client_id, seq, msg_id, qos, retain, state, packet_id, sub_ids,"
                      " shared FROM queue ORDER BY client_id, seq",
    [ST_LOAD_QOS2] = "SELECT client_id, packet_id FROM qos2 ORDER BY client_id, packet_id",
    [ST_LOAD_RETAINED] = "SELECT topic, msg_id FROM retained ORDER BY topic",
    [ST_LOAD_WILLS] = "SELECT client_id, kind, principal, msg_id, delay, expiry FROM wills"
                      " ORDER BY client_id",
};

/* ---- the store ---------------------------------------------------------- */

typedef struct sqlite_store {
    broker_store iface; /* what callers hold; iface.ctx points back here */
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    bool in_write; /* between a successful begin and commit or rollback */
    bool failed;   /* a write of this transaction failed: commit must not */
    char err[256];
} sqlite_store;

/* Views handed to the loader never have a NULL pointer, even when empty:
 * sqlite3_column_blob gives NULL for a zero-length BLOB, and a NULL passed on
 * to memcpy is undefined even with a length of 0. */
static const uint8_t empty_bytes[1];

static void set_error(sqlite_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(sqlite_store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
}

/* Records a failed SQLite call; rc is its result. Returns false so callers
 * can `return db_error(...)`. */
static bool db_error(sqlite_store *s, int rc, const char *what)
{
    int primary = rc & 0xff;
    /* SQLite's own word for a damaged file gets the store's "corrupt" prefix,
     * so the operator sees one kind of message for bad stored data. */
    const char *prefix = (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) ? "corrupt: " : "";
    set_error(s, "%s%s: %s", prefix, what, sqlite3_errmsg(s->db));
    return false;
}

/* Resets a statement after use and drops its bindings, which may point at
 * the caller's buffers (they are bound SQLITE_STATIC, without a copy). ok says
 * whether the step succeeded: a failed step was already reported, and reset
 * then repeats its error. */
static bool stmt_done(sqlite_store *s, sqlite3_stmt *st, bool ok, const char *what)
{
    int rc = sqlite3_reset(st);
    if (ok && rc != SQLITE_OK)
        ok = db_error(s, rc, what);
    /* Always SQLITE_OK: it only forgets values. */
    (void)sqlite3_clear_bindings(st);
    return ok;
}

/* Steps a statement that returns no rows (or whose rows are not wanted) to
 * the end, then resets it. */
static bool stmt_run(sqlite_store *s, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = s->st[id];
    int rc = sqlite3_step(st);
    bool ok = true;
    if (rc != SQLITE_DONE)
        ok = db_error(s, rc, what);
    return stmt_done(s, st, ok, what);
}

/* ---- binding ------------------------------------------------------------ */

static bool bind_bytes(sqlite_store *s, int i, sqlite3_stmt *st, codec_bytes b, const char *what)
{
    int rc;
    if (b.len == 0) {
        /* bind_blob with a NULL pointer would store SQL NULL, not an empty
         * BLOB, and a payload of length 0 is a valid message. */
        rc = sqlite3_bind_zeroblob(st, i, 0);
    } else if (b.ptr == NULL) {
        set_error(s, "%s: NULL pointer with length %zu", what, b.len);
        return false;
    } else {
        rc = sqlite3_bind_blob64(st, i, b.ptr, (sqlite3_uint64)b.len, SQLITE_STATIC);
    }
    if (rc != SQLITE_OK)
        return db_error(s, rc, what);
    return true;
}

static bool bind_int(sqlite_store *s, int i, sqlite3_stmt *st, int64_t v, const char *what)
{
    int rc = sqlite3_bind_int64(st, i, (sqlite3_int64)v);
    if (rc != SQLITE_OK)
        return db_error(s, rc, what);
    return true;
}

/* Message ids and queue sequence numbers: ordered and compared by SQLite as
 * signed integers, so they must stay in 1..INT64_MAX (0 is the broker's "not
 * stored yet"). */
static bool bind_key(sqlite_store *s, int i, sqlite3_stmt *st, uint64_t v, const char *what)
{
    if (v == 0 || v > (uint64_t)INT64_MAX) {
        set_error(s, "%s: key %" PRIu64 " out of range", what, v);
        return false;
    }
    return bind_int(s, i, st, (int64_t)v, what);
}

/* Times are uint64 milliseconds kept bit for bit: the conversion to int64 is
 * undone on load, and SQLite never compares them. */
static bool bind_u64(sqlite_store *s, int i, sqlite3_stmt *st, uint64_t v, const char *what)
{
    return bind_int(s, i, st, (int64_t)v, what);
}

/* ---- transactions ------------------------------------------------------- */

/* Every write checks this first. The broker always calls begin before its
 * first write of a pass; a write outside a transaction would be durable on
 * its own, splitting a pass into pieces that a crash could separate. */
static bool writable(sqlite_store *s, const char *what)
{
    if (!s->in_write) {
        set_error(s, "%s: no transaction (begin was not called)", what);
        return false;
    }
    if (sqlite3_get_autocommit(s->db)) {
        /* SQLite rolls a transaction back by itself after some errors (disk
         * full, I/O error, out of memory). Later writes would then each
         * commit alone. */
        s->failed = true;
        set_error(s, "%s: the transaction was rolled back after an earlier error", what);
        return false;
    }
    return true;
}

/* Ends a write: runs the statement when the binding went well, and marks the
 * transaction failed otherwise, so that commit refuses it. */
static bool write_end(sqlite_store *s, enum stmt_id id, bool bound, const char *what)
{
    bool ok;
    if (bound)
        ok = stmt_run(s, id, what);
    else
        ok = stmt_done(s, s->st[id], false, what);
    if (!ok)
        s->failed = true;
    return ok;
}

static bool store_begin(void *ctx)
{
    sqlite_store *s = ctx;
    if (s->in_write)
        return true;
    if (!sqlite3_get_autocommit(s->db)) {
        set_error(s, "begin: a transaction is already open");
        return false;
    }
    /* IMMEDIATE takes the write lock now, so a second handle on the file
     * waits here (busy timeout) instead of failing later at the first write
     * or at COMMIT with half a pass done. */
    if (!stmt_run(s, ST_BEGIN, "begin"))
        return false;
    s->in_write = true;
    s->failed = false;
    return true;
}

/* Ends the write transaction, whatever state SQLite is in. */
static void txn_abort(sqlite_store *s)
{
    if (!sqlite3_get_autocommit(s->db)) {
        /* If even ROLLBACK fails, SQLite undoes the transaction when the
         * file is next opened (the WAL frames were never committed). */
        char keep[sizeof s->err];
        memcpy(keep, s->err, sizeof keep);
        if (stmt_run(s, ST_ROLLBACK, "rollback"))
            memcpy(s->err, keep, sizeof keep);
    }
    s->in_write = false;
    s->failed = false;
}

static bool store_commit(void *ctx)
{
    sqlite_store *s = ctx;
    if (!s->in_write) {
        set_error(s, "commit: no transaction (begin was not called)");
        return false;
    }
    if (s->failed || sqlite3_get_autocommit(s->db)) {
        char first[sizeof s->err];
        memcpy(first, s->err, sizeof first);
        txn_abort(s);
        set_error(s, "commit refused, the transaction was rolled back (%s)", first);
        return false;
    }
    /* COMMIT can fail (deferred foreign keys violated, disk full, I/O error)
     * and then leaves the transaction open: roll it back, since the broker
     * treats the whole pass as lost. */
    if (!stmt_run(s, ST_COMMIT, "commit")) {
        txn_abort(s);
        return false;
    }
    s->in_write = false;
    return true;
}

static void store_rollback(void *ctx)
{
    sqlite_store *s = ctx;
    if (s->in_write)
        txn_abort(s);
}

/* ---- writes ------------------------------------------------------------- */

static bool store_msg_put(void *ctx, const store_msg_row *row)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_MSG_PUT];
    const char *what = "msg_put";
    if (!writable(s, what))
        return false;
    bool bound = row->qos <= 2;
    if (!bound)
        set_error(s, "%s: qos %u", what, (unsigned)row->qos);
    bound = bound && bind_key(s, 1, st, row->id, what) && bind_bytes(s, 2, st, row->topic, what) &&
            bind_bytes(s, 3, st, row->payload, what) && bind_bytes(s, 4, st, row->props, what) &&
            bind_bytes(s, 5, st, row->origin, what) && bind_int(s, 6, st, row->qos, what) &&
            bind_int(s, 7, st, row->retain ? 1 : 0, what) &&
            bind_u64(s, 8, st, row->expires_at, what);
    return write_end(s, ST_MSG_PUT, bound, what);
}

static bool store_msg_delete(void *ctx, uint64_t id)
{
    sqlite_store *s = ctx;
    const char *what = "msg_delete";
    if (!writable(s, what))
        return false;
    bool bound = bind_key(s, 1, s->st[ST_MSG_DELETE], id, what);
    return write_end(s, ST_MSG_DELETE, bound, what);
}

static bool store_session_put(void *ctx, const store_session_row *row)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_SESSION_PUT];
    const char *what = "session_put";
    if (!writable(s, what))
        return false;
    bool bound =
        bind_bytes(s, 1, st, row->client_id, what) && bind_int(s, 2, st, row->kind, what) &&
        bind_bytes(s, 3, st, row->principal, what) && bind_int(s, 4, st, row->version, what) &&
        bind_int(s, 5, st, row->expiry_interval, what) && bind_u64(s, 6, st, row->expires_at, what);
    return write_end(s, ST_SESSION_PUT, bound, what);
}

/* Deletes the rows of one client from one table (or the session row). */
static bool delete_client_rows(sqlite_store *s, enum stmt_id id, codec_bytes client_id,
                               const char *what)
{
    bool bound = bind_bytes(s, 1, s->st[id], client_id, what);
    return write_end(s, id, bound, what);
}

static bool store_session_delete(void *ctx, codec_bytes client_id)
{
    sqlite_store *s = ctx;
    const char *what = "session_delete";
    if (!writable(s, what))
        return false;
    /* The caller's transaction makes the four deletes one change; if one
     * fails the transaction is marked failed and never commits, so a session
     * cannot be left half deleted. */
    return delete_client_rows(s, ST_SESSION_DELETE_SUBS, client_id, what) &&
           delete_client_rows(s, ST_SESSION_DELETE_QUEUE, client_id, what) &&
           delete_client_rows(s, ST_SESSION_DELETE_QOS2, client_id, what) &&
           delete_client_rows(s, ST_SESSION_DELETE, client_id, what);
}

static bool store_sub_put(void *ctx, codec_bytes client_id, codec_bytes filter, uint8_t options,
                          uint32_t sub_id)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_SUB_PUT];
    const char *what = "sub_put";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, st, client_id, what) && bind_bytes(s, 2, st, filter, what) &&
                 bind_int(s, 3, st, options, what) && bind_int(s, 4, st, sub_id, what);
    return write_end(s, ST_SUB_PUT, bound, what);
}

static bool store_sub_delete(void *ctx, codec_bytes client_id, codec_bytes filter)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_SUB_DELETE];
    const char *what = "sub_delete";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, st, client_id, what) && bind_bytes(s, 2, st, filter, what);
    return write_end(s, ST_SUB_DELETE, bound, what);
}

static bool store_queue_put(void *ctx, const store_queue_row *row)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_QUEUE_PUT];
    const char *what = "queue_put";
    uint8_t ids[16] = {0};
    if (!writable(s, what))
        return false;
    bool bound = row->nsub_ids <= 4 && row->qos <= 2;
    if (!bound) {
        set_error(s, "%s: %u subscription ids, qos %u", what, (unsigned)row->nsub_ids,
                  (unsigned)row->qos);
    } else {
        /* Subscription ids as 4-byte big-endian numbers, one after another:
         * a fixed layout that does not depend on the host. */
        for (size_t i = 0; i < row->nsub_ids; i++) {
            uint32_t v = row->sub_ids[i];
            ids[4 * i] = (uint8_t)(v >> 24);
            ids[4 * i + 1] = (uint8_t)(v >> 16);
            ids[4 * i + 2] = (uint8_t)(v >> 8);
            ids[4 * i + 3] = (uint8_t)v;
        }
    }
    codec_bytes blob = {ids, 4u * row->nsub_ids};
    bound = bound && bind_bytes(s, 1, st, row->client_id, what) &&
            bind_key(s, 2, st, row->seq, what) && bind_key(s, 3, st, row->msg_id, what) &&
            bind_int(s, 4, st, row->qos, what) && bind_int(s, 5, st, row->retain ? 1 : 0, what) &&
            bind_int(s, 6, st, row->state, what) && bind_int(s, 7, st, row->packet_id, what) &&
            bind_bytes(s, 8, st, blob, what) && bind_int(s, 9, st, row->shared ? 1 : 0, what);
    /* ids is bound without a copy and is still in scope when the statement
     * runs inside write_end. */
    return write_end(s, ST_QUEUE_PUT, bound, what);
}

static bool store_queue_delete(void *ctx, codec_bytes client_id, uint64_t seq)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_QUEUE_DELETE];
    const char *what = "queue_delete";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, st, client_id, what) && bind_key(s, 2, st, seq, what);
    return write_end(s, ST_QUEUE_DELETE, bound, what);
}

static bool qos2_write(sqlite_store *s, enum stmt_id id, codec_bytes client_id, uint16_t packet_id,
                       const char *what)
{
    sqlite3_stmt *st = s->st[id];
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, st, client_id, what) && bind_int(s, 2, st, packet_id, what);
    return write_end(s, id, bound, what);
}

static bool store_qos2_put(void *ctx, codec_bytes client_id, uint16_t packet_id)
{
    return qos2_write(ctx, ST_QOS2_PUT, client_id, packet_id, "qos2_put");
}

static bool store_qos2_delete(void *ctx, codec_bytes client_id, uint16_t packet_id)
{
    return qos2_write(ctx, ST_QOS2_DELETE, client_id, packet_id, "qos2_delete");
}

static bool store_retained_put(void *ctx, codec_bytes topic, uint64_t msg_id)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_RETAINED_PUT];
    const char *what = "retained_put";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, st, topic, what) && bind_key(s, 2, st, msg_id, what);
    return write_end(s, ST_RETAINED_PUT, bound, what);
}

static bool store_retained_delete(void *ctx, codec_bytes topic)
{
    sqlite_store *s = ctx;
    const char *what = "retained_delete";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, s->st[ST_RETAINED_DELETE], topic, what);
    return write_end(s, ST_RETAINED_DELETE, bound, what);
}

/* expiry -1: the will has no Message Expiry Interval. */
static bool store_will_put(void *ctx, const store_will_row *row)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_WILL_PUT];
    const char *what = "will_put";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, st, row->client_id, what) &&
                 bind_int(s, 2, st, row->kind, what) &&
                 bind_bytes(s, 3, st, row->principal, what) &&
                 bind_key(s, 4, st, row->msg_id, what) && bind_int(s, 5, st, row->delay, what) &&
                 bind_int(s, 6, st, row->expires ? (int64_t)row->expiry : -1, what);
    return write_end(s, ST_WILL_PUT, bound, what);
}

static bool store_will_delete(void *ctx, codec_bytes client_id)
{
    sqlite_store *s = ctx;
    const char *what = "will_delete";
    if (!writable(s, what))
        return false;
    bool bound = bind_bytes(s, 1, s->st[ST_WILL_DELETE], client_id, what);
    return write_end(s, ST_WILL_DELETE, bound, what);
}

/* ---- reads -------------------------------------------------------------- */

/* msg_max_id has no way to report an error but its 0; store_sqlite_error
 * then tells. Ids are >= 1, so 0 also means "no messages". */
static uint64_t store_msg_max_id(void *ctx)
{
    sqlite_store *s = ctx;
    sqlite3_stmt *st = s->st[ST_MSG_MAX_ID];
    const char *what = "msg_max_id";
    uint64_t max = 0;
    bool ok = true;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        ok = db_error(s, rc, what);
    } else if (sqlite3_column_type(st, 0) == SQLITE_INTEGER) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        if (v < 1) {
            set_error(s, "corrupt: msgs.id %lld", (long long)v);
            ok = false;
        } else {
            max = (uint64_t)v;
        }
    } else if (sqlite3_column_type(st, 0) != SQLITE_NULL) { /* NULL: the table is empty */
        set_error(s, "corrupt: msgs.id is not an integer");
        ok = false;
    }
    ok = stmt_done(s, st, ok, what);
    return ok ? max : 0;
}

/* Reads the columns of one result row, checking each against what the
 * writer stores. The first bad column is reported; `bad` then stays set. */
typedef struct row_reader {
    sqlite_store *s;
    sqlite3_stmt *st;
    const char *table;
    bool bad;
} row_reader;

static void row_corrupt(row_reader *r, int col, const char *why)
{
    if (r->bad)
        return;
    r->bad = true;
    const char *name = sqlite3_column_name(r->st, col); /* NULL only when out of memory */
    set_error(r->s, "corrupt: %s.%s %s", r->table, name ? name : "?", why);
}

static int64_t col_int(row_reader *r, int col, int64_t min, int64_t max)
{
    if (sqlite3_column_type(r->st, col) != SQLITE_INTEGER) {
        row_corrupt(r, col, "is not an integer");
        return min;
    }
    sqlite3_int64 v = sqlite3_column_int64(r->st, col);
    if (v < min || v > max) {
        char why[80];
        (void)snprintf(why, sizeof why, "%lld is out of range", (long long)v);
        row_corrupt(r, col, why);
        return min;
    }
    return v;
}

static codec_bytes col_bytes(row_reader *r, int col, size_t max)
{
    codec_bytes b = {empty_bytes, 0};
    if (sqlite3_column_type(r->st, col) != SQLITE_BLOB) {
        row_corrupt(r, col, "is not a BLOB");
        return b;
    }
    /* blob before bytes, as SQLite asks: no conversion happens in between. */
    const void *p = sqlite3_column_blob(r->st, col);
    int n = sqlite3_column_bytes(r->st, col);
    if (n < 0 || (size_t)n > max) {
        char why[80];
        (void)snprintf(why, sizeof why, "is %d bytes long, more than %zu", n, max);
        row_corrupt(r, col, why);
        return b;
    }
    if (n == 0)
        return b;
    if (p == NULL) {
        if (!r->bad) {
            r->bad = true;
            set_error(r->s, "load: out of memory");
        }
        return b;
    }
    b.ptr = p;
    b.len = (size_t)n;
    return b;
}

/* Any length SQLite can hold. */
#define ANY_LEN ((size_t)INT_MAX)

/* Each loader step decodes one row and hands it to the loader's callback;
 * false stops the load (bad row or the callback said stop). */
typedef bool (*row_fn)(row_reader *r, const store_loader *l);

static bool refused(row_reader *r, const char *table)
{
    set_error(r->s, "load: stopped by the %s callback", table);
    return false;
}

static bool row_msg(row_reader *r, const store_loader *l)
{
    store_msg_row m;
    memset(&m, 0, sizeof m);
    m.id = (uint64_t)col_int(r, 0, 1, INT64_MAX);
    m.topic = col_bytes(r, 1, ANY_LEN);
    m.payload = col_bytes(r, 2, ANY_LEN);
    m.props = col_bytes(r, 3, ANY_LEN);
    m.origin = col_bytes(r, 4, ANY_LEN);
    m.qos = (uint8_t)col_int(r, 5, 0, 2);
    m.retain = col_int(r, 6, 0, 1) != 0;
    m.expires_at = (uint64_t)col_int(r, 7, INT64_MIN, INT64_MAX);
    if (r->bad)
        return false;
    return l->msg(l->ctx, &m) || refused(r, "msg");
}

static bool row_session(row_reader *r, const store_loader *l)
{
    store_session_row x;
    memset(&x, 0, sizeof x);
    x.client_id = col_bytes(r, 0, ANY_LEN);
    x.kind = (uint8_t)col_int(r, 1, 0, UINT8_MAX);
    x.principal = col_bytes(r, 2, ANY_LEN);
    x.version = (uint8_t)col_int(r, 3, 0, UINT8_MAX);
    x.expiry_interval = (uint32_t)col_int(r, 4, 0, UINT32_MAX);
    x.expires_at = (uint64_t)col_int(r, 5, INT64_MIN, INT64_MAX);
    if (r->bad)
        return false;
    return l->session(l->ctx, &x) || refused(r, "session");
}

static bool row_sub(row_reader *r, const store_loader *l)
{
    codec_bytes client_id = col_bytes(r, 0, ANY_LEN);
    codec_bytes filter = col_bytes(r, 1, ANY_LEN);
    uint8_t options = (uint8_t)col_int(r, 2, 0, UINT8_MAX);
    uint32_t sub_id = (uint32_t)col_int(r, 3, 0, UINT32_MAX);
    if (r->bad)
        return false;
    return l->sub(l->ctx, client_id, filter, options, sub_id) || refused(r, "sub");
}

static bool row_queue(row_reader *r, const store_loader *l)
{
    store_queue_row q;
    memset(&q, 0, sizeof q);
    q.client_id = col_bytes(r, 0, ANY_LEN);
    q.seq = (uint64_t)col_int(r, 1, 1, INT64_MAX);
    q.msg_id = (uint64_t)col_int(r, 2, 1, INT64_MAX);
    q.qos = (uint8_t)col_int(r, 3, 0, 2);
    q.retain = col_int(r, 4, 0, 1) != 0;
    q.state = (uint8_t)col_int(r, 5, 0, UINT8_MAX);
    q.packet_id = (uint16_t)col_int(r, 6, 0, UINT16_MAX);
    codec_bytes ids = col_bytes(r, 7, sizeof q.sub_ids);
    if (!r->bad && ids.len % 4 != 0)
        row_corrupt(r, 7, "has a length that is not a multiple of 4");
    if (r->bad)
        return false;
    q.shared = col_int(r, 8, 0, 1) != 0;
    if (r->bad)
        return false;
    q.nsub_ids = (uint8_t)(ids.len / 4);
    for (size_t i = 0; i < q.nsub_ids; i++) {
        const uint8_t *p = ids.ptr + 4 * i;
        q.sub_ids[i] =
            ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }
    return l->queue(l->ctx, &q) || refused(r, "queue");
}

static bool row_qos2(row_reader *r, const store_loader *l)
{
    codec_bytes client_id = col_bytes(r, 0, ANY_LEN);
    uint16_t packet_id = (uint16_t)col_int(r, 1, 0, UINT16_MAX);
    if (r->bad)
        return false;
    return l->qos2(l->ctx, client_id, packet_id) || refused(r, "qos2");
}

static bool row_retained(row_reader *r, const store_loader *l)
{
    codec_bytes topic = col_bytes(r, 0, ANY_LEN);
    uint64_t msg_id = (uint64_t)col_int(r, 1, 1, INT64_MAX);
    if (r->bad)
        return false;
    return l->retained(l->ctx, topic, msg_id) || refused(r, "retained");
}

static bool row_will(row_reader *r, const store_loader *l)
{
    store_will_row w;
    memset(&w, 0, sizeof w);
    w.client_id = col_bytes(r, 0, ANY_LEN);
    w.kind = (uint8_t)col_int(r, 1, 0, UINT8_MAX);
    w.principal = col_bytes(r, 2, ANY_LEN);
    w.msg_id = (uint64_t)col_int(r, 3, 1, INT64_MAX);
    w.delay = (uint32_t)col_int(r, 4, 0, UINT32_MAX);
    int64_t expiry = col_int(r, 5, -1, UINT32_MAX);
    if (r->bad)
        return false;
    w.expires = expiry >= 0;
    w.expiry = w.expires ? (uint32_t)expiry : 0;
    return l->will(l->ctx, &w) || refused(r, "will");
}

/* Steps through one table. The views handed to callbacks point into SQLite's
 * row buffer and are valid only until the next step. */
static bool load_table(sqlite_store *s, enum stmt_id id, const char *table, row_fn fn,
                       const store_loader *l)
{
    sqlite3_stmt *st = s->st[id];
    row_reader r = {s, st, table, false};
    bool ok = true;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!fn(&r, l)) {
            ok = false;
            break;
        }
    }
    if (ok && rc != SQLITE_DONE)
        ok = db_error(s, rc, "load");
    return stmt_done(s, st, ok, "load");
}

/* A queue row or retained topic whose message is gone. Writes through the
 * store cannot leave one (the references are checked at COMMIT), but rows
 * changed behind its back can, and the broker would then restore a delivery
 * of a message it does not have. Checked before the first callback, so the
 * loader gets nothing from a store it must refuse. Uses the msg_id indexes:
 * one lookup per reference. */
static bool check_references(sqlite_store *s)
{
    sqlite3_stmt *st = s->st[ST_FK_CHECK];
    bool ok = true;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        /* Columns: child table, rowid (NULL without rowid), parent, fk index. */
        const unsigned char *table = sqlite3_column_text(st, 0);
        set_error(s, "corrupt: a row of %s refers to a missing message",
                  table ? (const char *)table : "?");
        ok = false;
    } else if (rc != SQLITE_DONE) {
        ok = db_error(s, rc, "load");
    }
    return stmt_done(s, st, ok, "load");
}

static bool store_load(void *ctx, const store_loader *l)
{
    sqlite_store *s = ctx;
    bool own_txn = false;
    /* One read transaction over all tables, so that the loader sees one
     * committed state even if another handle writes meanwhile. Inside the
     * caller's write transaction, that transaction already is one. */
    if (!s->in_write) {
        if (!sqlite3_get_autocommit(s->db)) {
            set_error(s, "load: a transaction is already open");
            return false;
        }
        if (!stmt_run(s, ST_BEGIN_READ, "load"))
            return false;
        own_txn = true;
    }
    /* A loader without a callback for a table does not want its rows. */
    bool ok = check_references(s) && (!l->msg || load_table(s, ST_LOAD_MSGS, "msgs", row_msg, l)) &&
              (!l->session || load_table(s, ST_LOAD_SESSIONS, "sessions", row_session, l)) &&
              (!l->sub || load_table(s, ST_LOAD_SUBS, "subs", row_sub, l)) &&
              (!l->queue || load_table(s, ST_LOAD_QUEUE, "queue", row_queue, l)) &&
              (!l->qos2 || load_table(s, ST_LOAD_QOS2, "qos2", row_qos2, l)) &&
              (!l->retained || load_table(s, ST_LOAD_RETAINED, "retained", row_retained, l)) &&
              (!l->will || load_table(s, ST_LOAD_WILLS, "wills", row_will, l));
    if (own_txn && !sqlite3_get_autocommit(s->db)) {
        /* A read transaction has nothing to keep: ROLLBACK ends it. Keep the
         * load's own error if it failed. */
        char keep[sizeof s->err];
        memcpy(keep, s->err, sizeof keep);
        bool ended = stmt_run(s, ST_ROLLBACK, "load");
        if (!ok)
            memcpy(s->err, keep, sizeof keep);
        ok = ok && ended;
    }
    return ok;
}

/* ---- open and close ----------------------------------------------------- */

/* Runs a statement once that returns at most one row with one column and
 * gives its value as an integer (text) or 0 when there is no row. Used for
 * pragmas at open, which are not worth keeping prepared. */
static bool query_once(sqlite_store *s, const char *sql, int64_t *num, char *text, size_t textlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_error(s, rc, sql);
    bool ok = true;
    if (num)
        *num = 0;
    if (text && textlen)
        text[0] = '\0';
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (num)
            *num = sqlite3_column_int64(st, 0);
        if (text && textlen) {
            const unsigned char *t = sqlite3_column_text(st, 0);
            int n = sqlite3_column_bytes(st, 0);
            if (t && n > 0 && (size_t)n < textlen) {
                memcpy(text, t, (size_t)n);
                text[n] = '\0';
            }
        }
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        ok = db_error(s, rc, sql);
    rc = sqlite3_finalize(st);
    if (ok && rc != SQLITE_OK)
        ok = db_error(s, rc, sql);
    return ok;
}

static bool exec(sqlite_store *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_error(s, rc, what);
    return true;
}

/* Whether the file holds a store this build can use; *have gets its schema
 * version (0 for an empty file: no tables). The first read of the file
 * happens here, so a file that is not a database fails here too. */
static bool schema_verdict(sqlite_store *s, int64_t *have)
{
    int64_t version, objects;
    *have = 0;
    if (!query_once(s, "PRAGMA user_version", &version, NULL, 0) ||
        !query_once(s, "SELECT count(*) FROM sqlite_master", &objects, NULL, 0))
        return false;
    if (version > STORE_SQLITE_SCHEMA_VERSION) {
        set_error(s,
                  "store schema version %lld is newer than this moatd supports (%d); "
                  "upgrade moatd or restore an older store",
                  (long long)version, STORE_SQLITE_SCHEMA_VERSION);
        return false;
    }
    if (version < 0) {
        set_error(s, "corrupt: store schema version %lld", (long long)version);
        return false;
    }
    if (version == 0 && objects > 0) {
        /* Tables but no version: some other program's database. */
        set_error(s, "not a moat store (tables without a schema version)");
        return false;
    }
    *have = version; /* 0: empty; below the current one: check_schema upgrades it */
    return true;
}

/* Connection settings; they are per connection, so every open sets them. */
static bool configure(sqlite_store *s)
{
    int64_t v;
    char mode[16];
    int64_t have;
    int rc = sqlite3_extended_result_codes(s->db, 1);
    if (rc != SQLITE_OK)
        return db_error(s, rc, "extended result codes");
    /* Another handle (a second worker, an operator's sqlite3 shell) may hold
     * the write lock for a moment: wait rather than fail a pass at once. */
    rc = sqlite3_busy_timeout(s->db, 5000);
    if (rc != SQLITE_OK)
        return db_error(s, rc, "busy timeout");
    /* Look before changing anything: switching to WAL rewrites the file
     * header, and a file that is not ours (or is newer) must stay as it is. */
    if (!schema_verdict(s, &have))
        return false;
    /* WAL lets load() and other readers run beside the writer, and a commit
     * is one append to the WAL plus one fsync. */
    if (!query_once(s, "PRAGMA journal_mode = WAL", NULL, mode, sizeof mode))
        return false;
    const char *file = sqlite3_db_filename(s->db, "main");
    bool in_memory = file == NULL || file[0] == '\0';
    if (strcmp(mode, "wal") != 0 && !(in_memory && strcmp(mode, "memory") == 0)) {
        set_error(s, "cannot use WAL journal mode (got \"%s\")", mode);
        return false;
    }
    /* FULL, not NORMAL: in WAL mode NORMAL does not fsync the WAL at each
     * commit, only at checkpoints, so a power loss can undo transactions that
     * COMMIT reported as done. The broker sends PUBACK/PUBREC right after the
     * commit, so a client would drop a message the hub then forgets. FULL
     * syncs the WAL on every commit; group commit keeps that to one fsync
     * per loop pass. */
    if (!exec(s, "PRAGMA synchronous = FULL", "synchronous") ||
        !query_once(s, "PRAGMA synchronous", &v, NULL, 0))
        return false;
    if (v != 2) {
        set_error(s, "cannot set synchronous = FULL (got %lld)", (long long)v);
        return false;
    }
    /* Checked, not assumed: a SQLite built without foreign keys ignores the
     * pragma, and the msgs references would then go unenforced. */
    if (!exec(s, "PRAGMA foreign_keys = ON", "foreign keys") ||
        !query_once(s, "PRAGMA foreign_keys", &v, NULL, 0))
        return false;
    if (v != 1) {
        set_error(s, "this SQLite does not enforce foreign keys");
        return false;
    }
    return true;
}

/* Creates the schema in an empty file or upgrades an older one, or checks
 * the version again. In a write transaction, so two processes opening a new
 * file at once do not both create the tables (the second sees the first's),
 * and a crash never leaves half a schema. */
static bool check_schema(sqlite_store *s)
{
    int64_t have;
    if (!exec(s, "BEGIN IMMEDIATE", "schema"))
        return false;
    bool ok = schema_verdict(s, &have);
    if (ok && have < STORE_SQLITE_SCHEMA_VERSION) {
        char set_version[40];
        (void)snprintf(set_version, sizeof set_version, "PRAGMA user_version = %d",
                       STORE_SQLITE_SCHEMA_VERSION);
        ok = (have >= 1 || exec(s, schema_v1, "create schema")) &&
             (have >= 2 || exec(s, schema_v2, "upgrade schema to version 2")) &&
             exec(s, set_version, "schema version");
    }
    if (ok)
        return exec(s, "COMMIT", "schema");
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    (void)exec(s, "ROLLBACK", "schema"); /* closing the connection would undo it too */
    memcpy(s->err, keep, sizeof keep);
    return false;
}

static bool prepare_all(sqlite_store *s)
{
    for (size_t i = 0; i < ST_COUNT; i++) {
        /* PERSISTENT: these live as long as the store; SQLite then keeps
         * them out of its short-lived lookaside memory. */
        int rc =
            sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK)
            return db_error(s, rc, stmt_sql[i]);
    }
    return true;
}

static void destroy(sqlite_store *s)
{
    for (size_t i = 0; i < ST_COUNT; i++)
        (void)sqlite3_finalize(s->st[i]); /* repeats the last step's error; NULL is fine */
    /* With every statement finalized this only fails on a bug; the v2 form
     * then frees the connection once the last statement goes. A transaction
     * still open is rolled back. */
    (void)sqlite3_close_v2(s->db);
    free(s);
}

bool store_sqlite_open(const char *path, broker_store **out, char *err, size_t errlen)
{
    sqlite_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        if (err && errlen)
            (void)snprintf(err, errlen, "out of memory");
        return false;
    }
    bool ok = true;
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        /* db may be NULL (out of memory); sqlite3_errmsg handles that. */
        set_error(s, "%s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        ok = false;
    }
    ok = ok && configure(s) && check_schema(s) && prepare_all(s);
    if (!ok) {
        if (err && errlen)
            (void)snprintf(err, errlen, "%s: %s", path, s->err);
        destroy(s);
        return false;
    }
    s->iface = (broker_store){
        .ctx = s,
        .begin = store_begin,
        .commit = store_commit,
        .rollback = store_rollback,
        .load = store_load,
        .msg_put = store_msg_put,
        .msg_delete = store_msg_delete,
        .msg_max_id = store_msg_max_id,
        .session_put = store_session_put,
        .session_delete = store_session_delete,
        .sub_put = store_sub_put,
        .sub_delete = store_sub_delete,
        .queue_put = store_queue_put,
        .queue_delete = store_queue_delete,
        .qos2_put = store_qos2_put,
        .qos2_delete = store_qos2_delete,
        .retained_put = store_retained_put,
        .retained_delete = store_retained_delete,
        .will_put = store_will_put,
        .will_delete = store_will_delete,
    };
    *out = &s->iface;
    return true;
}

void store_sqlite_close(broker_store *store)
{
    if (store)
        destroy(store->ctx);
}

const char *store_sqlite_error(broker_store *store)
{
    sqlite_store *s = store->ctx;
    return s->err;
}
