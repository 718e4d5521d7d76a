/*
 * config.c — load moatd.conf with inih over the defaults (see config.h).
 *
 * Numbers are parsed with strtoull and checked for trailing text, overflow
 * and their allowed range; never with atoi.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor.h"

static void monitor_defaults(hub_monitor_settings *m, const char *data_dir)
{
    monitor_config d;
    monitor_config_defaults(&d, data_dir);
    memset(m, 0, sizeof(*m));
    m->default_report_interval_s = d.default_report_interval_s;
    m->offline_grace_s = d.offline_grace_s;
    m->lost_grace_s = d.lost_grace_s;
    m->handshake_burst = d.handshake_burst;
    m->refused_publish_burst = d.refused_publish_burst;
    m->burst_window_s = d.burst_window_s;
    m->rate_factor = d.rate.factor > 0 ? d.rate.factor : 10;
    m->rate_min = d.rate.min_rate > 0 ? d.rate.min_rate : 5;
    m->cert_warn_days = d.cert_warn_days;
    m->clock_jump_s = d.clock_jump_s;
    m->audit_refusals = d.audit_refusals;
    m->refusal_max_keys = (uint32_t)d.refusal_max_keys;
    m->alert_retention_days = d.alert_retention_days;
    m->alert_max_rows = (uint32_t)d.alert_max_rows;
    m->registry_poll_ms = d.registry_poll_ms;
    m->audit_flush_ms = d.audit_flush_ms;
    m->heartbeat_interval_s = 60;
    m->webhook_queue = 1000;
    m->webhook_max_attempts = 20;
    m->webhook_retry_max_s = 300;
}

void hub_config_defaults(hub_config *c, const char *data_dir)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->data_dir, sizeof(c->data_dir), "%s", data_dir);
    snprintf(c->listen_host, sizeof(c->listen_host), "127.0.0.1");
    c->listen_port = 8883;
    c->workers = 0;
    c->store_telemetry = true;
    c->tls_min_version = 13;
    snprintf(c->ca_file, sizeof(c->ca_file), "%s/ca.crt", data_dir);
    snprintf(c->cert_file, sizeof(c->cert_file), "%s/server.crt", data_dir);
    snprintf(c->key_file, sizeof(c->key_file), "%s/server.key", data_dir);
    broker_limits_default(&c->limits);
    c->max_connections = 100000;
    c->max_connections_per_ip = 1000;
    c->handshakes_per_second_per_ip = 50;
    c->handshake_timeout_s = 10;
    c->registry_poll_ms = 250;
    monitor_defaults(&c->monitor, data_dir);
}

static bool parse_uint(const char *s, unsigned long long min, unsigned long long max,
                       unsigned long long *out)
{
    if (*s == '\0' || *s == '-' || *s == '+')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool hub_config_parse_listen(const char *value, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon;
    const char *h = value;
    size_t hlen;
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (!close || close[1] != ':')
            return false;
        h = value + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(value, ':');
        if (!colon)
            return false;
        hlen = (size_t)(colon - value);
    }
    unsigned long long p;
    if (hlen == 0 || hlen >= hostlen || !parse_uint(colon + 1, 1, 65535, &p))
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return true;
}

typedef struct load_state {
    hub_config *c;
    char *err;
    size_t errlen;
    FILE *f;
    int line;     /* lines read so far: inih's number for the current line */
    int err_line; /* line of the first setting refused, 0 if none */
} load_state;

static bool set_path(load_state *st, char *dst, const char *value)
{
    int n = value[0] == '/' ? snprintf(dst, CONFIG_PATH_MAX, "%s", value)
                            : snprintf(dst, CONFIG_PATH_MAX, "%s/%s", st->c->data_dir, value);
    return n > 0 && n < CONFIG_PATH_MAX;
}

typedef struct num_key {
    const char *name;
    unsigned long long min, max;
    size_t offset;
    size_t size;
} num_key;

#define LIM(field) offsetof(hub_config, limits.field), sizeof(((broker_limits *)0)->field)
#define TOP(field) offsetof(hub_config, field), sizeof(((hub_config *)0)->field)

