/*
 * alert_store.h — alerts kept in SQLite: DATA_DIR/alerts.db, written by the
 * hub's monitor thread, read by `moatctl alerts`.
 *
 * A file of its own (not registry.db, not the broker's hub.db) because
 * alerts are written while the hub is in trouble — a failing broker store
 * must not take the record of its failure down with it — and because the
 * hub's group commit and moatctl's registry writes should never wait for
 * an alert.
 *
 * One row per condition: a raise opens a row (a second raise of the same
 * kind and subject while open only counts and refreshes it), a clear closes
 * it; events of the same kind and subject within ALERT_STORE_COALESCE_MS
 * share one row with a count. So the table grows with distinct conditions,
 * not with how often they repeat; alert_store_prune bounds it in time and
 * rows.
 *
 * Blocking (SQLite, up to a 5 s busy wait): never on an event loop.
 */
#ifndef MOAT_MONITOR_ALERT_STORE_H
#define MOAT_MONITOR_ALERT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alert.h"

#define ALERT_STORE_COALESCE_MS (5 * 60 * 1000)

typedef struct alert_store alert_store;

enum {
    ALERT_STORE_CREATE = 1,  /* create the file (0600) and schema if missing */
    ALERT_STORE_READONLY = 2 /* moatctl: never write */
};

/* Open path. On failure *out is NULL, err holds a reason, and a missing file
 * without ALERT_STORE_CREATE is MONITOR_NOT_FOUND. */
monitor_status alert_store_open(const char *path, int flags, alert_store **out, char *err,
                                size_t errlen);
void alert_store_close(alert_store *s);
const char *alert_store_errmsg(const alert_store *s);

/* Record a. *changed (may be NULL) is true when a raise opened a new row,
 * a clear closed an open one, or an event started a new row. */
monitor_status alert_store_record(alert_store *s, const alert *a, bool *changed);

typedef struct alert_row {
    int64_t id;
    alert_kind kind;
    const char *subject;
    const char *state;                      /* "open", "cleared", "event" */
    int64_t raised_ms, last_ms, cleared_ms; /* cleared_ms 0 unless cleared */
    int64_t count;
    const char *details; /* JSON object text */
} alert_row;

typedef int (*alert_row_cb)(void *ctx, const alert_row *row);

typedef struct alert_filter {
    bool open_only;
    alert_kind kind;  /* 0: any */
    int64_t since_ms; /* rows last changed at or after */
    size_t limit;     /* the newest limit rows; 0: all */
} alert_filter;

/* Matching rows, oldest first (the newest limit of them). A non-zero
 * return from cb stops the walk. */
monitor_status alert_store_list(alert_store *s, const alert_filter *f, alert_row_cb cb, void *ctx);

/* Open alerts now. */
monitor_status alert_store_count_open(alert_store *s, int64_t *out);

/* Delete closed rows and events last changed before older_than_ms, then the
 * oldest closed rows beyond max_rows (0: no cap). Open alerts are kept. */
monitor_status alert_store_prune(alert_store *s, int64_t older_than_ms, size_t max_rows);

#endif /* MOAT_MONITOR_ALERT_STORE_H */
