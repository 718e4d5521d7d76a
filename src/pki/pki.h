/*
 * pki.h — keys, CSRs, the hub CA, and the certificates it issues.
 *
 * The hub identifies every client by the exact certificate it presents (its
 * SHA-256 fingerprint, looked up in the registry), so this module is where the
 * rules that make those certificates trustworthy live: the CA is a P-256 key
 * with CA:TRUE/pathlen:0, server certificates always name localhost, client
 * certificates carry only the public key of a verified CSR and the subject the
 * registry chose (never what the CSR asked for), and every serial number is
 * 128 random bits. Private keys are written atomically with mode 0600 from the
 * moment the file exists, and wiped from memory after use.
 *
 * OpenSSL 3 EVP/X509 APIs only (no deprecated calls). Every function that can
 * fail returns a pki_status and, when err is not NULL, a one-line message that
 * includes the reason OpenSSL gave.
 *
 * Example: issue a client certificate from a CSR read from a file.
 *
 *     pki_ca ca = {0};
 *     X509_REQ *csr = NULL;
 *     X509 *cert = NULL;
 *     pki_error err;
 *     if (pki_ca_load(&ca, "data/ca.crt", "data/ca.key", &err) != PKI_OK ||
 *         pki_csr_read(&csr, "device.csr", &err) != PKI_OK ||
 *         pki_issue_client(&cert, &ca, csr, "ab3...", 0, &err) != PKI_OK)
 *         fprintf(stderr, "%s\n", err.msg);
 */
#ifndef MOAT_PKI_H
#define MOAT_PKI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#if defined(__GNUC__) || defined(__clang__)
#define PKI_MUST_CHECK __attribute__((warn_unused_result))
#else
#define PKI_MUST_CHECK
#endif

typedef enum pki_status {
    PKI_OK = 0,
    PKI_ERR_ARG,       /* invalid argument (name, address, validity) */
    PKI_ERR_IO,        /* a file could not be read or written */
    PKI_ERR_EXISTS,    /* the target file exists and overwriting was not asked for */
    PKI_ERR_PERM,      /* a private key file is readable by group or others */
    PKI_ERR_PARSE,     /* not a valid PEM/DER key, certificate or CSR */
    PKI_ERR_SIGNATURE, /* a CSR's self-signature does not verify */
    PKI_ERR_KEYTYPE,   /* a key type or size this hub does not accept */
    PKI_ERR_CRYPTO,    /* OpenSSL failed (see the message) */
    PKI_ERR_NOMEM
} pki_status;

/* A one-line human-readable reason for the last failure. */
typedef struct pki_error {
    char msg[320];
} pki_error;

/* Validity periods, in days. Server certificates follow the CA/Browser Forum
 * ceiling (825 days) so that any TLS client accepts them; client certificates
 * default to 397 days so a lost key stops working within about a year even if
 * nobody revokes it. */
#define PKI_CA_DAYS_DEFAULT     3650u
#define PKI_SERVER_DAYS_DEFAULT 825u
#define PKI_SERVER_DAYS_MAX     825u
#define PKI_CLIENT_DAYS_DEFAULT 397u
#define PKI_CLIENT_DAYS_MAX     825u

/* Accepted client key types: EC P-256, Ed25519, RSA 2048..8192 bits. */
#define PKI_RSA_MIN_BITS 2048
#define PKI_RSA_MAX_BITS 8192

/* Largest key, certificate or CSR file read (PEM text). */
#define PKI_MAX_FILE 65536u

/* SHA-256 fingerprint length. */
#define PKI_FINGERPRINT_LEN 32u

/* Short name of a status ("signature", "io", ...), for logs and tests. */
const char *pki_status_name(pki_status st);

/* ---- files ------------------------------------------------------------ */

/* Flags for pki_file_write_atomic and the *_write functions. */
enum {
    PKI_WRITE_REPLACE = 0,  /* atomically replace an existing file */
    PKI_WRITE_NOCLOBBER = 1 /* fail with PKI_ERR_EXISTS if path exists */
};

/*
 * Write data[0..len) to path atomically: a temporary file in the same
 * directory is created with O_CREAT|O_EXCL and `mode` (so a key file is never
 * readable by others, not even for an instant), written, fsynced, renamed (or,
 * with PKI_WRITE_NOCLOBBER, hard-linked so that an existing file is never
 * replaced) over path, and the directory is fsynced. On failure nothing is
 * left behind and path is untouched.
 */
PKI_MUST_CHECK pki_status pki_file_write_atomic(const char *path, const void *data, size_t len,
                                                unsigned mode, int flags, pki_error *err);

/* ---- keys ------------------------------------------------------------- */

/* A new EC P-256 key pair. Free with EVP_PKEY_free. */
PKI_MUST_CHECK pki_status pki_key_generate(EVP_PKEY **out, pki_error *err);

/* Write the private key as unencrypted PKCS#8 PEM with mode 0600 (see
 * pki_file_write_atomic). The PEM text is wiped from memory afterwards. */
PKI_MUST_CHECK pki_status pki_key_write(const EVP_PKEY *key, const char *path, int flags,
                                        pki_error *err);

/* Read a PEM private key. Refuses (PKI_ERR_PERM) a file that group or others
 * may read or write: a key that others could have copied is not a secret. */
PKI_MUST_CHECK pki_status pki_key_read(EVP_PKEY **out, const char *path, pki_error *err);

/* PKI_OK if the hub accepts key as a client key (see PKI_RSA_MIN_BITS);
 * PKI_ERR_KEYTYPE with a message naming the type otherwise. */
