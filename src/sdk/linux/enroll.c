/*
 * enroll.c — the device side of enrollment (`moatctl device enroll`).
 *
 * The device makes its own EC P-256 key and never lets it out: the key file
 * is created 0600 with O_EXCL (an existing key is never replaced: that would
 * orphan the device's certificate), and only a CSR leaves. The hub ignores
 * the CSR's subject and picks the device id, so the CSR carries an empty
 * subject. When the certificate comes back it is checked before it is
 * installed: it must hold this key's public half, chain to the hub CA, be a
 * client certificate, and name the device in its CN; the CN is the device id
 * the client then uses as its MQTT client id.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <moat/linux.h>

#include "errtext.h"

#define ENROLL_MAX_FILE (64 * 1024)

/* Write data to path through path.tmp (mode), fsync, then rename — or, with
 * no_replace, link(2), which fails rather than replace an existing file:
 * never a partial file under the real name. */
static moat_status write_file(const char *path, const void *data, size_t len, mode_t mode,
                              bool no_replace, char *err, size_t errlen)
{
    char tmp[4200];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        errtext_put(err, errlen, "file name too long: %s", path);
        return MOAT_ERR_ARG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        errtext_put(err, errlen, "create %s: %s", tmp, strerror(errno));
        return MOAT_ERR_IO;
    }
    const uint8_t *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int e = done == len ? 0 : (errno ? errno : EIO);
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && no_replace) {
        if (link(tmp, path) != 0)
            e = errno;
        unlink(tmp);
    } else if (!e && rename(tmp, path) != 0) {
        e = errno;
    }
    if (e) {
        unlink(tmp);
        errtext_put(err, errlen, "write %s: %s", path, strerror(e));
        return MOAT_ERR_IO;
    }
    return MOAT_OK;
}

/* PEM text of an object written by a PEM_write_bio_* function. */
static moat_status bio_text(BIO *bio, const char **data, size_t *len)
{
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    if (n <= 0 || !p)
        return MOAT_ERR_IO;
    *data = p;
    *len = (size_t)n;
    return MOAT_OK;
}