static const num_key limit_keys[] = {
    {"max_packet_size", 64, 268435460ull, LIM(max_packet_size)},
    {"max_packet_before_connect", 64, 1048576, LIM(max_packet_before_connect)},
    {"max_topic_length", 1, 65535, LIM(max_topic_length)},
    {"max_topic_levels", 1, 32768, LIM(max_topic_levels)},
    {"max_subscriptions", 1, 1000000, LIM(max_subscriptions)},
    {"max_inflight", 1, 65535, LIM(max_inflight)},
    {"max_queued", 0, 100000000, LIM(max_queued)},
    {"max_output_buffer", 4096, 1ull << 32, LIM(max_output)},
    {"max_keep_alive", 1, 65535, LIM(max_keep_alive)},
    {"max_session_expiry", 0, 4294967295ull, LIM(max_session_expiry)},
    {"max_publish_rate", 0, 100000000, LIM(max_publish_rate)},
    {"topic_alias_maximum", 0, 65535, LIM(topic_alias_maximum)},
    {"max_connections", 1, 10000000, TOP(max_connections)},
    {"max_connections_per_ip", 1, 10000000, TOP(max_connections_per_ip)},
    {"handshakes_per_second_per_ip", 1, 1000000, TOP(handshakes_per_second_per_ip)},
    {"handshake_timeout", 1, 3600, TOP(handshake_timeout_s)},
    {"registry_poll_ms", 10, 60000, TOP(registry_poll_ms)},
};

#define MON(field) offsetof(hub_config, monitor.field), sizeof(((hub_monitor_settings *)0)->field)

static const num_key monitor_keys[] = {
    {"default_report_interval", 0, 31536000, MON(default_report_interval_s)},
    {"offline_grace", 0, 86400, MON(offline_grace_s)},
    {"lost_grace", 0, 86400, MON(lost_grace_s)},
    {"handshake_burst", 0, 1000000, MON(handshake_burst)},
    {"refused_publish_burst", 0, 1000000, MON(refused_publish_burst)},
    {"burst_window", 1, 86400, MON(burst_window_s)},
    {"cert_warn_days", 0, 3650, MON(cert_warn_days)},
    {"clock_jump", 1, 86400, MON(clock_jump_s)},
    {"refusal_max_keys", 1, 1000000, MON(refusal_max_keys)},
    {"alert_retention_days", 1, 36500, MON(alert_retention_days)},
    {"alert_max_rows", 100, 100000000, MON(alert_max_rows)},
    {"registry_poll", 100, 3600000, MON(registry_poll_ms)},
    {"audit_flush", 10, 600000, MON(audit_flush_ms)},
};

static const num_key alert_keys[] = {
    {"heartbeat_interval", 1, 86400, MON(heartbeat_interval_s)},
    {"webhook_queue", 1, 1000000, MON(webhook_queue)},
    {"webhook_max_attempts", 1, 1000, MON(webhook_max_attempts)},
    {"webhook_retry_max", 1, 86400, MON(webhook_retry_max_s)},
};

static bool store_num(hub_config *c, const num_key *k, unsigned long long v)
{
    uint8_t *at = (uint8_t *)c + k->offset;
    switch (k->size) {
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(at, &x, 2);
        return v <= UINT16_MAX;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(at, &x, 4);
        return v <= UINT32_MAX;
    }
    case 8: {
        uint64_t x = v;
        memcpy(at, &x, 8);
        return true;
    }
    default:
        return false;
    }
}

static bool parse_bool(const char *value, bool *out)
{
    if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "on")) {
        *out = true;
        return true;
    }
    if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "off")) {
        *out = false;
        return true;
    }
    return false;
}

