/*
 * Unit tests for src/sdk/queue.c, libmoat's store-and-forward queue.
 *
 * The storage is an in-memory double of moat_storage that can lose power: it
 * is given a budget of bytes, the write that reaches the budget writes only a
 * prefix, and from then on every call fails until the test "reboots" (opens
 * the queue again over the same bytes, or over the bytes as of the last
 * successful sync: a write cache that was lost). Nothing is ever zeroed for
 * the queue, as on flash or in a preallocated file.
 *
 * The core test is the sweep: a scripted mix of pushes and pops, on small
 * areas so that it wraps many times (one holds only two or three records),
 * is cut at every byte offset of its whole write stream, keeping and losing
 * unsynced writes; after each cut the queue is reopened and must hold exactly
 * the records whose push returned MOAT_OK and whose pop did not, in order and
 * intact, plus at most the one operation in flight (the record a cut push
 * was writing, the record a cut pop or drop was removing), and go on handing
 * out larger sequence numbers. Then: corruption (bytes flipped in stored
 * records and headers: skipped and counted, never a wrong record), order,
 * sequence numbers across reopen and after emptying, wrap-around, both full
 * policies, the size limits, blank / 0xFF / random areas, the stale
 * records of an earlier format, a process restart followed by a power loss,
 * and sticky storage errors. Some checks read the queue's struct (tail)
 * to find where a record was stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moat/queue.h>

/* ------------------------------------------------------------ the double */

typedef struct mem {
    uint8_t *b;
    size_t size;
    long budget;          /* bytes that may still be written; < 0: no limit */
    int dead;             /* power lost: every call fails */
    size_t written;       /* bytes written so far (the write stream) */
    int fail_read;        /* fail reads (an I/O error, not power loss) */
    int fail_write_at;    /* fail the n-th write from now (1 = next); 0: never */
    uint8_t synced[8192]; /* the bytes as of the last successful sync */
} mem;

static size_t m_size(void *ctx, unsigned area)
{
    mem *m = ctx;
    return area == MOAT_AREA_QUEUE ? m->size : 0;
}

static moat_status m_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    mem *m = ctx;
    assert_int_equal(area, MOAT_AREA_QUEUE);
    assert_true(off <= m->size && len <= m->size - off);
    if (m->dead || m->fail_read)
        return MOAT_ERR_IO;
    memcpy(buf, m->b + off, len);
    return MOAT_OK;
}

static moat_status m_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    mem *m = ctx;
    assert_int_equal(area, MOAT_AREA_QUEUE);
    assert_true(off <= m->size && len <= m->size - off);
    if (m->dead)
        return MOAT_ERR_IO;
    if (m->fail_write_at > 0 && --m->fail_write_at == 0)
        return MOAT_ERR_IO;
    if (m->budget >= 0 && len > (size_t)m->budget) {
        memcpy(m->b + off, buf, (size_t)m->budget);
        m->written += (size_t)m->budget;
        m->budget = 0;
        m->dead = 1;
        return MOAT_ERR_IO;
    }
    memcpy(m->b + off, buf, len);
    m->written += len;
    if (m->budget >= 0)
        m->budget -= (long)len;
    return MOAT_OK;
}

/* With the budget spent, power is gone before the sync completes: the most
 * hostile moment (every byte written, no MOAT_OK returned). */
static moat_status m_sync(void *ctx, unsigned area)
{
    mem *m = ctx;
    assert_int_equal(area, MOAT_AREA_QUEUE);
    if (m->dead || m->budget == 0) {
        m->dead = 1;
        return MOAT_ERR_IO;
    }
    memcpy(m->synced, m->b, m->size);
    return MOAT_OK;
}

static moat_storage storage_of(mem *m)
{
    moat_storage st = {m, m_size, m_read, m_write, m_sync};
    return st;
}

static void mem_init(mem *m, uint8_t *b, size_t size, int fill)
{
    memset(m, 0, sizeof *m);
    m->b = b;
    m->size = size;
    m->budget = -1;
    assert_true(size <= sizeof m->synced);
    memset(b, fill, size);
    memcpy(m->synced, b, size);
}

/* Power back. Writes not synced before the loss may have reached storage
 * or not: `lose` picks the second (a write cache that was dropped). */
static void reboot(mem *m, int lose)
{
    if (lose)
        memcpy(m->b, m->synced, m->size);
    m->dead = 0;
    m->budget = -1;
    m->fail_read = 0;
    m->fail_write_at = 0;
}

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Payload of the n-th record a test pushes: its bytes say who it is. */
static size_t payload(uint32_t n, size_t len, uint8_t *out)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(n * 131u + i * 7u + (n >> 8));
    return len;
}

#define MAXM 512
#define MAXD 160

typedef struct mrec {
    uint64_t seq;
    size_t len;
    uint8_t d[MAXD];
} mrec;

/* The records a test expects, oldest first. */
typedef struct model {
    mrec r[MAXM];
    size_t n;
} model;

static void model_push(model *m, uint64_t seq, const uint8_t *d, size_t len)
{
    assert_true(m->n < MAXM && len <= MAXD);
    m->r[m->n].seq = seq;
    m->r[m->n].len = len;
    memcpy(m->r[m->n].d, d, len);
    m->n++;
}

