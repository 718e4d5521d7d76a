/*
 * Unit tests for PUBLISH in src/codec (frame.c, decode.c, encode.c, props.c),
 * in MQTT 3.1.1 and 5.0: byte-exact encodings written by hand from the spec
 * (fixed header flags, topic, packet identifier, the MQTT 5 property block,
 * payload) and decoded back field by field; encode-decode-encode round trips
 * over every QoS, DUP and RETAIN combination, an empty payload and a 300 KB
 * payload on the heap; every PUBLISH property, with user properties and the
 * several subscription identifiers a server may send, walked in order; the
 * refusals (empty topic without a topic alias, wildcards, invalid UTF-8 and
 * U+0000, packet identifier 0, DUP on QoS 0, QoS 3, subscription identifier
 * from a client) with the exact status each must give; truncation at every
 * byte, both as a short read (need more) and as a short declared length
 * (malformed), decoded from heap blocks of exact size so that a sanitizer
 * build catches any read past the end; the max_packet limit; and the encoder's
 * argument checks and its "buffer too small, need N" answer.
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

/* Copy bytes into a heap block of exactly n bytes, so ASan flags any read at
 * or past p[n]. */
static uint8_t *exact_copy(const void *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n)
        memcpy(p, src, n);
    return p;
}

/* Decode buf[0..len) (a heap copy of exactly that size) and check the status,
 * and that the whole input is consumed on success and nothing otherwise. */
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
        fail_msg("line %d (version %u, sender %d): got %s, want %s", line, version, (int)sender,
                 codec_status_name(got), codec_status_name(want));
    size_t want_used = want == CODEC_OK ? len : 0;
    if (used != want_used)
        fail_msg("line %d: consumed %zu, want %zu", line, used, want_used);
}

#define EXPECT(version, sender, want, ...)                                                         \
    check_decode((version), (sender), BYTES(__VA_ARGS__), (want), __LINE__)

/* Decode a packet that must be a valid PUBLISH using all of buf. */
static codec_publish decode_ok(uint8_t version, codec_sender sender, const uint8_t *buf, size_t len)
{
    codec_decode_opts o = {.version = version, .sender = sender, .max_packet = 0};
    codec_packet p;
    size_t used = 0;
    assert_int_equal(codec_decode(buf, len, &o, &p, &used), CODEC_OK);
    assert_int_equal(used, len);
    assert_int_equal(p.type, CODEC_PUBLISH);
    return p.u.publish;
}

static void assert_view(codec_bytes got, const void *want, size_t want_len)
{
    assert_int_equal(got.len, want_len);
    if (want_len)
        assert_memory_equal(got.ptr, want, want_len);
}

#define ASSERT_VIEW(got, lit) assert_view((got), (lit), sizeof(lit) - 1)

/* Encode with codec_encode_publish and with codec_encode, and compare both
 * with the expected bytes. */
static void check_encoding(const codec_publish *p, uint8_t version, const uint8_t *want,
                           size_t want_len, int line)
{
    uint8_t out[512];
    size_t n = 0;
    codec_status st = codec_encode_publish(p, version, out, sizeof(out), &n);
    if (st != CODEC_OK)
        fail_msg("line %d: encode gave %s", line, codec_status_name(st));
    if (n != want_len)
        fail_msg("line %d: encoded %zu bytes, want %zu", line, n, want_len);
    assert_memory_equal(out, want, want_len);

    codec_packet pkt = {.type = CODEC_PUBLISH};
    pkt.u.publish = *p;
    uint8_t out2[512];
    size_t n2 = 0;
    assert_int_equal(codec_encode(&pkt, version, out2, sizeof(out2), &n2), CODEC_OK);
    assert_int_equal(n2, want_len);
    assert_memory_equal(out2, want, want_len);
}

#define EXPECT_ENCODING(p, version, ...)                                                           \
    check_encoding((p), (version), BYTES(__VA_ARGS__), __LINE__)

/* Encode into a heap block of exactly the needed size. */
static uint8_t *encode_exact(const codec_publish *p, uint8_t version, size_t *len)
{
    size_t need = 0;
    assert_int_equal(codec_encode_publish(p, version, NULL, 0, &need), CODEC_ERR_BUFFER);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    size_t n = 0;
    assert_int_equal(codec_encode_publish(p, version, buf, need, &n), CODEC_OK);
    assert_int_equal(n, need);
    *len = n;
    return buf;
}

/* Write a Variable Byte Integer; returns its size. */
static size_t put_vbi(uint8_t *out, size_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = (uint8_t)(v ? b | 0x80 : b);
    } while (v);
    return n;
}

static void assert_publish_equal(const codec_publish *got, const codec_publish *want)
{
    assert_int_equal(got->dup, want->dup);
    assert_int_equal(got->qos, want->qos);
    assert_int_equal(got->retain, want->retain);
    assert_int_equal(got->packet_id, want->packet_id);
    assert_view(got->topic, want->topic.ptr, want->topic.len);
    assert_view(got->payload, want->payload.ptr, want->payload.len);
}

/* ---- byte-exact encodings ------------------------------------------------ */