moat_status moat_linux_enroll_request(const char *key_path, const char *csr_path, char *err,
                                      size_t errlen)
{
    moat_status rc = MOAT_ERR_IO;
    char why[160];
    EVP_PKEY *pk = NULL;
    X509_REQ *req = NULL;
    BIO *kb = NULL, *cb = NULL;
    const char *text;
    size_t len;
    bool key_written = false;

    if (!key_path || !csr_path) {
        errtext_put(err, errlen, "enroll needs a key path and a CSR path");
        return MOAT_ERR_ARG;
    }
    struct stat sb;
    if (lstat(key_path, &sb) == 0) {
        errtext_put(err, errlen, "%s exists: a device key is never replaced", key_path);
        return MOAT_ERR_STATE;
    }
    pk = EVP_EC_gen("P-256");
    req = X509_REQ_new();
    kb = BIO_new(BIO_s_mem());
    cb = BIO_new(BIO_s_mem());
    if (!pk || !req || !kb || !cb || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_pubkey(req, pk) != 1 || X509_REQ_sign(req, pk, EVP_sha256()) <= 0) {
        errtext_put(err, errlen, "make key and CSR: %s", errtext_ssl(why, sizeof(why)));
        goto out;
    }
    if (PEM_write_bio_PrivateKey(kb, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_X509_REQ(cb, req) != 1) {
        errtext_put(err, errlen, "encode key and CSR: %s", errtext_ssl(why, sizeof(why)));
        goto out;
    }
    if (bio_text(kb, &text, &len) != MOAT_OK ||
        (rc = write_file(key_path, text, len, 0600, true, err, errlen)) != MOAT_OK)
        goto out;
    key_written = true;
    rc = MOAT_ERR_IO;
    if (bio_text(cb, &text, &len) != MOAT_OK ||
        (rc = write_file(csr_path, text, len, 0644, false, err, errlen)) != MOAT_OK)
        goto out;
    rc = MOAT_OK;
out:
    if (rc != MOAT_OK && key_written)
        unlink(key_path);
    /* The key's PEM text sat in kb's memory: wipe it before it is freed. */
    if (kb) {
        char *p = NULL;
        long n = BIO_get_mem_data(kb, &p);
        if (n > 0 && p)
            OPENSSL_cleanse(p, (size_t)n);
    }
    BIO_free(kb);
    BIO_free(cb);
    X509_REQ_free(req);
    EVP_PKEY_free(pk);
    return rc;
}

/* Read a certificate: PEM, or DER when the input is not PEM. */
static X509 *read_cert(const char *path, char *err, size_t errlen)
{
    char why[160];
    FILE *f = fopen(path, "rb");
    if (!f) {
        errtext_put(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = malloc(ENROLL_MAX_FILE);
    size_t n = buf ? fread(buf, 1, ENROLL_MAX_FILE, f) : 0;
    fclose(f);
    if (!buf || n == ENROLL_MAX_FILE) {
        errtext_put(err, errlen, "%s: larger than %d bytes", path, ENROLL_MAX_FILE);
        free(buf);
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(buf, (int)n);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x) {
        ERR_clear_error();
        const unsigned char *p = buf;
        x = d2i_X509(NULL, &p, (long)n);
    }
    free(buf);
    if (!x)
        errtext_put(err, errlen, "%s: not a certificate (%s)", path, errtext_ssl(why, sizeof(why)));
    return x;
}

/* The subject CN as a device id: 1..cap-1 bytes of [A-Za-z0-9._-]. */
static moat_status cert_cn(X509 *x, char *id, size_t cap, char *err, size_t errlen)
{
    X509_NAME *name = X509_get_subject_name(x);
    int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    ASN1_STRING *s = i >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)) : NULL;
    if (!s) {
        errtext_put(err, errlen, "the certificate names no device (no CN)");
        return MOAT_ERR_AUTH;
    }
    const unsigned char *d = ASN1_STRING_get0_data(s);
    int n = ASN1_STRING_length(s);
    if (n <= 0 || n > 64) {
        errtext_put(err, errlen, "the certificate's CN is not a device id");
        return MOAT_ERR_AUTH;
    }
    for (int k = 0; k < n; k++) {
        unsigned char ch = d[k];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
        if (!ok) {
            errtext_put(err, errlen, "the certificate's CN is not a device id");
            return MOAT_ERR_AUTH;
        }
    }
    if (id) {
        if ((size_t)n >= cap) {
            errtext_put(err, errlen, "device id longer than %zu bytes", cap ? cap - 1 : 0);
            return MOAT_ERR_SPACE;
        }
        memcpy(id, d, (size_t)n);
        id[n] = '\0';
    }
    return MOAT_OK;
}

moat_status moat_linux_cert_device_id(const char *cert_path, char *id, size_t cap, char *err,
                                      size_t errlen)
{
    X509 *x = read_cert(cert_path, err, errlen);
    if (!x)
        return MOAT_ERR_IO;
    moat_status rc = cert_cn(x, id, cap, err, errlen);
    X509_free(x);
    return rc;
}

/* Does x chain to the CA in ca_path, for client authentication? */
static moat_status check_chain(X509 *x, const char *ca_path, char *err, size_t errlen)
{
    moat_status rc = MOAT_ERR_AUTH;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    if (!store || !sc || X509_STORE_load_file(store, ca_path) != 1) {
        char why[160];
        errtext_put(err, errlen, "CA %s: %s", ca_path, errtext_ssl(why, sizeof(why)));
        rc = MOAT_ERR_IO;
        goto out;
    }
    if (X509_STORE_CTX_init(sc, store, x, NULL) != 1 ||
        X509_STORE_CTX_set_purpose(sc, X509_PURPOSE_SSL_CLIENT) != 1) {
        errtext_put(err, errlen, "cannot check the certificate");
        rc = MOAT_ERR_IO;
        goto out;
    }
    if (X509_verify_cert(sc) != 1) {
        errtext_put(err, errlen, "the certificate does not verify against %s: %s", ca_path,
                    X509_verify_cert_error_string(X509_STORE_CTX_get_error(sc)));
        goto out;
    }
    rc = MOAT_OK;
out:
    ERR_clear_error();
    X509_STORE_CTX_free(sc);
    X509_STORE_free(store);
    return rc;
}

moat_status moat_linux_enroll_install(const char *cert_in, const char *key_path,
                                      const char *ca_path, const char *cert_out, char *id,
                                      size_t cap, char *err, size_t errlen)
{
    moat_status rc;
    X509 *x = NULL;
    void *vpk = NULL;
    BIO *b = NULL;
    moat_linux_key key;
    if (!cert_in || !key_path || !ca_path || !cert_out) {
        errtext_put(err, errlen, "install needs the certificate, key, CA and output paths");
        return MOAT_ERR_ARG;
    }
    if ((rc = moat_linux_key_file(&key, key_path)) != MOAT_OK) {
        errtext_put(err, errlen, "key path too long");
        return rc;
    }
    x = read_cert(cert_in, err, errlen);
    if (!x) {
        rc = MOAT_ERR_IO;
        goto out;
    }
    /* The key loads through the same check the transport uses (0600). */
    if ((rc = key.load(key.ctx, &vpk, err, errlen)) != MOAT_OK)
        goto out;
    if (X509_check_private_key(x, vpk) != 1) {
        ERR_clear_error();
        errtext_put(err, errlen, "the certificate is not for the key in %s", key_path);
        rc = MOAT_ERR_AUTH;
        goto out;
    }
    if ((rc = check_chain(x, ca_path, err, errlen)) != MOAT_OK ||
        (rc = cert_cn(x, id, cap, err, errlen)) != MOAT_OK)
        goto out;
    const char *text;
    size_t len;
    b = BIO_new(BIO_s_mem());
    if (!b || PEM_write_bio_X509(b, x) != 1 || bio_text(b, &text, &len) != MOAT_OK) {
        errtext_put(err, errlen, "cannot encode the certificate");
        rc = MOAT_ERR_IO;
        goto out;
    }
    /* Replacing an older certificate (renewal) is fine: same key. */
    rc = write_file(cert_out, text, len, 0644, false, err, errlen);
out:
    BIO_free(b);
    EVP_PKEY_free(vpk);
    X509_free(x);
    return rc;
}
