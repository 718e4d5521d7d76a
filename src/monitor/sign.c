/*
 * sign.c — the webhook signature, apart from the sender so that it can be
 * tested (and reused by a receiver) without libcurl or threads.
 *
 * The MAC covers the timestamp and the exact body bytes that are sent,
 * joined by ".", so that neither can be changed or replayed with another.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "webhook.h"

void webhook_sign(const uint8_t *key, size_t key_len, int64_t ts, const char *body, size_t len,
                  char out[65])
{
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "%lld.", (long long)ts);
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state h;
    crypto_auth_hmacsha256_init(&h, key, key_len);
    crypto_auth_hmacsha256_update(&h, (const uint8_t *)prefix, (size_t)(n > 0 ? n : 0));
    crypto_auth_hmacsha256_update(&h, (const uint8_t *)body, len);
    crypto_auth_hmacsha256_final(&h, mac);
    sodium_memzero(&h, sizeof h);
    sodium_bin2hex(out, 65, mac, sizeof mac);
}
