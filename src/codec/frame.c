/*
 * frame.c — find the fixed header of the next packet in a byte stream.
 *
 * Bytes from a socket arrive in arbitrary pieces; the receiver appends them to
 * a buffer and asks codec_frame_parse whether a whole packet is there yet. The
 * declared size is checked against the maximum as soon as the length bytes are
 * in, so an oversized packet is refused before anything is buffered for it.
 */
#include "internal.h"

int frame_required_flags(unsigned type)
{
    switch (type) {
    case CODEC_PUBLISH:
        return -1;
    case CODEC_PUBREL:
    case CODEC_SUBSCRIBE:
    case CODEC_UNSUBSCRIBE:
        return 0x2; /* [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1] */
    default:
        return 0;
    }
}

codec_status codec_frame_parse(const uint8_t *buf, size_t len, size_t max_packet,
                               codec_frame *frame)
{
    *frame = (codec_frame){0};
    if (len < 1)
        return CODEC_NEED_MORE;

    uint8_t type = buf[0] >> 4;
    uint8_t flags = buf[0] & 0x0f;
    if (type == 0)
        return CODEC_ERR_MALFORMED;
    int required = frame_required_flags(type);
    if (required >= 0 && flags != required)
        return CODEC_ERR_MALFORMED; /* [MQTT-2.1.3-1] */
    if (type == CODEC_PUBLISH && ((flags >> 1) & 3) == 3)
        return CODEC_ERR_MALFORMED; /* QoS 3: [MQTT-3.3.1-4] */

    rd r = rd_init(buf + 1, len - 1);
    codec_status st;
    uint32_t remaining = rd_vbi(&r, &st);
    if (st != CODEC_OK)
        return st;

    size_t header = 1 + r.pos;
    size_t total = header + remaining; /* at most 5 + 268435455: no overflow */
    size_t limit = max_packet ? max_packet : CODEC_MAX_FIXED_HEADER + CODEC_MAX_REMAINING_LENGTH;

    frame->type = type;
    frame->flags = flags;
    frame->header_len = header;
    frame->remaining_len = remaining;
    frame->total_len = total;
    if (total > limit)
        return CODEC_ERR_TOO_LARGE;
    if (len < total)
        return CODEC_NEED_MORE;
    return CODEC_OK;
}
