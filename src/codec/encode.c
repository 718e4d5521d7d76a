/*
 * encode.c — write MQTT packets into caller buffers.
 *
 * Every packet body is produced by one function that runs twice through the
 * counting writer: first to measure (so the fixed header's remaining length is
 * known and the caller learns the size it needs), then to write. Fields are
 * checked against their ranges so that a caller bug turns into CODEC_ERR_ARG
 * instead of a packet the peer would reject; the encoder trusts that strings
 * and topics were validated where they came from.
 */
#include <string.h>

#include "internal.h"

typedef codec_status (*body_fn)(wr *w, const void *pkt, uint8_t version, unsigned type);

static bool fits(codec_bytes b)
{
    return b.len <= CODEC_MAX_STRING && (b.len == 0 || b.ptr != NULL);
}

static bool props_empty(const codec_props *p)
{
    return p->present == 0 && p->raw.len == 0 && p->user_len == 0 && p->sub_ids_len == 0;
}

static bool version_ok(uint8_t version)
{
    return version == CODEC_V311 || version == CODEC_V5;
}

/* Properties in MQTT 5; in 3.1.1 there must be none to write. */
static codec_status write_props(wr *w, const codec_props *p, codec_prop_context ctx,
                                uint8_t version)
{
    if (version == CODEC_V5)
        return props_write(w, p, ctx);
    return props_empty(p) ? CODEC_OK : CODEC_ERR_ARG;
}

static codec_status encode_packet(uint8_t first_byte, body_fn body, const void *pkt,
                                  uint8_t version, uint8_t *out, size_t cap, size_t *written)
{
    *written = 0;
    unsigned type = first_byte >> 4;
    wr measure = wr_init(NULL, 0);
    codec_status st = body(&measure, pkt, version, type);
    if (st != CODEC_OK)
        return st;
    if (measure.pos > CODEC_MAX_REMAINING_LENGTH)
        return CODEC_ERR_ARG;
    size_t total = 1 + vbi_size(measure.pos) + measure.pos;
    *written = total;
    if (total > cap || out == NULL)
        return CODEC_ERR_BUFFER;
    wr w = wr_init(out, cap);
    wr_u8(&w, first_byte);
    wr_vbi(&w, (uint32_t)measure.pos);
    st = body(&w, pkt, version, type);
    return st == CODEC_OK && w.pos == total ? CODEC_OK : CODEC_ERR_ARG;
}

/* ---- bodies ----------------------------------------------------------- */

static codec_status connect_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_connect *c = pkt;
    (void)type;
    if (!version_ok(version) || c->will_qos > 2 || (!c->will_flag && (c->will_qos || c->will_retain)))
        return CODEC_ERR_ARG;
    if (version == CODEC_V311 && c->password_flag && !c->username_flag)
        return CODEC_ERR_ARG;
    if (!fits(c->client_id) || !fits(c->will_topic) || !fits(c->will_payload) ||
        !fits(c->username) || !fits(c->password))
        return CODEC_ERR_ARG;

    uint8_t flags = (uint8_t)((c->clean_start ? 0x02 : 0) | (c->will_flag ? 0x04 : 0) |
                              c->will_qos << 3 | (c->will_retain ? 0x20 : 0) |
                              (c->password_flag ? 0x40 : 0) | (c->username_flag ? 0x80 : 0));
    wr_lenbytes(w, CODEC_LIT("MQTT"));
    wr_u8(w, version);
    wr_u8(w, flags);
    wr_u16(w, c->keep_alive);
    codec_status st = write_props(w, &c->props, CODEC_CTX_CONNECT, version);
    if (st != CODEC_OK)
        return st;
    wr_lenbytes(w, c->client_id);
    if (c->will_flag) {
        if ((st = write_props(w, &c->will_props, CODEC_CTX_WILL, version)) != CODEC_OK)
            return st;
        wr_lenbytes(w, c->will_topic);
        wr_lenbytes(w, c->will_payload);
    } else if (!props_empty(&c->will_props)) {
        return CODEC_ERR_ARG;
    }
    if (c->username_flag)
        wr_lenbytes(w, c->username);
    if (c->password_flag)
        wr_lenbytes(w, c->password);
    return CODEC_OK;
}

static codec_status connack_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_connack *c = pkt;
    (void)type;
    if (!version_ok(version))
        return CODEC_ERR_ARG;
    wr_u8(w, c->session_present ? 1 : 0);
    wr_u8(w, c->reason);
    return write_props(w, &c->props, CODEC_CTX_CONNACK, version);
}

