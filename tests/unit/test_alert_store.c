/*
 * Unit tests for the alert store (src/monitor/alert_store.c): a raise opens
 * one row and repeats only count; a clear closes it; events coalesce within
 * the window; listing filters and orders; pruning keeps open alerts; a
 * missing file read-only is NOT_FOUND; a row that breaks the schema's rules
 * is CORRUPT, not guessed at; the file is created 0600.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "alert_store.h"

typedef struct fixture {
    char dir[64], path[128];
    alert_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-alerts-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/alerts.db", f->dir);
    char err[256];
    assert_int_equal(alert_store_open(f->path, ALERT_STORE_CREATE, &f->s, err, sizeof err),
                     MONITOR_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    alert_store_close(f->s);
    char p[160];
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static bool record(fixture *f, alert_kind kind, alert_state state, int64_t t, const char *subject)
{
    alert a;
    alert_init(&a, kind, state, t, subject);
    bool changed = false;
    assert_int_equal(alert_store_record(f->s, &a, &changed), MONITOR_OK);
    return changed;
}

typedef struct rows {
    size_t n;
    char state[16][16];
    char subject[16][64];
    int64_t count[16];
} rows;

static int collect(void *ctx, const alert_row *r)
{
    rows *x = ctx;
    if (x->n < 16) {
        snprintf(x->state[x->n], 16, "%s", r->state);
        snprintf(x->subject[x->n], 64, "%s", r->subject);
        x->count[x->n] = r->count;
        x->n++;
    }
    return 0;
}

static void test_raise_repeat_clear(void **state)
{
    fixture *f = *state;
    assert_true(record(f, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 1000, "device:a"));
    assert_false(record(f, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 2000, "device:a"));
    assert_true(record(f, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 2000, "device:b"));
    rows r = {0};
    alert_filter open = {.open_only = true};
    assert_int_equal(alert_store_list(f->s, &open, collect, &r), MONITOR_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.count[0], 2);
    assert_true(record(f, ALERT_DEVICE_OFFLINE, ALERT_CLEAR, 3000, "device:a"));
    assert_false(record(f, ALERT_DEVICE_OFFLINE, ALERT_CLEAR, 3000, "device:a"));
    int64_t n = 0;
    assert_int_equal(alert_store_count_open(f->s, &n), MONITOR_OK);
    assert_int_equal(n, 1);
    /* Raised again later: a new row; the old one stays in history. */
    assert_true(record(f, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 4000, "device:a"));
    memset(&r, 0, sizeof r);
    assert_int_equal(alert_store_list(f->s, NULL, collect, &r), MONITOR_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.state[0], "cleared");
    assert_string_equal(r.subject[2], "device:a");
}

static void test_events_coalesce(void **state)
{
    fixture *f = *state;
    int64_t t = 1700000000000;
    assert_true(record(f, ALERT_HANDSHAKE_BURST, ALERT_EVENT, t, "address:192.0.2.1"));
    assert_false(record(f, ALERT_HANDSHAKE_BURST, ALERT_EVENT, t + 60000, "address:192.0.2.1"));
    assert_true(record(f, ALERT_HANDSHAKE_BURST, ALERT_EVENT, t + 60000, "address:192.0.2.2"));
    assert_true(record(f, ALERT_HANDSHAKE_BURST, ALERT_EVENT,
                       t + 60000 + ALERT_STORE_COALESCE_MS + 1, "address:192.0.2.1"));
    rows r = {0};
    alert_filter burst = {.kind = ALERT_HANDSHAKE_BURST};
    assert_int_equal(alert_store_list(f->s, &burst, collect, &r), MONITOR_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.count[0], 2);
    /* limit: the newest rows, oldest first */
    memset(&r, 0, sizeof r);
    alert_filter last = {.limit = 1};
    assert_int_equal(alert_store_list(f->s, &last, collect, &r), MONITOR_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.subject[0], "address:192.0.2.1");
}

static void test_prune_keeps_open(void **state)
{
    fixture *f = *state;
    record(f, ALERT_STORE_FAILURE, ALERT_RAISE, 1000, "hub");
    for (int i = 0; i < 10; i++) {
        char s[32];
        snprintf(s, sizeof s, "device:%d", i);
        record(f, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 2000 + i, s);
        record(f, ALERT_DEVICE_OFFLINE, ALERT_CLEAR, 3000 + i, s);
    }
    assert_int_equal(alert_store_prune(f->s, 3005, 0), MONITOR_OK);
    rows r = {0};
    assert_int_equal(alert_store_list(f->s, NULL, collect, &r), MONITOR_OK);
    assert_int_equal(r.n, 6); /* the open one and five recent */
    assert_int_equal(alert_store_prune(f->s, 0, 2), MONITOR_OK);
    memset(&r, 0, sizeof r);
    assert_int_equal(alert_store_list(f->s, NULL, collect, &r), MONITOR_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.state[0], "open");
}

static void test_files(void **state)
{
    fixture *f = *state;
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    alert_store *ro = NULL;
    char err[256], missing[160];
    snprintf(missing, sizeof missing, "%s/none.db", f->dir);
    assert_int_equal(alert_store_open(missing, ALERT_STORE_READONLY, &ro, err, sizeof err),
                     MONITOR_NOT_FOUND);
    assert_int_equal(alert_store_open(f->path, ALERT_STORE_READONLY, &ro, err, sizeof err),
                     MONITOR_OK);
    alert a;
    alert_init(&a, ALERT_CLOCK_JUMP, ALERT_EVENT, 1, "hub");
    assert_int_equal(alert_store_record(ro, &a, NULL), MONITOR_INVALID);
    alert_store_close(ro);
}

static void test_corrupt_row(void **state)
{
    fixture *f = *state;
    record(f, ALERT_DEVICE_OFFLINE, ALERT_RAISE, 1000, "device:a");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE alerts SET kind = 'no_such_kind'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    rows r = {0};
    assert_int_equal(alert_store_list(f->s, NULL, collect, &r), MONITOR_CORRUPT);
}

static void test_json_and_topic(void **state)
{
    (void)state;
    alert a;
    alert_init(&a, ALERT_CERT_EXPIRY, ALERT_RAISE, 0, "hub:server/crt+#");
    char topic[128];
    assert_true(alert_topic(&a, topic, sizeof topic));
    assert_string_equal(topic, "$moat/alerts/cert_expiry/hub:server_crt__");
    assert_false(alert_topic(&a, topic, 10));
    /* Details that do not fit are replaced, never cut into invalid JSON. */
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    json_t *d = json_pack("{s:s}", "k", big);
    assert_true(alert_set_details(&a, d));
    json_decref(d);
    assert_string_equal(a.details, "{\"truncated\":true}");
    json_t *arr = json_array();
    assert_false(alert_set_details(&a, arr));
    json_decref(arr);
    json_t *j = alert_to_json(&a, "h");
    assert_string_equal(json_string_value(json_object_get(j, "severity")), "warning");
    assert_true(json_is_true(json_object_get(json_object_get(j, "details"), "truncated")));
    json_decref(j);
    assert_int_equal(alert_kind_parse("rate_anomaly"), ALERT_RATE_ANOMALY);
    assert_int_equal(alert_kind_parse("nope"), 0);
    assert_int_equal(alert_severity_of(ALERT_STORE_FAILURE, ALERT_RAISE), ALERT_CRITICAL);
    assert_int_equal(alert_severity_of(ALERT_STORE_FAILURE, ALERT_CLEAR), ALERT_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_raise_repeat_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_coalesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_keeps_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_row, setup, teardown),
        cmocka_unit_test(test_json_and_topic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
