/*
 * cert.c — the hub CA and the certificates it issues, plus the facts the
 * registry records about a certificate (fingerprint, serial, notAfter).
 *
 * Every certificate is built from scratch here: version 3, a 128-bit random
 * serial (unpredictable serials defeat chosen-prefix collision attacks and
 * make serials unique without a counter), notBefore five minutes in the past
 * (devices with slightly slow clocks still accept a fresh certificate), and
 * extensions chosen by the kind of certificate, never copied from a request.
 * Subject alternative names are built as GENERAL_NAME structures rather than
 * through OpenSSL's config-string syntax, so a host name containing a comma
 * cannot smuggle in another name.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define BACKDATE_SECONDS (-300L)
#define MAX_SERVER_NAMES 100u
#define MAX_ID_LEN       64u

void pki_ca_free(pki_ca *ca)
{
    if (!ca)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    ca->cert = NULL;
    ca->key = NULL;
}

static pki_status set_random_serial(X509 *x, pki_error *err)
{
    unsigned char rnd[16];
    pki_status st = PKI_OK;
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial = NULL;
    do {
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            return pki_fail_ssl(err, PKI_ERR_CRYPTO, "random serial number");
        BN_free(bn);
        bn = BN_bin2bn(rnd, sizeof rnd, NULL);
        if (!bn)
            return pki_fail_ssl(err, PKI_ERR_NOMEM, "serial number");
    } while (BN_is_zero(bn)); /* a serial must be positive (RFC 5280 4.1.2.2) */
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    if (!serial || X509_set_serialNumber(x, serial) != 1)
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "setting the serial number");
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    return st;
}

static pki_status set_cn(X509_NAME *name, const char *cn, pki_error *err)
{
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1)
        return pki_fail_ssl(err, PKI_ERR_ARG, "subject CN=%s", cn);
    return PKI_OK;
}

/* Add an extension given in OpenSSL's value syntax; only ever called with
 * constant strings from this file. */
static pki_status add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value, pki_error *err)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    if (!ext)
        return pki_fail_ssl(err, PKI_ERR_CRYPTO, "extension %s=%s", OBJ_nid2sn(nid), value);
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (ok != 1)
        return pki_fail_ssl(err, PKI_ERR_CRYPTO, "adding extension %s", OBJ_nid2sn(nid));
    return PKI_OK;
}

/*
 * The common frame of every certificate: a new X509 with version 3, a random
 * serial, subject CN=cn, issuer (the CA's subject, or its own for a
 * self-signed CA), validity from now-5min to now+days (clamped to the CA's
 * notAfter), and pub as its key.
 */
static pki_status new_cert(X509 **out, const pki_ca *ca, EVP_PKEY *pub, const char *cn,
                           unsigned days, pki_error *err)
{
    pki_status st = PKI_OK;
    X509 *x = X509_new();
    if (!x)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "allocating a certificate");
    if (X509_set_version(x, X509_VERSION_3) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "certificate version");
        goto out;
    }
    if ((st = set_random_serial(x, err)) != PKI_OK)
        goto out;
    if ((st = set_cn(X509_get_subject_name(x), cn, err)) != PKI_OK)
        goto out;
    const X509_NAME *issuer = ca ? X509_get_subject_name(ca->cert) : X509_get_subject_name(x);
    if (X509_set_issuer_name(x, issuer) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "issuer name");
        goto out;
    }
    if (!X509_gmtime_adj(X509_getm_notBefore(x), BACKDATE_SECONDS) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL)) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "validity period");
        goto out;
    }
    /* A certificate must not outlive the CA that vouches for it. */
    if (ca && ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca->cert)) > 0 &&
        X509_set1_notAfter(x, X509_get0_notAfter(ca->cert)) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "validity period");
        goto out;
    }
    if (X509_set_pubkey(x, pub) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "public key");
        goto out;
    }
    *out = x;
    x = NULL;
out:
    X509_free(x);
    return st;
}

static pki_status sign_cert(X509 *x, EVP_PKEY *key, pki_error *err)
{
    if (X509_sign(x, key, pki_sign_md(key)) <= 0)
        return pki_fail_ssl(err, PKI_ERR_CRYPTO, "signing the certificate");
    return PKI_OK;
}

