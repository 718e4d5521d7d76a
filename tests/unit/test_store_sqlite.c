/*
 * Unit tests for src/hub/store_sqlite.c, the broker's durable state in
 * SQLite. Every put and delete is checked by loading the store back and
 * comparing exact values: client ids and topics with 0x00 and 0xff inside,
 * empty payloads (which must come back as empty BLOBs, not NULL), 100 kB
 * payloads and the extreme integers each column can hold. Then the
 * transaction rules the broker relies on: writes outside begin refused,
 * rollback and failed writes discarding the whole pass, foreign keys checked
 * at commit, the cascade of session_delete, what survives close and reopen,
 * a schema version from a newer moatd refused, rows damaged behind the
 * store's back (written here with raw SQLite) failing the load with a
 * "corrupt" error, and a child process killed in the middle of a transaction
 * leaving exactly what it had committed. Each test works in its own
 * directory under /tmp, removed afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store_sqlite.h"

/* ---- helpers ------------------------------------------------------------ */

static codec_bytes view(const void *p, size_t n)
{
    codec_bytes b = {(const uint8_t *)p, n};
    return b;
}

static codec_bytes str(const char *s)
{
    return view(s, strlen(s));
}

static const codec_bytes none = {NULL, 0};

/* Wire bytes that a C string would cut short or mangle. */
static const uint8_t cid_bin[] = {'c', 0x00, 0xff, 'd'};
static const uint8_t topic_bin[] = {'a', '/', 0xff, 0x00, 'b'};
static const uint8_t filter_bin[] = {'a', '/', '+', '/', 0xfe, 0x00};

#define CID_BIN    view(cid_bin, sizeof cid_bin)
#define TOPIC_BIN  view(topic_bin, sizeof topic_bin)
#define FILTER_BIN view(filter_bin, sizeof filter_bin)

/* The view must hold exactly want, and never be a NULL pointer (loaders may
 * hand it to memcpy). */
static void expect_bytes(codec_bytes got, codec_bytes want)
{
    assert_non_null(got.ptr);
    assert_int_equal(got.len, want.len);
    if (want.len)
        assert_memory_equal(got.ptr, want.ptr, want.len);
}

static bool has(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* ---- fixture: a fresh directory and store per test --------------------- */

typedef struct fx {
    char dir[64];
    char path[128];
    broker_store *st;
} fx;

static void path_in(const fx *f, const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < outlen);
}

static broker_store *open_at(const char *path)
{
    broker_store *st = NULL;
    char err[256] = "";
    if (!store_sqlite_open(path, &st, err, sizeof err))
        fail_msg("open %s: %s", path, err);
    assert_non_null(st);
    return st;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    (void)snprintf(f->dir, sizeof f->dir, "/tmp/moat-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    path_in(f, "hub.db", f->path, sizeof f->path);
    f->st = open_at(f->path);
    *state = f;
    return 0;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[256];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int n = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (n > 0 && (size_t)n < sizeof p)
            (void)unlink(p);
    }
    (void)closedir(d);
    (void)rmdir(dir);
}

static int teardown(void **state)
{
    fx *f = *state;
    store_sqlite_close(f->st);
    rm_dir(f->dir);
    free(f);
    return 0;
}

/* Closes and reopens the fixture's store. */
static void reopen(fx *f)
{
    store_sqlite_close(f->st);
    f->st = open_at(f->path);
}

/* Runs SQL on the file with a plain connection, as an operator or a disk
 * fault would: none of the store's checks or settings apply. */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return v;
}

static void begin(broker_store *st)
{
    if (!st->begin(st->ctx))
        fail_msg("begin: %s", store_sqlite_error(st));
}

static void commit(broker_store *st)
{
    if (!st->commit(st->ctx))
        fail_msg("commit: %s", store_sqlite_error(st));
}

/* ---- a loader that copies everything it is given ----------------------- */

#define REC_MAX 32

typedef struct sub_rec {
    codec_bytes client_id, filter;
    uint8_t options;
    uint32_t sub_id;
} sub_rec;

typedef struct qos2_rec {
    codec_bytes client_id;
    uint16_t packet_id;
} qos2_rec;

typedef struct retained_rec {
    codec_bytes topic;
    uint64_t msg_id;
} retained_rec;

typedef struct rec {
    char order[7 * REC_MAX + 1]; /* one letter per callback: m s u q 2 r w */
    size_t calls;
    size_t stop_at; /* the callback number that returns false; 0: none */
    store_msg_row msgs[REC_MAX];
    size_t nmsgs;
    store_session_row sessions[REC_MAX];
    size_t nsessions;
    sub_rec subs[REC_MAX];
    size_t nsubs;
    store_queue_row queue[REC_MAX];
    size_t nqueue;
    qos2_rec qos2[REC_MAX];
    size_t nqos2;
    retained_rec retained[REC_MAX];
    size_t nretained;
    store_will_row wills[REC_MAX];
    size_t nwills;
    void *copies[8 * REC_MAX];
    size_t ncopies;
} rec;

/* Views are only valid during the callback: keep a copy (non-NULL even when
 * empty, like the store's own views). */
static codec_bytes keep(rec *r, codec_bytes b)
{
    assert_non_null(b.ptr);
    assert_true(r->ncopies < sizeof r->copies / sizeof r->copies[0]);
    uint8_t *p = malloc(b.len ? b.len : 1);
    assert_non_null(p);
    if (b.len)
        memcpy(p, b.ptr, b.len);
    r->copies[r->ncopies++] = p;
    return view(p, b.len);
}

static bool rec_call(rec *r, char kind)
{
    assert_true(r->calls < sizeof r->order - 1);
    r->order[r->calls++] = kind;
    return r->stop_at == 0 || r->calls != r->stop_at;
}

static bool rec_msg(void *ctx, const store_msg_row *row)
{
    rec *r = ctx;
    assert_true(r->nmsgs < REC_MAX);
    store_msg_row *m = &r->msgs[r->nmsgs++];
    *m = *row;
    m->topic = keep(r, row->topic);
    m->payload = keep(r, row->payload);
    m->props = keep(r, row->props);
    m->origin = keep(r, row->origin);
    return rec_call(r, 'm');
}

static bool rec_session(void *ctx, const store_session_row *row)
{
    rec *r = ctx;
    assert_true(r->nsessions < REC_MAX);
    store_session_row *x = &r->sessions[r->nsessions++];
    *x = *row;
    x->client_id = keep(r, row->client_id);
    x->principal = keep(r, row->principal);
    return rec_call(r, 's');
}

