/*
 * Unit tests for the burst detector (src/monitor/burst.c) with a fake clock:
 * it fires exactly when a key's sliding count reaches the threshold, once
 * per window; the sliding estimate carries the previous window over and
 * decays; memory stays within max_keys however many keys an attacker
 * sprays, evicting the least recently hit, so a busy key among the spray
 * is still caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "burst.h"

static void test_fires_at_threshold_once_per_window(void **state)
{
    (void)state;
    burst_config cfg = {.window_ms = 60000, .threshold = 10, .max_keys = 16};
    burst *b = burst_new(&cfg);
    assert_non_null(b);
    uint32_t est = 0;
    for (int i = 0; i < 9; i++)
        assert_false(burst_hit(b, "address:192.0.2.1", 1, 1000 + i, &est));
    assert_int_equal(est, 9);
    assert_true(burst_hit(b, "address:192.0.2.1", 1, 2000, &est));
    assert_int_equal(est, 10);
    for (int i = 0; i < 100; i++)
        assert_false(burst_hit(b, "address:192.0.2.1", 1, 3000 + i, NULL));
    /* Another key has its own count. */
    assert_false(burst_hit(b, "address:192.0.2.2", 1, 3000, &est));
    assert_int_equal(est, 1);
    /* A window later the same burst fires again. */
    for (int i = 0; i < 10; i++)
        burst_hit(b, "address:192.0.2.1", 1, 130000 + i, &est);
    assert_true(est >= 10);
    burst_free(b);
    b = burst_new(&cfg);
    bool fired = false;
    for (int i = 0; i < 10; i++)
        fired |= burst_hit(b, "k", 1, 130000 + i, NULL);
    assert_true(fired);
    burst_free(b);
}

static void test_sliding_estimate(void **state)
{
    (void)state;
    burst_config cfg = {.window_ms = 60000, .threshold = 1000, .max_keys = 4};
    burst *b = burst_new(&cfg);
    /* 60 events late in window [0, 60000). */
    burst_hit(b, "k", 60, 59000, NULL);
    assert_int_equal(burst_estimate(b, "k", 59000), 60);
    /* A quarter into the next window, three quarters of them still count. */
    assert_int_equal(burst_estimate(b, "k", 75000), 45);
    /* Two windows on, nothing. */
    assert_int_equal(burst_estimate(b, "k", 120000), 0);
    assert_int_equal(burst_estimate(b, "absent", 120000), 0);
    /* A burst that straddles a window boundary is still seen whole. */
    burst_config c2 = {.window_ms = 60000, .threshold = 20, .max_keys = 4};
    burst *b2 = burst_new(&c2);
    bool fired = false;
    for (int i = 0; i < 20; i++)
        fired |= burst_hit(b2, "k", 1, 59500 + i * 50, NULL);
    assert_true(fired);
    burst_free(b2);
    burst_free(b);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    burst_config cfg = {.window_ms = 60000, .threshold = 100, .max_keys = 4};
    burst *b = burst_new(&cfg);
    burst_hit(b, "a", 5, 1, NULL);
    burst_hit(b, "b", 5, 2, NULL);
    burst_hit(b, "c", 5, 3, NULL);
    burst_hit(b, "d", 5, 4, NULL);
    burst_hit(b, "a", 5, 5, NULL); /* a is now the most recent */
    burst_hit(b, "e", 5, 6, NULL); /* evicts b, the least recent */
    assert_int_equal(burst_keys(b), 4);
    assert_int_equal(burst_evictions(b), 1);
    assert_int_equal(burst_estimate(b, "b", 7), 0);
    assert_int_equal(burst_estimate(b, "a", 7), 10);
    burst_free(b);
}

static void test_spray_is_bounded_and_busy_key_caught(void **state)
{
    (void)state;
    burst_config cfg = {.window_ms = 60000, .threshold = 50, .max_keys = 100};
    burst *b = burst_new(&cfg);
    char key[64];
    bool busy_fired = false;
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "address:10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        assert_false(burst_hit(b, key, 1, i / 10, NULL));
        if (i % 10 == 0)
            busy_fired |= burst_hit(b, "address:203.0.113.9", 1, i / 10, NULL);
        assert_true(burst_keys(b) <= 100);
    }
    assert_true(busy_fired);
    assert_true(burst_evictions(b) >= 100000 - 100);
    burst_free(b);
}

static void test_bad_config(void **state)
{
    (void)state;
    burst_config zero = {.window_ms = 0, .threshold = 1, .max_keys = 1};
    assert_null(burst_new(&zero));
    burst_config nothr = {.window_ms = 1, .threshold = 0, .max_keys = 1};
    assert_null(burst_new(&nothr));
    assert_null(burst_new(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_threshold_once_per_window),
        cmocka_unit_test(test_sliding_estimate),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_spray_is_bounded_and_busy_key_caught),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
