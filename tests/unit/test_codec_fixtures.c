/*
 * Checks the codec against real MQTT traffic: every packet captured from
 * Debian's mosquitto broker and clients in the .hex files of
 * tests/fixtures/wire (see the README.md there) must decode, with the
 * direction and protocol version it was captured in, to exactly the fields
 * that README's table lists. Those values are written out below as a C
 * table, one entry per file, and a test fails when a .hex file has no entry,
 * so a new capture cannot go untested.
 * Each client->server packet whose properties the client wrote in the
 * encoder's order (ascending identifiers, user properties last) is also built
 * from the table's values and must encode to the captured bytes exactly; every
 * packet (in particular the broker's, which does not sort its properties) must
 * survive decode -> encode -> decode unchanged. The directory comes from the
 * FIXTURES_DIR environment variable (tests/fixtures; ctest sets it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define MAX_PROPS  8
#define MAX_SUBS   4
#define MAX_FILE   4096
#define MAX_PACKET 1024

/* ---- the expected values (tests/fixtures/wire/README.md) --------------- */

/* One property as the README lists it. */
typedef struct xprop {
    uint8_t id;      /* 0 ends the list */
    uint32_t num;    /* BYTE, U16, U32, VBI */
    const char *str; /* STRING, BINARY; a user property's name */
    const char *val; /* a user property's value */
} xprop;

/* One SUBSCRIBE entry: the filter and the options byte as on the wire. */
typedef struct xsub {
    const char *filter; /* NULL ends the list */
    uint8_t opts;
} xsub;

typedef struct fixture {
    const char *file;
    codec_sender sender; /* c2s: CODEC_FROM_CLIENT, s2c: CODEC_FROM_SERVER */
    uint8_t version;     /* 4 or 5 (a CONNECT is decoded with version 0) */
    uint8_t type;
    uint8_t first;    /* first byte: type and header flags */
    size_t remaining; /* the fixed header's remaining length */

    /* CONNECT */
    uint8_t connect_flags;
    uint16_t keep_alive;
    const char *client_id;
    xprop will_props[MAX_PROPS];
    const char *will_topic;
    const char *will_payload;
    const char *username;
    const char *password;
    /* CONNACK */
    bool session_present;
    /* PUBLISH */
    bool dup;
    uint8_t qos;
    bool retain;
    const char *topic;
    const char *payload;
    /* PUBLISH (QoS > 0), PUBACK..PUBCOMP, (UN)SUBSCRIBE, (UN)SUBACK */
    uint16_t packet_id;
    /* CONNACK, PUBACK..PUBCOMP, DISCONNECT (0 when absent from the wire) */
    uint8_t reason;
    /* SUBACK, UNSUBACK */
    const char *reasons;
    size_t reasons_len;
    /* properties of the packet (CONNECT: not the will's), in wire order */
    xprop props[MAX_PROPS];
    xsub subs[MAX_SUBS];
    const char *unsubs[MAX_SUBS];
} fixture;

#define C2S CODEC_FROM_CLIENT
#define S2C CODEC_FROM_SERVER
#define NUM(id_, n)                                                                                \
    {                                                                                              \
        .id = (id_), .num = (n)                                                                    \
    }
#define STR(id_, s)                                                                                \
    {                                                                                              \
        .id = (id_), .str = (s)                                                                    \
    }
#define USER(k, v)                                                                                 \
    {                                                                                              \
        .id = CODEC_PROP_USER, .str = (k), .val = (v)                                              \
    }
#define CODES(s) .reasons = (s), .reasons_len = sizeof(s) - 1

/* The four acknowledgements and the header-only packets, which differ only in
 * file, direction, version and type. */
#define ACK(name, dir, ver, t, fb)                                                                 \
    {                                                                                              \
        .file = (name), .sender = (dir), .version = (ver), .type = (t), .first = (fb),             \
        .remaining = 2, .packet_id = 1                                                             \
    }
#define EMPTY(name, dir, ver, t, fb)                                                               \
    {                                                                                              \
        .file = (name), .sender = (dir), .version = (ver), .type = (t), .first = (fb),             \
        .remaining = 0                                                                             \
    }

