/*
 * Unit tests for src/sdk/record.c: records as the queue keeps them, batches
 * and cover records as they travel. Round trips; every limit of a stream
 * name and payload; a batch that is full stays unchanged; padding is to the
 * exact size and must be zeros; and the decoder, which the hub runs on what
 * any device sends, refuses every truncation, every wrong header field,
 * falling sequence numbers and any non-zero byte after the last entry, and
 * hands out views that lie inside the input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <moat/record.h>

static bool inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t len)
{
    return n == 0 || (p >= buf && n <= len && (size_t)(p - buf) <= len - n);
}

static size_t rec(uint8_t *buf, size_t cap, const char *stream, uint64_t t, const char *payload)
{
    size_t n = 0;
    assert_int_equal(moat_record_encode_reading(buf, cap, stream, t, (const uint8_t *)payload,
                                                strlen(payload), &n),
                     MOAT_OK);
    return n;
}

static void test_record_round_trip(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = rec(buf, sizeof buf, "temp", 1700000000123ull, "21.5");
    assert_int_equal(n, MOAT_RECORD_SIZE(4, 4));
    moat_reading r;
    assert_int_equal(moat_record_decode_reading(buf, n, &r), MOAT_OK);
    assert_int_equal(r.stream_len, 4);
    assert_memory_equal(r.stream, "temp", 4);
    assert_int_equal(r.device_time_ms, 1700000000123ull);
    assert_int_equal(r.payload_len, 4);
    assert_memory_equal(r.payload, "21.5", 4);
    assert_int_equal(r.seq, 0);
    assert_true(inside(r.stream, r.stream_len, buf, n));
    assert_true(inside(r.payload, r.payload_len, buf, n));

    /* Exactly its bytes: one fewer or one more is not a record. */
    for (size_t len = 0; len < n; len++)
        assert_int_equal(moat_record_decode_reading(buf, len, &r), MOAT_ERR_PROTOCOL);
    assert_int_equal(moat_record_decode_reading(buf, n + 1, &r), MOAT_ERR_PROTOCOL);

    /* Empty payload, unknown time. */
    n = rec(buf, sizeof buf, "door", 0, "");
    assert_int_equal(moat_record_decode_reading(buf, n, &r), MOAT_OK);
    assert_int_equal(r.payload_len, 0);
    assert_int_equal(r.device_time_ms, 0);
}

static void test_record_limits(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = 0;
    const uint8_t p[1] = {'x'};
    const char *bad[] = {"", "a/b", "a+", "#", "a b", "_shaped", "tab\t", "caf\xc3\xa9", "\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(moat_record_encode_reading(buf, sizeof buf, bad[i], 0, p, 1, &n),
                         MOAT_ERR_ARG);
    char name[MOAT_RECORD_MAX_STREAM + 2];
    memset(name, 's', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(moat_record_encode_reading(buf, sizeof buf, name, 0, p, 1, &n), MOAT_ERR_ARG);
    name[MOAT_RECORD_MAX_STREAM] = '\0';
    assert_int_equal(moat_record_encode_reading(buf, sizeof buf, name, 0, p, 1, &n), MOAT_OK);
    assert_int_equal(n, MOAT_RECORD_SIZE(MOAT_RECORD_MAX_STREAM, 1));

    /* Payload limit (the buffer is not even looked at). */
    assert_int_equal(
        moat_record_encode_reading(buf, sizeof buf, "s", 0, p, MOAT_RECORD_MAX_PAYLOAD + 1, &n),
        MOAT_ERR_ARG);
    /* Too small a buffer: the size needed, nothing written past cap. */
    memset(buf, 0xaa, sizeof buf);
    assert_int_equal(moat_record_encode_reading(buf, 12, "ab", 0, p, 1, &n), MOAT_ERR_SPACE);
    assert_int_equal(n, 14);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0xaa);
    assert_int_equal(moat_record_encode_reading(buf, 14, "ab", 0, p, 1, &n), MOAT_OK);

    /* A payload of the largest size round-trips. */
    uint8_t *big = calloc(1, MOAT_RECORD_SIZE(1, MOAT_RECORD_MAX_PAYLOAD));
    uint8_t *pl = malloc(MOAT_RECORD_MAX_PAYLOAD);
    assert_non_null(big);
    assert_non_null(pl);
    memset(pl, 7, MOAT_RECORD_MAX_PAYLOAD);
    assert_int_equal(moat_record_encode_reading(big, MOAT_RECORD_SIZE(1, MOAT_RECORD_MAX_PAYLOAD),
                                                "s", 1, pl, MOAT_RECORD_MAX_PAYLOAD, &n),
                     MOAT_OK);
    moat_reading r;
    assert_int_equal(moat_record_decode_reading(big, n, &r), MOAT_OK);
    assert_int_equal(r.payload_len, MOAT_RECORD_MAX_PAYLOAD);
    free(big);
    free(pl);

    assert_true(moat_record_stream_valid((const uint8_t *)"a_b", 3));
    assert_false(moat_record_stream_valid((const uint8_t *)"_ab", 3));
    assert_false(moat_record_stream_valid(NULL, 0));
}

