/*
 * client.c — moat-bench's worker threads: one epoll loop each, driving its
 * share of the connections through TCP connect, the TLS 1.3 handshake with a
 * client certificate, MQTT CONNECT/SUBSCRIBE, and then publishing, receiving
 * and acknowledging.
 *
 * One loop pass: wait for events (epoll_pwait2, so a fixed offered rate is
 * kept to the microsecond rather than the millisecond), read every readable
 * connection and answer what it received (PUBACK, PUBREC, PUBCOMP), open more
 * connections while setting up, add the publishes that are due, then write
 * each connection's pending output with one SSL_write. Publishers stamp each
 * payload with the send time: the scheduled time at a fixed rate (so a tool
 * that falls behind shows it as latency instead of hiding it), the current
 * time as fast as possible. Subscribers take the difference on arrival.
 *
 * As fast as possible still means a bounded queue: a window caps the messages
 * written but not yet delivered (seen by the tool's own subscribers), so the
 * result is the rate the broker sustains, not how much it can buffer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "codec.h"

#define OUT_HIGH           (64u * 1024u)         /* a publisher adds nothing above this */
#define OUT_MAX            (32u * 1024u * 1024u) /* hard bound of one output buffer */
#define READ_CHUNK         16384u                /* the largest TLS record's plaintext */
#define READ_ROUNDS        32u                   /* records per connection per pass */
#define HOUSEKEEPING_NS    100000000ull          /* timeouts */
#define KEEPALIVE_SCAN_NS  1000000000ull
#define CONNECT_TIMEOUT_NS 20000000000ull
#define IDLE_WAIT_NS       10000000ull /* longest sleep: phase changes are seen within it */
#define MAX_EVENTS         256

uint64_t bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The only writer of a counter adds to it; readers see it eventually. */
static void count_add(_Atomic uint64_t *x, uint64_t n)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static uint64_t sum_counter(bench *b, size_t offset)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < b->o.threads; i++) {
        _Atomic uint64_t *x = (_Atomic uint64_t *)((char *)&b->counts[i] + offset);
        t += atomic_load_explicit(x, memory_order_relaxed);
    }
    return t;
}

uint64_t bench_total_sent(bench *b)
{
    return sum_counter(b, offsetof(wcount, sent));
}

uint64_t bench_total_recv(bench *b)
{
    return sum_counter(b, offsetof(wcount, recv));
}

uint64_t bench_total_opened(bench *b)
{
    return sum_counter(b, offsetof(wcount, opened));
}

uint64_t bench_in_flight(bench *b)
{
    uint64_t expected = bench_total_sent(b) * b->fan;
    uint64_t done = bench_total_recv(b) + atomic_load_explicit(&b->forgiven, memory_order_relaxed);
    return expected > done ? expected - done : 0;
}

uint64_t bench_total_failed(bench *b)
{
    return sum_counter(b, offsetof(wcount, failed));
}

uint64_t bench_total_answered(bench *b)
{
    return sum_counter(b, offsetof(wcount, answered));
}

void bench_note_error(bench *b, const char *msg)
{
    pthread_mutex_lock(&b->err_lock);
    if (!b->first_error[0])
        snprintf(b->first_error, sizeof(b->first_error), "%s", msg);
    pthread_mutex_unlock(&b->err_lock);
}

/* ---- connection bookkeeping ---------------------------------------------- */

static bool opening_state(conn_state st)
{
    return st == CS_TCP || st == CS_TLS || st == CS_MQTT || st == CS_SUBSCRIBING;
}

static void set_state(bconn *c, conn_state st)
{
    if (opening_state(c->st) && !opening_state(st) && c->w->opening > 0)
        c->w->opening--;
    c->st = st;
}

static bool alive(const bconn *c)
{
    return c->st != CS_NONE && c->st != CS_DONE && c->st != CS_DEAD;
}

static void client_id(const bconn *c, char *out, size_t len)
{
    static const char letter[] = {'p', 's', 'c', 'i'};
    if (c->device) {
        snprintf(out, len, "%s", c->device);
        return;
    }
    snprintf(out, len, "%s/%c%u", c->w->b->o.id_prefix, letter[c->role], (unsigned)c->index);
}

static void conn_close(bconn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    buf_free(&c->in);
    buf_free(&c->out);
}

