/*
 * sessions.c — the broker's sessions by client id (broker_int.h).
 *
 * An intrusive chained hash table: the chain link and the hash live in the
 * session itself, so indexing a session costs it 12 bytes instead of a
 * separately allocated entry (48 bytes with malloc's header) — a hub holds
 * one session per client, idle or not. Client ids are chosen by clients:
 * they are hashed with keyhash (keyhash.h), so that no one can make them
 * collide.
 */
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

static uint32_t hash_of(const session_index *x, codec_bytes id)
{
    return (uint32_t)keyhash(x->seed, id.ptr, id.len);
}

bool session_index_init(session_index *x)
{
    *x = (session_index){0};
    return keyhash_key_new(x->seed);
}

void session_index_free(session_index *x)
{
    free(x->buckets);
    *x = (session_index){0};
}

static bool same_id(const session *s, codec_bytes id)
{
    return session_id(s).len == id.len &&
           (id.len == 0 || memcmp(session_id(s).ptr, id.ptr, id.len) == 0);
}

session *session_find(const session_index *x, codec_bytes client_id)
{
    if (x->count == 0)
        return NULL;
    uint32_t h = hash_of(x, client_id);
    for (session *s = x->buckets[h & (x->nbuckets - 1)]; s; s = s->index_next)
        if (s->index_hash == h && same_id(s, client_id))
            return s;
    return NULL;
}

static bool grow(session_index *x)
{
    size_t n = x->nbuckets ? x->nbuckets * 2 : 16;
    if (n > (size_t)UINT32_MAX + 1)
        return false; /* a bucket is picked from 32 bits of hash */
    session **b = calloc(n, sizeof(*b));
    if (!b)
        return false;
    for (size_t i = 0; i < x->nbuckets; i++) {
        session *s = x->buckets[i];
        while (s) {
            session *next = s->index_next;
            size_t at = s->index_hash & (n - 1);
            s->index_next = b[at];
            b[at] = s;
            s = next;
        }
    }
    free(x->buckets);
    x->buckets = b;
    x->nbuckets = n;
    return true;
}

bool session_index_add(session_index *x, session *s)
{
    if (x->count >= x->nbuckets && !grow(x))
        return false;
    s->index_hash = hash_of(x, session_id(s));
    session **head = &x->buckets[s->index_hash & (x->nbuckets - 1)];
    s->index_next = *head;
    *head = s;
    x->count++;
    return true;
}

void session_index_remove(session_index *x, session *s)
{
    if (x->count == 0)
        return;
    for (session **at = &x->buckets[s->index_hash & (x->nbuckets - 1)]; *at;
         at = &(*at)->index_next) {
        if (*at == s) {
            *at = s->index_next;
            s->index_next = NULL;
            x->count--;
            return;
        }
    }
}

session *session_index_first(const session_index *x, size_t *bucket)
{
    for (; *bucket < x->nbuckets; (*bucket)++)
        if (x->buckets[*bucket])
            return x->buckets[*bucket];
    return NULL;
}

session *session_index_next(const session_index *x, size_t *bucket, const session *s)
{
    if (s->index_next)
        return s->index_next;
    (*bucket)++;
    return session_index_first(x, bucket);
}
