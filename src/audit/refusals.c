/*
 * refusals.c — the refusal aggregator (see refusals.h for the rules).
 *
 * Groups live in a hash map (randomly keyed SipHash, so an attacker who
 * picks addresses and topics cannot force collisions) and in a FIFO list in
 * the order their windows opened. Windows all have the same length, so that
 * order is also the order in which they close: tick only ever looks at the
 * front of the list, never scans every group.
 */
#include "refusals.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "utf8clip.h"

#define FIELD_ACTION    24u
#define FIELD_SOURCE    64u
#define FIELD_PRINCIPAL 80u
#define FIELD_REASON    64u
#define FIELD_EXAMPLE   160u

typedef struct group {
    char action[FIELD_ACTION + 1];
    char source[FIELD_SOURCE + 1];
    char principal[FIELD_PRINCIPAL + 1];
    char reason[FIELD_REASON + 1];
    char example[FIELD_EXAMPLE + 1];
    uint8_t key[FIELD_ACTION + FIELD_SOURCE + FIELD_PRINCIPAL + FIELD_REASON + 4];
    size_t key_len;
    int64_t opened_ms, last_ms;
    uint64_t more; /* refusals after the first in this window */
    struct group *next;
} group;

struct audit_refusals {
    int64_t window_ms;
    size_t max_keys;
    audit_refusals_emit emit;
    void *ctx;
    hmap map;
    group *head, *tail;
    size_t ngroups;
    /* The overflow group: refusals of groups that did not fit. */
    uint64_t overflow_count;
    int64_t overflow_opened_ms, overflow_last_ms;
    audit_refusals_stats stats;
};

audit_refusals *audit_refusals_new(const audit_refusals_config *cfg, audit_refusals_emit emit,
                                   void *ctx)
{
    audit_refusals *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->window_ms = cfg && cfg->window_ms > 0 ? cfg->window_ms : 60000;
    r->max_keys = cfg && cfg->max_keys > 0 ? cfg->max_keys : 1024;
    r->emit = emit;
    r->ctx = ctx;
    if (!hmap_init(&r->map)) {
        free(r);
        return NULL;
    }
    return r;
}

void audit_refusals_free(audit_refusals *r)
{
    if (!r)
        return;
    for (group *g = r->head, *n; g; g = n) {
        n = g->next;
        free(g);
    }
    hmap_free(&r->map);
    free(r);
}

static void set_str(json_t *o, const char *k, const char *v)
{
    json_t *s = v && v[0] ? json_string(v) : NULL; /* NULL for invalid UTF-8: left out */
    if (s)
        json_object_set_new(o, k, s);
}

static void emit_record(audit_refusals *r, int64_t time_ms, const char *actor, const char *action,
                        const char *subject, json_t *details)
{
    char act[FIELD_ACTION + 16];
    snprintf(act, sizeof act, "refused.%s", action);
    audit_record rec = {.time = time_ms / 1000,
                        .actor = actor,
                        .action = act,
                        .subject = subject,
                        .outcome = "refused",
                        .details = details};
    r->stats.emitted++;
    if (r->emit)
        r->emit(r->ctx, &rec);
    json_decref(details);
}

static void actor_of(const group *g, char *buf, size_t len)
{
    if (g->principal[0])
        snprintf(buf, len, "%s", g->principal);
    else
        snprintf(buf, len, "address:%s", g->source[0] ? g->source : "?");
}

static json_t *group_details(const group *g, uint64_t count)
{
    json_t *d = json_object();
    if (!d)
        return NULL;
    set_str(d, "source", g->source);
    set_str(d, "reason", g->reason);
    json_object_set_new(d, "count", json_integer((json_int_t)count));
    return d;
}

/* Close g's window: a summary if more refusals followed the first. */
static void close_group(audit_refusals *r, group *g)
{
    if (g->more > 0) {
        char actor[FIELD_PRINCIPAL + FIELD_SOURCE + 16];
        actor_of(g, actor, sizeof actor);
        json_t *d = group_details(g, g->more);
        if (d) {
            json_object_set_new(d, "summary", json_true());
            json_object_set_new(d, "from", json_integer((json_int_t)(g->opened_ms / 1000)));
            json_object_set_new(d, "to", json_integer((json_int_t)(g->last_ms / 1000)));
        }
        emit_record(r, g->last_ms, actor, g->action, g->example, d);
    }
    hmap_del(&r->map, g->key, g->key_len);
    r->ngroups--;
}

