/*
 * session.c — CONNECT, session lifetime, takeover and wills.
 *
 * This is where identity is enforced: the principal comes from the verified
 * certificate (the server put it in the connection); the MQTT client
 * identifier must be that device's id (services: their name, or NAME/suffix),
 * so a device cannot open or take over another device's session by choosing
 * a client id (the MiSafes attack). Username and password are not used.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

#define MAX_CLIENT_ID 256u

/* limit: the largest packet the client takes (0: any); only a Reason
 * String is left out to meet it. */
static void send_connack(broker *b, broker_conn *c, codec_connack *ack, uint32_t limit)
{
    uint8_t pkt[1024];
    size_t n;
    codec_status st;
    do
        st = codec_encode_connack(ack, c->version, pkt, sizeof(pkt), &n);
    while (st == CODEC_OK && explained_too_big(&ack->props, n, limit));
    if (st == CODEC_OK)
        (void)buf_append(&c->out, pkt, n);
    conn_mark_dirty(b, c);
}

/* Refuse a CONNECT: CONNACK with the reason in the client's version (MQTT 5:
 * `why` as its Reason String), close. */
static void refuse(broker *b, broker_conn *c, const codec_connect *p, uint8_t v5_reason,
                   uint8_t v311_code, const char *why)
{
    codec_connack ack = {.reason = c->version == CODEC_V5 ? v5_reason : v311_code};
    explain(c, &ack.props, why, true);
    send_connack(b, c, &ack,
                 CODEC_HAS(&p->props, CODEC_PROP_MAXIMUM_PACKET_SIZE) ? p->props.maximum_packet_size
                                                                      : 0);
    broker_log(b, BROKER_EV_REFUSED_CONNECT, c->who, "CONNECT refused: %s", why);
    broker_refused(b, BROKER_EV_REFUSED_CONNECT, c->who, c->io, (codec_bytes){0},
                   broker_reason_word(v5_reason));
    b->stats.refused++;
    c->state = CONN_ACTIVE; /* lets conn_close run without adding a DISCONNECT */
    c->version = 0;
    conn_close(b, c, 0, NULL);
}

