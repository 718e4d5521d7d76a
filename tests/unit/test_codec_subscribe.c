/*
 * Unit tests for SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK in src/codec
 * (decode.c, encode.c, reasons.c, props.c), in MQTT 3.1.1 and 5.0. Covers
 * byte-exact encodings written by hand from the spec; round trips with
 * several entries walked with codec_subscribe_next / codec_unsubscribe_next
 * and compared field by field; the MQTT 5 subscription options (No Local,
 * Retain As Published, Retain Handling 0/1/2) and the Subscription Identifier
 * property; the refusals with the status each must give (empty payload,
 * reserved option bits, QoS 3, Retain Handling 3, No Local on a shared
 * subscription, invalid UTF-8, packet identifier 0, the wrong sender, reserved
 * header flags, SUBACK/UNSUBACK without reason codes); every one of the 256
 * reason code values against the SUBACK and UNSUBACK lists of each version;
 * that bad wildcard syntax decodes (it is the session's to answer with 0x8F)
 * yet fails codec_topic_filter_check; short reads; and the encoder's argument
 * checks and "buffer too small, need N" answer. Inputs that must fail are
 * decoded from heap blocks of exact size for the sanitizer build.
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

/* SUBACK: 3.1.1 section 3.9.3; MQTT 5 table 3-8. UNSUBACK: MQTT 5 table 3-9. */
static const uint8_t v311_suback_reasons[] = {0x00, 0x01, 0x02, 0x80};
static const uint8_t v5_suback_reasons[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                            0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t v5_unsuback_reasons[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};

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
        fail_msg("line %d (version %u, sender %d): got %s, want %s", line, version, (int)sender,
                 codec_status_name(got), codec_status_name(want));
    size_t want_used = want == CODEC_OK ? len : 0;
    if (used != want_used)
        fail_msg("line %d: consumed %zu, want %zu", line, used, want_used);
}

#define EXPECT(version, sender, want, ...)                                                         \
    check_decode((version), (sender), BYTES(__VA_ARGS__), (want), __LINE__)
#define FROM_CLIENT(version, want, ...) EXPECT((version), CODEC_FROM_CLIENT, (want), __VA_ARGS__)
#define FROM_SERVER(version, want, ...) EXPECT((version), CODEC_FROM_SERVER, (want), __VA_ARGS__)

/* Decode a valid packet of the given type that uses all of buf. */
static codec_packet decode_ok(uint8_t version, codec_sender sender, uint8_t type,
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
    return p;
}

static void assert_view(codec_bytes got, const void *want, size_t want_len)
{
    assert_int_equal(got.len, want_len);
    if (want_len)
        assert_memory_equal(got.ptr, want, want_len);
}

#define ASSERT_VIEW(got, lit) assert_view((got), (lit), sizeof(lit) - 1)

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len,
                         int line)
{
    if (got_len != want_len)
        fail_msg("line %d: %zu bytes, want %zu", line, got_len, want_len);
    assert_memory_equal(got, want, want_len);
}

#define ASSERT_BYTES(got, got_len, ...) assert_bytes((got), (got_len), BYTES(__VA_ARGS__), __LINE__)

/* Walk a decoded SUBSCRIBE and compare every entry with want[]. */
static void check_entries(const codec_subscribe *s, uint8_t version, const codec_subscription *want,
                          size_t n)
{
    assert_int_equal(s->count, n);
    size_t pos = 0;
    codec_subscription e;
    for (size_t i = 0; i < n; i++) {
        assert_true(codec_subscribe_next(s, version, &pos, &e));
        assert_view(e.filter, want[i].filter.ptr, want[i].filter.len);
        assert_int_equal(e.qos, want[i].qos);
        assert_int_equal(e.no_local, want[i].no_local);
        assert_int_equal(e.retain_as_published, want[i].retain_as_published);
        assert_int_equal(e.retain_handling, want[i].retain_handling);
    }
    assert_false(codec_subscribe_next(s, version, &pos, &e));
    assert_int_equal(pos, s->payload.len);
}

/* Same for UNSUBSCRIBE. */
static void check_filters(const codec_unsubscribe *u, const codec_bytes *want, size_t n)
{
    assert_int_equal(u->count, n);
    size_t pos = 0;
    codec_bytes f;
    for (size_t i = 0; i < n; i++) {
        assert_true(codec_unsubscribe_next(u, &pos, &f));
        assert_view(f, want[i].ptr, want[i].len);
    }
    assert_false(codec_unsubscribe_next(u, &pos, &f));
    assert_int_equal(pos, u->payload.len);
}