/* What OpenSSL (or the socket) says went wrong; clears the error queue. */
static void tls_reason(int ssl_err, char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e) {
        ERR_error_string_n(e, out, len);
    } else if (ssl_err == SSL_ERROR_ZERO_RETURN) {
        snprintf(out, len, "the broker closed the TLS session");
    } else if (ssl_err == SSL_ERROR_SYSCALL && errno) {
        snprintf(out, len, "%s", strerror(errno));
    } else {
        snprintf(out, len, "the broker closed the connection");
    }
    ERR_clear_error();
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static void
conn_fail(bconn *c, const char *fmt, ...)
{
    worker *w = c->w;
    char msg[200], full[320], id[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    client_id(c, id, sizeof(id));
    snprintf(full, sizeof(full), "%s: %s", id, msg);
    if (w->ph != PH_CLOSE) {
        if (c->st == CS_READY) {
            w->run_errors++;
        } else {
            count_add(&w->cnt->failed, 1);
        }
        if (!w->first_error[0])
            snprintf(w->first_error, sizeof(w->first_error), "%s", full);
        bench_note_error(w->b, full);
    }
    set_state(c, CS_DEAD);
    conn_close(c);
}

static void set_interest(bconn *c, uint32_t events)
{
    if (c->epoll_events == events || c->fd < 0)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epoll_events = events;
}

static void mark_dirty(bconn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->w->dirty[c->w->ndirty++] = c;
    }
}

/* Encode a packet at the end of the output buffer. */
static bool out_packet(bconn *c, const codec_packet *p)
{
    size_t need = 128;
    if (p->type == CODEC_PUBLISH)
        need += p->u.publish.payload.len + p->u.publish.topic.len;
    for (int tries = 0; tries < 2; tries++) {
        uint8_t *t = buf_tail(&c->out, need);
        if (!t) {
            conn_fail(c, "output buffer over %u bytes", OUT_MAX);
            return false;
        }
        size_t written = 0;
        codec_status s = codec_encode(p, c->w->b->o.version, t, need, &written);
        if (s == CODEC_OK) {
            buf_commit(&c->out, written);
            mark_dirty(c);
            return true;
        }
        if (s != CODEC_ERR_BUFFER || written <= need)
            break;
        need = written;
    }
    conn_fail(c, "cannot encode %s", codec_packet_name(p->type));
    return false;
}

static bool out_ack(bconn *c, uint8_t type, uint16_t id)
{
    codec_packet p = {.type = type};
    p.u.ack.packet_id = id;
    return out_packet(c, &p);
}

/* Write what is pending; false when the connection failed. */
static bool conn_flush(bconn *c)
{
    while (c->out.len > 0) {
        size_t put = 0;
        int r = SSL_write_ex(c->ssl, buf_ptr(&c->out), c->out.len, &put);
        if (r == 1) {
            buf_consume(&c->out, put);
            c->last_tx = bench_now();
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) {
            set_interest(c, EPOLLIN | EPOLLOUT);
            return true;
        }
        if (e == SSL_ERROR_WANT_READ)
            return true;
        char why[160];
        tls_reason(e, why, sizeof(why));
        conn_fail(c, "write: %s", why);
        return false;
    }
    set_interest(c, EPOLLIN);
    if (c->role == ROLE_IDLE)
        buf_shrink(&c->out);
    return true;
}

