/*
 * Unit tests for MQTT 5 properties (src/codec/props.c): all 27 properties of
 * section 2.2.2.2. Each one's type and the packets it may appear in are
 * checked against a table written here from the spec (not copied from
 * props.c); each decodes to the right value in every packet that allows it
 * and is a Malformed Packet in every packet that does not; unknown
 * identifiers, truncated values and invalid UTF-8 are malformed
 * ([MQTT-1.5.4-1], [MQTT-1.5.4-2], [MQTT-1.5.7-1]); a single-valued property
 * given twice and a value outside its range are protocol errors, as are the
 * rules on Subscription Identifiers ([MQTT-3.3.4-6]), Session Expiry in a
 * server's DISCONNECT ([MQTT-3.14.2-2]), Authentication Data without a method
 * and wildcards in a Response Topic ([MQTT-3.3.2-14]). codec_props_next is
 * walked over whole blocks, and every packet type that carries properties is
 * encoded and decoded again, with user[] and sub_ids[] appended and raw copied.
 * Encoding a property a packet may not carry is CODEC_ERR_ARG.
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

/* ---- the spec's table 2-4, written out independently ------------------ */

enum {
    C_CONNECT = CODEC_CTX_CONNECT,
    C_CONNACK = CODEC_CTX_CONNACK,
    C_PUBLISH = CODEC_CTX_PUBLISH,
    C_PUBACK = CODEC_CTX_PUBACK,
    C_PUBREC = CODEC_CTX_PUBREC,
    C_PUBREL = CODEC_CTX_PUBREL,
    C_PUBCOMP = CODEC_CTX_PUBCOMP,
    C_SUBSCRIBE = CODEC_CTX_SUBSCRIBE,
    C_SUBACK = CODEC_CTX_SUBACK,
    C_UNSUBSCRIBE = CODEC_CTX_UNSUBSCRIBE,
    C_UNSUBACK = CODEC_CTX_UNSUBACK,
    C_DISCONNECT = CODEC_CTX_DISCONNECT,
    C_AUTH = CODEC_CTX_AUTH,
    C_WILL = CODEC_CTX_WILL,
};

/* One row of table 2-4: identifier, type, and the packets ("Will Properties"
 * as C_WILL) it is used in; `where` ends at the first 0. */
static const struct spec_row {
    uint8_t id;
    codec_prop_type type;
    const char *name;
    int where[15];
} spec[] = {
    {0x01, CODEC_PT_BYTE, "Payload Format Indicator", {C_PUBLISH, C_WILL}},
    {0x02, CODEC_PT_U32, "Message Expiry Interval", {C_PUBLISH, C_WILL}},
    {0x03, CODEC_PT_STRING, "Content Type", {C_PUBLISH, C_WILL}},
    {0x08, CODEC_PT_STRING, "Response Topic", {C_PUBLISH, C_WILL}},
    {0x09, CODEC_PT_BINARY, "Correlation Data", {C_PUBLISH, C_WILL}},
    {0x0B, CODEC_PT_VBI, "Subscription Identifier", {C_PUBLISH, C_SUBSCRIBE}},
    {0x11, CODEC_PT_U32, "Session Expiry Interval", {C_CONNECT, C_CONNACK, C_DISCONNECT}},
    {0x12, CODEC_PT_STRING, "Assigned Client Identifier", {C_CONNACK}},
    {0x13, CODEC_PT_U16, "Server Keep Alive", {C_CONNACK}},
    {0x15, CODEC_PT_STRING, "Authentication Method", {C_CONNECT, C_CONNACK, C_AUTH}},
    {0x16, CODEC_PT_BINARY, "Authentication Data", {C_CONNECT, C_CONNACK, C_AUTH}},
    {0x17, CODEC_PT_BYTE, "Request Problem Information", {C_CONNECT}},
    {0x18, CODEC_PT_U32, "Will Delay Interval", {C_WILL}},
    {0x19, CODEC_PT_BYTE, "Request Response Information", {C_CONNECT}},
    {0x1A, CODEC_PT_STRING, "Response Information", {C_CONNACK}},
    {0x1C, CODEC_PT_STRING, "Server Reference", {C_CONNACK, C_DISCONNECT}},
    {0x1F,
     CODEC_PT_STRING,
     "Reason String",
     {C_CONNACK, C_PUBACK, C_PUBREC, C_PUBREL, C_PUBCOMP, C_SUBACK, C_UNSUBACK, C_DISCONNECT,
      C_AUTH}},
    {0x21, CODEC_PT_U16, "Receive Maximum", {C_CONNECT, C_CONNACK}},
    {0x22, CODEC_PT_U16, "Topic Alias Maximum", {C_CONNECT, C_CONNACK}},
    {0x23, CODEC_PT_U16, "Topic Alias", {C_PUBLISH}},
    {0x24, CODEC_PT_BYTE, "Maximum QoS", {C_CONNACK}},
    {0x25, CODEC_PT_BYTE, "Retain Available", {C_CONNACK}},
    {0x26,
     CODEC_PT_STRING_PAIR,
     "User Property",
     {C_CONNECT, C_CONNACK, C_PUBLISH, C_WILL, C_PUBACK, C_PUBREC, C_PUBREL, C_PUBCOMP, C_SUBSCRIBE,
      C_SUBACK, C_UNSUBSCRIBE, C_UNSUBACK, C_DISCONNECT, C_AUTH}},
    {0x27, CODEC_PT_U32, "Maximum Packet Size", {C_CONNECT, C_CONNACK}},
    {0x28, CODEC_PT_BYTE, "Wildcard Subscription Available", {C_CONNACK}},
    {0x29, CODEC_PT_BYTE, "Subscription Identifier Available", {C_CONNACK}},
    {0x2A, CODEC_PT_BYTE, "Shared Subscription Available", {C_CONNACK}},
};

/* Every property context. */
static const codec_prop_context all_ctx[] = {
    CODEC_CTX_CONNECT, CODEC_CTX_CONNACK,     CODEC_CTX_PUBLISH,  CODEC_CTX_PUBACK,
    CODEC_CTX_PUBREC,  CODEC_CTX_PUBREL,      CODEC_CTX_PUBCOMP,  CODEC_CTX_SUBSCRIBE,
    CODEC_CTX_SUBACK,  CODEC_CTX_UNSUBSCRIBE, CODEC_CTX_UNSUBACK, CODEC_CTX_DISCONNECT,
    CODEC_CTX_AUTH,    CODEC_CTX_WILL,
};

static const struct spec_row *spec_find(unsigned id)
{
    for (size_t i = 0; i < COUNT(spec); i++)
        if (spec[i].id == id)
            return &spec[i];
    return NULL;
}

static bool spec_allows(unsigned id, int ctx)
{
    const struct spec_row *row = spec_find(id);
    if (!row)
        return false;
    for (size_t i = 0; i < COUNT(row->where) && row->where[i] != 0; i++)
        if (row->where[i] == ctx)
            return true;
    return false;
}

/* The first context that allows id. */
static codec_prop_context spec_home(unsigned id)
{
    const struct spec_row *row = spec_find(id);
    assert_non_null(row);
    return (codec_prop_context)row->where[0];
}

static const char *ctx_name(int ctx)
{
    return ctx == C_WILL ? "WILL" : codec_packet_name((unsigned)ctx);
}

/* Who sends a block in this context in the tests: PUBLISH from the server
 * (which may carry Subscription Identifiers), DISCONNECT from the client
 * (which may carry Session Expiry). */
static codec_sender natural_sender(int ctx)
{
    switch (ctx) {
    case C_CONNACK:
    case C_SUBACK:
    case C_UNSUBACK:
    case C_PUBLISH:
        return CODEC_FROM_SERVER;
    default:
        return CODEC_FROM_CLIENT;
    }
}

/* ---- one sample value per property, encoded by hand --------------------- */

