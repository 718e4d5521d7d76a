/*
 * subscribe.c — SUBSCRIBE and UNSUBSCRIBE, shared subscriptions, retained
 * messages for new subscriptions, and re-checking subscriptions when
 * policies change.
 *
 * Every filter is judged on its own: its syntax, the topic limits, the
 * subscribe policy and the per-session count each give that entry its own
 * SUBACK code, so one bad filter does not cost the client the others. A
 * policy change removes live subscriptions the new policy no longer allows:
 * access is re-checked, not only granted once.
 */
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

static uint8_t options_byte(const sub *x)
{
    return (uint8_t)(x->qos | (x->no_local ? 0x04 : 0) | (x->retain_as_published ? 0x08 : 0) |
                     x->retain_handling << 4);
}

static sub *find_sub(session *s, codec_bytes filter, size_t *at)
{
    for (size_t i = 0; i < s->nsubs; i++) {
        sub *x = s->subs[i];
        if (x->filter.len == filter.len && memcmp(x->filter.ptr, filter.ptr, filter.len) == 0) {
            if (at)
                *at = i;
            return x;
        }
    }
    return NULL;
}

/* Put x into the plain tree or into its share group in the shared tree. */
static bool tree_insert(broker *b, sub *x)
{
    bool shared = x->share.len > 0;
    tree_node *n = tree_get(shared ? b->shared : b->subs, x->inner, true);
    if (!n)
        return false;
    void **slot = tree_value(n);
    if (!shared) {
        x->next = *slot;
        *slot = x;
        return true;
    }
    share_group *g = *slot;
    while (g &&
           !(g->name.len == x->share.len && memcmp(g->name.ptr, x->share.ptr, x->share.len) == 0))
        g = g->next;
    if (!g) {
        g = calloc(1, sizeof(*g));
        if (!g)
            return false;
        g->name_mem = malloc(x->share.len);
        if (!g->name_mem) {
            free(g);
            return false;
        }
        memcpy(g->name_mem, x->share.ptr, x->share.len);
        g->name = (codec_bytes){g->name_mem, x->share.len};
        if (b->relay.share_join) {
            g->hub_group = b->relay.share_join(b->relay.ctx, g->name, x->inner);
            if (!g->hub_group) {
                free(g->name_mem);
                free(g);
                return false;
            }
        }
        g->next = *slot;
        *slot = g;
    }
    x->next = g->members;
    g->members = x;
    return true;
}

static void unlink_sub(sub **list, sub *x)
{
    for (sub **p = list; *p; p = &(*p)->next) {
        if (*p == x) {
            *p = x->next;
            return;
        }
    }
}

static void tree_erase(broker *b, sub *x)
{
    bool shared = x->share.len > 0;
    tree *t = shared ? b->shared : b->subs;
    tree_node *n = tree_get(t, x->inner, false);
    if (!n)
        return;
    void **slot = tree_value(n);
    if (!shared) {
        unlink_sub((sub **)slot, x);
    } else {
        for (share_group **gp = (share_group **)slot; *gp; gp = &(*gp)->next) {
            share_group *g = *gp;
            if (g->name.len != x->share.len || memcmp(g->name.ptr, x->share.ptr, x->share.len))
                continue;
            unlink_sub(&g->members, x);
            if (!g->members) {
                *gp = g->next;
                if (g->hub_group)
                    b->relay.share_leave(b->relay.ctx, g->hub_group);
                free(g->name_mem);
                free(g);
            }
            break;
        }
    }
    if (!*slot)
        tree_prune(t, n);
}

static sub *sub_add(broker *b, session *s, const codec_subscription *e, uint32_t sub_id)
{
    if (s->nsubs == s->subs_cap) {
        uint32_t n = s->subs_cap ? s->subs_cap * 2 : 4;
        sub **a = realloc(s->subs, n * sizeof(*a));
        if (!a)
            return NULL;
        s->subs = a;
        s->subs_cap = n;
    }
    sub *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->filter_mem = malloc(e->filter.len);
    if (!x->filter_mem) {
        free(x);
        return NULL;
    }
    memcpy(x->filter_mem, e->filter.ptr, e->filter.len);
    x->s = s;
    x->filter = (codec_bytes){x->filter_mem, e->filter.len};
    if (!codec_topic_shared_split(x->filter, &x->share, &x->inner))
        x->inner = x->filter;
    x->qos = e->qos;
    x->no_local = e->no_local;
    x->retain_as_published = e->retain_as_published;
    x->retain_handling = e->retain_handling;
    x->sub_id = sub_id;
    if (!tree_insert(b, x)) {
        free(x->filter_mem);
        free(x);
        return NULL;
    }
    s->subs[s->nsubs++] = x;
    b->stats.subscriptions++;
    return x;
}

