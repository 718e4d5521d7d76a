/*
 * codec.h — the MQTT 3.1.1 / 5.0 packet codec shared by the hub and the SDK.
 *
 * Pure functions over caller buffers: no I/O, no allocation, no global state.
 * Decoded packets are views into the input buffer (codec_bytes), so the input
 * must outlive the decoded struct. Encoders write into a caller buffer and,
 * when it is too small, report the size they need.
 *
 * Every length read from the wire is checked against what remains before it is
 * used (see reader.h), so no input can make the decoder read out of bounds.
 * Errors carry the MQTT 5 reason code the spec assigns (codec_status_reason).
 *
 * Protocol versions: CODEC_V311 (level 4) and CODEC_V5 (level 5). MQTT 3.1
 * (level 3) is refused as an unsupported version.
 */
#ifndef MOAT_CODEC_H
#define MOAT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CODEC_MUST_CHECK __attribute__((warn_unused_result))
#else
#define CODEC_MUST_CHECK
#endif

/* ---- basic types ------------------------------------------------------ */

/* A byte range that carries its length. Never NUL-terminated. */
typedef struct codec_bytes {
    const uint8_t *ptr;
    size_t len;
} codec_bytes;

/* View of a C string literal, for tests and fixed topics. */
#define CODEC_LIT(s) ((codec_bytes){(const uint8_t *)(s), sizeof(s) - 1})

/* Protocol levels as they appear in CONNECT. */
enum { CODEC_V311 = 4, CODEC_V5 = 5 };

/* Limits fixed by the specifications. */
#define CODEC_MAX_REMAINING_LENGTH 268435455u /* 4-byte variable byte int */
#define CODEC_MAX_VBI CODEC_MAX_REMAINING_LENGTH
#define CODEC_MAX_STRING 65535u
#define CODEC_MAX_FIXED_HEADER 5u

typedef enum codec_packet_type {
    CODEC_CONNECT = 1,
    CODEC_CONNACK = 2,
    CODEC_PUBLISH = 3,
    CODEC_PUBACK = 4,
    CODEC_PUBREC = 5,
    CODEC_PUBREL = 6,
    CODEC_PUBCOMP = 7,
    CODEC_SUBSCRIBE = 8,
    CODEC_SUBACK = 9,
    CODEC_UNSUBSCRIBE = 10,
    CODEC_UNSUBACK = 11,
    CODEC_PINGREQ = 12,
    CODEC_PINGRESP = 13,
    CODEC_DISCONNECT = 14,
    CODEC_AUTH = 15
} codec_packet_type;

/* Who sent a packet being decoded: some packets, properties and reason codes
 * are only valid in one direction. */
typedef enum codec_sender { CODEC_FROM_CLIENT = 0, CODEC_FROM_SERVER = 1 } codec_sender;

/* One status enum for the whole codec. Each error maps to an MQTT 5 reason
 * code through codec_status_reason(). */
typedef enum codec_status {
    CODEC_OK = 0,
    CODEC_NEED_MORE,          /* input ends before the packet does */
    CODEC_ERR_MALFORMED,      /* 0x81: cannot be parsed as the spec says */
    CODEC_ERR_PROTOCOL,       /* 0x82: parsed, but breaks a protocol rule */
    CODEC_ERR_BAD_VERSION,    /* 0x84: CONNECT names another protocol/level */
    CODEC_ERR_TOPIC_NAME,     /* 0x90: topic name not valid */
    CODEC_ERR_TOPIC_FILTER,   /* 0x8F: topic filter not valid */
    CODEC_ERR_TOO_LARGE,      /* 0x95: exceeds the maximum packet size */
    CODEC_ERR_BUFFER,         /* encoder: output buffer too small */
    CODEC_ERR_ARG             /* encoder: a field is out of its range */
} codec_status;

/* The MQTT 5 reason code for a decode error (0x81 for anything unmapped). */
uint8_t codec_status_reason(codec_status status);

/* A short English name for a status, for logs ("malformed packet"). */
const char *codec_status_name(codec_status status);

