/*
 * broker_int.h — the broker's internal structures, shared by its files:
 * broker.c (connections, framing, dispatch, commit), session.c (CONNECT,
 * takeover, wills, expiry), publish.c (inbound QoS flows, routing, outbound
 * window), subscribe.c (SUBSCRIBE/UNSUBSCRIBE, retained), timers.c (a heap of
 * deadlines), msg.c (shared messages). Not for use outside src/hub.
 */
#ifndef MOAT_HUB_BROKER_INT_H
#define MOAT_HUB_BROKER_INT_H

#include "broker.h"
#include "hmap.h"
#include "keyhash.h"
#include "store.h"
#include "tree.h"

/* ---- messages ----------------------------------------------------------- */

/* One published message, shared by every queue and retained slot that holds
 * it: the payload is never copied per subscriber. */
typedef struct msg {
    uint32_t refs;
    uint32_t durable_refs; /* store rows that point at it (queues, retained) */
    uint64_t store_id;     /* 0 until written to the store */
    uint64_t expires_at;   /* ms; 0 = never */
    uint64_t gid;          /* hub-wide id (several workers), else 0 */
    uint8_t qos;
    bool retain;
    codec_bytes topic;
    codec_bytes payload;
    codec_bytes props;  /* the publisher's MQTT 5 property block, as sent */
    codec_bytes origin; /* publisher's client id (for no-local) */
    uint8_t data[];
} msg;

msg *msg_new(codec_bytes topic, codec_bytes payload, codec_bytes props, codec_bytes origin,
             uint8_t qos, bool retain, uint64_t expires_at);
/* msg_new with the forwardable subset of a PUBLISH's (or a will's)
 * properties encoded as its block; props may be NULL. NULL when out of memory
 * or the properties cannot be encoded. */
msg *msg_with_props(codec_bytes topic, codec_bytes payload, const codec_props *props,
                    codec_bytes origin, uint8_t qos, bool retain, uint64_t expires_at);
msg *msg_ref(msg *m);
void msg_unref(msg *m);

/* ---- timers ------------------------------------------------------------- */

typedef enum timer_kind {
    TIMER_NONE,
    TIMER_CONNECT,   /* conn: CONNECT must arrive */
    TIMER_KEEPALIVE, /* conn: 1.5 x keep alive without a packet */
    TIMER_SESSION,   /* session: expiry or will delay while offline */
} timer_kind;

typedef struct timer {
    uint64_t at;
    void *owner;
    uint32_t index; /* position in the heap, TIMER_UNARMED when not armed */
    uint8_t kind;   /* timer_kind */
} timer;

#define TIMER_UNARMED UINT32_MAX

typedef struct timer_heap {
    timer **items;
    size_t len, cap;
} timer_heap;

void timer_init(timer *t, timer_kind kind, void *owner);
bool timer_arm(timer_heap *h, timer *t, uint64_t at);
void timer_disarm(timer_heap *h, timer *t);
/* The earliest timer due at or before now, removed from the heap; NULL if none. */
timer *timer_pop_due(timer_heap *h, uint64_t now);
uint64_t timer_next(const timer_heap *h);
void timer_heap_free(timer_heap *h);

/* ---- subscriptions ------------------------------------------------------ */

typedef struct session session;

typedef struct sub {
    session *s;
    uint8_t *filter_mem; /* owned copy of the full filter */
    codec_bytes filter;  /* as subscribed, with any $share/NAME/ prefix */
    codec_bytes share;   /* share name, empty for a plain subscription */
    codec_bytes inner;   /* the filter that is matched */
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    uint8_t retain_handling;
    uint32_t sub_id;  /* 0 = none */
    struct sub *next; /* in its tree node's list */
} sub;

/* Value of a node in the plain tree: subscriptions in this filter.
 * Value of a node in the shared tree: share groups on this inner filter. */
