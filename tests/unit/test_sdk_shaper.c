/*
 * Unit tests for src/sdk/shaper.c: the schedule (one slot per interval, on a
 * grid that does not drift whatever the polling pattern; after a stall the
 * missed slots are skipped and counted, never sent in a burst) and the
 * records a slot carries (exactly record_size bytes whether they hold
 * readings or are cover; readings in queue order, none lost or repeated when
 * the queue is drained slot by slot; records that can never fit reported).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <moat/record.h>
#include <moat/shaper.h>

static void test_init_args(void **state)
{
    (void)state;
    moat_shaper s;
    assert_int_equal(moat_shaper_init(&s, 0, 256, true), MOAT_ERR_ARG);
    assert_int_equal(moat_shaper_init(&s, 1000, MOAT_BATCH_MIN_SIZE - 1, true), MOAT_ERR_ARG);
    assert_int_equal(moat_shaper_init(NULL, 1000, 256, true), MOAT_ERR_ARG);
    assert_int_equal(moat_shaper_init(&s, 1000, 256, true), MOAT_OK);
    assert_int_equal(moat_shaper_record_size(&s), 256);
}

/* Poll every millisecond: one slot per interval, exactly on the grid. */
static void test_due_once_per_interval(void **state)
{
    (void)state;
    moat_shaper s;
    const uint64_t start = 5000, iv = 250;
    assert_int_equal(moat_shaper_init(&s, (uint32_t)iv, 128, true), MOAT_OK);
    uint64_t sends = 0;
    for (uint64_t t = start; t < start + 100 * iv; t++) {
        if (moat_shaper_due(&s, t)) {
            assert_int_equal(t, start + sends * iv); /* on the grid */
            /* Stays due until used. */
            assert_true(moat_shaper_due(&s, t));
            moat_shaper_sent(&s, t);
            assert_false(moat_shaper_due(&s, t));
            sends++;
        }
    }
    assert_int_equal(sends, 100);
    assert_int_equal(moat_shaper_skipped(&s), 0);
    assert_int_equal(moat_shaper_next_ms(&s), start + 100 * iv);
}

/* Irregular, late polling (as in a busy super-loop): still one record per
 * slot, and the grid never moves however late each send is. */
static void test_no_drift_with_late_polls(void **state)
{
    (void)state;
    moat_shaper s;
    const uint64_t iv = 1000;
    assert_int_equal(moat_shaper_init(&s, (uint32_t)iv, 128, true), MOAT_OK);
    moat_shaper_start(&s, 0);
    srand(7);
    uint64_t t = 0, sends = 0;
    while (t < 1000 * iv) {
        if (moat_shaper_due(&s, t)) {
            uint64_t slot = t / iv;
            assert_int_equal(slot, sends); /* the slot after the previous one */
            moat_shaper_sent(&s, t);
            assert_int_equal(moat_shaper_next_ms(&s), (slot + 1) * iv);
            sends++;
        }
        t += 1 + (uint64_t)rand() % (iv - 1); /* never a full interval between polls */
    }
    assert_int_equal(moat_shaper_skipped(&s), 0);
    assert_int_equal(sends, 1000);
    /* Always sending as late as possible still keeps the grid. */
    moat_shaper_start(&s, 0);
    for (uint64_t k = 0; k < 100; k++) {
        assert_true(moat_shaper_due(&s, k * iv + iv - 1));
        moat_shaper_sent(&s, k * iv + iv - 1);
        assert_int_equal(moat_shaper_next_ms(&s), (k + 1) * iv);
        assert_false(moat_shaper_due(&s, (k + 1) * iv - 1));
    }
}

/* A stall of many intervals: one record for the current slot, then the next
 * grid point; no catch-up burst; the missed slots are counted. */
