/*
 * broker.h — the hub's MQTT logic: sessions, QoS flows, routing, retained
 * messages and wills, as a pure state machine.
 *
 * The broker never touches a socket, a clock, or a file. The server (I/O)
 * gives it authenticated connections and the bytes they send, the time, and
 * a store to make state durable; the broker answers with bytes to send per
 * connection and connections to close. So every MQTT rule is testable by
 * feeding bytes, and the server stays a thin loop:
 *
 *     per readable connection:  broker_input(b, conn, bytes, n, now)
 *     end of the loop pass:     broker_commit(b)      (group commit)
 *                               for each conn in broker_dirty(): send output
 *                               for each conn in broker_closing(): close it
 *     on a timer:               broker_tick(b, now) returns the next deadline
 *
 * Nothing a pass produced may leave the hub before broker_commit returned:
 * that is what makes "acknowledged" mean "durable".
 *
 * One broker per worker thread; it is not thread-safe.
 */
#ifndef MOAT_HUB_BROKER_H
#define MOAT_HUB_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "codec.h"
#include "policy.h"

typedef struct broker broker;
typedef struct broker_conn broker_conn;

typedef enum broker_kind { BROKER_DEVICE = 1, BROKER_SERVICE = 2 } broker_kind;

/* Who is on the other end, as the server established it from the verified
 * certificate and the registry. Never from anything the client sends. */
typedef struct broker_principal {
    broker_kind kind;
    char id[64]; /* device id or service name, NUL-terminated */
} broker_principal;

/* Limits from the config ([limits]); broker_limits_default() gives the
 * documented defaults. */
typedef struct broker_limits {
    size_t max_packet_size;           /* largest packet accepted from a client */
    size_t max_packet_before_connect; /* largest first packet (unauthenticated) */
    size_t max_topic_length;
    size_t max_topic_levels;
    size_t max_subscriptions;     /* per session */
    uint16_t max_inflight;        /* receive maximum announced to clients */
    size_t max_queued;            /* messages queued per session */
    size_t max_output;            /* bytes buffered for a slow reader */
    uint16_t max_keep_alive;      /* seconds; larger requests are lowered */
    uint32_t max_session_expiry;  /* seconds */
    uint32_t max_publish_rate;    /* messages per second per device; 0: none */
    uint16_t topic_alias_maximum; /* aliases a client may use toward us */
    uint32_t connect_timeout_ms;  /* from connection to CONNECT */
} broker_limits;

void broker_limits_default(broker_limits *limits);

/* Events the broker reports (for logs, metrics, alerts). */
typedef enum broker_event {
    BROKER_EV_CONNECTED,
    BROKER_EV_DISCONNECTED,
    BROKER_EV_REFUSED_CONNECT, /* CONNECT refused: detail says why */
    BROKER_EV_REFUSED_PUBLISH, /* policy or limit */
    BROKER_EV_REFUSED_SUBSCRIBE,
    BROKER_EV_PROTOCOL_ERROR, /* connection closed for a protocol violation */
    BROKER_EV_DROPPED,        /* a message dropped (queue full, expired) */
    BROKER_EV_STORE_FAILED
} broker_event;

typedef void (*broker_log_fn)(void *ctx, broker_event ev, const broker_principal *who,
                              const char *detail);

/* A refused CONNECT, PUBLISH or SUBSCRIBE as data (besides its log line),
 * for the monitor's burst detectors and the audit log. Valid during the
 * call only. */
typedef struct broker_refusal {
    broker_event ev; /* BROKER_EV_REFUSED_CONNECT, _PUBLISH or _SUBSCRIBE */
    const broker_principal *who;
    void *io;           /* the connection's server handle; NULL for a will */
    codec_bytes topic;  /* the topic or filter refused; empty for a CONNECT */
    const char *reason; /* a short fixed word: "policy", "limit", "rate", ... */
} broker_refusal;

/* A PUBLISH to a "$" topic, offered to the server before routing (after the
 * publish policy, limits and rate allowed it): the hub answers some topics
 * itself (a telemetry query, docs/telemetry.md). Valid during the call. */
typedef struct broker_request {
    const broker_principal *who;
    void *io;
    codec_bytes client_id; /* the session's */
    codec_bytes topic;
    codec_bytes payload;
    const codec_props *props; /* NULL for MQTT 3.1.1 */
} broker_request;

/* broker_config.request's answers besides a reason code >= 0x80 (refused). */
enum { BROKER_REQUEST_TAKEN = 0, BROKER_REQUEST_PASS = -1 };

typedef struct broker_store broker_store; /* store.h */