static bool parse_real(const char *s, double min, double max, double *out)
{
    if (*s == '\0' || *s == '+' || *s == '-')
        return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end != '\0' || !isfinite(v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool set_text(char *dst, size_t len, const char *value)
{
    int n = snprintf(dst, len, "%s", value);
    return n >= 0 && (size_t)n < len;
}

/* A number key of one of the tables: 1 stored, 0 refused, -1 not in it. */
static int table_entry(load_state *st, const char *section, const num_key *keys, size_t nkeys,
                       const char *name, const char *value)
{
    unsigned long long v;
    for (size_t i = 0; i < nkeys; i++) {
        const num_key *k = &keys[i];
        if (strcmp(name, k->name))
            continue;
        if (!parse_uint(value, k->min, k->max, &v) || !store_num(st->c, k, v)) {
            snprintf(st->err, st->errlen, "[%s] %s: '%s' is not a number from %llu to %llu",
                     section, name, value, k->min, k->max);
            return 0;
        }
        return 1;
    }
    return -1;
}

static int monitor_entry(load_state *st, const char *name, const char *value)
{
    hub_monitor_settings *m = &st->c->monitor;
    int r = table_entry(st, "monitor", monitor_keys, sizeof(monitor_keys) / sizeof(monitor_keys[0]),
                        name, value);
    if (r >= 0)
        return r;
    if (!strcmp(name, "rate_factor"))
        return parse_real(value, 1.0, 1e6, &m->rate_factor) ? 1 : -2;
    if (!strcmp(name, "rate_min"))
        return parse_real(value, 0.001, 1e9, &m->rate_min) ? 1 : -2;
    if (!strcmp(name, "audit_refusals"))
        return parse_bool(value, &m->audit_refusals) ? 1 : -2;
    return -1;
}

static int alerts_entry(load_state *st, const char *name, const char *value)
{
    hub_monitor_settings *m = &st->c->monitor;
    int r = table_entry(st, "alerts", alert_keys, sizeof(alert_keys) / sizeof(alert_keys[0]), name,
                        value);
    if (r >= 0)
        return r;
    if (!strcmp(name, "webhook")) {
        if (value[0] == '\0')
            return 1;
        if (m->nwebhooks == CONFIG_WEBHOOKS) {
            snprintf(st->err, st->errlen, "[alerts] webhook: at most %u receivers",
                     CONFIG_WEBHOOKS);
            return 0;
        }
        if (strncmp(value, "http://", 7) && strncmp(value, "https://", 8))
            return -2;
        if (!set_text(m->webhooks[m->nwebhooks], CONFIG_URL_MAX, value))
            return -2;
        m->nwebhooks++;
        return 1;
    }
    if (!strcmp(name, "heartbeat_url")) {
        if (value[0] && strncmp(value, "http://", 7) && strncmp(value, "https://", 8))
            return -2;
        return set_text(m->heartbeat_url, CONFIG_URL_MAX, value) ? 1 : -2;
    }
    if (!strcmp(name, "webhook_key")) {
        if (value[0] == '\0') {
            m->webhook_key[0] = '\0';
            return 1;
        }
        return set_path(st, m->webhook_key, value) ? 1 : -2;
    }
    if (!strcmp(name, "webhook_ca")) {
        if (value[0] == '\0') {
            m->webhook_ca[0] = '\0';
            return 1;
        }
        return set_path(st, m->webhook_ca, value) ? 1 : -2;
    }
    if (!strcmp(name, "hub_name"))
        return set_text(m->hub_name, sizeof(m->hub_name), value) ? 1 : -2;
    return -1;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    hub_config *c = st->c;
    unsigned long long v;
    if (!strcmp(section, "hub")) {
        if (!strcmp(name, "listen")) {
            if (!hub_config_parse_listen(value, c->listen_host, sizeof(c->listen_host),
                                         &c->listen_port))
                goto bad;
            return 1;
        }
        if (!strcmp(name, "workers")) {
            if (!parse_uint(value, 0, 1024, &v))
                goto bad;
            c->workers = (unsigned)v;
            return 1;
        }
        if (!strcmp(name, "log_format")) {
            if (strcmp(value, "text") && strcmp(value, "json"))
                goto bad;
            c->log_json = !strcmp(value, "json");
            return 1;
        }
    } else if (!strcmp(section, "telemetry")) {
        if (!strcmp(name, "store")) {
            if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "on"))
                c->store_telemetry = true;
            else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "off"))
                c->store_telemetry = false;
            else
                goto bad;
            return 1;
        }
    } else if (!strcmp(section, "monitor") || !strcmp(section, "alerts")) {
        int r = !strcmp(section, "monitor") ? monitor_entry(st, name, value)
                                            : alerts_entry(st, name, value);
        if (r == 1 || r == 0)
            return r;
        if (r == -2)
            goto bad;
    } else if (!strcmp(section, "tls")) {
        if (!strcmp(name, "min_version")) {
            if (!strcmp(value, "1.3"))
                c->tls_min_version = 13;
            else if (!strcmp(value, "1.2"))
                c->tls_min_version = 12;
            else
                goto bad;
            return 1;
        }
        if (!strcmp(name, "ca"))
            return set_path(st, c->ca_file, value)
                       ? 1
                       : (snprintf(st->err, st->errlen, "[tls] ca: path too long"), 0);
        if (!strcmp(name, "cert"))
            return set_path(st, c->cert_file, value)
                       ? 1
                       : (snprintf(st->err, st->errlen, "[tls] cert: path too long"), 0);
        if (!strcmp(name, "key"))
            return set_path(st, c->key_file, value)
                       ? 1
                       : (snprintf(st->err, st->errlen, "[tls] key: path too long"), 0);
    } else if (!strcmp(section, "limits")) {
        for (size_t i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
            const num_key *k = &limit_keys[i];
            if (strcmp(name, k->name))
                continue;
            if (!parse_uint(value, k->min, k->max, &v) || !store_num(c, k, v)) {
                snprintf(st->err, st->errlen, "[limits] %s: '%s' is not a number from %llu to %llu",
                         name, value, k->min, k->max);
                return 0;
            }
            if (!strcmp(name, "connect_timeout"))
                c->limits.connect_timeout_ms = (uint32_t)v * 1000u;
            return 1;
        }
        if (!strcmp(name, "connect_timeout")) {
            if (!parse_uint(value, 1, 3600, &v))
                goto bad;
            c->limits.connect_timeout_ms = (uint32_t)v * 1000u;
            return 1;
        }
    }
    snprintf(st->err, st->errlen, "unknown setting [%s] %s", section, name);
    return 0;