pki_status pki_ca_create(pki_ca *ca, EVP_PKEY *key, const char *cn, unsigned days, pki_error *err)
{
    if (!ca || !key || !cn || !*cn)
        return pki_fail(err, PKI_ERR_ARG, "CA needs a key and a name");
    if (days == 0)
        days = PKI_CA_DAYS_DEFAULT;
    if (days > 36500u)
        return pki_fail(err, PKI_ERR_ARG, "CA validity of %u days is too long", days);
    X509 *x = NULL;
    pki_status st = new_cert(&x, NULL, key, cn, days, err);
    if (st != PKI_OK)
        return st;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    /* pathlen:0 — this CA signs leaf certificates only, never another CA. */
    if ((st = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err)) ||
        (st = add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign", err)) ||
        (st = add_ext(x, &ctx, NID_subject_key_identifier, "hash", err)) ||
        (st = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err)) ||
        (st = sign_cert(x, key, err))) {
        X509_free(x);
        return st;
    }
    if (EVP_PKEY_up_ref(key) != 1) {
        X509_free(x);
        return pki_fail_ssl(err, PKI_ERR_CRYPTO, "key reference");
    }
    ca->cert = x;
    ca->key = key;
    return PKI_OK;
}

pki_status pki_ca_load(pki_ca *ca, const char *cert_path, const char *key_path, pki_error *err)
{
    if (!ca || !cert_path || !key_path)
        return pki_fail(err, PKI_ERR_ARG, "no CA paths");
    pki_ca tmp = {0};
    pki_status st = pki_cert_read(&tmp.cert, cert_path, err);
    if (st != PKI_OK)
        return st;
    if ((st = pki_key_read(&tmp.key, key_path, err)) != PKI_OK)
        goto fail;
    if (X509_check_private_key(tmp.cert, tmp.key) != 1) {
        st = pki_fail_ssl(err, PKI_ERR_ARG, "%s does not belong to %s", key_path, cert_path);
        goto fail;
    }
    if (X509_check_ca(tmp.cert) < 1) {
        st = pki_fail(err, PKI_ERR_ARG, "%s is not a CA certificate", cert_path);
        goto fail;
    }
    *ca = tmp;
    return PKI_OK;
fail:
    pki_ca_free(&tmp);
    return st;
}

/* Lower-case a host name into buf and check it: LDH labels of 1..63
 * characters, at most 253 in total, an optional leading "*." wildcard. */
static bool normalize_dns(const char *in, char *buf, size_t buflen)
{
    size_t n = strlen(in);
    if (n == 0 || n > 253 || n >= buflen)
        return false;
    size_t i = 0, label = 0;
    if (n > 2 && in[0] == '*' && in[1] == '.') {
        buf[0] = '*';
        buf[1] = '.';
        i = 2;
    }
    for (; i < n; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0 || buf[i - 1] == '-')
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
            if (c == '-' && label == 0)
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
        buf[i] = c;
    }
    if (label == 0 || buf[n - 1] == '-')
        return false;
    buf[n] = '\0';
    return true;
}

static pki_status push_name(GENERAL_NAMES *gens, int type, const void *data, size_t len,
                            pki_error *err)
{
    /* Skip a name already present (localhost is always added, and may also
     * have been given). */
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        int t;
        const ASN1_STRING *s = GENERAL_NAME_get0_value(g, &t);
        if (t == type && (size_t)ASN1_STRING_length(s) == len &&
            memcmp(ASN1_STRING_get0_data(s), data, len) == 0)
            return PKI_OK;
    }
    if ((size_t)sk_GENERAL_NAME_num(gens) >= MAX_SERVER_NAMES)
        return pki_fail(err, PKI_ERR_ARG, "more than %u server names", MAX_SERVER_NAMES);
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *s = type == GEN_DNS ? ASN1_IA5STRING_new() : ASN1_OCTET_STRING_new();
    if (!g || !s || ASN1_STRING_set(s, data, (int)len) != 1) {
        GENERAL_NAME_free(g);
        ASN1_STRING_free(s);
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "subject alternative name");
    }
    GENERAL_NAME_set0_value(g, type, s);
    if (sk_GENERAL_NAME_push(gens, g) <= 0) {
        GENERAL_NAME_free(g);
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "subject alternative name");
    }
    return PKI_OK;
}

static pki_status push_dns(GENERAL_NAMES *gens, const char *name, pki_error *err)
{
    char buf[256];
    unsigned char ip[16];
    if (inet_pton(AF_INET, name, ip) == 1)
        return pki_fail(err, PKI_ERR_ARG, "'%s' is an IP address: give it as an IP, not a host",
                        name);
    if (!normalize_dns(name, buf, sizeof buf))
        return pki_fail(err, PKI_ERR_ARG,
                        "invalid host name '%s' (letters, digits, '-' and '.' only)", name);
    return push_name(gens, GEN_DNS, buf, strlen(buf), err);
}

