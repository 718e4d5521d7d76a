/*
 * log.c — the audit log's tables in SQLite: creating them once, appending
 * entries under the chain, reading the head, verifying and listing.
 *
 * Tables (inside registry.db, next to the registry's own):
 *   audit_log(seq INTEGER PRIMARY KEY, time, actor, action, subject,
 *             outcome, details, tag)   — one row per entry, never updated
 *   audit_head(id = 1, seq, tag, mac)   — the end of the chain, MAC'd
 * Triggers refuse UPDATE and DELETE on audit_log and DELETE on audit_head,
 * so that no code path of moat (or a careless sqlite3 session) changes the
 * log by accident; they are no defence against someone who edits the file
 * on purpose — that is what the MACs are for.
 *
 * Appending verifies the head's MAC first and refuses a head that does not
 * verify: appending on top of a forged head would re-MAC it and so hide a
 * truncation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "internal.h"
#include "utf8clip.h"

static const char SCHEMA[] = "CREATE TABLE audit_log("
                             " seq INTEGER PRIMARY KEY,"
                             " time INTEGER NOT NULL,"
                             " actor TEXT NOT NULL,"
                             " action TEXT NOT NULL,"
                             " subject TEXT NOT NULL,"
                             " outcome TEXT NOT NULL,"
                             " details TEXT NOT NULL,"
                             " tag BLOB NOT NULL);"
                             "CREATE INDEX audit_log_time ON audit_log(time);"
                             "CREATE TABLE audit_head("
                             " id INTEGER PRIMARY KEY CHECK(id = 1),"
                             " seq INTEGER NOT NULL,"
                             " tag BLOB NOT NULL,"
                             " mac BLOB NOT NULL);"
                             "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log"
                             " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
                             "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log"
                             " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
                             "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head"
                             " BEGIN SELECT RAISE(ABORT, 'the audit head cannot be deleted'); END;";

const char *audit_status_name(audit_status st)
{
    switch (st) {
    case AUDIT_OK:
        return "ok";
    case AUDIT_INVALID:
        return "invalid";
    case AUDIT_NOT_FOUND:
        return "not found";
    case AUDIT_BROKEN:
        return "broken";
    case AUDIT_KEY:
        return "key";
    case AUDIT_BUSY:
        return "busy";
    case AUDIT_IO:
        return "io";
    case AUDIT_NOMEM:
        return "out of memory";
    }
    return "unknown";
}

/* ---- errors ---------------------------------------------------------------- */

static void vrecord(char *buf, size_t len, const char *fmt, va_list ap) AUDIT_PRINTF(3, 0);

static void vrecord(char *buf, size_t len, const char *fmt, va_list ap)
{
    if (vsnprintf(buf, len, fmt, ap) < 0)
        buf[0] = '\0';
}

audit_status audit_fail(audit_log *log, audit_status st, const char *fmt, ...)
{
    if (log) {
        va_list ap;
        va_start(ap, fmt);
        vrecord(log->err, sizeof log->err, fmt, ap);
        va_end(ap);
    }
    return st;
}

static audit_status map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return AUDIT_BUSY;
    case SQLITE_NOMEM:
        return AUDIT_NOMEM;
    case SQLITE_CONSTRAINT:
        /* An entry already sits where the head says the next one goes. */
        return AUDIT_BROKEN;
    default:
        return AUDIT_IO;
    }
}

audit_status audit_sqlerr(audit_log *log, int rc, const char *what)
{
    const char *msg = log && log->db ? sqlite3_errmsg(log->db) : sqlite3_errstr(rc);
    return audit_fail(log, map_rc(rc), "%s: %s", what, msg);
}

const char *audit_errmsg(const audit_log *log)
{
    return log ? log->err : "no audit log";
}

