/*
 * internal.h — what the files of the registry module share: the handle, and
 * helpers that turn SQLite results into registry_status values with a
 * one-line message kept on the handle (registry_errmsg).
 */
#ifndef MOAT_REGISTRY_INTERNAL_H
#define MOAT_REGISTRY_INTERNAL_H

#include <sqlite3.h>

#include "registry.h"

#if defined(__GNUC__) || defined(__clang__)
#define REG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define REG_PRINTF(a, b)
#endif

/* Largest policy document and group description stored. */
#define REG_DOCUMENT_MAX    65536u
#define REG_DESCRIPTION_MAX 1024u

struct registry {
    sqlite3 *db;
    bool readonly;
    /* Statements the hub runs on every handshake and every poll, prepared
     * once. Neither calls back into user code while active. */
    sqlite3_stmt *lookup;
    sqlite3_stmt *data_version;
    char err[320];
};

/* Record a message on reg and return st. */
registry_status reg_fail(registry *reg, registry_status st, const char *fmt, ...) REG_PRINTF(3, 4);

/* Map a SQLite result code (after a failed call) to a status, recording
 * "what: sqlite's message". */
registry_status reg_sqlerr(registry *reg, int rc, const char *what);

/* Prepare sql, or record the error. */
registry_status reg_prepare(registry *reg, const char *sql, sqlite3_stmt **out);

/* Bind helpers: return a status (binding only fails for lack of memory or a
 * programming error, both reported). */
registry_status reg_bind_text(registry *reg, sqlite3_stmt *s, int i, const char *text);
registry_status reg_bind_int64(registry *reg, sqlite3_stmt *s, int i, int64_t v);

/* Start a write transaction unless one is open (then *own stays false);
 * finish it: commit when st is OK, else roll back. Returns the final status. */
registry_status reg_write_begin(registry *reg, bool *own);
registry_status reg_write_end(registry *reg, bool own, registry_status st);

/* Read a TEXT column that must be a valid name / id into buf, or report
 * REGISTRY_CORRUPT naming what. */
registry_status reg_column_name(registry *reg, sqlite3_stmt *s, int col, char *buf, size_t buflen,
                                const char *what);

/* Parse stored enum strings; 0 when unknown. */
registry_kind reg_kind_parse(const unsigned char *text);
registry_principal_status reg_status_parse(const unsigned char *text);

/* Fill p from columns id, kind, status, created_at, updated_at starting at col 0. */
registry_status reg_row_principal(registry *reg, sqlite3_stmt *s, registry_principal *p);

#endif /* MOAT_REGISTRY_INTERNAL_H */
