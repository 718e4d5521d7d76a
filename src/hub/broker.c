/*
 * broker.c — connections, framing, dispatch, group commit, timers and start-up
 * from the store: the parts of the broker that are not one MQTT feature.
 *
 * Input is framed here with the codec's incremental framer; the packet size
 * limit is the small pre-authentication one until CONNECT has been accepted,
 * so an unauthenticated peer cannot make the hub buffer much. Output is only
 * appended to per-connection buffers and handed to the server at the end of
 * the pass, after broker_commit, so acknowledgements never overtake the
 * durability they promise. Connections are closed by the server at the end of
 * a pass (broker_closing), never inside a handler.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

/* Bytes fed to the framer at a time beyond the packet limit. */
#define INPUT_SLACK 16384u

void broker_limits_default(broker_limits *l)
{
    *l = (broker_limits){
        .max_packet_size = 262144,
        .max_packet_before_connect = 8192,
        .max_topic_length = 256,
        .max_topic_levels = 16,
        .max_subscriptions = 64,
        .max_inflight = 32,
        .max_queued = 1000,
        .max_output = 4u << 20,
        .max_keep_alive = 3600,
        .max_session_expiry = 604800,
        .max_publish_rate = 100,
        .topic_alias_maximum = 16,
        .connect_timeout_ms = 10000,
    };
}

void broker_log(broker *b, broker_event ev, const broker_principal *who, const char *fmt, ...)
{
    if (!b->cfg.log)
        return;
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    b->cfg.log(b->cfg.log_ctx, ev, who, detail);
}

void broker_refused(broker *b, broker_event ev, const broker_principal *who, void *io,
                    codec_bytes topic, const char *reason)
{
    if (!b->cfg.refused)
        return;
    broker_refusal r = {.ev = ev, .who = who, .io = io, .topic = topic, .reason = reason};
    b->cfg.refused(b->cfg.log_ctx, &r);
}

const char *broker_reason_word(uint8_t reason)
{
    switch (reason) {
    case 0x85:
        return "client_id";
    case 0x87:
        return "policy";
    case 0x8C:
        return "auth_method";
    case 0x8F:
    case 0x90:
    case 0x93:
    case 0x95:
    case 0x97:
        return "limit";
    case 0x96:
        return "rate";
    case 0x99:
        return "payload";
    case 0x81:
    case 0x82:
    case 0x84:
        return "protocol";
    default:
        return "error";
    }
}

/* ---- lists of connections --------------------------------------------- */

static bool list_push(conn_list *l, broker_conn *c)
{
    if (l->n == l->cap) {
        size_t n = l->cap ? l->cap * 2 : 64;
        broker_conn **a = realloc(l->v, n * sizeof(*a));
        if (!a)
            return false;
        l->v = a;
        l->cap = n;
    }
    l->v[l->n++] = c;
    return true;
}

static void list_remove(conn_list *l, broker_conn *c)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i] == c) {
            l->v[i] = l->v[--l->n];
            return;
        }
    }
}

/* Hand the list out for this pass and start an empty one in the array
 * handed out last time. */
static size_t list_hand(conn_list *l, broker_conn ***out)
{
    broker_conn **handed = l->v;
    size_t n = l->n, cap = l->cap;
    l->v = l->handed;
    l->cap = l->handed_cap;
    l->n = 0;
    l->handed = handed;
    l->handed_cap = cap;
    *out = handed;
    return n;
}

static void list_free(conn_list *l)
{
    free(l->v);
    free(l->handed);
}

bool broker_hold_list(broker *b, broker_conn *c)
{
    if (!list_push(&b->holding, c))
        return false;
    c->holding_listed = true;
    return true;
}

void conn_mark_dirty(broker *b, broker_conn *c)
{
    if (c->dirty)
        return;
    if (list_push(&b->dirty, c))
        c->dirty = true;
}

bool conn_send(broker *b, broker_conn *c, const uint8_t *bytes, size_t len)
{
    if (c->state == CONN_CLOSING)
        return false;
    if (!buf_append(&c->out, bytes, len)) {
        /* A reader this slow cannot be served without unbounded memory. */
        conn_close(b, c, 0x97, "output buffer full (slow reader)");
        return false;
    }
    conn_mark_dirty(b, c);
    return true;
}

