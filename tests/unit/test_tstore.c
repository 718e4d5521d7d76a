/*
 * Unit tests for the telemetry store (src/telemetry): appends in group
 * commits read back page by page; duplicates by (device, seq) refused;
 * ciphertexts swapped between rows or devices in the raw SQLite file, and a
 * changed plaintext column, refused with a clear "does not authenticate";
 * a wrong, short or world-readable master key refused at open; master key
 * rotation (also one that stopped after its commit) and re-encryption under
 * a new data key (also interrupted midway, with appends and duplicates in
 * between) keeping every row readable; retention by age, by size and for
 * devices that no longer exist, in bounded slices; deleting a device leaving
 * neither rows nor its ciphertext bytes in the files; and no plaintext in
 * the files at any time. Logs the append rate (not asserted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"
#include "tstore.h"
#include "tstore_registry.h"
#include "tstore_sqlite.h"

#define DEV_A "aaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DEV_B "bbbbbbbbbbbbbbbbbbbbbbbbbq"
#define T0    1700000000000LL /* ms */

typedef struct fixture {
    char dir[64];
    char path[128];
    tstore *ts;
} fixture;

#define OK(ts, expr)                                                                               \
    do {                                                                                           \
        tstore_status st_ = (expr);                                                                \
        if (st_ != TSTORE_OK)                                                                      \
            fail_msg("%s: %s (%s)", #expr, tstore_status_name(st_), tstore_error(ts));             \
    } while (0)

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static size_t read_file(const char *path, uint8_t **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    *out = buf;
    return len;
}

static bool contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    if (m == 0 || m > n)
        return false;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == *(const uint8_t *)needle && memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

/* Whether needle occurs in telemetry.db, -wal or -shm. */
static bool in_files(const fixture *f, const void *needle, size_t m)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    bool found = false;
    for (size_t i = 0; i < 3 && !found; i++) {
        char p[160];
        uint8_t *buf;
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        size_t n = read_file(p, &buf);
        found = contains(buf, n, needle, m);
        free(buf);
    }
    return found;
}

static void master_path(const fixture *f, char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", f->dir, name);
}

