/*
 * publish.c — messages in, messages out.
 *
 * Inbound: topic aliases, limits, the publish policy, the device's rate,
 * QoS 2 de-duplication, retained messages, then routing. Outbound: each
 * session has one ordered queue of deliveries; the head of it is sent as the
 * client's receive maximum and the connection's output buffer allow, with
 * outbound topic aliases when the client accepts them.
 *
 * Refusals: an MQTT 5 client gets the reason code in its PUBACK/PUBREC (or a
 * DISCONNECT when the spec has no other way); an MQTT 3.1.1 client has no
 * way to learn of a refusal, and acknowledging a message that was dropped
 * would be a lie, so its connection is closed ([MQTT-3.3.5-2] allows either).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

/* Stop filling a connection's output past this; resume when it drains. */
#define OUTPUT_HIGH_WATER (256u * 1024u)

/* An error reason may carry its Reason String (why, static). */
static void send_ack_now(broker *b, broker_conn *c, uint8_t type, uint16_t packet_id,
                         uint8_t reason, const char *why)
{
    codec_ack a = {.packet_id = packet_id, .reason = c->version == CODEC_V5 ? reason : 0};
    if (reason >= 0x80)
        explain(c, &a.props, why, false);
    uint8_t pkt[512];
    size_t n;
    codec_status st;
    do
        st = codec_encode_ack(type, &a, c->version, pkt, sizeof(pkt), &n);
    while (st == CODEC_OK && explained_too_big(&a.props, n, conn_client_max(c)));
    if (st == CODEC_OK)
        (void)conn_send(b, c, pkt, n);
}

/* With several workers a PUBACK/PUBREC promises what other workers store
 * too, so it waits in the connection's FIFO (which keeps acknowledgements in
 * the order of their PUBLISHes, [MQTT-4.6.0-2]) until broker_release_acks.
 * Held only when another thread stores the message (wait), or to stay
 * behind an earlier held one of the same connection (order of acks). */
static void queue_ack(broker *b, broker_conn *c, held_ack a, bool wait)
{
    if (!b->relay.hold_acks || (a.type != CODEC_PUBACK && a.type != CODEC_PUBREC) ||
        (!wait && !c->held_last)) {
        send_ack_now(b, c, a.type, a.packet_id, a.reason, a.why);
        return;
    }
    held_ack *h = malloc(sizeof(*h));
    if (!h || (!c->holding_listed && !broker_hold_list(b, c))) {
        free(h);
        conn_close(b, c, 0x83, "out of memory"); /* no acknowledgement is a safe answer */
        return;
    }
    *h = a;
    h->pass = b->pass;
    if (h->reason != 0x10)
        h->gid = 0;
    else if (h->gid && !hmap_put(&b->unmatched, (const uint8_t *)&h->gid, sizeof(h->gid), h))
        h->reason = 0x00; /* cannot track it: say the safe, less precise thing */
    held_push(c, h);
}

void send_ack(broker *b, broker_conn *c, uint8_t type, uint16_t packet_id, uint8_t reason)
{
    queue_ack(b, c, (held_ack){.type = type, .reason = reason, .packet_id = packet_id}, false);
}

void send_publish_ack(broker *b, broker_conn *c, uint8_t type, uint16_t packet_id, uint8_t reason,
                      uint64_t gid, bool wait)
{
    queue_ack(b, c, (held_ack){.gid = gid, .type = type, .reason = reason, .packet_id = packet_id},
              wait);
}

/* Send (ok) or drop (the pass was lost) the held acks of passes <= through. */
void broker_release_acks(broker *b, uint64_t through, bool ok)
{
    size_t keep = 0;
    for (size_t i = 0; i < b->holding.n; i++) {
        broker_conn *c = b->holding.v[i];
        bool lost = false;
        while (held_oldest(c) && held_oldest(c)->pass <= through) {
            held_ack *h = held_pop(c);
            if (h->gid)
                hmap_del(&b->unmatched, (const uint8_t *)&h->gid, sizeof(h->gid));
            if (ok && c->state != CONN_CLOSING)
                send_ack_now(b, c, h->type, h->packet_id, h->reason, h->why);
            else
                lost = true;
            free(h);
        }
        if (lost && !ok && c->state != CONN_CLOSING) {
            /* What it was promised was not stored: let it publish again. */
            buf_consume(&c->out, c->out.len);
            conn_close(b, c, 0, NULL);
        }
        if (c->held_last)
            b->holding.v[keep++] = c;
        else
            c->holding_listed = false;
    }
    b->holding.n = keep;
}

void broker_ack_matched(broker *b, uint64_t gid)
{
    held_ack *h = hmap_del(&b->unmatched, (const uint8_t *)&gid, sizeof(gid));
    if (h) {
        h->reason = 0x00;
        h->gid = 0;
    }
}