/* Say goodbye politely: DISCONNECT, close_notify, close. */
static void conn_goodbye(bconn *c, conn_state final)
{
    if (c->ssl && (c->st == CS_READY || c->st == CS_SUBSCRIBING || c->st == CS_MQTT)) {
        codec_packet p = {.type = CODEC_DISCONNECT};
        if (out_packet(c, &p)) {
            size_t put = 0;
            (void)SSL_write_ex(c->ssl, buf_ptr(&c->out), c->out.len, &put);
            (void)SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
    }
    if (alive(c)) {
        set_state(c, final);
        conn_close(c);
    }
}

/* ---- opening connections ------------------------------------------------- */

static void conn_open(worker *w, bconn *c, uint64_t now)
{
    bench *b = w->b;
    c->t_open = now;
    c->last_tx = now;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->st = CS_TCP;
    w->opening++;
    if (c->fd < 0) {
        conn_fail(c, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (b->o.nsources) {
        const struct sockaddr_in *src = &b->o.sources[(size_t)(c - b->conns) % b->o.nsources];
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(c->fd, (const struct sockaddr *)src, sizeof(*src)) != 0) {
            char a[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &src->sin_addr, a, sizeof(a));
            conn_fail(c, "bind to source %s: %s", a, strerror(errno));
            return;
        }
    }
    if (connect(c->fd, (const struct sockaddr *)&b->o.addr, sizeof(b->o.addr)) != 0 &&
        errno != EINPROGRESS) {
        conn_fail(c, "connect: %s", strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        conn_fail(c, "epoll_ctl: %s", strerror(errno));
        return;
    }
    c->epoll_events = EPOLLOUT;
}

static void send_connect(bconn *c)
{
    const bench_opts *o = &c->w->b->o;
    char id[96];
    client_id(c, id, sizeof(id));
    codec_packet p = {.type = CODEC_CONNECT};
    codec_connect *k = &p.u.connect;
    k->protocol_version = o->version;
    k->clean_start = !o->persistent;
    k->keep_alive = o->keepalive;
    k->client_id = (codec_bytes){(const uint8_t *)id, strlen(id)};
    if (o->version == CODEC_V5) {
        k->props.receive_maximum = 65535;
        CODEC_SET(&k->props, CODEC_PROP_RECEIVE_MAXIMUM);
        if (o->persistent) {
            k->props.session_expiry = 3600;
            CODEC_SET(&k->props, CODEC_PROP_SESSION_EXPIRY);
        }
    }
    if (!out_packet(c, &p))
        return;
    set_state(c, CS_MQTT);
    conn_flush(c);
}

static void handshake(bconn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        send_connect(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        set_interest(c, EPOLLIN);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        set_interest(c, EPOLLIN | EPOLLOUT);
    } else {
        char why[160];
        tls_reason(e, why, sizeof(why));
        conn_fail(c, "TLS handshake: %s", why);
    }
}

static void start_tls(bconn *c)
{
    const bench_opts *o = &c->w->b->o;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        conn_fail(c, "connect to %s:%u: %s", o->host, (unsigned)o->port, strerror(err));
        return;
    }
    c->ssl = SSL_new(c->ctx ? c->ctx : c->w->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        conn_fail(c, "SSL_new failed");
        return;
    }
    SSL_set_connect_state(c->ssl);
    if (o->verify_server) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        struct in_addr a;
        if (inet_pton(AF_INET, o->host, &a) == 1) {
            X509_VERIFY_PARAM_set1_ip_asc(param, o->host);
        } else {
            SSL_set1_host(c->ssl, o->host);
            SSL_set_tlsext_host_name(c->ssl, o->host);
        }
    }
    if (c->role == ROLE_IDLE || c->role == ROLE_STORM)
        SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    set_state(c, CS_TLS);
    handshake(c);
}

/* The connection did what setup asked of it. */
static void conn_ready(bconn *c)
{
    set_state(c, CS_READY);
    count_add(&c->w->cnt->opened, 1);
}

/* ---- packets from the broker -------------------------------------------- */

static const char *connack_name(uint8_t version, uint8_t reason)
{
    static const char *const v311[] = {
        "accepted",           "unacceptable protocol version", "identifier rejected",
        "server unavailable", "bad user name or password",     "not authorized"};
    if (version == CODEC_V5)
        return codec_reason_name(reason);
    return reason < sizeof(v311) / sizeof(v311[0]) ? v311[reason] : "unknown return code";
}

static bool on_connack(bconn *c, const codec_connack *a, uint64_t now)
{
    worker *w = c->w;
    const bench_opts *o = &w->b->o;
    if (c->st != CS_MQTT) {
        conn_fail(c, "CONNACK out of place");
        return false;
    }
    if (a->reason != 0) {
        conn_fail(c, "CONNECT refused: 0x%02x (%s)", a->reason,
                  connack_name(o->version, a->reason));
        return false;
    }
    c->inflight_max = o->inflight;
    if (o->version == CODEC_V5) {
        if (CODEC_HAS(&a->props, CODEC_PROP_RECEIVE_MAXIMUM) &&
            a->props.receive_maximum < c->inflight_max)
            c->inflight_max = a->props.receive_maximum;
        if (CODEC_HAS(&a->props, CODEC_PROP_MAXIMUM_QOS) && a->props.maximum_qos < o->qos) {
            conn_fail(c, "the broker's maximum QoS is %u", (unsigned)a->props.maximum_qos);
            return false;
        }
    }
    hist_record(&w->hs, now - c->t_open);
    switch (c->role) {
    case ROLE_SUB: {
        codec_subscription s = {.filter = {(const uint8_t *)c->topic, c->topic_len}, .qos = o->qos};
        codec_packet p = {.type = CODEC_SUBSCRIBE};
        p.u.subscribe.packet_id = 1;
        p.u.subscribe.count = 1;
        p.u.subscribe.list = &s;
        if (!out_packet(c, &p))
            return false;
        set_state(c, CS_SUBSCRIBING);
        return true;
    }
    case ROLE_STORM:
        count_add(&w->cnt->opened, 1);
        conn_goodbye(c, CS_DONE);
        return false;
    default:
        conn_ready(c);
        if (c->role == ROLE_IDLE)
            buf_shrink(&c->out);
        return true;
    }
}

static bool on_suback(bconn *c, const codec_suback *a)
{
    const bench_opts *o = &c->w->b->o;
    if (c->st != CS_SUBSCRIBING || a->reasons.len < 1) {
        conn_fail(c, "SUBACK out of place");
        return false;
    }
    uint8_t r = a->reasons.ptr[0];
    if (r >= 0x80) {
        conn_fail(c, "SUBSCRIBE %s refused: 0x%02x (%s)", c->topic, r,
                  o->version == CODEC_V5 ? codec_reason_name(r) : "failure");
        return false;
    }
    if (r < o->qos) {
        conn_fail(c, "SUBSCRIBE %s granted QoS %u, not %u", c->topic, r, (unsigned)o->qos);
        return false;
    }
    conn_ready(c);
    return true;
}

static bool on_publish(bconn *c, const codec_publish *p, size_t wire, uint64_t now)
{
    worker *w = c->w;
    if (p->qos == 1 && !out_ack(c, CODEC_PUBACK, p->packet_id))
        return false;
    if (p->qos == 2 && !out_ack(c, CODEC_PUBREC, p->packet_id))
        return false;
    count_add(&w->cnt->recv, 1);
    if (w->ph == PH_MEASURE) {
        w->m_delivered++;
        w->m_payload_bytes += p->payload.len;
        w->m_wire_bytes += wire;
        if (p->payload.len >= sizeof(uint64_t)) {
            uint64_t stamp;
            memcpy(&stamp, p->payload.ptr, sizeof(stamp));
            hist_record(&w->lat, now > stamp ? now - stamp : 0);
        }
    }
    return true;
}

static void publish_done(bconn *c, uint8_t reason)
{
    worker *w = c->w;
    if (c->inflight > 0)
        c->inflight--;
    count_add(&w->cnt->answered, 1);
    if (reason >= 0x80) {
        w->refused++;
        return;
    }
    w->acked++;
    if (w->ph == PH_MEASURE)
        w->m_acked++;
}

/* Returns false when the connection is gone. */
static bool on_packet(bconn *c, const codec_packet *p, size_t wire, uint64_t now)
{
    switch (p->type) {
    case CODEC_CONNACK:
        return on_connack(c, &p->u.connack, now);
    case CODEC_SUBACK:
        return on_suback(c, &p->u.suback);
    case CODEC_PUBLISH:
        return on_publish(c, &p->u.publish, wire, now);
    case CODEC_PUBACK:
    case CODEC_PUBCOMP:
        publish_done(c, p->u.ack.reason);
        return true;
    case CODEC_PUBREC:
        if (p->u.ack.reason >= 0x80) {
            publish_done(c, p->u.ack.reason);
            return true;
        }
        return out_ack(c, CODEC_PUBREL, p->u.ack.packet_id);
    case CODEC_PUBREL:
        return out_ack(c, CODEC_PUBCOMP, p->u.ack.packet_id);
    case CODEC_PINGRESP:
        c->ping_out = false;
        return true;
    case CODEC_DISCONNECT:
        conn_fail(c, "DISCONNECT from the broker: 0x%02x (%s)", p->u.disconnect.reason,
                  codec_reason_name(p->u.disconnect.reason));
        return false;
    default:
        conn_fail(c, "unexpected %s from the broker", codec_packet_name(p->type));
        return false;
    }
}

/* Decode every complete packet in the input buffer. */
static bool conn_parse(bconn *c, uint64_t now)
{
    codec_decode_opts o = {.version = c->w->b->o.version, .sender = CODEC_FROM_SERVER};
    while (c->in.len > 0) {
        codec_packet p;
        size_t used = 0;
        codec_status s = codec_decode(buf_ptr(&c->in), c->in.len, &o, &p, &used);
        if (s == CODEC_NEED_MORE)
            break;
        if (s != CODEC_OK) {
            conn_fail(c, "the broker sent a packet the codec refuses: %s", codec_status_name(s));
            return false;
        }
        if (!on_packet(c, &p, used, now))
            return false;
        buf_consume(&c->in, used);
    }
    if (c->in.len == 0 && (c->role == ROLE_IDLE || c->role == ROLE_STORM))
        buf_shrink(&c->in);
    return true;
}

static void conn_read(bconn *c)
{
    for (unsigned round = 0; round < READ_ROUNDS; round++) {
        uint8_t *t = buf_tail(&c->in, READ_CHUNK);
        if (!t) {
            conn_fail(c, "a packet larger than the input buffer (%zu bytes)", (size_t)c->in.max);
            return;
        }
        size_t got = 0;
        int r = SSL_read_ex(c->ssl, t, READ_CHUNK, &got);
        if (r == 1) {
            buf_commit(&c->in, got);
            if (!conn_parse(c, bench_now()))
                return;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            set_interest(c, EPOLLIN | EPOLLOUT);
            break;
        }
        char why[160];
        tls_reason(e, why, sizeof(why));
        conn_fail(c, "%s", why);
        return;
    }
    /* Stopped by the round limit with records already inside OpenSSL (read
     * ahead): epoll will not report those, so come back next pass. */
    if (!c->again && SSL_has_pending(c->ssl)) {
        c->again = true;
        c->w->again[c->w->nagain++] = c;
    }
    if (c->in.len == 0 && (c->role == ROLE_IDLE || c->role == ROLE_STORM))
        buf_shrink(&c->in);
}

/* Read the connections that still had buffered records last pass. */
static void read_again(worker *w)
{
    size_t n = w->nagain;
    w->nagain = 0;
    for (size_t i = 0; i < n; i++) {
        bconn *c = w->again[i];
        c->again = false;
        if (alive(c) && c->ssl && c->st >= CS_MQTT)
            conn_read(c);
    }
}

static void on_event(bconn *c, uint32_t events)
{
    switch (c->st) {
    case CS_TCP:
        start_tls(c);
        return;
    case CS_TLS:
        handshake(c);
        return;
    case CS_MQTT:
    case CS_SUBSCRIBING:
    case CS_READY:
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_read(c);
        if (alive(c) && (events & EPOLLOUT))
            mark_dirty(c);
        return;
    default:
        return; /* closed earlier in this pass */
    }
}

/* ---- the loop ------------------------------------------------------------ */

static void open_more(worker *w, uint64_t now)
{
    const bench_opts *o = &w->b->o;
    size_t cmax = o->concurrency / o->threads;
    if (cmax == 0)
        cmax = 1;
    uint64_t allowed = UINT64_MAX;
    if (o->connect_rate > 0) {
        double due = (double)(now - w->open_t0) / 1e9 * o->connect_rate / o->threads + 1.0;
        allowed = (uint64_t)due > w->opened_count ? (uint64_t)due - w->opened_count : 0;
    }
    while (w->next_open < w->nconns && w->opening < cmax && allowed > 0) {
        conn_open(w, w->conns[w->next_open++], now);
        w->opened_count++;
        allowed--;
    }
}

static bool can_send(const bconn *c, uint8_t qos)
{
    return c->st == CS_READY && c->out.len < OUT_HIGH &&
           (qos == 0 || c->inflight < c->inflight_max);
}

static bool publish_one(bconn *c, uint64_t stamp)
{
    worker *w = c->w;
    const bench_opts *o = &w->b->o;
    uint32_t idx = c->index, seq = c->seq++;
    memcpy(w->scratch, &stamp, 8);
    memcpy(w->scratch + 8, &idx, 4);
    memcpy(w->scratch + 12, &seq, 4);
    codec_packet p = {.type = CODEC_PUBLISH};
    codec_publish *m = &p.u.publish;
    m->qos = o->qos;
    m->topic = (codec_bytes){(const uint8_t *)c->topic, c->topic_len};
    m->payload = (codec_bytes){w->scratch, o->size};
    if (o->qos > 0) {
        if (++c->next_id == 0)
            c->next_id = 1;
        m->packet_id = c->next_id;
    }
    if (!out_packet(c, &p))
        return false;
    if (o->qos > 0)
        c->inflight++;
    count_add(&w->cnt->sent, 1);
    if (w->ph == PH_MEASURE)
        w->m_sent++;
    return true;
}

/* Add the publishes that are due. Returns true when more could be sent at
 * once (the loop then polls without sleeping). */
static bool publish_due(worker *w, uint64_t now)
{
    bench *b = w->b;
    const bench_opts *o = &b->o;
    if (w->npubs == 0 || atomic_load_explicit(&b->stop_publishing, memory_order_relaxed))
        return false;
    bool rate_mode = o->rate > 0;
    uint64_t allowance;
    if (rate_mode) {
        uint64_t due = (uint64_t)((double)(now - w->rate_t0) * w->rate / 1e9) + 1;
        allowance = due > w->rate_sent ? due - w->rate_sent : 0;
    } else {
        /* The window counts deliveries: a fan-out publish is N of them. */
        uint64_t out = bench_in_flight(b);
        allowance = o->window > out ? (o->window - out + b->fan - 1) / b->fan : 0;
        /* Every worker sees the same window: take a share of it. */
        if (o->threads > 1)
            allowance = (allowance + o->threads - 1) / o->threads;
    }
    if (o->max_messages) {
        uint64_t sent = bench_total_sent(b);
        uint64_t left = o->max_messages > sent ? o->max_messages - sent : 0;
        if (allowance > left)
            allowance = left;
    }
    if (allowance == 0)
        return false;
    uint32_t rounds = rate_mode ? UINT32_MAX : o->burst;
    bool any = false;
    for (uint32_t r = 0; r < rounds && allowance > 0; r++) {
        any = false;
        for (size_t k = 0; k < w->npubs && allowance > 0; k++) {
            bconn *c = w->pubs[w->rr];
            w->rr = w->rr + 1 == w->npubs ? 0 : w->rr + 1;
            if (!can_send(c, o->qos))
                continue;
            uint64_t stamp = now;
            if (rate_mode)
                stamp = w->rate_t0 + (uint64_t)((double)w->rate_sent * 1e9 / w->rate);
            if (!publish_one(c, stamp))
                continue;
            allowance--;
            any = true;
            if (rate_mode)
                w->rate_sent++;
        }
        if (!any)
            break;
    }
    if (rate_mode && allowance > 0 && !any)
        w->behind++;
    return !rate_mode && any && allowance > 0;
}

static void flush_dirty(worker *w)
{
    for (size_t i = 0; i < w->ndirty; i++) {
        bconn *c = w->dirty[i];
        c->dirty = false;
        if (alive(c) && c->ssl)
            conn_flush(c);
    }
    w->ndirty = 0;
}

static void housekeeping(worker *w, uint64_t now)
{
    const bench_opts *o = &w->b->o;
    bool keepalive = o->keepalive > 0 && now >= w->next_keepalive;
    if (keepalive)
        w->next_keepalive = now + KEEPALIVE_SCAN_NS;
    uint64_t ka_ns = (uint64_t)o->keepalive * 1000000000ull / 2;
    if (w->opening == 0 && !keepalive) {
        w->next_housekeeping = now + HOUSEKEEPING_NS;
        return;
    }
    for (size_t i = 0; i < w->next_open; i++) {
        bconn *c = w->conns[i];
        if (opening_state(c->st) && now - c->t_open > CONNECT_TIMEOUT_NS) {
            conn_fail(c, "no answer within %llu s (%s)",
                      (unsigned long long)(CONNECT_TIMEOUT_NS / 1000000000ull),
                      c->st == CS_TCP    ? "TCP connect"
                      : c->st == CS_TLS  ? "TLS handshake"
                      : c->st == CS_MQTT ? "CONNACK"
                                         : "SUBACK");
        } else if (keepalive && c->st == CS_READY && now - c->last_tx >= ka_ns) {
            codec_packet p = {.type = CODEC_PINGREQ};
            if (out_packet(c, &p))
                c->ping_out = true;
        }
    }
    w->next_housekeeping = now + HOUSEKEEPING_NS;
}

/* How long the loop may sleep. */
static uint64_t sleep_ns(worker *w, uint64_t now, bool busy)
{
    const bench_opts *o = &w->b->o;
    if (busy)
        return 0;
    uint64_t wait = IDLE_WAIT_NS;
    if ((w->ph == PH_WARMUP || w->ph == PH_MEASURE) && o->rate > 0 && w->npubs > 0) {
        uint64_t next = w->rate_t0 + (uint64_t)((double)w->rate_sent * 1e9 / w->rate);
        uint64_t d = next > now ? next - now : 0;
        if (d < wait)
            wait = d;
    }
    if (w->ph == PH_SETUP && o->connect_rate > 0 && w->next_open < w->nconns) {
        uint64_t d = (uint64_t)(1e9 * o->threads / o->connect_rate);
        if (d < wait)
            wait = d;
    }
    return wait;
}

void *worker_main(void *arg)
{
    worker *w = arg;
    bench *b = w->b;
    struct epoll_event evs[MAX_EVENTS];
    /* Sleep as long as asked, not 50 µs more: the fixed-rate schedule. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    phase last = PH_WAIT;
    uint64_t wait = IDLE_WAIT_NS;
    for (;;) {
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000ull),
                              .tv_nsec = (long)(wait % 1000000000ull)};
        int n = epoll_pwait2(w->ep, evs, MAX_EVENTS, &ts, NULL);
        w->ph = (phase)atomic_load_explicit(&b->phase, memory_order_acquire);
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
        if (w->nagain)
            read_again(w);
        uint64_t now = bench_now();
        if (w->ph != last) {
            if (w->ph == PH_SETUP)
                w->open_t0 = now;
            if (w->ph == PH_WARMUP) {
                w->rate_t0 = now;
                w->rate_sent = 0;
            }
            last = w->ph;
        }
        if (w->ph == PH_CLOSE)
            break;
        if (w->ph >= PH_SETUP)
            open_more(w, now);
        bool busy = false;
        if (w->ph == PH_WARMUP || w->ph == PH_MEASURE)
            busy = publish_due(w, now);
        if (now >= w->next_housekeeping)
            housekeeping(w, now);
        flush_dirty(w);
        wait = sleep_ns(w, bench_now(), busy || w->nagain > 0);
    }
    for (size_t i = 0; i < w->nconns; i++)
        conn_goodbye(w->conns[i], CS_DONE);
    return NULL;
}

/* ---- set-up -------------------------------------------------------------- */

SSL_CTX *bench_client_ctx(const bench_opts *o, const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    char why[256];
    const char *what = "TLS parameters";
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, o->ciphersuites))
        goto fail;
    what = o->cafile;
    if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1)
        goto fail;
    what = cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        goto fail;
    what = key;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    SSL_CTX_set_verify(ctx, o->verify_server ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read many small records per syscall (a broker that writes one record
     * per packet would otherwise cost the tool two reads per message). */
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
fail:
    ERR_error_string_n(ERR_get_error(), why, sizeof(why));
    fprintf(stderr, "moat-bench: %s: %s\n", what, why);
    SSL_CTX_free(ctx);
    return NULL;
}

