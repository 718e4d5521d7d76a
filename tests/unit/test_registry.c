/*
 * Unit tests for the registry (src/registry): the schema a new file gets
 * (version, WAL, the `devices` group with `device-default`), refusing files
 * it cannot trust (newer schema, not a database, no schema); device ids and
 * names; lookup by certificate fingerprint and how disable, enable, revoke
 * (permanent), certificate expiry and revoking one certificate of several
 * (renewal) show in it; data_version moving when another connection commits
 * (how the hub notices moatctl's changes);
 * policies_for as the union over groups; delete cascading to certificates
 * and memberships; the `devices` group rules; and stored data that breaks the
 * rules reported as corrupt (and never as an active identity).
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

static void remove_db(const fixture *f)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    char p[160];
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-registry-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/registry.db", f->dir);
    char err[320];
    registry_status st = registry_open(f->path, REGISTRY_OPEN_CREATE, &f->reg, err, sizeof err);
    if (st != REGISTRY_OK)
        fail_msg("open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    registry_close(f->reg);
    remove_db(f);
    char p[160];
    snprintf(p, sizeof p, "%s/other.db", f->dir);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t pragma_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* Run SQL on a separate raw connection (another process, or an attacker
 * with write access to the file). */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static void fp_of(uint8_t fp[32], int n)
{
    for (int i = 0; i < 32; i++)
        fp[i] = (uint8_t)(n * 31 + i);
}

/* Add a device with one certificate (fingerprint from n); id returned. */
static void add_device(registry *reg, int n, char id[REGISTRY_DEVICE_ID_LEN + 1])
{
    assert_int_equal(registry_device_id_new(id), REGISTRY_OK);
    OK(reg, registry_principal_add(reg, REGISTRY_DEVICE, id));
    registry_cert c = {.not_after = (int64_t)time(NULL) + 86400, .revoked = false};
    fp_of(c.fingerprint, n);
    memcpy(c.principal, id, REGISTRY_DEVICE_ID_LEN + 1);
    snprintf(c.serial, sizeof c.serial, "%x", 0x1000 + n);
    OK(reg, registry_cert_add(reg, &c));
}

typedef struct collect {
    char names[16][REGISTRY_NAME_MAX + 1];
    char docs[16][256];
    size_t n;
} collect;

static int collect_policy(void *ctx, const char *name, const char *doc, size_t len)
{
    collect *c = ctx;
    assert_true(c->n < 16);
    assert_int_equal(strlen(doc), len);
    snprintf(c->names[c->n], sizeof c->names[0], "%s", name);
    snprintf(c->docs[c->n], sizeof c->docs[0], "%s", doc);
    c->n++;
    return 0;
}

static int collect_name(void *ctx, const char *name)
{
    collect *c = ctx;
    assert_true(c->n < 16);
    snprintf(c->names[c->n++], sizeof c->names[0], "%s", name);
    return 0;
}