/* Refuse one inbound PUBLISH (see the file comment). */
static void refuse_publish(broker *b, broker_conn *c, const codec_publish *p, uint8_t reason,
                           const char *why)
{
    broker_log(b, BROKER_EV_REFUSED_PUBLISH, c->who, "PUBLISH to '%.*s' refused: %s",
               (int)(p->topic.len > 128 ? 128 : p->topic.len), (const char *)p->topic.ptr, why);
    broker_refused(b, BROKER_EV_REFUSED_PUBLISH, c->who, c->io, p->topic,
                   broker_reason_word(reason));
    b->stats.refused++;
    if (c->version != CODEC_V5) {
        conn_close(b, c, 0, NULL);
        return;
    }
    if (p->qos > 0)
        queue_ack(b, c,
                  (held_ack){.why = why,
                             .type = p->qos == 1 ? CODEC_PUBACK : CODEC_PUBREC,
                             .reason = reason,
                             .packet_id = p->packet_id},
                  false);
}

static bool qos2_in_has(const session *s, uint16_t id, size_t *at)
{
    const session_rare *r = s->rare;
    for (size_t i = 0; r && i < r->nqos2_in; i++) {
        if (r->qos2_in[i] == id) {
            if (at)
                *at = i;
            return true;
        }
    }
    return false;
}

bool qos2_in_push(session *s, uint16_t id)
{
    session_rare *r = session_rare_of(s);
    if (!r)
        return false;
    if (r->nqos2_in == r->qos2_in_cap) {
        uint32_t n = r->qos2_in_cap ? r->qos2_in_cap * 2 : 8;
        uint16_t *a = realloc(r->qos2_in, n * sizeof(*a));
        if (!a)
            return false;
        r->qos2_in = a;
        r->qos2_in_cap = n;
    }
    r->qos2_in[r->nqos2_in++] = id;
    return true;
}

static bool qos2_in_add(broker *b, session *s, uint16_t id)
{
    if (!qos2_in_push(s, id))
        return false;
    if (s->persistent && store_touch(b, s->conn)) {
        broker_store *st = b->cfg.store;
        if (!st->qos2_put(st->ctx, session_id(s), id))
            b->store_failed = true;
    }
    return true;
}

/* Resolve an MQTT 5 topic alias (3.3.2.3.4). Returns false after closing. */
static bool resolve_alias(broker *b, broker_conn *c, codec_publish *p)
{
    session *s = c->s;
    if (!CODEC_HAS(&p->props, CODEC_PROP_TOPIC_ALIAS))
        return true;
    uint16_t alias = p->props.topic_alias;
    if (alias > b->lim.topic_alias_maximum) {
        conn_close(b, c, 0x94, "topic alias above the maximum");
        return false;
    }
    session_rare *r = session_rare_of(s);
    if (r && !r->alias_in)
        r->alias_in = calloc((size_t)b->lim.topic_alias_maximum + 1, sizeof(alias_entry));
    if (!r || !r->alias_in) {
        conn_close(b, c, 0x83, "out of memory");
        return false;
    }
    alias_entry *e = &r->alias_in[alias];
    if (p->topic.len == 0) {
        if (!e->topic) {
            conn_close(b, c, 0x82, "unknown topic alias");
            return false;
        }
        p->topic = (codec_bytes){e->topic, e->len};
        return true;
    }
    uint8_t *copy = malloc(p->topic.len);
    if (!copy) {
        conn_close(b, c, 0x83, "out of memory");
        return false;
    }
    memcpy(copy, p->topic.ptr, p->topic.len);
    free(e->topic);
    e->topic = copy;
    e->len = p->topic.len;
    return true;
}

/* Token bucket: max_publish_rate per second with the same burst. */
static bool rate_ok(broker *b, session *s, uint64_t now)
{
    uint32_t rate = b->lim.max_publish_rate;
    if (rate == 0 || s->who->kind != BROKER_DEVICE)
        return true;
    if (s->rate_at == 0) {
        s->rate_tokens = rate;
    } else if (now > s->rate_at) {
        s->rate_tokens += (double)(now - s->rate_at) * rate / 1000.0;
        if (s->rate_tokens > rate)
            s->rate_tokens = rate;
    }
    s->rate_at = now;
    if (s->rate_tokens < 1.0)
        return false;
    s->rate_tokens -= 1.0;
    return true;
}

/* Offer a PUBLISH to a "$" topic to the server (broker_config.request):
 * true when it was answered here (taken or refused) and must not be routed. */
static bool take_request(broker *b, broker_conn *c, const codec_publish *p)
{
    session *s = c->s;
    broker_request r = {.who = c->who,
                        .io = c->io,
                        .client_id = session_id(s),
                        .topic = p->topic,
                        .payload = p->payload,
                        .props = s->version == CODEC_V5 ? &p->props : NULL};
    int answer = b->cfg.request(b->cfg.request_ctx, &r);
    if (answer == BROKER_REQUEST_PASS)
        return false;
    if (answer != BROKER_REQUEST_TAKEN) {
        refuse_publish(b, c, p, (uint8_t)(answer >= 0x80 && answer <= 0xFF ? answer : 0x83),
                       "request refused");
        return true;
    }
    if (p->qos == 2 && !qos2_in_add(b, s, p->packet_id)) {
        conn_close(b, c, 0x83, "out of memory");
        return true;
    }
    b->stats.msgs_in++;
    if (p->qos == 1)
        send_ack(b, c, CODEC_PUBACK, p->packet_id, 0);
    else if (p->qos == 2)
        send_ack(b, c, CODEC_PUBREC, p->packet_id, 0);
    return true;
}