static bool rec_sub(void *ctx, codec_bytes client_id, codec_bytes filter, uint8_t options,
                    uint32_t sub_id)
{
    rec *r = ctx;
    assert_true(r->nsubs < REC_MAX);
    sub_rec *x = &r->subs[r->nsubs++];
    x->client_id = keep(r, client_id);
    x->filter = keep(r, filter);
    x->options = options;
    x->sub_id = sub_id;
    return rec_call(r, 'u');
}

static bool rec_queue(void *ctx, const store_queue_row *row)
{
    rec *r = ctx;
    assert_true(r->nqueue < REC_MAX);
    assert_true(row->nsub_ids <= 4);
    store_queue_row *q = &r->queue[r->nqueue++];
    *q = *row;
    q->client_id = keep(r, row->client_id);
    return rec_call(r, 'q');
}

static bool rec_qos2(void *ctx, codec_bytes client_id, uint16_t packet_id)
{
    rec *r = ctx;
    assert_true(r->nqos2 < REC_MAX);
    r->qos2[r->nqos2].client_id = keep(r, client_id);
    r->qos2[r->nqos2++].packet_id = packet_id;
    return rec_call(r, '2');
}

static bool rec_retained(void *ctx, codec_bytes topic, uint64_t msg_id)
{
    rec *r = ctx;
    assert_true(r->nretained < REC_MAX);
    r->retained[r->nretained].topic = keep(r, topic);
    r->retained[r->nretained++].msg_id = msg_id;
    return rec_call(r, 'r');
}

static bool rec_will(void *ctx, const store_will_row *row)
{
    rec *r = ctx;
    assert_true(r->nwills < REC_MAX);
    store_will_row *w = &r->wills[r->nwills++];
    *w = *row;
    w->client_id = keep(r, row->client_id);
    w->principal = keep(r, row->principal);
    return rec_call(r, 'w');
}

static rec *rec_new(void)
{
    rec *r = calloc(1, sizeof *r);
    assert_non_null(r);
    return r;
}

static void rec_free(rec *r)
{
    for (size_t i = 0; i < r->ncopies; i++)
        free(r->copies[i]);
    free(r);
}

static store_loader loader_for(rec *r)
{
    store_loader l = {r,         rec_msg,  rec_session,  rec_sub,
                      rec_queue, rec_qos2, rec_retained, rec_will};
    return l;
}

/* Loads the whole store; the load must succeed. */
static rec *load_all(broker_store *st)
{
    rec *r = rec_new();
    store_loader l = loader_for(r);
    if (!st->load(st->ctx, &l))
        fail_msg("load: %s", store_sqlite_error(st));
    return r;
}

/* ---- sample rows -------------------------------------------------------- */

static store_msg_row msg_row(uint64_t id)
{
    store_msg_row m = {
        .id = id,
        .topic = str("t"),
        .payload = str("p"),
        .props = none,
        .origin = none,
        .qos = 1,
        .retain = false,
        .expires_at = 0,
    };
    return m;
}

static void put_msg(broker_store *st, uint64_t id)
{
    store_msg_row m = msg_row(id);
    assert_true(st->msg_put(st->ctx, &m));
}

static store_queue_row queue_row(codec_bytes client_id, uint64_t seq, uint64_t msg_id)
{
    store_queue_row q = {.client_id = client_id, .seq = seq, .msg_id = msg_id, .qos = 1};
    return q;
}

static store_session_row session_row(codec_bytes client_id)
{
    store_session_row x = {
        .client_id = client_id,
        .kind = 1,
        .principal = str("dev-1"),
        .version = 5,
        .expiry_interval = 60,
        .expires_at = 0,
    };
    return x;
}

/* One row in every table, all for client cid (message id 1). */
static void put_one_of_each(broker_store *st, codec_bytes cid)
{
    put_msg(st, 1);
    store_session_row x = session_row(cid);
    assert_true(st->session_put(st->ctx, &x));
    assert_true(st->sub_put(st->ctx, cid, str("a/#"), 1, 9));
    store_queue_row q = queue_row(cid, 1, 1);
    q.nsub_ids = 1;
    q.sub_ids[0] = 9;
    q.shared = true;
    assert_true(st->queue_put(st->ctx, &q));
    assert_true(st->qos2_put(st->ctx, cid, 10));
    assert_true(st->retained_put(st->ctx, str("t"), 1));
    store_will_row w = {.client_id = cid, .kind = 1, .principal = str("dev-1"), .msg_id = 1};
    assert_true(st->will_put(st->ctx, &w));
}

/* ---- open --------------------------------------------------------------- */

static void test_open_creates_schema(void **state)
{
    fx *f = *state;
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SQLITE_SCHEMA_VERSION);
    /* WAL is a property of the file: a plain connection sees it. */
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    assert_int_equal(sqlite3_finalize(q), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"),
                     7);
    /* A new store is empty and says nothing went wrong. */
    assert_string_equal(store_sqlite_error(f->st), "");
    rec *r = load_all(f->st);
    assert_int_equal(r->calls, 0);
    rec_free(r);
    assert_int_equal(f->st->msg_max_id(f->st->ctx), 0);
    /* Opening it again keeps it as it is. */
    reopen(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SQLITE_SCHEMA_VERSION);
}

static void test_open_memory(void **state)
{
    (void)state;
    broker_store *st = open_at(":memory:");
    begin(st);
    put_msg(st, 4);
    commit(st);
    rec *r = load_all(st);
    assert_int_equal(r->nmsgs, 1);
    assert_int_equal(r->msgs[0].id, 4);
    rec_free(r);
    store_sqlite_close(st);
    store_sqlite_close(NULL);
}

static void test_open_refuses_newer_version(void **state)
{
    fx *f = *state;
    store_sqlite_close(f->st);
    f->st = NULL;
    raw_exec(f->path, "PRAGMA user_version = 3");

    broker_store *st = NULL;
    char err[256] = "";
    assert_false(store_sqlite_open(f->path, &st, err, sizeof err));
    assert_null(st);
    assert_true(has(err, "newer"));
    assert_true(has(err, "version 3"));
    /* Refused without touching the file. */
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 3);
    /* A NULL error buffer is fine. */
    assert_false(store_sqlite_open(f->path, &st, NULL, 0));
}

