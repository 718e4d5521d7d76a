/*
 * props.c — MQTT 5 properties: which exist, where each may appear, and how
 * they are read and written.
 *
 * One table holds every property's type and the packets it belongs to, so that
 * decoding, encoding and tests agree. Following the spec (section 2.2.2.2): an
 * unknown identifier, one not valid for the packet, or a value that is not of
 * the property's type makes the packet malformed (0x81); a single-valued
 * property given twice, or a value outside its range, is a protocol error
 * (0x82).
 */
#include "internal.h"

#define CTX(c) (1u << (c))
#define CTX_ACKS (CTX(CODEC_CTX_PUBACK) | CTX(CODEC_CTX_PUBREC) | CTX(CODEC_CTX_PUBREL) | \
                  CTX(CODEC_CTX_PUBCOMP))
#define CTX_ALL (CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK) | CTX(CODEC_CTX_PUBLISH) | \
                 CTX_ACKS | CTX(CODEC_CTX_SUBSCRIBE) | CTX(CODEC_CTX_SUBACK) |            \
                 CTX(CODEC_CTX_UNSUBSCRIBE) | CTX(CODEC_CTX_UNSUBACK) |                    \
                 CTX(CODEC_CTX_DISCONNECT) | CTX(CODEC_CTX_AUTH) | CTX(CODEC_CTX_WILL))
#define CTX_MSG (CTX(CODEC_CTX_PUBLISH) | CTX(CODEC_CTX_WILL))

/* Packed into one 32-bit word (contexts go up to bit CODEC_CTX_WILL = 16):
 * half the size of a table with a whole word for the contexts, which a
 * device's flash notices (docs/sdk-footprint.md). */
typedef struct prop_info {
    unsigned known : 1;
    unsigned type : 3; /* codec_prop_type */
    unsigned contexts : 17;
} prop_info;
_Static_assert(CODEC_CTX_WILL < 17 && CODEC_PT_STRING_PAIR < 8, "prop_info fields too narrow");

static const prop_info prop_table[CODEC_PROP_MAX_ID + 1] = {
    [CODEC_PROP_PAYLOAD_FORMAT] = {1, CODEC_PT_BYTE, CTX_MSG},
    [CODEC_PROP_MESSAGE_EXPIRY] = {1, CODEC_PT_U32, CTX_MSG},
    [CODEC_PROP_CONTENT_TYPE] = {1, CODEC_PT_STRING, CTX_MSG},
    [CODEC_PROP_RESPONSE_TOPIC] = {1, CODEC_PT_STRING, CTX_MSG},
    [CODEC_PROP_CORRELATION_DATA] = {1, CODEC_PT_BINARY, CTX_MSG},
    [CODEC_PROP_SUBSCRIPTION_ID] = {1, CODEC_PT_VBI,
                                    CTX(CODEC_CTX_PUBLISH) | CTX(CODEC_CTX_SUBSCRIBE)},
    [CODEC_PROP_SESSION_EXPIRY] = {1, CODEC_PT_U32,
                                   CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK) |
                                       CTX(CODEC_CTX_DISCONNECT)},
    [CODEC_PROP_ASSIGNED_CLIENT_ID] = {1, CODEC_PT_STRING, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_SERVER_KEEP_ALIVE] = {1, CODEC_PT_U16, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_AUTH_METHOD] = {1, CODEC_PT_STRING,
                                CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK) |
                                    CTX(CODEC_CTX_AUTH)},
    [CODEC_PROP_AUTH_DATA] = {1, CODEC_PT_BINARY,
                              CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK) |
                                  CTX(CODEC_CTX_AUTH)},
    [CODEC_PROP_REQUEST_PROBLEM_INFO] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNECT)},
    [CODEC_PROP_WILL_DELAY] = {1, CODEC_PT_U32, CTX(CODEC_CTX_WILL)},
    [CODEC_PROP_REQUEST_RESPONSE_INFO] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNECT)},
    [CODEC_PROP_RESPONSE_INFO] = {1, CODEC_PT_STRING, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_SERVER_REFERENCE] = {1, CODEC_PT_STRING,
                                     CTX(CODEC_CTX_CONNACK) | CTX(CODEC_CTX_DISCONNECT)},
    [CODEC_PROP_REASON_STRING] = {1, CODEC_PT_STRING,
                                  CTX(CODEC_CTX_CONNACK) | CTX_ACKS | CTX(CODEC_CTX_SUBACK) |
                                      CTX(CODEC_CTX_UNSUBACK) | CTX(CODEC_CTX_DISCONNECT) |
                                      CTX(CODEC_CTX_AUTH)},
    [CODEC_PROP_RECEIVE_MAXIMUM] = {1, CODEC_PT_U16,
                                    CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_TOPIC_ALIAS_MAXIMUM] = {1, CODEC_PT_U16,
                                        CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_TOPIC_ALIAS] = {1, CODEC_PT_U16, CTX(CODEC_CTX_PUBLISH)},
    [CODEC_PROP_MAXIMUM_QOS] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_RETAIN_AVAILABLE] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_USER] = {1, CODEC_PT_STRING_PAIR, CTX_ALL},
    [CODEC_PROP_MAXIMUM_PACKET_SIZE] = {1, CODEC_PT_U32,
                                        CTX(CODEC_CTX_CONNECT) | CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_WILDCARD_SUB_AVAILABLE] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_SUB_ID_AVAILABLE] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNACK)},
    [CODEC_PROP_SHARED_SUB_AVAILABLE] = {1, CODEC_PT_BYTE, CTX(CODEC_CTX_CONNACK)},
};

