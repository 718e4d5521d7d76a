/*
 * tls.h — the hub's TLS server context: TLS 1.3 (1.2 only when the operator
 * allows it, and then ECDHE with AEAD ciphers only), a client certificate
 * required and verified against the hub CA.
 */
#ifndef MOAT_HUB_TLS_H
#define MOAT_HUB_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "config.h"

/* verify_cb runs for each certificate of the client's chain (OpenSSL's
 * SSL_CTX_set_verify callback); the hub uses it to look the leaf up in the
 * registry. NULL on error with err set (OpenSSL's reason included). */
SSL_CTX *tls_server_ctx(const hub_config *cfg, int (*verify_cb)(int, X509_STORE_CTX *), char *err,
                        size_t errlen);

/* The last OpenSSL error as text, and the queue cleared. */
const char *tls_error_text(char *out, size_t len);

#endif /* MOAT_HUB_TLS_H */
