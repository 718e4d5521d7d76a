/*
 * liveness.c — the liveness tracker (rules in liveness.h).
 *
 * Each watched device is one node: in a hash map by id, and in the deadline
 * heap while it has a deadline. A device reported offline leaves the heap
 * (there is nothing more to wait for) and re-enters it when seen again.
 */
#include "liveness.h"

#include <stdlib.h>
#include <string.h>

#include "hmap.h"

#define NOT_IN_HEAP SIZE_MAX

typedef struct node {
    char id[LIVENESS_ID_MAX + 1];
    size_t id_len;
    uint32_t interval_s;
    int64_t last_seen; /* 0: never */
    int64_t deadline;
    size_t heap_index;
    liveness_cause cause; /* what to report if the deadline passes */
    bool offline;
    uint64_t gen; /* the sync pass that last watched it */
} node;

struct liveness {
    liveness_config cfg;
    liveness_emit emit;
    void *ctx;
    hmap map;
    node **heap;
    size_t heap_len, heap_cap;
    size_t count, offline;
    uint64_t gen;
};

const char *liveness_cause_name(liveness_cause cause)
{
    switch (cause) {
    case LIVENESS_SILENT:
        return "silent";
    case LIVENESS_CLEAN_DISCONNECT:
        return "clean_disconnect";
    case LIVENESS_CONNECTION_LOST:
        return "connection_lost";
    case LIVENESS_NEVER_SEEN:
        return "never_seen";
    }
    return "unknown";
}

/* ---- the heap ------------------------------------------------------------ */

static void heap_set(liveness *l, size_t i, node *n)
{
    l->heap[i] = n;
    n->heap_index = i;
}

static void sift_up(liveness *l, size_t i)
{
    node *n = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->deadline <= n->deadline)
            break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, n);
}

static void sift_down(liveness *l, size_t i)
{
    node *n = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_len)
            break;
        if (c + 1 < l->heap_len && l->heap[c + 1]->deadline < l->heap[c]->deadline)
            c++;
        if (n->deadline <= l->heap[c]->deadline)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, n);
}

static bool heap_push(liveness *l, node *n)
{
    if (l->heap_len == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        node **h = realloc(l->heap, cap * sizeof *h);
        if (!h)
            return false;
        l->heap = h;
        l->heap_cap = cap;
    }
    heap_set(l, l->heap_len++, n);
    sift_up(l, n->heap_index);
    return true;
}

static void heap_remove(liveness *l, node *n)
{
    size_t i = n->heap_index;
    if (i == NOT_IN_HEAP)
        return;
    n->heap_index = NOT_IN_HEAP;
    node *last = l->heap[--l->heap_len];
    if (i == l->heap_len)
        return;
    heap_set(l, i, last);
    sift_down(l, i);
    sift_up(l, last->heap_index);
}

/* Give n a new deadline (in the heap or not). */
static bool set_deadline(liveness *l, node *n, int64_t deadline)
{
    if (n->heap_index == NOT_IN_HEAP) {
        n->deadline = deadline;
        return heap_push(l, n);
    }
    int64_t old = n->deadline;
    n->deadline = deadline;
    if (deadline < old)
        sift_up(l, n->heap_index);
    else
        sift_down(l, n->heap_index);
    return true;
}

/* ---- the tracker ----------------------------------------------------------- */

liveness *liveness_new(const liveness_config *cfg, liveness_emit emit, void *ctx)
{
    liveness *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    if (cfg)
        l->cfg = *cfg;
    if (l->cfg.grace_ms < 0)
        l->cfg.grace_ms = 0;
    if (l->cfg.lost_grace_ms < 0)
        l->cfg.lost_grace_ms = 0;
    l->emit = emit;
    l->ctx = ctx;
    if (!hmap_init(&l->map)) {
        free(l);
        return NULL;
    }
    return l;
}

void liveness_free(liveness *l)
{
    if (!l)
        return;
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    /* Collect first: the map must not change while it is walked. */
    node **all = malloc((l->count ? l->count : 1) * sizeof *all);
    size_t n = 0;
    while (all && (e = hmap_next(&l->map, &bucket, &it)))
        all[n++] = e->value;
    for (size_t i = 0; i < n; i++)
        free(all[i]);
    free(all);
    hmap_free(&l->map);
    free(l->heap);
    free(l);
}

static node *find(const liveness *l, const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > LIVENESS_ID_MAX)
        return NULL;
    return hmap_get(&l->map, (const uint8_t *)id, len);
}

static void emit(liveness *l, const node *n, bool offline, int64_t now, bool forgotten)
{
    if (!l->emit)
        return;
    liveness_event ev = {.id = n->id,
                         .offline = offline,
                         .cause = n->cause,
                         .last_seen = n->last_seen,
                         .now = now,
                         .interval_s = n->interval_s,
                         .forgotten = forgotten};
    l->emit(l->ctx, &ev);
}

static int64_t add_ms(int64_t t, int64_t d)
{
    return d > INT64_MAX - t ? INT64_MAX : t + d;
}

static int64_t full_deadline(const liveness *l, int64_t from, uint32_t interval_s)
{
    return add_ms(add_ms(from, (int64_t)interval_s * 1000), l->cfg.grace_ms);
}

