/*
 * Unit tests for the QoS acknowledgements PUBACK, PUBREC, PUBREL and PUBCOMP,
 * and for PINGREQ/PINGRESP, in src/codec (decode.c, encode.c, reasons.c), in
 * MQTT 3.1.1 and 5.0. Covers the 3.1.1 form (exactly a packet identifier,
 * anything more malformed), the three MQTT 5 forms (remaining length 2 with
 * reason 0 implied, 3 with a reason code only, 4 or more with reason code and
 * properties) both ways, the encoder's choice of the shortest form, every one
 * of the 256 reason code values against the lists of MQTT 5 tables 3-4, 3-5,
 * 3-6 and 3-7, packet identifier 0, reserved fixed-header flags, reason string
 * and user properties round trips, bad property blocks, the encoder's argument
 * and buffer checks, and the empty PING packets with their direction rules.
 * Inputs that must fail are decoded from heap blocks of exact size, so that a
 * sanitizer build catches any read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>

#include <cmocka.h>

#include "codec.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A byte array literal and its size, as two function arguments. */
#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static const uint8_t versions[] = {CODEC_V311, CODEC_V5};
static const codec_sender senders[] = {CODEC_FROM_CLIENT, CODEC_FROM_SERVER};
static const uint8_t ack_types[] = {CODEC_PUBACK, CODEC_PUBREC, CODEC_PUBREL, CODEC_PUBCOMP};

/* MQTT 5 tables 3-4 (PUBACK) and 3-5 (PUBREC) share one list; tables 3-6
 * (PUBREL) and 3-7 (PUBCOMP) another. */
static const uint8_t puback_reasons[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
static const uint8_t pubrel_reasons[] = {0x00, 0x92};

/* First byte of each ack: PUBREL has flags 0010 ([MQTT-3.6.1-1]), the
 * others 0000. */
static uint8_t first_byte(uint8_t type)
{
    return (uint8_t)(type << 4 | (type == CODEC_PUBREL ? 0x2 : 0x0));
}

static bool reason_listed(uint8_t type, uint8_t code)
{
    const uint8_t *list = puback_reasons;
    size_t n = COUNT(puback_reasons);
    if (type == CODEC_PUBREL || type == CODEC_PUBCOMP) {
        list = pubrel_reasons;
        n = COUNT(pubrel_reasons);
    }
    return memchr(list, code, n) != NULL;
}

/* A reason code each ack type accepts other than 0. */
static uint8_t nonzero_reason(uint8_t type)
{
    return type == CODEC_PUBREL || type == CODEC_PUBCOMP ? 0x92 : 0x10;
}

static uint8_t *exact_copy(const void *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n)
        memcpy(p, src, n);
    return p;
}

/* Decode a heap copy of exactly len bytes; check the status, and that the
 * whole input is consumed on success and nothing otherwise. */
static void check_decode(uint8_t version, codec_sender sender, const uint8_t *buf, size_t len,
                         codec_status want, int line)
{
    uint8_t *copy = exact_copy(buf, len);
    codec_decode_opts o = {.version = version, .sender = sender, .max_packet = 0};
    codec_packet p;
    size_t used = 12345;
    codec_status got = codec_decode(copy, len, &o, &p, &used);
    free(copy);
    if (got != want)
        fail_msg("line %d (version %u, sender %d, first byte %02x): got %s, want %s", line, version,
                 (int)sender, len ? buf[0] : 0, codec_status_name(got), codec_status_name(want));
    size_t want_used = want == CODEC_OK ? len : 0;
    if (used != want_used)
        fail_msg("line %d: consumed %zu, want %zu", line, used, want_used);
}

#define EXPECT(version, sender, want, ...)                                                         \
    check_decode((version), (sender), BYTES(__VA_ARGS__), (want), __LINE__)

