/*
 * Integration test of the monitor (src/monitor/monitor.c) as moatd will use
 * it, in real time, with a real data directory (registry.db with a device
 * whose group sets report_interval 1, the audit log, audit.key) and a real
 * webhook receiver that checks signatures:
 *   - a device that connects and falls silent is reported offline in
 *     alerts.db and to the receiver; its return clears both;
 *   - after a restart of the monitor, the device that is still offline is
 *     not raised again, and its return is cleared;
 *   - refused publishes land in the audit log (first at once, then one
 *     summary with the count), the chain still verifies, and a burst of
 *     them is an alert;
 *   - a store failure is raised once and cleared once;
 *   - the heartbeat carries the audit head.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert_store.h"
#include "audit.h"
#include "monitor.h"
#include "registry.h"
#include "webhook_receiver.h"

static const uint8_t KEY[] = "monitor-test-webhook-key";
#define KEY_LEN (sizeof KEY - 1)
static const uint8_t MASTER[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4,
                                   3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8};

typedef struct fixture {
    char dir[64];
    char device[REGISTRY_DEVICE_ID_LEN + 1];
    char url[64];
    const char *urls[1];
    receiver r;
    monitor *m;
} fixture;

static void make_data_dir(fixture *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-monitor-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[160], err[320];
    snprintf(path, sizeof path, "%s/audit.key", f->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, MASTER, 32), 32);
    close(fd);
    snprintf(path, sizeof path, "%s/registry.db", f->dir);
    registry *reg = NULL;
    assert_int_equal(registry_open(path, REGISTRY_OPEN_CREATE, &reg, err, sizeof err), REGISTRY_OK);
    audit_key *k = NULL;
    audit_log *log = NULL;
    assert_int_equal(audit_key_from_bytes(MASTER, &k), AUDIT_OK);
    assert_int_equal(audit_attach(registry_sqlite(reg), k, AUDIT_CREATE, &log), AUDIT_OK);
    audit_close(log);
    audit_key_free(k);
    assert_int_equal(registry_device_id_new(f->device), REGISTRY_OK);
    assert_int_equal(registry_principal_add(reg, REGISTRY_DEVICE, f->device), REGISTRY_OK);
    assert_int_equal(registry_group_setting_set(reg, "devices", "report_interval", "1"),
                     REGISTRY_OK);
    registry_close(reg);
}

static void start_monitor(fixture *f)
{
    monitor_config c;
    monitor_config_defaults(&c, f->dir);
    c.hub_name = "test";
    c.offline_grace_s = 0;
    c.lost_grace_s = 0;
    c.registry_poll_ms = 100;
    c.audit_flush_ms = 100;
    c.refusal_window_s = 1;
    c.refused_publish_burst = 5;
    c.webhook_enabled = true;
    c.webhook.urls = f->urls;
    c.webhook.nurls = 1;
    c.webhook.heartbeat_url = f->url;
    c.webhook.heartbeat_interval_s = 1;
    c.webhook.key = KEY;
    c.webhook.key_len = KEY_LEN;
    c.webhook.retry_base_ms = 50;
    char err[256];
    assert_int_equal(monitor_new(&c, &f->m, err, sizeof err), MONITOR_OK);
    /* The thread reads the registry: the device gets watched. */
    for (int i = 0; i < 300; i++) {
        monitor_stats s;
        monitor_get_stats(f->m, &s);
        if (s.devices_watched == 1)
            return;
        receiver_sleep_ms(10);
    }
    fail_msg("the device was never watched");
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    make_data_dir(f);
    assert_int_equal(receiver_start(&f->r, 0, KEY, KEY_LEN), 0);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u/hook", f->r.port);
    f->urls[0] = f->url;
    start_monitor(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    monitor_free(f->m);
    receiver_stop(&f->r);
    static const char *const names[] = {"audit.key",       "registry.db", "registry.db-wal",
                                        "registry.db-shm", "alerts.db",   "alerts.db-wal",
                                        "alerts.db-shm"};
    char p[160];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Wait for a verified alert body matching kind and state (and subject);
 * returns its index, or -1. */
static int wait_alert(fixture *f, const char *kind, const char *state, const char *subject,
                      size_t from, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        pthread_mutex_lock(&f->r.lock);
        int found = -1;
        for (size_t k = from; k < f->r.verified && k < RECEIVER_KEEP && found < 0; k++) {
            if (strcmp(f->r.events[k], "alert") != 0)
                continue;
            json_t *b = json_loads(f->r.bodies[k], 0, NULL);
            const char *bk = json_string_value(json_object_get(b, "kind"));
            const char *bs = json_string_value(json_object_get(b, "state"));
            const char *bj = json_string_value(json_object_get(b, "subject"));
            if (bk && bs && bj && strcmp(bk, kind) == 0 && strcmp(bs, state) == 0 &&
                (!subject || strcmp(bj, subject) == 0))
                found = (int)k;
            json_decref(b);
        }
        pthread_mutex_unlock(&f->r.lock);
        if (found >= 0)
            return found;
        receiver_sleep_ms(20);
    }
    return -1;
}

