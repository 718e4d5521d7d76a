/*
 * fuzz_decode — the packet decoder and the framer on hostile bytes.
 *
 * The decoder is the first code that touches what a peer sends, so it must
 * never read out of bounds, hand out a view that reaches past the packet, or
 * accept a packet that breaks a rule codec.h promises it enforces. The input's
 * first byte picks the session's starting version (0, 3.1.1 or 5), the sender
 * and a maximum packet size (see fuzz_choice in fuzz_common.h); the rest is a
 * byte stream decoded as a session would: codec_decode at the current offset,
 * advance by `consumed`, take the version from a CONNECT that decoded, stop at
 * the first status other than CODEC_OK. Checked for each packet:
 *   - CODEC_OK means 0 < consumed <= bytes left (and <= max_packet when set),
 *     the packet type is the one in the first byte, and every view lies
 *     inside the packet; any other status leaves consumed at 0;
 *   - codec_decode gives the same status as codec_frame_parse followed by
 *     codec_decode_body, where the body is first copied into a heap block of
 *     exactly its size, so that a read past the body (which in the stream
 *     would land silently in the next packet) is an AddressSanitizer report;
 *   - for server bytes, codec_decode_body_from_server (what a device links)
 *     gives the same status as codec_decode_body on that exact-size body;
 *   - both decoded packets are walked completely (fuzz_walk_packet): every
 *     property of every block including the will properties through
 *     codec_props_next, every SUBSCRIBE / UNSUBSCRIBE entry through
 *     codec_subscribe_next / codec_unsubscribe_next with the count the decoder
 *     gave, every reason code byte, and the field rules of each packet type.
 * For short inputs (at most 64 bytes after the choice byte) codec_frame_parse
 * also runs on every prefix, each copied to an exact-size block: it may never
 * report a whole packet that is longer than the prefix, and once it has
 * answered anything but CODEC_NEED_MORE, more bytes may not change the
 * answer, which is what a receiver that parses after every read relies on.
 */
#include "fuzz_common.h"

#define PREFIX_CHECK_MAX 64

static bool frame_eq(const codec_frame *a, const codec_frame *b)
{
    return a->type == b->type && a->flags == b->flags && a->header_len == b->header_len &&
           a->remaining_len == b->remaining_len && a->total_len == b->total_len;
}

static void check_prefixes(const uint8_t *data, size_t size, size_t max_packet)
{
    codec_frame prev_frame = {0};
    codec_status prev = CODEC_NEED_MORE;
    for (size_t n = 0; n <= size; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        FUZZ_CHECK(copy != NULL);
        if (n)
            memcpy(copy, data, n);
        codec_frame f;
        codec_status st = codec_frame_parse(copy, n, max_packet, &f);
        free(copy);

        FUZZ_CHECK(st == CODEC_OK || st == CODEC_NEED_MORE || st == CODEC_ERR_MALFORMED ||
                   st == CODEC_ERR_TOO_LARGE);
        if (st == CODEC_OK || st == CODEC_ERR_TOO_LARGE ||
            (st == CODEC_NEED_MORE && f.total_len != 0)) {
            FUZZ_CHECK(f.header_len >= 2 && f.header_len <= CODEC_MAX_FIXED_HEADER);
            FUZZ_CHECK(f.remaining_len <= CODEC_MAX_REMAINING_LENGTH);
            FUZZ_CHECK(f.total_len == f.header_len + f.remaining_len);
            FUZZ_CHECK(f.type == data[0] >> 4 && f.flags == (data[0] & 0x0f));
        }
        if (st == CODEC_OK) {
            FUZZ_CHECK(f.total_len <= n);
            FUZZ_CHECK(max_packet == 0 || f.total_len <= max_packet);
        }
        if (st == CODEC_NEED_MORE)
            FUZZ_CHECK(f.total_len == 0 || f.total_len > n);
        if (st == CODEC_ERR_TOO_LARGE)
            FUZZ_CHECK(max_packet != 0 && f.total_len > max_packet);
        if (n > 0 && prev != CODEC_NEED_MORE) {
            FUZZ_CHECK(st == prev);
            if (st == CODEC_OK || st == CODEC_ERR_TOO_LARGE)
                FUZZ_CHECK(frame_eq(&f, &prev_frame));
        }
        prev = st;
        prev_frame = f;
    }
}

/* codec_frame_parse + codec_decode_body on an exact-size copy of the body;
 * returns the status, walks the packet when it decoded. */
static codec_status decode_in_pieces(const uint8_t *buf, size_t len, const codec_decode_opts *o)
{
    codec_frame f;
    codec_status st = codec_frame_parse(buf, len, o->max_packet, &f);
    if (st != CODEC_OK)
        return st;
    FUZZ_CHECK(f.total_len <= len);
    uint8_t *body = malloc(f.remaining_len ? f.remaining_len : 1);
    FUZZ_CHECK(body != NULL);
    memcpy(body, buf + f.header_len, f.remaining_len);
    codec_packet pkt;
    st = codec_decode_body(&f, body, o, &pkt);
    if (o->sender == CODEC_FROM_SERVER) {
        /* The client's entry (the SDK's) answers the same, and decodes the
         * same packet type; test_codec_from_server compares every field. */
        codec_packet alt;
        FUZZ_CHECK(codec_decode_body_from_server(&f, body, o->version, &alt) == st);
        FUZZ_CHECK(st != CODEC_OK || alt.type == pkt.type);
    }
    if (st == CODEC_OK) {
        FUZZ_CHECK(pkt.type == f.type);
        codec_bytes region = {body, f.remaining_len};
        fuzz_walk_packet(&pkt, o->version, o->sender, region);
    }
    free(body);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    codec_decode_opts o = fuzz_choice(data[0]);
    data++;
    size--;

    if (size <= PREFIX_CHECK_MAX)
        check_prefixes(data, size, o.max_packet);

    size_t off = 0;
    while (off < size) {
        const uint8_t *buf = data + off;
        size_t len = size - off;
        codec_packet pkt;
        size_t used = 12345;
        codec_status st = codec_decode(buf, len, &o, &pkt, &used);
        FUZZ_CHECK(st != CODEC_ERR_BUFFER && st != CODEC_ERR_ARG);
        FUZZ_CHECK(codec_status_name(st) != NULL);
        (void)codec_status_reason(st);
        FUZZ_CHECK(decode_in_pieces(buf, len, &o) == st);
        if (st != CODEC_OK) {
            FUZZ_CHECK(used == 0);
            /* Only a CONNECT names a version (its level is left in the
             * packet for the answer, even when the name is wrong). */
            if (st == CODEC_ERR_BAD_VERSION)
                FUZZ_CHECK(pkt.type == CODEC_CONNECT && o.version == 0);
            break;
        }
        FUZZ_CHECK(used > 0 && used <= len);
        FUZZ_CHECK(o.max_packet == 0 || used <= o.max_packet);
        FUZZ_CHECK(pkt.type == buf[0] >> 4);
        FUZZ_CHECK(codec_packet_name(pkt.type) != NULL);
        codec_bytes region = {buf, used};
        fuzz_walk_packet(&pkt, o.version, o.sender, region);
        if (pkt.type == CODEC_CONNECT)
            o.version = pkt.u.connect.protocol_version;
        off += used;
    }
    return 0;
}
