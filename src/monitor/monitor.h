/*
 * monitor.h — the hub's watch over its fleet and itself, in one object that
 * moatd's event loops feed and a thread of its own acts on.
 *
 * What the loops call (from any worker thread) only takes the monitor's
 * mutex for O(log n) work on in-memory state — no I/O, no allocation on the
 * common path, no waiting on anything but that mutex — so it is safe on an
 * event loop that must never block:
 *
 *     on CONNECT accepted:        monitor_device_connected(m, id)
 *     per inbound packet:         n = monitor_tap_count(&conn->tap, now_ms, 1000);
 *                                 if (n) monitor_device_activity(m, id, n);
 *     on close:                   monitor_device_activity(m, id, monitor_tap_flush(&conn->tap));
 *                                 monitor_device_disconnected(m, id, clean);
 *     refused handshake/CONNECT/
 *       PUBLISH/SUBSCRIBE:        monitor_refused(m, MONITOR_REFUSED_PUBLISH, peer_ip,
 *                                                 "device:ID", "policy", topic);
 *     after broker_commit:        ok ? monitor_store_ok(m) : monitor_store_failed(m, why);
 *
 * The monitor thread does everything that blocks: it fires liveness
 * deadlines, writes alerts to DATA_DIR/alerts.db, appends refused accesses
 * (aggregated, see src/audit/refusals.h) to the audit log in registry.db,
 * follows the registry (which devices to watch, their report_interval),
 * checks certificate expiry, detects wall-clock jumps, and hands alerts to
 * the webhook sender (its own thread) and to the on_alert callback (for
 * publishing on $moat/alerts/...).
 *
 * Everything between the loops and the thread passes through bounded
 * queues: when the thread falls behind, the oldest entries are dropped and
 * counted (monitor_get_stats), and a dropped audit record is itself
 * recorded as an "audit.dropped" entry with the count.
 */
#ifndef MOAT_MONITOR_H
#define MOAT_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alert.h"
#include "audit.h"
#include "rate.h"
#include "webhook.h"

typedef struct monitor monitor;

typedef struct monitor_config {
    const char *data_dir;    /* registry.db, audit.key, and alerts.db by default */
    const char *alerts_path; /* NULL: DATA_DIR/alerts.db */
    const char *hub_name;    /* in webhook bodies; NULL: none */
    /* Certificates of the hub itself to watch for expiry (server.crt,
     * ca.crt; absolute or relative to data_dir). */
    const char *const *cert_files;
    size_t ncert_files;

    /* Liveness (seconds). */
    uint32_t
        default_report_interval_s; /* devices whose groups set no report_interval; 0: not watched */
    uint32_t offline_grace_s;      /* added to every interval */
    uint32_t lost_grace_s;         /* after a connection lost without DISCONNECT; 0: no shortcut */
    size_t max_devices;            /* watched at most */

    /* Bursts: events per window that raise an alert. */
    uint32_t burst_window_s;
    uint32_t handshake_burst;       /* refused handshakes/CONNECTs per source address */
    uint32_t refused_publish_burst; /* refused publishes per principal (or address) */
    size_t burst_max_keys;

    rate_config rate; /* rate anomaly (see rate.h); zeros take its defaults */

    uint32_t cert_warn_days; /* alert this many days before a certificate ends */

    /* Audit of refused accesses. */
    bool audit_refusals;
    uint32_t refusal_window_s;
    size_t refusal_max_keys;
    uint32_t audit_flush_ms; /* write queued entries at least this often */

    /* Alert history kept in alerts.db. */
    uint32_t alert_retention_days;
    size_t alert_max_rows;

    uint32_t registry_poll_ms; /* check the registry for changes this often (at most) */
    size_t queue_max;          /* alerts and audit records waiting for the thread */
    uint32_t clock_jump_s;     /* wall clock moving this much against the monotonic clock */

    bool webhook_enabled;   /* start a webhook sender with the config below */
    webhook_config webhook; /* heartbeat_fill is set by the monitor */

    /* Every alert recorded (new raise, clear, event), on the monitor thread:
     * e.g. hand it to a loop for publishing on alert_topic(). May be NULL. */
    void (*on_alert)(void *ctx, const alert *a);
    void *on_alert_ctx;
    /* Failures of the monitor's own I/O, once per change of state. */
    void (*log)(void *ctx, bool error, const char *msg);
    void *log_ctx;
} monitor_config;

/* The documented defaults (docs/monitoring.md), no webhook. */
void monitor_config_defaults(monitor_config *c, const char *data_dir);

/* Open alerts.db (created if missing), the audit log (an error is logged
 * and refusals are then only counted) and start the thread(s). */
monitor_status monitor_new(const monitor_config *cfg, monitor **out, char *err, size_t errlen);

/* Stop: close the refusal windows, write what is queued, let the webhook
 * drain for up to two seconds, join the threads and free. */
void monitor_free(monitor *m);

/* ---- from the event loops (thread-safe, non-blocking) -------------------- */

/* Device ids as the registry knows them (26 base32 characters). */
void monitor_device_connected(monitor *m, const char *id);
void monitor_device_activity(monitor *m, const char *id, uint32_t messages);
void monitor_device_disconnected(monitor *m, const char *id, bool clean);

typedef enum monitor_refusal {
    MONITOR_REFUSED_HANDSHAKE = 1, /* TLS handshake failed or certificate refused */
    MONITOR_REFUSED_CONNECT,       /* CONNECT refused */
    MONITOR_REFUSED_PUBLISH,
    MONITOR_REFUSED_SUBSCRIBE
} monitor_refusal;

/* A refused access: goes to the audit log (aggregated) and to the burst
 * detectors. source: peer address; principal: "device:ID"/"service:NAME"
 * or NULL; reason: a short word; example: topic or NULL. */
void monitor_refused(monitor *m, monitor_refusal what, const char *source, const char *principal,
                     const char *reason, const char *example);

/* The broker's store failed / works. Only changes of state make alerts;
 * monitor_store_ok is a single atomic load while nothing has failed. */
void monitor_store_failed(monitor *m, const char *detail);
void monitor_store_ok(monitor *m);

/* Any other alert the hub raises itself (copied). */
void monitor_alert(monitor *m, const alert *a);

/* Any other audit entry the hub writes (copied; details are copied too). */
void monitor_audit(monitor *m, const audit_record *rec);

/* ---- per connection, no lock ------------------------------------------------ */

/* Kept in each connection so that the loop reports activity at most once
 * per min_gap_ms instead of taking the mutex for every message. */
typedef struct monitor_tap {
    int64_t last_ms;
    uint32_t pending;
} monitor_tap;

/* Count one message at now_ms; returns the count to report now (then call
 * monitor_device_activity), or 0. */
uint32_t monitor_tap_count(monitor_tap *t, int64_t now_ms, uint32_t min_gap_ms);
/* What is still unreported (at close). */
uint32_t monitor_tap_flush(monitor_tap *t);

/* ---- counters ------------------------------------------------------------------ */

typedef struct monitor_stats {
    uint64_t alerts;         /* recorded */
    uint64_t alerts_dropped; /* queue full */
    uint64_t audit_written;
    uint64_t audit_dropped; /* queue full */
    uint64_t audit_failed;  /* could not be written */
    size_t devices_watched;
    size_t devices_offline;
    int64_t alerts_open;
    audit_head audit_head; /* after the last write */
    webhook_stats webhook;
} monitor_stats;

void monitor_get_stats(monitor *m, monitor_stats *out);

#endif /* MOAT_MONITOR_H */
