/*
 * audit.h — the hub's append-only, hash-chained audit log: every operator
 * action (moatctl), enrollment, revocation, policy change and refused access,
 * one entry each, in tables kept inside DATA_DIR/registry.db.
 *
 * Why registry.db: an operator's change and the entry that records it commit
 * in ONE SQLite transaction (audit_attach on the registry's own connection),
 * so there is never a change without its entry, nor an entry for a change
 * that was rolled back.
 *
 * Each entry carries a tag: HMAC-SHA256 under a key derived from
 * DATA_DIR/audit.key over the entry's sequence number, the previous entry's
 * tag and every field (length-prefixed). A head record holds the last
 * sequence number and tag under a MAC of its own, so deleting entries at the
 * end is detected too. Someone who can edit the database file but cannot
 * read audit.key can neither change, remove, reorder nor add an entry
 * without audit_verify noticing; see docs/monitoring.md for what is not
 * detected (a whole-file rollback, anyone holding audit.key) and the
 * external anchor that narrows it (audit_head, audit_verify's anchor).
 *
 * Why audit.key and not master.key: master.key is rotated (`moatctl key
 * rotate` re-wraps the data keys under a new one), and a chain keyed from it
 * would stop verifying at every rotation. audit.key (32 random bytes, 0600,
 * made by moatctl init) never changes, so the whole history stays
 * verifiable; it sits beside master.key with the same protection.
 *
 * Two ways to use it:
 *   moatctl   audit_attach(registry_sqlite(reg), key, 0, &log); inside the
 *             registry transaction of the change: audit_append(log, &rec).
 *   moatd     audit_open(path, key, 0, &log) on its own thread and
 *             connection (appends may wait for moatctl's lock: never on an
 *             event loop), batching with audit_append_batch.
 *
 * A handle is not thread-safe: one per thread.
 */
#ifndef MOAT_AUDIT_H
#define MOAT_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct sqlite3;

#if defined(__GNUC__) || defined(__clang__)
#define AUDIT_MUST_CHECK __attribute__((warn_unused_result))
#else
#define AUDIT_MUST_CHECK
#endif

typedef enum audit_status {
    AUDIT_OK = 0,
    AUDIT_INVALID,   /* an argument breaks the rules below */
    AUDIT_NOT_FOUND, /* the database holds no audit log */
    AUDIT_BROKEN,    /* verification failed: the log was changed (audit_verdict says where) */
    AUDIT_KEY,       /* audit.key missing, unreadable or not 32 bytes */
    AUDIT_BUSY,      /* another writer held the lock too long */
    AUDIT_IO,        /* SQLite or the file system failed (see audit_errmsg) */
    AUDIT_NOMEM
} audit_status;

const char *audit_status_name(audit_status st);

/* Stored fields are cut to these many bytes (at a UTF-8 boundary); details
 * longer than AUDIT_DETAILS_MAX are replaced by {"truncated":true,...}. */
#define AUDIT_ACTOR_MAX   128u
#define AUDIT_ACTION_MAX  64u
#define AUDIT_SUBJECT_MAX 256u
#define AUDIT_OUTCOME_MAX 64u
#define AUDIT_DETAILS_MAX 2048u
#define AUDIT_TAG_LEN     32u

/* ---- the key ------------------------------------------------------------ */

typedef struct audit_key audit_key;

/* Derive the MAC key from the 32-byte key file DATA_DIR/audit.key (mode
 * and owner are the caller's business: moatctl init makes it 0600). The key
 * lives in guarded memory (sodium_malloc) and is wiped by audit_key_free. */
AUDIT_MUST_CHECK audit_status audit_key_load(const char *key_path, audit_key **out, char *err,
                                             size_t errlen);
/* The same from the file's 32 bytes already in memory (tests). */
AUDIT_MUST_CHECK audit_status audit_key_from_bytes(const uint8_t bytes[32], audit_key **out);
void audit_key_free(audit_key *key);

/* ---- records ------------------------------------------------------------- */

/* What to append. Strings are NUL-terminated; NULL reads as "". */
typedef struct audit_record {
    int64_t time;          /* seconds since the epoch; 0 = now */
    const char *actor;     /* "operator/1000", "device:ID", "service:NAME", "address:IP", "hub" */
    const char *action;    /* "device.revoke", "policy.add", "refused.publish", ... */
    const char *subject;   /* what it was done to ("" if nothing) */
    const char *outcome;   /* "ok", "failed", "refused" */
    const json_t *details; /* a JSON object, or NULL for {} */
} audit_record;

