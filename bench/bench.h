/*
 * bench.h — what the parts of moat-bench share: the options, the plan of
 * connections, the worker threads and their counters.
 *
 * moat-bench is a load generator for any MQTT broker over TLS 1.3 with client
 * certificates. The main thread (moat_bench.c) parses options, plans which
 * connection plays which role, moves every worker through the phases of a run
 * and reports. Each worker thread (client.c) owns an epoll loop and a slice of
 * the connections: non-blocking sockets, OpenSSL, and MQTT packets made and
 * read with the moat codec. Workers publish counters through relaxed atomics
 * (one writer each) so the main thread can print progress and the flow window
 * can see what is still in flight; latency and handshake histograms are
 * merged only after the workers have stopped.
 */
#ifndef MOAT_BENCH_H
#define MOAT_BENCH_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "hist.h"

/* The payload starts with the send time (CLOCK_MONOTONIC, ns), the
 * publisher's number and its sequence number, in the machine's byte order:
 * sender and receiver are the same process. */
#define BENCH_STAMP_LEN   16u
#define BENCH_MAX_PAYLOAD (16u * 1024u * 1024u)
#define BENCH_MAX_TOPIC   256u
/* Device ids become client ids and topic levels (moatctl's are 26 long). */
#define BENCH_MAX_DEVICE_ID 64u

typedef enum scenario { SC_FANIN, SC_FANOUT, SC_PAIRS, SC_STORM, SC_IDLE } scenario;

/* Phases of a run, set by the main thread, read by the workers each pass. */
typedef enum phase {
    PH_WAIT = 0, /* threads started, nothing opened yet */
    PH_SETUP,    /* open connections (the whole of a connect storm) */
    PH_WARMUP,   /* publish, count nothing */
    PH_MEASURE,  /* publish and count */
    PH_DRAIN,    /* stop publishing, let deliveries in flight arrive */
    PH_CLOSE     /* disconnect everything and leave */
} phase;

typedef enum role {
    ROLE_PUB,
    ROLE_SUB,
    ROLE_STORM, /* connect, CONNACK, disconnect */
    ROLE_IDLE   /* connect and stay, with keep-alive */
} role;

typedef struct bench_opts {
    scenario sc;
    const char *scenario_name;
    const char *host;
    uint16_t port;
    struct sockaddr_in addr;
    const char *cafile, *cert, *key;
    const char *ciphersuites;
    bool verify_server;
    struct sockaddr_in *sources;
    size_t nsources;
    uint32_t conns; /* -n: publishers, subscribers, pairs, storm or idle connections */
    uint32_t subs;  /* -k: fan-in subscribers */
    bool shared;    /* fan-in subscribers share one $share subscription */
    uint8_t qos;
    uint32_t size;   /* payload bytes */
    double rate;     /* total offered messages/s; 0 = as fast as the window allows */
    uint8_t version; /* 4 (3.1.1) or 5 */
    double duration; /* measured seconds (idle: how long to hold) */
    double warmup;
    double drain;
    uint64_t max_messages; /* stop once this many were published; 0 = no bound */
    const char *id_prefix;
    const char *topic;       /* pattern; %i: the publisher's number, %d: its device id */
    const char *devices_dir; /* publishers act as the devices found here; NULL: no */
    pid_t broker_pid;        /* 0: none */
    unsigned threads;
    const char *json_path;
    uint16_t keepalive;
    uint32_t inflight;    /* QoS 1/2 messages in flight per publisher */
    uint32_t window;      /* max mode: messages in flight through the broker */
    uint32_t burst;       /* max mode: messages one publisher adds per loop pass */
    uint32_t concurrency; /* connections being opened at once */
    double connect_rate;  /* new connections per second; 0 = no limit */
    bool persistent;      /* clean start off, session expiry set */
    int progress;         /* -1 auto, 0 off, 1 on */
    bool quiet;
    double setup_timeout;
    double settle; /* idle: seconds between the last connection and the RSS reading */
} bench_opts;

struct worker;

typedef enum conn_state {
    CS_NONE = 0, /* not opened yet */
    CS_TCP,      /* TCP connect in progress */
    CS_TLS,      /* TLS handshake */
    CS_MQTT,     /* CONNECT sent, waiting for CONNACK */
    CS_SUBSCRIBING,
    CS_READY,
    CS_DONE, /* closed after doing its job */
    CS_DEAD  /* failed */
} conn_state;