/* A short English name for an MQTT 5 reason code, for logs. */
const char *codec_reason_name(uint8_t reason);

/* Packet type name ("PUBLISH"), or "?" for an unknown value. */
const char *codec_packet_name(unsigned type);

/* ---- framing ---------------------------------------------------------- */

/* The fixed header of one packet found at the start of a buffer. */
typedef struct codec_frame {
    uint8_t type;          /* codec_packet_type */
    uint8_t flags;         /* low nibble of the first byte */
    size_t header_len;     /* 2..5: first byte + remaining-length bytes */
    size_t remaining_len;  /* bytes after the fixed header */
    size_t total_len;      /* header_len + remaining_len */
} codec_frame;

/*
 * Look for a packet at the start of buf[0..len).
 *
 * max_packet is the largest total packet size accepted (0 means the protocol
 * maximum). A declared size over it fails with CODEC_ERR_TOO_LARGE as soon as
 * the length bytes are in, before the body arrives, so that a receiver never
 * buffers what it will refuse.
 *
 * Returns CODEC_OK with *frame filled when all total_len bytes are present,
 * CODEC_NEED_MORE when they are not (frame->total_len is set once the length
 * is known, 0 before), or CODEC_ERR_MALFORMED (type 0, reserved flag bits
 * wrong, a length over 4 bytes or not minimally encoded).
 */
CODEC_MUST_CHECK codec_status codec_frame_parse(const uint8_t *buf, size_t len, size_t max_packet,
                                                codec_frame *frame);

/* ---- properties (MQTT 5) ---------------------------------------------- */

typedef enum codec_prop_id {
    CODEC_PROP_PAYLOAD_FORMAT = 0x01,
    CODEC_PROP_MESSAGE_EXPIRY = 0x02,
    CODEC_PROP_CONTENT_TYPE = 0x03,
    CODEC_PROP_RESPONSE_TOPIC = 0x08,
    CODEC_PROP_CORRELATION_DATA = 0x09,
    CODEC_PROP_SUBSCRIPTION_ID = 0x0B,
    CODEC_PROP_SESSION_EXPIRY = 0x11,
    CODEC_PROP_ASSIGNED_CLIENT_ID = 0x12,
    CODEC_PROP_SERVER_KEEP_ALIVE = 0x13,
    CODEC_PROP_AUTH_METHOD = 0x15,
    CODEC_PROP_AUTH_DATA = 0x16,
    CODEC_PROP_REQUEST_PROBLEM_INFO = 0x17,
    CODEC_PROP_WILL_DELAY = 0x18,
    CODEC_PROP_REQUEST_RESPONSE_INFO = 0x19,
    CODEC_PROP_RESPONSE_INFO = 0x1A,
    CODEC_PROP_SERVER_REFERENCE = 0x1C,
    CODEC_PROP_REASON_STRING = 0x1F,
    CODEC_PROP_RECEIVE_MAXIMUM = 0x21,
    CODEC_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    CODEC_PROP_TOPIC_ALIAS = 0x23,
    CODEC_PROP_MAXIMUM_QOS = 0x24,
    CODEC_PROP_RETAIN_AVAILABLE = 0x25,
    CODEC_PROP_USER = 0x26,
    CODEC_PROP_MAXIMUM_PACKET_SIZE = 0x27,
    CODEC_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    CODEC_PROP_SUB_ID_AVAILABLE = 0x29,
    CODEC_PROP_SHARED_SUB_AVAILABLE = 0x2A
} codec_prop_id;

#define CODEC_PROP_MAX_ID 0x2A

/* Where a property block sits: the packet types plus the will properties of
 * CONNECT, which have their own set. */
