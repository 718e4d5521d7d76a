/*
 * webhook_receiver.h — a real HTTP receiver for the webhook tests: a
 * libmicrohttpd server on 127.0.0.1 that checks each request the way a
 * production receiver must (docs/monitoring.md): the HMAC-SHA256 signature
 * over "TIMESTAMP.BODY" with its own copy of the key — computed with
 * OpenSSL, not with moat's code — in constant time, and a timestamp no more
 * than five minutes off. It answers 200 to what verifies and 401 to what
 * does not, and can be told to fail or stall the next requests.
 */
#ifndef MOAT_TEST_WEBHOOK_RECEIVER_H
#define MOAT_TEST_WEBHOOK_RECEIVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECEIVER_KEEP 64

typedef struct receiver {
    struct MHD_Daemon *daemon;
    uint16_t port;
    uint8_t key[128];
    size_t key_len;
    pthread_mutex_t lock;
    int fail_next;     /* answer 500 to this many verified requests */
    unsigned delay_ms; /* before answering each request */
    size_t requests, verified, rejected;
    /* The verified ones, in arrival order (the first RECEIVER_KEEP). */
    char ids[RECEIVER_KEEP][40];
    char events[RECEIVER_KEEP][16];
    char bodies[RECEIVER_KEEP][2048];
    /* The delivery id of every request, verified or not. */
    char request_ids[RECEIVER_KEEP][40];
} receiver;

/* Sleep ms milliseconds (usleep is not POSIX.1-2008). */
void receiver_sleep_ms(unsigned ms);

/* A port on 127.0.0.1 that was free a moment ago. */
uint16_t receiver_free_port(void);

/* Start on port (0: any) with the receiver's key. 0 on success. */
int receiver_start(receiver *r, uint16_t port, const uint8_t *key, size_t key_len);
void receiver_stop(receiver *r);

/* Wait until at least n requests verified; false on timeout. */
bool receiver_wait(receiver *r, size_t n, int timeout_ms);

/* Check one request as a receiver would: sig is the header value
 * ("sha256=HEX"), ts the timestamp header. */
bool receiver_check(const uint8_t *key, size_t key_len, const char *ts, const char *sig,
                    const char *body, size_t len, int64_t now);

#endif /* MOAT_TEST_WEBHOOK_RECEIVER_H */