/* A SUBSCRIBE of one entry "a/b" with the given options byte. */
static void check_options(uint8_t version, uint8_t opts, codec_status want, int line)
{
    uint8_t pkt[] = {0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/', 'b', opts};
    if (version == CODEC_V5) {
        check_decode(version, CODEC_FROM_CLIENT, pkt, sizeof(pkt), want, line);
    } else {
        /* No property length in 3.1.1. */
        uint8_t v311[] = {0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', opts};
        check_decode(version, CODEC_FROM_CLIENT, v311, sizeof(v311), want, line);
    }
}

/* ---- SUBSCRIBE: bytes and round trips --------------------------------------- */

static void test_subscribe_bytes(void **state)
{
    (void)state;
    const codec_subscription one[] = {{.filter = CODEC_LIT("a/b"), .qos = 1}};
    codec_subscribe s = {.packet_id = 1, .count = 1, .list = one};
    uint8_t out[64];
    size_t n = 0;
    /* 3.8.1: flags 0010; 3.8.2: packet id; 3.8.3: filter then options. */
    assert_int_equal(codec_encode_subscribe(&s, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x01);
    assert_int_equal(codec_encode_subscribe(&s, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/', 'b', 0x01);

    /* codec_encode gives the same bytes. */
    codec_packet pkt = {.type = CODEC_SUBSCRIBE};
    pkt.u.subscribe = s;
    assert_int_equal(codec_encode(&pkt, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x01);

    /* 3.8.3.1: options bits: QoS 0-1, No Local 2, Retain As Published 3,
     * Retain Handling 4-5. 3.8.2.1.2: Subscription Identifier 0x0B. */
    const codec_subscription all[] = {{.filter = CODEC_LIT("a"),
                                       .qos = 2,
                                       .no_local = true,
                                       .retain_as_published = true,
                                       .retain_handling = 2}};
    const uint32_t id[] = {5};
    s = (codec_subscribe){.packet_id = 10, .count = 1, .list = all};
    s.props.sub_ids = id;
    s.props.sub_ids_len = 1;
    assert_int_equal(codec_encode_subscribe(&s, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0x82, 0x09, 0x00, 0x0a, 0x02, 0x0b, 0x05, 0x00, 0x01, 'a', 0x2e);

    static const uint8_t v311[] = {0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x01};
    codec_packet p = decode_ok(CODEC_V311, CODEC_FROM_CLIENT, CODEC_SUBSCRIBE, v311, sizeof(v311));
    assert_int_equal(p.u.subscribe.packet_id, 1);
    assert_int_equal(p.u.subscribe.props.present, 0);
    assert_ptr_equal(p.u.subscribe.payload.ptr, v311 + 4);
    assert_int_equal(p.u.subscribe.payload.len, 6);
    check_entries(&p.u.subscribe, CODEC_V311, one, 1);

    static const uint8_t v5[] = {0x82, 0x09, 0x00, 0x0a, 0x02, 0x0b, 0x05, 0x00, 0x01, 'a', 0x2e};
    p = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, CODEC_SUBSCRIBE, v5, sizeof(v5));
    assert_int_equal(p.u.subscribe.packet_id, 10);
    assert_int_equal(p.u.subscribe.props.sub_id_count, 1);
    assert_int_equal(p.u.subscribe.props.subscription_id, 5);
    assert_int_equal(p.u.subscribe.props.present, 0);
    assert_ptr_equal(p.u.subscribe.payload.ptr, v5 + 7);
    check_entries(&p.u.subscribe, CODEC_V5, all, 1);
}

/* Encode, decode, walk, rebuild the list from the walk and re-encode. */
static void roundtrip_subscribe(uint8_t version, const codec_subscribe *s)
{
    uint8_t out[512];
    size_t n = 0;
    assert_int_equal(codec_encode_subscribe(s, version, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(out[0], 0x82);
    codec_packet p = decode_ok(version, CODEC_FROM_CLIENT, CODEC_SUBSCRIBE, out, n);
    const codec_subscribe *d = &p.u.subscribe;
    assert_int_equal(d->packet_id, s->packet_id);
    check_entries(d, version, s->list, s->count);

    codec_subscription again[16];
    assert_true(d->count <= COUNT(again));
    size_t pos = 0;
    for (size_t i = 0; i < d->count; i++)
        assert_true(codec_subscribe_next(d, version, &pos, &again[i]));
    codec_subscribe re = {
        .packet_id = d->packet_id, .props = d->props, .count = d->count, .list = again};
    uint8_t out2[512];
    size_t n2 = 0;
    assert_int_equal(codec_encode_subscribe(&re, version, out2, sizeof(out2), &n2), CODEC_OK);
    assert_int_equal(n2, n);
    assert_memory_equal(out2, out, n);
}

static void test_subscribe_roundtrip_v311(void **state)
{
    (void)state;
    const codec_subscription list[] = {
        {.filter = CODEC_LIT("a/b"), .qos = 0},
        {.filter = CODEC_LIT("sensors/+/temp"), .qos = 1},
        {.filter = CODEC_LIT("#"), .qos = 2},
        {.filter = CODEC_LIT("$share/g/x"), .qos = 1},
        {.filter = CODEC_LIT("caf\xc3\xa9/+"), .qos = 0},
        {.filter = CODEC_LIT("/"), .qos = 2},
    };
    codec_subscribe s = {.packet_id = 0xfffe, .count = COUNT(list), .list = list};
    roundtrip_subscribe(CODEC_V311, &s);

    uint8_t out[128];
    size_t n = 0;
    assert_int_equal(codec_encode_subscribe(&s, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    /* 2 id + entries (2+len+1 each): 6 + 17 + 4 + 13 + 10 + 4 = 54 + 2 = 56. */
    assert_int_equal(n, 2 + 56);
    assert_int_equal(out[1], 56);
    codec_packet p = decode_ok(CODEC_V311, CODEC_FROM_CLIENT, CODEC_SUBSCRIBE, out, n);
    assert_int_equal(p.u.subscribe.props.present, 0);
    assert_int_equal(p.u.subscribe.props.raw.len, 0);
    assert_int_equal(p.u.subscribe.payload.len, 54);
}

static void test_subscribe_roundtrip_v5(void **state)
{
    (void)state;
    const codec_subscription list[] = {
        {.filter = CODEC_LIT("a/b"), .qos = 0},
        {.filter = CODEC_LIT("c/+/d"), .qos = 1, .no_local = true},
        {.filter = CODEC_LIT("#"), .qos = 2, .retain_as_published = true, .retain_handling = 1},
        {.filter = CODEC_LIT("$share/g/x"), .qos = 1, .retain_handling = 2},
        {.filter = CODEC_LIT("e"),
         .qos = 2,
         .no_local = true,
         .retain_as_published = true,
         .retain_handling = 2},
        {.filter = CODEC_LIT("f"), .qos = 0, .retain_handling = 0},
    };
    const codec_string_pair user[] = {{CODEC_LIT("app"), CODEC_LIT("dash")}};
    const uint32_t id[] = {268435455};
    codec_subscribe s = {.packet_id = 77, .count = COUNT(list), .list = list};
    s.props.user = user;
    s.props.user_len = 1;
    s.props.sub_ids = id;
    s.props.sub_ids_len = 1;
    roundtrip_subscribe(CODEC_V5, &s);

    uint8_t out[128];
    size_t n = 0;
    assert_int_equal(codec_encode_subscribe(&s, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    codec_packet p = decode_ok(CODEC_V5, CODEC_FROM_CLIENT, CODEC_SUBSCRIBE, out, n);
    const codec_subscribe *d = &p.u.subscribe;
    assert_int_equal(d->packet_id, 77);
    assert_int_equal(d->props.sub_id_count, 1);
    assert_int_equal(d->props.subscription_id, 268435455);
    assert_int_equal(d->props.user_count, 1);
    assert_int_equal(d->props.present, 0);
    /* Properties: user 1+2+3+2+4 = 12, then 0x0B and ff ff ff 7f = 5. */
    assert_int_equal(d->props.raw.len, 17);
    assert_int_equal(out[4], 17);
    assert_int_equal(out[5], CODEC_PROP_USER);
    assert_int_equal(out[17], CODEC_PROP_SUBSCRIPTION_ID);
    assert_memory_equal(out + 18, ((const uint8_t[]){0xff, 0xff, 0xff, 0x7f}), 4);
    /* The options bytes of entries 2..5, by hand from 3.8.3.1. */
    size_t pos = 0;
    codec_subscription e;
    assert_true(codec_subscribe_next(d, CODEC_V5, &pos, &e));
    assert_int_equal(d->payload.ptr[pos - 1], 0x00);
    assert_true(codec_subscribe_next(d, CODEC_V5, &pos, &e));
    assert_int_equal(d->payload.ptr[pos - 1], 0x05);
    assert_true(codec_subscribe_next(d, CODEC_V5, &pos, &e));
    assert_int_equal(d->payload.ptr[pos - 1], 0x1a);
    assert_true(codec_subscribe_next(d, CODEC_V5, &pos, &e));
    assert_int_equal(d->payload.ptr[pos - 1], 0x21);
    assert_true(codec_subscribe_next(d, CODEC_V5, &pos, &e));
    assert_int_equal(d->payload.ptr[pos - 1], 0x2e);

    /* Every Retain Handling value that exists, alone. */
    for (uint8_t rh = 0; rh <= 2; rh++) {
        const codec_subscription one[] = {
            {.filter = CODEC_LIT("r"), .qos = 1, .retain_handling = rh}};
        codec_subscribe r = {.packet_id = 1, .count = 1, .list = one};
        roundtrip_subscribe(CODEC_V5, &r);
    }
}

/* ---- SUBSCRIBE: refusals ---------------------------------------------------- */

static void test_subscribe_empty_payload(void **state)
{
    (void)state;
    /* [MQTT-3.8.3-3]: at least one filter/options pair. */
    FROM_CLIENT(CODEC_V311, CODEC_ERR_PROTOCOL, 0x82, 0x02, 0x00, 0x01);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x03, 0x00, 0x01, 0x00);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x05, 0x00, 0x01, 0x02, 0x0b, 0x01);
    /* [MQTT-3.10.3-2]: at least one filter. */
    FROM_CLIENT(CODEC_V311, CODEC_ERR_PROTOCOL, 0xa2, 0x02, 0x00, 0x01);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0xa2, 0x03, 0x00, 0x01, 0x00);
}

static void test_subscribe_options_reserved(void **state)
{
    (void)state;
    /* 3.1.1 [MQTT-3-8.3-4]: bits 7-2 are reserved; set, they make the
     * packet malformed. */
    for (unsigned bit = 2; bit < 8; bit++) {
        check_options(CODEC_V311, (uint8_t)(1u << bit), CODEC_ERR_MALFORMED, __LINE__);
        check_options(CODEC_V311, (uint8_t)(1u << bit | 1u), CODEC_ERR_MALFORMED, __LINE__);
    }
    /* MQTT 5 [MQTT-3.8.3-5]: bits 7-6 are reserved. */
    check_options(CODEC_V5, 0x40, CODEC_ERR_MALFORMED, __LINE__);
    check_options(CODEC_V5, 0x80, CODEC_ERR_MALFORMED, __LINE__);
    check_options(CODEC_V5, 0xc1, CODEC_ERR_MALFORMED, __LINE__);
    /* Bits 5-2 are options in MQTT 5. */
    check_options(CODEC_V5, 0x04, CODEC_OK, __LINE__);
    check_options(CODEC_V5, 0x08, CODEC_OK, __LINE__);
    check_options(CODEC_V5, 0x10, CODEC_OK, __LINE__);
    check_options(CODEC_V5, 0x20, CODEC_OK, __LINE__);
    check_options(CODEC_V5, 0x2e, CODEC_OK, __LINE__);
    /* Valid QoS values in both. */
    for (size_t v = 0; v < COUNT(versions); v++)
        for (uint8_t q = 0; q <= 2; q++)
            check_options(versions[v], q, CODEC_OK, __LINE__);
}

static void test_subscribe_qos3(void **state)
{
    (void)state;
    /* 3.1.1 [MQTT-3-8.3-4]: "QoS is not 0,1 or 2" is malformed. */
    check_options(CODEC_V311, 0x03, CODEC_ERR_MALFORMED, __LINE__);
    /* MQTT 5 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has
     * the value 3." */
    check_options(CODEC_V5, 0x03, CODEC_ERR_PROTOCOL, __LINE__);
    check_options(CODEC_V5, 0x0f, CODEC_ERR_PROTOCOL, __LINE__);
    /* Reserved bits are checked first: malformed wins. */
    check_options(CODEC_V5, 0x43, CODEC_ERR_MALFORMED, __LINE__);
}

static void test_subscribe_retain_handling3(void **state)
{
    (void)state;
    /* 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of
     * 3." In 3.1.1 those bits are reserved. */
    check_options(CODEC_V5, 0x30, CODEC_ERR_PROTOCOL, __LINE__);
    check_options(CODEC_V5, 0x31, CODEC_ERR_PROTOCOL, __LINE__);
    check_options(CODEC_V5, 0x3e, CODEC_ERR_PROTOCOL, __LINE__);
    check_options(CODEC_V311, 0x30, CODEC_ERR_MALFORMED, __LINE__);
}

static void test_subscribe_no_local_shared(void **state)
{
    (void)state;
    /* [MQTT-3.8.3-4]: No Local on a Shared Subscription is a protocol error. */
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0a, '$', 's',
                'h', 'a', 'r', 'e', '/', 'g', '/', 'a', 0x04);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0a, '$', 's',
                'h', 'a', 'r', 'e', '/', 'g', '/', 'a', 0x2d);
    /* The same filter without No Local is fine. */
    FROM_CLIENT(CODEC_V5, CODEC_OK, 0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0a, '$', 's', 'h', 'a',
                'r', 'e', '/', 'g', '/', 'a', 0x2a);
    /* "$shared/a" is not a shared subscription. */
    FROM_CLIENT(CODEC_V5, CODEC_OK, 0x82, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x09, '$', 's', 'h', 'a',
                'r', 'e', 'd', '/', 'a', 0x04);
    /* A shared entry after an ordinary one is found too. */
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x14, 0x00, 0x01, 0x00, 0x00, 0x01, 'x', 0x04,
                0x00, 0x0a, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 'a', 0x04);
}

static void test_subscribe_bad_utf8(void **state)
{
    (void)state;
    /* [MQTT-1.5.4-1], [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-1], [MQTT-1.5.3-2]). */
    const codec_bytes filters[] = {
        CODEC_LIT("a/\xc0\xaf"),
        CODEC_LIT("\xed\xa0\x80/#"),
        CODEC_LIT("a\x00"),
        CODEC_LIT("\xf8\x88\x80\x80\x80"),
    };
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (size_t i = 0; i < COUNT(filters); i++) {
            const codec_subscription list[] = {{.filter = CODEC_LIT("ok")}, {.filter = filters[i]}};
            codec_subscribe s = {.packet_id = 1, .count = 2, .list = list};
            uint8_t out[64];
            size_t n = 0;
            assert_int_equal(codec_encode_subscribe(&s, versions[v], out, sizeof(out), &n),
                             CODEC_OK);
            check_decode(versions[v], CODEC_FROM_CLIENT, out, n, CODEC_ERR_MALFORMED, __LINE__);

            codec_unsubscribe u = {.packet_id = 1, .count = 1, .list = &filters[i]};
            assert_int_equal(codec_encode_unsubscribe(&u, versions[v], out, sizeof(out), &n),
                             CODEC_OK);
            check_decode(versions[v], CODEC_FROM_CLIENT, out, n, CODEC_ERR_MALFORMED, __LINE__);
        }
    }
}

static void test_bad_wildcards_decode(void **state)
{
    (void)state;
    /* codec.h: the decoder checks UTF-8 only; wildcard syntax is left to the
     * session, which answers 0x8F for that entry alone. */
    const codec_bytes filters[] = {
        CODEC_LIT("a/#/b"),    CODEC_LIT("a+"),        CODEC_LIT("#/a"), CODEC_LIT("+a/b"),
        CODEC_LIT("$share/g"), CODEC_LIT("$share//a"), CODEC_LIT(""),
    };
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (size_t i = 0; i < COUNT(filters); i++) {
            assert_int_equal(codec_topic_filter_check(filters[i]), CODEC_ERR_TOPIC_FILTER);

            const codec_subscription list[] = {{.filter = filters[i], .qos = 1}};
            codec_subscribe s = {.packet_id = 3, .count = 1, .list = list};
            uint8_t out[64];
            size_t n = 0;
            assert_int_equal(codec_encode_subscribe(&s, versions[v], out, sizeof(out), &n),
                             CODEC_OK);
            codec_packet p = decode_ok(versions[v], CODEC_FROM_CLIENT, CODEC_SUBSCRIBE, out, n);
            check_entries(&p.u.subscribe, versions[v], list, 1);

            codec_unsubscribe u = {.packet_id = 3, .count = 1, .list = &filters[i]};
            assert_int_equal(codec_encode_unsubscribe(&u, versions[v], out, sizeof(out), &n),
                             CODEC_OK);
            p = decode_ok(versions[v], CODEC_FROM_CLIENT, CODEC_UNSUBSCRIBE, out, n);
            check_filters(&p.u.unsubscribe, &filters[i], 1);
        }
    }
    assert_int_equal(codec_status_reason(CODEC_ERR_TOPIC_FILTER), 0x8f);
}

static void test_packet_id_zero(void **state)
{
    (void)state;
    /* [MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]). */
    FROM_CLIENT(CODEC_V311, CODEC_ERR_PROTOCOL, 0x82, 0x08, 0x00, 0x00, 0x00, 0x03, 'a', '/', 'b',
                0x01);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x09, 0x00, 0x00, 0x00, 0x00, 0x03, 'a', '/',
                'b', 0x01);
    FROM_CLIENT(CODEC_V311, CODEC_ERR_PROTOCOL, 0xa2, 0x07, 0x00, 0x00, 0x00, 0x03, 'a', '/', 'b');
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0xa2, 0x08, 0x00, 0x00, 0x00, 0x00, 0x03, 'a', '/',
                'b');
    FROM_SERVER(CODEC_V311, CODEC_ERR_PROTOCOL, 0x90, 0x03, 0x00, 0x00, 0x01);
    FROM_SERVER(CODEC_V5, CODEC_ERR_PROTOCOL, 0x90, 0x04, 0x00, 0x00, 0x00, 0x01);
    FROM_SERVER(CODEC_V311, CODEC_ERR_PROTOCOL, 0xb0, 0x02, 0x00, 0x00);
    FROM_SERVER(CODEC_V5, CODEC_ERR_PROTOCOL, 0xb0, 0x04, 0x00, 0x00, 0x00, 0x00);
}

static void test_direction(void **state)
{
    (void)state;
    /* MQTT 5 table 2-1 (3.1.1 table 2.1): SUBSCRIBE and UNSUBSCRIBE go client
     * to server, SUBACK and UNSUBACK server to client. */
    for (size_t v = 0; v < COUNT(versions); v++) {
        uint8_t ver = versions[v];
        if (ver == CODEC_V5) {
            FROM_SERVER(ver, CODEC_ERR_PROTOCOL, 0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/',
                        'b', 0x01);
            FROM_SERVER(ver, CODEC_ERR_PROTOCOL, 0xa2, 0x08, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/',
                        'b');
            FROM_CLIENT(ver, CODEC_ERR_PROTOCOL, 0x90, 0x04, 0x00, 0x01, 0x00, 0x01);
            FROM_CLIENT(ver, CODEC_ERR_PROTOCOL, 0xb0, 0x04, 0x00, 0x01, 0x00, 0x00);
        } else {
            FROM_SERVER(ver, CODEC_ERR_PROTOCOL, 0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b',
                        0x01);
            FROM_SERVER(ver, CODEC_ERR_PROTOCOL, 0xa2, 0x07, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b');
            FROM_CLIENT(ver, CODEC_ERR_PROTOCOL, 0x90, 0x03, 0x00, 0x01, 0x01);
            FROM_CLIENT(ver, CODEC_ERR_PROTOCOL, 0xb0, 0x02, 0x00, 0x01);
        }
    }
}

static void test_header_flags(void **state)
{
    (void)state;
    /* [MQTT-3.8.1-1], [MQTT-3.10.1-1]: SUBSCRIBE and UNSUBSCRIBE flags are
     * 0010; SUBACK and UNSUBACK 0000 ([MQTT-2.1.3-1]). */
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0x80, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b',
                0x01);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_MALFORMED, 0x83, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/',
                'b', 0x01);
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0xa0, 0x07, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b');
    FROM_SERVER(CODEC_V311, CODEC_ERR_MALFORMED, 0x92, 0x03, 0x00, 0x01, 0x01);
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0xb2, 0x04, 0x00, 0x01, 0x00, 0x00);
}

