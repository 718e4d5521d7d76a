/*
 * Unit tests for the audit log (src/audit): a chain of entries in a real
 * registry.db verifies; then each attack is performed with a second SQLite
 * connection, as someone who can edit the file but does not hold
 * master.key would: edit any field of any entry, delete a middle entry,
 * delete the last one (with and without rewriting the head), swap two
 * entries, recompute the chain with plain SHA-256 or with another key, drop
 * the tables. Each must be detected and the first bad entry named. Also: an
 * entry commits or rolls back with the registry change it records; the
 * triggers refuse casual UPDATE/DELETE; an external anchor catches a
 * whole-file rollback that the chain alone cannot (the documented limit).
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

#include <openssl/evp.h>
#include <sqlite3.h>

#include "audit.h"
#include "registry.h"

#define N_ENTRIES 5

static const uint8_t MASTER[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

typedef struct fixture {
    char dir[64];
    char path[128];
    registry *reg;
    audit_key *key;
    audit_log *log;
} fixture;

static void fixture_open(fixture *f)
{
    char err[320];
    assert_int_equal(registry_open(f->path, 0, &f->reg, err, sizeof err), REGISTRY_OK);
    assert_int_equal(audit_attach(registry_sqlite(f->reg), f->key, 0, &f->log), AUDIT_OK);
}

static void fixture_close(fixture *f)
{
    audit_close(f->log);
    registry_close(f->reg);
    f->log = NULL;
    f->reg = NULL;
}

static void append(fixture *f, const char *actor, const char *action, const char *subject,
                   const char *outcome, int64_t time)
{
    json_t *d = json_pack("{s:s, s:i}", "note", subject, "n", (int)time);
    audit_record r = {.time = time,
                      .actor = actor,
                      .action = action,
                      .subject = subject,
                      .outcome = outcome,
                      .details = d};
    int64_t seq = 0;
    assert_int_equal(audit_append(f->log, &r, &seq), AUDIT_OK);
    json_decref(d);
    assert_true(seq > 0);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/registry.db", f->dir);
    char err[320];
    assert_int_equal(registry_open(f->path, REGISTRY_OPEN_CREATE, &f->reg, err, sizeof err),
                     REGISTRY_OK);
    assert_int_equal(audit_key_from_bytes(MASTER, &f->key), AUDIT_OK);
    assert_int_equal(audit_attach(registry_sqlite(f->reg), f->key, AUDIT_CREATE, &f->log),
                     AUDIT_OK);
    append(f, "operator/1000", "hub.init", "", "ok", 1700000000);
    append(f, "operator/1000", "device.enroll", "aaaaaaaaaaaaaaaaaaaaaaaaaa", "ok", 1700000010);
    append(f, "device:aaaaaaaaaaaaaaaaaaaaaaaaaa", "refused.publish", "moat/x/up/t", "refused",
           1700000020);
    append(f, "operator/0", "policy.add", "sensors", "ok", 1700000030);
    append(f, "operator/1000", "device.revoke", "aaaaaaaaaaaaaaaaaaaaaaaaaa", "ok", 1700000040);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fixture_close(f);
    audit_key_free(f->key);
    static const char *const suffix[] = {"", "-wal", "-shm", ".copy"};
    char p[160];
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* The attacker: a connection of their own, the triggers dropped first. */
static void attack(const fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db,
                          "DROP TRIGGER IF EXISTS audit_log_no_update;"
                          "DROP TRIGGER IF EXISTS audit_log_no_delete;"
                          "DROP TRIGGER IF EXISTS audit_head_no_delete;",
                          NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("attack '%s': %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
}

static void expect_broken(fixture *f, int64_t bad_seq, const char *what)
{
    audit_verdict v;
    audit_status st = audit_verify(f->log, NULL, &v);
    if (st != AUDIT_BROKEN)
        fail_msg("%s: not detected (status %s)", what, audit_status_name(st));
    if (bad_seq >= 0 && v.bad_seq != bad_seq)
        fail_msg("%s: first bad entry %lld, expected %lld (%s)", what, (long long)v.bad_seq,
                 (long long)bad_seq, v.reason);
    assert_true(v.reason[0] != '\0');
}

static void test_chain_verifies(void **state)
{
    fixture *f = *state;
    audit_verdict v;
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
    assert_int_equal(v.entries, N_ENTRIES);
    assert_int_equal(v.head.seq, N_ENTRIES);
    assert_int_equal(v.bad_seq, 0);
    /* Reopened from the file, by a new handle. */
    fixture_close(f);
    fixture_open(f);
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
    assert_int_equal(v.entries, N_ENTRIES);
}

static void test_edit_any_field_of_any_entry(void **state)
{
    fixture *f = *state;
    static const char *const edits[] = {
        "time = time + 1",      "actor = 'operator/666'", "action = 'device.enable'",
        "subject = 'other'",    "outcome = 'failed'",     "details = '{}'",
        "tag = randomblob(32)", "time = time + 0.5",      "actor = CAST(actor AS BLOB)",
    };
    for (int64_t seq = 1; seq <= N_ENTRIES; seq++) {
        for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
            /* Each attack on a fresh copy of the chain. */
            teardown(state);
            setup(state);
            f = *state;
            char sql[256];
            snprintf(sql, sizeof sql, "UPDATE audit_log SET %s WHERE seq = %lld", edits[e],
                     (long long)seq);
            attack(f, sql);
            char what[300];
            snprintf(what, sizeof what, "entry %lld: %s", (long long)seq, edits[e]);
            expect_broken(f, seq, what);
        }
    }
}

