/*
 * fuzz_common.h — what the codec fuzz targets share: the invariant check that
 * aborts (so libFuzzer keeps the input as a crash), the meaning of the first
 * input byte of fuzz_decode and fuzz_roundtrip, and a walk over a decoded
 * packet that touches every byte of every view it holds and checks each
 * promise codec.h makes about a successfully decoded packet.
 *
 * Views are checked twice: by address (every view must lie inside the bytes
 * it was decoded from, a property's strings inside its block, a filter inside
 * its payload) and by reading every byte, so that AddressSanitizer reports a
 * view that reaches into a redzone even when the address check is wrong.
 * Everything here uses codec.h only.
 */
#ifndef MOAT_FUZZ_COMMON_H
#define MOAT_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* libFuzzer's entry point; declared for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant: on failure, say which one and abort so that libFuzzer saves
 * the input as a crash artifact. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * The first byte of a fuzz_decode / fuzz_roundtrip input:
 *   bits 0-1  session version before the first packet: 0 (expect CONNECT),
 *             4 (3.1.1), 5 (5.0); 3 means 0 as well, so that half of the
 *             inputs take the path a real session takes, through CONNECT;
 *   bit 2     sender: 0 client, 1 server;
 *   bits 3-4  max_packet: 0 (protocol maximum), 16, 128 or 2048 bytes.
 * Bits 5-7 are ignored. tests/fuzz/make_corpus.py writes the same encoding.
 */
static inline codec_decode_opts fuzz_choice(uint8_t c)
{
    static const uint8_t versions[4] = {0, CODEC_V311, CODEC_V5, 0};
    static const size_t max_packets[4] = {0, 16, 128, 2048};
    codec_decode_opts o = {
        .version = versions[c & 3],
        .sender = (c & 4) ? CODEC_FROM_SERVER : CODEC_FROM_CLIENT,
        .max_packet = max_packets[(c >> 3) & 3],
    };
    return o;
}

/* Is view inside region? An empty view may point anywhere (even NULL). */
static inline bool fuzz_inside(codec_bytes view, codec_bytes region)
{
    if (view.len == 0)
        return true;
    if (view.ptr == NULL || region.ptr == NULL || view.len > region.len)
        return false;
    uintptr_t v = (uintptr_t)view.ptr;
    uintptr_t r = (uintptr_t)region.ptr;
    return v >= r && v - r <= region.len - view.len;
}

/* Check that view lies inside region, then read every byte of it. */
static inline void fuzz_view(codec_bytes view, codec_bytes region)
{
    FUZZ_CHECK(fuzz_inside(view, region));
    uint8_t acc = 0;
    for (size_t i = 0; i < view.len; i++)
        acc = (uint8_t)(acc * 31u + view.ptr[i]);
    volatile uint8_t sink = acc;
    (void)sink;
}

