/*
 * key.c — key pairs and certificate signing requests.
 *
 * The hub makes P-256 keys (compact, fast, and supported by every TLS stack
 * and by the secure elements devices carry). It accepts from devices what
 * such hardware commonly holds: P-256, Ed25519, or RSA of at least 2048 bits;
 * anything else (small RSA, other curves, explicit curve parameters, DSA) is
 * refused by name, so an operator sees why enrollment failed.
 *
 * A CSR is trusted for exactly one thing: its self-signature proves that
 * whoever sent it holds the private key of the public key inside. Its subject
 * and requested extensions are never copied (see cert.c).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "internal.h"

pki_status pki_key_generate(EVP_PKEY **out, pki_error *err)
{
    if (!out)
        return pki_fail(err, PKI_ERR_ARG, "no output for the key");
    *out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!*out)
        return pki_fail_ssl(err, PKI_ERR_CRYPTO, "generating an EC P-256 key");
    return PKI_OK;
}

pki_status pki_key_write(const EVP_PKEY *key, const char *path, int flags, pki_error *err)
{
    if (!key || !path)
        return pki_fail(err, PKI_ERR_ARG, "no key or path to write");
    /* A secure-memory BIO wipes its buffer on every reallocation and on free,
     * so the PEM text of the key does not linger in freed heap memory. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (!bio)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "allocating a buffer for %s", path);
    pki_status st = PKI_OK;
    if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "%s: encoding the private key", path);
        goto out;
    }
    char *pem = NULL;
    long n = BIO_get_mem_data(bio, &pem);
    if (n <= 0 || !pem) {
        st = pki_fail(err, PKI_ERR_CRYPTO, "%s: encoding the private key", path);
        goto out;
    }
    st = pki_file_write_atomic(path, pem, (size_t)n, 0600, flags, err);
out:
    BIO_free(bio);
    return st;
}

/* Never prompt on a terminal for a pass phrase: moatctl and moatd run
 * unattended, and an encrypted key is reported as such. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

pki_status pki_key_read(EVP_PKEY **out, const char *path, pki_error *err)
{
    if (!out || !path)
        return pki_fail(err, PKI_ERR_ARG, "no key or path to read");
    char *buf = NULL;
    size_t len = 0;
    pki_status st = pki_read_file(path, PKI_MAX_FILE, true, &buf, &len, err);
    if (st != PKI_OK)
        return st;
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    if (!bio) {
        st = pki_fail_ssl(err, PKI_ERR_NOMEM, "%s", path);
        goto out;
    }
    *out = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    if (!*out)
        st = pki_fail_ssl(err, PKI_ERR_PARSE, "%s: not an unencrypted PEM private key", path);
    BIO_free(bio);
out:
    pki_buf_free(buf, len);
    return st;
}

pki_status pki_key_check_accepted(const EVP_PKEY *key, pki_error *err)
{
    static const char accepted[] = "accepted: EC P-256, Ed25519, RSA 2048-8192 bits";
    if (!key)
        return pki_fail(err, PKI_ERR_KEYTYPE, "no public key; %s", accepted);
    if (EVP_PKEY_is_a(key, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(key, group, sizeof group, &glen) != 1)
            return pki_fail(err, PKI_ERR_KEYTYPE,
                            "EC key without a named curve is not accepted; %s", accepted);
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            return PKI_OK;
        return pki_fail(err, PKI_ERR_KEYTYPE, "EC curve %s is not accepted; %s", group, accepted);
    }
    if (EVP_PKEY_is_a(key, "ED25519"))
        return PKI_OK;
    if (EVP_PKEY_is_a(key, "RSA")) {
        int bits = EVP_PKEY_get_bits(key);
        if (bits >= PKI_RSA_MIN_BITS && bits <= PKI_RSA_MAX_BITS)
            return PKI_OK;
        return pki_fail(err, PKI_ERR_KEYTYPE, "RSA key of %d bits is not accepted; %s", bits,
                        accepted);
    }
    const char *name = EVP_PKEY_get0_type_name(key);
    return pki_fail(err, PKI_ERR_KEYTYPE, "%s key is not accepted; %s", name ? name : "unknown",
                    accepted);
}

bool pki_key_public_equal(const EVP_PKEY *a, const EVP_PKEY *b)
{
    if (!a || !b)
        return false;
    bool eq = EVP_PKEY_eq(a, b) == 1;
    ERR_clear_error();
    return eq;
}

pki_status pki_csr_create(X509_REQ **out, EVP_PKEY *key, const char *cn, pki_error *err)
{
    if (!out || !key)
        return pki_fail(err, PKI_ERR_ARG, "no key for the CSR");
    pki_status st = PKI_OK;
    X509_REQ *req = X509_REQ_new();
    if (!req)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "allocating a CSR");
    if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 || X509_REQ_set_pubkey(req, key) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "building the CSR");
        goto out;
    }
    if (cn && *cn) {
        X509_NAME *name = X509_REQ_get_subject_name(req);
        if (!name || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                                (const unsigned char *)cn, -1, -1, 0) != 1) {
            st = pki_fail_ssl(err, PKI_ERR_ARG, "CSR subject CN=%s", cn);
            goto out;
        }
    }
    if (X509_REQ_sign(req, key, pki_sign_md(key)) <= 0) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "signing the CSR");
        goto out;
    }
    *out = req;
    req = NULL;
out:
    X509_REQ_free(req);
    return st;
}

pki_status pki_csr_parse(X509_REQ **out, const void *data, size_t len, pki_error *err)
{
    if (!out || !data)
        return pki_fail(err, PKI_ERR_ARG, "no CSR data");
    if (len == 0 || len > PKI_MAX_FILE)
        return pki_fail(err, PKI_ERR_PARSE, "not a certificate signing request (%s)",
                        len ? "too large" : "empty");
    X509_REQ *req = NULL;
    static const char pem_tag[] = "-----BEGIN";
    bool pem = false;
    /* Look for a PEM header without assuming the data is text. */
    for (size_t i = 0; i + sizeof pem_tag - 1 <= len && !pem; i++)
        pem = memcmp((const char *)data + i, pem_tag, sizeof pem_tag - 1) == 0;
    if (pem) {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        if (!bio)
            return pki_fail_ssl(err, PKI_ERR_NOMEM, "reading the CSR");
        req = PEM_read_bio_X509_REQ(bio, NULL, no_password, NULL);
        BIO_free(bio);
    } else {
        const unsigned char *p = data;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (req && p != (const unsigned char *)data + len) {
            X509_REQ_free(req);
            return pki_fail(err, PKI_ERR_PARSE,
                            "not a certificate signing request: trailing bytes after the DER");
        }
    }
    if (!req)
        return pki_fail_ssl(err, PKI_ERR_PARSE, "not a certificate signing request (PEM or DER)");
    *out = req;
    ERR_clear_error();
    return PKI_OK;
}

