/*
 * command_sign.c — the signing side of commands (include/moat/sign.h): key
 * pairs, and envelopes in the layout command.h and docs/sdk-wire.md give,
 * signed with libsodium's Ed25519 over every byte before the signature.
 * Used by moatctl, by the hub and by back ends; never by the device core.
 */
#include <string.h>

#include <sodium.h>

#include <moat/sign.h>

#include "trust.h"

moat_status moat_sign_keygen(uint8_t pk[MOAT_SIGN_PUBLIC_KEY_LEN],
                             uint8_t sk[MOAT_SIGN_SECRET_KEY_LEN])
{
    if (pk == NULL || sk == NULL)
        return MOAT_ERR_ARG;
    if (sodium_init() < 0 || crypto_sign_keypair(pk, sk) != 0)
        return MOAT_ERR_IO;
    return MOAT_OK;
}

moat_status moat_command_sign(const uint8_t sk[MOAT_SIGN_SECRET_KEY_LEN], const char *device_id,
                              const char *name, uint64_t counter, uint64_t expiry,
                              const uint8_t *body, size_t body_len, uint8_t *out, size_t cap,
                              size_t *out_len)
{
    if (sk == NULL || device_id == NULL || name == NULL || out_len == NULL ||
        (body == NULL && body_len > 0))
        return MOAT_ERR_ARG;
    size_t id_len = strlen(device_id);
    size_t name_len = strlen(name);
    if (!moat_command_name_valid((const uint8_t *)device_id, id_len, MOAT_COMMAND_MAX_ID) ||
        !moat_command_name_valid((const uint8_t *)name, name_len, MOAT_COMMAND_MAX_NAME) ||
        body_len > UINT32_MAX ||
        body_len >
            SIZE_MAX - MOAT_COMMAND_ENVELOPE_SIZE(MOAT_COMMAND_MAX_ID, MOAT_COMMAND_MAX_NAME, 0))
        return MOAT_ERR_ARG;
    size_t need = MOAT_COMMAND_ENVELOPE_SIZE(id_len, name_len, body_len);
    *out_len = need;
    if (out == NULL || cap < need)
        return MOAT_ERR_SPACE;
    if (sodium_init() < 0)
        return MOAT_ERR_IO;

    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    if (crypto_sign_ed25519_sk_to_pk(pk, sk) != 0)
        return MOAT_ERR_IO;
    wr w = wr_init(out, cap);
    wr_raw(&w, MOAT_COMMAND_DOMAIN, MOAT_COMMAND_DOMAIN_LEN); /* with its NUL */
    wr_raw(&w, pk, MOAT_COMMAND_KEY_ID_LEN);
    trust_wr_u64(&w, counter);
    trust_wr_u64(&w, expiry);
    wr_u8(&w, (uint8_t)id_len);
    wr_raw(&w, device_id, id_len);
    wr_u8(&w, (uint8_t)name_len);
    wr_raw(&w, name, name_len);
    wr_u32(&w, (uint32_t)body_len);
    wr_raw(&w, body, body_len);
    if (w.pos != need - MOAT_COMMAND_SIG_LEN ||
        crypto_sign_detached(out + w.pos, NULL, out, w.pos, sk) != 0) {
        sodium_memzero(out, cap < need ? cap : need);
        return MOAT_ERR_IO;
    }
    return MOAT_OK;
}