static inline bool fuzz_bytes_eq(codec_bytes a, codec_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Single-valued property id as its field of codec_props: a number (BYTE, U16,
 * U32) or a view (STRING, BINARY). Returns false for an id that has no field
 * (unknown, user property, subscription identifier). Written from the spec's
 * table, independently of props.c. */
static inline bool fuzz_prop_field(const codec_props *p, unsigned id, codec_prop *out)
{
    *out = (codec_prop){.id = (uint8_t)id};
    switch (id) {
    case CODEC_PROP_PAYLOAD_FORMAT:
        out->num = p->payload_format;
        return true;
    case CODEC_PROP_MESSAGE_EXPIRY:
        out->num = p->message_expiry;
        return true;
    case CODEC_PROP_CONTENT_TYPE:
        out->str = p->content_type;
        return true;
    case CODEC_PROP_RESPONSE_TOPIC:
        out->str = p->response_topic;
        return true;
    case CODEC_PROP_CORRELATION_DATA:
        out->str = p->correlation_data;
        return true;
    case CODEC_PROP_SESSION_EXPIRY:
        out->num = p->session_expiry;
        return true;
    case CODEC_PROP_ASSIGNED_CLIENT_ID:
        out->str = p->assigned_client_id;
        return true;
    case CODEC_PROP_SERVER_KEEP_ALIVE:
        out->num = p->server_keep_alive;
        return true;
    case CODEC_PROP_AUTH_METHOD:
        out->str = p->auth_method;
        return true;
    case CODEC_PROP_AUTH_DATA:
        out->str = p->auth_data;
        return true;
    case CODEC_PROP_REQUEST_PROBLEM_INFO:
        out->num = p->request_problem_info;
        return true;
    case CODEC_PROP_WILL_DELAY:
        out->num = p->will_delay;
        return true;
    case CODEC_PROP_REQUEST_RESPONSE_INFO:
        out->num = p->request_response_info;
        return true;
    case CODEC_PROP_RESPONSE_INFO:
        out->str = p->response_info;
        return true;
    case CODEC_PROP_SERVER_REFERENCE:
        out->str = p->server_reference;
        return true;
    case CODEC_PROP_REASON_STRING:
        out->str = p->reason_string;
        return true;
    case CODEC_PROP_RECEIVE_MAXIMUM:
        out->num = p->receive_maximum;
        return true;
    case CODEC_PROP_TOPIC_ALIAS_MAXIMUM:
        out->num = p->topic_alias_maximum;
        return true;
    case CODEC_PROP_TOPIC_ALIAS:
        out->num = p->topic_alias;
        return true;
    case CODEC_PROP_MAXIMUM_QOS:
        out->num = p->maximum_qos;
        return true;
    case CODEC_PROP_RETAIN_AVAILABLE:
        out->num = p->retain_available;
        return true;
    case CODEC_PROP_MAXIMUM_PACKET_SIZE:
        out->num = p->maximum_packet_size;
        return true;
    case CODEC_PROP_WILDCARD_SUB_AVAILABLE:
        out->num = p->wildcard_sub_available;
        return true;
    case CODEC_PROP_SUB_ID_AVAILABLE:
        out->num = p->sub_id_available;
        return true;
    case CODEC_PROP_SHARED_SUB_AVAILABLE:
        out->num = p->shared_sub_available;
        return true;
    default:
        return false;
    }
}

static inline bool fuzz_is_text(codec_prop_type t)
{
    return t == CODEC_PT_STRING || t == CODEC_PT_STRING_PAIR;
}

static inline bool fuzz_is_view(codec_prop_type t)
{
    return t == CODEC_PT_STRING || t == CODEC_PT_BINARY || t == CODEC_PT_STRING_PAIR;
}

/* A property block with nothing in it (what 3.1.1 packets carry). */
static inline bool fuzz_props_empty(const codec_props *p)
{
    return p->present == 0 && p->raw.len == 0 && p->user_count == 0 && p->sub_id_count == 0;
}

/*
 * Walk a property block that codec_props_decode (or a packet decoder)
 * accepted for ctx: every property in raw must come back from
 * codec_props_next, be known and allowed in ctx, keep its views inside raw;
 * the walk must end exactly at the end of raw; the single-valued ones must be
 * exactly those with a `present` bit, each once, with the value the struct
 * holds; the repeatable ones must match user_count, sub_id_count and
 * subscription_id.
 */
static inline void fuzz_walk_props(const codec_props *p, codec_prop_context ctx, codec_bytes region)
{
    fuzz_view(p->raw, region);
    size_t pos = 0;
    size_t n = 0;
    size_t users = 0;
    size_t subs = 0;
    uint32_t first_sub = 0;
    uint64_t seen = 0;
    codec_prop prop;
    while (codec_props_next(p->raw, &pos, &prop)) {
        FUZZ_CHECK(pos <= p->raw.len);
        FUZZ_CHECK(++n <= p->raw.len); /* every property takes at least two bytes */
        codec_prop_type type;
        FUZZ_CHECK(codec_prop_type_of(prop.id, &type));
        FUZZ_CHECK(codec_prop_allowed(prop.id, ctx));
        fuzz_view(prop.str, p->raw);
        fuzz_view(prop.value, p->raw);
        if (!fuzz_is_view(type))
            FUZZ_CHECK(prop.str.len == 0 && prop.value.len == 0);
        if (fuzz_is_text(type)) {
            FUZZ_CHECK(codec_utf8_valid(prop.str));
            FUZZ_CHECK(codec_utf8_valid(prop.value));
        }
        if (prop.id == CODEC_PROP_USER) {
            users++;
        } else if (prop.id == CODEC_PROP_SUBSCRIPTION_ID) {
            FUZZ_CHECK(prop.num >= 1 && prop.num <= CODEC_MAX_VBI);
            if (subs++ == 0)
                first_sub = prop.num;
        } else {
            FUZZ_CHECK(!((seen >> prop.id) & 1u));
            seen |= (uint64_t)1 << prop.id;
            FUZZ_CHECK(CODEC_HAS(p, prop.id));
            codec_prop field;
            FUZZ_CHECK(fuzz_prop_field(p, prop.id, &field));
            FUZZ_CHECK(field.num == prop.num);
            FUZZ_CHECK(fuzz_bytes_eq(field.str, prop.str));
            /* The struct's view is the one in raw, not a copy. */
            FUZZ_CHECK(field.str.len == 0 || field.str.ptr == prop.str.ptr);
        }
    }
    FUZZ_CHECK(pos == p->raw.len);
    FUZZ_CHECK(seen == p->present);
    FUZZ_CHECK(users == p->user_count);
    FUZZ_CHECK(subs == p->sub_id_count);
    FUZZ_CHECK(subs == 0 || first_sub == p->subscription_id);
    /* Several subscription identifiers only in PUBLISH (3.3.2.3.8). */
    FUZZ_CHECK(subs <= 1 || ctx == CODEC_CTX_PUBLISH);
    /* Authentication Data needs a method (3.1.2.11.10). */
    FUZZ_CHECK(!CODEC_HAS(p, CODEC_PROP_AUTH_DATA) || CODEC_HAS(p, CODEC_PROP_AUTH_METHOD));
}

static inline void fuzz_walk_props_of(const codec_props *p, uint8_t version, codec_prop_context ctx,
                                      codec_bytes region)
{
    if (version == CODEC_V5)
        fuzz_walk_props(p, ctx, region);
    else
        FUZZ_CHECK(fuzz_props_empty(p));
}

/* Next user property or subscription identifier in a block, skipping the
 * single-valued properties (which the encoder reorders). */
static inline bool fuzz_next_repeatable(codec_bytes raw, size_t *pos, codec_prop *out)
{
    while (codec_props_next(raw, pos, out)) {
        if (out->id == CODEC_PROP_USER || out->id == CODEC_PROP_SUBSCRIPTION_ID)
            return true;
    }
    return false;
}

/* Two decoded property blocks hold the same properties: the same `present`
 * bits and values, the same counts, and the same user properties and
 * subscription identifiers in the same order. */
static inline void fuzz_check_props_eq(const codec_props *a, const codec_props *b)
{
    FUZZ_CHECK(a->present == b->present);
    for (unsigned id = 1; id <= CODEC_PROP_MAX_ID; id++) {
        if (!CODEC_HAS(a, id))
            continue;
        codec_prop fa;
        codec_prop fb;
        FUZZ_CHECK(fuzz_prop_field(a, id, &fa));
        FUZZ_CHECK(fuzz_prop_field(b, id, &fb));
        FUZZ_CHECK(fa.num == fb.num);
        FUZZ_CHECK(fuzz_bytes_eq(fa.str, fb.str));
    }
    FUZZ_CHECK(a->user_count == b->user_count);
    FUZZ_CHECK(a->sub_id_count == b->sub_id_count);
    FUZZ_CHECK(a->subscription_id == b->subscription_id);

    size_t pa = 0;
    size_t pb = 0;
    codec_prop ra;
    codec_prop rb;
    for (;;) {
        bool more_a = fuzz_next_repeatable(a->raw, &pa, &ra);
        bool more_b = fuzz_next_repeatable(b->raw, &pb, &rb);
        FUZZ_CHECK(more_a == more_b);
        if (!more_a)
            break;
        FUZZ_CHECK(ra.id == rb.id);
        FUZZ_CHECK(ra.num == rb.num);
        FUZZ_CHECK(fuzz_bytes_eq(ra.str, rb.str));
        FUZZ_CHECK(fuzz_bytes_eq(ra.value, rb.value));
    }
}

/*
 * Everything codec.h promises about a packet that codec_decode returned
 * CODEC_OK for. version is the session's version the packet was decoded
 * under (0 for a CONNECT), region the packet's bytes.
 */
static inline void fuzz_walk_packet(const codec_packet *pkt, uint8_t version, codec_sender sender,
                                    codec_bytes region)
{
    FUZZ_CHECK(pkt->type >= CODEC_CONNECT && pkt->type <= CODEC_AUTH);
    /* Before CONNECT only CONNECT, and only once ([MQTT-3.1.0-1], [MQTT-3.1.0-2]). */
    FUZZ_CHECK((version == 0) == (pkt->type == CODEC_CONNECT));
    /* AUTH is reserved in 3.1.1. */
    FUZZ_CHECK(pkt->type != CODEC_AUTH || version == CODEC_V5);

    switch (pkt->type) {
    case CODEC_CONNECT: {
        const codec_connect *c = &pkt->u.connect;
        uint8_t v = c->protocol_version;
        FUZZ_CHECK(v == CODEC_V311 || v == CODEC_V5);
        fuzz_walk_props_of(&c->props, v, CODEC_CTX_CONNECT, region);
        fuzz_view(c->client_id, region);
        FUZZ_CHECK(codec_utf8_valid(c->client_id));
        fuzz_view(c->will_topic, region);
        fuzz_view(c->will_payload, region);
        if (c->will_flag) {
            FUZZ_CHECK(c->will_qos <= 2);
            FUZZ_CHECK(codec_topic_name_check(c->will_topic) == CODEC_OK);
            fuzz_walk_props_of(&c->will_props, v, CODEC_CTX_WILL, region);
        } else {
            FUZZ_CHECK(c->will_qos == 0 && !c->will_retain);
            FUZZ_CHECK(c->will_topic.len == 0 && c->will_payload.len == 0);
            FUZZ_CHECK(fuzz_props_empty(&c->will_props));
        }
        fuzz_view(c->username, region);
        fuzz_view(c->password, region);
        FUZZ_CHECK(c->username_flag || c->username.len == 0);
        FUZZ_CHECK(c->password_flag || c->password.len == 0);
        FUZZ_CHECK(codec_utf8_valid(c->username));
        /* 3.1.1 needs a user name with a password ([MQTT-3.1.2-22]). */
        FUZZ_CHECK(v == CODEC_V5 || !c->password_flag || c->username_flag);
        break;
    }
    case CODEC_CONNACK: {
        const codec_connack *c = &pkt->u.connack;
        FUZZ_CHECK(!c->session_present || c->reason == 0);
        FUZZ_CHECK(version == CODEC_V5 || c->reason <= 5);
        fuzz_walk_props_of(&c->props, version, CODEC_CTX_CONNACK, region);
        break;
    }
    case CODEC_PUBLISH: {
        const codec_publish *p = &pkt->u.publish;
        FUZZ_CHECK(p->qos <= 2);
        FUZZ_CHECK((p->qos > 0) == (p->packet_id != 0));
        FUZZ_CHECK(p->qos > 0 || !p->dup);
        fuzz_walk_props_of(&p->props, version, CODEC_CTX_PUBLISH, region);
        fuzz_view(p->topic, region);
        bool aliased = version == CODEC_V5 && p->topic.len == 0 &&
                       CODEC_HAS(&p->props, CODEC_PROP_TOPIC_ALIAS);
        FUZZ_CHECK(aliased || codec_topic_name_check(p->topic) == CODEC_OK);
        /* A client never sends a subscription identifier ([MQTT-3.3.4-6]). */
        FUZZ_CHECK(sender == CODEC_FROM_SERVER || p->props.sub_id_count == 0);
        fuzz_view(p->payload, region);
        break;
    }
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP: {
        const codec_ack *a = &pkt->u.ack;
        FUZZ_CHECK(a->packet_id != 0);
        FUZZ_CHECK(version == CODEC_V5 || a->reason == 0);
        fuzz_walk_props_of(&a->props, version, (codec_prop_context)pkt->type, region);
        break;
    }
    case CODEC_SUBSCRIBE: {
        const codec_subscribe *s = &pkt->u.subscribe;
        FUZZ_CHECK(s->packet_id != 0);
        FUZZ_CHECK(s->count > 0);
        fuzz_walk_props_of(&s->props, version, CODEC_CTX_SUBSCRIBE, region);
        fuzz_view(s->payload, region);
        size_t pos = 0;
        size_t n = 0;
        codec_subscription e;
        while (codec_subscribe_next(s, version, &pos, &e)) {
            FUZZ_CHECK(++n <= s->count);
            FUZZ_CHECK(pos <= s->payload.len);
            fuzz_view(e.filter, s->payload);
            FUZZ_CHECK(codec_utf8_valid(e.filter));
            FUZZ_CHECK(e.qos <= 2 && e.retain_handling <= 2);
            if (version == CODEC_V311)
                FUZZ_CHECK(!e.no_local && !e.retain_as_published && e.retain_handling == 0);
        }
        FUZZ_CHECK(n == s->count);
        FUZZ_CHECK(pos == s->payload.len);
        break;
    }
    case CODEC_SUBACK:
    case CODEC_UNSUBACK: {
        const codec_suback *s = &pkt->u.suback;
        FUZZ_CHECK(s->packet_id != 0);
        fuzz_walk_props_of(&s->props, version, (codec_prop_context)pkt->type, region);
        fuzz_view(s->reasons, region);
        bool none = pkt->type == CODEC_UNSUBACK && version == CODEC_V311;
        FUZZ_CHECK(none == (s->reasons.len == 0));
        break;
    }
    case CODEC_UNSUBSCRIBE: {
        const codec_unsubscribe *u = &pkt->u.unsubscribe;
        FUZZ_CHECK(u->packet_id != 0);
        FUZZ_CHECK(u->count > 0);
        fuzz_walk_props_of(&u->props, version, CODEC_CTX_UNSUBSCRIBE, region);
        fuzz_view(u->payload, region);
        size_t pos = 0;
        size_t n = 0;
        codec_bytes filter;
        while (codec_unsubscribe_next(u, &pos, &filter)) {
            FUZZ_CHECK(++n <= u->count);
            FUZZ_CHECK(pos <= u->payload.len);
            fuzz_view(filter, u->payload);
            FUZZ_CHECK(codec_utf8_valid(filter));
        }
        FUZZ_CHECK(n == u->count);
        FUZZ_CHECK(pos == u->payload.len);
        break;
    }
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        break;
    case CODEC_DISCONNECT:
    case CODEC_AUTH: {
        const codec_disconnect *d = &pkt->u.disconnect;
        FUZZ_CHECK(version == CODEC_V5 || d->reason == 0);
        fuzz_walk_props_of(&d->props, version, (codec_prop_context)pkt->type, region);
        break;
    }
    default:
        FUZZ_CHECK(!"unknown packet type decoded");
    }
}

#endif /* MOAT_FUZZ_COMMON_H */
