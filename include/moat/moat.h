/*
 * moat/moat.h — the libmoat device client.
 *
 * A small MQTT 5 (or 3.1.1) client for devices that talk to a moat hub (or
 * any standard broker that authenticates clients by certificate). It is
 * non-blocking and single-threaded, so it fits a bare-metal super-loop or an
 * RTOS task, and it allocates nothing: the caller owns the `moat_client`
 * struct, hands in its buffers and the four platform tables of
 * moat/platform.h, and calls moat_poll() whenever it likes (at the latest by
 * moat_next_deadline_ms()).
 *
 * What the client does on its own, from moat_poll():
 *   - connects to the configured hub endpoints in turn, backing off
 *     exponentially with full jitter between failed attempts;
 *   - keeps a persistent session (clean start off, a session expiry) with
 *     the device id as MQTT client id, so commands sent while the device was
 *     away are delivered when it comes back;
 *   - subscribes to moat/{id}/down/# and hands every command that passes
 *     signature, device, counter and expiry checks (moat/command.h) to the
 *     on_command callback; anything else goes to on_rejected and is reported
 *     to the hub on the stream "_rejected" (moat/{id}/up/_rejected);
 *   - drains the store-and-forward queue (moat/queue.h) oldest first with
 *     QoS 1, several records in flight, removing a record only once the hub
 *     acknowledged it, and resending from the oldest after a reconnect;
 *   - with the shaper on (moat/shaper.h), sends exactly one fixed-size record
 *     per interval on moat/{id}/up/_shaped instead, filled with the oldest
 *     queued readings or a cover record;
 *   - keeps the connection alive with PINGREQ and drops it when the hub
 *     stops answering.
 *
 * Typical use (see examples/thermostat/ and docs/sdk.md):
 *
 *     static moat_client c;                       // fixed size, no heap
 *     static uint8_t tx[1024], rx[1024], work[1024];
 *     moat_config cfg;
 *     moat_config_defaults(&cfg);
 *     cfg.device_id = "thermo-1";
 *     cfg.endpoints = eps; cfg.endpoint_count = 1;
 *     cfg.transport = &tr; cfg.clock = &clk; cfg.storage = &st; cfg.crypto = &cr;
 *     cfg.tx_buf = tx; cfg.tx_cap = sizeof tx; ... rx, work ...
 *     cfg.on_command = on_command;
 *     if (moat_client_init(&c, &cfg) != MOAT_OK) ...;
 *     moat_connect(&c);
 *     for (;;) {
 *         if (time_to_measure) moat_publish(&c, "temp", buf, n, NULL);
 *         moat_poll(&c);
 *         sleep_at_most(moat_next_deadline_ms(&c));   // or wait on the socket
 *     }
 */
#ifndef MOAT_MOAT_H
#define MOAT_MOAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moat/command.h>
#include <moat/platform.h>
#include <moat/queue.h>
#include <moat/shaper.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- limits
 * Compile-time sizes of the fixed struct; override with -D if needed. */
#ifndef MOAT_DEVICE_ID_MAX
#define MOAT_DEVICE_ID_MAX 64 /* bytes of a device id (MQTT client id) */
#endif
#ifndef MOAT_TOPIC_MAX
#define MOAT_TOPIC_MAX 160 /* bytes of the longest topic the client builds */
#endif
#ifndef MOAT_MAX_INFLIGHT
#define MOAT_MAX_INFLIGHT 8 /* QoS 1 publishes awaiting PUBACK */
#endif
#ifndef MOAT_MAX_ENDPOINTS
#define MOAT_MAX_ENDPOINTS 4 /* hub endpoints tried in turn */
#endif

/* ---------------------------------------------------------------- types */

/* One hub endpoint. `host` is a DNS name or an IP literal; it is also the
 * name the port checks the hub's certificate against. */
typedef struct moat_endpoint {
    const char *host;
    uint16_t port;
} moat_endpoint;

/* Where the client stands. */
typedef enum moat_state {
    MOAT_STATE_STOPPED = 0, /* after init and after moat_disconnect */
    MOAT_STATE_WAITING,     /* backing off before the next attempt */
    MOAT_STATE_TRANSPORT,   /* TCP + TLS handshake in progress */
    MOAT_STATE_MQTT,        /* CONNECT sent, waiting for CONNACK */
    MOAT_STATE_ONLINE       /* CONNACK accepted: publishing, receiving */
} moat_state;

