/*
 * fuzz_roundtrip — every packet the decoder accepts, the encoder must write
 * back, and the decoder must read back as the same packet.
 *
 * The hub decodes, routes and re-encodes; a field the encoder drops, reorders
 * into something else or writes with the wrong length would reach other
 * clients as a different message. The input is read as in fuzz_decode (first
 * byte: version, sender, max_packet; then a stream decoded session-like). For
 * each packet that decodes, with SUBSCRIBE / UNSUBSCRIBE given their `list`
 * built from the decoded payload (the encoder takes a list):
 *   - codec_encode with capacity 0 and with the needed size minus one returns
 *     CODEC_ERR_BUFFER and reports the same needed size, and encoding into a
 *     heap block of exactly that size returns CODEC_OK with that size;
 *   - the encoding is never longer than the input packet (the encoder only
 *     leaves out what MQTT 5 lets it omit, such as a Success reason code);
 *   - decoding the encoding gives CODEC_OK, consumes all of it, and yields a
 *     packet equal to the first field by field: views compared by content,
 *     properties by `present`, each present field, the counts, and the user
 *     properties and subscription identifiers walked in order from `raw`;
 *   - encoding the re-decoded packet gives the same bytes again.
 * Byte equality with the input is not expected: the encoder writes
 * single-valued properties in identifier order, then the repeatable ones.
 */
#include "fuzz_common.h"

static void check_bytes(codec_bytes a, codec_bytes b)
{
    FUZZ_CHECK(fuzz_bytes_eq(a, b));
}

static void check_subscriptions(const codec_subscribe *a, const codec_subscribe *b, uint8_t version)
{
    FUZZ_CHECK(a->count == b->count);
    size_t pa = 0;
    size_t pb = 0;
    codec_subscription ea;
    codec_subscription eb;
    for (;;) {
        bool more_a = codec_subscribe_next(a, version, &pa, &ea);
        bool more_b = codec_subscribe_next(b, version, &pb, &eb);
        FUZZ_CHECK(more_a == more_b);
        if (!more_a)
            break;
        check_bytes(ea.filter, eb.filter);
        FUZZ_CHECK(ea.qos == eb.qos);
        FUZZ_CHECK(ea.no_local == eb.no_local);
        FUZZ_CHECK(ea.retain_as_published == eb.retain_as_published);
        FUZZ_CHECK(ea.retain_handling == eb.retain_handling);
    }
}

static void check_unsubscriptions(const codec_unsubscribe *a, const codec_unsubscribe *b)
{
    FUZZ_CHECK(a->count == b->count);
    size_t pa = 0;
    size_t pb = 0;
    codec_bytes fa;
    codec_bytes fb;
    for (;;) {
        bool more_a = codec_unsubscribe_next(a, &pa, &fa);
        bool more_b = codec_unsubscribe_next(b, &pb, &fb);
        FUZZ_CHECK(more_a == more_b);
        if (!more_a)
            break;
        check_bytes(fa, fb);
    }
}

static void check_packets(const codec_packet *a, const codec_packet *b, uint8_t version)
{
    FUZZ_CHECK(a->type == b->type);
    switch (a->type) {
    case CODEC_CONNECT: {
        const codec_connect *x = &a->u.connect;
        const codec_connect *y = &b->u.connect;
        FUZZ_CHECK(x->protocol_version == y->protocol_version);
        FUZZ_CHECK(x->clean_start == y->clean_start);
        FUZZ_CHECK(x->keep_alive == y->keep_alive);
        fuzz_check_props_eq(&x->props, &y->props);
        check_bytes(x->client_id, y->client_id);
        FUZZ_CHECK(x->will_flag == y->will_flag);
        FUZZ_CHECK(x->will_qos == y->will_qos);
        FUZZ_CHECK(x->will_retain == y->will_retain);
        fuzz_check_props_eq(&x->will_props, &y->will_props);
        check_bytes(x->will_topic, y->will_topic);
        check_bytes(x->will_payload, y->will_payload);
        FUZZ_CHECK(x->username_flag == y->username_flag);
        FUZZ_CHECK(x->password_flag == y->password_flag);
        check_bytes(x->username, y->username);
        check_bytes(x->password, y->password);
        break;
    }
    case CODEC_CONNACK:
        FUZZ_CHECK(a->u.connack.session_present == b->u.connack.session_present);
        FUZZ_CHECK(a->u.connack.reason == b->u.connack.reason);
        fuzz_check_props_eq(&a->u.connack.props, &b->u.connack.props);
        break;
    case CODEC_PUBLISH: {
        const codec_publish *x = &a->u.publish;
        const codec_publish *y = &b->u.publish;
        FUZZ_CHECK(x->dup == y->dup);
        FUZZ_CHECK(x->qos == y->qos);
        FUZZ_CHECK(x->retain == y->retain);
        check_bytes(x->topic, y->topic);
        FUZZ_CHECK(x->packet_id == y->packet_id);
        fuzz_check_props_eq(&x->props, &y->props);
        check_bytes(x->payload, y->payload);
        break;
    }
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        FUZZ_CHECK(a->u.ack.packet_id == b->u.ack.packet_id);
        FUZZ_CHECK(a->u.ack.reason == b->u.ack.reason);
        fuzz_check_props_eq(&a->u.ack.props, &b->u.ack.props);
        break;
    case CODEC_SUBSCRIBE:
        FUZZ_CHECK(a->u.subscribe.packet_id == b->u.subscribe.packet_id);
        fuzz_check_props_eq(&a->u.subscribe.props, &b->u.subscribe.props);
        check_subscriptions(&a->u.subscribe, &b->u.subscribe, version);
        break;
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        FUZZ_CHECK(a->u.suback.packet_id == b->u.suback.packet_id);
        fuzz_check_props_eq(&a->u.suback.props, &b->u.suback.props);
        check_bytes(a->u.suback.reasons, b->u.suback.reasons);
        break;
    case CODEC_UNSUBSCRIBE:
        FUZZ_CHECK(a->u.unsubscribe.packet_id == b->u.unsubscribe.packet_id);
        fuzz_check_props_eq(&a->u.unsubscribe.props, &b->u.unsubscribe.props);
        check_unsubscriptions(&a->u.unsubscribe, &b->u.unsubscribe);
        break;
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        break;
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        FUZZ_CHECK(a->u.disconnect.reason == b->u.disconnect.reason);
        fuzz_check_props_eq(&a->u.disconnect.props, &b->u.disconnect.props);
        break;
    default:
        FUZZ_CHECK(!"unknown packet type decoded");
    }
}