static void reopen(fixture *f)
{
    tstore_close(f->ts);
    f->ts = NULL;
    char err[384];
    tstore_status st = tstore_sqlite_open(f->dir, 0, &f->ts, err, sizeof err);
    if (st != TSTORE_OK)
        fail_msg("reopen: %s: %s", tstore_status_name(st), err);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_true(sodium_init() >= 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-tstore-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/telemetry.db", f->dir);
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    char mk[128];
    master_path(f, mk, sizeof mk, "master.key");
    write_file(mk, key, sizeof key, 0600);
    char err[384];
    tstore_status st = tstore_sqlite_open(f->dir, TSTORE_OPEN_CREATE, &f->ts, err, sizeof err);
    if (st != TSTORE_OK)
        fail_msg("open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tstore_close(f->ts);
    static const char *const names[] = {"telemetry.db",    "telemetry.db-wal", "telemetry.db-shm",
                                        "master.key",      "master.key.new",   "registry.db",
                                        "registry.db-wal", "registry.db-shm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- helpers to write and read readings -------------------------------- */

static tstore_reading mk(const char *dev, const char *stream, const char *payload, int64_t rx,
                         uint64_t seq)
{
    tstore_reading r;
    memset(&r, 0, sizeof r);
    r.device = dev;
    r.stream = (codec_bytes){(const uint8_t *)stream, strlen(stream)};
    r.payload = (codec_bytes){(const uint8_t *)payload, strlen(payload)};
    r.received_ms = rx;
    r.has_seq = seq != 0;
    r.seq = seq;
    r.has_device_time = seq % 2 == 1;
    r.device_time_ms = rx - 5;
    return r;
}

/* Append n readings of dev: stream "s<i%3>", payload "<dev>-<i>", received
 * T0 + i*1000 + base, seq base + i + 1; batch readings per transaction. */
static void fill(tstore *ts, const char *dev, int base, int n, int batch)
{
    char payload[64];
    for (int i = 0; i < n; i += batch) {
        OK(ts, tstore_begin(ts));
        for (int j = i; j < i + batch && j < n; j++) {
            char stream[8];
            snprintf(stream, sizeof stream, "s%d", (base + j) % 3);
            snprintf(payload, sizeof payload, "%.4s-%d", dev, base + j);
            tstore_reading r =
                mk(dev, stream, payload, T0 + (int64_t)(base + j) * 1000, (uint64_t)(base + j) + 1);
            OK(ts, tstore_append(ts, &r));
        }
        OK(ts, tstore_commit(ts));
    }
}

typedef struct got {
    size_t n;
    int64_t last_rx;
    int64_t first_rx;
    char last_payload[64];
    char last_stream[16];
    bool sorted_asc, sorted_desc;
    bool all_match; /* payload device prefix, seq and device time coherent */
    const char *dev;
} got;

static int collect(void *ctx, const tstore_reading *r)
{
    got *g = ctx;
    if (g->n == 0) {
        g->sorted_asc = g->sorted_desc = g->all_match = true;
        g->first_rx = r->received_ms;
    } else {
        g->sorted_asc = g->sorted_asc && r->received_ms >= g->last_rx;
        g->sorted_desc = g->sorted_desc && r->received_ms <= g->last_rx;
    }
    g->last_rx = r->received_ms;
    snprintf(g->last_payload, sizeof g->last_payload, "%.*s", (int)r->payload.len,
             (const char *)r->payload.ptr);
    snprintf(g->last_stream, sizeof g->last_stream, "%.*s", (int)r->stream.len,
             (const char *)r->stream.ptr);
    /* Appended as payload "<dev4>-<i>", seq i+1, received T0 + i*1000,
     * device time received-5 for odd seq. */
    long i = strtol(g->last_payload + 5, NULL, 10);
    bool ok = strncmp(g->last_payload, r->device, 4) == 0 && strcmp(r->device, g->dev) == 0 &&
              r->has_seq && r->seq == (uint64_t)i + 1 && r->received_ms == T0 + i * 1000 &&
              r->has_device_time == (r->seq % 2 == 1) &&
              (!r->has_device_time || r->device_time_ms == r->received_ms - 5);
    g->all_match = g->all_match && ok;
    g->n++;
    return 0;
}

/* Every reading of dev, page by page; returns how many. */
static size_t count_all(tstore *ts, const char *dev, const char *stream, size_t limit, bool desc)
{
    tstore_query q = {.device = dev,
                      .since_ms = INT64_MIN,
                      .until_ms = INT64_MAX,
                      .limit = limit,
                      .newest_first = desc};
    if (stream)
        q.stream = (codec_bytes){(const uint8_t *)stream, strlen(stream)};
    got g = {.dev = dev};
    tstore_page page;
    size_t pages = 0;
    do {
        size_t before = g.n;
        OK(ts, tstore_query_page(ts, &q, collect, &g, &page));
        assert_int_equal(page.count, g.n - before);
        assert_true(page.count <= (limit ? limit : TSTORE_PAGE_MAX));
        q.has_after = true;
        q.after = page.next;
        pages++;
        assert_true(pages < 100000);
    } while (page.more);
    if (g.n) {
        assert_true(g.all_match);
        assert_true(desc ? g.sorted_desc : g.sorted_asc);
    }
    return g.n;
}

/* ---- tests ------------------------------------------------------------- */

static void test_append_query_pages(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 2500, 100);
    fill(f->ts, DEV_B, 0, 10, 10);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 2500);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 7, false), 2500);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 1000, true), 2500);
    assert_int_equal(count_all(f->ts, DEV_A, "s1", 100, false), 833);
    assert_int_equal(count_all(f->ts, DEV_A, "s1", 100, true), 833);
    assert_int_equal(count_all(f->ts, DEV_A, "nope", 0, false), 0);
    assert_int_equal(count_all(f->ts, DEV_B, NULL, 3, false), 10);
    assert_int_equal(count_all(f->ts, "cccccccccccccccccccccccccc", NULL, 0, false), 0);

    /* A time window: [since, until). */
    tstore_query q = {.device = DEV_A, .since_ms = T0 + 10000, .until_ms = T0 + 20000, .limit = 5};
    got g = {.dev = DEV_A};
    tstore_page page;
    OK(f->ts, tstore_query_page(f->ts, &q, collect, &g, &page));
    assert_int_equal(page.count, 5);
    assert_true(page.more);
    assert_int_equal(g.first_rx, T0 + 10000);
    q.has_after = true;
    q.after = page.next;
    OK(f->ts, tstore_query_page(f->ts, &q, collect, &g, &page));
    assert_int_equal(g.n, 10);
    assert_false(page.more);
    assert_int_equal(g.last_rx, T0 + 19000);
    assert_string_equal(g.last_payload, "aaaa-19");

    /* Newest first, one page. */
    q = (tstore_query){.device = DEV_A,
                       .since_ms = INT64_MIN,
                       .until_ms = INT64_MAX,
                       .limit = 1,
                       .newest_first = true};
    memset(&g, 0, sizeof g);
    g.dev = DEV_A;
    OK(f->ts, tstore_query_page(f->ts, &q, collect, &g, &page));
    assert_string_equal(g.last_payload, "aaaa-2499");
    assert_true(page.more);

    /* Limits. */
    q.limit = TSTORE_PAGE_MAX + 1;
    assert_int_equal(tstore_query_page(f->ts, &q, collect, &g, &page), TSTORE_INVALID);
    tstore_stats s;
    OK(f->ts, tstore_get_stats(f->ts, NULL, &s));
    assert_int_equal(s.devices, 2);
    assert_int_equal(s.readings, 2510);
    assert_true(s.bytes > 2510 * 40);
    OK(f->ts, tstore_get_stats(f->ts, DEV_B, &s));
    assert_int_equal(s.readings, 10);
}