static void test_open_refuses_other_files(void **state)
{
    fx *f = *state;
    char path[128];
    broker_store *st = NULL;
    char err[256] = "";

    /* Some other program's database: tables but no schema version. */
    path_in(f, "other.db", path, sizeof path);
    raw_exec(path, "CREATE TABLE notes(x)");
    assert_false(store_sqlite_open(path, &st, err, sizeof err));
    assert_true(has(err, "not a moat store"));
    /* Left as it was: one table, and not switched to WAL. */
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);
    assert_int_equal(raw_int(path, "SELECT journal_mode = 'delete' FROM pragma_journal_mode"), 1);

    /* Not a database at all. */
    path_in(f, "junk.db", path, sizeof path);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 8192; i++)
        assert_int_equal(fputc('x', fp), 'x');
    assert_int_equal(fclose(fp), 0);
    err[0] = '\0';
    assert_false(store_sqlite_open(path, &st, err, sizeof err));
    assert_true(has(err, "not a database"));

    /* A directory that does not exist. */
    err[0] = '\0';
    assert_false(store_sqlite_open("/nonexistent-moat-dir/hub.db", &st, err, sizeof err));
    assert_true(has(err, "/nonexistent-moat-dir/hub.db"));
    assert_null(st);
}

/* ---- round trips -------------------------------------------------------- */

static void test_msgs_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    size_t big_len = 100000;
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    static const uint8_t props[] = {0x01, 0x01, 0x23, 0x00, 0x05};

    store_msg_row m1 = {1, TOPIC_BIN, str("hello"), view(props, sizeof props), CID_BIN, 1, true, 0};
    /* Empty payload, props and origin: NULL views with length 0. */
    store_msg_row m2 = {7, str("t"), none, none, none, 0, false, UINT64_MAX};
    store_msg_row m3 = {INT64_MAX, str("big"), view(big, big_len), none, str("o"),
                        2,         false,      1700000000123ull};
    begin(st);
    /* Inserted out of id order; loaded in id order. */
    assert_true(st->msg_put(st->ctx, &m3));
    assert_true(st->msg_put(st->ctx, &m1));
    assert_true(st->msg_put(st->ctx, &m2));
    commit(st);
    assert_int_equal(st->msg_max_id(st->ctx), INT64_MAX);

    rec *r = load_all(st);
    assert_int_equal(r->nmsgs, 3);
    assert_string_equal(r->order, "mmm");
    const store_msg_row *want[] = {&m1, &m2, &m3};
    for (size_t i = 0; i < 3; i++) {
        const store_msg_row *g = &r->msgs[i], *w = want[i];
        assert_int_equal(g->id, w->id);
        expect_bytes(g->topic, w->topic);
        expect_bytes(g->payload, w->payload);
        expect_bytes(g->props, w->props);
        expect_bytes(g->origin, w->origin);
        assert_int_equal(g->qos, w->qos);
        assert_int_equal(g->retain, w->retain);
        assert_int_equal(g->expires_at, w->expires_at);
    }
    rec_free(r);

    /* Put again replaces; delete removes; deleting what is not there is no
     * error. */
    store_msg_row m1b = m1;
    m1b.payload = none;
    m1b.qos = 2;
    m1b.retain = false;
    m1b.expires_at = 5;
    begin(st);
    assert_true(st->msg_put(st->ctx, &m1b));
    assert_true(st->msg_delete(st->ctx, 7));
    assert_true(st->msg_delete(st->ctx, 12345));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nmsgs, 2);
    assert_int_equal(r->msgs[0].id, 1);
    expect_bytes(r->msgs[0].topic, TOPIC_BIN);
    expect_bytes(r->msgs[0].payload, none);
    assert_int_equal(r->msgs[0].qos, 2);
    assert_false(r->msgs[0].retain);
    assert_int_equal(r->msgs[0].expires_at, 5);
    assert_int_equal(r->msgs[1].id, INT64_MAX);
    expect_bytes(r->msgs[1].payload, view(big, big_len));
    rec_free(r);
    free(big);
}

static void test_msg_max_id(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    assert_int_equal(st->msg_max_id(st->ctx), 0);
    begin(st);
    put_msg(st, 3);
    put_msg(st, 10);
    put_msg(st, 7);
    /* The transaction's own writes count. */
    assert_int_equal(st->msg_max_id(st->ctx), 10);
    commit(st);
    assert_int_equal(st->msg_max_id(st->ctx), 10);
    begin(st);
    put_msg(st, 20);
    assert_int_equal(st->msg_max_id(st->ctx), 20);
    st->rollback(st->ctx);
    assert_int_equal(st->msg_max_id(st->ctx), 10);
    begin(st);
    assert_true(st->msg_delete(st->ctx, 10));
    commit(st);
    assert_int_equal(st->msg_max_id(st->ctx), 7);
}

static void test_sessions_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    store_session_row s1 = {CID_BIN, 1, str("dev-1"), 5, 3600, 0};
    store_session_row s2 = {str("z"), 2, none, 4, UINT32_MAX, UINT64_MAX - 1};
    /* A client id that differs from cid_bin only after its 0x00. */
    static const uint8_t cid_bin2[] = {'c', 0x00, 0xff, 'e'};
    store_session_row s3 = {view(cid_bin2, sizeof cid_bin2), 255, str("svc"), 255, 0, 1};
    begin(st);
    assert_true(st->session_put(st->ctx, &s2));
    assert_true(st->session_put(st->ctx, &s3));
    assert_true(st->session_put(st->ctx, &s1));
    commit(st);

    rec *r = load_all(st);
    assert_int_equal(r->nsessions, 3);
    const store_session_row *want[] = {&s1, &s3, &s2}; /* by client id bytes */
    for (size_t i = 0; i < 3; i++) {
        const store_session_row *g = &r->sessions[i], *w = want[i];
        expect_bytes(g->client_id, w->client_id);
        assert_int_equal(g->kind, w->kind);
        expect_bytes(g->principal, w->principal);
        assert_int_equal(g->version, w->version);
        assert_int_equal(g->expiry_interval, w->expiry_interval);
        assert_int_equal(g->expires_at, w->expires_at);
    }
    rec_free(r);

    /* The session goes offline: same key, new values. */
    store_session_row s1b = s1;
    s1b.expires_at = 1700000000000ull;
    s1b.version = 4;
    begin(st);
    assert_true(st->session_put(st->ctx, &s1b));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nsessions, 3);
    expect_bytes(r->sessions[0].client_id, CID_BIN);
    assert_int_equal(r->sessions[0].expires_at, 1700000000000ull);
    assert_int_equal(r->sessions[0].version, 4);
    rec_free(r);
}

