/*
 * devices.c — moat-bench's publishers as real devices (--devices DIR).
 *
 * A moat hub only stores what a device publishes to its own topics, and it
 * knows a device by the exact certificate it presents; the client id must be
 * the device id. So to load the hub's telemetry ingest, each publisher needs
 * its own certificate and key. `moatctl device add --out DIR` writes them as
 * DIR/ID.crt and DIR/ID.key (and the hub's DIR/ca.crt); this file finds the
 * first N devices in name order, so that repeated runs use the same ones,
 * and gives each its own SSL_CTX (a context holds one certificate and key).
 * Publisher i then connects as device i.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

/* A device id that is safe as a client id and as one topic level: letters,
 * digits, '-' and '_' (moatctl's ids are lower-case base32). */
static bool id_ok(const char *s, size_t len)
{
    if (len == 0 || len > BENCH_MAX_DEVICE_ID)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ok)
            return false;
    }
    return true;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const bench_device *)a)->id, ((const bench_device *)b)->id);
}

static bool path_of(char *out, size_t len, const char *dir, const char *id, const char *ext)
{
    int n = snprintf(out, len, "%s/%s%s", dir, id, ext);
    return n > 0 && (size_t)n < len;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Every ID with both ID.crt and ID.key in dir (not the CA), unsorted. */
static bool list_devices(const char *dir, bench_device **out, size_t *count)
{
    bool ok = false;
    size_t n = 0, cap = 0;
    bench_device *list = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "moat-bench: --devices %s: %s\n", dir, strerror(errno));
        return false;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".crt") != 0)
            continue;
        len -= 4;
        if (!id_ok(e->d_name, len) || (len == 2 && !memcmp(e->d_name, "ca", 2)))
            continue;
        char id[BENCH_MAX_DEVICE_ID + 1], key[4096];
        memcpy(id, e->d_name, len);
        id[len] = '\0';
        if (!path_of(key, sizeof(key), dir, id, ".key") || !is_file(key))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            bench_device *grown = realloc(list, ncap * sizeof(*list));
            if (!grown) {
                fprintf(stderr, "moat-bench: out of memory\n");
                goto out;
            }
            list = grown;
            cap = ncap;
        }
        memset(&list[n], 0, sizeof(list[n]));
        memcpy(list[n].id, id, len + 1);
        n++;
    }
    ok = true;
out:
    closedir(d);
    if (!ok) {
        free(list);
        return false;
    }
    *out = list;
    *count = n;
    return true;
}

bool devices_load(bench *b, uint32_t n)
{
    const char *dir = b->o.devices_dir;
    bench_device *list = NULL;
    size_t found = 0;
    if (!list_devices(dir, &list, &found))
        return false;
    if (found < n) {
        fprintf(stderr,
                "moat-bench: --devices %s: %u publishers need %u devices, found %zu "
                "(ID.crt with ID.key; moatctl device add --out %s)\n",
                dir, (unsigned)n, (unsigned)n, found, dir);
        free(list);
        return false;
    }
    qsort(list, found, sizeof(*list), by_id);
    b->devices = list;
    b->ndevices = n; /* the rest are never used */
    for (size_t i = 0; i < n; i++) {
        char cert[4096], key[4096];
        if (!path_of(cert, sizeof(cert), dir, list[i].id, ".crt") ||
            !path_of(key, sizeof(key), dir, list[i].id, ".key")) {
            fprintf(stderr, "moat-bench: --devices %s: path too long\n", dir);
            return false;
        }
        list[i].ctx = bench_client_ctx(&b->o, cert, key);
        if (!list[i].ctx)
            return false;
    }
    return true;
}

void devices_free(bench *b)
{
    for (size_t i = 0; i < b->ndevices; i++)
        SSL_CTX_free(b->devices[i].ctx);
    free(b->devices);
    b->devices = NULL;
    b->ndevices = 0;
}