void handle_publish(broker *b, broker_conn *c, const codec_publish *in, uint64_t now)
{
    session *s = c->s;
    codec_publish p = *in;
    if (!s)
        return;
    if (!resolve_alias(b, c, &p))
        return;
    if (p.topic.len > b->lim.max_topic_length ||
        codec_topic_levels(p.topic) > b->lim.max_topic_levels) {
        refuse_publish(b, c, &p, 0x90, "topic longer or deeper than the limit");
        return;
    }
    if (!policy_may_publish(s->policies, p.topic)) {
        refuse_publish(b, c, &p, 0x87, "not authorized by policy");
        return;
    }
    if (!rate_ok(b, s, now)) {
        broker_log(b, BROKER_EV_REFUSED_PUBLISH, c->who, "publish rate above %u/s",
                   (unsigned)b->lim.max_publish_rate);
        broker_refused(b, BROKER_EV_REFUSED_PUBLISH, c->who, c->io, p.topic, "rate");
        b->stats.refused++;
        conn_close(b, c, 0x96, "message rate too high");
        return;
    }
    if (CODEC_HAS(&p.props, CODEC_PROP_PAYLOAD_FORMAT) && p.props.payload_format == 1 &&
        !codec_utf8_valid(p.payload)) {
        refuse_publish(b, c, &p, 0x99, "payload is not the UTF-8 its format indicator says");
        return;
    }
    if (b->relay.check_publish) {
        uint8_t why = b->relay.check_publish(b->relay.ctx, c->who, p.topic, p.payload);
        if (why) {
            refuse_publish(b, c, &p, why, "payload refused (a moat envelope that does not decode)");
            return;
        }
    }
    if (p.qos == 2) {
        if (qos2_in_has(s, p.packet_id, NULL)) {
            /* A resend of a message already taken: acknowledge, do not route. */
            send_ack(b, c, CODEC_PUBREC, p.packet_id, 0);
            return;
        }
        if (s->rare && s->rare->nqos2_in >= b->lim.max_inflight) {
            conn_close(b, c, 0x93, "receive maximum exceeded");
            return;
        }
    }
    if (b->cfg.request && p.topic.len && p.topic.ptr[0] == '$' && take_request(b, c, &p))
        return;

    uint64_t expires = 0;
    if (CODEC_HAS(&p.props, CODEC_PROP_MESSAGE_EXPIRY))
        expires = now + (uint64_t)p.props.message_expiry * 1000u;
    msg *m = msg_with_props(p.topic, p.payload, s->version == CODEC_V5 ? &p.props : NULL,
                            session_id(s), p.qos, p.retain, expires);
    if (!m) {
        refuse_publish(b, c, &p, 0x83, "out of memory");
        return;
    }
    b->stats.msgs_in++;
    if (p.qos == 2 && !qos2_in_add(b, s, p.packet_id)) {
        msg_unref(m);
        conn_close(b, c, 0x83, "out of memory");
        return;
    }
    if (b->relayed)
        m->gid = broker_next_id(b);
    if (p.retain && !b->relay.retained_replica)
        retain_set(b, m, true);
    route(b, m, now);
    bool wait = relay_out(b, m, BROKER_FWD_ROUTE, c->who);
    /* With several workers, 0x10 is provisional: broker_ack_matched. */
    bool delivered = b->route_matched;
    /* Its acknowledgement promises what routing stored (queues of offline or
     * persistent sessions, whose conn is not this one), or failed to store:
     * hold it for the commit. */
    if (p.qos > 0 && (m->store_id || b->store_failed))
        (void)store_touch(b, c);
    uint64_t gid = m->gid;
    msg_unref(m);

    uint8_t reason = delivered ? 0x00 : 0x10; /* 0x10: no matching subscribers */
    if (p.qos == 1)
        send_publish_ack(b, c, CODEC_PUBACK, p.packet_id, reason, gid, wait);
    else if (p.qos == 2)
        send_publish_ack(b, c, CODEC_PUBREC, p.packet_id, reason, gid, wait);
}

/* ---- retained ----------------------------------------------------------- */

void msg_release_durable(broker *b, msg *m)
{
    if (m->durable_refs == 0 || --m->durable_refs > 0 || !m->store_id)
        return;
    if (store_touch(b, NULL)) {
        broker_store *st = b->cfg.store;
        if (!st->msg_delete(st->ctx, m->store_id))
            b->store_failed = true;
    }
    m->store_id = 0;
}

bool msg_make_durable(broker *b, msg *m, broker_conn *c)
{
    if (!store_touch(b, c))
        return false;
    broker_store *st = b->cfg.store;
    if (!m->store_id) {
        m->store_id = broker_next_id(b);
        store_msg_row row = {m->store_id, m->topic, m->payload, m->props,
                             m->origin,   m->qos,   m->retain,  m->expires_at};
        if (!st->msg_put(st->ctx, &row)) {
            b->store_failed = true;
            m->store_id = 0;
            return false;
        }
    }
    m->durable_refs++;
    return true;
}

