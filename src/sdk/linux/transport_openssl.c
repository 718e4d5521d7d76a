/*
 * transport_openssl.c — the Linux port's moat_transport: non-blocking TCP
 * and OpenSSL 3, TLS 1.3 only, mutual authentication.
 *
 * What makes it safe by default, and why each choice:
 *   - only the hub CA given is trusted (SSL_CTX_load_verify_file and nothing
 *     else: the system store is never loaded), so a certificate from any
 *     public CA for the same name is still refused;
 *   - the hub's certificate is checked against the endpoint: its DNS name
 *     (X509_VERIFY_PARAM_set1_host, plus SNI) or its IP address
 *     (X509_VERIFY_PARAM_set1_ip_asc) — a valid certificate for another
 *     name is refused;
 *   - TLS 1.3 only, and every record padded to a multiple of
 *     `record_padding` bytes, so the size of a record says less about what
 *     it carries (seed 000);
 *   - the private key comes through moat_linux_key, and a key file that
 *     group or others may read is refused (moat_linux_key_file).
 *
 * connect() is a small state machine advanced by each call: resolve (the one
 * blocking step: getaddrinfo, instant for IP literals), TCP connect in
 * progress, TLS handshake, up. Each address the name resolves to is tried
 * before the attempt fails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <moat/linux.h>

#include "errtext.h"

#define TLS_DEFAULT_PADDING      256u
#define TLS_DEFAULT_HANDSHAKE_MS 15000u
#define TLS_HOST_MAX             255u

typedef enum { T_IDLE, T_TCP, T_TLS, T_UP } tls_state;

struct moat_linux_tls {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    tls_state st;
    bool want_write;
    struct addrinfo *ai_list, *ai_next;
    uint64_t started_ms;
    uint32_t handshake_ms;
    char host[TLS_HOST_MAX + 1];
    uint16_t port;
    char err[384];
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static void
set_err(moat_linux_tls *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof(t->err), fmt, ap);
    va_end(ap);
}

/* ---- keys ----------------------------------------------------------------- */

static moat_status file_key_load(void *ctx, void **out, char *err, size_t errlen)
{
    const moat_linux_key *key = ctx;
    moat_status rc = MOAT_ERR_IO;
    FILE *f = NULL;
    int fd = open(key->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        errtext_put(err, errlen, "key %s: %s", key->path, strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        errtext_put(err, errlen, "key %s: not a regular file", key->path);
        goto out;
    }
    /* Checked on the open descriptor, so the file cannot be swapped between
     * the check and the read. */
    if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        errtext_put(err, errlen, "key %s: mode %04o lets group or others read it; chmod 600",
                    key->path, (unsigned)(sb.st_mode & 07777));
        rc = MOAT_ERR_AUTH;
        goto out;
    }
    f = fdopen(fd, "r");
    if (!f) {
        errtext_put(err, errlen, "key %s: %s", key->path, strerror(errno));
        goto out;
    }
    fd = -1;
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (!pk) {
        char why[160];
        errtext_put(err, errlen, "key %s: not a PEM private key (%s)", key->path,
                    errtext_ssl(why, sizeof(why)));
        goto out;
    }
    *out = pk;
    rc = MOAT_OK;
out:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    return rc;
}

moat_status moat_linux_key_file(moat_linux_key *key, const char *path)
{
    if (!key || !path || strlen(path) >= sizeof(key->path))
        return MOAT_ERR_ARG;
    memset(key, 0, sizeof(*key));
    memcpy(key->path, path, strlen(path) + 1);
    key->ctx = key;
    key->load = file_key_load;
    return MOAT_OK;
}

/* ---- setup ---------------------------------------------------------------- */