static void test_qos0_bytes(void **state)
{
    (void)state;
    codec_publish p = {.qos = 0, .topic = CODEC_LIT("a/b"), .payload = CODEC_LIT("hi")};
    /* 3.3.1: type 3, flags 0; 3.3.2: topic as a UTF-8 string, no packet id
     * at QoS 0; 3.3.3: payload is the rest. */
    EXPECT_ENCODING(&p, CODEC_V311, 0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i');
    /* MQTT 5 adds the property length (0) after the topic. */
    EXPECT_ENCODING(&p, CODEC_V5, 0x30, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 'h', 'i');

    static const uint8_t v311[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'};
    codec_publish d = decode_ok(CODEC_V311, CODEC_FROM_CLIENT, v311, sizeof(v311));
    assert_false(d.dup);
    assert_int_equal(d.qos, 0);
    assert_false(d.retain);
    assert_int_equal(d.packet_id, 0);
    ASSERT_VIEW(d.topic, "a/b");
    assert_ptr_equal(d.topic.ptr, v311 + 4); /* a view into the input */
    ASSERT_VIEW(d.payload, "hi");
    assert_ptr_equal(d.payload.ptr, v311 + 7);
    assert_int_equal(d.props.present, 0);
    assert_int_equal(d.props.raw.len, 0);

    static const uint8_t v5[] = {0x30, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 'h', 'i'};
    d = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, v5, sizeof(v5));
    assert_int_equal(d.qos, 0);
    assert_int_equal(d.packet_id, 0);
    ASSERT_VIEW(d.topic, "a/b");
    ASSERT_VIEW(d.payload, "hi");
    assert_ptr_equal(d.payload.ptr, v5 + 8);
    assert_int_equal(d.props.present, 0);
    assert_int_equal(d.props.raw.len, 0);
    assert_int_equal(d.props.user_count, 0);
    assert_int_equal(d.props.sub_id_count, 0);
}

static void test_flag_bytes(void **state)
{
    (void)state;
    /* QoS 1 with RETAIN: flags 0011, packet id after the topic. */
    codec_publish p = {.qos = 1,
                       .retain = true,
                       .packet_id = 10,
                       .topic = CODEC_LIT("a/b"),
                       .payload = CODEC_LIT("hi")};
    EXPECT_ENCODING(&p, CODEC_V311, 0x33, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0a, 'h', 'i');
    EXPECT_ENCODING(&p, CODEC_V5, 0x33, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0a, 0x00, 'h',
                    'i');

    /* QoS 2 with DUP: flags 1100. */
    p = (codec_publish){.dup = true,
                        .qos = 2,
                        .packet_id = 0x1234,
                        .topic = CODEC_LIT("a/b"),
                        .payload = CODEC_LIT("hi")};
    EXPECT_ENCODING(&p, CODEC_V311, 0x3c, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'h', 'i');
    EXPECT_ENCODING(&p, CODEC_V5, 0x3c, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 0x00, 'h',
                    'i');

    /* QoS 1 with DUP and RETAIN: flags 1011, packet id 0xffff. */
    p = (codec_publish){.dup = true,
                        .qos = 1,
                        .retain = true,
                        .packet_id = 0xffff,
                        .topic = CODEC_LIT("x"),
                        .payload = CODEC_LIT("")};
    EXPECT_ENCODING(&p, CODEC_V311, 0x3b, 0x05, 0x00, 0x01, 'x', 0xff, 0xff);
    EXPECT_ENCODING(&p, CODEC_V5, 0x3b, 0x06, 0x00, 0x01, 'x', 0xff, 0xff, 0x00);

    static const uint8_t q2[] = {0x3c, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'h', 'i'};
    codec_publish d = decode_ok(CODEC_V311, CODEC_FROM_SERVER, q2, sizeof(q2));
    assert_true(d.dup);
    assert_int_equal(d.qos, 2);
    assert_false(d.retain);
    assert_int_equal(d.packet_id, 0x1234);
    ASSERT_VIEW(d.topic, "a/b");
    ASSERT_VIEW(d.payload, "hi");

    static const uint8_t q1[] = {0x3b, 0x06, 0x00, 0x01, 'x', 0xff, 0xff, 0x00};
    d = decode_ok(CODEC_V5, CODEC_FROM_SERVER, q1, sizeof(q1));
    assert_true(d.dup);
    assert_int_equal(d.qos, 1);
    assert_true(d.retain);
    assert_int_equal(d.packet_id, 0xffff);
    ASSERT_VIEW(d.topic, "x");
    assert_int_equal(d.payload.len, 0);
}

static void test_v5_property_bytes(void **state)
{
    (void)state;
    /* 2.2.2: property length, then identifier + value; the encoder writes
     * single-valued properties in identifier order, then user properties. */
    const codec_string_pair user[] = {{CODEC_LIT("k"), CODEC_LIT("v")}};
    codec_publish p = {
        .qos = 1, .packet_id = 1, .topic = CODEC_LIT("t"), .payload = CODEC_LIT("x")};
    CODEC_SET(&p.props, CODEC_PROP_PAYLOAD_FORMAT);
    p.props.payload_format = 1;
    CODEC_SET(&p.props, CODEC_PROP_MESSAGE_EXPIRY);
    p.props.message_expiry = 60;
    CODEC_SET(&p.props, CODEC_PROP_TOPIC_ALIAS);
    p.props.topic_alias = 2;
    p.props.user = user;
    p.props.user_len = 1;
    EXPECT_ENCODING(&p, CODEC_V5, 0x32, 0x18, 0x00, 0x01, 't', 0x00, 0x01, 0x11, /* props: */
                    0x01, 0x01,                                                  /* format */
                    0x02, 0x00, 0x00, 0x00, 0x3c,                                /* expiry */
                    0x23, 0x00, 0x02,                                            /* alias */
                    0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v',                      /* user */
                    'x');

    static const uint8_t in[] = {0x32, 0x18, 0x00, 0x01, 't',  0x00, 0x01, 0x11, 0x01,
                                 0x01, 0x02, 0x00, 0x00, 0x00, 0x3c, 0x23, 0x00, 0x02,
                                 0x26, 0x00, 0x01, 'k',  0x00, 0x01, 'v',  'x'};
    codec_publish d = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, in, sizeof(in));
    assert_int_equal(d.qos, 1);
    assert_int_equal(d.packet_id, 1);
    ASSERT_VIEW(d.topic, "t");
    ASSERT_VIEW(d.payload, "x");
    assert_int_equal(d.props.present, (1ull << CODEC_PROP_PAYLOAD_FORMAT) |
                                          (1ull << CODEC_PROP_MESSAGE_EXPIRY) |
                                          (1ull << CODEC_PROP_TOPIC_ALIAS));
    assert_int_equal(d.props.payload_format, 1);
    assert_int_equal(d.props.message_expiry, 60);
    assert_int_equal(d.props.topic_alias, 2);
    assert_int_equal(d.props.user_count, 1);
    assert_int_equal(d.props.sub_id_count, 0);
    assert_ptr_equal(d.props.raw.ptr, in + 8);
    assert_int_equal(d.props.raw.len, 0x11);
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip_matrix(void **state)
{
    (void)state;
    static const uint8_t binary[] = {0x00, 0xff, 0x00, 0x80};
    const codec_bytes payloads[] = {
        {NULL, 0},
        CODEC_LIT("hello"),
        {binary, sizeof(binary)},
    };
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (uint8_t qos = 0; qos <= 2; qos++) {
            for (int dup = 0; dup <= 1; dup++) {
                for (int retain = 0; retain <= 1; retain++) {
                    for (size_t k = 0; k < COUNT(payloads); k++) {
                        if (qos == 0 && dup)
                            continue; /* [MQTT-3.3.1-2] */
                        codec_publish p = {.dup = dup,
                                           .qos = qos,
                                           .retain = retain,
                                           .packet_id = qos ? (uint16_t)(0x0100 + qos) : 0,
                                           .topic = CODEC_LIT("sensors/room-1/temp"),
                                           .payload = payloads[k]};
                        uint8_t out[128];
                        size_t n = 0;
                        assert_int_equal(
                            codec_encode_publish(&p, versions[v], out, sizeof(out), &n), CODEC_OK);
                        size_t body = 2 + 19 + (qos ? 2 : 0) + (versions[v] == CODEC_V5 ? 1 : 0) +
                                      payloads[k].len;
                        assert_int_equal(n, 2 + body);
                        assert_int_equal(out[0], 0x30 | dup << 3 | qos << 1 | retain);
                        assert_int_equal(out[1], body);

                        codec_publish d = decode_ok(versions[v], CODEC_FROM_CLIENT, out, n);
                        assert_publish_equal(&d, &p);
                        assert_int_equal(d.props.present, 0);

                        /* The decoded struct encodes to the same bytes. */
                        uint8_t again[128];
                        size_t n2 = 0;
                        assert_int_equal(
                            codec_encode_publish(&d, versions[v], again, sizeof(again), &n2),
                            CODEC_OK);
                        assert_int_equal(n2, n);
                        assert_memory_equal(again, out, n);
                    }
                }
            }
        }
    }
}