void sub_remove(broker *b, sub *x, bool from_store)
{
    session *s = x->s;
    size_t at;
    if (find_sub(s, x->filter, &at) == x)
        s->subs[at] = s->subs[--s->nsubs];
    tree_erase(b, x);
    if (from_store && s->stored && store_touch(b, s->conn)) {
        broker_store *st = b->cfg.store;
        if (!st->sub_delete(st->ctx, session_id(s), x->filter))
            b->store_failed = true;
    }
    b->stats.subscriptions--;
    free(x->filter_mem);
    free(x);
}

bool sub_restore(broker *b, session *s, codec_bytes filter, uint8_t options, uint32_t sub_id)
{
    if (codec_topic_filter_check(filter) != CODEC_OK || (options & 3) == 3)
        return true; /* not a filter this hub would have stored: skip it */
    codec_subscription e = {.filter = filter,
                            .qos = options & 3,
                            .no_local = options & 0x04,
                            .retain_as_published = options & 0x08,
                            .retain_handling = (options >> 4) & 3};
    return sub_add(b, s, &e, sub_id) != NULL;
}

/* Retained messages for a subscription (3.3.1.3): retain flag set, QoS
 * lowered to the subscription's, never for shared subscriptions. */
typedef struct retained_ctx {
    broker *b;
    sub *x;
    uint64_t now;
} retained_ctx;

static void visit_retained(tree_node *node, void *value, void *ctx)
{
    retained_ctx *r = ctx;
    msg *m = value;
    session *s = r->x->s;
    (void)node;
    if (m->expires_at && m->expires_at <= r->now)
        return;
    if (!policy_may_receive(s->policies, m->topic))
        return;
    uint8_t qos = m->qos < r->x->qos ? m->qos : r->x->qos;
    uint32_t id = r->x->sub_id;
    session_enqueue(r->b, s, m, qos, true, &id, id ? 1 : 0, false, r->now);
}

/* why: the Reason String of a SUBACK that refuses a filter, or NULL. */
static void send_suback(broker *b, broker_conn *c, uint8_t type, uint16_t packet_id,
                        const uint8_t *reasons, size_t n, const char *why)
{
    codec_suback ack = {.packet_id = packet_id, .reasons = {reasons, n}};
    explain(c, &ack.props, why, false);
    size_t need;
    if (codec_encode_suback(type, &ack, c->version, NULL, 0, &need) != CODEC_ERR_BUFFER)
        return;
    if (explained_too_big(&ack.props, need, conn_client_max(c)) &&
        codec_encode_suback(type, &ack, c->version, NULL, 0, &need) != CODEC_ERR_BUFFER)
        return;
    uint8_t *out = buf_tail(&c->out, need);
    size_t written;
    if (!out) {
        conn_close(b, c, 0x97, "output buffer full");
        return;
    }
    if (codec_encode_suback(type, &ack, c->version, out, need, &written) == CODEC_OK) {
        buf_commit(&c->out, written);
        conn_mark_dirty(b, c);
    }
}

/* The SUBACK code for one requested filter; *out gets the subscription made
 * or updated, *is_new whether it was new; *why why it was refused. */
static uint8_t subscribe_one(broker *b, session *s, const codec_subscription *e, uint32_t sub_id,
                             sub **out, bool *is_new, const char **why)
{
    bool v5 = s->version == CODEC_V5;
    *out = NULL;
    *is_new = false;
    codec_bytes share, inner = e->filter;
    if (codec_topic_filter_check(e->filter) != CODEC_OK) {
        *why = "topic filter not valid";
        return v5 ? 0x8F : 0x80;
    }
    if (!codec_topic_shared_split(e->filter, &share, &inner))
        inner = e->filter;
    if (inner.len > b->lim.max_topic_length ||
        codec_topic_levels(inner) > b->lim.max_topic_levels) {
        broker_log(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who,
                   "SUBSCRIBE '%.*s' refused: longer or deeper than the limit",
                   (int)(e->filter.len > 128 ? 128 : e->filter.len), (const char *)e->filter.ptr);
        broker_refused(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who, s->conn ? s->conn->io : NULL,
                       e->filter, "limit");
        *why = "topic filter longer or deeper than the limit";
        return v5 ? 0x8F : 0x80;
    }
    if (!policy_may_subscribe(s->policies, e->filter)) {
        broker_log(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who,
                   "SUBSCRIBE '%.*s' refused: not authorized by policy",
                   (int)(e->filter.len > 128 ? 128 : e->filter.len), (const char *)e->filter.ptr);
        broker_refused(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who, s->conn ? s->conn->io : NULL,
                       e->filter, "policy");
        b->stats.refused++;
        *why = "not authorized by policy";
        return v5 ? 0x87 : 0x80;
    }
    sub *x = find_sub(s, e->filter, NULL);
    if (x) {
        /* Same filter again: replace its options (3.8.4). */
        x->qos = e->qos;
        x->no_local = e->no_local;
        x->retain_as_published = e->retain_as_published;
        x->retain_handling = e->retain_handling;
        x->sub_id = sub_id;
    } else {
        if (s->nsubs >= b->lim.max_subscriptions) {
            broker_log(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who,
                       "SUBSCRIBE refused: %zu subscriptions is the limit",
                       b->lim.max_subscriptions);
            broker_refused(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who, s->conn ? s->conn->io : NULL,
                           e->filter, "limit");
            *why = "subscriptions per session at the limit";
            return v5 ? 0x97 : 0x80;
        }
        x = sub_add(b, s, e, sub_id);
        if (!x) {
            *why = "out of memory";
            return 0x80;
        }
        *is_new = true;
    }
    if (s->persistent && store_touch(b, s->conn)) {
        broker_store *st = b->cfg.store;
        if (!st->sub_put(st->ctx, session_id(s), x->filter, options_byte(x), x->sub_id))
            b->store_failed = true;
    }
    *out = x;
    return e->qos; /* granted QoS: everything up to 2 is supported */
}

