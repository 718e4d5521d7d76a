/*
 * tstore_load.c — moat-tstore-load: write readings into a data directory's
 * telemetry store without a hub, for tests and for measuring the store.
 *
 *   moat-tstore-load --dir DIR [--batch N] < readings.tsv
 *       one reading per line, tab-separated:
 *       DEVICE  STREAM  RECEIVED_MS  DEVICE_TIME_MS|-  SEQ|-  PAYLOAD_HEX
 *       prints "stored N duplicates D".
 *   moat-tstore-load --dir DIR --generate N [--devices D] [--size B] [--batch N]
 *                    [--first-seq S | --no-seq]
 *       N synthetic readings (D devices, B-byte payloads, sequence numbers
 *       from S, default 1, or none), then the rate.
 *
 * It goes through the same library and the same group commit as the hub
 * (one transaction per batch), so what it measures is what the hub pays.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tstore_sqlite.h"

static int usage(void)
{
    fprintf(stderr, "usage: moat-tstore-load --dir DIR [--batch N] < readings.tsv\n"
                    "       moat-tstore-load --dir DIR --generate N [--devices D] [--size B] "
                    "[--batch N] [--first-seq S | --no-seq]\n");
    return 2;
}

/* A decimal number in [0, max]; false on anything else. */
static bool number(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Split line (no newline) at tabs into exactly n fields. */
static bool split(char *line, char **f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        f[i] = line;
        char *tab = strchr(line, '\t');
        if (i + 1 < n) {
            if (!tab)
                return false;
            *tab = '\0';
            line = tab + 1;
        } else if (tab) {
            return false;
        }
    }
    return true;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct loader {
    tstore *ts;
    uint64_t batch, in_batch, stored, dups;
} loader;

static bool put(loader *l, const tstore_reading *r)
{
    if (l->in_batch == 0 && tstore_begin(l->ts) != TSTORE_OK)
        return false;
    tstore_status st = tstore_append(l->ts, r);
    if (st == TSTORE_DUPLICATE)
        l->dups++;
    else if (st == TSTORE_OK)
        l->stored++;
    else
        return false;
    if (++l->in_batch == l->batch) {
        l->in_batch = 0;
        return tstore_commit(l->ts) == TSTORE_OK;
    }
    return true;
}

static bool finish(loader *l)
{
    if (l->in_batch == 0)
        return true;
    l->in_batch = 0;
    return tstore_commit(l->ts) == TSTORE_OK;
}

static int from_stdin(loader *l)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint8_t *payload = NULL;
    unsigned long lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        char *f[6];
        uint64_t rx, dt = 0, seq = 0;
        tstore_reading r;
        memset(&r, 0, sizeof r);
        if (!split(line, f, 6) || !number(f[2], INT64_MAX, &rx) ||
            (strcmp(f[3], "-") != 0 && !number(f[3], INT64_MAX, &dt)) ||
            (strcmp(f[4], "-") != 0 && !number(f[4], UINT64_MAX, &seq)) || strlen(f[5]) % 2) {
            fprintf(stderr, "moat-tstore-load: line %lu: malformed\n", lineno);
            rc = 1;
            break;
        }
        size_t plen = strlen(f[5]) / 2;
        uint8_t *p = realloc(payload, plen ? plen : 1);
        if (!p) {
            rc = 1;
            break;
        }
        payload = p;
        bool ok = true;
        for (size_t i = 0; i < plen && ok; i++) {
            int hi = hexval(f[5][2 * i]), lo = hexval(f[5][2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            payload[i] = (uint8_t)(hi << 4 | lo);
        }
        if (!ok) {
            fprintf(stderr, "moat-tstore-load: line %lu: payload is not hex\n", lineno);
            rc = 1;
            break;
        }
        r.device = f[0];
        r.stream = (codec_bytes){(const uint8_t *)f[1], strlen(f[1])};
        r.payload = (codec_bytes){payload, plen};
        r.received_ms = (int64_t)rx;
        r.has_device_time = strcmp(f[3], "-") != 0;
        r.device_time_ms = (int64_t)dt;
        r.has_seq = strcmp(f[4], "-") != 0;
        r.seq = seq;
        if (!put(l, &r)) {
            fprintf(stderr, "moat-tstore-load: line %lu: %s\n", lineno, tstore_error(l->ts));
            rc = 1;
            break;
        }
    }
    if (rc == 0 && !finish(l)) {
        fprintf(stderr, "moat-tstore-load: %s\n", tstore_error(l->ts));
        rc = 1;
    }
    if (rc == 0)
        printf("stored %llu duplicates %llu\n", (unsigned long long)l->stored,
               (unsigned long long)l->dups);
    free(line);
    free(payload);
    return rc;
}

static int generate(loader *l, uint64_t n, uint64_t devices, uint64_t size, uint64_t first)
{
    uint8_t *payload = malloc(size ? size : 1);
    char(*ids)[27] = calloc(devices, sizeof *ids);
    if (!payload || !ids) {
        free(payload);
        free(ids);
        return 1;
    }
    for (uint64_t d = 0; d < devices; d++)
        snprintf(ids[d], sizeof ids[d], "load%022llu", (unsigned long long)d);
    for (uint64_t i = 0; i < size; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    int64_t base = wall_ms();
    double t = now_s();
    int rc = 0;
    for (uint64_t i = 0; i < n; i++) {
        tstore_reading r = {.device = ids[i % devices],
                            .stream = {(const uint8_t *)"temperature", 11},
                            .payload = {payload, size},
                            .received_ms = base + (int64_t)i,
                            .has_seq = first != 0,
                            .seq = first + i / devices};
        if (!put(l, &r)) {
            rc = 1;
            break;
        }
    }
    if (rc == 0 && !finish(l))
        rc = 1;
    double dt = now_s() - t;
    if (rc != 0)
        fprintf(stderr, "moat-tstore-load: %s\n", tstore_error(l->ts));
    else
        printf("stored %llu readings (%llu devices, %llu-byte payloads, %llu per commit) in "
               "%.3f s: %.0f readings/s\n",
               (unsigned long long)l->stored, (unsigned long long)devices, (unsigned long long)size,
               (unsigned long long)l->batch, dt, dt > 0 ? (double)l->stored / dt : 0.0);
    free(payload);
    free(ids);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t batch = 100, gen = 0, devices = 100, size = 64, first = 1;
    bool generating = false;
    int i = 1;
    while (i < argc) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        int used = 2; /* the option and its value */
        if (strcmp(a, "--dir") == 0)
            dir = v;
        else if (strcmp(a, "--batch") == 0)
            ok = number(v, 1000000, &batch) && batch > 0;
        else if (strcmp(a, "--generate") == 0)
            ok = generating = number(v, UINT64_MAX, &gen);
        else if (strcmp(a, "--devices") == 0)
            ok = number(v, 1000000, &devices) && devices > 0;
        else if (strcmp(a, "--first-seq") == 0)
            ok = number(v, UINT64_MAX / 2, &first) && first > 0;
        else if (strcmp(a, "--size") == 0)
            ok = number(v, TSTORE_PAYLOAD_MAX, &size);
        else if (strcmp(a, "--no-seq") == 0) {
            first = 0;
            ok = true;
            used = 1;
        } else
            ok = false;
        if (!ok)
            return usage();
        i += used;
    }
    if (!dir)
        return usage();
    char err[512];
    loader l = {.batch = batch};
    if (tstore_sqlite_open(dir, TSTORE_OPEN_CREATE, &l.ts, err, sizeof err) != TSTORE_OK) {
        fprintf(stderr, "moat-tstore-load: %s\n", err);
        return 1;
    }
    int rc = generating ? generate(&l, gen, devices, size, first) : from_stdin(&l);
    tstore_close(l.ts);
    if (fflush(stdout) != 0)
        rc = 1;
    return rc;
}
