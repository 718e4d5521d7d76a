/*
 * Unit tests for group settings (src/registry/settings.c): set, replace,
 * get, remove, list; keys and values that break the rules refused; a
 * registry with no settings table yet (every registry made before settings
 * existed) read as "no settings" by a read-only handle; settings going with
 * their group when it is deleted; the values of a principal's groups; and a
 * stored value with a control character reported as corrupt.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "registry.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    registry *reg;
} fixture;

#define OK(reg, expr)                                                                              \
    do {                                                                                           \
        registry_status st_ = (expr);                                                              \
        if (st_ != REGISTRY_OK)                                                                    \
            fail_msg("%s: %s (%s)", #expr, registry_status_name(st_), registry_errmsg(reg));       \
    } while (0)

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-settings-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/registry.db", f->dir);
    char err[320];
    assert_int_equal(registry_open(f->path, REGISTRY_OPEN_CREATE, &f->reg, err, sizeof err),
                     REGISTRY_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    registry_close(f->reg);
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char p[160];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

typedef struct collected {
    char text[1024];
    size_t n;
} collected;

static int collect(void *ctx, const char *group, const char *key, const char *value)
{
    collected *c = ctx;
    size_t used = strlen(c->text);
    snprintf(c->text + used, sizeof c->text - used, "%s.%s=%s;", group, key, value);
    c->n++;
    return 0;
}

static void test_set_get_replace_remove(void **state)
{
    fixture *f = *state;
    char v[REGISTRY_SETTING_VALUE_MAX + 1];
    OK(f->reg, registry_group_add(f->reg, "sensors", ""));
    /* Nothing set yet (the table does not even exist). */
    assert_int_equal(registry_group_setting_get(f->reg, "sensors", "retention_days", v),
                     REGISTRY_NOT_FOUND);
    OK(f->reg, registry_group_setting_set(f->reg, "sensors", "retention_days", "30"));
    OK(f->reg, registry_group_setting_get(f->reg, "sensors", "retention_days", v));
    assert_string_equal(v, "30");
    OK(f->reg, registry_group_setting_set(f->reg, "sensors", "retention_days", "7"));
    OK(f->reg, registry_group_setting_get(f->reg, "sensors", "retention_days", v));
    assert_string_equal(v, "7");
    OK(f->reg, registry_group_setting_set(f->reg, "sensors", "report_interval", "300"));

    collected c = {0};
    OK(f->reg, registry_group_setting_list(f->reg, "sensors", collect, &c));
    assert_string_equal(c.text, "sensors.report_interval=300;sensors.retention_days=7;");

    OK(f->reg, registry_group_setting_set(f->reg, "sensors", "retention_days", NULL));
    assert_int_equal(registry_group_setting_get(f->reg, "sensors", "retention_days", v),
                     REGISTRY_NOT_FOUND);
    assert_string_equal(v, "");
    assert_int_equal(registry_group_setting_set(f->reg, "sensors", "retention_days", NULL),
                     REGISTRY_NOT_FOUND);
}

static void test_refused(void **state)
{
    fixture *f = *state;
    char v[REGISTRY_SETTING_VALUE_MAX + 1];
    char longv[REGISTRY_SETTING_VALUE_MAX + 2];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    OK(f->reg, registry_group_add(f->reg, "g", ""));
    assert_int_equal(registry_group_setting_set(f->reg, "nope", "k", "1"), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "Key", "1"), REGISTRY_INVALID);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "1key", "1"), REGISTRY_INVALID);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "", "1"), REGISTRY_INVALID);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "k", ""), REGISTRY_INVALID);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "k", "a\nb"), REGISTRY_INVALID);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "k", "\x1b[2J"), REGISTRY_INVALID);
    assert_int_equal(registry_group_setting_set(f->reg, "g", "k", longv), REGISTRY_INVALID);
    longv[REGISTRY_SETTING_VALUE_MAX] = '\0';
    OK(f->reg, registry_group_setting_set(f->reg, "g", "k", longv));
    OK(f->reg, registry_group_setting_get(f->reg, "g", "k", v));
    assert_int_equal(strlen(v), REGISTRY_SETTING_VALUE_MAX);
    assert_int_equal(registry_group_setting_get(f->reg, "nope", "k", v), REGISTRY_NOT_FOUND);
}