static void test_subs_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    assert_true(st->sub_put(st->ctx, str("z"), str("x"), 0, 7));
    assert_true(st->sub_put(st->ctx, CID_BIN, FILTER_BIN, 0x2d, UINT32_MAX));
    assert_true(st->sub_put(st->ctx, CID_BIN, str("a/#"), 1, 0));
    commit(st);

    rec *r = load_all(st);
    assert_int_equal(r->nsubs, 3);
    /* By client id, then filter. */
    expect_bytes(r->subs[0].client_id, CID_BIN);
    expect_bytes(r->subs[0].filter, str("a/#"));
    assert_int_equal(r->subs[0].options, 1);
    assert_int_equal(r->subs[0].sub_id, 0);
    expect_bytes(r->subs[1].client_id, CID_BIN);
    expect_bytes(r->subs[1].filter, FILTER_BIN);
    assert_int_equal(r->subs[1].options, 0x2d);
    assert_int_equal(r->subs[1].sub_id, UINT32_MAX);
    expect_bytes(r->subs[2].client_id, str("z"));
    expect_bytes(r->subs[2].filter, str("x"));
    assert_int_equal(r->subs[2].options, 0);
    assert_int_equal(r->subs[2].sub_id, 7);
    rec_free(r);

    /* Subscribing again to the same filter replaces; unsubscribing removes
     * only that filter; an unknown one is no error. */
    begin(st);
    assert_true(st->sub_put(st->ctx, CID_BIN, str("a/#"), 2, 42));
    assert_true(st->sub_delete(st->ctx, CID_BIN, FILTER_BIN));
    assert_true(st->sub_delete(st->ctx, CID_BIN, str("nope")));
    /* Same filter bytes, other client: not this one. */
    assert_true(st->sub_delete(st->ctx, str("y"), str("x")));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nsubs, 2);
    expect_bytes(r->subs[0].filter, str("a/#"));
    assert_int_equal(r->subs[0].options, 2);
    assert_int_equal(r->subs[0].sub_id, 42);
    expect_bytes(r->subs[1].client_id, str("z"));
    rec_free(r);
}

static void test_queue_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    store_queue_row q1 = queue_row(str("z"), 2, 1);
    q1.qos = 2;
    q1.retain = true;
    q1.state = 3;
    q1.packet_id = UINT16_MAX;
    q1.nsub_ids = 4;
    q1.sub_ids[0] = 0xdeadbeef;
    q1.sub_ids[1] = 1;
    q1.sub_ids[2] = UINT32_MAX;
    q1.sub_ids[3] = 0x00010203;
    store_queue_row q2 = queue_row(str("z"), 1, 2);
    q2.qos = 0;
    store_queue_row q3 = queue_row(CID_BIN, INT64_MAX, 2);
    q3.nsub_ids = 1;
    q3.sub_ids[0] = 268435455;
    q3.state = 255;

    begin(st);
    put_msg(st, 1);
    put_msg(st, 2);
    assert_true(st->queue_put(st->ctx, &q1));
    assert_true(st->queue_put(st->ctx, &q2));
    assert_true(st->queue_put(st->ctx, &q3));
    commit(st);

    rec *r = load_all(st);
    assert_int_equal(r->nqueue, 3);
    const store_queue_row *want[] = {&q3, &q2, &q1}; /* by client id, then seq */
    for (size_t i = 0; i < 3; i++) {
        const store_queue_row *g = &r->queue[i], *w = want[i];
        expect_bytes(g->client_id, w->client_id);
        assert_int_equal(g->seq, w->seq);
        assert_int_equal(g->msg_id, w->msg_id);
        assert_int_equal(g->qos, w->qos);
        assert_int_equal(g->retain, w->retain);
        assert_int_equal(g->state, w->state);
        assert_int_equal(g->packet_id, w->packet_id);
        assert_int_equal(g->nsub_ids, w->nsub_ids);
        for (size_t k = 0; k < w->nsub_ids; k++)
            assert_int_equal(g->sub_ids[k], w->sub_ids[k]);
    }
    rec_free(r);

    /* The delivery moves on (PUBREL sent, new packet id, fewer ids). */
    store_queue_row q1b = q1;
    q1b.state = 4;
    q1b.packet_id = 17;
    q1b.nsub_ids = 0;
    begin(st);
    assert_true(st->queue_put(st->ctx, &q1b));
    assert_true(st->queue_delete(st->ctx, str("z"), 1));
    assert_true(st->queue_delete(st->ctx, str("z"), 99));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nqueue, 2);
    expect_bytes(r->queue[0].client_id, CID_BIN);
    assert_int_equal(r->queue[1].seq, 2);
    assert_int_equal(r->queue[1].state, 4);
    assert_int_equal(r->queue[1].packet_id, 17);
    assert_int_equal(r->queue[1].nsub_ids, 0);
    rec_free(r);

    /* The stored layout is the documented one: 4-byte big-endian ids. */
    assert_int_equal(raw_int(f->path, "SELECT length(sub_ids) FROM queue WHERE seq = 2"), 0);
    assert_int_equal(
        raw_int(f->path, "SELECT sub_ids = X'0FFFFFFF' FROM queue WHERE seq = 9223372036854775807"),
        1);
}

static void test_qos2_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    assert_true(st->qos2_put(st->ctx, str("z"), 1));
    assert_true(st->qos2_put(st->ctx, CID_BIN, UINT16_MAX));
    assert_true(st->qos2_put(st->ctx, CID_BIN, 0));
    assert_true(st->qos2_put(st->ctx, CID_BIN, 0)); /* twice: still one row */
    commit(st);
    rec *r = load_all(st);
    assert_int_equal(r->nqos2, 3);
    expect_bytes(r->qos2[0].client_id, CID_BIN);
    assert_int_equal(r->qos2[0].packet_id, 0);
    expect_bytes(r->qos2[1].client_id, CID_BIN);
    assert_int_equal(r->qos2[1].packet_id, UINT16_MAX);
    expect_bytes(r->qos2[2].client_id, str("z"));
    assert_int_equal(r->qos2[2].packet_id, 1);
    rec_free(r);

    begin(st);
    assert_true(st->qos2_delete(st->ctx, CID_BIN, UINT16_MAX));
    assert_true(st->qos2_delete(st->ctx, str("z"), 2));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nqos2, 2);
    assert_int_equal(r->qos2[0].packet_id, 0);
    assert_int_equal(r->qos2[1].packet_id, 1);
    rec_free(r);
}

