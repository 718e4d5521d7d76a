/*
 * monitor.c — the monitor object (see monitor.h): the in-memory trackers the
 * event loops feed under one mutex, and the thread that does the I/O.
 *
 * Locking: m->lock guards the trackers, the two queues and the copies of
 * figures other threads read (audit head, open alerts). The monitor thread
 * never holds it while doing I/O, nor while calling into the webhook or the
 * on_alert callback, so the loops wait at most for a few hundred
 * nanoseconds of tracker work — and the webhook thread's heartbeat_fill,
 * which takes m->lock, cannot deadlock against the monitor thread, which
 * takes the webhook's lock only without holding m->lock.
 *
 * Clocks: trackers run on CLOCK_MONOTONIC (a wall-clock step must not take
 * every device offline at once); alerts and audit entries carry the wall
 * clock; the difference between the two is watched for jumps.
 */
#include "monitor.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include "alert_store.h"
#include "burst.h"
#include "hmap.h"
#include "liveness.h"
#include "pki.h"
#include "refusals.h"
#include "registry.h"
#include "utf8clip.h"
#include "waiter.h"

#define PATH_MAX_LEN        4096
#define REPORT_INTERVAL_KEY "report_interval"
#define REPORT_INTERVAL_MAX 31536000u /* a year */
#define SYNC_CHUNK          4096u     /* devices watched per hold of the lock */
#define CERT_CHECK_MS       (24 * 3600 * 1000)
#define PRUNE_MS            (3600 * 1000)
#define CLOCK_CHECK_MS      5000

typedef struct rate_entry {
    char id[LIVENESS_ID_MAX + 1];
    size_t id_len;
    rate_state st;
    struct rate_entry *anom_prev, *anom_next; /* in the anomalous list */
    bool in_anom;
    uint64_t gen;
} rate_entry;

typedef struct pending_audit {
    int64_t time;
    char actor[AUDIT_ACTOR_MAX + 1];
    char action[AUDIT_ACTION_MAX + 1];
    char subject[AUDIT_SUBJECT_MAX + 1];
    char outcome[AUDIT_OUTCOME_MAX + 1];
    json_t *details;
} pending_audit;

typedef struct cert_mark {
    char subject[ALERT_SUBJECT_MAX + 1];
    uint64_t gen;
} cert_mark;

struct monitor {
    monitor_config cfg;
    char *hub_name;
    char alerts_path[PATH_MAX_LEN], registry_path[PATH_MAX_LEN], audit_key_path[PATH_MAX_LEN];
    char **cert_files;
    size_t ncert_files;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stopping;

    /* ---- under lock ---- */
    liveness *live;
    burst *hs_burst, *pub_burst;
    hmap rates;
    size_t nrates;
    rate_entry *anom; /* anomalous devices, for clearing them when they stop */
    audit_refusals *refusals;
    alert *aq;
    size_t aq_cap, aq_head, aq_len;
    pending_audit *uq;
    size_t uq_cap, uq_head, uq_len;
    uint64_t audit_dropped_unreported;
    int64_t wake_at; /* monotonic; INT64_MIN while the thread is awake */
    monitor_stats stats;
    atomic_bool store_failed;
    int64_t wall_minus_mono; /* at the last tracker step, for converting times */

    /* ---- the thread's only ---- */
    alert_store *store;
    audit_key *akey;
    audit_log *alog;
    registry *reg;
    webhook *wh;
    int64_t reg_version;
    bool reg_synced;
    uint64_t sync_gen;
    int64_t next_reg_ms, next_cert_ms, next_prune_ms, next_flush_ms, next_rate_ms, next_clock_ms;
    int64_t clock_offset;
    hmap certs; /* subject -> cert_mark: cert_expiry alerts raised */
    uint64_t cert_gen;
    bool certs_loaded;
    pending_audit *unwritten; /* taken from uq, waiting for a write that succeeds */
    size_t nunwritten;
    bool store_err, audit_err, reg_err;
};