static const prop_info *prop_lookup(unsigned id)
{
    if (id > CODEC_PROP_MAX_ID || !prop_table[id].known)
        return NULL;
    return &prop_table[id];
}

bool codec_prop_type_of(unsigned id, codec_prop_type *type)
{
    const prop_info *info = prop_lookup(id);
    if (!info)
        return false;
    *type = (codec_prop_type)info->type;
    return true;
}

bool codec_prop_allowed(unsigned id, codec_prop_context ctx)
{
    const prop_info *info = prop_lookup(id);
    return info && (unsigned)ctx < 32 && (info->contexts & CTX(ctx));
}

/* Read one property's identifier and value. Returns CODEC_ERR_MALFORMED for
 * an unknown identifier or a truncated value. */
static codec_status prop_read_one(rd *r, codec_prop *out, const prop_info **info_out)
{
    codec_status st;
    uint32_t id = rd_vbi(r, &st);
    if (st != CODEC_OK)
        return CODEC_ERR_MALFORMED;
    const prop_info *info = prop_lookup(id);
    if (!info)
        return CODEC_ERR_MALFORMED;
    *out = (codec_prop){.id = (uint8_t)id};
    switch (info->type) {
    case CODEC_PT_BYTE:
        out->num = rd_u8(r);
        break;
    case CODEC_PT_U16:
        out->num = rd_u16(r);
        break;
    case CODEC_PT_U32:
        out->num = rd_u32(r);
        break;
    case CODEC_PT_VBI:
        out->num = rd_vbi(r, &st);
        if (st != CODEC_OK)
            return CODEC_ERR_MALFORMED;
        break;
    case CODEC_PT_STRING:
    case CODEC_PT_BINARY:
        out->str = rd_lenbytes(r);
        break;
    case CODEC_PT_STRING_PAIR:
        out->str = rd_lenbytes(r);
        out->value = rd_lenbytes(r);
        break;
    default:
        return CODEC_ERR_MALFORMED;
    }
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    *info_out = info;
    return CODEC_OK;
}

bool codec_props_next(codec_bytes raw, size_t *pos, codec_prop *out)
{
    if (*pos >= raw.len)
        return false;
    rd r = rd_init(raw.ptr, raw.len);
    r.pos = *pos;
    const prop_info *info;
    if (prop_read_one(&r, out, &info) != CODEC_OK)
        return false;
    *pos = r.pos;
    return true;
}

static bool is_flag(uint32_t v)
{
    return v == 0 || v == 1;
}

/* Range rules that make a well-typed value a protocol error. */
static codec_status prop_check_value(const codec_prop *p, codec_prop_context ctx,
                                     codec_sender sender)
{
    switch (p->id) {
    case CODEC_PROP_PAYLOAD_FORMAT:
    case CODEC_PROP_REQUEST_PROBLEM_INFO:
    case CODEC_PROP_REQUEST_RESPONSE_INFO:
    case CODEC_PROP_MAXIMUM_QOS:
    case CODEC_PROP_RETAIN_AVAILABLE:
    case CODEC_PROP_WILDCARD_SUB_AVAILABLE:
    case CODEC_PROP_SUB_ID_AVAILABLE:
    case CODEC_PROP_SHARED_SUB_AVAILABLE:
        return is_flag(p->num) ? CODEC_OK : CODEC_ERR_PROTOCOL;
    case CODEC_PROP_SUBSCRIPTION_ID:
        /* [MQTT-3.3.4-6]: never from a client in a PUBLISH. */
        if (p->num == 0 || (ctx == CODEC_CTX_PUBLISH && sender == CODEC_FROM_CLIENT))
            return CODEC_ERR_PROTOCOL;
        return CODEC_OK;
    case CODEC_PROP_RECEIVE_MAXIMUM:
    case CODEC_PROP_MAXIMUM_PACKET_SIZE:
    case CODEC_PROP_TOPIC_ALIAS:
        return p->num ? CODEC_OK : CODEC_ERR_PROTOCOL;
    case CODEC_PROP_SESSION_EXPIRY:
        /* [MQTT-3.14.2-2]: a server's DISCONNECT does not carry it. */
        return ctx == CODEC_CTX_DISCONNECT && sender == CODEC_FROM_SERVER ? CODEC_ERR_PROTOCOL
                                                                          : CODEC_OK;
    case CODEC_PROP_RESPONSE_TOPIC:
        return codec_topic_name_check(p->str) == CODEC_OK ? CODEC_OK : CODEC_ERR_PROTOCOL;
    default:
        return CODEC_OK;
    }
}

