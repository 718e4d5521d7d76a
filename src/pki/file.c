/*
 * file.c — the pki module's file handling and error reporting.
 *
 * Keys and certificates are written so that a crash or a full disk never
 * leaves a half-written or world-readable key behind: a temporary file in the
 * target's directory is created with O_EXCL and its final mode (0600 for
 * secrets, so no instant exists in which others could open it), written in
 * full, fsynced, then renamed (or hard-linked when overwriting is not
 * allowed, which fails atomically if the target appeared meanwhile), and the
 * directory is fsynced so the new name itself is durable. Every return value
 * is checked; on failure the temporary file is removed.
 *
 * Reading is bounded (PKI_MAX_FILE) and, for private keys, refuses files that
 * group or others may access, in the way ssh refuses such identity files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "internal.h"

const char *pki_status_name(pki_status st)
{
    switch (st) {
    case PKI_OK:
        return "ok";
    case PKI_ERR_ARG:
        return "invalid argument";
    case PKI_ERR_IO:
        return "io";
    case PKI_ERR_EXISTS:
        return "exists";
    case PKI_ERR_PERM:
        return "permissions";
    case PKI_ERR_PARSE:
        return "parse";
    case PKI_ERR_SIGNATURE:
        return "signature";
    case PKI_ERR_KEYTYPE:
        return "key type";
    case PKI_ERR_CRYPTO:
        return "crypto";
    case PKI_ERR_NOMEM:
        return "out of memory";
    }
    return "unknown";
}

static void vrecord(pki_error *err, const char *fmt, va_list ap, const char *reason)
    PKI_PRINTF(2, 0);

static void vrecord(pki_error *err, const char *fmt, va_list ap, const char *reason)
{
    if (!err)
        return;
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    if (n < 0) {
        err->msg[0] = '\0';
        n = 0;
    }
    size_t used = (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    if (reason && used < sizeof err->msg - 1)
        snprintf(err->msg + used, sizeof err->msg - used, ": %s", reason);
}

pki_status pki_fail(pki_error *err, pki_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrecord(err, fmt, ap, NULL);
    va_end(ap);
    ERR_clear_error();
    return st;
}

pki_status pki_fail_ssl(pki_error *err, pki_status st, const char *fmt, ...)
{
    /* The earliest entry on the queue is the root cause; later entries are
     * the callers that passed it up. */
    unsigned long e = ERR_get_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    char code[32];
    if (e && !reason) {
        snprintf(code, sizeof code, "OpenSSL error %lx", e);
        reason = code;
    }
    va_list ap;
    va_start(ap, fmt);
    vrecord(err, fmt, ap, reason);
    va_end(ap);
    ERR_clear_error();
    return st;
}

const EVP_MD *pki_sign_md(const EVP_PKEY *key)
{
    if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
        return NULL;
    return EVP_sha256();
}

void pki_buf_free(char *buf, size_t len)
{
    if (!buf)
        return;
    OPENSSL_cleanse(buf, len);
    free(buf);
}