static void test_same_ms_pages(void **state)
{
    /* Many readings in one millisecond: the cursor must not skip or repeat. */
    fixture *f = *state;
    OK(f->ts, tstore_begin(f->ts));
    for (int i = 0; i < 50; i++) {
        char p[32];
        snprintf(p, sizeof p, "aaaa-%d", i);
        tstore_reading r = mk(DEV_A, "s", p, T0, 0);
        OK(f->ts, tstore_append(f->ts, &r));
    }
    OK(f->ts, tstore_commit(f->ts));
    for (int desc = 0; desc < 2; desc++) {
        tstore_query q = {.device = DEV_A,
                          .since_ms = INT64_MIN,
                          .until_ms = INT64_MAX,
                          .limit = 7,
                          .newest_first = desc};
        size_t n = 0;
        tstore_page page;
        do {
            got g = {.dev = DEV_A};
            OK(f->ts, tstore_query_page(f->ts, &q, collect, &g, &page));
            n += page.count;
            q.has_after = true;
            q.after = page.next;
        } while (page.more);
        assert_int_equal(n, 50);
    }
}

static void test_duplicates(void **state)
{
    fixture *f = *state;
    OK(f->ts, tstore_begin(f->ts));
    tstore_reading r = mk(DEV_A, "temp", "21.5", T0, 7);
    OK(f->ts, tstore_append(f->ts, &r));
    /* Same (device, seq) in the same pass, even on another stream. */
    tstore_reading again = mk(DEV_A, "humidity", "40", T0 + 1, 7);
    assert_int_equal(tstore_append(f->ts, &again), TSTORE_DUPLICATE);
    /* Same seq on another device is another reading. */
    tstore_reading other = mk(DEV_B, "temp", "19", T0, 7);
    OK(f->ts, tstore_append(f->ts, &other));
    /* No seq: never a duplicate. */
    tstore_reading plain = mk(DEV_A, "temp", "x", T0, 0);
    OK(f->ts, tstore_append(f->ts, &plain));
    OK(f->ts, tstore_append(f->ts, &plain));
    /* A refused argument does not spoil the pass. */
    char big[TSTORE_STREAM_MAX + 2];
    memset(big, 's', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    tstore_reading bad = mk(DEV_A, big, "x", T0, 99);
    assert_int_equal(tstore_append(f->ts, &bad), TSTORE_INVALID);
    bad = mk("bad id with spaces", "s", "x", T0, 99);
    assert_int_equal(tstore_append(f->ts, &bad), TSTORE_INVALID);
    OK(f->ts, tstore_commit(f->ts));
    /* And in a later pass, after a reopen. */
    reopen(f);
    OK(f->ts, tstore_begin(f->ts));
    assert_int_equal(tstore_append(f->ts, &r), TSTORE_DUPLICATE);
    OK(f->ts, tstore_commit(f->ts));
    tstore_stats s;
    OK(f->ts, tstore_get_stats(f->ts, DEV_A, &s));
    assert_int_equal(s.readings, 3);
    /* Out of order calls. */
    assert_int_equal(tstore_append(f->ts, &r), TSTORE_INVALID);
    assert_int_equal(tstore_commit(f->ts), TSTORE_INVALID);
}

static void test_rollback(void **state)
{
    fixture *f = *state;
    OK(f->ts, tstore_begin(f->ts));
    tstore_reading r = mk(DEV_A, "temp", "21.5", T0, 1);
    OK(f->ts, tstore_append(f->ts, &r));
    tstore_rollback(f->ts);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 0);
    /* The device row made in the rolled back pass is gone with it. */
    fill(f->ts, DEV_A, 0, 3, 3);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 3);
}

