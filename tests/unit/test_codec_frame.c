/*
 * Unit tests for codec_frame_parse (src/codec/frame.c): finding the fixed
 * header of the next packet in a byte stream. Covers CODEC_NEED_MORE for every
 * prefix of valid packets (fed in heap blocks of exactly that size, so a
 * sanitizer build catches any read past the end), the Remaining Length at each
 * Variable Byte Integer boundary (headers written out by hand from the spec's
 * table 1-1), five-byte and non-minimal lengths [MQTT-1.5.5-1], the maximum
 * packet size (refused as soon as the length bytes are in, and accepted when
 * met exactly), packet type 0, the reserved flag bits of every packet type
 * [MQTT-2.1.3-1] and PUBLISH with QoS 3 [MQTT-3.3.1-4].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Copy n bytes into a heap block of exactly n bytes (ASan flags p[n]). */
static uint8_t *exact_copy(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n)
        memcpy(p, src, n);
    return p;
}

/* Parse the first n bytes of src from an exact-size copy. */
static codec_status parse_exact(const uint8_t *src, size_t n, size_t max_packet, codec_frame *f)
{
    uint8_t *p = exact_copy(src, n);
    codec_status st = codec_frame_parse(p, n, max_packet, f);
    free(p);
    return st;
}

static void want_status(codec_status got, codec_status want, const char *what, unsigned a,
                        unsigned b)
{
    if (got != want)
        fail_msg("%s [%u, %u]: got \"%s\", want \"%s\"", what, a, b, codec_status_name(got),
                 codec_status_name(want));
}

/* ---- incomplete input ------------------------------------------------- */

static void test_empty_input_needs_more(void **state)
{
    (void)state;
    codec_frame f;
    uint8_t dummy = 0x30;
    assert_int_equal(codec_frame_parse(&dummy, 0, 0, &f), CODEC_NEED_MORE);
    assert_int_equal(f.total_len, 0);
}

/* Each packet is fed one byte at a time: every proper prefix is NEED_MORE,
 * with total_len 0 until the length is complete and the full size after. */
static void check_every_prefix(const uint8_t *pkt, size_t n, size_t header_len, uint8_t type,
                               uint8_t flags)
{
    codec_frame f;
    for (size_t i = 0; i < n; i++) {
        codec_status st = parse_exact(pkt, i, 0, &f);
        want_status(st, CODEC_NEED_MORE, "prefix", (unsigned)i, (unsigned)n);
        assert_int_equal(f.total_len, i < header_len ? 0 : n);
    }
    assert_int_equal(parse_exact(pkt, n, 0, &f), CODEC_OK);
    assert_int_equal(f.type, type);
    assert_int_equal(f.flags, flags);
    assert_int_equal(f.header_len, header_len);
    assert_int_equal(f.remaining_len, n - header_len);
    assert_int_equal(f.total_len, n);
}