/* What is read back; strings are valid during the callback only. */
typedef struct audit_entry {
    int64_t seq; /* 1, 2, 3, ... */
    int64_t time;
    const char *actor, *action, *subject, *outcome;
    const char *details; /* compact JSON object text */
    uint8_t tag[AUDIT_TAG_LEN];
} audit_entry;

/* The end of the chain: the last entry's number and tag. Written down
 * outside the hub (the heartbeat webhook carries it), it lets a later
 * audit_verify prove that history up to seq was not rewritten. */
typedef struct audit_head {
    int64_t seq; /* 0 for an empty log */
    uint8_t tag[AUDIT_TAG_LEN];
} audit_head;

/* ---- opening -------------------------------------------------------------- */

typedef struct audit_log audit_log;

enum {
    AUDIT_CREATE = 1 /* create the tables and an empty chain if missing (moatctl init) */
};

/* Use an open SQLite connection (not owned, e.g. registry_sqlite(reg)).
 * Without AUDIT_CREATE, a database without the audit tables is NOT_FOUND:
 * the log is made once, by moatctl init, so that dropping the tables cannot
 * pass for a fresh, empty log. On failure *out is NULL. */
AUDIT_MUST_CHECK audit_status audit_attach(struct sqlite3 *db, const audit_key *key, int flags,
                                           audit_log **out);

/* Open path (registry.db) on a connection of the log's own: WAL, 5 s busy
 * timeout, defensive. For moatd's audit thread. err gets a reason. */
AUDIT_MUST_CHECK audit_status audit_open(const char *path, const audit_key *key, int flags,
                                         audit_log **out, char *err, size_t errlen);

/* Close (and, for audit_open, the connection). The key stays the caller's. */
void audit_close(audit_log *log);

/* One line on the last failure. */
const char *audit_errmsg(const audit_log *log);

/* ---- writing --------------------------------------------------------------- */

/* Append one entry. Inside the caller's open transaction it joins it
 * (moatctl: commits or rolls back with the change); otherwise it runs in a
 * transaction of its own (BEGIN IMMEDIATE). *seq (may be NULL) gets its
 * number. */
AUDIT_MUST_CHECK audit_status audit_append(audit_log *log, const audit_record *rec, int64_t *seq);

/* Append n entries in one transaction (all or none). */
AUDIT_MUST_CHECK audit_status audit_append_batch(audit_log *log, const audit_record *recs,
                                                 size_t n);

/* ---- reading ---------------------------------------------------------------- */

/* The head record, after checking its MAC (BROKEN if it does not verify). */
AUDIT_MUST_CHECK audit_status audit_head_get(audit_log *log, audit_head *out);

typedef struct audit_verdict {
    int64_t entries; /* entries that verified */
    int64_t bad_seq; /* the first entry that did not (0 if none or not one entry) */
    char reason[192];
    audit_head head;
} audit_verdict;

/* Check the whole chain and the head, in one read snapshot. OK: every entry
 * verified and the head matches the last one. BROKEN: out->bad_seq and
 * out->reason name the first problem. With anchor (may be NULL), entry
 * anchor->seq must also exist with exactly anchor->tag. */
AUDIT_MUST_CHECK audit_status audit_verify(audit_log *log, const audit_head *anchor,
                                           audit_verdict *out);

/* A non-zero return stops the walk (audit_list then returns OK). */
typedef int (*audit_entry_cb)(void *ctx, const audit_entry *e);

/* Entries with time >= since, the newest limit of them (0 = all), oldest
 * first. Entries are shown as stored: audit_verify says whether to trust
 * them. */
AUDIT_MUST_CHECK audit_status audit_list(audit_log *log, int64_t since, size_t limit,
                                         audit_entry_cb cb, void *ctx);

/* ---- the chain, exposed for tests and tools ---------------------------------- */

/* The tag of an entry: HMAC-SHA256(key, "moat-audit-v1\0" || be64(seq) ||
 * prev || be64(time) || for each of actor, action, subject, outcome,
 * details: be32(length) || bytes). */
void audit_entry_tag(const audit_key *key, int64_t seq, const uint8_t prev[AUDIT_TAG_LEN],
                     const audit_entry *e, uint8_t out[AUDIT_TAG_LEN]);

/* The head's MAC: HMAC-SHA256(key, "moat-audit-head-v1\0" || be64(seq) || tag). */
void audit_head_mac(const audit_key *key, const audit_head *head, uint8_t out[AUDIT_TAG_LEN]);

#endif /* MOAT_AUDIT_H */