static void model_drop(model *m, size_t k)
{
    assert_true(k <= m->n);
    memmove(m->r, m->r + k, (m->n - k) * sizeof m->r[0]);
    m->n -= k;
}

/* Everything queued, via peek. */
static void read_all(moat_queue *q, model *out)
{
    moat_queue_stats s;
    moat_queue_get_stats(q, &s);
    out->n = 0;
    for (uint32_t i = 0; i < s.count; i++) {
        uint8_t buf[MOAT_QUEUE_MAX_RECORD];
        uint64_t seq;
        size_t len;
        assert_int_equal(moat_queue_peek(q, i, &seq, buf, sizeof buf, &len), MOAT_OK);
        if (i > 0)
            assert_true(seq > out->r[out->n - 1].seq);
        assert_true(len <= MAXD);
        model_push(out, seq, buf, len);
    }
    uint64_t seq;
    size_t len;
    assert_int_equal(moat_queue_peek(q, s.count, &seq, NULL, 0, &len), MOAT_ERR_STATE);
}

static int same(const mrec *a, const mrec *b)
{
    return a->seq == b->seq && a->len == b->len && memcmp(a->d, b->d, a->len) == 0;
}

static void expect_same(const model *got, const model *want)
{
    assert_int_equal(got->n, want->n);
    for (size_t i = 0; i < want->n; i++)
        assert_true(same(&got->r[i], &want->r[i]));
}

/* ------------------------------------------------------------ basics */

static void test_order(void **state)
{
    (void)state;
    static uint8_t area[2048];
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[64], buf[64];
    uint64_t seq, seqs[10];
    size_t len;

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_pop(&q, 1), MOAT_ERR_STATE);
    assert_int_equal(moat_queue_peek(&q, 0, &seq, buf, sizeof buf, &len), MOAT_ERR_STATE);
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(moat_queue_push(&q, d, payload(i, 5 + i, d), &seqs[i]), MOAT_OK);
        if (i > 0)
            assert_true(seqs[i] > seqs[i - 1]);
    }
    assert_int_equal(seqs[0], 1);
    /* Peek any index; a short buffer says how much is needed. */
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(moat_queue_peek(&q, i, &seq, buf, sizeof buf, &len), MOAT_OK);
        assert_int_equal(seq, seqs[i]);
        assert_int_equal(len, 5 + i);
        payload(i, len, d);
        assert_memory_equal(buf, d, len);
    }
    assert_int_equal(moat_queue_peek(&q, 3, &seq, buf, 7, &len), MOAT_ERR_SPACE);
    assert_int_equal(len, 8);
    assert_int_equal(moat_queue_peek(&q, 10, &seq, buf, sizeof buf, &len), MOAT_ERR_STATE);
    /* Pop only the oldest, by its number. */
    assert_int_equal(moat_queue_pop(&q, seqs[1]), MOAT_ERR_ARG);
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(moat_queue_peek(&q, 0, &seq, buf, sizeof buf, &len), MOAT_OK);
        assert_int_equal(seq, seqs[i]);
        assert_int_equal(moat_queue_pop(&q, seqs[i]), MOAT_OK);
    }
    moat_queue_stats s;
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.bytes_used, 0);
    assert_int_equal(s.capacity, sizeof area - MOAT_QUEUE_HEADER_BYTES);
    /* Zero-length records are records. */
    assert_int_equal(moat_queue_push(&q, NULL, 0, &seq), MOAT_OK);
    assert_int_equal(moat_queue_peek(&q, 0, &seq, NULL, 0, &len), MOAT_OK);
    assert_int_equal(len, 0);
    /* Arguments. */
    assert_int_equal(moat_queue_push(&q, NULL, 1, &seq), MOAT_ERR_ARG);
    assert_int_equal(moat_queue_push(NULL, d, 1, &seq), MOAT_ERR_ARG);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, (moat_queue_full_policy)7),
                     MOAT_ERR_ARG);
}

static void test_seq_across_reopen(void **state)
{
    (void)state;
    static uint8_t area[512];
    mem m;
    mem_init(&m, area, sizeof area, 0xff);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[16];
    uint64_t seq, last = 0;

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST), MOAT_OK);
    for (int round = 0; round < 40; round++) {
        /* Push a few, reopen, push more, empty it, reopen while empty. */
        for (int i = 0; i < round % 4 + 1; i++) {
            assert_int_equal(moat_queue_push(&q, d, payload((uint32_t)i, 9, d), &seq), MOAT_OK);
            assert_true(seq > last);
            last = seq;
        }
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                         MOAT_OK);
        assert_int_equal(moat_queue_push(&q, d, 3, &seq), MOAT_OK);
        assert_int_equal(seq, last + 1);
        last = seq;
        moat_queue_stats s;
        moat_queue_get_stats(&q, &s);
        while (s.count > 0) {
            assert_int_equal(moat_queue_peek(&q, 0, &seq, NULL, 0, NULL), MOAT_ERR_SPACE);
            assert_int_equal(moat_queue_pop(&q, seq), MOAT_OK);
            moat_queue_get_stats(&q, &s);
        }
        for (int k = 0; k < round % 3; k++)
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                             MOAT_OK);
        assert_int_equal(moat_queue_push(&q, d, 1, &seq), MOAT_OK);
        assert_int_equal(seq, last + 1);
        last = seq;
    }
}