static void test_need_more_at_every_prefix(void **state)
{
    (void)state;
    /* PINGREQ: c0 00. */
    static const uint8_t pingreq[] = {0xc0, 0x00};
    check_every_prefix(pingreq, sizeof(pingreq), 2, CODEC_PINGREQ, 0);

    /* 3.1.1 CONNECT, client id "a", clean session, keep alive 60. */
    static const uint8_t connect[] = {0x10, 0x0d, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                      0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, 'a'};
    check_every_prefix(connect, sizeof(connect), 2, CODEC_CONNECT, 0);

    /* SUBSCRIBE (flags 0x2): id 1, filter "a/#", QoS 1. */
    static const uint8_t subscribe[] = {0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', '#', 0x01};
    check_every_prefix(subscribe, sizeof(subscribe), 2, CODEC_SUBSCRIBE, 0x2);

    /* PUBLISH QoS 1 retain with a 200-byte body: a two-byte length (c8 01). */
    uint8_t publish[203];
    memset(publish, 0x5a, sizeof(publish));
    publish[0] = 0x33;
    publish[1] = 0xc8;
    publish[2] = 0x01;
    check_every_prefix(publish, sizeof(publish), 3, CODEC_PUBLISH, 0x3);
}

/* Bytes after the packet (the start of the next one) are not part of it. */
static void test_following_bytes_are_left(void **state)
{
    (void)state;
    static const uint8_t two[] = {0xd0, 0x00, 0xe0, 0x00};
    codec_frame f;
    assert_int_equal(parse_exact(two, sizeof(two), 0, &f), CODEC_OK);
    assert_int_equal(f.type, CODEC_PINGRESP);
    assert_int_equal(f.total_len, 2);
    assert_int_equal(parse_exact(two + 2, 2, 0, &f), CODEC_OK);
    assert_int_equal(f.type, CODEC_DISCONNECT);
    assert_int_equal(f.total_len, 2);
}

/* ---- Remaining Length encoding ------------------------------------------ */

/* Table 1-1 of the spec, written out by hand. */
static const struct vbi_case {
    uint32_t value;
    uint8_t bytes[4];
    size_t len;
} vbi_cases[] = {
    {0, {0x00}, 1},
    {127, {0x7f}, 1},
    {128, {0x80, 0x01}, 2},
    {16383, {0xff, 0x7f}, 2},
    {16384, {0x80, 0x80, 0x01}, 3},
    {2097151, {0xff, 0xff, 0x7f}, 3},
    {2097152, {0x80, 0x80, 0x80, 0x01}, 4},
    {268435455, {0xff, 0xff, 0xff, 0x7f}, 4},
};

/* Only the fixed header is given: the size is known, the body is not there. */
static void test_length_boundaries_header_only(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vbi_cases) / sizeof(vbi_cases[0]); i++) {
        const struct vbi_case *c = &vbi_cases[i];
        uint8_t hdr[5] = {0x30};
        memcpy(hdr + 1, c->bytes, c->len);
        codec_frame f;
        codec_status st = parse_exact(hdr, 1 + c->len, 0, &f);
        if (c->value == 0) {
            want_status(st, CODEC_OK, "empty body", c->value, 0);
        } else {
            want_status(st, CODEC_NEED_MORE, "header only", c->value, 0);
        }
        assert_int_equal(f.total_len, 1 + c->len + c->value);
        /* One byte short of the length itself: size not known yet. */
        for (size_t cut = 1; cut < 1 + c->len; cut++) {
            st = parse_exact(hdr, cut, 0, &f);
            want_status(st, CODEC_NEED_MORE, "inside length", c->value, (unsigned)cut);
            assert_int_equal(f.total_len, 0);
        }
    }
}

/* The whole packet is given (up to 2 MiB): every field is reported. */
static void test_length_boundaries_full_packet(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vbi_cases) / sizeof(vbi_cases[0]); i++) {
        const struct vbi_case *c = &vbi_cases[i];
        if (c->value > 2097152)
            continue;
        size_t total = 1 + c->len + c->value;
        uint8_t *pkt = calloc(total, 1);
        assert_non_null(pkt);
        pkt[0] = 0x30;
        memcpy(pkt + 1, c->bytes, c->len);
        codec_frame f;
        want_status(codec_frame_parse(pkt, total, 0, &f), CODEC_OK, "full", c->value, 0);
        assert_int_equal(f.type, CODEC_PUBLISH);
        assert_int_equal(f.flags, 0);
        assert_int_equal(f.header_len, 1 + c->len);
        assert_int_equal(f.remaining_len, c->value);
        assert_int_equal(f.total_len, total);
        /* One byte missing (for an empty body, a length byte: size unknown). */
        want_status(codec_frame_parse(pkt, total - 1, 0, &f), CODEC_NEED_MORE, "short", c->value,
                    0);
        assert_int_equal(f.total_len, c->value == 0 ? 0 : total);
        free(pkt);
    }
}

/* "The maximum number of bytes in the Variable Byte Integer field is four"
 * (section 1.5.5): a fifth length byte is malformed, and so is a fourth one
 * with the continuation bit, even before the fifth arrives. */
static void test_five_byte_length_malformed(void **state)
{
    (void)state;
    static const uint8_t five[][6] = {
        {0x30, 0xff, 0xff, 0xff, 0xff, 0x7f},
        {0x30, 0x80, 0x80, 0x80, 0x80, 0x01},
        {0x30, 0x80, 0x80, 0x80, 0x80, 0x00},
    };
    codec_frame f;
    for (size_t i = 0; i < sizeof(five) / sizeof(five[0]); i++) {
        want_status(parse_exact(five[i], 6, 0, &f), CODEC_ERR_MALFORMED, "five", (unsigned)i, 6);
        want_status(parse_exact(five[i], 5, 0, &f), CODEC_ERR_MALFORMED, "four+cont", (unsigned)i,
                    5);
    }
}