typedef enum codec_prop_context {
    CODEC_CTX_CONNECT = CODEC_CONNECT,
    CODEC_CTX_CONNACK = CODEC_CONNACK,
    CODEC_CTX_PUBLISH = CODEC_PUBLISH,
    CODEC_CTX_PUBACK = CODEC_PUBACK,
    CODEC_CTX_PUBREC = CODEC_PUBREC,
    CODEC_CTX_PUBREL = CODEC_PUBREL,
    CODEC_CTX_PUBCOMP = CODEC_PUBCOMP,
    CODEC_CTX_SUBSCRIBE = CODEC_SUBSCRIBE,
    CODEC_CTX_SUBACK = CODEC_SUBACK,
    CODEC_CTX_UNSUBSCRIBE = CODEC_UNSUBSCRIBE,
    CODEC_CTX_UNSUBACK = CODEC_UNSUBACK,
    CODEC_CTX_DISCONNECT = CODEC_DISCONNECT,
    CODEC_CTX_AUTH = CODEC_AUTH,
    CODEC_CTX_WILL = 16
} codec_prop_context;

/* Value types of properties, as named in the spec (section 2.2.2.2). */
typedef enum codec_prop_type {
    CODEC_PT_BYTE,
    CODEC_PT_U16,
    CODEC_PT_U32,
    CODEC_PT_VBI,
    CODEC_PT_STRING,
    CODEC_PT_BINARY,
    CODEC_PT_STRING_PAIR
} codec_prop_type;

/* Is property id known, and what is its type? false for an unknown id. */
bool codec_prop_type_of(unsigned id, codec_prop_type *type);

/* May property id appear in a property block of this context? */
bool codec_prop_allowed(unsigned id, codec_prop_context ctx);

/* A user property (or any string pair). */
typedef struct codec_string_pair {
    codec_bytes name;
    codec_bytes value;
} codec_string_pair;

/*
 * All properties of one block. `present` has bit (1 << id) set for each
 * single-valued property that is there; read a field only when its bit is set.
 *
 * Repeatable properties (user properties; subscription identifiers, which a
 * server's PUBLISH may carry several of) never have a `present` bit. The
 * decoder counts them (user_count, sub_id_count), puts the first
 * subscription identifier in `subscription_id`, and keeps the encoded block in
 * `raw`: walk every property with codec_props_next().
 *
 * Encoding writes every single-valued property whose bit is set (in identifier
 * order), then copies each user property and subscription identifier found in
 * `raw` (so a decoded block re-encodes to the same properties), then appends
 * `user[]` and `sub_ids[]`.
 */
typedef struct codec_props {
    uint64_t present;
    uint32_t message_expiry;
    uint32_t session_expiry;
    uint32_t will_delay;
    uint32_t maximum_packet_size;
    uint32_t subscription_id;      /* decode: the first one, if sub_id_count > 0 */
    uint16_t server_keep_alive;
    uint16_t receive_maximum;
    uint16_t topic_alias_maximum;
    uint16_t topic_alias;
    uint8_t payload_format;
    uint8_t request_problem_info;
    uint8_t request_response_info;
    uint8_t maximum_qos;
    uint8_t retain_available;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;
    codec_bytes content_type;
    codec_bytes response_topic;
    codec_bytes correlation_data;
    codec_bytes assigned_client_id;
    codec_bytes auth_method;
    codec_bytes auth_data;
    codec_bytes response_info;
    codec_bytes server_reference;
    codec_bytes reason_string;

    codec_bytes raw;               /* decode: the whole block, without its length */
    size_t user_count;             /* decode: user properties in raw */
    size_t sub_id_count;           /* decode: subscription identifiers in raw */

    const codec_string_pair *user; /* encode: user properties to append */
    size_t user_len;
    const uint32_t *sub_ids;       /* encode: subscription identifiers to append */
    size_t sub_ids_len;
} codec_props;

#define CODEC_HAS(props, id) (((props)->present >> (id)) & 1u)
#define CODEC_SET(props, id) ((props)->present |= (uint64_t)1 << (id))

/* One property from a block, as codec_props_next returns it. */
typedef struct codec_prop {
    uint8_t id;
    uint32_t num;            /* BYTE, U16, U32, VBI */
    codec_bytes str;         /* STRING, BINARY; name of a STRING_PAIR */
    codec_bytes value;       /* value of a STRING_PAIR */
} codec_prop;

