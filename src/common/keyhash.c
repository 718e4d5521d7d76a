/*
 * keyhash.c — keyed SipHash for client-chosen keys (see keyhash.h).
 */
#include "keyhash.h"

#include <sodium.h>
#include <string.h>

_Static_assert(KEYHASH_KEY_BYTES == crypto_shorthash_KEYBYTES, "SipHash key size");

bool keyhash_key_new(uint8_t key[KEYHASH_KEY_BYTES])
{
    if (sodium_init() < 0) /* safe to call again */
        return false;
    randombytes_buf(key, KEYHASH_KEY_BYTES);
    return true;
}

uint64_t keyhash(const uint8_t key[KEYHASH_KEY_BYTES], const void *data, size_t len)
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, data, len, key);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return h;
}