static void test_retained_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    put_msg(st, 1);
    put_msg(st, 2);
    put_msg(st, 3);
    assert_true(st->retained_put(st->ctx, TOPIC_BIN, 1));
    assert_true(st->retained_put(st->ctx, str("t"), 2));
    commit(st);
    rec *r = load_all(st);
    assert_int_equal(r->nretained, 2);
    expect_bytes(r->retained[0].topic, TOPIC_BIN);
    assert_int_equal(r->retained[0].msg_id, 1);
    expect_bytes(r->retained[1].topic, str("t"));
    assert_int_equal(r->retained[1].msg_id, 2);
    rec_free(r);

    /* A new retained message on the topic replaces the old one. */
    begin(st);
    assert_true(st->retained_put(st->ctx, TOPIC_BIN, 3));
    assert_true(st->msg_delete(st->ctx, 1));
    assert_true(st->retained_delete(st->ctx, str("t")));
    assert_true(st->msg_delete(st->ctx, 2));
    assert_true(st->retained_delete(st->ctx, str("never")));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nretained, 1);
    expect_bytes(r->retained[0].topic, TOPIC_BIN);
    assert_int_equal(r->retained[0].msg_id, 3);
    assert_int_equal(r->nmsgs, 1);
    rec_free(r);
}

static void test_wills_roundtrip(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    put_msg(st, 1);
    put_msg(st, 2);
    store_will_row a = {.client_id = CID_BIN,
                        .kind = 2,
                        .principal = str("svc"),
                        .msg_id = 1,
                        .delay = 30,
                        .expires = true,
                        .expiry = UINT32_MAX};
    store_will_row b = {.client_id = str("z"), .kind = 1, .principal = str("dev-1"), .msg_id = 2};
    assert_true(st->will_put(st->ctx, &a));
    assert_true(st->will_put(st->ctx, &b));
    commit(st);
    rec *r = load_all(st);
    assert_int_equal(r->nwills, 2);
    expect_bytes(r->wills[0].client_id, CID_BIN);
    assert_int_equal(r->wills[0].kind, 2);
    expect_bytes(r->wills[0].principal, str("svc"));
    assert_int_equal(r->wills[0].msg_id, 1);
    assert_int_equal(r->wills[0].delay, 30);
    assert_true(r->wills[0].expires);
    assert_int_equal(r->wills[0].expiry, UINT32_MAX);
    assert_false(r->wills[1].expires); /* no Message Expiry Interval */
    assert_int_equal(r->wills[1].expiry, 0);
    rec_free(r);

    /* Replaced by the next connection's will; deleted when published. */
    begin(st);
    a.msg_id = 2;
    a.expires = false;
    assert_true(st->will_put(st->ctx, &a));
    assert_true(st->will_delete(st->ctx, str("z")));
    assert_true(st->msg_delete(st->ctx, 1));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nwills, 1);
    assert_int_equal(r->wills[0].msg_id, 2);
    assert_false(r->wills[0].expires);
    rec_free(r);

    /* A will's message is referenced like a queued one's. */
    begin(st);
    assert_true(st->msg_delete(st->ctx, 2));
    assert_false(st->commit(st->ctx));
    assert_true(has(store_sqlite_error(st), "FOREIGN KEY"));
}

/* A version 1 file (before wills and share marks) is upgraded in place at
 * open, keeping its rows. */
static void test_open_upgrades_version_1(void **state)
{
    fx *f = *state;
    begin(f->st);
    put_msg(f->st, 1);
    store_session_row x = session_row(CID_BIN);
    assert_true(f->st->session_put(f->st->ctx, &x));
    store_queue_row q = queue_row(CID_BIN, 1, 1);
    assert_true(f->st->queue_put(f->st->ctx, &q));
    commit(f->st);
    store_sqlite_close(f->st);
    f->st = NULL;
    raw_exec(f->path, "DROP TABLE wills; ALTER TABLE queue DROP COLUMN shared;"
                      " PRAGMA user_version = 1");

    reopen(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SQLITE_SCHEMA_VERSION);
    rec *r = load_all(f->st);
    assert_string_equal(r->order, "msq");
    assert_false(r->queue[0].shared);
    rec_free(r);
    begin(f->st);
    store_will_row w = {.client_id = CID_BIN, .principal = str("dev-1"), .msg_id = 1};
    assert_true(f->st->will_put(f->st->ctx, &w));
    commit(f->st);
}

/* ---- load --------------------------------------------------------------- */

static void test_load_order(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    /* Written in reverse of the load order. */
    assert_true(st->retained_put(st->ctx, str("t"), 1));
    assert_true(st->qos2_put(st->ctx, str("c"), 1));
    store_queue_row q = queue_row(str("c"), 1, 1);
    assert_true(st->queue_put(st->ctx, &q));
    assert_true(st->sub_put(st->ctx, str("c"), str("f"), 0, 0));
    store_session_row x = session_row(str("c"));
    assert_true(st->session_put(st->ctx, &x));
    put_msg(st, 1);
    put_one_of_each(st, str("d"));
    commit(st);
    rec *r = load_all(st);
    /* put_one_of_each wrote msg 1 and retained "t" again: still one each. */
    assert_string_equal(r->order, "mssuuqq22rw");
    rec_free(r);
}

static void test_load_stops_when_told(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    put_one_of_each(st, CID_BIN);
    commit(st);
    /* Stop at each of the seven callbacks in turn. */
    for (size_t k = 1; k <= 7; k++) {
        rec *r = rec_new();
        r->stop_at = k;
        store_loader l = loader_for(r);
        assert_false(st->load(st->ctx, &l));
        assert_int_equal(r->calls, k);
        assert_true(has(store_sqlite_error(st), "stopped"));
        rec_free(r);
        /* The store is usable after a stopped load: statements were reset
         * and the read transaction ended. */
        begin(st);
        commit(st);
    }
    rec *r = load_all(st);
    assert_string_equal(r->order, "msuq2rw");
    rec_free(r);

    /* A loader may leave out tables it does not want. */
    r = rec_new();
    store_loader l = {r, NULL, rec_session, NULL, NULL, NULL, rec_retained, NULL};
    assert_true(st->load(st->ctx, &l));
    assert_string_equal(r->order, "sr");
    rec_free(r);
}

static void test_load_inside_transaction(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    put_msg(st, 1);
    /* Inside a write transaction load sees that transaction. */
    rec *r = load_all(st);
    assert_int_equal(r->nmsgs, 1);
    rec_free(r);
    put_msg(st, 2);
    commit(st);
    r = load_all(st);
    assert_int_equal(r->nmsgs, 2);
    rec_free(r);
}

/* ---- transactions ------------------------------------------------------- */