moat_status moat_linux_tls_new(moat_linux_tls **out, const moat_linux_tls_config *cfg, char *err,
                               size_t errlen)
{
    moat_status rc = MOAT_ERR_IO;
    char why[160];
    EVP_PKEY *pk = NULL;
    moat_linux_tls *t = NULL;
    *out = NULL;
    if (!cfg || !cfg->ca_file || !cfg->cert_file || !cfg->key || !cfg->key->load) {
        errtext_put(err, errlen, "TLS needs a CA file, a certificate and a key");
        return MOAT_ERR_ARG;
    }
    t = calloc(1, sizeof(*t));
    if (!t) {
        errtext_put(err, errlen, "out of memory");
        return MOAT_ERR_IO;
    }
    t->fd = -1;
    t->handshake_ms =
        cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : TLS_DEFAULT_HANDSHAKE_MS;
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (!t->ctx || !SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION)) {
        errtext_put(err, errlen, "TLS setup: %s", errtext_ssl(why, sizeof(why)));
        goto out;
    }
    /* The hub CA and nothing else (no SSL_CTX_set_default_verify_paths). */
    if (SSL_CTX_load_verify_file(t->ctx, cfg->ca_file) != 1) {
        errtext_put(err, errlen, "CA %s: %s", cfg->ca_file, errtext_ssl(why, sizeof(why)));
        goto out;
    }
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->cert_file) != 1) {
        errtext_put(err, errlen, "certificate %s: %s", cfg->cert_file,
                    errtext_ssl(why, sizeof(why)));
        goto out;
    }
    void *vpk = NULL;
    rc = cfg->key->load(cfg->key->ctx, &vpk, err, errlen);
    pk = vpk;
    if (rc != MOAT_OK) {
        rc = MOAT_ERR_IO;
        goto out;
    }
    rc = MOAT_ERR_IO;
    if (SSL_CTX_use_PrivateKey(t->ctx, pk) != 1 || SSL_CTX_check_private_key(t->ctx) != 1) {
        errtext_put(err, errlen, "key does not match certificate %s: %s", cfg->cert_file,
                    errtext_ssl(why, sizeof(why)));
        goto out;
    }
    size_t pad = cfg->record_padding ? cfg->record_padding : TLS_DEFAULT_PADDING;
    if (pad > 1 && SSL_CTX_set_block_padding(t->ctx, pad) != 1) {
        errtext_put(err, errlen, "record padding %zu refused: %s", pad,
                    errtext_ssl(why, sizeof(why)));
        goto out;
    }
    /* Every connection runs the full handshake (no tickets kept), as the hub
     * requires, so a revoked device is refused at once. */
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    *out = t;
    t = NULL;
    rc = MOAT_OK;
out:
    EVP_PKEY_free(pk);
    if (t) {
        SSL_CTX_free(t->ctx);
        free(t);
    }
    return rc;
}

/* ---- connection ----------------------------------------------------------- */

static void drop(moat_linux_tls *t)
{
    if (t->ssl) {
        SSL_free(t->ssl);
        t->ssl = NULL;
    }
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
    t->want_write = false;
}

static void tls_close(void *ctx)
{
    moat_linux_tls *t = ctx;
    if (t->ssl && t->st == T_UP) {
        /* close_notify, best effort: the socket is non-blocking. */
        (void)SSL_shutdown(t->ssl);
    }
    ERR_clear_error();
    drop(t);
    if (t->ai_list) {
        freeaddrinfo(t->ai_list);
        t->ai_list = t->ai_next = NULL;
    }
    t->st = T_IDLE;
}

static moat_status fail(moat_linux_tls *t, moat_status s)
{
    tls_close(t);
    return s;
}

/* Open a socket to the next resolved address; T_TCP on success. */
static moat_status tcp_next(moat_linux_tls *t)
{
    while (t->ai_next) {
        struct addrinfo *ai = t->ai_next;
        t->ai_next = ai->ai_next;
        drop(t);
        t->fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (t->fd < 0) {
            set_err(t, "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        (void)setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(t->fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            t->st = T_TCP;
            return MOAT_AGAIN;
        }
        set_err(t, "connect to %s:%u: %s", t->host, (unsigned)t->port, strerror(errno));
    }
    return fail(t, MOAT_ERR_IO);
}

static moat_status start_tls(moat_linux_tls *t)
{
    char why[160];
    t->ssl = SSL_new(t->ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, t->fd) != 1) {
        set_err(t, "SSL_new: %s", errtext_ssl(why, sizeof(why)));
        return fail(t, MOAT_ERR_IO);
    }
    SSL_set_connect_state(t->ssl);
    X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, t->host, addr) == 1 || inet_pton(AF_INET6, t->host, addr) == 1;
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, t->host)
                   : (SSL_set1_host(t->ssl, t->host) == 1 &&
                      SSL_set_tlsext_host_name(t->ssl, t->host) == 1);
    if (ok != 1) {
        set_err(t, "cannot check the hub's name %s", t->host);
        return fail(t, MOAT_ERR_ARG);
    }
    t->st = T_TLS;
    return MOAT_AGAIN;
}

static moat_status handshake(moat_linux_tls *t)
{
    char why[160];
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->st = T_UP;
        t->want_write = false;
        t->err[0] = '\0';
        return MOAT_OK;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        t->want_write = e == SSL_ERROR_WANT_WRITE;
        return MOAT_AGAIN;
    }
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK) {
        set_err(t, "hub %s not trusted: %s", t->host, X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return fail(t, MOAT_ERR_AUTH);
    }
    set_err(t, "TLS handshake with %s: %s", t->host, errtext_ssl(why, sizeof(why)));
    return fail(t, MOAT_ERR_IO);
}