void explain(const broker_conn *c, codec_props *props, const char *why, bool always)
{
    if (c->version != CODEC_V5 || !why || (!always && c->no_problem_info))
        return;
    CODEC_SET(props, CODEC_PROP_REASON_STRING);
    props->reason_string = (codec_bytes){(const uint8_t *)why, strlen(why)};
}

void conn_close(broker *b, broker_conn *c, uint8_t reason, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    if (why && reason >= 0x80)
        broker_log(b, BROKER_EV_PROTOCOL_ERROR, c->who, "closing connection: %s (0x%02x %s)", why,
                   reason, codec_reason_name(reason));
    conn_close_quiet(b, c, reason, why);
}

void conn_close_quiet(broker *b, broker_conn *c, uint8_t reason, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->version == CODEC_V5 && c->state == CONN_ACTIVE && reason != 0) {
        codec_disconnect d = {.reason = reason};
        explain(c, &d.props, why, true);
        uint8_t pkt[512];
        size_t n;
        codec_status st;
        do
            st = codec_encode_disconnect(CODEC_DISCONNECT, &d, CODEC_V5, pkt, sizeof(pkt), &n);
        while (st == CODEC_OK && explained_too_big(&d.props, n, conn_client_max(c)));
        if (st == CODEC_OK)
            (void)buf_append(&c->out, pkt, n);
    }
    c->state = CONN_CLOSING;
    timer_disarm(&b->timers, &c->timer);
    conn_mark_dirty(b, c);
    if (!c->closing_listed && list_push(&b->closing, c))
        c->closing_listed = true;
}

bool store_touch(broker *b, broker_conn *c)
{
    broker_store *st = b->cfg.store;
    if (!st || b->freeing)
        return false;
    if (!b->in_txn) {
        if (!st->begin(st->ctx)) {
            broker_log(b, BROKER_EV_STORE_FAILED, NULL, "store: cannot begin a transaction");
            b->store_failed = true;
            if (c) { /* what it is owed cannot be made durable in this pass */
                c->durable = true;
                conn_mark_dirty(b, c);
            }
            return false;
        }
        b->in_txn = true;
    }
    if (c) {
        c->durable = true;
        conn_mark_dirty(b, c);
    }
    return true;
}

/* ---- lifecycle -------------------------------------------------------- */

typedef struct load_ctx {
    broker *b;
    hmap msgs; /* store id (8 bytes) -> msg */
    uint64_t *ids;
    size_t nids, ids_cap;
} load_ctx;

static bool load_msg(void *ctx, const store_msg_row *row)
{
    load_ctx *l = ctx;
    msg *m = msg_new(row->topic, row->payload, row->props, row->origin, row->qos, row->retain,
                     row->expires_at);
    if (!m)
        return false;
    m->store_id = row->id;
    if (l->nids == l->ids_cap) {
        size_t n = l->ids_cap ? l->ids_cap * 2 : 256;
        uint64_t *ids = realloc(l->ids, n * sizeof(*ids));
        if (!ids) {
            msg_unref(m);
            return false;
        }
        l->ids = ids;
        l->ids_cap = n;
    }
    l->ids[l->nids] = row->id;
    if (!hmap_put(&l->msgs, (const uint8_t *)&l->ids[l->nids], sizeof(uint64_t), m)) {
        msg_unref(m);
        return false;
    }
    l->nids++;
    return true;
}

static msg *load_find_msg(load_ctx *l, uint64_t id)
{
    return hmap_get(&l->msgs, (const uint8_t *)&id, sizeof(id));
}

static bool load_session(void *ctx, const store_session_row *row)
{
    load_ctx *l = ctx;
    return session_restore(l->b, row) != NULL;
}

static bool load_sub(void *ctx, codec_bytes client_id, codec_bytes filter, uint8_t options,
                     uint32_t sub_id)
{
    load_ctx *l = ctx;
    session *s = session_find(&l->b->sessions, client_id);
    if (!s)
        return true; /* orphan row: ignore */
    return sub_restore(l->b, s, filter, options, sub_id);
}