/* Both senders may send every ack (MQTT 5 table 2-1). */
#define EXPECT_BOTH(version, want, ...)                                                            \
    do {                                                                                           \
        EXPECT((version), CODEC_FROM_CLIENT, (want), __VA_ARGS__);                                 \
        EXPECT((version), CODEC_FROM_SERVER, (want), __VA_ARGS__);                                 \
    } while (0)

/* Decode a valid ack of the given type that uses all of buf. */
static codec_ack decode_ack_ok(uint8_t version, codec_sender sender, uint8_t type,
                               const uint8_t *buf, size_t len)
{
    codec_decode_opts o = {.version = version, .sender = sender, .max_packet = 0};
    codec_packet p;
    size_t used = 0;
    codec_status st = codec_decode(buf, len, &o, &p, &used);
    if (st != CODEC_OK)
        fail_msg("type %u version %u: got %s", type, version, codec_status_name(st));
    assert_int_equal(used, len);
    assert_int_equal(p.type, type);
    return p.u.ack;
}

static void check_encoding(uint8_t type, const codec_ack *a, uint8_t version, const uint8_t *want,
                           size_t want_len, int line)
{
    uint8_t out[128];
    size_t n = 0;
    codec_status st = codec_encode_ack(type, a, version, out, sizeof(out), &n);
    if (st != CODEC_OK)
        fail_msg("line %d: encode gave %s", line, codec_status_name(st));
    if (n != want_len)
        fail_msg("line %d: encoded %zu bytes, want %zu", line, n, want_len);
    assert_memory_equal(out, want, want_len);

    /* codec_encode gives the same bytes. */
    codec_packet pkt = {.type = type};
    pkt.u.ack = *a;
    n = 0;
    assert_int_equal(codec_encode(&pkt, version, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

#define EXPECT_ENCODING(type, a, version, ...)                                                     \
    check_encoding((type), (a), (version), BYTES(__VA_ARGS__), __LINE__)

static void assert_view(codec_bytes got, const void *want, size_t want_len)
{
    assert_int_equal(got.len, want_len);
    if (want_len)
        assert_memory_equal(got.ptr, want, want_len);
}

#define ASSERT_VIEW(got, lit) assert_view((got), (lit), sizeof(lit) - 1)

/* ---- MQTT 3.1.1 ---------------------------------------------------------- */

static void test_v311_bytes(void **state)
{
    (void)state;
    /* 3.4 - 3.7: fixed header, remaining length 2, packet identifier. */
    codec_ack a = {.packet_id = 1};
    EXPECT_ENCODING(CODEC_PUBACK, &a, CODEC_V311, 0x40, 0x02, 0x00, 0x01);
    EXPECT_ENCODING(CODEC_PUBREC, &a, CODEC_V311, 0x50, 0x02, 0x00, 0x01);
    EXPECT_ENCODING(CODEC_PUBREL, &a, CODEC_V311, 0x62, 0x02, 0x00, 0x01);
    EXPECT_ENCODING(CODEC_PUBCOMP, &a, CODEC_V311, 0x70, 0x02, 0x00, 0x01);
    a.packet_id = 0xbeef;
    EXPECT_ENCODING(CODEC_PUBACK, &a, CODEC_V311, 0x40, 0x02, 0xbe, 0xef);
    EXPECT_ENCODING(CODEC_PUBREL, &a, CODEC_V311, 0x62, 0x02, 0xbe, 0xef);

    for (size_t t = 0; t < COUNT(ack_types); t++) {
        for (size_t s = 0; s < COUNT(senders); s++) {
            const uint8_t in[] = {first_byte(ack_types[t]), 0x02, 0xbe, 0xef};
            codec_ack d = decode_ack_ok(CODEC_V311, senders[s], ack_types[t], in, sizeof(in));
            assert_int_equal(d.packet_id, 0xbeef);
            assert_int_equal(d.reason, 0);
            assert_int_equal(d.props.present, 0);
            assert_int_equal(d.props.raw.len, 0);
            assert_int_equal(d.props.user_count, 0);
        }
    }
}

static void test_v311_wrong_length(void **state)
{
    (void)state;
    /* 3.1.1 acks are exactly 2 bytes after the fixed header; a reason code
     * or properties do not exist in 3.1.1. */
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t f = first_byte(ack_types[t]);
        EXPECT_BOTH(CODEC_V311, CODEC_ERR_MALFORMED, f, 0x03, 0x00, 0x01, 0x00);
        EXPECT_BOTH(CODEC_V311, CODEC_ERR_MALFORMED, f, 0x04, 0x00, 0x01, 0x00, 0x00);
        EXPECT_BOTH(CODEC_V311, CODEC_ERR_MALFORMED, f, 0x01, 0x00);
        EXPECT_BOTH(CODEC_V311, CODEC_ERR_MALFORMED, f, 0x00);
    }
}

static void test_reserved_flags(void **state)
{
    (void)state;
    /* [MQTT-2.1.3-1]: reserved flag bits must have the listed values; in
     * MQTT 5 invalid flags make a Malformed Packet (2.1.3). PUBREL must be
     * 0010 ([MQTT-3.6.1-1]). */
    for (size_t v = 0; v < COUNT(versions); v++) {
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x60, 0x02, 0x00, 0x01);
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x63, 0x02, 0x00, 0x01);
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x6a, 0x02, 0x00, 0x01);
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x42, 0x02, 0x00, 0x01);
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x41, 0x02, 0x00, 0x01);
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x58, 0x02, 0x00, 0x01);
        EXPECT_BOTH(versions[v], CODEC_ERR_MALFORMED, 0x72, 0x02, 0x00, 0x01);
    }
}