static void test_empty_payload(void **state)
{
    (void)state;
    /* 3.3.3: a zero-length payload is valid. */
    codec_publish p = {.topic = CODEC_LIT("a/b")};
    EXPECT_ENCODING(&p, CODEC_V311, 0x30, 0x05, 0x00, 0x03, 'a', '/', 'b');
    EXPECT_ENCODING(&p, CODEC_V5, 0x30, 0x06, 0x00, 0x03, 'a', '/', 'b', 0x00);
    p.qos = 1;
    p.packet_id = 1;
    EXPECT_ENCODING(&p, CODEC_V311, 0x32, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01);

    static const uint8_t v311[] = {0x30, 0x05, 0x00, 0x03, 'a', '/', 'b'};
    codec_publish d = decode_ok(CODEC_V311, CODEC_FROM_CLIENT, v311, sizeof(v311));
    ASSERT_VIEW(d.topic, "a/b");
    assert_int_equal(d.payload.len, 0);

    static const uint8_t v5[] = {0x32, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 0x00};
    d = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, v5, sizeof(v5));
    assert_int_equal(d.qos, 1);
    assert_int_equal(d.packet_id, 1);
    assert_int_equal(d.payload.len, 0);
}

static void test_large_payload(void **state)
{
    (void)state;
    const size_t big = 300u * 1024u; /* 307200: a 3-byte remaining length */
    uint8_t *payload = malloc(big);
    assert_non_null(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (uint8_t)(i * 31u + 7u);

    for (size_t v = 0; v < COUNT(versions); v++) {
        codec_publish p = {
            .qos = 1, .packet_id = 77, .topic = CODEC_LIT("a/b"), .payload = {payload, big}};
        size_t n = 0;
        uint8_t *out = encode_exact(&p, versions[v], &n);
        /* Remaining length: 5 (topic) + 2 (id) [+ 1 (props)] + 307200. */
        size_t remaining = 7 + (versions[v] == CODEC_V5 ? 1 : 0) + big;
        assert_int_equal(n, 4 + remaining);
        assert_int_equal(out[0], 0x32);
        /* 307207 = 7 + 96*128 + 18*128^2; 307208 = 8 + ... (1.5.5). */
        assert_int_equal(out[1], versions[v] == CODEC_V5 ? 0x88 : 0x87);
        assert_int_equal(out[2], 0xe0);
        assert_int_equal(out[3], 0x12);

        codec_publish d = decode_ok(versions[v], CODEC_FROM_CLIENT, out, n);
        assert_int_equal(d.packet_id, 77);
        ASSERT_VIEW(d.topic, "a/b");
        assert_int_equal(d.payload.len, big);
        assert_ptr_equal(d.payload.ptr, out + n - big);
        assert_memory_equal(d.payload.ptr, payload, big);

        /* A short read anywhere is "need more"; a few cuts are enough here. */
        codec_decode_opts o = {.version = versions[v], .sender = CODEC_FROM_CLIENT};
        codec_packet pkt;
        size_t used = 1;
        const size_t cuts[] = {0, 1, 2, 3, 4, 100, n / 2, n - 1};
        for (size_t c = 0; c < COUNT(cuts); c++) {
            assert_int_equal(codec_decode(out, cuts[c], &o, &pkt, &used), CODEC_NEED_MORE);
            assert_int_equal(used, 0);
        }
        free(out);
    }
    free(payload);
}

/* Every PUBLISH property, several user properties and the subscription
 * identifiers a server adds (3.3.2.3.8: one per matching subscription). */
static void test_v5_all_properties(void **state)
{
    (void)state;
    static const uint8_t corr[] = {0x00, 0x01, 0xfe};
    const codec_string_pair user[] = {
        {CODEC_LIT("a"), CODEC_LIT("1")},
        {CODEC_LIT("b"), CODEC_LIT("")},
        {CODEC_LIT(""), CODEC_LIT("empty name")},
    };
    const uint32_t sub_ids[] = {1, 127, 128, 16383, 16384, 268435455};
    codec_publish p = {
        .qos = 1, .packet_id = 0x0203, .topic = CODEC_LIT("t/x"), .payload = CODEC_LIT("{}")};
    CODEC_SET(&p.props, CODEC_PROP_PAYLOAD_FORMAT);
    p.props.payload_format = 1;
    CODEC_SET(&p.props, CODEC_PROP_MESSAGE_EXPIRY);
    p.props.message_expiry = 3600;
    CODEC_SET(&p.props, CODEC_PROP_CONTENT_TYPE);
    p.props.content_type = CODEC_LIT("text/plain");
    CODEC_SET(&p.props, CODEC_PROP_RESPONSE_TOPIC);
    p.props.response_topic = CODEC_LIT("reply/here");
    CODEC_SET(&p.props, CODEC_PROP_CORRELATION_DATA);
    p.props.correlation_data = (codec_bytes){corr, sizeof(corr)};
    CODEC_SET(&p.props, CODEC_PROP_TOPIC_ALIAS);
    p.props.topic_alias = 9;
    p.props.user = user;
    p.props.user_len = COUNT(user);
    p.props.sub_ids = sub_ids;
    p.props.sub_ids_len = COUNT(sub_ids);

    uint8_t out[256];
    size_t n = 0;
    assert_int_equal(codec_encode_publish(&p, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    /* Properties: 2+5+13+13+6+3 single-valued, 7+6+15 user, 2+2+3+3+4+5
     * subscription identifiers = 89; body 5+2+1+89+2 = 99. */
    assert_int_equal(n, 101);
    assert_int_equal(out[0], 0x32);
    assert_int_equal(out[1], 99);
    assert_int_equal(out[9], 89);

    codec_publish d = decode_ok(CODEC_V5, CODEC_FROM_SERVER, out, n);
    assert_int_equal(d.qos, 1);
    assert_int_equal(d.packet_id, 0x0203);
    ASSERT_VIEW(d.topic, "t/x");
    ASSERT_VIEW(d.payload, "{}");
    assert_int_equal(d.props.present,
                     (1ull << CODEC_PROP_PAYLOAD_FORMAT) | (1ull << CODEC_PROP_MESSAGE_EXPIRY) |
                         (1ull << CODEC_PROP_CONTENT_TYPE) | (1ull << CODEC_PROP_RESPONSE_TOPIC) |
                         (1ull << CODEC_PROP_CORRELATION_DATA) | (1ull << CODEC_PROP_TOPIC_ALIAS));
    assert_int_equal(d.props.payload_format, 1);
    assert_int_equal(d.props.message_expiry, 3600);
    ASSERT_VIEW(d.props.content_type, "text/plain");
    ASSERT_VIEW(d.props.response_topic, "reply/here");
    assert_view(d.props.correlation_data, corr, sizeof(corr));
    assert_int_equal(d.props.topic_alias, 9);
    assert_int_equal(d.props.user_count, 3);
    assert_int_equal(d.props.sub_id_count, 6);
    assert_int_equal(d.props.subscription_id, 1);
    assert_ptr_equal(d.props.raw.ptr, out + 10);
    assert_int_equal(d.props.raw.len, 89);

    /* Walk the block: the order the encoder promises. */
    static const uint8_t want_ids[] = {0x01, 0x02, 0x03, 0x08, 0x09, 0x23, 0x26, 0x26,
                                       0x26, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b};
    size_t pos = 0;
    codec_prop prop;
    size_t i = 0;
    while (codec_props_next(d.props.raw, &pos, &prop)) {
        assert_true(i < COUNT(want_ids));
        assert_int_equal(prop.id, want_ids[i]);
        switch (i) {
        case 0:
            assert_int_equal(prop.num, 1);
            break;
        case 1:
            assert_int_equal(prop.num, 3600);
            break;
        case 2:
            ASSERT_VIEW(prop.str, "text/plain");
            break;
        case 3:
            ASSERT_VIEW(prop.str, "reply/here");
            break;
        case 4:
            assert_view(prop.str, corr, sizeof(corr));
            break;
        case 5:
            assert_int_equal(prop.num, 9);
            break;
        case 6:
        case 7:
        case 8:
            assert_view(prop.str, user[i - 6].name.ptr, user[i - 6].name.len);
            assert_view(prop.value, user[i - 6].value.ptr, user[i - 6].value.len);
            break;
        default:
            assert_int_equal(prop.num, sub_ids[i - 9]);
            break;
        }
        i++;
    }
    assert_int_equal(i, COUNT(want_ids));
    assert_int_equal(pos, 89);

    /* A decoded block re-encodes to the same bytes (codec.h). */
    uint8_t again[256];
    size_t n2 = 0;
    assert_int_equal(codec_encode_publish(&d, CODEC_V5, again, sizeof(again), &n2), CODEC_OK);
    assert_int_equal(n2, n);
    assert_memory_equal(again, out, n);

    /* The same packet from a client breaks [MQTT-3.3.4-6]. */
    check_decode(CODEC_V5, CODEC_FROM_CLIENT, out, n, CODEC_ERR_PROTOCOL, __LINE__);

    /* Without the subscription identifiers a client may send it. */
    p.props.sub_ids_len = 0;
    assert_int_equal(codec_encode_publish(&p, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, 101 - 19);
    d = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, out, n);
    assert_int_equal(d.props.sub_id_count, 0);
    assert_int_equal(d.props.user_count, 3);
    assert_int_equal(d.props.topic_alias, 9);
}

/* ---- topic rules ----------------------------------------------------------- */

static void test_v5_topic_alias_empty_topic(void **state)
{
    (void)state;
    /* 3.3.2.3.4: with a Topic Alias the Topic Name may be zero length. */
    codec_publish p = {.topic = {NULL, 0}};
    CODEC_SET(&p.props, CODEC_PROP_TOPIC_ALIAS);
    p.props.topic_alias = 7;
    EXPECT_ENCODING(&p, CODEC_V5, 0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x07);

    static const uint8_t aliased[] = {0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x07};
    codec_publish d = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, aliased, sizeof(aliased));
    assert_int_equal(d.topic.len, 0);
    assert_int_equal(d.props.present, 1ull << CODEC_PROP_TOPIC_ALIAS);
    assert_int_equal(d.props.topic_alias, 7);
    assert_int_equal(d.payload.len, 0);
    d = decode_ok(CODEC_V5, CODEC_FROM_SERVER, aliased, sizeof(aliased));
    assert_int_equal(d.props.topic_alias, 7);

    /* A topic and an alias together set up the mapping. */
    static const uint8_t both[] = {0x30, 0x0a, 0x00, 0x03, 'a',  '/',
                                   'b',  0x03, 0x23, 0x00, 0x07, 'z'};
    d = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, both, sizeof(both));
    ASSERT_VIEW(d.topic, "a/b");
    assert_int_equal(d.props.topic_alias, 7);
    ASSERT_VIEW(d.payload, "z");

    /* 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and
     * there is no Topic Alias." */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x03, 0x00, 0x00, 0x00);
    EXPECT(CODEC_V5, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0x30, 0x03, 0x00, 0x00, 0x00);
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x06, 0x00, 0x00, 0x02, 0x01,
           0x01, 'p');
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x32, 0x05, 0x00, 0x00, 0x00, 0x01,
           0x00);
    /* A Topic Alias of 0 is not permitted [MQTT-3.3.2-8]. */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x06, 0x00, 0x00, 0x03, 0x23,
           0x00, 0x00);
    /* Topic Alias twice: a single-valued property (2.2.2.2). */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x09, 0x00, 0x00, 0x06, 0x23,
           0x00, 0x07, 0x23, 0x00, 0x08);
    /* An alias does not excuse a wildcard in a non-empty topic. */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_TOPIC_NAME, 0x30, 0x09, 0x00, 0x03, 'a', '/', '#',
           0x03, 0x23, 0x00, 0x07);
}

