/*
 * Unit tests for the webhook sender (src/monitor/webhook.c) against a real
 * HTTP receiver (webhook_receiver.c) that verifies every signature with its
 * own key and OpenSSL's HMAC: an alert arrives signed and intact; a
 * receiver holding another key rejects everything (so these tests fail if
 * the signature does not depend on the key); a receiver that is down and
 * comes back gets the delivery after retries, with the same delivery id; a
 * receiver that answers 500 gets it again; a long outage only ever keeps
 * queue_max deliveries (the oldest dropped and counted); posting never
 * waits for the network; the heartbeat arrives signed, periodically, and a
 * last "stopping" one on shutdown. Plus a known-answer vector for the
 * signature computed with Python's hmac module.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "webhook.h"
#include "webhook_receiver.h"

static const uint8_t KEY[] = "moat-test-key-0123456789";
#define KEY_LEN (sizeof KEY - 1)
static const uint8_t OTHER_KEY[] = "some-other-key-987654321";

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_alert(alert *a, const char *subject)
{
    alert_init(a, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 1700000000123, subject);
    json_t *d = json_pack("{s:s}", "cause", "silent");
    alert_set_details(a, d);
    json_decref(d);
}

static webhook *start(uint16_t port, const uint8_t *key, size_t key_len, webhook_config *extra)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/hook", port);
    static char urls_buf[1][64];
    memcpy(urls_buf[0], url, sizeof url);
    static const char *urls[1];
    urls[0] = urls_buf[0];
    webhook_config cfg = extra ? *extra : (webhook_config){0};
    cfg.urls = urls;
    cfg.nurls = 1;
    cfg.key = key;
    cfg.key_len = key_len;
    cfg.hub_name = "test-hub";
    if (!cfg.retry_base_ms)
        cfg.retry_base_ms = 50;
    if (!cfg.retry_max_ms)
        cfg.retry_max_ms = 200;
    if (!cfg.timeout_ms)
        cfg.timeout_ms = 2000;
    webhook *w = NULL;
    char err[256];
    assert_int_equal(webhook_new(&cfg, &w, err, sizeof err), MONITOR_OK);
    return w;
}

static void test_known_answer(void **state)
{
    (void)state;
    /* python3 -c 'import hmac,hashlib; print(hmac.new(b"moat-test-key-0123456789",
     *   b"1700000000.{\"kind\":\"device_offline\"}", hashlib.sha256).hexdigest())' */
    const char body[] = "{\"kind\":\"device_offline\"}";
    char sig[65];
    webhook_sign(KEY, KEY_LEN, 1700000000, body, sizeof body - 1, sig);
    assert_string_equal(sig, "fca4017bff0dbb1bb55cab34dc129eed5986153c438ed7786c85bf46e6e886ef");
    /* The timestamp and every byte of the body are covered. */
    char other[65];
    webhook_sign(KEY, KEY_LEN, 1700000001, body, sizeof body - 1, other);
    assert_string_not_equal(sig, other);
    webhook_sign(KEY, KEY_LEN, 1700000000, "{\"kind\":\"device_offlinf\"}", sizeof body - 1, other);
    assert_string_not_equal(sig, other);
    /* And the receiver's check agrees, and refuses a stale timestamp. */
    char header[80];
    snprintf(header, sizeof header, "sha256=%s", sig);
    assert_true(
        receiver_check(KEY, KEY_LEN, "1700000000", header, body, sizeof body - 1, 1700000100));
    assert_false(receiver_check(KEY, KEY_LEN, "1700000000", header, body, sizeof body - 1,
                                1700000000 + 301));
    assert_false(receiver_check(OTHER_KEY, KEY_LEN, "1700000000", header, body, sizeof body - 1,
                                1700000100));
}

static void test_alert_delivered_signed(void **state)
{
    (void)state;
    receiver r;
    assert_int_equal(receiver_start(&r, 0, KEY, KEY_LEN), 0);
    webhook *w = start(r.port, KEY, KEY_LEN, NULL);
    alert a;
    make_alert(&a, "device:aaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_true(webhook_post_alert(w, &a));
    assert_true(receiver_wait(&r, 1, 5000));
    json_t *body = json_loads(r.bodies[0], 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "type")), "alert");
    assert_string_equal(json_string_value(json_object_get(body, "kind")), "device_offline");
    assert_string_equal(json_string_value(json_object_get(body, "state")), "raise");
    assert_string_equal(json_string_value(json_object_get(body, "subject")),
                        "device:aaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_string_equal(json_string_value(json_object_get(body, "hub")), "test-hub");
    assert_string_equal(json_string_value(json_object_get(body, "time")),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(body, "details"), "cause")), "silent");
    /* The delivery id in the header is the one in the body. */
    assert_string_equal(json_string_value(json_object_get(body, "id")), r.ids[0]);
    assert_string_equal(r.events[0], "alert");
    json_decref(body);
    webhook_free(w, 1000);
    assert_int_equal(r.rejected, 0);
    receiver_stop(&r);
}