/* Run sql on the raw file behind the store's back. */
static void raw_sql(const fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

static void expect_corrupt(fixture *f, const char *dev)
{
    tstore_query q = {.device = dev, .since_ms = INT64_MIN, .until_ms = INT64_MAX};
    got g = {.dev = dev};
    tstore_page page;
    assert_int_equal(tstore_query_page(f->ts, &q, collect, &g, &page), TSTORE_CORRUPT);
    assert_non_null(strstr(tstore_error(f->ts), "does not authenticate"));
}

static void test_swapped_rows_refused(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 2, 2);
    fill(f->ts, DEV_B, 0, 1, 1);
    tstore_close(f->ts);
    f->ts = NULL;
    /* Two rows of the same device swap ciphertexts. */
    raw_sql(f, "CREATE TEMP TABLE t AS SELECT id, ct FROM readings;"
               "UPDATE readings SET ct = (SELECT ct FROM t WHERE t.id = 3 - readings.id)"
               " WHERE id IN (1, 2);");
    reopen(f);
    expect_corrupt(f, DEV_A);
    tstore_close(f->ts);
    f->ts = NULL;
    /* Put them back: readable again (so the failure above was the swap). */
    raw_sql(f, "CREATE TEMP TABLE t AS SELECT id, ct FROM readings;"
               "UPDATE readings SET ct = (SELECT ct FROM t WHERE t.id = 3 - readings.id)"
               " WHERE id IN (1, 2);");
    reopen(f);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 2);
    tstore_close(f->ts);
    f->ts = NULL;
    /* A row of device B moved to device A. */
    raw_sql(f, "UPDATE readings SET dev = (SELECT dev FROM readings WHERE id = 1) WHERE id = 3;");
    reopen(f);
    expect_corrupt(f, DEV_A);
    tstore_close(f->ts);
    f->ts = NULL;
    raw_sql(f, "UPDATE readings SET dev = (SELECT no FROM devices WHERE no != (SELECT dev FROM"
               " readings WHERE id = 1)) WHERE id = 3;");
    reopen(f);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 2);
    tstore_close(f->ts);
    f->ts = NULL;
    /* A plaintext column changed: the receive time (to dodge retention). */
    raw_sql(f, "UPDATE readings SET received = received + 86400000 WHERE id = 1;");
    reopen(f);
    expect_corrupt(f, DEV_A);
}

static void open_expect(fixture *f, tstore_status want, const char *msg_part)
{
    tstore_close(f->ts);
    f->ts = NULL;
    char err[384] = "";
    tstore *ts = NULL;
    tstore_status st = tstore_sqlite_open(f->dir, 0, &ts, err, sizeof err);
    if (st != want)
        fail_msg("open: want %s, got %s: %s", tstore_status_name(want), tstore_status_name(st),
                 err);
    if (st == TSTORE_OK)
        f->ts = ts;
    else {
        assert_null(ts);
        if (!strstr(err, msg_part))
            fail_msg("message '%s' lacks '%s'", err, msg_part);
    }
}