static const fixture FIXTURES[] = {
    {.file = "v311_connack.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_CONNACK,
     .first = 0x20,
     .remaining = 2},
    {.file = "v311_connack_session_present.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_CONNACK,
     .first = 0x20,
     .remaining = 2,
     .session_present = true},
    {.file = "v311_connect_clean_off.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 32,
     .connect_flags = 0x00,
     .keep_alive = 30,
     .client_id = "fixture-persist-v311"},
    {.file = "v311_connect_plain.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 28,
     .connect_flags = 0x02,
     .keep_alive = 30,
     .client_id = "fixture-pub-v311"},
    {.file = "v311_connect_userpass.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 44,
     .connect_flags = 0xc2,
     .keep_alive = 30,
     .client_id = "fixture-auth-v311",
     .username = "alice",
     .password = "s3cret"},
    {.file = "v311_connect_will.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 53,
     .connect_flags = 0x2e,
     .keep_alive = 30,
     .client_id = "fixture-will-v311",
     .will_topic = "moat/fx/v311/will",
     .will_payload = "bye"},
    EMPTY("v311_disconnect.hex", C2S, 4, CODEC_DISCONNECT, 0xe0),
    EMPTY("v311_disconnect_timeout.hex", C2S, 4, CODEC_DISCONNECT, 0xe0),
    EMPTY("v311_pingreq.hex", C2S, 4, CODEC_PINGREQ, 0xc0),
    EMPTY("v311_pingresp.hex", S2C, 4, CODEC_PINGRESP, 0xd0),
    ACK("v311_puback_c2s.hex", C2S, 4, CODEC_PUBACK, 0x40),
    ACK("v311_puback_s2c.hex", S2C, 4, CODEC_PUBACK, 0x40),
    ACK("v311_pubcomp_c2s.hex", C2S, 4, CODEC_PUBCOMP, 0x70),
    ACK("v311_pubcomp_s2c.hex", S2C, 4, CODEC_PUBCOMP, 0x70),
    {.file = "v311_publish_qos0.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x30,
     .remaining = 25,
     .topic = "moat/fx/v311/plain",
     .payload = "hello"},
    {.file = "v311_publish_qos0_s2c.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x30,
     .remaining = 23,
     .topic = "moat/fx/v311/s2c/q0",
     .payload = "m0"},
    {.file = "v311_publish_qos1.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x32,
     .remaining = 22,
     .qos = 1,
     .topic = "moat/fx/v311/q1",
     .packet_id = 1,
     .payload = "one"},
    {.file = "v311_publish_qos1_retain.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x33,
     .remaining = 29,
     .qos = 1,
     .retain = true,
     .topic = "moat/fx/v311/retained",
     .packet_id = 1,
     .payload = "keep"},
    {.file = "v311_publish_qos1_retain_s2c.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x33,
     .remaining = 29,
     .qos = 1,
     .retain = true,
     .topic = "moat/fx/v311/retained",
     .packet_id = 1,
     .payload = "keep"},
    {.file = "v311_publish_qos1_s2c.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x32,
     .remaining = 25,
     .qos = 1,
     .topic = "moat/fx/v311/s2c/q1",
     .packet_id = 1,
     .payload = "m1"},
    {.file = "v311_publish_qos2.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x34,
     .remaining = 22,
     .qos = 2,
     .topic = "moat/fx/v311/q2",
     .packet_id = 1,
     .payload = "two"},
    {.file = "v311_publish_qos2_s2c.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_PUBLISH,
     .first = 0x34,
     .remaining = 25,
     .qos = 2,
     .topic = "moat/fx/v311/s2c/q2",
     .packet_id = 1,
     .payload = "m2"},
    ACK("v311_pubrec_c2s.hex", C2S, 4, CODEC_PUBREC, 0x50),
    ACK("v311_pubrec_s2c.hex", S2C, 4, CODEC_PUBREC, 0x50),
    ACK("v311_pubrel_c2s.hex", C2S, 4, CODEC_PUBREL, 0x62),
    ACK("v311_pubrel_s2c.hex", S2C, 4, CODEC_PUBREL, 0x62),
    {.file = "v311_suback.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_SUBACK,
     .first = 0x90,
     .remaining = 3,
     .packet_id = 1,
     CODES("\x00")},
    {.file = "v311_suback_multi.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_SUBACK,
     .first = 0x90,
     .remaining = 5,
     .packet_id = 1,
     CODES("\x02\x02\x02")},
    {.file = "v311_subscribe.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_SUBSCRIBE,
     .first = 0x82,
     .remaining = 24,
     .packet_id = 1,
     .subs = {{"moat/fx/v311/s2c/q0", 0x00}}},
    {.file = "v311_subscribe_multi.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_SUBSCRIBE,
     .first = 0x82,
     .remaining = 57,
     .packet_id = 1,
     .subs = {{"moat/fx/v311/a", 0x02}, {"moat/fx/v311/+/b", 0x02}, {"moat/fx/v311/c/#", 0x02}}},
    {.file = "v311_unsuback.hex",
     .sender = S2C,
     .version = 4,
     .type = CODEC_UNSUBACK,
     .first = 0xb0,
     .remaining = 2,
     .packet_id = 2},
    {.file = "v311_unsubscribe.hex",
     .sender = C2S,
     .version = 4,
     .type = CODEC_UNSUBSCRIBE,
     .first = 0xa2,
     .remaining = 19,
     .packet_id = 2,
     .unsubs = {"moat/fx/v311/u1"}},
    {.file = "v5_connack.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_CONNACK,
     .first = 0x20,
     .remaining = 9,
     .props = {NUM(CODEC_PROP_TOPIC_ALIAS_MAXIMUM, 10), NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)}},
    {.file = "v5_connack_bad_auth_method.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_CONNACK,
     .first = 0x20,
     .remaining = 3,
     .reason = 0x8c},
    {.file = "v5_connack_server_keepalive.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_CONNACK,
     .first = 0x20,
     .remaining = 12,
     .props = {NUM(CODEC_PROP_TOPIC_ALIAS_MAXIMUM, 10), NUM(CODEC_PROP_SERVER_KEEP_ALIVE, 60),
               NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)}},
    {.file = "v5_connack_session_present.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_CONNACK,
     .first = 0x20,
     .remaining = 9,
     .session_present = true,
     .props = {NUM(CODEC_PROP_TOPIC_ALIAS_MAXIMUM, 10), NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)}},
    {.file = "v5_connect_auth_method.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 43,
     .connect_flags = 0x02,
     .keep_alive = 30,
     .props = {STR(CODEC_PROP_AUTH_METHOD, "x-none"), NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)},
     .client_id = "fixture-badauth-v5"},
    {.file = "v5_connect_clean_off.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 39,
     .connect_flags = 0x00,
     .keep_alive = 30,
     .props = {NUM(CODEC_PROP_SESSION_EXPIRY, 4294967295u), NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)},
     .client_id = "fixture-persist-v5"},
    {.file = "v5_connect_plain.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 30,
     .connect_flags = 0x02,
     .keep_alive = 30,
     .props = {NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)},
     .client_id = "fixture-pub-v5"},
    {.file = "v5_connect_props.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 49,
     .connect_flags = 0x02,
     .keep_alive = 30,
     .props = {NUM(CODEC_PROP_SESSION_EXPIRY, 3600), NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20),
               NUM(CODEC_PROP_MAXIMUM_PACKET_SIZE, 10000), USER("k", "v")},
     .client_id = "fixture-props-v5"},
    {.file = "v5_connect_userpass.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 46,
     .connect_flags = 0xc2,
     .keep_alive = 30,
     .props = {NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)},
     .client_id = "fixture-auth-v5",
     .username = "alice",
     .password = "s3cret"},
    {.file = "v5_connect_will.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 54,
     .connect_flags = 0x2e,
     .keep_alive = 30,
     .props = {NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)},
     .client_id = "fixture-will-v5",
     .will_topic = "moat/fx/v5/will",
     .will_payload = "bye"},
    {.file = "v5_connect_will_props.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_CONNECT,
     .first = 0x10,
     .remaining = 106,
     .connect_flags = 0x2e,
     .keep_alive = 30,
     .props = {NUM(CODEC_PROP_RECEIVE_MAXIMUM, 20)},
     .client_id = "fixture-will-props-v5",
     .will_props = {NUM(CODEC_PROP_PAYLOAD_FORMAT, 1), NUM(CODEC_PROP_MESSAGE_EXPIRY, 120),
                    STR(CODEC_PROP_CONTENT_TYPE, "text/plain"),
                    STR(CODEC_PROP_RESPONSE_TOPIC, "r/w"), STR(CODEC_PROP_CORRELATION_DATA, "xyz"),
                    NUM(CODEC_PROP_WILL_DELAY, 30), USER("wk", "wv")},
     .will_topic = "moat/fx/v5/will",
     .will_payload = "bye"},
    EMPTY("v5_disconnect.hex", C2S, 5, CODEC_DISCONNECT, 0xe0),
    {.file = "v5_disconnect_props.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_DISCONNECT,
     .first = 0xe0,
     .remaining = 18,
     .reason = 0x00,
     .props = {NUM(CODEC_PROP_SESSION_EXPIRY, 0), USER("bye", "now")}},
    {.file = "v5_disconnect_timeout.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_DISCONNECT,
     .first = 0xe0,
     .remaining = 1,
     .reason = 0x04},
    EMPTY("v5_pingreq.hex", C2S, 5, CODEC_PINGREQ, 0xc0),
    EMPTY("v5_pingresp.hex", S2C, 5, CODEC_PINGRESP, 0xd0),
    ACK("v5_puback_c2s.hex", C2S, 5, CODEC_PUBACK, 0x40),
    ACK("v5_puback_s2c.hex", S2C, 5, CODEC_PUBACK, 0x40),
    {.file = "v5_puback_s2c_no_subscribers.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_PUBACK,
     .first = 0x40,
     .remaining = 3,
     .packet_id = 1,
     .reason = 0x10},
    ACK("v5_pubcomp_c2s.hex", C2S, 5, CODEC_PUBCOMP, 0x70),
    ACK("v5_pubcomp_s2c.hex", S2C, 5, CODEC_PUBCOMP, 0x70),
    {.file = "v5_publish_qos0.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x30,
     .remaining = 24,
     .topic = "moat/fx/v5/plain",
     .payload = "hello"},
    {.file = "v5_publish_qos0_s2c.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x30,
     .remaining = 22,
     .topic = "moat/fx/v5/s2c/q0",
     .payload = "m0"},
    {.file = "v5_publish_qos1.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x32,
     .remaining = 21,
     .qos = 1,
     .topic = "moat/fx/v5/q1",
     .packet_id = 1,
     .payload = "one"},
    {.file = "v5_publish_qos1_props_reversed.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x32,
     .remaining = 69,
     .qos = 1,
     .topic = "moat/fx/v5/rev",
     .packet_id = 1,
     .props = {USER("a", "b"), STR(CODEC_PROP_CORRELATION_DATA, "abc"),
               STR(CODEC_PROP_RESPONSE_TOPIC, "r/t"), STR(CODEC_PROP_CONTENT_TYPE, "text/plain"),
               NUM(CODEC_PROP_MESSAGE_EXPIRY, 60), NUM(CODEC_PROP_PAYLOAD_FORMAT, 1)},
     .payload = "hello props"},
    {.file = "v5_publish_qos1_retain.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x33,
     .remaining = 28,
     .qos = 1,
     .retain = true,
     .topic = "moat/fx/v5/retained",
     .packet_id = 1,
     .payload = "keep"},
    {.file = "v5_publish_qos1_retain_s2c.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x33,
     .remaining = 28,
     .qos = 1,
     .retain = true,
     .topic = "moat/fx/v5/retained",
     .packet_id = 1,
     .payload = "keep"},
    {.file = "v5_publish_qos1_s2c.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x32,
     .remaining = 24,
     .qos = 1,
     .topic = "moat/fx/v5/s2c/q1",
     .packet_id = 1,
     .payload = "m1"},
    {.file = "v5_publish_qos2.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x34,
     .remaining = 21,
     .qos = 2,
     .topic = "moat/fx/v5/q2",
     .packet_id = 1,
     .payload = "two"},
    {.file = "v5_publish_qos2_props.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x34,
     .remaining = 71,
     .qos = 2,
     .topic = "moat/fx/v5/props",
     .packet_id = 1,
     .props = {NUM(CODEC_PROP_PAYLOAD_FORMAT, 1), NUM(CODEC_PROP_MESSAGE_EXPIRY, 60),
               STR(CODEC_PROP_CONTENT_TYPE, "text/plain"), STR(CODEC_PROP_RESPONSE_TOPIC, "r/t"),
               STR(CODEC_PROP_CORRELATION_DATA, "abc"), USER("a", "b")},
     .payload = "hello props"},
    {.file = "v5_publish_qos2_props_s2c.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x34,
     .remaining = 73,
     .qos = 2,
     .topic = "moat/fx/v5/props",
     .packet_id = 1,
     .props = {NUM(CODEC_PROP_SUBSCRIPTION_ID, 7), NUM(CODEC_PROP_PAYLOAD_FORMAT, 1),
               STR(CODEC_PROP_CONTENT_TYPE, "text/plain"), STR(CODEC_PROP_RESPONSE_TOPIC, "r/t"),
               STR(CODEC_PROP_CORRELATION_DATA, "abc"), USER("a", "b"),
               NUM(CODEC_PROP_MESSAGE_EXPIRY, 60)},
     .payload = "hello props"},
    {.file = "v5_publish_qos2_s2c.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x34,
     .remaining = 24,
     .qos = 2,
     .topic = "moat/fx/v5/s2c/q2",
     .packet_id = 1,
     .payload = "m2"},
    {.file = "v5_publish_topic_alias_set.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x30,
     .remaining = 24,
     .topic = "moat/fx/v5/alias",
     .props = {NUM(CODEC_PROP_TOPIC_ALIAS, 1)},
     .payload = "al"},
    {.file = "v5_publish_topic_alias_use.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_PUBLISH,
     .first = 0x30,
     .remaining = 8,
     .topic = "",
     .props = {NUM(CODEC_PROP_TOPIC_ALIAS, 1)},
     .payload = "al"},
    ACK("v5_pubrec_c2s.hex", C2S, 5, CODEC_PUBREC, 0x50),
    ACK("v5_pubrec_s2c.hex", S2C, 5, CODEC_PUBREC, 0x50),
    ACK("v5_pubrel_c2s.hex", C2S, 5, CODEC_PUBREL, 0x62),
    ACK("v5_pubrel_s2c.hex", S2C, 5, CODEC_PUBREL, 0x62),
    {.file = "v5_suback.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_SUBACK,
     .first = 0x90,
     .remaining = 4,
     .packet_id = 1,
     CODES("\x00")},
    {.file = "v5_suback_multi.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_SUBACK,
     .first = 0x90,
     .remaining = 6,
     .packet_id = 1,
     CODES("\x02\x02\x02")},
    {.file = "v5_suback_opts.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_SUBACK,
     .first = 0x90,
     .remaining = 4,
     .packet_id = 1,
     CODES("\x01")},
    {.file = "v5_subscribe.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_SUBSCRIBE,
     .first = 0x82,
     .remaining = 23,
     .packet_id = 1,
     .subs = {{"moat/fx/v5/s2c/q0", 0x00}}},
    {.file = "v5_subscribe_multi.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_SUBSCRIBE,
     .first = 0x82,
     .remaining = 52,
     .packet_id = 1,
     .subs = {{"moat/fx/v5/a", 0x02}, {"moat/fx/v5/+/b", 0x02}, {"moat/fx/v5/c/#", 0x02}}},
    {.file = "v5_subscribe_opts.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_SUBSCRIBE,
     .first = 0x82,
     .remaining = 29,
     .packet_id = 1,
     .props = {USER("sk", "sv")},
     .subs = {{"moat/fx/v5/opt", 0x09}}},
    {.file = "v5_subscribe_subid.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_SUBSCRIBE,
     .first = 0x82,
     .remaining = 24,
     .packet_id = 1,
     .props = {NUM(CODEC_PROP_SUBSCRIPTION_ID, 7)},
     .subs = {{"moat/fx/v5/props", 0x02}}},
    {.file = "v5_unsuback.hex",
     .sender = S2C,
     .version = 5,
     .type = CODEC_UNSUBACK,
     .first = 0xb0,
     .remaining = 4,
     .packet_id = 2,
     CODES("\x00")},
    {.file = "v5_unsubscribe.hex",
     .sender = C2S,
     .version = 5,
     .type = CODEC_UNSUBSCRIBE,
     .first = 0xa2,
     .remaining = 27,
     .packet_id = 2,
     .props = {USER("uk", "uv")},
     .unsubs = {"moat/fx/v5/u1"}},
};