static void test_schema(void **state)
{
    fixture *f = *state;
    assert_int_equal(pragma_int(f->path, "PRAGMA user_version"), REGISTRY_SCHEMA_VERSION);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    static const char *const tables[] = {"principals",    "certificates", "groups",
                                         "group_members", "policies",     "group_policies"};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT count(*) FROM sqlite_schema"
                                            " WHERE type='table' AND name=?1",
                                            -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(s, 1, tables[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        if (sqlite3_column_int(s, 0) != 1)
            fail_msg("table %s missing", tables[i]);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);

    /* The devices group carries device-default. */
    char *doc = NULL;
    size_t len = 0;
    OK(f->reg, registry_policy_get(f->reg, REGISTRY_DEVICE_POLICY, &doc, &len));
    assert_string_equal(doc, REGISTRY_DEVICE_POLICY_TEXT);
    assert_int_equal(len, strlen(REGISTRY_DEVICE_POLICY_TEXT));
    free(doc);
    collect c = {.n = 0};
    OK(f->reg, registry_group_policies(f->reg, REGISTRY_DEVICES_GROUP, collect_name, &c));
    assert_int_equal(c.n, 1);
    assert_string_equal(c.names[0], REGISTRY_DEVICE_POLICY);

    /* Re-opening (with or without CREATE) keeps everything and seeds nothing twice. */
    registry *again = NULL;
    char err[320];
    assert_int_equal(registry_open(f->path, REGISTRY_OPEN_CREATE, &again, err, sizeof err),
                     REGISTRY_OK);
    registry_close(again);
    assert_int_equal(registry_open(f->path, REGISTRY_OPEN_READONLY, &again, err, sizeof err),
                     REGISTRY_OK);
    c.n = 0;
    OK(again, registry_policy_list(again, collect_name, &c));
    assert_int_equal(c.n, 1);
    /* A read-only handle refuses writes. */
    assert_int_equal(registry_group_add(again, "x", NULL), REGISTRY_REFUSED);
    registry_close(again);
}

static void test_open_refusals(void **state)
{
    fixture *f = *state;
    registry *r = NULL;
    char err[320], other[160];
    snprintf(other, sizeof other, "%s/other.db", f->dir);
    /* Missing file without CREATE. */
    assert_int_not_equal(registry_open(other, 0, &r, err, sizeof err), REGISTRY_OK);
    assert_null(r);
    /* Not a database. */
    FILE *fp = fopen(other, "w");
    assert_non_null(fp);
    fputs("this is not a database, it is a text file that is long enough to look at\n", fp);
    fclose(fp);
    assert_int_equal(registry_open(other, 0, &r, err, sizeof err), REGISTRY_CORRUPT);
    unlink(other);
    /* An empty database has no schema: not a registry unless asked to create. */
    raw_exec(other, "CREATE TABLE x(y)");
    assert_int_equal(registry_open(other, 0, &r, err, sizeof err), REGISTRY_CORRUPT);
    assert_non_null(strstr(err, "moatctl init"));
    unlink(other);
    /* A newer schema is refused, not misread. */
    registry_close(f->reg);
    f->reg = NULL;
    raw_exec(f->path, "PRAGMA user_version=99");
    assert_int_equal(registry_open(f->path, 0, &r, err, sizeof err), REGISTRY_VERSION);
    assert_null(r);
}

static void test_names(void **state)
{
    (void)state;
    char a[REGISTRY_DEVICE_ID_LEN + 1], b[REGISTRY_DEVICE_ID_LEN + 1];
    for (int i = 0; i < 200; i++) {
        assert_int_equal(registry_device_id_new(a), REGISTRY_OK);
        assert_int_equal(strlen(a), 26);
        for (size_t k = 0; k < 26; k++)
            assert_true((a[k] >= 'a' && a[k] <= 'z') || (a[k] >= '2' && a[k] <= '7'));
        assert_true(registry_device_id_valid(a));
        assert_false(registry_service_name_valid(a)); /* shaped like a device id */
        assert_true(registry_name_valid(a));
        assert_int_equal(registry_device_id_new(b), REGISTRY_OK);
        assert_string_not_equal(a, b);
    }
    assert_false(registry_device_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaab")); /* padding bits set */
    assert_true(registry_device_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaae"));
    assert_false(registry_device_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaa"));
    assert_false(registry_device_id_valid("AAAAAAAAAAAAAAAAAAAAAAAAAA"));
    assert_false(registry_device_id_valid("aaaaaaaaaaaaaaaaaaaaaaaa1a"));
    assert_true(registry_name_valid("a"));
    assert_true(registry_name_valid("0-sensors-2"));
    assert_false(registry_name_valid(""));
    assert_false(registry_name_valid("-a"));
    assert_false(registry_name_valid("A"));
    assert_false(registry_name_valid("a/b"));
    assert_false(registry_name_valid("a+"));
    assert_false(registry_name_valid("a b"));
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    assert_false(registry_name_valid(long_name));
    long_name[63] = '\0';
    assert_true(registry_name_valid(long_name));
    assert_true(registry_service_name_valid("ingest"));
}

static void test_lookup_and_status(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 1, id);
    uint8_t fp[32];
    fp_of(fp, 1);
    registry_identity who;
    int64_t now = (int64_t)time(NULL);
    OK(reg, registry_lookup_cert(reg, fp, &who));
    assert_string_equal(who.id, id);
    assert_int_equal(who.kind, REGISTRY_DEVICE);
    assert_int_equal(who.status, REGISTRY_ACTIVE);
    assert_false(who.cert_revoked);
    assert_true(registry_identity_active(&who, now));
    /* After expiry the identity is not active. */
    assert_false(registry_identity_active(&who, who.not_after));

    /* An unknown certificate (say, CA-signed but never recorded). */
    uint8_t unknown[32];
    fp_of(unknown, 99);
    assert_int_equal(registry_lookup_cert(reg, unknown, &who), REGISTRY_NOT_FOUND);
    assert_false(registry_identity_active(&who, now));

    /* Disabled, then enabled again. */
    OK(reg, registry_principal_set_status(reg, id, REGISTRY_DEVICE, REGISTRY_DISABLED));
    OK(reg, registry_lookup_cert(reg, fp, &who));
    assert_int_equal(who.status, REGISTRY_DISABLED);
    assert_false(registry_identity_active(&who, now));
    OK(reg, registry_principal_set_status(reg, id, REGISTRY_DEVICE, REGISTRY_ACTIVE));
    OK(reg, registry_lookup_cert(reg, fp, &who));
    assert_true(registry_identity_active(&who, now));

    /* The wrong kind does not find it. */
    assert_int_equal(registry_principal_set_status(reg, id, REGISTRY_SERVICE, REGISTRY_DISABLED),
                     REGISTRY_NOT_FOUND);

    /* Revoked: permanent, and every certificate is revoked with it. */
    OK(reg, registry_principal_set_status(reg, id, REGISTRY_DEVICE, REGISTRY_REVOKED));
    OK(reg, registry_lookup_cert(reg, fp, &who));
    assert_int_equal(who.status, REGISTRY_REVOKED);
    assert_true(who.cert_revoked);
    assert_false(registry_identity_active(&who, now));
    assert_int_equal(registry_principal_set_status(reg, id, REGISTRY_DEVICE, REGISTRY_ACTIVE),
                     REGISTRY_REFUSED);
    assert_int_equal(registry_principal_set_status(reg, id, REGISTRY_DEVICE, REGISTRY_DISABLED),
                     REGISTRY_REFUSED);
    registry_cert c = {.not_after = now + 100};
    fp_of(c.fingerprint, 2);
    memcpy(c.principal, id, sizeof id);
    memcpy(c.serial, "abc", 4);
    assert_int_equal(registry_cert_add(reg, &c), REGISTRY_REFUSED);
    /* Even if someone clears the status by hand, the certificate stays revoked. */
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE principals SET status='active' WHERE id='%s'", id);
    raw_exec(f->path, sql);
    OK(reg, registry_lookup_cert(reg, fp, &who));
    assert_false(registry_identity_active(&who, now));
}

static void test_duplicates(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 3, id);
    assert_int_equal(registry_principal_add(reg, REGISTRY_DEVICE, id), REGISTRY_EXISTS);
    /* The same certificate cannot be recorded for a second principal. */
    OK(reg, registry_principal_add(reg, REGISTRY_SERVICE, "ingest"));
    registry_cert c = {.not_after = 1};
    fp_of(c.fingerprint, 3);
    memcpy(c.principal, "ingest", 7);
    memcpy(c.serial, "1", 2);
    assert_int_equal(registry_cert_add(reg, &c), REGISTRY_EXISTS);
    memcpy(c.serial, "XYZ", 4);
    assert_int_equal(registry_cert_add(reg, &c), REGISTRY_INVALID);
    assert_int_equal(registry_principal_add(reg, REGISTRY_SERVICE, "Bad Name"), REGISTRY_INVALID);
    assert_int_equal(registry_principal_add(reg, REGISTRY_DEVICE, "not-an-id"), REGISTRY_INVALID);
}

/* Renewal: a principal holds several certificates, and one of them can be
 * revoked alone; another principal's certificate cannot be revoked through
 * it. */
static void test_cert_revoke_one(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1], other[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 10, id);
    add_device(reg, 12, other);
    int64_t now = (int64_t)time(NULL);
    registry_cert c = {.not_after = now + 7200};
    fp_of(c.fingerprint, 11);
    memcpy(c.principal, id, sizeof id);
    memcpy(c.serial, "b0b", 4);
    OK(reg, registry_cert_add(reg, &c));
    uint8_t old_fp[32], new_fp[32], other_fp[32], unknown[32];
    fp_of(old_fp, 10);
    fp_of(new_fp, 11);
    fp_of(other_fp, 12);
    fp_of(unknown, 98);
    registry_identity who;
    OK(reg, registry_lookup_cert(reg, old_fp, &who));
    assert_true(registry_identity_active(&who, now));
    OK(reg, registry_lookup_cert(reg, new_fp, &who));
    assert_true(registry_identity_active(&who, now));

    assert_int_equal(registry_cert_revoke(reg, id, other_fp), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_cert_revoke(reg, id, unknown), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_cert_revoke(reg, "no such one", old_fp), REGISTRY_NOT_FOUND);
    OK(reg, registry_lookup_cert(reg, other_fp, &who));
    assert_true(registry_identity_active(&who, now));

    OK(reg, registry_cert_revoke(reg, id, old_fp));
    OK(reg, registry_cert_revoke(reg, id, old_fp)); /* again: no change, no error */
    OK(reg, registry_lookup_cert(reg, old_fp, &who));
    assert_true(who.cert_revoked);
    assert_int_equal(who.status, REGISTRY_ACTIVE);
    assert_false(registry_identity_active(&who, now));
    OK(reg, registry_lookup_cert(reg, new_fp, &who));
    assert_false(who.cert_revoked);
    assert_true(registry_identity_active(&who, now));

    /* Inside a transaction that rolls back, nothing is revoked. */
    OK(reg, registry_begin(reg));
    OK(reg, registry_cert_revoke(reg, id, new_fp));
    registry_rollback(reg);
    OK(reg, registry_lookup_cert(reg, new_fp, &who));
    assert_true(registry_identity_active(&who, now));
}

static void test_data_version(void **state)
{
    fixture *f = *state;
    registry *hub = NULL;
    char err[320];
    assert_int_equal(registry_open(f->path, REGISTRY_OPEN_READONLY, &hub, err, sizeof err),
                     REGISTRY_OK);
    int64_t v1 = 0, v2 = 0, v3 = 0;
    OK(hub, registry_data_version(hub, &v1));
    OK(hub, registry_data_version(hub, &v2));
    assert_true(v1 == v2); /* nothing committed meanwhile */
    /* moatctl (another connection) commits. */
    OK(f->reg, registry_group_add(f->reg, "sensors", "floor 2"));
    OK(hub, registry_data_version(hub, &v3));
    assert_true(v3 != v2);
    /* A transaction that is rolled back changes nothing. */
    OK(f->reg, registry_begin(f->reg));
    OK(f->reg, registry_group_add(f->reg, "never", NULL));
    registry_rollback(f->reg);
    OK(hub, registry_data_version(hub, &v1));
    assert_true(v1 == v3);
    char *desc = NULL;
    assert_int_equal(registry_group_get(hub, "never", &desc), REGISTRY_NOT_FOUND);
    OK(hub, registry_group_get(hub, "sensors", &desc));
    assert_string_equal(desc, "floor 2");
    free(desc);
    registry_close(hub);
}

static void test_policies_for_union(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1], other[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 4, id);
    add_device(reg, 5, other);
    OK(reg, registry_policy_put(reg, "p1", "allow publish a\n", 16, false));
    OK(reg, registry_policy_put(reg, "p2", "allow publish b\n", 16, false));
    OK(reg, registry_policy_put(reg, "p3", "allow publish c\n", 16, false));
    OK(reg, registry_policy_put(reg, "p4", "allow publish d\n", 16, false));
    assert_int_equal(registry_policy_put(reg, "p1", "x", 1, false), REGISTRY_EXISTS);
    OK(reg, registry_group_add(reg, "g1", NULL));
    OK(reg, registry_group_add(reg, "g2", NULL));
    OK(reg, registry_group_add(reg, "g3", NULL));
    OK(reg, registry_group_attach(reg, "p1", "g1"));
    OK(reg, registry_group_attach(reg, "p2", "g1"));
    OK(reg, registry_group_attach(reg, "p2", "g2"));
    OK(reg, registry_group_attach(reg, "p3", "g2"));
    OK(reg, registry_group_attach(reg, "p4", "g3")); /* g3: not ours */
    assert_int_equal(registry_group_attach(reg, "p1", "g1"), REGISTRY_EXISTS);
    assert_int_equal(registry_group_attach(reg, "nope", "g1"), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_group_attach(reg, "p1", "nope"), REGISTRY_NOT_FOUND);
    OK(reg, registry_member_add(reg, "g1", id));
    OK(reg, registry_member_add(reg, "g2", id));
    OK(reg, registry_member_add(reg, "g3", other));
    collect c = {.n = 0};
    OK(reg, registry_policies_for(reg, id, collect_policy, &c));
    assert_int_equal(c.n, 4); /* device-default, p1, p2 (once), p3 */
    assert_string_equal(c.names[0], "device-default");
    assert_string_equal(c.names[1], "p1");
    assert_string_equal(c.names[2], "p2");
    assert_string_equal(c.names[3], "p3");
    assert_string_equal(c.docs[3], "allow publish c\n");
    /* Replacing a policy is seen at once. */
    OK(reg, registry_policy_put(reg, "p3", "allow publish z\n", 16, true));
    c.n = 0;
    OK(reg, registry_policies_for(reg, id, collect_policy, &c));
    assert_string_equal(c.docs[3], "allow publish z\n");
    /* Leaving a group drops its policies. */
    OK(reg, registry_member_remove(reg, "g2", id));
    c.n = 0;
    OK(reg, registry_policies_for(reg, id, collect_policy, &c));
    assert_int_equal(c.n, 3);
    assert_string_equal(c.names[2], "p2");
    /* A policy in use cannot be deleted; detached, it can. */
    assert_int_equal(registry_policy_delete(reg, "p1"), REGISTRY_REFUSED);
    OK(reg, registry_group_detach(reg, "p1", "g1"));
    assert_int_equal(registry_group_detach(reg, "p1", "g1"), REGISTRY_NOT_FOUND);
    OK(reg, registry_policy_delete(reg, "p1"));
    assert_int_equal(registry_policy_delete(reg, "p1"), REGISTRY_NOT_FOUND);
    /* A principal in no group with policies gets nothing. */
    OK(reg, registry_principal_add(reg, REGISTRY_SERVICE, "lonely"));
    c.n = 0;
    OK(reg, registry_policies_for(reg, "lonely", collect_policy, &c));
    assert_int_equal(c.n, 0);
}