/* ---- small helpers ----------------------------------------------------------- */

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static void
mlog(monitor *m, bool error, const char *fmt, ...)
{
    if (!m->cfg.log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    m->cfg.log(m->cfg.log_ctx, error, msg);
}

static bool make_path(char *buf, const char *dir, const char *name)
{
    int n = name[0] == '/' ? snprintf(buf, PATH_MAX_LEN, "%s", name)
                           : snprintf(buf, PATH_MAX_LEN, "%s/%s", dir, name);
    return n > 0 && n < PATH_MAX_LEN;
}

void monitor_config_defaults(monitor_config *c, const char *data_dir)
{
    memset(c, 0, sizeof *c);
    c->data_dir = data_dir;
    c->default_report_interval_s = 0;
    c->offline_grace_s = 60;
    c->lost_grace_s = 60;
    c->max_devices = 1000000;
    c->burst_window_s = 60;
    c->handshake_burst = 20;
    c->refused_publish_burst = 50;
    c->burst_max_keys = 4096;
    c->cert_warn_days = 30;
    c->audit_refusals = true;
    c->refusal_window_s = 60;
    c->refusal_max_keys = 1024;
    c->audit_flush_ms = 5000;
    c->alert_retention_days = 90;
    c->alert_max_rows = 100000;
    c->registry_poll_ms = 10000;
    c->queue_max = 1024;
    c->clock_jump_s = 30;
}

/* ---- queues (under lock) -------------------------------------------------------- */

static void push_alert(monitor *m, const alert *a)
{
    if (m->aq_len == m->aq_cap) {
        m->aq_head = (m->aq_head + 1) % m->aq_cap; /* the oldest goes */
        m->aq_len--;
        m->stats.alerts_dropped++;
    }
    m->aq[(m->aq_head + m->aq_len) % m->aq_cap] = *a;
    m->aq_len++;
}

static void pending_clear(pending_audit *p)
{
    json_decref(p->details);
    p->details = NULL;
}

/* Copy rec; details is taken as given (a reference the caller owns for us). */
static void push_audit(monitor *m, const audit_record *rec, json_t *details)
{
    if (m->uq_len == m->uq_cap) {
        pending_clear(&m->uq[m->uq_head]);
        m->uq_head = (m->uq_head + 1) % m->uq_cap;
        m->uq_len--;
        m->stats.audit_dropped++;
        m->audit_dropped_unreported++;
    }
    pending_audit *p = &m->uq[(m->uq_head + m->uq_len) % m->uq_cap];
    p->time = rec->time;
    utf8_clip_copy(p->actor, AUDIT_ACTOR_MAX, rec->actor);
    utf8_clip_copy(p->action, AUDIT_ACTION_MAX, rec->action);
    utf8_clip_copy(p->subject, AUDIT_SUBJECT_MAX, rec->subject);
    utf8_clip_copy(p->outcome, AUDIT_OUTCOME_MAX, rec->outcome);
    p->details = details;
    m->uq_len++;
}

static void wake(monitor *m)
{
    pthread_cond_signal(&m->cond);
}

/* ---- tracker callbacks (under lock) --------------------------------------------- */

static int64_t to_wall(const monitor *m, int64_t mono)
{
    return mono + m->wall_minus_mono;
}

static void device_subject(char *buf, size_t len, const char *id)
{
    snprintf(buf, len, "device:%s", id);
}

static void on_liveness(void *ctx, const liveness_event *ev)
{
    monitor *m = ctx;
    char subject[ALERT_SUBJECT_MAX + 1], seen[32];
    device_subject(subject, sizeof subject, ev->id);
    alert a;
    alert_init(&a, ALERT_DEVICE_OFFLINE, ev->offline ? ALERT_RAISE : ALERT_CLEAR,
               to_wall(m, ev->now), subject);
    json_t *d = json_object();
    if (d && ev->offline) {
        json_object_set_new(d, "cause", json_string(liveness_cause_name(ev->cause)));
        json_object_set_new(d, "interval_s", json_integer(ev->interval_s));
        json_object_set_new(d, "grace_s", json_integer(m->cfg.offline_grace_s));
        if (ev->last_seen) {
            alert_format_time(to_wall(m, ev->last_seen), seen);
            json_object_set_new(d, "last_seen", json_string(seen));
        } else {
            json_object_set_new(d, "last_seen", json_null());
        }
    } else if (d && ev->forgotten) {
        json_object_set_new(d, "forgotten", json_true());
    } else if (d && ev->last_seen) {
        json_object_set_new(d, "back", json_true());
    }
    alert_set_details(&a, d);
    json_decref(d);
    push_alert(m, &a);
}

static void on_refusal_entry(void *ctx, const audit_record *rec)
{
    monitor *m = ctx;
    push_audit(m, rec, rec->details ? json_incref((json_t *)rec->details) : NULL);
}

static void burst_alert(monitor *m, alert_kind kind, const char *subject, uint32_t count,
                        const char *source, const char *reason)
{
    alert a;
    alert_init(&a, kind, ALERT_EVENT, waiter_wall_ms(), subject);
    json_t *d = json_pack("{s:I, s:I}", "count", (json_int_t)count, "window_s",
                          (json_int_t)m->cfg.burst_window_s);
    if (d && source)
        json_object_set_new(d, "source", json_string(source));
    if (d && reason)
        json_object_set_new(d, "reason", json_string(reason));
    alert_set_details(&a, d);
    json_decref(d);
    push_alert(m, &a);
}

/* ---- the loops' API --------------------------------------------------------------- */

static void step_clock(monitor *m, int64_t mono)
{
    m->wall_minus_mono = waiter_wall_ms() - mono;
}

void monitor_device_connected(monitor *m, const char *id)
{
    if (!m || !id)
        return;
    pthread_mutex_lock(&m->lock);
    int64_t now = waiter_mono_ms();
    step_clock(m, now);
    size_t before = m->aq_len;
    (void)liveness_seen(m->live, id, now);
    if (m->aq_len != before)
        wake(m);
    pthread_mutex_unlock(&m->lock);
}

static void anom_link(monitor *m, rate_entry *e)
{
    if (e->in_anom)
        return;
    e->anom_prev = NULL;
    e->anom_next = m->anom;
    if (m->anom)
        m->anom->anom_prev = e;
    m->anom = e;
    e->in_anom = true;
}

static void anom_unlink(monitor *m, rate_entry *e)
{
    if (!e->in_anom)
        return;
    if (e->anom_prev)
        e->anom_prev->anom_next = e->anom_next;
    else
        m->anom = e->anom_next;
    if (e->anom_next)
        e->anom_next->anom_prev = e->anom_prev;
    e->anom_prev = e->anom_next = NULL;
    e->in_anom = false;
}

static void rate_alert(monitor *m, rate_entry *e, rate_change ch, int64_t now)
{
    char subject[ALERT_SUBJECT_MAX + 1];
    device_subject(subject, sizeof subject, e->id);
    alert a;
    alert_init(&a, ALERT_RATE_ANOMALY, ch == RATE_RAISE ? ALERT_RAISE : ALERT_CLEAR,
               to_wall(m, now), subject);
    json_t *d = json_pack("{s:f, s:f, s:f}", "rate_per_s", e->st.last_rate, "usual_per_s",
                          e->st.usual, "threshold_per_s", rate_threshold(&m->cfg.rate, &e->st));
    alert_set_details(&a, d);
    json_decref(d);
    push_alert(m, &a);
    if (ch == RATE_RAISE)
        anom_link(m, e);
    else
        anom_unlink(m, e);
}

static rate_entry *rate_get(monitor *m, const char *id, bool create)
{
    size_t len = strlen(id);
    if (len == 0 || len > LIVENESS_ID_MAX)
        return NULL;
    rate_entry *e = hmap_get(&m->rates, (const uint8_t *)id, len);
    if (e || !create || m->nrates >= m->cfg.max_devices)
        return e;
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    memcpy(e->id, id, len + 1);
    e->id_len = len;
    if (!hmap_put(&m->rates, (const uint8_t *)e->id, len, e)) {
        free(e);
        return NULL;
    }
    m->nrates++;
    return e;
}

void monitor_device_activity(monitor *m, const char *id, uint32_t messages)
{
    if (!m || !id || messages == 0)
        return;
    pthread_mutex_lock(&m->lock);
    int64_t now = waiter_mono_ms();
    step_clock(m, now);
    size_t before = m->aq_len;
    (void)liveness_seen(m->live, id, now);
    rate_entry *e = rate_get(m, id, true);
    if (e) {
        rate_change ch = rate_observe(&m->cfg.rate, &e->st, messages, now);
        if (ch != RATE_SAME)
            rate_alert(m, e, ch, now);
    }
    if (m->aq_len != before)
        wake(m);
    pthread_mutex_unlock(&m->lock);
}

void monitor_device_disconnected(monitor *m, const char *id, bool clean)
{
    if (!m || !id)
        return;
    pthread_mutex_lock(&m->lock);
    int64_t now = waiter_mono_ms();
    liveness_gone(m->live, id, clean, now);
    if (liveness_next(m->live) < m->wake_at)
        wake(m);
    pthread_mutex_unlock(&m->lock);
}

static const char *refusal_word(monitor_refusal what)
{
    switch (what) {
    case MONITOR_REFUSED_HANDSHAKE:
        return "handshake";
    case MONITOR_REFUSED_CONNECT:
        return "connect";
    case MONITOR_REFUSED_PUBLISH:
        return "publish";
    case MONITOR_REFUSED_SUBSCRIBE:
        return "subscribe";
    }
    return "access";
}

void monitor_refused(monitor *m, monitor_refusal what, const char *source, const char *principal,
                     const char *reason, const char *example)
{
    if (!m)
        return;
    char key[BURST_KEY_MAX + 1];
    pthread_mutex_lock(&m->lock);
    int64_t now = waiter_mono_ms();
    step_clock(m, now);
    size_t before_a = m->aq_len, before_u = m->uq_len;
    if (m->refusals)
        audit_refusals_note(m->refusals, waiter_wall_ms(), refusal_word(what), source, principal,
                            reason, example);
    uint32_t count = 0;
    if (what == MONITOR_REFUSED_HANDSHAKE || what == MONITOR_REFUSED_CONNECT) {
        snprintf(key, sizeof key, "address:%s", source ? source : "?");
        if (m->hs_burst && burst_hit(m->hs_burst, key, 1, now, &count))
            burst_alert(m, ALERT_HANDSHAKE_BURST, key, count, source, reason);
    } else if (what == MONITOR_REFUSED_PUBLISH) {
        if (principal && principal[0])
            snprintf(key, sizeof key, "%s", principal);
        else
            snprintf(key, sizeof key, "address:%s", source ? source : "?");
        if (m->pub_burst && burst_hit(m->pub_burst, key, 1, now, &count))
            burst_alert(m, ALERT_REFUSED_PUBLISH_BURST, key, count, source, reason);
    }
    if (m->aq_len != before_a || m->uq_len != before_u)
        wake(m);
    pthread_mutex_unlock(&m->lock);
}

static void store_alert(monitor *m, alert_state state, const char *detail)
{
    alert a;
    alert_init(&a, ALERT_STORE_FAILURE, state, waiter_wall_ms(), "hub");
    json_t *d = detail ? json_pack("{s:s}", "error", detail) : NULL;
    alert_set_details(&a, d);
    json_decref(d);
    push_alert(m, &a);
    wake(m);
}

void monitor_store_failed(monitor *m, const char *detail)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    if (!atomic_load(&m->store_failed)) {
        atomic_store(&m->store_failed, true);
        store_alert(m, ALERT_RAISE, detail);
    }
    pthread_mutex_unlock(&m->lock);
}