/* What on_event reports. */
typedef enum moat_event {
    MOAT_EV_ONLINE = 1,       /* CONNACK accepted (status MOAT_OK) */
    MOAT_EV_OFFLINE,          /* an established connection ended (status: why) */
    MOAT_EV_CONNECT_FAILED,   /* an attempt failed (status: why) */
    MOAT_EV_SUBSCRIBED,       /* the command subscription is in place */
    MOAT_EV_SUBSCRIBE_FAILED, /* the hub refused the command subscription */
    MOAT_EV_RECORD_REFUSED,   /* the hub refused a record for good; dropped */
    MOAT_EV_SENT              /* a record was acknowledged (detail: its seq) */
} moat_event;

/* A rejected command, as on_rejected sees it. The topic view points into
 * the client's receive buffer and is valid only during the callback. */
typedef struct moat_command_rejection {
    const uint8_t *topic; /* the topic it came on (not NUL-terminated) */
    size_t topic_len;
    moat_command_reason reason; /* why (moat_command_reason_str) */
    moat_status status;         /* MOAT_ERR_AUTH, or MOAT_ERR_IO (storage) */
} moat_command_rejection;

/* on_command gets a command that passed every check of moat/command.h; its
 * views point into the client's receive buffer and are valid only during
 * the callback. Its counter is already stored: a command is delivered at
 * most once, even across power loss. */
typedef void (*moat_command_cb)(void *user, const moat_command *cmd);
typedef void (*moat_rejected_cb)(void *user, const moat_command_rejection *rej);
typedef void (*moat_event_cb)(void *user, moat_event ev, moat_status st, uint64_t detail);

/* Everything moat_client_init needs. Start from moat_config_defaults(). */
typedef struct moat_config {
    /* Identity: the MQTT client id and the {id} in every topic; must equal
     * the identity in the device certificate (its CN on a moat hub). One
     * topic level: 1..MOAT_DEVICE_ID_MAX bytes of printable ASCII other than
     * '/', '+', '#'. Copied. */
    const char *device_id;

    /* Hub endpoints, tried in turn (1..MOAT_MAX_ENDPOINTS). Copied (the
     * host strings are not: keep them alive). */
    const moat_endpoint *endpoints;
    size_t endpoint_count;

    /* Platform tables (moat/platform.h). Copied. crypto is needed only to
     * verify commands; without it every command is rejected. */
    const moat_transport *transport;
    const moat_clock *clock;
    const moat_storage *storage;
    const moat_crypto *crypto;

    /* Caller buffers, owned by the caller, used only by this client.
     *   tx:   outgoing packets; at least the largest PUBLISH: the largest
     *         record + 28 + the longest topic (moat/{id}/up/ + 64), and a
     *         shaped record + the same with the shaper on.
     *   rx:   incoming packets; the largest command the device accepts
     *         (also announced to an MQTT 5 hub as Maximum Packet Size;
     *         anything larger is refused and skipped).
     *   work: one batch being built: the largest record + 16, and
     *         shaper_record_size with the shaper on.
     * moat_publish refuses a reading that would not fit these. 512 bytes
     * each is a sensible start; see docs/sdk.md. */
    uint8_t *tx_buf;
    size_t tx_cap;
    uint8_t *rx_buf;
    size_t rx_cap;
    uint8_t *work_buf;
    size_t work_cap;

    /* MQTT: CODEC_V5 (5, default) or 3.1.1 (4, for old brokers). */
    uint8_t protocol_version;
    uint16_t keep_alive_s;       /* default 60; 0 turns pings off */
    uint32_t session_expiry_s;   /* MQTT 5 session expiry; default 7 days */
    uint32_t connect_timeout_ms; /* TLS + CONNACK; default 20000 */
    uint32_t ping_timeout_ms;    /* PINGRESP deadline; default 10000 */
    uint16_t max_inflight;       /* 1..MOAT_MAX_INFLIGHT; default the max */

    /* Reconnect back-off: delay = random in [0, min(max, base * 2^n)]. */
    uint32_t backoff_base_ms; /* default 500 */
    uint32_t backoff_max_ms;  /* default 60000 */

    /* The store-and-forward queue (lives in MOAT_AREA_QUEUE). */
    moat_queue_full_policy queue_policy; /* default MOAT_QUEUE_DROP_OLDEST */

    /* Commands: the Ed25519 public keys trusted to sign them (copied). */
    const uint8_t (*command_keys)[32];
    size_t command_key_count;

    /* Shaper: off unless shaper_interval_ms > 0. Then one record of exactly
     * shaper_record_size bytes goes out every interval (cover when there is
     * nothing to say). */
    uint32_t shaper_interval_ms;
    size_t shaper_record_size;
    bool shaper_cover; /* cover records in empty slots; default true */

    /* Callbacks (any may be NULL); `user` is passed back. They run inside
     * moat_poll and may call moat_publish and moat_disconnect (which then
     * takes effect when moat_poll returns), not moat_poll. */
    moat_command_cb on_command;
    moat_rejected_cb on_rejected;
    moat_event_cb on_event;
    void *user;
} moat_config;