static pki_status push_ip(GENERAL_NAMES *gens, const char *text, pki_error *err)
{
    unsigned char ip[16];
    if (inet_pton(AF_INET, text, ip) == 1)
        return push_name(gens, GEN_IPADD, ip, 4, err);
    if (inet_pton(AF_INET6, text, ip) == 1)
        return push_name(gens, GEN_IPADD, ip, 16, err);
    return pki_fail(err, PKI_ERR_ARG, "invalid IP address '%s'", text);
}

static pki_status add_server_names(X509 *x, const pki_server_names *names, pki_error *err)
{
    pki_status st = PKI_OK;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    if (!gens)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "subject alternative names");
    for (size_t i = 0; names && i < names->ndns && st == PKI_OK; i++)
        st = push_dns(gens, names->dns[i], err);
    if (st == PKI_OK)
        st = push_dns(gens, "localhost", err);
    for (size_t i = 0; names && i < names->nips && st == PKI_OK; i++)
        st = push_ip(gens, names->ips[i], err);
    if (st == PKI_OK)
        st = push_ip(gens, "127.0.0.1", err);
    if (st == PKI_OK)
        st = push_ip(gens, "::1", err);
    if (st == PKI_OK &&
        X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "adding subject alternative names");
    GENERAL_NAMES_free(gens);
    return st;
}

pki_status pki_issue_server(X509 **out, const pki_ca *ca, EVP_PKEY *pub,
                            const pki_server_names *names, unsigned days, pki_error *err)
{
    if (!out || !ca || !ca->cert || !ca->key || !pub)
        return pki_fail(err, PKI_ERR_ARG, "server certificate needs a CA and a key");
    if (days == 0)
        days = PKI_SERVER_DAYS_DEFAULT;
    if (days > PKI_SERVER_DAYS_MAX)
        return pki_fail(err, PKI_ERR_ARG, "server certificate validity %u days exceeds %u", days,
                        PKI_SERVER_DAYS_MAX);
    char cn[256] = "localhost";
    if (names && names->ndns > 0 && !normalize_dns(names->dns[0], cn, sizeof cn))
        return pki_fail(err, PKI_ERR_ARG, "invalid host name '%s'", names->dns[0]);
    X509 *x = NULL;
    pki_status st = new_cert(&x, ca, pub, cn, days, err);
    if (st != PKI_OK)
        return st;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
    if ((st = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE", err)) ||
        (st = add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature", err)) ||
        (st = add_ext(x, &ctx, NID_ext_key_usage, "serverAuth", err)) ||
        (st = add_ext(x, &ctx, NID_subject_key_identifier, "hash", err)) ||
        (st = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err)) ||
        (st = add_server_names(x, names, err)) || (st = sign_cert(x, ca->key, err))) {
        X509_free(x);
        return st;
    }
    *out = x;
    return PKI_OK;
}

/* Identifiers the registry hands out: [a-z0-9-], so a CN can never carry
 * characters with meaning in a distinguished name, a topic or a log line. */
static bool id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > MAX_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

pki_status pki_issue_client(X509 **out, const pki_ca *ca, X509_REQ *csr, const char *id,
                            unsigned days, pki_error *err)
{
    if (!out || !ca || !ca->cert || !ca->key || !csr || !id)
        return pki_fail(err, PKI_ERR_ARG, "client certificate needs a CA, a CSR and an id");
    if (!id_ok(id))
        return pki_fail(err, PKI_ERR_ARG, "invalid principal id '%s'", id);
    if (days == 0)
        days = PKI_CLIENT_DAYS_DEFAULT;
    if (days > PKI_CLIENT_DAYS_MAX)
        return pki_fail(err, PKI_ERR_ARG, "client certificate validity %u days exceeds %u", days,
                        PKI_CLIENT_DAYS_MAX);
    pki_status st = pki_csr_verify(csr, err);
    if (st != PKI_OK)
        return st;
    /* Only the public key crosses over from the request. */
    EVP_PKEY *pub = X509_REQ_get0_pubkey(csr);
    X509 *x = NULL;
    if ((st = new_cert(&x, ca, pub, id, days, err)) != PKI_OK)
        return st;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
    if ((st = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE", err)) ||
        (st = add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature", err)) ||
        (st = add_ext(x, &ctx, NID_ext_key_usage, "clientAuth", err)) ||
        (st = add_ext(x, &ctx, NID_subject_key_identifier, "hash", err)) ||
        (st = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err)) ||
        (st = sign_cert(x, ca->key, err))) {
        X509_free(x);
        return st;
    }
    *out = x;
    return PKI_OK;
}

pki_status pki_cert_from_pem(X509 **out, const char *pem, size_t len, pki_error *err)
{
    if (!out || !pem || len == 0 || len > PKI_MAX_FILE)
        return pki_fail(err, PKI_ERR_PARSE, "not a PEM certificate");
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return pki_fail_ssl(err, PKI_ERR_NOMEM, "reading a certificate");
    *out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!*out)
        return pki_fail_ssl(err, PKI_ERR_PARSE, "not a PEM certificate");
    return PKI_OK;
}

pki_status pki_cert_read(X509 **out, const char *path, pki_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    pki_status st = pki_read_file(path, PKI_MAX_FILE, false, &buf, &len, err);
    if (st != PKI_OK)
        return st;
    st = pki_cert_from_pem(out, buf, len, err);
    if (st != PKI_OK && err) {
        pki_error inner = *err;
        pki_fail(err, st, "%s: %s", path, inner.msg);
    }
    pki_buf_free(buf, len);
    return st;
}

pki_status pki_cert_write(const X509 *cert, const char *path, int flags, pki_error *err)
{
    char *pem = NULL;
    size_t len = 0;
    pki_status st = pki_cert_to_pem(cert, &pem, &len, err);
    if (st != PKI_OK)
        return st;
    st = pki_file_write_atomic(path, pem, len, 0644, flags, err);
    free(pem);
    return st;
}

pki_status pki_cert_fingerprint(const X509 *cert, uint8_t out[PKI_FINGERPRINT_LEN], pki_error *err)
{
    if (!cert || !out)
        return pki_fail(err, PKI_ERR_ARG, "no certificate to fingerprint");
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der); /* allocates der */
    if (n <= 0 || !der)
        return pki_fail_ssl(err, PKI_ERR_CRYPTO, "encoding the certificate");
    unsigned int mdlen = 0;
    pki_status st = PKI_OK;
    if (EVP_Digest(der, (size_t)n, out, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != PKI_FINGERPRINT_LEN)
        st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "SHA-256 of the certificate");
    OPENSSL_free(der);
    return st;
}