static void test_wrong_master_key(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 3, 3);
    char mk_path[128];
    master_path(f, mk_path, sizeof mk_path, "master.key");
    uint8_t *good;
    assert_int_equal(read_file(mk_path, &good), 32);
    uint8_t bad[32];
    memcpy(bad, good, 32);
    bad[5] ^= 1; /* one bit */
    write_file(mk_path, bad, 32, 0600);
    open_expect(f, TSTORE_KEY, "is not the master key");
    write_file(mk_path, good, 31, 0600);
    open_expect(f, TSTORE_KEY, "exactly 32 bytes");
    write_file(mk_path, good, 32, 0644);
    open_expect(f, TSTORE_KEY, "chmod 600");
    unlink(mk_path);
    open_expect(f, TSTORE_KEY, "master.key");
    write_file(mk_path, good, 32, 0600);
    open_expect(f, TSTORE_OK, "");
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 3);
    free(good);
}

static void test_rotate_master(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 20, 5);
    char mk_path[128], new_path[128];
    master_path(f, mk_path, sizeof mk_path, "master.key");
    master_path(f, new_path, sizeof new_path, "master.key.new");
    uint8_t *old, *now;
    assert_int_equal(read_file(mk_path, &old), 32);
    uint64_t n = 0;
    OK(f->ts, tstore_rotate_master(f->ts, &n));
    assert_int_equal(n, 1);
    assert_int_equal(read_file(mk_path, &now), 32);
    assert_memory_not_equal(old, now, 32);
    struct stat sb;
    assert_int_equal(stat(mk_path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_not_equal(access(new_path, F_OK), 0);
    /* Still readable, by this handle and by a new one. */
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 20);
    reopen(f);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 20);
    /* The old key no longer opens the store. */
    write_file(mk_path, old, 32, 0600);
    open_expect(f, TSTORE_KEY, "is not the master key");
    /* A rotation that committed but stopped before replacing the file: the
     * new key is in master.key.new, the old one still in master.key. The
     * next open finishes it. */
    write_file(new_path, now, 32, 0600);
    open_expect(f, TSTORE_OK, "");
    assert_int_not_equal(access(new_path, F_OK), 0);
    uint8_t *after;
    assert_int_equal(read_file(mk_path, &after), 32);
    assert_memory_equal(after, now, 32);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 20);
    /* A stale master.key.new (a rotation that did not commit) is ignored
     * and replaced by the next rotation. */
    uint8_t junk[32];
    randombytes_buf(junk, sizeof junk);
    write_file(new_path, junk, 32, 0600);
    reopen(f);
    OK(f->ts, tstore_rotate_master(f->ts, &n));
    reopen(f);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 20);
    free(old);
    free(now);
    free(after);
}