void monitor_store_ok(monitor *m)
{
    if (!m || !atomic_load(&m->store_failed))
        return; /* the common case: one atomic load */
    pthread_mutex_lock(&m->lock);
    if (atomic_load(&m->store_failed)) {
        atomic_store(&m->store_failed, false);
        store_alert(m, ALERT_CLEAR, NULL);
    }
    pthread_mutex_unlock(&m->lock);
}

void monitor_alert(monitor *m, const alert *a)
{
    if (!m || !a)
        return;
    pthread_mutex_lock(&m->lock);
    push_alert(m, a);
    wake(m);
    pthread_mutex_unlock(&m->lock);
}

void monitor_audit(monitor *m, const audit_record *rec)
{
    if (!m || !rec)
        return;
    json_t *d = rec->details ? json_deep_copy(rec->details) : NULL;
    audit_record copy = *rec;
    if (!copy.time)
        copy.time = waiter_wall_ms() / 1000;
    pthread_mutex_lock(&m->lock);
    push_audit(m, &copy, d);
    wake(m);
    pthread_mutex_unlock(&m->lock);
}

uint32_t monitor_tap_count(monitor_tap *t, int64_t now_ms, uint32_t min_gap_ms)
{
    if (t->pending < UINT32_MAX)
        t->pending++;
    if (t->last_ms != 0 && now_ms - t->last_ms < (int64_t)min_gap_ms)
        return 0;
    t->last_ms = now_ms ? now_ms : 1;
    uint32_t n = t->pending;
    t->pending = 0;
    return n;
}

uint32_t monitor_tap_flush(monitor_tap *t)
{
    uint32_t n = t->pending;
    t->pending = 0;
    return n;
}

/* ---- the thread: alerts ---------------------------------------------------------- */

static void heartbeat_fill(void *ctx, json_t *body)
{
    monitor *m = ctx;
    pthread_mutex_lock(&m->lock);
    audit_head h = m->stats.audit_head;
    int64_t open = m->stats.alerts_open;
    size_t watched = liveness_count(m->live), offline = liveness_offline_count(m->live);
    pthread_mutex_unlock(&m->lock);
    char tag[2 * AUDIT_TAG_LEN + 1];
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < AUDIT_TAG_LEN; i++) {
        tag[2 * i] = hex[h.tag[i] >> 4];
        tag[2 * i + 1] = hex[h.tag[i] & 15];
    }
    tag[2 * AUDIT_TAG_LEN] = '\0';
    json_object_set_new(body, "audit_head",
                        json_pack("{s:I, s:s}", "seq", (json_int_t)h.seq, "tag", tag));
    json_object_set_new(body, "alerts_open", json_integer((json_int_t)open));
    json_object_set_new(body, "devices_watched", json_integer((json_int_t)watched));
    json_object_set_new(body, "devices_offline", json_integer((json_int_t)offline));
}

static void open_store(monitor *m)
{
    if (m->store)
        return;
    char err[512];
    if (alert_store_open(m->alerts_path, ALERT_STORE_CREATE, &m->store, err, sizeof err) ==
        MONITOR_OK) {
        if (m->store_err)
            mlog(m, false, "alerts: %s is writable again", m->alerts_path);
        m->store_err = false;
    } else if (!m->store_err) {
        mlog(m, true, "alerts: cannot open the alert store: %s (alerts still go to webhooks)", err);
        m->store_err = true;
    }
}

