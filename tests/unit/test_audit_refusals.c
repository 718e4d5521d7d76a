/*
 * Unit tests for the refusal aggregator (src/audit/refusals.c), with a fake
 * clock: the first refusal of a group is emitted at once, repeats become one
 * summary with their count when the window closes, and an attacker who
 * varies the source of every refusal cannot make it emit (or keep) more than
 * its bound per window — the surplus lands in one overflow entry that still
 * carries the count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refusals.h"

typedef struct seen {
    size_t n;
    char actor[8][128];
    char action[8][64];
    char subject[8][256];
    json_int_t count[8];
    bool summary[8], overflow[8];
    int64_t time[8];
} seen;

static void emit(void *ctx, const audit_record *rec)
{
    seen *s = ctx;
    size_t i = s->n++ % 8;
    snprintf(s->actor[i], sizeof s->actor[i], "%s", rec->actor);
    snprintf(s->action[i], sizeof s->action[i], "%s", rec->action);
    snprintf(s->subject[i], sizeof s->subject[i], "%s", rec->subject ? rec->subject : "");
    assert_string_equal(rec->outcome, "refused");
    s->count[i] = json_integer_value(json_object_get(rec->details, "count"));
    s->summary[i] = json_is_true(json_object_get(rec->details, "summary"));
    s->overflow[i] = json_is_true(json_object_get(rec->details, "overflow"));
    s->time[i] = rec->time;
}

static void test_first_at_once_then_one_summary(void **state)
{
    (void)state;
    seen s = {0};
    audit_refusals_config cfg = {.window_ms = 60000, .max_keys = 16};
    audit_refusals *r = audit_refusals_new(&cfg, emit, &s);
    assert_non_null(r);
    int64_t t0 = 1700000000000;
    audit_refusals_note(r, t0, "publish", "192.0.2.7", "device:abc", "policy", "moat/x/up/t");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.actor[0], "device:abc");
    assert_string_equal(s.action[0], "refused.publish");
    assert_string_equal(s.subject[0], "moat/x/up/t");
    assert_int_equal(s.count[0], 1);
    assert_int_equal(s.time[0], t0 / 1000);
    for (int i = 1; i <= 100; i++)
        audit_refusals_note(r, t0 + i * 100, "publish", "192.0.2.7", "device:abc", "policy",
                            "moat/x/up/other");
    assert_int_equal(s.n, 1); /* nothing more until the window closes */
    assert_int_equal(audit_refusals_tick(r, t0 + 59999), t0 + 60000);
    assert_int_equal(s.n, 1);
    assert_int_equal(audit_refusals_tick(r, t0 + 60000), INT64_MAX);
    assert_int_equal(s.n, 2);
    assert_true(s.summary[1]);
    assert_int_equal(s.count[1], 100);
    /* A new window starts with a new first entry. */
    audit_refusals_note(r, t0 + 70000, "publish", "192.0.2.7", "device:abc", "policy", NULL);
    assert_int_equal(s.n, 3);
    assert_false(s.summary[2]);
    audit_refusals_free(r);
}

static void test_groups_are_kept_apart(void **state)
{
    (void)state;
    seen s = {0};
    audit_refusals *r = audit_refusals_new(NULL, emit, &s);
    int64_t t0 = 1000;
    audit_refusals_note(r, t0, "handshake", "192.0.2.1", NULL, "unknown certificate", NULL);
    audit_refusals_note(r, t0, "handshake", "192.0.2.2", NULL, "unknown certificate", NULL);
    audit_refusals_note(r, t0, "handshake", "192.0.2.1", NULL, "expired", NULL);
    audit_refusals_note(r, t0, "connect", "192.0.2.1", NULL, "unknown certificate", NULL);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.actor[0], "address:192.0.2.1");
    assert_string_equal(s.action[3], "refused.connect");
    /* No repeats: closing the windows adds nothing. */
    audit_refusals_flush(r, t0 + 1);
    assert_int_equal(s.n, 4);
    audit_refusals_stats st;
    audit_refusals_get_stats(r, &st);
    assert_int_equal(st.groups, 0);
    audit_refusals_free(r);
}

static void test_spraying_sources_is_bounded(void **state)
{
    (void)state;
    seen s = {0};
    const size_t max = 8;
    audit_refusals_config cfg = {.window_ms = 60000, .max_keys = max};
    audit_refusals *r = audit_refusals_new(&cfg, emit, &s);
    int64_t t0 = 5000000;
    const int n = 10000;
    char addr[64];
    for (int i = 0; i < n; i++) {
        snprintf(addr, sizeof addr, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        audit_refusals_note(r, t0 + i, "handshake", addr, NULL, "unknown certificate", NULL);
        /* Each attacker address repeats itself too. */
        audit_refusals_note(r, t0 + i, "handshake", addr, NULL, "unknown certificate", NULL);
    }
    audit_refusals_stats st;
    audit_refusals_get_stats(r, &st);
    assert_true(st.groups <= max);
    assert_int_equal(s.n, max); /* the first of each kept group, no more */
    audit_refusals_tick(r, t0 + n + 60000);
    /* Per window: max firsts + max summaries + one overflow entry. */
    assert_true(s.n <= 2 * max + 1);
    size_t last = (s.n - 1) % 8;
    assert_true(s.overflow[last]);
    assert_int_equal(s.count[last], 2 * (n - (int)max));
    assert_string_equal(s.actor[last], "hub");
    audit_refusals_get_stats(r, &st);
    assert_int_equal(st.noted, 2 * (uint64_t)n);
    assert_int_equal(st.overflowed, 2 * (uint64_t)(n - (int)max));
    assert_int_equal(st.groups, 0);
    audit_refusals_free(r);
}

static void test_long_fields_are_cut(void **state)
{
    (void)state;
    seen s = {0};
    audit_refusals *r = audit_refusals_new(NULL, emit, &s);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    audit_refusals_note(r, 1, big, big, big, big, big);
    assert_int_equal(s.n, 1);
    assert_true(strlen(s.actor[0]) < 128);
    assert_true(strlen(s.subject[0]) <= 160);
    audit_refusals_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_at_once_then_one_summary),
        cmocka_unit_test(test_groups_are_kept_apart),
        cmocka_unit_test(test_spraying_sources_is_bounded),
        cmocka_unit_test(test_long_fields_are_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