pki_status pki_cert_not_after(const X509 *cert, int64_t *out, pki_error *err)
{
    if (!cert || !out)
        return pki_fail(err, PKI_ERR_ARG, "no certificate");
    /* ASN1_TIME_diff against the epoch: portable, no timegm(). */
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    pki_status st = PKI_OK;
    if (!epoch || ASN1_TIME_diff(&days, &secs, epoch, X509_get0_notAfter(cert)) != 1)
        st = pki_fail_ssl(err, PKI_ERR_PARSE, "certificate notAfter");
    else
        *out = (int64_t)days * 86400 + secs;
    ASN1_TIME_free(epoch);
    return st;
}

pki_status pki_cert_serial_hex(const X509 *cert, char *buf, size_t buflen, pki_error *err)
{
    if (!cert || !buf || buflen == 0)
        return pki_fail(err, PKI_ERR_ARG, "no certificate or buffer");
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (!bn)
        return pki_fail_ssl(err, PKI_ERR_PARSE, "certificate serial number");
    pki_status st = PKI_OK;
    char *hex = BN_is_zero(bn) ? NULL : BN_bn2hex(bn);
    const char *src = BN_is_zero(bn) ? "0" : hex;
    if (!src) {
        st = pki_fail_ssl(err, PKI_ERR_NOMEM, "serial number");
    } else {
        size_t n = strlen(src);
        if (n >= buflen) {
            st = pki_fail(err, PKI_ERR_ARG, "serial number longer than %zu", buflen - 1);
        } else {
            for (size_t i = 0; i <= n; i++) {
                char c = src[i];
                buf[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
            }
        }
    }
    OPENSSL_free(hex);
    BN_free(bn);
    return st;
}

pki_status pki_cert_subject_cn(const X509 *cert, char *buf, size_t buflen, pki_error *err)
{
    if (!cert || !buf || buflen == 0)
        return pki_fail(err, PKI_ERR_ARG, "no certificate or buffer");
    const X509_NAME *name = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0)
        return pki_fail(err, PKI_ERR_PARSE, "certificate has no subject CN");
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0)
        return pki_fail_ssl(err, PKI_ERR_PARSE, "certificate subject CN");
    pki_status st = PKI_OK;
    if ((size_t)n >= buflen || memchr(utf8, '\0', (size_t)n))
        st = pki_fail(err, PKI_ERR_PARSE, "certificate subject CN too long or has NUL");
    else {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = '\0';
    }
    OPENSSL_free(utf8);
    return st;
}
