/*
 * webhook.c — the webhook sender (behaviour in webhook.h).
 *
 * Threading: callers only ever touch the queues, under w->lock. The thread
 * takes a delivery out of its queue (owning it) before it sends it without
 * the lock, and puts it back at the front if it must be retried, so a
 * caller that drops the oldest delivery of a full queue can never free the
 * one being sent. Everything the thread reads without the lock (URLs, key,
 * options) is fixed before the thread starts.
 *
 * Time: deadlines are on CLOCK_MONOTONIC (the condition variable is set to
 * it too), so a wall-clock step neither stalls nor floods retries; only the
 * signed timestamp and the bodies use the wall clock.
 */
#include "webhook.h"
#include "waiter.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#define URL_MAX 2048u

typedef struct delivery {
    char id[33];
    char event[16];
    char *body;
    size_t len;
    uint32_t attempts;
} delivery;

typedef struct target {
    char *url;
    char shown[160]; /* the URL for logs: scheme and host, no credentials */
    delivery **ring;
    size_t cap, head, len;
    int64_t next_ms; /* monotonic: not before */
    bool failing;
    CURL *curl; /* the thread's only */
} target;

struct webhook {
    uint8_t key[WEBHOOK_KEY_MAX];
    size_t key_len;
    char *hub_name, *heartbeat_url, *ca_file;
    char hb_shown[160];
    uint32_t heartbeat_ms, retry_base_ms, retry_max_ms, max_attempts, timeout_ms;
    void (*heartbeat_fill)(void *ctx, json_t *body);
    void *heartbeat_ctx;
    void (*log)(void *ctx, bool error, const char *msg);
    void *log_ctx;
    target targets[WEBHOOK_MAX_URLS];
    size_t ntargets;
    CURL *hb_curl;
    bool hb_failing;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stopping, sent_stopping;
    int64_t hard_deadline_ms;
    atomic_llong abort_at_ms; /* curl transfers give up after this (0: never) */
    int64_t next_heartbeat_ms;
    uint64_t heartbeat_seq;
    int64_t started_wall_ms;
    size_t rr; /* round-robin start among targets */
    webhook_stats stats;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- URLs ---------------------------------------------------------------- */

static bool url_ok(const char *url)
{
    if (!url)
        return false;
    size_t n = strlen(url);
    if (n >= URL_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return false;
    return (strncmp(url, "http://", 7) == 0 && n > 7) ||
           (strncmp(url, "https://", 8) == 0 && n > 8);
}

/* "https://user:pw@host:443/path?q" -> "https://host:443": never log secrets
 * that a URL may carry. */
static void url_shown(const char *url, char *buf, size_t len)
{
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    size_t hl = strcspn(host, "/?#");
    const char *at = memchr(host, '@', hl);
    if (at) {
        hl -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    int scheme = p ? (int)(p - url) : 0;
    snprintf(buf, len, "%.*s://%.*s", scheme, url, (int)(hl > 120 ? 120 : hl), host);
}

/* ---- the queues (under the lock) ------------------------------------------- */

static void delivery_free(delivery *d)
{
    if (d) {
        free(d->body);
        free(d);
    }
}

static delivery *ring_pop(target *t)
{
    if (t->len == 0)
        return NULL;
    delivery *d = t->ring[t->head];
    t->head = (t->head + 1) % t->cap;
    t->len--;
    return d;
}

/* Append d; a full queue loses its oldest first (returned for freeing). */
static delivery *ring_push_back(target *t, delivery *d)
{
    delivery *out = NULL;
    if (t->len == t->cap)
        out = ring_pop(t);
    t->ring[(t->head + t->len) % t->cap] = d;
    t->len++;
    return out;
}

/* Put d back in front (a retry); false if the queue filled meanwhile: d is
 * then the oldest and is the one to drop. */
static bool ring_push_front(target *t, delivery *d)
{
    if (t->len == t->cap)
        return false;
    t->head = (t->head + t->cap - 1) % t->cap;
    t->ring[t->head] = d;
    t->len++;
    return true;
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static void
say(webhook *w, bool error, const char *fmt, ...)
{
    if (!w->log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    w->log(w->log_ctx, error, msg);
}

/* ---- HTTP ------------------------------------------------------------------ */

static size_t discard(char *data, size_t size, size_t n, void *ctx)
{
    (void)data, (void)ctx;
    return size * n;
}

static int progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    webhook *w = ctx;
    (void)dt, (void)dn, (void)ut, (void)un;
    long long at = atomic_load(&w->abort_at_ms);
    return at != 0 && waiter_mono_ms() >= at; /* non-zero aborts the transfer */
}

static CURL *make_curl(webhook *w)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    long timeout = (long)w->timeout_ms;
    bool ok = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout < 5000 ? timeout : 5000L) ==
                  CURLE_OK &&
              /* A receiver cannot send the signed body elsewhere. */
              curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_XFERINFODATA, w) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_USERAGENT, "moatd-webhook/1") == CURLE_OK &&
              (!w->ca_file || curl_easy_setopt(c, CURLOPT_CAINFO, w->ca_file) == CURLE_OK);
    if (!ok) {
        curl_easy_cleanup(c);
        return NULL;
    }
    return c;
}