static void handle_alert(monitor *m, const alert *a)
{
    bool changed = true;
    open_store(m);
    if (m->store) {
        monitor_status st = alert_store_record(m->store, a, &changed);
        if (st != MONITOR_OK) {
            changed = true; /* not recorded, but still news: deliver it */
            if (!m->store_err)
                mlog(m, true, "alerts: recording an alert failed: %s",
                     alert_store_errmsg(m->store));
            m->store_err = true;
        } else if (m->store_err) {
            mlog(m, false, "alerts: the alert store works again");
            m->store_err = false;
        }
    }
    /* A repeated raise of an open condition is no news; every event is. */
    if (!changed && a->state != ALERT_EVENT)
        return;
    pthread_mutex_lock(&m->lock);
    m->stats.alerts++;
    pthread_mutex_unlock(&m->lock);
    if (m->wh)
        (void)webhook_post_alert(m->wh, a);
    if (m->cfg.on_alert)
        m->cfg.on_alert(m->cfg.on_alert_ctx, a);
}

/* ---- the thread: audit ------------------------------------------------------------ */

static void open_audit(monitor *m)
{
    if (m->alog)
        return;
    char err[512];
    audit_status st = AUDIT_OK;
    if (!m->akey)
        st = audit_key_load(m->audit_key_path, &m->akey, err, sizeof err);
    if (st == AUDIT_OK)
        st = audit_open(m->registry_path, m->akey, 0, &m->alog, err, sizeof err);
    if (st == AUDIT_OK) {
        audit_head h;
        if (audit_head_get(m->alog, &h) == AUDIT_OK) {
            pthread_mutex_lock(&m->lock);
            m->stats.audit_head = h;
            pthread_mutex_unlock(&m->lock);
        }
        if (m->audit_err)
            mlog(m, false, "audit: the audit log is writable again");
        m->audit_err = false;
    } else if (!m->audit_err) {
        mlog(m, true, "audit: cannot open the audit log: %s (refused accesses are only counted)",
             err);
        m->audit_err = true;
    }
}

/* Move everything queued to m->unwritten (bounded by the queue size). */
static void take_audit(monitor *m)
{
    while (m->uq_len > 0) {
        if (m->nunwritten == m->uq_cap) {
            pending_clear(&m->unwritten[0]);
            memmove(m->unwritten, m->unwritten + 1, (m->nunwritten - 1) * sizeof *m->unwritten);
            m->nunwritten--;
            m->stats.audit_dropped++;
            m->audit_dropped_unreported++;
        }
        m->unwritten[m->nunwritten++] = m->uq[m->uq_head];
        memset(&m->uq[m->uq_head], 0, sizeof m->uq[m->uq_head]);
        m->uq_head = (m->uq_head + 1) % m->uq_cap;
        m->uq_len--;
    }
}

static void flush_audit(monitor *m)
{
    pthread_mutex_lock(&m->lock);
    take_audit(m);
    uint64_t lost = m->audit_dropped_unreported;
    pthread_mutex_unlock(&m->lock);
    if (m->nunwritten == 0 && lost == 0)
        return;
    open_audit(m);
    size_t n = m->nunwritten + (lost ? 1 : 0);
    audit_record *recs = calloc(n ? n : 1, sizeof *recs);
    if (!m->alog || !recs) {
        free(recs);
        pthread_mutex_lock(&m->lock);
        m->stats.audit_failed += m->nunwritten;
        pthread_mutex_unlock(&m->lock);
        for (size_t i = 0; i < m->nunwritten; i++)
            pending_clear(&m->unwritten[i]);
        m->nunwritten = 0;
        return;
    }
    size_t k = 0;
    json_t *lost_details = NULL;
    if (lost) {
        /* The log says that it is incomplete, and by how much. */
        lost_details = json_pack("{s:I}", "count", (json_int_t)lost);
        recs[k++] = (audit_record){.actor = "hub",
                                   .action = "audit.dropped",
                                   .subject = "",
                                   .outcome = "failed",
                                   .details = lost_details};
    }
    for (size_t i = 0; i < m->nunwritten; i++) {
        pending_audit *p = &m->unwritten[i];
        recs[k++] = (audit_record){.time = p->time,
                                   .actor = p->actor,
                                   .action = p->action,
                                   .subject = p->subject,
                                   .outcome = p->outcome,
                                   .details = p->details};
    }
    audit_status st = audit_append_batch(m->alog, recs, k);
    json_decref(lost_details);
    free(recs);
    audit_head h = {0};
    bool have_head = st == AUDIT_OK && audit_head_get(m->alog, &h) == AUDIT_OK;
    pthread_mutex_lock(&m->lock);
    if (st == AUDIT_OK) {
        m->stats.audit_written += m->nunwritten;
        m->audit_dropped_unreported -= lost;
        if (have_head)
            m->stats.audit_head = h;
    } else if (st != AUDIT_BUSY) {
        m->stats.audit_failed += m->nunwritten;
    }
    pthread_mutex_unlock(&m->lock);
    if (st == AUDIT_BUSY)
        return; /* kept in m->unwritten: tried again at the next flush */
    for (size_t i = 0; i < m->nunwritten; i++)
        pending_clear(&m->unwritten[i]);
    m->nunwritten = 0;
    if (st != AUDIT_OK && !m->audit_err) {
        mlog(m, true, "audit: writing %zu entries failed: %s", k, audit_errmsg(m->alog));
        m->audit_err = true;
    } else if (st == AUDIT_OK && m->audit_err) {
        mlog(m, false, "audit: the audit log is writable again");
        m->audit_err = false;
    }
}

/* ---- the thread: the registry ------------------------------------------------------ */

typedef struct device_list {
    char (*ids)[LIVENESS_ID_MAX + 1];
    uint32_t *intervals;
    size_t n, cap;
    bool nomem;
} device_list;

static int collect_device(void *ctx, const registry_principal *p)
{
    device_list *l = ctx;
    if (p->status != REGISTRY_ACTIVE)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        void *ids = realloc(l->ids, cap * sizeof *l->ids);
        if (ids)
            l->ids = ids;
        void *iv = ids ? realloc(l->intervals, cap * sizeof *l->intervals) : NULL;
        if (!ids || !iv) {
            l->nomem = true;
            return 1;
        }
        l->intervals = iv;
        l->cap = cap;
    }
    utf8_clip_copy(l->ids[l->n], LIVENESS_ID_MAX, p->id);
    l->intervals[l->n] = 0;
    l->n++;
    return 0;
}