void handle_subscribe(broker *b, broker_conn *c, const codec_subscribe *p, uint64_t now)
{
    session *s = c->s;
    if (!s)
        return;
    uint32_t sub_id = p->props.sub_id_count ? p->props.subscription_id : 0;
    uint8_t *reasons = calloc(p->count ? p->count : 1, 1);
    sub **made = calloc(p->count, sizeof(*made));
    bool *fresh = calloc(p->count, sizeof(*fresh));
    if (!reasons || !made || !fresh) {
        free(reasons);
        free(made);
        free(fresh);
        conn_close(b, c, 0x83, "out of memory");
        return;
    }
    size_t pos = 0, i = 0;
    codec_subscription e;
    const char *why = NULL; /* the first refusal's */
    while (i < p->count && codec_subscribe_next(p, s->version, &pos, &e)) {
        const char *this_why = NULL;
        reasons[i] = subscribe_one(b, s, &e, sub_id, &made[i], &fresh[i], &this_why);
        if (!why)
            why = this_why;
        i++;
    }
    send_suback(b, c, CODEC_SUBACK, p->packet_id, reasons, i, why);

    /* Retained messages after the SUBACK, per retain handling: 0 always,
     * 1 only for a new subscription, 2 never. */
    for (size_t k = 0; k < i; k++) {
        sub *x = made[k];
        if (!x || x->share.len || x->retain_handling == 2 || (x->retain_handling == 1 && !fresh[k]))
            continue;
        retained_ctx r = {b, x, now};
        tree_match_topics(b->retained, x->inner, visit_retained, &r);
    }
    free(reasons);
    free(made);
    free(fresh);
    session_pump(b, s, now);
}

void handle_unsubscribe(broker *b, broker_conn *c, const codec_unsubscribe *p)
{
    session *s = c->s;
    if (!s)
        return;
    uint8_t *reasons = calloc(p->count ? p->count : 1, 1);
    if (!reasons) {
        conn_close(b, c, 0x83, "out of memory");
        return;
    }
    size_t pos = 0, i = 0;
    codec_bytes filter;
    while (i < p->count && codec_unsubscribe_next(p, &pos, &filter)) {
        sub *x = find_sub(s, filter, NULL);
        if (codec_topic_filter_check(filter) != CODEC_OK)
            reasons[i] = 0x8F;
        else if (!x)
            reasons[i] = 0x11; /* no subscription existed */
        else {
            sub_remove(b, x, true);
            reasons[i] = 0x00;
        }
        i++;
    }
    /* A 3.1.1 UNSUBACK carries no codes. */
    send_suback(b, c, CODEC_UNSUBACK, p->packet_id, reasons, s->version == CODEC_V5 ? i : 0, NULL);
    free(reasons);
}

void session_recheck_subs(broker *b, session *s)
{
    size_t i = 0;
    while (i < s->nsubs) {
        sub *x = s->subs[i];
        if (s->policies && policy_may_subscribe(s->policies, x->filter)) {
            i++;
            continue;
        }
        broker_log(b, BROKER_EV_REFUSED_SUBSCRIBE, s->who,
                   "subscription '%.*s' removed: no longer allowed by policy",
                   (int)(x->filter.len > 128 ? 128 : x->filter.len), (const char *)x->filter.ptr);
        sub_remove(b, x, true); /* swaps the last into slot i */
    }
}
