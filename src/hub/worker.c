/*
 * worker.c — one worker thread of moatd: its event loop, its connections,
 * TLS, and the loop pass around its broker.
 *
 * One loop pass: libevent runs the I/O callbacks (handshakes, reads fed to
 * the broker, the inbox from other workers), then pass_end commits the
 * store once (group commit), posts the pass's messages to the other workers,
 * writes each connection's whole output with one SSL_write (many MQTT
 * packets per TLS record and syscall), and closes the connections the broker
 * asked to close. Nothing reaches a socket before its effects are durable —
 * with several workers, PUBACKs also wait for the workers that took copies
 * to commit (relay.h) — and no connection is freed inside a callback that
 * may still use it.
 *
 * Before a connection reaches a broker it must: get past the per-address
 * connection and handshake-rate limits, finish a TLS handshake within the
 * handshake timeout, and present a certificate that chains to the hub CA and
 * whose exact fingerprint the registry knows as active (checked in the verify
 * callback, so a refused certificate fails the handshake with a TLS alert).
 * Then it moves to the worker that owns its principal.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hub_int.h"
#include "log.h"
#include "policy.h"
#include "store_sqlite.h"
#include "tls.h"

#define READ_CHUNK     16384u
#define READS_PER_PASS 8u /* fairness: one chatty client cannot starve others */
#define WRITE_CHUNK    (64u * 1024u)

/* Ask for another end-of-pass round without waiting for an event. */
static void schedule_pass(hub_worker *w)
{
    w->pass_pending = true;
}

/* The peer's address, and "address:port" for log lines (made when needed:
 * an idle connection should not carry strings it rarely uses). */
static const char *conn_addr(const hub_conn *c)
{
    return c->ip ? c->ip->key : NULL;
}

static const char *peer_name(const hub_conn *c, char *out, size_t len)
{
    snprintf(out, len, "%s:%u", c->ip ? c->ip->key : "?", (unsigned)c->port);
    return out;
}
#define PEER(c) peer_name((c), (char[INET6_ADDRSTRLEN + 8]){0}, INET6_ADDRSTRLEN + 8)

/* ---- policies and identities from the registry --------------------------- */

static policy_set *policies_for(void *ctx, const broker_principal *who)
{
    hub_worker *w = ctx;
    return policy_cache_get(&w->policies, w->reg, who); /* NULL: the broker denies everything */
}

static bool identity_active(hub_worker *w, const uint8_t fp[32], registry_identity *who)
{
    if (registry_lookup_cert(w->reg, fp, who) != REGISTRY_OK)
        return false;
    return registry_identity_active(who, (int64_t)time(NULL));
}

static bool service_active(hub_worker *w, const char *name)
{
    registry_principal p;
    return registry_principal_get(w->reg, name, REGISTRY_SERVICE, &p) == REGISTRY_OK &&
           p.status == REGISTRY_ACTIVE;
}

/* Indexed by conn_refusal: the monitor's short reason words. */
static const char *const refusal_reason[] = {
    [REFUSED_TLS] = "tls",
    [REFUSED_CERTIFICATE] = "certificate",
    [REFUSED_UNREGISTERED] = "unregistered",
    [REFUSED_REVOKED] = "revoked",
};

/* The registry knows certificates by their SHA-256. */
static bool cert_fingerprint(X509 *cert, uint8_t fp[32])
{
    unsigned int n = 0;
    return cert && X509_digest(cert, EVP_sha256(), fp, &n) && n == 32;
}

int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    /* The connection is found through its socket BIO, whose state lives in
     * it: no ex_data slot, whose table would cost every connection memory. */
    sockbio_state *sock = ssl ? sockbio_state_of(SSL_get_rbio(ssl)) : NULL;
    hub_conn *c = sock ? (hub_conn *)((char *)sock - offsetof(hub_conn, sock)) : NULL;
    if (!c)
        return 0;
    if (!ok) {
        int e = X509_STORE_CTX_get_error(store);
        log_msg(LOG_WARN, NULL, "%s: client certificate refused: %s", PEER(c),
                X509_verify_cert_error_string(e));
        c->refusal = REFUSED_CERTIFICATE;
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(store) != 0)
        return 1;
    uint8_t fp[32];
    if (!cert_fingerprint(X509_STORE_CTX_get_current_cert(store), fp))
        return 0;
    registry_identity who;
    if (registry_lookup_cert(c->w->reg, fp, &who) != REGISTRY_OK) {
        log_msg(LOG_WARN, NULL, "%s: certificate not registered with this hub: refused", PEER(c));
        c->refusal = REFUSED_UNREGISTERED;
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    if (!registry_identity_active(&who, (int64_t)time(NULL))) {
        log_msg(LOG_WARN, who.id, "%s: identity %s (certificate %s): refused", PEER(c),
                registry_principal_status_name(who.status), who.cert_revoked ? "revoked" : "valid");
        c->refusal = REFUSED_REVOKED;
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REVOKED);
        return 0;
    }
    c->not_after = who.not_after;
    c->who.kind = who.kind == REGISTRY_DEVICE ? BROKER_DEVICE : BROKER_SERVICE;
    snprintf(c->who.id, sizeof(c->who.id), "%s", who.id);
    c->identified = true;
    return 1;
}

/* ---- connections ----------------------------------------------------------- */

static void on_io(evutil_socket_t fd, short what, void *arg);
static void on_handshake_timeout(evutil_socket_t fd, short what, void *arg);

/* A connection's one allocation: its libevent event, then the hub_conn,
 * then its broker_conn. The event goes first, where malloc's alignment is
 * (libevent gives none for it); the other two need only a pointer's, and
 * packed this way the three fit a smaller malloc chunk. */
#define CONN_ALIGN(n) (((n) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

static size_t conn_offset(void)
{
    return CONN_ALIGN(event_get_struct_event_size());
}

static hub_conn *conn_alloc(void)
{
    char *mem = calloc(1, conn_offset() + sizeof(hub_conn) + broker_conn_size());
    return mem ? (hub_conn *)(mem + conn_offset()) : NULL;
}

static void conn_dealloc(hub_conn *c)
{
    free((char *)c - conn_offset());
}

static struct event *conn_event(hub_conn *c)
{
    return (struct event *)((char *)c - conn_offset());
}

static void *conn_broker_mem(hub_conn *c)
{
    return (char *)c + sizeof(hub_conn);
}

/* The connection's broker_conn once conn_start opened it, else NULL. */
static broker_conn *conn_bc(hub_conn *c)
{
    return c->broker_open ? conn_broker_mem(c) : NULL;
}

/* Watch c's socket from its worker's loop (not yet added). */
static void conn_watch(hub_conn *c, short what)
{
    event_assign(conn_event(c), c->w->base, c->sock.fd, what, on_io, c);
    c->watched = true;
}