static bool load_queue(void *ctx, const store_queue_row *row)
{
    load_ctx *l = ctx;
    session *s = session_find(&l->b->sessions, row->client_id);
    msg *m = load_find_msg(l, row->msg_id);
    if (!s || !m)
        return true;
    delivery *d = calloc(1, sizeof(*d));
    if (!d)
        return false;
    *d = (delivery){.m = msg_ref(m),
                    .seq = row->seq,
                    .qos = row->qos,
                    .retain = row->retain,
                    .state = row->state,
                    .stored = true,
                    .packet_id = row->packet_id,
                    .shared = row->shared};
    d->nsub_ids = row->nsub_ids > DELIVERY_MAX_SUB_IDS ? DELIVERY_MAX_SUB_IDS : row->nsub_ids;
    memcpy(d->sub_ids, row->sub_ids, d->nsub_ids * sizeof(uint32_t));
    m->durable_refs++;
    queue_append(s, d);
    if (d->state != DELIVERY_QUEUED)
        s->inflight++;
    if (row->seq >= s->next_seq)
        s->next_seq = row->seq + 1;
    return true;
}

static bool load_qos2(void *ctx, codec_bytes client_id, uint16_t packet_id)
{
    load_ctx *l = ctx;
    session *s = session_find(&l->b->sessions, client_id);
    if (!s)
        return true;
    return qos2_in_push(s, packet_id);
}

static bool load_retained(void *ctx, codec_bytes topic, uint64_t msg_id)
{
    load_ctx *l = ctx;
    msg *m = load_find_msg(l, msg_id);
    if (!m)
        return true;
    tree_node *n = tree_get(l->b->retained, topic, true);
    if (!n)
        return false;
    void **slot = tree_value(n);
    if (*slot)
        msg_unref(*slot);
    *slot = msg_ref(m);
    m->durable_refs++;
    return true;
}

static bool load_will(void *ctx, const store_will_row *row)
{
    load_ctx *l = ctx;
    msg *m = load_find_msg(l, row->msg_id);
    return !m || session_restore_will(l->b, row, m);
}

static bool load_store(broker *b)
{
    broker_store *st = b->cfg.store;
    load_ctx l = {.b = b};
    if (!hmap_init(&l.msgs))
        return false;
    store_loader loader = {&l,         load_msg,  load_session,  load_sub,
                           load_queue, load_qos2, load_retained, load_will};
    bool ok = st->load(st->ctx, &loader);
    /* Messages nothing durable points at any more were garbage in the store. */
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    bool txn = false;
    while ((e = hmap_next(&l.msgs, &bucket, &it))) {
        msg *m = e->value;
        if (ok && m->durable_refs == 0) {
            if (!txn)
                txn = st->begin(st->ctx);
            if (txn)
                (void)st->msg_delete(st->ctx, m->store_id);
        }
        msg_unref(m);
    }
    if (txn && !st->commit(st->ctx))
        st->rollback(st->ctx);
    hmap_free(&l.msgs);
    free(l.ids);
    return ok;
}

broker *broker_new(const broker_config *config, uint64_t now_ms)
{
    broker *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->cfg = *config;
    b->lim = config->limits;
    b->pass = 1;
    if (config->relay) {
        b->relay = *config->relay;
        b->relayed = b->relay.forward != NULL;
    }
    b->cfg.relay = NULL; /* b->relay is the copy */
    if (!session_index_init(&b->sessions) || !hmap_init(&b->unmatched))
        goto fail;
    b->subs = tree_new();
    b->shared = tree_new();
    b->retained = tree_new();
    if (!b->subs || !b->shared || !b->retained)
        goto fail;
    if (b->cfg.store) {
        if (!load_store(b))
            goto fail;
        b->last_msg_id = b->cfg.store->msg_max_id(b->cfg.store->ctx);
    }
    /* Sessions restored from the store are offline: give their timers a start. */
    size_t bucket = 0;
    for (session *s = session_index_first(&b->sessions, &bucket); s;
         s = session_index_next(&b->sessions, &bucket, s)) {
        /* Stored while online (no end yet) means the hub stopped without
         * closing its connection: that connection ended now, and its expiry
         * interval starts now, as after any network loss. */
        if (!s->expires_at && s->expiry_interval != UINT32_MAX)
            s->expires_at = now_ms + (uint64_t)s->expiry_interval * 1000u;
        if (s->expires_at && s->expires_at < now_ms)
            s->expires_at = now_ms; /* expired while the hub was down */
        /* A will its connection left when the hub stopped: its delay starts
         * now (or the session's end comes first). */
        if (s->will)
            s->will_at = now_ms + (uint64_t)s->will_delay * 1000u;
        uint64_t at = s->expires_at ? s->expires_at : UINT64_MAX;
        if (s->will_at && s->will_at < at)
            at = s->will_at;
        if (at != UINT64_MAX)
            (void)timer_arm(&b->timers, &s->timer, at);
    }
    return b;
fail:
    broker_free(b);
    return NULL;
}