static void test_stall_skips_without_burst(void **state)
{
    (void)state;
    moat_shaper s;
    const uint64_t iv = 1000;
    assert_int_equal(moat_shaper_init(&s, (uint32_t)iv, 128, true), MOAT_OK);
    assert_true(moat_shaper_due(&s, 0));
    moat_shaper_sent(&s, 0);
    /* Asleep until 10.5 intervals later. */
    uint64_t t = 10 * iv + iv / 2;
    assert_true(moat_shaper_due(&s, t));
    moat_shaper_sent(&s, t);
    assert_int_equal(moat_shaper_skipped(&s), 9); /* slots 1..9 */
    /* Nothing more until slot 11, however often the loop asks. */
    for (uint64_t u = t; u < 11 * iv; u++)
        assert_false(moat_shaper_due(&s, u));
    assert_true(moat_shaper_due(&s, 11 * iv));
    moat_shaper_sent(&s, 11 * iv);
    assert_int_equal(moat_shaper_skipped(&s), 9);

    /* A stall that ends exactly on a grid point. */
    assert_true(moat_shaper_due(&s, 20 * iv));
    moat_shaper_sent(&s, 20 * iv);
    assert_int_equal(moat_shaper_skipped(&s), 9 + 8); /* 12..19 */
    assert_int_equal(moat_shaper_next_ms(&s), 21 * iv);

    /* sent() with no slot due changes nothing. */
    moat_shaper_sent(&s, 20 * iv + 1);
    assert_int_equal(moat_shaper_next_ms(&s), 21 * iv);
    assert_int_equal(moat_shaper_skipped(&s), 17);
}

/* The schedule's arithmetic (a long division of its own, so that a
 * Cortex-M links no 64-bit division) agrees with the C operators on clocks
 * far from zero, intervals up to UINT32_MAX and stalls of any length. */
static void test_grid_arithmetic_large_values(void **state)
{
    (void)state;
    srand(1234);
    for (int round = 0; round < 20000; round++) {
        uint64_t r1 = (uint64_t)rand() << 33 ^ (uint64_t)rand() << 11 ^ (uint64_t)rand();
        uint64_t r2 = (uint64_t)rand() << 31 ^ (uint64_t)rand();
        uint32_t iv;
        switch (round % 4) {
        case 0:
            iv = 1u + (uint32_t)rand() % 1000u;
            break;
        case 1:
            iv = UINT32_MAX - (uint32_t)rand() % 3u;
            break;
        case 2:
            iv = (uint32_t)rand() | 1u;
            break;
        default:
            iv = 1u << (rand() % 32);
            break;
        }
        uint64_t start = r1 >> (1 + rand() % 40); /* below 2^63 */
        moat_shaper s;
        assert_int_equal(moat_shaper_init(&s, iv, 128, true), MOAT_OK);
        moat_shaper_start(&s, start);
        /* A stall: from a few ms to about 2^62 ms, well past 32 bits. */
        uint64_t stall = round % 2 ? r2 >> (rand() % 31) : r2 << (rand() % 31);
        if (stall > UINT64_MAX / 4)
            stall = UINT64_MAX / 4;
        uint64_t now = start + stall;
        assert_true(moat_shaper_due(&s, now));
        moat_shaper_sent(&s, now);
        uint64_t want_next = now - (now - start) % iv + iv;
        assert_int_equal(moat_shaper_next_ms(&s), want_next);
        assert_int_equal(moat_shaper_skipped(&s), (want_next - start) / iv - 1);
    }
}

/* ---- building slots from a queue ---------------------------------------- */

struct fake_queue {
    uint8_t recs[64][300];
    size_t lens[64];
    uint64_t seqs[64];
    uint32_t head, count;
};

static moat_status fake_peek(void *ctx, uint32_t i, uint64_t *seq, uint8_t *buf, size_t cap,
                             size_t *len)
{
    struct fake_queue *q = ctx;
    if (i >= q->count)
        return MOAT_ERR_ARG;
    uint32_t k = (q->head + i) % 64;
    if (q->lens[k] > cap)
        return MOAT_ERR_SPACE;
    memcpy(buf, q->recs[k], q->lens[k]);
    *seq = q->seqs[k];
    *len = q->lens[k];
    return MOAT_OK;
}

