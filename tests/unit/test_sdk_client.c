/*
 * Unit tests for the libmoat client (src/sdk/client*.c) against a scripted
 * broker: an in-memory transport whose other end decodes what the client
 * writes with the project's codec and answers with packets the codec
 * encodes, on a fake clock, with the queue in RAM areas.
 *
 * What is checked: the CONNECT a device sends (its id as client id, a
 * persistent session with an expiry, keep-alive, maximum packet size) and
 * the SUBSCRIBE to its down topics; a refused CONNACK backs off and moves to
 * the next endpoint; records leave the queue only on PUBACK; several are in
 * flight but never more than the hub's receive maximum; a connection lost
 * with records unacknowledged resends them, oldest first, after the
 * reconnect, so the hub sees every sequence number in order; keep-alive
 * pings and the timeout when the hub falls silent; the back-off windows and
 * endpoint rotation over failed attempts; partial writes; signed commands
 * accepted once and replays/tampering rejected and reported; the shaper's
 * fixed-size records on a fixed schedule with cover records; the
 * next-deadline hint; a clean disconnect; MQTT 3.1.1 mode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moat/moat.h>
#include <moat/record.h>
#include <moat/sign.h>

#include "codec.h"

#define DEV "dev1"

/* ---- the fake platform and broker ---------------------------------------- */

typedef struct pkt {
    uint8_t type;
    bool dup;
    uint8_t qos;
    uint16_t id;
    char topic[256];
    uint8_t payload[4096];
    size_t plen;
    /* CONNECT */
    uint8_t version;
    bool clean_start;
    uint16_t keep_alive;
    bool has_expiry;
    uint32_t session_expiry;
    uint32_t max_packet;
    char client_id[80];
    /* SUBSCRIBE */
    uint8_t sub_qos;
} pkt;

#define MAX_LOG 512

typedef struct fake {
    /* transport */
    moat_status connect_result;
    unsigned connect_again; /* AGAINs before each connect result */
    unsigned again_left;
    unsigned connects;
    char hosts[64][32];
    bool up, peer_closed;
    uint8_t c2s[65536];
    size_t c2s_len;
    uint8_t s2c[65536];
    size_t s2c_len, s2c_off;
    size_t send_chunk; /* most bytes one send takes; 0 = all */
    bool send_block;   /* the transport takes nothing */
    /* broker */
    uint8_t version;
    uint8_t connack_reason;
    uint16_t receive_max; /* 0: not announced */
    bool auto_puback, auto_pingresp;
    uint8_t puback_reason;
    pkt log[MAX_LOG];
    size_t nlog;
    /* clock */
    uint64_t now, unix_s;
    uint32_t rnd;
    /* storage */
    uint8_t area[MOAT_AREA_COUNT][16384];
    /* client side */
    unsigned events[16];
    moat_status last_event_status;
    unsigned commands;
    char last_body[64];
    unsigned rejections;
    moat_command_reason last_reason;
} fake;

static fake *F;
static moat_client C;
static uint8_t TX[2048], RX[2048], WORK[2048];

static moat_status t_connect(void *ctx, const char *host, uint16_t port)
{
    fake *f = ctx;
    (void)port;
    if (f->again_left == 0 && f->connects < 64) {
        snprintf(f->hosts[f->connects], sizeof(f->hosts[0]), "%s", host);
        f->connects++;
        f->again_left = f->connect_again + 1;
    }
    if (--f->again_left > 0)
        return MOAT_AGAIN;
    if (f->connect_result != MOAT_OK)
        return f->connect_result;
    f->up = true;
    f->peer_closed = false;
    f->c2s_len = f->s2c_len = f->s2c_off = 0;
    f->version = 0;
    return MOAT_OK;
}

static long t_send(void *ctx, const uint8_t *buf, size_t len)
{
    fake *f = ctx;
    assert_true(f->up);
    if (f->peer_closed)
        return MOAT_ERR_CLOSED;
    size_t n = f->send_block ? 0 : len;
    if (f->send_chunk && n > f->send_chunk)
        n = f->send_chunk;
    if (n > sizeof(f->c2s) - f->c2s_len)
        n = sizeof(f->c2s) - f->c2s_len;
    memcpy(f->c2s + f->c2s_len, buf, n);
    f->c2s_len += n;
    return (long)n;
}

static long t_recv(void *ctx, uint8_t *buf, size_t cap)
{
    fake *f = ctx;
    assert_true(f->up);
    if (f->s2c_off < f->s2c_len) {
        size_t n = f->s2c_len - f->s2c_off;
        if (n > cap)
            n = cap;
        memcpy(buf, f->s2c + f->s2c_off, n);
        f->s2c_off += n;
        return (long)n;
    }
    return f->peer_closed ? MOAT_ERR_CLOSED : 0;
}

