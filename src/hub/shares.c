/*
 * shares.c — the hub-wide shared-subscription table (shares.h).
 */
#include "shares.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"

struct share_entry {
    _Atomic uint64_t mask; /* bit w: worker w has members */
    unsigned counts[64];   /* local groups per worker (under the mutex) */
    unsigned refs;
    size_t keylen;
    uint8_t key[]; /* share name, NUL, filter */
};

struct hub_shares {
    pthread_mutex_t mu;
    hmap map;
};

hub_shares *shares_new(void)
{
    hub_shares *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t);
        return NULL;
    }
    if (!hmap_init(&t->map)) {
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    return t;
}

void shares_free(hub_shares *t)
{
    if (!t)
        return;
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    while ((e = hmap_next(&t->map, &bucket, &it)))
        free(e->value);
    hmap_free(&t->map);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

share_entry *shares_join(hub_shares *t, unsigned worker, codec_bytes share, codec_bytes filter)
{
    if (worker >= 64 || share.len > SIZE_MAX / 2 || filter.len > SIZE_MAX / 2)
        return NULL;
    size_t keylen = share.len + 1 + filter.len;
    share_entry *fresh = malloc(sizeof(share_entry) + keylen);
    if (!fresh)
        return NULL;
    memcpy(fresh->key, share.ptr, share.len);
    fresh->key[share.len] = 0;
    memcpy(fresh->key + share.len + 1, filter.ptr, filter.len);
    fresh->keylen = keylen;
    pthread_mutex_lock(&t->mu);
    share_entry *e = hmap_get(&t->map, fresh->key, keylen);
    if (e) {
        free(fresh);
    } else {
        e = fresh;
        atomic_init(&e->mask, 0);
        memset(e->counts, 0, sizeof(e->counts));
        e->refs = 0;
        if (!hmap_put(&t->map, e->key, keylen, e)) {
            free(e);
            pthread_mutex_unlock(&t->mu);
            return NULL;
        }
    }
    if (e->counts[worker]++ == 0)
        atomic_fetch_or(&e->mask, (uint64_t)1 << worker);
    e->refs++;
    pthread_mutex_unlock(&t->mu);
    return e;
}

void shares_leave(hub_shares *t, unsigned worker, share_entry *e)
{
    pthread_mutex_lock(&t->mu);
    if (worker < 64 && e->counts[worker] > 0 && --e->counts[worker] == 0)
        atomic_fetch_and(&e->mask, ~((uint64_t)1 << worker));
    if (--e->refs == 0) {
        hmap_del(&t->map, e->key, e->keylen);
        free(e);
    }
    pthread_mutex_unlock(&t->mu);
}

bool shares_mine(const share_entry *e, unsigned worker, uint64_t gid)
{
    uint64_t mask = atomic_load(&e->mask);
    unsigned n = (unsigned)__builtin_popcountll(mask);
    if (n == 0)
        return true; /* nobody listed yet: serve it rather than lose it */
    unsigned pick = (unsigned)(gid % n);
    for (unsigned w = 0; w < 64; w++) {
        if (!(mask & ((uint64_t)1 << w)))
            continue;
        if (pick-- == 0)
            return w == worker;
    }
    return false;
}