static void conn_unwatch(hub_conn *c)
{
    if (c->watched)
        event_del(conn_event(c));
    c->watched = false;
}

static void queue_close(hub_conn *c)
{
    if (c->close_queued)
        return;
    c->close_queued = true;
    if (c->watched)
        event_del(conn_event(c)); /* a closed peer's socket stays readable: stop watching it */
    c->next_dead = c->w->dead;
    c->w->dead = c;
    schedule_pass(c->w);
}

static void conn_unlink(hub_conn *c)
{
    hub_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nconns--;
}

static void conn_link(hub_worker *w, hub_conn *c)
{
    c->w = w;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
}

/* Free a connection's resources; with the worker's lists when linked. */
static void conn_release(hub_server *hub, hub_conn *c)
{
    /* Give the slot back before the peer can see the connection end: a
     * client that reconnects as soon as it sees the close must not find the
     * hub still counting the old connection against max_connections. The
     * address entry stays until its handshake bucket has refilled (see
     * forget_addresses): dropping it here would hand a client that
     * reconnects quickly a fresh bucket every time. */
    if (c->ip) {
        pthread_mutex_lock(&hub->ips_mu);
        c->ip->conns--;
        pthread_mutex_unlock(&hub->ips_mu);
    }
    atomic_fetch_sub(&hub->nconns, 1);
    if (c->ssl) {
        (void)SSL_shutdown(c->ssl); /* best effort: a close_notify if it fits */
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    conn_unwatch(c);
    if (c->deadline)
        event_free(c->deadline);
    if (c->sock.fd >= 0)
        close(c->sock.fd);
    conn_dealloc(c);
}

/* Activity for the monitor's liveness and rate watch: the packets the
 * broker took from this device since last time, reported at most once a
 * second per connection (monitor_tap), or all of them when it closes. */
static void note_activity(hub_conn *c, bool closing)
{
    monitor *m = c->w->hub->mon;
    if (!m || !conn_bc(c) || c->who.kind != BROKER_DEVICE)
        return;
    uint64_t fresh = broker_conn_take_packets(conn_bc(c));
    uint32_t n;
    if (closing) {
        uint64_t all = fresh + monitor_tap_flush(&c->tap);
        n = all > UINT32_MAX ? UINT32_MAX : (uint32_t)all;
    } else {
        if (fresh == 0)
            return;
        /* monitor_tap_count counts one: add the rest first. */
        uint64_t pending = (uint64_t)c->tap.pending + fresh - 1;
        c->tap.pending = pending > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)pending;
        n = monitor_tap_count(&c->tap, (int64_t)hub_now_ms(), 1000);
    }
    if (n)
        monitor_device_activity(m, c->who.id, n);
}

static void conn_free(hub_conn *c)
{
    hub_worker *w = c->w;
    if (conn_bc(c) && c->who.kind == BROKER_DEVICE && broker_conn_has_session(conn_bc(c)) &&
        w->hub->mon) {
        note_activity(c, true);
        /* A hub that is stopping closes everyone: that is not the devices'
         * news. A session taken over by a new connection is not gone. */
        if (!w->stopping)
            monitor_device_disconnected(w->hub->mon, c->who.id, broker_conn_clean(conn_bc(c)));
    }
    if (conn_bc(c))
        broker_conn_gone(w->broker, conn_bc(c), hub_now_ms());
    conn_unlink(c);
    conn_release(w->hub, c);
}

static void set_want_write(hub_conn *c, bool want)
{
    if (c->want_write == want)
        return;
    c->want_write = want;
    event_del(conn_event(c));
    conn_watch(c, EV_READ | EV_PERSIST | (want ? EV_WRITE : 0));
    event_add(conn_event(c), NULL);
}

/* Move bytes: >0 moved, 0 would block, -1 connection over. */
static ssize_t conn_read(hub_conn *c, uint8_t *data, size_t len)
{
    if (!c->ssl) {
        ssize_t n = recv(c->sock.fd, data, len, 0);
        if (n > 0)
            return n;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        return -1;
    }
    size_t got = 0;
    if (SSL_read_ex(c->ssl, data, len, &got) == 1)
        return (ssize_t)got;
    int e = SSL_get_error(c->ssl, 0);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        set_want_write(c, true);
        return 0;
    }
    ERR_clear_error();
    return -1;
}

