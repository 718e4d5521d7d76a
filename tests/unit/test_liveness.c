/*
 * Unit tests for the liveness tracker (src/monitor/liveness.c) with a fake
 * clock: a silent device is raised exactly at interval + grace and cleared
 * when it returns; a clean disconnect keeps the ordinary deadline while a
 * lost connection brings it forward to the lost-connection grace; the cause
 * is reported; forgetting and registry sync clear what is no longer
 * watched; and with thousands of devices every deadline fires once, in
 * order, at its time (the heap, not a scan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "liveness.h"

#define MAXEV 64

/* The decimal index a test used as a device id. */
static int index_of(const char *s)
{
    int v = 0;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (*s - '0');
    return v;
}

typedef struct events {
    size_t n;
    char id[MAXEV][LIVENESS_ID_MAX + 1];
    bool offline[MAXEV], forgotten[MAXEV];
    liveness_cause cause[MAXEV];
    int64_t now[MAXEV], last_seen[MAXEV];
} events;

static void on_event(void *ctx, const liveness_event *ev)
{
    events *e = ctx;
    if (e->n >= MAXEV)
        fail_msg("too many events");
    size_t i = e->n++;
    snprintf(e->id[i], sizeof e->id[i], "%s", ev->id);
    e->offline[i] = ev->offline;
    e->forgotten[i] = ev->forgotten;
    e->cause[i] = ev->cause;
    e->now[i] = ev->now;
    e->last_seen[i] = ev->last_seen;
}

static liveness *make(events *e, int64_t grace, int64_t lost)
{
    memset(e, 0, sizeof *e);
    liveness_config cfg = {.grace_ms = grace, .lost_grace_ms = lost};
    liveness *l = liveness_new(&cfg, on_event, e);
    assert_non_null(l);
    return l;
}

static void test_silent_device_raised_at_deadline_and_cleared(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 10000, 0);
    assert_true(liveness_watch(l, "dev1", 60, 0));
    assert_int_equal(liveness_advance(l, 69999), 70000);
    assert_int_equal(e.n, 0);
    assert_int_equal(liveness_advance(l, 70000), INT64_MAX);
    assert_int_equal(e.n, 1);
    assert_true(e.offline[0]);
    assert_int_equal(e.cause[0], LIVENESS_NEVER_SEEN);
    assert_int_equal(e.last_seen[0], 0);
    /* Raised once only. */
    liveness_advance(l, 1000000);
    assert_int_equal(e.n, 1);
    assert_int_equal(liveness_offline_count(l), 1);
    /* It comes back: cleared, and watched again. */
    assert_true(liveness_seen(l, "dev1", 1000000));
    assert_int_equal(e.n, 2);
    assert_false(e.offline[1]);
    assert_false(e.forgotten[1]);
    assert_int_equal(liveness_offline_count(l), 0);
    assert_int_equal(liveness_next(l), 1070000);
    /* Signs of life keep pushing the deadline. */
    for (int64_t t = 1000000; t < 2000000; t += 50000)
        liveness_seen(l, "dev1", t);
    liveness_advance(l, 1950000 + 69999);
    assert_int_equal(e.n, 2);
    liveness_advance(l, 1950000 + 70000);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.cause[2], LIVENESS_SILENT);
    assert_int_equal(e.last_seen[2], 1950000);
    liveness_free(l);
}

static void test_clean_disconnect_keeps_the_deadline(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 10000, 5000);
    liveness_watch(l, "d", 60, 0);
    liveness_seen(l, "d", 1000);
    liveness_gone(l, "d", true, 2000);
    liveness_advance(l, 2000 + 5000 + 1000); /* past the lost-connection grace */
    assert_int_equal(e.n, 0);
    liveness_advance(l, 1000 + 70000);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.cause[0], LIVENESS_CLEAN_DISCONNECT);
    liveness_free(l);
}

static void test_lost_connection_is_raised_sooner(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 10000, 5000);
    liveness_watch(l, "d", 3600, 0);
    liveness_seen(l, "d", 1000);
    liveness_gone(l, "d", false, 2000);
    assert_int_equal(liveness_advance(l, 6999), 7000);
    assert_int_equal(e.n, 0);
    liveness_advance(l, 7000);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.cause[0], LIVENESS_CONNECTION_LOST);
    assert_int_equal(e.last_seen[0], 1000);
    liveness_free(l);
}

static void test_reconnect_within_lost_grace(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 10000, 5000);
    liveness_watch(l, "d", 3600, 0);
    liveness_seen(l, "d", 1000);
    liveness_gone(l, "d", false, 2000);
    liveness_seen(l, "d", 4000); /* back before the grace ended */
    liveness_advance(l, 100000);
    assert_int_equal(e.n, 0);
    liveness_free(l);
}

static void test_lost_without_shortcut(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 0, 0);
    liveness_watch(l, "d", 10, 0);
    liveness_seen(l, "d", 1000);
    liveness_gone(l, "d", false, 2000);
    liveness_advance(l, 10999);
    assert_int_equal(e.n, 0);
    liveness_advance(l, 11000);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.cause[0], LIVENESS_CONNECTION_LOST);
    liveness_free(l);
}

static void test_unwatched_and_forgotten(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 0, 0);
    assert_false(liveness_seen(l, "stranger", 5));
    liveness_gone(l, "stranger", false, 5);
    assert_int_equal(liveness_advance(l, 1000000), INT64_MAX);
    assert_int_equal(e.n, 0);
    liveness_watch(l, "d", 1, 0);
    liveness_advance(l, 1000);
    assert_int_equal(e.n, 1);
    liveness_forget(l, "d", 2000);
    assert_int_equal(e.n, 2);
    assert_false(e.offline[1]);
    assert_true(e.forgotten[1]);
    assert_int_equal(liveness_count(l), 0);
    /* Interval 0 means not watched. */
    liveness_watch(l, "q", 0, 0);
    assert_int_equal(liveness_count(l), 0);
    liveness_free(l);
}