uint64_t broker_next_id(broker *b)
{
    if (b->relay.next_id)
        return b->relay.next_id(b->relay.ctx);
    return ++b->last_msg_id;
}

bool relay_out(broker *b, msg *m, uint8_t flags, const broker_principal *from)
{
    if (!b->relayed)
        return false;
    broker_fwd f = fwd_of(m, flags, from);
    return b->relay.forward(b->relay.ctx, &f);
}

broker_fwd fwd_of(const msg *m, uint8_t flags, const broker_principal *from)
{
    return (broker_fwd){.topic = m->topic,
                        .payload = m->payload,
                        .props = m->props,
                        .origin = m->origin,
                        .qos = m->qos,
                        .retain = m->retain,
                        .expires_at = m->expires_at,
                        .gid = m->gid,
                        .flags = flags,
                        .from = from};
}

bool broker_inject(broker *b, const broker_fwd *f, uint64_t now_ms)
{
    msg *m = msg_new(f->topic, f->payload, f->props, f->origin, f->qos, f->retain, f->expires_at);
    if (!m) {
        broker_log(b, BROKER_EV_DROPPED, NULL,
                   "message from another worker dropped: out of memory");
        return false;
    }
    bool matched = false;
    m->gid = f->gid;
    if (f->flags & BROKER_FWD_RETAIN_STORE) {
        retain_set(b, m, true);
        (void)relay_out(b, m, BROKER_FWD_RETAIN_REPLICA, NULL);
    } else if (f->flags & BROKER_FWD_RETAIN_REPLICA) {
        retain_set(b, m, false);
    }
    if (f->flags & BROKER_FWD_SHARE) {
        matched = share_redeliver(b, m, f->share, false, now_ms);
    } else if ((f->flags & BROKER_FWD_ROUTE) && f->to.len) {
        route_to(b, m, f->to, now_ms);
        matched = b->route_matched;
    } else if (f->flags & BROKER_FWD_ROUTE) {
        route(b, m, now_ms);
        matched = b->route_matched;
    }
    msg_unref(m);
    return matched;
}

void retain_set(broker *b, msg *m, bool durable)
{
    bool clear = m->payload.len == 0;
    tree_node *n = tree_get(b->retained, m->topic, !clear);
    if (!n)
        return;
    void **slot = tree_value(n);
    msg *old = *slot;
    broker_conn *c = NULL;
    session *s = session_find(&b->sessions, m->origin);
    if (s)
        c = s->conn;
    if (old) {
        if (durable)
            msg_release_durable(b, old);
        msg_unref(old);
        *slot = NULL;
    }
    broker_store *st = b->cfg.store;
    if (clear) {
        if (durable && old && store_touch(b, c) && !st->retained_delete(st->ctx, m->topic))
            b->store_failed = true;
        tree_prune(b->retained, n);
        return;
    }
    *slot = msg_ref(m);
    if (durable && msg_make_durable(b, m, c) && !st->retained_put(st->ctx, m->topic, m->store_id))
        b->store_failed = true;
}

/* ---- routing ------------------------------------------------------------ */

static void touch_session(broker *b, session *s)
{
    if (b->ntouched == b->touched_cap) {
        size_t n = b->touched_cap ? b->touched_cap * 2 : 64;
        session **a = realloc(b->touched, n * sizeof(*a));
        if (!a)
            return; /* the session is pumped on its next acknowledgement */
        b->touched = a;
        b->touched_cap = n;
    }
    b->touched[b->ntouched++] = s;
}

static void queue_row(const session *s, const delivery *d, store_queue_row *row);

/* A persistent session's delivery changed by a merge: store it as it will be
 * sent (its first row, if its first subscription gave it QoS 0). */
static void delivery_store(broker *b, session *s, delivery *d)
{
    bool fresh = !d->stored;
    if (fresh ? !msg_make_durable(b, d->m, s->conn) : !store_touch(b, s->conn))
        return;
    broker_store *st = b->cfg.store;
    store_queue_row row;
    queue_row(s, d, &row);
    if (st->queue_put(st->ctx, &row)) {
        d->stored = true;
    } else {
        b->store_failed = true;
        if (fresh)
            msg_release_durable(b, d->m);
    }
}

static void deliver_to(broker *b, sub *x, msg *m, uint64_t now)
{
    session *s = x->s;
    b->route_matched = true;
    if (x->no_local && m->origin.len == session_id(s).len &&
        memcmp(m->origin.ptr, session_id(s).ptr, m->origin.len) == 0)
        return;
    if (!s->policies || !policy_may_receive(s->policies, m->topic))
        return;
    uint8_t qos = m->qos < x->qos ? m->qos : x->qos;
    bool retain = x->retain_as_published && m->retain;
    if (s->route_epoch == b->route_epoch && s->route_delivery) {
        /* Several of its subscriptions match: one delivery with all their
         * identifiers at the highest QoS (3.3.4). */
        delivery *d = s->route_delivery;
        bool changed = qos > d->qos || (retain && !d->retain) ||
                       (x->sub_id && d->nsub_ids < DELIVERY_MAX_SUB_IDS);
        if (qos > d->qos)
            d->qos = qos;
        d->retain = d->retain || retain;
        if (x->sub_id && d->nsub_ids < DELIVERY_MAX_SUB_IDS)
            d->sub_ids[d->nsub_ids++] = x->sub_id;
        if (changed && d->qos > 0 && s->persistent)
            delivery_store(b, s, d);
        return;
    }
    uint32_t ids[1] = {x->sub_id};
    s->route_epoch = b->route_epoch;
    s->route_delivery = NULL;
    session_enqueue(b, s, m, qos, retain, ids, x->sub_id ? 1 : 0, x->share.len > 0, now);
    touch_session(b, s);
}

