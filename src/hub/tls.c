/*
 * tls.c — building the server SSL_CTX (see tls.h).
 *
 * Choices, and why:
 * - TLS 1.3 only by default; TLS 1.2 is opt-in and limited to ECDHE key
 *   exchange with AES-GCM or ChaCha20-Poly1305, so no static-RSA, CBC or
 *   SHA-1 suites can be negotiated.
 * - No session resumption (no tickets, no cache): every connection runs the
 *   full handshake, so the registry check in the verify callback runs for
 *   every connection and a revoked device cannot resume its way back in.
 * - Client certificates must carry the clientAuth purpose and chain to the
 *   hub CA within depth 2.
 * - SSL_MODE_RELEASE_BUFFERS: an idle connection holds no read/write buffers.
 * - Read-ahead: one read(2) takes every record the socket holds.
 */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>

static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

const char *tls_error_text(char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(out, len, "no OpenSSL error");
    else
        ERR_error_string_n(e, out, len);
    ERR_clear_error();
    return out;
}

SSL_CTX *tls_server_ctx(const hub_config *cfg, int (*verify_cb)(int, X509_STORE_CTX *), char *err,
                        size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_error_text(why, sizeof(why)));
        return NULL;
    }
    int min = cfg->tls_min_version == 12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    if (!SSL_CTX_set_min_proto_version(ctx, min) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, tls12_ciphers) ||
        !SSL_CTX_set_ciphersuites(ctx, tls13_suites) ||
        !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384")) {
        snprintf(err, errlen, "TLS parameters: %s", tls_error_text(why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_num_tickets(ctx, 0);
    /* Read as much as the socket has in one read(2), not one record header
     * and then its body: under load that halves the hub's system calls. */
    SSL_CTX_set_read_ahead(ctx, 1);

    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
        snprintf(err, errlen, "%s: %s", cfg->cert_file, tls_error_text(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "%s: %s", cfg->key_file, tls_error_text(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
        snprintf(err, errlen, "%s: %s", cfg->ca_file, tls_error_text(why, sizeof(why)));
        goto fail;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_verify_depth(ctx, 2);
    if (SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) != 1) {
        snprintf(err, errlen, "client purpose: %s", tls_error_text(why, sizeof(why)));
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