static void t_close(void *ctx)
{
    fake *f = ctx;
    f->up = false;
}

static uint64_t k_now(void *ctx)
{
    return ((fake *)ctx)->now;
}

static uint64_t k_unix(void *ctx)
{
    return ((fake *)ctx)->unix_s;
}

static void k_random(void *ctx, uint8_t *buf, size_t len)
{
    fake *f = ctx;
    for (size_t i = 0; i < len; i++) {
        f->rnd = f->rnd * 1103515245u + 12345u;
        buf[i] = (uint8_t)(f->rnd >> 16);
    }
}

static size_t s_size(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return sizeof(F->area[0]);
}

static moat_status s_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    fake *f = ctx;
    assert_true(area < MOAT_AREA_COUNT && off <= sizeof(f->area[0]) &&
                len <= sizeof(f->area[0]) - off);
    memcpy(buf, f->area[area] + off, len);
    return MOAT_OK;
}

static moat_status s_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    fake *f = ctx;
    assert_true(area < MOAT_AREA_COUNT && off <= sizeof(f->area[0]) &&
                len <= sizeof(f->area[0]) - off);
    memcpy(f->area[area] + off, buf, len);
    return MOAT_OK;
}

static moat_status s_sync(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return MOAT_OK;
}

/* The broker's answers. */
static void to_client(fake *f, const codec_packet *p)
{
    size_t n = 0;
    codec_status cs =
        codec_encode(p, f->version, f->s2c + f->s2c_len, sizeof(f->s2c) - f->s2c_len, &n);
    assert_int_equal(cs, CODEC_OK);
    f->s2c_len += n;
}

static void send_puback(fake *f, uint16_t id, uint8_t reason)
{
    codec_packet p = {.type = CODEC_PUBACK};
    p.u.ack.packet_id = id;
    p.u.ack.reason = f->version == CODEC_V5 ? reason : 0;
    to_client(f, &p);
}

static void send_command(fake *f, const char *topic, const uint8_t *payload, size_t len,
                         uint16_t id)
{
    codec_packet p = {.type = CODEC_PUBLISH};
    p.u.publish.qos = 1;
    p.u.publish.packet_id = id;
    p.u.publish.topic = (codec_bytes){(const uint8_t *)topic, strlen(topic)};
    p.u.publish.payload = (codec_bytes){payload, len};
    to_client(f, &p);
}

static void copy_str(char *dst, size_t cap, codec_bytes b)
{
    assert_true(b.len < cap);
    memcpy(dst, b.ptr, b.len);
    dst[b.len] = '\0';
}

/* Read and log every complete packet the client wrote; answer as scripted. */
static void broker_step(fake *f)
{
    size_t off = 0;
    while (off < f->c2s_len) {
        codec_packet p;
        size_t used = 0;
        codec_decode_opts o = {.version = f->version, .sender = CODEC_FROM_CLIENT};
        codec_status cs = codec_decode(f->c2s + off, f->c2s_len - off, &o, &p, &used);
        if (cs == CODEC_NEED_MORE)
            break;
        assert_int_equal(cs, CODEC_OK);
        assert_true(f->nlog < MAX_LOG);
        pkt *l = &f->log[f->nlog++];
        memset(l, 0, sizeof(*l));
        l->type = p.type;
        switch (p.type) {
        case CODEC_CONNECT: {
            const codec_connect *k = &p.u.connect;
            f->version = k->protocol_version;
            l->version = k->protocol_version;
            l->clean_start = k->clean_start;
            l->keep_alive = k->keep_alive;
            l->has_expiry = CODEC_HAS(&k->props, CODEC_PROP_SESSION_EXPIRY);
            l->session_expiry = k->props.session_expiry;
            l->max_packet = CODEC_HAS(&k->props, CODEC_PROP_MAXIMUM_PACKET_SIZE)
                                ? k->props.maximum_packet_size
                                : 0;
            copy_str(l->client_id, sizeof(l->client_id), k->client_id);
            codec_packet a = {.type = CODEC_CONNACK};
            a.u.connack.reason = f->connack_reason;
            if (f->receive_max && f->version == CODEC_V5) {
                a.u.connack.props.receive_maximum = f->receive_max;
                CODEC_SET(&a.u.connack.props, CODEC_PROP_RECEIVE_MAXIMUM);
            }
            to_client(f, &a);
            break;
        }
        case CODEC_SUBSCRIBE: {
            size_t pos = 0;
            codec_subscription s;
            assert_true(codec_subscribe_next(&p.u.subscribe, f->version, &pos, &s));
            copy_str(l->topic, sizeof(l->topic), s.filter);
            l->sub_qos = s.qos;
            l->id = p.u.subscribe.packet_id;
            codec_packet a = {.type = CODEC_SUBACK};
            uint8_t granted = 1;
            a.u.suback.packet_id = p.u.subscribe.packet_id;
            a.u.suback.reasons = (codec_bytes){&granted, 1};
            to_client(f, &a);
            break;
        }
        case CODEC_PUBLISH:
            copy_str(l->topic, sizeof(l->topic), p.u.publish.topic);
            l->dup = p.u.publish.dup;
            l->qos = p.u.publish.qos;
            l->id = p.u.publish.packet_id;
            assert_true(p.u.publish.payload.len <= sizeof(l->payload));
            memcpy(l->payload, p.u.publish.payload.ptr, p.u.publish.payload.len);
            l->plen = p.u.publish.payload.len;
            if (l->qos == 1 && f->auto_puback)
                send_puback(f, l->id, f->puback_reason);
            break;
        case CODEC_PINGREQ:
            if (f->auto_pingresp) {
                codec_packet a = {.type = CODEC_PINGRESP};
                to_client(f, &a);
            }
            break;
        case CODEC_PUBACK:
            l->id = p.u.ack.packet_id;
            break;
        default:
            break;
        }
        off += used;
    }
    memmove(f->c2s, f->c2s + off, f->c2s_len - off);
    f->c2s_len -= off;
}

