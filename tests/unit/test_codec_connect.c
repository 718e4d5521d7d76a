/*
 * Unit tests for the connection packets of the codec (src/codec/decode.c,
 * encode.c, reasons.c, names.c): CONNECT and CONNACK in MQTT 3.1.1 (level 4)
 * and 5.0 (level 5), DISCONNECT and AUTH. Encodings are compared byte for byte
 * with packets written out by hand from the spec; encode-then-decode round
 * trips carry every field (will with properties, user name and password,
 * empty client id, clean start). Malformed and forbidden input follows the
 * spec's statements: protocol name and level [MQTT-3.1.2-1]/[MQTT-3.1.2-2],
 * the reserved connect flag [MQTT-3.1.2-3], the will flags [MQTT-3.1.2-11..13],
 * 3.1.1's password without user name (its [MQTT-3.1.2-22]), will topics,
 * UTF-8 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]), trailing bytes, truncation at every
 * length, CONNECT only first and only once ([MQTT-3.1.0-1], [MQTT-3.1.0-2]),
 * who may send what, CONNACK flags and codes ([MQTT-3.2.2-1], [MQTT-3.2.2-6],
 * [MQTT-3.2.2-8]), DISCONNECT and AUTH codes by sender ([MQTT-3.14.2-1],
 * [MQTT-3.15.2-1]). Encoders report the size they need when the buffer is
 * short and refuse properties in 3.1.1; codec_status_reason maps each status.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ------------------------------------------------------------ */

static codec_bytes view(const void *p, size_t n)
{
    codec_bytes b = {(const uint8_t *)p, n};
    return b;
}

static void assert_bytes(codec_bytes got, const void *want, size_t want_len)
{
    assert_int_equal(got.len, want_len);
    if (want_len)
        assert_memory_equal(got.ptr, want, want_len);
}

static uint8_t *exact_copy(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n)
        memcpy(p, src, n);
    return p;
}

/* Decode from a heap copy of exactly n bytes (free *copy after use). */
static codec_status decode_exact(const uint8_t *src, size_t n, uint8_t version, codec_sender sender,
                                 codec_packet *out, uint8_t **copy)
{
    *copy = exact_copy(src, n);
    codec_decode_opts o = {.version = version, .sender = sender};
    size_t used = 0;
    codec_status st = codec_decode(*copy, n, &o, out, &used);
    if (st == CODEC_OK)
        assert_int_equal(used, n);
    return st;
}

static codec_status status_of(const uint8_t *src, size_t n, uint8_t version, codec_sender sender)
{
    codec_packet pkt;
    uint8_t *copy;
    codec_status st = decode_exact(src, n, version, sender, &pkt, &copy);
    free(copy);
    return st;
}

static void want_status(codec_status got, codec_status want, const char *what, unsigned a,
                        unsigned b)
{
    if (got != want)
        fail_msg("%s [0x%02x, %u]: got \"%s\", want \"%s\"", what, a, b, codec_status_name(got),
                 codec_status_name(want));
}

/* A CONNECT assembled field by field, so that tests can break one field. */
struct raw_connect {
    codec_bytes name;  /* protocol name */
    uint8_t level;     /* properties are written when 5 */
    uint8_t flags;     /* the connect flags byte as sent */
    codec_bytes props; /* v5: property block, after a 1-byte length */
    codec_bytes client_id;
    codec_bytes will_props;   /* v5, with the will */
    codec_bytes will_topic;   /* when flags has 0x04 */
    codec_bytes will_payload; /* when flags has 0x04 */
    codec_bytes username;     /* when flags has 0x80 */
    codec_bytes password;     /* when flags has 0x40 */
    codec_bytes trailing;     /* bytes after the last field */
};

static void put(uint8_t *out, size_t *n, const void *p, size_t len)
{
    assert_true(*n + len <= 512);
    if (len)
        memcpy(out + *n, p, len);
    *n += len;
}

static void put_lenbytes(uint8_t *out, size_t *n, codec_bytes b)
{
    uint8_t len[2] = {(uint8_t)(b.len >> 8), (uint8_t)b.len};
    put(out, n, len, 2);
    put(out, n, b.ptr, b.len);
}

static void put_block(uint8_t *out, size_t *n, codec_bytes b)
{
    assert_true(b.len < 128);
    uint8_t len = (uint8_t)b.len;
    put(out, n, &len, 1);
    put(out, n, b.ptr, b.len);
}

/* Returns the packet size; out holds at least 515 bytes. */
static size_t build_connect(const struct raw_connect *c, uint8_t *out)
{
    uint8_t body[512];
    size_t n = 0;
    put_lenbytes(body, &n, c->name);
    put(body, &n, &c->level, 1);
    put(body, &n, &c->flags, 1);
    static const uint8_t keep_alive[2] = {0x00, 0x3c};
    put(body, &n, keep_alive, 2);
    if (c->level == CODEC_V5)
        put_block(body, &n, c->props);
    put_lenbytes(body, &n, c->client_id);
    if (c->flags & 0x04) {
        if (c->level == CODEC_V5)
            put_block(body, &n, c->will_props);
        put_lenbytes(body, &n, c->will_topic);
        put_lenbytes(body, &n, c->will_payload);
    }
    if (c->flags & 0x80)
        put_lenbytes(body, &n, c->username);
    if (c->flags & 0x40)
        put_lenbytes(body, &n, c->password);
    put(body, &n, c->trailing.ptr, c->trailing.len);

    size_t h = 0;
    out[h++] = 0x10;
    size_t rem = n;
    do {
        uint8_t byte = rem & 0x7f;
        rem >>= 7;
        out[h++] = (uint8_t)(byte | (rem ? 0x80 : 0));
    } while (rem);
    memcpy(out + h, body, n);
    return h + n;
}

/* A well-formed CONNECT of a level with clean start and client id "a". */
static struct raw_connect raw_default(uint8_t level)
{
    struct raw_connect c;
    memset(&c, 0, sizeof(c));
    c.name = CODEC_LIT("MQTT");
    c.level = level;
    c.flags = 0x02;
    c.client_id = CODEC_LIT("a");
    c.will_topic = CODEC_LIT("w");
    c.username = CODEC_LIT("u");
    c.password = CODEC_LIT("p");
    return c;
}

static codec_status raw_status(const struct raw_connect *c)
{
    uint8_t buf[520];
    size_t n = build_connect(c, buf);
    return status_of(buf, n, 0, CODEC_FROM_CLIENT);
}

static codec_status encode_connect(const codec_connect *c, uint8_t *out, size_t cap, size_t *n)
{
    return codec_encode_connect(c, out, cap, n);
}

/* ---- packets written out by hand ---------------------------------------- */

/* 3.1.1: empty client id, clean session, keep alive 60. */
static const uint8_t v311_min[] = {0x10, 0x0c, 0x00, 0x04, 'M',  'Q',  'T',
                                   'T',  0x04, 0x02, 0x00, 0x3c, 0x00, 0x00};

/* 3.1.1 with every field: flags 0xEC = user name, password, will retain,
 * will QoS 1, will; keep alive 0x1234; client id "dev-1", will topic "will/t",
 * will message 00 ff, user "user", password "pw". Remaining length 39. */
static const uint8_t v311_full[] = {
    0x10, 0x27, 0x00, 0x04, 'M',  'Q',  'T',  'T', 0x04, 0xec, 0x12, 0x34, 0x00, 0x05,
    'd',  'e',  'v',  '-',  '1',  0x00, 0x06, 'w', 'i',  'l',  'l',  '/',  't',  0x00,
    0x02, 0x00, 0xff, 0x00, 0x04, 'u',  's',  'e', 'r',  0x00, 0x02, 'p',  'w',
};

/* 5.0: clean start, keep alive 30, Session Expiry 3600, client id "c1". */
static const uint8_t v5_session[] = {0x10, 0x14, 0x00, 0x04, 'M',  'Q',  'T',  'T',
                                     0x05, 0x02, 0x00, 0x1e, 0x05, 0x11, 0x00, 0x00,
                                     0x0e, 0x10, 0x00, 0x02, 'c',  '1'};

/* 5.0 with every field: flags 0xD6 = user name, password, will QoS 2, will,
 * clean start; keep alive 10; Receive Maximum 20; client id "x"; will
 * properties Payload Format 1 and Will Delay 5 (in identifier order), will
 * topic "w/1", will payload "hi", user "u", password 00. Remaining 40. */