typedef struct route_ctx {
    broker *b;
    msg *m;
    uint64_t now;
} route_ctx;

static void visit_plain(tree_node *node, void *value, void *ctx)
{
    route_ctx *r = ctx;
    (void)node;
    for (sub *x = value; x; x = x->next)
        deliver_to(r->b, x, r->m, r->now);
}

/* The member of g that gets m: round robin, preferring members that are
 * online; NULL when g has none, or when another worker serves g for m (a
 * group spanning workers: exactly one of them serves each message). */
static sub *share_pick(broker *b, share_group *g, const msg *m)
{
    if (g->hub_group && !b->relay.share_mine(b->relay.ctx, g->hub_group, m->gid))
        return NULL;
    size_t n = 0;
    for (sub *x = g->members; x; x = x->next)
        n++;
    if (n == 0)
        return NULL;
    for (size_t tries = 0; tries < n; tries++) {
        size_t at = g->next_pick++ % n;
        sub *x = g->members;
        while (at--)
            x = x->next;
        if (x->s->conn)
            return x;
    }
    return g->members;
}

static void visit_shared(tree_node *node, void *value, void *ctx)
{
    route_ctx *r = ctx;
    (void)node;
    for (share_group *g = value; g; g = g->next) {
        sub *pick = share_pick(r->b, g, r->m);
        if (!pick)
            continue;
        /* Each share group delivers its own copy, even to a session that also
         * has a plain subscription matching (MQTT 5 4.8.2). */
        pick->s->route_delivery = NULL;
        deliver_to(r->b, pick, r->m, r->now);
    }
}

/* MQTT 5 4.8.2: a message a member's session ended with goes to another
 * member (a SHOULD). */
bool share_redeliver(broker *b, msg *m, codec_bytes filter, bool relay, uint64_t now)
{
    codec_bytes name, inner;
    if (!codec_topic_shared_split(filter, &name, &inner))
        return false;
    share_group *g = NULL;
    tree_node *n = tree_get(b->shared, inner, false);
    if (n)
        for (g = *(share_group **)tree_value(n); g; g = g->next)
            if (g->name.len == name.len && memcmp(g->name.ptr, name.ptr, name.len) == 0)
                break;
    sub *pick = g ? share_pick(b, g, m) : NULL;
    if (!pick) {
        if (relay && b->relayed) {
            broker_fwd f = fwd_of(m, BROKER_FWD_SHARE, NULL);
            f.share = filter;
            (void)b->relay.forward(b->relay.ctx, &f);
        }
        return false;
    }
    b->route_epoch++;
    b->ntouched = 0;
    pick->s->route_delivery = NULL;
    deliver_to(b, pick, m, now);
    for (size_t i = 0; i < b->ntouched; i++) {
        session *s = b->touched[i];
        s->route_delivery = NULL;
        session_pump(b, s, now);
    }
    b->ntouched = 0;
    return true;
}

void route(broker *b, msg *m, uint64_t now)
{
    route_ctx r = {b, m, now};
    b->route_epoch++;
    b->route_matched = false;
    b->ntouched = 0;
    tree_match_filters(b->subs, m->topic, visit_plain, &r);
    tree_match_filters(b->shared, m->topic, visit_shared, &r);
    /* Merged deliveries are final (and stored) now; send them. */
    for (size_t i = 0; i < b->ntouched; i++) {
        session *s = b->touched[i];
        s->route_delivery = NULL;
        session_pump(b, s, now);
    }
    b->ntouched = 0;
}

/* Route to one session only, through its own subscriptions (a share group's
 * member is treated like a plain subscriber here: the message is for it). */
void route_to(broker *b, msg *m, codec_bytes client_id, uint64_t now)
{
    b->route_epoch++;
    b->route_matched = false;
    session *s = session_find(&b->sessions, client_id);
    if (!s)
        return;
    for (size_t i = 0; i < s->nsubs; i++) {
        sub *x = s->subs[i];
        if (codec_topic_matches(x->inner, m->topic))
            deliver_to(b, x, m, now);
    }
    s->route_delivery = NULL;
    session_pump(b, s, now);
}

/* ---- session queues ----------------------------------------------------- */

static void queue_row(const session *s, const delivery *d, store_queue_row *row)
{
    *row = (store_queue_row){session_id(s),     d->seq,       d->m->store_id, d->qos, d->retain,
                             (uint8_t)d->state, d->packet_id, d->nsub_ids,    {0},    d->shared};
    memcpy(row->sub_ids, d->sub_ids, sizeof(row->sub_ids));
}

/* Count a dropped message; log it at most once per 10 s per session, with
 * the running count: a hub that wrote a line per drop under overload would
 * spend its time logging instead of delivering. */
