/*
 * keyhash.h — the keyed hash behind every table whose keys clients choose
 * (client identifiers, topic levels): SipHash-2-4 (libsodium
 * crypto_shorthash) under a key drawn at random for each table, so that no
 * one can pick keys that collide.
 */
#ifndef MOAT_COMMON_KEYHASH_H
#define MOAT_COMMON_KEYHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYHASH_KEY_BYTES 16

/* A fresh random key; false when libsodium cannot be initialised. */
bool keyhash_key_new(uint8_t key[KEYHASH_KEY_BYTES]);

uint64_t keyhash(const uint8_t key[KEYHASH_KEY_BYTES], const void *data, size_t len);

#endif /* MOAT_COMMON_KEYHASH_H */
