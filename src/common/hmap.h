/*
 * hmap.h — a hash map from byte strings to pointers.
 *
 * Keys are hashed with SipHash-2-4 (libsodium crypto_shorthash) under a key
 * drawn at random for each map, so clients that choose keys (client
 * identifiers, topic levels) cannot make entries collide. Chained buckets,
 * power-of-two table that doubles at load 1. The map stores the key view it
 * is given: the caller keeps the key bytes alive as long as the entry (they
 * usually live in the value).
 */
#ifndef MOAT_COMMON_HMAP_H
#define MOAT_COMMON_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyhash.h"

typedef struct hmap_entry {
    const uint8_t *key;
    size_t key_len;
    uint64_t hash;
    void *value;
    struct hmap_entry *next;
} hmap_entry;

typedef struct hmap {
    hmap_entry **buckets;
    size_t nbuckets; /* power of two, or 0 */
    size_t count;
    uint8_t seed[KEYHASH_KEY_BYTES];
} hmap;

/* false when out of memory or libsodium fails to initialise. */
bool hmap_init(hmap *m);
/* Frees the map's own memory, not keys or values. */
void hmap_free(hmap *m);

void *hmap_get(const hmap *m, const uint8_t *key, size_t len);
/* Insert or replace; false when out of memory. */
bool hmap_put(hmap *m, const uint8_t *key, size_t len, void *value);
/* Remove; returns the value that was there, or NULL. */
void *hmap_del(hmap *m, const uint8_t *key, size_t len);

/* Iterate: *it starts NULL with *bucket 0; returns NULL at the end. The map
 * must not change during iteration (collect first, then delete). */
hmap_entry *hmap_next(const hmap *m, size_t *bucket, hmap_entry **it);

#endif /* MOAT_COMMON_HMAP_H */