static void test_subscribe_props(void **state)
{
    (void)state;
    /* "It is a Protocol Error if the Subscription Identifier has a value of
     * 0" and to include it more than once (3.8.2.1.2). */
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x0b, 0x00, 0x01, 0x02, 0x0b, 0x00, 0x00, 0x03,
                'a', '/', 'b', 0x01);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_PROTOCOL, 0x82, 0x0d, 0x00, 0x01, 0x04, 0x0b, 0x01, 0x0b, 0x02,
                0x00, 0x03, 'a', '/', 'b', 0x01);
    /* Not an UNSUBSCRIBE or SUBACK property: malformed (2.2.2.2). */
    FROM_CLIENT(CODEC_V5, CODEC_ERR_MALFORMED, 0xa2, 0x0a, 0x00, 0x01, 0x02, 0x0b, 0x01, 0x00, 0x03,
                'a', '/', 'b');
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0x90, 0x06, 0x00, 0x01, 0x02, 0x0b, 0x01, 0x00);
    /* A reason string is not a SUBSCRIBE property. */
    FROM_CLIENT(CODEC_V5, CODEC_ERR_MALFORMED, 0x82, 0x0d, 0x00, 0x01, 0x04, 0x1f, 0x00, 0x01, 'r',
                0x00, 0x03, 'a', '/', 'b', 0x01);
    /* UNSUBSCRIBE may carry user properties. */
    static const uint8_t unsub[] = {0xa2, 0x0f, 0x00, 0x01, 0x07, 0x26, 0x00, 0x01, 'k',
                                    0x00, 0x01, 'v',  0x00, 0x03, 'a',  '/',  'b'};
    codec_packet p =
        decode_ok(CODEC_V5, CODEC_FROM_CLIENT, CODEC_UNSUBSCRIBE, unsub, sizeof(unsub));
    assert_int_equal(p.u.unsubscribe.props.user_count, 1);
    assert_int_equal(p.u.unsubscribe.props.raw.len, 7);
    const codec_bytes want[] = {CODEC_LIT("a/b")};
    check_filters(&p.u.unsubscribe, want, 1);
}