/* Calls every write once; returns how many succeeded. */
static int try_every_write(broker_store *st)
{
    store_msg_row m = msg_row(50);
    store_session_row x = session_row(str("c"));
    store_queue_row q = queue_row(str("c"), 1, 50);
    int ok = 0;
    ok += st->msg_put(st->ctx, &m);
    ok += st->session_put(st->ctx, &x);
    ok += st->sub_put(st->ctx, str("c"), str("f"), 0, 0);
    ok += st->queue_put(st->ctx, &q);
    ok += st->qos2_put(st->ctx, str("c"), 1);
    ok += st->retained_put(st->ctx, str("t"), 50);
    ok += st->retained_delete(st->ctx, str("t"));
    ok += st->qos2_delete(st->ctx, str("c"), 1);
    ok += st->queue_delete(st->ctx, str("c"), 1);
    ok += st->sub_delete(st->ctx, str("c"), str("f"));
    ok += st->session_delete(st->ctx, str("c"));
    ok += st->msg_delete(st->ctx, 50);
    return ok;
}

static void test_writes_need_begin(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    assert_int_equal(try_every_write(st), 0);
    assert_true(has(store_sqlite_error(st), "begin"));
    assert_false(st->commit(st->ctx));
    st->rollback(st->ctx); /* nothing to roll back: harmless */

    /* After a commit, writes are refused again until the next begin. */
    begin(st);
    assert_int_equal(try_every_write(st), 12);
    commit(st);
    assert_int_equal(try_every_write(st), 0);
    assert_false(st->commit(st->ctx));
    rec *r = load_all(st);
    assert_int_equal(r->calls, 0);
    rec_free(r);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM msgs"), 0);

    /* begin inside a transaction is a no-op: one commit ends it. */
    begin(st);
    begin(st);
    put_msg(st, 5);
    commit(st);
    assert_false(st->commit(st->ctx));
    assert_int_equal(st->msg_max_id(st->ctx), 5);
}

static void test_rollback_discards(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    begin(st);
    put_one_of_each(st, CID_BIN);
    commit(st);

    begin(st);
    put_msg(st, 2);
    assert_true(st->session_delete(st->ctx, CID_BIN));
    assert_true(st->retained_delete(st->ctx, str("t")));
    assert_true(st->msg_delete(st->ctx, 1));
    st->rollback(st->ctx);
    /* The rolled-back transaction is over. */
    store_msg_row m = msg_row(3);
    assert_false(st->msg_put(st->ctx, &m));

    rec *r = load_all(st);
    assert_string_equal(r->order, "msuq2rw");
    assert_int_equal(r->msgs[0].id, 1);
    expect_bytes(r->sessions[0].client_id, CID_BIN);
    rec_free(r);
}

