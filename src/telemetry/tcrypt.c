/*
 * tcrypt.c — keys, index hashes and sealed records of the telemetry store
 * (see tcrypt.h for the hierarchy). Everything here is libsodium: BLAKE2b
 * for key derivation and keyed hashes, XChaCha20-Poly1305 (IETF) for the
 * AEAD, whose 192-bit nonces can be drawn at random for every seal without
 * a counter that would have to survive crashes and rollbacks.
 *
 * The record and AD layouts are fixed big-endian byte strings with a domain
 * string naming the table and column first, so a value sealed for one place
 * never opens in another, and a version to change them later.
 */
#include "tcrypt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reader.h"

struct tcrypt_master {
    uint8_t key[TCRYPT_KEY_LEN];
};

/* crypto_kdf contexts are exactly 8 characters. */
static const char KDF_WRAP[crypto_kdf_CONTEXTBYTES + 1] = "moatwrap";
static const char KDF_DATA[crypto_kdf_CONTEXTBYTES + 1] = "moattsto";
enum { SUB_AEAD = 1, SUB_DEVICE = 2, SUB_STREAM = 3, SUB_DEDUPE = 4 };

static const char CHECK_TEXT[] = "moat master key check v1";
static const char AD_ROW[] = "moat.tstore.v1 readings.ct";
static const char AD_DEVICE[] = "moat.tstore.v1 devices.id_ct";
static const char AD_WRAP[] = "moat.tstore.v1 data_keys.wrapped";

enum { RECORD_VERSION = 1, FLAG_DEVICE_TIME = 1, FLAG_SEQ = 2 };
#define RECORD_HEAD 20u /* version, flags, device time, seq, stream length */

bool tcrypt_init(void)
{
    return sodium_init() >= 0;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* "what: why" into err, the form of every message here. */
static void fail(char *err, size_t errlen, const char *what, const char *why)
{
    if (err && errlen)
        (void)snprintf(err, errlen, "%s: %s", what, why);
}

/* ---- the master key -------------------------------------------------- */

static tcrypt_master *master_alloc(void)
{
    return sodium_malloc(sizeof(tcrypt_master));
}

void tcrypt_master_free(tcrypt_master *m)
{
    if (m)
        sodium_free(m); /* wipes */
}

tstore_status tcrypt_master_new(tcrypt_master **out)
{
    *out = NULL;
    if (!tcrypt_init())
        return TSTORE_IO;
    tcrypt_master *m = master_alloc();
    if (!m)
        return TSTORE_NOMEM;
    randombytes_buf(m->key, sizeof m->key);
    *out = m;
    return TSTORE_OK;
}

tstore_status tcrypt_master_load(const char *path, tcrypt_master **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!tcrypt_init()) {
        fail(err, errlen, "libsodium", "cannot be initialised");
        return TSTORE_IO;
    }
    tstore_status st = TSTORE_OK;
    tcrypt_master *m = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        fail(err, errlen, path, strerror(errno));
        return errno == ENOENT || errno == EACCES || errno == ELOOP ? TSTORE_KEY : TSTORE_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        fail(err, errlen, path, strerror(errno));
        st = TSTORE_IO;
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        fail(err, errlen, path, "not a regular file");
        st = TSTORE_KEY;
        goto out;
    }
    if (sb.st_mode & 077) {
        /* Like ssh with a private key: a key others could read is refused,
         * so the mistake is fixed instead of silently kept. */
        fail(err, errlen, path, "readable by group or others; chmod 600 it");
        st = TSTORE_KEY;
        goto out;
    }
    if (sb.st_size != TCRYPT_KEY_LEN) {
        fail(err, errlen, path, "must hold exactly 32 bytes (damaged master key?)");
        st = TSTORE_KEY;
        goto out;
    }
    if (!(m = master_alloc())) {
        st = TSTORE_NOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < TCRYPT_KEY_LEN) {
        ssize_t n = read(fd, m->key + got, TCRYPT_KEY_LEN - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fail(err, errlen, path, n < 0 ? strerror(errno) : "file shrank while read");
            st = TSTORE_IO;
            goto out;
        }
        got += (size_t)n;
    }
    *out = m;
    m = NULL;
