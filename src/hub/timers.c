/*
 * timers.c — a binary min-heap of deadlines (keep-alive, CONNECT timeout,
 * session expiry, will delay).
 *
 * Timers live inside the objects they belong to and remember their heap
 * position, so disarming one when its connection or session goes away is
 * O(log n), and the loop sleeps exactly until the next deadline instead of
 * waking on a fixed tick to scan every client.
 */
#include <stdlib.h>

#include "broker_int.h"

void timer_init(timer *t, timer_kind kind, void *owner)
{
    *t = (timer){.owner = owner, .index = TIMER_UNARMED, .kind = (uint8_t)kind};
}

static void swap(timer_heap *h, size_t i, size_t j)
{
    timer *t = h->items[i];
    h->items[i] = h->items[j];
    h->items[j] = t;
    h->items[i]->index = (uint32_t)i;
    h->items[j]->index = (uint32_t)j;
}

static void sift_up(timer_heap *h, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->at <= h->items[i]->at)
            break;
        swap(h, i, parent);
        i = parent;
    }
}

static void sift_down(timer_heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && h->items[l]->at < h->items[m]->at)
            m = l;
        if (r < h->len && h->items[r]->at < h->items[m]->at)
            m = r;
        if (m == i)
            return;
        swap(h, i, m);
        i = m;
    }
}

bool timer_arm(timer_heap *h, timer *t, uint64_t at)
{
    if (t->index != TIMER_UNARMED) {
        uint64_t old = t->at;
        t->at = at;
        if (at < old)
            sift_up(h, t->index);
        else
            sift_down(h, t->index);
        return true;
    }
    if (h->len == h->cap) {
        if (h->cap >= TIMER_UNARMED / 2)
            return false; /* positions must fit in 32 bits */
        size_t cap = h->cap ? h->cap * 2 : 64;
        timer **items = realloc(h->items, cap * sizeof(*items));
        if (!items)
            return false;
        h->items = items;
        h->cap = cap;
    }
    t->at = at;
    t->index = (uint32_t)h->len;
    h->items[h->len++] = t;
    sift_up(h, t->index);
    return true;
}

void timer_disarm(timer_heap *h, timer *t)
{
    size_t i = t->index;
    if (t->index == TIMER_UNARMED)
        return;
    t->index = TIMER_UNARMED;
    h->len--;
    if (i == h->len)
        return;
    h->items[i] = h->items[h->len];
    h->items[i]->index = (uint32_t)i;
    sift_down(h, i);
    sift_up(h, i);
}

timer *timer_pop_due(timer_heap *h, uint64_t now)
{
    if (h->len == 0 || h->items[0]->at > now)
        return NULL;
    timer *t = h->items[0];
    timer_disarm(h, t);
    return t;
}

uint64_t timer_next(const timer_heap *h)
{
    return h->len ? h->items[0]->at : UINT64_MAX;
}

void timer_heap_free(timer_heap *h)
{
    free(h->items);
    *h = (timer_heap){0};
}