/* ---- MQTT 5 forms ----------------------------------------------------------- */

static void test_v5_decode_forms(void **state)
{
    (void)state;
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t type = ack_types[t];
        uint8_t f = first_byte(type);
        uint8_t code = nonzero_reason(type);
        for (size_t s = 0; s < COUNT(senders); s++) {
            /* 3.4.2.1: remaining length 2 means reason 0x00, no properties. */
            const uint8_t rl2[] = {f, 0x02, 0x00, 0x05};
            codec_ack d = decode_ack_ok(CODEC_V5, senders[s], type, rl2, sizeof(rl2));
            assert_int_equal(d.packet_id, 5);
            assert_int_equal(d.reason, 0x00);
            assert_int_equal(d.props.present, 0);
            assert_int_equal(d.props.raw.len, 0);

            /* 3.4.2.2: "If the Remaining Length is less than 4 there is no
             * Property Length and the value of 0 is used." */
            const uint8_t rl3[] = {f, 0x03, 0x00, 0x05, code};
            d = decode_ack_ok(CODEC_V5, senders[s], type, rl3, sizeof(rl3));
            assert_int_equal(d.packet_id, 5);
            assert_int_equal(d.reason, code);
            assert_int_equal(d.props.present, 0);
            assert_int_equal(d.props.raw.len, 0);

            const uint8_t rl4[] = {f, 0x04, 0x00, 0x05, code, 0x00};
            d = decode_ack_ok(CODEC_V5, senders[s], type, rl4, sizeof(rl4));
            assert_int_equal(d.packet_id, 5);
            assert_int_equal(d.reason, code);
            assert_int_equal(d.props.present, 0);
            assert_int_equal(d.props.raw.len, 0);

            const uint8_t full[] = {f,    0x0a, 0x00, 0x05, code, 0x06,
                                    0x1f, 0x00, 0x03, 'b',  'a',  'd'};
            d = decode_ack_ok(CODEC_V5, senders[s], type, full, sizeof(full));
            assert_int_equal(d.packet_id, 5);
            assert_int_equal(d.reason, code);
            assert_int_equal(d.props.present, 1ull << CODEC_PROP_REASON_STRING);
            ASSERT_VIEW(d.props.reason_string, "bad");
            assert_ptr_equal(d.props.raw.ptr, full + 6);
            assert_int_equal(d.props.raw.len, 6);

            /* Reason 0 written out with an empty property block is the same
             * packet as the 2-byte form. */
            const uint8_t zero4[] = {f, 0x04, 0x00, 0x05, 0x00, 0x00};
            d = decode_ack_ok(CODEC_V5, senders[s], type, zero4, sizeof(zero4));
            assert_int_equal(d.reason, 0);
            assert_int_equal(d.props.raw.len, 0);
        }
    }
}