static ssize_t conn_write(hub_conn *c, const uint8_t *data, size_t len)
{
    if (!c->ssl) {
        ssize_t n = send(c->sock.fd, data, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        return -1;
    }
    size_t put = 0;
    if (SSL_write_ex(c->ssl, data, len, &put) == 1)
        return (ssize_t)put;
    int e = SSL_get_error(c->ssl, 0);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
        return 0;
    ERR_clear_error();
    return -1;
}

/* Write as much of the broker's output as the socket takes. */
static void flush_conn(hub_conn *c)
{
    if (!conn_bc(c) || c->close_queued)
        return;
    buf *out = broker_output(conn_bc(c));
    for (unsigned rounds = 0; out->len > 0 && rounds < 64; rounds++) {
        size_t len = out->len < WRITE_CHUNK ? out->len : WRITE_CHUNK;
        ssize_t n = conn_write(c, buf_ptr(out), len);
        if (n < 0) {
            queue_close(c);
            return;
        }
        if (n == 0) {
            set_want_write(c, true);
            return;
        }
        buf_consume(out, (size_t)n);
        if (out->len == 0)
            broker_output_drained(c->w->broker, conn_bc(c), hub_now_ms());
    }
    set_want_write(c, out->len > 0);
}

static void read_conn(hub_conn *c)
{
    uint8_t data[READ_CHUNK];
    for (unsigned i = 0; i < READS_PER_PASS && !c->close_queued; i++) {
        ssize_t n = conn_read(c, data, sizeof(data));
        if (n < 0) {
            queue_close(c);
            return;
        }
        if (n == 0)
            return;
        broker_input(c->w->broker, conn_bc(c), data, (size_t)n, hub_now_ms());
        note_activity(c, false);
    }
    /* More may be buffered inside OpenSSL (decrypted, or records read ahead
     * and not yet decrypted): come back next pass. */
    if (c->ssl && SSL_has_pending(c->ssl))
        event_active(conn_event(c), EV_READ, 0);
}

/* A connection does not outlive its certificate. The worker keeps the
 * earliest end among its connections and looks at them all only when that
 * moment has come (at its registry poll): one timer per worker, not one per
 * connection. */
static void note_cert_expiry(hub_worker *w, const hub_conn *c)
{
    if (c->ssl && c->not_after < w->next_cert_expiry)
        w->next_cert_expiry = c->not_after;
}

static void close_expired(hub_worker *w)
{
    int64_t now = (int64_t)time(NULL);
    if (now < w->next_cert_expiry)
        return;
    w->next_cert_expiry = INT64_MAX;
    for (hub_conn *c = w->conns; c; c = c->next) {
        if (!conn_bc(c) || c->close_queued || !c->ssl)
            continue;
        if (c->not_after <= now)
            broker_close(w->broker, conn_bc(c), 0x87,
                         "client certificate expired: connection closed");
        else
            note_cert_expiry(w, c);
    }
}

/* After a failed handshake: the alert is on its way; stop sending, read and
 * discard what the client still sends (its CONNECT, often), and close after a
 * moment. Closing at once would make the kernel answer the client's next
 * bytes with a reset that destroys the unread alert, so the client would see
 * "connection reset" instead of, say, "certificate revoked". */
static void linger_close(hub_conn *c)
{
    if (c->lingering || c->close_queued)
        return;
    c->lingering = true;
    c->handshaking = false;
    (void)shutdown(c->sock.fd, SHUT_WR);
    set_want_write(c, false);
    if (!c->deadline)
        c->deadline = evtimer_new(c->w->base, on_handshake_timeout, c);
    if (!c->deadline) {
        queue_close(c);
        return;
    }
    struct timeval tv = {1, 0};
    evtimer_add(c->deadline, &tv);
}

static void drain_lingering(hub_conn *c)
{
    uint8_t junk[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->sock.fd, junk, sizeof(junk), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break; /* EOF or error: the client has gone */
    }
    queue_close(c);
}

/* The connection is authenticated and on its owner's worker: give it to the
 * broker, and read what it already sent (OpenSSL may hold its CONNECT). */
static void conn_start(hub_conn *c)
{
    hub_worker *w = c->w;
    if (w->stopping) {
        queue_close(c);
        return;
    }
    c->broker_open =
        broker_conn_open_in(conn_broker_mem(c), w->broker, &c->who, c, hub_now_ms()) != NULL;
    if (!c->broker_open) {
        queue_close(c);
        return;
    }
    note_cert_expiry(w, c);
    read_conn(c);
    schedule_pass(w);
}

/* Move c to the worker that owns its principal (or start it here). */
static void conn_place(hub_conn *c)
{
    hub_worker *w = c->w;
    hub_server *hub = w->hub;
    unsigned owner =
        store_split_owner((const uint8_t *)c->who.id, strlen(c->who.id), hub->nworkers);
    if (owner == w->index) {
        conn_start(c);
        return;
    }
    /* Nothing of it may stay in this loop: its event is assigned again there. */
    conn_unwatch(c);
    conn_unlink(c);
    relay_env *env = relay_env_new(RELAY_CONN, w->index);
    if (!env) {
        c->w = w;
        conn_release(hub, c);
        return;
    }
    env->conn = c;
    relay_post(&hub->workers[owner].inbox, env);
}

static void adopt_conn(hub_worker *w, hub_conn *c)
{
    conn_link(w, c);
    conn_watch(c, EV_READ | EV_PERSIST);
    c->want_write = false;
    event_add(conn_event(c), NULL);
    conn_start(c);
}

static void handshake_done(hub_conn *c)
{
    c->handshaking = false;
    if (c->deadline) {
        event_free(c->deadline);
        c->deadline = NULL;
    }
    if (!c->identified || SSL_get_verify_result(c->ssl) != X509_V_OK) {
        queue_close(c); /* cannot happen with FAIL_IF_NO_PEER_CERT; fail closed anyway */
        return;
    }
    log_msg(LOG_DEBUG, c->who.id, "%s: TLS %s established", PEER(c), SSL_get_version(c->ssl));
    conn_place(c);
}

static void do_handshake(hub_conn *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        handshake_done(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        set_want_write(c, false);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        set_want_write(c, true);
        return;
    }
    char why[256];
    log_msg(LOG_WARN, c->identified ? c->who.id : NULL, "%s: TLS handshake failed: %s", PEER(c),
            tls_error_text(why, sizeof(why)));
    hub_note_refusal(c->w->hub, MONITOR_REFUSED_HANDSHAKE, conn_addr(c),
                     c->identified ? &c->who : NULL, refusal_reason[c->refusal], (codec_bytes){0});
    linger_close(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    hub_conn *c = arg;
    hub_worker *w = c->w;
    (void)fd;
    if (c->close_queued)
        return;
    if (what & EV_READ)
        sockbio_readable(&c->sock);
    if (c->lingering) {
        drain_lingering(c);
    } else if (c->handshaking) {
        do_handshake(c);
    } else {
        if (what & EV_WRITE)
            flush_conn(c);
        if ((what & EV_READ) && !c->close_queued)
            read_conn(c);
    }
    schedule_pass(w);
}

static void on_handshake_timeout(evutil_socket_t fd, short what, void *arg)
{
    hub_conn *c = arg;
    (void)fd, (void)what;
    if (!c->lingering) {
        log_msg(LOG_WARN, NULL, "%s: no TLS handshake within %u s: dropped", PEER(c),
                c->w->cfg.handshake_timeout_s);
        hub_note_refusal(c->w->hub, MONITOR_REFUSED_HANDSHAKE, conn_addr(c), NULL, "timeout",
                         (codec_bytes){0});
    }
    queue_close(c);
}

/* Per-address limits: connections held, and handshakes per second (a token
 * bucket with one second of burst). Called with hub->ips_mu held. */
static ip_entry *admit_address(hub_worker *w, const char *addr, const char **refusal)
{
    hmap *ips = &w->hub->ips;
    ip_entry *ip = hmap_get(ips, (const uint8_t *)addr, strlen(addr));
    uint64_t now = hub_now_ms();
    double rate = w->cfg.handshakes_per_second_per_ip;
    if (!ip) {
        ip = calloc(1, sizeof(*ip));
        if (!ip)
            return NULL;
        snprintf(ip->key, sizeof(ip->key), "%s", addr);
        ip->tokens = rate;
        ip->refilled_at = now;
        if (!hmap_put(ips, (const uint8_t *)ip->key, strlen(ip->key), ip)) {
            free(ip);
            return NULL;
        }
    } else {
        ip->tokens += (double)(now - ip->refilled_at) * rate / 1000.0;
        if (ip->tokens > rate)
            ip->tokens = rate;
        ip->refilled_at = now;
    }
    if (ip->conns >= w->cfg.max_connections_per_ip) {
        log_msg(LOG_WARN, NULL, "%s: %zu connections from this address: refused", addr, ip->conns);
        *refusal = "connections";
        return NULL;
    }
    if (ip->tokens < 1.0) {
        log_msg(LOG_WARN, NULL, "%s: more than %u handshakes per second: refused", addr,
                w->cfg.handshakes_per_second_per_ip);
        *refusal = "rate";
        return NULL;
    }
    ip->tokens -= 1.0;
    ip->conns++;
    return ip;
}

/* Forget addresses with no connection whose handshake bucket is full again,
 * so the table does not grow with every address ever seen. */
static void forget_addresses(hub_worker *w)
{
    hub_server *hub = w->hub;
    uint64_t now = hub_now_ms();
    double rate = w->cfg.handshakes_per_second_per_ip;
    ip_entry *idle[256];
    size_t n = 0, bucket = 0;
    hmap_entry *it = NULL, *e;
    pthread_mutex_lock(&hub->ips_mu);
    while (n < 256 && (e = hmap_next(&hub->ips, &bucket, &it))) {
        ip_entry *ip = e->value;
        double tokens = ip->tokens + (double)(now - ip->refilled_at) * rate / 1000.0;
        if (ip->conns == 0 && tokens >= rate)
            idle[n++] = ip;
    }
    for (size_t i = 0; i < n; i++) {
        hmap_del(&hub->ips, (const uint8_t *)idle[i]->key, strlen(idle[i]->key));
        free(idle[i]);
    }
    pthread_mutex_unlock(&hub->ips_mu);
}

static void accept_common(hub_worker *w, evutil_socket_t fd, struct sockaddr *sa, bool tls)
{
    hub_server *hub = w->hub;
    char addr[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
        port = ntohs(in6->sin6_port);
    }
    size_t total = atomic_load(&hub->nconns);
    if (w->stopping || total >= w->cfg.max_connections) {
        if (!w->stopping)
            log_msg(LOG_WARN, NULL, "%s: %zu connections is the limit: refused", addr, total);
        close(fd);
        return;
    }
    const char *refusal = NULL;
    pthread_mutex_lock(&hub->ips_mu);
    ip_entry *ip = admit_address(w, addr, &refusal);
    pthread_mutex_unlock(&hub->ips_mu);
    if (!ip) {
        if (refusal)
            hub_note_refusal(hub, MONITOR_REFUSED_HANDSHAKE, addr, NULL, refusal, (codec_bytes){0});
        close(fd);
        return;
    }
    hub_conn *c = conn_alloc();
    if (!c) {
        pthread_mutex_lock(&hub->ips_mu);
        ip->conns--;
        pthread_mutex_unlock(&hub->ips_mu);
        close(fd);
        return;
    }
    c->sock.fd = fd;
    c->ip = ip;
    atomic_fetch_add(&hub->nconns, 1);
    conn_link(w, c);
    c->port = port;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    evutil_make_socket_nonblocking(fd);
    conn_watch(c, EV_READ | EV_PERSIST);
    if (tls) {
        c->ssl = SSL_new(w->ssl_ctx);
        c->deadline = evtimer_new(w->base, on_handshake_timeout, c);
        BIO *bio = c->ssl ? sockbio_new(&c->sock) : NULL;
        if (!bio || !c->deadline) {
            BIO_free(bio);
            conn_free(c);
            return;
        }
        SSL_set_bio(c->ssl, bio, bio);
        SSL_set_accept_state(c->ssl);
        c->handshaking = true;
        struct timeval tv = {(time_t)w->cfg.handshake_timeout_s, 0};
        evtimer_add(c->deadline, &tv);
        event_add(conn_event(c), NULL);
    } else {
        /* The test listener: the connection is the named service. */
        if (!service_active(w, hub->opts.test_service)) {
            log_msg(LOG_WARN, NULL, "%s: test service '%s' is not active: refused", PEER(c),
                    hub->opts.test_service);
            conn_free(c);
            return;
        }
        c->who.kind = BROKER_SERVICE;
        snprintf(c->who.id, sizeof(c->who.id), "%s", hub->opts.test_service);
        c->identified = true;
        event_add(conn_event(c), NULL);
        conn_place(c);
    }
    schedule_pass(w);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l, (void)len;
    accept_common(arg, fd, sa, true);
}

static void on_accept_test(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    (void)l, (void)len;
    accept_common(arg, fd, sa, false);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l, (void)arg;
    log_msg(LOG_ERROR, NULL, "accept: %s (continuing)", strerror(errno));
}

/* ---- other workers --------------------------------------------------------- */

/* broker_relay.forward: copy a message into the outboxes of the others. */
static bool relay_forward(void *ctx, const broker_fwd *f)
{
    hub_worker *w = ctx;
    hub_server *hub = w->hub;
    bool wait = false;
    for (unsigned k = 0; k < hub->nworkers; k++) {
        if (k == w->index)
            continue;
        uint8_t flags = f->flags;
        if (flags & BROKER_FWD_ROUTE && f->retain)
            /* Worker 0 is the retained authority: it stored the message
             * already (replicas elsewhere) or stores it now. */
            flags |=
                w->index == 0 ? BROKER_FWD_RETAIN_REPLICA : (k == 0 ? BROKER_FWD_RETAIN_STORE : 0);
        if (!w->outbox[k] && !(w->outbox[k] = relay_env_new(RELAY_BATCH, w->index)))
            goto lost;
        if (!relay_env_add(w->outbox[k], f, flags))
            goto lost;
        /* QoS 1/2 copies and retained changes may be stored there: our
         * acknowledgements of this pass wait for its ticket. */
        if ((flags & BROKER_FWD_ROUTE && f->qos > 0) || (flags & BROKER_FWD_RETAIN_STORE)) {
            w->ticket_from |= (uint64_t)1 << k;
            wait = true;
        }
        continue;
    lost:
        log_msg(LOG_ERROR, NULL, "out of memory: a message did not reach worker %u", k);
    }
    /* A device's reading for the telemetry store (its PUBACK waits for it). */
    codec_bytes stream;
    if (hub->ingest && f->from && f->from->kind == BROKER_DEVICE && (f->flags & BROKER_FWD_ROUTE) &&
        ingest_topic(f->topic, f->from->id, &stream)) {
        if (!w->ingest_out && (w->ingest_out = relay_env_new(RELAY_BATCH, w->index)))
            w->ingest_out->pass_time = hub_now_ms();
        if (!w->ingest_out || !relay_env_add(w->ingest_out, f, f->flags)) {
            /* Not stored: the pass must not be acknowledged. */
            log_msg(LOG_ERROR, f->from->id, "out of memory: a reading was not stored");
            w->ingest_lost = true;
            return true;
        }
        if (f->qos > 0) {
            w->ingest_ticket = true;
            wait = true;
        }
    }
    return wait;
}

static uint8_t relay_check_publish(void *ctx, const broker_principal *who, codec_bytes topic,
                                   codec_bytes payload)
{
    (void)ctx;
    codec_bytes stream;
    if (who->kind != BROKER_DEVICE || !ingest_topic(topic, who->id, &stream))
        return 0;
    return (uint8_t)ingest_check(payload.ptr, payload.len);
}

static uint64_t relay_next_id(void *ctx)
{
    hub_worker *w = ctx;
    return atomic_fetch_add(&w->hub->ids, 1) + 1;
}

static void *relay_share_join(void *ctx, codec_bytes share, codec_bytes filter)
{
    hub_worker *w = ctx;
    return shares_join(w->hub->shares, w->index, share, filter);
}

static void relay_share_leave(void *ctx, void *group)
{
    hub_worker *w = ctx;
    shares_leave(w->hub->shares, w->index, group);
}

static bool relay_share_mine(void *ctx, void *group, uint64_t gid)
{
    hub_worker *w = ctx;
    return shares_mine(group, w->index, gid);
}

/* After this pass's commit: post the batches, remember which tickets we wait
 * for, answer the batches we took in, and release what is durable. */
static void relay_pass_end(hub_worker *w, uint64_t pass, bool committed)
{
    hub_server *hub = w->hub;
    if (!w->relay.forward)
        return;
    unsigned waiting = 0;
    if (w->ingest_out) {
        relay_env *env = w->ingest_out;
        w->ingest_out = NULL;
        env->pass = pass;
        env->needs_ticket = w->ingest_ticket;
        waiting += env->needs_ticket;
        relay_post(ingest_inbox(hub->ingest), env);
    }
    w->ingest_ticket = false;
    if (w->ingest_lost) {
        w->ingest_lost = false;
        broker_release_acks(w->broker, pass, false);
    }
    for (unsigned k = 0; k < hub->nworkers; k++) {
        relay_env *env = w->outbox[k];
        if (!env)
            continue;
        w->outbox[k] = NULL;
        env->pass = pass;
        env->needs_ticket = (w->ticket_from >> k) & 1u;
        waiting += env->needs_ticket;
        relay_post(&hub->workers[k].inbox, env);
    }
    w->ticket_from = 0;
    if (waiting && !relay_pending_add(&w->pending, pass, waiting)) {
        /* Cannot track it: never acknowledge this pass. */
        broker_release_acks(w->broker, pass, false);
    }
    for (size_t i = 0; i < w->nowed; i++) {
        relay_env *t = w->owed[i];
        unsigned to = t->from;
        t->from = w->index;
        t->ok = committed;
        relay_post(&hub->workers[to].inbox, t);
    }
    w->nowed = 0;
    if (relay_pending_empty(&w->pending))
        broker_release_acks(w->broker, pass, true);
}

static void release_ticketed(hub_worker *w)
{
    uint64_t pass;
    bool ok;
    while (relay_pending_pop(&w->pending, &pass, &ok))
        broker_release_acks(w->broker, pass, ok);
    if (relay_pending_empty(&w->pending))
        broker_release_acks(w->broker, broker_pass(w->broker) - 1, true);
}

/* Route a batch from another worker here; its ticket (with the messages
 * that found subscribers) goes back after this pass's commit. */
static void take_batch(hub_worker *w, relay_env *env)
{
    relay_env *t = NULL;
    if (env->needs_ticket && w->nowed == w->owed_cap) {
        size_t cap = w->owed_cap ? w->owed_cap * 2 : 16;
        relay_env **o = realloc(w->owed, cap * sizeof(*o));
        if (o) {
            w->owed = o;
            w->owed_cap = cap;
        }
    }
    if (env->needs_ticket && w->nowed < w->owed_cap && (t = relay_env_new(RELAY_TICKET, 0))) {
        /* `from` of a ticket we owe names its destination until posted. */
        t->from = env->from;
        t->pass = env->pass;
    }
    for (size_t i = 0; i < env->n; i++) {
        const broker_fwd *f = &env->items[i]->f;
        bool matched = broker_inject(w->broker, f, hub_now_ms());
        if (t && matched && f->qos > 0 && (f->flags & BROKER_FWD_ROUTE))
            (void)relay_env_add_gid(t, f->gid); /* lost: the origin says 0x10, harmless */
    }
    if (t)
        w->owed[w->nowed++] = t;
    /* No ticket (out of memory): the origin keeps holding; its client retries. */
}

static void apply_reload(hub_worker *w, const hub_config *fresh);
static void begin_stop(hub_worker *w);
static void recheck_registry(hub_worker *w, bool force);

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    hub_worker *w = arg;
    (void)fd, (void)what;
    relay_env *env = relay_take(&w->inbox);
    bool tickets = false;
    while (env) {
        relay_env *next = env->next;
        switch (env->kind) {
        case RELAY_CONN:
            adopt_conn(w, env->conn);
            break;
        case RELAY_BATCH:
            take_batch(w, env);
            break;
        case RELAY_TICKET:
            for (size_t i = 0; i < env->ngids; i++)
                broker_ack_matched(w->broker, env->gids[i]);
            relay_pending_ticket(&w->pending, env->pass, env->ok);
            tickets = true;
            break;
        case RELAY_CONTROL:
            if (env->control == RELAY_STOP) {
                begin_stop(w);
            } else if (env->control == RELAY_RELOAD) {
                hub_config *fresh = env->arg;
                apply_reload(w, fresh);
                free(fresh);
            } else if (env->control == RELAY_RECHECK) {
                recheck_registry(w, true);
            }
            break;
        }
        relay_env_free(env);
        env = next;
    }
    if (tickets)
        release_ticketed(w);
    schedule_pass(w);
}

void worker_control(hub_worker *w, int control, void *arg)
{
    relay_env *env = relay_env_new(RELAY_CONTROL, 0);
    if (!env) {
        free(arg);
        return;
    }
    env->control = control;
    env->arg = arg;
    relay_post(&w->inbox, env);
}

typedef struct seed_ctx {
    hub_server *hub;
} seed_ctx;

static void seed_one(void *ctx, const broker_fwd *f)
{
    seed_ctx *s = ctx;
    for (unsigned k = 1; k < s->hub->nworkers; k++)
        broker_inject(s->hub->workers[k].broker, f, hub_now_ms());
}

void worker_seed_retained(hub_server *hub)
{
    seed_ctx s = {hub};
    if (hub->nworkers > 1)
        broker_retained_each(hub->workers[0].broker, seed_one, &s);
}

/* ---- end of pass, timers, registry ----------------------------------------- */

static void close_dead(hub_worker *w)
{
    while (w->dead) {
        hub_conn *c = w->dead;
        w->dead = c->next_dead;
        conn_free(c);
    }
}

static void arm_tick(hub_worker *w)
{
    uint64_t next = broker_tick(w->broker, hub_now_ms());
    if (next == UINT64_MAX)
        return;
    uint64_t now = hub_now_ms();
    uint64_t wait = next > now ? next - now : 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(w->tick_ev, &tv);
}

static void store_health(hub_worker *w, bool ok)
{
    char detail[CONFIG_PATH_MAX + 64] = "";
    if (!ok) {
        char path[CONFIG_PATH_MAX + 32];
        store_split_path(path, sizeof(path), w->cfg.data_dir, w->index);
        snprintf(detail, sizeof(detail), "broker store (%s): commit failed",
                 strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
    }
    hub_store_state(w->hub, (int)w->index, ok, detail);
}

/* The end of a loop pass: group commit, then output, then closes. */
static void pass_end(hub_worker *w)
{
    broker_conn **list;
    /* Closing connections can publish wills, which makes more output: go
     * round until the broker is quiet (bounded; the rest waits a pass). */
    unsigned round;
    for (round = 0; round < 8; round++) {
        uint64_t pass = broker_pass(w->broker);
        bool wrote = broker_store_touched(w->broker);
        bool ok = broker_commit(w->broker);
        if (wrote)
            store_health(w, ok);
        relay_pass_end(w, pass, ok);
        size_t n = broker_dirty(w->broker, &list);
        for (size_t i = 0; i < n; i++)
            flush_conn(broker_conn_io(list[i]));
        size_t m = broker_closing(w->broker, &list);
        for (size_t i = 0; i < m; i++)
            queue_close(broker_conn_io(list[i]));
        bool had_dead = w->dead != NULL;
        close_dead(w);
        if (n == 0 && m == 0 && !had_dead)
            break;
    }
    if (round == 8)
        schedule_pass(w);
    arm_tick(w);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    /* Nothing to do here: the broker's timers run in pass_end's arm_tick. */
    (void)fd, (void)what, (void)arg;
}

static bool still_active(void *ctx, const broker_principal *who, void *io)
{
    hub_worker *w = ctx;
    hub_conn *c = io;
    if (!c || !c->ssl)
        return service_active(w, who->id);
    /* The fingerprint is computed again (a few microseconds, next to the
     * registry lookup) rather than kept: registry changes are rare, and an
     * idle hub holds many connections. */
    uint8_t fp[32];
    registry_identity id;
    return cert_fingerprint(SSL_get0_peer_certificate(c->ssl), fp) && identity_active(w, fp, &id) &&
           strcmp(id.id, who->id) == 0;
}

static void recheck_registry(hub_worker *w, bool force)
{
    int64_t v;
    if (registry_data_version(w->reg, &v) != REGISTRY_OK) {
        log_msg(LOG_ERROR, NULL, "registry: %s", registry_errmsg(w->reg));
        return;
    }
    if (!force && v == w->registry_version)
        return;
    w->registry_version = v;
    broker_reauthorize(w->broker, still_active, w, hub_now_ms());
    schedule_pass(w);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    hub_worker *w = arg;
    (void)fd, (void)what;
    recheck_registry(w, false);
    close_expired(w);
    if (w->index == 0)
        forget_addresses(w);
}

static void arm_poll(hub_worker *w)
{
    struct timeval poll = {(time_t)(w->cfg.registry_poll_ms / 1000),
                           (suseconds_t)((w->cfg.registry_poll_ms % 1000) * 1000)};
    event_add(w->poll_ev, &poll);
}

/* SIGHUP, as worker 0 read it: new limits and TLS settings for this worker. */
static void apply_reload(hub_worker *w, const hub_config *fresh)
{
    if (!fresh)
        return;
    char err[1024];
    SSL_CTX *fresh_ctx = tls_server_ctx(fresh, verify_cb, err, sizeof(err));
    if (!fresh_ctx) {
        if (w->index == 0)
            log_msg(LOG_ERROR, NULL, "SIGHUP: TLS settings not reloaded (keeping the old): %s",
                    err);
    } else {
        /* Live connections keep a reference to the context they were made
         * with; new ones use the new certificate and settings. */
        SSL_CTX_free(w->ssl_ctx);
        w->ssl_ctx = fresh_ctx;
        w->cfg.tls_min_version = fresh->tls_min_version;
    }
    broker_set_limits(w->broker, &fresh->limits);
    w->cfg.limits = fresh->limits;
    w->cfg.max_connections = fresh->max_connections;
    w->cfg.max_connections_per_ip = fresh->max_connections_per_ip;
    w->cfg.handshakes_per_second_per_ip = fresh->handshakes_per_second_per_ip;
    w->cfg.handshake_timeout_s = fresh->handshake_timeout_s;
    w->cfg.registry_poll_ms = fresh->registry_poll_ms;
    arm_poll(w);
    recheck_registry(w, true);
}

void hub_reload(hub_worker *w0)
{
    hub_server *hub = w0->hub;
    if (!hub->opts.config_path) {
        recheck_registry(w0, true);
        for (unsigned k = 1; k < hub->nworkers; k++)
            worker_control(&hub->workers[k], RELAY_RECHECK, NULL);
        return;
    }
    hub_config fresh;
    hub_config_defaults(&fresh, hub->cfg.data_dir);
    char err[1024];
    if (!hub_config_load(&fresh, hub->opts.config_path, err, sizeof(err))) {
        log_msg(LOG_ERROR, NULL, "SIGHUP: configuration not reloaded: %s", err);
        recheck_registry(w0, true);
        for (unsigned k = 1; k < hub->nworkers; k++)
            worker_control(&hub->workers[k], RELAY_RECHECK, NULL);
        return;
    }
    if (!hub->opts.listen_override && (strcmp(fresh.listen_host, hub->cfg.listen_host) != 0 ||
                                       fresh.listen_port != hub->cfg.listen_port))
        log_msg(LOG_WARN, NULL, "SIGHUP: [hub] listen changed: takes effect at restart");
    if (fresh.workers != hub->cfg.workers)
        log_msg(LOG_WARN, NULL, "SIGHUP: [hub] workers changed: takes effect at restart");
    if (memcmp(&fresh.monitor, &hub->cfg.monitor, sizeof(fresh.monitor)) != 0)
        log_msg(LOG_WARN, NULL, "SIGHUP: [monitor] or [alerts] changed: takes effect at restart");
    if (!hub->opts.log_format_override)
        log_set_json(fresh.log_json);
    for (unsigned k = 1; k < hub->nworkers; k++) {
        hub_config *copy = malloc(sizeof(*copy));
        if (copy) {
            *copy = fresh;
            worker_control(&hub->workers[k], RELAY_RELOAD, copy);
        }
    }
    apply_reload(w0, &fresh);
    log_msg(LOG_INFO, NULL, "SIGHUP: configuration reloaded from %s", hub->opts.config_path);
}

static void begin_stop(hub_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    if (w->listener)
        evconnlistener_disable(w->listener);
    if (w->test_listener)
        evconnlistener_disable(w->test_listener);
    broker_shutdown(w->broker, hub_now_ms());
    /* Connections still handshaking never reached the broker: close them. */
    for (hub_conn *c = w->conns; c; c = c->next)
        if (!conn_bc(c))
            queue_close(c);
    struct timeval grace = {5, 0};
    evtimer_add(w->grace_ev, &grace);
    schedule_pass(w);
}

/* ---- set-up ---------------------------------------------------------------- */

static void broker_log_cb(void *ctx, broker_event ev, const broker_principal *who,
                          const char *detail)
{
    hub_worker *w = ctx;
    if (ev == BROKER_EV_CONNECTED && who && who->kind == BROKER_DEVICE && w->hub->mon)
        monitor_device_connected(w->hub->mon, who->id);
    log_level level = LOG_INFO;
    switch (ev) {
    case BROKER_EV_REFUSED_CONNECT:
    case BROKER_EV_REFUSED_PUBLISH:
    case BROKER_EV_REFUSED_SUBSCRIBE:
    case BROKER_EV_PROTOCOL_ERROR:
    case BROKER_EV_DROPPED:
        level = LOG_WARN;
        break;
    case BROKER_EV_STORE_FAILED:
        level = LOG_ERROR;
        break;
    default:
        break;
    }
    log_msg(level, who ? who->id : NULL, "%s", detail);
}

static void broker_refused_cb(void *ctx, const broker_refusal *r)
{
    hub_worker *w = ctx;
    hub_conn *c = r->io;
    monitor_refusal what = r->ev == BROKER_EV_REFUSED_CONNECT   ? MONITOR_REFUSED_CONNECT
                           : r->ev == BROKER_EV_REFUSED_PUBLISH ? MONITOR_REFUSED_PUBLISH
                                                                : MONITOR_REFUSED_SUBSCRIBE;
    hub_note_refusal(w->hub, what, c ? conn_addr(c) : NULL, r->who, r->reason, r->topic);
}

/* PUBLISHes to "$" topics: the hub answers $moat/telemetry/query itself
 * (query.h); the rest are routed as usual. */
static int request_cb(void *ctx, const broker_request *r)
{
    hub_worker *w = ctx;
    static const char topic[] = QUERY_TOPIC;
    if (r->topic.len != sizeof(topic) - 1 || memcmp(r->topic.ptr, topic, r->topic.len) != 0)
        return BROKER_REQUEST_PASS;
    if (r->who->kind != BROKER_SERVICE)
        return 0x87; /* devices read nothing of other devices, nor their own history */
    /* An answer needs somewhere to go: MQTT 5 with a Response Topic that is
     * a topic name (no wildcards). */
    if (!r->props || !CODEC_HAS(r->props, CODEC_PROP_RESPONSE_TOPIC) ||
        codec_topic_name_check(r->props->response_topic) != CODEC_OK)
        return 0x83;
    codec_bytes corr = CODEC_HAS(r->props, CODEC_PROP_CORRELATION_DATA) ? r->props->correlation_data
                                                                        : (codec_bytes){0};
    const char *refusal = NULL;
    if (!w->hub->query)
        refusal = "unavailable";
    else if (r->payload.len > QUERY_REQUEST_MAX)
        refusal = "bad_request";
    else {
        query_request q = {.worker = w->index,
                           .who = r->who,
                           .client_id = r->client_id,
                           .response_topic = r->props->response_topic,
                           .correlation = corr,
                           .payload = r->payload};
        if (!query_submit(w->hub->query, &q))
            refusal = "busy";
    }
    if (refusal) {
        /* Answered here, through this worker's own inbox (next pass). */
        char *text = query_error_json(
            refusal, !strcmp(refusal, "busy")          ? "too many queries waiting; try again"
                     : !strcmp(refusal, "bad_request") ? "the request is larger than 4096 bytes"
                                                       : "this hub does not store telemetry");
        hub_message m = {.topic = r->props->response_topic,
                         .payload = {(const uint8_t *)text, text ? strlen(text) : 0},
                         .qos = 1,
                         .correlation = corr,
                         .to = r->client_id};
        if (text)
            (void)hub_post(w->hub, (int)w->index, &m);
        free(text);
    }
    return BROKER_REQUEST_TAKEN;
}

static struct evconnlistener *listen_on(hub_worker *w, const char *host, uint16_t port,
                                        evconnlistener_cb cb, bool shared, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        len = sizeof(*in);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        len = sizeof(*in6);
    } else {
        snprintf(err, errlen, "listen address '%s' is not an IP address", host);
        return NULL;
    }
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE;
    if (shared)
        flags |= LEV_OPT_REUSEABLE_PORT; /* each worker accepts on its own socket */
    struct evconnlistener *l =
        evconnlistener_new_bind(w->base, cb, w, flags, 1024, (struct sockaddr *)&ss, (int)len);
    if (!l)
        snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(errno));
    else
        evconnlistener_set_error_cb(l, on_accept_error);
    return l;
}