static codec_status publish_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_publish *p = pkt;
    (void)type;
    if (!version_ok(version) || p->qos > 2 || !fits(p->topic))
        return CODEC_ERR_ARG;
    if ((p->qos > 0) != (p->packet_id != 0))
        return CODEC_ERR_ARG;
    wr_lenbytes(w, p->topic);
    if (p->qos > 0)
        wr_u16(w, p->packet_id);
    codec_status st = write_props(w, &p->props, CODEC_CTX_PUBLISH, version);
    if (st != CODEC_OK)
        return st;
    if (p->payload.len > 0 && p->payload.ptr == NULL)
        return CODEC_ERR_ARG;
    if (p->payload.len > CODEC_MAX_REMAINING_LENGTH)
        return CODEC_ERR_ARG;
    wr_raw(w, p->payload.ptr, p->payload.len);
    return CODEC_OK;
}

/* PUBACK..PUBCOMP, and the reason + properties tail shared with DISCONNECT
 * and AUTH: MQTT 5 leaves out a Success reason with no properties. */
static codec_status reason_tail(wr *w, uint8_t reason, const codec_props *props, unsigned type,
                                uint8_t version)
{
    if (version == CODEC_V311)
        return reason == 0 && props_empty(props) ? CODEC_OK : CODEC_ERR_ARG;
    if (reason == 0 && props_empty(props))
        return CODEC_OK;
    wr_u8(w, reason);
    if (props_empty(props))
        return CODEC_OK;
    return props_write(w, props, (codec_prop_context)type);
}

static codec_status ack_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_ack *a = pkt;
    if (!version_ok(version) || a->packet_id == 0)
        return CODEC_ERR_ARG;
    wr_u16(w, a->packet_id);
    return reason_tail(w, a->reason, &a->props, type, version);
}

static codec_status subscribe_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_subscribe *s = pkt;
    (void)type;
    if (!version_ok(version) || s->packet_id == 0 || s->count == 0 || s->list == NULL)
        return CODEC_ERR_ARG;
    wr_u16(w, s->packet_id);
    codec_status st = write_props(w, &s->props, CODEC_CTX_SUBSCRIBE, version);
    if (st != CODEC_OK)
        return st;
    for (size_t i = 0; i < s->count; i++) {
        const codec_subscription *e = &s->list[i];
        if (!fits(e->filter) || e->qos > 2 || e->retain_handling > 2)
            return CODEC_ERR_ARG;
        if (version == CODEC_V311 && (e->no_local || e->retain_as_published || e->retain_handling))
            return CODEC_ERR_ARG;
        wr_lenbytes(w, e->filter);
        wr_u8(w, (uint8_t)(e->qos | (e->no_local ? 0x04 : 0) | (e->retain_as_published ? 0x08 : 0) |
                           e->retain_handling << 4));
    }
    return CODEC_OK;
}

static codec_status suback_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_suback *s = pkt;
    if (!version_ok(version) || s->packet_id == 0)
        return CODEC_ERR_ARG;
    bool empty_ok = type == CODEC_UNSUBACK && version == CODEC_V311;
    if (empty_ok != (s->reasons.len == 0) || (s->reasons.len && !s->reasons.ptr))
        return CODEC_ERR_ARG;
    wr_u16(w, s->packet_id);
    codec_status st = write_props(w, &s->props, (codec_prop_context)type, version);
    if (st != CODEC_OK)
        return st;
    if (s->reasons.len > CODEC_MAX_REMAINING_LENGTH)
        return CODEC_ERR_ARG;
    wr_raw(w, s->reasons.ptr, s->reasons.len);
    return CODEC_OK;
}

static codec_status unsubscribe_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_unsubscribe *u = pkt;
    (void)type;
    if (!version_ok(version) || u->packet_id == 0 || u->count == 0 || u->list == NULL)
        return CODEC_ERR_ARG;
    wr_u16(w, u->packet_id);
    codec_status st = write_props(w, &u->props, CODEC_CTX_UNSUBSCRIBE, version);
    if (st != CODEC_OK)
        return st;
    for (size_t i = 0; i < u->count; i++) {
        if (!fits(u->list[i]))
            return CODEC_ERR_ARG;
        wr_lenbytes(w, u->list[i]);
    }
    return CODEC_OK;
}

static codec_status empty_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    (void)w, (void)pkt, (void)version, (void)type;
    return CODEC_OK;
}

static codec_status disconnect_body(wr *w, const void *pkt, uint8_t version, unsigned type)
{
    const codec_disconnect *d = pkt;
    if (!version_ok(version) || (type == CODEC_AUTH && version != CODEC_V5))
        return CODEC_ERR_ARG;
    return reason_tail(w, d->reason, &d->props, type, version);
}

