/*
 * webhook_receiver.c — the test receiver (see webhook_receiver.h).
 */
#include "webhook_receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define BODY_MAX 65536

typedef struct upload {
    char *data;
    size_t len;
    bool too_big;
} upload;

void receiver_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

uint16_t receiver_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool receiver_check(const uint8_t *key, size_t key_len, const char *ts, const char *sig,
                    const char *body, size_t len, int64_t now)
{
    if (!ts || !sig || strncmp(sig, "sha256=", 7) != 0 || strlen(sig) != 7 + 64)
        return false;
    int64_t t = 0;
    size_t i = 0;
    for (; ts[i] >= '0' && ts[i] <= '9' && i < 18; i++)
        t = t * 10 + (ts[i] - '0');
    if (i == 0 || ts[i] != '\0')
        return false;
    if (t < now - 300 || t > now + 300)
        return false; /* stale or from the future: a replay */
    uint8_t want[32], got[32];
    for (size_t k = 0; k < 32; k++) {
        int hi = hexval(sig[7 + 2 * k]), lo = hexval(sig[8 + 2 * k]);
        if (hi < 0 || lo < 0)
            return false;
        got[k] = (uint8_t)(hi << 4 | lo);
    }
    size_t tl = strlen(ts);
    uint8_t *msg = malloc(tl + 1 + len);
    if (!msg)
        return false;
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    unsigned out_len = 0;
    bool ok = HMAC(EVP_sha256(), key, (int)key_len, msg, tl + 1 + len, want, &out_len) != NULL &&
              out_len == 32 && CRYPTO_memcmp(want, got, 32) == 0;
    free(msg);
    return ok;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    receiver *r = cls;
    (void)url, (void)version;
    upload *u = *con_cls;
    if (!u) {
        u = calloc(1, sizeof *u);
        *con_cls = u;
        return u ? MHD_YES : MHD_NO;
    }
    if (*size > 0) {
        if (u->len + *size > BODY_MAX) {
            u->too_big = true;
        } else {
            char *n = realloc(u->data, u->len + *size + 1);
            if (!n)
                return MHD_NO;
            u->data = n;
            memcpy(u->data + u->len, data, *size);
            u->len += *size;
            u->data[u->len] = '\0';
        }
        *size = 0;
        return MHD_YES;
    }
    if (r->delay_ms)
        receiver_sleep_ms(r->delay_ms);
    const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Moat-Timestamp");
    const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Moat-Signature");
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Moat-Delivery");
    const char *ev = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Moat-Event");
    bool ok = strcmp(method, "POST") == 0 && !u->too_big && u->data &&
              receiver_check(r->key, r->key_len, ts, sig, u->data, u->len, (int64_t)time(NULL));
    unsigned status = 401;
    pthread_mutex_lock(&r->lock);
    if (r->requests < RECEIVER_KEEP)
        snprintf(r->request_ids[r->requests], sizeof r->request_ids[0], "%s", id ? id : "");
    r->requests++;
    if (!ok) {
        r->rejected++;
    } else if (r->fail_next > 0) {
        r->fail_next--;
        status = 500;
    } else {
        size_t k = r->verified++;
        if (k < RECEIVER_KEEP) {
            snprintf(r->ids[k], sizeof r->ids[k], "%s", id ? id : "");
            snprintf(r->events[k], sizeof r->events[k], "%s", ev ? ev : "");
            snprintf(r->bodies[k], sizeof r->bodies[k], "%s", u->data);
        }
        status = 200;
    }
    pthread_mutex_unlock(&r->lock);
    return answer(c, status);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    upload *u = *con_cls;
    if (u) {
        free(u->data);
        free(u);
    }
    *con_cls = NULL;
}

int receiver_start(receiver *r, uint16_t port, const uint8_t *key, size_t key_len)
{
    memset(r, 0, sizeof *r);
    if (key_len > sizeof r->key)
        return -1;
    memcpy(r->key, key, key_len);
    r->key_len = key_len;
    pthread_mutex_init(&r->lock, NULL);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, port, NULL, NULL, on_request, r,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_done, r, MHD_OPTION_END);
    if (!r->daemon)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(r->daemon, MHD_DAEMON_INFO_BIND_PORT);
    r->port = info ? info->port : port;
    return 0;
}

void receiver_stop(receiver *r)
{
    if (r->daemon)
        MHD_stop_daemon(r->daemon);
    r->daemon = NULL;
    pthread_mutex_destroy(&r->lock);
}

bool receiver_wait(receiver *r, size_t n, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        pthread_mutex_lock(&r->lock);
        size_t v = r->verified;
        pthread_mutex_unlock(&r->lock);
        if (v >= n)
            return true;
        receiver_sleep_ms(10);
    }
    return false;
}