/* "The encoded value MUST use the minimum number of bytes necessary to
 * represent the value" [MQTT-1.5.5-1]. */
static void test_non_minimal_length_malformed(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[6];
        size_t len;
    } cases[] = {
        {{0xc0, 0x80, 0x00}, 3},             /* 0 in two bytes */
        {{0xc0, 0xff, 0x80, 0x00}, 4},       /* 127 in three bytes */
        {{0xc0, 0x80, 0x80, 0x00}, 4},       /* 0 in three bytes */
        {{0xc0, 0x80, 0x80, 0x80, 0x00}, 5}, /* 0 in four bytes */
        {{0xc0, 0xff, 0xff, 0x80, 0x00}, 5}, /* 16383 in four bytes */
        {{0xc0, 0x81, 0x00}, 3},             /* 1 in two bytes */
    };
    codec_frame f;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        want_status(parse_exact(cases[i].bytes, cases[i].len, 0, &f), CODEC_ERR_MALFORMED,
                    "non-minimal", (unsigned)i, 0);
        /* Followed by more bytes: still malformed. */
        uint8_t more[16] = {0};
        memcpy(more, cases[i].bytes, cases[i].len);
        want_status(parse_exact(more, sizeof(more), 0, &f), CODEC_ERR_MALFORMED, "non-minimal+",
                    (unsigned)i, 0);
    }
}

/* ---- maximum packet size ---------------------------------------------- */

static void test_too_large_seen_from_header(void **state)
{
    (void)state;
    codec_frame f;
    /* PUBLISH with a 200-byte body: total 203. Only the header is given. */
    static const uint8_t hdr[] = {0x30, 0xc8, 0x01};
    want_status(parse_exact(hdr, 3, 202, &f), CODEC_ERR_TOO_LARGE, "203 > 202", 0, 0);
    want_status(parse_exact(hdr, 3, 1, &f), CODEC_ERR_TOO_LARGE, "203 > 1", 0, 0);
    want_status(parse_exact(hdr, 3, 203, &f), CODEC_NEED_MORE, "203 = 203", 0, 0);
    assert_int_equal(f.total_len, 203);
    want_status(parse_exact(hdr, 3, 204, &f), CODEC_NEED_MORE, "203 < 204", 0, 0);

    /* Exactly at the limit, whole packet: accepted. */
    uint8_t pkt[203] = {0x30, 0xc8, 0x01};
    want_status(parse_exact(pkt, sizeof(pkt), 203, &f), CODEC_OK, "at limit", 0, 0);
    assert_int_equal(f.total_len, 203);
    want_status(parse_exact(pkt, sizeof(pkt), 202, &f), CODEC_ERR_TOO_LARGE, "over", 0, 0);

    /* The limit counts the fixed header: c0 00 is 2 bytes. */
    static const uint8_t ping[] = {0xc0, 0x00};
    want_status(parse_exact(ping, 2, 2, &f), CODEC_OK, "ping at 2", 0, 0);
    want_status(parse_exact(ping, 2, 1, &f), CODEC_ERR_TOO_LARGE, "ping at 1", 0, 0);

    /* The largest packet the protocol allows, with max_packet 0 (no limit)
     * and with a limit of exactly its size, then one byte less. */
    static const uint8_t biggest[] = {0x30, 0xff, 0xff, 0xff, 0x7f};
    size_t max_total = 5u + CODEC_MAX_REMAINING_LENGTH;
    want_status(parse_exact(biggest, 5, 0, &f), CODEC_NEED_MORE, "protocol max", 0, 0);
    assert_int_equal(f.total_len, max_total);
    want_status(parse_exact(biggest, 5, max_total, &f), CODEC_NEED_MORE, "max exact", 0, 0);
    want_status(parse_exact(biggest, 5, max_total - 1, &f), CODEC_ERR_TOO_LARGE, "max-1", 0, 0);
    /* A 2 MiB + 4 byte packet against a 1 MiB limit: refused from 5 bytes. */
    static const uint8_t big[] = {0x30, 0x80, 0x80, 0x80, 0x01};
    want_status(parse_exact(big, 5, 1048576, &f), CODEC_ERR_TOO_LARGE, "2MiB", 0, 0);
}