bad:
    snprintf(st->err, st->errlen, "[%s] %s: invalid value '%s'", section, name, value);
    return 0;
}

/* inih counts one line per reader call; so does this reader, so that an
 * error message and the line number ini_parse returns describe the same line
 * (inih goes on after an error and returns the first one's line). */
static char *read_line(char *str, int num, void *stream)
{
    load_state *st = stream;
    char *got = fgets(str, num, st->f);
    if (got)
        st->line++;
    return got;
}

static int on_entry_first(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    if (st->err_line)
        return 0; /* only the first error is reported */
    if (on_entry(user, section, name, value))
        return 1;
    st->err_line = st->line;
    return 0;
}

bool hub_config_load(hub_config *c, const char *path, char *err, size_t errlen)
{
    load_state st = {c, err, errlen, NULL, 0, 0};
    err[0] = '\0';
    st.f = fopen(path, "r");
    if (!st.f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return false;
    }
    int rc = ini_parse_stream(read_line, &st, on_entry_first, &st);
    fclose(st.f);
    if (rc > 0 && rc != st.err_line)
        err[0] = '\0'; /* a syntax error came first */
    if (rc == -2) {
        snprintf(err, errlen, "%s: out of memory", path);
        return false;
    }
    if (rc > 0) {
        char what[512];
        snprintf(what, sizeof(what), "%s", err[0] ? err : "syntax error");
        snprintf(err, errlen, "%s:%d: %s", path, rc, what);
        return false;
    }
    if (c->limits.max_packet_before_connect > c->limits.max_packet_size)
        c->limits.max_packet_before_connect = c->limits.max_packet_size;
    return true;
}