bool worker_init(hub_worker *w, hub_server *hub, unsigned index, char *err, size_t errlen)
{
    const hub_config *cfg = &hub->cfg;
    w->hub = hub;
    w->index = index;
    w->cfg = *cfg;
    if (!relay_inbox_init(&w->inbox)) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return false;
    }

    char path[CONFIG_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/registry.db", cfg->data_dir);
    char why[512];
    if (registry_open(path, REGISTRY_OPEN_READONLY, &w->reg, why, sizeof(why)) != REGISTRY_OK) {
        snprintf(err, errlen, "registry %s: %s", path, why);
        return false;
    }
    if (registry_data_version(w->reg, &w->registry_version) != REGISTRY_OK) {
        snprintf(err, errlen, "registry %s: %s", path, registry_errmsg(w->reg));
        return false;
    }
    w->next_cert_expiry = INT64_MAX;
    if (!policy_cache_init(&w->policies)) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    if (index == 0 && hub->opts.test_port && !service_active(w, hub->opts.test_service)) {
        snprintf(err, errlen, "--as-service %s: no such active service in the registry",
                 hub->opts.test_service);
        return false;
    }
    store_split_path(path, sizeof(path), cfg->data_dir, index);
    if (!store_sqlite_open(path, &w->store, why, sizeof(why))) {
        snprintf(err, errlen, "store %s: %s", path, why);
        return false;
    }
    w->ssl_ctx = tls_server_ctx(cfg, verify_cb, err, errlen);
    if (!w->ssl_ctx)
        return false;

    /* The relay carries messages to the other workers and readings to the
     * telemetry store; with neither, the broker runs as a single loop. */
    if (hub->nworkers > 1 || hub->ingest)
        w->relay = (broker_relay){.ctx = w,
                                  .forward = relay_forward,
                                  .next_id = relay_next_id,
                                  .retained_replica = index != 0,
                                  .hold_acks = true};
    if (hub->nworkers > 1) {
        w->relay.share_join = relay_share_join;
        w->relay.share_leave = relay_share_leave;
        w->relay.share_mine = relay_share_mine;
    }
    if (hub->ingest)
        w->relay.check_publish = relay_check_publish;
    bool relayed = w->relay.forward != NULL;
    broker_config bc = {.limits = cfg->limits,
                        .store = w->store,
                        .log = broker_log_cb,
                        .log_ctx = w,
                        .policies_for = policies_for,
                        .policies_ctx = w,
                        .relay = relayed ? &w->relay : NULL,
                        .refused = broker_refused_cb,
                        .request = request_cb,
                        .request_ctx = w};
    w->broker = broker_new(&bc, hub_now_ms());
    if (!w->broker) {
        snprintf(err, errlen, "cannot load the broker's state from %s", path);
        return false;
    }

    w->base = event_base_new();
    if (!w->base) {
        snprintf(err, errlen, "libevent: cannot create the event loop");
        return false;
    }
    w->tick_ev = evtimer_new(w->base, on_tick, w);
    w->grace_ev = evtimer_new(w->base, on_tick, w);
    w->poll_ev = event_new(w->base, -1, EV_PERSIST, on_poll, w);
    w->inbox_ev = event_new(w->base, w->inbox.efd, EV_READ | EV_PERSIST, on_inbox, w);
    if (!w->grace_ev || !w->tick_ev || !w->poll_ev || !w->inbox_ev) {
        snprintf(err, errlen, "libevent: out of memory");
        return false;
    }
    arm_poll(w);
    event_add(w->inbox_ev, NULL);
    return true;
}