static void test_delete_middle_entry(void **state)
{
    fixture *f = *state;
    attack(f, "DELETE FROM audit_log WHERE seq = 3");
    expect_broken(f, 3, "middle entry deleted");
}

static void test_delete_last_entry(void **state)
{
    fixture *f = *state;
    attack(f, "DELETE FROM audit_log WHERE seq = 5");
    expect_broken(f, 5, "last entry deleted");
}

static void test_delete_last_and_rewrite_head(void **state)
{
    fixture *f = *state;
    /* Point the head at entry 4, copying its tag: without the key the
     * head's MAC cannot follow. */
    attack(f, "DELETE FROM audit_log WHERE seq = 5;"
              "UPDATE audit_head SET seq = 4, tag = (SELECT tag FROM audit_log WHERE seq = 4)");
    expect_broken(f, -1, "last entry deleted, head rewritten");
    /* And the hub refuses to append on top of a head that does not verify
     * (that would re-MAC it and hide the truncation). */
    audit_record r = {.actor = "hub", .action = "x", .outcome = "ok"};
    assert_int_equal(audit_append(f->log, &r, NULL), AUDIT_BROKEN);
}

static void test_reorder_two_entries(void **state)
{
    fixture *f = *state;
    attack(f, "UPDATE audit_log SET seq = -2 WHERE seq = 2;"
              "UPDATE audit_log SET seq = 2 WHERE seq = 3;"
              "UPDATE audit_log SET seq = 3 WHERE seq = -2;");
    expect_broken(f, 2, "entries 2 and 3 swapped");
}

static void test_insert_forged_entry(void **state)
{
    fixture *f = *state;
    attack(f, "INSERT INTO audit_log(seq, time, actor, action, subject, outcome, details, tag)"
              " VALUES(6, 1700000050, 'operator/0', 'device.enable', 'x', 'ok', '{}',"
              " randomblob(32))");
    expect_broken(f, -1, "entry appended without the key");
}

/* SHA-256 over the same encoding the chain uses, but unkeyed: what an
 * attacker could compute if the log were a plain hash chain. */