typedef struct rows {
    size_t n;
    char state[8][16];
} rows;

static int collect(void *ctx, const alert_row *r)
{
    rows *x = ctx;
    if (x->n < 8)
        snprintf(x->state[x->n++], 16, "%s", r->state);
    return 0;
}

static rows stored(fixture *f, alert_kind kind)
{
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/alerts.db", f->dir);
    alert_store *s = NULL;
    rows r = {0};
    assert_int_equal(alert_store_open(path, ALERT_STORE_READONLY, &s, err, sizeof err), MONITOR_OK);
    alert_filter flt = {.kind = kind};
    assert_int_equal(alert_store_list(s, &flt, collect, &r), MONITOR_OK);
    alert_store_close(s);
    return r;
}

static void test_offline_raised_and_cleared(void **state)
{
    fixture *f = *state;
    char subject[64];
    snprintf(subject, sizeof subject, "device:%s", f->device);
    monitor_device_connected(f->m, f->device);
    /* Silent for its interval (1 s, no grace): offline. */
    int k = wait_alert(f, "device_offline", "raise", subject, 0, 4000);
    assert_true(k >= 0);
    json_t *b = json_loads(f->r.bodies[k], 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "details"), "cause")),
                        "silent");
    json_decref(b);
    rows r = stored(f, ALERT_DEVICE_OFFLINE);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.state[0], "open");
    monitor_device_activity(f->m, f->device, 3);
    assert_true(wait_alert(f, "device_offline", "clear", subject, 0, 3000) >= 0);
    r = stored(f, ALERT_DEVICE_OFFLINE);
    assert_string_equal(r.state[0], "cleared");
}

static void test_lost_connection_cause(void **state)
{
    fixture *f = *state;
    char subject[64];
    snprintf(subject, sizeof subject, "device:%s", f->device);
    monitor_device_connected(f->m, f->device);
    monitor_device_disconnected(f->m, f->device, false);
    int k = wait_alert(f, "device_offline", "raise", subject, 0, 4000);
    assert_true(k >= 0);
    json_t *b = json_loads(f->r.bodies[k], 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "details"), "cause")),
                        "connection_lost");
    json_decref(b);
}

static void test_restart_keeps_offline_state(void **state)
{
    fixture *f = *state;
    char subject[64];
    snprintf(subject, sizeof subject, "device:%s", f->device);
    assert_true(wait_alert(f, "device_offline", "raise", subject, 0, 4000) >= 0);
    monitor_free(f->m);
    size_t before = f->r.verified;
    start_monitor(f);
    /* Two intervals later: no second raise for the same silence. */
    receiver_sleep_ms(2500);
    assert_int_equal(wait_alert(f, "device_offline", "raise", subject, before, 0), -1);
    monitor_device_connected(f->m, f->device);
    assert_true(wait_alert(f, "device_offline", "clear", subject, before, 3000) >= 0);
    rows r = stored(f, ALERT_DEVICE_OFFLINE);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.state[0], "cleared");
}

typedef struct audit_rows {
    size_t first, summaries;
    json_int_t summary_count;
} audit_rows;

static int count_refusals(void *ctx, const audit_entry *e)
{
    audit_rows *a = ctx;
    if (strcmp(e->action, "refused.publish") != 0)
        return 0;
    json_t *d = json_loads(e->details, 0, NULL);
    if (json_is_true(json_object_get(d, "summary"))) {
        a->summaries++;
        a->summary_count += json_integer_value(json_object_get(d, "count"));
    } else {
        a->first++;
    }
    json_decref(d);
    return 0;
}