#define NFIXTURES (sizeof(FIXTURES) / sizeof(FIXTURES[0]))

/* The only client packet whose properties the client wrote out of the
 * encoder's order: its -D options were given in descending id order. */
static const char *const NOT_IN_ENCODER_ORDER_C2S[] = {"v5_publish_qos1_props_reversed.hex"};

/* ---- loading the files ------------------------------------------------- */

typedef struct blob {
    uint8_t *ptr;
    size_t len;
} blob;

static const char *wire_dir(void)
{
    static char dir[1024];
    const char *base = getenv("FIXTURES_DIR");
    if (base == NULL || base[0] == '\0')
        fail_msg("FIXTURES_DIR is not set (ctest sets it to tests/fixtures)");
    int n = snprintf(dir, sizeof(dir), "%s/wire", base);
    if (n < 0 || (size_t)n >= sizeof(dir))
        fail_msg("FIXTURES_DIR is too long");
    return dir;
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Read a fixture: lines starting with '#' are comments, the rest is hex with
 * optional whitespace. The bytes go into a heap block of exactly their size,
 * so a sanitizer build catches any read past the packet. */
static blob load_fixture(const char *name)
{
    char path[1200];
    int n = snprintf(path, sizeof(path), "%s/%s", wire_dir(), name);
    if (n < 0 || (size_t)n >= sizeof(path))
        fail_msg("path too long for %s", name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", path);

    static uint8_t bytes[MAX_FILE];
    size_t len = 0;
    int high = -1;
    bool line_start = true, comment = false;
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') {
            line_start = true;
            comment = false;
            continue;
        }
        if (comment)
            continue;
        if (c == ' ' || c == '\t' || c == '\r')
            continue;
        if (c == '#' && line_start) {
            comment = true;
            continue;
        }
        line_start = false;
        int v = hex_digit(c);
        if (v < 0) {
            fclose(f);
            fail_msg("%s: stray character '%c' in hex", name, c);
        }
        if (high < 0) {
            high = v;
            continue;
        }
        if (len == sizeof(bytes)) {
            fclose(f);
            fail_msg("%s: more than %u bytes", name, MAX_FILE);
        }
        bytes[len++] = (uint8_t)(high << 4 | v);
        high = -1;
    }
    fclose(f);
    if (high >= 0)
        fail_msg("%s: odd number of hex digits", name);
    if (len == 0)
        fail_msg("%s: no packet bytes", name);

    blob b = {malloc(len), len};
    assert_non_null(b.ptr);
    memcpy(b.ptr, bytes, len);
    return b;
}