static void test_devices_group_rules(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 6, id);
    collect c = {.n = 0};
    OK(reg, registry_principal_groups(reg, id, collect_name, &c));
    assert_int_equal(c.n, 1);
    assert_string_equal(c.names[0], REGISTRY_DEVICES_GROUP);
    assert_int_equal(registry_member_remove(reg, REGISTRY_DEVICES_GROUP, id), REGISTRY_REFUSED);
    assert_int_equal(registry_group_delete(reg, REGISTRY_DEVICES_GROUP), REGISTRY_REFUSED);
    OK(reg, registry_principal_add(reg, REGISTRY_SERVICE, "svc"));
    assert_int_equal(registry_member_add(reg, REGISTRY_DEVICES_GROUP, "svc"), REGISTRY_REFUSED);
    assert_int_equal(registry_member_add(reg, "nosuch", id), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_member_add(reg, REGISTRY_DEVICES_GROUP, id), REGISTRY_EXISTS);
}

static void test_delete_cascades(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 7, id);
    registry_cert c = {.not_after = (int64_t)time(NULL) + 10};
    fp_of(c.fingerprint, 8);
    memcpy(c.principal, id, sizeof id);
    memcpy(c.serial, "2", 2);
    OK(reg, registry_cert_add(reg, &c));
    OK(reg, registry_group_add(reg, "g", NULL));
    OK(reg, registry_member_add(reg, "g", id));
    OK(reg, registry_principal_delete(reg, id, REGISTRY_DEVICE));
    uint8_t fp[32];
    registry_identity who;
    fp_of(fp, 7);
    assert_int_equal(registry_lookup_cert(reg, fp, &who), REGISTRY_NOT_FOUND);
    fp_of(fp, 8);
    assert_int_equal(registry_lookup_cert(reg, fp, &who), REGISTRY_NOT_FOUND);
    assert_int_equal(pragma_int(f->path, "SELECT count(*) FROM certificates"), 0);
    assert_int_equal(pragma_int(f->path, "SELECT count(*) FROM group_members"), 0);
    registry_principal p;
    assert_int_equal(registry_principal_get(reg, id, 0, &p), REGISTRY_NOT_FOUND);
    assert_int_equal(registry_principal_delete(reg, id, REGISTRY_DEVICE), REGISTRY_NOT_FOUND);
    /* Deleting a group removes memberships and attachments, not policies. */
    OK(reg, registry_policy_put(reg, "gp", "allow connect\n", 14, false));
    OK(reg, registry_group_attach(reg, "gp", "g"));
    OK(reg, registry_group_delete(reg, "g"));
    assert_int_equal(pragma_int(f->path, "SELECT count(*) FROM group_policies WHERE grp='g'"), 0);
    char *doc = NULL;
    OK(reg, registry_policy_get(reg, "gp", &doc, NULL));
    free(doc);
}

