/*
 * watch.c — moatd's wiring of the monitor (src/monitor, docs/monitoring.md):
 * its settings from [monitor] and [alerts], the webhook key file, alerts
 * published to services on $moat/alerts/KIND/SUBJECT, refused accesses,
 * and the hub-wide store health behind the store_failure alert.
 *
 * Store health: each worker's store and the telemetry store report every
 * commit that did something. One failing is enough to raise store_failure
 * (the monitor raises once per change of state); it clears only when none
 * fails any more, so the broker store working again does not hide a full
 * telemetry disk. The common case — nothing ever failed — costs two atomic
 * loads per commit.
 *
 * Messages the hub publishes itself go through the workers' inboxes as a
 * batch of one (relay.h, BROKER_FWD_ROUTE): each worker routes them against
 * its own subscriptions, and receive policies decide who gets them, as for
 * any message. A device's default policy cannot subscribe to $moat/#.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub_int.h"
#include "log.h"

/* ---- hub messages ---------------------------------------------------------- */

bool hub_post(hub_server *hub, int worker, const hub_message *m)
{
    /* MQTT 5 properties: JSON in UTF-8, and the request's correlation data. */
    static const char json_type[] = "application/json";
    codec_props props = {.payload_format = 1,
                         .content_type = {(const uint8_t *)json_type, sizeof(json_type) - 1},
                         .correlation_data = m->correlation};
    CODEC_SET(&props, CODEC_PROP_PAYLOAD_FORMAT);
    CODEC_SET(&props, CODEC_PROP_CONTENT_TYPE);
    if (m->correlation.len)
        CODEC_SET(&props, CODEC_PROP_CORRELATION_DATA);
    uint8_t block[1024];
    size_t n = 0;
    if (m->correlation.len > sizeof(block) - 64 ||
        codec_props_encode(&props, CODEC_CTX_PUBLISH, block, sizeof(block), &n) != CODEC_OK)
        return false;
    broker_fwd f = {.topic = m->topic,
                    .payload = m->payload,
                    .props = {block, n},
                    .qos = m->qos,
                    .gid = atomic_fetch_add(&hub->ids, 1) + 1,
                    .flags = BROKER_FWD_ROUTE,
                    .to = m->to};
    bool all_ok = true;
    for (unsigned k = 0; k < hub->nworkers; k++) {
        if (worker != HUB_ALL_WORKERS && (unsigned)worker != k)
            continue;
        /* `from` is no worker: nobody waits for a ticket. */
        relay_env *env = relay_env_new(RELAY_BATCH, hub->nworkers);
        if (!env || !relay_env_add(env, &f, f.flags)) {
            relay_env_free(env);
            all_ok = false;
            continue;
        }
        env->needs_ticket = false;
        relay_post(&hub->workers[k].inbox, env);
    }
    return all_ok;
}

static void on_alert(void *ctx, const alert *a)
{
    hub_server *hub = ctx;
    char topic[256];
    if (!alert_topic(a, topic, sizeof(topic)))
        return;
    json_t *body =
        alert_to_json(a, hub->cfg.monitor.hub_name[0] ? hub->cfg.monitor.hub_name : NULL);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        log_msg(LOG_ERROR, NULL, "alert %s not published: out of memory", topic);
        return;
    }
    hub_message m = {.topic = {(const uint8_t *)topic, strlen(topic)},
                     .payload = {(const uint8_t *)text, strlen(text)},
                     .qos = 1};
    if (!hub_post(hub, HUB_ALL_WORKERS, &m))
        log_msg(LOG_ERROR, NULL, "alert %s not published to every worker: out of memory", topic);
    log_msg(a->kind == ALERT_STORE_FAILURE && a->state == ALERT_RAISE ? LOG_ERROR : LOG_INFO, NULL,
            "alert: %s %s %s %s", alert_kind_name(a->kind), alert_state_name(a->state), a->subject,
            a->details);
    free(text);
}

static void on_monitor_log(void *ctx, bool error, const char *msg)
{
    (void)ctx;
    log_msg(error ? LOG_ERROR : LOG_INFO, NULL, "%s", msg);
}

/* ---- store health ---------------------------------------------------------- */

void hub_store_state(hub_server *hub, int source, bool ok, const char *detail)
{
    uint64_t bit = source >= 0 ? (uint64_t)1 << (unsigned)source : 0;
    if (ok && !atomic_load(&hub->store_unsure) &&
        !(bit ? atomic_load(&hub->store_bad) & bit : atomic_load(&hub->tstore_bad)))
        return; /* it worked, and nothing of this source had failed */
    pthread_mutex_lock(&hub->store_mu);
    if (bit) {
        uint64_t bad = atomic_load(&hub->store_bad);
        atomic_store(&hub->store_bad, ok ? bad & ~bit : bad | bit);
    } else {
        atomic_store(&hub->tstore_bad, !ok);
    }
    if (!ok) {
        monitor_store_failed(hub->mon, detail);
    } else if (atomic_load(&hub->store_bad) == 0 && !atomic_load(&hub->tstore_bad)) {
        atomic_store(&hub->store_unsure, false);
        monitor_store_ok(hub->mon);
    }
    pthread_mutex_unlock(&hub->store_mu);
}

/* ---- refusals -------------------------------------------------------------- */

