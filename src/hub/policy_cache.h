/*
 * policy_cache.h — one worker's policy sets, shared by every session of the
 * same principal.
 *
 * Building a set reads the principal's documents from the registry and
 * parses them: work done at every CONNECT, and memory held by every session.
 * The sessions of one principal (a service's pool of connections, a device
 * that reconnects) hold the same set instead. The cache is emptied whenever
 * the registry's data version moves, so a new connection never gets a set
 * older than what the registry holds when it connects; live sessions get
 * theirs at the worker's next registry check (broker_reauthorize), as before.
 *
 * One per worker thread: the sets' reference counts are not atomic.
 */
#ifndef MOAT_HUB_POLICY_CACHE_H
#define MOAT_HUB_POLICY_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "broker.h"
#include "hmap.h"
#include "policy.h"
#include "registry.h"

typedef struct policy_cache {
    hmap sets;       /* kind + id -> cached_set */
    int64_t version; /* the registry data version the sets were read at */
    bool ready;      /* the map is usable (else every lookup reads afresh) */
} policy_cache;

bool policy_cache_init(policy_cache *pc);
void policy_cache_free(policy_cache *pc);

/* A reference to who's set (release it with policy_set_free), or NULL when
 * its documents fail to load or parse: callers deny everything then, and the
 * failure is not cached. */
policy_set *policy_cache_get(policy_cache *pc, registry *reg, const broker_principal *who);

/* Forget every set (the sessions keep theirs). */
void policy_cache_clear(policy_cache *pc);

#endif /* MOAT_HUB_POLICY_CACHE_H */