static void prop_store(codec_props *out, const codec_prop *p)
{
    switch (p->id) {
    case CODEC_PROP_PAYLOAD_FORMAT: out->payload_format = (uint8_t)p->num; break;
    case CODEC_PROP_MESSAGE_EXPIRY: out->message_expiry = p->num; break;
    case CODEC_PROP_CONTENT_TYPE: out->content_type = p->str; break;
    case CODEC_PROP_RESPONSE_TOPIC: out->response_topic = p->str; break;
    case CODEC_PROP_CORRELATION_DATA: out->correlation_data = p->str; break;
    case CODEC_PROP_SESSION_EXPIRY: out->session_expiry = p->num; break;
    case CODEC_PROP_ASSIGNED_CLIENT_ID: out->assigned_client_id = p->str; break;
    case CODEC_PROP_SERVER_KEEP_ALIVE: out->server_keep_alive = (uint16_t)p->num; break;
    case CODEC_PROP_AUTH_METHOD: out->auth_method = p->str; break;
    case CODEC_PROP_AUTH_DATA: out->auth_data = p->str; break;
    case CODEC_PROP_REQUEST_PROBLEM_INFO: out->request_problem_info = (uint8_t)p->num; break;
    case CODEC_PROP_WILL_DELAY: out->will_delay = p->num; break;
    case CODEC_PROP_REQUEST_RESPONSE_INFO: out->request_response_info = (uint8_t)p->num; break;
    case CODEC_PROP_RESPONSE_INFO: out->response_info = p->str; break;
    case CODEC_PROP_SERVER_REFERENCE: out->server_reference = p->str; break;
    case CODEC_PROP_REASON_STRING: out->reason_string = p->str; break;
    case CODEC_PROP_RECEIVE_MAXIMUM: out->receive_maximum = (uint16_t)p->num; break;
    case CODEC_PROP_TOPIC_ALIAS_MAXIMUM: out->topic_alias_maximum = (uint16_t)p->num; break;
    case CODEC_PROP_TOPIC_ALIAS: out->topic_alias = (uint16_t)p->num; break;
    case CODEC_PROP_MAXIMUM_QOS: out->maximum_qos = (uint8_t)p->num; break;
    case CODEC_PROP_RETAIN_AVAILABLE: out->retain_available = (uint8_t)p->num; break;
    case CODEC_PROP_MAXIMUM_PACKET_SIZE: out->maximum_packet_size = p->num; break;
    case CODEC_PROP_WILDCARD_SUB_AVAILABLE: out->wildcard_sub_available = (uint8_t)p->num; break;
    case CODEC_PROP_SUB_ID_AVAILABLE: out->sub_id_available = (uint8_t)p->num; break;
    case CODEC_PROP_SHARED_SUB_AVAILABLE: out->shared_sub_available = (uint8_t)p->num; break;
    default: break;
    }
}