void hub_note_refusal(hub_server *hub, monitor_refusal what, const char *addr,
                      const broker_principal *who, const char *reason, codec_bytes topic)
{
    if (!hub->mon)
        return;
    char principal[80] = "", example[256] = "";
    if (who && who->id[0])
        snprintf(principal, sizeof(principal), "%s:%s",
                 who->kind == BROKER_DEVICE ? "device" : "service", who->id);
    if (topic.len) {
        size_t n = topic.len < sizeof(example) - 1 ? topic.len : sizeof(example) - 1;
        memcpy(example, topic.ptr, n);
        example[n] = '\0';
    }
    monitor_refused(hub->mon, what, addr && addr[0] ? addr : NULL, principal[0] ? principal : NULL,
                    reason, example[0] ? example : NULL);
}

/* ---- start and stop ------------------------------------------------------------ */

/* The shared HMAC key: the file's bytes without a final newline, from a
 * regular file that only its owner can read (it is a secret). */
static bool load_key(const char *path, uint8_t *key, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "[alerts] webhook_key %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    if (!S_ISREG(sb.st_mode) || (sb.st_mode & 077)) {
        snprintf(err, errlen,
                 "[alerts] webhook_key %s: must be a regular file that only its owner can "
                 "read (chmod 600)",
                 path);
        close(fd);
        return false;
    }
    ssize_t n = read(fd, key, WEBHOOK_KEY_MAX + 3);
    close(fd);
    size_t got = n > 0 ? (size_t)n : 0;
    if (got && key[got - 1] == '\n')
        got--;
    if (got && key[got - 1] == '\r')
        got--;
    if (n < 0 || got < WEBHOOK_KEY_MIN || got > WEBHOOK_KEY_MAX) {
        sodium_memzero(key, WEBHOOK_KEY_MAX + 3);
        snprintf(err, errlen, "[alerts] webhook_key %s: must hold %u to %u bytes", path,
                 WEBHOOK_KEY_MIN, WEBHOOK_KEY_MAX);
        return false;
    }
    *len = got;
    return true;
}

bool watch_start(hub_server *hub, char *err, size_t errlen)
{
    const hub_monitor_settings *s = &hub->cfg.monitor;
    if (pthread_mutex_init(&hub->store_mu, NULL) != 0) {
        snprintf(err, errlen, "pthread_mutex_init failed");
        return false;
    }
    hub->store_mu_ready = true;
    atomic_store(&hub->store_unsure, true);

    monitor_config mc;
    monitor_config_defaults(&mc, hub->cfg.data_dir);
    mc.hub_name = s->hub_name[0] ? s->hub_name : NULL;
    const char *certs[] = {hub->cfg.cert_file, hub->cfg.ca_file};
    mc.cert_files = certs;
    mc.ncert_files = 2;
    mc.default_report_interval_s = s->default_report_interval_s;
    mc.offline_grace_s = s->offline_grace_s;
    mc.lost_grace_s = s->lost_grace_s;
    mc.handshake_burst = s->handshake_burst;
    mc.refused_publish_burst = s->refused_publish_burst;
    mc.burst_window_s = s->burst_window_s;
    mc.rate.factor = s->rate_factor;
    mc.rate.min_rate = s->rate_min;
    mc.cert_warn_days = s->cert_warn_days;
    mc.clock_jump_s = s->clock_jump_s;
    mc.audit_refusals = s->audit_refusals;
    mc.refusal_max_keys = s->refusal_max_keys;
    mc.alert_retention_days = s->alert_retention_days;
    mc.alert_max_rows = s->alert_max_rows;
    mc.registry_poll_ms = s->registry_poll_ms;
    mc.audit_flush_ms = s->audit_flush_ms;
    mc.on_alert = on_alert;
    mc.on_alert_ctx = hub;
    mc.log = on_monitor_log;

    uint8_t key[WEBHOOK_KEY_MAX + 3];
    size_t key_len = 0;
    const char *urls[CONFIG_WEBHOOKS];
    for (unsigned i = 0; i < s->nwebhooks; i++)
        urls[i] = s->webhooks[i];
    if (s->nwebhooks || s->heartbeat_url[0]) {
        if (!s->webhook_key[0]) {
            snprintf(err, errlen,
                     "[alerts] webhook_key is required with a webhook or heartbeat_url (the "
                     "requests are signed)");
            return false;
        }
        if (!load_key(s->webhook_key, key, &key_len, err, errlen))
            return false;
        mc.webhook_enabled = true;
        mc.webhook =
            (webhook_config){.urls = urls,
                             .nurls = s->nwebhooks,
                             .heartbeat_url = s->heartbeat_url[0] ? s->heartbeat_url : NULL,
                             .heartbeat_interval_s = s->heartbeat_interval_s,
                             .key = key,
                             .key_len = key_len,
                             .queue_max = s->webhook_queue,
                             .retry_max_ms = s->webhook_retry_max_s * 1000u,
                             .max_attempts = s->webhook_max_attempts,
                             .ca_file = s->webhook_ca[0] ? s->webhook_ca : NULL};
    }
    char why[512];
    monitor_status st = monitor_new(&mc, &hub->mon, why, sizeof(why));
    sodium_memzero(key, sizeof(key));
    if (st != MONITOR_OK) {
        snprintf(err, errlen, "%s", why);
        return false;
    }
    return true;
}

void watch_stop(hub_server *hub)
{
    monitor_free(hub->mon); /* writes what is queued; the "stopping" heartbeat */
    hub->mon = NULL;
}