static void test_v5_encode_forms(void **state)
{
    (void)state;
    /* Success with no properties: the 2-byte form (3.4.2.1). */
    codec_ack a = {.packet_id = 1};
    EXPECT_ENCODING(CODEC_PUBACK, &a, CODEC_V5, 0x40, 0x02, 0x00, 0x01);
    EXPECT_ENCODING(CODEC_PUBREC, &a, CODEC_V5, 0x50, 0x02, 0x00, 0x01);
    EXPECT_ENCODING(CODEC_PUBREL, &a, CODEC_V5, 0x62, 0x02, 0x00, 0x01);
    EXPECT_ENCODING(CODEC_PUBCOMP, &a, CODEC_V5, 0x70, 0x02, 0x00, 0x01);

    /* A reason and no properties: reason only, no property length. */
    a.reason = 0x10;
    EXPECT_ENCODING(CODEC_PUBACK, &a, CODEC_V5, 0x40, 0x03, 0x00, 0x01, 0x10);
    a.reason = 0x99;
    EXPECT_ENCODING(CODEC_PUBREC, &a, CODEC_V5, 0x50, 0x03, 0x00, 0x01, 0x99);
    a.reason = 0x92;
    EXPECT_ENCODING(CODEC_PUBREL, &a, CODEC_V5, 0x62, 0x03, 0x00, 0x01, 0x92);
    EXPECT_ENCODING(CODEC_PUBCOMP, &a, CODEC_V5, 0x70, 0x03, 0x00, 0x01, 0x92);

    /* Properties force the reason byte out even when it is 0. */
    a = (codec_ack){.packet_id = 1};
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    a.props.reason_string = CODEC_LIT("no");
    EXPECT_ENCODING(CODEC_PUBACK, &a, CODEC_V5, 0x40, 0x09, 0x00, 0x01, 0x00, 0x05, 0x1f, 0x00,
                    0x02, 'n', 'o');
    EXPECT_ENCODING(CODEC_PUBCOMP, &a, CODEC_V5, 0x70, 0x09, 0x00, 0x01, 0x00, 0x05, 0x1f, 0x00,
                    0x02, 'n', 'o');

    const codec_string_pair user[] = {{CODEC_LIT("k"), CODEC_LIT("v")}};
    a = (codec_ack){.packet_id = 0x0102, .reason = 0x80};
    a.props.user = user;
    a.props.user_len = 1;
    EXPECT_ENCODING(CODEC_PUBREC, &a, CODEC_V5, 0x50, 0x0b, 0x01, 0x02, 0x80, 0x07, 0x26, 0x00,
                    0x01, 'k', 0x00, 0x01, 'v');
}

static void test_v5_reason_codes(void **state)
{
    (void)state;
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t type = ack_types[t];
        for (unsigned code = 0; code < 256; code++) {
            bool ok = reason_listed(type, (uint8_t)code);
            const uint8_t rl3[] = {first_byte(type), 0x03, 0x00, 0x01, (uint8_t)code};
            const uint8_t rl4[] = {first_byte(type), 0x04, 0x00, 0x01, (uint8_t)code, 0x00};
            for (size_t s = 0; s < COUNT(senders); s++) {
                check_decode(CODEC_V5, senders[s], rl3, sizeof(rl3),
                             ok ? CODEC_OK : CODEC_ERR_MALFORMED, __LINE__);
                check_decode(CODEC_V5, senders[s], rl4, sizeof(rl4),
                             ok ? CODEC_OK : CODEC_ERR_MALFORMED, __LINE__);
                if (ok) {
                    codec_ack d = decode_ack_ok(CODEC_V5, senders[s], type, rl3, sizeof(rl3));
                    assert_int_equal(d.reason, code);
                }
            }
        }
    }
    /* Spot checks against the tables, in case the lists above drift. */
    EXPECT_BOTH(CODEC_V5, CODEC_OK, 0x40, 0x03, 0x00, 0x01, 0x97);
    EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, 0x40, 0x03, 0x00, 0x01, 0x92);
    EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, 0x62, 0x03, 0x00, 0x01, 0x10);
    EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, 0x70, 0x03, 0x00, 0x01, 0x80);
    EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, 0x50, 0x03, 0x00, 0x01, 0x01);
}