/*
 * Walk a property block already validated by a decoder: *pos starts at 0.
 * Returns true and fills *out while there is another property.
 */
bool codec_props_next(codec_bytes raw, size_t *pos, codec_prop *out);

/* Decode a property block body (without its length prefix) for a context,
 * enforcing types, allowed-in-context (else MALFORMED), duplicates and value
 * ranges (else PROTOCOL). Used by the packet decoders; exposed for tests. */
CODEC_MUST_CHECK codec_status codec_props_decode(codec_bytes raw, codec_prop_context ctx,
                                                 codec_sender sender, codec_props *out);

/* Encode a property block body (without its length prefix) for a context, as
 * the packet encoders do. Returns CODEC_OK, CODEC_ERR_BUFFER (with *written
 * the size needed) or CODEC_ERR_ARG. */
CODEC_MUST_CHECK codec_status codec_props_encode(const codec_props *p, codec_prop_context ctx,
                                                 uint8_t *out, size_t cap, size_t *written);

/* ---- packets ---------------------------------------------------------- */

typedef struct codec_connect {
    uint8_t protocol_version;    /* CODEC_V311 or CODEC_V5 */
    bool clean_start;            /* "clean session" in 3.1.1 */
    uint16_t keep_alive;
    codec_props props;
    codec_bytes client_id;
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    codec_props will_props;
    codec_bytes will_topic;
    codec_bytes will_payload;
    bool username_flag;
    bool password_flag;
    codec_bytes username;
    codec_bytes password;
} codec_connect;

typedef struct codec_connack {
    bool session_present;
    uint8_t reason;              /* 3.1.1 return code or MQTT 5 reason code */
    codec_props props;
} codec_connack;

typedef struct codec_publish {
    bool dup;
    uint8_t qos;
    bool retain;
    codec_bytes topic;           /* empty in MQTT 5 when a topic alias stands for it */
    uint16_t packet_id;          /* only when qos > 0 */
    codec_props props;
    codec_bytes payload;
} codec_publish;

/* PUBACK, PUBREC, PUBREL and PUBCOMP. */
typedef struct codec_ack {
    uint16_t packet_id;
    uint8_t reason;              /* MQTT 5; 0 in 3.1.1 */
    codec_props props;
} codec_ack;

/* One entry of a SUBSCRIBE. */
typedef struct codec_subscription {
    codec_bytes filter;
    uint8_t qos;                 /* maximum QoS */
    bool no_local;               /* MQTT 5 */
    bool retain_as_published;    /* MQTT 5 */
    uint8_t retain_handling;     /* MQTT 5: 0, 1 or 2 */
} codec_subscription;

/*
 * SUBSCRIBE. Decode: `payload` is the validated entry list, `count` its size:
 * walk it with codec_subscribe_next(). Encode: give `list` and `count`.
 *
 * The decoder checks each filter's UTF-8 and options byte; the wildcard
 * syntax of each filter is left to the session (codec_topic_filter_check),
 * because MQTT answers a bad filter with reason 0x8F for that entry alone.
 */
typedef struct codec_subscribe {
    uint16_t packet_id;
    codec_props props;
    size_t count;
    codec_bytes payload;
    const codec_subscription *list;
} codec_subscribe;

bool codec_subscribe_next(const codec_subscribe *sub, uint8_t version, size_t *pos,
                          codec_subscription *out);

/* SUBACK and UNSUBACK: one reason code byte per requested filter. An MQTT
 * 3.1.1 UNSUBACK has none (reasons.len == 0). */
typedef struct codec_suback {
    uint16_t packet_id;
    codec_props props;
    codec_bytes reasons;
} codec_suback;

/*
 * UNSUBSCRIBE. Decode: `payload` holds `count` filters (UTF-8 checked, syntax
 * not, as for SUBSCRIBE): walk them with codec_unsubscribe_next().
 * Encode: give `list` and `count`.
 */
typedef struct codec_unsubscribe {
    uint16_t packet_id;
    codec_props props;
    size_t count;
    codec_bytes payload;
    const codec_bytes *list;
} codec_unsubscribe;