typedef struct share_group {
    uint8_t *name_mem;
    codec_bytes name;
    sub *members;     /* list through sub.next */
    size_t next_pick; /* round robin */
    void *hub_group;  /* relay's hub-wide entry (several workers) */
    struct share_group *next;
} share_group;

/* ---- sessions ----------------------------------------------------------- */

typedef enum delivery_state {
    DELIVERY_QUEUED,   /* not sent yet */
    DELIVERY_SENT,     /* QoS 1/2 PUBLISH sent, waiting for PUBACK/PUBREC */
    DELIVERY_RELEASED, /* QoS 2: PUBREL sent, waiting for PUBCOMP */
} delivery_state;

#define DELIVERY_MAX_SUB_IDS 4

/* A message on its way to one session. */
typedef struct delivery {
    msg *m;
    uint64_t seq; /* per-session order; store key */
    uint8_t qos;
    bool retain;
    uint8_t state; /* delivery_state */
    bool stored;
    uint16_t packet_id;
    uint8_t nsub_ids;
    bool shared; /* for a share group: another member gets it if the
                    session ends first */
    uint32_t sub_ids[DELIVERY_MAX_SUB_IDS];
    struct delivery *next;
} delivery;

typedef struct alias_entry {
    uint8_t *topic;
    size_t len;
} alias_entry;

/* The parts of a session that most sessions never use, made on first use
 * (session_rare_of): a hub holds a session per client, idle or not. */
typedef struct session_rare {
    /* Topic aliases the client set toward us, indexed by alias
     * (limits.topic_alias_maximum + 1 entries, made on first use). */
    alias_entry *alias_in;
    /* Aliases we set toward the client: entry i is alias i + 1. */
    alias_entry *alias_out;
    uint16_t alias_out_used;
    uint16_t *qos2_in; /* packet ids of QoS 2 PUBLISHes awaiting PUBREL */
    uint32_t nqos2_in, qos2_in_cap;
    uint8_t *pid_bits; /* packet ids in use, one bit each; made once a
                          session has many messages in flight */
    uint64_t drops;    /* messages dropped for this session */
    uint64_t drops_logged_at;
} session_rare;

struct session {
    /* Fields are ordered to leave no padding: an idle hub holds one per
     * client, and its size is most of moatd's own memory per connection. */
    /* Online, the connection's principal (the server keeps it as long as
     * the connection); offline, a copy of its own (who_owned). Most sessions
     * of an idle hub are online, and a copy is 68 bytes. */
    const broker_principal *who;
    broker_conn *conn;        /* NULL while offline */
    timer timer;              /* TIMER_SESSION */
    uint64_t will_at;         /* 0 when no will is pending */
    uint64_t expires_at;      /* 0 when online or never */

    sub **subs;
    uint32_t nsubs, subs_cap;

    delivery *queue_head, *queue_tail; /* every delivery, in order */
    delivery *send_next;               /* no unsent delivery comes before it; NULL: none
                                          is unsent. Spares session_pump a walk over
                                          everything in flight on every message. */
    uint32_t queued;                   /* deliveries in the list (max_queued fits) */
    uint32_t inflight;                 /* SENT or RELEASED */
    uint64_t next_seq;

    policy_set *policies;
    msg *will;
    uint32_t will_delay;
    uint32_t will_expiry;        /* seconds from its publication (3.1.3.2.4), */
    uint32_t expiry_interval;    /* seconds; UINT32_MAX never */
    uint32_t client_max_packet;  /* from CONNECT; 0 = protocol maximum */
    uint16_t client_receive_max; /* from CONNECT */
    uint16_t client_alias_max;   /* from CONNECT */
    uint16_t next_packet_id;
    bool will_expires; /* the will has a Message Expiry Interval */
    uint8_t version;
    bool persistent; /* kept after disconnect (and in the store) */
    bool stored;     /* has a row in the store */
    bool who_owned;  /* who is this session's to free */
    bool will_stored; /* its will has a row in the store (published after a crash) */
    uint32_t index_hash;
    uint16_t client_id_len; /* session_id() */

