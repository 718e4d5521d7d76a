/*
 * client_conn.c — moat_poll and the connection state machine.
 *
 *   STOPPED --moat_connect--> WAITING --deadline--> TRANSPORT --secure--> MQTT
 *      ^                         ^                      |                  |
 *      |                         +---- failed attempt --+------------------+
 *      |                         |        (back-off, next endpoint)        | CONNACK ok
 *      +--moat_disconnect--------+---- connection lost ------------ ONLINE <+
 *
 * A failed attempt moves to the next endpoint and waits a full-jitter
 * back-off (backoff.c) that grows with each consecutive failure; a lost
 * connection retries the same endpoint, since it worked a moment ago, after
 * a short jittered wait if it had been up for a while. Every state has a deadline: the connect
 * timeout covers TLS and CONNACK together, and online the keep-alive sends PINGREQ after keep_alive
 * seconds of silence from the device and gives up when no packet comes back within the ping
 * timeout.
 */
#include <string.h>

#include "client_int.h"

static uint32_t random_u32(moat_client *c)
{
    uint8_t b[4];
    c->clock.random(c->clock.ctx, b, sizeof(b));
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Wait before the next attempt: attempt n uses back-off window n. */
static void wait_next(moat_client *c, uint64_t now)
{
    uint32_t d =
        moat_backoff_delay(c->attempt, c->backoff_base_ms, c->backoff_max_ms, random_u32(c));
    c->state = MOAT_STATE_WAITING;
    c->deadline_ms = now + d;
}

static void reset_link(moat_client *c)
{
    c->transport.close(c->transport.ctx);
    c->tx_off = c->tx_len = c->rx_len = c->rx_skip = 0;
    c->skip_ack = false;
    c->ping_outstanding = false;
    c->sub_pending = false;
    c->sub_pending_ack = false;
    client_up_reset(c);
}

static void attempt_failed(moat_client *c, moat_status why)
{
    reset_link(c);
    c->last_error = why;
    c->stats.connect_failures++;
    client_event(c, MOAT_EV_CONNECT_FAILED, why, c->endpoint_next);
    c->endpoint_next = (c->endpoint_next + 1) % c->endpoint_count;
    wait_next(c, client_now(c));
    if (c->attempt < 31)
        c->attempt++;
}

void client_connection_lost(moat_client *c, moat_status why)
{
    if (c->state != MOAT_STATE_ONLINE) {
        attempt_failed(c, why);
        return;
    }
    uint64_t now = client_now(c);
    reset_link(c);
    c->last_error = why;
    client_event(c, MOAT_EV_OFFLINE, why, 0);
    /* A connection that lasted starts the back-off afresh; one the hub ends
     * at once (a policy, a takeover loop) keeps it growing, so a device
     * cannot hammer a hub that accepts and drops it. */
    if (now - c->online_since_ms >= CLIENT_STABLE_MS)
        c->attempt = 0;
    wait_next(c, now);
    if (c->attempt < 31)
        c->attempt++;
}

static moat_status send_connect(moat_client *c)
{
    codec_packet p = {.type = CODEC_CONNECT};
    codec_connect *k = &p.u.connect;
    k->protocol_version = c->version;
    /* A persistent session: the hub keeps the subscription and the commands
     * that arrive while the device is away. */
    k->clean_start = false;
    k->keep_alive = c->keep_alive_s;
    k->client_id = (codec_bytes){(const uint8_t *)c->id, c->id_len};
    if (c->version == CODEC_V5) {
        k->props.session_expiry = c->session_expiry_s;
        CODEC_SET(&k->props, CODEC_PROP_SESSION_EXPIRY);
        /* Commands are handled one by one as they come; the PUBACKs owed
         * are bounded by what the client can remember. */
        k->props.receive_maximum = MOAT_MAX_INFLIGHT;
        CODEC_SET(&k->props, CODEC_PROP_RECEIVE_MAXIMUM);
        /* Nothing larger than the receive buffer: the hub drops such a
         * message instead of sending what the device could not read. */
        k->props.maximum_packet_size =
            (uint32_t)(c->rx_cap > 0xffffffffu ? 0xffffffffu : c->rx_cap);
        CODEC_SET(&k->props, CODEC_PROP_MAXIMUM_PACKET_SIZE);
    }
    return client_send_packet(c, &p);
}

moat_status client_on_connack(moat_client *c, const codec_connack *a)
{
    if (c->state != MOAT_STATE_MQTT)
        return MOAT_ERR_PROTOCOL;
    if (a->reason != 0)
        return MOAT_ERR_REFUSED;
    c->keep_alive_eff = c->keep_alive_s;
    c->send_quota = c->max_inflight_cfg;
    c->max_packet_out = 0;
    if (c->version == CODEC_V5) {
        const codec_props *pr = &a->props;
        if (CODEC_HAS(pr, CODEC_PROP_RECEIVE_MAXIMUM) && pr->receive_maximum < c->send_quota)
            c->send_quota = pr->receive_maximum;
        if (CODEC_HAS(pr, CODEC_PROP_SERVER_KEEP_ALIVE))
            c->keep_alive_eff = pr->server_keep_alive;
        if (CODEC_HAS(pr, CODEC_PROP_MAXIMUM_PACKET_SIZE))
            c->max_packet_out = pr->maximum_packet_size;
        /* Records need QoS 1: a hub that only takes QoS 0 would lose them. */
        if (CODEC_HAS(pr, CODEC_PROP_MAXIMUM_QOS) && pr->maximum_qos < 1)
            return MOAT_ERR_REFUSED;
    }
    uint64_t now = client_now(c);
    c->state = MOAT_STATE_ONLINE;
    c->online_since_ms = now;
    c->stats.connects++;
    c->last_rx_ms = now;
    c->ping_outstanding = false;
    /* Subscribe on every connect, session present or not: cheap, and it
     * repairs a session the hub lost. */
    c->sub_pending = true;
    c->sub_pending_ack = false;
    client_event(c, MOAT_EV_ONLINE, MOAT_OK, a->session_present);
    return MOAT_OK;
}

static moat_status send_subscribe(moat_client *c)
{
    size_t n = client_topic(c, "down", (const uint8_t *)"#", 1);
    codec_subscription s = {.filter = {(const uint8_t *)c->topic, n}, .qos = 1};
    codec_packet p = {.type = CODEC_SUBSCRIBE};
    uint16_t id = client_packet_id(c);
    p.u.subscribe.packet_id = id;
    p.u.subscribe.count = 1;
    p.u.subscribe.list = &s;
    moat_status st = client_send_packet(c, &p);
    if (st == MOAT_OK) {
        c->sub_pending = false;
        c->sub_pending_ack = true;
        c->sub_packet_id = id;
    }
    return st == MOAT_AGAIN ? MOAT_OK : st;
}

/* Keep-alive: ping after keep_alive of silence from us; give up when
 * nothing at all came back within the ping timeout. */
static moat_status keep_alive(moat_client *c, uint64_t now)
{
    if (c->ping_outstanding) {
        if (now - c->ping_sent_ms >= c->ping_timeout_ms)
            return MOAT_ERR_TIMEOUT;
        return MOAT_OK;
    }
    if (c->keep_alive_eff == 0)
        return MOAT_OK;
    uint64_t ka = (uint64_t)c->keep_alive_eff * 1000u;
    if (now - c->last_tx_ms < ka)
        return MOAT_OK;
    /* Not even the ping can be written: the transport took nothing for a
     * whole keep-alive and the ping timeout. The link is dead. */
    if (now - c->last_tx_ms >= ka + c->ping_timeout_ms)
        return MOAT_ERR_TIMEOUT;
    codec_packet p = {.type = CODEC_PINGREQ};
    moat_status st = client_send_packet(c, &p);
    if (st == MOAT_OK) {
        c->ping_outstanding = true;
        c->ping_sent_ms = now;
    }
    return st == MOAT_AGAIN ? MOAT_OK : st;
}

static moat_status poll_transport(moat_client *c, uint64_t now)
{
    const moat_endpoint *ep = &c->endpoints[c->endpoint_next];
    moat_status st = c->transport.connect(c->transport.ctx, ep->host, ep->port);
    if (st == MOAT_AGAIN) {
        if (now >= c->deadline_ms) {
            attempt_failed(c, MOAT_ERR_TIMEOUT);
            return MOAT_ERR_TIMEOUT;
        }
        return MOAT_OK;
    }
    if (st != MOAT_OK) {
        attempt_failed(c, st);
        return st;
    }
    c->state = MOAT_STATE_MQTT;
    c->tx_off = c->tx_len = c->rx_len = c->rx_skip = 0;
    c->skip_ack = false;
    c->last_tx_ms = now;
    st = send_connect(c);
    if (st != MOAT_OK) {
        attempt_failed(c, st == MOAT_AGAIN ? MOAT_ERR_SPACE : st);
        return st;
    }
    return MOAT_OK;
}

/* One pass over an open connection: write, read, then add what is due. */
static moat_status poll_session(moat_client *c, uint64_t now)
{
    moat_status st = client_flush(c);
    if (st == MOAT_OK)
        st = client_read(c);
    if (st != MOAT_OK)
        return st;
    if (c->state == MOAT_STATE_MQTT) {
        if (c->shaped)
            (void)client_up_work(c, now); /* a slot due now goes by */
        return now >= c->deadline_ms ? MOAT_ERR_TIMEOUT : MOAT_OK;
    }
    if (c->sub_pending && (st = send_subscribe(c)) != MOAT_OK)
        return st;
    if ((st = client_up_work(c, now)) != MOAT_OK)
        return st;
    if ((st = keep_alive(c, now)) != MOAT_OK)
        return st;
    return client_flush(c);
}

moat_status moat_poll(moat_client *c)
{
    if (!c)
        return MOAT_ERR_ARG;
    if (c->in_poll)
        return MOAT_ERR_STATE; /* called from a callback */
    c->in_poll = true;
    moat_status st = MOAT_OK;
    uint64_t now = client_now(c);
    switch (c->state) {
    case MOAT_STATE_STOPPED:
        st = MOAT_AGAIN;
        break;
    case MOAT_STATE_WAITING:
        if (c->shaped)
            (void)client_up_work(c, now); /* keeps the shaper's grid */
        if (now < c->deadline_ms) {
            st = MOAT_AGAIN;
            break;
        }
        c->state = MOAT_STATE_TRANSPORT;
        c->deadline_ms = now + c->connect_timeout_ms;
        st = poll_transport(c, now);
        break;
    case MOAT_STATE_TRANSPORT:
        if (c->shaped)
            (void)client_up_work(c, now);
        st = poll_transport(c, now);
        break;
    case MOAT_STATE_MQTT:
    case MOAT_STATE_ONLINE:
        st = poll_session(c, now);
        if (st != MOAT_OK && st != MOAT_AGAIN && c->state != MOAT_STATE_WAITING &&
            c->state != MOAT_STATE_STOPPED)
            client_connection_lost(c, st);
        break;
    }
    c->in_poll = false;
    if (c->stop_requested)
        moat_disconnect(c);
    return st;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint32_t moat_next_deadline_ms(const moat_client *c)
{
    const uint64_t cap = 60000u;
    uint64_t now = c->clock.now_ms(c->clock.ctx);
    uint64_t at = now + cap;
    switch (c->state) {
    case MOAT_STATE_STOPPED:
        break;
    case MOAT_STATE_WAITING:
        at = c->deadline_ms;
        break;
    case MOAT_STATE_TRANSPORT:
        /* A port without a descriptor to wait on still makes progress. */
        at = min_u64(c->deadline_ms, now + 50u);
        break;
    case MOAT_STATE_MQTT:
        at = c->deadline_ms;
        if (c->tx_off < c->tx_len)
            at = min_u64(at, now + 10u);
        break;
    case MOAT_STATE_ONLINE:
        if (c->tx_off < c->tx_len || c->sub_pending || client_up_pending(c))
            at = now + (c->tx_off < c->tx_len ? 10u : 0u);
        if (c->ping_outstanding)
            at = min_u64(at, c->ping_sent_ms + c->ping_timeout_ms);
        else if (c->keep_alive_eff)
            at = min_u64(at, c->last_tx_ms + (uint64_t)c->keep_alive_eff * 1000u);
        break;
    }
    if (c->shaped && c->state != MOAT_STATE_STOPPED && c->shaper_started)
        at = min_u64(at, moat_shaper_next_ms(&c->shaper));
    if (at <= now)
        return 0;
    return (uint32_t)min_u64(at - now, cap);
}