/* ---- comparing --------------------------------------------------------- */

static codec_bytes view(const char *s)
{
    return s ? (codec_bytes){(const uint8_t *)s, strlen(s)} : (codec_bytes){NULL, 0};
}

static bool same_bytes(codec_bytes a, codec_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void expect_bytes(const char *file, const char *what, codec_bytes got, const char *want)
{
    codec_bytes w = view(want);
    if (!same_bytes(got, w))
        fail_msg("%s: %s is \"%.*s\" (%zu bytes), want \"%s\"", file, what, (int)got.len,
                 got.ptr ? (const char *)got.ptr : "", got.len, want ? want : "");
}

static void expect_num(const char *file, const char *what, unsigned long got, unsigned long want)
{
    if (got != want)
        fail_msg("%s: %s is %lu (0x%lx), want %lu (0x%lx)", file, what, got, got, want, want);
}

static codec_prop_type prop_type(unsigned id)
{
    codec_prop_type t;
    if (!codec_prop_type_of(id, &t))
        fail_msg("property 0x%02x unknown to the codec", id);
    return t;
}

static bool is_numeric(codec_prop_type t)
{
    return t == CODEC_PT_BYTE || t == CODEC_PT_U16 || t == CODEC_PT_U32 || t == CODEC_PT_VBI;
}

static codec_prop from_xprop(const xprop *x)
{
    return (codec_prop){.id = x->id, .num = x->num, .str = view(x->str), .value = view(x->val)};
}

static bool same_prop(const codec_prop *a, const codec_prop *b)
{
    if (a->id != b->id)
        return false;
    codec_prop_type t = prop_type(a->id);
    if (is_numeric(t))
        return a->num == b->num;
    if (!same_bytes(a->str, b->str))
        return false;
    return t != CODEC_PT_STRING_PAIR || same_bytes(a->value, b->value);
}

static void describe_prop(const codec_prop *p, char *buf, size_t cap)
{
    if (is_numeric(prop_type(p->id)))
        snprintf(buf, cap, "0x%02x=%lu", p->id, (unsigned long)p->num);
    else
        snprintf(buf, cap, "0x%02x=\"%.*s\"/\"%.*s\"", p->id, (int)p->str.len,
                 p->str.ptr ? (const char *)p->str.ptr : "", (int)p->value.len,
                 p->value.ptr ? (const char *)p->value.ptr : "");
}

/* A single-valued property as the decoder stored it in the struct. */
static codec_prop struct_field(const codec_props *p, unsigned id)
{
    codec_prop v = {.id = (uint8_t)id};
    switch (id) {
    case CODEC_PROP_PAYLOAD_FORMAT:
        v.num = p->payload_format;
        break;
    case CODEC_PROP_MESSAGE_EXPIRY:
        v.num = p->message_expiry;
        break;
    case CODEC_PROP_CONTENT_TYPE:
        v.str = p->content_type;
        break;
    case CODEC_PROP_RESPONSE_TOPIC:
        v.str = p->response_topic;
        break;
    case CODEC_PROP_CORRELATION_DATA:
        v.str = p->correlation_data;
        break;
    case CODEC_PROP_SESSION_EXPIRY:
        v.num = p->session_expiry;
        break;
    case CODEC_PROP_ASSIGNED_CLIENT_ID:
        v.str = p->assigned_client_id;
        break;
    case CODEC_PROP_SERVER_KEEP_ALIVE:
        v.num = p->server_keep_alive;
        break;
    case CODEC_PROP_AUTH_METHOD:
        v.str = p->auth_method;
        break;
    case CODEC_PROP_AUTH_DATA:
        v.str = p->auth_data;
        break;
    case CODEC_PROP_REQUEST_PROBLEM_INFO:
        v.num = p->request_problem_info;
        break;
    case CODEC_PROP_WILL_DELAY:
        v.num = p->will_delay;
        break;
    case CODEC_PROP_REQUEST_RESPONSE_INFO:
        v.num = p->request_response_info;
        break;
    case CODEC_PROP_RESPONSE_INFO:
        v.str = p->response_info;
        break;
    case CODEC_PROP_SERVER_REFERENCE:
        v.str = p->server_reference;
        break;
    case CODEC_PROP_REASON_STRING:
        v.str = p->reason_string;
        break;
    case CODEC_PROP_RECEIVE_MAXIMUM:
        v.num = p->receive_maximum;
        break;
    case CODEC_PROP_TOPIC_ALIAS_MAXIMUM:
        v.num = p->topic_alias_maximum;
        break;
    case CODEC_PROP_TOPIC_ALIAS:
        v.num = p->topic_alias;
        break;
    case CODEC_PROP_MAXIMUM_QOS:
        v.num = p->maximum_qos;
        break;
    case CODEC_PROP_RETAIN_AVAILABLE:
        v.num = p->retain_available;
        break;
    case CODEC_PROP_MAXIMUM_PACKET_SIZE:
        v.num = p->maximum_packet_size;
        break;
    case CODEC_PROP_WILDCARD_SUB_AVAILABLE:
        v.num = p->wildcard_sub_available;
        break;
    case CODEC_PROP_SUB_ID_AVAILABLE:
        v.num = p->sub_id_available;
        break;
    case CODEC_PROP_SHARED_SUB_AVAILABLE:
        v.num = p->shared_sub_available;
        break;
    default:
        fail_msg("no struct field for property 0x%02x", id);
    }
    return v;
}

/* Every property of a decoded block, in wire order. */
static size_t walk_props(const char *file, const char *what, const codec_props *p,
                         codec_prop out[MAX_PROPS])
{
    size_t n = 0, pos = 0;
    codec_prop v;
    while (codec_props_next(p->raw, &pos, &v)) {
        if (n == MAX_PROPS)
            fail_msg("%s: %s has more than %d properties", file, what, MAX_PROPS);
        out[n++] = v;
    }
    if (pos != p->raw.len)
        fail_msg("%s: %s: walk stopped at byte %zu of %zu", file, what, pos, p->raw.len);
    return n;
}

static size_t xprop_count(const xprop *x)
{
    size_t n = 0;
    while (n < MAX_PROPS && x[n].id != 0)
        n++;
    return n;
}

/*
 * A decoded property block against the expected list: the same properties
 * with the same values in raw (in the same order when `ordered`), every
 * single-valued one with its `present` bit and struct field, and the counts
 * of the repeatable ones.
 */
static void check_props(const char *file, const char *what, const codec_props *got,
                        const xprop *want, bool ordered)
{
    size_t nwant = xprop_count(want);
    uint64_t present = 0;
    size_t users = 0, sub_ids = 0;
    uint32_t first_sub_id = 0;
    for (size_t i = 0; i < nwant; i++) {
        if (want[i].id == CODEC_PROP_USER) {
            users++;
        } else if (want[i].id == CODEC_PROP_SUBSCRIPTION_ID) {
            if (sub_ids++ == 0)
                first_sub_id = want[i].num;
        } else {
            present |= (uint64_t)1 << want[i].id;
            codec_prop w = from_xprop(&want[i]);
            codec_prop g = struct_field(got, want[i].id);
            if (!CODEC_HAS(got, want[i].id) || !same_prop(&g, &w)) {
                char a[128], b[128];
                describe_prop(&g, a, sizeof(a));
                describe_prop(&w, b, sizeof(b));
                fail_msg("%s: %s: field %s, want %s (present bit %d)", file, what, a, b,
                         (int)CODEC_HAS(got, want[i].id));
            }
        }
    }
    if (got->present != present)
        fail_msg("%s: %s: present bits 0x%llx, want 0x%llx", file, what,
                 (unsigned long long)got->present, (unsigned long long)present);
    expect_num(file, "user property count", got->user_count, users);
    expect_num(file, "subscription identifier count", got->sub_id_count, sub_ids);
    if (sub_ids)
        expect_num(file, "subscription identifier", got->subscription_id, first_sub_id);

    codec_prop seen[MAX_PROPS];
    size_t n = walk_props(file, what, got, seen);
    if (n != nwant)
        fail_msg("%s: %s: %zu properties on the wire, want %zu", file, what, n, nwant);
    bool used[MAX_PROPS] = {false};
    for (size_t i = 0; i < nwant; i++) {
        codec_prop w = from_xprop(&want[i]);
        bool found = false;
        for (size_t j = ordered ? i : 0; j < (ordered ? i + 1 : n) && !found; j++) {
            if (!used[j] && same_prop(&seen[j], &w)) {
                used[j] = true;
                found = true;
            }
        }
        if (!found) {
            char b[128];
            describe_prop(&w, b, sizeof(b));
            fail_msg("%s: %s: property #%zu %s not found%s", file, what, i, b,
                     ordered ? " at its wire position" : "");
        }
    }
}

static void check_subscriptions(const fixture *fx, const codec_subscribe *s)
{
    size_t want = 0;
    while (want < MAX_SUBS && fx->subs[want].filter)
        want++;
    expect_num(fx->file, "subscription count", s->count, want);
    size_t pos = 0, i = 0;
    codec_subscription e;
    while (codec_subscribe_next(s, fx->version, &pos, &e)) {
        if (i >= want)
            fail_msg("%s: more entries than the %zu counted", fx->file, want);
        uint8_t o = fx->subs[i].opts;
        expect_bytes(fx->file, "filter", e.filter, fx->subs[i].filter);
        expect_num(fx->file, "subscription qos", e.qos, o & 3);
        expect_num(fx->file, "no local", e.no_local, (o >> 2) & 1);
        expect_num(fx->file, "retain as published", e.retain_as_published, (o >> 3) & 1);
        expect_num(fx->file, "retain handling", e.retain_handling, (o >> 4) & 3);
        i++;
    }
    expect_num(fx->file, "subscriptions walked", i, want);
    expect_num(fx->file, "subscribe payload walked", pos, s->payload.len);
}

static void check_unsubscriptions(const fixture *fx, const codec_unsubscribe *u)
{
    size_t want = 0;
    while (want < MAX_SUBS && fx->unsubs[want])
        want++;
    expect_num(fx->file, "filter count", u->count, want);
    size_t pos = 0, i = 0;
    codec_bytes f;
    while (codec_unsubscribe_next(u, &pos, &f)) {
        if (i >= want)
            fail_msg("%s: more filters than the %zu counted", fx->file, want);
        expect_bytes(fx->file, "filter", f, fx->unsubs[i]);
        i++;
    }
    expect_num(fx->file, "filters walked", i, want);
    expect_num(fx->file, "unsubscribe payload walked", pos, u->payload.len);
}

static void check_connect(const fixture *fx, const codec_connect *c, bool ordered)
{
    uint8_t fl = fx->connect_flags;
    expect_num(fx->file, "protocol version", c->protocol_version, fx->version);
    expect_num(fx->file, "clean start", c->clean_start, (fl >> 1) & 1);
    expect_num(fx->file, "will flag", c->will_flag, (fl >> 2) & 1);
    expect_num(fx->file, "will qos", c->will_qos, (fl >> 3) & 3);
    expect_num(fx->file, "will retain", c->will_retain, (fl >> 5) & 1);
    expect_num(fx->file, "password flag", c->password_flag, (fl >> 6) & 1);
    expect_num(fx->file, "username flag", c->username_flag, (fl >> 7) & 1);
    expect_num(fx->file, "keep alive", c->keep_alive, fx->keep_alive);
    expect_bytes(fx->file, "client id", c->client_id, fx->client_id);
    expect_bytes(fx->file, "will topic", c->will_topic, fx->will_topic);
    expect_bytes(fx->file, "will payload", c->will_payload, fx->will_payload);
    expect_bytes(fx->file, "username", c->username, fx->username);
    expect_bytes(fx->file, "password", c->password, fx->password);
    check_props(fx->file, "properties", &c->props, fx->props, ordered);
    check_props(fx->file, "will properties", &c->will_props, fx->will_props, ordered);
}

/* A decoded packet against the fixture's expected values. `ordered`: the
 * properties must be in the listed (wire) order. */
static void check_packet(const fixture *fx, const codec_packet *p, bool ordered)
{
    expect_num(fx->file, "packet type", p->type, fx->type);
    switch (p->type) {
    case CODEC_CONNECT:
        check_connect(fx, &p->u.connect, ordered);
        break;
    case CODEC_CONNACK:
        expect_num(fx->file, "session present", p->u.connack.session_present, fx->session_present);
        expect_num(fx->file, "reason", p->u.connack.reason, fx->reason);
        check_props(fx->file, "properties", &p->u.connack.props, fx->props, ordered);
        break;
    case CODEC_PUBLISH:
        expect_num(fx->file, "dup", p->u.publish.dup, fx->dup);
        expect_num(fx->file, "qos", p->u.publish.qos, fx->qos);
        expect_num(fx->file, "retain", p->u.publish.retain, fx->retain);
        expect_bytes(fx->file, "topic", p->u.publish.topic, fx->topic);
        expect_num(fx->file, "packet id", p->u.publish.packet_id, fx->packet_id);
        expect_bytes(fx->file, "payload", p->u.publish.payload, fx->payload);
        check_props(fx->file, "properties", &p->u.publish.props, fx->props, ordered);
        break;
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        expect_num(fx->file, "packet id", p->u.ack.packet_id, fx->packet_id);
        expect_num(fx->file, "reason", p->u.ack.reason, fx->reason);
        check_props(fx->file, "properties", &p->u.ack.props, fx->props, ordered);
        break;
    case CODEC_SUBSCRIBE:
        expect_num(fx->file, "packet id", p->u.subscribe.packet_id, fx->packet_id);
        check_props(fx->file, "properties", &p->u.subscribe.props, fx->props, ordered);
        check_subscriptions(fx, &p->u.subscribe);
        break;
    case CODEC_SUBACK:
    case CODEC_UNSUBACK: {
        const codec_suback *s = &p->u.suback;
        expect_num(fx->file, "packet id", s->packet_id, fx->packet_id);
        check_props(fx->file, "properties", &s->props, fx->props, ordered);
        codec_bytes want = {(const uint8_t *)fx->reasons, fx->reasons_len};
        if (!same_bytes(s->reasons, want))
            fail_msg("%s: %zu reason codes (first 0x%02x), want %zu (first 0x%02x)", fx->file,
                     s->reasons.len, s->reasons.len ? s->reasons.ptr[0] : 0, want.len,
                     want.len ? want.ptr[0] : 0);
        break;
    }
    case CODEC_UNSUBSCRIBE:
        expect_num(fx->file, "packet id", p->u.unsubscribe.packet_id, fx->packet_id);
        check_props(fx->file, "properties", &p->u.unsubscribe.props, fx->props, ordered);
        check_unsubscriptions(fx, &p->u.unsubscribe);
        break;
    case CODEC_DISCONNECT:
        expect_num(fx->file, "reason", p->u.disconnect.reason, fx->reason);
        check_props(fx->file, "properties", &p->u.disconnect.props, fx->props, ordered);
        break;
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        break;
    default:
        fail_msg("%s: unexpected packet type %u", fx->file, p->type);
    }
}

/* ---- building a packet from the expected values ------------------------ */

/* A packet and the arrays its pointers refer to. */
typedef struct built {
    codec_packet pkt;
    codec_string_pair users[2][MAX_PROPS];
    uint32_t sub_ids[2][MAX_PROPS];
    codec_subscription subs[MAX_SUBS];
    codec_bytes unsubs[MAX_SUBS];
} built;

static void set_field(codec_props *p, const xprop *x)
{
    switch (x->id) {
    case CODEC_PROP_PAYLOAD_FORMAT:
        p->payload_format = (uint8_t)x->num;
        break;
    case CODEC_PROP_MESSAGE_EXPIRY:
        p->message_expiry = x->num;
        break;
    case CODEC_PROP_CONTENT_TYPE:
        p->content_type = view(x->str);
        break;
    case CODEC_PROP_RESPONSE_TOPIC:
        p->response_topic = view(x->str);
        break;
    case CODEC_PROP_CORRELATION_DATA:
        p->correlation_data = view(x->str);
        break;
    case CODEC_PROP_SESSION_EXPIRY:
        p->session_expiry = x->num;
        break;
    case CODEC_PROP_SERVER_KEEP_ALIVE:
        p->server_keep_alive = (uint16_t)x->num;
        break;
    case CODEC_PROP_AUTH_METHOD:
        p->auth_method = view(x->str);
        break;
    case CODEC_PROP_WILL_DELAY:
        p->will_delay = x->num;
        break;
    case CODEC_PROP_RECEIVE_MAXIMUM:
        p->receive_maximum = (uint16_t)x->num;
        break;
    case CODEC_PROP_TOPIC_ALIAS_MAXIMUM:
        p->topic_alias_maximum = (uint16_t)x->num;
        break;
    case CODEC_PROP_TOPIC_ALIAS:
        p->topic_alias = (uint16_t)x->num;
        break;
    case CODEC_PROP_MAXIMUM_PACKET_SIZE:
        p->maximum_packet_size = x->num;
        break;
    default:
        fail_msg("the table uses property 0x%02x: add it to set_field", x->id);
    }
    CODEC_SET(p, x->id);
}

/* A property block for the encoder: single-valued properties as fields,
 * user properties and subscription identifiers as the lists to append. */
static codec_props build_props(const xprop *x, codec_string_pair *users, uint32_t *sub_ids)
{
    codec_props p = {0};
    for (size_t i = 0; i < xprop_count(x); i++) {
        if (x[i].id == CODEC_PROP_USER)
            users[p.user_len++] = (codec_string_pair){view(x[i].str), view(x[i].val)};
        else if (x[i].id == CODEC_PROP_SUBSCRIPTION_ID)
            sub_ids[p.sub_ids_len++] = x[i].num;
        else
            set_field(&p, &x[i]);
    }
    p.user = users;
    p.sub_ids = sub_ids;
    return p;
}

/* Is the list in the order the encoder writes a block built by build_props:
 * single-valued ascending, then user properties, then subscription ids? */
static bool in_encoder_order(const xprop *x)
{
    unsigned last = 0;
    int stage = 0; /* 0 single-valued, 1 user properties, 2 subscription ids */
    for (size_t i = 0; i < xprop_count(x); i++) {
        int s = x[i].id == CODEC_PROP_USER ? 1 : x[i].id == CODEC_PROP_SUBSCRIPTION_ID ? 2 : 0;
        if (s < stage || (s == 0 && x[i].id <= last))
            return false;
        stage = s;
        if (s == 0)
            last = x[i].id;
    }
    return true;
}

static void build_packet(const fixture *fx, built *b)
{
    memset(b, 0, sizeof(*b));
    codec_packet *p = &b->pkt;
    p->type = fx->type;
    codec_props props = build_props(fx->props, b->users[0], b->sub_ids[0]);
    switch (fx->type) {
    case CODEC_CONNECT: {
        codec_connect *c = &p->u.connect;
        uint8_t fl = fx->connect_flags;
        c->protocol_version = fx->version;
        c->clean_start = fl & 0x02;
        c->will_flag = fl & 0x04;
        c->will_qos = (fl >> 3) & 3;
        c->will_retain = fl & 0x20;
        c->password_flag = fl & 0x40;
        c->username_flag = fl & 0x80;
        c->keep_alive = fx->keep_alive;
        c->props = props;
        c->client_id = view(fx->client_id);
        c->will_props = build_props(fx->will_props, b->users[1], b->sub_ids[1]);
        c->will_topic = view(fx->will_topic);
        c->will_payload = view(fx->will_payload);
        c->username = view(fx->username);
        c->password = view(fx->password);
        break;
    }
    case CODEC_CONNACK:
        p->u.connack = (codec_connack){fx->session_present, fx->reason, props};
        break;
    case CODEC_PUBLISH:
        p->u.publish = (codec_publish){.dup = fx->dup,
                                       .qos = fx->qos,
                                       .retain = fx->retain,
                                       .topic = view(fx->topic),
                                       .packet_id = fx->packet_id,
                                       .props = props,
                                       .payload = view(fx->payload)};
        break;
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        p->u.ack = (codec_ack){fx->packet_id, fx->reason, props};
        break;
    case CODEC_SUBSCRIBE: {
        size_t n = 0;
        for (; n < MAX_SUBS && fx->subs[n].filter; n++) {
            uint8_t o = fx->subs[n].opts;
            b->subs[n] = (codec_subscription){.filter = view(fx->subs[n].filter),
                                              .qos = o & 3,
                                              .no_local = o & 0x04,
                                              .retain_as_published = o & 0x08,
                                              .retain_handling = (o >> 4) & 3};
        }
        p->u.subscribe = (codec_subscribe){
            .packet_id = fx->packet_id, .props = props, .count = n, .list = b->subs};
        break;
    }
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        p->u.suback = (codec_suback){fx->packet_id, props,
                                     (codec_bytes){(const uint8_t *)fx->reasons, fx->reasons_len}};
        break;
    case CODEC_UNSUBSCRIBE: {
        size_t n = 0;
        for (; n < MAX_SUBS && fx->unsubs[n]; n++)
            b->unsubs[n] = view(fx->unsubs[n]);
        p->u.unsubscribe = (codec_unsubscribe){
            .packet_id = fx->packet_id, .props = props, .count = n, .list = b->unsubs};
        break;
    }
    case CODEC_DISCONNECT:
        p->u.disconnect = (codec_disconnect){fx->reason, props};
        break;
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        break;
    default:
        fail_msg("%s: cannot build packet type %u", fx->file, fx->type);
    }
}

/* ---- the tests --------------------------------------------------------- */

static codec_decode_opts opts_for(const fixture *fx)
{
    return (codec_decode_opts){.version = fx->type == CODEC_CONNECT ? 0 : fx->version,
                               .sender = fx->sender};
}

static void decode_ok(const fixture *fx, const uint8_t *buf, size_t len, codec_packet *out)
{
    codec_decode_opts o = opts_for(fx);
    size_t used = 0;
    codec_status st = codec_decode(buf, len, &o, out, &used);
    if (st != CODEC_OK)
        fail_msg("%s: decode (version %u, %s) gave \"%s\"", fx->file, o.version,
                 fx->sender == C2S ? "from client" : "from server", codec_status_name(st));
    expect_num(fx->file, "bytes consumed", used, len);
}

/* The packet decodes to the README's values, fields and property order. */
static void test_decode(void **state)
{
    const fixture *fx = *state;
    blob b = load_fixture(fx->file);

    codec_frame fr;
    assert_int_equal(codec_frame_parse(b.ptr, b.len, 0, &fr), CODEC_OK);
    expect_num(fx->file, "first byte", b.ptr[0], fx->first);
    expect_num(fx->file, "frame type", fr.type, fx->first >> 4);
    expect_num(fx->file, "header flags", fr.flags, fx->first & 0x0f);
    expect_num(fx->file, "remaining length", fr.remaining_len, fx->remaining);
    expect_num(fx->file, "total length", fr.total_len, b.len);

    codec_packet pkt;
    decode_ok(fx, b.ptr, b.len, &pkt);
    check_packet(fx, &pkt, true);
    free(b.ptr);
}

/* A client packet built from the README's values encodes to the captured
 * bytes exactly. */
static void test_encode_exact(void **state)
{
    const fixture *fx = *state;
    blob b = load_fixture(fx->file);
    built bp;
    build_packet(fx, &bp);

    size_t need = 0;
    assert_int_equal(codec_encode(&bp.pkt, fx->version, NULL, 0, &need), CODEC_ERR_BUFFER);
    expect_num(fx->file, "size needed", need, b.len);
    uint8_t *out = malloc(b.len);
    assert_non_null(out);
    size_t n = 0;
    codec_status st = codec_encode(&bp.pkt, fx->version, out, b.len, &n);
    if (st != CODEC_OK)
        fail_msg("%s: encode gave \"%s\"", fx->file, codec_status_name(st));
    expect_num(fx->file, "bytes written", n, b.len);
    for (size_t i = 0; i < b.len; i++)
        if (out[i] != b.ptr[i])
            fail_msg("%s: encoded byte %zu is 0x%02x, captured 0x%02x", fx->file, i, out[i],
                     b.ptr[i]);
    free(out);
    free(b.ptr);
}

static void same_props(const char *file, const char *what, const codec_props *a,
                       const codec_props *b)
{
    expect_num(file, "present bits", (unsigned long)a->present, (unsigned long)b->present);
    for (unsigned id = 1; id <= CODEC_PROP_MAX_ID; id++) {
        if (!CODEC_HAS(a, id))
            continue;
        codec_prop x = struct_field(a, id), y = struct_field(b, id);
        if (!same_prop(&x, &y))
            fail_msg("%s: %s: property 0x%02x differs after re-encoding", file, what, id);
    }
    expect_num(file, "user property count", a->user_count, b->user_count);
    expect_num(file, "subscription identifier count", a->sub_id_count, b->sub_id_count);
    expect_num(file, "subscription identifier", a->subscription_id, b->subscription_id);
    codec_prop pa[MAX_PROPS], pb[MAX_PROPS];
    size_t na = walk_props(file, what, a, pa), nb = walk_props(file, what, b, pb);
    expect_num(file, "property count", na, nb);
    bool used[MAX_PROPS] = {false};
    for (size_t i = 0; i < na; i++) {
        size_t j = 0;
        while (j < nb && (used[j] || !same_prop(&pa[i], &pb[j])))
            j++;
        if (j == nb)
            fail_msg("%s: %s: property 0x%02x lost in re-encoding", file, what, pa[i].id);
        used[j] = true;
    }
}

static void same_packet(const fixture *fx, const codec_packet *a, const codec_packet *b)
{
    const char *f = fx->file;
    expect_num(f, "type", a->type, b->type);
    switch (a->type) {
    case CODEC_CONNECT: {
        const codec_connect *x = &a->u.connect, *y = &b->u.connect;
        expect_num(f, "version", x->protocol_version, y->protocol_version);
        expect_num(f, "clean start", x->clean_start, y->clean_start);
        expect_num(f, "keep alive", x->keep_alive, y->keep_alive);
        expect_num(f, "will flag", x->will_flag, y->will_flag);
        expect_num(f, "will qos", x->will_qos, y->will_qos);
        expect_num(f, "will retain", x->will_retain, y->will_retain);
        expect_num(f, "username flag", x->username_flag, y->username_flag);
        expect_num(f, "password flag", x->password_flag, y->password_flag);
        assert_true(same_bytes(x->client_id, y->client_id));
        assert_true(same_bytes(x->will_topic, y->will_topic));
        assert_true(same_bytes(x->will_payload, y->will_payload));
        assert_true(same_bytes(x->username, y->username));
        assert_true(same_bytes(x->password, y->password));
        same_props(f, "properties", &x->props, &y->props);
        same_props(f, "will properties", &x->will_props, &y->will_props);
        break;
    }
    case CODEC_CONNACK:
        expect_num(f, "session present", a->u.connack.session_present,
                   b->u.connack.session_present);
        expect_num(f, "reason", a->u.connack.reason, b->u.connack.reason);
        same_props(f, "properties", &a->u.connack.props, &b->u.connack.props);
        break;
    case CODEC_PUBLISH: {
        const codec_publish *x = &a->u.publish, *y = &b->u.publish;
        expect_num(f, "dup", x->dup, y->dup);
        expect_num(f, "qos", x->qos, y->qos);
        expect_num(f, "retain", x->retain, y->retain);
        expect_num(f, "packet id", x->packet_id, y->packet_id);
        assert_true(same_bytes(x->topic, y->topic));
        assert_true(same_bytes(x->payload, y->payload));
        same_props(f, "properties", &x->props, &y->props);
        break;
    }
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        expect_num(f, "packet id", a->u.ack.packet_id, b->u.ack.packet_id);
        expect_num(f, "reason", a->u.ack.reason, b->u.ack.reason);
        same_props(f, "properties", &a->u.ack.props, &b->u.ack.props);
        break;
    case CODEC_SUBSCRIBE:
        expect_num(f, "packet id", a->u.subscribe.packet_id, b->u.subscribe.packet_id);
        expect_num(f, "count", a->u.subscribe.count, b->u.subscribe.count);
        assert_true(same_bytes(a->u.subscribe.payload, b->u.subscribe.payload));
        same_props(f, "properties", &a->u.subscribe.props, &b->u.subscribe.props);
        break;
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        expect_num(f, "packet id", a->u.suback.packet_id, b->u.suback.packet_id);
        assert_true(same_bytes(a->u.suback.reasons, b->u.suback.reasons));
        same_props(f, "properties", &a->u.suback.props, &b->u.suback.props);
        break;
    case CODEC_UNSUBSCRIBE:
        expect_num(f, "packet id", a->u.unsubscribe.packet_id, b->u.unsubscribe.packet_id);
        expect_num(f, "count", a->u.unsubscribe.count, b->u.unsubscribe.count);
        assert_true(same_bytes(a->u.unsubscribe.payload, b->u.unsubscribe.payload));
        same_props(f, "properties", &a->u.unsubscribe.props, &b->u.unsubscribe.props);
        break;
    case CODEC_DISCONNECT:
        expect_num(f, "reason", a->u.disconnect.reason, b->u.disconnect.reason);
        same_props(f, "properties", &a->u.disconnect.props, &b->u.disconnect.props);
        break;
    default:
        break;
    }
}

/*
 * decode -> encode -> decode gives the same packet; property order may change
 * (the encoder sorts single-valued properties), nothing else may. When the
 * capture's properties already are in the encoder's order, the re-encoding
 * must also be byte-exact.
 */
static void test_roundtrip(void **state)
{
    const fixture *fx = *state;
    blob b = load_fixture(fx->file);
    codec_packet first, second;
    decode_ok(fx, b.ptr, b.len, &first);

    /* The decoder gives SUBSCRIBE and UNSUBSCRIBE entries as a payload to
     * walk, the encoder takes a list: fill it as a re-encoding caller would. */
    codec_subscription subs[MAX_SUBS];
    codec_bytes filters[MAX_SUBS];
    size_t pos = 0, count = 0;
    if (first.type == CODEC_SUBSCRIBE) {
        while (count < MAX_SUBS &&
               codec_subscribe_next(&first.u.subscribe, fx->version, &pos, &subs[count]))
            count++;
        expect_num(fx->file, "entries walked", count, first.u.subscribe.count);
        first.u.subscribe.list = subs;
    } else if (first.type == CODEC_UNSUBSCRIBE) {
        while (count < MAX_SUBS &&
               codec_unsubscribe_next(&first.u.unsubscribe, &pos, &filters[count]))
            count++;
        expect_num(fx->file, "filters walked", count, first.u.unsubscribe.count);
        first.u.unsubscribe.list = filters;
    }

    uint8_t out[MAX_PACKET];
    size_t n = 0;
    codec_status st = codec_encode(&first, fx->version, out, sizeof(out), &n);
    if (st != CODEC_OK)
        fail_msg("%s: re-encoding gave \"%s\"", fx->file, codec_status_name(st));
    expect_num(fx->file, "re-encoded length", n, b.len);
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, out, n);
    decode_ok(fx, copy, n, &second);

    same_packet(fx, &first, &second);
    check_packet(fx, &second, false);
    bool ordered = in_encoder_order(fx->props) && in_encoder_order(fx->will_props);
    if (ordered && memcmp(copy, b.ptr, n) != 0)
        fail_msg("%s: re-encoding is not byte-exact although the properties are in order",
                 fx->file);
    free(copy);
    free(b.ptr);
}

