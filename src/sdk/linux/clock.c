/*
 * clock.c — the Linux port's moat_clock: CLOCK_MONOTONIC for every timer
 * (so a wall-clock step never fires or stalls keep-alives and back-off), the
 * wall clock only for what needs real time (device time stamps, command
 * expiry), and getrandom(2) for jitter and nonces.
 */
#include <errno.h>
#include <sys/random.h>
#include <time.h>

#include <moat/linux.h>

/* Before this (2020-01-01) the wall clock has obviously not been set: a
 * device without an RTC boots in 1970. Saying "unknown" is more honest than
 * stamping readings with 1970 or accepting expired commands. */
#define MOAT_LINUX_SANE_EPOCH 1577836800u

static uint64_t linux_now_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t linux_unix_time(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < (time_t)MOAT_LINUX_SANE_EPOCH)
        return 0;
    return (uint64_t)ts.tv_sec;
}

static void linux_random(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom(buf + done, len - done, 0);
        if (n > 0) {
            done += (size_t)n;
        } else if (n < 0 && errno != EINTR) {
            /* getrandom cannot fail on a supported kernel once the pool is
             * initialised; there is no safe fallback for randomness. */
            break;
        }
    }
}

void moat_linux_clock(moat_clock *out)
{
    out->ctx = NULL;
    out->now_ms = linux_now_ms;
    out->unix_time = linux_unix_time;
    out->random = linux_random;
}
