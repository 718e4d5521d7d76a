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

typedef struct hub_config {
    char data_dir[CONFIG_PATH_MAX];
    char listen_host[256];
    uint16_t listen_port;
    unsigned workers; /* 0: one per core */
    bool store_telemetry;        /* [telemetry] store: keep devices' up/ readings */
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
} hub_config;

/* Defaults for a data directory (file names resolved inside it). */
void hub_config_defaults(hub_config *c, const char *data_dir);

/* Read the INI file at path over the current values. On error, err names the
 * line and the problem. Relative file names are resolved against data_dir. */
bool hub_config_load(hub_config *c, const char *path, char *err, size_t errlen);

/* Parse "host:port" (host may be "[v6]"). */
bool hub_config_parse_listen(const char *value, char *host, size_t hostlen, uint16_t *port);

#endif /* MOAT_HUB_CONFIG_H */
