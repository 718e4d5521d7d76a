/*
 * rate.c — the EWMA rate-anomaly detector (rules in rate.h).
 *
 * A gap of k empty buckets decays the average by (1 - alpha)^k in one step,
 * bounded so a device silent for a year costs no more than one for a
 * minute.
 */
#include "rate.h"

#include <math.h>

#define SLOW_DOWN 8.0    /* adaptation while anomalous is this many times slower */
#define MAX_GAP   4096.0 /* (1 - alpha)^4096 is 0 for any useful alpha */

static void defaults(const rate_config *in, rate_config *out)
{
    *out = *in;
    if (out->bucket_ms <= 0)
        out->bucket_ms = 10000;
    if (!(out->alpha > 0.0 && out->alpha <= 1.0))
        out->alpha = 0.1;
    if (!(out->factor > 0.0))
        out->factor = 10.0;
    if (!(out->min_rate > 0.0))
        out->min_rate = 5.0;
    if (out->warmup == 0)
        out->warmup = 6;
}

double rate_threshold(const rate_config *in, const rate_state *st)
{
    rate_config c;
    defaults(in, &c);
    double t = c.factor * st->usual;
    return t > c.min_rate ? t : c.min_rate;
}

/* Close the current bucket with its count; returns the change. */
static rate_change close_bucket(const rate_config *c, rate_state *st)
{
    double secs = (double)c->bucket_ms / 1000.0;
    double r = (double)st->count / secs;
    double threshold = c->factor * st->usual > c->min_rate ? c->factor * st->usual : c->min_rate;
    bool warm = st->buckets >= c->warmup;
    bool anomalous = warm && r > threshold;
    /* Learn: clipped and slowed while anomalous (see rate.h). */
    double sample = anomalous && r > threshold ? threshold : r;
    double a = anomalous ? c->alpha / SLOW_DOWN : c->alpha;
    st->usual += a * (sample - st->usual);
    st->last_rate = r;
    st->count = 0;
    if (st->buckets < UINT32_MAX)
        st->buckets++;
    rate_change ch = RATE_SAME;
    if (anomalous && !st->anomalous)
        ch = RATE_RAISE;
    else if (!anomalous && st->anomalous)
        ch = RATE_CLEAR;
    st->anomalous = anomalous;
    return ch;
}

rate_change rate_observe(const rate_config *in, rate_state *st, uint64_t n, int64_t now)
{
    rate_config c;
    defaults(in, &c);
    if (st->bucket_start == 0) {
        st->bucket_start = now > 0 ? now : 1;
        st->count = n;
        return RATE_SAME;
    }
    rate_change ch = RATE_SAME;
    if (now >= st->bucket_start + c.bucket_ms) {
        ch = close_bucket(&c, st);
        /* Whole empty buckets since then. */
        int64_t gap = (now - st->bucket_start) / c.bucket_ms - 1;
        if (gap > 0) {
            double k = (double)gap > MAX_GAP ? MAX_GAP : (double)gap;
            st->usual *= pow(1.0 - c.alpha, k);
            uint64_t add = (uint64_t)k;
            st->buckets = st->buckets > UINT32_MAX - add ? UINT32_MAX : st->buckets + (uint32_t)add;
            st->last_rate = 0.0;
            /* An empty bucket is not above anything; but a raise from the
             * bucket just closed is reported first, and cleared by the
             * next call. */
            if (st->anomalous && ch != RATE_RAISE) {
                st->anomalous = false;
                ch = RATE_CLEAR;
            }
        }
        st->bucket_start += ((now - st->bucket_start) / c.bucket_ms) * c.bucket_ms;
    }
    if (st->count > UINT64_MAX - n)
        st->count = UINT64_MAX;
    else
        st->count += n;
    return ch;
}