static bool has_prefix(codec_bytes s, const char *prefix, size_t n)
{
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

/* May this principal use this client identifier? */
static bool client_id_allowed(const broker_principal *who, codec_bytes id)
{
    size_t n = strlen(who->id);
    if (id.len == n && memcmp(id.ptr, who->id, n) == 0)
        return true;
    /* A service may run several clients: NAME/anything. */
    return who->kind == BROKER_SERVICE && id.len > n + 1 && has_prefix(id, who->id, n) &&
           id.ptr[n] == '/';
}

static void who_borrow(session *s, const broker_principal *who)
{
    if (s->who_owned)
        free((void *)s->who);
    s->who = who;
    s->who_owned = false;
}

/* The session outlives its connection: copy the principal. */
static bool who_keep(session *s)
{
    if (s->who_owned)
        return true;
    broker_principal *copy = malloc(sizeof(*copy));
    if (!copy)
        return false;
    *copy = *s->who;
    s->who = copy;
    s->who_owned = true;
    return true;
}

static session *session_new(broker *b, codec_bytes client_id, const broker_principal *who)
{
    if (client_id.len > UINT16_MAX)
        return NULL; /* not from MQTT (a string is at most 65,535 bytes): a damaged store */
    session *s = calloc(1, sizeof(*s) + client_id.len);
    if (!s)
        return NULL;
    if (client_id.len)
        memcpy(s->client_id_bytes, client_id.ptr, client_id.len);
    s->client_id_len = (uint16_t)client_id.len;
    s->who = who; /* the caller's, for now: see who_keep */
    s->next_seq = 1;
    s->next_packet_id = 1;
    timer_init(&s->timer, TIMER_SESSION, s);
    if (!session_index_add(&b->sessions, s)) {
        free(s);
        return NULL;
    }
    return s;
}

static void store_session(broker *b, session *s, uint64_t expires_at)
{
    broker_store *st = b->cfg.store;
    if (!store_touch(b, s->conn))
        return;
    store_session_row row = {
        .client_id = session_id(s),
        .kind = (uint8_t)s->who->kind,
        .principal = {(const uint8_t *)s->who->id, strlen(s->who->id)},
        .version = s->version,
        .expiry_interval = s->expiry_interval,
        .expires_at = expires_at,
    };
    if (st->session_put(st->ctx, &row))
        s->stored = true;
    else
        b->store_failed = true;
}

session_rare *session_rare_of(session *s)
{
    if (!s->rare)
        s->rare = calloc(1, sizeof(*s->rare));
    return s->rare;
}

/* Topic aliases belong to one network connection (3.3.2.3.4). */
static void alias_reset(broker *b, session *s)
{
    session_rare *r = s->rare;
    if (!r)
        return;
    if (r->alias_in) {
        for (size_t i = 0; i <= b->lim.topic_alias_maximum; i++)
            free(r->alias_in[i].topic);
        free(r->alias_in);
        r->alias_in = NULL;
    }
    if (r->alias_out) {
        for (uint16_t i = 0; i < r->alias_out_used; i++)
            free(r->alias_out[i].topic);
        free(r->alias_out);
        r->alias_out = NULL;
    }
    r->alias_out_used = 0;
}

/* A message a share group gave s that s never got, and the group. */
typedef struct orphan {
    msg *m;
    uint8_t *filter; /* "$share/NAME/FILTER": the subscription is gone by then */
    size_t len;
} orphan;

/* The share groups' messages s holds and its client has not confirmed
 * (QoS 2 past PUBREC is the client's), with the first of its share
 * subscriptions that matches each: *n of them, NULL when there are none (or
 * no memory, when they are lost as before). */
static orphan *orphans_of(const session *s, size_t *n)
{
    size_t count = 0;
    for (const delivery *d = s->queue_head; d; d = d->next)
        count += d->shared && d->state != DELIVERY_RELEASED;
    *n = 0;
    orphan *v = count ? calloc(count, sizeof(*v)) : NULL;
    if (!v)
        return NULL;
    for (const delivery *d = s->queue_head; d; d = d->next) {
        if (!d->shared || d->state == DELIVERY_RELEASED)
            continue;
        for (uint32_t i = 0; i < s->nsubs; i++) {
            const sub *x = s->subs[i];
            if (!x->share.len || !codec_topic_matches(x->inner, d->m->topic))
                continue;
            uint8_t *copy = malloc(x->filter.len);
            if (copy) {
                memcpy(copy, x->filter.ptr, x->filter.len);
                v[(*n)++] = (orphan){msg_ref(d->m), copy, x->filter.len};
            }
            break;
        }
    }
    return v;
}

/* ---- wills in the store ------------------------------------------------- */

/* A will is stored while its connection is open and while its delay runs, so
 * that a crash does not lose it: the restarted hub publishes it. */
static void will_store(broker *b, session *s)
{
    broker_store *st = b->cfg.store;
    if (!s->will || !st || !msg_make_durable(b, s->will, s->conn))
        return;
    store_will_row row = {.client_id = session_id(s),
                          .kind = (uint8_t)s->who->kind,
                          .principal = {(const uint8_t *)s->who->id, strlen(s->who->id)},
                          .msg_id = s->will->store_id,
                          .delay = s->will_delay,
                          .expires = s->will_expires,
                          .expiry = s->will_expiry};
    if (st->will_put(st->ctx, &row)) {
        s->will_stored = true;
    } else {
        b->store_failed = true;
        msg_release_durable(b, s->will);
    }
}

/* The will was published or will never be: its row goes. */
static void will_forget(broker *b, session *s)
{
    if (!s->will_stored)
        return;
    s->will_stored = false;
    if (store_touch(b, s->conn)) {
        broker_store *st = b->cfg.store;
        if (!st->will_delete(st->ctx, session_id(s)))
            b->store_failed = true;
    }
    if (s->will) /* NULL when broker_free let it go first */
        msg_release_durable(b, s->will);
}

static void will_drop(broker *b, session *s)
{
    will_forget(b, s);
    msg_unref(s->will);
    s->will = NULL;
}

void session_destroy(broker *b, session *s, uint64_t now)
{
    size_t norphans = 0;
    orphan *orphans = b->freeing ? NULL : orphans_of(s, &norphans);
    timer_disarm(&b->timers, &s->timer);
    while (s->nsubs)
        sub_remove(b, s->subs[s->nsubs - 1], false);
    free(s->subs);
    delivery *d = s->queue_head;
    while (d) {
        delivery *next = d->next;
        delivery_free(b, s, d, false);
        d = next;
    }
    if (s->stored && store_touch(b, s->conn)) {
        broker_store *st = b->cfg.store;
        if (!st->session_delete(st->ctx, session_id(s)))
            b->store_failed = true;
    }
    session_index_remove(&b->sessions, s);
    will_drop(b, s);
    policy_set_free(s->policies);
    alias_reset(b, s);
    if (s->rare) {
        free(s->rare->qos2_in);
        free(s->rare->pid_bits);
        free(s->rare);
    }
    who_borrow(s, NULL);
    free(s);
    /* Now that s is no member: to another (its group's worker may be another). */
    for (size_t i = 0; i < norphans; i++) {
        (void)share_redeliver(b, orphans[i].m, (codec_bytes){orphans[i].filter, orphans[i].len},
                              true, now);
        msg_unref(orphans[i].m);
        free(orphans[i].filter);
    }
    free(orphans);
}

void publish_will(broker *b, session *s, uint64_t now)
{
    /* First: a message row it alone pointed at goes, and routing stores it
     * anew with the expiry set below. */
    will_forget(b, s);
    msg *m = s->will;
    s->will = NULL;
    s->will_at = 0;
    if (!m)
        return;
    if (s->will_expires) /* its lifetime starts now (3.1.3.2.4) */
        m->expires_at = now + (uint64_t)s->will_expiry * 1000u;
    /* Policies may have changed since CONNECT. */
    if (!s->policies || !policy_may_publish(s->policies, m->topic)) {
        broker_log(b, BROKER_EV_REFUSED_PUBLISH, s->who, "will message to %.*s not allowed",
                   (int)m->topic.len, (const char *)m->topic.ptr);
        broker_refused(b, BROKER_EV_REFUSED_PUBLISH, s->who, s->conn ? s->conn->io : NULL, m->topic,
                       "policy");
        msg_unref(m);
        return;
    }
    if (b->relayed)
        m->gid = broker_next_id(b);
    if (m->retain && !b->relay.retained_replica)
        retain_set(b, m, true);
    route(b, m, now);
    (void)relay_out(b, m, BROKER_FWD_ROUTE, s->who);
    msg_unref(m);
}

static void arm_session_timer(broker *b, session *s)
{
    uint64_t at = UINT64_MAX;
    if (s->will_at)
        at = s->will_at;
    if (s->expires_at && s->expires_at < at)
        at = s->expires_at;
    if (at == UINT64_MAX)
        timer_disarm(&b->timers, &s->timer);
    else
        (void)timer_arm(&b->timers, &s->timer, at);
}

void session_detach(broker *b, session *s, uint64_t now)
{
    broker_conn *c = s->conn;
    bool will_due = c && !c->clean_disconnect;
    if (c)
        c->s = NULL;
    s->conn = NULL;
    alias_reset(b, s);
    if (!will_due)
        will_drop(b, s);
    if (!s->persistent) {
        if (s->will)
            publish_will(b, s, now);
        session_destroy(b, s, now);
        return;
    }
    if (!who_keep(s)) {
        broker_log(b, BROKER_EV_DISCONNECTED, s->who, "out of memory: session %.*s ended",
                   (int)session_id(s).len, (const char *)session_id(s).ptr);
        if (s->will)
            publish_will(b, s, now);
        session_destroy(b, s, now);
        return;
    }
    s->expires_at =
        s->expiry_interval == UINT32_MAX ? 0 : now + (uint64_t)s->expiry_interval * 1000u;
    if (s->will) {
        if (s->will_delay == 0)
            publish_will(b, s, now);
        else
            s->will_at = now + (uint64_t)s->will_delay * 1000u;
    }
    store_session(b, s, s->expires_at ? s->expires_at : 0);
    arm_session_timer(b, s);
}

void session_timer_fired(broker *b, session *s, uint64_t now)
{
    bool ending = s->expires_at && s->expires_at <= now;
    /* The will goes at the end of its delay or of the session, whichever is
     * first (3.1.3.2.2). */
    if (s->will && (ending || (s->will_at && s->will_at <= now)))
        publish_will(b, s, now);
    if (ending) {
        broker_log(b, BROKER_EV_DISCONNECTED, s->who, "session %.*s expired",
                   (int)session_id(s).len, (const char *)session_id(s).ptr);
        session_destroy(b, s, now);
        return;
    }
    arm_session_timer(b, s);
}

session *session_restore(broker *b, const store_session_row *row)
{
    broker_principal who = {.kind = (broker_kind)row->kind};
    if (row->principal.len >= sizeof(who.id))
        return NULL;
    memcpy(who.id, row->principal.ptr, row->principal.len);
    session *s = session_new(b, row->client_id, &who);
    if (!s)
        return NULL;
    if (!who_keep(s)) {
        session_destroy(b, s, 0);
        return NULL;
    }
    s->version = row->version;
    s->persistent = true;
    s->stored = true;
    s->expiry_interval = row->expiry_interval;
    s->expires_at = row->expires_at;
    s->policies = b->cfg.policies_for ? b->cfg.policies_for(b->cfg.policies_ctx, &who) : NULL;
    if (!s->policies)
        (void)policy_set_deny_all(&s->policies);
    return s;
}

bool session_restore_will(broker *b, const store_will_row *row, msg *will)
{
    session *s = session_find(&b->sessions, row->client_id);
    if (!s) {
        /* Its client had a clean session, which ended with the connection:
         * the will goes at the first tick (broker_new arms the timer). */
        store_session_row as = {.client_id = row->client_id,
                                .kind = row->kind,
                                .principal = row->principal,
                                .version = CODEC_V5};
        s = session_restore(b, &as);
        if (!s)
            return false;
        s->persistent = false;
        s->stored = false;
    }
    msg_unref(s->will);
    s->will = msg_ref(will);
    will->durable_refs++;
    s->will_stored = true;
    s->will_delay = s->persistent ? row->delay : 0;
    s->will_expires = row->expires;
    s->will_expiry = row->expiry;
    return true;
}

/* The will from CONNECT as a message, its properties normalised to those
 * that travel with a PUBLISH. */
static msg *will_from_connect(const codec_connect *p, codec_bytes client_id)
{
    /* Its expiry is set when it is published (publish_will). */
    return msg_with_props(p->will_topic, p->will_payload,
                          p->protocol_version == CODEC_V5 ? &p->will_props : NULL, client_id,
                          p->will_qos, p->will_retain, 0);
}

void handle_connect(broker *b, broker_conn *c, const codec_connect *p, uint64_t now)
{
    c->version = p->protocol_version;
    const codec_props *props = &p->props;
    c->no_problem_info = p->protocol_version == CODEC_V5 &&
                         CODEC_HAS(props, CODEC_PROP_REQUEST_PROBLEM_INFO) &&
                         props->request_problem_info == 0;

    if (CODEC_HAS(props, CODEC_PROP_AUTH_METHOD)) {
        refuse(b, c, p, 0x8C, 0x05, "enhanced authentication is not supported");
        return;
    }
    codec_bytes client_id = p->client_id;
    bool assigned = false;
    char assigned_buf[96];
    if (client_id.len == 0) {
        if (p->protocol_version == CODEC_V311 && !p->clean_start) {
            refuse(b, c, p, 0x85, 0x02, "empty client identifier with a persistent session");
            return; /* [MQTT-3.1.3-8] */
        }
        client_id = (codec_bytes){(const uint8_t *)c->who->id, strlen(c->who->id)};
        /* A service may use NAME/anything: give it an id no session uses
         * ([MQTT-3.2.2-16]), not NAME, which would take over NAME's session. */
        for (uint64_t n = now; c->who->kind == BROKER_SERVICE; n++) {
            int len = snprintf(assigned_buf, sizeof(assigned_buf), "%s/%llx", c->who->id,
                               (unsigned long long)n);
            if (len > 0 && !session_find(&b->sessions, (codec_bytes){(const uint8_t *)assigned_buf,
                                                                     (size_t)len})) {
                client_id = (codec_bytes){(const uint8_t *)assigned_buf, (size_t)len};
                break;
            }
        }
        assigned = true;
    }
    if (client_id.len > MAX_CLIENT_ID || !client_id_allowed(c->who, client_id)) {
        broker_log(b, BROKER_EV_REFUSED_CONNECT, c->who,
                   "client identifier '%.*s' does not belong to this certificate",
                   (int)(client_id.len > 64 ? 64 : client_id.len), (const char *)client_id.ptr);
        refuse(b, c, p, 0x85, 0x02, "client identifier not valid for this identity");
        return;
    }

    policy_set *policies =
        b->cfg.policies_for ? b->cfg.policies_for(b->cfg.policies_ctx, c->who) : NULL;
    if (!policies || !policy_may_connect(policies)) {
        policy_set_free(policies);
        refuse(b, c, p, 0x87, 0x05, "not authorized to connect");
        return;
    }
    if (p->will_flag) {
        bool topic_ok = p->will_topic.len <= b->lim.max_topic_length &&
                        codec_topic_levels(p->will_topic) <= b->lim.max_topic_levels;
        if (!topic_ok || !policy_may_publish(policies, p->will_topic)) {
            policy_set_free(policies);
            refuse(b, c, p, 0x87, 0x05, "will topic not allowed");
            return;
        }
    }

    /* An existing session with this client id: take it over. */
    session *s = session_find(&b->sessions, client_id);
    bool session_present = false;
    if (s && s->conn) {
        broker_conn *old = s->conn;
        /* The old connection's will: published now unless this connection
         * resumes the session within its will delay (3.1.3.2.2). */
        if (!(s->will && !p->clean_start && s->will_delay > 0) && s->will)
            publish_will(b, s, now);
        will_drop(b, s);
        /* While old->s still gives the old client's packet size limit. */
        conn_close_quiet(b, old, 0x8E, "another connection took over this session");
        old->s = NULL;
        old->clean_disconnect = true; /* its will is settled above */
        s->conn = NULL;
        alias_reset(b, s);
        broker_log(b, BROKER_EV_DISCONNECTED, old->who, "session taken over by a new connection");
    } else if (s && s->will) {
        /* Offline with a will waiting for its delay: reconnecting cancels it,
         * unless the session is being ended by clean start (or had ended: a
         * clean session's will restored after a crash). */
        if (p->clean_start || !s->persistent)
            publish_will(b, s, now);
        will_drop(b, s);
        s->will_at = 0;
    }
    if (s && (p->clean_start || !s->persistent || strcmp(s->who->id, c->who->id) != 0 ||
              s->who->kind != c->who->kind)) {
        session_destroy(b, s, now);
        s = NULL;
    }
    if (s) {
        session_present = true;
        policy_set_free(s->policies);
        s->expires_at = 0;
        timer_disarm(&b->timers, &s->timer);
    } else {
        s = session_new(b, client_id, c->who);
        if (!s) {
            policy_set_free(policies);
            refuse(b, c, p, 0x89, 0x03, "out of memory");
            return;
        }
    }
    s->policies = policies;
    s->version = p->protocol_version;
    s->conn = c;
    who_borrow(s, c->who);
    c->s = s;

    /* Session lifetime. */
    uint32_t expiry;
    if (p->protocol_version == CODEC_V5)
        expiry = CODEC_HAS(props, CODEC_PROP_SESSION_EXPIRY) ? props->session_expiry : 0;
    else
        expiry = p->clean_start ? 0 : UINT32_MAX;
    bool expiry_lowered = false;
    if (expiry > b->lim.max_session_expiry) {
        expiry = b->lim.max_session_expiry;
        expiry_lowered = p->protocol_version == CODEC_V5;
    }
    s->expiry_interval = expiry;
    s->persistent = expiry > 0;

    /* What the client can take. */
    s->client_receive_max =
        CODEC_HAS(props, CODEC_PROP_RECEIVE_MAXIMUM) ? props->receive_maximum : UINT16_MAX;
    s->client_max_packet =
        CODEC_HAS(props, CODEC_PROP_MAXIMUM_PACKET_SIZE) ? props->maximum_packet_size : 0;
    s->client_alias_max =
        CODEC_HAS(props, CODEC_PROP_TOPIC_ALIAS_MAXIMUM) ? props->topic_alias_maximum : 0;

    /* Keep alive: lowered to the maximum; 0 means "none" in 3.1.1, while an
     * MQTT 5 client is told the maximum instead (Server Keep Alive). */
    uint16_t keep_alive = p->keep_alive;
    bool keep_alive_changed = false;
    if (keep_alive > b->lim.max_keep_alive ||
        (keep_alive == 0 && p->protocol_version == CODEC_V5)) {
        keep_alive = b->lim.max_keep_alive;
        keep_alive_changed = p->protocol_version == CODEC_V5;
    }
    c->keep_alive = keep_alive;

    if (p->will_flag) {
        s->will = will_from_connect(p, session_id(s));
        if (!s->will)
            broker_log(b, BROKER_EV_STORE_FAILED, c->who,
                       "out of memory: the will message of this connection is not kept");
        s->will_expires = CODEC_HAS(&p->will_props, CODEC_PROP_MESSAGE_EXPIRY);
        s->will_expiry = p->will_props.message_expiry;
        s->will_delay =
            CODEC_HAS(&p->will_props, CODEC_PROP_WILL_DELAY) ? p->will_props.will_delay : 0;
    }

    /* Accept. */
    c->state = CONN_ACTIVE;
    c->in.max = b->lim.max_packet_size + 16384u; /* authenticated: the full limit */
    c->timer.kind = TIMER_KEEPALIVE;
    timer_disarm(&b->timers, &c->timer);
    if (keep_alive)
        (void)timer_arm(&b->timers, &c->timer, now + (uint64_t)keep_alive * 1500u);

    codec_connack ack = {.session_present = session_present, .reason = 0};
    if (p->protocol_version == CODEC_V5) {
        codec_props *ap = &ack.props;
        CODEC_SET(ap, CODEC_PROP_RECEIVE_MAXIMUM);
        ap->receive_maximum = b->lim.max_inflight;
        CODEC_SET(ap, CODEC_PROP_MAXIMUM_PACKET_SIZE);
        ap->maximum_packet_size = (uint32_t)b->lim.max_packet_size;
        CODEC_SET(ap, CODEC_PROP_TOPIC_ALIAS_MAXIMUM);
        ap->topic_alias_maximum = b->lim.topic_alias_maximum;
        if (assigned) {
            CODEC_SET(ap, CODEC_PROP_ASSIGNED_CLIENT_ID);
            ap->assigned_client_id = session_id(s);
        }
        if (expiry_lowered) {
            CODEC_SET(ap, CODEC_PROP_SESSION_EXPIRY);
            ap->session_expiry = expiry;
        }
        if (keep_alive_changed) {
            CODEC_SET(ap, CODEC_PROP_SERVER_KEEP_ALIVE);
            ap->server_keep_alive = keep_alive;
        }
    }
    send_connack(b, c, &ack, s->client_max_packet);
    if (s->persistent)
        store_session(b, s, 0);
    will_store(b, s);
    broker_log(b, BROKER_EV_CONNECTED, c->who, "connected as '%.*s' (MQTT %s, %s session)",
               (int)session_id(s).len, (const char *)session_id(s).ptr,
               p->protocol_version == CODEC_V5 ? "5.0" : "3.1.1",
               session_present ? "resumed" : "new");
    if (session_present)
        session_resend(b, s, now);
    session_pump(b, s, now);
}

void handle_disconnect(broker *b, broker_conn *c, const codec_disconnect *p)
{
    session *s = c->s;
    if (!s) {
        conn_close(b, c, 0, NULL);
        return;
    }
    if (CODEC_HAS(&p->props, CODEC_PROP_SESSION_EXPIRY)) {
        /* [MQTT-3.14.2-2]: 0 at CONNECT cannot become non-zero now. */
        if (s->expiry_interval == 0 && p->props.session_expiry != 0) {
            conn_close(b, c, 0x82, "session expiry set on DISCONNECT after 0 at CONNECT");
            return;
        }
        uint32_t e = p->props.session_expiry;
        s->expiry_interval = e > b->lim.max_session_expiry ? b->lim.max_session_expiry : e;
        s->persistent = s->expiry_interval > 0;
    }
    /* 0x04: the client asks for its will to be published. Nothing is sent
     * back to a DISCONNECT (reason 0 adds none). */
    c->clean_disconnect = p->reason != 0x04;
    if (c->clean_disconnect)
        will_drop(b, s); /* now: a crash before the connection is gone must not publish it */
    conn_close(b, c, 0, NULL);
}
