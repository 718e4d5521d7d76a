/*
 * reasons.c — which reason codes each packet may carry, and from whom.
 *
 * A receiver that accepted any byte as a reason code would pass nonsense up to
 * the session logic; the spec lists the valid codes per packet (MQTT 5 tables
 * 3-1 .. 3-14, MQTT 3.1.1 tables 3.1 and 3.8), and a code outside its packet's
 * list makes the packet malformed. DISCONNECT codes also have a sender: a
 * client that claims "session taken over" breaks the protocol.
 */
#include "internal.h"

typedef struct reason_set {
    const uint8_t *codes;
    size_t len;
} reason_set;

#define SET(...)                                                                                   \
    {                                                                                              \
        (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})                     \
    }

static const reason_set v311_connack = SET(0x00, 0x01, 0x02, 0x03, 0x04, 0x05);
static const reason_set v311_suback = SET(0x00, 0x01, 0x02, 0x80);
static const reason_set v5_connack =
    SET(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F);
static const reason_set v5_puback = SET(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99);
static const reason_set v5_pubrel = SET(0x00, 0x92);
static const reason_set v5_suback =
    SET(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2);
static const reason_set v5_unsuback = SET(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91);
static const reason_set v5_auth = SET(0x00, 0x18, 0x19);
/* DISCONNECT codes either side may send, and those only a server sends. */
static const reason_set v5_disconnect_any =
    SET(0x00, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99);
static const reason_set v5_disconnect_server =
    SET(0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2);

/* A loop rather than memchr: the sets are a few bytes long, and a device
 * then links no memchr (160 bytes of newlib-nano; docs/sdk-footprint.md). */
static bool in_set(const reason_set *set, uint8_t code)
{
    for (size_t i = 0; i < set->len; i++)
        if (set->codes[i] == code)
            return true;
    return false;
}

bool reason_valid(unsigned type, uint8_t version, codec_sender sender, uint8_t code)
{
    if (version == CODEC_V311) {
        if (type == CODEC_CONNACK)
            return in_set(&v311_connack, code);
        if (type == CODEC_SUBACK)
            return in_set(&v311_suback, code);
        return code == 0;
    }
    switch (type) {
    case CODEC_CONNACK:
        return in_set(&v5_connack, code);
    case CODEC_PUBACK:
    case CODEC_PUBREC:
        return in_set(&v5_puback, code);
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        return in_set(&v5_pubrel, code);
    case CODEC_SUBACK:
        return in_set(&v5_suback, code);
    case CODEC_UNSUBACK:
        return in_set(&v5_unsuback, code);
    case CODEC_AUTH:
        /* Table 3-11 gives each code a sender: Success only from the server,
         * Re-authenticate only from the client ([MQTT-3.15.2-1]). */
        if (code == 0x00)
            return sender == CODEC_FROM_SERVER;
        if (code == 0x19)
            return sender == CODEC_FROM_CLIENT;
        return in_set(&v5_auth, code);
    case CODEC_DISCONNECT:
        if (in_set(&v5_disconnect_any, code))
            return true;
        if (code == 0x04) /* disconnect with will message */
            return sender == CODEC_FROM_CLIENT;
        return sender == CODEC_FROM_SERVER && in_set(&v5_disconnect_server, code);
    default:
        return false;
    }
}