static void test_v311_empty_topic(void **state)
{
    (void)state;
    /* 3.1.1 has no topic alias: topic names are at least one character
     * [MQTT-4.7.3-1]. */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_TOPIC_NAME, 0x30, 0x02, 0x00, 0x00);
    EXPECT(CODEC_V311, CODEC_FROM_SERVER, CODEC_ERR_TOPIC_NAME, 0x30, 0x02, 0x00, 0x00);
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_TOPIC_NAME, 0x32, 0x04, 0x00, 0x00, 0x00, 0x01);
    /* What would be a v5 alias property is payload in 3.1.1: still no topic. */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_TOPIC_NAME, 0x30, 0x06, 0x00, 0x00, 0x03, 0x23,
           0x00, 0x07);
}

static void test_wildcard_topic(void **state)
{
    (void)state;
    /* [MQTT-3.3.2-2]: the Topic Name must not contain wildcard characters. */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_TOPIC_NAME, 0x30, 0x05, 0x00, 0x03, 'a', '/',
           '+');
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_TOPIC_NAME, 0x30, 0x06, 0x00, 0x03, 'a', '/', '+',
           0x00);

    const codec_bytes topics[] = {CODEC_LIT("a/#"), CODEC_LIT("+"),         CODEC_LIT("#"),
                                  CODEC_LIT("a#"),  CODEC_LIT("sport/+/x"), CODEC_LIT("a+b/c")};
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (size_t i = 0; i < COUNT(topics); i++) {
            /* The encoder does not check topic syntax (codec.h). */
            codec_publish p = {.qos = 1, .packet_id = 3, .topic = topics[i]};
            uint8_t out[64];
            size_t n = 0;
            assert_int_equal(codec_encode_publish(&p, versions[v], out, sizeof(out), &n), CODEC_OK);
            check_decode(versions[v], CODEC_FROM_CLIENT, out, n, CODEC_ERR_TOPIC_NAME, __LINE__);
            check_decode(versions[v], CODEC_FROM_SERVER, out, n, CODEC_ERR_TOPIC_NAME, __LINE__);
        }
    }
}