typedef struct interval_ctx {
    uint32_t min;
    bool found;
} interval_ctx;

/* The smallest report_interval among the device's groups: if any group
 * expects it every minute, it is expected every minute. */
static int take_interval(void *ctx, const char *group, const char *key, const char *value)
{
    interval_ctx *c = ctx;
    (void)group, (void)key;
    uint64_t v = 0;
    size_t i = 0;
    for (; value[i] >= '0' && value[i] <= '9' && v <= REPORT_INTERVAL_MAX; i++)
        v = v * 10 + (uint64_t)(value[i] - '0');
    if (i == 0 || value[i] != '\0' || v == 0 || v > REPORT_INTERVAL_MAX)
        return 0; /* not a number moatctl would store: ignored */
    if (!c->found || v < c->min)
        c->min = (uint32_t)v;
    c->found = true;
    return 0;
}

typedef struct open_ctx {
    char (*ids)[LIVENESS_ID_MAX + 1];
    size_t n, cap;
} open_ctx;

static int collect_open(void *ctx, const alert_row *r)
{
    open_ctx *c = ctx;
    if (strncmp(r->subject, "device:", 7) != 0 || c->n == c->cap)
        return 0;
    utf8_clip_copy(c->ids[c->n++], LIVENESS_ID_MAX, r->subject + 7);
    return 0;
}

static void sync_rates(monitor *m, const device_list *l)
{
    /* Forget the rate history of devices that are no longer active. */
    m->sync_gen++;
    for (size_t i = 0; i < l->n; i++) {
        rate_entry *e = rate_get(m, l->ids[i], false);
        if (e)
            e->gen = m->sync_gen;
    }
    rate_entry **stale = malloc((m->nrates ? m->nrates : 1) * sizeof *stale);
    if (!stale)
        return;
    size_t n = 0, bucket = 0;
    hmap_entry *it = NULL, *he;
    while ((he = hmap_next(&m->rates, &bucket, &it))) {
        rate_entry *e = he->value;
        if (e->gen != m->sync_gen)
            stale[n++] = e;
    }
    for (size_t i = 0; i < n; i++) {
        anom_unlink(m, stale[i]);
        hmap_del(&m->rates, (const uint8_t *)stale[i]->id, stale[i]->id_len);
        free(stale[i]);
        m->nrates--;
    }
    free(stale);
}

static void reconcile(monitor *m)
{
    int64_t v = 0;
    if (registry_data_version(m->reg, &v) != REGISTRY_OK) {
        if (!m->reg_err)
            mlog(m, true, "monitor: reading the registry failed: %s", registry_errmsg(m->reg));
        m->reg_err = true;
        return;
    }
    if (m->reg_synced && v == m->reg_version)
        return;
    device_list l = {0};
    registry_status st = registry_read_begin(m->reg);
    if (st == REGISTRY_OK)
        st = registry_principal_list(m->reg, REGISTRY_DEVICE, collect_device, &l);
    for (size_t i = 0; st == REGISTRY_OK && i < l.n; i++) {
        interval_ctx ic = {0};
        st = registry_principal_settings(m->reg, l.ids[i], REPORT_INTERVAL_KEY, take_interval, &ic);
        l.intervals[i] = ic.found ? ic.min : m->cfg.default_report_interval_s;
    }
    registry_rollback(m->reg); /* ends the read snapshot */
    if (st != REGISTRY_OK || l.nomem) {
        if (!m->reg_err)
            mlog(m, true, "monitor: reading the registry failed: %s",
                 l.nomem ? "out of memory" : registry_errmsg(m->reg));
        m->reg_err = true;
        free(l.ids);
        free(l.intervals);
        return;
    }
    m->reg_err = false;
    /* Open device_offline alerts from before a restart: their devices start
     * offline, so that their return clears them. */
    open_ctx oc = {0};
    if (!m->reg_synced && m->store) {
        oc.cap = 65536;
        oc.ids = calloc(oc.cap, sizeof *oc.ids);
        alert_filter f = {.open_only = true, .kind = ALERT_DEVICE_OFFLINE};
        if (oc.ids)
            (void)alert_store_list(m->store, &f, collect_open, &oc);
    }
    int64_t now = waiter_mono_ms();
    pthread_mutex_lock(&m->lock);
    step_clock(m, now);
    liveness_sync_begin(m->live);
    for (size_t i = 0; i < l.n; i++) {
        if (i > 0 && i % SYNC_CHUNK == 0) {
            /* Let the loops in between chunks. */
            pthread_mutex_unlock(&m->lock);
            pthread_mutex_lock(&m->lock);
        }
        if (l.intervals[i])
            (void)liveness_watch(m->live, l.ids[i], l.intervals[i], now);
    }
    for (size_t i = 0; i < oc.n; i++) {
        bool watched = false;
        (void)liveness_is_offline(m->live, oc.ids[i], &watched);
        if (watched) {
            /* Its interval was set by the watch above: keep it. */
            (void)liveness_watch_offline(m->live, oc.ids[i], 0, now);
        } else {
            /* No longer watched (deleted, no interval): close it. */
            char subject[ALERT_SUBJECT_MAX + 1];
            device_subject(subject, sizeof subject, oc.ids[i]);
            alert a;
            alert_init(&a, ALERT_DEVICE_OFFLINE, ALERT_CLEAR, waiter_wall_ms(), subject);
            json_t *d = json_pack("{s:b}", "forgotten", 1);
            alert_set_details(&a, d);
            json_decref(d);
            push_alert(m, &a);
        }
    }
    liveness_sync_end(m->live, now);
    sync_rates(m, &l);
    pthread_mutex_unlock(&m->lock);
    free(oc.ids);
    free(l.ids);
    free(l.intervals);
    m->reg_version = v;
    m->reg_synced = true;
}

/* ---- the thread: certificates ------------------------------------------------------- */

