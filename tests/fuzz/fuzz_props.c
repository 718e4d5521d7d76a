/*
 * fuzz_props — the MQTT 5 property block decoder and encoder on their own.
 *
 * Every MQTT 5 packet carries a property block, and its decoder is the part
 * of the codec with the most cases (27 identifiers, 7 value types, 14 places
 * a block can sit, per-place and per-sender rules). The whole input is one
 * block body (without its length prefix), decoded with codec_props_decode for
 * every context that exists (CODEC_CTX_CONNECT .. CODEC_CTX_UNSUBACK,
 * CODEC_CTX_DISCONNECT, CODEC_CTX_AUTH, CODEC_CTX_WILL) and both senders,
 * straight from libFuzzer's exact-size buffer so that any read past the block
 * is an AddressSanitizer report. When a decode succeeds:
 *   - the block is walked with codec_props_next (fuzz_walk_props): every
 *     property comes back, known and allowed in that context, views inside
 *     the block; the walk ends exactly at the end; the `present` bits are
 *     exactly the single-valued properties seen, each once, holding the
 *     walked values; the user properties and subscription identifiers
 *     counted match user_count and sub_id_count;
 *   - codec_props_encode writes it back (capacity 0 and needed - 1 give
 *     CODEC_ERR_BUFFER with the same size, the exact size gives CODEC_OK)
 *     into as many bytes as the input had, which decode, for the same context
 *     and sender, to equal properties, and encode again to the same bytes;
 *   - for a PUBLISH or will block, what the hub does when it forwards a
 *     message: keep only the payload format, content type, response topic and
 *     correlation data of the single-valued properties, encode for PUBLISH;
 *     that must succeed and decode, as a server's PUBLISH, to just those plus
 *     the same user properties and subscription identifiers.
 * A block that decodes for a client's PUBLISH decodes for a server's too.
 */
#include "fuzz_common.h"

static const codec_prop_context contexts[] = {
    CODEC_CTX_CONNECT, CODEC_CTX_CONNACK,     CODEC_CTX_PUBLISH,  CODEC_CTX_PUBACK,
    CODEC_CTX_PUBREC,  CODEC_CTX_PUBREL,      CODEC_CTX_PUBCOMP,  CODEC_CTX_SUBSCRIBE,
    CODEC_CTX_SUBACK,  CODEC_CTX_UNSUBSCRIBE, CODEC_CTX_UNSUBACK, CODEC_CTX_DISCONNECT,
    CODEC_CTX_AUTH,    CODEC_CTX_WILL,
};

/* codec_props_encode into a new exact-size heap block, checking the size
 * protocol on the way. Returns the block (NULL when empty); *len its size. */
static uint8_t *encode_exact(const codec_props *p, codec_prop_context ctx, size_t *len)
{
    uint8_t dummy = 0;
    size_t need = 12345;
    codec_status st = codec_props_encode(p, ctx, &dummy, 0, &need);
    FUZZ_CHECK(need == 0 ? st == CODEC_OK : st == CODEC_ERR_BUFFER);
    FUZZ_CHECK(need <= CODEC_MAX_VBI);
    *len = need;
    if (need == 0)
        return NULL;

    uint8_t *out = malloc(need);
    FUZZ_CHECK(out != NULL);
    size_t written = 0;
    st = codec_props_encode(p, ctx, out, need - 1, &written);
    FUZZ_CHECK(st == CODEC_ERR_BUFFER && written == need);
    written = 0;
    st = codec_props_encode(p, ctx, out, need, &written);
    FUZZ_CHECK(st == CODEC_OK && written == need);
    return out;
}

/* Encode decoded properties for ctx, decode them again as sender, check that
 * the result holds the same properties as `p`, and that encoding what came
 * back gives the same bytes. */
static void check_reencode(const codec_props *p, codec_prop_context ctx, codec_sender sender,
                           size_t *enc_len)
{
    size_t len = 0;
    uint8_t *enc = encode_exact(p, ctx, &len);
    codec_bytes block = {enc, len};
    codec_props back;
    FUZZ_CHECK(codec_props_decode(block, ctx, sender, &back) == CODEC_OK);
    fuzz_walk_props(&back, ctx, block);
    fuzz_check_props_eq(p, &back);

    size_t len2 = 0;
    uint8_t *enc2 = encode_exact(&back, ctx, &len2);
    FUZZ_CHECK(len2 == len && (len == 0 || memcmp(enc, enc2, len) == 0));
    free(enc2);
    free(enc);
    *enc_len = len;
}

/* The single-valued properties the hub forwards with a message. */
#define FORWARDED                                                                                  \
    ((1ull << CODEC_PROP_PAYLOAD_FORMAT) | (1ull << CODEC_PROP_CONTENT_TYPE) |                     \
     (1ull << CODEC_PROP_RESPONSE_TOPIC) | (1ull << CODEC_PROP_CORRELATION_DATA))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    codec_bytes raw = {data, size};
    for (size_t i = 0; i < sizeof(contexts) / sizeof(contexts[0]); i++) {
        codec_prop_context ctx = contexts[i];
        codec_status by_sender[2];
        for (int s = 0; s < 2; s++) {
            codec_sender sender = s ? CODEC_FROM_SERVER : CODEC_FROM_CLIENT;
            codec_props props;
            codec_status st = codec_props_decode(raw, ctx, sender, &props);
            FUZZ_CHECK(st == CODEC_OK || st == CODEC_ERR_MALFORMED || st == CODEC_ERR_PROTOCOL);
            by_sender[s] = st;
            if (st != CODEC_OK)
                continue;
            FUZZ_CHECK(props.raw.ptr == raw.ptr && props.raw.len == raw.len);
            fuzz_walk_props(&props, ctx, raw);
            /* A client's PUBLISH never carries a subscription identifier. */
            if (ctx == CODEC_CTX_PUBLISH && sender == CODEC_FROM_CLIENT)
                FUZZ_CHECK(props.sub_id_count == 0);
            /* Nor a server's DISCONNECT a session expiry ([MQTT-3.14.2-2]). */
            if (ctx == CODEC_CTX_DISCONNECT && sender == CODEC_FROM_SERVER)
                FUZZ_CHECK(!CODEC_HAS(&props, CODEC_PROP_SESSION_EXPIRY));

            /* Same properties, only reordered: same size. */
            size_t len = 0;
            check_reencode(&props, ctx, sender, &len);
            FUZZ_CHECK(len == raw.len);

            if (ctx == CODEC_CTX_PUBLISH || ctx == CODEC_CTX_WILL) {
                codec_props fwd = props;
                fwd.present &= FORWARDED;
                check_reencode(&fwd, CODEC_CTX_PUBLISH, CODEC_FROM_SERVER, &len);
                FUZZ_CHECK(len <= raw.len);
            }
        }
        /* The server may send all a client may, in a PUBLISH. */
        if (ctx == CODEC_CTX_PUBLISH && by_sender[0] == CODEC_OK)
            FUZZ_CHECK(by_sender[1] == CODEC_OK);
    }
    return 0;
}