/* Every .hex file in the directory has a table entry, and every entry a file. */
static void test_every_file_has_an_entry(void **state)
{
    (void)state;
    const char *dir = wire_dir();
    DIR *d = opendir(dir);
    if (d == NULL)
        fail_msg("cannot open %s", dir);
    bool listed[NFIXTURES] = {false};
    char missing[2048] = "";
    size_t files = 0, nmissing = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".hex") != 0)
            continue;
        files++;
        size_t i = 0;
        while (i < NFIXTURES && strcmp(FIXTURES[i].file, e->d_name) != 0)
            i++;
        if (i < NFIXTURES) {
            listed[i] = true;
            continue;
        }
        size_t used = strlen(missing);
        snprintf(missing + used, sizeof(missing) - used, " %s", e->d_name);
        nmissing++;
    }
    closedir(d);
    if (nmissing)
        fail_msg("%zu fixture(s) in %s have no entry in the table:%s", nmissing, dir, missing);
    for (size_t i = 0; i < NFIXTURES; i++)
        if (!listed[i])
            fail_msg("table entry %s has no file in %s", FIXTURES[i].file, dir);
    expect_num("wire/", "number of .hex files", files, NFIXTURES);
}

/* The byte-exact encoder check skips only the client packets listed in
 * NOT_IN_ENCODER_ORDER_C2S, and those really are out of order. */