static void test_wrong_key_is_rejected(void **state)
{
    (void)state;
    receiver r;
    assert_int_equal(receiver_start(&r, 0, OTHER_KEY, KEY_LEN), 0);
    webhook_config extra = {.max_attempts = 2};
    webhook *w = start(r.port, KEY, KEY_LEN, &extra);
    alert a;
    make_alert(&a, "device:x");
    assert_true(webhook_post_alert(w, &a));
    /* Both attempts reach the receiver and fail its verification. */
    for (int i = 0; i < 300; i++) {
        webhook_stats s;
        webhook_get_stats(w, &s);
        if (s.failed == 1)
            break;
        receiver_sleep_ms(10);
    }
    webhook_stats s;
    webhook_get_stats(w, &s);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.delivered, 0);
    assert_int_equal(r.verified, 0);
    assert_int_equal(r.rejected, 2);
    webhook_free(w, 0);
    receiver_stop(&r);
}

static void test_receiver_down_then_up(void **state)
{
    (void)state;
    uint16_t port = receiver_free_port();
    assert_true(port != 0);
    webhook *w = start(port, KEY, KEY_LEN, NULL);
    alert a;
    make_alert(&a, "device:down-then-up");
    assert_true(webhook_post_alert(w, &a));
    /* Nobody listens: it keeps trying, with back-off. */
    webhook_stats s;
    for (int i = 0; i < 300; i++) {
        webhook_get_stats(w, &s);
        if (s.attempts >= 3)
            break;
        receiver_sleep_ms(10);
    }
    assert_true(s.attempts >= 3);
    assert_int_equal(s.delivered, 0);
    receiver r;
    assert_int_equal(receiver_start(&r, port, KEY, KEY_LEN), 0);
    assert_true(receiver_wait(&r, 1, 5000));
    webhook_get_stats(w, &s);
    assert_int_equal(s.delivered, 1);
    assert_int_equal(s.failed, 0);
    assert_non_null(strstr(r.bodies[0], "down-then-up"));
    webhook_free(w, 1000);
    receiver_stop(&r);
}

static void test_server_errors_are_retried_with_same_id(void **state)
{
    (void)state;
    receiver r;
    assert_int_equal(receiver_start(&r, 0, KEY, KEY_LEN), 0);
    r.fail_next = 2;
    webhook *w = start(r.port, KEY, KEY_LEN, NULL);
    alert a;
    make_alert(&a, "device:flaky");
    assert_true(webhook_post_alert(w, &a));
    assert_true(receiver_wait(&r, 1, 5000));
    assert_int_equal(r.requests, 3);
    /* One delivery, tried three times: one id, for the receiver's dedup. */
    assert_string_equal(r.request_ids[0], r.ids[0]);
    assert_string_equal(r.request_ids[1], r.ids[0]);
    assert_string_equal(r.request_ids[2], r.ids[0]);
    webhook_stats s;
    webhook_get_stats(w, &s);
    assert_int_equal(s.attempts, 3);
    assert_int_equal(s.delivered, 1);
    webhook_free(w, 1000);
    receiver_stop(&r);
}

static void test_long_outage_is_bounded(void **state)
{
    (void)state;
    uint16_t port = receiver_free_port();
    webhook_config extra = {.queue_max = 5, .retry_base_ms = 20, .retry_max_ms = 50};
    webhook *w = start(port, KEY, KEY_LEN, &extra);
    alert a;
    char subject[32];
    for (int i = 0; i < 20; i++) {
        snprintf(subject, sizeof subject, "device:n%02d", i);
        make_alert(&a, subject);
        assert_true(webhook_post_alert(w, &a));
    }
    webhook_stats s;
    webhook_get_stats(w, &s);
    assert_true(s.queued <= 5);
    assert_true(s.dropped >= 14); /* one may be in flight, out of the queue */
    receiver r;
    assert_int_equal(receiver_start(&r, port, KEY, KEY_LEN), 0);
    /* The newest news gets through. */
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&r.lock);
        bool got = false;
        for (size_t k = 0; k < r.verified && k < RECEIVER_KEEP; k++)
            got |= strstr(r.bodies[k], "device:n19") != NULL;
        pthread_mutex_unlock(&r.lock);
        if (got)
            break;
        receiver_sleep_ms(10);
    }
    bool got = false;
    for (size_t k = 0; k < r.verified && k < RECEIVER_KEEP; k++)
        got |= strstr(r.bodies[k], "device:n19") != NULL;
    assert_true(got);
    assert_true(r.verified <= 6);
    webhook_free(w, 1000);
    receiver_stop(&r);
}

