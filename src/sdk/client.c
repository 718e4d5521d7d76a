/*
 * client.c — the libmoat client's configuration and public calls: checking a
 * configuration, opening the queue and the command verifier, storing a
 * reading (moat_publish), and the small getters. The connection itself is
 * driven by moat_poll (client_conn.c).
 *
 * Everything lives in the caller's moat_client: the client keeps pointers
 * into it (the verifier holds &c->storage), so a client must stay where it
 * was initialised.
 */
#include <string.h>

#include <moat/record.h>

#include "client_int.h"

#define DEFAULT_KEEP_ALIVE_S    60u
#define DEFAULT_SESSION_EXPIRY  (7u * 24u * 3600u)
#define DEFAULT_CONNECT_TIMEOUT 20000u
#define DEFAULT_PING_TIMEOUT    10000u
#define DEFAULT_BACKOFF_BASE    500u
#define DEFAULT_BACKOFF_MAX     60000u

void moat_config_defaults(moat_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->protocol_version = CODEC_V5;
    cfg->keep_alive_s = DEFAULT_KEEP_ALIVE_S;
    cfg->session_expiry_s = DEFAULT_SESSION_EXPIRY;
    cfg->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT;
    cfg->ping_timeout_ms = DEFAULT_PING_TIMEOUT;
    cfg->max_inflight = MOAT_MAX_INFLIGHT;
    cfg->backoff_base_ms = DEFAULT_BACKOFF_BASE;
    cfg->backoff_max_ms = DEFAULT_BACKOFF_MAX;
    cfg->queue_policy = MOAT_QUEUE_DROP_OLDEST;
    cfg->shaper_cover = true;
}

/* The largest PUBLISH the client writes for a record of rec_len bytes on a
 * topic of topic_len bytes (one reading in a batch). */
static size_t publish_size(size_t topic_len, size_t rec_len)
{
    return CLIENT_PUBLISH_OVERHEAD + topic_len + MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD +
           rec_len;
}

static bool tables_ok(const moat_config *cfg)
{
    const moat_transport *t = cfg->transport;
    const moat_clock *k = cfg->clock;
    const moat_storage *s = cfg->storage;
    if (!t || !t->connect || !t->send || !t->recv || !t->close)
        return false;
    if (!k || !k->now_ms || !k->unix_time || !k->random)
        return false;
    if (!s || !s->size || !s->read || !s->write || !s->sync)
        return false;
    return !cfg->crypto || cfg->crypto->ed25519_verify;
}

static moat_status check_config(const moat_config *cfg)
{
    if (!tables_ok(cfg) || !cfg->device_id || !cfg->endpoints)
        return MOAT_ERR_ARG;
    size_t id_len = strlen(cfg->device_id);
    if (id_len > MOAT_DEVICE_ID_MAX ||
        !moat_command_name_valid((const uint8_t *)cfg->device_id, id_len, MOAT_DEVICE_ID_MAX))
        return MOAT_ERR_ARG;
    if (cfg->endpoint_count == 0 || cfg->endpoint_count > MOAT_MAX_ENDPOINTS)
        return MOAT_ERR_ARG;
    for (size_t i = 0; i < cfg->endpoint_count; i++) {
        if (!cfg->endpoints[i].host || !cfg->endpoints[i].host[0] || cfg->endpoints[i].port == 0)
            return MOAT_ERR_ARG;
    }
    if (cfg->protocol_version != CODEC_V5 && cfg->protocol_version != CODEC_V311)
        return MOAT_ERR_ARG;
    if (cfg->max_inflight == 0 || cfg->max_inflight > MOAT_MAX_INFLIGHT)
        return MOAT_ERR_ARG;
    if (cfg->backoff_base_ms == 0 || cfg->backoff_max_ms < cfg->backoff_base_ms)
        return MOAT_ERR_ARG;
    if (cfg->connect_timeout_ms == 0 || cfg->ping_timeout_ms == 0)
        return MOAT_ERR_ARG;
    if (cfg->command_key_count > MOAT_COMMAND_MAX_KEYS ||
        (cfg->command_key_count > 0 && !cfg->command_keys))
        return MOAT_ERR_ARG;
    if (cfg->queue_policy != MOAT_QUEUE_DROP_OLDEST && cfg->queue_policy != MOAT_QUEUE_REFUSE_NEW)
        return MOAT_ERR_ARG;
    /* Buffers: the smallest useful sizes. A record that does not fit the
     * buffers is refused by moat_publish, so the client cannot get stuck on
     * one. */
    if (!cfg->tx_buf || !cfg->rx_buf || !cfg->work_buf)
        return MOAT_ERR_ARG;
    if (cfg->tx_cap < publish_size(MOAT_TOPIC_MAX, 0) || cfg->rx_cap < 64 ||
        cfg->work_cap < MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD + MOAT_RECORD_OVERHEAD + 1)
        return MOAT_ERR_SPACE;
    if (cfg->shaper_interval_ms > 0) {
        size_t rs = cfg->shaper_record_size;
        if (rs < MOAT_BATCH_MIN_SIZE || rs > cfg->work_cap ||
            CLIENT_PUBLISH_OVERHEAD + MOAT_TOPIC_MAX + rs > cfg->tx_cap)
            return MOAT_ERR_SPACE;
    }
    return MOAT_OK;
}