static void fake_push(struct fake_queue *q, uint64_t seq, const char *stream, size_t payload_len)
{
    assert_true(q->count < 64);
    uint32_t k = (q->head + q->count) % 64;
    uint8_t payload[256];
    memset(payload, (int)(seq & 0xff), sizeof payload);
    assert_int_equal(moat_record_encode_reading(q->recs[k], sizeof q->recs[k], stream, seq * 10,
                                                payload, payload_len, &q->lens[k]),
                     MOAT_OK);
    q->seqs[k] = seq;
    q->count++;
}

static void fake_pop(struct fake_queue *q, uint32_t n)
{
    assert_true(n <= q->count);
    q->head = (q->head + n) % 64;
    q->count -= n;
}

static void test_build_sizes(void **state)
{
    (void)state;
    struct fake_queue *q = calloc(1, sizeof *q);
    assert_non_null(q);
    moat_shaper s;
    const size_t size = 128;
    assert_int_equal(moat_shaper_init(&s, 1000, size, true), MOAT_OK);
    uint8_t buf[512];
    size_t n = 0;
    uint32_t taken = 9;

    /* Empty queue: a cover record, exactly size bytes. */
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken), MOAT_OK);
    assert_int_equal(n, size);
    assert_int_equal(taken, 0);
    assert_int_equal(buf[size], 0xee);
    moat_batch_iter it;
    moat_batch_kind kind = 0;
    assert_int_equal(moat_batch_decode(&it, buf, n, &kind, NULL), MOAT_OK);
    assert_int_equal(kind, MOAT_BATCH_COVER);

    /* One small reading: a batch of exactly size bytes. */
    fake_push(q, 1, "light", 1);
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken), MOAT_OK);
    assert_int_equal(n, size);
    assert_int_equal(taken, 1);
    assert_int_equal(buf[size], 0xee);
    uint32_t count = 0;
    assert_int_equal(moat_batch_decode(&it, buf, n, &kind, &count), MOAT_OK);
    assert_int_equal(kind, MOAT_BATCH_READINGS);
    assert_int_equal(count, 1);

    /* A buffer smaller than a record is a caller error. */
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, size - 1, &n, &taken), MOAT_ERR_ARG);
    free(q);
}

static void test_build_cover_off(void **state)
{
    (void)state;
    struct fake_queue *q = calloc(1, sizeof *q);
    assert_non_null(q);
    moat_shaper s;
    assert_int_equal(moat_shaper_init(&s, 1000, 64, false), MOAT_OK);
    uint8_t buf[64];
    size_t n = 1;
    uint32_t taken = 1;
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken), MOAT_OK);
    assert_int_equal(n, 0);
    assert_int_equal(taken, 0);
    fake_push(q, 3, "t", 4);
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken), MOAT_OK);
    assert_int_equal(n, 64);
    assert_int_equal(taken, 1);
    free(q);
}

/* A record larger than a slot can hold can never go out: reported, and the
 * slot still carries exactly size bytes (cover). A source that hands out
 * bytes that are not a record is reported as well. */
static void test_build_oversize_and_corrupt(void **state)
{
    (void)state;
    struct fake_queue *q = calloc(1, sizeof *q);
    assert_non_null(q);
    moat_shaper s;
    const size_t size = 64;
    assert_int_equal(moat_shaper_init(&s, 1000, size, true), MOAT_OK);
    uint8_t buf[64];
    size_t n = 0;
    uint32_t taken = 0;
    size_t max = MOAT_BATCH_MAX_RECORD(size);
    assert_int_equal(max, 64 - 8 - 8);
    fake_push(q, 1, "t", max - MOAT_RECORD_SIZE(1, 0) + 1); /* one byte too many */
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken),
                     MOAT_ERR_SPACE);
    assert_int_equal(n, size);
    assert_int_equal(taken, 0);
    moat_batch_kind kind = 0;
    moat_batch_iter it;
    assert_int_equal(moat_batch_decode(&it, buf, n, &kind, NULL), MOAT_OK);
    assert_int_equal(kind, MOAT_BATCH_COVER);
    fake_pop(q, 1);

    /* Exactly the largest record fits alone. */
    fake_push(q, 2, "t", max - MOAT_RECORD_SIZE(1, 0));
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken), MOAT_OK);
    assert_int_equal(n, size);
    assert_int_equal(taken, 1);
    fake_pop(q, 1);

    /* Garbage where a record should be. */
    fake_push(q, 3, "t", 2);
    uint32_t k = q->head;
    q->recs[k][1] = '/';
    assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken),
                     MOAT_ERR_PROTOCOL);
    assert_int_equal(n, size);
    assert_int_equal(taken, 0);
    assert_int_equal(moat_batch_decode(&it, buf, n, &kind, NULL), MOAT_OK);
    assert_int_equal(kind, MOAT_BATCH_COVER);
    free(q);
}

