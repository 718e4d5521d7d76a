/*
 * names.c — human-readable names for statuses, reason codes and packet types,
 * and the reason code each decode error maps to. Used for logs and for the
 * CONNACK/DISCONNECT a server sends before closing a broken connection.
 */
#include "codec.h"

uint8_t codec_status_reason(codec_status status)
{
    switch (status) {
    case CODEC_OK:
        return 0x00;
    case CODEC_ERR_PROTOCOL:
        return 0x82;
    case CODEC_ERR_BAD_VERSION:
        return 0x84;
    case CODEC_ERR_TOPIC_FILTER:
        return 0x8F;
    case CODEC_ERR_TOPIC_NAME:
        return 0x90;
    case CODEC_ERR_TOO_LARGE:
        return 0x95;
    default:
        return 0x81;
    }
}

const char *codec_status_name(codec_status status)
{
    switch (status) {
    case CODEC_OK: return "ok";
    case CODEC_NEED_MORE: return "incomplete packet";
    case CODEC_ERR_MALFORMED: return "malformed packet";
    case CODEC_ERR_PROTOCOL: return "protocol error";
    case CODEC_ERR_BAD_VERSION: return "unsupported protocol version";
    case CODEC_ERR_TOPIC_NAME: return "topic name invalid";
    case CODEC_ERR_TOPIC_FILTER: return "topic filter invalid";
    case CODEC_ERR_TOO_LARGE: return "packet too large";
    case CODEC_ERR_BUFFER: return "buffer too small";
    case CODEC_ERR_ARG: return "invalid argument";
    }
    return "unknown status";
}

const char *codec_reason_name(uint8_t reason)
{
    switch (reason) {
    case 0x00: return "success";
    case 0x01: return "granted QoS 1";
    case 0x02: return "granted QoS 2";
    case 0x04: return "disconnect with will message";
    case 0x10: return "no matching subscribers";
    case 0x11: return "no subscription existed";
    case 0x18: return "continue authentication";
    case 0x19: return "re-authenticate";
    case 0x80: return "unspecified error";
    case 0x81: return "malformed packet";
    case 0x82: return "protocol error";
    case 0x83: return "implementation specific error";
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8A: return "banned";
    case 0x8B: return "server shutting down";
    case 0x8C: return "bad authentication method";
    case 0x8D: return "keep alive timeout";
    case 0x8E: return "session taken over";
    case 0x8F: return "topic filter invalid";
    case 0x90: return "topic name invalid";
    case 0x91: return "packet identifier in use";
    case 0x92: return "packet identifier not found";
    case 0x93: return "receive maximum exceeded";
    case 0x94: return "topic alias invalid";
    case 0x95: return "packet too large";
    case 0x96: return "message rate too high";
    case 0x97: return "quota exceeded";
    case 0x98: return "administrative action";
    case 0x99: return "payload format invalid";
    case 0x9A: return "retain not supported";
    case 0x9B: return "QoS not supported";
    case 0x9C: return "use another server";
    case 0x9D: return "server moved";
    case 0x9E: return "shared subscriptions not supported";
    case 0x9F: return "connection rate exceeded";
    case 0xA0: return "maximum connect time";
    case 0xA1: return "subscription identifiers not supported";
    case 0xA2: return "wildcard subscriptions not supported";
    default: return "unknown reason";
    }
}

const char *codec_packet_name(unsigned type)
{
    static const char *const names[] = {
        "RESERVED", "CONNECT",  "CONNACK",     "PUBLISH",  "PUBACK",  "PUBREC",
        "PUBREL",   "PUBCOMP",  "SUBSCRIBE",   "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ",  "PINGRESP", "DISCONNECT", "AUTH",
    };
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}
