/*
 * fuzz_props — the MQTT 5 property block decoder on its own.
 *
 * Every MQTT 5 packet carries a property block, and its decoder is the part
 * of the codec with the most cases (27 identifiers, 7 value types, 14 places
 * a block can sit, per-place and per-sender rules). The whole input is one
 * block body (without its length prefix), decoded with codec_props_decode for
 * every context that exists (CODEC_CTX_CONNECT .. CODEC_CTX_UNSUBACK,
 * CODEC_CTX_DISCONNECT, CODEC_CTX_AUTH, CODEC_CTX_WILL) and both senders,
 * straight from libFuzzer's exact-size buffer so that any read past the block
 * is an AddressSanitizer report. When a decode succeeds the block is walked
 * with codec_props_next (fuzz_walk_props): every property comes back, known
 * and allowed in that context, views inside the block; the walk ends exactly
 * at the end; the `present` bits are exactly the single-valued properties
 * seen, each once, holding the walked values; and the user properties and
 * subscription identifiers counted match user_count and sub_id_count. The
 * statuses are the ones codec.h lists for the decoder, and a block that
 * decodes for a client's PUBLISH decodes the same way for a server's.
 */
#include "fuzz_common.h"

static const codec_prop_context contexts[] = {
    CODEC_CTX_CONNECT, CODEC_CTX_CONNACK,     CODEC_CTX_PUBLISH,  CODEC_CTX_PUBACK,
    CODEC_CTX_PUBREC,  CODEC_CTX_PUBREL,      CODEC_CTX_PUBCOMP,  CODEC_CTX_SUBSCRIBE,
    CODEC_CTX_SUBACK,  CODEC_CTX_UNSUBSCRIBE, CODEC_CTX_UNSUBACK, CODEC_CTX_DISCONNECT,
    CODEC_CTX_AUTH,    CODEC_CTX_WILL,
};

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
        }
        /* The server may send all a client may, in a PUBLISH. */
        if (ctx == CODEC_CTX_PUBLISH && by_sender[0] == CODEC_OK)
            FUZZ_CHECK(by_sender[1] == CODEC_OK);
    }
    return 0;
}