bool worker_listen(hub_worker *w, char *err, size_t errlen)
{
    hub_server *hub = w->hub;
    bool shared = hub->nworkers > 1;
    /* Port 0 (tests): the first worker's port is everyone's. */
    uint16_t port = w->index == 0 ? w->cfg.listen_port : hub->port;
    w->listener = listen_on(w, w->cfg.listen_host, port, on_accept, shared, err, errlen);
    if (!w->listener)
        return false;
    if (w->index == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(evconnlistener_get_fd(w->listener), (struct sockaddr *)&ss, &sl) == 0)
            hub->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    if (w->index == 0 && hub->opts.test_port) {
        w->test_listener =
            listen_on(w, "127.0.0.1", hub->opts.test_port, on_accept_test, false, err, errlen);
        if (!w->test_listener)
            return false;
        log_msg(LOG_WARN, NULL,
                "INSECURE TEST LISTENER on 127.0.0.1:%u: plaintext, no client certificates; "
                "every connection acts as service '%s'. Never use this in production.",
                hub->opts.test_port, hub->opts.test_service);
    }
    return true;
}

/* The loop of one worker. It stops when asked, once its connections are
 * gone (or the grace period ended) and every other worker got that far too,
 * so that what a stopping worker still forwards (wills) is taken in. */
