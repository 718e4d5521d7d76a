/*
 * burst.c — sliding-window counters with LRU eviction (see burst.h).
 *
 * Keys live in a randomly keyed hash map (chosen addresses cannot collide
 * on purpose) and in a doubly linked list from most to least recently hit,
 * so both lookup and eviction are O(1).
 */
#include "burst.h"

#include <stdlib.h>
#include <string.h>

#include "hmap.h"

typedef struct slot {
    char key[BURST_KEY_MAX + 1];
    size_t key_len;
    int64_t cur_start; /* start of the current fixed window */
    uint64_t cur, prev;
    int64_t fired_at;
    bool fired;
    struct slot *newer, *older;
} slot;

struct burst {
    burst_config cfg;
    hmap map;
    slot *newest, *oldest;
    size_t n;
    uint64_t evictions;
};

burst *burst_new(const burst_config *cfg)
{
    if (!cfg || cfg->window_ms <= 0 || cfg->threshold == 0 || cfg->max_keys == 0)
        return NULL;
    burst *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->cfg = *cfg;
    if (!hmap_init(&b->map)) {
        free(b);
        return NULL;
    }
    return b;
}

void burst_free(burst *b)
{
    if (!b)
        return;
    for (slot *s = b->newest, *next; s; s = next) {
        next = s->older;
        free(s);
    }
    hmap_free(&b->map);
    free(b);
}

static size_t key_len(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return n > BURST_KEY_MAX ? BURST_KEY_MAX : n;
}

static void unlink_slot(burst *b, slot *s)
{
    if (s->newer)
        s->newer->older = s->older;
    else
        b->newest = s->older;
    if (s->older)
        s->older->newer = s->newer;
    else
        b->oldest = s->newer;
    s->newer = s->older = NULL;
}

static void push_newest(burst *b, slot *s)
{
    s->older = b->newest;
    s->newer = NULL;
    if (b->newest)
        b->newest->newer = s;
    b->newest = s;
    if (!b->oldest)
        b->oldest = s;
}

static int64_t window_start(const burst *b, int64_t now)
{
    int64_t w = b->cfg.window_ms;
    int64_t q = now / w;
    if (now < 0 && now % w != 0)
        q--; /* floor, also before 1970 */
    return q * w;
}

/* Move the fixed windows of s up to now. */
static void roll(const burst *b, slot *s, int64_t now)
{
    int64_t start = window_start(b, now);
    if (start <= s->cur_start)
        return;
    s->prev = start - s->cur_start == b->cfg.window_ms ? s->cur : 0;
    s->cur = 0;
    s->cur_start = start;
}

static uint32_t estimate(const burst *b, const slot *s, int64_t now)
{
    int64_t w = b->cfg.window_ms;
    int64_t start = window_start(b, now);
    uint64_t cur = s->cur, prev = s->prev;
    if (start > s->cur_start) { /* as roll() would, without changing s */
        prev = start - s->cur_start == w ? s->cur : 0;
        cur = 0;
    }
    int64_t into = now - start; /* 0 .. w-1 */
    double est = (double)prev * (double)(w - into) / (double)w + (double)cur;
    return est >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)(est + 0.5);
}

bool burst_hit(burst *b, const char *key, uint32_t n, int64_t now, uint32_t *est_out)
{
    size_t len = key_len(key);
    slot *s = hmap_get(&b->map, (const uint8_t *)key, len);
    if (s) {
        unlink_slot(b, s);
    } else {
        if (b->n >= b->cfg.max_keys) {
            slot *victim = b->oldest;
            unlink_slot(b, victim);
            hmap_del(&b->map, (const uint8_t *)victim->key, victim->key_len);
            b->n--;
            b->evictions++;
            free(victim);
        }
        s = calloc(1, sizeof *s);
        if (!s) {
            if (est_out)
                *est_out = 0;
            return false;
        }
        memcpy(s->key, key, len);
        s->key[len] = '\0';
        s->key_len = len;
        s->cur_start = window_start(b, now);
        if (!hmap_put(&b->map, (const uint8_t *)s->key, len, s)) {
            free(s);
            if (est_out)
                *est_out = 0;
            return false;
        }
        b->n++;
    }
    push_newest(b, s);
    roll(b, s, now);
    s->cur += n;
    uint32_t est = estimate(b, s, now);
    if (est_out)
        *est_out = est;
    if (est < b->cfg.threshold)
        return false;
    if (s->fired && now - s->fired_at < b->cfg.window_ms)
        return false;
    s->fired = true;
    s->fired_at = now;
    return true;
}

uint32_t burst_estimate(const burst *b, const char *key, int64_t now)
{
    slot *s = hmap_get(&b->map, (const uint8_t *)key, key_len(key));
    return s ? estimate(b, s, now) : 0;
}

size_t burst_keys(const burst *b)
{
    return b->n;
}

uint64_t burst_evictions(const burst *b)
{
    return b->evictions;
}
