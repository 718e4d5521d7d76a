/*
 * policy_cache.c — per-worker policy sets by principal (policy_cache.h).
 */
#include "policy_cache.h"

#include <stdlib.h>
#include <string.h>

#include "policies.h"

/* Principals with a cached set, at most. Past it the cache starts over: the
 * sets of live sessions stay with their sessions, only sharing is lost. */
#define POLICY_CACHE_MAX 4096u

typedef struct cached_set {
    uint8_t key[1 + sizeof(((broker_principal *)0)->id)]; /* kind, then the id */
    size_t key_len;
    policy_set *set; /* the cache's own reference */
} cached_set;

static size_t principal_key(const broker_principal *who, uint8_t *key)
{
    size_t n = strnlen(who->id, sizeof(who->id) - 1);
    key[0] = (uint8_t)who->kind;
    memcpy(key + 1, who->id, n);
    return 1 + n;
}

bool policy_cache_init(policy_cache *pc)
{
    pc->version = -1;
    pc->ready = hmap_init(&pc->sets);
    return pc->ready;
}

void policy_cache_clear(policy_cache *pc)
{
    if (!pc->ready)
        return;
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    /* The entries' keys live in the values: free the values, then the map. */
    while ((e = hmap_next(&pc->sets, &bucket, &it))) {
        cached_set *c = e->value;
        policy_set_free(c->set);
        free(c);
    }
    hmap_free(&pc->sets);
    pc->ready = hmap_init(&pc->sets);
}

void policy_cache_free(policy_cache *pc)
{
    policy_cache_clear(pc);
    if (pc->ready)
        hmap_free(&pc->sets);
    pc->ready = false;
}

policy_set *policy_cache_get(policy_cache *pc, registry *reg, const broker_principal *who)
{
    int64_t version;
    if (!pc->ready || registry_data_version(reg, &version) != REGISTRY_OK)
        return hub_policies_for(reg, who); /* no cache, or cannot tell: read afresh */
    if (version != pc->version) {
        policy_cache_clear(pc);
        pc->version = version;
    }
    uint8_t key[sizeof(((cached_set *)0)->key)];
    size_t key_len = principal_key(who, key);
    cached_set *hit = hmap_get(&pc->sets, key, key_len);
    if (hit)
        return policy_set_ref(hit->set);

    policy_set *set = hub_policies_for(reg, who);
    if (!set)
        return NULL;
    if (pc->sets.count >= POLICY_CACHE_MAX)
        policy_cache_clear(pc);
    if (!pc->ready)
        return set;
    cached_set *entry = malloc(sizeof(*entry));
    if (!entry)
        return set; /* unshared, still right */
    memcpy(entry->key, key, key_len);
    entry->key_len = key_len;
    entry->set = policy_set_ref(set);
    if (!hmap_put(&pc->sets, entry->key, entry->key_len, entry)) {
        policy_set_free(entry->set);
        free(entry);
    }
    return set;
}
