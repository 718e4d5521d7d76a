/*
 * Unit tests for src/common/buf.c, the bounded buffer under every
 * connection's input and output. A randomized differential test (fixed seeds)
 * drives appends, reservations, partial consumes and shrinks against a plain
 * array model and checks the held bytes after every step; the rest are the
 * edges: the maximum (an append that would pass it changes nothing), a
 * buffer kept nearly full while it is drained from the front (it must keep
 * its bytes in order whether it slides them down or grows), and the
 * memory given back by buf_shrink.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void assert_holds(const buf *b, const uint8_t *model, size_t len)
{
    assert_int_equal(b->len, len);
    assert_true(b->start + b->len <= b->cap || b->len == 0);
    assert_true(b->cap <= b->max);
    if (len)
        assert_memory_equal(buf_ptr(b), model, len);
}

static uint32_t next(uint32_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

static void differential(uint32_t seed, size_t max, int steps)
{
    buf b;
    buf_init(&b, max);
    uint8_t *model = malloc(max);
    uint8_t *chunk = malloc(max + 1);
    assert_non_null(model);
    assert_non_null(chunk);
    size_t len = 0;
    uint32_t rnd = seed;
    for (int step = 0; step < steps; step++) {
        uint32_t r = next(&rnd);
        size_t n = (r >> 8) % (max / 4 + 2);
        for (size_t i = 0; i < n; i++)
            chunk[i] = (uint8_t)(next(&rnd) >> 24);
        switch (r % 5) {
        case 0:
        case 1: { /* append */
            bool ok = buf_append(&b, chunk, n);
            assert_int_equal(ok, len + n <= max);
            if (ok) {
                memcpy(model + len, chunk, n);
                len += n;
            }
            break;
        }
        case 2: { /* fill in place */
            uint8_t *tail = buf_tail(&b, n);
            if (len + n > max) {
                assert_null(tail);
                break;
            }
            if (n)
                assert_non_null(tail);
            size_t used = n / 2;
            if (used == 0)
                break;
            memcpy(tail, chunk, used);
            buf_commit(&b, used);
            memcpy(model + len, chunk, used);
            len += used;
            break;
        }
        case 3: { /* drain some from the front */
            size_t k = len ? (r >> 4) % (len + 1) : 0;
            buf_consume(&b, k);
            memmove(model, model + k, len - k);
            len -= k;
            break;
        }
        default:
            buf_shrink(&b);
            if (len == 0)
                assert_int_equal(b.cap, 0);
            break;
        }
        assert_holds(&b, model, len);
    }
    buf_free(&b);
    free(model);
    free(chunk);
}

static void test_differential_small(void **state)
{
    (void)state;
    for (uint32_t seed = 1; seed <= 8; seed++)
        differential(seed * 2654435761u, 300, 20000);
}

static void test_differential_large(void **state)
{
    (void)state;
    for (uint32_t seed = 1; seed <= 4; seed++)
        differential(seed * 40503u, 70000, 2000);
}

static void test_maximum_is_kept(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 1000);
    uint8_t data[1001];
    memset(data, 'x', sizeof(data));
    assert_false(buf_append(&b, data, 1001));
    assert_int_equal(b.len, 0);
    assert_true(buf_append(&b, data, 999));
    assert_false(buf_append(&b, data, 2));
    assert_null(buf_tail(&b, 2));
    assert_int_equal(b.len, 999);
    assert_true(buf_append(&b, data, 1));
    assert_int_equal(b.len, 1000);
    assert_false(buf_reserve(&b, SIZE_MAX));
    buf_free(&b);
}

/* The output buffer of a busy subscriber: packets appended at the end while
 * the socket takes a little from the front. Every byte comes out once, in
 * order, and the buffer never passes its maximum. */
/* Sizes are 32-bit: a larger maximum (max_output_buffer allows 4 GiB) is
 * clipped, never wrapped to a small one. */
static void test_maximum_above_32_bits_is_clipped(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, (size_t)UINT32_MAX + 1);
    assert_int_equal(b.max, UINT32_MAX);
    buf_init(&b, (size_t)1 << 40);
    assert_int_equal(b.max, UINT32_MAX);
    assert_true(buf_append(&b, "abc", 3));
    assert_int_equal(b.len, 3);
    assert_false(buf_reserve(&b, (size_t)UINT32_MAX)); /* 3 + that passes the maximum */
    buf_free(&b);
}

static void test_nearly_full_drained_from_front(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 4096);
    uint32_t written = 0, read = 0;
    for (int round = 0; round < 100000; round++) {
        uint8_t pkt[37];
        for (size_t i = 0; i < sizeof(pkt); i++)
            pkt[i] = (uint8_t)(written + i);
        if (buf_append(&b, pkt, sizeof(pkt)))
            written += sizeof(pkt);
        size_t take = b.len > 13 ? 13 : b.len;
        for (size_t i = 0; i < take; i++)
            assert_int_equal(buf_ptr(&b)[i], (uint8_t)(read + i));
        buf_consume(&b, take);
        read += (uint32_t)take;
        assert_true(b.cap <= 4096);
    }
    assert_int_equal(written - read, b.len);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential_small),
        cmocka_unit_test(test_differential_large),
        cmocka_unit_test(test_maximum_is_kept),
        cmocka_unit_test(test_maximum_above_32_bits_is_clipped),
        cmocka_unit_test(test_nearly_full_drained_from_front),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