/* POST body to url, signed now. Returns true for a 2xx answer; why gets a
 * short reason otherwise. */
static bool post(webhook *w, CURL *c, const char *url, const char *event, const char *id,
                 const char *body, size_t len, char *why, size_t whylen)
{
    int64_t ts = waiter_wall_ms() / 1000;
    char sig[65], h_sig[96], h_ts[64], h_id[64], h_ev[64];
    webhook_sign(w->key, w->key_len, ts, body, len, sig);
    snprintf(h_sig, sizeof h_sig, "X-Moat-Signature: sha256=%s", sig);
    snprintf(h_ts, sizeof h_ts, "X-Moat-Timestamp: %lld", (long long)ts);
    snprintf(h_id, sizeof h_id, "X-Moat-Delivery: %s", id);
    snprintf(h_ev, sizeof h_ev, "X-Moat-Event: %s", event);
    const char *lines[] = {"Content-Type: application/json", "Expect:", h_sig, h_ts, h_id, h_ev};
    struct curl_slist *hdr = NULL;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        struct curl_slist *n = curl_slist_append(hdr, lines[i]);
        if (!n) {
            curl_slist_free_all(hdr);
            snprintf(why, whylen, "out of memory");
            return false;
        }
        hdr = n;
    }
    bool ok = false;
    CURLcode rc = curl_easy_setopt(c, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(c);
    long code = 0;
    if (rc == CURLE_OK && curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
        code >= 200 && code < 300)
        ok = true;
    else if (rc == CURLE_OK)
        snprintf(why, whylen, "HTTP status %ld", code);
    else
        snprintf(why, whylen, "%s", curl_easy_strerror(rc));
    /* The slist dies here: never leave the handle pointing at it. */
    (void)curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdr);
    return ok;
}

/* ---- the thread --------------------------------------------------------------- */

static int64_t backoff_ms(const webhook *w, uint32_t attempts)
{
    uint64_t d = w->retry_base_ms;
    for (uint32_t i = 1; i < attempts && d < w->retry_max_ms; i++)
        d *= 2;
    if (d > w->retry_max_ms)
        d = w->retry_max_ms;
    /* Jitter in [d/2, d]: receivers coming back are not hit by every hub
     * at the same instant. */
    uint64_t half = d / 2;
    return (int64_t)(half + randombytes_uniform((uint32_t)(d - half + 1)));
}

static void random_id(char out[33])
{
    uint8_t b[16];
    randombytes_buf(b, sizeof b);
    sodium_bin2hex(out, 33, b, sizeof b);
}