static const uint8_t v5_full[] = {
    0x10, 0x28, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x05, 0xd6, 0x00, 0x0a, 0x03, 0x21,
    0x00, 0x14, 0x00, 0x01, 'x',  0x07, 0x01, 0x01, 0x18, 0x00, 0x00, 0x00, 0x05, 0x00,
    0x03, 'w',  '/',  '1',  0x00, 0x02, 'h',  'i',  0x00, 0x01, 'u',  0x00, 0x01, 0x00,
};

static codec_connect connect_v311_full(void)
{
    codec_connect c;
    memset(&c, 0, sizeof(c));
    c.protocol_version = CODEC_V311;
    c.keep_alive = 0x1234;
    c.client_id = CODEC_LIT("dev-1");
    c.will_flag = true;
    c.will_qos = 1;
    c.will_retain = true;
    c.will_topic = CODEC_LIT("will/t");
    c.will_payload = view("\x00\xff", 2);
    c.username_flag = true;
    c.username = CODEC_LIT("user");
    c.password_flag = true;
    c.password = CODEC_LIT("pw");
    return c;
}

static codec_connect connect_v5_full(void)
{
    codec_connect c;
    memset(&c, 0, sizeof(c));
    c.protocol_version = CODEC_V5;
    c.clean_start = true;
    c.keep_alive = 10;
    c.props.receive_maximum = 20;
    CODEC_SET(&c.props, CODEC_PROP_RECEIVE_MAXIMUM);
    c.client_id = CODEC_LIT("x");
    c.will_flag = true;
    c.will_qos = 2;
    c.will_props.will_delay = 5;
    CODEC_SET(&c.will_props, CODEC_PROP_WILL_DELAY);
    c.will_props.payload_format = 1;
    CODEC_SET(&c.will_props, CODEC_PROP_PAYLOAD_FORMAT);
    c.will_topic = CODEC_LIT("w/1");
    c.will_payload = CODEC_LIT("hi");
    c.username_flag = true;
    c.username = CODEC_LIT("u");
    c.password_flag = true;
    c.password = view("\x00", 1);
    return c;
}

/* Compare the fields of two CONNECTs (not the property blocks). */
static void assert_connect_fields(const codec_connect *got, const codec_connect *want)
{
    assert_int_equal(got->protocol_version, want->protocol_version);
    assert_int_equal(got->clean_start, want->clean_start);
    assert_int_equal(got->keep_alive, want->keep_alive);
    assert_bytes(got->client_id, want->client_id.ptr, want->client_id.len);
    assert_int_equal(got->will_flag, want->will_flag);
    assert_int_equal(got->will_qos, want->will_qos);
    assert_int_equal(got->will_retain, want->will_retain);
    assert_bytes(got->will_topic, want->will_topic.ptr, want->will_topic.len);
    assert_bytes(got->will_payload, want->will_payload.ptr, want->will_payload.len);
    assert_int_equal(got->username_flag, want->username_flag);
    assert_bytes(got->username, want->username.ptr, want->username.len);
    assert_int_equal(got->password_flag, want->password_flag);
    assert_bytes(got->password, want->password.ptr, want->password.len);
}

/* Encode c and compare with the hand-written packet, then decode that
 * packet and compare with c. */
static void check_connect_bytes(const codec_connect *c, const uint8_t *want, size_t want_len)
{
    uint8_t out[256];
    size_t n = 0;
    assert_int_equal(encode_connect(c, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);

    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(want, want_len, 0, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.type, CODEC_CONNECT);
    assert_connect_fields(&pkt.u.connect, c);
    assert_int_equal(pkt.u.connect.props.present, c->props.present);
    assert_int_equal(pkt.u.connect.will_props.present, c->will_props.present);
    free(copy);
}

/* ---- CONNECT: exact bytes ---------------------------------------------- */

static void test_connect_v311_minimal_bytes(void **state)
{
    (void)state;
    codec_connect c;
    memset(&c, 0, sizeof(c));
    c.protocol_version = CODEC_V311;
    c.clean_start = true;
    c.keep_alive = 60;
    check_connect_bytes(&c, v311_min, sizeof(v311_min));
}

static void test_connect_v311_full_bytes(void **state)
{
    (void)state;
    codec_connect c = connect_v311_full();
    check_connect_bytes(&c, v311_full, sizeof(v311_full));
}

static void test_connect_v5_session_expiry_bytes(void **state)
{
    (void)state;
    codec_connect c;
    memset(&c, 0, sizeof(c));
    c.protocol_version = CODEC_V5;
    c.clean_start = true;
    c.keep_alive = 30;
    c.props.session_expiry = 3600;
    CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
    c.client_id = CODEC_LIT("c1");
    check_connect_bytes(&c, v5_session, sizeof(v5_session));

    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(
        decode_exact(v5_session, sizeof(v5_session), 0, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.u.connect.props.session_expiry, 3600);
    assert_int_equal(pkt.u.connect.props.present, (uint64_t)1 << CODEC_PROP_SESSION_EXPIRY);
    free(copy);
}

static void test_connect_v5_full_bytes(void **state)
{
    (void)state;
    codec_connect c = connect_v5_full();
    check_connect_bytes(&c, v5_full, sizeof(v5_full));

    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(v5_full, sizeof(v5_full), 0, CODEC_FROM_CLIENT, &pkt, &copy),
                     CODEC_OK);
    assert_int_equal(pkt.u.connect.props.receive_maximum, 20);
    assert_int_equal(pkt.u.connect.will_props.will_delay, 5);
    assert_int_equal(pkt.u.connect.will_props.payload_format, 1);
    free(copy);
}

/* ---- CONNECT: round trips ----------------------------------------------- */

static void test_connect_v5_round_trip_every_field(void **state)
{
    (void)state;
    static const codec_string_pair users[] = {
        {{(const uint8_t *)"site", 4}, {(const uint8_t *)"lab", 3}},
        {{(const uint8_t *)"site", 4}, {(const uint8_t *)"", 0}},
    };
    static const codec_string_pair will_users[] = {
        {{(const uint8_t *)"why", 3}, {(const uint8_t *)"gone", 4}},
    };
    codec_connect c;
    memset(&c, 0, sizeof(c));
    c.protocol_version = CODEC_V5;
    c.clean_start = false;
    c.keep_alive = 0xffff;
    c.props.session_expiry = 0xffffffffu;
    c.props.receive_maximum = 1;
    c.props.maximum_packet_size = 65536;
    c.props.topic_alias_maximum = 10;
    c.props.request_response_info = 1;
    c.props.request_problem_info = 0;
    c.props.auth_method = CODEC_LIT("SCRAM-SHA-256");
    c.props.auth_data = view("\x00\x01\x02", 3);
    static const unsigned ids[] = {
        CODEC_PROP_SESSION_EXPIRY,        CODEC_PROP_RECEIVE_MAXIMUM,
        CODEC_PROP_MAXIMUM_PACKET_SIZE,   CODEC_PROP_TOPIC_ALIAS_MAXIMUM,
        CODEC_PROP_REQUEST_RESPONSE_INFO, CODEC_PROP_REQUEST_PROBLEM_INFO,
        CODEC_PROP_AUTH_METHOD,           CODEC_PROP_AUTH_DATA};
    for (size_t i = 0; i < COUNT(ids); i++)
        CODEC_SET(&c.props, ids[i]);
    c.props.user = users;
    c.props.user_len = COUNT(users);
    c.client_id = CODEC_LIT("client-42");
    c.will_flag = true;
    c.will_qos = 1;
    c.will_retain = true;
    c.will_props.will_delay = 30;
    c.will_props.payload_format = 1;
    c.will_props.message_expiry = 600;
    c.will_props.content_type = CODEC_LIT("text/plain");
    c.will_props.response_topic = CODEC_LIT("reply/here");
    c.will_props.correlation_data = view("\xde\xad", 2);
    static const unsigned will_ids[] = {CODEC_PROP_WILL_DELAY,     CODEC_PROP_PAYLOAD_FORMAT,
                                        CODEC_PROP_MESSAGE_EXPIRY, CODEC_PROP_CONTENT_TYPE,
                                        CODEC_PROP_RESPONSE_TOPIC, CODEC_PROP_CORRELATION_DATA};
    for (size_t i = 0; i < COUNT(will_ids); i++)
        CODEC_SET(&c.will_props, will_ids[i]);
    c.will_props.user = will_users;
    c.will_props.user_len = COUNT(will_users);
    c.will_topic = CODEC_LIT("devices/42/status");
    c.will_payload = CODEC_LIT("offline");
    c.username_flag = true;
    c.username = CODEC_LIT("device-42");
    c.password_flag = true;
    c.password = view("s\x00cret", 6);

    uint8_t out[512];
    size_t n = 0;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_OK);
    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(out, n, 0, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_OK);
    const codec_connect *d = &pkt.u.connect;
    assert_connect_fields(d, &c);
    assert_int_equal(d->props.present, c.props.present);
    assert_int_equal(d->props.session_expiry, 0xffffffffu);
    assert_int_equal(d->props.receive_maximum, 1);
    assert_int_equal(d->props.maximum_packet_size, 65536);
    assert_int_equal(d->props.topic_alias_maximum, 10);
    assert_int_equal(d->props.request_response_info, 1);
    assert_int_equal(d->props.request_problem_info, 0);
    assert_bytes(d->props.auth_method, "SCRAM-SHA-256", 13);
    assert_bytes(d->props.auth_data, "\x00\x01\x02", 3);
    assert_int_equal(d->props.user_count, 2);
    assert_int_equal(d->will_props.present, c.will_props.present);
    assert_int_equal(d->will_props.will_delay, 30);
    assert_int_equal(d->will_props.payload_format, 1);
    assert_int_equal(d->will_props.message_expiry, 600);
    assert_bytes(d->will_props.content_type, "text/plain", 10);
    assert_bytes(d->will_props.response_topic, "reply/here", 10);
    assert_bytes(d->will_props.correlation_data, "\xde\xad", 2);
    assert_int_equal(d->will_props.user_count, 1);
    /* The user properties, in order. */
    size_t pos = 0;
    codec_prop prop;
    unsigned seen = 0;
    while (codec_props_next(d->props.raw, &pos, &prop))
        if (prop.id == CODEC_PROP_USER) {
            assert_bytes(prop.str, users[seen].name.ptr, users[seen].name.len);
            assert_bytes(prop.value, users[seen].value.ptr, users[seen].value.len);
            seen++;
        }
    assert_int_equal(seen, 2);
    pos = 0;
    seen = 0;
    while (codec_props_next(d->will_props.raw, &pos, &prop))
        if (prop.id == CODEC_PROP_USER) {
            assert_bytes(prop.str, "why", 3);
            assert_bytes(prop.value, "gone", 4);
            seen++;
        }
    assert_int_equal(seen, 1);
    free(copy);
}