typedef struct bconn {
    struct worker *w;
    int fd;
    SSL *ssl;
    conn_state st;
    uint8_t role;
    uint32_t index;        /* number within its role */
    uint32_t epoll_events; /* what epoll watches now */
    buf in, out;
    uint32_t inflight; /* QoS 1/2 publishes not yet completed */
    uint32_t inflight_max;
    uint16_t next_id;
    uint32_t seq;
    uint64_t t_open;  /* when the TCP connect started */
    uint64_t last_tx; /* for keep-alive */
    bool dirty;       /* in the worker's flush list */
    bool again;       /* in the worker's read-again list */
    bool ping_out;
    char *topic; /* publishers: topic; subscribers: filter */
    size_t topic_len;
    SSL_CTX *ctx;       /* a device's own credentials; NULL: the worker's */
    const char *device; /* the device a publisher acts as (its client id); NULL: none */
} bconn;

/* One device's credentials, as `moatctl device add --out DIR` writes them. */
typedef struct bench_device {
    char id[BENCH_MAX_DEVICE_ID + 1];
    SSL_CTX *ctx; /* ID.crt and ID.key; verifies the broker with --cafile */
} bench_device;

/* Counters one worker writes and others read, on their own cache line. */
typedef struct wcount {
    _Atomic uint64_t sent;     /* PUBLISH packets written, whole run */
    _Atomic uint64_t recv;     /* PUBLISH packets received, whole run */
    _Atomic uint64_t opened;   /* connections that reached their goal */
    _Atomic uint64_t failed;   /* connections that failed */
    _Atomic uint64_t answered; /* QoS 1/2 publishes the broker completed or refused */
    char pad[24];
} wcount;

typedef struct worker {
    struct bench *b;
    unsigned id;
    pthread_t thread;
    int ep;
    SSL_CTX *ctx;
    bconn **conns;
    size_t nconns;
    size_t next_open; /* conns[next_open] is the next to open */
    size_t opening;   /* connects and handshakes in progress */
    uint64_t open_t0;
    uint64_t opened_count;
    bconn **pubs;
    size_t npubs;
    size_t rr;
    double rate; /* this worker's share of the offered rate */
    uint64_t rate_t0;
    uint64_t rate_sent;
    bconn **dirty;
    size_t ndirty;
    bconn **again; /* records left inside OpenSSL after the read limit */
    size_t nagain;
    uint64_t next_housekeeping;
    uint64_t next_keepalive;
    phase ph;
    uint8_t *scratch; /* payload being built */
    /* Measured in PH_MEASURE only. */
    uint64_t m_sent, m_delivered, m_payload_bytes, m_wire_bytes;
    uint64_t m_acked; /* QoS 1/2 publishes the broker accepted (PUBACK, PUBCOMP) */
    hist lat;         /* delivery latency */
    hist hs;          /* connect start to CONNACK */
    /* Whole run. */
    uint64_t refused;    /* publishes refused by the broker (MQTT 5 reason >= 0x80) */
    uint64_t acked;      /* publishes the broker accepted */
    uint64_t run_errors; /* connections lost after setup */
    uint64_t behind;     /* rate mode: passes where the schedule could not be met */
    char first_error[320];
    wcount *cnt;
} worker;

typedef struct bench {
    bench_opts o;
    worker *workers;
    wcount *counts; /* one per worker, cache-aligned */
    bconn *conns;
    size_t nconns;
    bench_device *devices; /* --devices: one per publisher, in name order */
    size_t ndevices;
    uint32_t npubs, nsubs;
    uint32_t fan; /* deliveries per publish when nothing is lost */
    _Atomic int phase;
    _Atomic uint64_t forgiven; /* deliveries written off as lost by the window */
    _Atomic uint64_t last_forgive;
    _Atomic bool stop_publishing;
    pthread_mutex_t err_lock;
    char first_error[320];
} bench;

/* Monotonic clock in nanoseconds (the same clock as the payload stamp). */
uint64_t bench_now(void);

/* A TLS 1.3 client context presenting cert and key and trusting o->cafile;
 * NULL with a message on stderr. */
SSL_CTX *bench_client_ctx(const bench_opts *o, const char *cert, const char *key);

/* The first n devices of o->devices_dir in name order, each with its own
 * context, into b->devices; false with a message on stderr (devices.c). */
bool devices_load(bench *b, uint32_t n);
void devices_free(bench *b);

/* Set up worker w (epoll, SSL_CTX); false with a message on stderr. */
bool worker_init(bench *b, worker *w, unsigned id);
void worker_free(worker *w);

/* Thread entry: runs the phases until PH_CLOSE. */
void *worker_main(void *arg);

/* Sums over workers of the shared counters. */
uint64_t bench_total_sent(bench *b);
uint64_t bench_total_recv(bench *b);
uint64_t bench_total_opened(bench *b);
uint64_t bench_total_failed(bench *b);
uint64_t bench_total_answered(bench *b);

/* Deliveries owed for what was published, less what was written off. */
uint64_t bench_in_flight(bench *b);

/* Remember the first error of the run (thread-safe). */
void bench_note_error(bench *b, const char *msg);

#endif /* MOAT_BENCH_H */