static void test_bad_utf8_topic(void **state)
{
    (void)state;
    /* U+0000 in a string: [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]). */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0x30, 0x05, 0x00, 0x03, 'a', 0x00,
           'b');
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0x30, 0x06, 0x00, 0x03, 'a', 0x00, 'b',
           0x00);

    /* Ill-formed UTF-8: [MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]). */
    const codec_bytes topics[] = {
        CODEC_LIT("a\xc0\xaf"),        /* overlong '/' */
        CODEC_LIT("\xed\xa0\x80"),     /* surrogate U+D800 */
        CODEC_LIT("\xf4\x90\x80\x80"), /* above U+10FFFF */
        CODEC_LIT("\xff"),             /* never a lead byte */
        CODEC_LIT("a/\xe2\x82"),       /* cut-off sequence */
        CODEC_LIT("\x80"),             /* stray continuation */
        CODEC_LIT("ok/\x00"),          /* U+0000 at the end */
    };
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (size_t i = 0; i < COUNT(topics); i++) {
            codec_publish p = {.topic = topics[i], .payload = CODEC_LIT("p")};
            uint8_t out[64];
            size_t n = 0;
            assert_int_equal(codec_encode_publish(&p, versions[v], out, sizeof(out), &n), CODEC_OK);
            check_decode(versions[v], CODEC_FROM_CLIENT, out, n, CODEC_ERR_MALFORMED, __LINE__);
            check_decode(versions[v], CODEC_FROM_SERVER, out, n, CODEC_ERR_MALFORMED, __LINE__);
        }
    }
}

/* ---- header and packet identifier rules ------------------------------------ */

static void test_packet_id_zero(void **state)
{
    (void)state;
    /* [MQTT-2.2.1-3]: a QoS > 0 PUBLISH carries a non-zero packet id. */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x32, 0x07, 0x00, 0x03, 'a', '/', 'b',
           0x00, 0x00);
    EXPECT(CODEC_V311, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0x34, 0x07, 0x00, 0x03, 'a', '/', 'b',
           0x00, 0x00);
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x32, 0x08, 0x00, 0x03, 'a', '/', 'b',
           0x00, 0x00, 0x00);
    EXPECT(CODEC_V5, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0x3c, 0x08, 0x00, 0x03, 'a', '/', 'b',
           0x00, 0x00, 0x00);
    /* The packet id cut short is malformed, not a protocol error. */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0x32, 0x06, 0x00, 0x03, 'a', '/',
           'b', 0x00);
}

static void test_qos0_dup(void **state)
{
    (void)state;
    /* [MQTT-3.3.1-2]: DUP must be 0 for QoS 0. */
    EXPECT(CODEC_V311, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x38, 0x05, 0x00, 0x03, 'a', '/',
           'b');
    EXPECT(CODEC_V311, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0x39, 0x05, 0x00, 0x03, 'a', '/',
           'b');
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x38, 0x06, 0x00, 0x03, 'a', '/', 'b',
           0x00);
    EXPECT(CODEC_V5, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0x39, 0x06, 0x00, 0x03, 'a', '/', 'b',
           0x00);
}

