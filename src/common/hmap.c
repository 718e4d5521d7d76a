/*
 * hmap.c — randomly keyed hash map (see hmap.h).
 */
#include "hmap.h"

#include <stdlib.h>
#include <string.h>

#include "keyhash.h"

static uint64_t hash_of(const hmap *m, const uint8_t *key, size_t len)
{
    return keyhash(m->seed, key, len);
}

bool hmap_init(hmap *m)
{
    *m = (hmap){0};
    return keyhash_key_new(m->seed);
}

void hmap_free(hmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        hmap_entry *e = m->buckets[i];
        while (e) {
            hmap_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

static hmap_entry **find_slot(const hmap *m, const uint8_t *key, size_t len, uint64_t h)
{
    hmap_entry **slot = &m->buckets[h & (m->nbuckets - 1)];
    while (*slot) {
        hmap_entry *e = *slot;
        if (e->hash == h && e->key_len == len && (len == 0 || memcmp(e->key, key, len) == 0))
            return slot;
        slot = &e->next;
    }
    return slot;
}

void *hmap_get(const hmap *m, const uint8_t *key, size_t len)
{
    if (m->count == 0)
        return NULL;
    hmap_entry **slot = find_slot(m, key, len, hash_of(m, key, len));
    return *slot ? (*slot)->value : NULL;
}

static bool grow(hmap *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    hmap_entry **b = calloc(n, sizeof(*b));
    if (!b)
        return false;
    for (size_t i = 0; i < m->nbuckets; i++) {
        hmap_entry *e = m->buckets[i];
        while (e) {
            hmap_entry *next = e->next;
            size_t at = e->hash & (n - 1);
            e->next = b[at];
            b[at] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return true;
}

bool hmap_put(hmap *m, const uint8_t *key, size_t len, void *value)
{
    if (m->count >= m->nbuckets && !grow(m))
        return false;
    uint64_t h = hash_of(m, key, len);
    hmap_entry **slot = find_slot(m, key, len, h);
    if (*slot) {
        (*slot)->key = key; /* the caller's key may have moved with its value */
        (*slot)->value = value;
        return true;
    }
    hmap_entry *e = malloc(sizeof(*e));
    if (!e)
        return false;
    *e = (hmap_entry){key, len, h, value, NULL};
    *slot = e;
    m->count++;
    return true;
}

void *hmap_del(hmap *m, const uint8_t *key, size_t len)
{
    if (m->count == 0)
        return NULL;
    hmap_entry **slot = find_slot(m, key, len, hash_of(m, key, len));
    hmap_entry *e = *slot;
    if (!e)
        return NULL;
    void *value = e->value;
    *slot = e->next;
    free(e);
    m->count--;
    return value;
}

hmap_entry *hmap_next(const hmap *m, size_t *bucket, hmap_entry **it)
{
    if (*it && (*it)->next) {
        *it = (*it)->next;
        return *it;
    }
    if (*it)
        (*bucket)++;
    while (*bucket < m->nbuckets) {
        if (m->buckets[*bucket]) {
            *it = m->buckets[*bucket];
            return *it;
        }
        (*bucket)++;
    }
    *it = NULL;
    return NULL;
}