static void test_packet_id_zero(void **state)
{
    (void)state;
    /* [MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]): packet ids are non-zero. */
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t f = first_byte(ack_types[t]);
        EXPECT_BOTH(CODEC_V311, CODEC_ERR_PROTOCOL, f, 0x02, 0x00, 0x00);
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_PROTOCOL, f, 0x02, 0x00, 0x00);
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_PROTOCOL, f, 0x03, 0x00, 0x00, 0x00);
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_PROTOCOL, f, 0x04, 0x00, 0x00, 0x00, 0x00);

        for (size_t v = 0; v < COUNT(versions); v++) {
            codec_ack a = {.packet_id = 0};
            uint8_t out[16];
            size_t n = 99;
            assert_int_equal(codec_encode_ack(ack_types[t], &a, versions[v], out, sizeof(out), &n),
                             CODEC_ERR_ARG);
            assert_int_equal(n, 0);
        }
    }
}

static void test_v5_properties_roundtrip(void **state)
{
    (void)state;
    const codec_string_pair user[] = {
        {CODEC_LIT("a"), CODEC_LIT("b")},
        {CODEC_LIT("region"), CODEC_LIT("eu-west")},
    };
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t type = ack_types[t];
        uint8_t code = type == CODEC_PUBREL || type == CODEC_PUBCOMP ? 0x92 : 0x97;
        codec_ack a = {.packet_id = 0x4242, .reason = code};
        CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
        a.props.reason_string = CODEC_LIT("quota exceeded");
        a.props.user = user;
        a.props.user_len = COUNT(user);

        uint8_t out[128];
        size_t n = 0;
        assert_int_equal(codec_encode_ack(type, &a, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
        /* props: 1+2+14 reason string, 1+2+1+2+1 and 1+2+6+2+7 user = 42;
         * body 2+1+1+42. */
        assert_int_equal(n, 2 + 46);
        assert_int_equal(out[0], first_byte(type));
        assert_int_equal(out[1], 46);
        assert_int_equal(out[5], 42);

        for (size_t s = 0; s < COUNT(senders); s++) {
            codec_ack d = decode_ack_ok(CODEC_V5, senders[s], type, out, n);
            assert_int_equal(d.packet_id, 0x4242);
            assert_int_equal(d.reason, code);
            assert_int_equal(d.props.present, 1ull << CODEC_PROP_REASON_STRING);
            ASSERT_VIEW(d.props.reason_string, "quota exceeded");
            assert_int_equal(d.props.user_count, 2);
            assert_int_equal(d.props.raw.len, 42);

            size_t pos = 0;
            codec_prop prop;
            assert_true(codec_props_next(d.props.raw, &pos, &prop));
            assert_int_equal(prop.id, CODEC_PROP_REASON_STRING);
            ASSERT_VIEW(prop.str, "quota exceeded");
            for (size_t i = 0; i < COUNT(user); i++) {
                assert_true(codec_props_next(d.props.raw, &pos, &prop));
                assert_int_equal(prop.id, CODEC_PROP_USER);
                assert_view(prop.str, user[i].name.ptr, user[i].name.len);
                assert_view(prop.value, user[i].value.ptr, user[i].value.len);
            }
            assert_false(codec_props_next(d.props.raw, &pos, &prop));
            assert_int_equal(pos, 42);

            /* The decoded ack encodes to the same bytes. */
            uint8_t again[128];
            size_t n2 = 0;
            assert_int_equal(codec_encode_ack(type, &d, CODEC_V5, again, sizeof(again), &n2),
                             CODEC_OK);
            assert_int_equal(n2, n);
            assert_memory_equal(again, out, n);
        }
    }
}

static void test_v5_bad_properties(void **state)
{
    (void)state;
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t f = first_byte(ack_types[t]);
        /* Topic alias is not an ack property: malformed (2.2.2.2). */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00,
                    0x01);
        /* Unknown property identifier. */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x06, 0x00, 0x01, 0x00, 0x02, 0x7f, 0x00);
        /* Reason string twice: "It is a Protocol Error to include the Reason
         * String more than once" (3.4.2.2.2). */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_PROTOCOL, f, 0x0c, 0x00, 0x01, 0x00, 0x08, 0x1f, 0x00, 0x01,
                    'a', 0x1f, 0x00, 0x01, 'b');
        /* Reason string that is not UTF-8 ([MQTT-1.5.4-1]). */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x08, 0x00, 0x01, 0x00, 0x04, 0x1f, 0x00,
                    0x01, 0xff);
        /* Property length past the end; value cut short. */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x05, 0x00, 0x01, 0x00, 0x05, 0x1f);
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x07, 0x00, 0x01, 0x00, 0x03, 0x1f, 0x00,
                    0x05);
        /* Bytes after the property block. */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00);
        /* Packet identifier cut short. */
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x01, 0x00);
        EXPECT_BOTH(CODEC_V5, CODEC_ERR_MALFORMED, f, 0x00);
    }
}