bool worker_init(bench *b, worker *w, unsigned id)
{
    w->b = b;
    w->id = id;
    w->cnt = &b->counts[id];
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) {
        fprintf(stderr, "moat-bench: epoll_create1: %s\n", strerror(errno));
        return false;
    }
    w->ctx = bench_client_ctx(&b->o, b->o.cert, b->o.key);
    if (!w->ctx)
        return false;
    size_t scratch = b->o.size > BENCH_STAMP_LEN ? b->o.size : BENCH_STAMP_LEN;
    w->scratch = malloc(scratch);
    w->dirty = calloc(w->nconns ? w->nconns : 1, sizeof(*w->dirty));
    w->again = calloc(w->nconns ? w->nconns : 1, sizeof(*w->again));
    if (!w->scratch || !w->dirty || !w->again) {
        fprintf(stderr, "moat-bench: out of memory\n");
        return false;
    }
    memset(w->scratch, 'x', scratch);
    hist_reset(&w->lat);
    hist_reset(&w->hs);
    return true;
}

void worker_free(worker *w)
{
    if (w->ep >= 0)
        close(w->ep);
    SSL_CTX_free(w->ctx);
    free(w->scratch);
    free(w->dirty);
    free(w->again);
    free(w->conns);
    free(w->pubs);
}