pki_status pki_csr_read(X509_REQ **out, const char *path, pki_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    pki_status st = pki_read_file(path, PKI_MAX_FILE, false, &buf, &len, err);
    if (st != PKI_OK)
        return st;
    st = pki_csr_parse(out, buf, len, err);
    if (st != PKI_OK && err) {
        /* Prefix the file name, keeping the parser's reason. */
        pki_error inner = *err;
        pki_fail(err, st, "%s: %s", path, inner.msg);
    }
    pki_buf_free(buf, len);
    return st;
}

/* PEM text of an object in a malloc'd NUL-terminated buffer. */
static pki_status bio_to_string(BIO *bio, char **out, size_t *len, pki_error *err)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || !data)
        return pki_fail(err, PKI_ERR_CRYPTO, "encoding PEM");
    char *copy = malloc((size_t)n + 1);
    if (!copy)
        return pki_fail(err, PKI_ERR_NOMEM, "out of memory");
    memcpy(copy, data, (size_t)n);
    copy[n] = '\0';
    *out = copy;
    if (len)
        *len = (size_t)n;
    return PKI_OK;
}

pki_status pki_csr_to_pem(const X509_REQ *csr, char **out, size_t *len, pki_error *err)
{
    if (!csr || !out)
        return pki_fail(err, PKI_ERR_ARG, "no CSR to encode");
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "encoding the CSR");
    pki_status st;
    if (PEM_write_bio_X509_REQ(bio, csr) != 1)
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "encoding the CSR");
    else
        st = bio_to_string(bio, out, len, err);
    BIO_free(bio);
    return st;
}

pki_status pki_cert_to_pem(const X509 *cert, char **out, size_t *len, pki_error *err)
{
    if (!cert || !out)
        return pki_fail(err, PKI_ERR_ARG, "no certificate to encode");
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "encoding the certificate");
    pki_status st;
    if (PEM_write_bio_X509(bio, cert) != 1)
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "encoding the certificate");
    else
        st = bio_to_string(bio, out, len, err);
    BIO_free(bio);
    return st;
}

pki_status pki_csr_verify(X509_REQ *csr, pki_error *err)
{
    if (!csr)
        return pki_fail(err, PKI_ERR_ARG, "no CSR");
    EVP_PKEY *pub = X509_REQ_get0_pubkey(csr);
    if (!pub)
        return pki_fail_ssl(err, PKI_ERR_PARSE, "CSR: unreadable public key");
    pki_status st = pki_key_check_accepted(pub, err);
    if (st != PKI_OK)
        return st;
    /* 1 = valid; 0 = wrong signature; <0 = could not be checked. Only 1 is
     * proof of possession. */
    int ok = X509_REQ_verify(csr, pub);
    if (ok == 0)
        return pki_fail(err, PKI_ERR_SIGNATURE,
                        "CSR signature does not verify with its own public key");
    if (ok != 1)
        return pki_fail_ssl(err, PKI_ERR_SIGNATURE, "CSR signature could not be checked");
    ERR_clear_error();
    return PKI_OK;
}