static node *create(liveness *l, const char *id, uint32_t interval_s)
{
    size_t len = strlen(id);
    if (len == 0 || len > LIVENESS_ID_MAX)
        return NULL;
    if (l->cfg.max_devices && l->count >= l->cfg.max_devices)
        return NULL;
    node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    memcpy(n->id, id, len + 1);
    n->id_len = len;
    n->interval_s = interval_s;
    n->heap_index = NOT_IN_HEAP;
    n->cause = LIVENESS_NEVER_SEEN;
    if (!hmap_put(&l->map, (const uint8_t *)n->id, len, n)) {
        free(n);
        return NULL;
    }
    l->count++;
    return n;
}

static void destroy(liveness *l, node *n)
{
    heap_remove(l, n);
    hmap_del(&l->map, (const uint8_t *)n->id, n->id_len);
    if (n->offline)
        l->offline--;
    l->count--;
    free(n);
}

bool liveness_watch(liveness *l, const char *id, uint32_t interval_s, int64_t now)
{
    node *n = find(l, id);
    if (interval_s == 0) {
        liveness_forget(l, id, now);
        return true;
    }
    if (n) {
        n->gen = l->gen;
        if (n->interval_s == interval_s)
            return true;
        n->interval_s = interval_s;
        if (n->offline)
            return true; /* waits for a sign of life either way */
        /* Re-time from the last sign of life (or from now, if none). */
        int64_t from = n->last_seen ? n->last_seen : now;
        int64_t d = full_deadline(l, from, interval_s);
        if (n->cause == LIVENESS_CONNECTION_LOST && l->cfg.lost_grace_ms && n->deadline < d)
            d = n->deadline;
        return set_deadline(l, n, d);
    }
    if (!(n = create(l, id, interval_s)))
        return false;
    n->gen = l->gen;
    if (!set_deadline(l, n, full_deadline(l, now, interval_s))) {
        destroy(l, n);
        return false;
    }
    return true;
}

bool liveness_watch_offline(liveness *l, const char *id, uint32_t interval_s, int64_t now)
{
    node *n = find(l, id);
    if (!n) {
        if (interval_s == 0 || !(n = create(l, id, interval_s)))
            return false;
    }
    n->gen = l->gen;
    if (interval_s)
        n->interval_s = interval_s;
    if (!n->offline) {
        heap_remove(l, n);
        n->offline = true;
        l->offline++;
    }
    (void)now;
    return true;
}

bool liveness_seen(liveness *l, const char *id, int64_t now)
{
    node *n = find(l, id);
    if (!n)
        return false;
    n->last_seen = now > 0 ? now : 1; /* 0 means never */
    n->cause = LIVENESS_SILENT;
    bool was_offline = n->offline;
    if (was_offline) {
        n->offline = false;
        l->offline--;
    }
    if (!set_deadline(l, n, full_deadline(l, now, n->interval_s))) {
        /* No memory for the heap: report it offline rather than forget it silently. */
        n->offline = true;
        l->offline++;
        return true;
    }
    if (was_offline)
        emit(l, n, false, now, false);
    return true;
}

void liveness_gone(liveness *l, const char *id, bool clean, int64_t now)
{
    node *n = find(l, id);
    if (!n || n->offline)
        return;
    if (clean) {
        n->cause = LIVENESS_CLEAN_DISCONNECT;
        return; /* the ordinary deadline stands */
    }
    n->cause = LIVENESS_CONNECTION_LOST;
    if (l->cfg.lost_grace_ms) {
        int64_t d = add_ms(now, l->cfg.lost_grace_ms);
        if (n->heap_index == NOT_IN_HEAP || d < n->deadline)
            (void)set_deadline(l, n, d);
    }
}

void liveness_forget(liveness *l, const char *id, int64_t now)
{
    node *n = find(l, id);
    if (!n)
        return;
    if (n->offline)
        emit(l, n, false, now, true);
    destroy(l, n);
}

int64_t liveness_advance(liveness *l, int64_t now)
{
    while (l->heap_len > 0 && l->heap[0]->deadline <= now) {
        node *n = l->heap[0];
        heap_remove(l, n);
        n->offline = true;
        l->offline++;
        emit(l, n, true, now, false);
    }
    return liveness_next(l);
}

int64_t liveness_next(const liveness *l)
{
    return l->heap_len > 0 ? l->heap[0]->deadline : INT64_MAX;
}

void liveness_sync_begin(liveness *l)
{
    l->gen++;
}

void liveness_sync_end(liveness *l, int64_t now)
{
    if (l->count == 0)
        return;
    node **stale = malloc(l->count * sizeof *stale);
    if (!stale)
        return; /* try again at the next pass */
    size_t n = 0, bucket = 0;
    hmap_entry *it = NULL, *e;
    while ((e = hmap_next(&l->map, &bucket, &it))) {
        node *x = e->value;
        if (x->gen != l->gen)
            stale[n++] = x;
    }
    for (size_t i = 0; i < n; i++)
        liveness_forget(l, stale[i]->id, now);
    free(stale);
}

size_t liveness_count(const liveness *l)
{
    return l->count;
}

size_t liveness_offline_count(const liveness *l)
{
    return l->offline;
}

bool liveness_is_offline(const liveness *l, const char *id, bool *watched)
{
    node *n = find(l, id);
    if (watched)
        *watched = n != NULL;
    return n && n->offline;
}