/* Random pushes and pops with varied sizes on a small area (the ring wraps
 * hundreds of times, records often do not fit before the end), checked
 * against a model, reopening now and then. */
static void test_wraparound(void **state)
{
    (void)state;
    static uint8_t area[64 + 300];
    static model want, got;
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[MAXD];
    uint64_t seq, last = 0;
    uint32_t n = 0;
    rng_state = 0x9e3779b97f4a7c15u;
    want.n = 0;

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    for (int op = 0; op < 20000; op++) {
        if (want.n > 0 && rnd() % 100 < 45) {
            assert_int_equal(moat_queue_pop(&q, want.r[0].seq), MOAT_OK);
            model_drop(&want, 1);
        } else {
            size_t len = payload(n, rnd() % 70, d);
            moat_status s = moat_queue_push(&q, d, len, &seq);
            if (s == MOAT_OK) {
                assert_true(seq > last);
                last = seq;
                model_push(&want, seq, d, len);
                n++;
            } else {
                assert_int_equal(s, MOAT_ERR_FULL);
            }
        }
        moat_queue_stats s;
        moat_queue_get_stats(&q, &s);
        assert_int_equal(s.count, want.n);
        assert_true(s.bytes_used <= s.capacity);
        if (op % 97 == 0)
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW),
                             MOAT_OK);
        if (op % 13 == 0) {
            read_all(&q, &got);
            expect_same(&got, &want);
        }
    }
    assert_true(n > 5000); /* many laps of a 300-byte ring */
}

static void test_full_refuse(void **state)
{
    (void)state;
    static uint8_t area[64 + 256];
    static model want, got;
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[32];
    uint64_t seq;
    want.n = 0;

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    /* 32-byte records: 8 fill the 256-byte ring exactly. */
    for (uint32_t i = 0; i < 8; i++) {
        assert_int_equal(moat_queue_push(&q, d, payload(i, 16, d), &seq), MOAT_OK);
        model_push(&want, seq, d, 16);
    }
    moat_queue_stats s;
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.bytes_used, s.capacity);
    for (int i = 0; i < 3; i++)
        assert_int_equal(moat_queue_push(&q, d, 1, &seq), MOAT_ERR_FULL);
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.refused, 3);
    assert_int_equal(s.dropped, 0);
    read_all(&q, &got);
    expect_same(&got, &want);
    /* Room again after a pop; the refused pushes used no numbers. */
    assert_int_equal(moat_queue_pop(&q, want.r[0].seq), MOAT_OK);
    model_drop(&want, 1);
    assert_int_equal(moat_queue_push(&q, d, payload(99, 16, d), &seq), MOAT_OK);
    assert_int_equal(seq, want.r[want.n - 1].seq + 1);
    model_push(&want, seq, d, 16);
    assert_int_equal(moat_queue_push(&q, d, 0, &seq), MOAT_ERR_FULL);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    read_all(&q, &got);
    expect_same(&got, &want);
}

static void test_full_drop_oldest(void **state)
{
    (void)state;
    static uint8_t area[64 + 256];
    static model want, got;
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[200];
    uint64_t seq;
    want.n = 0;

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST), MOAT_OK);
    for (uint32_t i = 0; i < 20; i++) {
        assert_int_equal(moat_queue_push(&q, d, payload(i, 16, d), &seq), MOAT_OK);
        model_push(&want, seq, d, 16);
        if (want.n > 8)
            model_drop(&want, 1);
    }
    moat_queue_stats s;
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.dropped, 12);
    assert_int_equal(s.refused, 0);
    read_all(&q, &got);
    expect_same(&got, &want);
    /* A bigger record pushes out as many as it needs: 76 bytes, three. */
    assert_int_equal(moat_queue_push(&q, d, payload(50, 60, d), &seq), MOAT_OK);
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.dropped, 15);
    assert_int_equal(s.count, 6);
    model_drop(&want, 3);
    model_push(&want, seq, d, 60);
    read_all(&q, &got);
    expect_same(&got, &want);
    /* One that cannot go after the newest (no straddling the end) nor
     * before the oldest empties the queue and goes to the ring's start. */
    assert_int_equal(moat_queue_push(&q, d, payload(51, 150, d), &seq), MOAT_OK);
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.dropped, 21);
    want.n = 0;
    model_push(&want, seq, d, 150);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST), MOAT_OK);
    read_all(&q, &got);
    expect_same(&got, &want);
}

