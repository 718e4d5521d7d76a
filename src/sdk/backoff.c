/*
 * backoff.c — how long the client waits before its next connection attempt.
 *
 * Exponential back-off with "full jitter": the n-th consecutive failure waits
 * a delay drawn uniformly from [0, min(max, base * 2^n)]. Spreading retries
 * over the whole window (rather than around its end) keeps a fleet that lost
 * its hub at the same instant from coming back in synchronised waves. Pure
 * functions of their arguments, so the bounds and the distribution are unit
 * tested without a clock.
 */
#include <moat/moat.h>

uint32_t moat_backoff_cap(uint32_t attempt, uint32_t base_ms, uint32_t max_ms)
{
    uint64_t cap = base_ms;
    /* Doubling stops once the ceiling is reached, so no shift overflows. */
    for (uint32_t i = 0; i < attempt && cap < max_ms; i++)
        cap <<= 1;
    return cap < max_ms ? (uint32_t)cap : max_ms;
}

uint32_t moat_backoff_delay(uint32_t attempt, uint32_t base_ms, uint32_t max_ms, uint32_t rnd)
{
    uint64_t span = (uint64_t)moat_backoff_cap(attempt, base_ms, max_ms) + 1u;
    /* rnd / 2^32 scaled onto [0, span): uniform up to 1/2^32, no division. */
    return (uint32_t)(((uint64_t)rnd * span) >> 32);
}
