/*
 * hist.h — a log-bucket latency histogram in the style of HdrHistogram.
 *
 * moat-bench records one latency sample per delivered message (millions per
 * second), so recording must be a few instructions and no allocation, and the
 * percentiles must not depend on keeping every sample. Values (nanoseconds)
 * fall into buckets whose width grows with the value: below 2^HIST_SUB_BITS
 * every value has its own bucket, above it each power of two is split into
 * 2^HIST_SUB_BITS equal buckets, so any reported value is within 1/128 (0.8 %)
 * of the true one. Histograms of several threads merge by adding counts. The
 * exact minimum and maximum are kept besides the buckets.
 */
#ifndef MOAT_BENCH_HIST_H
#define MOAT_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7u
#define HIST_MAX_EXP  44u /* values up to 2^45 ns (about 9.7 hours) */
#define HIST_BUCKETS  ((1u << HIST_SUB_BITS) * (HIST_MAX_EXP - HIST_SUB_BITS + 2u))

typedef struct hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    long double sum;
    uint64_t buckets[HIST_BUCKETS];
} hist;

/* Empty the histogram. */
void hist_reset(hist *h);

/* Record one value (nanoseconds). Values over the range land in the last
 * bucket; the exact maximum is still kept. */
void hist_record(hist *h, uint64_t value);

/* Add every count of src to dst. */
void hist_merge(hist *dst, const hist *src);

/* The value at percentile p (0 < p <= 100): the highest value of the bucket
 * that holds the sample of that rank, never more than the exact maximum.
 * 0 for an empty histogram. Example: hist_percentile(&h, 99.9). */
uint64_t hist_percentile(const hist *h, double p);

/* The mean of the recorded values, 0 for an empty histogram. */
double hist_mean(const hist *h);

#endif /* MOAT_BENCH_HIST_H */