static void test_limits(void **state)
{
    (void)state;
    static uint8_t big[MOAT_QUEUE_HEADER_BYTES + MOAT_QUEUE_RECORD_SPACE(MOAT_QUEUE_MAX_RECORD)];
    static uint8_t d[MOAT_QUEUE_MAX_RECORD + 1], buf[MOAT_QUEUE_MAX_RECORD];
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint64_t seq;
    size_t len;

    /* An area exactly one maximum record big. */
    mem_init(&m, big, sizeof big, 0x5a);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, MOAT_QUEUE_MAX_RECORD + 1, &seq), MOAT_ERR_ARG);
    payload(7, MOAT_QUEUE_MAX_RECORD, d);
    assert_int_equal(moat_queue_push(&q, d, MOAT_QUEUE_MAX_RECORD, &seq), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, 0, &seq), MOAT_ERR_FULL);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_peek(&q, 0, &seq, buf, sizeof buf, &len), MOAT_OK);
    assert_int_equal(len, MOAT_QUEUE_MAX_RECORD);
    assert_memory_equal(buf, d, len);
    /* Drop-oldest with a record as big as the ring: it replaces the other. */
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, MOAT_QUEUE_MAX_RECORD - 2, &seq), MOAT_OK);
    moat_queue_stats s;
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.dropped, 1);

    /* A record that cannot fit the area at all is refused before anything
     * is dropped. */
    m.size = MOAT_QUEUE_HEADER_BYTES + 100;
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, 5, &seq), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, 100 - MOAT_QUEUE_RECORD_OVERHEAD + 1, &seq),
                     MOAT_ERR_SPACE);
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.dropped, 0);

    /* Areas too small to hold a record; sizes not a multiple of 4. */
    m.size = MOAT_QUEUE_MIN_AREA - 1;
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW),
                     MOAT_ERR_SPACE);
    for (size_t size = MOAT_QUEUE_MIN_AREA; size < MOAT_QUEUE_MIN_AREA + 12; size++) {
        memset(big, 0, sizeof big);
        m.size = size;
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
        for (int i = 0; i < 5; i++) {
            assert_int_equal(moat_queue_push(&q, NULL, 0, &seq), MOAT_OK);
            assert_int_equal(moat_queue_push(&q, NULL, 0, &seq), MOAT_ERR_FULL);
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW),
                             MOAT_OK);
            assert_int_equal(moat_queue_pop(&q, seq), MOAT_OK);
        }
    }
}

/* New areas, whatever they hold, open as empty queues and work. */
static void test_blank_areas(void **state)
{
    (void)state;
    static uint8_t area[4096];
    static const size_t sizes[] = {MOAT_QUEUE_MIN_AREA + 36, 100, 333, 1024, 4096};
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[40], buf[40];
    uint64_t seq, seq2;
    size_t len;
    rng_state = 12345;

    for (int kind = 0; kind < 12; kind++) {
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            mem_init(&m, area, sizes[z], kind == 0 ? 0x00 : 0xff);
            if (kind >= 2)
                for (size_t i = 0; i < sizes[z]; i++)
                    area[i] = (uint8_t)rnd();
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                             MOAT_OK);
            moat_queue_stats s;
            moat_queue_get_stats(&q, &s);
            assert_int_equal(s.count, 0);
            assert_int_equal(s.corrupt_skipped, 0);
            assert_int_equal(moat_queue_push(&q, d, payload(1, 20, d), &seq), MOAT_OK);
            assert_int_equal(seq, 1);
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                             MOAT_OK);
            assert_int_equal(moat_queue_peek(&q, 0, &seq2, buf, sizeof buf, &len), MOAT_OK);
            assert_int_equal(seq2, seq);
            assert_int_equal(len, 20);
            assert_memory_equal(buf, d, 20);
            moat_queue_get_stats(&q, &s);
            assert_int_equal(s.count, 1);
        }
    }
}

/* Records of an earlier life of the area stay dead when both headers are
 * destroyed: the fresh format's salt makes their CRCs fail. */
static void test_old_format_records(void **state)
{
    (void)state;
    static uint8_t area[1024];
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[40];
    uint64_t seq;
    rng_state = 777;

    for (int round = 0; round < 20; round++) {
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                         MOAT_OK);
        for (uint32_t i = 0; i < 10; i++)
            assert_int_equal(moat_queue_push(&q, d, payload(i, 30, d), &seq), MOAT_OK);
        /* Both header copies destroyed: zeroed, or random. */
        for (size_t i = 0; i < MOAT_QUEUE_HEADER_BYTES; i++)
            area[i] = round % 2 ? (uint8_t)rnd() : 0;
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                         MOAT_OK);
        moat_queue_stats s;
        moat_queue_get_stats(&q, &s);
        assert_int_equal(s.count, 0);
        assert_int_equal(moat_queue_push(&q, d, payload(100, 30, d), &seq), MOAT_OK);
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                         MOAT_OK);
        moat_queue_get_stats(&q, &s);
        assert_int_equal(s.count, 1);
    }
}

/* ------------------------------------------------------------ power loss */

typedef struct inflight {
    int kind;     /* 0 none, 1 push, 2 pop */
    model gone;   /* what the cut pop or drop was removing */
    mrec pushing; /* what the cut push was writing (seq unknown) */
} inflight;

/* Run the script (from a fixed seed) until it ends or the power goes.
 * want: what must survive; fl: the one operation in flight at the cut. */