/* ---- first byte --------------------------------------------------------- */

/* Type 0 is "Reserved / Forbidden" (table 2-1). */
static void test_type_zero_malformed(void **state)
{
    (void)state;
    codec_frame f;
    for (unsigned flags = 0; flags < 16; flags++) {
        uint8_t b[2] = {(uint8_t)flags, 0x00};
        want_status(parse_exact(b, 2, 0, &f), CODEC_ERR_MALFORMED, "type 0", flags, 2);
        want_status(parse_exact(b, 1, 0, &f), CODEC_ERR_MALFORMED, "type 0", flags, 1);
    }
}

/* Required flags from table 2-2, written independently of frame.c:
 * PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0010, every other type but
 * PUBLISH 0000 [MQTT-2.1.3-1]; anything else is a Malformed Packet. */
static void test_reserved_flags_every_type(void **state)
{
    (void)state;
    static const struct {
        uint8_t type;
        uint8_t flags;
    } required[] = {
        {CODEC_CONNECT, 0x0},    {CODEC_CONNACK, 0x0}, {CODEC_PUBACK, 0x0},
        {CODEC_PUBREC, 0x0},     {CODEC_PUBREL, 0x2},  {CODEC_PUBCOMP, 0x0},
        {CODEC_SUBSCRIBE, 0x2},  {CODEC_SUBACK, 0x0},  {CODEC_UNSUBSCRIBE, 0x2},
        {CODEC_UNSUBACK, 0x0},   {CODEC_PINGREQ, 0x0}, {CODEC_PINGRESP, 0x0},
        {CODEC_DISCONNECT, 0x0}, {CODEC_AUTH, 0x0},
    };
    codec_frame f;
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        for (unsigned flags = 0; flags < 16; flags++) {
            uint8_t b[2] = {(uint8_t)(required[i].type << 4 | flags), 0x00};
            bool ok = flags == required[i].flags;
            want_status(parse_exact(b, 2, 0, &f), ok ? CODEC_OK : CODEC_ERR_MALFORMED, "flags",
                        required[i].type, flags);
            if (ok) {
                assert_int_equal(f.type, required[i].type);
                assert_int_equal(f.flags, flags);
            }
            /* Known from the first byte alone. */
            want_status(parse_exact(b, 1, 0, &f), ok ? CODEC_NEED_MORE : CODEC_ERR_MALFORMED,
                        "flags, 1 byte", required[i].type, flags);
        }
    }
}

/* PUBLISH: DUP, QoS and RETAIN are free, except both QoS bits set
 * [MQTT-3.3.1-4]. */
static void test_publish_flags(void **state)
{
    (void)state;
    codec_frame f;
    for (unsigned flags = 0; flags < 16; flags++) {
        uint8_t b[2] = {(uint8_t)(0x30 | flags), 0x00};
        bool qos3 = (flags & 0x6) == 0x6;
        want_status(parse_exact(b, 2, 0, &f), qos3 ? CODEC_ERR_MALFORMED : CODEC_OK, "publish",
                    flags, 2);
        if (!qos3) {
            assert_int_equal(f.type, CODEC_PUBLISH);
            assert_int_equal(f.flags, flags);
        }
        want_status(parse_exact(b, 1, 0, &f), qos3 ? CODEC_ERR_MALFORMED : CODEC_NEED_MORE,
                    "publish, 1 byte", flags, 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_input_needs_more),
        cmocka_unit_test(test_need_more_at_every_prefix),
        cmocka_unit_test(test_following_bytes_are_left),
        cmocka_unit_test(test_length_boundaries_header_only),
        cmocka_unit_test(test_length_boundaries_full_packet),
        cmocka_unit_test(test_five_byte_length_malformed),
        cmocka_unit_test(test_non_minimal_length_malformed),
        cmocka_unit_test(test_too_large_seen_from_header),
        cmocka_unit_test(test_type_zero_malformed),
        cmocka_unit_test(test_reserved_flags_every_type),
        cmocka_unit_test(test_publish_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