moat_status moat_client_init(moat_client *c, const moat_config *cfg)
{
    if (!c || !cfg)
        return MOAT_ERR_ARG;
    moat_status s = check_config(cfg);
    if (s != MOAT_OK)
        return s;
    memset(c, 0, sizeof(*c));
    c->id_len = strlen(cfg->device_id);
    memcpy(c->id, cfg->device_id, c->id_len);
    for (size_t i = 0; i < cfg->endpoint_count; i++)
        c->endpoints[i] = cfg->endpoints[i];
    c->endpoint_count = cfg->endpoint_count;
    c->transport = *cfg->transport;
    c->clock = *cfg->clock;
    c->storage = *cfg->storage;
    if (cfg->crypto) {
        c->crypto = *cfg->crypto;
        c->have_crypto = true;
    }
    c->tx_buf = cfg->tx_buf;
    c->tx_cap = cfg->tx_cap;
    c->rx_buf = cfg->rx_buf;
    c->rx_cap = cfg->rx_cap;
    c->work_buf = cfg->work_buf;
    c->work_cap = cfg->work_cap;
    c->version = cfg->protocol_version;
    c->keep_alive_s = cfg->keep_alive_s;
    c->session_expiry_s = cfg->session_expiry_s;
    c->connect_timeout_ms = cfg->connect_timeout_ms;
    c->ping_timeout_ms = cfg->ping_timeout_ms;
    c->max_inflight_cfg = cfg->max_inflight;
    c->backoff_base_ms = cfg->backoff_base_ms;
    c->backoff_max_ms = cfg->backoff_max_ms;
    c->on_command = cfg->on_command;
    c->on_rejected = cfg->on_rejected;
    c->on_event = cfg->on_event;
    c->user = cfg->user;
    c->reject_tokens = CLIENT_REJECT_BURST;
    c->state = MOAT_STATE_STOPPED;
    c->next_packet_id = 1;

    s = moat_queue_open(&c->queue, &c->storage, MOAT_AREA_QUEUE, cfg->queue_policy);
    if (s != MOAT_OK)
        return s;
    if (cfg->command_key_count > 0) {
        s = moat_command_verifier_init(&c->verifier, c->id, cfg->command_keys,
                                       (unsigned)cfg->command_key_count, &c->storage,
                                       MOAT_AREA_STATE, 0);
        if (s != MOAT_OK)
            return s;
        c->have_keys = true;
    }
    if (cfg->shaper_interval_ms > 0) {
        s = moat_shaper_init(&c->shaper, cfg->shaper_interval_ms, cfg->shaper_record_size,
                             cfg->shaper_cover);
        if (s != MOAT_OK)
            return s;
        c->shaped = true;
    }
    return MOAT_OK;
}

moat_status moat_connect(moat_client *c)
{
    if (!c)
        return MOAT_ERR_ARG;
    if (c->state == MOAT_STATE_STOPPED) {
        c->state = MOAT_STATE_WAITING;
        c->deadline_ms = client_now(c);
        c->attempt = 0;
    }
    return MOAT_OK;
}

/* "moat/{id}/{kind}/{tail}" into c->topic; returns its length, 0 if it does
 * not fit (cannot happen for valid ids and names: MOAT_TOPIC_MAX holds the
 * longest). */
size_t client_topic(moat_client *c, const char *kind, const uint8_t *tail, size_t tail_len)
{
    size_t kind_len = strlen(kind);
    size_t need = 5 + c->id_len + 1 + kind_len + 1 + tail_len;
    if (need > sizeof(c->topic))
        return 0;
    char *p = c->topic;
    memcpy(p, "moat/", 5);
    p += 5;
    memcpy(p, c->id, c->id_len);
    p += c->id_len;
    *p++ = '/';
    memcpy(p, kind, kind_len);
    p += kind_len;
    *p++ = '/';
    memcpy(p, tail, tail_len);
    return need;
}

