/*
 * chain.c — the MACs that chain the audit log: pure functions of the key and
 * the bytes of an entry, shared by appending and verifying so that the two
 * can never disagree on the encoding.
 *
 * Every variable-length field is length-prefixed, so moving bytes from one
 * field into the next ("ab"+"c" vs "a"+"bc") changes the MAC; the sequence
 * number and the previous tag are inside it, so an entry cannot be moved to
 * another place in the chain. Distinct labels keep entry tags and head MACs
 * from ever being confused with each other.
 */
#include <string.h>

#include <sodium.h>

#include "internal.h"

static const char ENTRY_LABEL[] = "moat-audit-v1";     /* with its NUL */
static const char HEAD_LABEL[] = "moat-audit-head-v1"; /* with its NUL */

static void put_be64(crypto_auth_hmacsha256_state *h, int64_t v)
{
    uint8_t b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)(u & 0xff);
        u >>= 8;
    }
    crypto_auth_hmacsha256_update(h, b, sizeof b);
}

static void put_field(crypto_auth_hmacsha256_state *h, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    uint8_t b[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    crypto_auth_hmacsha256_update(h, b, sizeof b);
    if (n)
        crypto_auth_hmacsha256_update(h, (const uint8_t *)s, n);
}

void audit_entry_tag(const audit_key *key, int64_t seq, const uint8_t prev[AUDIT_TAG_LEN],
                     const audit_entry *e, uint8_t out[AUDIT_TAG_LEN])
{
    crypto_auth_hmacsha256_state h;
    crypto_auth_hmacsha256_init(&h, key->k, sizeof key->k);
    crypto_auth_hmacsha256_update(&h, (const uint8_t *)ENTRY_LABEL, sizeof ENTRY_LABEL);
    put_be64(&h, seq);
    crypto_auth_hmacsha256_update(&h, prev, AUDIT_TAG_LEN);
    put_be64(&h, e->time);
    put_field(&h, e->actor);
    put_field(&h, e->action);
    put_field(&h, e->subject);
    put_field(&h, e->outcome);
    put_field(&h, e->details);
    crypto_auth_hmacsha256_final(&h, out);
    sodium_memzero(&h, sizeof h);
}

void audit_head_mac(const audit_key *key, const audit_head *head, uint8_t out[AUDIT_TAG_LEN])
{
    crypto_auth_hmacsha256_state h;
    crypto_auth_hmacsha256_init(&h, key->k, sizeof key->k);
    crypto_auth_hmacsha256_update(&h, (const uint8_t *)HEAD_LABEL, sizeof HEAD_LABEL);
    put_be64(&h, head->seq);
    crypto_auth_hmacsha256_update(&h, head->tag, AUDIT_TAG_LEN);
    crypto_auth_hmacsha256_final(&h, out);
    sodium_memzero(&h, sizeof h);
}
