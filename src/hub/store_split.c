/*
 * store_split.c — one store file per worker, and moving sessions between
 * them when the number of workers changes.
 *
 * Worker 0 keeps DATA_DIR/hub.db (also the home of the retained messages:
 * worker 0 is their authority); worker k > 0 keeps DATA_DIR/hub-k.db. A
 * session lives in the file of the worker that owns its principal, so that
 * each worker writes only its own file: no worker waits for another's write
 * lock or fsync. When moatd starts with a different worker count, every
 * session found in the wrong file is moved, with its subscriptions, queue,
 * QoS 2 ids, will and the messages they point at, before any worker runs.
 *
 * A move is two transactions: copy into the destination (INSERT OR IGNORE),
 * then delete from the source. A crash between them leaves the same rows in
 * both files, which the next start moves again: the copy finds them already
 * there, and the delete completes. Messages are copied, never deleted here;
 * rows nothing points at any more are collected when their file is loaded.
 * Message ids are unique across the files (the workers share one counter),
 * so copied rows never collide with rows of their new file.
 */
#include "store_split.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_sqlite.h"

void store_split_path(char *out, size_t cap, const char *dir, unsigned worker)
{
    if (worker == 0)
        snprintf(out, cap, "%s/hub.db", dir);
    else
        snprintf(out, cap, "%s/hub-%u.db", dir, worker);
}

unsigned store_split_owner(const uint8_t *principal, size_t len, unsigned nworkers)
{
    /* FNV-1a: stable across runs and builds, which placement must be. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= principal[i];
        h *= 16777619u;
    }
    return nworkers ? h % nworkers : 0;
}

typedef struct split_ctx {
    sqlite3 *db;
    const char *dir;
    char *err;
    size_t errlen;
} split_ctx;

static bool fail(split_ctx *x, const char *what)
{
    snprintf(x->err, x->errlen, "%s: %s", what, sqlite3_errmsg(x->db));
    return false;
}

static bool exec(split_ctx *x, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(x->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(x->err, x->errlen, "%s", msg ? msg : sqlite3_errmsg(x->db));
        sqlite3_free(msg);
        return false;
    }
    return true;
}

/* Make sure the destination file exists with the schema. */
static bool ensure_store(split_ctx *x, unsigned worker)
{
    char path[4200];
    store_split_path(path, sizeof(path), x->dir, worker);
    broker_store *st;
    if (!store_sqlite_open(path, &st, x->err, x->errlen))
        return false;
    store_sqlite_close(st);
    return true;
}

static const char *const copy_sql[] = {
    "INSERT OR IGNORE INTO d.msgs SELECT * FROM main.msgs WHERE id IN"
    " (SELECT msg_id FROM main.queue WHERE client_id IN (SELECT client_id FROM temp.mv))",
    "INSERT OR IGNORE INTO d.sessions SELECT * FROM main.sessions"
    " WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "INSERT OR IGNORE INTO d.subs SELECT * FROM main.subs"
    " WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "INSERT OR IGNORE INTO d.queue SELECT * FROM main.queue"
    " WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "INSERT OR IGNORE INTO d.qos2 SELECT * FROM main.qos2"
    " WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "INSERT OR IGNORE INTO d.msgs SELECT * FROM main.msgs WHERE id IN"
    " (SELECT msg_id FROM main.wills WHERE client_id IN (SELECT client_id FROM temp.mv))",
    "INSERT OR IGNORE INTO d.wills SELECT * FROM main.wills"
    " WHERE client_id IN (SELECT client_id FROM temp.mv)",
};

static const char *const delete_sql[] = {
    "DELETE FROM main.queue WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "DELETE FROM main.subs WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "DELETE FROM main.qos2 WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "DELETE FROM main.sessions WHERE client_id IN (SELECT client_id FROM temp.mv)",
    "DELETE FROM main.wills WHERE client_id IN (SELECT client_id FROM temp.mv)",
};

/* Move the sessions of this file whose owner is `dest` into dest's file. */
static bool move_sessions(split_ctx *x, unsigned self, unsigned dest, unsigned nworkers,
                          size_t *moved)
{
    if (!ensure_store(x, dest) || !exec(x, "DELETE FROM temp.mv"))
        return false;
    sqlite3_stmt *sel = NULL, *ins = NULL;
    bool ok = false;
    /* A will without a session (its client had a clean session) moves by
     * its principal too. */
    if (sqlite3_prepare_v2(x->db,
                           "SELECT client_id, principal FROM main.sessions"
                           " UNION SELECT client_id, principal FROM main.wills",
                           -1, &sel, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(x->db, "INSERT INTO temp.mv VALUES(?)", -1, &ins, NULL) != SQLITE_OK) {
        fail(x, "sessions");
        goto out;
    }
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
        const uint8_t *p = sqlite3_column_blob(sel, 1);
        size_t len = (size_t)sqlite3_column_bytes(sel, 1);
        if (store_split_owner(p ? p : (const uint8_t *)"", len, nworkers) != dest)
            continue;
        sqlite3_bind_blob(ins, 1, sqlite3_column_blob(sel, 0), sqlite3_column_bytes(sel, 0),
                          SQLITE_TRANSIENT);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            fail(x, "sessions");
            goto out;
        }
        sqlite3_reset(ins);
        n++;
    }
    if (rc != SQLITE_DONE) {
        fail(x, "sessions");
        goto out;
    }
    sqlite3_finalize(sel);
    sel = NULL;
    if (n == 0 || dest == self) {
        ok = true;
        goto out;
    }
    char path[4200], sql[4400];
    store_split_path(path, sizeof(path), x->dir, dest);
    char *quoted = sqlite3_mprintf("ATTACH %Q AS d", path);
    if (!quoted) {
        snprintf(x->err, x->errlen, "out of memory");
        goto out;
    }
    snprintf(sql, sizeof(sql), "%s", quoted);
    sqlite3_free(quoted);
    if (!exec(x, sql))
        goto out;
    ok = exec(x, "BEGIN IMMEDIATE");
    for (size_t i = 0; ok && i < sizeof(copy_sql) / sizeof(copy_sql[0]); i++)
        ok = exec(x, copy_sql[i]);
    ok = ok && exec(x, "COMMIT") && exec(x, "BEGIN IMMEDIATE");
    for (size_t i = 0; ok && i < sizeof(delete_sql) / sizeof(delete_sql[0]); i++)
        ok = exec(x, delete_sql[i]);
    ok = ok && exec(x, "COMMIT");
    if (!ok)
        (void)sqlite3_exec(x->db, "ROLLBACK", NULL, NULL, NULL);
    (void)sqlite3_exec(x->db, "DETACH d", NULL, NULL, NULL);
    *moved += n;
out:
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    return ok;
}

