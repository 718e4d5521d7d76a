/*
 * Unit tests for the rate-anomaly detector (src/monitor/rate.c) with a fake
 * clock: a device at its usual rate never alarms; a jump far above it
 * raises once and clears when the device calms down; the floor keeps quiet
 * devices from alarming on a handful of messages; the warm-up keeps a new
 * device from alarming on an empty history; a flood is not learned as the
 * new normal within a few buckets; an anomalous device that falls silent is
 * cleared.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rate.h"

static const rate_config CFG = {
    .bucket_ms = 10000, .alpha = 0.2, .factor = 10, .min_rate = 5, .warmup = 6};

/* Feed per_s messages per second for seconds, one call per second; return
 * the changes seen. */
static void feed(rate_state *st, int64_t *t, uint64_t per_s, int seconds, int *raises, int *clears)
{
    for (int i = 0; i < seconds; i++) {
        *t += 1000;
        rate_change ch = rate_observe(&CFG, st, per_s, *t);
        if (ch == RATE_RAISE)
            (*raises)++;
        if (ch == RATE_CLEAR)
            (*clears)++;
    }
}

static void test_steady_then_flood_then_calm(void **state)
{
    (void)state;
    rate_state st = {0};
    int64_t t = 1000000;
    int raises = 0, clears = 0;
    feed(&st, &t, 2, 300, &raises, &clears);
    assert_int_equal(raises, 0);
    assert_false(st.anomalous);
    assert_true(st.usual > 1.5 && st.usual < 2.5);
    feed(&st, &t, 200, 20, &raises, &clears);
    assert_int_equal(raises, 1);
    assert_true(st.anomalous);
    /* Still flooding a minute later: no second raise, and the usual rate
     * has not caught up with the flood. */
    feed(&st, &t, 200, 60, &raises, &clears);
    assert_int_equal(raises, 1);
    assert_true(st.anomalous);
    assert_true(st.usual < 20.0);
    feed(&st, &t, 2, 30, &raises, &clears);
    assert_int_equal(clears, 1);
    assert_false(st.anomalous);
}

static void test_floor_keeps_quiet_devices_quiet(void **state)
{
    (void)state;
    rate_state st = {0};
    int64_t t = 0;
    int raises = 0, clears = 0;
    /* 1 message every 10 s, then 4 per second: 40x its usual rate but
     * below the 5/s floor. */
    for (int i = 0; i < 100; i++) {
        t += 10000;
        if (rate_observe(&CFG, &st, 1, t) == RATE_RAISE)
            raises++;
    }
    feed(&st, &t, 4, 60, &raises, &clears);
    assert_int_equal(raises, 0);
    feed(&st, &t, 50, 30, &raises, &clears);
    assert_int_equal(raises, 1);
}

static void test_warmup(void **state)
{
    (void)state;
    rate_state st = {0};
    int64_t t = 0;
    int raises = 0, clears = 0;
    /* A device that starts chatty is not anomalous for having no history. */
    feed(&st, &t, 100, 50, &raises, &clears);
    assert_int_equal(raises, 0);
}

static void test_silence_clears(void **state)
{
    (void)state;
    rate_state st = {0};
    int64_t t = 0;
    int raises = 0, clears = 0;
    feed(&st, &t, 1, 200, &raises, &clears);
    feed(&st, &t, 500, 11, &raises, &clears);
    assert_int_equal(raises, 1);
    /* It stops; the monitor thread lets time pass with n = 0. */
    t += 60000;
    rate_change ch = rate_observe(&CFG, &st, 0, t);
    if (ch == RATE_RAISE) /* the flood's own bucket closing */
        ch = rate_observe(&CFG, &st, 0, t + 20000);
    assert_int_equal(ch, RATE_CLEAR);
    assert_false(st.anomalous);
    /* A long silence decays the usual rate towards zero. */
    rate_observe(&CFG, &st, 0, t + 365LL * 86400 * 1000);
    assert_true(st.usual < 1e-6);
}

static void test_threshold(void **state)
{
    (void)state;
    rate_state st = {.usual = 2.0};
    assert_true(rate_threshold(&CFG, &st) == 20.0);
    st.usual = 0.1;
    assert_true(rate_threshold(&CFG, &st) == 5.0);
    rate_config defaults = {0};
    assert_true(rate_threshold(&defaults, &st) == 5.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_then_flood_then_calm),
        cmocka_unit_test(test_floor_keeps_quiet_devices_quiet),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_silence_clears),
        cmocka_unit_test(test_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