/* Counters, for logs and tests. */
typedef struct moat_client_stats {
    uint64_t records_sent;    /* acknowledged by the hub and removed */
    uint64_t records_refused; /* refused by the hub for good, removed */
    uint64_t publishes;       /* PUBLISH packets written (with resends) */
    uint64_t resends;         /* of which resent after a reconnect */
    uint64_t shaped_records;  /* shaped records sent (cover included) */
    uint64_t cover_records;   /* of which cover */
    uint64_t commands_accepted;
    uint64_t commands_rejected;
    uint64_t rejections_unreported; /* rate-limited reports not queued */
    uint32_t connects;              /* CONNACKs accepted */
    uint32_t connect_failures;
    moat_queue_stats queue;
} moat_client_stats;

/* One QoS 1 PUBLISH awaiting its PUBACK: it carries the `count` oldest
 * queued records after those of the entries before it (0 for a cover). */
typedef struct moat_inflight {
    uint16_t packet_id;
    uint16_t count;
    bool acked;        /* PUBACK seen; popped once at the front */
    bool refused;      /* ... with a reason that refuses it for good */
    uint64_t last_seq; /* seq of its last record */
} moat_inflight;

/* The client. Fixed size, caller-allocated (static, or inside a task's
 * state); treat every field as private. It must not be moved or copied
 * after moat_client_init (it points into itself). */
typedef struct moat_client {
    /* configuration */
    char id[MOAT_DEVICE_ID_MAX + 1];
    size_t id_len;
    moat_endpoint endpoints[MOAT_MAX_ENDPOINTS];
    size_t endpoint_count;
    moat_transport transport;
    moat_clock clock;
    moat_storage storage;
    moat_crypto crypto;
    bool have_crypto, have_keys, shaped;
    uint8_t *tx_buf, *rx_buf, *work_buf;
    size_t tx_cap, rx_cap, work_cap;
    uint8_t version;
    uint16_t keep_alive_s, max_inflight_cfg;
    uint32_t session_expiry_s, connect_timeout_ms, ping_timeout_ms;
    uint32_t backoff_base_ms, backoff_max_ms;
    moat_command_cb on_command;
    moat_rejected_cb on_rejected;
    moat_event_cb on_event;
    void *user;

    /* parts */
    moat_queue queue;
    moat_command_verifier verifier;
    moat_shaper shaper;

    /* connection */
    moat_state state;
    moat_status last_error;
    bool in_poll, stop_requested;
    size_t endpoint_next; /* the endpoint the next attempt uses */
    uint32_t attempt;     /* consecutive failed attempts */
    uint64_t deadline_ms; /* of the current state (back-off, connect) */
    uint64_t last_tx_ms, last_rx_ms;
    uint64_t online_since_ms; /* CONNACK of the current connection */
    uint64_t ping_sent_ms;
    bool ping_outstanding;
    uint16_t keep_alive_eff; /* keep alive in force (the hub may set it) */
    uint16_t send_quota;     /* the hub's receive maximum, bounded */
    uint32_t max_packet_out; /* the hub's maximum packet size, 0 = none */
    bool sub_pending, sub_pending_ack;
    uint16_t sub_packet_id, next_packet_id;

    /* buffers in use */
    size_t tx_off, tx_len; /* pending output: tx_buf[tx_off..tx_len) */
    size_t rx_len;         /* bytes in rx_buf */
    size_t rx_skip;        /* bytes of an oversized message still to drop */
    uint16_t skip_pid;     /* its packet id, acknowledged once dropped */
    bool skip_ack;

    /* the queue's in-flight prefix, oldest first */
    moat_inflight inflight[MOAT_MAX_INFLIGHT];
    size_t inflight_count;
    uint32_t inflight_records; /* sum of their counts */
    uint64_t max_sent_seq;     /* newest record ever written (resends) */
    bool any_sent;
    bool shaper_started;
    uint32_t sh_n; /* shaper source bookkeeping */
    uint64_t sh_first, sh_prev, sh_last;

    /* rejection reports: a small token bucket */
    uint32_t reject_tokens;
    uint64_t reject_refill_ms;

    char topic[MOAT_TOPIC_MAX];
    moat_client_stats stats;
} moat_client;

/* ---------------------------------------------------------------- calls */

/* Fill *cfg with the defaults named in moat_config (pointers NULL). */
void moat_config_defaults(moat_config *cfg);