static void run_script(mem *m, int policy, uint64_t seed, int ops, uint32_t pop_pct, size_t maxlen,
                       model *want, inflight *fl, uint64_t *max_seq, moat_queue_stats *end)
{
    moat_storage st = storage_of(m);
    moat_queue q;
    uint8_t d[MAXD];
    fl->kind = 0;
    rng_state = seed;
    if (moat_queue_open(&q, &st, MOAT_AREA_QUEUE, (moat_queue_full_policy)policy) != MOAT_OK) {
        assert_true(m->dead);
        return;
    }
    for (int op = 0; op < ops; op++) {
        uint32_t r = rnd();
        moat_queue_stats s0, s1;
        moat_queue_get_stats(&q, &s0);
        if (want->n > 0 && r % 100 < pop_pct) {
            fl->kind = 2;
            fl->gone.n = 0;
            model_push(&fl->gone, want->r[0].seq, want->r[0].d, want->r[0].len);
            mrec head = want->r[0];
            model_drop(want, 1);
            if (moat_queue_pop(&q, head.seq) != MOAT_OK)
                return;
        } else {
            uint64_t seq;
            size_t len = payload((uint32_t)op, (r >> 8) % (maxlen + 1), d);
            fl->kind = 1;
            fl->pushing.len = len;
            memcpy(fl->pushing.d, d, len);
            moat_status s = moat_queue_push(&q, d, len, &seq);
            moat_queue_get_stats(&q, &s1);
            size_t dropped = (size_t)(s1.dropped - s0.dropped);
            fl->gone.n = 0;
            for (size_t i = 0; i < dropped; i++)
                model_push(&fl->gone, want->r[i].seq, want->r[i].d, want->r[i].len);
            model_drop(want, dropped);
            if (s == MOAT_ERR_FULL && !m->dead)
                continue;
            if (s != MOAT_OK)
                return;
            assert_true(seq > *max_seq);
            *max_seq = seq;
            model_push(want, seq, d, len);
        }
        assert_false(m->dead);
    }
    fl->kind = 0;
    moat_queue_get_stats(&q, end);
}

/* After a reboot: exactly the surviving records, with what the cut
 * operation may leave (all of `gone`, in front; the pushed record, last). */
static void check_recovered(moat_queue *q, const model *want, const inflight *fl, uint64_t *max_seq)
{
    static model got;
    read_all(q, &got);
    size_t i = 0;
    if (fl->kind != 0 && fl->gone.n > 0 && got.n > 0 && same(&got.r[0], &fl->gone.r[0])) {
        assert_true(got.n >= fl->gone.n);
        for (; i < fl->gone.n; i++)
            assert_true(same(&got.r[i], &fl->gone.r[i]));
    }
    assert_true(got.n >= i + want->n);
    for (size_t k = 0; k < want->n; k++)
        assert_true(same(&got.r[i + k], &want->r[k]));
    i += want->n;
    if (got.n > i) {
        /* Only the record the cut push was writing, complete. */
        assert_int_equal(got.n, i + 1);
        assert_int_equal(fl->kind, 1);
        assert_true(got.r[i].seq > *max_seq);
        assert_int_equal(got.r[i].len, fl->pushing.len);
        assert_memory_equal(got.r[i].d, fl->pushing.d, fl->pushing.len);
        *max_seq = got.r[i].seq;
    }
    moat_queue_stats s;
    moat_queue_get_stats(q, &s);
    assert_int_equal(s.corrupt_skipped, 0);
}

static uint64_t oldest(moat_queue *q)
{
    uint8_t buf[MOAT_QUEUE_MAX_RECORD];
    uint64_t seq;
    assert_int_equal(moat_queue_peek(q, 0, &seq, buf, sizeof buf, NULL), MOAT_OK);
    return seq;
}

/* Numbers go on increasing after recovery, also through emptying it. */
static void check_goes_on(moat_queue *q, const moat_storage *st, int policy, uint64_t max_seq)
{
    uint8_t d[8];
    uint64_t seq, seq2;
    moat_queue_stats s;
    moat_status rc = moat_queue_push(q, d, payload(1, 8, d), &seq);
    if (rc == MOAT_ERR_FULL) {
        assert_int_equal(moat_queue_pop(q, oldest(q)), MOAT_OK);
        rc = moat_queue_push(q, d, 8, &seq);
    }
    assert_int_equal(rc, MOAT_OK);
    assert_true(seq > max_seq);
    moat_queue_get_stats(q, &s);
    while (s.count > 0) {
        assert_int_equal(moat_queue_pop(q, oldest(q)), MOAT_OK);
        moat_queue_get_stats(q, &s);
    }
    assert_int_equal(moat_queue_open(q, st, MOAT_AREA_QUEUE, (moat_queue_full_policy)policy),
                     MOAT_OK);
    assert_int_equal(moat_queue_push(q, d, 8, &seq2), MOAT_OK);
    assert_true(seq2 > seq);
}

