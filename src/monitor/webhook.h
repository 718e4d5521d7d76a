/*
 * webhook.h — POSTing alerts and the hub's heartbeat to HTTP(S) receivers,
 * signed, retried, and without ever blocking the caller.
 *
 * The caller (an event loop, the monitor thread) hands a JSON body to
 * webhook_post: it is copied into a bounded per-receiver queue under a
 * mutex and the call returns. A thread of the webhook's own sends, with
 * libcurl, one request at a time per receiver and in order: when a receiver
 * fails (no connection, timeout, a status other than 2xx), its queue waits
 * with exponential back-off and jitter and the same delivery is tried again,
 * up to max_attempts; a receiver down for long fills its queue, and then the
 * oldest delivery is dropped and counted (webhook_get_stats), so memory
 * stays bounded and the newest news gets through first when it returns.
 *
 * Every request carries:
 *   Content-Type: application/json
 *   X-Moat-Event: alert | heartbeat
 *   X-Moat-Delivery: 32 hex digits, the same on every retry (for dedup)
 *   X-Moat-Timestamp: seconds since the epoch when this attempt was signed
 *   X-Moat-Signature: sha256=HEX(HMAC-SHA256(key, TIMESTAMP "." BODY))
 * The timestamp is inside the MAC, so a receiver that refuses timestamps
 * more than a few minutes old (and remembers delivery ids that long) cannot
 * be fed a replayed request. docs/monitoring.md shows a receiver.
 *
 * The heartbeat ("I am alive") is POSTed every heartbeat_interval_s to
 * heartbeat_url, signed the same way, never queued or retried (a late
 * heartbeat is worthless; the next one follows); a final one with status
 * "stopping" is sent by webhook_free, so an outside monitor can tell a
 * clean stop from a dead hub.
 */
#ifndef MOAT_MONITOR_WEBHOOK_H
#define MOAT_MONITOR_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "alert.h"

typedef struct webhook webhook;

#define WEBHOOK_MAX_URLS 8u
#define WEBHOOK_KEY_MIN  16u /* bytes of HMAC key, at least */
#define WEBHOOK_KEY_MAX  256u

typedef struct webhook_config {
    const char *const *urls; /* alert receivers (http:// or https://), at most WEBHOOK_MAX_URLS */
    size_t nurls;
    const char *heartbeat_url;     /* NULL: no heartbeat */
    uint32_t heartbeat_interval_s; /* 0 = 60 */
    const uint8_t *key;            /* HMAC key (copied, WEBHOOK_KEY_MIN..MAX bytes) */
    size_t key_len;
    const char *hub_name;   /* "hub" in every body; may be NULL */
    size_t queue_max;       /* deliveries queued per receiver; 0 = 1000 */
    uint32_t retry_base_ms; /* first back-off; 0 = 1000 */
    uint32_t retry_max_ms;  /* longest back-off; 0 = 300000 */
    uint32_t max_attempts;  /* per delivery; 0 = 20 */
    uint32_t timeout_ms;    /* per request; 0 = 10000 */
    const char *ca_file;    /* CA bundle for https receivers; NULL = system */
    /* Called on the webhook thread before each heartbeat, to add fields to
     * its body (e.g. the audit head, open alerts). May be NULL. */
    void (*heartbeat_fill)(void *ctx, json_t *body);
    void *heartbeat_ctx;
    /* Failures and recoveries, once per change of state (not per retry),
     * on the webhook thread. May be NULL. */
    void (*log)(void *ctx, bool error, const char *msg);
    void *log_ctx;
} webhook_config;

/* Start the webhook thread. INVALID (with err) for a bad URL or key. */
monitor_status webhook_new(const webhook_config *cfg, webhook **out, char *err, size_t errlen);

/* Queue body (a JSON object; the reference is stolen) for every receiver.
 * Adds "id" (the delivery id) and "type" ("alert" unless set). Never
 * blocks beyond a short mutex; false if it was not queued (out of memory,
 * stopping, or no receivers). */
bool webhook_post(webhook *w, json_t *body);

/* The same for an alert (alert_to_json). */
bool webhook_post_alert(webhook *w, const alert *a);

typedef struct webhook_stats {
    uint64_t queued;     /* waiting now, all receivers */
    uint64_t delivered;  /* 2xx received */
    uint64_t attempts;   /* requests made */
    uint64_t failed;     /* given up after max_attempts */
    uint64_t dropped;    /* pushed out of a full queue, or unsent at stop */
    uint64_t heartbeats; /* heartbeats delivered */
    uint64_t heartbeats_failed;
} webhook_stats;

void webhook_get_stats(webhook *w, webhook_stats *out);

/* Stop: send the "stopping" heartbeat, keep delivering what is queued for
 * at most drain_ms, then join the thread and free everything. */
void webhook_free(webhook *w, uint32_t drain_ms);

/* The signature header's value without "sha256=": 64 lower-case hex digits
 * of HMAC-SHA256(key, decimal(ts) "." body). For receivers and tests. */
void webhook_sign(const uint8_t *key, size_t key_len, int64_t ts, const char *body, size_t len,
                  char out[65]);

#endif /* MOAT_MONITOR_WEBHOOK_H */
