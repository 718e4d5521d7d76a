/*
 * internal.h — helpers shared by the files of the pki module and nothing
 * else: error reporting that folds OpenSSL's error queue into one line, and
 * bounded file reading (keys are read into buffers that are wiped after use).
 */
#ifndef MOAT_PKI_INTERNAL_H
#define MOAT_PKI_INTERNAL_H

#include "pki.h"

#if defined(__GNUC__) || defined(__clang__)
#define PKI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PKI_PRINTF(a, b)
#endif

/* Record st and a message in err (may be NULL); returns st. Clears the
 * OpenSSL error queue so a later failure does not report a stale reason. */
pki_status pki_fail(pki_error *err, pki_status st, const char *fmt, ...) PKI_PRINTF(3, 4);

/* Like pki_fail, with the first reason on OpenSSL's error queue appended
 * ("...: no start line"). */
pki_status pki_fail_ssl(pki_error *err, pki_status st, const char *fmt, ...) PKI_PRINTF(3, 4);

/* Read at most max bytes of path into a new buffer (NUL-terminated, *len
 * excludes the NUL). With private_key set, refuse files whose mode lets group
 * or others read or write them. Free with pki_buf_free (wipes first). */
pki_status pki_read_file(const char *path, size_t max, bool private_key, char **out, size_t *len,
                         pki_error *err);
void pki_buf_free(char *buf, size_t len);

/* The digest to sign with for key: SHA-256, or none for Ed25519 (which
 * hashes internally). */
const EVP_MD *pki_sign_md(const EVP_PKEY *key);

#endif /* MOAT_PKI_INTERNAL_H */