static void test_reencrypt(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 300, 50);
    fill(f->ts, DEV_B, 0, 50, 50);
    uint8_t *before = NULL;
    {
        /* A ciphertext of the old key, to see it rewritten. */
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_stmt *q;
        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT ct FROM readings WHERE id = 10", -1, &q, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        before = malloc(64);
        memcpy(before, sqlite3_column_blob(q, 0), 64);
        sqlite3_finalize(q);
        sqlite3_close(db);
    }
    bool started = false;
    OK(f->ts, tstore_reencrypt_start(f->ts, &started));
    assert_true(started);
    tstore_stats s;
    OK(f->ts, tstore_get_stats(f->ts, NULL, &s));
    assert_int_equal(s.data_keys, 2);
    assert_true(s.reencrypt_pending);
    assert_int_equal(s.current_key, 2);
    /* A second start continues the first rather than making a third key. */
    OK(f->ts, tstore_reencrypt_start(f->ts, &started));
    assert_false(started);

    tstore_reencrypt_progress p;
    OK(f->ts, tstore_reencrypt_step(f->ts, 40, &p));
    assert_false(p.done);
    assert_true(p.rewritten > 0);
    /* Midway: new rows go under the new key, a resent old reading is still
     * a duplicate, and every row of either key reads back. */
    fill(f->ts, DEV_A, 300, 20, 10);
    OK(f->ts, tstore_begin(f->ts));
    tstore_reading dup = mk(DEV_A, "s0", "aaaa-299", T0 + 299000, 300);
    assert_int_equal(tstore_append(f->ts, &dup), TSTORE_DUPLICATE);
    OK(f->ts, tstore_commit(f->ts));
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 320);
    assert_int_equal(count_all(f->ts, DEV_A, "s2", 0, false), 106);
    assert_int_equal(count_all(f->ts, DEV_B, NULL, 0, false), 50);

    /* Interrupted: close, reopen (another process), continue. */
    reopen(f);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 320);
    size_t steps = 0;
    do {
        OK(f->ts, tstore_reencrypt_step(f->ts, 64, &p));
        steps++;
        assert_true(steps < 100);
    } while (!p.done);
    assert_int_equal(p.keys_deleted, 1);
    OK(f->ts, tstore_get_stats(f->ts, NULL, &s));
    assert_int_equal(s.data_keys, 1);
    assert_false(s.reencrypt_pending);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 320);
    assert_int_equal(count_all(f->ts, DEV_B, NULL, 0, false), 50);
    reopen(f);
    assert_int_equal(count_all(f->ts, DEV_A, "s1", 0, false), 107);
    /* Duplicates still caught under the new key alone. */
    OK(f->ts, tstore_begin(f->ts));
    assert_int_equal(tstore_append(f->ts, &dup), TSTORE_DUPLICATE);
    OK(f->ts, tstore_commit(f->ts));
    /* Every row and device is under key 2; old ciphertexts are gone. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM readings WHERE key_id != 2)"
                                        " + (SELECT count(*) FROM devices WHERE key_id != 2)"
                                        " + (SELECT count(*) FROM data_keys WHERE id != 2)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    /* The old ciphertexts were overwritten, not left in the file or log. */
    assert_true(p.wiped);
    assert_false(in_files(f, before, 64));
    /* Nothing left to do. */
    OK(f->ts, tstore_reencrypt_step(f->ts, 64, &p));
    assert_true(p.done);
    free(before);
}

/* Retention policies for the tests: by device. */
typedef struct policies {
    int64_t max_age_ms;
    uint64_t max_bytes;
    const char *erase; /* this device is unknown */
    const char *fail;  /* the lookup fails for this one */
    int calls;
} policies;

static tstore_status policy(void *ctx, const char *device, tstore_retention_policy *out)
{
    policies *p = ctx;
    p->calls++;
    if (p->fail && strcmp(device, p->fail) == 0)
        return TSTORE_IO;
    if (p->erase && strcmp(device, p->erase) == 0) {
        out->erase = true;
        return TSTORE_OK;
    }
    out->max_age_ms = p->max_age_ms;
    out->max_bytes = p->max_bytes;
    return TSTORE_OK;
}

static uint64_t run_retention(fixture *f, policies *p, int64_t now, size_t slice, size_t *slices)
{
    tstore_retention_run run;
    memset(&run, 0, sizeof run);
    *slices = 0;
    while (!run.done) {
        OK(f->ts, tstore_apply_retention(f->ts, policy, p, now, slice, &run));
        (*slices)++;
        assert_true(*slices < 10000);
    }
    return run.deleted;
}