static void on_event(void *user, moat_event ev, moat_status st, uint64_t detail)
{
    fake *f = user;
    (void)detail;
    assert_true(ev < 16);
    f->events[ev]++;
    f->last_event_status = st;
}

static void on_command(void *user, const moat_command *cmd)
{
    fake *f = user;
    f->commands++;
    assert_true(cmd->body_len < sizeof(f->last_body));
    memcpy(f->last_body, cmd->body, cmd->body_len);
    f->last_body[cmd->body_len] = '\0';
}

static void on_rejected(void *user, const moat_command_rejection *r)
{
    fake *f = user;
    f->rejections++;
    f->last_reason = r->reason;
}

static moat_transport TR = {NULL, t_connect, t_send, t_recv, t_close};
static moat_clock CK = {NULL, k_now, k_unix, k_random};
static moat_storage ST = {NULL, s_size, s_read, s_write, s_sync};
static moat_crypto CR;
static const moat_endpoint EPS[] = {{"hub-a", 8883}, {"hub-b", 8883}, {"hub-c", 8883}};
static uint8_t PK[32], SK[64];

static int setup(void **state)
{
    (void)state;
    F = calloc(1, sizeof(*F));
    assert_non_null(F);
    F->auto_puback = true;
    F->auto_pingresp = true;
    F->now = 1000;
    F->unix_s = 1700000000u;
    F->rnd = 12345;
    TR.ctx = CK.ctx = ST.ctx = F;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(F);
    F = NULL;
    return 0;
}

static void base_config(moat_config *cfg)
{
    moat_config_defaults(cfg);
    cfg->device_id = DEV;
    cfg->endpoints = EPS;
    cfg->endpoint_count = 3;
    cfg->transport = &TR;
    cfg->clock = &CK;
    cfg->storage = &ST;
    cfg->tx_buf = TX;
    cfg->tx_cap = sizeof(TX);
    cfg->rx_buf = RX;
    cfg->rx_cap = sizeof(RX);
    cfg->work_buf = WORK;
    cfg->work_cap = sizeof(WORK);
    cfg->keep_alive_s = 30;
    cfg->on_event = on_event;
    cfg->on_command = on_command;
    cfg->on_rejected = on_rejected;
    cfg->user = F;
}

static void init_client(moat_config *cfg)
{
    assert_int_equal(moat_client_init(&C, cfg), MOAT_OK);
}

/* Poll and let the broker answer until nothing moves. */
static void run(void)
{
    for (int i = 0; i < 20; i++) {
        (void)moat_poll(&C);
        broker_step(F);
    }
}

static size_t count_type(uint8_t type)
{
    size_t n = 0;
    for (size_t i = 0; i < F->nlog; i++)
        n += F->log[i].type == type;
    return n;
}

static const pkt *nth_of(uint8_t type, size_t k)
{
    for (size_t i = 0; i < F->nlog; i++) {
        if (F->log[i].type == type && k-- == 0)
            return &F->log[i];
    }
    fail_msg("fewer than %zu packets of type %u", k + 1, (unsigned)type);
    return NULL;
}

/* Sequence numbers in a logged PUBLISH's batch, appended to seqs[*n]. */
static void batch_seqs(const pkt *l, uint64_t *seqs, size_t *n, size_t cap)
{
    moat_batch_iter it;
    moat_batch_kind kind;
    uint32_t count;
    assert_int_equal(moat_batch_decode(&it, l->payload, l->plen, &kind, &count), MOAT_OK);
    moat_reading r;
    while (moat_batch_next(&it, &r)) {
        assert_true(*n < cap);
        seqs[(*n)++] = r.seq;
    }
}