/* ---- public entry points ---------------------------------------------- */

codec_status codec_encode_connect(const codec_connect *p, uint8_t *out, size_t cap,
                                  size_t *written)
{
    return encode_packet(CODEC_CONNECT << 4, connect_body, p, p->protocol_version, out, cap,
                         written);
}

codec_status codec_encode_connack(const codec_connack *p, uint8_t version, uint8_t *out,
                                  size_t cap, size_t *written)
{
    return encode_packet(CODEC_CONNACK << 4, connack_body, p, version, out, cap, written);
}

codec_status codec_encode_publish(const codec_publish *p, uint8_t version, uint8_t *out,
                                  size_t cap, size_t *written)
{
    uint8_t first = (uint8_t)(CODEC_PUBLISH << 4 | (p->dup ? 0x08 : 0) | (p->qos & 3) << 1 |
                              (p->retain ? 1 : 0));
    return encode_packet(first, publish_body, p, version, out, cap, written);
}

codec_status codec_encode_ack(uint8_t type, const codec_ack *p, uint8_t version, uint8_t *out,
                              size_t cap, size_t *written)
{
    *written = 0;
    if (type < CODEC_PUBACK || type > CODEC_PUBCOMP)
        return CODEC_ERR_ARG;
    uint8_t first = (uint8_t)(type << 4 | frame_required_flags(type));
    return encode_packet(first, ack_body, p, version, out, cap, written);
}

codec_status codec_encode_subscribe(const codec_subscribe *p, uint8_t version, uint8_t *out,
                                    size_t cap, size_t *written)
{
    return encode_packet(CODEC_SUBSCRIBE << 4 | 0x2, subscribe_body, p, version, out, cap,
                         written);
}

codec_status codec_encode_suback(uint8_t type, const codec_suback *p, uint8_t version,
                                 uint8_t *out, size_t cap, size_t *written)
{
    *written = 0;
    if (type != CODEC_SUBACK && type != CODEC_UNSUBACK)
        return CODEC_ERR_ARG;
    return encode_packet((uint8_t)(type << 4), suback_body, p, version, out, cap, written);
}

codec_status codec_encode_unsubscribe(const codec_unsubscribe *p, uint8_t version, uint8_t *out,
                                      size_t cap, size_t *written)
{
    return encode_packet(CODEC_UNSUBSCRIBE << 4 | 0x2, unsubscribe_body, p, version, out, cap,
                         written);
}

codec_status codec_encode_ping(uint8_t type, uint8_t *out, size_t cap, size_t *written)
{
    *written = 0;
    if (type != CODEC_PINGREQ && type != CODEC_PINGRESP)
        return CODEC_ERR_ARG;
    return encode_packet((uint8_t)(type << 4), empty_body, NULL, CODEC_V5, out, cap, written);
}

codec_status codec_encode_disconnect(uint8_t type, const codec_disconnect *p, uint8_t version,
                                     uint8_t *out, size_t cap, size_t *written)
{
    *written = 0;
    if (type != CODEC_DISCONNECT && type != CODEC_AUTH)
        return CODEC_ERR_ARG;
    return encode_packet((uint8_t)(type << 4), disconnect_body, p, version, out, cap, written);
}

codec_status codec_encode(const codec_packet *pkt, uint8_t version, uint8_t *out, size_t cap,
                          size_t *written)
{
    *written = 0;
    switch (pkt->type) {
    case CODEC_CONNECT:
        return codec_encode_connect(&pkt->u.connect, out, cap, written);
    case CODEC_CONNACK:
        return codec_encode_connack(&pkt->u.connack, version, out, cap, written);
    case CODEC_PUBLISH:
        return codec_encode_publish(&pkt->u.publish, version, out, cap, written);
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        return codec_encode_ack(pkt->type, &pkt->u.ack, version, out, cap, written);
    case CODEC_SUBSCRIBE:
        return codec_encode_subscribe(&pkt->u.subscribe, version, out, cap, written);
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        return codec_encode_suback(pkt->type, &pkt->u.suback, version, out, cap, written);
    case CODEC_UNSUBSCRIBE:
        return codec_encode_unsubscribe(&pkt->u.unsubscribe, version, out, cap, written);
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        return codec_encode_ping(pkt->type, out, cap, written);
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        return codec_encode_disconnect(pkt->type, &pkt->u.disconnect, version, out, cap,
                                       written);
    default:
        return CODEC_ERR_ARG;
    }
}