int worker_run(hub_worker *w)
{
    hub_server *hub = w->hub;
    /* The registry may have changed while the hub was down: judge the
     * subscriptions restored from the store by the policies in force now. */
    recheck_registry(w, true);
    arm_tick(w);
    int rc = 0;
    /* One iteration = one pass: every ready callback runs (reads fed to the
     * broker), then pass_end commits and writes. Driving the loop here,
     * rather than with a low-priority event, means the end of the pass can
     * never be starved by busy sockets. */
    for (;;) {
        int flags = w->pass_pending ? EVLOOP_NONBLOCK : EVLOOP_ONCE;
        w->pass_pending = false;
        if (event_base_loop(w->base, flags) < 0) {
            rc = 1;
            break;
        }
        pass_end(w);
        if (!w->stopping)
            continue;
        uint64_t now = hub_now_ms();
        if (!w->stop_by)
            w->stop_by = now + 5000;
        if (!w->drained && (w->nconns == 0 || now >= w->stop_by)) {
            while (w->conns)
                conn_free(w->conns);
            pass_end(w);
            w->drained = true;
            atomic_fetch_add(&hub->drained, 1);
        }
        if (w->drained && atomic_load(&hub->drained) == hub->nworkers) {
            /* Everyone is quiet: take in what is left and go. */
            on_inbox(w->inbox.efd, EV_READ, w);
            while (w->conns)
                conn_free(w->conns);
            pass_end(w);
            break;
        }
        if (w->drained && !w->pass_pending) {
            /* Wait for the others without spinning. */
            struct timeval tv = {0, 20000};
            evtimer_add(w->grace_ev, &tv);
        }
    }
    return rc;
}