static void test_short_reads(void **state)
{
    (void)state;
    /* Every prefix of a complete ack is "need more". */
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t f = first_byte(ack_types[t]);
        const uint8_t full[] = {f, 0x0a, 0x00, 0x05, 0x00, 0x06, 0x1f, 0x00, 0x03, 'b', 'a', 'd'};
        for (size_t k = 0; k < sizeof(full); k++)
            check_decode(CODEC_V5, CODEC_FROM_CLIENT, full, k, CODEC_NEED_MORE, __LINE__);
        check_decode(CODEC_V5, CODEC_FROM_CLIENT, full, sizeof(full), CODEC_OK, __LINE__);
        const uint8_t plain[] = {f, 0x02, 0x00, 0x05};
        for (size_t k = 0; k < sizeof(plain); k++)
            check_decode(CODEC_V311, CODEC_FROM_SERVER, plain, k, CODEC_NEED_MORE, __LINE__);
        check_decode(CODEC_V311, CODEC_FROM_SERVER, plain, sizeof(plain), CODEC_OK, __LINE__);
    }
}

/* ---- encoder checks ---------------------------------------------------------- */

static void expect_encode_arg(uint8_t type, const codec_ack *a, uint8_t version, int line)
{
    uint8_t out[64];
    size_t n = 777;
    codec_status st = codec_encode_ack(type, a, version, out, sizeof(out), &n);
    if (st != CODEC_ERR_ARG)
        fail_msg("line %d: got %s, want invalid argument", line, codec_status_name(st));
    assert_int_equal(n, 0);
}