static void publish_n(unsigned n, bool alternate)
{
    for (unsigned i = 0; i < n; i++) {
        char payload[16];
        int len = snprintf(payload, sizeof(payload), "r%u", i);
        const char *stream = alternate && (i % 2) ? "hum" : "temp";
        assert_int_equal(moat_publish(&C, stream, (const uint8_t *)payload, (size_t)len, NULL),
                         MOAT_OK);
    }
}

static uint32_t queued(void)
{
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    return s.queue.count;
}

static uint8_t *mem_find(const void *hay, size_t n, const void *needle, size_t m)
{
    const uint8_t *h = hay;
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        if (memcmp(h + i, needle, m) == 0)
            return (uint8_t *)(h + i);
    }
    return NULL;
}

static const pkt *rejection_report(size_t k)
{
    size_t seen = 0;
    for (size_t i = 0; i < F->nlog; i++) {
        if (F->log[i].type == CODEC_PUBLISH &&
            strcmp(F->log[i].topic, "moat/" DEV "/up/_rejected") == 0 && seen++ == k)
            return &F->log[i];
    }
    return NULL;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_connect_and_subscribe(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.session_expiry_s = 86400;
    init_client(&cfg);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_STOPPED);
    assert_int_equal(moat_poll(&C), MOAT_AGAIN); /* not started */
    assert_int_equal(F->connects, 0);
    moat_connect(&C);
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    assert_string_equal(F->hosts[0], "hub-a");
    const pkt *k = nth_of(CODEC_CONNECT, 0);
    assert_int_equal(k->version, CODEC_V5);
    assert_string_equal(k->client_id, DEV);
    assert_false(k->clean_start);
    assert_true(k->has_expiry);
    assert_int_equal(k->session_expiry, 86400);
    assert_int_equal(k->keep_alive, 30);
    assert_int_equal(k->max_packet, sizeof(RX));
    const pkt *s = nth_of(CODEC_SUBSCRIBE, 0);
    assert_string_equal(s->topic, "moat/" DEV "/down/#");
    assert_int_equal(s->sub_qos, 1);
    assert_int_equal(F->events[MOAT_EV_ONLINE], 1);
    assert_int_equal(F->events[MOAT_EV_SUBSCRIBED], 1);
}

static void test_config_checked(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.device_id = "a/b";
    assert_int_equal(moat_client_init(&C, &cfg), MOAT_ERR_ARG);
    base_config(&cfg);
    cfg.device_id = "";
    assert_int_equal(moat_client_init(&C, &cfg), MOAT_ERR_ARG);
    base_config(&cfg);
    cfg.endpoint_count = 0;
    assert_int_equal(moat_client_init(&C, &cfg), MOAT_ERR_ARG);
    base_config(&cfg);
    cfg.transport = NULL;
    assert_int_equal(moat_client_init(&C, &cfg), MOAT_ERR_ARG);
    base_config(&cfg);
    cfg.tx_cap = 16;
    assert_int_equal(moat_client_init(&C, &cfg), MOAT_ERR_SPACE);
    base_config(&cfg);
    cfg.max_inflight = MOAT_MAX_INFLIGHT + 1;
    assert_int_equal(moat_client_init(&C, &cfg), MOAT_ERR_ARG);
    base_config(&cfg);
    init_client(&cfg);
    /* Streams: one topic level, not the SDK's own "_..." names. */
    assert_int_equal(moat_publish(&C, "a/b", (const uint8_t *)"x", 1, NULL), MOAT_ERR_ARG);
    assert_int_equal(moat_publish(&C, "_shaped", (const uint8_t *)"x", 1, NULL), MOAT_ERR_ARG);
    assert_int_equal(moat_publish(&C, "", (const uint8_t *)"x", 1, NULL), MOAT_ERR_ARG);
    /* A reading that could never be sent is refused up front. */
    static uint8_t big[1500];
    assert_int_equal(moat_publish(&C, "t", big, sizeof(big), NULL), MOAT_ERR_SPACE);
    assert_int_equal(queued(), 0);
}

static void test_connack_refused_backs_off_to_next_endpoint(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.backoff_base_ms = 1000;
    cfg.backoff_max_ms = 8000;
    init_client(&cfg);
    F->connack_reason = 0x87; /* not authorized */
    moat_connect(&C);
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
    assert_int_equal(moat_client_last_error(&C), MOAT_ERR_REFUSED);
    assert_int_equal(F->events[MOAT_EV_CONNECT_FAILED], 1);
    assert_int_equal(F->connects, 1);
    assert_false(F->up); /* the transport was closed */
    /* The wait is at most the first window; then the next endpoint. */
    uint32_t wait = moat_next_deadline_ms(&C);
    assert_true(wait <= 1000);
    F->connack_reason = 0;
    F->now += wait;
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    assert_int_equal(F->connects, 2);
    assert_string_equal(F->hosts[1], "hub-b");
}