out:
    tcrypt_master_free(m);
    (void)close(fd);
    return st;
}

tstore_status tcrypt_sync_dir(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir) {
        fail(err, errlen, path, "path too long");
        return TSTORE_INVALID;
    }
    if (!slash)
        memcpy(dir, ".", 2);
    else if (n == 0)
        memcpy(dir, "/", 2);
    else {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        fail(err, errlen, dir, strerror(errno));
        if (fd >= 0)
            (void)close(fd);
        return TSTORE_IO;
    }
    return close(fd) == 0 ? TSTORE_OK : TSTORE_IO;
}

tstore_status tcrypt_master_write(const tcrypt_master *m, const char *path, char *err,
                                  size_t errlen)
{
    char tmp[4096 + 32];
    uint8_t rnd[6];
    randombytes_buf(rnd, sizeof rnd);
    int n = snprintf(tmp, sizeof tmp, "%s.tmp%02x%02x%02x%02x%02x%02x", path, rnd[0], rnd[1],
                     rnd[2], rnd[3], rnd[4], rnd[5]);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fail(err, errlen, path, "path too long");
        return TSTORE_INVALID;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        fail(err, errlen, tmp, strerror(errno));
        return TSTORE_IO;
    }
    tstore_status st = TSTORE_OK;
    size_t done = 0;
    if (fchmod(fd, 0600) != 0)
        st = TSTORE_IO;
    while (st == TSTORE_OK && done < TCRYPT_KEY_LEN) {
        ssize_t w = write(fd, m->key + done, TCRYPT_KEY_LEN - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            st = TSTORE_IO;
        else
            done += (size_t)w;
    }
    if (st == TSTORE_OK && fsync(fd) != 0)
        st = TSTORE_IO;
    if (close(fd) != 0 && st == TSTORE_OK)
        st = TSTORE_IO;
    if (st == TSTORE_OK && rename(tmp, path) != 0)
        st = TSTORE_IO;
    if (st != TSTORE_OK) {
        fail(err, errlen, path, errno ? strerror(errno) : "write failed");
        (void)unlink(tmp);
        return st;
    }
    return tcrypt_sync_dir(path, err, errlen);
}

void tcrypt_master_check(const tcrypt_master *m, uint8_t out[TCRYPT_CHECK_LEN])
{
    crypto_generichash(out, TCRYPT_CHECK_LEN, (const uint8_t *)CHECK_TEXT, sizeof CHECK_TEXT - 1,
                       m->key, sizeof m->key);
}

static size_t wrap_ad(int64_t key_id, uint8_t ad[TCRYPT_AD_MAX])
{
    memcpy(ad, AD_WRAP, sizeof AD_WRAP); /* with its NUL: ends the domain */
    put64(ad + sizeof AD_WRAP, (uint64_t)key_id);
    return sizeof AD_WRAP + 8;
}

void tcrypt_wrap(const tcrypt_master *m, int64_t key_id, const uint8_t raw[TCRYPT_KEY_LEN],
                 uint8_t out[TCRYPT_WRAPPED_LEN])
{
    uint8_t wk[TCRYPT_KEY_LEN], ad[TCRYPT_AD_MAX];
    crypto_kdf_derive_from_key(wk, sizeof wk, 1, KDF_WRAP, m->key);
    size_t adlen = wrap_ad(key_id, ad);
    randombytes_buf(out, TCRYPT_NONCE_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + TCRYPT_NONCE_LEN, NULL, raw, TCRYPT_KEY_LEN,
                                               ad, adlen, NULL, out, wk);
    sodium_memzero(wk, sizeof wk);
}

bool tcrypt_unwrap(const tcrypt_master *m, int64_t key_id, const uint8_t in[TCRYPT_WRAPPED_LEN],
                   uint8_t raw[TCRYPT_KEY_LEN])
{
    uint8_t wk[TCRYPT_KEY_LEN], ad[TCRYPT_AD_MAX];
    crypto_kdf_derive_from_key(wk, sizeof wk, 1, KDF_WRAP, m->key);
    size_t adlen = wrap_ad(key_id, ad);
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(raw, NULL, NULL, in + TCRYPT_NONCE_LEN,
                                                        TCRYPT_WRAPPED_LEN - TCRYPT_NONCE_LEN, ad,
                                                        adlen, in, wk);
    sodium_memzero(wk, sizeof wk);
    if (rc != 0)
        sodium_memzero(raw, TCRYPT_KEY_LEN);
    return rc == 0;
}