static void test_retention(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 1000, 200); /* T0 .. T0+999 s */
    fill(f->ts, DEV_B, 0, 100, 100);
    /* By age: keep the last 100 s before now = T0 + 1000 s. */
    policies p = {.max_age_ms = 100000, .fail = DEV_B};
    size_t slices;
    uint64_t del = run_retention(f, &p, T0 + 1000000, 64, &slices);
    assert_int_equal(del, 900);
    assert_true(slices >= 900 / 64);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 100);
    assert_int_equal(count_all(f->ts, DEV_B, NULL, 0, false), 100); /* its lookup failed */
    /* By size: at most ~half of what A holds now. */
    tstore_stats s;
    OK(f->ts, tstore_get_stats(f->ts, DEV_A, &s));
    p = (policies){.max_bytes = s.bytes / 2};
    del = run_retention(f, &p, T0 + 1000000, 7, &slices);
    OK(f->ts, tstore_get_stats(f->ts, DEV_A, &s));
    assert_true(s.bytes <= p.max_bytes);
    assert_true(s.readings >= 45 && s.readings <= 50);
    size_t left = count_all(f->ts, DEV_A, NULL, 0, false);
    assert_int_equal(left, s.readings);
    /* The oldest went: the first left is the newest minus (left - 1). */
    tstore_query q = {.device = DEV_A, .since_ms = INT64_MIN, .until_ms = INT64_MAX, .limit = 1};
    got g = {.dev = DEV_A};
    tstore_page page;
    OK(f->ts, tstore_query_page(f->ts, &q, collect, &g, &page));
    assert_int_equal(g.first_rx, T0 + (int64_t)(1000 - left) * 1000);
    /* A device the registry no longer knows is erased, with its row. */
    size_t b_left = count_all(f->ts, DEV_B, NULL, 0, false); /* capped too */
    assert_true(b_left >= 45 && b_left <= 50);
    p = (policies){.erase = DEV_B};
    del = run_retention(f, &p, T0, 30, &slices);
    assert_int_equal(del, b_left);
    assert_int_equal(count_all(f->ts, DEV_B, NULL, 0, false), 0);
    OK(f->ts, tstore_get_stats(f->ts, NULL, &s));
    assert_int_equal(s.devices, 1);
    /* Slices are bounded. */
    tstore_retention_run run = {0};
    assert_int_equal(tstore_apply_retention(f->ts, policy, &p, T0, 0, &run), TSTORE_INVALID);
    assert_int_equal(tstore_apply_retention(f->ts, policy, &p, T0, TSTORE_SLICE_MAX + 1, &run),
                     TSTORE_INVALID);
}

static void test_registry_policy(void **state)
{
    fixture *f = *state;
    char path[160], err[320];
    snprintf(path, sizeof path, "%s/registry.db", f->dir);
    registry *reg = NULL;
    assert_int_equal(registry_open(path, REGISTRY_OPEN_CREATE, &reg, err, sizeof err), REGISTRY_OK);
    char id[REGISTRY_DEVICE_ID_LEN + 1], other[REGISTRY_DEVICE_ID_LEN + 1];
    assert_int_equal(registry_device_id_new(id), REGISTRY_OK);
    assert_int_equal(registry_device_id_new(other), REGISTRY_OK);
    assert_int_equal(registry_principal_add(reg, REGISTRY_DEVICE, id), REGISTRY_OK);
    assert_int_equal(registry_group_add(reg, "short", ""), REGISTRY_OK);
    assert_int_equal(registry_member_add(reg, "short", id), REGISTRY_OK);
    tstore_retention_policy pol;
    OK(f->ts, tstore_registry_policy(reg, id, &pol));
    assert_int_equal(pol.max_age_ms, 0);
    assert_int_equal(pol.max_bytes, 0);
    assert_false(pol.erase);
    assert_int_equal(registry_group_setting_set(reg, "devices", "retention_days", "30"),
                     REGISTRY_OK);
    assert_int_equal(registry_group_setting_set(reg, "short", "retention_days", "2"), REGISTRY_OK);
    assert_int_equal(registry_group_setting_set(reg, "short", "retention_max_mb", "5"),
                     REGISTRY_OK);
    OK(f->ts, tstore_registry_policy(reg, id, &pol));
    assert_int_equal(pol.max_age_ms, 2 * 86400000LL);
    assert_int_equal(pol.max_bytes, 5u * 1048576u);
    /* A malformed value is ignored, not read as something shorter. */
    assert_int_equal(registry_group_setting_set(reg, "short", "retention_days", "1x"), REGISTRY_OK);
    OK(f->ts, tstore_registry_policy(reg, id, &pol));
    assert_int_equal(pol.max_age_ms, 30 * 86400000LL);
    /* Unknown device: erase. */
    OK(f->ts, tstore_registry_policy(reg, other, &pol));
    assert_true(pol.erase);
    registry_close(reg);
}