static void test_backoff_windows_and_rotation(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.backoff_base_ms = 100;
    cfg.backoff_max_ms = 1600;
    init_client(&cfg);
    F->connect_result = MOAT_ERR_IO;
    moat_connect(&C);
    for (unsigned n = 0; n < 9; n++) {
        (void)moat_poll(&C);
        assert_int_equal(F->connects, n + 1);
        assert_string_equal(F->hosts[n], EPS[n % 3].host);
        assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
        uint32_t wait = moat_next_deadline_ms(&C);
        assert_true(wait <= moat_backoff_cap(n, 100, 1600));
        /* Nothing happens before the deadline. */
        if (wait > 0) {
            F->now += wait - 1;
            assert_int_equal(moat_poll(&C), MOAT_AGAIN);
            assert_int_equal(F->connects, n + 1);
            F->now += 1;
        }
    }
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    assert_int_equal(s.connect_failures, 9);
    assert_int_equal(s.connects, 0);
}

static void test_backoff_grows_when_hub_drops_at_once(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.backoff_base_ms = 100;
    cfg.backoff_max_ms = 100000;
    init_client(&cfg);
    moat_connect(&C);
    /* The hub accepts, then drops the device at once, again and again: the
     * windows keep growing although every CONNACK was accepted. */
    uint32_t max_wait = 0;
    for (unsigned n = 0; n < 8; n++) {
        run();
        assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
        F->peer_closed = true;
        run();
        assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
        uint32_t wait = moat_next_deadline_ms(&C);
        assert_true(wait <= moat_backoff_cap(n, 100, 100000));
        if (wait > max_wait)
            max_wait = wait;
        F->now += wait;
    }
    assert_true(max_wait > 100); /* beyond the first window */
    /* A connection that lasted resets it. */
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    for (int i = 0; i < 40; i++) {
        F->now += 1000;
        run();
    }
    F->peer_closed = true;
    run();
    assert_true(moat_next_deadline_ms(&C) <= 100);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.connect_timeout_ms = 5000;
    init_client(&cfg);
    F->connect_again = 1000000; /* the handshake never finishes */
    moat_connect(&C);
    (void)moat_poll(&C);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_TRANSPORT);
    F->now += 4999;
    (void)moat_poll(&C);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_TRANSPORT);
    F->now += 1;
    assert_int_equal(moat_poll(&C), MOAT_ERR_TIMEOUT);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
}

static void test_puback_pops_records(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    init_client(&cfg);
    F->auto_puback = false;
    publish_n(3, false); /* offline: durable in the queue */
    assert_int_equal(queued(), 3);
    moat_connect(&C);
    run();
    /* One PUBLISH with the three readings of one stream. */
    assert_int_equal(count_type(CODEC_PUBLISH), 1);
    const pkt *p = nth_of(CODEC_PUBLISH, 0);
    assert_string_equal(p->topic, "moat/" DEV "/up/temp");
    assert_int_equal(p->qos, 1);
    assert_false(p->dup);
    uint64_t seqs[8];
    size_t n = 0;
    batch_seqs(p, seqs, &n, 8);
    assert_int_equal(n, 3);
    assert_true(seqs[0] < seqs[1] && seqs[1] < seqs[2]);
    /* Not acknowledged: still queued. */
    assert_int_equal(queued(), 3);
    send_puback(F, p->id, 0);
    run();
    assert_int_equal(queued(), 0);
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    assert_int_equal(s.records_sent, 3);
    assert_int_equal(F->events[MOAT_EV_SENT], 1);
}

static void test_inflight_bounded_by_receive_maximum(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    init_client(&cfg);
    F->auto_puback = false;
    F->receive_max = 2;
    publish_n(6, true); /* alternating streams: six PUBLISHes */
    moat_connect(&C);
    run();
    assert_int_equal(count_type(CODEC_PUBLISH), 2);
    /* An acknowledgement frees one slot. */
    send_puback(F, nth_of(CODEC_PUBLISH, 0)->id, 0);
    run();
    assert_int_equal(count_type(CODEC_PUBLISH), 3);
    assert_int_equal(queued(), 5);
    /* Out of order: the second in flight acknowledged before the first. */
    send_puback(F, nth_of(CODEC_PUBLISH, 2)->id, 0);
    run();
    assert_int_equal(queued(), 5); /* the head is not acknowledged yet */
    send_puback(F, nth_of(CODEC_PUBLISH, 1)->id, 0);
    run();
    assert_int_equal(queued(), 3);
    F->auto_puback = true;
    for (size_t i = 3; i < count_type(CODEC_PUBLISH); i++)
        send_puback(F, nth_of(CODEC_PUBLISH, i)->id, 0);
    run();
    run();
    assert_int_equal(queued(), 0);
    assert_int_equal(count_type(CODEC_PUBLISH), 6);
}