/* A stream name on the wire that the encoder would never write. */
static void test_record_decode_refuses_bad_stream(void **state)
{
    (void)state;
    uint8_t buf[32];
    size_t n = rec(buf, sizeof buf, "abc", 5, "p");
    moat_reading r;
    const uint8_t bad[] = {'/', '+', '#', ' ', 0, 0x80, '_'};
    for (size_t i = 0; i < sizeof bad; i++) {
        uint8_t copy[32];
        memcpy(copy, buf, n);
        copy[1] = bad[i]; /* the stream's first byte */
        assert_int_equal(moat_record_decode_reading(copy, n, &r), MOAT_ERR_PROTOCOL);
    }
    buf[0] = 0; /* empty stream name */
    assert_int_equal(moat_record_decode_reading(buf, n, &r), MOAT_ERR_PROTOCOL);
}

static void test_batch_round_trip_padded(void **state)
{
    (void)state;
    uint8_t r1[64], r2[64], r3[64];
    size_t n1 = rec(r1, sizeof r1, "temp", 1000, "21.5");
    size_t n2 = rec(r2, sizeof r2, "light", 2000, "on");
    size_t n3 = rec(r3, sizeof r3, "door", 0, "");
    uint8_t buf[256];
    memset(buf, 0xee, sizeof buf);
    moat_batch b;
    assert_int_equal(moat_batch_begin(&b, buf, 200), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 41, r1, n1), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 42, r2, n2), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 44, r3, n3), MOAT_OK);
    size_t len = 0;
    assert_int_equal(moat_batch_finish(&b, 200, &len), MOAT_OK);
    assert_int_equal(len, 200);
    assert_int_equal(buf[200], 0xee); /* nothing past the padded size */
    assert_true(moat_batch_is_envelope(buf, len));

    moat_batch_iter it;
    moat_batch_kind kind = 0;
    uint32_t count = 0;
    assert_int_equal(moat_batch_decode(&it, buf, len, &kind, &count), MOAT_OK);
    assert_int_equal(kind, MOAT_BATCH_READINGS);
    assert_int_equal(count, 3);
    const char *streams[] = {"temp", "light", "door"};
    const char *payloads[] = {"21.5", "on", ""};
    const uint64_t seqs[] = {41, 42, 44};
    const uint64_t times[] = {1000, 2000, 0};
    moat_reading r;
    for (int i = 0; i < 3; i++) {
        assert_true(moat_batch_next(&it, &r));
        assert_int_equal(r.seq, seqs[i]);
        assert_int_equal(r.device_time_ms, times[i]);
        assert_int_equal(r.stream_len, strlen(streams[i]));
        assert_memory_equal(r.stream, streams[i], r.stream_len);
        assert_int_equal(r.payload_len, strlen(payloads[i]));
        if (r.payload_len)
            assert_memory_equal(r.payload, payloads[i], r.payload_len);
        assert_true(inside(r.stream, r.stream_len, buf, len));
        assert_true(inside(r.payload, r.payload_len, buf, len));
    }
    assert_false(moat_batch_next(&it, &r));
    assert_false(moat_batch_next(&it, &r));

    /* The same through decode_first/next. */
    int n = 0;
    for (moat_status st = moat_batch_decode_first(&it, buf, len, &r); st == MOAT_OK;
         st = moat_batch_decode_next(&it, &r))
        assert_int_equal(r.seq, seqs[n++]);
    assert_int_equal(n, 3);

    /* Unpadded: the envelope ends with the last entry. */
    assert_int_equal(moat_batch_begin(&b, buf, sizeof buf), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 1, r1, n1), MOAT_OK);
    assert_int_equal(moat_batch_finish(&b, 0, &len), MOAT_OK);
    assert_int_equal(len, MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD + n1);
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_OK);
}