static void close_overflow(audit_refusals *r)
{
    json_t *d = json_object();
    if (d) {
        json_object_set_new(d, "count", json_integer((json_int_t)r->overflow_count));
        json_object_set_new(d, "overflow", json_true());
        json_object_set_new(d, "from", json_integer((json_int_t)(r->overflow_opened_ms / 1000)));
        json_object_set_new(d, "to", json_integer((json_int_t)(r->overflow_last_ms / 1000)));
    }
    /* Many sources at once: the hub itself is the one reporting. */
    emit_record(r, r->overflow_last_ms, "hub", "any", "", d);
    r->overflow_count = 0;
}

void audit_refusals_note(audit_refusals *r, int64_t now_ms, const char *action, const char *source,
                         const char *principal, const char *reason, const char *example)
{
    r->stats.noted++;
    group probe;
    utf8_clip_copy(probe.action, FIELD_ACTION, action && action[0] ? action : "access");
    utf8_clip_copy(probe.source, FIELD_SOURCE, source);
    utf8_clip_copy(probe.principal, FIELD_PRINCIPAL, principal);
    utf8_clip_copy(probe.reason, FIELD_REASON, reason);
    /* The key: the four fields with their NULs, unambiguous. */
    size_t k = 0;
    const char *parts[] = {probe.action, probe.source, probe.principal, probe.reason};
    for (size_t i = 0; i < 4; i++) {
        size_t n = strlen(parts[i]) + 1;
        memcpy(probe.key + k, parts[i], n);
        k += n;
    }
    probe.key_len = k;
    group *g = hmap_get(&r->map, probe.key, probe.key_len);
    if (g) {
        g->more++;
        g->last_ms = now_ms;
        return;
    }
    if (r->ngroups >= r->max_keys) {
        if (r->overflow_count == 0)
            r->overflow_opened_ms = now_ms;
        r->overflow_count++;
        r->overflow_last_ms = now_ms;
        r->stats.overflowed++;
        return;
    }
    g = malloc(sizeof *g);
    if (!g) {
        r->stats.overflowed++; /* counted, even if not kept apart */
        if (r->overflow_count++ == 0)
            r->overflow_opened_ms = now_ms;
        r->overflow_last_ms = now_ms;
        return;
    }
    *g = probe;
    utf8_clip_copy(g->example, FIELD_EXAMPLE, example);
    g->opened_ms = g->last_ms = now_ms;
    g->more = 0;
    g->next = NULL;
    if (!hmap_put(&r->map, g->key, g->key_len, g)) {
        free(g);
        r->stats.overflowed++;
        if (r->overflow_count++ == 0)
            r->overflow_opened_ms = now_ms;
        r->overflow_last_ms = now_ms;
        return;
    }
    if (r->tail)
        r->tail->next = g;
    else
        r->head = g;
    r->tail = g;
    r->ngroups++;
    char actor[FIELD_PRINCIPAL + FIELD_SOURCE + 16];
    actor_of(g, actor, sizeof actor);
    emit_record(r, now_ms, actor, g->action, g->example, group_details(g, 1));
}

int64_t audit_refusals_tick(audit_refusals *r, int64_t now_ms)
{
    while (r->head && now_ms >= r->head->opened_ms + r->window_ms) {
        group *g = r->head;
        r->head = g->next;
        if (!r->head)
            r->tail = NULL;
        close_group(r, g);
        free(g);
    }
    if (r->overflow_count > 0 && now_ms >= r->overflow_opened_ms + r->window_ms)
        close_overflow(r);
    int64_t next = INT64_MAX;
    if (r->head)
        next = r->head->opened_ms + r->window_ms;
    if (r->overflow_count > 0 && r->overflow_opened_ms + r->window_ms < next)
        next = r->overflow_opened_ms + r->window_ms;
    return next;
}

void audit_refusals_flush(audit_refusals *r, int64_t now_ms)
{
    (void)now_ms;
    while (r->head) {
        group *g = r->head;
        r->head = g->next;
        close_group(r, g);
        free(g);
    }
    r->tail = NULL;
    if (r->overflow_count > 0)
        close_overflow(r);
}

void audit_refusals_get_stats(const audit_refusals *r, audit_refusals_stats *out)
{
    *out = r->stats;
    out->groups = r->ngroups;
}
