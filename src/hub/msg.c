/*
 * msg.c — published messages, shared by reference.
 *
 * A message is one allocation holding its topic, payload, properties and
 * origin; every session queue and the retained tree point at the same copy,
 * so fan-out to N subscribers costs N references, not N payload copies.
 */
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

static codec_bytes place(uint8_t **at, codec_bytes src)
{
    codec_bytes out = {*at, src.len};
    if (src.len)
        memcpy(*at, src.ptr, src.len);
    *at += src.len;
    return out;
}

msg *msg_new(codec_bytes topic, codec_bytes payload, codec_bytes props, codec_bytes origin,
             uint8_t qos, bool retain, uint64_t expires_at)
{
    size_t extra = topic.len;
    if (payload.len > SIZE_MAX - extra - sizeof(msg))
        return NULL;
    extra += payload.len;
    if (props.len > SIZE_MAX - extra - sizeof(msg) ||
        origin.len > SIZE_MAX - extra - props.len - sizeof(msg))
        return NULL;
    extra += props.len + origin.len;
    msg *m = malloc(sizeof(*m) + extra);
    if (!m)
        return NULL;
    *m = (msg){.refs = 1, .qos = qos, .retain = retain, .expires_at = expires_at};
    uint8_t *at = m->data;
    m->topic = place(&at, topic);
    m->payload = place(&at, payload);
    m->props = place(&at, props);
    m->origin = place(&at, origin);
    return m;
}

msg *msg_with_props(codec_bytes topic, codec_bytes payload, const codec_props *props,
                    codec_bytes origin, uint8_t qos, bool retain, uint64_t expires_at)
{
    /* What travels with a message to its subscribers: user properties (from
     * raw) and these; not the topic alias, expiry (recomputed) or will delay. */
    uint64_t keep = (1ull << CODEC_PROP_PAYLOAD_FORMAT) | (1ull << CODEC_PROP_CONTENT_TYPE) |
                    (1ull << CODEC_PROP_RESPONSE_TOPIC) | (1ull << CODEC_PROP_CORRELATION_DATA);
    codec_props fwd = {0};
    size_t need = 0;
    if (props && (props->raw.len || props->present)) {
        fwd = *props;
        fwd.present &= keep;
        codec_status st = codec_props_encode(&fwd, CODEC_CTX_PUBLISH, NULL, 0, &need);
        if (st != CODEC_OK && st != CODEC_ERR_BUFFER)
            return NULL;
    }
    /* Sized by the properties themselves: a block is bounded only by the
     * packet size limit, so no fixed buffer would do. */
    uint8_t *block = need ? malloc(need) : NULL;
    size_t n = 0;
    if (need &&
        (!block || codec_props_encode(&fwd, CODEC_CTX_PUBLISH, block, need, &n) != CODEC_OK)) {
        free(block);
        return NULL;
    }
    msg *m = msg_new(topic, payload, (codec_bytes){block, n}, origin, qos, retain, expires_at);
    free(block);
    return m;
}

msg *msg_ref(msg *m)
{
    m->refs++;
    return m;
}

void msg_unref(msg *m)
{
    if (m && --m->refs == 0)
        free(m);
}