static void test_batch_space_and_state(void **state)
{
    (void)state;
    uint8_t r1[64];
    size_t n1 = rec(r1, sizeof r1, "t", 1, "0123456789"); /* 22 bytes: entries of 30 */
    assert_int_equal(n1, 22);
    uint8_t buf[128];
    moat_batch b;
    assert_int_equal(moat_batch_begin(&b, buf, MOAT_BATCH_HEADER - 1), MOAT_ERR_SPACE);
    assert_int_equal(moat_batch_begin(&b, buf, 8 + 30 + 30 + 29), MOAT_OK);
    size_t len = 0;
    assert_int_equal(moat_batch_finish(&b, 0, &len), MOAT_ERR_STATE); /* nothing in it */
    assert_int_equal(moat_batch_room(&b), 30 + 30 + 29 - 8);
    assert_int_equal(moat_batch_add(&b, 1, r1, n1), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 2, r1, n1), MOAT_OK);
    assert_int_equal(moat_batch_room(&b), 21);
    uint8_t before[128];
    memcpy(before, buf, sizeof buf);
    assert_int_equal(moat_batch_add(&b, 3, r1, n1), MOAT_ERR_SPACE);
    assert_memory_equal(before, buf, sizeof buf); /* unchanged */
    /* Padding to less than what is there, or past cap, is refused. */
    assert_int_equal(moat_batch_finish(&b, 67, &len), MOAT_ERR_SPACE);
    assert_int_equal(moat_batch_finish(&b, 98, &len), MOAT_ERR_SPACE);
    assert_int_equal(moat_batch_finish(&b, 68, &len), MOAT_OK);
    assert_int_equal(len, 68);
    assert_int_equal(moat_batch_finish(&b, 97, &len), MOAT_OK);
    assert_int_equal(len, 97);
    moat_batch_iter it;
    uint32_t count = 0;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, &count), MOAT_OK);
    assert_int_equal(count, 2);

    /* A record that is not one is not added. */
    uint8_t junk[22];
    memset(junk, '/', sizeof junk);
    assert_int_equal(moat_batch_begin(&b, buf, sizeof buf), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 1, junk, sizeof junk), MOAT_ERR_PROTOCOL);
    assert_int_equal(moat_batch_add(&b, 1, r1, n1 - 1), MOAT_ERR_PROTOCOL);
    assert_int_equal(moat_batch_finish(&b, 0, &len), MOAT_ERR_STATE);
}

static void test_batch_count_limit(void **state)
{
    (void)state;
    uint8_t r1[16];
    size_t n1 = rec(r1, sizeof r1, "t", 0, "");
    size_t entry = MOAT_BATCH_ENTRY_OVERHEAD + n1;
    size_t cap = MOAT_BATCH_HEADER + entry * (MOAT_BATCH_MAX_READINGS + 1);
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    moat_batch b;
    assert_int_equal(moat_batch_begin(&b, buf, cap), MOAT_OK);
    for (uint32_t i = 0; i < MOAT_BATCH_MAX_READINGS; i++)
        assert_int_equal(moat_batch_add(&b, i, r1, n1), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, MOAT_BATCH_MAX_READINGS, r1, n1), MOAT_ERR_FULL);
    size_t len = 0;
    assert_int_equal(moat_batch_finish(&b, 0, &len), MOAT_OK);
    moat_batch_iter it;
    uint32_t count = 0;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, &count), MOAT_OK);
    assert_int_equal(count, MOAT_BATCH_MAX_READINGS);
    moat_reading r;
    uint32_t seen = 0;
    while (moat_batch_next(&it, &r))
        assert_int_equal(r.seq, seen++);
    assert_int_equal(seen, MOAT_BATCH_MAX_READINGS);
    free(buf);
}