/* A packet id no outstanding packet uses (never 0). */
uint16_t client_packet_id(moat_client *c)
{
    for (;;) {
        uint16_t id = c->next_packet_id++;
        if (c->next_packet_id == 0)
            c->next_packet_id = 1;
        if (id == 0)
            continue;
        bool used = c->sub_pending_ack && id == c->sub_packet_id;
        for (size_t i = 0; i < c->inflight_count && !used; i++)
            used = c->inflight[i].packet_id == id;
        if (!used)
            return id;
    }
}

moat_status moat_publish_at(moat_client *c, const char *stream, const uint8_t *payload, size_t len,
                            uint64_t device_time_ms, uint64_t *seq)
{
    if (!c || !stream || (!payload && len > 0))
        return MOAT_ERR_ARG;
    size_t stream_len = strlen(stream);
    if (!moat_record_stream_valid((const uint8_t *)stream, stream_len) ||
        len > MOAT_RECORD_MAX_PAYLOAD)
        return MOAT_ERR_ARG;
    size_t rec_len = MOAT_RECORD_SIZE(stream_len, len);
    /* Refuse now what could never be sent, rather than block the queue with
     * it later: it must fit the work buffer (as a batch), the output buffer
     * (as a PUBLISH), a shaped record when shaping, and the queue. */
    size_t topic_len = 5 + c->id_len + 4 + MOAT_RECORD_MAX_STREAM; /* as client_up.c */
    if (rec_len > MOAT_QUEUE_MAX_RECORD ||
        MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD + rec_len > c->work_cap ||
        publish_size(topic_len, rec_len) > c->tx_cap)
        return MOAT_ERR_SPACE;
    if (c->shaped && rec_len > MOAT_BATCH_MAX_RECORD(moat_shaper_record_size(&c->shaper)))
        return MOAT_ERR_SPACE;
    size_t out_len = 0;
    moat_status s = moat_record_encode_reading(c->work_buf, c->work_cap, stream, device_time_ms,
                                               payload, len, &out_len);
    if (s != MOAT_OK)
        return s;
    moat_queue_stats before, after;
    moat_queue_get_stats(&c->queue, &before);
    s = moat_queue_push(&c->queue, c->work_buf, out_len, seq);
    moat_queue_get_stats(&c->queue, &after);
    /* Drop-oldest may have evicted records that are in flight. */
    if (after.dropped > before.dropped)
        client_up_dropped(c, after.dropped - before.dropped);
    return s;
}

moat_status moat_publish(moat_client *c, const char *stream, const uint8_t *payload, size_t len,
                         uint64_t *seq)
{
    if (!c)
        return MOAT_ERR_ARG;
    uint64_t t = c->clock.unix_time(c->clock.ctx);
    return moat_publish_at(c, stream, payload, len, t * 1000u, seq);
}

moat_status moat_disconnect(moat_client *c)
{
    if (!c)
        return MOAT_ERR_ARG;
    if (c->in_poll) {
        /* From a callback: done at the end of this poll, not under its feet. */
        c->stop_requested = true;
        return MOAT_OK;
    }
    c->stop_requested = false;
    if (c->state == MOAT_STATE_ONLINE) {
        /* Normal disconnection (reason 0): the hub keeps the session for
         * session_expiry_s, and drops no will. One try to send it: leaving
         * must not block. */
        codec_packet p = {.type = CODEC_DISCONNECT};
        if (client_send_packet(c, &p) == MOAT_OK)
            (void)client_flush(c);
    }
    if (c->state != MOAT_STATE_STOPPED && c->state != MOAT_STATE_WAITING)
        c->transport.close(c->transport.ctx);
    if (c->state == MOAT_STATE_ONLINE)
        client_event(c, MOAT_EV_OFFLINE, MOAT_OK, 0);
    c->state = MOAT_STATE_STOPPED;
    c->tx_off = c->tx_len = c->rx_len = c->rx_skip = 0;
    c->skip_ack = false;
    client_up_reset(c);
    return MOAT_OK;
}

moat_state moat_client_state(const moat_client *c)
{
    return c->state;
}

moat_status moat_client_last_error(const moat_client *c)
{
    return c->last_error;
}

void moat_client_get_stats(const moat_client *c, moat_client_stats *out)
{
    *out = c->stats;
    moat_queue_get_stats(&c->queue, &out->queue);
}

const char *moat_state_str(moat_state s)
{
    switch (s) {
    case MOAT_STATE_STOPPED:
        return "stopped";
    case MOAT_STATE_WAITING:
        return "waiting";
    case MOAT_STATE_TRANSPORT:
        return "connecting";
    case MOAT_STATE_MQTT:
        return "mqtt-connecting";
    case MOAT_STATE_ONLINE:
        return "online";
    }
    return "unknown";
}