static void test_subscribe_short(void **state)
{
    (void)state;
    /* Every prefix is "need more". */
    static const uint8_t full[] = {0x82, 0x0e, 0x00, 0x01, 0x02, 0x0b, 0x05, 0x00,
                                   0x03, 'a',  '/',  'b',  0x01, 0x00, 0x00, 0x00};
    for (size_t k = 0; k < sizeof(full); k++)
        check_decode(CODEC_V5, CODEC_FROM_CLIENT, full, k, CODEC_NEED_MORE, __LINE__);
    /* The last entry is an empty filter (syntax is the session's). */
    check_decode(CODEC_V5, CODEC_FROM_CLIENT, full, sizeof(full), CODEC_OK, __LINE__);

    /* Declared lengths that cut an entry: malformed. */
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0x82, 0x07, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b');
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0x82, 0x05, 0x00, 0x01, 0x00, 0x03, 'a');
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0x82, 0x03, 0x00, 0x01, 0x00);
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0x82, 0x01, 0x00);
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0x82, 0x0a, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b',
                0x01, 0x00, 0x01);
    FROM_CLIENT(CODEC_V5, CODEC_ERR_MALFORMED, 0x82, 0x05, 0x00, 0x01, 0x05, 0x0b, 0x01);
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0xa2, 0x06, 0x00, 0x01, 0x00, 0x03, 'a', '/');
    FROM_CLIENT(CODEC_V311, CODEC_ERR_MALFORMED, 0xa2, 0x03, 0x00, 0x01, 0x00);
}

