/*
 * crypto_sodium.c — the Linux port's moat_crypto: Ed25519 verification by
 * libsodium, which checks that the signature and the key are canonical and
 * refuses small-order keys, so the core need not.
 */
#include <sodium.h>

#include <moat/sign.h>

static bool sodium_ed25519_verify(void *ctx, const uint8_t sig[64], const uint8_t *msg, size_t len,
                                  const uint8_t pk[32])
{
    (void)ctx;
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0;
}

moat_status moat_crypto_sodium(moat_crypto *out)
{
    if (out == NULL)
        return MOAT_ERR_ARG;
    if (sodium_init() < 0)
        return MOAT_ERR_IO;
    out->ctx = NULL;
    out->ed25519_verify = sodium_ed25519_verify;
    return MOAT_OK;
}