/* Each combination of the flags round-trips, in both versions. */
static void test_connect_flag_combinations_round_trip(void **state)
{
    (void)state;
    static const uint8_t versions[] = {CODEC_V311, CODEC_V5};
    for (size_t v = 0; v < COUNT(versions); v++) {
        for (unsigned bits = 0; bits < 64; bits++) {
            codec_connect c;
            memset(&c, 0, sizeof(c));
            c.protocol_version = versions[v];
            c.clean_start = bits & 1;
            c.will_flag = bits & 2;
            c.will_qos = c.will_flag ? (uint8_t)((bits >> 2) % 3) : 0;
            c.will_retain = c.will_flag && (bits & 8);
            c.username_flag = bits & 16;
            c.password_flag = (bits & 32) && (c.username_flag || versions[v] == CODEC_V5);
            c.client_id = (bits & 4) ? CODEC_LIT("") : CODEC_LIT("id");
            if (c.will_flag) {
                c.will_topic = CODEC_LIT("t");
                c.will_payload = CODEC_LIT("");
            }
            if (c.username_flag)
                c.username = CODEC_LIT("");
            if (c.password_flag)
                c.password = CODEC_LIT("");
            uint8_t out[64];
            size_t n;
            want_status(encode_connect(&c, out, sizeof(out), &n), CODEC_OK, "encode", bits,
                        versions[v]);
            /* The flags byte, as the spec lays it out (figure 3-4). */
            uint8_t want_flags =
                (uint8_t)((c.username_flag ? 0x80 : 0) | (c.password_flag ? 0x40 : 0) |
                          (c.will_retain ? 0x20 : 0) | c.will_qos << 3 | (c.will_flag ? 0x04 : 0) |
                          (c.clean_start ? 0x02 : 0));
            assert_int_equal(out[9], want_flags);
            codec_packet pkt;
            uint8_t *copy;
            want_status(decode_exact(out, n, 0, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_OK, "decode",
                        bits, versions[v]);
            assert_connect_fields(&pkt.u.connect, &c);
            free(copy);
        }
    }
}

/* MQTT 5 allows a password without a user name (3.1.2.9); 3.1.1 does not:
 * "If the User Name Flag is set to 0, the Password Flag MUST be set to 0"
 * (3.1.1 [MQTT-3.1.2-22]). */
static void test_password_without_username(void **state)
{
    (void)state;
    codec_connect c;
    memset(&c, 0, sizeof(c));
    c.protocol_version = CODEC_V5;
    c.client_id = CODEC_LIT("a");
    c.password_flag = true;
    c.password = CODEC_LIT("token");
    uint8_t out[64];
    size_t n;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(out[9], 0x40);
    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(out, n, 0, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_OK);
    assert_true(pkt.u.connect.password_flag);
    assert_false(pkt.u.connect.username_flag);
    assert_bytes(pkt.u.connect.password, "token", 5);
    assert_int_equal(pkt.u.connect.username.len, 0);
    free(copy);

    c.protocol_version = CODEC_V311;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);

    struct raw_connect r = raw_default(CODEC_V311);
    r.flags = 0x42;
    assert_int_equal(raw_status(&r), CODEC_ERR_PROTOCOL);
    r = raw_default(CODEC_V5);
    r.flags = 0x42;
    assert_int_equal(raw_status(&r), CODEC_OK);
}

/* ---- CONNECT: malformed and refused ------------------------------------- */

/* The protocol name must be "MQTT" [MQTT-3.1.2-1] and the level 4 or 5
 * [MQTT-3.1.2-2]; the level asked for is reported so that the caller can
 * answer in a form the client understands. */
static void test_connect_bad_version(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        size_t name_len;
        uint8_t level;
    } cases[] = {
        {"MQTT", 4, 3}, {"MQTT", 4, 6}, {"MQTT", 4, 0}, {"MQTT", 4, 0xff}, {"MQIsdp", 6, 3},
        {"mqtt", 4, 4}, {"MQTX", 4, 5}, {"MQT", 3, 4},  {"", 0, 5},        {"MQTTT", 5, 4},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        struct raw_connect r = raw_default(cases[i].level);
        r.name = view(cases[i].name, cases[i].name_len);
        uint8_t buf[520];
        size_t n = build_connect(&r, buf);
        codec_packet pkt;
        uint8_t *copy;
        want_status(decode_exact(buf, n, 0, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_ERR_BAD_VERSION,
                    "version", cases[i].level, (unsigned)i);
        assert_int_equal(pkt.type, CODEC_CONNECT);
        assert_int_equal(pkt.u.connect.protocol_version, cases[i].level);
        free(copy);
    }
    /* A real MQTT 3.1 CONNECT, by hand. */
    static const uint8_t v31[] = {0x10, 0x0f, 0x00, 0x06, 'M',  'Q',  'I',  's', 'd',
                                  'p',  0x03, 0x02, 0x00, 0x3c, 0x00, 0x01, 'a'};
    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(v31, sizeof(v31), 0, CODEC_FROM_CLIENT, &pkt, &copy),
                     CODEC_ERR_BAD_VERSION);
    assert_int_equal(pkt.u.connect.protocol_version, 3);
    free(copy);
    assert_int_equal(codec_status_reason(CODEC_ERR_BAD_VERSION), 0x84);
}

/* "The Server MUST validate that the reserved flag in the CONNECT packet is
 * set to 0" [MQTT-3.1.2-3]; otherwise it is a Malformed Packet. */