PKI_MUST_CHECK pki_status pki_key_check_accepted(const EVP_PKEY *key, pki_error *err);

/* True when both keys hold the same public key. */
bool pki_key_public_equal(const EVP_PKEY *a, const EVP_PKEY *b);

/* ---- certificates ----------------------------------------------------- */

PKI_MUST_CHECK pki_status pki_cert_read(X509 **out, const char *path, pki_error *err);
/* Parse one PEM certificate from memory. */
PKI_MUST_CHECK pki_status pki_cert_from_pem(X509 **out, const char *pem, size_t len,
                                            pki_error *err);
/* PEM text of cert in a new NUL-terminated buffer (free with free()). */
PKI_MUST_CHECK pki_status pki_cert_to_pem(const X509 *cert, char **out, size_t *len,
                                          pki_error *err);
/* Write cert as PEM with mode 0644. */
PKI_MUST_CHECK pki_status pki_cert_write(const X509 *cert, const char *path, int flags,
                                         pki_error *err);

/* SHA-256 of the certificate's DER encoding: what the hub looks up. */
PKI_MUST_CHECK pki_status pki_cert_fingerprint(const X509 *cert, uint8_t out[PKI_FINGERPRINT_LEN],
                                               pki_error *err);

/* notAfter as seconds since the Unix epoch. */
PKI_MUST_CHECK pki_status pki_cert_not_after(const X509 *cert, int64_t *out, pki_error *err);

/* Serial number as lower-case hex without leading zeros ("0" for zero). */
PKI_MUST_CHECK pki_status pki_cert_serial_hex(const X509 *cert, char *buf, size_t buflen,
                                              pki_error *err);

/* The subject's commonName (first one), NUL-terminated. */
PKI_MUST_CHECK pki_status pki_cert_subject_cn(const X509 *cert, char *buf, size_t buflen,
                                              pki_error *err);

/* ---- CSRs ------------------------------------------------------------- */

/* A CSR for key with subject CN=cn (cn may be NULL for an empty subject),
 * signed by key. Used by `moatctl device add`, tests and the SDK. */
PKI_MUST_CHECK pki_status pki_csr_create(X509_REQ **out, EVP_PKEY *key, const char *cn,
                                         pki_error *err);
/* Parse a CSR: PEM ("CERTIFICATE REQUEST"), or DER when the input is not PEM. */
PKI_MUST_CHECK pki_status pki_csr_parse(X509_REQ **out, const void *data, size_t len,
                                        pki_error *err);
PKI_MUST_CHECK pki_status pki_csr_read(X509_REQ **out, const char *path, pki_error *err);
PKI_MUST_CHECK pki_status pki_csr_to_pem(const X509_REQ *csr, char **out, size_t *len,
                                         pki_error *err);
/* Check the CSR's self-signature (proof that the requester holds the private
 * key) and that its key type is accepted. */
PKI_MUST_CHECK pki_status pki_csr_verify(X509_REQ *csr, pki_error *err);

/* ---- the CA and what it issues ---------------------------------------- */

/* The hub CA: certificate and private key, owned by the struct. */
typedef struct pki_ca {
    X509 *cert;
    EVP_PKEY *key;
} pki_ca;

/* A self-signed CA certificate for key: subject CN=cn, CA:TRUE (critical,
 * pathlen 0), keyUsage keyCertSign|cRLSign (critical), subject and authority
 * key identifiers. days 0 means PKI_CA_DAYS_DEFAULT. On success the struct
 * owns a reference to key. */
PKI_MUST_CHECK pki_status pki_ca_create(pki_ca *ca, EVP_PKEY *key, const char *cn, unsigned days,
                                        pki_error *err);
/* Load ca.crt and ca.key (see pki_key_read) and check that they match. */
PKI_MUST_CHECK pki_status pki_ca_load(pki_ca *ca, const char *cert_path, const char *key_path,
                                      pki_error *err);
/* Free both halves; the key is wiped by OpenSSL as it is freed. */
void pki_ca_free(pki_ca *ca);

/* What a server certificate names. localhost, 127.0.0.1 and ::1 are always
 * added (once). */
typedef struct pki_server_names {
    const char *const *dns; /* host names: letters, digits, '-', '.'; '*.' prefix allowed */
    size_t ndns;
    const char *const *ips; /* IPv4 or IPv6 addresses in text form */
    size_t nips;
} pki_server_names;

/* A server certificate for pub: subject CN = the first DNS name (or
 * "localhost"), subjectAltName = names, EKU serverAuth, keyUsage
 * digitalSignature, CA:FALSE. days 0 means the default; more than
 * PKI_SERVER_DAYS_MAX is refused. Never valid past the CA's own notAfter. */
PKI_MUST_CHECK pki_status pki_issue_server(X509 **out, const pki_ca *ca, EVP_PKEY *pub,
                                           const pki_server_names *names, unsigned days,
                                           pki_error *err);

/* A client certificate from csr: the CSR is verified (pki_csr_verify), then
 * everything in it except the public key is ignored. Subject CN=id, EKU
 * clientAuth, keyUsage digitalSignature, CA:FALSE. days 0 means the default;
 * more than PKI_CLIENT_DAYS_MAX is refused. */
PKI_MUST_CHECK pki_status pki_issue_client(X509 **out, const pki_ca *ca, X509_REQ *csr,
                                           const char *id, unsigned days, pki_error *err);

#endif /* MOAT_PKI_H */