static void test_reconnect_resends_unacked_in_order(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.backoff_base_ms = 200;
    init_client(&cfg);
    F->auto_puback = false;
    moat_connect(&C);
    run();
    publish_n(6, true);
    run();
    size_t first_round = count_type(CODEC_PUBLISH);
    assert_int_equal(first_round, 6);
    /* The hub acknowledges two, then the connection drops. */
    send_puback(F, nth_of(CODEC_PUBLISH, 0)->id, 0);
    send_puback(F, nth_of(CODEC_PUBLISH, 1)->id, 0);
    F->peer_closed = true;
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
    assert_int_equal(F->events[MOAT_EV_OFFLINE], 1);
    assert_int_equal(queued(), 4);
    /* New readings while offline go behind the unacknowledged ones. */
    publish_n(2, false);
    F->now += moat_next_deadline_ms(&C);
    F->auto_puback = true;
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    assert_string_equal(F->hosts[1], "hub-a"); /* the endpoint that worked */
    assert_int_equal(queued(), 0);
    /* Everything the hub saw, de-duplicated by sequence number: 1..8, in
     * order of first appearance, and the resends carry DUP. */
    uint64_t seqs[64];
    size_t n = 0;
    for (size_t i = 0; i < count_type(CODEC_PUBLISH); i++)
        batch_seqs(nth_of(CODEC_PUBLISH, i), seqs, &n, 64);
    uint64_t expect = seqs[0], seen_max = 0;
    size_t unique = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && seqs[i] <= seen_max)
            continue; /* a duplicate */
        assert_int_equal(seqs[i], expect);
        expect++;
        seen_max = seqs[i];
        unique++;
    }
    assert_int_equal(unique, 8);
    assert_true(nth_of(CODEC_PUBLISH, first_round)->dup);
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    assert_int_equal(s.records_sent, 8);
    assert_true(s.resends >= 4);
}

static void test_keepalive_ping_and_timeout(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.keep_alive_s = 10;
    cfg.ping_timeout_ms = 3000;
    init_client(&cfg);
    moat_connect(&C);
    run();
    size_t before = F->nlog;
    /* Idle: the next thing to do is the ping, keep_alive after the last write. */
    uint32_t wait = moat_next_deadline_ms(&C);
    assert_true(wait > 9000 && wait <= 10000);
    F->now += wait - 1;
    run();
    assert_int_equal(count_type(CODEC_PINGREQ), 0);
    F->now += 1;
    run();
    assert_int_equal(count_type(CODEC_PINGREQ), 1);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    /* Now the hub falls silent. */
    F->auto_pingresp = false;
    F->now += 10000;
    run();
    assert_int_equal(count_type(CODEC_PINGREQ), 2);
    assert_true(moat_next_deadline_ms(&C) <= 3000);
    F->now += 2999;
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    F->now += 1;
    (void)moat_poll(&C);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
    assert_int_equal(moat_client_last_error(&C), MOAT_ERR_TIMEOUT);
    assert_true(F->nlog > before);
}

static void test_stuck_transport_times_out(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.keep_alive_s = 10;
    cfg.ping_timeout_ms = 3000;
    init_client(&cfg);
    moat_connect(&C);
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    /* The link dies silently: nothing can be written any more. */
    F->send_block = true;
    publish_n(30, true);
    for (int i = 0; i < 12; i++) {
        F->now += 1000;
        run();
    }
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    F->now += 2000;
    run();
    assert_int_not_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    assert_int_equal(moat_client_last_error(&C), MOAT_ERR_TIMEOUT);
    assert_int_equal(queued(), 30); /* nothing lost */
}

static void test_oversized_message_skipped(void **state)
{
    (void)state;
    /* MQTT 3.1.1 has no Maximum Packet Size: a broker may send a command
     * larger than the receive buffer. It is refused, skipped as it arrives,
     * acknowledged, and the connection carries on. */
    moat_config cfg;
    base_config(&cfg);
    cfg.protocol_version = CODEC_V311;
    init_client(&cfg);
    moat_connect(&C);
    run();
    static uint8_t big[5000];
    memset(big, 'x', sizeof(big));
    send_command(F, "moat/" DEV "/down/huge", big, sizeof(big), 21);
    send_command(F, "moat/" DEV "/down/small", (const uint8_t *)"junk", 4, 22);
    for (int i = 0; i < 5; i++)
        run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    assert_int_equal(count_type(CODEC_PUBACK), 2);
    assert_int_equal(nth_of(CODEC_PUBACK, 0)->id, 21);
    assert_int_equal(nth_of(CODEC_PUBACK, 1)->id, 22);
    assert_int_equal(F->rejections, 2);
    const pkt *r = rejection_report(0);
    assert_non_null(r);
    assert_non_null(mem_find(r->payload, r->plen, "malformed", 9));
    assert_non_null(mem_find(r->payload, r->plen, "down/huge", 9));
    /* Readings still flow. */
    publish_n(2, false);
    run();
    assert_int_equal(queued(), 0);
}