bool codec_unsubscribe_next(const codec_unsubscribe *unsub, size_t *pos, codec_bytes *filter);

/* DISCONNECT and AUTH (MQTT 5 carries a reason and properties). */
typedef struct codec_disconnect {
    uint8_t reason;
    codec_props props;
} codec_disconnect;

typedef struct codec_packet {
    uint8_t type;                /* codec_packet_type */
    union {
        codec_connect connect;
        codec_connack connack;
        codec_publish publish;
        codec_ack ack;           /* PUBACK, PUBREC, PUBREL, PUBCOMP */
        codec_subscribe subscribe;
        codec_suback suback;     /* SUBACK, UNSUBACK */
        codec_unsubscribe unsubscribe;
        codec_disconnect disconnect; /* DISCONNECT, AUTH */
    } u;
} codec_packet;

/* How to decode: the session's protocol version (0 before CONNECT, when only
 * a CONNECT is acceptable and sets it), who sent the bytes, and the largest
 * packet accepted (0: protocol maximum). */
typedef struct codec_decode_opts {
    uint8_t version;
    codec_sender sender;
    size_t max_packet;
} codec_decode_opts;

/*
 * Decode one packet from the start of buf[0..len).
 *
 * On CODEC_OK, *out is filled with views into buf and *consumed is the
 * packet's total length. CODEC_NEED_MORE means the packet is not complete yet.
 * Any other status is an error that must close the connection (after a
 * CONNACK or DISCONNECT with codec_status_reason(status) in MQTT 5).
 *
 * For a CONNECT with an unsupported level, CODEC_ERR_BAD_VERSION is returned
 * and out->u.connect.protocol_version holds the level the client asked for,
 * so the caller can answer in the form that client understands.
 *
 * Example:
 *     codec_packet p;
 *     size_t used;
 *     codec_decode_opts o = {.version = CODEC_V5, .sender = CODEC_FROM_CLIENT};
 *     switch (codec_decode(buf, len, &o, &p, &used)) { ... }
 */
CODEC_MUST_CHECK codec_status codec_decode(const uint8_t *buf, size_t len,
                                           const codec_decode_opts *opts, codec_packet *out,
                                           size_t *consumed);

/* Decode the body of a packet whose fixed header was already framed: body is
 * exactly frame->remaining_len bytes. */
CODEC_MUST_CHECK codec_status codec_decode_body(const codec_frame *frame, const uint8_t *body,
                                                const codec_decode_opts *opts, codec_packet *out);

/*
 * codec_decode_body for a client: decodes what a server sent, with the same
 * result as codec_decode_body with opts {version, CODEC_FROM_SERVER} for
 * every input (a packet only a client may send is CODEC_ERR_PROTOCOL). It
 * never references the decoders of CONNECT, SUBSCRIBE and UNSUBSCRIBE, so a
 * device built with -ffunction-sections and linked with --gc-sections does
 * not carry them (docs/sdk-footprint.md).
 */
CODEC_MUST_CHECK codec_status codec_decode_body_from_server(const codec_frame *frame,
                                                            const uint8_t *body, uint8_t version,
                                                            codec_packet *out);

/*
 * Encode a packet for a protocol version into out[0..cap).
 *
 * On CODEC_OK, *written is the packet size. On CODEC_ERR_BUFFER nothing useful
 * is in out and *written is the size needed. CODEC_ERR_ARG means a field is
 * out of range for the version (QoS 3, a string over 65535 bytes, a packet
 * over the protocol maximum, properties in 3.1.1 ...).
 *
 * The encoder does not re-validate UTF-8 or topic syntax: callers encode what
 * they built or already validated on the way in.
 */
CODEC_MUST_CHECK codec_status codec_encode(const codec_packet *pkt, uint8_t version,
                                           uint8_t *out, size_t cap, size_t *written);

/* Per-packet encoders, so that a device links only those it uses. A CONNECT
 * carries its own version (protocol_version); codec_encode ignores `version`
 * for it. */
