/*
 * hub_int.h — moatd's server internals shared by server.c (set-up, signals,
 * the hub-wide state) and worker.c (one event loop per thread: connections,
 * TLS, loop passes). Not for use outside src/hub.
 *
 * Threads: worker 0 runs on the main thread and also owns the signals and the
 * plaintext test listener; workers 1..n-1 are threads of their own. Each
 * worker has its own listener on the shared port (SO_REUSEPORT), broker,
 * store file, registry connection and timers. After the TLS handshake a
 * connection moves to the worker that owns its principal (relay.h). What the
 * workers share is in hub_server: the per-address table (its mutex), the
 * message-id counter (atomic), the share-group table (shares.h), and the
 * connection count (atomic).
 */
#ifndef MOAT_HUB_HUB_INT_H
#define MOAT_HUB_HUB_INT_H

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker.h"
#include "config.h"
#include "hmap.h"
#include "ingest.h"
#include "monitor.h"
#include "policy_cache.h"
#include "query.h"
#include "registry.h"
#include "relay.h"
#include "server.h"
#include "shares.h"
#include "sockbio.h"
#include "store_split.h"

typedef struct hub_worker hub_worker;

typedef struct ip_entry {
    char key[INET6_ADDRSTRLEN];
    size_t conns;
    double tokens; /* handshakes allowed now */
    uint64_t refilled_at;
} ip_entry;

/* Why a handshake failed, for the monitor: an index into refusal_reason. */
typedef enum conn_refusal {
    REFUSED_TLS, /* the handshake itself */
    REFUSED_CERTIFICATE,
    REFUSED_UNREGISTERED,
    REFUSED_REVOKED,
} conn_refusal;

/* One allocation holds a hub_conn, its libevent event and its broker_conn
 * (conn_event, conn_broker_mem in worker.c): an idle hub holds one per
 * client. Fields are ordered to leave no padding. */
typedef struct hub_conn {
    hub_worker *w; /* the worker whose loop owns it now */
    SSL *ssl;      /* NULL on the test listener */
    struct event *deadline; /* handshake timeout, then the lingering close */
    int64_t not_after;      /* the certificate's end, seconds since the epoch */
    ip_entry *ip; /* its key is the peer's address */
    struct hub_conn *next_dead;
    struct hub_conn *prev, *next; /* every connection of the worker */
    monitor_tap tap;              /* activity not yet reported to the monitor */
    sockbio_state sock;           /* the socket (under ssl) */
    broker_principal who;
    uint16_t port;   /* the peer's */
    uint8_t refusal; /* conn_refusal: why the verify callback refused the certificate */
    bool watched;    /* conn_event is assigned to the worker's loop */
    bool broker_open; /* conn_bc is the broker's connection */
    bool identified; /* the verify callback found an active identity */
    bool handshaking;
    bool want_write;
    bool close_queued;
    bool lingering; /* handshake failed: alert sent, draining until close */
} hub_conn;

struct hub_worker {
    struct hub_server *hub;
    unsigned index;
    pthread_t thread;
    bool thread_started;
    hub_config cfg;   /* this worker's copy (SIGHUP replaces it) */
    SSL_CTX *ssl_ctx; /* a reference of its own */
    struct event_base *base;
    struct evconnlistener *listener;
    struct evconnlistener *test_listener; /* worker 0 only */
    struct event *tick_ev, *poll_ev, *grace_ev, *inbox_ev;
    registry *reg;
    broker_store *store;
    broker *broker;
    broker_relay relay;
    relay_inbox inbox;
    relay_env *outbox[STORE_SPLIT_MAX]; /* batches being filled this pass */
    uint64_t ticket_from;               /* bit w: worker w must answer this pass */
    relay_env *ingest_out;              /* readings for the telemetry store, this pass */
    bool ingest_ticket;                 /* ... some of them promised by a PUBACK */
    bool ingest_lost;                   /* ... one could not be queued: no ack */
    relay_pending pending;              /* our passes waiting for tickets */
    relay_env **owed;                   /* tickets for the batches taken this pass */
    size_t nowed, owed_cap;
    size_t nconns;
    int64_t registry_version;
    int64_t next_cert_expiry; /* no connection's certificate ends before */
    policy_cache policies;    /* sets shared by the sessions of a principal */
    hub_conn *dead;           /* closes queued by the worker itself */
    hub_conn *conns;
    bool pass_pending; /* run the next loop pass without blocking */
    bool stopping;
    bool drained; /* counted in hub->drained */
    uint64_t stop_by;
};

struct hub_server {
    hub_config cfg;
    hub_server_opts opts;
    unsigned nworkers;
    hub_worker *workers;
    struct event *sig_term, *sig_int, *sig_hup; /* in worker 0's loop */
    pthread_mutex_t ips_mu;
    bool ips_mu_ready;
    hmap ips;                 /* address -> ip_entry, under ips_mu */
    _Atomic size_t nconns;    /* connections on every worker */
    _Atomic uint64_t ids;     /* last message id handed out */
    _Atomic unsigned drained; /* workers stopped with no connection left */
    atomic_bool stopping;
    hub_shares *shares;
    hub_ingest *ingest; /* NULL: [telemetry] store = no */
    hub_query *query;   /* NULL: [telemetry] store = no */
    monitor *mon;       /* liveness, alerts, webhooks, audit of refusals */
    /* Store health (watch.c): bit k = worker k's last commit failed; the
     * telemetry store's likewise; unsure until the first commit after start
     * (an alert left open by the last run is cleared by one that works). */
    pthread_mutex_t store_mu;
    bool store_mu_ready;
    _Atomic uint64_t store_bad;
    atomic_bool tstore_bad;
    atomic_bool store_unsure;
    uint16_t port;
};

/* worker.c */
bool worker_init(hub_worker *w, hub_server *hub, unsigned index, char *err, size_t errlen);
bool worker_listen(hub_worker *w, char *err, size_t errlen);
int worker_run(hub_worker *w);
void worker_free(hub_worker *w);
/* From any thread: ask worker w to stop / re-read. */
void worker_control(hub_worker *w, int control, void *arg);
/* In worker 0's thread: seed the other workers' retained replicas. */
void worker_seed_retained(hub_server *hub);
int verify_cb(int ok, X509_STORE_CTX *store);

/* server.c */
void hub_reload(hub_worker *w0);
uint64_t hub_now_ms(void);

/* watch.c: the monitor's wiring */
bool watch_start(hub_server *hub, char *err, size_t errlen);
void watch_stop(hub_server *hub);
/* A commit of worker `source`'s store, or of the telemetry store
 * (HUB_STORE_TELEMETRY), worked or failed (detail says how). */
#define HUB_STORE_TELEMETRY (-1)
void hub_store_state(hub_server *hub, int source, bool ok, const char *detail);
/* A refused access, for the monitor (bursts) and the audit log. */
void hub_note_refusal(hub_server *hub, monitor_refusal what, const char *addr,
                      const broker_principal *who, const char *reason, codec_bytes topic);

/* A message the hub itself publishes (alerts, query answers): handed to the
 * workers' inboxes and routed there like any message, so subscriptions and
 * receive policies decide who gets it. JSON payloads. */
typedef struct hub_message {
    codec_bytes topic;
    codec_bytes payload;
    uint8_t qos;
    codec_bytes correlation; /* MQTT 5 Correlation Data, or empty */
    codec_bytes to;          /* only this session (client id), or empty: everyone */
} hub_message;
#define HUB_ALL_WORKERS (-1)
bool hub_post(hub_server *hub, int worker, const hub_message *m);

#endif /* MOAT_HUB_HUB_INT_H */