    session_rare *rare;  /* NULL until one of its parts is needed */
    session *index_next; /* in its broker's session_index */

    uint64_t route_epoch; /* last routing pass that reached this session */
    delivery *route_delivery;

    double rate_tokens; /* publish rate limit (token bucket) */
    uint64_t rate_at;

    uint8_t client_id_bytes[]; /* allocated with the session */
};

/* A session's client id (its bytes live at the end of the session). */
static inline codec_bytes session_id(const session *s)
{
    return (codec_bytes){s->client_id_bytes, s->client_id_len};
}

/* sessions.c: a broker's sessions by client id, chained through the
 * sessions themselves. */
typedef struct session_index {
    session **buckets;
    size_t nbuckets; /* power of two, or 0 */
    size_t count;
    uint8_t seed[KEYHASH_KEY_BYTES];
} session_index;

bool session_index_init(session_index *x); /* false if libsodium fails */
void session_index_free(session_index *x); /* the table, not the sessions */
session *session_find(const session_index *x, codec_bytes client_id);
/* s (not indexed yet) under its client id; false when out of memory. */
bool session_index_add(session_index *x, session *s);
void session_index_remove(session_index *x, session *s);
/* Walk: bucket starts at 0; s = session_index_first, then
 * session_index_next(x, &bucket, s) until NULL. Removing the session just
 * returned by session_index_first is allowed (first it again). */
session *session_index_first(const session_index *x, size_t *bucket);
session *session_index_next(const session_index *x, size_t *bucket, const session *s);

/* ---- connections -------------------------------------------------------- */

typedef enum conn_state { CONN_NEW, CONN_ACTIVE, CONN_CLOSING } conn_state;

struct broker_conn {
    void *io;
    const broker_principal *who; /* the server's: it outlives the connection */
    session *s;
    buf in;
    buf out;
    timer timer; /* TIMER_CONNECT, then TIMER_KEEPALIVE */
    uint64_t last_rx;
    struct held_ack *held_last; /* acks waiting for durability: the newest,
                                   in a ring whose next is the oldest */
    struct broker_conn *prev, *next;
    uint32_t packets;    /* see broker_conn_take_packets; wraps when never taken */
    uint8_t state;       /* conn_state */
    uint16_t keep_alive; /* seconds, as granted */
    uint8_t version;
    bool clean_disconnect; /* DISCONNECT without will */
    bool dirty;            /* in b->dirty */
    bool closing_listed;   /* in b->closing */
    bool holding_listed;   /* in b->holding */
    bool durable;          /* this pass wrote the store on its behalf */
    bool server_memory;    /* from broker_conn_open_in: not ours to free */
    bool no_problem_info;  /* CONNECT's Request Problem Information was 0 */
};

/* An acknowledgement held until its pass is durable on every worker. */
typedef struct held_ack {
    uint64_t pass;
    uint64_t gid; /* its message, while the reason is 0x10 "no
                     matching subscribers" and other workers may
                     still find some (broker_ack_matched) */
    const char *why; /* its Reason String (static), or NULL */
    uint8_t type;
    uint8_t reason;
    uint16_t packet_id;
    struct held_ack *next;
} held_ack;

static inline held_ack *held_oldest(const broker_conn *c)
{
    return c->held_last ? c->held_last->next : NULL;
}

static inline void held_push(broker_conn *c, held_ack *h)
{
    h->next = c->held_last ? c->held_last->next : h;
    if (c->held_last)
        c->held_last->next = h;
    c->held_last = h;
}

/* Take the oldest off the ring; NULL when none is held. */
static inline held_ack *held_pop(broker_conn *c)
{
    held_ack *h = held_oldest(c);
    if (h == c->held_last)
        c->held_last = NULL;
    else if (h)
        c->held_last->next = h->next;
    return h;
}