static void test_cover(void **state)
{
    (void)state;
    uint8_t buf[64];
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(moat_batch_cover(buf, sizeof buf, MOAT_BATCH_MIN_SIZE - 1), MOAT_ERR_SPACE);
    assert_int_equal(moat_batch_cover(buf, 32, 33), MOAT_ERR_SPACE);
    assert_int_equal(moat_batch_cover(buf, sizeof buf, 40), MOAT_OK);
    assert_int_equal(buf[40], 0xee);
    moat_batch_iter it;
    moat_batch_kind kind = 0;
    uint32_t count = 9;
    assert_int_equal(moat_batch_decode(&it, buf, 40, &kind, &count), MOAT_OK);
    assert_int_equal(kind, MOAT_BATCH_COVER);
    assert_int_equal(count, 0);
    moat_reading r;
    assert_false(moat_batch_next(&it, &r));
    assert_int_equal(moat_batch_decode_first(&it, buf, 40, &r), MOAT_ERR_STATE);
    assert_int_equal(moat_batch_cover(buf, sizeof buf, MOAT_BATCH_MIN_SIZE), MOAT_OK);
    assert_int_equal(moat_batch_decode(&it, buf, MOAT_BATCH_MIN_SIZE, NULL, NULL), MOAT_OK);

    /* A cover record and a batch of the same size differ only inside. */
    uint8_t b2[64];
    uint8_t r1[16];
    size_t n1 = rec(r1, sizeof r1, "t", 0, "");
    moat_batch b;
    size_t len = 0;
    assert_int_equal(moat_batch_begin(&b, b2, 40), MOAT_OK);
    assert_int_equal(moat_batch_add(&b, 1, r1, n1), MOAT_OK);
    assert_int_equal(moat_batch_finish(&b, 40, &len), MOAT_OK);
    assert_int_equal(len, 40);
}

/* An unpadded batch of three entries, for the attacks below. */
static size_t sample(uint8_t *buf, size_t cap)
{
    uint8_t r[64];
    moat_batch b;
    size_t len = 0;
    assert_int_equal(moat_batch_begin(&b, buf, cap), MOAT_OK);
    size_t n = rec(r, sizeof r, "temp", 1000, "21.5");
    assert_int_equal(moat_batch_add(&b, 7, r, n), MOAT_OK);
    n = rec(r, sizeof r, "hum", 1001, "40");
    assert_int_equal(moat_batch_add(&b, 8, r, n), MOAT_OK);
    n = rec(r, sizeof r, "x", 1002, "");
    assert_int_equal(moat_batch_add(&b, 9, r, n), MOAT_OK);
    assert_int_equal(moat_batch_finish(&b, 0, &len), MOAT_OK);
    return len;
}

static void test_decode_refuses_truncation_and_trailing(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t len = sample(buf, sizeof buf);
    moat_batch_iter it;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_OK);
    /* Every prefix (on the heap, so ASan sees a read past its end). */
    for (size_t n = 0; n < len; n++) {
        uint8_t *p = malloc(n ? n : 1);
        assert_non_null(p);
        memcpy(p, buf, n);
        assert_int_equal(moat_batch_decode(&it, p, n, NULL, NULL), MOAT_ERR_PROTOCOL);
        free(p);
    }
    /* Zeros after the last entry are padding; anything else is refused,
     * wherever it is. */
    memset(buf + len, 0, 64);
    assert_int_equal(moat_batch_decode(&it, buf, len + 64, NULL, NULL), MOAT_OK);
    for (size_t i = len; i < len + 64; i++) {
        buf[i] = 1;
        assert_int_equal(moat_batch_decode(&it, buf, len + 64, NULL, NULL), MOAT_ERR_PROTOCOL);
        buf[i] = 0;
    }
    /* The same for a cover record. */
    assert_int_equal(moat_batch_cover(buf, sizeof buf, 100), MOAT_OK);
    for (size_t i = MOAT_BATCH_HEADER; i < 100; i++) {
        buf[i] = 0x80;
        assert_int_equal(moat_batch_decode(&it, buf, 100, NULL, NULL), MOAT_ERR_PROTOCOL);
        buf[i] = 0;
    }
}

static void test_decode_refuses_bad_header(void **state)
{
    (void)state;
    uint8_t good[256];
    size_t len = sample(good, sizeof good);
    uint8_t buf[256];
    moat_batch_iter it;
    moat_reading r;
    struct {
        size_t off;
        uint8_t val;
    } cases[] = {
        {0, 1},
        {1, 'M'},
        {2, 'x'},
        {3, 0}, /* magic */
        {4, 0},
        {4, 2},
        {4, 0xff}, /* version */
        {5, 0},
        {5, 3},
        {5, 0xff},             /* kind */
        {5, MOAT_BATCH_COVER}, /* cover with a count */
        {6, 0x01},
        {7, 0},
        {7, 2},
        {7, 4},
        {7, 0xff}, /* count */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf, good, len);
        buf[cases[i].off] = cases[i].val;
        assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
        /* A refused envelope hands out nothing. */
        assert_false(moat_batch_next(&it, &r));
    }
    /* A cover record that claims a reading. */
    assert_int_equal(moat_batch_cover(buf, sizeof buf, 64), MOAT_OK);
    buf[7] = 1;
    assert_int_equal(moat_batch_decode(&it, buf, 64, NULL, NULL), MOAT_ERR_PROTOCOL);
    /* Readings with no reading. */
    buf[5] = MOAT_BATCH_READINGS;
    buf[7] = 0;
    assert_int_equal(moat_batch_decode(&it, buf, 64, NULL, NULL), MOAT_ERR_PROTOCOL);
}

