/*
 * client_io.c — moving bytes: the output buffer and the input buffer.
 *
 * Output: packets are encoded at the end of tx_buf (tx_len) and written from
 * tx_off as the transport accepts them; a packet that does not fit now waits
 * (MOAT_AGAIN) until earlier bytes are out, so the client never holds more
 * than the caller's buffer. Input: bytes are read into rx_buf, framed with
 * the codec (which refuses a declared length over rx_cap before the body
 * arrives), decoded and dispatched one packet at a time. A packet whose
 * handling needs room in the output buffer (a PUBACK for a command) stays in
 * rx_buf until there is room, which also stops reading: back-pressure instead
 * of unbounded buffering.
 */
#include <string.h>

#include "client_int.h"

/* Packets handled per poll: bounds the time one poll takes. */
#define CLIENT_RX_BUDGET 32u

moat_status client_flush(moat_client *c)
{
    while (c->tx_off < c->tx_len) {
        long n = c->transport.send(c->transport.ctx, c->tx_buf + c->tx_off, c->tx_len - c->tx_off);
        if (n < 0)
            return (moat_status)n;
        if (n == 0)
            break;
        if ((size_t)n > c->tx_len - c->tx_off)
            return MOAT_ERR_IO; /* a port that claims more than it was given */
        c->tx_off += (size_t)n;
        c->last_tx_ms = client_now(c);
    }
    if (c->tx_off == c->tx_len)
        c->tx_off = c->tx_len = 0;
    return MOAT_OK;
}

/* Is there room for need more bytes? Moves pending bytes to the front when
 * that makes room. */
bool client_tx_room(moat_client *c, size_t need)
{
    if (c->tx_cap - c->tx_len >= need)
        return true;
    if (c->tx_off > 0) {
        memmove(c->tx_buf, c->tx_buf + c->tx_off, c->tx_len - c->tx_off);
        c->tx_len -= c->tx_off;
        c->tx_off = 0;
    }
    return c->tx_cap - c->tx_len >= need;
}

/* Encode p after the pending output. MOAT_AGAIN: no room now (flush first);
 * MOAT_ERR_SPACE: it would not fit even an empty buffer. */
moat_status client_send_packet(moat_client *c, const codec_packet *p)
{
    size_t written = 0;
    client_tx_room(c, c->tx_cap); /* compacts */
    uint8_t *out = c->tx_buf + c->tx_len;
    size_t cap = c->tx_cap - c->tx_len;
    codec_status cs;
    /* The per-packet encoders, not codec_encode: a device then links only
     * the encoders of the packets a client sends. */
    switch (p->type) {
    case CODEC_CONNECT:
        cs = codec_encode_connect(&p->u.connect, out, cap, &written);
        break;
    case CODEC_PUBLISH:
        cs = codec_encode_publish(&p->u.publish, c->version, out, cap, &written);
        break;
    case CODEC_PUBACK:
        cs = codec_encode_ack(CODEC_PUBACK, &p->u.ack, c->version, out, cap, &written);
        break;
    case CODEC_SUBSCRIBE:
        cs = codec_encode_subscribe(&p->u.subscribe, c->version, out, cap, &written);
        break;
    case CODEC_PINGREQ:
        cs = codec_encode_ping(CODEC_PINGREQ, out, cap, &written);
        break;
    case CODEC_DISCONNECT:
        cs = codec_encode_disconnect(CODEC_DISCONNECT, &p->u.disconnect, c->version, out, cap,
                                     &written);
        break;
    default:
        return MOAT_ERR_ARG;
    }
    if (cs == CODEC_OK) {
        c->tx_len += written;
        if (p->type == CODEC_PUBLISH)
            c->stats.publishes++;
        return MOAT_OK;
    }
    if (cs == CODEC_ERR_BUFFER)
        return written > c->tx_cap ? MOAT_ERR_SPACE : MOAT_AGAIN;
    return MOAT_ERR_ARG;
}

static moat_status on_suback(moat_client *c, const codec_suback *a)
{
    if (!c->sub_pending_ack || a->packet_id != c->sub_packet_id)
        return MOAT_ERR_PROTOCOL;
    c->sub_pending_ack = false;
    bool ok = a->reasons.len == 1 && a->reasons.ptr[0] < 0x80;
    client_event(c, ok ? MOAT_EV_SUBSCRIBED : MOAT_EV_SUBSCRIBE_FAILED,
                 ok ? MOAT_OK : MOAT_ERR_REFUSED, a->reasons.len ? a->reasons.ptr[0] : 0);
    return MOAT_OK;
}

/* Handle one decoded packet. MOAT_AGAIN: not handled, keep it for later. */
static moat_status dispatch(moat_client *c, const codec_packet *p)
{
    if (c->state == MOAT_STATE_MQTT && p->type != CODEC_CONNACK)
        return MOAT_ERR_PROTOCOL; /* nothing may come before the CONNACK */
    switch (p->type) {
    case CODEC_CONNACK:
        return client_on_connack(c, &p->u.connack);
    case CODEC_PUBACK:
        return client_up_puback(c, &p->u.ack);
    case CODEC_SUBACK:
        return on_suback(c, &p->u.suback);
    case CODEC_PINGRESP:
        return MOAT_OK;
    case CODEC_PUBLISH:
        return client_cmd_publish(c, &p->u.publish);
    case CODEC_DISCONNECT:
        /* The hub is leaving (shutting down, session taken over, ...). */
        return MOAT_ERR_CLOSED;
    default:
        /* PUBREC/PUBREL/PUBCOMP (the client never uses QoS 2), UNSUBACK,
         * AUTH, and anything a server must not send. */
        return MOAT_ERR_PROTOCOL;
    }
}