static audit_status exec(audit_log *log, const char *sql, const char *what)
{
    int rc = sqlite3_exec(log->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? AUDIT_OK : audit_sqlerr(log, rc, what);
}

static audit_status prepare(audit_log *log, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v2(log->db, sql, -1, out, NULL);
    if (rc != SQLITE_OK) {
        *out = NULL;
        return audit_sqlerr(log, rc, "audit query");
    }
    return AUDIT_OK;
}

/* ---- transactions ---------------------------------------------------------- */

/* Start a write transaction unless the caller has one open. */
static audit_status write_begin(audit_log *log, bool *own)
{
    *own = false;
    if (!sqlite3_get_autocommit(log->db))
        return AUDIT_OK;
    audit_status st = exec(log, "BEGIN IMMEDIATE", "starting an audit transaction");
    *own = st == AUDIT_OK;
    return st;
}

static audit_status write_end(audit_log *log, bool own, audit_status st)
{
    if (!own)
        return st;
    if (st == AUDIT_OK)
        return exec(log, "COMMIT", "committing the audit log");
    (void)sqlite3_exec(log->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* A read snapshot, unless the caller is already inside a transaction. */
static audit_status read_begin(audit_log *log, bool *own)
{
    *own = false;
    if (!sqlite3_get_autocommit(log->db))
        return AUDIT_OK;
    audit_status st = exec(log, "BEGIN DEFERRED", "starting an audit read");
    *own = st == AUDIT_OK;
    return st;
}

static void read_end(audit_log *log, bool own)
{
    if (own)
        (void)sqlite3_exec(log->db, "COMMIT", NULL, NULL, NULL);
}

/* ---- opening ------------------------------------------------------------------ */

static audit_status have_tables(audit_log *log, bool *found)
{
    sqlite3_stmt *s = NULL;
    audit_status st = prepare(log,
                              "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                              " AND name IN ('audit_log', 'audit_head')",
                              &s);
    if (st != AUDIT_OK)
        return st;
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        st = audit_sqlerr(log, rc, "looking for the audit log");
    } else {
        int64_t n = sqlite3_column_int64(s, 0);
        *found = n == 2;
        if (n == 1)
            st = audit_fail(log, AUDIT_BROKEN, "audit log damaged: one of its two tables is gone");
    }
    sqlite3_finalize(s);
    return st;
}

static audit_status create(audit_log *log)
{
    audit_status st = exec(log, SCHEMA, "creating the audit log");
    if (st != AUDIT_OK)
        return st;
    audit_head h = {.seq = 0};
    uint8_t mac[AUDIT_TAG_LEN];
    audit_head_mac(log->key, &h, mac);
    sqlite3_stmt *s = NULL;
    if ((st = prepare(log, "INSERT INTO audit_head(id, seq, tag, mac) VALUES(1, 0, ?1, ?2)", &s)) !=
        AUDIT_OK)
        return st;
    int rc = sqlite3_bind_blob(s, 1, h.tag, AUDIT_TAG_LEN, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(s, 2, mac, AUDIT_TAG_LEN, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc != SQLITE_DONE)
        st = audit_sqlerr(log, rc, "starting the audit chain");
    sqlite3_finalize(s);
    return st;
}

static audit_status setup(audit_log *log, int flags)
{
    bool own, found = false;
    audit_status st = AUDIT_OK;
    if (flags & AUDIT_CREATE) {
        /* Under the write lock, so two creators cannot both start a chain. */
        if ((st = write_begin(log, &own)) != AUDIT_OK)
            return st;
        st = have_tables(log, &found);
        if (st == AUDIT_OK && !found)
            st = create(log);
        if ((st = write_end(log, own, st)) != AUDIT_OK)
            return st;
    } else {
        if ((st = have_tables(log, &found)) != AUDIT_OK)
            return st;
        if (!found)
            return audit_fail(log, AUDIT_NOT_FOUND,
                              "no audit log in this database (it is made by moatctl init; its "
                              "absence in an initialised data directory means it was removed)");
    }
    st = prepare(log,
                 "INSERT INTO audit_log(seq, time, actor, action, subject, outcome, details, tag)"
                 " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 &log->insert);
    if (st == AUDIT_OK)
        st = prepare(log, "SELECT seq, tag, mac FROM audit_head WHERE id = 1", &log->get_head);
    if (st == AUDIT_OK)
        st = prepare(log, "UPDATE audit_head SET seq = ?1, tag = ?2, mac = ?3 WHERE id = 1",
                     &log->put_head);
    return st;
}

audit_status audit_attach(sqlite3 *db, const audit_key *key, int flags, audit_log **out)
{
    *out = NULL;
    if (!db || !key)
        return AUDIT_INVALID;
    audit_log *log = calloc(1, sizeof *log);
    if (!log)
        return AUDIT_NOMEM;
    log->db = db;
    log->key = key;
    audit_status st = setup(log, flags);
    if (st != AUDIT_OK) {
        audit_close(log);
        return st;
    }
    *out = log;
    return AUDIT_OK;
}

audit_status audit_open(const char *path, const audit_key *key, int flags, audit_log **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !key)
        return AUDIT_INVALID;
    audit_log *log = calloc(1, sizeof *log);
    if (!log) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return AUDIT_NOMEM;
    }
    log->key = key;
    log->own_db = true;
    audit_status st = AUDIT_OK;
    int rc = sqlite3_open_v2(
        path, &log->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_extended_result_codes(log->db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(log->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(log->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(log->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    if (rc != SQLITE_OK)
        st = audit_fail(log, map_rc(rc), "%s: %s", path,
                        log->db ? sqlite3_errmsg(log->db) : sqlite3_errstr(rc));
    /* The registry made the file WAL; FULL makes a committed entry survive
     * a power cut, as the registry's own changes do. */
    if (st == AUDIT_OK)
        st = exec(log, "PRAGMA synchronous=FULL", "setting synchronous");
    if (st == AUDIT_OK)
        st = setup(log, flags);
    if (st != AUDIT_OK) {
        if (err && errlen)
            snprintf(err, errlen, "%s", log->err);
        audit_close(log);
        return st;
    }
    *out = log;
    return AUDIT_OK;
}

void audit_close(audit_log *log)
{
    if (!log)
        return;
    sqlite3_finalize(log->insert);
    sqlite3_finalize(log->get_head);
    sqlite3_finalize(log->put_head);
    if (log->own_db) {
        if (log->db && !sqlite3_get_autocommit(log->db))
            (void)sqlite3_exec(log->db, "ROLLBACK", NULL, NULL, NULL);
        (void)sqlite3_close_v2(log->db);
    }
    free(log);
}

/* ---- the head ------------------------------------------------------------------- */

static bool blob32(sqlite3_stmt *s, int col, uint8_t out[AUDIT_TAG_LEN])
{
    if (sqlite3_column_type(s, col) != SQLITE_BLOB || sqlite3_column_bytes(s, col) != AUDIT_TAG_LEN)
        return false;
    const void *b = sqlite3_column_blob(s, col);
    if (!b)
        return false;
    memcpy(out, b, AUDIT_TAG_LEN);
    return true;
}

/* Read and check the head; BROKEN with a reason if it does not verify. */
static audit_status read_head(audit_log *log, audit_head *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = log->get_head;
    audit_status st = AUDIT_OK;
    uint8_t mac[AUDIT_TAG_LEN], want[AUDIT_TAG_LEN];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        st = audit_fail(log, AUDIT_BROKEN, "the audit head record is missing");
    } else if (rc != SQLITE_ROW) {
        st = audit_sqlerr(log, rc, "reading the audit head");
    } else if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || !blob32(s, 1, out->tag) ||
               !blob32(s, 2, mac)) {
        st = audit_fail(log, AUDIT_BROKEN, "the audit head record is damaged");
    } else {
        out->seq = sqlite3_column_int64(s, 0);
        audit_head_mac(log->key, out, want);
        if (out->seq < 0 || sodium_memcmp(mac, want, AUDIT_TAG_LEN) != 0)
            st = audit_fail(log, AUDIT_BROKEN,
                            "the audit head record does not verify (forged, or another "
                            "audit.key)");
    }
    sqlite3_reset(s);
    return st;
}

static audit_status write_head(audit_log *log, const audit_head *h)
{
    uint8_t mac[AUDIT_TAG_LEN];
    audit_head_mac(log->key, h, mac);
    sqlite3_stmt *s = log->put_head;
    int rc = sqlite3_bind_int64(s, 1, h->seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(s, 2, h->tag, AUDIT_TAG_LEN, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(s, 3, mac, AUDIT_TAG_LEN, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    audit_status st = AUDIT_OK;
    if (rc != SQLITE_DONE)
        st = audit_sqlerr(log, rc, "moving the audit head");
    else if (sqlite3_changes(log->db) != 1)
        st = audit_fail(log, AUDIT_BROKEN, "the audit head record is missing");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return st;
}

audit_status audit_head_get(audit_log *log, audit_head *out)
{
    bool own;
    audit_status st = read_begin(log, &own);
    if (st == AUDIT_OK)
        st = read_head(log, out);
    read_end(log, own);
    return st;
}

/* ---- appending ---------------------------------------------------------------- */

/* The stored form of details: compact, sorted keys, bounded. */
static char *encode_details(const json_t *details)
{
    if (!details)
        return strdup("{}");
    if (!json_is_object(details))
        return NULL;
    char *text = json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (text && strlen(text) > AUDIT_DETAILS_MAX) {
        size_t n = strlen(text);
        free(text);
        char small[96];
        snprintf(small, sizeof small, "{\"bytes\":%zu,\"truncated\":true}", n);
        text = strdup(small);
    }
    return text;
}

static audit_status bind_text(audit_log *log, sqlite3_stmt *s, int i, const char *t)
{
    int rc = sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
    return rc == SQLITE_OK ? AUDIT_OK : audit_sqlerr(log, rc, "binding an audit field");
}

static audit_status append_one(audit_log *log, const audit_record *rec, int64_t *seq)
{
    char actor[AUDIT_ACTOR_MAX + 1], action[AUDIT_ACTION_MAX + 1];
    char subject[AUDIT_SUBJECT_MAX + 1], outcome[AUDIT_OUTCOME_MAX + 1];
    utf8_clip_copy(actor, AUDIT_ACTOR_MAX, rec->actor);
    utf8_clip_copy(action, AUDIT_ACTION_MAX, rec->action);
    utf8_clip_copy(subject, AUDIT_SUBJECT_MAX, rec->subject);
    utf8_clip_copy(outcome, AUDIT_OUTCOME_MAX, rec->outcome);
    if (!actor[0] || !action[0])
        return audit_fail(log, AUDIT_INVALID, "an audit entry needs an actor and an action");
    char *details = encode_details(rec->details);
    if (!details)
        return audit_fail(
            log, rec->details && !json_is_object(rec->details) ? AUDIT_INVALID : AUDIT_NOMEM,
            "audit details must be a JSON object");
    audit_head head;
    audit_status st = read_head(log, &head);
    if (st != AUDIT_OK)
        goto out;
    if (head.seq == INT64_MAX) {
        st = audit_fail(log, AUDIT_INVALID, "the audit log is full");
        goto out;
    }
    audit_entry e = {.seq = head.seq + 1,
                     .time = rec->time ? rec->time : (int64_t)time(NULL),
                     .actor = actor,
                     .action = action,
                     .subject = subject,
                     .outcome = outcome,
                     .details = details};
    audit_entry_tag(log->key, e.seq, head.tag, &e, e.tag);
    sqlite3_stmt *s = log->insert;
    int rc = sqlite3_bind_int64(s, 1, e.seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, e.time);
    if (rc != SQLITE_OK)
        st = audit_sqlerr(log, rc, "binding an audit field");
    if (st == AUDIT_OK)
        st = bind_text(log, s, 3, actor);
    if (st == AUDIT_OK)
        st = bind_text(log, s, 4, action);
    if (st == AUDIT_OK)
        st = bind_text(log, s, 5, subject);
    if (st == AUDIT_OK)
        st = bind_text(log, s, 6, outcome);
    if (st == AUDIT_OK)
        st = bind_text(log, s, 7, details);
    if (st == AUDIT_OK &&
        (rc = sqlite3_bind_blob(s, 8, e.tag, AUDIT_TAG_LEN, SQLITE_STATIC)) != SQLITE_OK)
        st = audit_sqlerr(log, rc, "binding an audit field");
    if (st == AUDIT_OK && (rc = sqlite3_step(s)) != SQLITE_DONE) {
        st = audit_sqlerr(log, rc, "appending to the audit log");
        if (st == AUDIT_BROKEN)
            st = audit_fail(log, AUDIT_BROKEN,
                            "audit log tampered with: entry %lld exists beyond the head",
                            (long long)e.seq);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (st == AUDIT_OK) {
        audit_head next = {.seq = e.seq};
        memcpy(next.tag, e.tag, AUDIT_TAG_LEN);
        st = write_head(log, &next);
    }
    if (st == AUDIT_OK && seq)
        *seq = e.seq;
out:
    free(details);
    return st;
}

audit_status audit_append(audit_log *log, const audit_record *rec, int64_t *seq)
{
    bool own;
    audit_status st = write_begin(log, &own);
    if (st == AUDIT_OK)
        st = append_one(log, rec, seq);
    return write_end(log, own, st);
}

audit_status audit_append_batch(audit_log *log, const audit_record *recs, size_t n)
{
    bool own;
    audit_status st = write_begin(log, &own);
    for (size_t i = 0; st == AUDIT_OK && i < n; i++)
        st = append_one(log, &recs[i], NULL);
    return write_end(log, own, st);
}

/* ---- reading back -------------------------------------------------------------- */

/* A stored TEXT column without NUL bytes, or NULL. */
static const char *column_text(sqlite3_stmt *s, int col)
{
    if (sqlite3_column_type(s, col) != SQLITE_TEXT)
        return NULL;
    const char *t = (const char *)sqlite3_column_text(s, col);
    int n = sqlite3_column_bytes(s, col);
    if (!t || n < 0 || strlen(t) != (size_t)n)
        return NULL;
    return t;
}

/* Fill e from columns seq, time, actor, action, subject, outcome, details,
 * tag; false if any has the wrong type. */
static bool row_entry(sqlite3_stmt *s, audit_entry *e)
{
    memset(e, 0, sizeof *e);
    if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || sqlite3_column_type(s, 1) != SQLITE_INTEGER)
        return false;
    e->seq = sqlite3_column_int64(s, 0);
    e->time = sqlite3_column_int64(s, 1);
    e->actor = column_text(s, 2);
    e->action = column_text(s, 3);
    e->subject = column_text(s, 4);
    e->outcome = column_text(s, 5);
    e->details = column_text(s, 6);
    return e->actor && e->action && e->subject && e->outcome && e->details && blob32(s, 7, e->tag);
}

#define ENTRY_COLUMNS "seq, time, actor, action, subject, outcome, details, tag"

static void verdict_bad(audit_verdict *v, int64_t seq, const char *fmt, ...) AUDIT_PRINTF(3, 4);

static void verdict_bad(audit_verdict *v, int64_t seq, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    v->bad_seq = seq;
    vrecord(v->reason, sizeof v->reason, fmt, ap);
    va_end(ap);
}

/* Walk the chain; on the first problem fill v and return BROKEN. */
static audit_status walk_chain(audit_log *log, const audit_head *head, const audit_head *anchor,
                               audit_verdict *v, audit_head *last, bool *anchor_seen)
{
    sqlite3_stmt *s = NULL;
    audit_status st = prepare(log, "SELECT " ENTRY_COLUMNS " FROM audit_log ORDER BY seq", &s);
    if (st != AUDIT_OK)
        return st;
    memset(last, 0, sizeof *last);
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = audit_sqlerr(log, rc, "reading the audit log");
            break;
        }
        audit_entry e;
        int64_t want = last->seq + 1;
        bool typed = row_entry(s, &e);
        if (typed && e.seq > want) {
            verdict_bad(v, want, "entry %lld is missing (deleted); the next is %lld",
                        (long long)want, (long long)e.seq);
            st = AUDIT_BROKEN;
            break;
        }
        if (!typed || e.seq != want) {
            verdict_bad(v, typed ? e.seq : want, "entry %lld is damaged (bad field types)",
                        (long long)(typed ? e.seq : want));
            st = AUDIT_BROKEN;
            break;
        }
        uint8_t tag[AUDIT_TAG_LEN];
        audit_entry_tag(log->key, e.seq, last->tag, &e, tag);
        if (sodium_memcmp(tag, e.tag, AUDIT_TAG_LEN) != 0) {
            verdict_bad(v, e.seq,
                        "entry %lld does not match its MAC (edited, moved, or written "
                        "without the key)",
                        (long long)e.seq);
            st = AUDIT_BROKEN;
            break;
        }
        if (anchor && e.seq == anchor->seq) {
            *anchor_seen = true;
            if (sodium_memcmp(e.tag, anchor->tag, AUDIT_TAG_LEN) != 0) {
                verdict_bad(v, e.seq,
                            "entry %lld differs from the anchor: the log was rewritten or "
                            "rolled back",
                            (long long)e.seq);
                st = AUDIT_BROKEN;
                break;
            }
        }
        last->seq = e.seq;
        memcpy(last->tag, e.tag, AUDIT_TAG_LEN);
        v->entries = e.seq;
        if (e.seq > head->seq)
            break; /* reported by the caller: beyond the head */
    }
    sqlite3_finalize(s);
    return st;
}

audit_status audit_verify(audit_log *log, const audit_head *anchor, audit_verdict *out)
{
    memset(out, 0, sizeof *out);
    bool own, anchor_seen = false;
    audit_head head, last;
    audit_status st = read_begin(log, &own);
    if (st != AUDIT_OK)
        return st;
    st = read_head(log, &head);
    if (st == AUDIT_BROKEN) {
        snprintf(out->reason, sizeof out->reason, "%.180s", log->err);
        goto out;
    }
    if (st != AUDIT_OK)
        goto out;
    out->head = head;
    st = walk_chain(log, &head, anchor, out, &last, &anchor_seen);
    if (st != AUDIT_OK)
        goto out;
    if (last.seq < head.seq) {
        verdict_bad(out, last.seq + 1, "entries %lld to %lld are missing: the log was truncated",
                    (long long)(last.seq + 1), (long long)head.seq);
        st = AUDIT_BROKEN;
    } else if (last.seq > head.seq) {
        verdict_bad(out, last.seq,
                    "entry %lld lies beyond the head (%lld): the head was rolled back",
                    (long long)last.seq, (long long)head.seq);
        st = AUDIT_BROKEN;
    } else if (sodium_memcmp(last.tag, head.tag, AUDIT_TAG_LEN) != 0) {
        verdict_bad(out, last.seq, "entry %lld does not match the head", (long long)last.seq);
        st = AUDIT_BROKEN;
    } else if (anchor && !anchor_seen) {
        verdict_bad(out, anchor->seq,
                    "entry %lld of the anchor is not in the log (it ends at %lld): truncated or "
                    "rolled back",
                    (long long)anchor->seq, (long long)head.seq);
        st = AUDIT_BROKEN;
    }
out:
    read_end(log, own);
    if (st == AUDIT_BROKEN)
        snprintf(log->err, sizeof log->err, "%s", out->reason);
    return st;
}

audit_status audit_list(audit_log *log, int64_t since, size_t limit, audit_entry_cb cb, void *ctx)
{
    sqlite3_stmt *s = NULL;
    audit_status st = prepare(log,
                              "SELECT " ENTRY_COLUMNS " FROM (SELECT " ENTRY_COLUMNS
                              " FROM audit_log WHERE time >= ?1 ORDER BY seq DESC LIMIT ?2)"
                              " ORDER BY seq",
                              &s);
    if (st != AUDIT_OK)
        return st;
    int rc = sqlite3_bind_int64(s, 1, since);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, limit == 0 || limit > INT64_MAX ? -1 : (int64_t)limit);
    if (rc != SQLITE_OK) {
        st = audit_sqlerr(log, rc, "listing the audit log");
        goto out;
    }
    for (;;) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = audit_sqlerr(log, rc, "listing the audit log");
            break;
        }
        audit_entry e;
        if (!row_entry(s, &e)) {
            /* Shown as far as it can be; verify names it. */
            e.actor = e.actor ? e.actor : "?";
            e.action = e.action ? e.action : "?";
            e.subject = e.subject ? e.subject : "?";
            e.outcome = e.outcome ? e.outcome : "?";
            e.details = e.details ? e.details : "{}";
        }
        if (cb(ctx, &e) != 0)
            break;
    }
out:
    sqlite3_finalize(s);
    return st;
}