static void test_encode_args(void **state)
{
    (void)state;
    for (size_t t = 0; t < COUNT(ack_types); t++) {
        uint8_t type = ack_types[t];
        /* 3.1.1 has neither reason codes nor properties. */
        codec_ack a = {.packet_id = 1, .reason = nonzero_reason(type)};
        expect_encode_arg(type, &a, CODEC_V311, __LINE__);
        a = (codec_ack){.packet_id = 1};
        CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
        a.props.reason_string = CODEC_LIT("x");
        expect_encode_arg(type, &a, CODEC_V311, __LINE__);
        const codec_string_pair user[] = {{CODEC_LIT("k"), CODEC_LIT("v")}};
        a = (codec_ack){.packet_id = 1};
        a.props.user = user;
        a.props.user_len = 1;
        expect_encode_arg(type, &a, CODEC_V311, __LINE__);

        /* A property an ack cannot carry. */
        a = (codec_ack){.packet_id = 1};
        CODEC_SET(&a.props, CODEC_PROP_TOPIC_ALIAS);
        a.props.topic_alias = 1;
        expect_encode_arg(type, &a, CODEC_V5, __LINE__);

        /* Unknown protocol levels. */
        a = (codec_ack){.packet_id = 1};
        expect_encode_arg(type, &a, 3, __LINE__);
        expect_encode_arg(type, &a, 0, __LINE__);
    }
    /* Types that are not acks. */
    codec_ack a = {.packet_id = 1};
    expect_encode_arg(CODEC_PUBLISH, &a, CODEC_V5, __LINE__);
    expect_encode_arg(CODEC_SUBACK, &a, CODEC_V5, __LINE__);
    expect_encode_arg(0, &a, CODEC_V311, __LINE__);
    expect_encode_arg(16, &a, CODEC_V311, __LINE__);
}

