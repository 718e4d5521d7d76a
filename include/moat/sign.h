/*
 * moat/sign.h — the signing side of commands, for hubs, owners and back ends.
 *
 * Part of the Linux library (moat_linux, libsodium), not of the device core:
 * a device only verifies (command.h). A signer holds an Ed25519 secret key;
 * each device that should obey it lists the matching public key among its
 * trusted keys. moat_command_sign writes the envelope that command.h
 * describes, ready to publish on moat/{device}/down/{name}.
 */
#ifndef MOAT_SIGN_H
#define MOAT_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include <moat/command.h>
#include <moat/platform.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOAT_SIGN_PUBLIC_KEY_LEN 32u
/* libsodium's form: the 32-byte seed followed by the public key. */
#define MOAT_SIGN_SECRET_KEY_LEN 64u

/* Envelope size for a device id, name and body of these lengths. */
#define MOAT_COMMAND_ENVELOPE_SIZE(id_len, name_len, body_len)                                     \
    ((size_t)MOAT_COMMAND_OVERHEAD + (size_t)(id_len) + (size_t)(name_len) + (size_t)(body_len))

/* Make a new signing key pair. Returns MOAT_OK or MOAT_ERR_IO (libsodium
 * could not start). Wipe sk when done with it. */
moat_status moat_sign_keygen(uint8_t pk[MOAT_SIGN_PUBLIC_KEY_LEN],
                             uint8_t sk[MOAT_SIGN_SECRET_KEY_LEN]);

/*
 * Sign a command for one device.
 *   sk          the signer's secret key (its public half names the key id)
 *   device_id   the device's id, NUL-terminated (1..MOAT_COMMAND_MAX_ID)
 *   name        the command name, NUL-terminated (1..MOAT_COMMAND_MAX_NAME);
 *               publish on moat/{device_id}/down/{name}
 *   counter     above every counter this device accepted before (e.g. the
 *               time in ms)
 *   expiry      unix seconds after which the device refuses it
 *   body, body_len  the command's bytes (body may be NULL if body_len is 0)
 *   out, cap    where the envelope goes; *out_len gets its size
 * Returns MOAT_OK, MOAT_ERR_ARG (bad id or name, body too long), MOAT_ERR_SPACE
 * (cap too small; *out_len gets the size needed), MOAT_ERR_IO (libsodium).
 */
moat_status moat_command_sign(const uint8_t sk[MOAT_SIGN_SECRET_KEY_LEN], const char *device_id,
                              const char *name, uint64_t counter, uint64_t expiry,
                              const uint8_t *body, size_t body_len, uint8_t *out, size_t cap,
                              size_t *out_len);

/* A moat_crypto backed by libsodium (crypto_sign_verify_detached), for the
 * Linux port and for tests. ctx is unused. Returns MOAT_ERR_IO if libsodium
 * could not start. */
moat_status moat_crypto_sodium(moat_crypto *out);

#ifdef __cplusplus
}
#endif
#endif
