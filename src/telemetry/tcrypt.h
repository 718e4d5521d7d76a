/*
 * tcrypt.h — the telemetry store's key hierarchy and its sealed records,
 * independent of where rows are kept (every back-end uses the same layout,
 * so data can move between them).
 *
 *   master key (DATA_DIR/master.key, 32 bytes, 0600)
 *     └─ wraps ─> data keys (random, 32 bytes, stored wrapped, each with an id)
 *                   └─ derive ─> AEAD key, device-index key, stream-index key,
 *                                dedupe-tag key (crypto_kdf, BLAKE2b)
 *
 * Rows are sealed with XChaCha20-Poly1305 (random 192-bit nonces) under the
 * AEAD key of their data key; the associated data names the table and column
 * and carries every plaintext column of the row plus the device id, so a
 * ciphertext moved to another row, device or column fails to open. The
 * master key only wraps: it is read from its file when a data key has to be
 * unwrapped or re-wrapped and wiped right after, so a running hub does not
 * hold it. A PKCS#11 token would replace tcrypt_master_* (wrap and unwrap
 * inside the token) and nothing else.
 *
 * Keys live in sodium_malloc'd memory (guard pages, locked, wiped on free).
 */
#ifndef MOAT_TELEMETRY_TCRYPT_H
#define MOAT_TELEMETRY_TCRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tstore.h"

#define TCRYPT_KEY_LEN         32u
#define TCRYPT_CHECK_LEN       16u /* master key check value */
#define TCRYPT_NONCE_LEN       24u
#define TCRYPT_MAC_LEN         16u
#define TCRYPT_SEAL_OVERHEAD   (TCRYPT_NONCE_LEN + TCRYPT_MAC_LEN)
#define TCRYPT_WRAPPED_LEN     (TCRYPT_SEAL_OVERHEAD + TCRYPT_KEY_LEN)
#define TCRYPT_DEVICE_HASH_LEN 16u
#define TCRYPT_STREAM_HASH_LEN 8u
#define TCRYPT_DEDUPE_LEN      16u
/* Largest associated data built below. */
#define TCRYPT_AD_MAX 160u

/* Initialise libsodium; false if it cannot be. Idempotent. */
bool tcrypt_init(void);

/* ---- the master key -------------------------------------------------- */

typedef struct tcrypt_master tcrypt_master;

/*
 * Read a master key file: a regular file of exactly 32 bytes that group and
 * others cannot access. TSTORE_KEY with a one-line reason in err otherwise
 * (missing, wrong size, mode too open), TSTORE_IO for read errors.
 */
tstore_status tcrypt_master_load(const char *path, tcrypt_master **out, char *err, size_t errlen);

/* A new random master key. */
tstore_status tcrypt_master_new(tcrypt_master **out);

/* Write the key to path atomically: a temporary file (0600, O_EXCL) in the
 * same directory, written, fsynced, renamed over path, directory fsynced. */
tstore_status tcrypt_master_write(const tcrypt_master *m, const char *path, char *err,
                                  size_t errlen);

void tcrypt_master_free(tcrypt_master *m);

/* fsync the directory holding path (after a rename into it). */
tstore_status tcrypt_sync_dir(const char *path, char *err, size_t errlen);

/* A value that identifies the master key without revealing it (keyed
 * BLAKE2b of a fixed string); stored beside the wrapped keys so that a wrong
 * master key is told apart from damaged data. */
void tcrypt_master_check(const tcrypt_master *m, uint8_t out[TCRYPT_CHECK_LEN]);

/* Wrap / unwrap a data key (raw 32 bytes) under the master key, bound to the
 * data key's id. unwrap returns false if the wrapped bytes do not open. */
void tcrypt_wrap(const tcrypt_master *m, int64_t key_id, const uint8_t raw[TCRYPT_KEY_LEN],
                 uint8_t out[TCRYPT_WRAPPED_LEN]);
