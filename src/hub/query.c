/*
 * query.c — service-facing telemetry queries (query.h).
 *
 * Requests are judged on the telemetry writer's thread, not on an event
 * loop: parsing, the policy check (built from that thread's registry
 * connection by the rules the broker uses, policies.h) and the store read,
 * so a slow disk or a large page never holds up a worker.
 *
 * Access: the broker already refused the PUBLISH unless the service may
 * publish QUERY_TOPIC (and devices are refused before they get here). Each
 * reading is then only given to a service that may receive its topic
 * moat/{device}/up/{stream} — what it could have subscribed to live. A
 * request for one stream it may not receive, or a page whose readings it
 * may receive none of, is answered "forbidden".
 */
#include "query.h"

#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policies.h"
#include "query_parse.h"
#include "registry.h"

typedef struct job {
    unsigned worker;
    broker_principal who;
    uint8_t *mem;
    codec_bytes client_id, response_topic, correlation, payload;
} job;

struct hub_query {
    query_answer_fn answer;
    void *answer_ctx;
    void (*wake)(void *ctx);
    void *wake_ctx;
    pthread_mutex_t mu;
    job *q[QUERY_QUEUE_MAX];
    size_t head, len;
    bool closed;
};

static void job_free(job *j)
{
    if (j) {
        free(j->mem);
        free(j);
    }
}

char *query_error_json(const char *code, const char *message)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* ---- one request ----------------------------------------------------------- */

typedef struct page_ctx {
    const policy_set *policies;
    const char *device;
    json_t *readings;
    size_t included, withheld;
    size_t bytes;
    bool nomem;
    char topic[16 + TSTORE_DEVICE_MAX + TSTORE_STREAM_MAX];
} page_ctx;

/* moat/{device}/up/{stream}: the topic a live subscriber would have seen. */
static bool reading_topic(page_ctx *p, codec_bytes stream, codec_bytes *out)
{
    int n = snprintf(p->topic, sizeof(p->topic), "moat/%s/up/", p->device);
    if (n < 0 || (size_t)n + stream.len > sizeof(p->topic))
        return false;
    memcpy(p->topic + n, stream.ptr, stream.len);
    *out = (codec_bytes){(const uint8_t *)p->topic, (size_t)n + stream.len};
    return true;
}

static json_t *base64(codec_bytes b)
{
    size_t cap = sodium_base64_encoded_len(b.len, sodium_base64_VARIANT_ORIGINAL);
    char *text = malloc(cap);
    if (!text)
        return NULL;
    sodium_bin2base64(text, cap, b.len ? b.ptr : (const uint8_t *)"", b.len,
                      sodium_base64_VARIANT_ORIGINAL);
    json_t *s = json_string(text);
    free(text);
    return s;
}

static int take_reading(void *ctx, const tstore_reading *r)
{
    page_ctx *p = ctx;
    codec_bytes topic;
    if (!reading_topic(p, r->stream, &topic) || !policy_may_receive(p->policies, topic)) {
        p->withheld++;
        return 0;
    }
    /* Bounded answers: stop before a reading that would pass the budget
     * (the cursor then points just before it), but always give one. */
    if (p->included > 0 && r->payload.len > QUERY_PAGE_BYTES - p->bytes)
        return 1;
    json_t *o = json_object();
    json_t *stream = json_stringn((const char *)r->stream.ptr, r->stream.len);
    json_t *payload = base64(r->payload);
    if (!o || !payload) {
        json_decref(o);
        json_decref(stream);
        json_decref(payload);
        p->nomem = true;
        return 1;
    }
    if (stream)
        json_object_set_new(o, "stream", stream);
    else /* not UTF-8 (an SDK record's stream is bytes) */
        json_object_set_new(o, "stream_base64", base64(r->stream));
    json_object_set_new(o, "received_ms", json_integer(r->received_ms));
    if (r->has_device_time)
        json_object_set_new(o, "device_time_ms", json_integer(r->device_time_ms));
    if (r->has_seq)
        json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
    json_object_set_new(o, "payload", payload);
    if (json_array_append_new(p->readings, o) != 0) {
        p->nomem = true;
        return 1;
    }
    p->included++;
    p->bytes += r->payload.len;
    return 0;
}