/* Give a decoded SUBSCRIBE / UNSUBSCRIBE the list the encoder reads; returns
 * the block to free (NULL for other packet types). */
static void *attach_list(codec_packet *pkt, uint8_t version)
{
    if (pkt->type == CODEC_SUBSCRIBE) {
        codec_subscribe *s = &pkt->u.subscribe;
        codec_subscription *list = malloc(s->count * sizeof(*list));
        FUZZ_CHECK(list != NULL);
        size_t pos = 0;
        size_t n = 0;
        while (n < s->count && codec_subscribe_next(s, version, &pos, &list[n]))
            n++;
        FUZZ_CHECK(n == s->count);
        s->list = list;
        return list;
    }
    if (pkt->type == CODEC_UNSUBSCRIBE) {
        codec_unsubscribe *u = &pkt->u.unsubscribe;
        codec_bytes *list = malloc(u->count * sizeof(*list));
        FUZZ_CHECK(list != NULL);
        size_t pos = 0;
        size_t n = 0;
        while (n < u->count && codec_unsubscribe_next(u, &pos, &list[n]))
            n++;
        FUZZ_CHECK(n == u->count);
        u->list = list;
        return list;
    }
    return NULL;
}

/* Encode pkt into a new exact-size heap block, checking the size protocol on
 * the way. Returns the block; *len is its size. */
static uint8_t *encode_exact(codec_packet *pkt, uint8_t version, size_t *len)
{
    void *list = attach_list(pkt, version);
    uint8_t dummy = 0;
    size_t need = 0;
    codec_status st = codec_encode(pkt, version, &dummy, 0, &need);
    FUZZ_CHECK(st == CODEC_ERR_BUFFER);
    FUZZ_CHECK(need >= 2 && need <= CODEC_MAX_FIXED_HEADER + CODEC_MAX_REMAINING_LENGTH);

    uint8_t *out = malloc(need);
    FUZZ_CHECK(out != NULL);
    size_t written = 0;
    st = codec_encode(pkt, version, out, need - 1, &written);
    FUZZ_CHECK(st == CODEC_ERR_BUFFER);
    FUZZ_CHECK(written == need);

    written = 0;
    st = codec_encode(pkt, version, out, need, &written);
    FUZZ_CHECK(st == CODEC_OK);
    FUZZ_CHECK(written == need);
    free(list);
    *len = written;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    codec_decode_opts o = fuzz_choice(data[0]);
    data++;
    size--;

    size_t off = 0;
    while (off < size) {
        const uint8_t *buf = data + off;
        codec_packet first;
        size_t used = 0;
        if (codec_decode(buf, size - off, &o, &first, &used) != CODEC_OK)
            break;
        codec_bytes region = {buf, used};
        fuzz_walk_packet(&first, o.version, o.sender, region);

        size_t len = 0;
        uint8_t *enc = encode_exact(&first, o.version, &len);
        FUZZ_CHECK(len <= used);

        codec_packet second;
        size_t used2 = 0;
        codec_status st = codec_decode(enc, len, &o, &second, &used2);
        FUZZ_CHECK(st == CODEC_OK);
        FUZZ_CHECK(used2 == len);
        codec_bytes region2 = {enc, len};
        fuzz_walk_packet(&second, o.version, o.sender, region2);
        check_packets(&first, &second, o.version);

        size_t len2 = 0;
        uint8_t *enc2 = encode_exact(&second, o.version, &len2);
        FUZZ_CHECK(len2 == len && memcmp(enc, enc2, len) == 0);
        free(enc2);
        free(enc);

        if (first.type == CODEC_CONNECT)
            o.version = first.u.connect.protocol_version;
        off += used;
    }
    return 0;
}
