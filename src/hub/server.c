/*
 * server.c — sockets, TLS and the loop around the broker.
 *
 * One loop pass: libevent runs the I/O callbacks (handshakes, reads fed to
 * the broker), then the low-priority end-of-pass event commits the store once
 * (group commit), writes each connection's whole output with one SSL_write
 * (many MQTT packets per TLS record and syscall), and closes the connections
 * the broker asked to close. Nothing reaches a socket before its effects are
 * durable, and no connection is freed inside a callback that may still use it.
 *
 * Before a connection reaches the broker it must: get past the per-address
 * connection and handshake-rate limits, finish a TLS handshake within the
 * handshake timeout, and present a certificate that chains to the hub CA and
 * whose exact fingerprint the registry knows as active (checked in the verify
 * callback, so a refused certificate fails the handshake with a TLS alert).
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "hmap.h"
#include "log.h"
#include "policy.h"
#include "registry.h"
#include "store_sqlite.h"
#include "tls.h"

#define READ_CHUNK 16384u
#define READS_PER_PASS 8u   /* fairness: one chatty client cannot starve others */
#define WRITE_CHUNK (64u * 1024u)

typedef struct ip_entry {
    char key[INET6_ADDRSTRLEN];
    size_t conns;
    double tokens;          /* handshakes allowed now */
    uint64_t refilled_at;
} ip_entry;

typedef struct hub_conn {
    struct hub_server *srv;
    int fd;
    SSL *ssl;               /* NULL on the test listener */
    struct event *ev;
    struct event *deadline; /* handshake timeout, then the lingering close */
    struct event *expiry;   /* the certificate's end of validity */
    int64_t not_after;      /* seconds since the epoch */
    broker_conn *bc;
    broker_principal who;
    uint8_t fp[32];
    bool identified;        /* the verify callback found an active identity */
    bool handshaking;
    bool want_write;
    bool close_queued;
    bool lingering;         /* handshake failed: alert sent, draining until close */
    ip_entry *ip;
    char peer[INET6_ADDRSTRLEN + 8];
    struct hub_conn *next_dead;
    struct hub_conn *prev, *next; /* every connection of the server */
} hub_conn;

struct hub_server {
    hub_config cfg;
    hub_server_opts opts;
    struct event_base *base;
    struct evconnlistener *listener;
    struct evconnlistener *test_listener;
    struct event *tick_ev;       /* broker timers */
    struct event *poll_ev;       /* registry changes */
    struct event *sig_term, *sig_int, *sig_hup;
    SSL_CTX *ssl_ctx;
    registry *reg;
    broker_store *store;
    broker *broker;
    hmap ips;                    /* address -> ip_entry */
    size_t nconns;
    int64_t registry_version;
    hub_conn *dead;              /* closes queued by the server itself */
    hub_conn *conns;             /* every connection, for the final clean-up */
    bool pass_pending;           /* run the next loop pass without blocking */
    struct event *grace_ev;      /* wakes the loop when the stop grace ends */
    bool stopping;
    uint16_t port;
};

static int conn_ex_index = -1;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Ask for another end-of-pass round without waiting for an event. */
static void schedule_pass(hub_server *srv)
{
    srv->pass_pending = true;
}

/* ---- policies and identities from the registry --------------------------- */

typedef struct doc_list {
    policy_doc *docs[64];
    size_t n;
    bool failed;
    const char *principal;
} doc_list;

static int collect_doc(void *ctx, const char *name, const char *document, size_t len)
{
    doc_list *l = ctx;
    char err[256];
    if (l->n == sizeof(l->docs) / sizeof(l->docs[0])) {
        l->failed = true;
        return 1;
    }
    policy_doc *doc;
    if (policy_parse(document, len, &doc, err, sizeof(err)) != POLICY_OK) {
        /* Fail closed: a broken document makes the whole set deny-all. */
        log_msg(LOG_ERROR, l->principal, "policy '%s' does not parse (%s): denying all", name,
                err);
        l->failed = true;
        return 1;
    }
    l->docs[l->n++] = doc;
    return 0;
}