/* Drain a queue of readings of random sizes slot by slot while new ones
 * arrive at random: every slot is exactly size bytes and decodes; the
 * readings come out in order, each exactly once, intact. */
static void test_drain_random(void **state)
{
    (void)state;
    struct fake_queue *q = calloc(1, sizeof *q);
    assert_non_null(q);
    moat_shaper s;
    const size_t size = 200;
    assert_int_equal(moat_shaper_init(&s, 500, size, true), MOAT_OK);
    srand(99);
    uint64_t pushed = 0, next_expected = 1;
    const char *streams[] = {"light", "temp", "door", "a-very-long-stream-name"};
    uint8_t buf[256];
    for (uint64_t t = 0; t < 2000 * 500; t += 100) {
        if (rand() % 4 == 0 && q->count < 64) {
            size_t max = MOAT_BATCH_MAX_RECORD(size) - MOAT_RECORD_SIZE(23, 0);
            fake_push(q, ++pushed, streams[rand() % 4], (size_t)rand() % (max + 1));
        }
        if (!moat_shaper_due(&s, t))
            continue;
        size_t n = 0;
        uint32_t taken = 0;
        memset(buf, 0xee, sizeof buf);
        assert_int_equal(moat_shaper_build(&s, fake_peek, q, buf, sizeof buf, &n, &taken), MOAT_OK);
        moat_shaper_sent(&s, t);
        assert_int_equal(n, size);
        assert_int_equal(buf[size], 0xee);
        moat_batch_iter it;
        uint32_t count = 0;
        assert_int_equal(moat_batch_decode(&it, buf, n, NULL, &count), MOAT_OK);
        assert_int_equal(count, taken);
        moat_reading r;
        while (moat_batch_next(&it, &r)) {
            assert_int_equal(r.seq, next_expected);
            assert_int_equal(r.device_time_ms, next_expected * 10);
            for (size_t i = 0; i < r.payload_len; i++)
                assert_int_equal(r.payload[i], next_expected & 0xff);
            next_expected++;
        }
        /* As many as fit: the next one would not have. */
        if (q->count > taken) {
            uint8_t tmp[300];
            uint64_t seq;
            size_t len = 0;
            assert_int_equal(fake_peek(q, taken, &seq, tmp, sizeof tmp, &len), MOAT_OK);
            size_t used = MOAT_BATCH_HEADER;
            for (uint32_t i = 0; i < taken; i++)
                used += MOAT_BATCH_ENTRY_OVERHEAD + q->lens[(q->head + i) % 64];
            assert_true(used + MOAT_BATCH_ENTRY_OVERHEAD + len > size);
        }
        fake_pop(q, taken);
    }
    assert_true(pushed > 1000);
    assert_true(next_expected + q->count == pushed + 1);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_args),
        cmocka_unit_test(test_due_once_per_interval),
        cmocka_unit_test(test_no_drift_with_late_polls),
        cmocka_unit_test(test_stall_skips_without_burst),
        cmocka_unit_test(test_grid_arithmetic_large_values),
        cmocka_unit_test(test_build_sizes),
        cmocka_unit_test(test_build_cover_off),
        cmocka_unit_test(test_build_oversize_and_corrupt),
        cmocka_unit_test(test_drain_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
