/*
 * alert.h — what the monitor reports: one alert value, its kinds, and its
 * JSON form (the webhook body and the $moat/alerts/... payload), plus the
 * monitor module's status enum.
 *
 * An alert is a fixed-size value (no pointers), so the hub's event loops can
 * hand one to the monitor thread by copying it into a bounded queue,
 * without allocating and without sharing memory.
 *
 * Kinds and their states:
 *   device_offline         raise / clear   a device silent past its interval + grace
 *   handshake_burst        event           many refused handshakes from one address
 *   refused_publish_burst  event           many refused publishes from one principal
 *   rate_anomaly           raise / clear   a device publishing far above its usual rate
 *   cert_expiry            raise / clear   a certificate close to (or past) its end
 *   store_failure          raise / clear   the hub's store failing (disk full, I/O error)
 *   clock_jump             event           the wall clock moved against the monotonic clock
 */
#ifndef MOAT_MONITOR_ALERT_H
#define MOAT_MONITOR_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef enum monitor_status {
    MONITOR_OK = 0,
    MONITOR_INVALID,   /* an argument breaks the rules */
    MONITOR_NOT_FOUND, /* no such file, row or alert */
    MONITOR_BUSY,      /* another writer held the database too long */
    MONITOR_CORRUPT,   /* stored data breaks the schema's rules */
    MONITOR_IO,        /* SQLite, the file system, libcurl or a thread failed */
    MONITOR_NOMEM
} monitor_status;

const char *monitor_status_name(monitor_status st);

typedef enum alert_kind {
    ALERT_DEVICE_OFFLINE = 1,
    ALERT_HANDSHAKE_BURST,
    ALERT_REFUSED_PUBLISH_BURST,
    ALERT_RATE_ANOMALY,
    ALERT_CERT_EXPIRY,
    ALERT_STORE_FAILURE,
    ALERT_CLOCK_JUMP
} alert_kind;

#define ALERT_KIND_LAST ALERT_CLOCK_JUMP

typedef enum alert_state {
    ALERT_RAISE = 1, /* a condition started (stays open until cleared) */
    ALERT_CLEAR,     /* the condition ended */
    ALERT_EVENT      /* something happened; nothing to clear */
} alert_state;

typedef enum alert_severity { ALERT_INFO = 1, ALERT_WARNING, ALERT_CRITICAL } alert_severity;

#define ALERT_SUBJECT_MAX 127u /* bytes of subject */
#define ALERT_DETAILS_MAX 767u /* bytes of the details object's text */

typedef struct alert {
    alert_kind kind;
    alert_state state;
    int64_t time_ms; /* wall clock, milliseconds since the epoch */
    /* What it is about: a device id, "service:NAME", "address:IP",
     * "hub", "cert:server.crt" ... */
    char subject[ALERT_SUBJECT_MAX + 1];
    char details[ALERT_DETAILS_MAX + 1]; /* a compact JSON object ("{}" if none) */
} alert;

/* "device_offline", ...; NULL for an unknown kind. */
const char *alert_kind_name(alert_kind kind);
/* The kind named name, or 0. */
alert_kind alert_kind_parse(const char *name);
/* "raise", "clear", "event". */
const char *alert_state_name(alert_state state);
/* "info", "warning", "critical". */
const char *alert_severity_name(alert_severity sev);
/* How loud: a clear is info; store_failure is critical; the rest warn. */
alert_severity alert_severity_of(alert_kind kind, alert_state state);

/* Fill a with kind, state, time and subject (cut to ALERT_SUBJECT_MAX at a
 * UTF-8 boundary) and empty details. */
void alert_init(alert *a, alert_kind kind, alert_state state, int64_t time_ms, const char *subject);

/* Store details (a JSON object, not consumed; NULL = {}). An object whose
 * text does not fit becomes {"truncated":true}. False if not an object. */
bool alert_set_details(alert *a, const json_t *details);

/* The JSON form: {"type":"alert","hub":...,"kind":...,"state":...,
 * "severity":...,"subject":...,"time":"ISO 8601","time_ms":...,
 * "details":{...}}. hub may be NULL. NULL when out of memory. */
json_t *alert_to_json(const alert *a, const char *hub);

/* The MQTT topic for services: "$moat/alerts/KIND/SUBJECT", with '/', '+'
 * and '#' in the subject replaced by '_' so it stays one topic level.
 * False if it does not fit in len. */
bool alert_topic(const alert *a, char *buf, size_t len);

/* ISO 8601 UTC with milliseconds: "2025-01-31T12:00:00.250Z". */
void alert_format_time(int64_t time_ms, char buf[32]);

#endif /* MOAT_MONITOR_ALERT_H */