static void test_exact_encoding_covers_the_clients(void **state)
{
    (void)state;
    size_t skipped = 0;
    for (size_t i = 0; i < NFIXTURES; i++) {
        const fixture *fx = &FIXTURES[i];
        bool listed = false;
        for (size_t j = 0; j < sizeof(NOT_IN_ENCODER_ORDER_C2S) / sizeof(char *); j++)
            listed = listed || strcmp(fx->file, NOT_IN_ENCODER_ORDER_C2S[j]) == 0;
        bool ordered = in_encoder_order(fx->props) && in_encoder_order(fx->will_props);
        if (fx->sender == C2S && ordered == listed)
            fail_msg("%s: %s", fx->file,
                     listed ? "listed as out of order but is in order"
                            : "out of the encoder's order but not listed");
        skipped += listed;
    }
    expect_num("table", "client packets skipped", skipped,
               sizeof(NOT_IN_ENCODER_ORDER_C2S) / sizeof(char *));
}

static bool exact_encoding_applies(const fixture *fx)
{
    return fx->sender == C2S && in_encoder_order(fx->props) && in_encoder_order(fx->will_props);
}

int main(void)
{
    static struct CMUnitTest tests[2 + 3 * NFIXTURES];
    static char names[3 * NFIXTURES][96];
    size_t n = 0, k = 0;
    tests[n++] = (struct CMUnitTest){"every_file_has_an_entry", test_every_file_has_an_entry, NULL,
                                     NULL, NULL};
    tests[n++] = (struct CMUnitTest){"exact_encoding_covers_the_clients",
                                     test_exact_encoding_covers_the_clients, NULL, NULL, NULL};
    for (size_t i = 0; i < NFIXTURES; i++) {
        void *fx = (void *)&FIXTURES[i];
        snprintf(names[k], sizeof(names[k]), "decode %s", FIXTURES[i].file);
        tests[n++] = (struct CMUnitTest){names[k++], test_decode, NULL, NULL, fx};
        snprintf(names[k], sizeof(names[k]), "roundtrip %s", FIXTURES[i].file);
        tests[n++] = (struct CMUnitTest){names[k++], test_roundtrip, NULL, NULL, fx};
        if (exact_encoding_applies(&FIXTURES[i])) {
            snprintf(names[k], sizeof(names[k]), "encode exact %s", FIXTURES[i].file);
            tests[n++] = (struct CMUnitTest){names[k++], test_encode_exact, NULL, NULL, fx};
        }
    }
    return _cmocka_run_group_tests("codec_fixtures", tests, n, NULL, NULL);
}
