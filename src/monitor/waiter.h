/*
 * waiter.h — clocks and the sleep of the monitor's two threads (the monitor
 * loop and the webhook sender).
 *
 * Both sleep on a condition variable until a deadline on CLOCK_MONOTONIC, so
 * that a step of the wall clock neither wakes them early nor keeps them
 * asleep; the wall clock is only read for what goes into alerts.
 */
#ifndef MOAT_MONITOR_WAITER_H
#define MOAT_MONITOR_WAITER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

int64_t waiter_mono_ms(void);
int64_t waiter_wall_ms(void);

/* The lock and a condition variable that times out on CLOCK_MONOTONIC;
 * false (nothing left to destroy) when either cannot be made. */
bool waiter_init(pthread_mutex_t *lock, pthread_cond_t *cond);

/* With lock held: sleep until woken or until the monotonic time when_ms
 * (INT64_MAX: until woken). */
void waiter_sleep(pthread_mutex_t *lock, pthread_cond_t *cond, int64_t when_ms);

#endif
