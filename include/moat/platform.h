/*
 * moat/platform.h — what a platform gives the libmoat core.
 *
 * The core (MQTT client, store-and-forward queue, shaper, command
 * verification) does no I/O and allocates nothing. Everything it needs from
 * the device comes through the four small tables of function pointers below,
 * filled in by the port: transport (bytes over TLS), clock (+ randomness),
 * storage (persistent areas) and crypto (signature verification). libmoat
 * ships Linux implementations (include/moat/linux.h); a port to another
 * platform writes these four and nothing else (docs/sdk-porting.md).
 *
 * Conventions shared by every callback:
 *   - `ctx` is the port's own state, passed back untouched;
 *   - sizes are size_t, and a callback never reads or writes past the length
 *     it is given;
 *   - return values are moat_status (or a byte count, where said).
 */
#ifndef MOAT_PLATFORM_H
#define MOAT_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One status enum for the whole SDK. Zero is success, negatives are errors;
 * MOAT_AGAIN means "nothing can be done now, call again later". */
typedef enum {
    MOAT_OK = 0,
    MOAT_AGAIN = 1,           /* would block: try again on a later poll */
    MOAT_ERR_ARG = -1,        /* a bad argument (caller bug) */
    MOAT_ERR_SPACE = -2,      /* a caller buffer or area is too small */
    MOAT_ERR_IO = -3,         /* the transport or the storage failed */
    MOAT_ERR_CLOSED = -4,     /* the peer closed the connection */
    MOAT_ERR_PROTOCOL = -5,   /* the peer broke the protocol */
    MOAT_ERR_REFUSED = -6,    /* the hub refused (CONNACK/SUBACK/PUBACK code) */
    MOAT_ERR_CORRUPT = -7,    /* stored data failed its check */
    MOAT_ERR_FULL = -8,       /* a bounded queue is full (policy: refuse new) */
    MOAT_ERR_AUTH = -9,       /* a signature, counter or expiry check failed */
    MOAT_ERR_TIMEOUT = -10,   /* no answer in time */
    MOAT_ERR_STATE = -11,     /* not allowed in the current state */
} moat_status;

/* A short, constant description of a status ("would block", ...). */
const char *moat_status_str(moat_status s);

/* ---------------------------------------------------------------- transport
 * A stream of bytes to one hub endpoint, already authenticated both ways
 * (mutual TLS) by the port. Non-blocking: every call returns at once. */
typedef struct moat_transport {
    void *ctx;
    /* Start (or continue) connecting to `host`:`port`. MOAT_OK once the
     * secure channel is up, MOAT_AGAIN while in progress (call again), an
     * error otherwise (the port closes what it opened). */
    moat_status (*connect)(void *ctx, const char *host, uint16_t port);
    /* Send up to len bytes. Returns the number of bytes accepted (> 0),
     * 0 if none can be accepted now, or a negative moat_status. */
    long (*send)(void *ctx, const uint8_t *buf, size_t len);
    /* Receive up to cap bytes. Returns the number read (> 0), 0 if none
     * are available now, or a negative moat_status (MOAT_ERR_CLOSED at the
     * peer's orderly close). */
    long (*recv)(void *ctx, uint8_t *buf, size_t cap);
    /* Close the channel (idempotent). */
    void (*close)(void *ctx);
} moat_transport;

/* ---------------------------------------------------------------- clock */
typedef struct moat_clock {
    void *ctx;
    /* Milliseconds from a monotonic clock (never goes back). */
    uint64_t (*now_ms)(void *ctx);
    /* Seconds since the Unix epoch from the wall clock, or 0 if the device
     * does not know the time (then command expiry cannot be checked and
     * commands that carry one are refused). */
    uint64_t (*unix_time)(void *ctx);
    /* Fill buf with len unpredictable bytes (back-off jitter, nonces). */
    void (*random)(void *ctx, uint8_t *buf, size_t len);
} moat_clock;

/* ---------------------------------------------------------------- storage
 * Persistent areas of fixed size, addressed by number. Each area behaves
 * like a region of flash or a preallocated file: bytes written stay there
 * after power loss once sync() returned MOAT_OK; a write interrupted by
 * power loss may leave any prefix of its bytes written (a torn write), and
 * nothing else changes. */
enum {
    MOAT_AREA_QUEUE = 0,   /* the store-and-forward telemetry queue */
    MOAT_AREA_STATE = 1,   /* small state: command counters, sequence numbers */
    MOAT_AREA_COUNT = 2
};

typedef struct moat_storage {
    void *ctx;
    /* Size in bytes of an area (fixed for its life). */
    size_t (*size)(void *ctx, unsigned area);
    moat_status (*read)(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len);
    moat_status (*write)(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len);
    /* Make every write before this call durable. */
    moat_status (*sync)(void *ctx, unsigned area);
} moat_storage;

/* ---------------------------------------------------------------- crypto
 * Only what the core needs to trust commands: Ed25519 verification (the
 * Linux port uses libsodium; an MCU port may use its own library or a
 * secure element). */
typedef struct moat_crypto {
    void *ctx;
    /* true if sig (64 bytes) is a valid Ed25519 signature of msg by pk
     * (32 bytes). */
    bool (*ed25519_verify)(void *ctx, const uint8_t sig[64], const uint8_t *msg, size_t len,
                           const uint8_t pk[32]);
} moat_crypto;

#ifdef __cplusplus
}
#endif
#endif