static void test_sync_forgets_what_was_not_watched(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 0, 0);
    liveness_watch(l, "a", 10, 0);
    liveness_watch(l, "b", 10, 0);
    liveness_watch(l, "c", 10, 0);
    liveness_advance(l, 10000); /* all three offline */
    assert_int_equal(e.n, 3);
    liveness_sync_begin(l);
    liveness_watch(l, "a", 10, 10000);
    liveness_watch(l, "d", 10, 10000);
    liveness_sync_end(l, 10000);
    assert_int_equal(liveness_count(l), 2);
    /* b and c were cleared as forgotten; a stays offline. */
    assert_int_equal(e.n, 5);
    assert_true(e.forgotten[3] && e.forgotten[4]);
    bool watched;
    assert_true(liveness_is_offline(l, "a", &watched));
    assert_false(liveness_is_offline(l, "d", &watched));
    assert_true(watched);
    liveness_free(l);
}

static void test_watch_offline_after_restart(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 0, 0);
    assert_true(liveness_watch(l, "d", 10, 0));
    assert_true(liveness_watch_offline(l, "d", 0, 0));
    liveness_advance(l, 100000);
    assert_int_equal(e.n, 0); /* not raised a second time */
    liveness_seen(l, "d", 100000);
    assert_int_equal(e.n, 1);
    assert_false(e.offline[0]); /* but its return is cleared */
    assert_false(liveness_watch_offline(l, "unknown", 0, 0));
    liveness_free(l);
}

static void test_interval_change_retimes(void **state)
{
    (void)state;
    events e;
    liveness *l = make(&e, 0, 0);
    liveness_watch(l, "d", 3600, 0);
    liveness_seen(l, "d", 1000);
    liveness_watch(l, "d", 60, 2000);
    assert_int_equal(liveness_next(l), 61000);
    liveness_free(l);
}

enum { MANY = 5000 };

typedef struct counter {
    size_t n;
    int64_t last_now;
    bool ordered, late;
    uint8_t fired[MANY];
    int64_t deadline[MANY];
} counter;

static void on_count(void *ctx, const liveness_event *ev)
{
    counter *c = ctx;
    int i = index_of(ev->id);
    c->fired[i]++;
    c->n++;
    if (ev->now < c->last_now)
        c->ordered = false;
    c->last_now = ev->now;
    /* Raised within the advance step after its deadline, never before. */
    if (ev->now < c->deadline[i] || ev->now >= c->deadline[i] + 1000)
        c->late = true;
}

static void test_many_devices_fire_once_in_order(void **state)
{
    (void)state;
    counter *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->ordered = true;
    liveness_config cfg = {.grace_ms = 500};
    liveness *l = liveness_new(&cfg, on_count, c);
    char id[16];
    srand(7);
    for (int i = 0; i < MANY; i++) {
        uint32_t interval = 1 + (uint32_t)(rand() % 600);
        snprintf(id, sizeof id, "%d", i);
        assert_true(liveness_watch(l, id, interval, 0));
        c->deadline[i] = (int64_t)interval * 1000 + 500;
    }
    /* Half of them report once, at a random time before their deadline. */
    for (int i = 0; i < MANY; i += 2) {
        int64_t t = rand() % c->deadline[i];
        snprintf(id, sizeof id, "%d", i);
        liveness_seen(l, id, t);
        c->deadline[i] += t; /* interval + grace from the sign of life */
    }
    int64_t prev_next = 0;
    for (int64_t now = 0; now <= 2000000; now += 1000) {
        int64_t next = liveness_advance(l, now);
        if (next != INT64_MAX) {
            assert_true(next > now);
            assert_true(next >= prev_next);
            prev_next = next;
        }
    }
    assert_int_equal(c->n, MANY);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(c->fired[i], 1);
    assert_true(c->ordered);
    assert_false(c->late);
    assert_int_equal(liveness_offline_count(l), MANY);
    liveness_free(l);
    free(c);
}

static void test_max_devices(void **state)
{
    (void)state;
    liveness_config cfg = {.max_devices = 3};
    liveness *l = liveness_new(&cfg, NULL, NULL);
    assert_true(liveness_watch(l, "a", 1, 0));
    assert_true(liveness_watch(l, "b", 1, 0));
    assert_true(liveness_watch(l, "c", 1, 0));
    assert_false(liveness_watch(l, "d", 1, 0));
    char long_id[LIVENESS_ID_MAX + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_false(liveness_watch(l, long_id, 1, 0));
    assert_int_equal(liveness_count(l), 3);
    liveness_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_silent_device_raised_at_deadline_and_cleared),
        cmocka_unit_test(test_clean_disconnect_keeps_the_deadline),
        cmocka_unit_test(test_lost_connection_is_raised_sooner),
        cmocka_unit_test(test_reconnect_within_lost_grace),
        cmocka_unit_test(test_lost_without_shortcut),
        cmocka_unit_test(test_unwatched_and_forgotten),
        cmocka_unit_test(test_sync_forgets_what_was_not_watched),
        cmocka_unit_test(test_watch_offline_after_restart),
        cmocka_unit_test(test_interval_change_retimes),
        cmocka_unit_test(test_many_devices_fire_once_in_order),
        cmocka_unit_test(test_max_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