static void free_retained(void *value)
{
    msg_unref(value);
}

void broker_free(broker *b)
{
    if (!b)
        return;
    b->freeing = true;
    while (b->conns) {
        broker_conn *c = b->conns;
        c->clean_disconnect = true; /* freeing, not a network loss: no will */
        if (c->s)
            c->s->will = (msg_unref(c->s->will), NULL);
        broker_conn_gone(b, c, 0);
    }
    size_t bucket = 0;
    session *s;
    while ((s = session_index_first(&b->sessions, &bucket))) {
        s->stored = false; /* keep it in the store: this is only freeing memory */
        session_destroy(b, s, 0);
    }
    session_index_free(&b->sessions);
    if (b->subs)
        tree_free(b->subs, NULL);
    if (b->shared)
        tree_free(b->shared, NULL);
    if (b->retained)
        tree_free(b->retained, free_retained);
    timer_heap_free(&b->timers);
    list_free(&b->dirty);
    list_free(&b->closing);
    list_free(&b->holding);
    free(b->touched);
    hmap_free(&b->unmatched);
    free(b);
}

size_t broker_conn_size(void)
{
    return sizeof(broker_conn);
}

static broker_conn *conn_open(broker_conn *c, broker *b, const broker_principal *who, void *io,
                              uint64_t now_ms)
{
    c->io = io;
    c->who = who;
    c->state = CONN_NEW;
    c->last_rx = now_ms;
    buf_init(&c->in, b->lim.max_packet_before_connect + INPUT_SLACK);
    buf_init(&c->out, b->lim.max_output);
    timer_init(&c->timer, TIMER_CONNECT, c);
    if (!timer_arm(&b->timers, &c->timer, now_ms + b->lim.connect_timeout_ms))
        return NULL;
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->stats.connections++;
    return c;
}

broker_conn *broker_conn_open(broker *b, const broker_principal *who, void *io, uint64_t now_ms)
{
    broker_conn *c = calloc(1, sizeof(*c));
    if (c && !conn_open(c, b, who, io, now_ms)) {
        free(c);
        c = NULL;
    }
    return c;
}

broker_conn *broker_conn_open_in(void *mem, broker *b, const broker_principal *who, void *io,
                                 uint64_t now_ms)
{
    broker_conn *c = memset(mem, 0, sizeof(broker_conn));
    c->server_memory = true;
    return conn_open(c, b, who, io, now_ms);
}