/* ---- the broker --------------------------------------------------------- */

/* Connections the worker must visit at the end of a pass. The array handed
 * out for one pass is kept and reused as the next one, so a busy hub does
 * not allocate a list per pass. */
typedef struct conn_list {
    broker_conn **v;
    size_t n, cap;
    broker_conn **handed; /* what conn_list_hand returned last */
    size_t handed_cap;
} conn_list;

struct broker {
    broker_config cfg;
    broker_limits lim;
    session_index sessions; /* client id -> session */
    tree *subs;     /* plain subscriptions */
    tree *shared;   /* shared subscriptions, by inner filter */
    tree *retained; /* topic -> msg */
    timer_heap timers;
    broker_conn *conns; /* all live connections */
    conn_list dirty;    /* output to write this pass */
    conn_list closing;  /* to close after this pass */
    bool freeing; /* broker_free: change memory only, not the store */
    bool in_txn;
    bool store_failed;
    uint64_t route_epoch;
    bool route_matched; /* the last route() found a subscription */
    session **touched;  /* sessions reached by the current route() */
    size_t ntouched, touched_cap;
    uint64_t last_msg_id;  /* store ids are last_msg_id + 1, + 2, ... */
    broker_relay relay;    /* all zero with one worker */
    bool relayed;          /* relay.forward is set */
    uint64_t pass;         /* current loop pass, from 1 */
    conn_list holding;     /* conns with held acks */
    hmap unmatched;        /* gid -> held_ack still saying 0x10 */
    broker_stats stats;
};

/* broker.c */
void conn_mark_dirty(broker *b, broker_conn *c);
/* Put c in b->holding (it has held acks); false when out of memory. */
bool broker_hold_list(broker *b, broker_conn *c);
/* Close c. An MQTT 5 client that is past CONNECT is sent a DISCONNECT with
 * the reason first, `why` as its Reason String; a `why` with an error reason
 * is also logged. conn_close_quiet: the same without the log line, for
 * callers that logged their own event. */
void conn_close(broker *b, broker_conn *c, uint8_t reason, const char *why);
void conn_close_quiet(broker *b, broker_conn *c, uint8_t reason, const char *why);
/* Give props `why` as its Reason String when the client may get one: MQTT 5,
 * and either `always` (CONNACK, DISCONNECT) or the client did not turn
 * problem information off (3.1.2.11.7). */
void explain(const broker_conn *c, codec_props *props, const char *why, bool always);
/* Whether a packet of n bytes is larger than the client takes: then it goes
 * without its Reason String ([MQTT-3.1.2-25]). limit 0: no limit. */