/*
 * Set up a client from cfg: checks every field, opens (recovers) the
 * store-and-forward queue and the command verifier's state from storage.
 * Does no network I/O; the client starts STOPPED (call moat_connect).
 *
 * Returns MOAT_OK; MOAT_ERR_ARG for a bad config (missing table, empty
 * endpoint list, device id with other characters or too long, buffers too
 * small, ...); a storage error (MOAT_ERR_IO) from opening the queue.
 */
moat_status moat_client_init(moat_client *c, const moat_config *cfg);

/*
 * Start connecting (non-blocking): the next moat_poll begins with the first
 * endpoint. No effect when already started. Returns MOAT_OK.
 */
moat_status moat_connect(moat_client *c);

/*
 * Store one reading for sending: encodes {stream, next sequence number,
 * device time from the clock (0 if unknown), payload} as a record and
 * appends it to the persistent queue. When MOAT_OK returns the record is
 * durable (synced) and will be sent, in order, as soon as the hub can be
 * reached. Works in every state, also offline.
 *
 * stream: one topic level, 1..MOAT_RECORD_MAX_STREAM (64) bytes of printable
 * ASCII other than '/', '+', '#', not starting with '_' (the SDK's own
 * streams: "_shaped", "_rejected"). The reading goes to
 * moat/{id}/up/{stream} (or inside a shaped record).
 *
 * Returns MOAT_OK; MOAT_ERR_ARG (bad stream name); MOAT_ERR_SPACE (the
 * record does not fit the work buffer or the queue area); MOAT_ERR_FULL
 * (queue full under MOAT_QUEUE_REFUSE_NEW); MOAT_ERR_IO (storage).
 * *seq (may be NULL) gets the reading's sequence number.
 */
moat_status moat_publish(moat_client *c, const char *stream, const uint8_t *payload, size_t len,
                         uint64_t *seq);

/* moat_publish with an explicit device time in ms since the Unix epoch
 * (0 = unknown), for readings taken earlier than they are stored. */
moat_status moat_publish_at(moat_client *c, const char *stream, const uint8_t *payload, size_t len,
                            uint64_t device_time_ms, uint64_t *seq);

/*
 * Do everything that can be done now without blocking: advance the
 * connection (back-off, TLS, CONNECT/CONNACK, SUBSCRIBE), read and handle
 * what the hub sent (PUBACKs pop the queue, commands are verified and
 * delivered), write queued records or the shaped record, keep-alive pings
 * and timeouts. Call it in your loop; calling it more often does no harm.
 *
 * Returns MOAT_OK when something was done or nothing failed, MOAT_AGAIN
 * when the client is stopped or waiting, or the error that just broke the
 * connection (the client then backs off and retries on its own; the error
 * is informative). Storage errors (MOAT_ERR_IO, MOAT_ERR_CORRUPT) while
 * handling acknowledgements are returned too.
 */
moat_status moat_poll(moat_client *c);

/*
 * Milliseconds until moat_poll has something to do by itself (a back-off
 * ending, a keep-alive ping, a timeout, a shaper slot), at most 60000.
 * Data arriving on the transport is extra: a Linux caller waits on the
 * socket too (moat_linux_transport_fd) and polls when it is readable.
 * Returns 0 when moat_poll should run at once (output pending, ...).
 */
uint32_t moat_next_deadline_ms(const moat_client *c);

/*
 * Leave: write a DISCONNECT (normal, the session is kept on the hub so that
 * commands still reach the device later) if it can go out at once, close
 * the transport, and stop. Queued records stay queued; moat_connect starts
 * again. Returns MOAT_OK.
 */
moat_status moat_disconnect(moat_client *c);

/* The current state, the last error that broke a connection (MOAT_OK if
 * none), and the counters. */
moat_state moat_client_state(const moat_client *c);
moat_status moat_client_last_error(const moat_client *c);
void moat_client_get_stats(const moat_client *c, moat_client_stats *out);

/* A short constant name for a state ("online", ...). */
const char *moat_state_str(moat_state s);

/* ---------------------------------------------------------------- back-off
 * Pure helpers (backoff.c), exposed for tests and for ports that retry
 * other things. */

/* The ceiling of attempt n (0-based): min(max_ms, base_ms * 2^n), without
 * overflow. */
uint32_t moat_backoff_cap(uint32_t attempt, uint32_t base_ms, uint32_t max_ms);

/* Full jitter: a delay uniform in [0, moat_backoff_cap(...)], drawn from the
 * 32 random bits `rnd` (no modulo bias worth the name: 64-bit multiply). */
uint32_t moat_backoff_delay(uint32_t attempt, uint32_t base_ms, uint32_t max_ms, uint32_t rnd);

#ifdef __cplusplus
}
#endif
#endif