static void sha256_tag(int64_t seq, const uint8_t prev[32], const audit_entry *e, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_non_null(c);
    assert_int_equal(EVP_DigestInit_ex(c, EVP_sha256(), NULL), 1);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    EVP_DigestUpdate(c, "moat-audit-v1", 14);
    EVP_DigestUpdate(c, b, 8);
    EVP_DigestUpdate(c, prev, 32);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)e->time >> (56 - 8 * i));
    EVP_DigestUpdate(c, b, 8);
    const char *fields[] = {e->actor, e->action, e->subject, e->outcome, e->details};
    for (size_t i = 0; i < 5; i++) {
        uint32_t n = (uint32_t)strlen(fields[i]);
        uint8_t l[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        EVP_DigestUpdate(c, l, 4);
        EVP_DigestUpdate(c, fields[i], n);
    }
    unsigned len = 0;
    assert_int_equal(EVP_DigestFinal_ex(c, out, &len), 1);
    EVP_MD_CTX_free(c);
}

typedef struct rechain {
    const audit_key *key; /* NULL: plain SHA-256 */
    uint8_t prev[32];
    sqlite3 *db;
} rechain;

static int rechain_entry(void *ctx, const audit_entry *e)
{
    rechain *r = ctx;
    /* The attacker's change: entry 2 now names someone else. */
    audit_entry copy = *e;
    if (e->seq == 2)
        copy.subject = "zzzzzzzzzzzzzzzzzzzzzzzzzz";
    uint8_t tag[32];
    if (r->key)
        audit_entry_tag(r->key, e->seq, r->prev, &copy, tag);
    else
        sha256_tag(e->seq, r->prev, &copy, tag);
    sqlite3_stmt *s = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(r->db, "UPDATE audit_log SET subject = ?1, tag = ?2 WHERE seq = ?3", -1,
                           &s, NULL),
        SQLITE_OK);
    sqlite3_bind_text(s, 1, copy.subject, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s, 2, tag, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, e->seq);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    memcpy(r->prev, tag, 32);
    return 0;
}

/* Rewrite entry 2 and recompute every tag and the head with key (or with
 * plain SHA-256), as a thorough attacker would. */
