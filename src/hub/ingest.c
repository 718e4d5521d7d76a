/*
 * ingest.c — the telemetry writer thread (ingest.h).
 */
#include "ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <moat/record.h>

#include "log.h"
#include "registry.h"
#include "store_split.h"
#include "tstore_registry.h"
#include "tstore_sqlite.h"

#define RETENTION_EVERY_MS 60000u
#define RETENTION_SLICE    2000u

struct hub_ingest {
    tstore *ts;
    registry *reg; /* retention policies (group settings) */
    relay_inbox inbox;
    relay_inbox *workers[STORE_SPLIT_MAX];
    unsigned nworkers;
    pthread_t thread;
    bool started;
    bool stop; /* under inbox.mu */
    uint64_t stored, duplicates, failed_commits;
    tstore_retention_run retention;
    uint64_t retention_at;
    hub_query *queries;
    void (*watch)(void *ctx, bool ok, const char *detail);
    void *watch_ctx;
    uint64_t failing_since; /* ms; 0 while commits work */
    uint64_t failed_logged_at, failed_unlogged;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool ingest_topic(codec_bytes topic, const char *device, codec_bytes *stream)
{
    size_t dlen = strlen(device);
    size_t head = 5 + dlen + 4; /* "moat/" device "/up/" */
    if (topic.len <= head || memcmp(topic.ptr, "moat/", 5) != 0 ||
        memcmp(topic.ptr + 5, device, dlen) != 0 || memcmp(topic.ptr + 5 + dlen, "/up/", 4) != 0)
        return false;
    *stream = (codec_bytes){topic.ptr + head, topic.len - head};
    return true;
}

unsigned ingest_check(const uint8_t *payload, size_t len)
{
    if (!moat_batch_is_envelope(payload, len))
        return 0;
    moat_batch_iter it;
    return moat_batch_decode(&it, payload, len, NULL, NULL) == MOAT_OK ? 0 : 0x99;
}

/* Store one forwarded PUBLISH: false when the store failed (the pass is lost). */
static bool store_item(hub_ingest *in, const broker_fwd *f, uint64_t received)
{
    char device[64];
    if (f->origin.len == 0 || f->origin.len >= sizeof(device))
        return true; /* not a device id: nothing to keep */
    memcpy(device, f->origin.ptr, f->origin.len);
    device[f->origin.len] = '\0';
    codec_bytes stream;
    if (!ingest_topic(f->topic, device, &stream))
        return true;
    tstore_reading r = {.device = device, .received_ms = (int64_t)received};
    tstore_status st;
    if (!moat_batch_is_envelope(f->payload.ptr, f->payload.len)) {
        r.stream = stream;
        r.payload = f->payload;
        st = tstore_append(in->ts, &r);
        if (st == TSTORE_DUPLICATE)
            in->duplicates++;
        else if (st == TSTORE_OK)
            in->stored++;
        else if (st == TSTORE_INVALID)
            log_msg(LOG_WARN, device, "telemetry: reading on '%.*s' not stored: %s",
                    (int)(stream.len > 64 ? 64 : stream.len), (const char *)stream.ptr,
                    tstore_error(in->ts));
        return st == TSTORE_OK || st == TSTORE_DUPLICATE || st == TSTORE_INVALID;
    }
    moat_batch_iter it;
    moat_reading m;
    moat_status ms = moat_batch_decode_first(&it, f->payload.ptr, f->payload.len, &m);
    for (; ms == MOAT_OK; ms = moat_batch_decode_next(&it, &m)) {
        r.stream = (codec_bytes){m.stream, m.stream_len};
        r.payload = (codec_bytes){m.payload, m.payload_len};
        r.has_seq = true;
        r.seq = m.seq;
        r.has_device_time = m.device_time_ms != 0;
        r.device_time_ms = (int64_t)m.device_time_ms;
        st = tstore_append(in->ts, &r);
        if (st == TSTORE_DUPLICATE)
            in->duplicates++;
        else if (st == TSTORE_OK)
            in->stored++;
        else if (st != TSTORE_INVALID)
            return false;
    }
    /* MOAT_ERR_STATE: the end, or a cover record. A malformed envelope was
     * refused before it was acknowledged (ingest_check). */
    return true;
}

static void answer(hub_ingest *in, relay_env *batch, bool ok)
{
    if (!batch->needs_ticket || batch->from >= in->nworkers)
        return;
    relay_env *t = relay_env_new(RELAY_TICKET, in->nworkers); /* from: not a worker */
    if (!t)
        return; /* the worker keeps holding; its publishers retry */
    t->pass = batch->pass;
    t->ok = ok;
    relay_post(in->workers[batch->from], t);
}

/* Loudly, but not once per retry: the first failure, then at most one line
 * every 10 s with the count, and one when commits work again. */
static void note_failure(hub_ingest *in, const char *detail)
{
    uint64_t now = wall_ms();
    if (!in->failing_since)
        in->failing_since = now;
    if (in->failed_logged_at && now - in->failed_logged_at < 10000) {
        in->failed_unlogged++;
    } else {
        log_msg(LOG_ERROR, NULL,
                "TELEMETRY STORE FAILED: %s; readings are not acknowledged (devices send them "
                "again) and the hub keeps relaying%s",
                detail, in->failed_unlogged ? " (and it failed again since the last line)" : "");
        in->failed_logged_at = now;
        in->failed_unlogged = 0;
    }
    if (in->watch)
        in->watch(in->watch_ctx, false, detail);
}

static void note_success(hub_ingest *in)
{
    if (in->failing_since) {
        log_msg(LOG_INFO, NULL, "telemetry store works again (it failed for %" PRIu64 " ms)",
                wall_ms() - in->failing_since);
        in->failing_since = 0;
        in->failed_logged_at = 0;
        in->failed_unlogged = 0;
    }
    if (in->watch)
        in->watch(in->watch_ctx, true, NULL);
}

static void take(hub_ingest *in, relay_env *all)
{
    uint64_t stored = in->stored, duplicates = in->duplicates;
    bool ok = tstore_begin(in->ts) == TSTORE_OK;
    for (relay_env *e = all; ok && e; e = e->next)
        for (size_t i = 0; ok && i < e->n; i++)
            ok = store_item(in, &e->items[i]->f, e->pass_time);
    if (ok && tstore_commit(in->ts) != TSTORE_OK)
        ok = false;
    if (!ok) {
        char detail[512];
        snprintf(detail, sizeof(detail), "telemetry store (%s): %s", TSTORE_SQLITE_FILE,
                 tstore_error(in->ts));
        tstore_rollback(in->ts);
        in->stored = stored; /* none of them was kept */
        in->duplicates = duplicates;
        in->failed_commits++;
        note_failure(in, detail);
    } else {
        note_success(in);
    }
    while (all) {
        relay_env *next = all->next;
        answer(in, all, ok);
        relay_env_free(all);
        all = next;
    }
}

static void retention_slice(hub_ingest *in)
{
    uint64_t now = wall_ms();
    if (in->retention.done || in->retention_at == 0) {
        if (now < in->retention_at)
            return;
        memset(&in->retention, 0, sizeof(in->retention));
        in->retention_at = now + RETENTION_EVERY_MS;
    }
    tstore_status st = tstore_apply_retention(in->ts, tstore_registry_policy, in->reg, (int64_t)now,
                                              RETENTION_SLICE, &in->retention);
    if (st != TSTORE_OK) {
        log_msg(LOG_ERROR, NULL, "telemetry retention: %s", tstore_error(in->ts));
        in->retention.done = true;
    } else if (in->retention.done && in->retention.deleted) {
        log_msg(LOG_INFO, NULL, "telemetry retention: %" PRIu64 " readings removed",
                in->retention.deleted);
    }
}

/* Queries answered per round: readings waiting to be stored go first. */
#define QUERIES_PER_ROUND 4u

static void *ingest_main(void *arg)
{
    hub_ingest *in = arg;
    size_t queries_left = 0;
    for (;;) {
        struct pollfd p = {.fd = in->inbox.efd, .events = POLLIN};
        bool busy = queries_left > 0 || (!in->retention.done && in->retention_at != 0);
        (void)poll(&p, 1, busy ? 0 : 1000);
        pthread_mutex_lock(&in->inbox.mu);
        bool stop = in->stop;
        pthread_mutex_unlock(&in->inbox.mu);
        relay_env *all = relay_take(&in->inbox);
        if (all)
            take(in, all);
        else if (stop)
            break;
        queries_left =
            in->queries ? query_serve(in->queries, in->ts, in->reg, QUERIES_PER_ROUND) : 0;
        if (!all && queries_left == 0)
            retention_slice(in);
    }
    return NULL;
}

void ingest_set_queries(hub_ingest *in, hub_query *q)
{
    in->queries = q;
}

void ingest_wake(void *ctx)
{
    hub_ingest *in = ctx;
    uint64_t one = 1;
    ssize_t w = write(in->inbox.efd, &one, sizeof(one));
    (void)w; /* EAGAIN: a wake-up is pending already */
}

hub_ingest *ingest_new(const char *data_dir, char *err, size_t errlen)
{
    hub_ingest *in = calloc(1, sizeof(*in));
    if (!in) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    in->inbox.efd = -1;
    char why[512];
    if (tstore_sqlite_open(data_dir, TSTORE_OPEN_CREATE, &in->ts, why, sizeof(why)) != TSTORE_OK) {
        snprintf(err, errlen, "telemetry store in %s: %s", data_dir, why);
        goto fail;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/registry.db", data_dir);
    if (registry_open(path, REGISTRY_OPEN_READONLY, &in->reg, why, sizeof(why)) != REGISTRY_OK) {
        snprintf(err, errlen, "registry %s: %s", path, why);
        goto fail;
    }
    if (!relay_inbox_init(&in->inbox)) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    in->retention.done = true;
    in->retention_at = wall_ms() + 5000; /* first run soon after start */
    return in;
fail:
    ingest_free(in);
    return NULL;
}

relay_inbox *ingest_inbox(hub_ingest *in)
{
    return &in->inbox;
}

void ingest_set_workers(hub_ingest *in, relay_inbox *const *inboxes, unsigned n)
{
    in->nworkers = n < STORE_SPLIT_MAX ? n : STORE_SPLIT_MAX;
    for (unsigned k = 0; k < in->nworkers; k++)
        in->workers[k] = inboxes[k];
}

void ingest_set_watch(hub_ingest *in, void (*fn)(void *ctx, bool ok, const char *detail), void *ctx)
{
    in->watch = fn;
    in->watch_ctx = ctx;
}

bool ingest_start(hub_ingest *in)
{
    if (pthread_create(&in->thread, NULL, ingest_main, in) != 0)
        return false;
    in->started = true;
    return true;
}

void ingest_stop(hub_ingest *in)
{
    if (!in || !in->started)
        return;
    query_close(in->queries);
    pthread_mutex_lock(&in->inbox.mu);
    in->stop = true;
    pthread_mutex_unlock(&in->inbox.mu);
    uint64_t one = 1;
    ssize_t w = write(in->inbox.efd, &one, sizeof(one));
    (void)w;
    pthread_join(in->thread, NULL);
    in->started = false;
    log_msg(LOG_INFO, NULL,
            "telemetry: %" PRIu64 " readings stored, %" PRIu64 " duplicates dropped this run",
            in->stored, in->duplicates);
}

void ingest_free(hub_ingest *in)
{
    if (!in)
        return;
    ingest_stop(in);
    if (in->inbox.efd >= 0) {
        relay_env *e = relay_take(&in->inbox);
        while (e) {
            relay_env *next = e->next;
            relay_env_free(e);
            e = next;
        }
        relay_inbox_free(&in->inbox);
    }
    tstore_close(in->ts);
    if (in->reg)
        registry_close(in->reg);
    free(in);
}