void broker_conn_gone(broker *b, broker_conn *c, uint64_t now_ms)
{
    timer_disarm(&b->timers, &c->timer);
    if (c->s)
        session_detach(b, c->s, now_ms);
    if (c->dirty)
        list_remove(&b->dirty, c);
    if (c->closing_listed)
        list_remove(&b->closing, c);
    if (c->holding_listed)
        list_remove(&b->holding, c);
    held_ack *h;
    while ((h = held_pop(c))) {
        if (h->gid)
            hmap_del(&b->unmatched, (const uint8_t *)&h->gid, sizeof(h->gid));
        free(h);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->stats.connections--;
    buf_free(&c->in);
    buf_free(&c->out);
    if (!c->server_memory)
        free(c);
}

/* ---- input ------------------------------------------------------------ */

static void dispatch(broker *b, broker_conn *c, const codec_packet *p, uint64_t now)
{
    if (c->s)
        c->packets++;
    switch (p->type) {
    case CODEC_CONNECT:
        handle_connect(b, c, &p->u.connect, now);
        break;
    case CODEC_PUBLISH:
        handle_publish(b, c, &p->u.publish, now);
        break;
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        handle_ack(b, c, p->type, &p->u.ack, now);
        break;
    case CODEC_SUBSCRIBE:
        handle_subscribe(b, c, &p->u.subscribe, now);
        break;
    case CODEC_UNSUBSCRIBE:
        handle_unsubscribe(b, c, &p->u.unsubscribe);
        break;
    case CODEC_PINGREQ: {
        uint8_t pkt[2];
        size_t n;
        if (codec_encode_ping(CODEC_PINGRESP, pkt, sizeof(pkt), &n) == CODEC_OK)
            (void)conn_send(b, c, pkt, n);
        break;
    }
    case CODEC_DISCONNECT:
        handle_disconnect(b, c, &p->u.disconnect);
        break;
    default:
        /* AUTH without an authentication method in CONNECT ([MQTT-4.12.0-1]) */
        conn_close(b, c, 0x82, "unexpected packet");
        break;
    }
}

/* A packet that cannot be decoded. Before CONNECT is accepted the answer is a
 * CONNACK (in the form the client asked for); after, a DISCONNECT. */
static void refuse_packet(broker *b, broker_conn *c, const codec_packet *p, codec_status st)
{
    uint8_t reason = codec_status_reason(st);
    if (c->state == CONN_NEW) {
        uint8_t asked = p->type == CODEC_CONNECT ? p->u.connect.protocol_version : 0;
        codec_connack ack = {0};
        uint8_t version = 0;
        if (st == CODEC_ERR_BAD_VERSION) {
            /* A level this hub does not speak: answer in the oldest form that
             * says so, which 3.1 and 3.1.1 clients read ([MQTT-3.1.2-2]); a
             * client that asked for 5 gets the MQTT 5 form. */
            version = asked == CODEC_V5 ? CODEC_V5 : CODEC_V311;
            ack.reason = asked == CODEC_V5 ? 0x84 : 0x01;
        } else if (asked == CODEC_V5) {
            version = CODEC_V5;
            ack.reason = reason;
        } /* 3.1.1 has no code for a malformed CONNECT: just close */
        uint8_t pkt[16];
        size_t n;
        if (version && codec_encode_connack(&ack, version, pkt, sizeof(pkt), &n) == CODEC_OK)
            (void)buf_append(&c->out, pkt, n);
        broker_log(b, BROKER_EV_REFUSED_CONNECT, c->who, "first packet refused: %s",
                   codec_status_name(st));
        broker_refused(b, BROKER_EV_REFUSED_CONNECT, c->who, c->io, (codec_bytes){0}, "protocol");
        c->state = CONN_ACTIVE; /* so that conn_close does not add a DISCONNECT */
        c->version = 0;
    }
    conn_close(b, c, reason, codec_status_name(st));
}

/* Decode and dispatch the whole packets at the front of data; how many bytes
 * they took. Stops at an incomplete packet, and when the connection closes. */
static size_t input_packets(broker *b, broker_conn *c, const uint8_t *data, size_t len,
                            uint64_t now_ms)
{
    size_t done = 0;
    while (c->state != CONN_CLOSING && done < len) {
        size_t limit =
            c->state == CONN_NEW ? b->lim.max_packet_before_connect : b->lim.max_packet_size;
        codec_decode_opts opts = {.version = c->state == CONN_NEW ? 0 : c->version,
                                  .sender = CODEC_FROM_CLIENT,
                                  .max_packet = limit};
        codec_packet pkt;
        size_t used;
        codec_status st = codec_decode(data + done, len - done, &opts, &pkt, &used);
        if (st == CODEC_NEED_MORE)
            break;
        if (st != CODEC_OK) {
            refuse_packet(b, c, &pkt, st);
            break;
        }
        c->last_rx = now_ms;
        dispatch(b, c, &pkt, now_ms);
        done += used;
    }
    return done;
}

void broker_input(broker *b, broker_conn *c, const uint8_t *data, size_t len, uint64_t now_ms)
{
    /* Nothing held back from earlier reads: the whole packets are handled
     * where they lie, and only a trailing part-packet is copied to wait for
     * the rest. Most reads hold whole packets and copy nothing. */
    if (c->in.len == 0 && c->state != CONN_CLOSING) {
        size_t used = input_packets(b, c, data, len, now_ms);
        data += used;
        len -= used;
    }
    while (len > 0 && c->state != CONN_CLOSING) {
        size_t room = c->in.max - c->in.len;
        size_t n = len < room ? len : room;
        if (n == 0 || !buf_append(&c->in, data, n)) {
            conn_close(b, c, 0x95, "input buffer full");
            return;
        }
        data += n;
        len -= n;
        buf_consume(&c->in, input_packets(b, c, buf_ptr(&c->in), c->in.len, now_ms));
    }
    if (c->in.len == 0)
        buf_shrink(&c->in);
}

/* ---- end of pass -------------------------------------------------------- */

uint64_t broker_pass(const broker *b)
{
    return b->pass;
}

static bool commit_pass(broker *b);

bool broker_commit(broker *b)
{
    bool ok = commit_pass(b);
    b->pass++;
    return ok;
}

static bool commit_pass(broker *b)
{
    if (!b->in_txn && !b->store_failed)
        return true;
    broker_store *st = b->cfg.store;
    /* A failed begin or write loses the pass (store.h), whatever commit would say. */
    bool was_in_txn = b->in_txn;
    bool ok = b->in_txn && !b->store_failed && st->commit(st->ctx);
    b->in_txn = false;
    b->store_failed = false;
    for (size_t i = 0; i < b->dirty.n; i++) {
        broker_conn *c = b->dirty.v[i];
        if (!ok && c->durable) {
            /* What it was owed was not made durable: send none of it, and let
             * the client retry on a new connection. */
            buf_consume(&c->out, c->out.len);
            conn_close(b, c, 0, NULL);
        }
        c->durable = false;
    }
    if (!ok) {
        if (was_in_txn)
            st->rollback(st->ctx);
        broker_log(b, BROKER_EV_STORE_FAILED, NULL,
                   "store: commit failed; affected connections closed unacknowledged");
    }
    return ok;
}

size_t broker_dirty(broker *b, broker_conn ***list)
{
    size_t n = list_hand(&b->dirty, list);
    for (size_t i = 0; i < n; i++)
        (*list)[i]->dirty = false;
    return n;
}

buf *broker_output(broker_conn *c)
{
    return &c->out;
}

void broker_output_drained(broker *b, broker_conn *c, uint64_t now_ms)
{
    if (c->out.len == 0)
        buf_shrink(&c->out);
    if (c->s && c->state == CONN_ACTIVE)
        session_pump(b, c->s, now_ms);
}

size_t broker_closing(broker *b, broker_conn ***list)
{
    size_t n = list_hand(&b->closing, list);
    for (size_t i = 0; i < n; i++)
        (*list)[i]->closing_listed = false;
    return n;
}

void *broker_conn_io(const broker_conn *c)
{
    return c->io;
}

const broker_principal *broker_conn_principal(const broker_conn *c)
{
    return c->who;
}

uint64_t broker_conn_take_packets(broker_conn *c)
{
    uint64_t n = c->packets;
    c->packets = 0;
    return n;
}

bool broker_conn_has_session(const broker_conn *c)
{
    return c->s != NULL;
}

bool broker_conn_clean(const broker_conn *c)
{
    return c->clean_disconnect;
}

bool broker_store_touched(const broker *b)
{
    return b->in_txn || b->store_failed;
}

/* ---- timers ----------------------------------------------------------- */

uint64_t broker_tick(broker *b, uint64_t now_ms)
{
    timer *t;
    while ((t = timer_pop_due(&b->timers, now_ms))) {
        switch (t->kind) {
        case TIMER_CONNECT:
            conn_close(b, t->owner, 0, NULL);
            broker_log(b, BROKER_EV_REFUSED_CONNECT, ((broker_conn *)t->owner)->who,
                       "no CONNECT within %u ms", (unsigned)b->lim.connect_timeout_ms);
            broker_refused(b, BROKER_EV_REFUSED_CONNECT, ((broker_conn *)t->owner)->who,
                           ((broker_conn *)t->owner)->io, (codec_bytes){0}, "timeout");
            break;
        case TIMER_KEEPALIVE: {
            broker_conn *c = t->owner;
            uint64_t due = c->last_rx + (uint64_t)c->keep_alive * 1500u;
            if (due > now_ms)
                (void)timer_arm(&b->timers, &c->timer, due);
            else
                conn_close(b, c, 0x8D, "keep alive timeout");
            break;
        }
        case TIMER_SESSION:
            session_timer_fired(b, t->owner, now_ms);
            break;
        default:
            break;
        }
    }
    return timer_next(&b->timers);
}

/* ---- registry changes, shutdown, stats -------------------------------- */

void broker_reauthorize(broker *b,
                        bool (*still_active)(void *ctx, const broker_principal *who, void *io),
                        void *ctx, uint64_t now_ms)
{
    (void)now_ms;
    for (broker_conn *c = b->conns; c; c = c->next) {
        if (c->state == CONN_CLOSING)
            continue;
        if (!still_active(ctx, c->who, c->io)) {
            broker_log(b, BROKER_EV_DISCONNECTED, c->who,
                       "identity revoked or disabled: connection closed");
            conn_close_quiet(b, c, 0x98, "identity revoked or disabled");
        }
    }
    size_t bucket = 0;
    for (session *s = session_index_first(&b->sessions, &bucket); s;
         s = session_index_next(&b->sessions, &bucket, s)) {
        policy_set *fresh =
            b->cfg.policies_for ? b->cfg.policies_for(b->cfg.policies_ctx, s->who) : NULL;
        if (!fresh && policy_set_deny_all(&fresh) != POLICY_OK)
            fresh = NULL;
        policy_set_free(s->policies);
        s->policies = fresh;
        /* Policies that no longer allow connecting end the connection too. */
        if (s->conn && s->conn->state != CONN_CLOSING && (!fresh || !policy_may_connect(fresh))) {
            broker_log(b, BROKER_EV_DISCONNECTED, s->who,
                       "policies no longer allow connecting: connection closed");
            conn_close_quiet(b, s->conn, 0x87, "policies no longer allow connecting");
        }
        session_recheck_subs(b, s);
    }
}

void broker_set_limits(broker *b, const broker_limits *limits)
{
    /* Packet and buffer sizes of live connections keep the values they were
     * accepted with; everything checked per event uses the new ones. */
    b->lim = *limits;
}

void broker_close(broker *b, broker_conn *c, uint8_t reason, const char *why)
{
    if (why)
        broker_log(b, BROKER_EV_DISCONNECTED, c->who, "%s", why);
    conn_close_quiet(b, c, reason, why);
}

void broker_shutdown(broker *b, uint64_t now_ms)
{
    (void)now_ms;
    /* Wills are published as the connections go: the server closing without
     * the client's DISCONNECT is one of the cases the spec names (3.1.2.5). */
    for (broker_conn *c = b->conns; c; c = c->next)
        conn_close(b, c, 0x8B, NULL);
}

typedef struct retained_walk {
    void (*fn)(void *ctx, const broker_fwd *f);
    void *ctx;
} retained_walk;

static void visit_retained_msg(tree_node *node, void *value, void *ctx)
{
    retained_walk *w = ctx;
    msg *m = value;
    (void)node;
    if (!m)
        return;
    broker_fwd f = fwd_of(m, BROKER_FWD_RETAIN_REPLICA, NULL);
    w->fn(w->ctx, &f);
}

void broker_retained_each(broker *b, void (*fn)(void *ctx, const broker_fwd *f), void *ctx)
{
    retained_walk w = {fn, ctx};
    tree_walk(b->retained, visit_retained_msg, &w);
}

void broker_get_stats(const broker *b, broker_stats *out)
{
    *out = b->stats;
    out->sessions = b->sessions.count;
    out->retained = tree_count(b->retained);
}
