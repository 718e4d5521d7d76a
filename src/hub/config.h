/*
 * config.h — moatd's configuration: the INI file moatctl init writes
 * (DATA_DIR/moatd.conf), over built-in defaults.
 *
 * Unknown sections or keys and malformed values are errors, not warnings: a
 * mistyped security setting that was silently ignored would leave the hub
 * running with a default the operator meant to change.
 */
#ifndef MOAT_HUB_CONFIG_H
#define MOAT_HUB_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"

#define CONFIG_PATH_MAX 4096
#define CONFIG_URL_MAX  1024
#define CONFIG_WEBHOOKS 8 /* WEBHOOK_MAX_URLS */

/* [monitor] and [alerts] (docs/monitoring.md): what the hub's monitor
 * watches and where its alerts go. Defaults from monitor_config_defaults. */
typedef struct hub_monitor_settings {
    uint32_t default_report_interval_s;
    uint32_t offline_grace_s;
    uint32_t lost_grace_s;
    uint32_t handshake_burst;
    uint32_t refused_publish_burst;
    uint32_t burst_window_s;
    double rate_factor;
    double rate_min;
    uint32_t cert_warn_days;
    uint32_t clock_jump_s;
    bool audit_refusals;
    uint32_t refusal_max_keys;
    uint32_t alert_retention_days;
    uint32_t alert_max_rows;
    uint32_t registry_poll_ms;
    uint32_t audit_flush_ms;
    char webhooks[CONFIG_WEBHOOKS][CONFIG_URL_MAX];
    unsigned nwebhooks;
    char webhook_key[CONFIG_PATH_MAX]; /* "" = none */
    char webhook_ca[CONFIG_PATH_MAX];  /* "" = the system's */
    char heartbeat_url[CONFIG_URL_MAX];
    uint32_t heartbeat_interval_s;
    uint32_t webhook_queue;
    uint32_t webhook_max_attempts;
    uint32_t webhook_retry_max_s;
    char hub_name[128];
} hub_monitor_settings;

typedef struct hub_config {
    char data_dir[CONFIG_PATH_MAX];
    char listen_host[256];
    uint16_t listen_port;
    unsigned workers;     /* 0: one per core */
    bool store_telemetry; /* [telemetry] store: keep devices' up/ readings */
    bool log_json;
    int tls_min_version; /* 13, or 12 when TLS 1.2 is allowed */
    char ca_file[CONFIG_PATH_MAX];
    char cert_file[CONFIG_PATH_MAX];
    char key_file[CONFIG_PATH_MAX];
    broker_limits limits;
    size_t max_connections;
    size_t max_connections_per_ip;
    unsigned handshakes_per_second_per_ip;
    unsigned handshake_timeout_s;
    unsigned registry_poll_ms;
    hub_monitor_settings monitor;
} hub_config;

/* Defaults for a data directory (file names resolved inside it). */
void hub_config_defaults(hub_config *c, const char *data_dir);

/* Read the INI file at path over the current values. On error, err names the
 * line and the problem. Relative file names are resolved against data_dir. */
bool hub_config_load(hub_config *c, const char *path, char *err, size_t errlen);

/* Parse "host:port" (host may be "[v6]"). */
bool hub_config_parse_listen(const char *value, char *host, size_t hostlen, uint16_t *port);

#endif /* MOAT_HUB_CONFIG_H */