static policy_set *policies_for(void *ctx, const broker_principal *who)
{
    hub_server *srv = ctx;
    doc_list l = {.principal = who->id};
    policy_set *set = NULL;
    if (registry_policies_for(srv->reg, who->id, collect_doc, &l) != REGISTRY_OK)
        l.failed = true;
    if (!l.failed) {
        codec_bytes id = {(const uint8_t *)who->id, strlen(who->id)};
        policy_vars vars = {.device = who->kind == BROKER_DEVICE ? id : (codec_bytes){0},
                            .service = who->kind == BROKER_SERVICE ? id : (codec_bytes){0}};
        if (policy_set_build((const policy_doc *const *)l.docs, l.n, &vars, &set) != POLICY_OK)
            set = NULL;
    }
    for (size_t i = 0; i < l.n; i++)
        policy_doc_free(l.docs[i]);
    return set; /* NULL: the broker denies everything */
}

static bool identity_active(hub_server *srv, const uint8_t fp[32], registry_identity *who)
{
    if (registry_lookup_cert(srv->reg, fp, who) != REGISTRY_OK)
        return false;
    return registry_identity_active(who, (int64_t)time(NULL));
}

static bool service_active(hub_server *srv, const char *name)
{
    registry_principal p;
    return registry_principal_get(srv->reg, name, REGISTRY_SERVICE, &p) == REGISTRY_OK &&
           p.status == REGISTRY_ACTIVE;
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    hub_conn *c = ssl ? SSL_get_ex_data(ssl, conn_ex_index) : NULL;
    if (!c)
        return 0;
    if (!ok) {
        int e = X509_STORE_CTX_get_error(store);
        log_msg(LOG_WARN, NULL, "%s: client certificate refused: %s", c->peer,
                X509_verify_cert_error_string(e));
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(store) != 0)
        return 1;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    unsigned int n = 0;
    if (!cert || !X509_digest(cert, EVP_sha256(), c->fp, &n) || n != 32)
        return 0;
    registry_identity who;
    if (registry_lookup_cert(c->srv->reg, c->fp, &who) != REGISTRY_OK) {
        log_msg(LOG_WARN, NULL, "%s: certificate not registered with this hub: refused",
                c->peer);
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    if (!registry_identity_active(&who, (int64_t)time(NULL))) {
        log_msg(LOG_WARN, who.id, "%s: identity %s (certificate %s): refused", c->peer,
                registry_principal_status_name(who.status),
                who.cert_revoked ? "revoked" : "valid");
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

static void queue_close(hub_conn *c)
{
    if (c->close_queued)
        return;
    c->close_queued = true;
    event_del(c->ev); /* a closed peer's socket stays readable: stop watching it */
    c->next_dead = c->srv->dead;
    c->srv->dead = c;
    schedule_pass(c->srv);
}

static void conn_free(hub_conn *c)
{
    hub_server *srv = c->srv;
    if (c->bc)
        broker_conn_gone(srv->broker, c->bc, now_ms());
    if (c->ssl) {
        (void)SSL_shutdown(c->ssl); /* best effort: a close_notify if it fits */
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->ev)
        event_free(c->ev);
    if (c->deadline)
        event_free(c->deadline);
    if (c->expiry)
        event_free(c->expiry);
    if (c->fd >= 0)
        close(c->fd);
    /* The address entry stays until its handshake bucket has refilled (see
     * forget_addresses): dropping it here would hand a client that
     * reconnects quickly a fresh bucket every time. */
    if (c->ip)
        c->ip->conns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    free(c);
}

static void set_want_write(hub_conn *c, bool want)
{
    if (c->want_write == want)
        return;
    c->want_write = want;
    event_del(c->ev);
    event_assign(c->ev, c->srv->base, c->fd, EV_READ | EV_PERSIST | (want ? EV_WRITE : 0), on_io,
                 c);
    event_add(c->ev, NULL);
}

/* Move bytes: >0 moved, 0 would block, -1 connection over. */
static ssize_t conn_read(hub_conn *c, uint8_t *data, size_t len)
{
    if (!c->ssl) {
        ssize_t n = recv(c->fd, data, len, 0);
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
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
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
    if (!c->bc || c->close_queued)
        return;
    buf *out = broker_output(c->bc);
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
            broker_output_drained(c->srv->broker, c->bc, now_ms());
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
        broker_input(c->srv->broker, c->bc, data, (size_t)n, now_ms());
    }
    /* More may be buffered inside OpenSSL (decrypted, or records read ahead
     * and not yet decrypted): come back next pass. */
    if (c->ssl && SSL_has_pending(c->ssl))
        event_active(c->ev, EV_READ, 0);
}

static void on_cert_expired(evutil_socket_t fd, short what, void *arg)
{
    hub_conn *c = arg;
    (void)fd, (void)what;
    if (c->bc && !c->close_queued)
        broker_close(c->srv->broker, c->bc, 0x87, "client certificate expired: connection closed");
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
    (void)shutdown(c->fd, SHUT_WR);
    set_want_write(c, false);
    if (!c->deadline)
        c->deadline = evtimer_new(c->srv->base, on_handshake_timeout, c);
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
        ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break; /* EOF or error: the client has gone */
    }
    queue_close(c);
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
    c->bc = broker_conn_open(c->srv->broker, &c->who, c, now_ms());
    if (!c->bc) {
        queue_close(c);
        return;
    }
    /* A connection does not outlive its certificate. */
    int64_t left = c->not_after - (int64_t)time(NULL);
    c->expiry = evtimer_new(c->srv->base, on_cert_expired, c);
    if (c->expiry) {
        struct timeval tv = {(time_t)(left > 0 ? left : 0), 0};
        evtimer_add(c->expiry, &tv);
    }
    log_msg(LOG_DEBUG, c->who.id, "%s: TLS %s established", c->peer, SSL_get_version(c->ssl));
}

static void do_handshake(hub_conn *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        handshake_done(c);
        if (!c->close_queued)
            read_conn(c);
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
    log_msg(LOG_WARN, c->identified ? c->who.id : NULL, "%s: TLS handshake failed: %s", c->peer,
            tls_error_text(why, sizeof(why)));
    linger_close(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    hub_conn *c = arg;
    (void)fd;
    if (c->close_queued)
        return;
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
    schedule_pass(c->srv);
}

static void on_handshake_timeout(evutil_socket_t fd, short what, void *arg)
{
    hub_conn *c = arg;
    (void)fd, (void)what;
    if (!c->lingering)
        log_msg(LOG_WARN, NULL, "%s: no TLS handshake within %u s: dropped", c->peer,
                c->srv->cfg.handshake_timeout_s);
    queue_close(c);
}

/* Per-address limits: connections held, and handshakes per second (a token
 * bucket with one second of burst). */
static ip_entry *admit_address(hub_server *srv, const char *addr)
{
    ip_entry *ip = hmap_get(&srv->ips, (const uint8_t *)addr, strlen(addr));
    uint64_t now = now_ms();
    double rate = srv->cfg.handshakes_per_second_per_ip;
    if (!ip) {
        ip = calloc(1, sizeof(*ip));
        if (!ip)
            return NULL;
        snprintf(ip->key, sizeof(ip->key), "%s", addr);
        ip->tokens = rate;
        ip->refilled_at = now;
        if (!hmap_put(&srv->ips, (const uint8_t *)ip->key, strlen(ip->key), ip)) {
            free(ip);
            return NULL;
        }
    } else {
        ip->tokens += (double)(now - ip->refilled_at) * rate / 1000.0;
        if (ip->tokens > rate)
            ip->tokens = rate;
        ip->refilled_at = now;
    }
    if (ip->conns >= srv->cfg.max_connections_per_ip) {
        log_msg(LOG_WARN, NULL, "%s: %zu connections from this address: refused", addr,
                ip->conns);
        return NULL;
    }
    if (ip->tokens < 1.0) {
        log_msg(LOG_WARN, NULL, "%s: more than %u handshakes per second: refused", addr,
                srv->cfg.handshakes_per_second_per_ip);
        return NULL;
    }
    ip->tokens -= 1.0;
    return ip;
}

/* Forget addresses with no connection whose handshake bucket is full again,
 * so the table does not grow with every address ever seen. */
static void forget_addresses(hub_server *srv)
{
    uint64_t now = now_ms();
    double rate = srv->cfg.handshakes_per_second_per_ip;
    ip_entry *idle[256];
    size_t n = 0, bucket = 0;
    hmap_entry *it = NULL, *e;
    while (n < 256 && (e = hmap_next(&srv->ips, &bucket, &it))) {
        ip_entry *ip = e->value;
        double tokens = ip->tokens + (double)(now - ip->refilled_at) * rate / 1000.0;
        if (ip->conns == 0 && tokens >= rate)
            idle[n++] = ip;
    }
    for (size_t i = 0; i < n; i++) {
        hmap_del(&srv->ips, (const uint8_t *)idle[i]->key, strlen(idle[i]->key));
        free(idle[i]);
    }
}

static void accept_common(hub_server *srv, evutil_socket_t fd, struct sockaddr *sa, bool tls)
{
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
    if (srv->stopping || srv->nconns >= srv->cfg.max_connections) {
        if (!srv->stopping)
            log_msg(LOG_WARN, NULL, "%s: %zu connections is the limit: refused", addr,
                    srv->nconns);
        close(fd);
        return;
    }
    ip_entry *ip = admit_address(srv, addr);
    if (!ip) {
        close(fd);
        return;
    }
    hub_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->srv = srv;
    c->fd = fd;
    c->ip = ip;
    ip->conns++;
    srv->nconns++;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    snprintf(c->peer, sizeof(c->peer), "%s:%u", addr, port);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    evutil_make_socket_nonblocking(fd);
    c->ev = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_io, c);
    if (!c->ev) {
        conn_free(c);
        return;
    }
    if (tls) {
        c->ssl = SSL_new(srv->ssl_ctx);
        c->deadline = evtimer_new(srv->base, on_handshake_timeout, c);
        if (!c->ssl || !c->deadline || !SSL_set_fd(c->ssl, fd) ||
            !SSL_set_ex_data(c->ssl, conn_ex_index, c)) {
            conn_free(c);
            return;
        }
        SSL_set_accept_state(c->ssl);
        c->handshaking = true;
        struct timeval tv = {(time_t)srv->cfg.handshake_timeout_s, 0};
        evtimer_add(c->deadline, &tv);
    } else {
        /* The test listener: the connection is the named service. */
        if (!service_active(srv, srv->opts.test_service)) {
            log_msg(LOG_WARN, NULL, "%s: test service '%s' is not active: refused", c->peer,
                    srv->opts.test_service);
            conn_free(c);
            return;
        }
        c->who.kind = BROKER_SERVICE;
        snprintf(c->who.id, sizeof(c->who.id), "%s", srv->opts.test_service);
        c->identified = true;
        c->bc = broker_conn_open(srv->broker, &c->who, c, now_ms());
        if (!c->bc) {
            conn_free(c);
            return;
        }
    }
    event_add(c->ev, NULL);
    schedule_pass(srv);
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

/* ---- end of pass, timers, registry ----------------------------------------- */

static void close_dead(hub_server *srv)
{
    while (srv->dead) {
        hub_conn *c = srv->dead;
        srv->dead = c->next_dead;
        conn_free(c);
    }
}

static void arm_tick(hub_server *srv)
{
    uint64_t next = broker_tick(srv->broker, now_ms());
    if (next == UINT64_MAX)
        return;
    uint64_t now = now_ms();
    uint64_t wait = next > now ? next - now : 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(srv->tick_ev, &tv);
}

/* The end of a loop pass: group commit, then output, then closes. */
static void pass_end(hub_server *srv)
{
    broker_conn **list;
    /* Closing connections can publish wills, which makes more output: go
     * round until the broker is quiet (bounded; the rest waits a pass). */
    unsigned round;
    for (round = 0; round < 8; round++) {
        (void)broker_commit(srv->broker);
        size_t n = broker_dirty(srv->broker, &list);
        for (size_t i = 0; i < n; i++)
            flush_conn(broker_conn_io(list[i]));
        size_t m = broker_closing(srv->broker, &list);
        for (size_t i = 0; i < m; i++)
            queue_close(broker_conn_io(list[i]));
        bool had_dead = srv->dead != NULL;
        close_dead(srv);
        if (n == 0 && m == 0 && !had_dead)
            break;
    }
    if (round == 8)
        schedule_pass(srv);
    arm_tick(srv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    /* Nothing to do here: the broker's timers run in pass_end's arm_tick. */
    (void)fd, (void)what, (void)arg;
}

static bool still_active(void *ctx, const broker_principal *who, void *io)
{
    hub_server *srv = ctx;
    hub_conn *c = io;
    if (!c || !c->ssl)
        return service_active(srv, who->id);
    registry_identity id;
    return identity_active(srv, c->fp, &id) && strcmp(id.id, who->id) == 0;
}

static void recheck_registry(hub_server *srv, bool force)
{
    int64_t v;
    if (registry_data_version(srv->reg, &v) != REGISTRY_OK) {
        log_msg(LOG_ERROR, NULL, "registry: %s", registry_errmsg(srv->reg));
        return;
    }
    if (!force && v == srv->registry_version)
        return;
    srv->registry_version = v;
    broker_reauthorize(srv->broker, still_active, srv, now_ms());
    schedule_pass(srv);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    recheck_registry(arg, false);
    forget_addresses(arg);
}

/* SIGHUP: read the configuration file again. Limits, the TLS certificate
 * and key (rotation) and the log format change in place; the listen address
 * needs a restart. A file that does not load changes nothing. */
static void reload_config(hub_server *srv)
{
    if (!srv->opts.config_path)
        return;
    hub_config fresh;
    hub_config_defaults(&fresh, srv->cfg.data_dir);
    char err[1024];
    if (!hub_config_load(&fresh, srv->opts.config_path, err, sizeof(err))) {
        log_msg(LOG_ERROR, NULL, "SIGHUP: configuration not reloaded: %s", err);
        return;
    }
    if (!srv->opts.listen_override && (strcmp(fresh.listen_host, srv->cfg.listen_host) != 0 ||
                                       fresh.listen_port != srv->cfg.listen_port))
        log_msg(LOG_WARN, NULL, "SIGHUP: [hub] listen changed: takes effect at restart");
    SSL_CTX *ctx = tls_server_ctx(&fresh, verify_cb, err, sizeof(err));
    if (!ctx) {
        log_msg(LOG_ERROR, NULL, "SIGHUP: TLS settings not reloaded (keeping the old): %s", err);
    } else {
        /* Live connections keep a reference to the context they were made
         * with; new ones use the new certificate and settings. */
        SSL_CTX_free(srv->ssl_ctx);
        srv->ssl_ctx = ctx;
        srv->cfg.tls_min_version = fresh.tls_min_version;
    }
    broker_set_limits(srv->broker, &fresh.limits);
    srv->cfg.limits = fresh.limits;
    srv->cfg.max_connections = fresh.max_connections;
    srv->cfg.max_connections_per_ip = fresh.max_connections_per_ip;
    srv->cfg.handshakes_per_second_per_ip = fresh.handshakes_per_second_per_ip;
    srv->cfg.handshake_timeout_s = fresh.handshake_timeout_s;
    srv->cfg.registry_poll_ms = fresh.registry_poll_ms;
    if (!srv->opts.log_format_override)
        log_set_json(fresh.log_json);
    struct timeval poll = {(time_t)(fresh.registry_poll_ms / 1000),
                           (suseconds_t)((fresh.registry_poll_ms % 1000) * 1000)};
    event_add(srv->poll_ev, &poll);
    log_msg(LOG_INFO, NULL, "SIGHUP: configuration reloaded from %s", srv->opts.config_path);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    hub_server *srv = arg;
    (void)what;
    if (sig == SIGHUP) {
        log_msg(LOG_INFO, NULL, "SIGHUP: re-reading the configuration and the registry");
        reload_config(srv);
        recheck_registry(srv, true);
        return;
    }
    if (srv->stopping)
        return;
    log_msg(LOG_INFO, NULL, "%s: stopping: closing %zu connections",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", srv->nconns);
    srv->stopping = true;
    if (srv->listener)
        evconnlistener_disable(srv->listener);
    if (srv->test_listener)
        evconnlistener_disable(srv->test_listener);
    broker_shutdown(srv->broker, now_ms());
    /* Connections still handshaking never reached the broker: close them. */
    for (hub_conn *c = srv->conns; c; c = c->next)
        if (!c->bc)
            queue_close(c);
    struct timeval grace = {5, 0};
    evtimer_add(srv->grace_ev, &grace);
}

/* ---- set-up ---------------------------------------------------------------- */

static void broker_log_cb(void *ctx, broker_event ev, const broker_principal *who,
                          const char *detail)
{
    (void)ctx;
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

static struct evconnlistener *listen_on(hub_server *srv, const char *host, uint16_t port,
                                        evconnlistener_cb cb, char *err, size_t errlen)
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
    struct evconnlistener *l =
        evconnlistener_new_bind(srv->base, cb, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                1024, (struct sockaddr *)&ss, (int)len);
    if (!l)
        snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(errno));
    else
        evconnlistener_set_error_cb(l, on_accept_error);
    return l;
}

hub_server *hub_server_new(const hub_config *cfg, const hub_server_opts *opts, char *err,
                           size_t errlen)
{
    hub_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
    if (opts)
        srv->opts = *opts;
    if (!hmap_init(&srv->ips)) {
        snprintf(err, errlen, "cannot initialise libsodium");
        goto fail;
    }
    if (conn_ex_index < 0)
        conn_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);

    char path[CONFIG_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/registry.db", cfg->data_dir);
    char why[512];
    if (registry_open(path, REGISTRY_OPEN_READONLY, &srv->reg, why, sizeof(why)) !=
        REGISTRY_OK) {
        snprintf(err, errlen, "registry %s: %s", path, why);
        goto fail;
    }
    if (registry_data_version(srv->reg, &srv->registry_version) != REGISTRY_OK) {
        snprintf(err, errlen, "registry %s: %s", path, registry_errmsg(srv->reg));
        goto fail;
    }
    if (srv->opts.test_port && !service_active(srv, srv->opts.test_service)) {
        snprintf(err, errlen, "--as-service %s: no such active service in the registry",
                 srv->opts.test_service);
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/hub.db", cfg->data_dir);
    if (!store_sqlite_open(path, &srv->store, why, sizeof(why))) {
        snprintf(err, errlen, "store %s: %s", path, why);
        goto fail;
    }
    srv->ssl_ctx = tls_server_ctx(cfg, verify_cb, err, errlen);
    if (!srv->ssl_ctx)
        goto fail;

    broker_config bc = {.limits = cfg->limits,
                        .store = srv->store,
                        .log = broker_log_cb,
                        .policies_for = policies_for,
                        .policies_ctx = srv};
    srv->broker = broker_new(&bc, now_ms());
    if (!srv->broker) {
        snprintf(err, errlen, "cannot load the broker's state from %s/hub.db", cfg->data_dir);
        goto fail;
    }

    srv->base = event_base_new();
    if (!srv->base) {
        snprintf(err, errlen, "libevent: cannot create the event loop");
        goto fail;
    }
    srv->tick_ev = evtimer_new(srv->base, on_tick, srv);
    srv->grace_ev = evtimer_new(srv->base, on_tick, srv);
    srv->poll_ev = event_new(srv->base, -1, EV_PERSIST, on_poll, srv);
    srv->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, on_signal, srv);
    srv->sig_hup = evsignal_new(srv->base, SIGHUP, on_signal, srv);
    if (!srv->grace_ev || !srv->tick_ev || !srv->poll_ev || !srv->sig_term || !srv->sig_int ||
        !srv->sig_hup) {
        snprintf(err, errlen, "libevent: out of memory");
        goto fail;
    }
    struct timeval poll = {(time_t)(cfg->registry_poll_ms / 1000),
                           (suseconds_t)((cfg->registry_poll_ms % 1000) * 1000)};
    event_add(srv->poll_ev, &poll);
    event_add(srv->sig_term, NULL);
    event_add(srv->sig_int, NULL);
    event_add(srv->sig_hup, NULL);

    srv->listener = listen_on(srv, cfg->listen_host, cfg->listen_port, on_accept, err, errlen);
    if (!srv->listener)
        goto fail;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&ss, &sl) == 0)
        srv->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                  : ((struct sockaddr_in6 *)&ss)->sin6_port);
    if (srv->opts.test_port) {
        srv->test_listener = listen_on(srv, "127.0.0.1", srv->opts.test_port, on_accept_test,
                                       err, errlen);
        if (!srv->test_listener)
            goto fail;
        log_msg(LOG_WARN, NULL,
                "INSECURE TEST LISTENER on 127.0.0.1:%u: plaintext, no client certificates; "
                "every connection acts as service '%s'. Never use this in production.",
                srv->opts.test_port, srv->opts.test_service);
    }
    return srv;
fail:
    hub_server_free(srv);
    return NULL;
}

uint16_t hub_server_port(const hub_server *srv)
{
    return srv->port;
}

int hub_server_run(hub_server *srv)
{
    log_msg(LOG_INFO, NULL, "listening on %s:%u (mutual TLS %s)", srv->cfg.listen_host,
            srv->port, srv->cfg.tls_min_version == 12 ? "1.2 and 1.3" : "1.3");
    /* The registry may have changed while the hub was down: judge the
     * subscriptions restored from hub.db by the policies in force now. */
    recheck_registry(srv, true);
    arm_tick(srv);
    uint64_t stop_by = 0;
    int rc = 0;
    /* One iteration = one pass: every ready callback runs (reads fed to the
     * broker), then pass_end commits and writes. Driving the loop here,
     * rather than with a low-priority event, means the end of the pass can
     * never be starved by busy sockets. */
    for (;;) {
        int flags = srv->pass_pending ? EVLOOP_NONBLOCK : EVLOOP_ONCE;
        srv->pass_pending = false;
        if (event_base_loop(srv->base, flags) < 0) {
            rc = 1;
            break;
        }
        pass_end(srv);
        if (srv->stopping) {
            uint64_t now = now_ms();
            if (!stop_by)
                stop_by = now + 5000;
            if (srv->nconns == 0 || now >= stop_by)
                break;
        }
    }
    while (srv->conns)
        conn_free(srv->conns);
    pass_end(srv);
    log_msg(LOG_INFO, NULL, "stopped");
    return rc;
}

static void free_ip(void *v)
{
    free(v);
}

void hub_server_free(hub_server *srv)
{
    if (!srv)
        return;
    while (srv->conns)
        conn_free(srv->conns); /* while the broker still exists */
    if (srv->broker) {
        (void)broker_commit(srv->broker);
        broker_free(srv->broker); /* frees every broker conn */
        srv->broker = NULL;
    }
    if (srv->listener)
        evconnlistener_free(srv->listener);
    if (srv->test_listener)
        evconnlistener_free(srv->test_listener);
    struct event *evs[] = {srv->grace_ev, srv->tick_ev, srv->poll_ev,
                           srv->sig_term, srv->sig_int, srv->sig_hup};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    while ((e = hmap_next(&srv->ips, &bucket, &it)))
        free_ip(e->value);
    hmap_free(&srv->ips);
    if (srv->base)
        event_base_free(srv->base);
    if (srv->ssl_ctx)
        SSL_CTX_free(srv->ssl_ctx);
    if (srv->store)
        store_sqlite_close(srv->store);
    if (srv->reg)
        registry_close(srv->reg);
    free(srv);
}