pki_status pki_read_file(const char *path, size_t max, bool private_key, char **out, size_t *len,
                         pki_error *err)
{
    pki_status st = PKI_OK;
    char *buf = NULL;
    size_t have = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pki_fail(err, PKI_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = pki_fail(err, PKI_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = pki_fail(err, PKI_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    if (private_key && (sb.st_mode & 077)) {
        st = pki_fail(err, PKI_ERR_PERM,
                      "%s: private key is accessible by group or others (mode %04o); "
                      "run chmod 600 on it",
                      path, (unsigned)(sb.st_mode & 07777));
        goto out;
    }
    if ((uintmax_t)sb.st_size > max) {
        st = pki_fail(err, PKI_ERR_PARSE, "%s: larger than %zu bytes", path, max);
        goto out;
    }
    buf = malloc(max + 1);
    if (!buf) {
        st = pki_fail(err, PKI_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        /* Read one byte past max to notice a file that grew after fstat. */
        ssize_t n = read(fd, buf + have, max + 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = pki_fail(err, PKI_ERR_IO, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have > max) {
            st = pki_fail(err, PKI_ERR_PARSE, "%s: larger than %zu bytes", path, max);
            goto out;
        }
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    buf = NULL;
out:
    pki_buf_free(buf, max + 1);
    if (close(fd) != 0 && st == PKI_OK) {
        pki_buf_free(*out, *len);
        *out = NULL;
        st = pki_fail(err, PKI_ERR_IO, "%s: %s", path, strerror(errno));
    }
    return st;
}

static pki_status write_all(int fd, const void *data, size_t len, const char *path, pki_error *err)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pki_fail(err, PKI_ERR_IO, "%s: write: %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return PKI_OK;
}

static pki_status fsync_dir(const char *dir, pki_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pki_fail(err, PKI_ERR_IO, "%s: %s", dir, strerror(errno));
    pki_status st = PKI_OK;
    if (fsync(fd) != 0)
        st = pki_fail(err, PKI_ERR_IO, "%s: fsync: %s", dir, strerror(errno));
    if (close(fd) != 0 && st == PKI_OK)
        st = pki_fail(err, PKI_ERR_IO, "%s: close: %s", dir, strerror(errno));
    return st;
}

pki_status pki_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode,
                                 int flags, pki_error *err)
{
    if (!path || !*path || (!data && len) || (mode & ~0777u))
        return pki_fail(err, PKI_ERR_ARG, "invalid arguments to write a file");
    size_t plen = strlen(path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base)
        return pki_fail(err, PKI_ERR_ARG, "%s: not a file name", path);
    size_t dlen = slash ? (size_t)(slash - path) : 0;

    pki_status st = PKI_OK;
    char *dir = NULL, *tmp = NULL;
    int fd = -1;
    bool tmp_exists = false;

    dir = malloc(dlen + 2);
    tmp = malloc(plen + 32);
    if (!dir || !tmp) {
        st = pki_fail(err, PKI_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!slash)
        memcpy(dir, ".", 2);
    else if (dlen == 0)
        memcpy(dir, "/", 2);
    else {
        memcpy(dir, path, dlen);
        dir[dlen] = '\0';
    }

    /* A random suffix, so concurrent writers and leftovers of a crash do not
     * collide; O_EXCL makes a collision an error instead of a shared file. */
    for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
        unsigned char rnd[6];
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            st = pki_fail_ssl(err, PKI_ERR_CRYPTO, "random bytes for a file name");
            goto out;
        }
        int n = snprintf(tmp, plen + 32, "%.*s%s.%s.tmp%02x%02x%02x%02x%02x%02x", (int)dlen, path,
                         slash ? "/" : "", base, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
        if (n < 0 || (size_t)n >= plen + 32) {
            st = pki_fail(err, PKI_ERR_ARG, "%s: path too long", path);
            goto out;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
        if (fd < 0 && errno != EEXIST) {
            st = pki_fail(err, PKI_ERR_IO, "%s: %s", tmp, strerror(errno));
            goto out;
        }
    }
    if (fd < 0) {
        st = pki_fail(err, PKI_ERR_IO, "%s: could not create a temporary file", path);
        goto out;
    }
    tmp_exists = true;
    /* The umask may have cleared bits of a public file's mode; set exactly
     * what was asked (never more than mode, so a secret stays 0600). */
    if (fchmod(fd, (mode_t)mode) != 0) {
        st = pki_fail(err, PKI_ERR_IO, "%s: chmod: %s", tmp, strerror(errno));
        goto out;
    }
    st = write_all(fd, data, len, tmp, err);
    if (st != PKI_OK)
        goto out;
    if (fsync(fd) != 0) {
        st = pki_fail(err, PKI_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
        goto out;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        st = pki_fail(err, PKI_ERR_IO, "%s: close: %s", tmp, strerror(errno));
        goto out;
    }
    if (flags & PKI_WRITE_NOCLOBBER) {
        if (link(tmp, path) != 0) {
            if (errno == EEXIST)
                st = pki_fail(err, PKI_ERR_EXISTS, "%s: already exists; not overwriting it", path);
            else
                st = pki_fail(err, PKI_ERR_IO, "%s: %s", path, strerror(errno));
            goto out;
        }
        /* The new name exists now; the temporary one is only a second link. */
        if (unlink(tmp) != 0) {
            st = pki_fail(err, PKI_ERR_IO, "%s: unlink: %s", tmp, strerror(errno));
            tmp_exists = false;
            (void)unlink(path);
            goto out;
        }
        tmp_exists = false;
    } else {
        if (rename(tmp, path) != 0) {
            st = pki_fail(err, PKI_ERR_IO, "%s: rename: %s", path, strerror(errno));
            goto out;
        }
        tmp_exists = false;
    }
    st = fsync_dir(dir, err);
out:
    if (fd >= 0)
        (void)close(fd); /* already failing; the first error is the one reported */
    if (tmp_exists)
        (void)unlink(tmp);
    free(dir);
    free(tmp);
    return st;
}