/* ---- data keys -------------------------------------------------------- */

uint8_t *tcrypt_raw_new(void)
{
    if (!tcrypt_init())
        return NULL;
    uint8_t *raw = sodium_malloc(TCRYPT_KEY_LEN);
    if (raw)
        randombytes_buf(raw, TCRYPT_KEY_LEN);
    return raw;
}

void tcrypt_raw_free(uint8_t *raw)
{
    if (raw)
        sodium_free(raw);
}

tcrypt_datakey *tcrypt_datakey_derive(int64_t id, const uint8_t raw[TCRYPT_KEY_LEN])
{
    if (!tcrypt_init())
        return NULL;
    tcrypt_datakey *k = sodium_malloc(sizeof *k);
    if (!k)
        return NULL;
    k->id = id;
    crypto_kdf_derive_from_key(k->aead, sizeof k->aead, SUB_AEAD, KDF_DATA, raw);
    crypto_kdf_derive_from_key(k->device, sizeof k->device, SUB_DEVICE, KDF_DATA, raw);
    crypto_kdf_derive_from_key(k->stream, sizeof k->stream, SUB_STREAM, KDF_DATA, raw);
    crypto_kdf_derive_from_key(k->dedupe, sizeof k->dedupe, SUB_DEDUPE, KDF_DATA, raw);
    return k;
}

void tcrypt_datakey_free(tcrypt_datakey *k)
{
    if (k)
        sodium_free(k);
}

void tcrypt_device_hash(const tcrypt_datakey *k, const char *device,
                        uint8_t out[TCRYPT_DEVICE_HASH_LEN])
{
    crypto_generichash(out, TCRYPT_DEVICE_HASH_LEN, (const uint8_t *)device, strlen(device),
                       k->device, sizeof k->device);
}

/* The device id goes in with its length first, so (device, stream) pairs
 * cannot run into each other. */
static void hash_device_prefix(crypto_generichash_state *h, const char *device)
{
    uint8_t n = (uint8_t)strlen(device); /* <= TSTORE_DEVICE_MAX, checked by callers */
    crypto_generichash_update(h, &n, 1);
    crypto_generichash_update(h, (const uint8_t *)device, n);
}

void tcrypt_stream_hash(const tcrypt_datakey *k, const char *device, codec_bytes stream,
                        uint8_t out[TCRYPT_STREAM_HASH_LEN])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, k->stream, sizeof k->stream, TCRYPT_STREAM_HASH_LEN);
    hash_device_prefix(&h, device);
    crypto_generichash_update(&h, stream.ptr, stream.len);
    crypto_generichash_final(&h, out, TCRYPT_STREAM_HASH_LEN);
}

void tcrypt_dedupe_tag(const tcrypt_datakey *k, const char *device, uint64_t seq,
                       uint8_t out[TCRYPT_DEDUPE_LEN])
{
    uint8_t s[8];
    put64(s, seq);
    crypto_generichash_state h;
    crypto_generichash_init(&h, k->dedupe, sizeof k->dedupe, TCRYPT_DEDUPE_LEN);
    hash_device_prefix(&h, device);
    crypto_generichash_update(&h, s, sizeof s);
    crypto_generichash_final(&h, out, TCRYPT_DEDUPE_LEN);
}

void tcrypt_seal(const tcrypt_datakey *k, const uint8_t *ad, size_t adlen, const uint8_t *pt,
                 size_t len, uint8_t *out)
{
    randombytes_buf(out, TCRYPT_NONCE_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + TCRYPT_NONCE_LEN, NULL, pt, len, ad, adlen,
                                               NULL, out, k->aead);
}

bool tcrypt_open(const tcrypt_datakey *k, const uint8_t *ad, size_t adlen, const uint8_t *in,
                 size_t len, uint8_t *out)
{
    if (len < TCRYPT_SEAL_OVERHEAD)
        return false;
    return crypto_aead_xchacha20poly1305_ietf_decrypt(out, NULL, NULL, in + TCRYPT_NONCE_LEN,
                                                      len - TCRYPT_NONCE_LEN, ad, adlen, in,
                                                      k->aead) == 0;
}