/* ---- several workers (docs/hub.md "Several cores") ------------------------
 * Also how messages reach the telemetry store. Each worker thread runs its
 * own broker over the sessions of the principals it owns. A message published on one is routed
 * there and handed to the others as a broker_fwd (the server copies it across); they route it
 * against their own subscriptions with broker_inject. Retained messages have one authority (worker
 * 0), which stores them and hands every change to the others as a replica. Without workers or
 * telemetry none of this is set. */
enum {
    BROKER_FWD_ROUTE = 1,          /* route to this broker's subscribers */
    BROKER_FWD_RETAIN_STORE = 2,   /* set as retained and store it (the authority) */
    BROKER_FWD_RETAIN_REPLICA = 4, /* set as retained in memory only */
    BROKER_FWD_SHARE = 8,          /* for one share group only (broker_fwd.share) */
};

typedef struct broker_fwd {
    codec_bytes topic, payload, props, origin;
    uint8_t qos;
    bool retain;
    uint64_t expires_at;
    uint64_t gid;  /* hub-wide message id: every worker picks the same
                      shared-subscription member from it */
    uint8_t flags; /* BROKER_FWD_*: what the sender did or asks for */
    /* Who published it, for a message this broker took from a client or a
     * will (NULL for copies from other workers). Valid during the call. */
    const broker_principal *from;
    /* broker_inject only: when not empty, deliver to this one session (client
     * id) through its own matching subscriptions and receive policy, and to
     * no one else: the hub's answer to a request is for the requester. */
    codec_bytes to;
    /* BROKER_FWD_SHARE: the share group ("$share/NAME/FILTER") whose member
     * on another worker had this message when its session ended; the worker
     * that serves the group gives it to one of its members, the others
     * ignore it. */
    codec_bytes share;
} broker_fwd;

typedef struct broker_relay {
    void *ctx;
    /* A message this broker took from a client or a will (flags: ROUTE,
     * plus RETAIN_STORE when this broker is the retained authority and
     * stored it), or a retained change the authority made for another
     * worker's message (flags: RETAIN_REPLICA only). Returns true when
     * another thread stores it, so that its PUBACK/PUBREC must wait for
     * broker_release_acks; false lets it go out with the pass. */
    bool (*forward)(void *ctx, const broker_fwd *f);
    /* Hub-wide ids for messages (store rows and gids), shared by the
     * workers so that rows moved between their stores never collide. */
    uint64_t (*next_id)(void *ctx);
    /* Shared subscriptions spanning workers: join/leave keep a hub-wide
     * group table; mine says whether this worker delivers message gid to
     * the group (one worker per message). */
    void *(*share_join)(void *ctx, codec_bytes share, codec_bytes filter);
    void (*share_leave)(void *ctx, void *group);
    bool (*share_mine)(void *ctx, void *group, uint64_t gid);
    /* Before routing a client's PUBLISH: 0 to accept, or the MQTT 5 reason
     * code to refuse it with (the telemetry store refuses envelopes that do
     * not decode). May be NULL. */
    uint8_t (*check_publish)(void *ctx, const broker_principal *who, codec_bytes topic,
                             codec_bytes payload);
    /* Not the retained authority: keep retained messages in memory only. */
    bool retained_replica;
    /* Hold PUBACK/PUBREC until broker_release_acks says the pass that took
     * the message is durable on every worker it reached. */
    bool hold_acks;
} broker_relay;

typedef struct broker_config {
    broker_limits limits;
    broker_store *store; /* NULL: nothing durable (tests) */
    broker_log_fn log;   /* may be NULL */
    void *log_ctx;
    /* The policies of a principal, built by the server from the registry.
     * Called at CONNECT; NULL result means deny-all. The broker owns it. */
    policy_set *(*policies_for)(void *ctx, const broker_principal *who);
    void *policies_ctx;
    /* Several workers: NULL with one. The broker keeps its own copy. */
    const broker_relay *relay;
    /* Every refusal, structured (called with log_ctx). May be NULL. */
    void (*refused)(void *ctx, const broker_refusal *r);
    /* PUBLISHes to "$" topics: BROKER_REQUEST_PASS routes the message as
     * usual; BROKER_REQUEST_TAKEN acknowledges it (success) without routing;
     * a reason code >= 0x80 refuses it like a policy refusal. May be NULL. */
    int (*request)(void *ctx, const broker_request *r);
    void *request_ctx;
} broker_config;

/* NULL when out of memory or when the store cannot be loaded. */
broker *broker_new(const broker_config *config, uint64_t now_ms);
void broker_free(broker *b);

/* A new authenticated connection; io is the server's handle for it. who is
 * not copied: it must stay as it is until the connection is released (the
 * server keeps it with io). */
broker_conn *broker_conn_open(broker *b, const broker_principal *who, void *io, uint64_t now_ms);

