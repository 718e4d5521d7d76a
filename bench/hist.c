/*
 * hist.c — the log-bucket histogram (see hist.h).
 *
 * Bucket index for a value v: below 2^S (S = HIST_SUB_BITS) the value itself;
 * above it, with e the position of the leading one bit, the S bits after the
 * leading one select one of 2^S sub-buckets of the power of two e:
 *     index = 2^S + (e - S) * 2^S + ((v >> (e - S)) & (2^S - 1)).
 */
#include "hist.h"

#include <string.h>

#define SUB (1u << HIST_SUB_BITS)

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    if (e > HIST_MAX_EXP)
        return HIST_BUCKETS - 1u;
    unsigned shift = e - HIST_SUB_BITS;
    return SUB + shift * SUB + (unsigned)((v >> shift) & (SUB - 1u));
}

/* The highest value that falls into bucket i. */
static uint64_t bucket_top(unsigned i)
{
    if (i < SUB)
        return i;
    unsigned shift = (i - SUB) / SUB;
    uint64_t mant = SUB + (i - SUB) % SUB;
    return ((mant + 1u) << shift) - 1u;
}

void hist_reset(hist *h)
{
    memset(h, 0, sizeof(*h));
}

void hist_record(hist *h, uint64_t value)
{
    h->buckets[bucket_of(value)]++;
    if (h->count == 0 || value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
    h->count++;
    h->sum += (long double)value;
}

void hist_merge(hist *dst, const hist *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
}

uint64_t hist_percentile(const hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    /* The rank of the sample at percentile p, 1-based, rounded up. */
    double want = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

double hist_mean(const hist *h)
{
    return h->count ? (double)(h->sum / (long double)h->count) : 0.0;
}