static void test_refusals_audited_and_burst_alerted(void **state)
{
    fixture *f = *state;
    char principal[64];
    snprintf(principal, sizeof principal, "device:%s", f->device);
    for (int i = 0; i < 10; i++)
        monitor_refused(f->m, MONITOR_REFUSED_PUBLISH, "192.0.2.9", principal, "policy",
                        "moat/other/up/x");
    assert_true(wait_alert(f, "refused_publish_burst", "event", principal, 0, 3000) >= 0);
    /* The window (1 s) closes and the summary is written. */
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/registry.db", f->dir);
    audit_key *k = NULL;
    assert_int_equal(audit_key_from_bytes(MASTER, &k), AUDIT_OK);
    audit_rows a = {0};
    for (int i = 0; i < 300 && a.summaries == 0; i++) {
        receiver_sleep_ms(20);
        audit_log *log = NULL;
        assert_int_equal(audit_open(path, k, 0, &log, err, sizeof err), AUDIT_OK);
        memset(&a, 0, sizeof a);
        assert_int_equal(audit_list(log, 0, 0, count_refusals, &a), AUDIT_OK);
        audit_close(log);
    }
    assert_int_equal(a.first, 1);
    assert_int_equal(a.summaries, 1);
    assert_int_equal(a.summary_count, 9);
    audit_log *log = NULL;
    assert_int_equal(audit_open(path, k, 0, &log, err, sizeof err), AUDIT_OK);
    audit_verdict v;
    assert_int_equal(audit_verify(log, NULL, &v), AUDIT_OK);
    assert_int_equal(v.entries, 2);
    /* The heartbeat carries the head once it has moved. */
    bool seen = false;
    for (int i = 0; i < 300 && !seen; i++) {
        receiver_sleep_ms(20);
        pthread_mutex_lock(&f->r.lock);
        for (size_t j = 0; j < f->r.verified && j < RECEIVER_KEEP; j++) {
            if (strcmp(f->r.events[j], "heartbeat") != 0)
                continue;
            json_t *b = json_loads(f->r.bodies[j], 0, NULL);
            json_int_t seq =
                json_integer_value(json_object_get(json_object_get(b, "audit_head"), "seq"));
            seen |= seq == v.head.seq;
            json_decref(b);
        }
        pthread_mutex_unlock(&f->r.lock);
    }
    assert_true(seen);
    audit_close(log);
    audit_key_free(k);
}

static void test_store_failure_raised_once(void **state)
{
    fixture *f = *state;
    monitor_store_ok(f->m); /* nothing failed: nothing happens */
    for (int i = 0; i < 5; i++)
        monitor_store_failed(f->m, "disk full");
    assert_true(wait_alert(f, "store_failure", "raise", "hub", 0, 3000) >= 0);
    monitor_store_ok(f->m);
    monitor_store_ok(f->m);
    assert_true(wait_alert(f, "store_failure", "clear", "hub", 0, 3000) >= 0);
    rows r = stored(f, ALERT_STORE_FAILURE);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.state[0], "cleared");
    int raises = 0;
    pthread_mutex_lock(&f->r.lock);
    for (size_t j = 0; j < f->r.verified && j < RECEIVER_KEEP; j++)
        raises +=
            strstr(f->r.bodies[j], "\"store_failure\"") && strstr(f->r.bodies[j], "\"raise\"");
    pthread_mutex_unlock(&f->r.lock);
    assert_int_equal(raises, 1);
}

static void test_tap(void **state)
{
    (void)state;
    monitor_tap t = {0};
    assert_int_equal(monitor_tap_count(&t, 1000, 1000), 1);
    assert_int_equal(monitor_tap_count(&t, 1100, 1000), 0);
    assert_int_equal(monitor_tap_count(&t, 1900, 1000), 0);
    assert_int_equal(monitor_tap_count(&t, 2000, 1000), 3);
    assert_int_equal(monitor_tap_count(&t, 2001, 1000), 0);
    assert_int_equal(monitor_tap_flush(&t), 1);
    assert_int_equal(monitor_tap_flush(&t), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_offline_raised_and_cleared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_connection_cause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_offline_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_audited_and_burst_alerted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure_raised_once, setup, teardown),
        cmocka_unit_test(test_tap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