static void sweep(int policy, uint64_t seed, int ops, uint32_t pop_pct, size_t ring, size_t maxlen)
{
    static uint8_t area[64 + 320];
    size_t size = MOAT_QUEUE_HEADER_BYTES + ring;
    static model want;
    static inflight fl;
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    moat_queue_stats s;
    uint64_t max_seq = 0;

    /* The whole write stream, uncut: it laps the ring and meets the policy. */
    assert_true(size <= sizeof area);
    mem_init(&m, area, size, 0);
    want.n = 0;
    run_script(&m, policy, seed, ops, pop_pct, maxlen, &want, &fl, &max_seq, &s);
    size_t total = m.written;
    assert_int_equal(fl.kind, 0);
    assert_true(total > 5 * size);
    assert_true(policy == MOAT_QUEUE_DROP_OLDEST ? s.dropped > 5 : s.refused > 5);

    /* Cut after every byte (cut == total: after the last write, before
     * its sync); on the second pass the unsynced writes are lost too. */
    for (size_t k = 0; k <= 2 * total + 1; k++) {
        int lose = k > total;
        size_t cut = lose ? k - total - 1 : k;
        mem_init(&m, area, size, 0);
        m.budget = (long)cut;
        want.n = 0;
        max_seq = 0;
        run_script(&m, policy, seed, ops, pop_pct, maxlen, &want, &fl, &max_seq, &s);
        assert_true(m.dead);
        reboot(&m, lose);
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, (moat_queue_full_policy)policy),
                         MOAT_OK);
        check_recovered(&q, &want, &fl, &max_seq);
        /* Open again: recovery is stable (it wrote nothing that changes it). */
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, (moat_queue_full_policy)policy),
                         MOAT_OK);
        check_goes_on(&q, &st, policy, max_seq);
    }
}

static void test_power_loss_sweep_refuse(void **state)
{
    (void)state;
    sweep(MOAT_QUEUE_REFUSE_NEW, 0x1234567u, 160, 40, 320, 60);
}

static void test_power_loss_sweep_drop(void **state)
{
    (void)state;
    /* Few pops: the queue is mostly full and pushes drop the oldest. */
    sweep(MOAT_QUEUE_DROP_OLDEST, 0xfeedfaceu, 90, 25, 320, 60);
}

/* A ring of two or three records: it empties and wraps all the time, and
 * the record that wraps often covers where the queue was last empty. */
static void test_power_loss_sweep_tiny(void **state)
{
    (void)state;
    sweep(MOAT_QUEUE_DROP_OLDEST, 0xabcdefu, 120, 20, 36, 12);
    sweep(MOAT_QUEUE_REFUSE_NEW, 0x13579u, 120, 30, 36, 12);
}

/* Many power losses in a row at random moments, with the recovered state
 * carried on (and recovery itself cut): numbers keep increasing throughout. */
static void test_power_loss_repeated(void **state)
{
    (void)state;
    static uint8_t area[64 + 500];
    static model want, got;
    static inflight fl;
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[MAXD];
    uint64_t max_seq = 0;
    uint32_t n = 0;
    rng_state = 99;
    mem_init(&m, area, sizeof area, 0);
    for (size_t i = 0; i < sizeof area; i++)
        area[i] = (uint8_t)rnd();
    want.n = 0;

    for (int boot = 0; boot < 400; boot++) {
        int policy = boot % 3 == 0 ? MOAT_QUEUE_REFUSE_NEW : MOAT_QUEUE_DROP_OLDEST;
        m.budget = (long)(rnd() % 600);
        fl.kind = 0;
        if (moat_queue_open(&q, &st, MOAT_AREA_QUEUE, (moat_queue_full_policy)policy) == MOAT_OK) {
            if (boot == 0)
                assert_int_equal(q.count, 0);
            for (;;) {
                uint32_t r = rnd();
                moat_queue_stats s0, s1;
                moat_queue_get_stats(&q, &s0);
                if (want.n > 0 && r % 100 < 35) {
                    fl.kind = 2;
                    fl.gone.n = 0;
                    model_push(&fl.gone, want.r[0].seq, want.r[0].d, want.r[0].len);
                    mrec head = want.r[0];
                    model_drop(&want, 1);
                    if (moat_queue_pop(&q, head.seq) != MOAT_OK)
                        break;
                } else {
                    uint64_t seq;
                    size_t len = payload(n++, (r >> 8) % 80, d);
                    fl.kind = 1;
                    fl.pushing.len = len;
                    memcpy(fl.pushing.d, d, len);
                    moat_status s = moat_queue_push(&q, d, len, &seq);
                    moat_queue_get_stats(&q, &s1);
                    size_t dropped = (size_t)(s1.dropped - s0.dropped);
                    fl.gone.n = 0;
                    for (size_t i = 0; i < dropped; i++)
                        model_push(&fl.gone, want.r[i].seq, want.r[i].d, want.r[i].len);
                    model_drop(&want, dropped);
                    if (s == MOAT_ERR_FULL && !m.dead)
                        continue;
                    if (s != MOAT_OK)
                        break;
                    assert_true(seq > max_seq);
                    max_seq = seq;
                    model_push(&want, seq, d, len);
                }
            }
        }
        assert_true(m.dead);
        reboot(&m, (int)(rnd() % 2));
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST),
                         MOAT_OK);
        check_recovered(&q, &want, &fl, &max_seq);
        /* What survived is what the next boot starts from; a resurrected
         * record keeps its (old) number, below max_seq. */
        read_all(&q, &got);
        want = got;
    }
}

/* A push cut before its sync, then a restart of the process (its bytes are
 * still in the cache, so the record is found and may be sent), then a power
 * loss that drops the cache: the record found must stay found, or its
 * number would be handed out again for another reading. */