bool tcrypt_unwrap(const tcrypt_master *m, int64_t key_id, const uint8_t in[TCRYPT_WRAPPED_LEN],
                   uint8_t raw[TCRYPT_KEY_LEN]);

/* ---- data keys -------------------------------------------------------- */

typedef struct tcrypt_datakey {
    int64_t id;
    uint8_t aead[TCRYPT_KEY_LEN];
    uint8_t device[TCRYPT_KEY_LEN];
    uint8_t stream[TCRYPT_KEY_LEN];
    uint8_t dedupe[TCRYPT_KEY_LEN];
} tcrypt_datakey;

/* Fresh random key material (raw, to be wrapped) in sodium_malloc'd memory;
 * free with tcrypt_raw_free. */
uint8_t *tcrypt_raw_new(void);
void tcrypt_raw_free(uint8_t *raw);

/* Derive the working keys of data key id from its raw bytes. NULL when out
 * of memory. Free with tcrypt_datakey_free (wipes). */
tcrypt_datakey *tcrypt_datakey_derive(int64_t id, const uint8_t raw[TCRYPT_KEY_LEN]);
void tcrypt_datakey_free(tcrypt_datakey *k);

/* The index values: keyed BLAKE2b, so they can be looked up but reveal
 * neither the device id nor the stream name. The stream hash is per device
 * (the same stream of two devices hashes apart) and short: a collision only
 * means a row is decrypted and then filtered out. */
void tcrypt_device_hash(const tcrypt_datakey *k, const char *device,
                        uint8_t out[TCRYPT_DEVICE_HASH_LEN]);
void tcrypt_stream_hash(const tcrypt_datakey *k, const char *device, codec_bytes stream,
                        uint8_t out[TCRYPT_STREAM_HASH_LEN]);
void tcrypt_dedupe_tag(const tcrypt_datakey *k, const char *device, uint64_t seq,
                       uint8_t out[TCRYPT_DEDUPE_LEN]);

/* Seal pt (len bytes) into out (len + TCRYPT_SEAL_OVERHEAD bytes: nonce,
 * ciphertext, tag). */
void tcrypt_seal(const tcrypt_datakey *k, const uint8_t *ad, size_t adlen, const uint8_t *pt,
                 size_t len, uint8_t *out);
/* Open in (len bytes) into out (len - TCRYPT_SEAL_OVERHEAD bytes); false if
 * it is too short or does not authenticate. */
bool tcrypt_open(const tcrypt_datakey *k, const uint8_t *ad, size_t adlen, const uint8_t *in,
                 size_t len, uint8_t *out);

/* ---- the sealed layouts ----------------------------------------------- */

/* The plaintext columns of a readings row, as bound into its AD. */
typedef struct tcrypt_row {
    int64_t id;
    int64_t key_id;
    int64_t received_ms;
    const uint8_t *stream_hash; /* TCRYPT_STREAM_HASH_LEN */
    const uint8_t *dedupe;      /* TCRYPT_DEDUPE_LEN, or NULL */
    const char *device;
} tcrypt_row;

/* AD of readings.ct; returns its length (<= TCRYPT_AD_MAX). */
size_t tcrypt_row_ad(const tcrypt_row *row, uint8_t ad[TCRYPT_AD_MAX]);

/* AD of devices.id_ct: the key id and the device hash of that row. */
size_t tcrypt_device_ad(int64_t key_id, const uint8_t hash[TCRYPT_DEVICE_HASH_LEN],
                        uint8_t ad[TCRYPT_AD_MAX]);

/* The sealed record of a reading: flags, device time, sequence number,
 * stream, payload. encode writes record_len(r) bytes. decode checks every
 * length before reading and fills r's stream/payload views into buf;
 * false for a malformed record. */
size_t tcrypt_record_len(const tstore_reading *r);
void tcrypt_record_encode(const tstore_reading *r, uint8_t *out);
bool tcrypt_record_decode(const uint8_t *buf, size_t len, tstore_reading *r);

#endif /* MOAT_TELEMETRY_TCRYPT_H */