static void test_readonly_without_table(void **state)
{
    fixture *f = *state;
    char err[320];
    registry *ro = NULL;
    assert_int_equal(registry_open(f->path, REGISTRY_OPEN_READONLY, &ro, err, sizeof err),
                     REGISTRY_OK);
    collected c = {0};
    OK(ro, registry_group_setting_list(ro, NULL, collect, &c));
    assert_int_equal(c.n, 0);
    char v[REGISTRY_SETTING_VALUE_MAX + 1];
    assert_int_equal(registry_group_setting_get(ro, "devices", "k", v), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_group_setting_set(ro, "devices", "k", "1"), REGISTRY_REFUSED);
    /* Another connection creates the table; the read-only handle sees it. */
    OK(f->reg, registry_group_setting_set(f->reg, "devices", "k", "1"));
    OK(ro, registry_group_setting_get(ro, "devices", "k", v));
    assert_string_equal(v, "1");
    registry_close(ro);
}

static void test_cascade_and_principal(void **state)
{
    fixture *f = *state;
    char id[REGISTRY_DEVICE_ID_LEN + 1], other[REGISTRY_DEVICE_ID_LEN + 1];
    OK(f->reg, registry_device_id_new(id));
    OK(f->reg, registry_device_id_new(other));
    OK(f->reg, registry_principal_add(f->reg, REGISTRY_DEVICE, id));
    OK(f->reg, registry_principal_add(f->reg, REGISTRY_DEVICE, other));
    OK(f->reg, registry_group_add(f->reg, "a", ""));
    OK(f->reg, registry_group_add(f->reg, "b", ""));
    OK(f->reg, registry_member_add(f->reg, "a", id));
    OK(f->reg, registry_member_add(f->reg, "b", id));
    OK(f->reg, registry_group_setting_set(f->reg, "a", "retention_days", "10"));
    OK(f->reg, registry_group_setting_set(f->reg, "b", "retention_days", "5"));
    OK(f->reg, registry_group_setting_set(f->reg, "b", "other", "x"));
    OK(f->reg, registry_group_setting_set(f->reg, "devices", "retention_days", "365"));

    collected c = {0};
    OK(f->reg, registry_principal_settings(f->reg, id, "retention_days", collect, &c));
    assert_string_equal(c.text, "a.retention_days=10;b.retention_days=5;"
                                "devices.retention_days=365;");
    memset(&c, 0, sizeof c);
    OK(f->reg, registry_principal_settings(f->reg, other, "retention_days", collect, &c));
    assert_string_equal(c.text, "devices.retention_days=365;");

    OK(f->reg, registry_group_delete(f->reg, "b"));
    memset(&c, 0, sizeof c);
    OK(f->reg, registry_group_setting_list(f->reg, NULL, collect, &c));
    assert_string_equal(c.text, "a.retention_days=10;devices.retention_days=365;");
}

static void test_corrupt_value(void **state)
{
    fixture *f = *state;
    OK(f->reg, registry_group_setting_set(f->reg, "devices", "k", "1"));
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE group_settings SET value = 'a' || char(10) || 'b'", 0, 0, 0),
        SQLITE_OK);
    sqlite3_close(db);
    char v[REGISTRY_SETTING_VALUE_MAX + 1];
    assert_int_equal(registry_group_setting_get(f->reg, "devices", "k", v), REGISTRY_CORRUPT);
    assert_string_equal(v, "");
    collected c = {0};
    assert_int_equal(registry_group_setting_list(f->reg, NULL, collect, &c), REGISTRY_CORRUPT);
    assert_int_equal(c.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get_replace_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_without_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cascade_and_principal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_value, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