/* ---- layouts ---------------------------------------------------------- */

size_t tcrypt_row_ad(const tcrypt_row *row, uint8_t ad[TCRYPT_AD_MAX])
{
    size_t n = 0;
    size_t dlen = strlen(row->device);
    memcpy(ad, AD_ROW, sizeof AD_ROW);
    n += sizeof AD_ROW;
    put64(ad + n, (uint64_t)row->id);
    put64(ad + n + 8, (uint64_t)row->key_id);
    put64(ad + n + 16, (uint64_t)row->received_ms);
    n += 24;
    memcpy(ad + n, row->stream_hash, TCRYPT_STREAM_HASH_LEN);
    n += TCRYPT_STREAM_HASH_LEN;
    ad[n++] = row->dedupe ? 1 : 0;
    if (row->dedupe) {
        memcpy(ad + n, row->dedupe, TCRYPT_DEDUPE_LEN);
        n += TCRYPT_DEDUPE_LEN;
    }
    ad[n++] = (uint8_t)dlen;
    memcpy(ad + n, row->device, dlen);
    return n + dlen;
}

size_t tcrypt_device_ad(int64_t key_id, const uint8_t hash[TCRYPT_DEVICE_HASH_LEN],
                        uint8_t ad[TCRYPT_AD_MAX])
{
    memcpy(ad, AD_DEVICE, sizeof AD_DEVICE);
    put64(ad + sizeof AD_DEVICE, (uint64_t)key_id);
    memcpy(ad + sizeof AD_DEVICE + 8, hash, TCRYPT_DEVICE_HASH_LEN);
    return sizeof AD_DEVICE + 8 + TCRYPT_DEVICE_HASH_LEN;
}

size_t tcrypt_record_len(const tstore_reading *r)
{
    return RECORD_HEAD + r->stream.len + r->payload.len;
}

void tcrypt_record_encode(const tstore_reading *r, uint8_t *out)
{
    out[0] = RECORD_VERSION;
    out[1] = (uint8_t)((r->has_device_time ? FLAG_DEVICE_TIME : 0) | (r->has_seq ? FLAG_SEQ : 0));
    put64(out + 2, r->has_device_time ? (uint64_t)r->device_time_ms : 0);
    put64(out + 10, r->has_seq ? r->seq : 0);
    out[18] = (uint8_t)(r->stream.len >> 8);
    out[19] = (uint8_t)r->stream.len;
    memcpy(out + RECORD_HEAD, r->stream.ptr, r->stream.len);
    if (r->payload.len)
        memcpy(out + RECORD_HEAD + r->stream.len, r->payload.ptr, r->payload.len);
}

static uint64_t rd_u64(rd *r)
{
    uint64_t hi = rd_u32(r);
    return (hi << 32) | rd_u32(r);
}

bool tcrypt_record_decode(const uint8_t *buf, size_t len, tstore_reading *r)
{
    rd in = rd_init(buf, len);
    uint8_t version = rd_u8(&in);
    uint8_t flags = rd_u8(&in);
    uint64_t dt = rd_u64(&in);
    uint64_t seq = rd_u64(&in);
    uint16_t slen = rd_u16(&in);
    codec_bytes stream = rd_bytes(&in, slen);
    codec_bytes payload = rd_rest(&in);
    if (in.failed || version != RECORD_VERSION || (flags & ~(FLAG_DEVICE_TIME | FLAG_SEQ)) ||
        slen == 0 || slen > TSTORE_STREAM_MAX || payload.len > TSTORE_PAYLOAD_MAX ||
        (!(flags & FLAG_DEVICE_TIME) && dt != 0) || (!(flags & FLAG_SEQ) && seq != 0))
        return false;
    r->stream = stream;
    r->payload = payload;
    r->has_device_time = flags & FLAG_DEVICE_TIME;
    r->device_time_ms = (int64_t)dt;
    r->has_seq = flags & FLAG_SEQ;
    r->seq = seq;
    return true;
}