static void test_partial_writes(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    init_client(&cfg);
    F->send_chunk = 3;
    publish_n(4, true);
    moat_connect(&C);
    for (int i = 0; i < 20; i++)
        run();
    assert_int_equal(count_type(CODEC_CONNECT), 1);
    assert_int_equal(count_type(CODEC_PUBLISH), 4);
    assert_int_equal(queued(), 0);
}

static void test_record_refused_for_good_is_dropped(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    init_client(&cfg);
    F->puback_reason = 0x87; /* not authorized: will never pass */
    publish_n(1, false);
    moat_connect(&C);
    run();
    assert_int_equal(queued(), 0);
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    assert_int_equal(s.records_refused, 1);
    assert_int_equal(s.records_sent, 0);
    assert_int_equal(F->events[MOAT_EV_RECORD_REFUSED], 1);
    /* Quota exceeded may pass later: kept, and the connection restarts. */
    F->puback_reason = 0x97;
    publish_n(1, false);
    run();
    assert_int_equal(queued(), 1);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_WAITING);
}

static void sign(const char *device, const char *name, uint64_t counter, const char *body,
                 uint8_t *out, size_t cap, size_t *len)
{
    assert_int_equal(moat_command_sign(SK, device, name, counter, F->unix_s + 60,
                                       (const uint8_t *)body, strlen(body), out, cap, len),
                     MOAT_OK);
}

static void test_commands_verified_and_rejections_reported(void **state)
{
    (void)state;
    assert_int_equal(moat_sign_keygen(PK, SK), MOAT_OK);
    assert_int_equal(moat_crypto_sodium(&CR), MOAT_OK);
    moat_config cfg;
    base_config(&cfg);
    cfg.crypto = &CR;
    const uint8_t(*keys)[32] = (const uint8_t(*)[32])PK;
    cfg.command_keys = keys;
    cfg.command_key_count = 1;
    init_client(&cfg);
    moat_connect(&C);
    run();
    uint8_t env[256];
    size_t len = 0;
    sign(DEV, "setpoint", 10, "21.5", env, sizeof(env), &len);
    send_command(F, "moat/" DEV "/down/setpoint", env, len, 7);
    run();
    assert_int_equal(F->commands, 1);
    assert_string_equal(F->last_body, "21.5");
    assert_int_equal(nth_of(CODEC_PUBACK, 0)->id, 7);
    assert_null(rejection_report(0));

    /* The same envelope again: a replay. */
    send_command(F, "moat/" DEV "/down/setpoint", env, len, 8);
    run();
    assert_int_equal(F->commands, 1);
    assert_int_equal(F->rejections, 1);
    assert_int_equal(F->last_reason, MOAT_CMD_REPLAYED);
    assert_int_equal(nth_of(CODEC_PUBACK, 1)->id, 8); /* acknowledged all the same */
    const pkt *r = rejection_report(0);
    assert_non_null(r);
    assert_int_equal(r->qos, 0);
    assert_non_null(mem_find(r->payload, r->plen, "replayed", 8));
    assert_non_null(mem_find(r->payload, r->plen, "moat/" DEV "/down/setpoint", 22));

    /* A fresh counter but one byte of the body changed: bad signature. */
    sign(DEV, "setpoint", 11, "21.5", env, sizeof(env), &len);
    uint8_t *body = mem_find(env, len, "21.5", 4);
    assert_non_null(body);
    body[0] = '9';
    send_command(F, "moat/" DEV "/down/setpoint", env, len, 9);
    run();
    assert_int_equal(F->commands, 1);
    assert_int_equal(F->last_reason, MOAT_CMD_BAD_SIGNATURE);
    assert_non_null(rejection_report(1));

    /* Signed for another device. */
    sign("dev2", "setpoint", 12, "20", env, sizeof(env), &len);
    send_command(F, "moat/" DEV "/down/setpoint", env, len, 10);
    run();
    assert_int_equal(F->commands, 1);
    assert_int_equal(F->rejections, 3);

    /* The counter survived: the untampered counter 11 still works. */
    sign(DEV, "setpoint", 11, "19", env, sizeof(env), &len);
    send_command(F, "moat/" DEV "/down/setpoint", env, len, 11);
    run();
    assert_int_equal(F->commands, 2);
    assert_string_equal(F->last_body, "19");
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    assert_int_equal(s.commands_accepted, 2);
    assert_int_equal(s.commands_rejected, 3);
}