static void test_restart_then_power_loss(void **state)
{
    (void)state;
    static uint8_t area[512];
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[20];
    uint64_t sa, sb, sc;
    size_t len;

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, payload(1, 20, d), &sa), MOAT_OK);
    m.budget = MOAT_QUEUE_RECORD_OVERHEAD + 20; /* all of it, not the sync */
    assert_int_equal(moat_queue_push(&q, d, payload(2, 20, d), &sb), MOAT_ERR_IO);
    reboot(&m, 0);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_peek(&q, 1, &sb, d, sizeof d, &len), MOAT_OK);
    assert_true(sb > sa);
    m.dead = 1;
    reboot(&m, 1);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, 3, &sc), MOAT_OK);
    assert_true(sc > sb);
}

/* ------------------------------------------------------------ corruption */

typedef struct filled {
    model recs;
    size_t off[64];    /* where each record sits */
    size_t popped_off; /* where the last popped record was */
} filled;

/* A full, wrapped queue on a 600-byte ring: 10 records, the first 8 popped,
 * then pushes until it is full, over the place of the popped ones. */
static void fill(mem *m, uint8_t *area, size_t size, filled *f)
{
    moat_storage st = storage_of(m);
    moat_queue q;
    uint8_t d[MAXD];
    uint64_t seq;
    mem_init(m, area, size, 0);
    f->recs.n = 0;
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    for (uint32_t i = 0;; i++) {
        size_t len = payload(i, 10 + (i * 7) % 25, d);
        moat_status s = moat_queue_push(&q, d, len, &seq);
        if (s == MOAT_ERR_FULL)
            break;
        assert_int_equal(s, MOAT_OK);
        f->off[f->recs.n] = q.tail - MOAT_QUEUE_RECORD_SPACE(len);
        model_push(&f->recs, seq, d, len);
        if (i == 9)
            for (int k = 0; k < 8; k++) {
                f->popped_off = f->off[0];
                assert_int_equal(moat_queue_pop(&q, f->recs.r[0].seq), MOAT_OK);
                model_drop(&f->recs, 1);
                memmove(f->off, f->off + 1, f->recs.n * sizeof f->off[0]);
            }
    }
    assert_true(f->off[f->recs.n - 1] < f->off[0]);                   /* it wrapped */
    assert_true(q.tail > f->popped_off + MOAT_QUEUE_RECORD_OVERHEAD); /* and overwrote */
}

static void test_corrupt_records(void **state)
{
    (void)state;
    static uint8_t area[64 + 600], image[sizeof area];
    static filled f;
    static model want, got;
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    rng_state = 4242;
    fill(&m, area, sizeof area, &f);
    memcpy(image, area, sizeof area);

    for (size_t j = 0; j < f.recs.n; j++) {
        size_t span = MOAT_QUEUE_RECORD_OVERHEAD + f.recs.r[j].len;
        for (int t = 0; t < 12; t++) {
            memcpy(area, image, sizeof area);
            /* A header byte or a payload byte of record j, changed. */
            size_t at = f.off[j] + (t < 6 ? (size_t)t * 3 % 16 : rnd() % span);
            area[at] ^= (uint8_t)(1u + rnd() % 255u);
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW),
                             MOAT_OK);
            want = f.recs;
            memmove(want.r + j, want.r + j + 1, (want.n - j - 1) * sizeof want.r[0]);
            want.n--;
            read_all(&q, &got);
            expect_same(&got, &want);
            moat_queue_stats s;
            moat_queue_get_stats(&q, &s);
            /* The newest record, damaged, cannot be told from a cut push. */
            assert_int_equal(s.corrupt_skipped, j + 1 == f.recs.n ? 0 : 1);
            /* Stable, and counted once: reopening finds the same. */
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW),
                             MOAT_OK);
            read_all(&q, &got);
            expect_same(&got, &want);
            moat_queue_get_stats(&q, &s);
            if (j == 0)
                assert_int_equal(s.corrupt_skipped, 0);
        }
    }
    /* Two damaged records: both skipped and counted. */
    memcpy(area, image, sizeof area);
    area[f.off[2] + 20] ^= 1;
    area[f.off[7] + 5] ^= 0x80;
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    moat_queue_stats s;
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.corrupt_skipped, 2);
    assert_int_equal(s.count, f.recs.n - 2);
}

/* A record damaged while the queue is open: a clear, sticky
 * MOAT_ERR_CORRUPT rather than another record in its place; reopening
 * skips it and counts it. */
static void test_corrupt_while_open(void **state)
{
    (void)state;
    static uint8_t area[64 + 600];
    static filled f;
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t buf[MAXD];
    uint64_t seq;
    size_t len;
    fill(&m, area, sizeof area, &f);

    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    area[f.off[0] + 17] ^= 4;
    assert_int_equal(moat_queue_peek(&q, 0, &seq, buf, sizeof buf, &len), MOAT_ERR_CORRUPT);
    assert_int_equal(moat_queue_pop(&q, f.recs.r[0].seq), MOAT_ERR_CORRUPT);
    assert_int_equal(moat_queue_push(&q, buf, 3, &seq), MOAT_ERR_CORRUPT);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    moat_queue_stats s;
    moat_queue_get_stats(&q, &s);
    assert_int_equal(s.corrupt_skipped, 1);
    assert_int_equal(moat_queue_peek(&q, 0, &seq, buf, sizeof buf, &len), MOAT_OK);
    assert_int_equal(seq, f.recs.r[1].seq);
    assert_int_equal(len, f.recs.r[1].len);
    assert_memory_equal(buf, f.recs.r[1].d, len);
}

