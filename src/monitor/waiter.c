/*
 * waiter.c — monotonic sleeps for the monitor's threads (waiter.h).
 */
#include "waiter.h"

#include <time.h>

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t waiter_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t waiter_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

bool waiter_init(pthread_mutex_t *lock, pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    if (pthread_mutex_init(lock, NULL) != 0)
        return false;
    bool ok = pthread_condattr_init(&ca) == 0;
    if (ok) {
        ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(cond, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!ok)
        pthread_mutex_destroy(lock);
    return ok;
}

void waiter_sleep(pthread_mutex_t *lock, pthread_cond_t *cond, int64_t when_ms)
{
    if (when_ms == INT64_MAX) {
        pthread_cond_wait(cond, lock);
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(when_ms / 1000),
                          .tv_nsec = (long)(when_ms % 1000) * 1000000};
    (void)pthread_cond_timedwait(cond, lock, &ts);
}