static char *serve(tstore *ts, registry *reg, const job *j)
{
    char *text = NULL;
    policy_set *policies = NULL;
    json_t *answer = NULL;
    json_t *req = NULL;
    tstore_query q;
    const char *bad = query_parse(j->payload.ptr, j->payload.len, &q, &req);
    if (bad) {
        text = query_error_json("bad_request", bad);
        goto out;
    }
    policies = hub_policies_for(reg, &j->who);
    page_ctx p = {.policies = policies, .device = q.device, .readings = json_array()};
    codec_bytes topic;
    if (!policies || (q.stream.len && (!reading_topic(&p, q.stream, &topic) ||
                                       !policy_may_receive(policies, topic)))) {
        json_decref(p.readings);
        text = query_error_json("forbidden", "your policies do not let you receive this "
                                             "device's readings");
        goto out;
    }
    tstore_page page;
    tstore_status st =
        p.readings ? tstore_query_page(ts, &q, take_reading, &p, &page) : TSTORE_NOMEM;
    if (p.nomem)
        st = TSTORE_NOMEM;
    if (st != TSTORE_OK && st != TSTORE_STOPPED) {
        log_msg(LOG_WARN, j->who.id, "telemetry query for %s failed: %s", q.device,
                tstore_error(ts));
        json_decref(p.readings);
        text = query_error_json("unavailable", "the telemetry store could not be read");
        goto out;
    }
    if (p.included == 0 && p.withheld > 0) {
        json_decref(p.readings);
        text = query_error_json("forbidden", "your policies do not let you receive this "
                                             "device's readings");
        goto out;
    }
    bool more = page.more || st == TSTORE_STOPPED;
    char cursor[QUERY_CURSOR_MAX];
    query_cursor_format(&page.next, cursor);
    answer = json_pack("{s:s, s:o, s:I, s:o}", "device", q.device, "readings", p.readings, "count",
                       (json_int_t)p.included, "next",
                       more && page.count > 0 ? json_string(cursor) : json_null());
    if (answer && q.stream.len)
        json_object_set_new(answer, "stream",
                            json_stringn((const char *)q.stream.ptr, q.stream.len));
    text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
out:
    json_decref(answer);
    json_decref(req);
    policy_set_free(policies);
    return text;
}

/* ---- the queue -------------------------------------------------------------- */

size_t query_serve(hub_query *hq, tstore *ts, registry *reg, size_t max)
{
    size_t left;
    for (size_t served = 0;; served++) {
        pthread_mutex_lock(&hq->mu);
        job *j = NULL;
        if (served < max && hq->len > 0) {
            j = hq->q[hq->head];
            hq->head = (hq->head + 1) % QUERY_QUEUE_MAX;
            hq->len--;
        }
        left = hq->len;
        pthread_mutex_unlock(&hq->mu);
        if (!j)
            break;
        char *text = serve(ts, reg, j);
        if (!text)
            text = query_error_json("unavailable", "out of memory");
        if (text)
            hq->answer(hq->answer_ctx, j->worker, j->client_id, j->response_topic, j->correlation,
                       (codec_bytes){(const uint8_t *)text, strlen(text)});
        free(text);
        job_free(j);
    }
    return left;
}

hub_query *query_new(query_answer_fn answer, void *ctx, void (*wake)(void *ctx), void *wake_ctx)
{
    hub_query *hq = calloc(1, sizeof(*hq));
    if (!hq)
        return NULL;
    if (pthread_mutex_init(&hq->mu, NULL) != 0) {
        free(hq);
        return NULL;
    }
    hq->answer = answer;
    hq->answer_ctx = ctx;
    hq->wake = wake;
    hq->wake_ctx = wake_ctx;
    return hq;
}

bool query_submit(hub_query *hq, const query_request *r)
{
    job *j = calloc(1, sizeof(*j));
    size_t total = r->client_id.len + r->response_topic.len + r->correlation.len + r->payload.len;
    if (!j || !(j->mem = malloc(total ? total : 1))) {
        free(j);
        return false;
    }
    j->worker = r->worker;
    j->who = *r->who;
    uint8_t *at = j->mem;
    const codec_bytes *src[] = {&r->client_id, &r->response_topic, &r->correlation, &r->payload};
    codec_bytes *dst[] = {&j->client_id, &j->response_topic, &j->correlation, &j->payload};
    for (size_t i = 0; i < 4; i++) {
        if (src[i]->len)
            memcpy(at, src[i]->ptr, src[i]->len);
        *dst[i] = (codec_bytes){at, src[i]->len};
        at += src[i]->len;
    }
    pthread_mutex_lock(&hq->mu);
    bool ok = !hq->closed && hq->len < QUERY_QUEUE_MAX;
    if (ok) {
        hq->q[(hq->head + hq->len) % QUERY_QUEUE_MAX] = j;
        hq->len++;
    }
    pthread_mutex_unlock(&hq->mu);
    if (!ok) {
        job_free(j);
        return false;
    }
    if (hq->wake)
        hq->wake(hq->wake_ctx);
    return true;
}

void query_close(hub_query *hq)
{
    if (!hq)
        return;
    pthread_mutex_lock(&hq->mu);
    hq->closed = true;
    pthread_mutex_unlock(&hq->mu);
}

void query_free(hub_query *hq)
{
    if (!hq)
        return;
    while (hq->len > 0) {
        job_free(hq->q[hq->head]);
        hq->head = (hq->head + 1) % QUERY_QUEUE_MAX;
        hq->len--;
    }
    pthread_mutex_destroy(&hq->mu);
    free(hq);
}
