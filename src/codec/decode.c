/*
 * decode.c — turn one framed MQTT packet into a codec_packet of views.
 *
 * Each packet type has its own small function over a bounded reader that
 * covers exactly the packet's body; a read past the body fails the reader, and
 * bytes left over at the end make the packet malformed, so a decoder can
 * neither over-read nor silently ignore trailing data. Rules that depend on
 * the session (packet ids in use, topic aliases, keep-alive) belong to the
 * session layer; rules that the bytes alone decide are enforced here.
 */
#include <string.h>

#include "internal.h"

/* A UTF-8 string field: invalid encoding makes the packet malformed
 * ([MQTT-1.5.4-1], [MQTT-1.5.4-2]). */
static codec_status read_string(rd *r, codec_bytes *out)
{
    *out = rd_lenbytes(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    return codec_utf8_valid(*out) ? CODEC_OK : CODEC_ERR_MALFORMED;
}

/* The body must have been read exactly. */
static codec_status finish(const rd *r)
{
    if (r->failed || r->pos != r->len)
        return CODEC_ERR_MALFORMED;
    return CODEC_OK;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        codec_status try_st_ = (expr);                                                             \
        if (try_st_ != CODEC_OK)                                                                   \
            return try_st_;                                                                        \
    } while (0)

static codec_status decode_connect(rd *r, codec_connect *c)
{
    codec_bytes name = rd_lenbytes(r);
    uint8_t level = rd_u8(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    c->protocol_version = level;
    if (name.len != 4 || memcmp(name.ptr, "MQTT", 4) != 0 ||
        (level != CODEC_V311 && level != CODEC_V5))
        return CODEC_ERR_BAD_VERSION;

    uint8_t flags = rd_u8(r);
    c->keep_alive = rd_u16(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    if (flags & 0x01)
        return CODEC_ERR_MALFORMED; /* reserved: [MQTT-3.1.2-3] */
    c->clean_start = flags & 0x02;
    c->will_flag = flags & 0x04;
    c->will_qos = (flags >> 3) & 3;
    c->will_retain = flags & 0x20;
    c->password_flag = flags & 0x40;
    c->username_flag = flags & 0x80;
    if (c->will_qos == 3)
        return CODEC_ERR_MALFORMED; /* [MQTT-3.1.2-12] */
    if (!c->will_flag && (c->will_qos || c->will_retain))
        return CODEC_ERR_MALFORMED; /* [MQTT-3.1.2-11], [MQTT-3.1.2-13] */
    if (level == CODEC_V311 && c->password_flag && !c->username_flag)
        return CODEC_ERR_PROTOCOL; /* [MQTT-3.1.2-22] in 3.1.1 only */

    if (level == CODEC_V5)
        TRY(props_read(r, CODEC_CTX_CONNECT, CODEC_FROM_CLIENT, &c->props));
    TRY(read_string(r, &c->client_id));
    if (c->will_flag) {
        if (level == CODEC_V5)
            TRY(props_read(r, CODEC_CTX_WILL, CODEC_FROM_CLIENT, &c->will_props));
        TRY(read_string(r, &c->will_topic));
        if (codec_topic_name_check(c->will_topic) != CODEC_OK)
            return CODEC_ERR_TOPIC_NAME;
        c->will_payload = rd_lenbytes(r);
    }
    if (c->username_flag)
        TRY(read_string(r, &c->username));
    if (c->password_flag)
        c->password = rd_lenbytes(r);
    return finish(r);
}

static codec_status decode_connack(rd *r, uint8_t version, codec_connack *c)
{
    uint8_t flags = rd_u8(r);
    c->reason = rd_u8(r);
    if (r->failed || (flags & 0xfe))
        return CODEC_ERR_MALFORMED; /* [MQTT-3.2.2-1] */
    c->session_present = flags & 1;
    if (!reason_valid(CODEC_CONNACK, version, CODEC_FROM_SERVER, c->reason))
        return CODEC_ERR_MALFORMED;
    if (c->session_present && c->reason != 0)
        return CODEC_ERR_PROTOCOL; /* [MQTT-3.2.2-6] */
    if (version == CODEC_V5)
        TRY(props_read(r, CODEC_CTX_CONNACK, CODEC_FROM_SERVER, &c->props));
    return finish(r);
}

static codec_status decode_publish(rd *r, uint8_t flags, const codec_decode_opts *o,
                                   codec_publish *p)
{
    p->dup = flags & 0x08;
    p->qos = (flags >> 1) & 3; /* 3 was refused by the framer */
    p->retain = flags & 0x01;
    if (p->qos == 3)
        return CODEC_ERR_MALFORMED;
    if (p->qos == 0 && p->dup)
        return CODEC_ERR_PROTOCOL; /* [MQTT-3.3.1-2] */

    TRY(read_string(r, &p->topic));
    if (p->qos > 0) {
        p->packet_id = rd_u16(r);
        if (r->failed)
            return CODEC_ERR_MALFORMED;
        if (p->packet_id == 0)
            return CODEC_ERR_PROTOCOL; /* [MQTT-2.2.1-3] */
    }
    if (o->version == CODEC_V5)
        TRY(props_read(r, CODEC_CTX_PUBLISH, o->sender, &p->props));
    /* An empty topic stands for a topic alias, which only MQTT 5 has. */
    bool aliased = p->topic.len == 0 && o->version == CODEC_V5 &&
                   CODEC_HAS(&p->props, CODEC_PROP_TOPIC_ALIAS);
    /* MQTT 5 3.3.2.1: "It is a Protocol Error if the Topic Name is zero
     * length and there is no Topic Alias." */
    if (p->topic.len == 0 && o->version == CODEC_V5 && !aliased)
        return CODEC_ERR_PROTOCOL;
    if (!aliased && codec_topic_name_check(p->topic) != CODEC_OK)
        return CODEC_ERR_TOPIC_NAME;
    p->payload = rd_rest(r);
    return finish(r);
}

static codec_status decode_ack(rd *r, unsigned type, const codec_decode_opts *o, codec_ack *a)
{
    a->packet_id = rd_u16(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    if (a->packet_id == 0)
        return CODEC_ERR_PROTOCOL;
    /* MQTT 5: a reason code and properties, each omitted when the packet
     * ends before it (3.4.2.1). */
    if (o->version == CODEC_V5 && rd_left(r) > 0) {
        a->reason = rd_u8(r);
        if (!reason_valid(type, o->version, o->sender, a->reason))
            return CODEC_ERR_MALFORMED;
        if (rd_left(r) > 0)
            TRY(props_read(r, (codec_prop_context)type, o->sender, &a->props));
    }
    return finish(r);
}

static bool starts_with_share(codec_bytes filter)
{
    return filter.len >= 7 && memcmp(filter.ptr, "$share/", 7) == 0;
}

/* One SUBSCRIBE entry: the filter (valid UTF-8; its wildcard syntax is the
 * session's to judge, with reason 0x8F) and the options byte. */
static codec_status read_subscription(rd *r, uint8_t version, codec_subscription *s)
{
    TRY(read_string(r, &s->filter));
    uint8_t opts = rd_u8(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    uint8_t reserved = version == CODEC_V5 ? 0xc0 : 0xfc;
    if ((opts & reserved) || ((opts & 3) == 3 && version != CODEC_V5))
        return CODEC_ERR_MALFORMED; /* [MQTT-3.8.3-5], [MQTT-3-8.3-4] */
    if ((opts & 3) == 3)
        return CODEC_ERR_PROTOCOL; /* MQTT 5 3.8.3.1: Maximum QoS 3 */
    s->qos = opts & 3;
    s->no_local = version == CODEC_V5 && (opts & 0x04);
    s->retain_as_published = version == CODEC_V5 && (opts & 0x08);
    s->retain_handling = version == CODEC_V5 ? (opts >> 4) & 3 : 0;
    if (s->retain_handling == 3)
        return CODEC_ERR_PROTOCOL;
    if (s->no_local && starts_with_share(s->filter))
        return CODEC_ERR_PROTOCOL; /* [MQTT-3.8.3-4] */
    return CODEC_OK;
}

static codec_status decode_subscribe(rd *r, uint8_t version, codec_subscribe *s)
{
    s->packet_id = rd_u16(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    if (s->packet_id == 0)
        return CODEC_ERR_PROTOCOL;
    if (version == CODEC_V5)
        TRY(props_read(r, CODEC_CTX_SUBSCRIBE, CODEC_FROM_CLIENT, &s->props));
    size_t start = r->pos;
    while (rd_left(r) > 0) {
        codec_subscription entry;
        TRY(read_subscription(r, version, &entry));
        s->count++;
    }
    if (s->count == 0)
        return CODEC_ERR_PROTOCOL; /* [MQTT-3.8.3-3] */
    s->payload = (codec_bytes){r->buf + start, r->pos - start};
    return finish(r);
}

bool codec_subscribe_next(const codec_subscribe *sub, uint8_t version, size_t *pos,
                          codec_subscription *out)
{
    if (*pos >= sub->payload.len)
        return false;
    rd r = rd_init(sub->payload.ptr, sub->payload.len);
    r.pos = *pos;
    *out = (codec_subscription){0};
    if (read_subscription(&r, version, out) != CODEC_OK)
        return false;
    *pos = r.pos;
    return true;
}

static codec_status decode_suback(rd *r, unsigned type, const codec_decode_opts *o,
                                  codec_suback *s)
{
    s->packet_id = rd_u16(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    if (s->packet_id == 0)
        return CODEC_ERR_PROTOCOL;
    if (o->version == CODEC_V5)
        TRY(props_read(r, (codec_prop_context)type, CODEC_FROM_SERVER, &s->props));
    s->reasons = rd_rest(r);
    /* A 3.1.1 UNSUBACK has no payload; every other form has one code per
     * filter, so at least one. */
    bool empty_ok = type == CODEC_UNSUBACK && o->version == CODEC_V311;
    if (empty_ok != (s->reasons.len == 0))
        return CODEC_ERR_MALFORMED;
    for (size_t i = 0; i < s->reasons.len; i++)
        if (!reason_valid(type, o->version, CODEC_FROM_SERVER, s->reasons.ptr[i]))
            return CODEC_ERR_MALFORMED;
    return finish(r);
}

static codec_status decode_unsubscribe(rd *r, uint8_t version, codec_unsubscribe *u)
{
    u->packet_id = rd_u16(r);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    if (u->packet_id == 0)
        return CODEC_ERR_PROTOCOL;
    if (version == CODEC_V5)
        TRY(props_read(r, CODEC_CTX_UNSUBSCRIBE, CODEC_FROM_CLIENT, &u->props));
    size_t start = r->pos;
    while (rd_left(r) > 0) {
        codec_bytes filter;
        TRY(read_string(r, &filter));
        u->count++;
    }
    if (u->count == 0)
        return CODEC_ERR_PROTOCOL; /* [MQTT-3.10.3-2] */
    u->payload = (codec_bytes){r->buf + start, r->pos - start};
    return finish(r);
}

bool codec_unsubscribe_next(const codec_unsubscribe *unsub, size_t *pos, codec_bytes *filter)
{
    if (*pos >= unsub->payload.len)
        return false;
    rd r = rd_init(unsub->payload.ptr, unsub->payload.len);
    r.pos = *pos;
    *filter = rd_lenbytes(&r);
    if (r.failed)
        return false;
    *pos = r.pos;
    return true;
}

/* DISCONNECT and AUTH: in MQTT 5 an absent reason means 0x00 (Success). */
static codec_status decode_disconnect(rd *r, unsigned type, const codec_decode_opts *o,
                                      codec_disconnect *d)
{
    if (o->version == CODEC_V5 && rd_left(r) > 0) {
        d->reason = rd_u8(r);
        if (!reason_valid(type, o->version, o->sender, d->reason))
            return CODEC_ERR_MALFORMED;
        if (rd_left(r) > 0)
            TRY(props_read(r, (codec_prop_context)type, o->sender, &d->props));
    } else if (o->version == CODEC_V5 && !reason_valid(type, o->version, o->sender, 0x00)) {
        return CODEC_ERR_MALFORMED; /* absent is 0x00, which a client's AUTH may not carry */
    }
    return finish(r);
}

/* Packets each side may send (MQTT 5 table 2-1). */
static bool sender_may_send(unsigned type, codec_sender sender)
{
    switch (type) {
    case CODEC_CONNECT:
    case CODEC_SUBSCRIBE:
    case CODEC_UNSUBSCRIBE:
    case CODEC_PINGREQ:
        return sender == CODEC_FROM_CLIENT;
    case CODEC_CONNACK:
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
    case CODEC_PINGRESP:
        return sender == CODEC_FROM_SERVER;
    default:
        return true;
    }
}

/* The checks every packet passes before its body is read. */
static codec_status decode_prologue(const codec_frame *frame, const codec_decode_opts *opts,
                                    codec_packet *out)
{
    memset(out, 0, sizeof(*out));
    out->type = frame->type;
    unsigned type = frame->type;
    int required = frame_required_flags(type);
    if (type == 0 || (required >= 0 && frame->flags != required))
        return CODEC_ERR_MALFORMED;
    if (type == CODEC_AUTH && opts->version == CODEC_V311)
        return CODEC_ERR_MALFORMED; /* type 15 is reserved in 3.1.1 */
    if (!sender_may_send(type, opts->sender))
        return CODEC_ERR_PROTOCOL;
    /* Before CONNECT only CONNECT; after it, never again ([MQTT-3.1.0-1/2]). */
    if ((opts->version == 0) != (type == CODEC_CONNECT))
        return CODEC_ERR_PROTOCOL;
    return CODEC_OK;
}

/* The bodies of every packet a server may send (and of those either side
 * sends). Kept apart from the client-only decoders so that a device, which
 * calls codec_decode_body_from_server, links none of CONNECT, SUBSCRIBE and
 * UNSUBSCRIBE (with -ffunction-sections and --gc-sections). */
static codec_status decode_common(rd *r, const codec_frame *frame, const codec_decode_opts *opts,
                                  codec_packet *out)
{
    unsigned type = frame->type;
    switch (type) {
    case CODEC_CONNACK:
        return decode_connack(r, opts->version, &out->u.connack);
    case CODEC_PUBLISH:
        return decode_publish(r, frame->flags, opts, &out->u.publish);
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        return decode_ack(r, type, opts, &out->u.ack);
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        return decode_suback(r, type, opts, &out->u.suback);
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        return finish(r);
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        return decode_disconnect(r, type, opts, &out->u.disconnect);
    default:
        return CODEC_ERR_MALFORMED;
    }
}

codec_status codec_decode_body(const codec_frame *frame, const uint8_t *body,
                               const codec_decode_opts *opts, codec_packet *out)
{
    TRY(decode_prologue(frame, opts, out));
    rd r = rd_init(body, frame->remaining_len);
    switch (frame->type) {
    case CODEC_CONNECT:
        return decode_connect(&r, &out->u.connect);
    case CODEC_SUBSCRIBE:
        return decode_subscribe(&r, opts->version, &out->u.subscribe);
    case CODEC_UNSUBSCRIBE:
        return decode_unsubscribe(&r, opts->version, &out->u.unsubscribe);
    default:
        return decode_common(&r, frame, opts, out);
    }
}

codec_status codec_decode_body_from_server(const codec_frame *frame, const uint8_t *body,
                                           uint8_t version, codec_packet *out)
{
    const codec_decode_opts opts = {.version = version, .sender = CODEC_FROM_SERVER};
    /* The prologue refuses every packet only a client sends (and CONNECT),
     * so decode_common sees exactly what codec_decode_body's switch would. */
    TRY(decode_prologue(frame, &opts, out));
    rd r = rd_init(body, frame->remaining_len);
    return decode_common(&r, frame, &opts, out);
}

codec_status codec_decode(const uint8_t *buf, size_t len, const codec_decode_opts *opts,
                          codec_packet *out, size_t *consumed)
{
    codec_frame frame;
    *consumed = 0;
    codec_status st = codec_frame_parse(buf, len, opts->max_packet, &frame);
    if (st != CODEC_OK) {
        memset(out, 0, sizeof(*out));
        return st;
    }
    st = codec_decode_body(&frame, buf + frame.header_len, opts, out);
    if (st == CODEC_OK)
        *consumed = frame.total_len;
    return st;
}