static void send_heartbeat(webhook *w, const char *status)
{
    webhook_stats s;
    pthread_mutex_lock(&w->lock);
    s = w->stats;
    uint64_t seq = ++w->heartbeat_seq;
    pthread_mutex_unlock(&w->lock);
    int64_t now = waiter_wall_ms();
    char when[32], id[33];
    alert_format_time(now, when);
    random_id(id);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}}", "type",
                             "heartbeat", "id", id, "status", status, "time", when, "time_ms",
                             (json_int_t)now, "seq", (json_int_t)seq, "uptime_s",
                             (json_int_t)((now - w->started_wall_ms) / 1000), "webhook", "queued",
                             (json_int_t)s.queued, "delivered", (json_int_t)s.delivered, "failed",
                             (json_int_t)s.failed, "dropped", (json_int_t)s.dropped);
    if (!body)
        return;
    if (w->hub_name)
        json_object_set_new(body, "hub", json_string(w->hub_name));
    if (w->heartbeat_fill)
        w->heartbeat_fill(w->heartbeat_ctx, body);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return;
    if (!w->hb_curl)
        w->hb_curl = make_curl(w);
    char why[256] = "no curl handle";
    bool ok = w->hb_curl && post(w, w->hb_curl, w->heartbeat_url, "heartbeat", id, text,
                                 strlen(text), why, sizeof why);
    free(text);
    pthread_mutex_lock(&w->lock);
    if (ok)
        w->stats.heartbeats++;
    else
        w->stats.heartbeats_failed++;
    pthread_mutex_unlock(&w->lock);
    if (!ok && !w->hb_failing)
        say(w, true, "heartbeat to %s failed: %s", w->hb_shown, why);
    else if (ok && w->hb_failing)
        say(w, false, "heartbeat to %s delivered again", w->hb_shown);
    w->hb_failing = !ok;
}

/* Deliver d (owned) to t; called without the lock, returns with it held. */
static void deliver(webhook *w, target *t, delivery *d)
{
    if (!t->curl)
        t->curl = make_curl(w);
    char why[256] = "no curl handle";
    d->attempts++;
    bool ok =
        t->curl && post(w, t->curl, t->url, d->event, d->id, d->body, d->len, why, sizeof why);
    bool log_fail = false, log_ok = false, gave_up = false;
    pthread_mutex_lock(&w->lock);
    w->stats.attempts++;
    if (ok) {
        w->stats.delivered++;
        t->next_ms = 0;
        log_ok = t->failing;
        t->failing = false;
        delivery_free(d);
    } else {
        log_fail = !t->failing;
        t->failing = true;
        t->next_ms = waiter_mono_ms() + backoff_ms(w, d->attempts);
        if (d->attempts >= w->max_attempts) {
            w->stats.failed++;
            gave_up = true;
            delivery_free(d);
        } else if (!ring_push_front(t, d)) {
            w->stats.dropped++; /* the queue filled while we sent: d is the oldest */
            delivery_free(d);
        }
    }
    pthread_mutex_unlock(&w->lock);
    if (log_fail)
        say(w, true, "webhook %s: delivery failed (%s); retrying with back-off", t->shown, why);
    if (gave_up)
        say(w, true, "webhook %s: a delivery was given up after its last attempt (%s)", t->shown,
            why);
    if (log_ok)
        say(w, false, "webhook %s: delivering again", t->shown);
    pthread_mutex_lock(&w->lock);
}

static target *due_target(webhook *w, int64_t now)
{
    for (size_t k = 0; k < w->ntargets; k++) {
        target *t = &w->targets[(w->rr + k) % w->ntargets];
        if (t->len > 0 && t->next_ms <= now) {
            w->rr = (w->rr + k + 1) % w->ntargets;
            return t;
        }
    }
    return NULL;
}

static bool queues_empty(const webhook *w)
{
    for (size_t i = 0; i < w->ntargets; i++)
        if (w->targets[i].len > 0)
            return false;
    return true;
}

static void wait_until(webhook *w, int64_t when)
{
    waiter_sleep(&w->lock, &w->cond, when);
}