static void test_failed_write_fails_commit(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    enum { MSG, QUEUE, SUB };
    struct {
        const char *why;
        int kind;
        store_msg_row m;
        store_queue_row q;
        codec_bytes bad_view;
    } cases[] = {
        {"message id 0", MSG, .m = {.id = 0}},
        {"message id above INT64_MAX", MSG, .m = {.id = (uint64_t)INT64_MAX + 1}},
        {"qos 3", MSG, .m = {.id = 1, .qos = 3}},
        {"5 subscription ids", QUEUE, .q = {.seq = 1, .msg_id = 100, .nsub_ids = 5}},
        {"queue seq 0", QUEUE, .q = {.seq = 0, .msg_id = 100}},
        {"queue seq above INT64_MAX", QUEUE, .q = {.seq = UINT64_MAX, .msg_id = 100}},
        {"queue msg id 0", QUEUE, .q = {.seq = 1, .msg_id = 0}},
        {"queue qos 3", QUEUE, .q = {.seq = 1, .msg_id = 100, .qos = 3}},
        {"NULL pointer with a length", SUB, .bad_view = {NULL, 3}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        begin(st);
        put_msg(st, 100);
        bool ok;
        if (cases[i].kind == SUB)
            ok = st->sub_put(st->ctx, str("c"), cases[i].bad_view, 0, 0);
        else if (cases[i].kind == QUEUE)
            ok = st->queue_put(st->ctx, &cases[i].q);
        else
            ok = st->msg_put(st->ctx, &cases[i].m);
        if (ok)
            fail_msg("accepted: %s", cases[i].why);
        /* The pass is lost as a whole: not even message 100 is kept. */
        assert_false(st->commit(st->ctx));
        assert_true(has(store_sqlite_error(st), "rolled back"));
        assert_int_equal(st->msg_max_id(st->ctx), 0);
    }
    /* And the store works afterwards. */
    begin(st);
    put_msg(st, 1);
    commit(st);
    assert_int_equal(st->msg_max_id(st->ctx), 1);
}

static void test_foreign_keys_checked_at_commit(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;

    /* A queue row and a retained topic pointing at no message. */
    begin(st);
    store_queue_row q = queue_row(str("c"), 1, 99);
    assert_true(st->queue_put(st->ctx, &q));
    assert_false(st->commit(st->ctx));
    assert_true(has(store_sqlite_error(st), "FOREIGN KEY"));
    begin(st);
    assert_true(st->retained_put(st->ctx, str("t"), 98));
    assert_false(st->commit(st->ctx));
    rec *r = load_all(st);
    assert_int_equal(r->calls, 0);
    rec_free(r);

    /* Order within a pass does not matter, only the state at commit. */
    begin(st);
    assert_true(st->queue_put(st->ctx, &q));
    put_msg(st, 99);
    commit(st);

    /* Deleting a message still queued fails the commit... */
    begin(st);
    assert_true(st->msg_delete(st->ctx, 99));
    assert_false(st->commit(st->ctx));
    /* ...deleting the queue row in the same pass (before or after) does not. */
    begin(st);
    assert_true(st->msg_delete(st->ctx, 99));
    assert_true(st->queue_delete(st->ctx, str("c"), 1));
    commit(st);
    r = load_all(st);
    assert_int_equal(r->calls, 0);
    rec_free(r);
}

static void test_session_delete_cascades(void **state)
{
    fx *f = *state;
    broker_store *st = f->st;
    /* cid_bin and a client id that is a prefix of it: neither may take the
     * other's rows. */
    static const uint8_t prefix[] = {'c', 0x00};
    begin(st);
    put_one_of_each(st, CID_BIN);
    put_one_of_each(st, view(prefix, sizeof prefix));
    commit(st);
    rec *r = load_all(st);
    assert_string_equal(r->order, "mssuuqq22rww");
    rec_free(r);

    begin(st);
    assert_true(st->session_delete(st->ctx, CID_BIN));
    commit(st);
    r = load_all(st);
    /* Messages, retained topics and wills are not the session's: a will
     * lives from its CONNECT until it is published or cancelled. */
    assert_string_equal(r->order, "msuq2rww");
    expect_bytes(r->sessions[0].client_id, view(prefix, sizeof prefix));
    expect_bytes(r->subs[0].client_id, view(prefix, sizeof prefix));
    expect_bytes(r->queue[0].client_id, view(prefix, sizeof prefix));
    expect_bytes(r->qos2[0].client_id, view(prefix, sizeof prefix));
    rec_free(r);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM subs"), 1);

    /* Rows without a session row go too (the broker may write them first). */
    begin(st);
    assert_true(st->sub_put(st->ctx, str("orphan"), str("x"), 0, 0));
    assert_true(st->qos2_put(st->ctx, str("orphan"), 5));
    assert_true(st->session_delete(st->ctx, str("orphan")));
    assert_true(st->session_delete(st->ctx, str("nobody")));
    commit(st);
    r = load_all(st);
    assert_string_equal(r->order, "msuq2rww");
    rec_free(r);
}

static void test_reopen_keeps_committed(void **state)
{
    fx *f = *state;
    begin(f->st);
    put_one_of_each(f->st, CID_BIN);
    commit(f->st);
    begin(f->st);
    put_msg(f->st, 2);
    assert_true(f->st->retained_delete(f->st->ctx, str("t")));
    /* Closed with the transaction open: it is rolled back. */
    reopen(f);

    rec *r = load_all(f->st);
    assert_string_equal(r->order, "msuq2rw");
    assert_int_equal(r->msgs[0].id, 1);
    expect_bytes(r->sessions[0].client_id, CID_BIN);
    expect_bytes(r->sessions[0].principal, str("dev-1"));
    assert_int_equal(r->sessions[0].expiry_interval, 60);
    expect_bytes(r->subs[0].filter, str("a/#"));
    assert_int_equal(r->queue[0].nsub_ids, 1);
    assert_int_equal(r->queue[0].sub_ids[0], 9);
    assert_true(r->queue[0].shared);
    assert_int_equal(r->qos2[0].packet_id, 10);
    expect_bytes(r->retained[0].topic, str("t"));
    expect_bytes(r->wills[0].client_id, CID_BIN);
    rec_free(r);
    assert_int_equal(f->st->msg_max_id(f->st->ctx), 1);
}

static void test_second_handle_sees_commits_only(void **state)
{
    fx *f = *state;
    broker_store *other = open_at(f->path);
    begin(f->st);
    put_msg(f->st, 1);
    rec *r = load_all(other);
    assert_int_equal(r->nmsgs, 0);
    rec_free(r);
    /* The writer holds the write lock from begin on (BEGIN IMMEDIATE); a
     * second writer would wait for it, so only read here. */
    commit(f->st);
    r = load_all(other);
    assert_int_equal(r->nmsgs, 1);
    rec_free(r);
    store_sqlite_close(other);
}

/* ---- damaged data ------------------------------------------------------- */

static void test_corrupt_rows_fail_load(void **state)
{
    fx *f = *state;
    static const char *const damage[] = {
        "UPDATE msgs SET qos = 3",
        "UPDATE msgs SET qos = 'x'",
        "UPDATE msgs SET qos = 1.5",
        "UPDATE msgs SET retain = 2",
        "UPDATE msgs SET id = -5",
        "UPDATE msgs SET topic = 42",
        "UPDATE msgs SET payload = 'text, not a blob'",
        "UPDATE msgs SET expires_at = X'00'",
        "UPDATE sessions SET kind = 256",
        "UPDATE sessions SET version = -1",
        "UPDATE sessions SET expiry_interval = 4294967296",
        "UPDATE sessions SET principal = 'dev-1'",
        "UPDATE sessions SET client_id = 7",
        "UPDATE subs SET options = -1",
        "UPDATE subs SET sub_id = 4294967296",
        "UPDATE subs SET filter = 'a/#'",
        "UPDATE queue SET sub_ids = X'0102030405'",
        "UPDATE queue SET shared = 2",
        "UPDATE wills SET expiry = -2",
        "UPDATE wills SET expiry = 4294967296",
        "UPDATE wills SET delay = -1",
        "UPDATE wills SET kind = 'x'",
        "UPDATE wills SET principal = 5",
        "UPDATE queue SET sub_ids = zeroblob(20)",
        "UPDATE queue SET sub_ids = 'abcd'",
        "UPDATE queue SET qos = 3",
        "UPDATE queue SET retain = -1",
        "UPDATE queue SET state = 256",
        "UPDATE queue SET packet_id = 65536",
        "UPDATE queue SET seq = 0",
        "UPDATE queue SET msg_id = 'one'",
        "UPDATE qos2 SET packet_id = 'x'",
        "UPDATE qos2 SET packet_id = 70000",
        "UPDATE retained SET msg_id = 0",
        "UPDATE retained SET topic = 't'",
        "DELETE FROM msgs",
        "UPDATE queue SET msg_id = 2",
        "UPDATE retained SET msg_id = 3",
    };
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        char path[128], name[32];
        (void)snprintf(name, sizeof name, "c%zu.db", i);
        path_in(f, name, path, sizeof path);
        broker_store *st = open_at(path);
        begin(st);
        put_one_of_each(st, CID_BIN);
        commit(st);
        store_sqlite_close(st);

        raw_exec(path, damage[i]);

        st = open_at(path);
        rec *r = rec_new();
        store_loader l = loader_for(r);
        if (st->load(st->ctx, &l))
            fail_msg("loaded despite: %s", damage[i]);
        const char *err = store_sqlite_error(st);
        if (strncmp(err, "corrupt", 7) != 0)
            fail_msg("%s: error \"%s\"", damage[i], err);
        rec_free(r);
        /* The store still answers. */
        begin(st);
        commit(st);
        store_sqlite_close(st);
    }
}