static void test_qos3(void **state)
{
    (void)state;
    /* [MQTT-3.3.1-4]: both QoS bits set is a Malformed Packet. */
    static const uint8_t firsts[] = {0x36, 0x37, 0x3e, 0x3f};
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (size_t i = 0; i < COUNT(firsts); i++) {
            uint8_t pkt[] = {firsts[i], 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 0x00};
            size_t len = versions[v] == CODEC_V5 ? sizeof(pkt) : sizeof(pkt) - 1;
            pkt[1] = (uint8_t)(len - 2);
            check_decode(versions[v], CODEC_FROM_CLIENT, pkt, len, CODEC_ERR_MALFORMED, __LINE__);
            check_decode(versions[v], CODEC_FROM_SERVER, pkt, len, CODEC_ERR_MALFORMED, __LINE__);
            /* Refused from the first byte, before the length is known. */
            check_decode(versions[v], CODEC_FROM_CLIENT, pkt, 1, CODEC_ERR_MALFORMED, __LINE__);
        }
    }
    codec_frame f;
    assert_int_equal(codec_frame_parse((const uint8_t[]){0x36}, 1, 0, &f), CODEC_ERR_MALFORMED);

    /* codec_decode_body checks it too, for a caller that framed by hand. */
    static const uint8_t body[] = {0x00, 0x03, 'a', '/', 'b', 0x00, 0x01};
    codec_frame hand = {.type = CODEC_PUBLISH,
                        .flags = 0x6,
                        .header_len = 2,
                        .remaining_len = sizeof(body),
                        .total_len = 2 + sizeof(body)};
    codec_decode_opts o = {.version = CODEC_V311, .sender = CODEC_FROM_CLIENT};
    codec_packet p;
    assert_int_equal(codec_decode_body(&hand, body, &o, &p), CODEC_ERR_MALFORMED);
}

static void test_sub_id_direction(void **state)
{
    (void)state;
    /* 3.3.2.3.8: the server may send one; [MQTT-3.3.4-6]: a client's PUBLISH
     * must not carry one. */
    static const uint8_t one[] = {0x30, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x02, 0x0b, 0x01};
    codec_publish d = decode_ok(CODEC_V5, CODEC_FROM_SERVER, one, sizeof(one));
    assert_int_equal(d.props.sub_id_count, 1);
    assert_int_equal(d.props.subscription_id, 1);
    assert_int_equal(d.props.present, 0);
    assert_int_equal(d.payload.len, 0);
    check_decode(CODEC_V5, CODEC_FROM_CLIENT, one, sizeof(one), CODEC_ERR_PROTOCOL, __LINE__);

    /* Two from the server, the first kept in subscription_id. */
    static const uint8_t two[] = {0x30, 0x0b, 0x00, 0x03, 'a',  '/', 'b',
                                  0x05, 0x0b, 0x80, 0x01, 0x0b, 0x02};
    d = decode_ok(CODEC_V5, CODEC_FROM_SERVER, two, sizeof(two));
    assert_int_equal(d.props.sub_id_count, 2);
    assert_int_equal(d.props.subscription_id, 128);

    /* "It is a Protocol Error if the Subscription Identifier has a value of
     * 0" (3.3.2.3.8). */
    EXPECT(CODEC_V5, CODEC_FROM_SERVER, CODEC_ERR_PROTOCOL, 0x30, 0x08, 0x00, 0x03, 'a', '/', 'b',
           0x02, 0x0b, 0x00);
    /* A five-byte Variable Byte Integer cannot be parsed (1.5.5). */
    EXPECT(CODEC_V5, CODEC_FROM_SERVER, CODEC_ERR_MALFORMED, 0x30, 0x0c, 0x00, 0x03, 'a', '/', 'b',
           0x06, 0x0b, 0x80, 0x80, 0x80, 0x80, 0x01);
}

static void test_bad_properties(void **state)
{
    (void)state;
    /* A property not allowed in PUBLISH (reason string) is malformed
     * (2.2.2.2). */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b',
           0x04, 0x1f, 0x00, 0x01, 'r');
    /* Payload format indicator twice, and with value 2: protocol errors. */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b',
           0x04, 0x01, 0x00, 0x01, 0x01);
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x08, 0x00, 0x03, 'a', '/', 'b',
           0x02, 0x01, 0x02);
    /* A response topic with a wildcard: [MQTT-3.3.2-14]. */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_PROTOCOL, 0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b',
           0x04, 0x08, 0x00, 0x01, '#');
    /* Property length past the end of the packet. */
    EXPECT(CODEC_V5, CODEC_FROM_CLIENT, CODEC_ERR_MALFORMED, 0x30, 0x08, 0x00, 0x03, 'a', '/', 'b',
           0x05, 0x01, 0x01);
}

/* ---- truncation ------------------------------------------------------------ */

/* For a valid packet: every short read is "need more"; and every shorter
 * declared length, with the body cut to match, is malformed while the cut is
 * before the payload and a valid PUBLISH with a shorter payload after. */
static void check_truncations(uint8_t version, codec_sender sender, const uint8_t *pkt, size_t n)
{
    codec_decode_opts o = {.version = version, .sender = sender};
    codec_packet full;
    size_t used = 0;
    assert_int_equal(codec_decode(pkt, n, &o, &full, &used), CODEC_OK);
    codec_frame f;
    assert_int_equal(codec_frame_parse(pkt, n, 0, &f), CODEC_OK);
    const uint8_t *body = pkt + f.header_len;
    size_t payload_off = (size_t)(full.u.publish.payload.ptr - body);

    for (size_t k = 0; k < n; k++) {
        uint8_t *copy = exact_copy(pkt, k);
        codec_packet p;
        used = 99;
        codec_status st = codec_decode(copy, k, &o, &p, &used);
        free(copy);
        if (st != CODEC_NEED_MORE)
            fail_msg("prefix of %zu/%zu bytes: got %s", k, n, codec_status_name(st));
        assert_int_equal(used, 0);
    }

    for (size_t cut = 0; cut < f.remaining_len; cut++) {
        uint8_t *re = malloc(1 + 4 + cut);
        assert_non_null(re);
        re[0] = pkt[0];
        size_t h = 1 + put_vbi(re + 1, cut);
        memcpy(re + h, body, cut);
        uint8_t *copy = exact_copy(re, h + cut);
        free(re);
        codec_packet p;
        used = 99;
        codec_status st = codec_decode(copy, h + cut, &o, &p, &used);
        codec_status want = cut < payload_off ? CODEC_ERR_MALFORMED : CODEC_OK;
        if (st != want)
            fail_msg("body cut at %zu/%zu (payload at %zu): got %s, want %s", cut, f.remaining_len,
                     payload_off, codec_status_name(st), codec_status_name(want));
        if (st == CODEC_OK) {
            assert_int_equal(used, h + cut);
            assert_int_equal(p.u.publish.payload.len, cut - payload_off);
            assert_int_equal(p.u.publish.packet_id, full.u.publish.packet_id);
        } else {
            assert_int_equal(used, 0);
        }
        free(copy);
    }
}

