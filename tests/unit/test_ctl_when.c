/*
 * Unit tests for moatctl's one time parser (src/ctl/when.c), which
 * `telemetry --since/--until`, `audit --since` and `alerts --since` share:
 * each accepted form to the millisecond, the whole-second floor (before
 * 1970 too), and the mistyped times that must be refused rather than read
 * as some other time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl.h"

/* 2025-01-31T12:00:00Z */
#define T0 1738324800LL

static int64_t ms_of(const char *s, int64_t now_ms)
{
    int64_t v = -42;
    if (!ctl_parse_when_ms(s, now_ms, &v))
        fail_msg("'%s' refused", s);
    return v;
}

static void test_forms(void **state)
{
    (void)state;
    int64_t now = T0 * 1000 + 777;
    assert_int_equal(ms_of("now", now), now);
    assert_int_equal(ms_of("2025-01-31T12:00:00Z", now), T0 * 1000);
    assert_int_equal(ms_of("2025-01-31t12:00:00z", now), T0 * 1000);
    assert_int_equal(ms_of("2025-01-31 12:00Z", now), T0 * 1000);
    assert_int_equal(ms_of("2025-01-31", now), (T0 - 12 * 3600) * 1000);
    assert_int_equal(ms_of("2025-01-31T13:30:00+01:30", now), T0 * 1000);
    assert_int_equal(ms_of("2025-01-31T10:00:00-02:00", now), T0 * 1000);
    /* Fractions: to the millisecond; further digits dropped, not rounded. */
    assert_int_equal(ms_of("2025-01-31T12:00:00.5Z", now), T0 * 1000 + 500);
    assert_int_equal(ms_of("2025-01-31T12:00:00.25Z", now), T0 * 1000 + 250);
    assert_int_equal(ms_of("2025-01-31T12:00:00.123Z", now), T0 * 1000 + 123);
    assert_int_equal(ms_of("2025-01-31T12:00:00.123999Z", now), T0 * 1000 + 123);
    assert_int_equal(ms_of("1738324800", now), T0 * 1000);
    assert_int_equal(ms_of("1738324800.25", now), T0 * 1000 + 250);
    assert_int_equal(ms_of("0", now), 0);
    /* Leap day and the leap second RFC 3339 allows. */
    assert_int_equal(ms_of("2024-02-29T00:00:00Z", now), 1709164800LL * 1000);
    assert_int_equal(ms_of("2016-12-31T23:59:60Z", now), 1483228800LL * 1000);
    /* Relative to now. */
    assert_int_equal(ms_of("-30s", now), now - 30000);
    assert_int_equal(ms_of("-15m", now), now - 15 * 60000);
    assert_int_equal(ms_of("-2h", now), now - 2 * 3600000);
    assert_int_equal(ms_of("-7d", now), now - 7 * 86400000LL);
    assert_int_equal(ms_of("-1w", now), now - 604800000LL);
    assert_int_equal(ms_of("-0s", now), now);
    /* Before 1970. */
    assert_int_equal(ms_of("1969-12-31T23:59:59.500Z", now), -500);
}

static void test_seconds_floor(void **state)
{
    (void)state;
    int64_t s = -42;
    assert_true(ctl_parse_when("2025-01-31T12:00:00.999Z", 0, &s));
    assert_int_equal(s, T0);
    assert_true(ctl_parse_when("1738324800.5", 0, &s));
    assert_int_equal(s, T0);
    assert_true(ctl_parse_when("1969-12-31T23:59:59.500Z", 0, &s));
    assert_int_equal(s, -1);
    assert_true(ctl_parse_when("-2h", T0, &s));
    assert_int_equal(s, T0 - 7200);
    assert_true(ctl_parse_when("now", T0, &s));
    assert_int_equal(s, T0);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "yesterday",
        "2025-01-31T12:00:00",  /* no offset: whose local time? */
        "2025-01-31T12:00",     /* the same */
        "2025-02-30",           /* no such day */
        "2025-13-01",           /* no such month */
        "2025-1-31",            /* digits missing */
        "2025-01-31T24:00:00Z", /* hour */
        "2025-01-31T12:60:00Z", /* minute */
        "2025-01-31T12:00:61Z", /* second */
        "2025-01-31T12:00:00.Z",
        "2025-01-31T12:00:00Zjunk",
        "2025-01-31T12:00:00+1:00",
        "2025-01-31T12:00:00+24:00",
        "2025-01-31X12:00:00Z",
        "12:00",
        "1738324800.",
        "1738324800.5x",
        ".5",
        "1e9",
        "+5",
        "253402300800", /* past the year 9999 */
        "99999999999999999999999",
        "-5",
        "-5x",
        "-m",
        "--5m",
        "-5 m",
        "-100000001s", /* past the bound on amounts */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 1234;
        if (ctl_parse_when_ms(bad[i], 0, &v))
            fail_msg("'%s' accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, 1234); /* untouched */
        int64_t s = 1234;
        assert_false(ctl_parse_when(bad[i], 0, &s));
        assert_int_equal(s, 1234);
    }
    int64_t v;
    assert_false(ctl_parse_when_ms(NULL, 0, &v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_seconds_floor),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