codec_status codec_props_decode(codec_bytes raw, codec_prop_context ctx, codec_sender sender,
                                codec_props *out)
{
    *out = (codec_props){0};
    out->raw = raw;
    rd r = rd_init(raw.ptr, raw.len);
    while (rd_left(&r) > 0) {
        codec_prop p;
        const prop_info *info;
        codec_status st = prop_read_one(&r, &p, &info);
        if (st != CODEC_OK)
            return st;
        if (!(info->contexts & CTX(ctx)))
            return CODEC_ERR_MALFORMED;
        if (info->type == CODEC_PT_STRING || info->type == CODEC_PT_STRING_PAIR) {
            if (!codec_utf8_valid(p.str) ||
                (info->type == CODEC_PT_STRING_PAIR && !codec_utf8_valid(p.value)))
                return CODEC_ERR_MALFORMED;
        }
        st = prop_check_value(&p, ctx, sender);
        if (st != CODEC_OK)
            return st;

        if (p.id == CODEC_PROP_USER) {
            out->user_count++;
            continue;
        }
        if (p.id == CODEC_PROP_SUBSCRIPTION_ID) {
            /* Several only in a server's PUBLISH (3.3.2.3.8); once in SUBSCRIBE. */
            if (out->sub_id_count > 0 && ctx != CODEC_CTX_PUBLISH)
                return CODEC_ERR_PROTOCOL;
            if (out->sub_id_count++ == 0)
                out->subscription_id = p.num;
            continue;
        }
        if (CODEC_HAS(out, p.id))
            return CODEC_ERR_PROTOCOL;
        CODEC_SET(out, p.id);
        prop_store(out, &p);
    }
    /* Authentication Data without a method is a protocol error (3.1.2.11.10). */
    if (CODEC_HAS(out, CODEC_PROP_AUTH_DATA) && !CODEC_HAS(out, CODEC_PROP_AUTH_METHOD))
        return CODEC_ERR_PROTOCOL;
    return CODEC_OK;
}

codec_status props_read(rd *r, codec_prop_context ctx, codec_sender sender, codec_props *out)
{
    codec_status st;
    uint32_t len = rd_vbi(r, &st);
    if (st != CODEC_OK)
        return CODEC_ERR_MALFORMED;
    codec_bytes raw = rd_bytes(r, len);
    if (r->failed)
        return CODEC_ERR_MALFORMED;
    return codec_props_decode(raw, ctx, sender, out);
}

/* ---- encoding --------------------------------------------------------- */

static bool fits_string(codec_bytes b)
{
    return b.len <= CODEC_MAX_STRING && (b.len == 0 || b.ptr != NULL);
}

/* The value of a single-valued property as a codec_prop, for writing. */
static codec_prop prop_from_struct(const codec_props *p, unsigned id)
{
    codec_prop v = {.id = (uint8_t)id};
    switch (id) {
    case CODEC_PROP_PAYLOAD_FORMAT: v.num = p->payload_format; break;
    case CODEC_PROP_MESSAGE_EXPIRY: v.num = p->message_expiry; break;
    case CODEC_PROP_CONTENT_TYPE: v.str = p->content_type; break;
    case CODEC_PROP_RESPONSE_TOPIC: v.str = p->response_topic; break;
    case CODEC_PROP_CORRELATION_DATA: v.str = p->correlation_data; break;
    case CODEC_PROP_SESSION_EXPIRY: v.num = p->session_expiry; break;
    case CODEC_PROP_ASSIGNED_CLIENT_ID: v.str = p->assigned_client_id; break;
    case CODEC_PROP_SERVER_KEEP_ALIVE: v.num = p->server_keep_alive; break;
    case CODEC_PROP_AUTH_METHOD: v.str = p->auth_method; break;
    case CODEC_PROP_AUTH_DATA: v.str = p->auth_data; break;
    case CODEC_PROP_REQUEST_PROBLEM_INFO: v.num = p->request_problem_info; break;
    case CODEC_PROP_WILL_DELAY: v.num = p->will_delay; break;
    case CODEC_PROP_REQUEST_RESPONSE_INFO: v.num = p->request_response_info; break;
    case CODEC_PROP_RESPONSE_INFO: v.str = p->response_info; break;
    case CODEC_PROP_SERVER_REFERENCE: v.str = p->server_reference; break;
    case CODEC_PROP_REASON_STRING: v.str = p->reason_string; break;
    case CODEC_PROP_RECEIVE_MAXIMUM: v.num = p->receive_maximum; break;
    case CODEC_PROP_TOPIC_ALIAS_MAXIMUM: v.num = p->topic_alias_maximum; break;
    case CODEC_PROP_TOPIC_ALIAS: v.num = p->topic_alias; break;
    case CODEC_PROP_MAXIMUM_QOS: v.num = p->maximum_qos; break;
    case CODEC_PROP_RETAIN_AVAILABLE: v.num = p->retain_available; break;
    case CODEC_PROP_MAXIMUM_PACKET_SIZE: v.num = p->maximum_packet_size; break;
    case CODEC_PROP_WILDCARD_SUB_AVAILABLE: v.num = p->wildcard_sub_available; break;
    case CODEC_PROP_SUB_ID_AVAILABLE: v.num = p->sub_id_available; break;
    case CODEC_PROP_SHARED_SUB_AVAILABLE: v.num = p->shared_sub_available; break;
    default: break;
    }
    return v;
}

