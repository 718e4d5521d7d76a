/*
 * rate.h — is a device publishing far above its usual rate? An
 * exponentially weighted moving average (EWMA) of the device's message rate
 * over fixed buckets (10 s by default) is its "usual"; a bucket whose rate is
 * above factor x usual AND above a floor (min_rate) is anomalous.
 *
 * Why these rules: the factor adapts to each device (a chatty one is not
 * anomalous for being chatty); the floor keeps a quiet device that sends a
 * handful of messages from alarming; a warm-up of a few buckets keeps a
 * device that just connected from alarming on an empty history. While a
 * device is anomalous, its usual rate adapts eight times more slowly, so a
 * flood does not quickly become the new normal, while a real, lasting
 * change (new firmware) is accepted within minutes.
 *
 * The state is a small value the caller keeps per device (e.g. in its
 * connection); rate_observe is pure and allocation-free, so an event loop
 * can call it for every message. Times in milliseconds.
 */
#ifndef MOAT_MONITOR_RATE_H
#define MOAT_MONITOR_RATE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct rate_config {
    int64_t bucket_ms; /* bucket length; 0 = 10000 */
    double alpha;      /* EWMA weight of a new bucket, (0, 1]; 0 = 0.1 */
    double factor;     /* anomalous above factor x usual; 0 = 10 */
    double min_rate;   /* ... and above this many messages per second; 0 = 5 */
    uint32_t warmup;   /* buckets seen before any alarm; 0 = 6 */
} rate_config;

typedef struct rate_state {
    int64_t bucket_start; /* 0: nothing seen yet */
    uint64_t count;       /* messages in the current bucket */
    double usual;         /* EWMA, messages per second */
    double last_rate;     /* rate of the last closed bucket */
    uint32_t buckets;     /* closed so far (saturates) */
    bool anomalous;
} rate_state;

typedef enum rate_change {
    RATE_SAME = 0, /* nothing to report */
    RATE_RAISE,    /* became anomalous */
    RATE_CLEAR     /* back to normal */
} rate_change;

/* Count n messages at now (n may be 0 to just let time pass). Closes the
 * buckets that ended before now and reports a change of the anomalous
 * state (at most one per call). */
rate_change rate_observe(const rate_config *cfg, rate_state *st, uint64_t n, int64_t now);

/* The threshold a bucket's rate must pass to be anomalous now. */
double rate_threshold(const rate_config *cfg, const rate_state *st);

#endif /* MOAT_MONITOR_RATE_H */