static inline bool explained_too_big(codec_props *props, size_t n, uint32_t limit)
{
    if (!CODEC_HAS(props, CODEC_PROP_REASON_STRING) || !limit || n <= limit)
        return false;
    props->present &= ~((uint64_t)1 << CODEC_PROP_REASON_STRING);
    return true;
}
/* The largest packet c's client takes, from its CONNECT; 0: no limit. */
static inline uint32_t conn_client_max(const broker_conn *c)
{
    return c->s ? c->s->client_max_packet : 0;
}
bool conn_send(broker *b, broker_conn *c, const uint8_t *bytes, size_t len);
void broker_log(broker *b, broker_event ev, const broker_principal *who, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A refusal for broker_config.refused (after its log line). */
void broker_refused(broker *b, broker_event ev, const broker_principal *who, void *io,
                    codec_bytes topic, const char *reason);
/* The short word for a refusal's MQTT 5 reason code ("policy", "limit"...). */
const char *broker_reason_word(uint8_t reason);
/* Start the pass's store transaction if needed; false when the store failed. */
bool store_touch(broker *b, broker_conn *c);

/* session.c */
void handle_connect(broker *b, broker_conn *c, const codec_connect *p, uint64_t now);
void handle_disconnect(broker *b, broker_conn *c, const codec_disconnect *p);
void session_detach(broker *b, session *s, uint64_t now);
/* A stored will for s (loading): attached to the session of its client id,
 * or, when that client had a clean session, to one made to publish it at the
 * first tick. */
bool session_restore_will(broker *b, const store_will_row *row, msg *will);
/* End s. Its share groups' messages it did not get go to other members. */
void session_destroy(broker *b, session *s, uint64_t now);
void session_timer_fired(broker *b, session *s, uint64_t now);
void publish_will(broker *b, session *s, uint64_t now);
session *session_restore(broker *b, const store_session_row *row);
/* s->rare, made if need be; NULL when out of memory. */
session_rare *session_rare_of(session *s);

/* publish.c */
void handle_publish(broker *b, broker_conn *c, const codec_publish *p, uint64_t now);
void handle_ack(broker *b, broker_conn *c, uint8_t type, const codec_ack *p, uint64_t now);
void route(broker *b, msg *m, uint64_t now);
/* Route to the session with this client id only (its subscriptions). */
void route_to(broker *b, msg *m, codec_bytes client_id, uint64_t now);
/* Note a QoS 2 packet id awaiting PUBREL (in memory only); false when out
 * of memory. */
bool qos2_in_push(session *s, uint16_t id);
/* shared: through a share group (delivery.shared). */
void session_enqueue(broker *b, session *s, msg *m, uint8_t qos, bool retain,
                     const uint32_t *sub_ids, size_t nsub_ids, bool shared, uint64_t now);
void session_pump(broker *b, session *s, uint64_t now);
void session_resend(broker *b, session *s, uint64_t now);
/* Put d last in s's queue and count it in s->queued (s->inflight is the
 * caller's to count). */
void queue_append(session *s, delivery *d);
void delivery_free(broker *b, session *s, delivery *d, bool from_store);
/* durable: write the store (one worker, or the retained authority). */
void retain_set(broker *b, msg *m, bool durable);
/* A new message id (store rows, gids). */
uint64_t broker_next_id(broker *b);
/* Hand a message this broker took to the other workers (no-op with one). */
/* True when the message's acknowledgement must wait (broker_relay.forward). */
bool relay_out(broker *b, msg *m, uint8_t flags, const broker_principal *from);
/* m as the relay and the retained walk hand it out. */
broker_fwd fwd_of(const msg *m, uint8_t flags, const broker_principal *from);
/* Queue a PUBACK/PUBREC, held while acks are held. */
void send_ack(broker *b, broker_conn *c, uint8_t type, uint16_t packet_id, uint8_t reason);
/* m is written to the store (once) and counted as pointed at by one more
 * durable row; false when it could not be. */
bool msg_make_durable(broker *b, msg *m, broker_conn *c);
/* One durable row less points at m: the last one deletes it from the store. */
void msg_release_durable(broker *b, msg *m);
/* The acknowledgement of a PUBLISH whose message has hub-wide id gid. */
void send_publish_ack(broker *b, broker_conn *c, uint8_t type, uint16_t packet_id, uint8_t reason,
                      uint64_t gid, bool wait);
/* m to one member of the share group `filter` ("$share/NAME/FILTER") when
 * this broker serves the group for m; else, with `relay`, to the worker that
 * does. True when a member here took it. */
bool share_redeliver(broker *b, msg *m, codec_bytes filter, bool relay, uint64_t now);

/* subscribe.c */
void handle_subscribe(broker *b, broker_conn *c, const codec_subscribe *p, uint64_t now);
void handle_unsubscribe(broker *b, broker_conn *c, const codec_unsubscribe *p);
void sub_remove(broker *b, sub *x, bool from_store);
bool sub_restore(broker *b, session *s, codec_bytes filter, uint8_t options, uint32_t sub_id);
void session_recheck_subs(broker *b, session *s);

#endif /* MOAT_HUB_BROKER_INT_H */