static void test_rejection_reports_rate_limited(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg); /* no keys: every command is refused */
    init_client(&cfg);
    moat_connect(&C);
    run();
    for (uint16_t i = 0; i < 20; i++)
        send_command(F, "moat/" DEV "/down/x", (const uint8_t *)"junk", 4, (uint16_t)(100 + i));
    run();
    assert_int_equal(F->rejections, 20);
    assert_int_equal(count_type(CODEC_PUBACK), 20);
    size_t reports = 0;
    while (rejection_report(reports))
        reports++;
    assert_true(reports >= 1 && reports <= 4);
    moat_client_stats s;
    moat_client_get_stats(&C, &s);
    assert_int_equal(s.rejections_unreported, 20 - reports);
}

static void test_shaper_fixed_size_fixed_schedule(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.shaper_interval_ms = 1000;
    cfg.shaper_record_size = 128;
    cfg.keep_alive_s = 0;
    init_client(&cfg);
    /* Too large for a 128-byte record: refused before it is queued. */
    static uint8_t big[200];
    assert_int_equal(moat_publish(&C, "t", big, sizeof(big), NULL), MOAT_ERR_SPACE);
    moat_connect(&C);
    run();
    assert_int_equal(moat_client_state(&C), MOAT_STATE_ONLINE);
    size_t start = count_type(CODEC_PUBLISH);
    /* Ten slots; readings in three of them (nine readings in all). */
    unsigned readings = 0;
    for (int slot = 0; slot < 10; slot++) {
        if (slot == 2 || slot == 5 || slot == 6) {
            publish_n(3, true);
            readings += 3;
        }
        F->now += 1000;
        run();
        run();
        assert_int_equal(count_type(CODEC_PUBLISH) - start, (size_t)slot + 1);
    }
    uint64_t seqs[32];
    size_t n = 0, covers = 0;
    for (size_t i = start; i < count_type(CODEC_PUBLISH); i++) {
        const pkt *p = nth_of(CODEC_PUBLISH, i);
        assert_string_equal(p->topic, "moat/" DEV "/up/_shaped");
        assert_int_equal(p->plen, 128);
        moat_batch_iter it;
        moat_batch_kind kind;
        assert_int_equal(moat_batch_decode(&it, p->payload, p->plen, &kind, NULL), MOAT_OK);
        if (kind == MOAT_BATCH_COVER)
            covers++;
        else
            batch_seqs(p, seqs, &n, 32);
    }
    assert_int_equal(n, readings);
    for (size_t i = 1; i < n; i++)
        assert_int_equal(seqs[i], seqs[i - 1] + 1);
    assert_true(covers >= 6);
    assert_int_equal(queued(), 0);
    /* Between slots there is nothing to write. */
    uint32_t wait = moat_next_deadline_ms(&C);
    assert_true(wait > 0 && wait <= 1000);
}

static void test_disconnect_and_311(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    cfg.protocol_version = CODEC_V311;
    init_client(&cfg);
    publish_n(2, true);
    moat_connect(&C);
    run();
    const pkt *k = nth_of(CODEC_CONNECT, 0);
    assert_int_equal(k->version, CODEC_V311);
    assert_false(k->clean_start);
    assert_int_equal(queued(), 0);
    assert_int_equal(moat_disconnect(&C), MOAT_OK);
    broker_step(F);
    assert_int_equal(count_type(CODEC_DISCONNECT), 1);
    assert_false(F->up);
    assert_int_equal(moat_client_state(&C), MOAT_STATE_STOPPED);
    assert_int_equal(moat_poll(&C), MOAT_AGAIN);
    /* Readings are still taken while stopped, and go after moat_connect. */
    publish_n(1, false);
    assert_int_equal(queued(), 1);
    moat_connect(&C);
    run();
    assert_int_equal(queued(), 0);
}

static void test_queue_survives_restart(void **state)
{
    (void)state;
    moat_config cfg;
    base_config(&cfg);
    init_client(&cfg);
    publish_n(3, false);
    /* "Power loss": a new client over the same storage. */
    memset(&C, 0xa5, sizeof(C));
    init_client(&cfg);
    assert_int_equal(queued(), 3);
    moat_connect(&C);
    run();
    assert_int_equal(queued(), 0);
    uint64_t seqs[8];
    size_t n = 0;
    batch_seqs(nth_of(CODEC_PUBLISH, 0), seqs, &n, 8);
    assert_int_equal(n, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_and_subscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connack_refused_backs_off_to_next_endpoint, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_backoff_windows_and_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_grows_when_hub_drops_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_puback_pops_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_bounded_by_receive_maximum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_resends_unacked_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_ping_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuck_transport_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_message_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_refused_for_good_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands_verified_and_rejections_reported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rejection_reports_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shaper_fixed_size_fixed_schedule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_and_311, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_survives_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