static void note_drop(broker *b, session *s, const msg *m, const char *why, uint64_t now)
{
    b->stats.dropped++;
    session_rare *r = session_rare_of(s);
    if (!r)
        return; /* out of memory: counted in the stats only */
    r->drops++;
    if (r->drops_logged_at && now - r->drops_logged_at < 10000)
        return;
    r->drops_logged_at = now ? now : 1;
    broker_log(b, BROKER_EV_DROPPED, s->who,
               "queue of '%.*s' %s: message to '%.*s' dropped (%llu dropped so far; logged "
               "at most every 10 s)",
               (int)session_id(s).len, (const char *)session_id(s).ptr, why, (int)m->topic.len,
               (const char *)m->topic.ptr, (unsigned long long)r->drops);
}

void session_enqueue(broker *b, session *s, msg *m, uint8_t qos, bool retain,
                     const uint32_t *sub_ids, size_t nsub_ids, bool shared, uint64_t now)
{
    if (!s->conn && qos == 0)
        return; /* QoS 0 is not kept for offline sessions */
    if (s->queued >= b->lim.max_queued) {
        char why[64];
        snprintf(why, sizeof(why), "full (%" PRIu32 " messages)", s->queued);
        note_drop(b, s, m, why, now);
        return;
    }
    /* At most once: a QoS 0 message for a client that is not keeping up is
     * dropped rather than queued behind output it has not read. */
    if (qos == 0 && s->conn && s->conn->out.len >= OUTPUT_HIGH_WATER) {
        note_drop(b, s, m, "not keeping up (QoS 0)", now);
        return;
    }
    delivery *d = calloc(1, sizeof(*d));
    if (!d)
        return;
    *d = (delivery){
        .m = msg_ref(m), .seq = s->next_seq++, .qos = qos, .retain = retain, .shared = shared};
    for (size_t i = 0; i < nsub_ids && i < DELIVERY_MAX_SUB_IDS; i++)
        d->sub_ids[d->nsub_ids++] = sub_ids[i];
    if (qos > 0 && s->persistent && msg_make_durable(b, m, s->conn)) {
        broker_store *st = b->cfg.store;
        store_queue_row row;
        queue_row(s, d, &row);
        if (st->queue_put(st->ctx, &row))
            d->stored = true;
        else
            b->store_failed = true;
        if (!d->stored)
            msg_release_durable(b, m);
    }
    queue_append(s, d);
    s->route_delivery = d;
}

void queue_append(session *s, delivery *d)
{
    if (s->queue_tail)
        s->queue_tail->next = d;
    else
        s->queue_head = d;
    s->queue_tail = d;
    if (!s->send_next)
        s->send_next = d;
    s->queued++;
}

static void pid_mark(session *s, uint16_t id, bool used);

void delivery_free(broker *b, session *s, delivery *d, bool delete_row)
{
    pid_mark(s, d->packet_id, false);
    if (d->stored) {
        if (delete_row && store_touch(b, s->conn)) {
            broker_store *st = b->cfg.store;
            if (!st->queue_delete(st->ctx, session_id(s), d->seq))
                b->store_failed = true;
        }
        msg_release_durable(b, d->m);
    }
    if (d->state != DELIVERY_QUEUED)
        s->inflight--;
    s->queued--;
    msg_unref(d->m);
    free(d);
}

static void unlink_delivery(session *s, delivery *d)
{
    if (s->send_next == d)
        s->send_next = d->next;
    delivery *prev = NULL;
    for (delivery *x = s->queue_head; x; prev = x, x = x->next) {
        if (x != d)
            continue;
        if (prev)
            prev->next = d->next;
        else
            s->queue_head = d->next;
        if (s->queue_tail == d)
            s->queue_tail = prev;
        return;
    }
}

static void remove_delivery(broker *b, session *s, delivery *d)
{
    unlink_delivery(s, d);
    delivery_free(b, s, d, true);
}

/* Deliveries are sent in queue order, so those holding a packet id (in
 * flight, or held back by session_resend) are a prefix of the queue: every
 * walk over them stops at the first one never sent, and costs at most the
 * send window, however long the queue behind it. */
static bool never_sent(const delivery *d)
{
    return d->state == DELIVERY_QUEUED && d->packet_id == 0;
}

/* Sessions with this many messages in flight track packet ids in a bitmap
 * (8 KiB) instead of walking the in-flight prefix for every new id. */
#define PID_BITMAP_AT 32u

static bool packet_id_in_use(const session *s, uint16_t id)
{
    if (s->rare && s->rare->pid_bits)
        return s->rare->pid_bits[id >> 3] & (1u << (id & 7));
    for (const delivery *d = s->queue_head; d && !never_sent(d); d = d->next)
        if (d->packet_id == id)
            return true;
    return false;
}

static void pid_mark(session *s, uint16_t id, bool used)
{
    uint8_t *bits = s->rare ? s->rare->pid_bits : NULL;
    if (!bits || id == 0)
        return;
    if (used)
        bits[id >> 3] |= (uint8_t)(1u << (id & 7));
    else
        bits[id >> 3] &= (uint8_t) ~(1u << (id & 7));
}