void worker_free(hub_worker *w)
{
    if (!w->hub)
        return;
    while (w->conns)
        conn_free(w->conns); /* while the broker still exists */
    if (w->inbox.efd >= 0 && w->hub) {
        relay_env *env = relay_take(&w->inbox);
        while (env) {
            relay_env *next = env->next;
            if (env->kind == RELAY_CONN) {
                hub_conn *c = env->conn;
                c->w = w;
                c->broker_open = false;
                conn_release(w->hub, c);
            } else if (env->kind == RELAY_CONTROL) {
                free(env->arg);
            }
            relay_env_free(env);
            env = next;
        }
    }
    for (unsigned k = 0; k < STORE_SPLIT_MAX; k++)
        relay_env_free(w->outbox[k]);
    relay_env_free(w->ingest_out);
    if (w->broker) {
        (void)broker_commit(w->broker);
        broker_free(w->broker); /* frees every broker conn */
        w->broker = NULL;
    }
    if (w->listener)
        evconnlistener_free(w->listener);
    if (w->test_listener)
        evconnlistener_free(w->test_listener);
    struct event *evs[] = {w->grace_ev, w->tick_ev, w->poll_ev, w->inbox_ev};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    if (w->base)
        event_base_free(w->base);
    if (w->ssl_ctx)
        SSL_CTX_free(w->ssl_ctx);
    if (w->store)
        store_sqlite_close(w->store);
    policy_cache_free(&w->policies);
    if (w->reg)
        registry_close(w->reg);
    relay_pending_free(&w->pending);
    for (size_t i = 0; i < w->nowed; i++)
        relay_env_free(w->owed[i]);
    free(w->owed);
    relay_inbox_free(&w->inbox);
}