static moat_status tls_connect(void *ctx, const char *host, uint16_t port)
{
    moat_linux_tls *t = ctx;
    if (t->st == T_UP)
        return MOAT_OK;
    if (t->st == T_IDLE) {
        size_t hl = host ? strlen(host) : 0;
        if (hl == 0 || hl > TLS_HOST_MAX) {
            set_err(t, "bad hub host name");
            return MOAT_ERR_ARG;
        }
        memcpy(t->host, host, hl + 1);
        t->port = port;
        t->started_ms = mono_ms();
        char service[8];
        snprintf(service, sizeof(service), "%u", (unsigned)port);
        struct addrinfo hints = {
            .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        int g = getaddrinfo(host, service, &hints, &t->ai_list);
        if (g != 0) {
            set_err(t, "resolve %s: %s", host, gai_strerror(g));
            t->ai_list = NULL;
            return fail(t, MOAT_ERR_IO);
        }
        t->ai_next = t->ai_list;
        moat_status s = tcp_next(t);
        if (s != MOAT_AGAIN)
            return s;
    }
    if (mono_ms() - t->started_ms > t->handshake_ms) {
        set_err(t, "connect to %s:%u timed out", t->host, (unsigned)t->port);
        return fail(t, MOAT_ERR_TIMEOUT);
    }
    if (t->st == T_TCP) {
        struct pollfd pfd = {.fd = t->fd, .events = POLLOUT};
        if (poll(&pfd, 1, 0) <= 0)
            return MOAT_AGAIN;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            soerr = errno;
        if (soerr != 0) {
            set_err(t, "connect to %s:%u: %s", t->host, (unsigned)t->port, strerror(soerr));
            return tcp_next(t);
        }
        moat_status s = start_tls(t);
        if (s != MOAT_AGAIN)
            return s;
    }
    return handshake(t);
}

static long tls_send(void *ctx, const uint8_t *buf, size_t len)
{
    moat_linux_tls *t = ctx;
    char why[160];
    if (t->st != T_UP)
        return MOAT_ERR_STATE;
    if (len == 0)
        return 0;
    size_t put = 0;
    ERR_clear_error();
    int r = SSL_write_ex(t->ssl, buf, len, &put);
    if (r == 1) {
        t->want_write = false;
        return (long)put;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        t->want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return MOAT_ERR_CLOSED;
    set_err(t, "write: %s",
            e == SSL_ERROR_SYSCALL && errno ? strerror(errno) : errtext_ssl(why, sizeof(why)));
    ERR_clear_error();
    return MOAT_ERR_IO;
}

static long tls_recv(void *ctx, uint8_t *buf, size_t cap)
{
    moat_linux_tls *t = ctx;
    char why[160];
    if (t->st != T_UP)
        return MOAT_ERR_STATE;
    if (cap == 0)
        return 0;
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_read_ex(t->ssl, buf, cap, &got);
    if (r == 1)
        return (long)got;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        t->want_write = true;
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        set_err(t, "the hub closed the connection");
        return MOAT_ERR_CLOSED;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        /* EOF without close_notify, or a reset: the connection is gone. */
        set_err(t, "connection lost%s%s", errno ? ": " : "", errno ? strerror(errno) : "");
        return MOAT_ERR_CLOSED;
    }
    set_err(t, "read: %s", errtext_ssl(why, sizeof(why)));
    return MOAT_ERR_IO;
}

void moat_linux_tls_free(moat_linux_tls *tls)
{
    if (!tls)
        return;
    tls_close(tls);
    SSL_CTX_free(tls->ctx);
    free(tls);
}

void moat_linux_tls_transport(moat_linux_tls *tls, moat_transport *out)
{
    out->ctx = tls;
    out->connect = tls_connect;
    out->send = tls_send;
    out->recv = tls_recv;
    out->close = tls_close;
}

int moat_linux_tls_fd(const moat_linux_tls *tls)
{
    return tls ? tls->fd : -1;
}

bool moat_linux_tls_wants_write(const moat_linux_tls *tls)
{
    return tls && (tls->st == T_TCP || tls->want_write);
}

bool moat_linux_tls_pending(const moat_linux_tls *tls)
{
    return tls && tls->ssl && tls->st == T_UP && SSL_pending(tls->ssl) > 0;
}

void moat_linux_tls_wait(const moat_linux_tls *tls, uint32_t timeout_ms)
{
    if (moat_linux_tls_pending(tls))
        return;
    struct pollfd pfd = {.fd = moat_linux_tls_fd(tls), .events = POLLIN};
    if (moat_linux_tls_wants_write(tls))
        pfd.events |= POLLOUT;
    if (pfd.fd < 0) {
        struct timespec ts = {.tv_sec = timeout_ms / 1000u,
                              .tv_nsec = (long)(timeout_ms % 1000u) * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
    (void)poll(&pfd, 1, timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms);
}

const char *moat_linux_tls_last_error(const moat_linux_tls *tls)
{
    return tls ? tls->err : "";
}