static void test_connect_reserved_flag(void **state)
{
    (void)state;
    for (uint8_t level = CODEC_V311; level <= CODEC_V5; level++) {
        struct raw_connect r = raw_default(level);
        r.flags = 0x03;
        assert_int_equal(raw_status(&r), CODEC_ERR_MALFORMED);
        r.flags = 0x01;
        assert_int_equal(raw_status(&r), CODEC_ERR_MALFORMED);
        r.flags = 0xc7; /* with every other flag valid */
        assert_int_equal(raw_status(&r), CODEC_ERR_MALFORMED);
        r.flags = 0xc6;
        assert_int_equal(raw_status(&r), CODEC_OK);
    }
    /* In the hand-written full packets. */
    uint8_t buf[sizeof(v311_full)];
    memcpy(buf, v311_full, sizeof(buf));
    buf[9] |= 0x01;
    assert_int_equal(status_of(buf, sizeof(buf), 0, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED);
}

/* Will QoS 3 is malformed [MQTT-3.1.2-12]; without the will flag the Will
 * QoS and Will Retain must be 0 ([MQTT-3.1.2-11], [MQTT-3.1.2-13]). */
static void test_connect_will_flags(void **state)
{
    (void)state;
    static const struct {
        uint8_t flags;
        codec_status want;
    } cases[] = {
        {0x02 | 0x04 | 0x18, CODEC_ERR_MALFORMED}, /* will, QoS 3 */
        {0x02 | 0x04 | 0x38, CODEC_ERR_MALFORMED}, /* will, QoS 3, retain */
        {0x02 | 0x18, CODEC_ERR_MALFORMED},        /* QoS 3 without will */
        {0x02 | 0x08, CODEC_ERR_MALFORMED},        /* QoS 1 without will */
        {0x02 | 0x10, CODEC_ERR_MALFORMED},        /* QoS 2 without will */
        {0x02 | 0x20, CODEC_ERR_MALFORMED},        /* retain without will */
        {0x02 | 0x28, CODEC_ERR_MALFORMED},        /* QoS 1 + retain without will */
        {0x02 | 0x04, CODEC_OK},
        {0x02 | 0x04 | 0x08, CODEC_OK},
        {0x02 | 0x04 | 0x10, CODEC_OK},
        {0x02 | 0x04 | 0x30, CODEC_OK},
    };
    for (uint8_t level = CODEC_V311; level <= CODEC_V5; level++) {
        for (size_t i = 0; i < COUNT(cases); i++) {
            struct raw_connect r = raw_default(level);
            r.flags = cases[i].flags;
            want_status(raw_status(&r), cases[i].want, "will flags", cases[i].flags, level);
        }
    }
    /* Will QoS 3 in the hand-written 3.1.1 packet (0xEC -> 0xFC). */
    uint8_t buf[sizeof(v311_full)];
    memcpy(buf, v311_full, sizeof(buf));
    buf[9] = 0xfc;
    assert_int_equal(status_of(buf, sizeof(buf), 0, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED);
}

/* A will topic is a topic name: no wildcards, at least one character
 * ([MQTT-4.7.1-1], [MQTT-4.7.3-1]). */
static void test_connect_will_topic_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {"a/+", "#", "+", "a/#", "sport/+/player", ""};
    for (uint8_t level = CODEC_V311; level <= CODEC_V5; level++) {
        for (size_t i = 0; i < COUNT(bad); i++) {
            struct raw_connect r = raw_default(level);
            r.flags = 0x06;
            r.will_topic = view(bad[i], strlen(bad[i]));
            want_status(raw_status(&r), CODEC_ERR_TOPIC_NAME, bad[i], (unsigned)i, level);
        }
        struct raw_connect r = raw_default(level);
        r.flags = 0x06;
        r.will_topic = CODEC_LIT("a/b/c");
        assert_int_equal(raw_status(&r), CODEC_OK);
    }
    /* In the hand-written packet: "will/t" -> "will/+". */
    uint8_t buf[sizeof(v311_full)];
    memcpy(buf, v311_full, sizeof(buf));
    buf[26] = '+';
    assert_int_equal(status_of(buf, sizeof(buf), 0, CODEC_FROM_CLIENT), CODEC_ERR_TOPIC_NAME);
    assert_int_equal(codec_status_reason(CODEC_ERR_TOPIC_NAME), 0x90);
}

static const struct {
    uint8_t b[4];
    size_t len;
} bad_utf8[] = {
    {{0xc0, 0xaf}, 2},             /* overlong '/' */
    {{0xed, 0xa0, 0x80}, 3},       /* surrogate U+D800 */
    {{'a', 0x00, 'b'}, 3},         /* U+0000 [MQTT-1.5.4-2] */
    {{0xff}, 1},                   /* never valid in UTF-8 */
    {{0xf4, 0x90, 0x80, 0x80}, 4}, /* above U+10FFFF */
    {{0xe2, 0x82}, 2},             /* cut short */
};

/* Client id [MQTT-3.1.3-4], will topic [MQTT-3.1.3-11] and user name
 * [MQTT-3.1.3-12] are UTF-8 Encoded Strings (5.0 numbering; 3.1.1 has
 * [MQTT-3.1.3-4], [MQTT-3.1.3-10], [MQTT-3.1.3-11]): ill-formed UTF-8 or
 * U+0000 makes the packet malformed. Password and will payload are binary. */
static void test_connect_invalid_utf8(void **state)
{
    (void)state;
    for (uint8_t level = CODEC_V311; level <= CODEC_V5; level++) {
        for (size_t k = 0; k < COUNT(bad_utf8); k++) {
            codec_bytes bad = view(bad_utf8[k].b, bad_utf8[k].len);
            struct raw_connect r = raw_default(level);
            r.client_id = bad;
            want_status(raw_status(&r), CODEC_ERR_MALFORMED, "client id", (unsigned)k, level);

            r = raw_default(level);
            r.flags = 0x82;
            r.username = bad;
            want_status(raw_status(&r), CODEC_ERR_MALFORMED, "user name", (unsigned)k, level);

            r = raw_default(level);
            r.flags = 0x06;
            r.will_topic = bad;
            want_status(raw_status(&r), CODEC_ERR_MALFORMED, "will topic", (unsigned)k, level);

            r = raw_default(level);
            r.flags = 0xc6;
            r.password = bad;
            r.will_payload = bad;
            want_status(raw_status(&r), CODEC_OK, "binary", (unsigned)k, level);
        }
    }
}

/* Bytes after the last field: the packet is not what the flags describe. */
static void test_connect_trailing_bytes(void **state)
{
    (void)state;
    for (uint8_t level = CODEC_V311; level <= CODEC_V5; level++) {
        struct raw_connect r = raw_default(level);
        r.trailing = view("\x00", 1);
        assert_int_equal(raw_status(&r), CODEC_ERR_MALFORMED);
        /* A user name present but its flag clear. */
        r = raw_default(level);
        r.trailing = view("\x00\x01u", 3);
        assert_int_equal(raw_status(&r), CODEC_ERR_MALFORMED);
    }
    /* The hand-written minimal packet with one more byte. */
    uint8_t buf[sizeof(v311_min) + 1];
    memcpy(buf, v311_min, sizeof(v311_min));
    buf[1]++;
    buf[sizeof(v311_min)] = 0x00;
    assert_int_equal(status_of(buf, sizeof(buf), 0, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED);
}

/* Feed each prefix (NEED_MORE), and cut the body at every length with the
 * Remaining Length rewritten to match (never OK: always malformed). Every
 * decode runs on an exact-size heap copy. */
static void check_truncations(const uint8_t *pkt, size_t n)
{
    for (size_t i = 0; i < n; i++)
        want_status(status_of(pkt, i, 0, CODEC_FROM_CLIENT), CODEC_NEED_MORE, "prefix", (unsigned)i,
                    (unsigned)n);
    size_t body_len = n - 2; /* these packets have a one-byte length */
    for (size_t cut = 0; cut < body_len; cut++) {
        uint8_t buf[256];
        buf[0] = pkt[0];
        buf[1] = (uint8_t)cut;
        memcpy(buf + 2, pkt + 2, cut);
        want_status(status_of(buf, 2 + cut, 0, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED, "cut",
                    (unsigned)cut, (unsigned)n);
    }
}

static void test_connect_truncated_everywhere(void **state)
{
    (void)state;
    check_truncations(v311_min, sizeof(v311_min));
    check_truncations(v311_full, sizeof(v311_full));
    check_truncations(v5_session, sizeof(v5_session));
    check_truncations(v5_full, sizeof(v5_full));
}

/* "The first packet sent from the Client to the Server MUST be a CONNECT
 * packet" [MQTT-3.1.0-1]; "The Server MUST process a second CONNECT packet
 * sent from a Client as a Protocol Error" [MQTT-3.1.0-2]. */
static void test_connect_first_and_only_once(void **state)
{
    (void)state;
    assert_int_equal(status_of(v311_min, sizeof(v311_min), CODEC_V311, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(v5_session, sizeof(v5_session), CODEC_V5, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(v311_min, sizeof(v311_min), CODEC_V5, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);

    static const struct {
        uint8_t b[8];
        size_t len;
        codec_sender from;
    } first[] = {
        {{0xc0, 0x00}, 2, CODEC_FROM_CLIENT},                                    /* PINGREQ */
        {{0x30, 0x03, 0x00, 0x01, 't'}, 5, CODEC_FROM_CLIENT},                   /* PUBLISH */
        {{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 't', 0x00}, 8, CODEC_FROM_CLIENT}, /* SUBSCRIBE */
        {{0xe0, 0x00}, 2, CODEC_FROM_CLIENT},                                    /* DISCONNECT */
        {{0x40, 0x02, 0x00, 0x01}, 4, CODEC_FROM_CLIENT},                        /* PUBACK */
        {{0xf0, 0x00}, 2, CODEC_FROM_CLIENT},                                    /* AUTH */
        {{0x20, 0x02, 0x00, 0x00}, 4, CODEC_FROM_SERVER},                        /* CONNACK */
    };
    for (size_t i = 0; i < COUNT(first); i++)
        want_status(status_of(first[i].b, first[i].len, 0, first[i].from), CODEC_ERR_PROTOCOL,
                    "first", first[i].b[0], (unsigned)i);
    assert_int_equal(codec_status_reason(CODEC_ERR_PROTOCOL), 0x82);
}

/* Table 2-1: CONNECT goes client to server, CONNACK server to client. */
static void test_connect_connack_direction(void **state)
{
    (void)state;
    assert_int_equal(status_of(v311_min, sizeof(v311_min), 0, CODEC_FROM_SERVER),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(v5_full, sizeof(v5_full), 0, CODEC_FROM_SERVER), CODEC_ERR_PROTOCOL);
    static const uint8_t ack311[] = {0x20, 0x02, 0x00, 0x00};
    static const uint8_t ack5[] = {0x20, 0x03, 0x00, 0x00, 0x00};
    assert_int_equal(status_of(ack311, sizeof(ack311), CODEC_V311, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(ack5, sizeof(ack5), CODEC_V5, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(ack311, sizeof(ack311), CODEC_V311, CODEC_FROM_SERVER), CODEC_OK);
    assert_int_equal(status_of(ack5, sizeof(ack5), CODEC_V5, CODEC_FROM_SERVER), CODEC_OK);
}

/* ---- CONNACK ------------------------------------------------------------ */

static codec_status connack_status(uint8_t version, uint8_t flags, uint8_t code)
{
    uint8_t b[5] = {0x20, 0x02, flags, code, 0x00};
    if (version == CODEC_V5)
        b[1] = 0x03; /* with an empty property block */
    return status_of(b, version == CODEC_V5 ? 5 : 4, version, CODEC_FROM_SERVER);
}

/* 3.1.1 table 3.1: return codes 0..5; 6..255 reserved. */
static void test_connack_v311_codes(void **state)
{
    (void)state;
    for (unsigned code = 0; code < 256; code++) {
        codec_status want = code <= 5 ? CODEC_OK : CODEC_ERR_MALFORMED;
        want_status(connack_status(CODEC_V311, 0, (uint8_t)code), want, "3.1.1 code", code, 0);
    }
    /* Session present only with return code 0 (3.1.1 [MQTT-3.2.2-4]). */
    assert_int_equal(connack_status(CODEC_V311, 1, 0), CODEC_OK);
    for (uint8_t code = 1; code <= 5; code++)
        assert_int_equal(connack_status(CODEC_V311, 1, code), CODEC_ERR_PROTOCOL);
}

/* Table 3-1, written out independently: the Server "MUST use one of the
 * Connect Reason Code values" [MQTT-3.2.2-8]. */
static void test_connack_v5_codes(void **state)
{
    (void)state;
    static const uint8_t valid[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                    0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
    for (unsigned code = 0; code < 256; code++) {
        bool ok = memchr(valid, (int)code, sizeof(valid)) != NULL;
        want_status(connack_status(CODEC_V5, 0, (uint8_t)code), ok ? CODEC_OK : CODEC_ERR_MALFORMED,
                    "5.0 code", code, 0);
        /* "If a Server sends a CONNACK packet containing a non-zero Reason
         * Code it MUST set Session Present to 0" [MQTT-3.2.2-6]. */
        if (ok)
            want_status(connack_status(CODEC_V5, 1, (uint8_t)code),
                        code == 0 ? CODEC_OK : CODEC_ERR_PROTOCOL, "session present", code, 1);
    }
}

/* "Bits 7-1 are reserved and MUST be set to 0" [MQTT-3.2.2-1]. */
static void test_connack_reserved_flags(void **state)
{
    (void)state;
    for (uint8_t version = CODEC_V311; version <= CODEC_V5; version++) {
        for (unsigned flags = 2; flags < 256; flags++)
            want_status(connack_status(version, (uint8_t)flags, 0), CODEC_ERR_MALFORMED,
                        "connack flags", flags, version);
        /* Also as the encoder writes them: only bit 0. */
        codec_connack a;
        memset(&a, 0, sizeof(a));
        a.session_present = true;
        uint8_t out[16];
        size_t n;
        assert_int_equal(codec_encode_connack(&a, version, out, sizeof(out), &n), CODEC_OK);
        assert_int_equal(out[2], 0x01);
    }
}

static void test_connack_malformed_lengths(void **state)
{
    (void)state;
    /* 3.1.1: exactly two bytes. */
    static const uint8_t extra[] = {0x20, 0x03, 0x00, 0x00, 0x00};
    static const uint8_t one[] = {0x20, 0x01, 0x00};
    assert_int_equal(status_of(extra, sizeof(extra), CODEC_V311, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    assert_int_equal(status_of(one, sizeof(one), CODEC_V311, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    /* 5.0: the Property Length is not optional in CONNACK (3.2.2.3.1). */
    static const uint8_t no_props[] = {0x20, 0x02, 0x00, 0x00};
    assert_int_equal(status_of(no_props, sizeof(no_props), CODEC_V5, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    static const uint8_t trailing[] = {0x20, 0x04, 0x00, 0x00, 0x00, 0x00};
    assert_int_equal(status_of(trailing, sizeof(trailing), CODEC_V5, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
}

/* 5.0 CONNACK with Assigned Client Identifier "x" and Receive Maximum 10,
 * in identifier order: 20 0a 00 00 07 12 00 01 78 21 00 0a. */
static void test_connack_v5_props_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {0x20, 0x0a, 0x00, 0x00, 0x07, 0x12,
                                   0x00, 0x01, 'x',  0x21, 0x00, 0x0a};
    codec_connack a;
    memset(&a, 0, sizeof(a));
    a.props.receive_maximum = 10;
    CODEC_SET(&a.props, CODEC_PROP_RECEIVE_MAXIMUM);
    a.props.assigned_client_id = CODEC_LIT("x");
    CODEC_SET(&a.props, CODEC_PROP_ASSIGNED_CLIENT_ID);
    uint8_t out[64];
    size_t n;
    assert_int_equal(codec_encode_connack(&a, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));

    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(want, sizeof(want), CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy),
                     CODEC_OK);
    assert_int_equal(pkt.type, CODEC_CONNACK);
    assert_false(pkt.u.connack.session_present);
    assert_int_equal(pkt.u.connack.reason, 0);
    assert_int_equal(pkt.u.connack.props.present, a.props.present);
    assert_int_equal(pkt.u.connack.props.receive_maximum, 10);
    assert_bytes(pkt.u.connack.props.assigned_client_id, "x", 1);
    free(copy);
}

static void test_connack_round_trips(void **state)
{
    (void)state;
    uint8_t out[256];
    size_t n;
    codec_packet pkt;
    uint8_t *copy;

    /* 3.1.1, session present: 20 02 01 00. */
    codec_connack a;
    memset(&a, 0, sizeof(a));
    a.session_present = true;
    assert_int_equal(codec_encode_connack(&a, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    static const uint8_t sp[] = {0x20, 0x02, 0x01, 0x00};
    assert_int_equal(n, sizeof(sp));
    assert_memory_equal(out, sp, sizeof(sp));
    assert_int_equal(decode_exact(out, n, CODEC_V311, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_true(pkt.u.connack.session_present);
    assert_int_equal(pkt.u.connack.reason, 0);
    free(copy);

    /* 3.1.1, refused: 20 02 00 05. */
    a.session_present = false;
    a.reason = 0x05;
    assert_int_equal(codec_encode_connack(&a, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    static const uint8_t refused[] = {0x20, 0x02, 0x00, 0x05};
    assert_memory_equal(out, refused, sizeof(refused));
    assert_int_equal(decode_exact(out, n, CODEC_V311, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.u.connack.reason, 0x05);
    free(copy);

    /* 5.0 with every CONNACK property and session present. */
    static const codec_string_pair u[] = {{{(const uint8_t *)"a", 1}, {(const uint8_t *)"b", 1}}};
    memset(&a, 0, sizeof(a));
    a.session_present = true;
    codec_props *p = &a.props;
    p->session_expiry = 120;
    p->assigned_client_id = CODEC_LIT("auto-1");
    p->server_keep_alive = 45;
    p->auth_method = CODEC_LIT("m");
    p->auth_data = CODEC_LIT("d");
    p->response_info = CODEC_LIT("resp/");
    p->server_reference = CODEC_LIT("other");
    p->reason_string = CODEC_LIT("welcome");
    p->receive_maximum = 100;
    p->topic_alias_maximum = 5;
    p->maximum_qos = 1;
    p->retain_available = 0;
    p->maximum_packet_size = 4096;
    p->wildcard_sub_available = 1;
    p->sub_id_available = 0;
    p->shared_sub_available = 1;
    static const unsigned ids[] = {0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F,
                                   0x21, 0x22, 0x24, 0x25, 0x27, 0x28, 0x29, 0x2A};
    for (size_t i = 0; i < COUNT(ids); i++)
        CODEC_SET(p, ids[i]);
    p->user = u;
    p->user_len = 1;
    assert_int_equal(codec_encode_connack(&a, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(decode_exact(out, n, CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    const codec_props *d = &pkt.u.connack.props;
    assert_true(pkt.u.connack.session_present);
    assert_int_equal(pkt.u.connack.reason, 0);
    assert_int_equal(d->present, p->present);
    assert_int_equal(d->session_expiry, 120);
    assert_bytes(d->assigned_client_id, "auto-1", 6);
    assert_int_equal(d->server_keep_alive, 45);
    assert_bytes(d->auth_method, "m", 1);
    assert_bytes(d->auth_data, "d", 1);
    assert_bytes(d->response_info, "resp/", 5);
    assert_bytes(d->server_reference, "other", 5);
    assert_bytes(d->reason_string, "welcome", 7);
    assert_int_equal(d->receive_maximum, 100);
    assert_int_equal(d->topic_alias_maximum, 5);
    assert_int_equal(d->maximum_qos, 1);
    assert_int_equal(d->retain_available, 0);
    assert_int_equal(d->maximum_packet_size, 4096);
    assert_int_equal(d->wildcard_sub_available, 1);
    assert_int_equal(d->sub_id_available, 0);
    assert_int_equal(d->shared_sub_available, 1);
    assert_int_equal(d->user_count, 1);
    free(copy);

    /* 5.0 refusal with a reason string. */
    memset(&a, 0, sizeof(a));
    a.reason = 0x87;
    a.props.reason_string = CODEC_LIT("no");
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    assert_int_equal(codec_encode_connack(&a, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    static const uint8_t refused5[] = {0x20, 0x08, 0x00, 0x87, 0x05, 0x1f, 0x00, 0x02, 'n', 'o'};
    assert_int_equal(n, sizeof(refused5));
    assert_memory_equal(out, refused5, sizeof(refused5));
    assert_int_equal(decode_exact(out, n, CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.u.connack.reason, 0x87);
    assert_bytes(pkt.u.connack.props.reason_string, "no", 2);
    free(copy);
}

/* ---- DISCONNECT ---------------------------------------------------------- */

static void test_disconnect_bytes(void **state)
{
    (void)state;
    uint8_t out[16];
    size_t n;
    codec_disconnect d;
    memset(&d, 0, sizeof(d));
    static const uint8_t empty[] = {0xe0, 0x00};

    /* 3.1.1: e0 00. */
    assert_int_equal(
        codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V311, out, sizeof(out), &n), CODEC_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(out, empty, 2);
    /* 5.0 success without properties: reason and length left out, e0 00
     * (3.14.2.1). */
    assert_int_equal(codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(out, empty, 2);
    /* 5.0 with a reason and no properties: e0 01 XX. */
    static const uint8_t codes[] = {0x8e, 0x04, 0x81, 0x9c};
    for (size_t i = 0; i < COUNT(codes); i++) {
        d.reason = codes[i];
        assert_int_equal(
            codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V5, out, sizeof(out), &n),
            CODEC_OK);
        uint8_t want[] = {0xe0, 0x01, codes[i]};
        assert_int_equal(n, 3);
        assert_memory_equal(out, want, 3);
    }

    /* Decoding them: an absent reason is 0x00. */
    codec_packet pkt;
    uint8_t *copy;
    for (int snd = 0; snd < 2; snd++) {
        assert_int_equal(decode_exact(empty, 2, CODEC_V5, (codec_sender)snd, &pkt, &copy),
                         CODEC_OK);
        assert_int_equal(pkt.type, CODEC_DISCONNECT);
        assert_int_equal(pkt.u.disconnect.reason, 0);
        assert_int_equal(pkt.u.disconnect.props.present, 0);
        free(copy);
        assert_int_equal(status_of(empty, 2, CODEC_V311, (codec_sender)snd), CODEC_OK);
    }
    static const uint8_t taken[] = {0xe0, 0x01, 0x8e};
    assert_int_equal(decode_exact(taken, 3, CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.u.disconnect.reason, 0x8e);
    free(copy);
    /* 3.1.1 DISCONNECT has no variable header. */
    static const uint8_t v311_body[] = {0xe0, 0x01, 0x00};
    assert_int_equal(status_of(v311_body, 3, CODEC_V311, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED);
    /* 5.0: a reason and a property block that runs past the packet. */
    static const uint8_t over[] = {0xe0, 0x02, 0x00, 0x05};
    assert_int_equal(status_of(over, 4, CODEC_V5, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED);
}

/* Table 3-10, written out independently, with the "Sent by" column: the
 * sender "MUST use one of the DISCONNECT Reason Code values" [MQTT-3.14.2-1]. */
static void test_disconnect_reason_by_sender(void **state)
{
    (void)state;
    static const uint8_t either[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93,
                                     0x94, 0x95, 0x96, 0x97, 0x98, 0x99};
    static const uint8_t client_only[] = {0x04};
    static const uint8_t server_only[] = {0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x9A, 0x9B,
                                          0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
    for (unsigned code = 0; code < 256; code++) {
        bool any = memchr(either, (int)code, sizeof(either)) != NULL;
        bool by_client = any || memchr(client_only, (int)code, sizeof(client_only)) != NULL;
        bool by_server = any || memchr(server_only, (int)code, sizeof(server_only)) != NULL;
        uint8_t bare[] = {0xe0, 0x01, (uint8_t)code};
        uint8_t with_props[] = {0xe0, 0x02, (uint8_t)code, 0x00};
        want_status(status_of(bare, 3, CODEC_V5, CODEC_FROM_CLIENT),
                    by_client ? CODEC_OK : CODEC_ERR_MALFORMED, "client", code, 3);
        want_status(status_of(bare, 3, CODEC_V5, CODEC_FROM_SERVER),
                    by_server ? CODEC_OK : CODEC_ERR_MALFORMED, "server", code, 3);
        want_status(status_of(with_props, 4, CODEC_V5, CODEC_FROM_CLIENT),
                    by_client ? CODEC_OK : CODEC_ERR_MALFORMED, "client", code, 4);
        want_status(status_of(with_props, 4, CODEC_V5, CODEC_FROM_SERVER),
                    by_server ? CODEC_OK : CODEC_ERR_MALFORMED, "server", code, 4);
    }
}

static void test_disconnect_round_trips(void **state)
{
    (void)state;
    uint8_t out[128];
    size_t n;
    codec_packet pkt;
    uint8_t *copy;
    static const codec_string_pair u[] = {{{(const uint8_t *)"k", 1}, {(const uint8_t *)"v", 1}}};

    /* From the client: Session Expiry, reason string, user property. */
    codec_disconnect d;
    memset(&d, 0, sizeof(d));
    d.reason = 0x04;
    d.props.session_expiry = 300;
    CODEC_SET(&d.props, CODEC_PROP_SESSION_EXPIRY);
    d.props.reason_string = CODEC_LIT("bye");
    CODEC_SET(&d.props, CODEC_PROP_REASON_STRING);
    d.props.user = u;
    d.props.user_len = 1;
    assert_int_equal(codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    /* e0, remaining 20, reason 04, property length 18:
     * 11 00 00 01 2c | 1f 00 03 b y e | 26 00 01 k 00 01 v */
    static const uint8_t want[] = {0xe0, 0x14, 0x04, 0x12, 0x11, 0x00, 0x00, 0x01, 0x2c, 0x1f, 0x00,
                                   0x03, 'b',  'y',  'e',  0x26, 0x00, 0x01, 'k',  0x00, 0x01, 'v'};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(decode_exact(out, n, CODEC_V5, CODEC_FROM_CLIENT, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.u.disconnect.reason, 0x04);
    assert_int_equal(pkt.u.disconnect.props.present, d.props.present);
    assert_int_equal(pkt.u.disconnect.props.session_expiry, 300);
    assert_bytes(pkt.u.disconnect.props.reason_string, "bye", 3);
    assert_int_equal(pkt.u.disconnect.props.user_count, 1);
    free(copy);
    /* The same bytes from a server: 0x04 is the client's, and Session
     * Expiry is not for a server's DISCONNECT [MQTT-3.14.2-2]. */
    assert_int_equal(status_of(out, n, CODEC_V5, CODEC_FROM_SERVER), CODEC_ERR_MALFORMED);
    out[2] = 0x00;
    assert_int_equal(status_of(out, n, CODEC_V5, CODEC_FROM_SERVER), CODEC_ERR_PROTOCOL);

    /* From the server: Use another server, with a Server Reference. */
    memset(&d, 0, sizeof(d));
    d.reason = 0x9c;
    d.props.server_reference = CODEC_LIT("b.example:8883");
    CODEC_SET(&d.props, CODEC_PROP_SERVER_REFERENCE);
    assert_int_equal(codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    assert_int_equal(decode_exact(out, n, CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.u.disconnect.reason, 0x9c);
    assert_bytes(pkt.u.disconnect.props.server_reference, "b.example:8883", 14);
    free(copy);
    /* Success with properties keeps its reason byte: e0 LL 00 PL ... */
    memset(&d, 0, sizeof(d));
    d.props.reason_string = CODEC_LIT("ok");
    CODEC_SET(&d.props, CODEC_PROP_REASON_STRING);
    assert_int_equal(codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    static const uint8_t ok[] = {0xe0, 0x07, 0x00, 0x05, 0x1f, 0x00, 0x02, 'o', 'k'};
    assert_int_equal(n, sizeof(ok));
    assert_memory_equal(out, ok, sizeof(ok));
}

/* ---- AUTH ---------------------------------------------------------------- */

/* Packet type 15 is reserved in 3.1.1 (its table 2.1): malformed there. */
static void test_auth_not_in_v311(void **state)
{
    (void)state;
    static const uint8_t empty[] = {0xf0, 0x00};
    static const uint8_t cont[] = {0xf0, 0x02, 0x18, 0x00};
    for (int snd = 0; snd < 2; snd++) {
        assert_int_equal(status_of(empty, 2, CODEC_V311, (codec_sender)snd), CODEC_ERR_MALFORMED);
        assert_int_equal(status_of(cont, 4, CODEC_V311, (codec_sender)snd), CODEC_ERR_MALFORMED);
    }
    codec_disconnect a;
    memset(&a, 0, sizeof(a));
    a.reason = 0x18;
    uint8_t out[16];
    size_t n;
    assert_int_equal(codec_encode_disconnect(CODEC_AUTH, &a, CODEC_V311, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
    a.reason = 0;
    assert_int_equal(codec_encode_disconnect(CODEC_AUTH, &a, CODEC_V311, out, sizeof(out), &n),
                     CODEC_ERR_ARG);
}

/* Table 3-11: 0x00 Success (sent by the server), 0x18 Continue
 * authentication (either), 0x19 Re-authenticate (the client); the sender
 * "MUST use one of the Authenticate Reason Codes" [MQTT-3.15.2-1]. */
static void test_auth_reason_codes(void **state)
{
    (void)state;
    for (unsigned code = 0; code < 256; code++) {
        bool by_server = code == 0x00 || code == 0x18;
        bool by_client = code == 0x18 || code == 0x19;
        uint8_t b[] = {0xf0, 0x02, (uint8_t)code, 0x00};
        want_status(status_of(b, 4, CODEC_V5, CODEC_FROM_SERVER),
                    by_server ? CODEC_OK : CODEC_ERR_MALFORMED, "auth from server", code, 0);
        want_status(status_of(b, 4, CODEC_V5, CODEC_FROM_CLIENT),
                    by_client ? CODEC_OK : CODEC_ERR_MALFORMED, "auth from client", code, 0);
    }
    /* Remaining Length 0 means Success (3.15.2.1): a server's only. */
    static const uint8_t empty[] = {0xf0, 0x00};
    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(empty, 2, CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.type, CODEC_AUTH);
    assert_int_equal(pkt.u.disconnect.reason, 0x00);
    free(copy);
    assert_int_equal(status_of(empty, 2, CODEC_V5, CODEC_FROM_CLIENT), CODEC_ERR_MALFORMED);
}

static void test_auth_bytes_and_round_trip(void **state)
{
    (void)state;
    /* Continue authentication with method "m": f0 06 18 04 15 00 01 6d. */
    static const uint8_t want[] = {0xf0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, 'm'};
    codec_disconnect a;
    memset(&a, 0, sizeof(a));
    a.reason = 0x18;
    a.props.auth_method = CODEC_LIT("m");
    CODEC_SET(&a.props, CODEC_PROP_AUTH_METHOD);
    uint8_t out[64];
    size_t n;
    assert_int_equal(codec_encode_disconnect(CODEC_AUTH, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));

    /* With data and a reason string, from the server. */
    a.props.auth_data = view("\x01\x00\x02", 3);
    CODEC_SET(&a.props, CODEC_PROP_AUTH_DATA);
    a.props.reason_string = CODEC_LIT("step 2");
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    assert_int_equal(codec_encode_disconnect(CODEC_AUTH, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    codec_packet pkt;
    uint8_t *copy;
    assert_int_equal(decode_exact(out, n, CODEC_V5, CODEC_FROM_SERVER, &pkt, &copy), CODEC_OK);
    assert_int_equal(pkt.type, CODEC_AUTH);
    assert_int_equal(pkt.u.disconnect.reason, 0x18);
    assert_int_equal(pkt.u.disconnect.props.present, a.props.present);
    assert_bytes(pkt.u.disconnect.props.auth_method, "m", 1);
    assert_bytes(pkt.u.disconnect.props.auth_data, "\x01\x00\x02", 3);
    assert_bytes(pkt.u.disconnect.props.reason_string, "step 2", 6);
    free(copy);

    /* Success without properties: f0 00. */
    memset(&a, 0, sizeof(a));
    assert_int_equal(codec_encode_disconnect(CODEC_AUTH, &a, CODEC_V5, out, sizeof(out), &n),
                     CODEC_OK);
    static const uint8_t empty[] = {0xf0, 0x00};
    assert_int_equal(n, 2);
    assert_memory_equal(out, empty, 2);
}

/* ---- encoder limits ------------------------------------------------------ */

/* Too small a buffer: CODEC_ERR_BUFFER with the size needed, nothing written
 * at or past cap; exactly that size works. */
typedef codec_status (*encode_fn)(const void *pkt, uint8_t *out, size_t cap, size_t *written);

static codec_status enc_connect(const void *p, uint8_t *out, size_t cap, size_t *written)
{
    return codec_encode_connect(p, out, cap, written);
}

static codec_status enc_connack5(const void *p, uint8_t *out, size_t cap, size_t *written)
{
    return codec_encode_connack(p, CODEC_V5, out, cap, written);
}

static codec_status enc_disconnect5(const void *p, uint8_t *out, size_t cap, size_t *written)
{
    return codec_encode_disconnect(CODEC_DISCONNECT, p, CODEC_V5, out, cap, written);
}

static void check_buffer_sizes(encode_fn fn, const void *pkt, const uint8_t *want, size_t need)
{
    uint8_t out[256];
    size_t n = 12345;
    assert_int_equal(fn(pkt, NULL, 0, &n), CODEC_ERR_BUFFER);
    assert_int_equal(n, need);
    for (size_t cap = 0; cap < need; cap++) {
        memset(out, 0xa5, sizeof(out));
        n = 12345;
        want_status(fn(pkt, out, cap, &n), CODEC_ERR_BUFFER, "cap", (unsigned)cap, (unsigned)need);
        assert_int_equal(n, need);
        for (size_t i = cap; i < sizeof(out); i++)
            assert_int_equal(out[i], 0xa5);
    }
    /* Exactly the size needed, in an exact heap block. */
    uint8_t *exact = malloc(need);
    assert_non_null(exact);
    n = 0;
    assert_int_equal(fn(pkt, exact, need, &n), CODEC_OK);
    assert_int_equal(n, need);
    assert_memory_equal(exact, want, need);
    free(exact);
}

static void test_encoder_buffer_too_small(void **state)
{
    (void)state;
    codec_connect c = connect_v311_full();
    check_buffer_sizes(enc_connect, &c, v311_full, sizeof(v311_full));
    codec_connect c5 = connect_v5_full();
    check_buffer_sizes(enc_connect, &c5, v5_full, sizeof(v5_full));

    codec_connack a;
    memset(&a, 0, sizeof(a));
    a.reason = 0x87;
    a.props.reason_string = CODEC_LIT("no");
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    static const uint8_t refused5[] = {0x20, 0x08, 0x00, 0x87, 0x05, 0x1f, 0x00, 0x02, 'n', 'o'};
    check_buffer_sizes(enc_connack5, &a, refused5, sizeof(refused5));

    codec_disconnect d;
    memset(&d, 0, sizeof(d));
    d.reason = 0x8e;
    static const uint8_t taken[] = {0xe0, 0x01, 0x8e};
    check_buffer_sizes(enc_disconnect5, &d, taken, sizeof(taken));
}

/* 3.1.1 has no properties: any given is a caller error. */
static void test_encoder_props_in_v311(void **state)
{
    (void)state;
    static const codec_string_pair u[] = {{{(const uint8_t *)"k", 1}, {(const uint8_t *)"v", 1}}};
    uint8_t out[128];
    size_t n;

    codec_connect c = connect_v311_full();
    c.props.session_expiry = 10;
    CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);
    c = connect_v311_full();
    c.props.user = u;
    c.props.user_len = 1;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);
    c = connect_v311_full();
    c.will_props.will_delay = 1;
    CODEC_SET(&c.will_props, CODEC_PROP_WILL_DELAY);
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);

    codec_connack a;
    memset(&a, 0, sizeof(a));
    a.props.receive_maximum = 1;
    CODEC_SET(&a.props, CODEC_PROP_RECEIVE_MAXIMUM);
    assert_int_equal(codec_encode_connack(&a, CODEC_V311, out, sizeof(out), &n), CODEC_ERR_ARG);

    codec_disconnect d;
    memset(&d, 0, sizeof(d));
    d.props.user = u;
    d.props.user_len = 1;
    assert_int_equal(
        codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V311, out, sizeof(out), &n),
        CODEC_ERR_ARG);
    /* Nor a reason code. */
    memset(&d, 0, sizeof(d));
    d.reason = 0x04;
    assert_int_equal(
        codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V311, out, sizeof(out), &n),
        CODEC_ERR_ARG);
}

static void test_encoder_connect_arg_checks(void **state)
{
    (void)state;
    uint8_t out[128];
    size_t n;
    codec_connect c = connect_v5_full();
    c.will_qos = 3;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);

    c = connect_v5_full();
    c.will_flag = false; /* will QoS 2 left without the will */
    c.will_props.present = 0;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);

    c = connect_v5_full();
    c.will_flag = false;
    c.will_qos = 0;
    c.will_retain = true;
    c.will_props.present = 0;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);

    c = connect_v5_full();
    c.will_flag = false; /* will properties without the will */
    c.will_qos = 0;
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);

    static const uint8_t levels[] = {0, 3, 6};
    for (size_t i = 0; i < COUNT(levels); i++) {
        c = connect_v311_full();
        c.protocol_version = levels[i];
        assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);
    }

    /* A property a CONNECT may not carry. */
    c = connect_v5_full();
    c.props.topic_alias = 1;
    CODEC_SET(&c.props, CODEC_PROP_TOPIC_ALIAS);
    assert_int_equal(encode_connect(&c, out, sizeof(out), &n), CODEC_ERR_ARG);
}

/* ---- status to reason code ---------------------------------------------- */

static void test_status_reason(void **state)
{
    (void)state;
    static const struct {
        codec_status st;
        uint8_t reason;
    } map[] = {
        {CODEC_OK, 0x00},
        {CODEC_ERR_MALFORMED, 0x81},    /* Malformed Packet */
        {CODEC_ERR_PROTOCOL, 0x82},     /* Protocol Error */
        {CODEC_ERR_BAD_VERSION, 0x84},  /* Unsupported Protocol Version */
        {CODEC_ERR_TOPIC_NAME, 0x90},   /* Topic Name invalid */
        {CODEC_ERR_TOPIC_FILTER, 0x8F}, /* Topic Filter invalid */
        {CODEC_ERR_TOO_LARGE, 0x95},    /* Packet too large */
        /* Not decode errors: "0x81 for anything unmapped". */
        {CODEC_NEED_MORE, 0x81},
        {CODEC_ERR_BUFFER, 0x81},
        {CODEC_ERR_ARG, 0x81},
    };
    for (size_t i = 0; i < COUNT(map); i++) {
        uint8_t got = codec_status_reason(map[i].st);
        if (got != map[i].reason)
            fail_msg("%s: reason 0x%02x, want 0x%02x", codec_status_name(map[i].st), got,
                     map[i].reason);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_v311_minimal_bytes),
        cmocka_unit_test(test_connect_v311_full_bytes),
        cmocka_unit_test(test_connect_v5_session_expiry_bytes),
        cmocka_unit_test(test_connect_v5_full_bytes),
        cmocka_unit_test(test_connect_v5_round_trip_every_field),
        cmocka_unit_test(test_connect_flag_combinations_round_trip),
        cmocka_unit_test(test_password_without_username),
        cmocka_unit_test(test_connect_bad_version),
        cmocka_unit_test(test_connect_reserved_flag),
        cmocka_unit_test(test_connect_will_flags),
        cmocka_unit_test(test_connect_will_topic_invalid),
        cmocka_unit_test(test_connect_invalid_utf8),
        cmocka_unit_test(test_connect_trailing_bytes),
        cmocka_unit_test(test_connect_truncated_everywhere),
        cmocka_unit_test(test_connect_first_and_only_once),
        cmocka_unit_test(test_connect_connack_direction),
        cmocka_unit_test(test_connack_v311_codes),
        cmocka_unit_test(test_connack_v5_codes),
        cmocka_unit_test(test_connack_reserved_flags),
        cmocka_unit_test(test_connack_malformed_lengths),
        cmocka_unit_test(test_connack_v5_props_bytes),
        cmocka_unit_test(test_connack_round_trips),
        cmocka_unit_test(test_disconnect_bytes),
        cmocka_unit_test(test_disconnect_reason_by_sender),
        cmocka_unit_test(test_disconnect_round_trips),
        cmocka_unit_test(test_auth_not_in_v311),
        cmocka_unit_test(test_auth_reason_codes),
        cmocka_unit_test(test_auth_bytes_and_round_trip),
        cmocka_unit_test(test_encoder_buffer_too_small),
        cmocka_unit_test(test_encoder_props_in_v311),
        cmocka_unit_test(test_encoder_connect_arg_checks),
        cmocka_unit_test(test_status_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
