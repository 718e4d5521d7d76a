/*
 * alert.c — alert values: names, severities, bounded details, and the JSON
 * and topic forms that leave the hub.
 */
#include "alert.h"

#include "utf8clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const KIND_NAMES[] = {
    [ALERT_DEVICE_OFFLINE] = "device_offline",
    [ALERT_HANDSHAKE_BURST] = "handshake_burst",
    [ALERT_REFUSED_PUBLISH_BURST] = "refused_publish_burst",
    [ALERT_RATE_ANOMALY] = "rate_anomaly",
    [ALERT_CERT_EXPIRY] = "cert_expiry",
    [ALERT_STORE_FAILURE] = "store_failure",
    [ALERT_CLOCK_JUMP] = "clock_jump",
};

const char *monitor_status_name(monitor_status st)
{
    switch (st) {
    case MONITOR_OK:
        return "ok";
    case MONITOR_INVALID:
        return "invalid";
    case MONITOR_NOT_FOUND:
        return "not found";
    case MONITOR_BUSY:
        return "busy";
    case MONITOR_CORRUPT:
        return "corrupt";
    case MONITOR_IO:
        return "io";
    case MONITOR_NOMEM:
        return "out of memory";
    }
    return "unknown";
}

const char *alert_kind_name(alert_kind kind)
{
    if (kind < ALERT_DEVICE_OFFLINE || kind > ALERT_KIND_LAST)
        return NULL;
    return KIND_NAMES[kind];
}

alert_kind alert_kind_parse(const char *name)
{
    if (!name)
        return 0;
    for (int k = ALERT_DEVICE_OFFLINE; k <= ALERT_KIND_LAST; k++)
        if (strcmp(KIND_NAMES[k], name) == 0)
            return (alert_kind)k;
    return 0;
}

const char *alert_state_name(alert_state state)
{
    switch (state) {
    case ALERT_RAISE:
        return "raise";
    case ALERT_CLEAR:
        return "clear";
    case ALERT_EVENT:
        return "event";
    }
    return "unknown";
}

const char *alert_severity_name(alert_severity sev)
{
    switch (sev) {
    case ALERT_INFO:
        return "info";
    case ALERT_WARNING:
        return "warning";
    case ALERT_CRITICAL:
        return "critical";
    }
    return "unknown";
}

alert_severity alert_severity_of(alert_kind kind, alert_state state)
{
    if (state == ALERT_CLEAR)
        return ALERT_INFO;
    if (kind == ALERT_STORE_FAILURE)
        return ALERT_CRITICAL;
    return ALERT_WARNING;
}

void alert_init(alert *a, alert_kind kind, alert_state state, int64_t time_ms, const char *subject)
{
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->state = state;
    a->time_ms = time_ms;
    utf8_clip_copy(a->subject, ALERT_SUBJECT_MAX, subject);
    memcpy(a->details, "{}", 3);
}

bool alert_set_details(alert *a, const json_t *details)
{
    if (!details) {
        memcpy(a->details, "{}", 3);
        return true;
    }
    if (!json_is_object(details))
        return false;
    size_t n = json_dumpb(details, a->details, ALERT_DETAILS_MAX,
                          JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (n == 0 || n > ALERT_DETAILS_MAX) {
        static const char cut[] = "{\"truncated\":true}";
        memcpy(a->details, cut, sizeof cut);
        return true;
    }
    a->details[n] = '\0';
    return true;
}

void alert_format_time(int64_t time_ms, char buf[32])
{
    time_t t = (time_t)(time_ms / 1000);
    struct tm tm;
    char base[24];
    if (time_ms < 0 || !gmtime_r(&t, &tm) ||
        strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(buf, 32, "@%lld", (long long)time_ms);
    else
        snprintf(buf, 32, "%s.%03dZ", base, (int)(time_ms % 1000));
}

json_t *alert_to_json(const alert *a, const char *hub)
{
    char when[32];
    alert_format_time(a->time_ms, when);
    json_t *details = json_loads(a->details, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(details)) {
        json_decref(details);
        details = json_object();
    }
    const char *kind = alert_kind_name(a->kind);
    json_t *subject = json_string(a->subject); /* NULL if not UTF-8: then "?" */
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:I, s:o}", "type", "alert", "kind",
                          kind ? kind : "unknown", "state", alert_state_name(a->state), "severity",
                          alert_severity_name(alert_severity_of(a->kind, a->state)), "subject",
                          subject ? subject : json_string("?"), "time", when, "time_ms",
                          (json_int_t)a->time_ms, "details", details);
    if (o && hub && hub[0]) {
        json_t *h = json_string(hub);
        if (h)
            json_object_set_new(o, "hub", h);
    }
    return o;
}

bool alert_topic(const alert *a, char *buf, size_t len)
{
    const char *kind = alert_kind_name(a->kind);
    int n = snprintf(buf, len, "$moat/alerts/%s/%s", kind ? kind : "unknown",
                     a->subject[0] ? a->subject : "-");
    if (n < 0 || (size_t)n >= len)
        return false;
    /* Only the subject part can hold these; keep it one level. */
    size_t start = strlen("$moat/alerts/") + strlen(kind ? kind : "unknown") + 1;
    for (size_t i = start; buf[i]; i++)
        if (buf[i] == '/' || buf[i] == '+' || buf[i] == '#')
            buf[i] = '_';
    return true;
}
