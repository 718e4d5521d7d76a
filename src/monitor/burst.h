/*
 * burst.h — counting events per key (a source address, a principal) over a
 * sliding window, to notice bursts: many refused handshakes from one
 * address, many refused publishes from one device.
 *
 * The sliding window is the two-bucket estimate: the count of the current
 * fixed window plus the previous window's count weighted by how much of it
 * still overlaps the sliding one. It needs two counters per key instead of a
 * timestamp per event, and is exact for a steady rate.
 *
 * Memory is bounded: at most max_keys keys, the least recently hit one is
 * evicted to make room (an attacker spraying addresses only evicts other
 * quiet keys; the busy key they would need to hide stays, since it is hit
 * most recently). A key fires once when its count reaches the threshold,
 * and then not again until a full window has passed.
 *
 * Pure and single-threaded; times in milliseconds from the caller.
 */
#ifndef MOAT_MONITOR_BURST_H
#define MOAT_MONITOR_BURST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct burst burst;

typedef struct burst_config {
    int64_t window_ms;  /* e.g. 60000 */
    uint32_t threshold; /* events per window that make a burst (>= 1) */
    size_t max_keys;    /* keys kept at once (>= 1) */
} burst_config;

#define BURST_KEY_MAX 127u

/* NULL when out of memory or for a config with a zero field. */
burst *burst_new(const burst_config *cfg);
void burst_free(burst *b);

/* Count n events of key at now. Returns true exactly when this hit makes
 * the key's sliding count reach the threshold, at most once per window per
 * key. *estimate (may be NULL) gets the sliding count. A key longer than
 * BURST_KEY_MAX is cut. */
bool burst_hit(burst *b, const char *key, uint32_t n, int64_t now, uint32_t *estimate);

/* The sliding count of key at now (0 if not kept). */
uint32_t burst_estimate(const burst *b, const char *key, int64_t now);

/* Keys kept, and keys evicted so far. */
size_t burst_keys(const burst *b);
uint64_t burst_evictions(const burst *b);

#endif /* MOAT_MONITOR_BURST_H */