/* One header copy damaged: the other one serves. Damage to the newer copy
 * may bring back the record its pop removed, nothing else. */
static void test_corrupt_header(void **state)
{
    (void)state;
    static uint8_t area[64 + 600], image[sizeof area];
    static filled f;
    static model got;
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    fill(&m, area, sizeof area, &f);
    memcpy(image, area, sizeof area);

    for (int copy = 0; copy < 2; copy++) {
        for (size_t at = 0; at < 28; at++) {
            memcpy(area, image, sizeof area);
            area[copy * 32 + (int)at] ^= 0x10;
            assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW),
                             MOAT_OK);
            read_all(&q, &got);
            size_t extra = got.n - f.recs.n;
            assert_true(extra <= 1);
            for (size_t k = 0; k < f.recs.n; k++)
                assert_true(same(&got.r[extra + k], &f.recs.r[k]));
            if (extra)
                assert_int_equal(got.r[0].seq, f.recs.r[0].seq - 1);
        }
    }
}

/* Random damage anywhere in the ring: never a crash, never a record that
 * was not pushed or with other bytes; what is lost is counted or is the
 * newest. */
static void test_corrupt_random(void **state)
{
    (void)state;
    static uint8_t area[64 + 600], image[sizeof area];
    static filled f;
    static model got;
    mem m;
    moat_storage st = storage_of(&m);
    moat_queue q;
    rng_state = 31337;
    fill(&m, area, sizeof area, &f);
    memcpy(image, area, sizeof area);

    for (int t = 0; t < 3000; t++) {
        memcpy(area, image, sizeof area);
        int flips = 1 + (int)(rnd() % 8);
        for (int k = 0; k < flips; k++)
            area[64 + rnd() % 600] ^= (uint8_t)(1u + rnd() % 255u);
        assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
        read_all(&q, &got);
        size_t k = 0;
        for (size_t i = 0; i < got.n; i++) {
            while (k < f.recs.n && f.recs.r[k].seq != got.r[i].seq)
                k++;
            assert_true(k < f.recs.n);
            assert_true(same(&got.r[i], &f.recs.r[k]));
        }
        moat_queue_stats s;
        moat_queue_get_stats(&q, &s);
        uint64_t last = got.n ? got.r[got.n - 1].seq : f.recs.r[0].seq - 1;
        /* Each number up to the last survivor: found or counted. */
        assert_int_equal(s.corrupt_skipped + got.n, last - f.recs.r[0].seq + 1);
    }
}

/* ------------------------------------------------------------ I/O errors */

static void test_io_errors(void **state)
{
    (void)state;
    static uint8_t area[1024];
    mem m;
    mem_init(&m, area, sizeof area, 0);
    moat_storage st = storage_of(&m);
    moat_queue q;
    uint8_t d[16];
    uint64_t seq, s1, s2;
    size_t len;

    m.fail_read = 1;
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_ERR_IO);
    m.fail_read = 0;
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, payload(1, 16, d), &s1), MOAT_OK);
    /* A failed write: sticky until reopen, and the queue stays right. */
    m.fail_write_at = 2; /* the payload of the next push */
    assert_int_equal(moat_queue_push(&q, d, 16, &seq), MOAT_ERR_IO);
    assert_int_equal(moat_queue_push(&q, d, 16, &seq), MOAT_ERR_IO);
    assert_int_equal(moat_queue_peek(&q, 0, &seq, d, sizeof d, &len), MOAT_ERR_IO);
    assert_int_equal(moat_queue_pop(&q, s1), MOAT_ERR_IO);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_push(&q, d, 16, &s2), MOAT_OK);
    assert_true(s2 > s1);
    /* A read failing inside peek. */
    m.fail_read = 1;
    assert_int_equal(moat_queue_peek(&q, 1, &seq, d, sizeof d, &len), MOAT_ERR_IO);
    m.fail_read = 0;
    assert_int_equal(moat_queue_pop(&q, s1), MOAT_ERR_IO);
    assert_int_equal(moat_queue_open(&q, &st, MOAT_AREA_QUEUE, MOAT_QUEUE_REFUSE_NEW), MOAT_OK);
    assert_int_equal(moat_queue_pop(&q, s1), MOAT_OK);
    assert_int_equal(moat_queue_peek(&q, 0, &seq, d, sizeof d, &len), MOAT_OK);
    assert_int_equal(seq, s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_seq_across_reopen),
        cmocka_unit_test(test_wraparound),
        cmocka_unit_test(test_full_refuse),
        cmocka_unit_test(test_full_drop_oldest),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_blank_areas),
        cmocka_unit_test(test_old_format_records),
        cmocka_unit_test(test_power_loss_sweep_refuse),
        cmocka_unit_test(test_power_loss_sweep_drop),
        cmocka_unit_test(test_power_loss_sweep_tiny),
        cmocka_unit_test(test_power_loss_repeated),
        cmocka_unit_test(test_restart_then_power_loss),
        cmocka_unit_test(test_corrupt_records),
        cmocka_unit_test(test_corrupt_while_open),
        cmocka_unit_test(test_corrupt_header),
        cmocka_unit_test(test_corrupt_random),
        cmocka_unit_test(test_io_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
