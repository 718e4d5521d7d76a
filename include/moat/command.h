/*
 * moat/command.h — trust only authentic commands.
 *
 * A command to a device is an MQTT publish on moat/{device}/down/{name}
 * whose payload is a signed envelope (layout in docs/sdk-wire.md):
 *
 *     "moat command v1\0" | key id (8) | counter (u64) | expiry (u64, unix s)
 *     | device id (u8 length + bytes) | name (u8 length + bytes)
 *     | body (u32 length + bytes) | Ed25519 signature (64)
 *
 * The signature covers every byte before it, starting with the
 * domain-separation string, so a signature made for anything else in moat
 * (or elsewhere) is never a valid command signature, and the device id,
 * name, counter, expiry and body cannot be changed or moved to another
 * device. The device accepts a command only if, in this order:
 *   1. the envelope is well formed, exactly to its last byte;
 *   2. the topic is exactly moat/{own id}/down/{name of the envelope};
 *   3. the envelope names this device;
 *   4. the key id names one of its trusted keys;
 *   5. the signature verifies under that key;
 *   6. the device knows the time (clock->unix_time() != 0);
 *   7. the expiry has not passed (unix_time < expiry);
 *   8. the counter is above the last one it accepted;
 * and it has stored that counter durably (MOAT_AREA_STATE, two slots, so a
 * power cut during the write leaves the previous counter intact). Only then
 * does moat_command_verify return MOAT_OK: a command is never acted on with
 * its counter not yet stored, so no power cut can make a replay work.
 *
 * Signers (hub, owner's app, back end) use moat_command_sign (sign.h, in the
 * Linux library) or `moatctl command sign`. A counter in milliseconds since
 * the epoch is a good choice for a signer with a clock: it keeps increasing
 * across signers sharing a key, without state.
 *
 * The verifier is core code: no heap, no I/O except through the storage
 * table, signature checking through the port's moat_crypto.
 */
#ifndef MOAT_COMMAND_H
#define MOAT_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moat/platform.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The envelope's first bytes: the domain-separation string, version
 * included (16 bytes, the last one NUL). */
#define MOAT_COMMAND_DOMAIN     "moat command v1"
#define MOAT_COMMAND_DOMAIN_LEN 16u
/* A key id is the first bytes of the signer's Ed25519 public key. */
#define MOAT_COMMAND_KEY_ID_LEN 8u
#define MOAT_COMMAND_SIG_LEN    64u
/* Trusted keys one verifier holds. */
#define MOAT_COMMAND_MAX_KEYS 4u
/* Device ids and command names: 1..64 bytes, one topic level of printable
 * ASCII (0x21..0x7e) other than '/', '+', '#'. */
#define MOAT_COMMAND_MAX_ID   64u
#define MOAT_COMMAND_MAX_NAME 64u
/* Envelope bytes besides device id, name and body. */
#define MOAT_COMMAND_OVERHEAD                                                                      \
    (MOAT_COMMAND_DOMAIN_LEN + MOAT_COMMAND_KEY_ID_LEN + 8u + 8u + 1u + 1u + 4u +                  \
     MOAT_COMMAND_SIG_LEN)
/* Bytes of MOAT_AREA_STATE the verifier uses (two counter slots). */
#define MOAT_COMMAND_STATE_SIZE 48u

/* Why a command was refused (for the device's report to the hub). */
typedef enum {
    MOAT_CMD_OK = 0,
    MOAT_CMD_MALFORMED,     /* not a well-formed envelope */
    MOAT_CMD_WRONG_TOPIC,   /* topic is not moat/{own id}/down/{name} */
    MOAT_CMD_WRONG_DEVICE,  /* signed for another device */
    MOAT_CMD_UNKNOWN_KEY,   /* key id of no trusted key */
    MOAT_CMD_BAD_SIGNATURE, /* signature does not verify */
    MOAT_CMD_CLOCK_UNKNOWN, /* the device does not know the time */
    MOAT_CMD_EXPIRED,       /* expiry passed */
    MOAT_CMD_REPLAYED,      /* counter not above the last one accepted */
    MOAT_CMD_STORAGE,       /* the new counter could not be stored */
} moat_command_reason;

/* A short constant word for a reason ("replayed counter", ...). */
const char *moat_command_reason_str(moat_command_reason r);

/* A verified command: views into the topic/payload it was verified from. */
typedef struct moat_command {
    const uint8_t *name; /* not NUL-terminated */
    size_t name_len;
    const uint8_t *body;
    size_t body_len;
    uint64_t counter;
    uint64_t expiry;    /* unix seconds */
    unsigned key_index; /* which trusted key signed it */
} moat_command;

/* Fields are private. */
typedef struct moat_command_verifier {
    uint8_t keys[MOAT_COMMAND_MAX_KEYS][32];
    unsigned nkeys;
    uint8_t id[MOAT_COMMAND_MAX_ID];
    size_t id_len;
    const moat_storage *st;
    unsigned area;
    size_t off;
    uint64_t last_counter;
    uint64_t gen;    /* generation of the newest slot */
    unsigned newest; /* its index, 0 or 1; the other is written next */
} moat_command_verifier;

/*
 * Set up a verifier and load the last accepted counter.
 *   device_id     this device's id (NUL-terminated, copied)
 *   keys, nkeys   1..MOAT_COMMAND_MAX_KEYS trusted Ed25519 public keys
 *                 (copied); their key ids should differ
 *   st, area, off where the counter lives: MOAT_COMMAND_STATE_SIZE bytes at
 *                 offset off of area (normally MOAT_AREA_STATE, 0); st must
 *                 outlive the verifier
 * A fresh area (no valid slot) means counter 0. Returns MOAT_OK,
 * MOAT_ERR_ARG, MOAT_ERR_SPACE (area too small), MOAT_ERR_IO (read failed).
 */
moat_status moat_command_verifier_init(moat_command_verifier *v, const char *device_id,
                                       const uint8_t (*keys)[32], unsigned nkeys,
                                       const moat_storage *st, unsigned area, size_t off);

/* The last counter accepted (0 if none yet). */
uint64_t moat_command_last_counter(const moat_command_verifier *v);

/*
 * Verify the command received on topic (topic_len bytes) with payload
 * (len bytes). On MOAT_OK, *cmd holds views of its name and body and the
 * counter has been stored. Otherwise the command must be ignored:
 * MOAT_ERR_AUTH for any refusal, MOAT_ERR_IO when storing the counter
 * failed (the command is refused too), MOAT_ERR_ARG for a caller error.
 * *why (may be NULL) gets the reason in every case.
 */
moat_status moat_command_verify(moat_command_verifier *v, const moat_crypto *crypto,
                                const moat_clock *clock, const uint8_t *topic, size_t topic_len,
                                const uint8_t *payload, size_t len, moat_command *cmd,
                                moat_command_reason *why);

/* True if s (len bytes) is a valid device id or command name: one topic level
 * of printable ASCII without '/', '+', '#', 1..max bytes. */
bool moat_command_name_valid(const uint8_t *s, size_t len, size_t max);

#ifdef __cplusplus
}
#endif
#endif
