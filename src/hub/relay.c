/*
 * relay.c — inboxes, batches and pending tickets between workers (relay.h).
 */
#include "relay.h"

#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

bool relay_inbox_init(relay_inbox *in)
{
    memset(in, 0, sizeof(*in));
    in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (in->efd < 0)
        return false;
    if (pthread_mutex_init(&in->mu, NULL) != 0) {
        close(in->efd);
        in->efd = -1;
        return false;
    }
    return true;
}

void relay_inbox_free(relay_inbox *in)
{
    if (in->efd < 0)
        return;
    pthread_mutex_destroy(&in->mu);
    close(in->efd);
    in->efd = -1;
}

void relay_post(relay_inbox *in, relay_env *env)
{
    env->next = NULL;
    pthread_mutex_lock(&in->mu);
    bool was_empty = in->head == NULL;
    if (in->tail)
        in->tail->next = env;
    else
        in->head = env;
    in->tail = env;
    pthread_mutex_unlock(&in->mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(in->efd, &one, sizeof(one));
        (void)w; /* EAGAIN: the counter is already non-zero, the wake is pending */
    }
}

relay_env *relay_take(relay_inbox *in)
{
    uint64_t n;
    ssize_t r = read(in->efd, &n, sizeof(n));
    (void)r;
    pthread_mutex_lock(&in->mu);
    relay_env *all = in->head;
    in->head = in->tail = NULL;
    pthread_mutex_unlock(&in->mu);
    return all;
}

relay_env *relay_env_new(relay_kind kind, unsigned from)
{
    relay_env *e = calloc(1, sizeof(*e));
    if (e) {
        e->kind = kind;
        e->from = from;
    }
    return e;
}

static codec_bytes place(uint8_t **at, codec_bytes src)
{
    codec_bytes out = {*at, src.len};
    if (src.len)
        memcpy(*at, src.ptr, src.len);
    *at += src.len;
    return out;
}

bool relay_env_add(relay_env *env, const broker_fwd *f, uint8_t flags)
{
    size_t size = sizeof(relay_item);
    const size_t parts[] = {f->topic.len,  f->payload.len, f->props.len,
                            f->origin.len, f->to.len,      f->share.len};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (parts[i] > SIZE_MAX - size)
            return false;
        size += parts[i];
    }
    if (env->n == env->cap) {
        size_t cap = env->cap ? env->cap * 2 : 16;
        relay_item **items = realloc(env->items, cap * sizeof(*items));
        if (!items)
            return false;
        env->items = items;
        env->cap = cap;
    }
    relay_item *it = malloc(size);
    if (!it)
        return false;
    it->f = *f;
    it->f.flags = flags;
    uint8_t *at = it->data;
    it->f.topic = place(&at, f->topic);
    it->f.payload = place(&at, f->payload);
    it->f.props = place(&at, f->props);
    it->f.origin = place(&at, f->origin);
    it->f.to = place(&at, f->to);
    it->f.share = place(&at, f->share);
    it->f.from = NULL; /* valid during the sender's call only */
    env->items[env->n++] = it;
    return true;
}

bool relay_env_add_gid(relay_env *env, uint64_t gid)
{
    if (env->ngids == env->gids_cap) {
        size_t cap = env->gids_cap ? env->gids_cap * 2 : 16;
        uint64_t *g = realloc(env->gids, cap * sizeof(*g));
        if (!g)
            return false;
        env->gids = g;
        env->gids_cap = cap;
    }
    env->gids[env->ngids++] = gid;
    return true;
}

void relay_env_free(relay_env *env)
{
    if (!env)
        return;
    free(env->gids);
    for (size_t i = 0; i < env->n; i++)
        free(env->items[i]);
    free(env->items);
    free(env);
}

bool relay_pending_add(relay_pending *p, uint64_t pass, unsigned waiting)
{
    if (p->len == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        void *v = malloc(cap * sizeof(*p->v));
        if (!v)
            return false;
        /* Unroll the ring into the new array. */
        for (size_t i = 0; i < p->len; i++)
            memcpy((char *)v + i * sizeof(*p->v), &p->v[(p->head + i) % p->cap], sizeof(*p->v));
        free(p->v);
        p->v = v;
        p->cap = cap;
        p->head = 0;
    }
    size_t at = (p->head + p->len) % p->cap;
    p->v[at].pass = pass;
    p->v[at].waiting = waiting;
    p->v[at].failed = false;
    p->len++;
    return true;
}

void relay_pending_ticket(relay_pending *p, uint64_t pass, bool ok)
{
    for (size_t i = 0; i < p->len; i++) {
        size_t at = (p->head + i) % p->cap;
        if (p->v[at].pass == pass) {
            if (p->v[at].waiting)
                p->v[at].waiting--;
            if (!ok)
                p->v[at].failed = true;
            return;
        }
    }
}

bool relay_pending_pop(relay_pending *p, uint64_t *pass, bool *ok)
{
    if (p->len == 0 || p->v[p->head].waiting > 0)
        return false;
    *pass = p->v[p->head].pass;
    *ok = !p->v[p->head].failed;
    p->head = (p->head + 1) % p->cap;
    p->len--;
    return true;
}

bool relay_pending_empty(const relay_pending *p)
{
    return p->len == 0;
}

void relay_pending_free(relay_pending *p)
{
    free(p->v);
    memset(p, 0, sizeof(*p));
}