static void cert_verdict(monitor *m, const char *subject, int64_t not_after, int64_t now_s)
{
    int64_t warn = (int64_t)m->cfg.cert_warn_days * 86400;
    size_t len = strlen(subject);
    cert_mark *mark = hmap_get(&m->certs, (const uint8_t *)subject, len);
    bool soon = not_after - now_s < warn;
    if (mark)
        mark->gen = m->cert_gen;
    if (soon && !mark) {
        mark = calloc(1, sizeof *mark);
        if (mark) {
            utf8_clip_copy(mark->subject, ALERT_SUBJECT_MAX, subject);
            mark->gen = m->cert_gen;
            if (!hmap_put(&m->certs, (const uint8_t *)mark->subject, strlen(mark->subject), mark)) {
                free(mark);
                mark = NULL;
            }
        }
        char when[32];
        alert_format_time(not_after * 1000, when);
        alert a;
        alert_init(&a, ALERT_CERT_EXPIRY, ALERT_RAISE, now_s * 1000, subject);
        json_t *d =
            json_pack("{s:s, s:I, s:b}", "not_after", when, "days_left",
                      (json_int_t)((not_after - now_s) / 86400), "expired", not_after <= now_s);
        alert_set_details(&a, d);
        json_decref(d);
        handle_alert(m, &a);
    } else if (!soon && mark) {
        hmap_del(&m->certs, (const uint8_t *)mark->subject, strlen(mark->subject));
        alert a;
        alert_init(&a, ALERT_CERT_EXPIRY, ALERT_CLEAR, now_s * 1000, subject);
        free(mark);
        handle_alert(m, &a);
    }
}

typedef struct newest_cert {
    int64_t not_after;
    bool found;
} newest_cert;

static int take_newest(void *ctx, const registry_cert *c)
{
    newest_cert *n = ctx;
    if (!c->revoked && (!n->found || c->not_after > n->not_after)) {
        n->not_after = c->not_after;
        n->found = true;
    }
    return 0;
}

typedef struct principal_list {
    registry_principal *p;
    size_t n, cap;
} principal_list;

static int collect_principal(void *ctx, const registry_principal *p)
{
    principal_list *l = ctx;
    if (p->status != REGISTRY_ACTIVE)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        registry_principal *np = realloc(l->p, cap * sizeof *np);
        if (!np)
            return 1;
        l->p = np;
        l->cap = cap;
    }
    l->p[l->n++] = *p;
    return 0;
}

static int collect_cert_alert(void *ctx, const alert_row *r)
{
    monitor *m = ctx;
    cert_mark *mark = calloc(1, sizeof *mark);
    if (!mark)
        return 1;
    utf8_clip_copy(mark->subject, ALERT_SUBJECT_MAX, r->subject);
    mark->gen = m->cert_gen;
    if (hmap_get(&m->certs, (const uint8_t *)mark->subject, strlen(mark->subject)) ||
        !hmap_put(&m->certs, (const uint8_t *)mark->subject, strlen(mark->subject), mark))
        free(mark);
    return 0;
}

static void check_certs(monitor *m)
{
    int64_t now_s = waiter_wall_ms() / 1000;
    if (!m->certs_loaded && m->store) {
        alert_filter f = {.open_only = true, .kind = ALERT_CERT_EXPIRY};
        (void)alert_store_list(m->store, &f, collect_cert_alert, m);
        m->certs_loaded = true;
    }
    m->cert_gen++;
    principal_list l = {0};
    registry_status st = registry_read_begin(m->reg);
    if (st == REGISTRY_OK)
        st = registry_principal_list(m->reg, 0, collect_principal, &l);
    char subject[ALERT_SUBJECT_MAX + 1];
    for (size_t i = 0; st == REGISTRY_OK && i < l.n; i++) {
        newest_cert nc = {0};
        st = registry_cert_list(m->reg, l.p[i].id, take_newest, &nc);
        if (st == REGISTRY_OK && nc.found) {
            snprintf(subject, sizeof subject, "%s:%s", registry_kind_name(l.p[i].kind), l.p[i].id);
            cert_verdict(m, subject, nc.not_after, now_s);
        }
    }
    registry_rollback(m->reg);
    free(l.p);
    if (st != REGISTRY_OK) {
        /* Keep what is raised: an unreadable registry proves nothing. */
        mlog(m, true, "monitor: certificate check: %s", registry_errmsg(m->reg));
        return;
    }
    for (size_t i = 0; i < m->ncert_files; i++) {
        X509 *cert = NULL;
        pki_error perr;
        int64_t na = 0;
        const char *base = strrchr(m->cert_files[i], '/');
        snprintf(subject, sizeof subject, "hub:%s", base ? base + 1 : m->cert_files[i]);
        if (pki_cert_read(&cert, m->cert_files[i], &perr) == PKI_OK &&
            pki_cert_not_after(cert, &na, &perr) == PKI_OK)
            cert_verdict(m, subject, na, now_s);
        else
            mlog(m, true, "monitor: cannot read %s: %s", m->cert_files[i], perr.msg);
        X509_free(cert);
    }
    /* Raised for a principal that is gone (deleted, revoked): clear. */
    cert_mark *stale[256];
    size_t n = 0, bucket = 0;
    hmap_entry *it = NULL, *he;
    while (n < 256 && (he = hmap_next(&m->certs, &bucket, &it))) {
        cert_mark *mark = he->value;
        if (mark->gen != m->cert_gen)
            stale[n++] = mark;
    }
    for (size_t i = 0; i < n; i++) {
        hmap_del(&m->certs, (const uint8_t *)stale[i]->subject, strlen(stale[i]->subject));
        alert a;
        alert_init(&a, ALERT_CERT_EXPIRY, ALERT_CLEAR, now_s * 1000, stale[i]->subject);
        json_t *d = json_pack("{s:b}", "forgotten", 1);
        alert_set_details(&a, d);
        json_decref(d);
        free(stale[i]);
        handle_alert(m, &a);
    }
}

/* ---- the thread: the rest ----------------------------------------------------------- */

static void check_clock(monitor *m, int64_t now)
{
    int64_t offset = waiter_wall_ms() - now;
    int64_t jump = offset - m->clock_offset;
    m->clock_offset = offset;
    if (jump < 0 ? -jump < (int64_t)m->cfg.clock_jump_s * 1000
                 : jump < (int64_t)m->cfg.clock_jump_s * 1000)
        return;
    alert a;
    alert_init(&a, ALERT_CLOCK_JUMP, ALERT_EVENT, waiter_wall_ms(), "hub");
    json_t *d = json_pack("{s:I}", "jump_ms", (json_int_t)jump);
    alert_set_details(&a, d);
    json_decref(d);
    handle_alert(m, &a);
}