static void test_truncation(void **state)
{
    (void)state;
    static const uint8_t v311_q0[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'};
    check_truncations(CODEC_V311, CODEC_FROM_CLIENT, v311_q0, sizeof(v311_q0));
    static const uint8_t v311_q2[] = {0x3c, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'h', 'i'};
    check_truncations(CODEC_V311, CODEC_FROM_SERVER, v311_q2, sizeof(v311_q2));
    static const uint8_t v5_q0[] = {0x30, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 'h', 'i'};
    check_truncations(CODEC_V5, CODEC_FROM_CLIENT, v5_q0, sizeof(v5_q0));

    /* A v5 packet with every property, from the server. */
    const codec_string_pair user[] = {{CODEC_LIT("name"), CODEC_LIT("value")}};
    const uint32_t sub_ids[] = {5, 300};
    codec_publish p = {
        .qos = 2, .packet_id = 9, .topic = CODEC_LIT("a/b/c"), .payload = CODEC_LIT("payload")};
    CODEC_SET(&p.props, CODEC_PROP_PAYLOAD_FORMAT);
    p.props.payload_format = 0;
    CODEC_SET(&p.props, CODEC_PROP_MESSAGE_EXPIRY);
    p.props.message_expiry = 1;
    CODEC_SET(&p.props, CODEC_PROP_CONTENT_TYPE);
    p.props.content_type = CODEC_LIT("c");
    CODEC_SET(&p.props, CODEC_PROP_RESPONSE_TOPIC);
    p.props.response_topic = CODEC_LIT("r");
    CODEC_SET(&p.props, CODEC_PROP_CORRELATION_DATA);
    p.props.correlation_data = CODEC_LIT("id");
    CODEC_SET(&p.props, CODEC_PROP_TOPIC_ALIAS);
    p.props.topic_alias = 1;
    p.props.user = user;
    p.props.user_len = 1;
    p.props.sub_ids = sub_ids;
    p.props.sub_ids_len = 2;
    size_t n = 0;
    uint8_t *buf = encode_exact(&p, CODEC_V5, &n);
    check_truncations(CODEC_V5, CODEC_FROM_SERVER, buf, n);
    free(buf);
}

/* ---- max_packet ------------------------------------------------------------ */

static void test_max_packet(void **state)
{
    (void)state;
    static const uint8_t pkt[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'};
    for (size_t v = 0; v < COUNT(versions); v++) {
        codec_decode_opts o = {.version = versions[v], .sender = CODEC_FROM_CLIENT};
        codec_packet p;
        size_t used = 99;
        /* The limit is checked on the declared size, before the body. */
        o.max_packet = sizeof(pkt) - 1;
        assert_int_equal(codec_decode(pkt, sizeof(pkt), &o, &p, &used), CODEC_ERR_TOO_LARGE);
        assert_int_equal(used, 0);
        /* Refused as soon as the length is in, before the body arrives. */
        assert_int_equal(codec_decode(pkt, 2, &o, &p, &used), CODEC_ERR_TOO_LARGE);
        assert_int_equal(used, 0);
        /* One byte: the size is not known yet. */
        assert_int_equal(codec_decode(pkt, 1, &o, &p, &used), CODEC_NEED_MORE);
    }
    codec_decode_opts o = {.version = CODEC_V311, .sender = CODEC_FROM_CLIENT};
    codec_packet p;
    size_t used = 0;
    o.max_packet = sizeof(pkt);
    assert_int_equal(codec_decode(pkt, sizeof(pkt), &o, &p, &used), CODEC_OK);
    assert_int_equal(used, sizeof(pkt));
    o.max_packet = 0; /* protocol maximum */
    assert_int_equal(codec_decode(pkt, sizeof(pkt), &o, &p, &used), CODEC_OK);
    assert_int_equal(codec_status_reason(CODEC_ERR_TOO_LARGE), 0x95);

    /* A 300 KB PUBLISH against a 256 KB limit: refused from its 4 header
     * bytes; accepted with the limit at its exact size. */
    const size_t big = 300u * 1024u;
    uint8_t *payload = calloc(big, 1);
    assert_non_null(payload);
    codec_publish pub = {.topic = CODEC_LIT("a/b"), .payload = {payload, big}};
    size_t n = 0;
    uint8_t *buf = encode_exact(&pub, CODEC_V5, &n);
    assert_int_equal(n, 4 + 6 + big);
    codec_decode_opts ob = {
        .version = CODEC_V5, .sender = CODEC_FROM_SERVER, .max_packet = 256u * 1024u};
    assert_int_equal(codec_decode(buf, 4, &ob, &p, &used), CODEC_ERR_TOO_LARGE);
    assert_int_equal(codec_decode(buf, n, &ob, &p, &used), CODEC_ERR_TOO_LARGE);
    ob.max_packet = n - 1;
    assert_int_equal(codec_decode(buf, n, &ob, &p, &used), CODEC_ERR_TOO_LARGE);
    ob.max_packet = n;
    assert_int_equal(codec_decode(buf, 4, &ob, &p, &used), CODEC_NEED_MORE);
    assert_int_equal(codec_decode(buf, n, &ob, &p, &used), CODEC_OK);
    assert_int_equal(used, n);
    assert_int_equal(p.u.publish.payload.len, big);
    free(buf);
    free(payload);
}

/* ---- encoder --------------------------------------------------------------- */

static void expect_encode_arg(const codec_publish *p, uint8_t version, int line)
{
    uint8_t out[128];
    size_t n = 777;
    codec_status st = codec_encode_publish(p, version, out, sizeof(out), &n);
    if (st != CODEC_ERR_ARG)
        fail_msg("line %d: got %s, want invalid argument", line, codec_status_name(st));
    assert_int_equal(n, 0);
}

static void test_encode_args(void **state)
{
    (void)state;
    for (size_t v = 0; v < COUNT(versions); v++) {
        uint8_t ver = versions[v];
        codec_publish p = {.qos = 3, .packet_id = 1, .topic = CODEC_LIT("a")};
        expect_encode_arg(&p, ver, __LINE__); /* QoS 3 */
        p = (codec_publish){.qos = 1, .packet_id = 0, .topic = CODEC_LIT("a")};
        expect_encode_arg(&p, ver, __LINE__); /* [MQTT-2.2.1-3] */
        p.qos = 2;
        expect_encode_arg(&p, ver, __LINE__);
        p = (codec_publish){.qos = 0, .packet_id = 5, .topic = CODEC_LIT("a")};
        expect_encode_arg(&p, ver, __LINE__); /* [MQTT-2.2.1-2] */
        p = (codec_publish){.topic = CODEC_LIT("a"), .payload = {NULL, 3}};
        expect_encode_arg(&p, ver, __LINE__);
    }

    /* Properties do not exist in 3.1.1. */
    codec_publish p = {.topic = CODEC_LIT("a")};
    CODEC_SET(&p.props, CODEC_PROP_PAYLOAD_FORMAT);
    expect_encode_arg(&p, CODEC_V311, __LINE__);
    const codec_string_pair user[] = {{CODEC_LIT("k"), CODEC_LIT("v")}};
    p = (codec_publish){.topic = CODEC_LIT("a")};
    p.props.user = user;
    p.props.user_len = 1;
    expect_encode_arg(&p, CODEC_V311, __LINE__);

    /* A property PUBLISH cannot carry, and a repeatable one given as a bit. */
    p = (codec_publish){.topic = CODEC_LIT("a")};
    CODEC_SET(&p.props, CODEC_PROP_REASON_STRING);
    p.props.reason_string = CODEC_LIT("r");
    expect_encode_arg(&p, CODEC_V5, __LINE__);
    p = (codec_publish){.topic = CODEC_LIT("a")};
    CODEC_SET(&p.props, CODEC_PROP_SUBSCRIPTION_ID);
    p.props.subscription_id = 1;
    expect_encode_arg(&p, CODEC_V5, __LINE__);
    const uint32_t zero_id[] = {0};
    p = (codec_publish){.topic = CODEC_LIT("a")};
    p.props.sub_ids = zero_id;
    p.props.sub_ids_len = 1;
    expect_encode_arg(&p, CODEC_V5, __LINE__);

    /* Unknown protocol levels. */
    p = (codec_publish){.topic = CODEC_LIT("a")};
    expect_encode_arg(&p, 3, __LINE__);
    expect_encode_arg(&p, 6, __LINE__);

    /* A topic over 65535 bytes cannot be written as a string (1.5.4). */
    uint8_t *longt = malloc(65536);
    assert_non_null(longt);
    memset(longt, 'a', 65536);
    p = (codec_publish){.topic = {longt, 65536}};
    expect_encode_arg(&p, CODEC_V311, __LINE__);
    p.topic.len = 65535;
    size_t need = 0;
    assert_int_equal(codec_encode_publish(&p, CODEC_V311, NULL, 0, &need), CODEC_ERR_BUFFER);
    assert_int_equal(need, 1 + 3 + 2 + 65535);
    free(longt);
}

static void test_encode_buffer(void **state)
{
    (void)state;
    for (size_t v = 0; v < COUNT(versions); v++) {
        codec_publish p = {
            .qos = 1, .packet_id = 1, .topic = CODEC_LIT("a/b"), .payload = CODEC_LIT("hi")};
        size_t need = versions[v] == CODEC_V5 ? 12 : 11;
        size_t n = 0;
        assert_int_equal(codec_encode_publish(&p, versions[v], NULL, 0, &n), CODEC_ERR_BUFFER);
        assert_int_equal(n, need);

        for (size_t cap = 0; cap < need; cap++) {
            uint8_t out[16];
            memset(out, 0xAA, sizeof(out));
            n = 0;
            assert_int_equal(codec_encode_publish(&p, versions[v], out, cap, &n), CODEC_ERR_BUFFER);
            assert_int_equal(n, need);
            for (size_t i = cap; i < sizeof(out); i++)
                assert_int_equal(out[i], 0xAA); /* nothing written past cap */
        }

        uint8_t *exact = malloc(need);
        assert_non_null(exact);
        n = 0;
        assert_int_equal(codec_encode_publish(&p, versions[v], exact, need, &n), CODEC_OK);
        assert_int_equal(n, need);
        assert_int_equal(exact[0], 0x32);
        assert_int_equal(exact[1], need - 2);
        assert_int_equal(exact[need - 1], 'i');
        free(exact);
    }

    /* The 300 KB packet: the size is reported without a buffer. */
    const size_t big = 300u * 1024u;
    uint8_t *payload = calloc(big, 1);
    assert_non_null(payload);
    codec_publish p = {.topic = CODEC_LIT("a/b"), .payload = {payload, big}};
    size_t n = 0;
    assert_int_equal(codec_encode_publish(&p, CODEC_V311, NULL, 0, &n), CODEC_ERR_BUFFER);
    assert_int_equal(n, 4 + 5 + big);
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qos0_bytes),        cmocka_unit_test(test_flag_bytes),
        cmocka_unit_test(test_v5_property_bytes), cmocka_unit_test(test_roundtrip_matrix),
        cmocka_unit_test(test_empty_payload),     cmocka_unit_test(test_large_payload),
        cmocka_unit_test(test_v5_all_properties), cmocka_unit_test(test_v5_topic_alias_empty_topic),
        cmocka_unit_test(test_v311_empty_topic),  cmocka_unit_test(test_wildcard_topic),
        cmocka_unit_test(test_bad_utf8_topic),    cmocka_unit_test(test_packet_id_zero),
        cmocka_unit_test(test_qos0_dup),          cmocka_unit_test(test_qos3),
        cmocka_unit_test(test_sub_id_direction),  cmocka_unit_test(test_bad_properties),
        cmocka_unit_test(test_truncation),        cmocka_unit_test(test_max_packet),
        cmocka_unit_test(test_encode_args),       cmocka_unit_test(test_encode_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