/* Drop the bytes at the start of rx_buf that belong to the message being
 * skipped; once it is all gone, acknowledge it. MOAT_AGAIN: no room for the
 * PUBACK yet. */
static moat_status skip_rx(moat_client *c)
{
    size_t n = c->rx_skip < c->rx_len ? c->rx_skip : c->rx_len;
    memmove(c->rx_buf, c->rx_buf + n, c->rx_len - n);
    c->rx_len -= n;
    c->rx_skip -= n;
    if (c->rx_skip > 0 || !c->skip_ack)
        return MOAT_OK;
    codec_packet ack = {.type = CODEC_PUBACK};
    ack.u.ack.packet_id = c->skip_pid;
    moat_status st = client_send_packet(c, &ack);
    if (st == MOAT_OK)
        c->skip_ack = false;
    return st;
}

/*
 * A packet larger than rx_buf is on its way. An MQTT 5 hub never sends one
 * (the client announces rx_cap as its Maximum Packet Size), but an MQTT
 * 3.1.1 broker may: a PUBLISH is then refused as a malformed command and
 * skipped byte by byte as it arrives, and acknowledged at the end so that
 * the broker does not send it again; anything else ends the connection.
 * MOAT_AGAIN: the head of the PUBLISH (up to its packet id) is not in yet.
 */
static moat_status start_skip(moat_client *c)
{
    codec_frame f;
    if (c->state != MOAT_STATE_ONLINE ||
        codec_frame_parse(c->rx_buf, c->rx_len, 0, &f) != CODEC_NEED_MORE || f.total_len == 0 ||
        f.type != CODEC_PUBLISH)
        return MOAT_ERR_PROTOCOL;
    uint8_t qos = (uint8_t)((f.flags >> 1) & 3u);
    size_t h = f.header_len;
    if (qos > 1)
        return MOAT_ERR_PROTOCOL;
    if (c->rx_len < h + 2)
        return MOAT_AGAIN;
    size_t tl = (size_t)c->rx_buf[h] << 8 | c->rx_buf[h + 1];
    size_t head = h + 2 + tl + (qos ? 2u : 0u);
    if (head > c->rx_cap || head > f.total_len)
        return MOAT_ERR_PROTOCOL;
    if (c->rx_len < head)
        return MOAT_AGAIN;
    c->skip_pid = qos ? (uint16_t)(c->rx_buf[head - 2] << 8 | c->rx_buf[head - 1]) : 0;
    if (qos && c->skip_pid == 0)
        return MOAT_ERR_PROTOCOL;
    c->skip_ack = qos == 1;
    c->rx_skip = f.total_len;
    client_cmd_oversized(c, (codec_bytes){c->rx_buf + h + 2, tl});
    return MOAT_OK;
}

/* Handle the complete packets at the start of rx_buf. */
static moat_status drain_rx(moat_client *c, unsigned *budget)
{
    while (*budget > 0 && (c->rx_len > 0 || c->skip_ack)) {
        if (c->rx_skip > 0 || c->skip_ack) {
            moat_status st = skip_rx(c);
            if (st != MOAT_OK)
                return st;
            if (c->rx_skip > 0)
                return MOAT_OK; /* the rest is still to come */
            continue;
        }
        codec_frame f;
        codec_status cs = codec_frame_parse(c->rx_buf, c->rx_len, c->rx_cap, &f);
        if (cs == CODEC_NEED_MORE)
            return MOAT_OK;
        if (cs == CODEC_ERR_TOO_LARGE) {
            moat_status st = start_skip(c);
            if (st == MOAT_AGAIN)
                return MOAT_OK; /* read more of its head */
            if (st != MOAT_OK)
                return st;
            (*budget)--;
            continue;
        }
        if (cs != CODEC_OK)
            return MOAT_ERR_PROTOCOL; /* malformed */
        codec_packet p;
        /* The client-side entry: a device links no decoder of the packets
         * only clients send (CONNECT, SUBSCRIBE...). */
        cs = codec_decode_body_from_server(&f, c->rx_buf + f.header_len, c->version, &p);
        if (cs != CODEC_OK)
            return MOAT_ERR_PROTOCOL;
        moat_status st = dispatch(c, &p);
        if (st == MOAT_AGAIN)
            return MOAT_AGAIN;
        if (st != MOAT_OK)
            return st;
        c->last_rx_ms = client_now(c);
        c->ping_outstanding = false; /* anything from the hub shows it is alive */
        memmove(c->rx_buf, c->rx_buf + f.total_len, c->rx_len - f.total_len);
        c->rx_len -= f.total_len;
        (*budget)--;
    }
    return MOAT_OK;
}

moat_status client_read(moat_client *c)
{
    unsigned budget = CLIENT_RX_BUDGET;
    for (;;) {
        moat_status st = drain_rx(c, &budget);
        if (st == MOAT_AGAIN)
            return MOAT_OK; /* waiting for output room */
        if (st != MOAT_OK)
            return st;
        if (budget == 0 || (c->state != MOAT_STATE_MQTT && c->state != MOAT_STATE_ONLINE))
            return MOAT_OK;
        if (c->rx_len == c->rx_cap)
            return MOAT_ERR_PROTOCOL; /* cannot happen: the frame check refuses it */
        long n = c->transport.recv(c->transport.ctx, c->rx_buf + c->rx_len, c->rx_cap - c->rx_len);
        if (n < 0)
            return (moat_status)n;
        if (n == 0)
            return MOAT_OK;
        if ((size_t)n > c->rx_cap - c->rx_len)
            return MOAT_ERR_IO;
        c->rx_len += (size_t)n;
    }
}