static void test_delete_device(void **state)
{
    fixture *f = *state;
    fill(f->ts, DEV_A, 0, 200, 50);
    fill(f->ts, DEV_B, 0, 20, 20);
    /* Grab a ciphertext of A straight from the file. */
    uint8_t ct[48];
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT r.ct FROM readings r WHERE r.dev = (SELECT dev"
                                        " FROM readings WHERE id = 1) ORDER BY r.id DESC LIMIT 1",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    memcpy(ct, sqlite3_column_blob(q, 0), sizeof ct);
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_true(in_files(f, ct, sizeof ct));

    uint64_t deleted = 0;
    bool wiped = false;
    OK(f->ts, tstore_delete_device(f->ts, DEV_A, &deleted, &wiped));
    assert_int_equal(deleted, 200);
    assert_true(wiped);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 0);
    assert_int_equal(count_all(f->ts, DEV_B, NULL, 0, false), 20);
    tstore_stats s;
    OK(f->ts, tstore_get_stats(f->ts, NULL, &s));
    assert_int_equal(s.devices, 1);
    assert_int_equal(s.readings, 20);
    /* Not only unlinked: the bytes are gone from the database and its log. */
    assert_false(in_files(f, ct, sizeof ct));
    /* Again: nothing to delete. */
    OK(f->ts, tstore_delete_device(f->ts, DEV_A, &deleted, &wiped));
    assert_int_equal(deleted, 0);
    /* The device can come back, as a new set of readings. */
    fill(f->ts, DEV_A, 0, 2, 2);
    assert_int_equal(count_all(f->ts, DEV_A, NULL, 0, false), 2);
}

static void test_no_plaintext_in_files(void **state)
{
    fixture *f = *state;
    static const char payload[] = "SECRET-PAYLOAD-kitchen-light-on";
    static const char stream[] = "living-room-motion";
    OK(f->ts, tstore_begin(f->ts));
    for (int i = 0; i < 50; i++) {
        tstore_reading r = mk(DEV_A, stream, payload, T0 + i, (uint64_t)i + 1);
        OK(f->ts, tstore_append(f->ts, &r));
    }
    OK(f->ts, tstore_commit(f->ts));
    assert_false(in_files(f, payload, strlen(payload)));
    assert_false(in_files(f, "kitchen", 7));
    assert_false(in_files(f, stream, strlen(stream)));
    assert_false(in_files(f, DEV_A, strlen(DEV_A)));
    /* The test can see what is there: the schema is plaintext. */
    assert_true(in_files(f, "readings_dev", 12));
    tstore_close(f->ts);
    f->ts = NULL;
    assert_false(in_files(f, payload, strlen(payload)));
    assert_false(in_files(f, stream, strlen(stream)));
    reopen(f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count_one(void *ctx, const tstore_reading *r)
{
    size_t *n = ctx;
    (*n) += r->payload.len == 64;
    return 0;
}

static void test_append_rate(void **state)
{
    fixture *f = *state;
    /* 100 devices, 64-byte payloads, 200 readings per commit (one loop pass
     * of a busy hub), fsync on every commit as in production. */
    enum { N = 40000, BATCH = 200, DEVICES = 100 };
    char devs[DEVICES][27];
    for (int d = 0; d < DEVICES; d++)
        snprintf(devs[d], sizeof devs[d], "dev%023d", d);
    char payload[65];
    memset(payload, 'p', 64);
    payload[64] = '\0';
    double t = now_s();
    for (int i = 0; i < N; i += BATCH) {
        OK(f->ts, tstore_begin(f->ts));
        for (int j = i; j < i + BATCH; j++) {
            tstore_reading r =
                mk(devs[j % DEVICES], "temperature", payload, T0 + j, (uint64_t)(j / DEVICES) + 1);
            OK(f->ts, tstore_append(f->ts, &r));
        }
        OK(f->ts, tstore_commit(f->ts));
    }
    double dt = now_s() - t;
    printf("tstore: %d appends (%d per commit, %d devices, 64-byte payloads, encrypted, "
           "synchronous=FULL) in %.3f s: %.0f appends/s\n",
           N, BATCH, DEVICES, dt, N / dt);
    t = now_s();
    tstore_query q = {.device = devs[7], .since_ms = INT64_MIN, .until_ms = INT64_MAX};
    tstore_page page;
    size_t n = 0;
    do {
        OK(f->ts, tstore_query_page(f->ts, &q, count_one, &n, &page));
        q.has_after = true;
        q.after = page.next;
    } while (page.more);
    dt = now_s() - t;
    assert_int_equal(n, N / DEVICES);
    printf("tstore: query of %zu readings of one device in %.4f s\n", n, dt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_query_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_ms_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swapped_rows_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_master_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotate_master, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reencrypt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_plaintext_in_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_rate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