/* Values are never 0, so that a value that is not stored shows. */

static const struct sample {
    uint8_t id;
    uint8_t enc[16];
    size_t len;
    uint32_t num;    /* BYTE, U16, U32, VBI */
    const char *str; /* STRING, BINARY, pair name */
    size_t str_len;
    const char *val; /* pair value */
    size_t val_len;
} samples[] = {
    {0x01, {0x01, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x02, {0x02, 0x00, 0x01, 0x51, 0x80}, 5, 86400, NULL, 0, NULL, 0},
    {0x03, {0x03, 0x00, 0x04, 'j', 's', 'o', 'n'}, 7, 0, "json", 4, NULL, 0},
    {0x08, {0x08, 0x00, 0x05, 'r', 'e', 'p', '/', '1'}, 8, 0, "rep/1", 5, NULL, 0},
    {0x09, {0x09, 0x00, 0x03, 0x00, 0xff, 0x10}, 6, 0, "\x00\xff\x10", 3, NULL, 0},
    {0x0B, {0x0b, 0xc0, 0x9a, 0x0c}, 4, 200000, NULL, 0, NULL, 0},
    {0x11, {0x11, 0xff, 0xff, 0xff, 0xff}, 5, 0xffffffffu, NULL, 0, NULL, 0},
    {0x12, {0x12, 0x00, 0x03, 'a', 'b', 'c'}, 6, 0, "abc", 3, NULL, 0},
    {0x13, {0x13, 0x01, 0x2c}, 3, 300, NULL, 0, NULL, 0},
    {0x15, {0x15, 0x00, 0x05, 'P', 'L', 'A', 'I', 'N'}, 8, 0, "PLAIN", 5, NULL, 0},
    {0x16, {0x16, 0x00, 0x02, 0x00, 0x80}, 5, 0, "\x00\x80", 2, NULL, 0},
    {0x17, {0x17, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x18, {0x18, 0x00, 0x00, 0x00, 0x3c}, 5, 60, NULL, 0, NULL, 0},
    {0x19, {0x19, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x1A, {0x1a, 0x00, 0x04, 'r', 'e', 's', 'p'}, 7, 0, "resp", 4, NULL, 0},
    {0x1C,
     {0x1c, 0x00, 0x09, 'h', 'o', 's', 't', ':', '1', '8', '8', '3'},
     12,
     0,
     "host:1883",
     9,
     NULL,
     0},
    {0x1F, {0x1f, 0x00, 0x02, 'o', 'k'}, 5, 0, "ok", 2, NULL, 0},
    {0x21, {0x21, 0x00, 0x0a}, 3, 10, NULL, 0, NULL, 0},
    {0x22, {0x22, 0xff, 0xfe}, 3, 0xfffe, NULL, 0, NULL, 0},
    {0x23, {0x23, 0x00, 0x07}, 3, 7, NULL, 0, NULL, 0},
    {0x24, {0x24, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x25, {0x25, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x26, {0x26, 0x00, 0x01, 'k', 0x00, 0x02, 'v', '1'}, 8, 0, "k", 1, "v1", 2},
    {0x27, {0x27, 0x00, 0x10, 0x00, 0x00}, 5, 1048576, NULL, 0, NULL, 0},
    {0x28, {0x28, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x29, {0x29, 0x01}, 2, 1, NULL, 0, NULL, 0},
    {0x2A, {0x2a, 0x01}, 2, 1, NULL, 0, NULL, 0},
};

/* The Authentication Method "m", needed before Authentication Data. */
static const uint8_t method_m[] = {0x15, 0x00, 0x01, 'm'};

static bool repeatable(unsigned id)
{
    return id == CODEC_PROP_USER || id == CODEC_PROP_SUBSCRIPTION_ID;
}

static bool is_text(codec_prop_type t)
{
    return t == CODEC_PT_STRING || t == CODEC_PT_BINARY || t == CODEC_PT_STRING_PAIR;
}

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

/* The numeric field of a codec_props for a property id. */
static uint32_t num_of(const codec_props *p, unsigned id)
{
    switch (id) {
    case 0x01:
        return p->payload_format;
    case 0x02:
        return p->message_expiry;
    case 0x0B:
        return p->subscription_id;
    case 0x11:
        return p->session_expiry;
    case 0x13:
        return p->server_keep_alive;
    case 0x17:
        return p->request_problem_info;
    case 0x18:
        return p->will_delay;
    case 0x19:
        return p->request_response_info;
    case 0x21:
        return p->receive_maximum;
    case 0x22:
        return p->topic_alias_maximum;
    case 0x23:
        return p->topic_alias;
    case 0x24:
        return p->maximum_qos;
    case 0x25:
        return p->retain_available;
    case 0x27:
        return p->maximum_packet_size;
    case 0x28:
        return p->wildcard_sub_available;
    case 0x29:
        return p->sub_id_available;
    case 0x2A:
        return p->shared_sub_available;
    default:
        fail_msg("no numeric field for 0x%02x", id);
    }
    return 0;
}

/* The string/binary field of a codec_props for a property id. */
static codec_bytes str_of(const codec_props *p, unsigned id)
{
    switch (id) {
    case 0x03:
        return p->content_type;
    case 0x08:
        return p->response_topic;
    case 0x09:
        return p->correlation_data;
    case 0x12:
        return p->assigned_client_id;
    case 0x15:
        return p->auth_method;
    case 0x16:
        return p->auth_data;
    case 0x1A:
        return p->response_info;
    case 0x1C:
        return p->server_reference;
    case 0x1F:
        return p->reason_string;
    default:
        fail_msg("no string field for 0x%02x", id);
    }
    return view(NULL, 0);
}

/* Put a sample's value in its field and set its present bit. */
static void set_sample(codec_props *p, const struct sample *s)
{
    codec_bytes b = view(s->str, s->str_len);
    switch (s->id) {
    case 0x01:
        p->payload_format = (uint8_t)s->num;
        break;
    case 0x02:
        p->message_expiry = s->num;
        break;
    case 0x03:
        p->content_type = b;
        break;
    case 0x08:
        p->response_topic = b;
        break;
    case 0x09:
        p->correlation_data = b;
        break;
    case 0x11:
        p->session_expiry = s->num;
        break;
    case 0x12:
        p->assigned_client_id = b;
        break;
    case 0x13:
        p->server_keep_alive = (uint16_t)s->num;
        break;
    case 0x15:
        p->auth_method = b;
        break;
    case 0x16:
        p->auth_data = b;
        break;
    case 0x17:
        p->request_problem_info = (uint8_t)s->num;
        break;
    case 0x18:
        p->will_delay = s->num;
        break;
    case 0x19:
        p->request_response_info = (uint8_t)s->num;
        break;
    case 0x1A:
        p->response_info = b;
        break;
    case 0x1C:
        p->server_reference = b;
        break;
    case 0x1F:
        p->reason_string = b;
        break;
    case 0x21:
        p->receive_maximum = (uint16_t)s->num;
        break;
    case 0x22:
        p->topic_alias_maximum = (uint16_t)s->num;
        break;
    case 0x23:
        p->topic_alias = (uint16_t)s->num;
        break;
    case 0x24:
        p->maximum_qos = (uint8_t)s->num;
        break;
    case 0x25:
        p->retain_available = (uint8_t)s->num;
        break;
    case 0x27:
        p->maximum_packet_size = s->num;
        break;
    case 0x28:
        p->wildcard_sub_available = (uint8_t)s->num;
        break;
    case 0x29:
        p->sub_id_available = (uint8_t)s->num;
        break;
    case 0x2A:
        p->shared_sub_available = (uint8_t)s->num;
        break;
    default:
        fail_msg("not single-valued: 0x%02x", s->id);
    }
    CODEC_SET(p, s->id);
}

static const struct sample *sample_of(unsigned id)
{
    for (size_t i = 0; i < COUNT(samples); i++)
        if (samples[i].id == id)
            return &samples[i];
    fail_msg("no sample for 0x%02x", id);
    return NULL;
}

/* Check the decoded value of a sample's property in p. */
static void assert_sample_value(const codec_props *p, const struct sample *s)
{
    const struct spec_row *row = spec_find(s->id);
    if (is_text(row->type))
        assert_bytes(str_of(p, s->id), s->str, s->str_len);
    else
        assert_int_equal(num_of(p, s->id), s->num);
}

/* ---- decoding helpers ----------------------------------------------- */

/* Decode a block from a heap copy of exactly n bytes; *copy must be freed. */
static codec_status decode_exact(const uint8_t *b, size_t n, int ctx, codec_sender sender,
                                 codec_props *out, uint8_t **copy)
{
    *copy = malloc(n ? n : 1);
    assert_non_null(*copy);
    if (n)
        memcpy(*copy, b, n);
    return codec_props_decode(view(*copy, n), (codec_prop_context)ctx, sender, out);
}

static codec_status status_of(const uint8_t *b, size_t n, int ctx, codec_sender sender)
{
    codec_props out;
    uint8_t *copy;
    codec_status st = decode_exact(b, n, ctx, sender, &out, &copy);
    free(copy);
    return st;
}

static void want_status(codec_status got, codec_status want, const char *what, unsigned id, int ctx)
{
    if (got != want)
        fail_msg("%s: property 0x%02x in %s: got \"%s\", want \"%s\"", what, id, ctx_name(ctx),
                 codec_status_name(got), codec_status_name(want));
}

/* A block: the method first when the sample is Authentication Data, then
 * `copies` copies of the sample. Returns its length. */
static size_t build_block(uint8_t *buf, size_t cap, const struct sample *s, unsigned copies)
{
    size_t n = 0;
    if (s->id == CODEC_PROP_AUTH_DATA) {
        memcpy(buf, method_m, sizeof(method_m));
        n = sizeof(method_m);
    }
    for (unsigned i = 0; i < copies; i++) {
        assert_true(n + s->len <= cap);
        memcpy(buf + n, s->enc, s->len);
        n += s->len;
    }
    return n;
}

/* ---- type and context table ----------------------------------------- */

static void test_spec_table_is_complete(void **state)
{
    (void)state;
    assert_int_equal(COUNT(spec), 27);
    assert_int_equal(COUNT(samples), 27);
    for (size_t i = 0; i < COUNT(spec); i++)
        assert_int_equal(samples[i].id, spec[i].id);
}

static void test_type_of_every_property(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(spec); i++) {
        codec_prop_type t = (codec_prop_type)-1;
        if (!codec_prop_type_of(spec[i].id, &t))
            fail_msg("%s (0x%02x) unknown", spec[i].name, spec[i].id);
        if (t != spec[i].type)
            fail_msg("%s (0x%02x): type %d, want %d", spec[i].name, spec[i].id, (int)t,
                     (int)spec[i].type);
    }
}

static void test_unknown_ids_have_no_type(void **state)
{
    (void)state;
    static const unsigned big[] = {0x80, 0xff, 0x100, 0x4000, 0xffffffffu};
    for (unsigned id = 0; id < 0x80; id++) {
        if (spec_find(id))
            continue;
        codec_prop_type t = CODEC_PT_BINARY;
        if (codec_prop_type_of(id, &t))
            fail_msg("0x%02x should be unknown", id);
    }
    for (size_t i = 0; i < COUNT(big); i++) {
        codec_prop_type t = CODEC_PT_BINARY;
        assert_false(codec_prop_type_of(big[i], &t));
    }
}

static void test_allowed_matches_spec_table(void **state)
{
    (void)state;
    /* Every id up to 0x80 against every context value 0..20: the values
     * that are not property contexts (0, PINGREQ 12, PINGRESP 13, 17..)
     * allow nothing. */
    for (unsigned id = 0; id <= 0x80; id++) {
        for (int ctx = 0; ctx <= 20; ctx++) {
            bool want = spec_allows(id, ctx);
            bool got = codec_prop_allowed(id, (codec_prop_context)ctx);
            if (got != want)
                fail_msg("0x%02x in context %d (%s): got %d, want %d", id, ctx,
                         ctx <= 16 ? ctx_name(ctx) : "-", got, want);
        }
    }
}

/* ---- decoding each property ------------------------------------------ */

static void test_decode_each_in_every_allowed_context(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(samples); i++) {
        const struct sample *s = &samples[i];
        for (size_t c = 0; c < COUNT(all_ctx); c++) {
            int ctx = (int)all_ctx[c];
            if (!spec_allows(s->id, ctx))
                continue;
            uint8_t buf[64];
            size_t n = build_block(buf, sizeof(buf), s, 1);
            codec_props p;
            uint8_t *copy;
            codec_status st = decode_exact(buf, n, ctx, natural_sender(ctx), &p, &copy);
            want_status(st, CODEC_OK, "decode", s->id, ctx);
            /* raw is the whole block, as a view into the input. */
            assert_ptr_equal(p.raw.ptr, copy);
            assert_int_equal(p.raw.len, n);
            if (s->id == CODEC_PROP_USER) {
                assert_int_equal(p.present, 0);
                assert_int_equal(p.user_count, 1);
                assert_int_equal(p.sub_id_count, 0);
            } else if (s->id == CODEC_PROP_SUBSCRIPTION_ID) {
                assert_int_equal(p.present, 0);
                assert_int_equal(p.sub_id_count, 1);
                assert_int_equal(p.user_count, 0);
                assert_int_equal(p.subscription_id, s->num);
            } else {
                uint64_t want = (uint64_t)1 << s->id;
                if (s->id == CODEC_PROP_AUTH_DATA)
                    want |= (uint64_t)1 << CODEC_PROP_AUTH_METHOD;
                assert_int_equal(p.present, want);
                assert_int_equal(p.user_count, 0);
                assert_int_equal(p.sub_id_count, 0);
                assert_true(CODEC_HAS(&p, s->id));
                assert_sample_value(&p, s);
            }
            free(copy);
        }
    }
}

/* "A Control Packet which contains an Identifier which is not valid for its
 * packet type ... is a Malformed Packet" (section 2.2.2.2). */
static void test_decode_each_in_every_disallowed_context(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(samples); i++) {
        const struct sample *s = &samples[i];
        for (size_t c = 0; c < COUNT(all_ctx); c++) {
            int ctx = (int)all_ctx[c];
            if (spec_allows(s->id, ctx))
                continue;
            for (int snd = 0; snd < 2; snd++)
                want_status(status_of(s->enc, s->len, ctx, (codec_sender)snd), CODEC_ERR_MALFORMED,
                            "disallowed", s->id, ctx);
            /* Also after an allowed property. */
            const struct sample *user = sample_of(CODEC_PROP_USER);
            uint8_t buf[64];
            memcpy(buf, user->enc, user->len);
            memcpy(buf + user->len, s->enc, s->len);
            want_status(status_of(buf, user->len + s->len, ctx, natural_sender(ctx)),
                        CODEC_ERR_MALFORMED, "disallowed after user", s->id, ctx);
        }
    }
}

static void test_unknown_id_malformed(void **state)
{
    (void)state;
    static const uint8_t b04[] = {0x04, 0x00};
    static const uint8_t b2b[] = {0x2b, 0x00};
    static const uint8_t b00[] = {0x00};
    static const uint8_t big[] = {0x80, 0x01, 0x00};         /* id 128 */
    static const uint8_t nonmin[] = {0x81, 0x00, 0x01};      /* id 1 in 2 bytes */
    static const uint8_t after[] = {0x01, 0x01, 0x2b, 0x00}; /* valid, then 0x2B */
    assert_int_equal(status_of(b04, sizeof(b04), C_PUBLISH, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    assert_int_equal(status_of(b2b, sizeof(b2b), C_CONNACK, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    assert_int_equal(status_of(b00, sizeof(b00), C_CONNECT, CODEC_FROM_CLIENT),
                     CODEC_ERR_MALFORMED);
    assert_int_equal(status_of(big, sizeof(big), C_CONNECT, CODEC_FROM_CLIENT),
                     CODEC_ERR_MALFORMED);
    /* [MQTT-1.5.5-1]: the identifier is a Variable Byte Integer too. */
    assert_int_equal(status_of(nonmin, sizeof(nonmin), C_PUBLISH, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    assert_int_equal(status_of(after, sizeof(after), C_PUBLISH, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    /* Every unknown one-byte id, in every context. */
    for (unsigned id = 0; id < 0x80; id++) {
        if (spec_find(id))
            continue;
        uint8_t b[5] = {(uint8_t)id, 0, 0, 0, 0};
        for (size_t c = 0; c < COUNT(all_ctx); c++)
            want_status(status_of(b, sizeof(b), (int)all_ctx[c], natural_sender((int)all_ctx[c])),
                        CODEC_ERR_MALFORMED, "unknown", id, (int)all_ctx[c]);
    }
}

/* "It is a Protocol Error to include <property> more than once" (sections
 * 3.1.2.11, 3.1.3.2, 3.2.2.3, 3.3.2.3, ...). */
static void test_single_valued_twice_is_protocol_error(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(samples); i++) {
        const struct sample *s = &samples[i];
        if (repeatable(s->id))
            continue;
        for (size_t c = 0; c < COUNT(all_ctx); c++) {
            int ctx = (int)all_ctx[c];
            if (!spec_allows(s->id, ctx))
                continue;
            uint8_t buf[64];
            size_t n = build_block(buf, sizeof(buf), s, 2);
            want_status(status_of(buf, n, ctx, natural_sender(ctx)), CODEC_ERR_PROTOCOL, "twice",
                        s->id, ctx);
            /* Not adjacent: with a user property in between. */
            const struct sample *user = sample_of(CODEC_PROP_USER);
            n = build_block(buf, sizeof(buf), s, 1);
            memcpy(buf + n, user->enc, user->len);
            n += user->len;
            memcpy(buf + n, s->enc, s->len);
            n += s->len;
            want_status(status_of(buf, n, ctx, natural_sender(ctx)), CODEC_ERR_PROTOCOL,
                        "twice, apart", s->id, ctx);
        }
    }
}

/* "The User Property is allowed to appear multiple times ... The same name
 * is allowed to appear more than once" (3.1.2.11.8). */
static void test_user_property_repeated(void **state)
{
    (void)state;
    static const uint8_t three[] = {
        0x26, 0x00, 0x01, 'k',  0x00, 0x01, '1', /* k=1 */
        0x26, 0x00, 0x01, 'k',  0x00, 0x01, '2', /* k=2 */
        0x26, 0x00, 0x00, 0x00, 0x00,            /* ""="" */
    };
    for (size_t c = 0; c < COUNT(all_ctx); c++) {
        int ctx = (int)all_ctx[c];
        codec_props p;
        uint8_t *copy;
        want_status(decode_exact(three, sizeof(three), ctx, natural_sender(ctx), &p, &copy),
                    CODEC_OK, "users", 0x26, ctx);
        assert_int_equal(p.user_count, 3);
        assert_int_equal(p.present, 0);
        free(copy);
    }
}

/* ---- Subscription Identifier ----------------------------------------- */

static void test_subscription_identifier_rules(void **state)
{
    (void)state;
    /* "It is a Protocol Error if the Subscription Identifier has a value of
     * 0" (3.3.2.3.8, 3.8.2.1.2). */
    static const uint8_t zero[] = {0x0b, 0x00};
    assert_int_equal(status_of(zero, sizeof(zero), C_SUBSCRIBE, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(zero, sizeof(zero), C_PUBLISH, CODEC_FROM_SERVER),
                     CODEC_ERR_PROTOCOL);

    /* Several in a server's PUBLISH, one per matching subscription. */
    static const uint8_t several[] = {0x0b, 0x01, 0x0b, 0x80, 0x01, 0x0b, 0xff, 0xff, 0xff, 0x7f};
    codec_props p;
    uint8_t *copy;
    assert_int_equal(
        decode_exact(several, sizeof(several), C_PUBLISH, CODEC_FROM_SERVER, &p, &copy), CODEC_OK);
    assert_int_equal(p.sub_id_count, 3);
    assert_int_equal(p.subscription_id, 1);
    assert_int_equal(p.present, 0);
    static const uint32_t want[] = {1, 128, 268435455};
    size_t pos = 0;
    codec_prop prop;
    for (size_t i = 0; i < COUNT(want); i++) {
        assert_true(codec_props_next(p.raw, &pos, &prop));
        assert_int_equal(prop.id, CODEC_PROP_SUBSCRIPTION_ID);
        assert_int_equal(prop.num, want[i]);
    }
    assert_false(codec_props_next(p.raw, &pos, &prop));
    free(copy);

    /* "It is a Protocol Error to include the Subscription Identifier more
     * than once" in SUBSCRIBE (3.8.2.1.2). */
    static const uint8_t two[] = {0x0b, 0x01, 0x0b, 0x02};
    assert_int_equal(status_of(two, sizeof(two), C_SUBSCRIBE, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);
    static const uint8_t one[] = {0x0b, 0x05};
    assert_int_equal(decode_exact(one, sizeof(one), C_SUBSCRIBE, CODEC_FROM_CLIENT, &p, &copy),
                     CODEC_OK);
    assert_int_equal(p.subscription_id, 5);
    assert_int_equal(p.sub_id_count, 1);
    free(copy);

    /* "A PUBLISH packet sent from a Client to a Server MUST NOT contain a
     * Subscription Identifier" [MQTT-3.3.4-6]. */
    assert_int_equal(status_of(one, sizeof(one), C_PUBLISH, CODEC_FROM_CLIENT), CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(several, sizeof(several), C_PUBLISH, CODEC_FROM_CLIENT),
                     CODEC_ERR_PROTOCOL);

    /* A value that is not a Variable Byte Integer is malformed. */
    static const uint8_t five[] = {0x0b, 0x80, 0x80, 0x80, 0x80, 0x01};
    static const uint8_t nonmin[] = {0x0b, 0x85, 0x00};
    assert_int_equal(status_of(five, sizeof(five), C_PUBLISH, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
    assert_int_equal(status_of(nonmin, sizeof(nonmin), C_PUBLISH, CODEC_FROM_SERVER),
                     CODEC_ERR_MALFORMED);
}

/* ---- value ranges ------------------------------------------------------ */

static void test_value_ranges(void **state)
{
    (void)state;
    static const struct {
        uint8_t enc[8];
        size_t len;
        int ctx;
        codec_status want;
    } cases[] = {
        /* Payload Format Indicator: 0 or 1 (3.3.2.3.2, 3.1.3.2.3). */
        {{0x01, 0x00}, 2, C_PUBLISH, CODEC_OK},
        {{0x01, 0x01}, 2, C_WILL, CODEC_OK},
        {{0x01, 0x02}, 2, C_PUBLISH, CODEC_ERR_PROTOCOL},
        {{0x01, 0x02}, 2, C_WILL, CODEC_ERR_PROTOCOL},
        {{0x01, 0xff}, 2, C_PUBLISH, CODEC_ERR_PROTOCOL},
        /* Request Problem / Response Information: "a value other than 0 or
         * 1" is a Protocol Error (3.1.2.11.6, 3.1.2.11.7). */
        {{0x17, 0x01}, 2, C_CONNECT, CODEC_OK},
        {{0x17, 0x02}, 2, C_CONNECT, CODEC_ERR_PROTOCOL},
        {{0x19, 0x00}, 2, C_CONNECT, CODEC_OK},
        {{0x19, 0x02}, 2, C_CONNECT, CODEC_ERR_PROTOCOL},
        /* CONNACK capability bytes (3.2.2.3.4 .. 3.2.2.3.13). */
        {{0x24, 0x01}, 2, C_CONNACK, CODEC_OK},
        {{0x24, 0x02}, 2, C_CONNACK, CODEC_ERR_PROTOCOL},
        {{0x25, 0x01}, 2, C_CONNACK, CODEC_OK},
        {{0x25, 0x02}, 2, C_CONNACK, CODEC_ERR_PROTOCOL},
        {{0x28, 0x00}, 2, C_CONNACK, CODEC_OK},
        {{0x28, 0x02}, 2, C_CONNACK, CODEC_ERR_PROTOCOL},
        {{0x29, 0x01}, 2, C_CONNACK, CODEC_OK},
        {{0x29, 0x02}, 2, C_CONNACK, CODEC_ERR_PROTOCOL},
        {{0x2a, 0x00}, 2, C_CONNACK, CODEC_OK},
        {{0x2a, 0x02}, 2, C_CONNACK, CODEC_ERR_PROTOCOL},
        /* Receive Maximum 0 (3.1.2.11.3, 3.2.2.3.3). */
        {{0x21, 0x00, 0x00}, 3, C_CONNECT, CODEC_ERR_PROTOCOL},
        {{0x21, 0x00, 0x00}, 3, C_CONNACK, CODEC_ERR_PROTOCOL},
        {{0x21, 0x00, 0x01}, 3, C_CONNECT, CODEC_OK},
        {{0x21, 0xff, 0xff}, 3, C_CONNACK, CODEC_OK},
        /* Maximum Packet Size 0 (3.1.2.11.4, 3.2.2.3.6). */
        {{0x27, 0x00, 0x00, 0x00, 0x00}, 5, C_CONNECT, CODEC_ERR_PROTOCOL},
        {{0x27, 0x00, 0x00, 0x00, 0x00}, 5, C_CONNACK, CODEC_ERR_PROTOCOL},
        {{0x27, 0x00, 0x00, 0x00, 0x01}, 5, C_CONNECT, CODEC_OK},
        /* Topic Alias 0 ([MQTT-3.3.2-8]); Topic Alias Maximum 0 is fine. */
        {{0x23, 0x00, 0x00}, 3, C_PUBLISH, CODEC_ERR_PROTOCOL},
        {{0x23, 0xff, 0xff}, 3, C_PUBLISH, CODEC_OK},
        {{0x22, 0x00, 0x00}, 3, C_CONNECT, CODEC_OK},
        /* Response Topic with wildcards [MQTT-3.3.2-14]. */
        {{0x08, 0x00, 0x03, 'a', '/', '+'}, 6, C_PUBLISH, CODEC_ERR_PROTOCOL},
        {{0x08, 0x00, 0x01, '#'}, 4, C_WILL, CODEC_ERR_PROTOCOL},
        {{0x08, 0x00, 0x03, 'a', '/', '#'}, 6, C_PUBLISH, CODEC_ERR_PROTOCOL},
        {{0x08, 0x00, 0x03, 'a', '/', 'b'}, 6, C_WILL, CODEC_OK},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        want_status(
            status_of(cases[i].enc, cases[i].len, cases[i].ctx, natural_sender(cases[i].ctx)),
            cases[i].want, "range", cases[i].enc[0], cases[i].ctx);
        /* Topic Alias is checked whoever sends the PUBLISH. */
        if (cases[i].ctx == C_PUBLISH)
            want_status(status_of(cases[i].enc, cases[i].len, C_PUBLISH, CODEC_FROM_CLIENT),
                        cases[i].want, "range (client)", cases[i].enc[0], C_PUBLISH);
    }
}

/* "The Session Expiry Interval MUST NOT be sent on a DISCONNECT by the
 * Server" [MQTT-3.14.2-2]. */
static void test_session_expiry_in_server_disconnect(void **state)
{
    (void)state;
    static const uint8_t se[] = {0x11, 0x00, 0x00, 0x00, 0x0a};
    assert_int_equal(status_of(se, sizeof(se), C_DISCONNECT, CODEC_FROM_SERVER),
                     CODEC_ERR_PROTOCOL);
    assert_int_equal(status_of(se, sizeof(se), C_DISCONNECT, CODEC_FROM_CLIENT), CODEC_OK);
    assert_int_equal(status_of(se, sizeof(se), C_CONNACK, CODEC_FROM_SERVER), CODEC_OK);
}

/* "It is a Protocol Error to include Authentication Data if there is no
 * Authentication Method" (3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3). Order does
 * not matter (2.2.2.2). */
static void test_auth_data_needs_method(void **state)
{
    (void)state;
    static const uint8_t data_only[] = {0x16, 0x00, 0x01, 0x42};
    static const uint8_t data_then_method[] = {0x16, 0x00, 0x01, 0x42, 0x15, 0x00, 0x01, 'm'};
    static const int ctxs[] = {C_CONNECT, C_CONNACK, C_AUTH};
    for (size_t i = 0; i < COUNT(ctxs); i++) {
        want_status(status_of(data_only, sizeof(data_only), ctxs[i], natural_sender(ctxs[i])),
                    CODEC_ERR_PROTOCOL, "data only", 0x16, ctxs[i]);
        codec_props p;
        uint8_t *copy;
        want_status(decode_exact(data_then_method, sizeof(data_then_method), ctxs[i],
                                 natural_sender(ctxs[i]), &p, &copy),
                    CODEC_OK, "data then method", 0x16, ctxs[i]);
        assert_bytes(p.auth_method, "m", 1);
        assert_bytes(p.auth_data, "\x42", 1);
        free(copy);
    }
}

/* ---- UTF-8 ------------------------------------------------------------ */

static const struct {
    uint8_t b[4];
    size_t len;
} bad_utf8[] = {
    {{0xc0, 0xaf}, 2},             /* overlong '/' */
    {{0xed, 0xa0, 0x80}, 3},       /* U+D800, a surrogate */
    {{0xf4, 0x90, 0x80, 0x80}, 4}, /* above U+10FFFF */
    {{'a', 0x00, 'b'}, 3},         /* U+0000 [MQTT-1.5.4-2] */
    {{0xe2, 0x82}, 2},             /* cut short */
    {{0x80}, 1},                   /* stray continuation byte */
};

static void test_invalid_utf8_in_string_property(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(spec); i++) {
        if (spec[i].type != CODEC_PT_STRING && spec[i].type != CODEC_PT_BINARY)
            continue;
        for (size_t k = 0; k < COUNT(bad_utf8); k++) {
            uint8_t buf[16] = {spec[i].id, 0x00, (uint8_t)bad_utf8[k].len};
            memcpy(buf + 3, bad_utf8[k].b, bad_utf8[k].len);
            size_t n = 3 + bad_utf8[k].len;
            if (spec[i].id == CODEC_PROP_AUTH_DATA) { /* needs a method */
                memcpy(buf + n, method_m, sizeof(method_m));
                n += sizeof(method_m);
            }
            int ctx = spec_home(spec[i].id);
            /* Strings must be well-formed UTF-8 [MQTT-1.5.4-1]; binary data
             * is any bytes. */
            codec_status want = spec[i].type == CODEC_PT_STRING ? CODEC_ERR_MALFORMED : CODEC_OK;
            want_status(status_of(buf, n, ctx, natural_sender(ctx)), want, "utf-8", spec[i].id,
                        ctx);
        }
    }
}

/* "Both strings MUST comply with the requirements for UTF-8 Encoded
 * Strings" [MQTT-1.5.7-1]. */
static void test_invalid_utf8_in_user_property(void **state)
{
    (void)state;
    for (size_t k = 0; k < COUNT(bad_utf8); k++) {
        size_t bl = bad_utf8[k].len;
        uint8_t name_bad[16] = {0x26, 0x00, (uint8_t)bl};
        memcpy(name_bad + 3, bad_utf8[k].b, bl);
        memcpy(name_bad + 3 + bl, "\x00\x01v", 3);
        uint8_t value_bad[16] = {0x26, 0x00, 0x01, 'k', 0x00, (uint8_t)bl};
        memcpy(value_bad + 6, bad_utf8[k].b, bl);
        for (size_t c = 0; c < COUNT(all_ctx); c++) {
            int ctx = (int)all_ctx[c];
            want_status(status_of(name_bad, 6 + bl, ctx, natural_sender(ctx)), CODEC_ERR_MALFORMED,
                        "user name", (unsigned)k, ctx);
            want_status(status_of(value_bad, 6 + bl, ctx, natural_sender(ctx)), CODEC_ERR_MALFORMED,
                        "user value", (unsigned)k, ctx);
        }
    }
}

/* A value cut short is "not of the specified data type": malformed. Every
 * prefix of every sample, from an exact-size buffer. */
static void test_truncated_value_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(samples); i++) {
        const struct sample *s = &samples[i];
        int ctx = spec_home(s->id);
        for (size_t cut = 1; cut < s->len; cut++)
            want_status(status_of(s->enc, cut, ctx, natural_sender(ctx)), CODEC_ERR_MALFORMED,
                        "truncated", s->id, ctx);
        /* A declared string length past the block. */
        if (is_text(spec_find(s->id)->type)) {
            uint8_t buf[16];
            memcpy(buf, s->enc, s->len);
            buf[2] = (uint8_t)(buf[2] + 1);
            want_status(status_of(buf, s->len, ctx, natural_sender(ctx)), CODEC_ERR_MALFORMED,
                        "long length", s->id, ctx);
        }
    }
}

/* The block length itself, read by the packet decoders. */
static void test_block_length_past_packet(void **state)
{
    (void)state;
    const codec_decode_opts o = {.version = CODEC_V5, .sender = CODEC_FROM_SERVER};
    codec_packet pkt;
    size_t used;
    /* CONNACK: property length 5, but only 3 bytes follow. */
    static const uint8_t over[] = {0x20, 0x06, 0x00, 0x00, 0x05, 0x25, 0x01, 0x24};
    assert_int_equal(codec_decode(over, sizeof(over), &o, &pkt, &used), CODEC_ERR_MALFORMED);
    /* Property length 0 in two bytes [MQTT-1.5.5-1]. */
    static const uint8_t nonmin[] = {0x20, 0x04, 0x00, 0x00, 0x80, 0x00};
    assert_int_equal(codec_decode(nonmin, sizeof(nonmin), &o, &pkt, &used), CODEC_ERR_MALFORMED);
    /* Property length shorter than its property: the rest is trailing. */
    static const uint8_t under[] = {0x20, 0x05, 0x00, 0x00, 0x01, 0x25, 0x01};
    assert_int_equal(codec_decode(under, sizeof(under), &o, &pkt, &used), CODEC_ERR_MALFORMED);
    /* Exactly right. */
    static const uint8_t right[] = {0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x01};
    assert_int_equal(codec_decode(right, sizeof(right), &o, &pkt, &used), CODEC_OK);
    assert_int_equal(used, sizeof(right));
    assert_int_equal(pkt.u.connack.props.retain_available, 1);
    assert_int_equal(pkt.u.connack.props.present, (uint64_t)1 << CODEC_PROP_RETAIN_AVAILABLE);
}

/* ---- walking a block ---------------------------------------------------- */

static void assert_prop_is_sample(const codec_prop *got, const struct sample *s)
{
    assert_int_equal(got->id, s->id);
    const struct spec_row *row = spec_find(s->id);
    if (is_text(row->type)) {
        assert_bytes(got->str, s->str, s->str_len);
        if (row->type == CODEC_PT_STRING_PAIR)
            assert_bytes(got->value, s->val, s->val_len);
    } else {
        assert_int_equal(got->num, s->num);
    }
}

/* Every property in one block (not valid in any one packet, but
 * codec_props_next only walks): each comes back in order. */
static void test_props_next_walks_every_property(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = 0;
    for (size_t i = 0; i < COUNT(samples); i++) {
        memcpy(buf + n, samples[i].enc, samples[i].len);
        n += samples[i].len;
    }
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, buf, n);
    size_t pos = 0;
    codec_prop prop;
    for (size_t i = 0; i < COUNT(samples); i++) {
        if (!codec_props_next(view(copy, n), &pos, &prop))
            fail_msg("walk stopped before 0x%02x", samples[i].id);
        assert_prop_is_sample(&prop, &samples[i]);
    }
    assert_int_equal(pos, n);
    assert_false(codec_props_next(view(copy, n), &pos, &prop));
    assert_int_equal(pos, n);
    free(copy);

    /* An empty block has nothing. */
    pos = 0;
    assert_false(codec_props_next(view(NULL, 0), &pos, &prop));
    assert_int_equal(pos, 0);
}

/* A decoded PUBLISH block, walked in its order. */
static void test_props_next_on_decoded_block(void **state)
{
    (void)state;
    static const uint8_t block[] = {
        0x01, 0x01,                              /* payload format 1 */
        0x26, 0x00, 0x01, 'a',  0x00, 0x01, 'b', /* user a=b */
        0x0b, 0x2a,                              /* sub id 42 */
        0x03, 0x00, 0x01, 't',                   /* content type "t" */
        0x26, 0x00, 0x01, 'a',  0x00, 0x01, 'c', /* user a=c */
        0x0b, 0x80, 0x01,                        /* sub id 128 */
        0x02, 0x00, 0x00, 0x00, 0x0a,            /* message expiry 10 */
    };
    codec_props p;
    uint8_t *copy;
    assert_int_equal(decode_exact(block, sizeof(block), C_PUBLISH, CODEC_FROM_SERVER, &p, &copy),
                     CODEC_OK);
    assert_int_equal(p.user_count, 2);
    assert_int_equal(p.sub_id_count, 2);
    assert_int_equal(p.subscription_id, 42);
    assert_int_equal(p.payload_format, 1);
    assert_int_equal(p.message_expiry, 10);
    assert_bytes(p.content_type, "t", 1);
    static const struct {
        uint8_t id;
        uint32_t num;
        const char *str;
        const char *val;
    } want[] = {
        {0x01, 1, NULL, NULL},  {0x26, 0, "a", "b"}, {0x0b, 42, NULL, NULL},
        {0x03, 0, "t", NULL},   {0x26, 0, "a", "c"}, {0x0b, 128, NULL, NULL},
        {0x02, 10, NULL, NULL},
    };
    size_t pos = 0;
    codec_prop prop;
    for (size_t i = 0; i < COUNT(want); i++) {
        assert_true(codec_props_next(p.raw, &pos, &prop));
        assert_int_equal(prop.id, want[i].id);
        if (want[i].str) {
            assert_bytes(prop.str, want[i].str, 1);
            if (want[i].val)
                assert_bytes(prop.value, want[i].val, 1);
        } else {
            assert_int_equal(prop.num, want[i].num);
        }
    }
    assert_false(codec_props_next(p.raw, &pos, &prop));
    free(copy);
}

/* ---- encoding through the packet encoders ------------------------------ */

static const codec_subscription sub_entry = {.filter = {(const uint8_t *)"s/#", 3}, .qos = 1};
static const codec_bytes unsub_entry = {(const uint8_t *)"s/#", 3};
static const uint8_t one_reason[] = {0x00};

/* Encode a small packet whose property block (of context ctx) is *props. */
static codec_status encode_in(int ctx, const codec_props *props, uint8_t *out, size_t cap,
                              size_t *written)
{
    codec_packet pkt;
    memset(&pkt, 0, sizeof(pkt));
    switch (ctx) {
    case C_CONNECT:
    case C_WILL: {
        codec_connect *c = &pkt.u.connect;
        c->protocol_version = CODEC_V5;
        c->clean_start = true;
        c->client_id = CODEC_LIT("c");
        if (ctx == C_WILL) {
            c->will_flag = true;
            c->will_topic = CODEC_LIT("w");
            c->will_props = *props;
        } else {
            c->props = *props;
        }
        return codec_encode_connect(c, out, cap, written);
    }
    case C_CONNACK:
        pkt.u.connack.props = *props;
        return codec_encode_connack(&pkt.u.connack, CODEC_V5, out, cap, written);
    case C_PUBLISH:
        pkt.u.publish.qos = 1;
        pkt.u.publish.packet_id = 9;
        pkt.u.publish.topic = CODEC_LIT("t");
        pkt.u.publish.payload = CODEC_LIT("x");
        pkt.u.publish.props = *props;
        return codec_encode_publish(&pkt.u.publish, CODEC_V5, out, cap, written);
    case C_PUBACK:
    case C_PUBREC:
    case C_PUBREL:
    case C_PUBCOMP:
        pkt.u.ack.packet_id = 9;
        pkt.u.ack.props = *props;
        return codec_encode_ack((uint8_t)ctx, &pkt.u.ack, CODEC_V5, out, cap, written);
    case C_SUBSCRIBE:
        pkt.u.subscribe.packet_id = 9;
        pkt.u.subscribe.list = &sub_entry;
        pkt.u.subscribe.count = 1;
        pkt.u.subscribe.props = *props;
        return codec_encode_subscribe(&pkt.u.subscribe, CODEC_V5, out, cap, written);
    case C_SUBACK:
    case C_UNSUBACK:
        pkt.u.suback.packet_id = 9;
        pkt.u.suback.reasons = view(one_reason, 1);
        pkt.u.suback.props = *props;
        return codec_encode_suback((uint8_t)ctx, &pkt.u.suback, CODEC_V5, out, cap, written);
    case C_UNSUBSCRIBE:
        pkt.u.unsubscribe.packet_id = 9;
        pkt.u.unsubscribe.list = &unsub_entry;
        pkt.u.unsubscribe.count = 1;
        pkt.u.unsubscribe.props = *props;
        return codec_encode_unsubscribe(&pkt.u.unsubscribe, CODEC_V5, out, cap, written);
    case C_DISCONNECT:
    case C_AUTH:
        pkt.u.disconnect.reason = ctx == C_AUTH ? 0x18 : 0x00;
        pkt.u.disconnect.props = *props;
        return codec_encode_disconnect((uint8_t)ctx, &pkt.u.disconnect, CODEC_V5, out, cap,
                                       written);
    default:
        fail_msg("no packet for context %d", ctx);
    }
    return CODEC_ERR_ARG;
}

/* Decode a packet made by encode_in and return its property block. */
static const codec_props *decode_in(int ctx, const uint8_t *buf, size_t len, codec_packet *pkt)
{
    codec_decode_opts o = {.version = CODEC_V5, .sender = natural_sender(ctx)};
    if (ctx == C_CONNECT || ctx == C_WILL)
        o.version = 0;
    size_t used = 0;
    codec_status st = codec_decode(buf, len, &o, pkt, &used);
    want_status(st, CODEC_OK, "decode packet", 0, ctx);
    assert_int_equal(used, len);
    switch (ctx) {
    case C_CONNECT:
        return &pkt->u.connect.props;
    case C_WILL:
        return &pkt->u.connect.will_props;
    case C_CONNACK:
        return &pkt->u.connack.props;
    case C_PUBLISH:
        return &pkt->u.publish.props;
    case C_SUBSCRIBE:
        return &pkt->u.subscribe.props;
    case C_SUBACK:
    case C_UNSUBACK:
        return &pkt->u.suback.props;
    case C_UNSUBSCRIBE:
        return &pkt->u.unsubscribe.props;
    case C_DISCONNECT:
    case C_AUTH:
        return &pkt->u.disconnect.props;
    default:
        return &pkt->u.ack.props;
    }
}

static const codec_string_pair users[] = {
    {{(const uint8_t *)"n1", 2}, {(const uint8_t *)"v1", 2}},
    {{(const uint8_t *)"n1", 2}, {(const uint8_t *)"", 0}},
};
static const uint32_t pub_sub_ids[] = {1, 268435455};
static const uint32_t subscribe_sub_id[] = {16384};

/* Every single-valued property the context allows, with sample values, plus
 * two user properties and the subscription identifiers it may carry. */
static codec_props full_props(int ctx)
{
    codec_props p;
    memset(&p, 0, sizeof(p));
    for (size_t i = 0; i < COUNT(samples); i++)
        if (!repeatable(samples[i].id) && spec_allows(samples[i].id, ctx))
            set_sample(&p, &samples[i]);
    p.user = users;
    p.user_len = COUNT(users);
    if (ctx == C_PUBLISH) {
        p.sub_ids = pub_sub_ids;
        p.sub_ids_len = COUNT(pub_sub_ids);
    } else if (ctx == C_SUBSCRIBE) {
        p.sub_ids = subscribe_sub_id;
        p.sub_ids_len = COUNT(subscribe_sub_id);
    }
    return p;
}

/* Walk a decoded block made from src: single-valued properties in identifier
 * order, then src's user[], then src's sub_ids[]. */
static void assert_block_order(const codec_props *got, const codec_props *src)
{
    size_t pos = 0;
    codec_prop prop;
    for (unsigned id = 1; id <= CODEC_PROP_MAX_ID; id++) {
        if (!CODEC_HAS(src, id))
            continue;
        assert_true(codec_props_next(got->raw, &pos, &prop));
        assert_int_equal(prop.id, id);
    }
    for (size_t i = 0; i < src->user_len; i++) {
        const codec_string_pair *u = &src->user[i];
        assert_true(codec_props_next(got->raw, &pos, &prop));
        assert_int_equal(prop.id, CODEC_PROP_USER);
        assert_bytes(prop.str, u->name.ptr, u->name.len);
        assert_bytes(prop.value, u->value.ptr, u->value.len);
    }
    for (size_t i = 0; i < src->sub_ids_len; i++) {
        assert_true(codec_props_next(got->raw, &pos, &prop));
        assert_int_equal(prop.id, CODEC_PROP_SUBSCRIPTION_ID);
        assert_int_equal(prop.num, src->sub_ids[i]);
    }
    assert_false(codec_props_next(got->raw, &pos, &prop));
    assert_int_equal(pos, got->raw.len);
}

static void test_encode_decode_every_context(void **state)
{
    (void)state;
    for (size_t c = 0; c < COUNT(all_ctx); c++) {
        int ctx = (int)all_ctx[c];
        codec_props src = full_props(ctx);
        uint8_t buf1[512], buf2[512];
        size_t n1 = 0, n2 = 0;
        want_status(encode_in(ctx, &src, buf1, sizeof(buf1), &n1), CODEC_OK, "encode", 0, ctx);

        codec_packet pkt;
        const codec_props *got = decode_in(ctx, buf1, n1, &pkt);
        assert_int_equal(got->present, src.present);
        for (size_t i = 0; i < COUNT(samples); i++)
            if (!repeatable(samples[i].id) && CODEC_HAS(&src, samples[i].id))
                assert_sample_value(got, &samples[i]);
        assert_int_equal(got->user_count, src.user_len);
        assert_int_equal(got->sub_id_count, src.sub_ids_len);
        if (src.sub_ids_len)
            assert_int_equal(got->subscription_id, src.sub_ids[0]);
        assert_block_order(got, &src);

        /* The decoded block re-encodes to the same bytes: user properties
         * and subscription identifiers are copied from raw. */
        codec_props again = *got;
        want_status(encode_in(ctx, &again, buf2, sizeof(buf2), &n2), CODEC_OK, "re-encode", 0, ctx);
        assert_int_equal(n2, n1);
        assert_memory_equal(buf2, buf1, n1);

        /* raw plus an appended user property: raw's come first. */
        static const codec_string_pair extra[] = {
            {{(const uint8_t *)"x", 1}, {(const uint8_t *)"y", 1}}};
        again.user = extra;
        again.user_len = 1;
        want_status(encode_in(ctx, &again, buf2, sizeof(buf2), &n2), CODEC_OK, "append", 0, ctx);
        codec_packet pkt2;
        const codec_props *got2 = decode_in(ctx, buf2, n2, &pkt2);
        assert_int_equal(got2->user_count, src.user_len + 1);
        assert_int_equal(got2->sub_id_count, src.sub_ids_len);
        /* Expected order: single-valued, raw's users, extra, raw's sub ids
         * (raw is copied in its own order: users then sub ids here). */
        size_t pos = 0;
        codec_prop prop;
        for (unsigned id = 1; id <= CODEC_PROP_MAX_ID; id++)
            if (CODEC_HAS(&src, id)) {
                assert_true(codec_props_next(got2->raw, &pos, &prop));
                assert_int_equal(prop.id, id);
            }
        for (size_t i = 0; i < src.user_len; i++) {
            assert_true(codec_props_next(got2->raw, &pos, &prop));
            assert_int_equal(prop.id, CODEC_PROP_USER);
            assert_bytes(prop.value, src.user[i].value.ptr, src.user[i].value.len);
        }
        for (size_t i = 0; i < src.sub_ids_len; i++) {
            assert_true(codec_props_next(got2->raw, &pos, &prop));
            assert_int_equal(prop.id, CODEC_PROP_SUBSCRIPTION_ID);
            assert_int_equal(prop.num, src.sub_ids[i]);
        }
        assert_true(codec_props_next(got2->raw, &pos, &prop));
        assert_int_equal(prop.id, CODEC_PROP_USER);
        assert_bytes(prop.str, "x", 1);
        assert_bytes(prop.value, "y", 1);
        assert_false(codec_props_next(got2->raw, &pos, &prop));
    }
}

/* Hand-encoded: a v5 PUBACK with a reason string and one user property. */
static void test_encode_exact_bytes(void **state)
{
    (void)state;
    codec_ack a;
    memset(&a, 0, sizeof(a));
    a.packet_id = 0x0102;
    a.reason = 0x10;
    a.props.reason_string = CODEC_LIT("no");
    CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
    static const codec_string_pair u[] = {{{(const uint8_t *)"k", 1}, {(const uint8_t *)"v", 1}}};
    a.props.user = u;
    a.props.user_len = 1;
    uint8_t out[64];
    size_t n;
    assert_int_equal(codec_encode_ack(CODEC_PUBACK, &a, CODEC_V5, out, sizeof(out), &n), CODEC_OK);
    /* Properties: 5 + 7 = 12 bytes; remaining: 2 + 1 + 1 + 12 = 16. */
    static const uint8_t want[] = {0x40, 0x10, 0x01, 0x02, 0x10, 0x0c, 0x1f, 0x00, 0x02,
                                   'n',  'o',  0x26, 0x00, 0x01, 'k',  0x00, 0x01, 'v'};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
}

static void test_encode_disallowed_property_is_arg(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n;
    for (size_t c = 0; c < COUNT(all_ctx); c++) {
        int ctx = (int)all_ctx[c];
        for (size_t i = 0; i < COUNT(samples); i++) {
            if (repeatable(samples[i].id) || spec_allows(samples[i].id, ctx))
                continue;
            codec_props p;
            memset(&p, 0, sizeof(p));
            set_sample(&p, &samples[i]);
            want_status(encode_in(ctx, &p, buf, sizeof(buf), &n), CODEC_ERR_ARG, "encode",
                        samples[i].id, ctx);
        }
        /* Subscription identifiers through sub_ids[]. */
        codec_props p;
        memset(&p, 0, sizeof(p));
        static const uint32_t id7[] = {7};
        p.sub_ids = id7;
        p.sub_ids_len = 1;
        want_status(encode_in(ctx, &p, buf, sizeof(buf), &n),
                    spec_allows(CODEC_PROP_SUBSCRIPTION_ID, ctx) ? CODEC_OK : CODEC_ERR_ARG,
                    "sub_ids[]", CODEC_PROP_SUBSCRIPTION_ID, ctx);
        /* User properties are allowed everywhere. */
        memset(&p, 0, sizeof(p));
        p.user = users;
        p.user_len = 1;
        want_status(encode_in(ctx, &p, buf, sizeof(buf), &n), CODEC_OK, "user[]", CODEC_PROP_USER,
                    ctx);
    }
}

/* Repeatable properties have no present bit; bits for identifiers that do
 * not exist are refused too. */
static void test_encode_bad_present_bits_are_arg(void **state)
{
    (void)state;
    static const unsigned bad_bits[] = {
        CODEC_PROP_USER, CODEC_PROP_SUBSCRIPTION_ID, 0, 0x04, 0x2B, 63};
    uint8_t buf[256];
    size_t n;
    for (size_t i = 0; i < COUNT(bad_bits); i++) {
        codec_props p;
        memset(&p, 0, sizeof(p));
        p.present = (uint64_t)1 << bad_bits[i];
        p.subscription_id = 5; /* a valid value: only the bit is wrong */
        want_status(encode_in(C_PUBLISH, &p, buf, sizeof(buf), &n), CODEC_ERR_ARG, "bit",
                    bad_bits[i], C_PUBLISH);
        want_status(encode_in(C_CONNECT, &p, buf, sizeof(buf), &n), CODEC_ERR_ARG, "bit",
                    bad_bits[i], C_CONNECT);
    }
}

/* A subscription identifier of 0 or over the VBI maximum cannot be encoded. */
static void test_encode_sub_id_range(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n;
    static const uint32_t zero[] = {0};
    static const uint32_t over[] = {268435456u};
    codec_props p;
    memset(&p, 0, sizeof(p));
    p.sub_ids = zero;
    p.sub_ids_len = 1;
    assert_int_equal(encode_in(C_PUBLISH, &p, buf, sizeof(buf), &n), CODEC_ERR_ARG);
    p.sub_ids = over;
    assert_int_equal(encode_in(C_PUBLISH, &p, buf, sizeof(buf), &n), CODEC_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_table_is_complete),
        cmocka_unit_test(test_type_of_every_property),
        cmocka_unit_test(test_unknown_ids_have_no_type),
        cmocka_unit_test(test_allowed_matches_spec_table),
        cmocka_unit_test(test_decode_each_in_every_allowed_context),
        cmocka_unit_test(test_decode_each_in_every_disallowed_context),
        cmocka_unit_test(test_unknown_id_malformed),
        cmocka_unit_test(test_single_valued_twice_is_protocol_error),
        cmocka_unit_test(test_user_property_repeated),
        cmocka_unit_test(test_subscription_identifier_rules),
        cmocka_unit_test(test_value_ranges),
        cmocka_unit_test(test_session_expiry_in_server_disconnect),
        cmocka_unit_test(test_auth_data_needs_method),
        cmocka_unit_test(test_invalid_utf8_in_string_property),
        cmocka_unit_test(test_invalid_utf8_in_user_property),
        cmocka_unit_test(test_truncated_value_malformed),
        cmocka_unit_test(test_block_length_past_packet),
        cmocka_unit_test(test_props_next_walks_every_property),
        cmocka_unit_test(test_props_next_on_decoded_block),
        cmocka_unit_test(test_encode_decode_every_context),
        cmocka_unit_test(test_encode_exact_bytes),
        cmocka_unit_test(test_encode_disallowed_property_is_arg),
        cmocka_unit_test(test_encode_bad_present_bits_are_arg),
        cmocka_unit_test(test_encode_sub_id_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