static void *run(void *arg)
{
    webhook *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        int64_t now = waiter_mono_ms();
        if (w->stopping && w->heartbeat_url && !w->sent_stopping) {
            w->sent_stopping = true;
            pthread_mutex_unlock(&w->lock);
            send_heartbeat(w, "stopping");
            pthread_mutex_lock(&w->lock);
            continue;
        }
        if (w->stopping && (queues_empty(w) || now >= w->hard_deadline_ms))
            break;
        if (w->heartbeat_url && !w->stopping && now >= w->next_heartbeat_ms) {
            w->next_heartbeat_ms = now + w->heartbeat_ms;
            pthread_mutex_unlock(&w->lock);
            send_heartbeat(w, "alive");
            pthread_mutex_lock(&w->lock);
            continue;
        }
        target *t = due_target(w, now);
        if (t) {
            delivery *d = ring_pop(t);
            w->stats.queued--;
            pthread_mutex_unlock(&w->lock);
            deliver(w, t, d); /* returns with the lock held */
            continue;
        }
        int64_t wake = INT64_MAX;
        if (w->heartbeat_url && !w->stopping)
            wake = w->next_heartbeat_ms;
        for (size_t i = 0; i < w->ntargets; i++)
            if (w->targets[i].len > 0 && w->targets[i].next_ms < wake)
                wake = w->targets[i].next_ms;
        if (w->stopping && w->hard_deadline_ms < wake)
            wake = w->hard_deadline_ms;
        wait_until(w, wake);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- the caller's side ------------------------------------------------------------ */

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

static void destroy(webhook *w)
{
    for (size_t i = 0; i < w->ntargets; i++) {
        target *t = &w->targets[i];
        while (t->len > 0)
            delivery_free(ring_pop(t));
        free(t->ring);
        free(t->url);
        if (t->curl)
            curl_easy_cleanup(t->curl);
    }
    if (w->hb_curl)
        curl_easy_cleanup(w->hb_curl);
    free(w->hub_name);
    free(w->heartbeat_url);
    free(w->ca_file);
    sodium_memzero(w->key, sizeof w->key);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

monitor_status webhook_new(const webhook_config *cfg, webhook **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *bad = NULL;
    if (!cfg || (cfg->nurls > 0 && !cfg->urls))
        bad = "no configuration";
    else if (cfg->nurls > WEBHOOK_MAX_URLS)
        bad = "too many webhook URLs";
    else if (!cfg->key || cfg->key_len < WEBHOOK_KEY_MIN || cfg->key_len > WEBHOOK_KEY_MAX)
        bad = "the webhook key must be 16 to 256 bytes";
    else if (cfg->heartbeat_url && !url_ok(cfg->heartbeat_url))
        bad = "the heartbeat URL is not an http:// or https:// URL";
    for (size_t i = 0; !bad && i < cfg->nurls; i++)
        if (!url_ok(cfg->urls[i]))
            bad = "a webhook URL is not an http:// or https:// URL";
    if (bad) {
        if (err && errlen)
            snprintf(err, errlen, "%s", bad);
        return MONITOR_INVALID;
    }
    if (sodium_init() < 0 || (pthread_once(&curl_once, curl_init), curl_init_rc != CURLE_OK)) {
        if (err && errlen)
            snprintf(err, errlen, "libsodium or libcurl failed to initialise");
        return MONITOR_IO;
    }
    webhook *w = calloc(1, sizeof *w);
    if (!w)
        return MONITOR_NOMEM;
    bool ok = waiter_init(&w->lock, &w->cond);
    if (!ok) {
        free(w);
        return MONITOR_IO;
    }
    memcpy(w->key, cfg->key, cfg->key_len);
    w->key_len = cfg->key_len;
    w->hub_name = dup_or_null(cfg->hub_name, &ok);
    w->heartbeat_url = dup_or_null(cfg->heartbeat_url, &ok);
    w->ca_file = dup_or_null(cfg->ca_file, &ok);
    w->heartbeat_ms = (cfg->heartbeat_interval_s ? cfg->heartbeat_interval_s : 60) * 1000u;
    w->retry_base_ms = cfg->retry_base_ms ? cfg->retry_base_ms : 1000;
    w->retry_max_ms = cfg->retry_max_ms ? cfg->retry_max_ms : 300000;
    if (w->retry_max_ms < w->retry_base_ms)
        w->retry_max_ms = w->retry_base_ms;
    w->max_attempts = cfg->max_attempts ? cfg->max_attempts : 20;
    w->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
    w->heartbeat_fill = cfg->heartbeat_fill;
    w->heartbeat_ctx = cfg->heartbeat_ctx;
    w->log = cfg->log;
    w->log_ctx = cfg->log_ctx;
    if (w->heartbeat_url)
        url_shown(w->heartbeat_url, w->hb_shown, sizeof w->hb_shown);
    size_t qmax = cfg->queue_max ? cfg->queue_max : 1000;
    for (size_t i = 0; ok && i < cfg->nurls; i++) {
        target *t = &w->targets[i];
        t->url = strdup(cfg->urls[i]);
        t->ring = calloc(qmax, sizeof *t->ring);
        t->cap = qmax;
        w->ntargets++;
        ok = t->url && t->ring;
        if (ok)
            url_shown(t->url, t->shown, sizeof t->shown);
    }
    w->started_wall_ms = waiter_wall_ms();
    w->next_heartbeat_ms = waiter_mono_ms(); /* the first one at once: "I am up" */
    atomic_init(&w->abort_at_ms, 0);
    if (!ok) {
        destroy(w);
        return MONITOR_NOMEM;
    }
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        destroy(w);
        if (err && errlen)
            snprintf(err, errlen, "cannot start the webhook thread");
        return MONITOR_IO;
    }
    w->started = true;
    *out = w;
    return MONITOR_OK;
}

bool webhook_post(webhook *w, json_t *body)
{
    if (!w || !json_is_object(body) || w->ntargets == 0) {
        json_decref(body);
        return false;
    }
    char id[33];
    random_id(id);
    json_object_set_new(body, "id", json_string(id));
    if (!json_is_string(json_object_get(body, "type")))
        json_object_set_new(body, "type", json_string("alert"));
    if (w->hub_name && !json_object_get(body, "hub"))
        json_object_set_new(body, "hub", json_string(w->hub_name));
    char event[16];
    snprintf(event, sizeof event, "%s", json_string_value(json_object_get(body, "type")));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return false;
    size_t len = strlen(text);
    /* Copies made before taking the lock: the critical section stays short. */
    delivery *ds[WEBHOOK_MAX_URLS] = {NULL};
    bool ok = true;
    for (size_t i = 0; ok && i < w->ntargets; i++) {
        ds[i] = calloc(1, sizeof *ds[i]);
        ok = ds[i] && (ds[i]->body = i == 0 ? text : malloc(len + 1)) != NULL;
        if (ok) {
            if (i > 0)
                memcpy(ds[i]->body, text, len + 1);
            ds[i]->len = len;
            memcpy(ds[i]->id, id, sizeof id);
            memcpy(ds[i]->event, event, sizeof event);
        }
    }
    if (!ok) {
        if (!ds[0] || ds[0]->body != text)
            free(text);
        for (size_t i = 0; i < w->ntargets; i++)
            delivery_free(ds[i]);
        return false;
    }
    delivery *dropped[WEBHOOK_MAX_URLS] = {NULL};
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        for (size_t i = 0; i < w->ntargets; i++)
            delivery_free(ds[i]);
        return false;
    }
    for (size_t i = 0; i < w->ntargets; i++) {
        dropped[i] = ring_push_back(&w->targets[i], ds[i]);
        if (dropped[i])
            w->stats.dropped++;
        else
            w->stats.queued++;
    }
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < w->ntargets; i++)
        delivery_free(dropped[i]);
    return true;
}

bool webhook_post_alert(webhook *w, const alert *a)
{
    json_t *body = alert_to_json(a, NULL);
    return body ? webhook_post(w, body) : false;
}

void webhook_get_stats(webhook *w, webhook_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    pthread_mutex_unlock(&w->lock);
}

void webhook_free(webhook *w, uint32_t drain_ms)
{
    if (!w)
        return;
    if (w->started) {
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        int64_t now = waiter_mono_ms();
        w->hard_deadline_ms = now + drain_ms;
        /* A request in flight at the deadline gets one more second. */
        atomic_store(&w->abort_at_ms, (long long)(w->hard_deadline_ms + 1000));
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
    }
    for (size_t i = 0; i < w->ntargets; i++)
        w->stats.dropped += w->targets[i].len; /* never delivered */
    destroy(w);
}