static void test_encode_buffer(void **state)
{
    (void)state;
    codec_ack a = {.packet_id = 1};
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    a.props.reason_string = CODEC_LIT("no");
    const size_t need = 11;
    for (size_t cap = 0; cap < need; cap++) {
        uint8_t out[16];
        memset(out, 0xAA, sizeof(out));
        size_t n = 0;
        assert_int_equal(codec_encode_ack(CODEC_PUBACK, &a, CODEC_V5, out, cap, &n),
                         CODEC_ERR_BUFFER);
        assert_int_equal(n, need);
        for (size_t i = cap; i < sizeof(out); i++)
            assert_int_equal(out[i], 0xAA);
    }
    uint8_t *exact = malloc(need);
    assert_non_null(exact);
    size_t n = 0;
    assert_int_equal(codec_encode_ack(CODEC_PUBACK, &a, CODEC_V5, exact, need, &n), CODEC_OK);
    assert_int_equal(n, need);
    assert_int_equal(exact[need - 1], 'o');
    free(exact);

    codec_ack plain = {.packet_id = 9};
    n = 0;
    assert_int_equal(codec_encode_ack(CODEC_PUBREL, &plain, CODEC_V311, NULL, 0, &n),
                     CODEC_ERR_BUFFER);
    assert_int_equal(n, 4);
    uint8_t four[4];
    assert_int_equal(codec_encode_ack(CODEC_PUBREL, &plain, CODEC_V311, four, 3, &n),
                     CODEC_ERR_BUFFER);
    assert_int_equal(n, 4);
    assert_int_equal(codec_encode_ack(CODEC_PUBREL, &plain, CODEC_V311, four, 4, &n), CODEC_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(four, ((const uint8_t[]){0x62, 0x02, 0x00, 0x09}), 4);
}

/* ---- PINGREQ / PINGRESP -------------------------------------------------------- */

static void test_ping_bytes(void **state)
{
    (void)state;
    /* 3.12 / 3.13: a fixed header with remaining length 0. */
    uint8_t out[4];
    size_t n = 0;
    assert_int_equal(codec_encode_ping(CODEC_PINGREQ, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 0xc0);
    assert_int_equal(out[1], 0x00);
    assert_int_equal(codec_encode_ping(CODEC_PINGRESP, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 0xd0);
    assert_int_equal(out[1], 0x00);

    codec_packet pkt = {.type = CODEC_PINGREQ};
    for (size_t v = 0; v < COUNT(versions); v++) {
        assert_int_equal(codec_encode(&pkt, versions[v], out, sizeof(out), &n), CODEC_OK);
        assert_int_equal(n, 2);
        assert_int_equal(out[0], 0xc0);
        assert_int_equal(out[1], 0x00);
    }

    /* Buffer too small: the size needed is 2. */
    assert_int_equal(codec_encode_ping(CODEC_PINGREQ, out, 1, &n), CODEC_ERR_BUFFER);
    assert_int_equal(n, 2);
    assert_int_equal(codec_encode_ping(CODEC_PINGRESP, NULL, 0, &n), CODEC_ERR_BUFFER);
    assert_int_equal(n, 2);
    /* Only the two ping types. */
    n = 5;
    assert_int_equal(codec_encode_ping(CODEC_PUBACK, out, sizeof(out), &n), CODEC_ERR_ARG);
    assert_int_equal(n, 0);
    assert_int_equal(codec_encode_ping(CODEC_DISCONNECT, out, sizeof(out), &n), CODEC_ERR_ARG);
    assert_int_equal(n, 0);

    for (size_t v = 0; v < COUNT(versions); v++) {
        codec_decode_opts o = {.version = versions[v], .sender = CODEC_FROM_CLIENT};
        codec_packet p;
        size_t used = 0;
        static const uint8_t req[] = {0xc0, 0x00};
        assert_int_equal(codec_decode(req, sizeof(req), &o, &p, &used), CODEC_OK);
        assert_int_equal(p.type, CODEC_PINGREQ);
        assert_int_equal(used, 2);
        o.sender = CODEC_FROM_SERVER;
        static const uint8_t resp[] = {0xd0, 0x00};
        assert_int_equal(codec_decode(resp, sizeof(resp), &o, &p, &used), CODEC_OK);
        assert_int_equal(p.type, CODEC_PINGRESP);
        assert_int_equal(used, 2);
        /* One byte: need more. */
        assert_int_equal(codec_decode(resp, 1, &o, &p, &used), CODEC_NEED_MORE);
        assert_int_equal(used, 0);
    }
}

static void test_ping_errors(void **state)
{
    (void)state;
    for (size_t v = 0; v < COUNT(versions); v++) {
        uint8_t ver = versions[v];
        /* No variable header or payload (3.12.2, 3.12.3). */
        EXPECT(ver, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0xc0, 0x01, 0x00);
        EXPECT(ver, CODEC_FROM_SERVER, CODEC_ERR_MALFORMED, 0xd0, 0x01, 0x00);
        EXPECT(ver, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0xc0, 0x02, 0x00, 0x00);
        /* Reserved flags must be 0000 ([MQTT-2.1.3-1]). */
        EXPECT(ver, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0xc1, 0x00);
        EXPECT(ver, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0xc8, 0x00);
        EXPECT(ver, CODEC_FROM_SERVER, CODEC_ERR_MALFORMED, 0xd2, 0x00);
        /* Direction (MQTT 5 table 2-1; 3.1.1 table 2.1): PINGREQ is client
         * to server, PINGRESP server to client. */
        EXPECT(ver, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0xc0, 0x00);
        EXPECT(ver, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0xd0, 0x00);
    }
    /* Before CONNECT (version 0) nothing but CONNECT: [MQTT-3.1.0-1]. */
    EXPECT(0, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0xc0, 0x00);
    EXPECT(0, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x40, 0x02, 0x00, 0x01);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v311_bytes),        cmocka_unit_test(test_v311_wrong_length),
        cmocka_unit_test(test_reserved_flags),    cmocka_unit_test(test_v5_decode_forms),
        cmocka_unit_test(test_v5_encode_forms),   cmocka_unit_test(test_v5_reason_codes),
        cmocka_unit_test(test_packet_id_zero),    cmocka_unit_test(test_v5_properties_roundtrip),
        cmocka_unit_test(test_v5_bad_properties), cmocka_unit_test(test_short_reads),
        cmocka_unit_test(test_encode_args),       cmocka_unit_test(test_encode_buffer),
        cmocka_unit_test(test_ping_bytes),        cmocka_unit_test(test_ping_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