/* The same in memory the server provides: broker_conn_size() bytes aligned
 * for any object, so that a connection's parts can share one allocation
 * (an idle connection then costs one malloc header, not three).
 * broker_conn_gone leaves that memory to the server. */
size_t broker_conn_size(void);
broker_conn *broker_conn_open_in(void *mem, broker *b, const broker_principal *who, void *io,
                                 uint64_t now_ms);

/* Bytes received on the connection. The broker buffers partial packets (up to
 * the packet size limit) and handles every complete one. */
void broker_input(broker *b, broker_conn *c, const uint8_t *data, size_t len, uint64_t now_ms);

/* The socket is gone (peer closed, error, or the server closed it). Publishes
 * the will unless the client disconnected cleanly. The conn is freed. */
void broker_conn_gone(broker *b, broker_conn *c, uint64_t now_ms);

/* Make this pass durable (one store transaction). Returns false when the
 * store failed; the connections whose effects were lost are then closed
 * without sending what they were owed. */
bool broker_commit(broker *b);

/* Connections with output to send; broker_output gives their bytes. Each call
 * of broker_dirty hands out the list once (it is cleared). */
size_t broker_dirty(broker *b, broker_conn ***list);
buf *broker_output(broker_conn *c);

/* After some of a conn's output was sent (the server consumed it from the
 * buffer): lets the broker send more queued messages. */
void broker_output_drained(broker *b, broker_conn *c, uint64_t now_ms);

/* Connections the broker wants closed (after their output is sent). */
size_t broker_closing(broker *b, broker_conn ***list);

/* The server's handle given at broker_conn_open. */
void *broker_conn_io(const broker_conn *c);
const broker_principal *broker_conn_principal(const broker_conn *c);

/* For liveness: packets received (any kind, once CONNECT was accepted)
 * since the last call, which starts the count again; whether this
 * connection's CONNECT was accepted and it still holds its session (false
 * after a takeover); whether it ended with a DISCONNECT that asked for no
 * will. Read them before broker_conn_gone. */
uint64_t broker_conn_take_packets(broker_conn *c);
bool broker_conn_has_session(const broker_conn *c);
bool broker_conn_clean(const broker_conn *c);

/* True when this pass wrote to the store (or failed to), so that the
 * coming broker_commit says something about the store's health. */
bool broker_store_touched(const broker *b);

/* A message from another worker (see broker_relay). True when it matched a
 * subscription here. */
bool broker_inject(broker *b, const broker_fwd *f, uint64_t now_ms);

/* Another worker found subscribers for message gid: its held PUBACK/PUBREC
 * says 0x00, not 0x10 (no matching subscribers). */
void broker_ack_matched(broker *b, uint64_t gid);

/* Loop passes are numbered from 1; broker_commit ends the current one.
 * With hold_acks, acknowledgements are tagged with the pass that took the
 * message and released (queued for sending) by broker_release_acks once
 * every pass up to `through` is durable everywhere (ok), or dropped, closing
 * their connections, when one of those passes was lost (!ok). */
uint64_t broker_pass(const broker *b);
void broker_release_acks(broker *b, uint64_t through, bool ok);

/* Every retained message (to seed another worker's replica at start-up). */
void broker_retained_each(broker *b, void (*fn)(void *ctx, const broker_fwd *f), void *ctx);

/* Timers: keep-alive, will delay, session and message expiry. Returns the
 * time of the next deadline (ms), or UINT64_MAX when there is none. */
uint64_t broker_tick(broker *b, uint64_t now_ms);

/* The registry changed: close connections for which still_active returns
 * false, rebuild every live session's policies and drop subscriptions that
 * are no longer allowed. */
void broker_reauthorize(broker *b,
                        bool (*still_active)(void *ctx, const broker_principal *who, void *io),
                        void *ctx, uint64_t now_ms);

/* New limits (SIGHUP): they apply to what happens from now on. */
void broker_set_limits(broker *b, const broker_limits *limits);

/* Close a connection for a reason the server found (certificate expired...):
 * MQTT 5 clients get DISCONNECT with reason and why as its Reason String;
 * why is logged. */
void broker_close(broker *b, broker_conn *c, uint8_t reason, const char *why);

/* Close every connection (MQTT 5 clients get DISCONNECT 0x8B server shutting
 * down), for a clean stop. */
void broker_shutdown(broker *b, uint64_t now_ms);

/* Counters for metrics and tests. */
typedef struct broker_stats {
    uint64_t connections; /* live */
    uint64_t sessions;    /* live and offline */
    uint64_t subscriptions;
    uint64_t retained;
    uint64_t msgs_in;
    uint64_t msgs_out;
    uint64_t dropped;
    uint64_t refused;
} broker_stats;

void broker_get_stats(const broker *b, broker_stats *out);

#endif /* MOAT_HUB_BROKER_H */
