/*
 * key.c — the audit key: derived from the 32 bytes of DATA_DIR/audit.key
 * with libsodium's crypto_kdf (BLAKE2b) under a context of its own
 * ("moataudt", subkey 1), so that the MAC key is bound to its one use even
 * if the file's bytes were ever reused for something else.
 *
 * The key file is read with a bounded read of exactly 32 bytes; a file of
 * any other size is refused rather than hashed, because a truncated or
 * replaced key file would otherwise silently start a different chain.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

#define AUDIT_KDF_CONTEXT "moataudt" /* crypto_kdf_CONTEXTBYTES = 8 */
#define AUDIT_KDF_ID      1u

/* "path: why" into err. */
static void say(char *err, size_t errlen, const char *path, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", path, why);
}

audit_status audit_key_from_bytes(const uint8_t bytes[32], audit_key **out)
{
    *out = NULL;
    if (sodium_init() < 0)
        return AUDIT_KEY;
    audit_key *key = sodium_malloc(sizeof *key);
    if (!key)
        return AUDIT_NOMEM;
    if (crypto_kdf_derive_from_key(key->k, sizeof key->k, AUDIT_KDF_ID, AUDIT_KDF_CONTEXT, bytes) !=
        0) {
        sodium_free(key);
        return AUDIT_KEY;
    }
    *out = key;
    return AUDIT_OK;
}

audit_status audit_key_load(const char *path, audit_key **out, char *err, size_t errlen)
{
    *out = NULL;
    uint8_t bytes[crypto_kdf_KEYBYTES];
    audit_status st = AUDIT_KEY;
    size_t have = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        say(err, errlen, path, strerror(errno));
        return AUDIT_KEY;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size != (off_t)sizeof bytes) {
        say(err, errlen, path, "not a 32-byte key file");
        goto out;
    }
    while (have < sizeof bytes) {
        ssize_t n = read(fd, bytes + have, sizeof bytes - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            say(err, errlen, path, n < 0 ? strerror(errno) : "short read");
            goto out;
        }
        have += (size_t)n;
    }
    st = audit_key_from_bytes(bytes, out);
    if (st != AUDIT_OK)
        say(err, errlen, path, "cannot derive the audit key");
out:
    sodium_memzero(bytes, sizeof bytes);
    (void)close(fd); /* read-only descriptor: nothing to lose */
    return st;
}

void audit_key_free(audit_key *key)
{
    if (key)
        sodium_free(key); /* wipes before unmapping */
}