static void test_decode_refuses_bad_entries(void **state)
{
    (void)state;
    uint8_t good[256];
    size_t len = sample(good, sizeof good);
    uint8_t buf[256];
    moat_batch_iter it;
    size_t e2 = MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD + MOAT_RECORD_SIZE(4, 4);

    /* Sequence numbers that do not rise: equal, and lower. */
    memcpy(buf, good, len);
    buf[e2 + 7] = 7;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
    buf[e2 + 7] = 6;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
    /* A bad stream name inside the second entry. */
    memcpy(buf, good, len);
    buf[e2 + 9] = '#';
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
    /* A payload length that runs past the end, and one that stops short
     * (the rest is then not zero padding). */
    memcpy(buf, good, len);
    size_t plen_at = e2 + 8 + 1 + 3 + 8;
    buf[plen_at + 1] = 3;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
    buf[plen_at + 1] = 1;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
    buf[plen_at] = 0xff;
    buf[plen_at + 1] = 0xff;
    assert_int_equal(moat_batch_decode(&it, buf, len, NULL, NULL), MOAT_ERR_PROTOCOL);
}

/* Random bytes after a valid header, and random mutations of a valid batch:
 * the decoder never reads outside the input (ASan), and whatever it accepts
 * iterates to exactly the count it reported, with every view inside. */
static void test_decode_random(void **state)
{
    (void)state;
    uint8_t good[256];
    size_t len = sample(good, sizeof good);
    srand(12345);
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)rand() % (len + 16);
        uint8_t *buf = malloc(n ? n : 1);
        assert_non_null(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = i < len && rand() % 8 ? good[i] : (uint8_t)rand();
        moat_batch_iter it;
        uint32_t count = 0;
        if (moat_batch_decode(&it, buf, n, NULL, &count) == MOAT_OK) {
            moat_reading r;
            uint32_t seen = 0;
            while (moat_batch_next(&it, &r)) {
                seen++;
                assert_true(inside(r.stream, r.stream_len, buf, n));
                assert_true(inside(r.payload, r.payload_len, buf, n));
                assert_true(moat_record_stream_valid(r.stream, r.stream_len));
            }
            assert_int_equal(seen, count);
        }
        free(buf);
    }
}

static void test_is_envelope(void **state)
{
    (void)state;
    assert_false(moat_batch_is_envelope((const uint8_t *)"{\"t\":21.5}", 10));
    assert_false(moat_batch_is_envelope((const uint8_t *)"21.5", 4));
    assert_false(moat_batch_is_envelope((const uint8_t *)"\0mt", 3));
    assert_false(moat_batch_is_envelope(NULL, 0));
    uint8_t buf[64];
    assert_int_equal(moat_batch_cover(buf, sizeof buf, 16), MOAT_OK);
    assert_true(moat_batch_is_envelope(buf, 16));
    assert_true(moat_batch_is_envelope(buf, 4));
    /* Plain payloads are not decoded as envelopes. */
    moat_batch_iter it;
    assert_int_equal(moat_batch_decode(&it, (const uint8_t *)"21.5", 4, NULL, NULL),
                     MOAT_ERR_PROTOCOL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test(test_record_limits),
        cmocka_unit_test(test_record_decode_refuses_bad_stream),
        cmocka_unit_test(test_batch_round_trip_padded),
        cmocka_unit_test(test_batch_space_and_state),
        cmocka_unit_test(test_batch_count_limit),
        cmocka_unit_test(test_cover),
        cmocka_unit_test(test_decode_refuses_truncation_and_trailing),
        cmocka_unit_test(test_decode_refuses_bad_header),
        cmocka_unit_test(test_decode_refuses_bad_entries),
        cmocka_unit_test(test_decode_random),
        cmocka_unit_test(test_is_envelope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