/* Start the bitmap from the ids held now (a failed allocation keeps the walk). */
static void pid_bitmap_start(session *s)
{
    if ((s->rare && s->rare->pid_bits) || s->inflight < PID_BITMAP_AT)
        return;
    session_rare *r = session_rare_of(s);
    if (!r)
        return;
    r->pid_bits = calloc(65536 / 8, 1);
    for (const delivery *d = s->queue_head; r->pid_bits && d && !never_sent(d); d = d->next)
        pid_mark(s, d->packet_id, true);
}

/* How many QoS 1/2 messages may be unacknowledged toward this client: its
 * Receive Maximum, and no more than the hub's own max_inflight, which keeps
 * every per-acknowledgement walk short. */
static size_t send_window(const broker *b, const session *s)
{
    return s->client_receive_max < b->lim.max_inflight ? s->client_receive_max
                                                       : b->lim.max_inflight;
}

static uint16_t next_packet_id(session *s)
{
    pid_bitmap_start(s);
    for (unsigned tries = 0; tries < 65535u; tries++) {
        uint16_t id = s->next_packet_id++;
        if (s->next_packet_id == 0)
            s->next_packet_id = 1;
        if (id != 0 && !packet_id_in_use(s, id)) {
            pid_mark(s, id, true);
            return id;
        }
    }
    return 0;
}

/* The alias to use toward the client for a topic: existing, new, or 0. */
static uint16_t alias_for(session *s, codec_bytes topic, bool *is_new)
{
    *is_new = false;
    if (s->client_alias_max == 0)
        return 0;
    session_rare *r = session_rare_of(s);
    if (!r)
        return 0;
    for (uint16_t i = 0; i < r->alias_out_used; i++)
        if (r->alias_out[i].len == topic.len &&
            memcmp(r->alias_out[i].topic, topic.ptr, topic.len) == 0)
            return (uint16_t)(i + 1);
    if (r->alias_out_used >= s->client_alias_max)
        return 0;
    if (!r->alias_out) {
        r->alias_out = calloc(s->client_alias_max, sizeof(alias_entry));
        if (!r->alias_out)
            return 0;
    }
    uint8_t *copy = malloc(topic.len ? topic.len : 1);
    if (!copy)
        return 0;
    memcpy(copy, topic.ptr, topic.len);
    r->alias_out[r->alias_out_used] = (alias_entry){copy, topic.len};
    *is_new = true;
    return ++r->alias_out_used;
}

/* Forget the alias alias_for just made: the packet that set it was not sent. */
static void alias_undo(session *s)
{
    session_rare *r = s->rare; /* alias_for made it */
    alias_entry *e = &r->alias_out[--r->alias_out_used];
    free(e->topic);
    *e = (alias_entry){NULL, 0};
}

/* Encode and send one delivery. Returns false if it could not be sent now. */
static bool send_publish(broker *b, session *s, delivery *d, bool dup, uint64_t now)
{
    broker_conn *c = s->conn;
    codec_publish p = {.dup = dup,
                       .qos = d->qos,
                       .retain = d->retain,
                       .topic = d->m->topic,
                       .packet_id = d->packet_id,
                       .payload = d->m->payload};
    bool is_new = false;
    if (s->version == CODEC_V5) {
        if (d->m->props.len && codec_props_decode(d->m->props, CODEC_CTX_PUBLISH, CODEC_FROM_SERVER,
                                                  &p.props) != CODEC_OK)
            return false;
        if (d->m->expires_at) {
            uint64_t left = d->m->expires_at > now ? (d->m->expires_at - now + 999) / 1000 : 0;
            CODEC_SET(&p.props, CODEC_PROP_MESSAGE_EXPIRY);
            p.props.message_expiry = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
        }
        p.props.sub_ids = d->sub_ids;
        p.props.sub_ids_len = d->nsub_ids;
        uint16_t alias = dup ? 0 : alias_for(s, d->m->topic, &is_new);
        if (alias) {
            CODEC_SET(&p.props, CODEC_PROP_TOPIC_ALIAS);
            p.props.topic_alias = alias;
            if (!is_new)
                p.topic = (codec_bytes){NULL, 0};
        }
    }
    size_t need;
    codec_status st = codec_encode_publish(&p, s->version, NULL, 0, &need);
    if (st != CODEC_ERR_BUFFER) {
        if (is_new)
            alias_undo(s);
        return false;
    }
    if (s->client_max_packet && need > s->client_max_packet) {
        /* Too large for this client: the caller discards it as if its delivery
         * had completed ([MQTT-3.1.2-25]). */
        if (is_new)
            alias_undo(s);
        b->stats.dropped++;
        return false;
    }
    uint8_t *out = buf_tail(&c->out, need);
    if (!out) {
        conn_close(b, c, 0x97, "output buffer full (slow reader)");
        return false;
    }
    size_t n;
    if (codec_encode_publish(&p, s->version, out, need, &n) != CODEC_OK)
        return false;
    buf_commit(&c->out, n);
    conn_mark_dirty(b, c);
    b->stats.msgs_out++;
    return true;
}