CODEC_MUST_CHECK codec_status codec_encode_connect(const codec_connect *p, uint8_t *out,
                                                   size_t cap, size_t *written);
CODEC_MUST_CHECK codec_status codec_encode_connack(const codec_connack *p, uint8_t version,
                                                   uint8_t *out, size_t cap, size_t *written);
CODEC_MUST_CHECK codec_status codec_encode_publish(const codec_publish *p, uint8_t version,
                                                   uint8_t *out, size_t cap, size_t *written);
/* type: CODEC_PUBACK, CODEC_PUBREC, CODEC_PUBREL or CODEC_PUBCOMP */
CODEC_MUST_CHECK codec_status codec_encode_ack(uint8_t type, const codec_ack *p, uint8_t version,
                                               uint8_t *out, size_t cap, size_t *written);
CODEC_MUST_CHECK codec_status codec_encode_subscribe(const codec_subscribe *p, uint8_t version,
                                                     uint8_t *out, size_t cap, size_t *written);
/* type: CODEC_SUBACK or CODEC_UNSUBACK */
CODEC_MUST_CHECK codec_status codec_encode_suback(uint8_t type, const codec_suback *p,
                                                  uint8_t version, uint8_t *out, size_t cap,
                                                  size_t *written);
CODEC_MUST_CHECK codec_status codec_encode_unsubscribe(const codec_unsubscribe *p,
                                                       uint8_t version, uint8_t *out, size_t cap,
                                                       size_t *written);
/* type: CODEC_PINGREQ or CODEC_PINGRESP */
CODEC_MUST_CHECK codec_status codec_encode_ping(uint8_t type, uint8_t *out, size_t cap,
                                                size_t *written);
/* type: CODEC_DISCONNECT or CODEC_AUTH (AUTH only in MQTT 5) */
CODEC_MUST_CHECK codec_status codec_encode_disconnect(uint8_t type, const codec_disconnect *p,
                                                      uint8_t version, uint8_t *out, size_t cap,
                                                      size_t *written);

/* ---- strings and topics (topic.c, utf8.c) ----------------------------- */

/* Is s well-formed UTF-8 as MQTT requires: no overlongs, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF, and no U+0000? */
bool codec_utf8_valid(codec_bytes s);

/* A topic name for PUBLISH or a will: 1..65535 bytes, valid UTF-8, no '+'
 * or '#'. Returns CODEC_OK or CODEC_ERR_TOPIC_NAME. */
codec_status codec_topic_name_check(codec_bytes topic);

/* A topic filter for SUBSCRIBE/UNSUBSCRIBE: 1..65535 bytes, valid UTF-8, '+'
 * alone in its level, '#' alone in the last level; a shared subscription
 * ($share/NAME/filter) needs a non-empty NAME without '/', '+' or '#' and a
 * non-empty filter. The $share rules apply in 3.1.1 too, as in Mosquitto: a
 * hub that treated "$share/..." differently per version would confuse mixed
 * fleets. The inner filter is checked as an ordinary filter (it is not split
 * again). Returns CODEC_OK or CODEC_ERR_TOPIC_FILTER. */
codec_status codec_topic_filter_check(codec_bytes filter);

/* Split a shared subscription filter "$share/NAME/filter". Returns false, with
 * both outputs {NULL, 0}, for anything that is not a well-formed shared
 * filter; either output pointer may be NULL. */
bool codec_topic_shared_split(codec_bytes filter, codec_bytes *share_name, codec_bytes *inner);

/* Does a (non-shared: split it first) filter match a topic name? A topic
 * starting with '$' is matched only by a filter whose first level is written
 * out, so "#" and "+/x" never match "$SYS/x" (MQTT 4.7.2). An empty filter or
 * topic matches nothing; call on checked filters and names. */
bool codec_topic_matches(codec_bytes filter, codec_bytes topic);

/* Number of levels in a topic name or filter ("a/b" has 2, "/" has 2). */
size_t codec_topic_levels(codec_bytes topic);

#ifdef __cplusplus
}
#endif

#endif /* MOAT_CODEC_H */
