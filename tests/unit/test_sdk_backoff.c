/*
 * Unit tests for src/sdk/backoff.c: the reconnect back-off of the client.
 * The ceiling doubles from the base and stops at the maximum without
 * overflowing for any attempt count; every delay lies in [0, ceiling]; the
 * extremes of the random input reach both ends; and the delays are spread
 * uniformly over the whole window ("full jitter": a version that only
 * jittered the upper half, or not at all, fails the distribution checks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <moat/moat.h>

static void test_cap_doubles_and_stops(void **state)
{
    (void)state;
    assert_int_equal(moat_backoff_cap(0, 500, 60000), 500);
    assert_int_equal(moat_backoff_cap(1, 500, 60000), 1000);
    assert_int_equal(moat_backoff_cap(2, 500, 60000), 2000);
    assert_int_equal(moat_backoff_cap(6, 500, 60000), 32000);
    assert_int_equal(moat_backoff_cap(31, 1, UINT32_MAX), 0x80000000u);
    assert_int_equal(moat_backoff_cap(7, 500, 60000), 60000);
    assert_int_equal(moat_backoff_cap(8, 500, 60000), 60000);
    /* Any attempt count, any base: no overflow, never above the maximum. */
    const uint32_t attempts[] = {32, 33, 63, 64, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
        assert_int_equal(moat_backoff_cap(attempts[i], 500, 60000), 60000);
        assert_int_equal(moat_backoff_cap(attempts[i], 1, UINT32_MAX), UINT32_MAX);
        assert_int_equal(moat_backoff_cap(attempts[i], UINT32_MAX, UINT32_MAX), UINT32_MAX);
    }
    /* Monotonic in the attempt. */
    uint32_t prev = 0;
    for (uint32_t a = 0; a < 40; a++) {
        uint32_t cap = moat_backoff_cap(a, 3, 1000000);
        assert_true(cap >= prev);
        assert_true(cap <= 1000000);
        prev = cap;
    }
}

static void test_delay_bounds(void **state)
{
    (void)state;
    for (uint32_t a = 0; a < 12; a++) {
        uint32_t cap = moat_backoff_cap(a, 500, 60000);
        assert_int_equal(moat_backoff_delay(a, 500, 60000, 0), 0);
        assert_int_equal(moat_backoff_delay(a, 500, 60000, UINT32_MAX), cap);
        uint32_t r = 0x9e3779b9u;
        for (int i = 0; i < 1000; i++) {
            r = r * 1664525u + 1013904223u;
            assert_true(moat_backoff_delay(a, 500, 60000, r) <= cap);
        }
    }
    /* The widest window there is. */
    assert_int_equal(moat_backoff_delay(40, 1, UINT32_MAX, UINT32_MAX), UINT32_MAX);
    assert_int_equal(moat_backoff_delay(40, 1, UINT32_MAX, 0), 0);
}

static uint64_t xs_state = 88172645463325252ull;

static uint32_t xorshift(void)
{
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return (uint32_t)(xs_state >> 32);
}

/* 200000 draws over a 10000 ms window in 20 bins: each bin holds 1/20th
 * (chi-square well under the 0.1% critical value for 19 degrees of freedom,
 * 43.8), the mean is half the window, and about half the delays fall in
 * the lower half (an "equal jitter" scheme puts none there). */
static void test_delay_is_uniform_over_the_window(void **state)
{
    (void)state;
    enum { N = 200000, BINS = 20 };
    const uint32_t cap = moat_backoff_cap(4, 625, 60000); /* 10000 */
    assert_int_equal(cap, 10000);
    unsigned bins[BINS] = {0};
    double sum = 0;
    unsigned lower = 0;
    for (int i = 0; i < N; i++) {
        uint32_t d = moat_backoff_delay(4, 625, 60000, xorshift());
        assert_true(d <= cap);
        unsigned b = (unsigned)((uint64_t)d * BINS / (cap + 1u));
        bins[b]++;
        sum += d;
        lower += d < cap / 2;
    }
    double expect = (double)N / BINS, chi2 = 0;
    for (int b = 0; b < BINS; b++)
        chi2 += (bins[b] - expect) * (bins[b] - expect) / expect;
    assert_true(chi2 < 43.8);
    double mean = sum / N;
    assert_true(mean > cap * 0.49 && mean < cap * 0.51);
    assert_true(lower > N * 0.49 && lower < N * 0.51);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_doubles_and_stops),
        cmocka_unit_test(test_delay_bounds),
        cmocka_unit_test(test_delay_is_uniform_over_the_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