static void test_post_never_waits(void **state)
{
    (void)state;
    receiver r;
    assert_int_equal(receiver_start(&r, 0, KEY, KEY_LEN), 0);
    r.delay_ms = 1500; /* a receiver that takes its time */
    webhook *w = start(r.port, KEY, KEY_LEN, NULL);
    alert a;
    make_alert(&a, "device:slow");
    int64_t t0 = now_ms();
    for (int i = 0; i < 200; i++)
        assert_true(webhook_post_alert(w, &a));
    int64_t spent = now_ms() - t0;
    assert_true(spent < 500);
    /* And shutting down does not wait for the whole queue either. */
    t0 = now_ms();
    webhook_free(w, 200);
    assert_true(now_ms() - t0 < 4000);
    receiver_stop(&r);
}

static int heartbeats(receiver *r, const char *status)
{
    int n = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t k = 0; k < r->verified && k < RECEIVER_KEEP; k++) {
        if (strcmp(r->events[k], "heartbeat") != 0)
            continue;
        json_t *b = json_loads(r->bodies[k], 0, NULL);
        if (b && strcmp(json_string_value(json_object_get(b, "status")), status) == 0)
            n++;
        json_decref(b);
    }
    pthread_mutex_unlock(&r->lock);
    return n;
}

static void fill(void *ctx, json_t *body)
{
    (void)ctx;
    json_object_set_new(body, "extra", json_string("filled"));
}

static void test_heartbeat(void **state)
{
    (void)state;
    receiver r;
    assert_int_equal(receiver_start(&r, 0, KEY, KEY_LEN), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/alive", r.port);
    webhook_config cfg = {.heartbeat_url = url,
                          .heartbeat_interval_s = 1,
                          .key = KEY,
                          .key_len = KEY_LEN,
                          .hub_name = "hb-hub",
                          .heartbeat_fill = fill};
    webhook *w = NULL;
    char err[256];
    assert_int_equal(webhook_new(&cfg, &w, err, sizeof err), MONITOR_OK);
    assert_true(receiver_wait(&r, 2, 4000));
    assert_true(heartbeats(&r, "alive") >= 2);
    json_t *b0 = json_loads(r.bodies[0], 0, NULL), *b1 = json_loads(r.bodies[1], 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(b0, "seq")), 1);
    assert_int_equal(json_integer_value(json_object_get(b1, "seq")), 2);
    assert_string_equal(json_string_value(json_object_get(b0, "hub")), "hb-hub");
    assert_string_equal(json_string_value(json_object_get(b0, "extra")), "filled");
    json_decref(b0);
    json_decref(b1);
    webhook_free(w, 1000);
    assert_int_equal(heartbeats(&r, "stopping"), 1);
    assert_int_equal(r.rejected, 0);
    receiver_stop(&r);
}

static void test_config_checked(void **state)
{
    (void)state;
    webhook *w = NULL;
    char err[256];
    const char *bad[] = {"ftp://127.0.0.1/x"};
    webhook_config cfg = {.urls = bad, .nurls = 1, .key = KEY, .key_len = KEY_LEN};
    assert_int_equal(webhook_new(&cfg, &w, err, sizeof err), MONITOR_INVALID);
    const char *good[] = {"https://example.invalid/x"};
    webhook_config short_key = {.urls = good, .nurls = 1, .key = KEY, .key_len = 8};
    assert_int_equal(webhook_new(&short_key, &w, err, sizeof err), MONITOR_INVALID);
    const char *space[] = {"http://127.0.0.1/a b"};
    webhook_config sp = {.urls = space, .nurls = 1, .key = KEY, .key_len = KEY_LEN};
    assert_int_equal(webhook_new(&sp, &w, err, sizeof err), MONITOR_INVALID);
    assert_null(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_alert_delivered_signed),
        cmocka_unit_test(test_wrong_key_is_rejected),
        cmocka_unit_test(test_receiver_down_then_up),
        cmocka_unit_test(test_server_errors_are_retried_with_same_id),
        cmocka_unit_test(test_long_outage_is_bounded),
        cmocka_unit_test(test_post_never_waits),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_config_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
