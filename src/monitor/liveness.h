/*
 * liveness.h — which devices have gone silent: a deadline per watched
 * device, kept in a binary min-heap so that finding the next deadline is
 * O(1) and every change is O(log n); nothing ever scans all devices.
 *
 * Rules (docs/monitoring.md):
 *   - A watched device has an expected report interval (seconds, from its
 *     groups' report_interval setting). Its deadline is the last sign of
 *     life + interval + grace.
 *   - Any sign of life (liveness_seen) moves the deadline; if the device was
 *     reported offline, it is cleared.
 *   - A clean disconnect (MQTT DISCONNECT) keeps the deadline: the device
 *     said goodbye and is expected back within its interval.
 *   - A lost connection (no DISCONNECT: the hub published its will, or the
 *     socket broke) brings the deadline forward to now + lost_grace, unless
 *     it is sooner already: a device that normally stays connected and
 *     drops off is news, and should not wait a whole interval.
 *   - When the deadline passes, one raise is emitted, with the cause (silent
 *     while connected, clean disconnect, connection lost, never seen since
 *     the hub started); then nothing more until the device is seen again.
 *
 * Pure and single-threaded: the caller passes the time (milliseconds on any
 * clock that does not jump, e.g. CLOCK_MONOTONIC) and calls
 * liveness_advance at the returned deadline. Events go to the emit callback
 * given at creation, synchronously.
 */
#ifndef MOAT_MONITOR_LIVENESS_H
#define MOAT_MONITOR_LIVENESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct liveness liveness;

typedef enum liveness_cause {
    LIVENESS_SILENT = 1,       /* connected (or not known to have left), but silent */
    LIVENESS_CLEAN_DISCONNECT, /* left with DISCONNECT and did not come back */
    LIVENESS_CONNECTION_LOST,  /* left without DISCONNECT (will published / socket lost) */
    LIVENESS_NEVER_SEEN        /* not seen since the hub started watching it */
} liveness_cause;

const char *liveness_cause_name(liveness_cause cause); /* "silent", ... */

typedef struct liveness_event {
    const char *id; /* valid during the callback */
    bool offline;   /* true: raise; false: clear */
    liveness_cause cause;
    int64_t last_seen; /* ms; 0 if never seen */
    int64_t now;       /* ms; when the event happened */
    uint32_t interval_s;
    bool forgotten; /* a clear because the device is no longer watched */
} liveness_event;

typedef void (*liveness_emit)(void *ctx, const liveness_event *ev);

typedef struct liveness_config {
    int64_t grace_ms;      /* added to every interval */
    int64_t lost_grace_ms; /* after a lost connection; 0 = no shortcut */
    size_t max_devices;    /* watched at most; 0 = no limit */
} liveness_config;

#define LIVENESS_ID_MAX 63u

/* NULL when out of memory. */
liveness *liveness_new(const liveness_config *cfg, liveness_emit emit, void *ctx);
/* Frees without emitting anything. */
void liveness_free(liveness *l);

/* Watch id with interval_s (or change its interval). A new device starts
 * "never seen", its deadline now + interval + grace. interval_s 0 stops
 * watching it (as liveness_forget). False when out of memory, when id is
 * longer than LIVENESS_ID_MAX, or when max_devices are watched. */
bool liveness_watch(liveness *l, const char *id, uint32_t interval_s, int64_t now);

/* A device that was reported offline before the hub restarted: watch it as
 * offline already, so that its return is cleared and it is not raised a
 * second time. interval_s 0 keeps the interval of a watched device (and
 * fails for one that is not watched). */
bool liveness_watch_offline(liveness *l, const char *id, uint32_t interval_s, int64_t now);

/* A sign of life from id (connected, a packet). Unwatched ids are ignored
 * (returns false). */
bool liveness_seen(liveness *l, const char *id, int64_t now);

/* The device's connection ended; clean = it sent DISCONNECT. */
void liveness_gone(liveness *l, const char *id, bool clean, int64_t now);

/* Stop watching id; a device reported offline is cleared (forgotten). */
void liveness_forget(liveness *l, const char *id, int64_t now);

/* Emit the raises whose deadline is <= now; return the next deadline, or
 * INT64_MAX if there is none. */
int64_t liveness_advance(liveness *l, int64_t now);

/* The next deadline without changing anything (INT64_MAX if none). */
int64_t liveness_next(const liveness *l);

/* Reconciling with the registry: begin a pass, liveness_watch every device
 * that should be watched, then end it: devices not watched during the pass
 * are forgotten. */
void liveness_sync_begin(liveness *l);
void liveness_sync_end(liveness *l, int64_t now);

/* Watched devices, and how many of them are offline now. */
size_t liveness_count(const liveness *l);
size_t liveness_offline_count(const liveness *l);
/* Whether id is watched, and whether it is offline. */
bool liveness_is_offline(const liveness *l, const char *id, bool *watched);

#endif /* MOAT_MONITOR_LIVENESS_H */