static void rewrite_chain(fixture *f, const audit_key *key)
{
    attack(f, "SELECT 1"); /* drops the triggers */
    rechain r = {.key = key};
    assert_int_equal(sqlite3_open(f->path, &r.db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(r.db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(audit_list(f->log, 0, 0, rechain_entry, &r), AUDIT_OK);
    audit_head h = {.seq = N_ENTRIES};
    memcpy(h.tag, r.prev, 32);
    uint8_t mac[32];
    if (key) {
        audit_head_mac(key, &h, mac);
    } else {
        audit_entry none = {.actor = "", .action = "", .subject = "", .outcome = "", .details = ""};
        sha256_tag(h.seq, h.tag, &none, mac);
    }
    sqlite3_stmt *s = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(r.db, "UPDATE audit_head SET tag = ?1, mac = ?2", -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(s, 1, h.tag, 32, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s, 2, mac, 32, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_exec(r.db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(r.db);
}

static void test_plain_sha256_chain_recomputed(void **state)
{
    fixture *f = *state;
    rewrite_chain(f, NULL);
    expect_broken(f, -1, "chain recomputed with plain SHA-256");
}

static void test_chain_recomputed_with_another_key(void **state)
{
    fixture *f = *state;
    uint8_t other[32];
    memcpy(other, MASTER, 32);
    other[0] ^= 1;
    audit_key *k2 = NULL;
    assert_int_equal(audit_key_from_bytes(other, &k2), AUDIT_OK);
    rewrite_chain(f, k2);
    audit_key_free(k2);
    expect_broken(f, -1, "chain recomputed with another key");
}

/* The positive control for the two tests above: the same rewrite with the
 * real key is NOT detected. So they fail for the right reason (the key),
 * and whoever holds master.key can rewrite history — as documented. */
static void test_chain_recomputed_with_the_key_passes(void **state)
{
    fixture *f = *state;
    rewrite_chain(f, f->key);
    audit_verdict v;
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
}

static void test_dropped_tables_are_not_a_fresh_log(void **state)
{
    fixture *f = *state;
    fixture_close(f);
    attack(f, "DROP TABLE audit_log; DROP TABLE audit_head;");
    char err[320];
    assert_int_equal(registry_open(f->path, 0, &f->reg, err, sizeof err), REGISTRY_OK);
    /* Without AUDIT_CREATE (everything but moatctl init) the log is missing,
     * not silently started again. */
    assert_int_equal(audit_attach(registry_sqlite(f->reg), f->key, 0, &f->log), AUDIT_NOT_FOUND);
    assert_null(f->log);
}

static void test_one_table_dropped(void **state)
{
    fixture *f = *state;
    fixture_close(f);
    attack(f, "DROP TABLE audit_head;");
    char err[320];
    assert_int_equal(registry_open(f->path, 0, &f->reg, err, sizeof err), REGISTRY_OK);
    assert_int_equal(audit_attach(registry_sqlite(f->reg), f->key, AUDIT_CREATE, &f->log),
                     AUDIT_BROKEN);
}

static void test_triggers_refuse_casual_changes(void **state)
{
    fixture *f = *state;
    sqlite3 *db = registry_sqlite(f->reg);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE audit_log SET outcome = 'x'", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM audit_log", NULL, NULL, NULL), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM audit_head", NULL, NULL, NULL), SQLITE_OK);
    audit_verdict v;
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
}

static void test_entry_commits_with_the_change(void **state)
{
    fixture *f = *state;
    audit_verdict v;
    /* Rolled back: neither the group nor its entry. */
    assert_int_equal(registry_begin(f->reg), REGISTRY_OK);
    assert_int_equal(registry_group_add(f->reg, "lost", ""), REGISTRY_OK);
    append(f, "operator/1", "group.add", "lost", "ok", 1700000100);
    registry_rollback(f->reg);
    char *desc = NULL;
    assert_int_equal(registry_group_get(f->reg, "lost", &desc), REGISTRY_NOT_FOUND);
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
    assert_int_equal(v.entries, N_ENTRIES);
    /* Committed: both. */
    assert_int_equal(registry_begin(f->reg), REGISTRY_OK);
    assert_int_equal(registry_group_add(f->reg, "kept", ""), REGISTRY_OK);
    append(f, "operator/1", "group.add", "kept", "ok", 1700000110);
    assert_int_equal(registry_commit(f->reg), REGISTRY_OK);
    assert_int_equal(registry_group_get(f->reg, "kept", &desc), REGISTRY_OK);
    free(desc);
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
    assert_int_equal(v.entries, N_ENTRIES + 1);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void test_anchor_catches_a_rollback(void **state)
{
    fixture *f = *state;
    char copy[160];
    snprintf(copy, sizeof copy, "%s.copy", f->path);
    /* The attacker saves the whole file at 5 entries (checkpointed, so the
     * main file holds everything)... */
    assert_int_equal(sqlite3_wal_checkpoint_v2(registry_sqlite(f->reg), NULL,
                                               SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                     SQLITE_OK);
    fixture_close(f);
    copy_file(f->path, copy);
    fixture_open(f);
    append(f, "operator/1000", "device.delete", "aaaaaaaaaaaaaaaaaaaaaaaaaa", "ok", 1700000200);
    append(f, "operator/1000", "policy.delete", "sensors", "ok", 1700000210);
    /* ...an outside monitor wrote down the head after entry 7... */
    audit_head anchor;
    assert_int_equal(audit_head_get(f->log, &anchor), AUDIT_OK);
    assert_int_equal(anchor.seq, 7);
    audit_verdict v;
    assert_int_equal(audit_verify(f->log, &anchor, &v), AUDIT_OK);
    /* ...and the attacker puts the old file back. */
    assert_int_equal(sqlite3_wal_checkpoint_v2(registry_sqlite(f->reg), NULL,
                                               SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                     SQLITE_OK);
    fixture_close(f);
    copy_file(copy, f->path);
    fixture_open(f);
    /* The chain alone cannot tell (documented): it is a valid older log. */
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
    assert_int_equal(v.entries, N_ENTRIES);
    /* The anchor can. */
    assert_int_equal(audit_verify(f->log, &anchor, &v), AUDIT_BROKEN);
    assert_int_equal(v.bad_seq, 7);
    /* A wrong tag for an entry that exists is caught too. */
    audit_head wrong;
    assert_int_equal(audit_head_get(f->log, &wrong), AUDIT_OK);
    wrong.tag[0] ^= 1;
    assert_int_equal(audit_verify(f->log, &wrong, &v), AUDIT_BROKEN);
    assert_int_equal(v.bad_seq, N_ENTRIES);
}

typedef struct listed {
    int64_t seqs[16];
    size_t n;
} listed;

static int collect(void *ctx, const audit_entry *e)
{
    listed *l = ctx;
    if (l->n < 16)
        l->seqs[l->n++] = e->seq;
    return 0;
}

static void test_list_since_and_limit(void **state)
{
    fixture *f = *state;
    listed l = {0};
    assert_int_equal(audit_list(f->log, 1700000020, 0, collect, &l), AUDIT_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.seqs[0], 3);
    assert_int_equal(l.seqs[2], 5);
    memset(&l, 0, sizeof l);
    assert_int_equal(audit_list(f->log, 0, 2, collect, &l), AUDIT_OK);
    assert_int_equal(l.n, 2); /* the newest two, oldest first */
    assert_int_equal(l.seqs[0], 4);
    assert_int_equal(l.seqs[1], 5);
}

static int grab_details(void *ctx, const audit_entry *e)
{
    snprintf(ctx, 256, "%s|%s", e->details, e->subject);
    return 0;
}

static void test_bounds(void **state)
{
    fixture *f = *state;
    /* Details that are not an object are refused. */
    json_t *arr = json_array();
    audit_record r = {.actor = "hub", .action = "x", .outcome = "ok", .details = arr};
    assert_int_equal(audit_append(f->log, &r, NULL), AUDIT_INVALID);
    json_decref(arr);
    /* No actor: refused. */
    audit_record r2 = {.action = "x"};
    assert_int_equal(audit_append(f->log, &r2, NULL), AUDIT_INVALID);
    /* Oversized details and subject are cut, and the entry still verifies. */
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    json_t *d = json_pack("{s:s}", "blob", big);
    audit_record r3 = {.time = 1700000300,
                       .actor = "hub",
                       .action = "x",
                       .subject = big,
                       .outcome = "ok",
                       .details = d};
    assert_int_equal(audit_append(f->log, &r3, NULL), AUDIT_OK);
    json_decref(d);
    char got[256] = "";
    assert_int_equal(audit_list(f->log, 1700000300, 1, grab_details, got), AUDIT_OK);
    assert_non_null(strstr(got, "\"truncated\":true"));
    assert_int_equal(strlen(strchr(got, '|') + 1) > 0, 1);
    audit_verdict v;
    assert_int_equal(audit_verify(f->log, NULL, &v), AUDIT_OK);
}

static void test_key_file(void **state)
{
    fixture *f = *state;
    char path[160], err[256];
    snprintf(path, sizeof path, "%s.copy", f->path);
    audit_key *k = NULL;
    /* A key file of the wrong size is refused, not hashed into some key. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, MASTER, 31), 31);
    close(fd);
    assert_int_equal(audit_key_load(path, &k, err, sizeof err), AUDIT_KEY);
    assert_null(k);
    /* The right file gives the same key as the bytes. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, MASTER, 32), 32);
    close(fd);
    assert_int_equal(audit_key_load(path, &k, err, sizeof err), AUDIT_OK);
    audit_head h = {.seq = 9};
    uint8_t a[32], b[32];
    audit_head_mac(k, &h, a);
    audit_head_mac(f->key, &h, b);
    assert_memory_equal(a, b, 32);
    audit_key_free(k);
    assert_int_equal(audit_key_load("/nonexistent/master.key", &k, err, sizeof err), AUDIT_KEY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_any_field_of_any_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_middle_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_last_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_last_and_rewrite_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reorder_two_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insert_forged_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_sha256_chain_recomputed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_recomputed_with_another_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_recomputed_with_the_key_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_tables_are_not_a_fresh_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_table_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_triggers_refuse_casual_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_commits_with_the_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anchor_catches_a_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_since_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