/* ---- UNSUBSCRIBE ------------------------------------------------------------ */

static void test_unsubscribe_bytes_roundtrip(void **state)
{
    (void)state;
    const codec_bytes one[] = {CODEC_LIT("a/b")};
    codec_unsubscribe u = {.packet_id = 1, .count = 1, .list = one};
    uint8_t out[128];
    size_t n = 0;
    /* 3.10.1: flags 0010; 3.10.3: a list of filters. */
    assert_int_equal(codec_encode_unsubscribe(&u, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0xa2, 0x07, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b');
    assert_int_equal(codec_encode_unsubscribe(&u, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0xa2, 0x08, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/', 'b');
    codec_packet pkt = {.type = CODEC_UNSUBSCRIBE};
    pkt.u.unsubscribe = u;
    assert_int_equal(codec_encode(&pkt, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0xa2, 0x08, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/', 'b');

    const codec_bytes list[] = {CODEC_LIT("a/b"), CODEC_LIT("sensors/#"), CODEC_LIT("+/x/+"),
                                CODEC_LIT("$share/g/y"), CODEC_LIT("\xe2\x82\xac")};
    const codec_string_pair user[] = {{CODEC_LIT("why"), CODEC_LIT("done")}};
    for (size_t v = 0; v < COUNT(versions); v++) {
        codec_unsubscribe m = {.packet_id = 0x8001, .count = COUNT(list), .list = list};
        if (versions[v] == CODEC_V5) {
            m.props.user = user;
            m.props.user_len = 1;
        }
        assert_int_equal(codec_encode_unsubscribe(&m, versions[v], out, sizeof(out), &n), CODEC_OK);
        /* 2 id + filters (2+len each: 5 + 11 + 7 + 12 + 5 = 40) [+ property
         * length 1 + user property 1+2+3+2+4]. */
        size_t body = 2 + 40 + (versions[v] == CODEC_V5 ? 13 : 0);
        assert_int_equal(n, 2 + body);
        assert_int_equal(out[1], body);
        codec_packet p = decode_ok(versions[v], CODEC_FROM_CLIENT, CODEC_UNSUBSCRIBE, out, n);
        assert_int_equal(p.u.unsubscribe.packet_id, 0x8001);
        assert_int_equal(p.u.unsubscribe.payload.len, 40);
        assert_ptr_equal(p.u.unsubscribe.payload.ptr, out + n - 40);
        assert_int_equal(p.u.unsubscribe.props.user_count, versions[v] == CODEC_V5 ? 1 : 0);
        check_filters(&p.u.unsubscribe, list, COUNT(list));
    }
}

/* ---- SUBACK / UNSUBACK -------------------------------------------------------- */

static void test_suback_bytes_roundtrip(void **state)
{
    (void)state;
    static const uint8_t codes[] = {0x01, 0x80};
    codec_suback s = {.packet_id = 1, .reasons = {codes, sizeof(codes)}};
    uint8_t out[128];
    size_t n = 0;
    /* 3.9.2: packet id; 3.9.3: one reason code per filter. */
    assert_int_equal(codec_encode_suback(CODEC_SUBACK, &s, CODEC_V311, out, sizeof(out), &n),
                     CODEC_OK);
    ASSERT_BYTES(out, n, 0x90, 0x04, 0x00, 0x01, 0x01, 0x80);
    assert_int_equal(codec_encode_suback(CODEC_SUBACK, &s, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    ASSERT_BYTES(out, n, 0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0x80);
    codec_packet pkt = {.type = CODEC_SUBACK};
    pkt.u.suback = s;
    assert_int_equal(codec_encode(&pkt, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    ASSERT_BYTES(out, n, 0x90, 0x04, 0x00, 0x01, 0x01, 0x80);

    static const uint8_t v311[] = {0x90, 0x04, 0x00, 0x01, 0x01, 0x80};
    codec_packet p = decode_ok(CODEC_V311, CODEC_FROM_SERVER, CODEC_SUBACK, v311, sizeof(v311));
    assert_int_equal(p.u.suback.packet_id, 1);
    assert_ptr_equal(p.u.suback.reasons.ptr, v311 + 4);
    assert_view(p.u.suback.reasons, codes, sizeof(codes));

    /* MQTT 5 with reason string and user property. */
    static const uint8_t many[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                   0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2};
    const codec_string_pair user[] = {{CODEC_LIT("k"), CODEC_LIT("v")}};
    s = (codec_suback){.packet_id = 0x1234, .reasons = {many, sizeof(many)}};
    CODEC_SET(&s.props, CODEC_PROP_REASON_STRING);
    s.props.reason_string = CODEC_LIT("partly");
    s.props.user = user;
    s.props.user_len = 1;
    assert_int_equal(codec_encode_suback(CODEC_SUBACK, &s, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    /* props 1+2+6 + 7 = 16; body 2 + 1 + 16 + 12 = 31. */
    assert_int_equal(n, 33);
    assert_int_equal(out[1], 31);
    assert_int_equal(out[4], 16);
    p = decode_ok(CODEC_V5, CODEC_FROM_SERVER, CODEC_SUBACK, out, n);
    assert_int_equal(p.u.suback.packet_id, 0x1234);
    assert_int_equal(p.u.suback.props.present, 1ull << CODEC_PROP_REASON_STRING);
    ASSERT_VIEW(p.u.suback.props.reason_string, "partly");
    assert_int_equal(p.u.suback.props.user_count, 1);
    assert_view(p.u.suback.reasons, many, sizeof(many));
    /* The decoded SUBACK encodes to the same bytes. */
    uint8_t again[128];
    size_t n2 = 0;
    assert_int_equal(
        codec_encode_suback(CODEC_SUBACK, &p.u.suback, CODEC_V5, again, sizeof(again), &n2),
        CODEC_OK);
    assert_int_equal(n2, n);
    assert_memory_equal(again, out, n);
}

static void test_suback_no_reasons(void **state)
{
    (void)state;
    FROM_SERVER(CODEC_V311, CODEC_ERR_MALFORMED, 0x90, 0x02, 0x00, 0x01);
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0x90, 0x03, 0x00, 0x01, 0x00);
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0x90, 0x07, 0x00, 0x01, 0x04, 0x1f, 0x00, 0x01, 'x');
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0x90, 0x02, 0x00, 0x01);
}

static void test_suback_reason_codes(void **state)
{
    (void)state;
    for (unsigned code = 0; code < 256; code++) {
        bool ok311 = memchr(v311_suback_reasons, (int)code, sizeof(v311_suback_reasons)) != NULL;
        bool ok5 = memchr(v5_suback_reasons, (int)code, sizeof(v5_suback_reasons)) != NULL;
        const uint8_t v311[] = {0x90, 0x03, 0x00, 0x01, (uint8_t)code};
        const uint8_t v5[] = {0x90, 0x04, 0x00, 0x01, 0x00, (uint8_t)code};
        check_decode(CODEC_V311, CODEC_FROM_SERVER, v311, sizeof(v311),
                     ok311 ? CODEC_OK : CODEC_ERR_MALFORMED, __LINE__);
        check_decode(CODEC_V5, CODEC_FROM_SERVER, v5, sizeof(v5),
                     ok5 ? CODEC_OK : CODEC_ERR_MALFORMED, __LINE__);
        /* A bad code anywhere in the list. */
        const uint8_t last[] = {0x90, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, (uint8_t)code};
        check_decode(CODEC_V5, CODEC_FROM_SERVER, last, sizeof(last),
                     ok5 ? CODEC_OK : CODEC_ERR_MALFORMED, __LINE__);
    }
}

static void test_unsuback(void **state)
{
    (void)state;
    /* 3.1.1 3.11: exactly the packet identifier, no payload. */
    codec_suback s = {.packet_id = 7};
    uint8_t out[64];
    size_t n = 0;
    assert_int_equal(codec_encode_suback(CODEC_UNSUBACK, &s, CODEC_V311, out, sizeof(out), &n),
                     CODEC_OK);
    ASSERT_BYTES(out, n, 0xb0, 0x02, 0x00, 0x07);
    static const uint8_t v311[] = {0xb0, 0x02, 0x00, 0x07};
    codec_packet p = decode_ok(CODEC_V311, CODEC_FROM_SERVER, CODEC_UNSUBACK, v311, sizeof(v311));
    assert_int_equal(p.u.suback.packet_id, 7);
    assert_int_equal(p.u.suback.reasons.len, 0);
    FROM_SERVER(CODEC_V311, CODEC_ERR_MALFORMED, 0xb0, 0x03, 0x00, 0x07, 0x00);
    FROM_SERVER(CODEC_V311, CODEC_ERR_MALFORMED, 0xb0, 0x04, 0x00, 0x07, 0x00, 0x00);
    FROM_SERVER(CODEC_V311, CODEC_ERR_MALFORMED, 0xb0, 0x01, 0x00);

    /* MQTT 5 3.11.3: one reason code per filter, so at least one. */
    static const uint8_t codes[] = {0x00, 0x11};
    s.reasons = (codec_bytes){codes, sizeof(codes)};
    assert_int_equal(codec_encode_suback(CODEC_UNSUBACK, &s, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    ASSERT_BYTES(out, n, 0xb0, 0x05, 0x00, 0x07, 0x00, 0x00, 0x11);
    p = decode_ok(CODEC_V5, CODEC_FROM_SERVER, CODEC_UNSUBACK, out, n);
    assert_int_equal(p.u.suback.packet_id, 7);
    assert_view(p.u.suback.reasons, codes, sizeof(codes));
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0xb0, 0x03, 0x00, 0x07, 0x00);
    FROM_SERVER(CODEC_V5, CODEC_ERR_MALFORMED, 0xb0, 0x02, 0x00, 0x07);

    for (unsigned code = 0; code < 256; code++) {
        bool ok = memchr(v5_unsuback_reasons, (int)code, sizeof(v5_unsuback_reasons)) != NULL;
        const uint8_t v5[] = {0xb0, 0x04, 0x00, 0x07, 0x00, (uint8_t)code};
        check_decode(CODEC_V5, CODEC_FROM_SERVER, v5, sizeof(v5),
                     ok ? CODEC_OK : CODEC_ERR_MALFORMED, __LINE__);
    }
}

/* ---- encoder checks ------------------------------------------------------------ */

static void expect_sub_arg(const codec_subscribe *s, uint8_t version, int line)
{
    uint8_t out[64];
    size_t n = 777;
    codec_status st = codec_encode_subscribe(s, version, out, sizeof(out), &n);
    if (st != CODEC_ERR_ARG)
        fail_msg("line %d: got %s, want invalid argument", line, codec_status_name(st));
    assert_int_equal(n, 0);
}

static void test_encode_args(void **state)
{
    (void)state;
    /* Options that only MQTT 5 has, asked for in 3.1.1. */
    const codec_subscription v5_only[] = {
        {.filter = CODEC_LIT("a"), .no_local = true},
        {.filter = CODEC_LIT("a"), .retain_as_published = true},
        {.filter = CODEC_LIT("a"), .retain_handling = 1},
        {.filter = CODEC_LIT("a"), .retain_handling = 2},
    };
    for (size_t i = 0; i < COUNT(v5_only); i++) {
        codec_subscribe s = {.packet_id = 1, .count = 1, .list = &v5_only[i]};
        expect_sub_arg(&s, CODEC_V311, __LINE__);
        uint8_t out[64];
        size_t n = 0;
        assert_int_equal(codec_encode_subscribe(&s, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    }
    const codec_subscription ok[] = {{.filter = CODEC_LIT("a")}};
    const codec_subscription qos3[] = {{.filter = CODEC_LIT("a"), .qos = 3}};
    const codec_subscription rh3[] = {{.filter = CODEC_LIT("a"), .retain_handling = 3}};
    for (size_t v = 0; v < COUNT(versions); v++) {
        codec_subscribe s = {.packet_id = 1, .count = 0, .list = ok};
        expect_sub_arg(&s, versions[v], __LINE__); /* [MQTT-3.8.3-3] */
        s = (codec_subscribe){.packet_id = 1, .count = 1, .list = NULL};
        expect_sub_arg(&s, versions[v], __LINE__);
        s = (codec_subscribe){.packet_id = 0, .count = 1, .list = ok};
        expect_sub_arg(&s, versions[v], __LINE__);
        s = (codec_subscribe){.packet_id = 1, .count = 1, .list = qos3};
        expect_sub_arg(&s, versions[v], __LINE__);
        s = (codec_subscribe){.packet_id = 1, .count = 1, .list = rh3};
        expect_sub_arg(&s, versions[v], __LINE__);
    }
    /* Properties in 3.1.1; a property SUBSCRIBE cannot carry. */
    const uint32_t id[] = {1};
    codec_subscribe s = {.packet_id = 1, .count = 1, .list = ok};
    s.props.sub_ids = id;
    s.props.sub_ids_len = 1;
    expect_sub_arg(&s, CODEC_V311, __LINE__);
    s = (codec_subscribe){.packet_id = 1, .count = 1, .list = ok};
    CODEC_SET(&s.props, CODEC_PROP_REASON_STRING);
    expect_sub_arg(&s, CODEC_V5, __LINE__);

    /* UNSUBSCRIBE. */
    const codec_bytes filters[] = {CODEC_LIT("a")};
    for (size_t v = 0; v < COUNT(versions); v++) {
        uint8_t out[64];
        size_t n = 777;
        codec_unsubscribe u = {.packet_id = 1, .count = 0, .list = filters};
        assert_int_equal(codec_encode_unsubscribe(&u, versions[v], out, sizeof(out), &n),
                         CODEC_ERR_ARG);
        assert_int_equal(n, 0);
        u = (codec_unsubscribe){.packet_id = 0, .count = 1, .list = filters};
        assert_int_equal(codec_encode_unsubscribe(&u, versions[v], out, sizeof(out), &n),
                         CODEC_ERR_ARG);
        u = (codec_unsubscribe){.packet_id = 1, .count = 1, .list = NULL};
        assert_int_equal(codec_encode_unsubscribe(&u, versions[v], out, sizeof(out), &n),
                         CODEC_ERR_ARG);
    }

    /* SUBACK / UNSUBACK. */
    static const uint8_t codes[] = {0x00};
    uint8_t out[64];
    size_t n = 777;
    codec_suback a = {.packet_id = 1};
    for (size_t v = 0; v < COUNT(versions); v++) {
        assert_int_equal(codec_encode_suback(CODEC_SUBACK, &a, versions[v], out, sizeof(out), &n),
                         CODEC_ERR_ARG); /* no reason codes */
        assert_int_equal(n, 0);
    }
    assert_int_equal(codec_encode_suback(CODEC_UNSUBACK, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
    a.reasons = (codec_bytes){codes, 1};
    assert_int_equal(codec_encode_suback(CODEC_UNSUBACK, &a, CODEC_V311, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
    a.packet_id = 0;
    assert_int_equal(codec_encode_suback(CODEC_SUBACK, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
    a.packet_id = 1;
    assert_int_equal(codec_encode_suback(CODEC_SUBSCRIBE, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
    assert_int_equal(codec_encode_suback(CODEC_PUBACK, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    assert_int_equal(codec_encode_suback(CODEC_SUBACK, &a, CODEC_V311, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
}

/* Every cap below the size gives BUFFER and the size; the size itself works. */
static void check_buffer(codec_status (*enc)(const void *, uint8_t, uint8_t *, size_t, size_t *),
                         const void *pkt, uint8_t version, size_t need)
{
    for (size_t cap = 0; cap < need; cap++) {
        uint8_t out[64];
        memset(out, 0xAA, sizeof(out));
        size_t n = 0;
        assert_int_equal(enc(pkt, version, out, cap, &n), CODEC_ERR_BUFFER);
        assert_int_equal(n, need);
        for (size_t i = cap; i < sizeof(out); i++)
            assert_int_equal(out[i], 0xAA);
    }
    uint8_t *exact = malloc(need);
    assert_non_null(exact);
    size_t n = 0;
    assert_int_equal(enc(pkt, version, exact, need, &n), CODEC_OK);
    assert_int_equal(n, need);
    free(exact);
}

static codec_status enc_subscribe(const void *p, uint8_t v, uint8_t *o, size_t c, size_t *w)
{
    return codec_encode_subscribe(p, v, o, c, w);
}

static codec_status enc_unsubscribe(const void *p, uint8_t v, uint8_t *o, size_t c, size_t *w)
{
    return codec_encode_unsubscribe(p, v, o, c, w);
}

static codec_status enc_suback(const void *p, uint8_t v, uint8_t *o, size_t c, size_t *w)
{
    return codec_encode_suback(CODEC_SUBACK, p, v, o, c, w);
}

static codec_status enc_unsuback(const void *p, uint8_t v, uint8_t *o, size_t c, size_t *w)
{
    return codec_encode_suback(CODEC_UNSUBACK, p, v, o, c, w);
}

static void test_encode_buffer(void **state)
{
    (void)state;
    const codec_subscription list[] = {{.filter = CODEC_LIT("a/b"), .qos = 1},
                                       {.filter = CODEC_LIT("c"), .qos = 2}};
    codec_subscribe s = {.packet_id = 1, .count = 2, .list = list};
    check_buffer(enc_subscribe, &s, CODEC_V311, 2 + 2 + 6 + 4);
    check_buffer(enc_subscribe, &s, CODEC_V5, 2 + 2 + 1 + 6 + 4);

    const codec_bytes filters[] = {CODEC_LIT("a/b"), CODEC_LIT("c")};
    codec_unsubscribe u = {.packet_id = 1, .count = 2, .list = filters};
    check_buffer(enc_unsubscribe, &u, CODEC_V311, 2 + 2 + 5 + 3);
    check_buffer(enc_unsubscribe, &u, CODEC_V5, 2 + 2 + 1 + 5 + 3);

    static const uint8_t codes[] = {0x00, 0x01, 0x80};
    codec_suback a = {.packet_id = 1, .reasons = {codes, sizeof(codes)}};
    check_buffer(enc_suback, &a, CODEC_V311, 2 + 2 + 3);
    check_buffer(enc_suback, &a, CODEC_V5, 2 + 2 + 1 + 3);
    check_buffer(enc_unsuback, &a, CODEC_V5, 2 + 2 + 1 + 3);
    codec_suback empty = {.packet_id = 1};
    check_buffer(enc_unsuback, &empty, CODEC_V311, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscribe_bytes),
        cmocka_unit_test(test_subscribe_roundtrip_v311),
        cmocka_unit_test(test_subscribe_roundtrip_v5),
        cmocka_unit_test(test_subscribe_empty_payload),
        cmocka_unit_test(test_subscribe_options_reserved),
        cmocka_unit_test(test_subscribe_qos3),
        cmocka_unit_test(test_subscribe_retain_handling3),
        cmocka_unit_test(test_subscribe_no_local_shared),
        cmocka_unit_test(test_subscribe_bad_utf8),
        cmocka_unit_test(test_bad_wildcards_decode),
        cmocka_unit_test(test_packet_id_zero),
        cmocka_unit_test(test_direction),
        cmocka_unit_test(test_header_flags),
        cmocka_unit_test(test_subscribe_props),
        cmocka_unit_test(test_subscribe_short),
        cmocka_unit_test(test_unsubscribe_bytes_roundtrip),
        cmocka_unit_test(test_suback_bytes_roundtrip),
        cmocka_unit_test(test_suback_no_reasons),
        cmocka_unit_test(test_suback_reason_codes),
        cmocka_unit_test(test_unsuback),
        cmocka_unit_test(test_encode_args),
        cmocka_unit_test(test_encode_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