/* Devices flagged anomalous that went quiet: let their buckets close. */
static void idle_rates(monitor *m, int64_t now)
{
    for (rate_entry *e = m->anom, *next; e; e = next) {
        next = e->anom_next;
        rate_change ch = rate_observe(&m->cfg.rate, &e->st, 0, now);
        if (ch != RATE_SAME)
            rate_alert(m, e, ch, now);
    }
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static void wait_until(monitor *m, int64_t when)
{
    m->wake_at = when;
    waiter_sleep(&m->lock, &m->cond, when);
    m->wake_at = INT64_MIN;
}

static void *run(void *arg)
{
    monitor *m = arg;
    int64_t bucket_ms = m->cfg.rate.bucket_ms > 0 ? m->cfg.rate.bucket_ms : 10000;
    m->clock_offset = waiter_wall_ms() - waiter_mono_ms();
    alert *batch = malloc(m->aq_cap * sizeof *batch);
    if (!batch) {
        mlog(m, true, "monitor: out of memory: the monitor thread stops");
        return NULL;
    }
    pthread_mutex_lock(&m->lock);
    m->wake_at = INT64_MIN;
    for (;;) {
        int64_t now = waiter_mono_ms();
        step_clock(m, now);
        bool stopping = m->stopping;
        int64_t next = liveness_advance(m->live, now);
        if (m->refusals) {
            int64_t wall = waiter_wall_ms();
            if (stopping)
                audit_refusals_flush(m->refusals, wall);
            int64_t r = audit_refusals_tick(m->refusals, wall);
            if (r != INT64_MAX)
                next = min64(next, now + (r - wall));
        }
        if (now >= m->next_rate_ms) {
            idle_rates(m, now);
            m->next_rate_ms = now + bucket_ms;
        }
        if (m->anom)
            next = min64(next, m->next_rate_ms);
        size_t n = 0;
        while (m->aq_len > 0) {
            batch[n++] = m->aq[m->aq_head];
            m->aq_head = (m->aq_head + 1) % m->aq_cap;
            m->aq_len--;
        }
        bool flush =
            stopping || (m->uq_len > 0 && now >= m->next_flush_ms) || m->uq_len >= m->uq_cap / 2;
        pthread_mutex_unlock(&m->lock);

        for (size_t i = 0; i < n; i++)
            handle_alert(m, &batch[i]);
        if (flush || (m->nunwritten > 0 && now >= m->next_flush_ms)) {
            flush_audit(m);
            m->next_flush_ms = now + m->cfg.audit_flush_ms;
        }
        if (m->reg && now >= m->next_reg_ms) {
            reconcile(m);
            m->next_reg_ms = now + m->cfg.registry_poll_ms;
        }
        if (m->reg && now >= m->next_cert_ms) {
            check_certs(m);
            m->next_cert_ms = now + CERT_CHECK_MS;
        }
        if (now >= m->next_prune_ms) {
            open_store(m);
            int64_t open = 0;
            if (m->store) {
                int64_t keep = (int64_t)m->cfg.alert_retention_days * 86400 * 1000;
                (void)alert_store_prune(m->store, waiter_wall_ms() - keep, m->cfg.alert_max_rows);
            }
            if (m->store && alert_store_count_open(m->store, &open) == MONITOR_OK) {
                pthread_mutex_lock(&m->lock);
                m->stats.alerts_open = open;
                pthread_mutex_unlock(&m->lock);
            }
            m->next_prune_ms = now + PRUNE_MS;
        }
        if (now >= m->next_clock_ms) {
            check_clock(m, now);
            m->next_clock_ms = now + CLOCK_CHECK_MS;
        }
        pthread_mutex_lock(&m->lock);
        if (stopping && m->aq_len == 0 && m->uq_len == 0)
            break;
        if (m->aq_len > 0 || stopping)
            continue;
        next = min64(next, m->next_reg_ms);
        next = min64(next, m->next_cert_ms);
        next = min64(next, m->next_prune_ms);
        next = min64(next, m->next_clock_ms);
        if (m->uq_len > 0 || m->nunwritten > 0)
            next = min64(next, m->next_flush_ms);
        next = min64(next, liveness_next(m->live));
        if (next > waiter_mono_ms())
            wait_until(m, next);
    }
    pthread_mutex_unlock(&m->lock);
    free(batch);
    return NULL;
}

/* ---- life cycle ------------------------------------------------------------------- */

static void free_trackers(monitor *m)
{
    liveness_free(m->live);
    burst_free(m->hs_burst);
    burst_free(m->pub_burst);
    audit_refusals_free(m->refusals);
    size_t bucket = 0;
    hmap_entry *it = NULL, *he;
    rate_entry **all = malloc((m->nrates ? m->nrates : 1) * sizeof *all);
    size_t n = 0;
    while (all && (he = hmap_next(&m->rates, &bucket, &it)))
        all[n++] = he->value;
    for (size_t i = 0; i < n; i++)
        free(all[i]);
    free(all);
    hmap_free(&m->rates);
    cert_mark **marks = malloc((m->certs.count ? m->certs.count : 1) * sizeof *marks);
    n = 0;
    bucket = 0;
    it = NULL;
    while (marks && (he = hmap_next(&m->certs, &bucket, &it)))
        marks[n++] = he->value;
    for (size_t i = 0; i < n; i++)
        free(marks[i]);
    free(marks);
    hmap_free(&m->certs);
}

static void destroy(monitor *m)
{
    free_trackers(m);
    for (size_t i = 0; m->uq && i < m->uq_cap; i++)
        pending_clear(&m->uq[i]);
    for (size_t i = 0; i < m->nunwritten; i++)
        pending_clear(&m->unwritten[i]);
    free(m->uq);
    free(m->unwritten);
    free(m->aq);
    alert_store_close(m->store);
    audit_close(m->alog);
    audit_key_free(m->akey);
    registry_close(m->reg);
    for (size_t i = 0; i < m->ncert_files; i++)
        free(m->cert_files[i]);
    free(m->cert_files);
    free(m->hub_name);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int count_rows(void *ctx, const alert_row *r)
{
    (void)r;
    (*(int64_t *)ctx)++;
    return 0;
}

static monitor_status init_trackers(monitor *m)
{
    const monitor_config *c = &m->cfg;
    liveness_config lc = {.grace_ms = (int64_t)c->offline_grace_s * 1000,
                          .lost_grace_ms = (int64_t)c->lost_grace_s * 1000,
                          .max_devices = c->max_devices};
    m->live = liveness_new(&lc, on_liveness, m);
    burst_config hb = {.window_ms = (int64_t)c->burst_window_s * 1000,
                       .threshold = c->handshake_burst,
                       .max_keys = c->burst_max_keys};
    burst_config pb = hb;
    pb.threshold = c->refused_publish_burst;
    /* A threshold of 0 turns that detector off. */
    m->hs_burst = hb.threshold ? burst_new(&hb) : NULL;
    m->pub_burst = pb.threshold ? burst_new(&pb) : NULL;
    if (c->audit_refusals) {
        audit_refusals_config rc = {.window_ms = (int64_t)c->refusal_window_s * 1000,
                                    .max_keys = c->refusal_max_keys};
        m->refusals = audit_refusals_new(&rc, on_refusal_entry, m);
    }
    bool ok = hmap_init(&m->rates) && hmap_init(&m->certs);
    m->aq_cap = m->uq_cap = c->queue_max ? c->queue_max : 1024;
    m->aq = calloc(m->aq_cap, sizeof *m->aq);
    m->uq = calloc(m->uq_cap, sizeof *m->uq);
    m->unwritten = calloc(m->uq_cap, sizeof *m->unwritten);
    if (!ok || !m->live || (hb.threshold && !m->hs_burst) || (pb.threshold && !m->pub_burst) ||
        (c->audit_refusals && !m->refusals) || !m->aq || !m->uq || !m->unwritten)
        return MONITOR_NOMEM;
    return MONITOR_OK;
}

monitor_status monitor_new(const monitor_config *cfg, monitor **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg || !cfg->data_dir) {
        if (err && errlen)
            snprintf(err, errlen, "monitor: no data directory");
        return MONITOR_INVALID;
    }
    monitor *m = calloc(1, sizeof *m);
    if (!m)
        return MONITOR_NOMEM;
    m->cfg = *cfg;
    if (m->cfg.burst_window_s == 0)
        m->cfg.burst_window_s = 60;
    if (m->cfg.registry_poll_ms == 0)
        m->cfg.registry_poll_ms = 10000;
    if (m->cfg.audit_flush_ms == 0)
        m->cfg.audit_flush_ms = 5000;
    if (m->cfg.clock_jump_s == 0)
        m->cfg.clock_jump_s = 30;
    if (m->cfg.max_devices == 0)
        m->cfg.max_devices = 1000000;
    if (!waiter_init(&m->lock, &m->cond)) {
        free(m);
        return MONITOR_IO;
    }
    atomic_init(&m->store_failed, false);
    monitor_status st = MONITOR_OK;
    bool paths =
        make_path(m->registry_path, cfg->data_dir, "registry.db") &&
        make_path(m->audit_key_path, cfg->data_dir, "audit.key") &&
        make_path(m->alerts_path, cfg->data_dir, cfg->alerts_path ? cfg->alerts_path : "alerts.db");
    m->hub_name = cfg->hub_name ? strdup(cfg->hub_name) : NULL;
    m->cfg.hub_name = m->hub_name;
    m->cert_files = cfg->ncert_files ? calloc(cfg->ncert_files, sizeof *m->cert_files) : NULL;
    for (size_t i = 0; m->cert_files && i < cfg->ncert_files; i++) {
        char p[PATH_MAX_LEN];
        if (make_path(p, cfg->data_dir, cfg->cert_files[i]) && (m->cert_files[i] = strdup(p)))
            m->ncert_files++;
    }
    if (!paths)
        st = MONITOR_INVALID;
    else if (init_trackers(m) != MONITOR_OK)
        st = MONITOR_NOMEM;
    if (st != MONITOR_OK) {
        if (err && errlen)
            snprintf(err, errlen, "monitor: %s", paths ? "out of memory" : "path too long");
        destroy(m);
        return st;
    }
    /* The files: failures are reported and retried, never fatal — the hub
     * keeps serving and says so. */
    open_store(m);
    open_audit(m);
    char rerr[320];
    if (registry_open(m->registry_path, REGISTRY_OPEN_READONLY, &m->reg, rerr, sizeof rerr) !=
        REGISTRY_OK)
        mlog(m, true, "monitor: cannot open the registry: %s (no liveness, no certificate checks)",
             rerr);
    if (m->store) {
        /* A store failure left open by the previous run stays open until
         * the broker reports a commit that works. */
        int64_t open = 0, failures = 0;
        alert_filter f = {.open_only = true, .kind = ALERT_STORE_FAILURE};
        if (alert_store_list(m->store, &f, count_rows, &failures) == MONITOR_OK && failures > 0)
            atomic_store(&m->store_failed, true);
        if (alert_store_count_open(m->store, &open) == MONITOR_OK)
            m->stats.alerts_open = open;
    }
    if (cfg->webhook_enabled) {
        webhook_config wc = cfg->webhook;
        wc.heartbeat_fill = heartbeat_fill;
        wc.heartbeat_ctx = m;
        if (!wc.hub_name)
            wc.hub_name = m->hub_name;
        if (!wc.log) {
            wc.log = cfg->log;
            wc.log_ctx = cfg->log_ctx;
        }
        char werr[256];
        st = webhook_new(&wc, &m->wh, werr, sizeof werr);
        if (st != MONITOR_OK) {
            if (err && errlen)
                snprintf(err, errlen, "webhook: %s", werr);
            destroy(m);
            return st;
        }
    }
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        webhook_free(m->wh, 0);
        destroy(m);
        if (err && errlen)
            snprintf(err, errlen, "monitor: cannot start its thread");
        return MONITOR_IO;
    }
    m->started = true;
    *out = m;
    return MONITOR_OK;
}

void monitor_free(monitor *m)
{
    if (!m)
        return;
    if (m->started) {
        pthread_mutex_lock(&m->lock);
        m->stopping = true;
        wake(m);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->thread, NULL);
    }
    webhook_free(m->wh, 2000);
    m->wh = NULL;
    destroy(m);
}

void monitor_get_stats(monitor *m, monitor_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->stats;
    out->devices_watched = liveness_count(m->live);
    out->devices_offline = liveness_offline_count(m->live);
    pthread_mutex_unlock(&m->lock);
    if (m->wh)
        webhook_get_stats(m->wh, &out->webhook);
}