static void test_damaged_file_fails_cleanly(void **state)
{
    fx *f = *state;
    begin(f->st);
    for (uint64_t id = 1; id <= 200; id++) {
        store_msg_row m = msg_row(id);
        uint8_t payload[512];
        memset(payload, (int)id, sizeof payload);
        m.payload = view(payload, sizeof payload);
        assert_true(f->st->msg_put(f->st->ctx, &m));
    }
    commit(f->st);
    /* The last close checkpoints the WAL into the main file. */
    store_sqlite_close(f->st);
    f->st = NULL;

    /* Overwrite every page but the first (the schema) with garbage. */
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_true(sb.st_size > 8192);
    uint8_t junk[4096];
    memset(junk, 0xaa, sizeof junk);
    for (off_t off = 4096; off < sb.st_size; off += (off_t)sizeof junk)
        assert_int_equal(pwrite(fd, junk, sizeof junk, off), (ssize_t)sizeof junk);
    assert_int_equal(close(fd), 0);

    char err[256] = "";
    broker_store *st = NULL;
    if (store_sqlite_open(f->path, &st, err, sizeof err)) {
        rec *r = rec_new();
        store_loader l = loader_for(r);
        assert_false(st->load(st->ctx, &l));
        rec_free(r);
        assert_true(has(store_sqlite_error(st), "corrupt"));
        store_sqlite_close(st);
    } else {
        assert_true(has(err, "corrupt"));
    }
}

/* ---- crashes ------------------------------------------------------------ */

enum { CRASH_COMMITTED = 300, CRASH_UNCOMMITTED = 400 };

/* The message a crash test writes under id: its payload says which. */
static void crash_payload(uint64_t id, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(id * 31 + i);
}

/* In the child: commit CRASH_COMMITTED messages, then start a transaction
 * large enough that SQLite spills uncommitted pages into the WAL, and die
 * without committing it. Never returns; no cmocka here (the child must not
 * report into the parent's test run). Exit codes above 0 say what failed. */
static void crash_child(const char *path, bool kill_self)
{
    broker_store *st = NULL;
    static uint8_t payload[8192];
    if (!store_sqlite_open(path, &st, NULL, 0))
        _exit(2);
    if (!st->begin(st->ctx))
        _exit(3);
    for (uint64_t id = 1; id <= CRASH_COMMITTED; id++) {
        store_msg_row m = msg_row(id);
        crash_payload(id, payload, 100);
        m.payload = view(payload, 100);
        if (!st->msg_put(st->ctx, &m))
            _exit(4);
    }
    store_session_row x = session_row(str("kept"));
    if (!st->session_put(st->ctx, &x) || !st->commit(st->ctx))
        _exit(5);

    if (!st->begin(st->ctx))
        _exit(6);
    for (uint64_t id = CRASH_COMMITTED + 1; id <= CRASH_COMMITTED + CRASH_UNCOMMITTED; id++) {
        store_msg_row m = msg_row(id);
        crash_payload(id, payload, sizeof payload);
        m.payload = view(payload, sizeof payload);
        if (!st->msg_put(st->ctx, &m))
            _exit(7);
    }
    store_session_row y = session_row(str("lost"));
    if (!st->msg_delete(st->ctx, 1) || !st->session_delete(st->ctx, str("kept")) ||
        !st->session_put(st->ctx, &y))
        _exit(8);
    if (kill_self)
        (void)raise(SIGKILL);
    _exit(0); /* no close, no rollback: as if the process died here */
}

static void crash_and_check(fx *f, bool kill_self)
{
    /* The child opens its own handle; the fixture's is closed so that no
     * handle of the parent is shared across fork. */
    store_sqlite_close(f->st);
    f->st = NULL;
    (void)fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        crash_child(f->path, kill_self);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (kill_self) {
        if (!WIFSIGNALED(status))
            fail_msg("child did not die by signal (exit %d)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        assert_int_equal(WTERMSIG(status), SIGKILL);
    } else {
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* The uncommitted transaction reached the WAL file: the committed one
     * takes about 50 kB there, the uncommitted one 3.2 MB of which SQLite
     * spills what does not fit its 2 MB page cache. */
    char wal[160];
    int n = snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_true(n > 0 && (size_t)n < sizeof wal);
    struct stat sb;
    assert_int_equal(stat(wal, &sb), 0);
    if (sb.st_size <= 1024 * 1024)
        fail_msg("WAL has %lld bytes", (long long)sb.st_size);

    f->st = open_at(f->path);
    rec *r = rec_new();
    store_loader l = loader_for(r);
    /* Too many messages for the recorder: count them instead. */
    l.msg = NULL;
    assert_true(f->st->load(f->st->ctx, &l));
    assert_int_equal(r->nsessions, 1);
    expect_bytes(r->sessions[0].client_id, str("kept"));
    rec_free(r);
    assert_int_equal(f->st->msg_max_id(f->st->ctx), CRASH_COMMITTED);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM msgs"), CRASH_COMMITTED);
    assert_int_equal(raw_int(f->path, "SELECT min(id) FROM msgs"), 1);
    /* Every committed payload is intact. */
    uint8_t want[100];
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT id, payload FROM msgs ORDER BY id", -1, &q, NULL),
        SQLITE_OK);
    uint64_t id = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        id++;
        assert_int_equal(sqlite3_column_int64(q, 0), (int64_t)id);
        crash_payload(id, want, sizeof want);
        assert_int_equal(sqlite3_column_bytes(q, 1), sizeof want);
        assert_memory_equal(sqlite3_column_blob(q, 1), want, sizeof want);
    }
    assert_int_equal(id, CRASH_COMMITTED);
    assert_int_equal(sqlite3_finalize(q), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    /* And the store carries on from there. */
    begin(f->st);
    put_msg(f->st, CRASH_COMMITTED + 1);
    commit(f->st);
    reopen(f);
    assert_int_equal(f->st->msg_max_id(f->st->ctx), CRASH_COMMITTED + 1);
}

static void test_crash_sigkill_keeps_committed(void **state)
{
    crash_and_check(*state, true);
}

static void test_crash_exit_keeps_committed(void **state)
{
    crash_and_check(*state, false);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_creates_schema),
        T(test_open_memory),
        T(test_open_refuses_newer_version),
        T(test_open_refuses_other_files),
        T(test_msgs_roundtrip),
        T(test_msg_max_id),
        T(test_sessions_roundtrip),
        T(test_subs_roundtrip),
        T(test_queue_roundtrip),
        T(test_qos2_roundtrip),
        T(test_retained_roundtrip),
        T(test_wills_roundtrip),
        T(test_open_upgrades_version_1),
        T(test_load_order),
        T(test_load_stops_when_told),
        T(test_load_inside_transaction),
        T(test_writes_need_begin),
        T(test_rollback_discards),
        T(test_failed_write_fails_commit),
        T(test_foreign_keys_checked_at_commit),
        T(test_session_delete_cascades),
        T(test_reopen_keeps_committed),
        T(test_second_handle_sees_commits_only),
        T(test_corrupt_rows_fail_load),
        T(test_damaged_file_fails_cleanly),
        T(test_crash_sigkill_keeps_committed),
        T(test_crash_exit_keeps_committed),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
