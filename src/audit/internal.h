/*
 * internal.h — what the files of the audit module share: the key's layout,
 * the log handle, and the error helpers that keep a one-line message on it.
 */
#ifndef MOAT_AUDIT_INTERNAL_H
#define MOAT_AUDIT_INTERNAL_H

#include <sqlite3.h>

#include "audit.h"

#if defined(__GNUC__) || defined(__clang__)
#define AUDIT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define AUDIT_PRINTF(a, b)
#endif

/* In sodium_malloc'd memory (guard pages, wiped on free). */
struct audit_key {
    uint8_t k[32];
};

struct audit_log {
    sqlite3 *db;
    bool own_db; /* opened by audit_open: closed with the log */
    const audit_key *key;
    sqlite3_stmt *insert;   /* INSERT INTO audit_log */
    sqlite3_stmt *get_head; /* SELECT ... FROM audit_head */
    sqlite3_stmt *put_head; /* UPDATE audit_head */
    char err[256];
};

/* Record a message on log and return st. */
audit_status audit_fail(audit_log *log, audit_status st, const char *fmt, ...) AUDIT_PRINTF(3, 4);

/* Map a failed SQLite call to a status, recording "what: sqlite's message". */
audit_status audit_sqlerr(audit_log *log, int rc, const char *what);

#endif /* MOAT_AUDIT_INTERNAL_H */