static codec_status prop_write_one(wr *w, const codec_prop *v, codec_prop_context ctx)
{
    const prop_info *info = prop_lookup(v->id);
    if (!info || !(info->contexts & CTX(ctx)))
        return CODEC_ERR_ARG;
    wr_vbi(w, v->id);
    switch (info->type) {
    case CODEC_PT_BYTE:
        if (v->num > 0xff)
            return CODEC_ERR_ARG;
        wr_u8(w, (uint8_t)v->num);
        break;
    case CODEC_PT_U16:
        if (v->num > 0xffff)
            return CODEC_ERR_ARG;
        wr_u16(w, (uint16_t)v->num);
        break;
    case CODEC_PT_U32:
        wr_u32(w, v->num);
        break;
    case CODEC_PT_VBI:
        if (v->num == 0 || v->num > CODEC_MAX_VBI)
            return CODEC_ERR_ARG;
        wr_vbi(w, v->num);
        break;
    case CODEC_PT_STRING:
    case CODEC_PT_BINARY:
    case CODEC_PT_STRING_PAIR:
        if (!fits_string(v->str))
            return CODEC_ERR_ARG;
        wr_lenbytes(w, v->str);
        if (info->type == CODEC_PT_STRING_PAIR) {
            if (!fits_string(v->value))
                return CODEC_ERR_ARG;
            wr_lenbytes(w, v->value);
        }
        break;
    default:
        return CODEC_ERR_ARG;
    }
    return CODEC_OK;
}

/* The block body: single-valued properties in identifier order, then the
 * repeatable ones copied from raw, then the appended lists. */
static codec_status props_body(wr *w, const codec_props *p, codec_prop_context ctx)
{
    codec_status st;
    if (p->present >> (CODEC_PROP_MAX_ID + 1) || (p->present & 1))
        return CODEC_ERR_ARG; /* bits for identifiers that do not exist */
    /* Most packets the hub writes carry no property at all: visit only the
     * identifiers that are set, lowest first. */
    for (uint64_t left = p->present; left != 0; left &= left - 1) {
        unsigned id = (unsigned)__builtin_ctzll(left);
        if (id == CODEC_PROP_USER || id == CODEC_PROP_SUBSCRIPTION_ID)
            return CODEC_ERR_ARG; /* repeatable: given through raw or the lists */
        codec_prop v = prop_from_struct(p, id);
        if ((st = prop_write_one(w, &v, ctx)) != CODEC_OK)
            return st;
    }
    if (p->raw.len == 0 && p->user_len == 0 && p->sub_ids_len == 0)
        return CODEC_OK;

    size_t pos = 0;
    codec_prop v;
    while (codec_props_next(p->raw, &pos, &v)) {
        if (v.id != CODEC_PROP_USER && v.id != CODEC_PROP_SUBSCRIPTION_ID)
            continue;
        if ((st = prop_write_one(w, &v, ctx)) != CODEC_OK)
            return st;
    }
    for (size_t i = 0; i < p->user_len; i++) {
        v = (codec_prop){.id = CODEC_PROP_USER, .str = p->user[i].name,
                         .value = p->user[i].value};
        if ((st = prop_write_one(w, &v, ctx)) != CODEC_OK)
            return st;
    }
    for (size_t i = 0; i < p->sub_ids_len; i++) {
        v = (codec_prop){.id = CODEC_PROP_SUBSCRIPTION_ID, .num = p->sub_ids[i]};
        if ((st = prop_write_one(w, &v, ctx)) != CODEC_OK)
            return st;
    }
    return CODEC_OK;
}

codec_status props_write(wr *w, const codec_props *p, codec_prop_context ctx)
{
    wr measure = wr_init(NULL, 0);
    codec_status st = props_body(&measure, p, ctx);
    if (st != CODEC_OK)
        return st;
    if (measure.pos > CODEC_MAX_VBI)
        return CODEC_ERR_ARG;
    wr_vbi(w, (uint32_t)measure.pos);
    return props_body(w, p, ctx);
}

codec_status codec_props_encode(const codec_props *p, codec_prop_context ctx, uint8_t *out,
                                size_t cap, size_t *written)
{
    *written = 0;
    wr measure = wr_init(NULL, 0);
    codec_status st = props_body(&measure, p, ctx);
    if (st != CODEC_OK)
        return st;
    *written = measure.pos;
    if (measure.pos > cap || (measure.pos > 0 && out == NULL))
        return CODEC_ERR_BUFFER;
    wr w = wr_init(out, cap);
    return props_body(&w, p, ctx);
}