static void test_transaction_all_or_nothing(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    OK(reg, registry_begin(reg));
    OK(reg, registry_principal_add(reg, REGISTRY_SERVICE, "half"));
    assert_int_equal(registry_member_add(reg, "missing", "half"), REGISTRY_NOT_FOUND);
    registry_rollback(reg);
    registry_principal p;
    assert_int_equal(registry_principal_get(reg, "half", 0, &p), REGISTRY_NOT_FOUND);
}

static void test_corrupt_rows(void **state)
{
    fixture *f = *state;
    registry *reg = f->reg;
    char id[REGISTRY_DEVICE_ID_LEN + 1];
    add_device(reg, 9, id);
    /* Bypass the CHECK constraints as a tampered or damaged file would. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "PRAGMA ignore_check_constraints=ON;"
             "UPDATE principals SET status='superuser' WHERE id='%s'",
             id);
    raw_exec(f->path, sql);
    uint8_t fp[32];
    fp_of(fp, 9);
    registry_identity who;
    assert_int_equal(registry_lookup_cert(reg, fp, &who), REGISTRY_CORRUPT);
    assert_false(registry_identity_active(&who, (int64_t)time(NULL)));
    registry_principal p;
    assert_int_equal(registry_principal_get(reg, id, 0, &p), REGISTRY_CORRUPT);

    snprintf(sql, sizeof sql,
             "PRAGMA ignore_check_constraints=ON;"
             "UPDATE principals SET status='active' WHERE id='%s';"
             "UPDATE certificates SET revoked=7 WHERE principal='%s'",
             id, id);
    raw_exec(f->path, sql);
    assert_int_equal(registry_lookup_cert(reg, fp, &who), REGISTRY_CORRUPT);
    assert_false(registry_identity_active(&who, (int64_t)time(NULL)));

    raw_exec(f->path, "PRAGMA ignore_check_constraints=ON;"
                      "INSERT INTO policies(name, document) VALUES('bad name', 'x');"
                      "INSERT INTO group_policies(grp, policy) VALUES('devices', 'bad name')");
    collect c = {.n = 0};
    assert_int_equal(registry_policies_for(reg, id, collect_policy, &c), REGISTRY_CORRUPT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cert_revoke_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policies_for_union, setup, teardown),
        cmocka_unit_test_setup_teardown(test_devices_group_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