/* Retained messages belong in worker 0's file. */
static bool move_retained(split_ctx *x)
{
    if (!ensure_store(x, 0))
        return false;
    char path[4200];
    store_split_path(path, sizeof(path), x->dir, 0);
    char *attach = sqlite3_mprintf("ATTACH %Q AS d", path);
    if (!attach)
        return false;
    bool ok = exec(x, attach);
    sqlite3_free(attach);
    if (!ok)
        return false;
    ok = exec(x, "BEGIN IMMEDIATE") &&
         exec(x, "INSERT OR IGNORE INTO d.msgs SELECT * FROM main.msgs WHERE id IN"
                 " (SELECT msg_id FROM main.retained)") &&
         exec(x, "INSERT OR IGNORE INTO d.retained SELECT * FROM main.retained") &&
         exec(x, "COMMIT") && exec(x, "DELETE FROM main.retained");
    if (!ok)
        (void)sqlite3_exec(x->db, "ROLLBACK", NULL, NULL, NULL);
    (void)sqlite3_exec(x->db, "DETACH d", NULL, NULL, NULL);
    return ok;
}

static bool split_one(split_ctx *x, unsigned self, unsigned nworkers, uint64_t *max_id,
                      size_t *moved)
{
    sqlite3_stmt *st = NULL;
    bool ok = exec(x, "PRAGMA busy_timeout = 5000") &&
              exec(x, "CREATE TEMP TABLE IF NOT EXISTS mv(client_id BLOB PRIMARY KEY)");
    if (ok &&
        sqlite3_prepare_v2(x->db, "SELECT coalesce(max(id), 0) FROM msgs", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        sqlite3_int64 m = sqlite3_column_int64(st, 0);
        if (m > 0 && (uint64_t)m > *max_id)
            *max_id = (uint64_t)m;
    } else if (ok) {
        ok = fail(x, "msgs");
    }
    sqlite3_finalize(st);
    for (unsigned dest = 0; ok && dest < nworkers; dest++)
        if (dest != self)
            ok = move_sessions(x, self, dest, nworkers, moved);
    if (ok && self != 0) {
        int64_t n = 0;
        if (sqlite3_prepare_v2(x->db, "SELECT count(*) FROM retained", -1, &st, NULL) ==
                SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (n > 0)
            ok = move_retained(x);
    }
    return ok;
}

bool store_split(const char *dir, unsigned nworkers, uint64_t *max_id, size_t *moved, char *err,
                 size_t errlen)
{
    *max_id = 0;
    *moved = 0;
    /* Files of earlier, larger worker counts too (up to STORE_SPLIT_MAX). */
    for (unsigned k = 0; k < STORE_SPLIT_MAX; k++) {
        char path[4200];
        store_split_path(path, sizeof(path), dir, k);
        if (access(path, F_OK) != 0)
            continue;
        split_ctx x = {.dir = dir, .err = err, .errlen = errlen};
        /* Through the store first: it upgrades an older schema, so that
         * rows copied with SELECT * fit the destination's tables. */
        if (!ensure_store(&x, k))
            return false;
        if (sqlite3_open_v2(path, &x.db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", path, x.db ? sqlite3_errmsg(x.db) : "cannot open");
            sqlite3_close(x.db);
            return false;
        }
        /* A file past the worker count keeps nothing: everything moves. */
        bool ok = split_one(&x, k, nworkers, max_id, moved);
        sqlite3_close(x.db);
        if (!ok) {
            char why[512];
            snprintf(why, sizeof(why), "%s", err);
            snprintf(err, errlen, "%s: moving sessions between worker stores: %s", path, why);
            return false;
        }
    }
    return true;
}