void session_pump(broker *b, session *s, uint64_t now)
{
    broker_conn *c = s->conn;
    if (!c || c->state != CONN_ACTIVE)
        return;
    delivery *d = s->send_next;
    while (d && c->state == CONN_ACTIVE) {
        s->send_next = d; /* whatever returns below, nothing unsent is before d */
        delivery *next = d->next;
        if (d->state != DELIVERY_QUEUED) {
            d = next;
            continue;
        }
        bool again = d->packet_id != 0; /* sent before, held back by session_resend */
        if (!again && d->m->expires_at && d->m->expires_at <= now) {
            remove_delivery(b, s, d); /* expired while queued (3.3.2.3.3) */
            d = next;
            continue;
        }
        if (c->out.len >= OUTPUT_HIGH_WATER)
            return; /* resumes from broker_output_drained */
        if (d->qos > 0) {
            if (s->inflight >= send_window(b, s))
                return;
            if (!again)
                d->packet_id = next_packet_id(s);
            if (d->packet_id == 0)
                return;
        }
        if (!send_publish(b, s, d, again, now)) {
            if (c->state != CONN_ACTIVE)
                return;
            remove_delivery(b, s, d); /* cannot be encoded: drop, never loop */
            d = next;
            continue;
        }
        if (d->qos == 0) {
            remove_delivery(b, s, d);
        } else {
            d->state = DELIVERY_SENT;
            s->inflight++;
            if (d->stored && store_touch(b, c)) {
                broker_store *st = b->cfg.store;
                store_queue_row row;
                queue_row(s, d, &row);
                if (!st->queue_put(st->ctx, &row))
                    b->store_failed = true;
            }
        }
        d = next;
    }
    if (!d)
        s->send_next = NULL;
}

void session_resend(broker *b, session *s, uint64_t now)
{
    broker_conn *c = s->conn;
    /* No more in flight than the new connection's Receive Maximum
     * ([MQTT-3.3.4-9]): PUBLISHes past it wait in the queue, with their
     * packet ids, for session_pump. */
    size_t room = send_window(b, s);
    s->send_next = s->queue_head; /* some may go back to unsent below */
    for (delivery *d = s->queue_head; d; d = d->next)
        if (d->state == DELIVERY_RELEASED && room > 0)
            room--;
    for (delivery *d = s->queue_head, *next; d && c && c->state == CONN_ACTIVE; d = next) {
        next = d->next;
        if (d->state == DELIVERY_SENT && room == 0) {
            d->state = DELIVERY_QUEUED;
            s->inflight--;
        } else if (d->state == DELIVERY_SENT) {
            room--;
            if (!send_publish(b, s, d, true, now) && c->state == CONN_ACTIVE) /* [MQTT-4.4.0-1] */
                remove_delivery(b, s, d); /* cannot be sent on this connection */
        } else if (d->state == DELIVERY_RELEASED) {
            send_ack(b, c, CODEC_PUBREL, d->packet_id, 0);
        }
    }
}

static delivery *find_inflight(session *s, uint16_t id, uint8_t state, uint8_t qos)
{
    for (delivery *d = s->queue_head; d && !never_sent(d); d = d->next)
        if (d->state == state && d->packet_id == id && d->qos == qos)
            return d;
    return NULL;
}

void handle_ack(broker *b, broker_conn *c, uint8_t type, const codec_ack *p, uint64_t now)
{
    session *s = c->s;
    if (!s)
        return;
    delivery *d;
    switch (type) {
    case CODEC_PUBACK:
        if ((d = find_inflight(s, p->packet_id, DELIVERY_SENT, 1)))
            remove_delivery(b, s, d);
        break;
    case CODEC_PUBREC:
        d = find_inflight(s, p->packet_id, DELIVERY_SENT, 2);
        if (!d) {
            send_ack(b, c, CODEC_PUBREL, p->packet_id, 0x92);
            break;
        }
        if (p->reason >= 0x80) { /* the client refused it: the flow ends */
            remove_delivery(b, s, d);
            break;
        }
        d->state = DELIVERY_RELEASED;
        if (d->stored && store_touch(b, c)) {
            broker_store *st = b->cfg.store;
            store_queue_row row;
            queue_row(s, d, &row);
            if (!st->queue_put(st->ctx, &row))
                b->store_failed = true;
        }
        send_ack(b, c, CODEC_PUBREL, p->packet_id, 0);
        break;
    case CODEC_PUBCOMP:
        if ((d = find_inflight(s, p->packet_id, DELIVERY_RELEASED, 2)))
            remove_delivery(b, s, d);
        break;
    case CODEC_PUBREL: {
        size_t at;
        bool known = qos2_in_has(s, p->packet_id, &at);
        if (known) {
            session_rare *r = s->rare; /* it has the id */
            r->qos2_in[at] = r->qos2_in[--r->nqos2_in];
            if (s->persistent && store_touch(b, c)) {
                broker_store *st = b->cfg.store;
                if (!st->qos2_delete(st->ctx, session_id(s), p->packet_id))
                    b->store_failed = true;
            }
        }
        send_ack(b, c, CODEC_PUBCOMP, p->packet_id, known ? 0 : 0x92);
        break;
    }
    default:
        break;
    }
    session_pump(b, s, now);
}
