/*
 * server.h — moatd's network side: listeners, TLS handshakes, the libevent
 * loop, and the glue between sockets, the registry and the broker.
 */
#ifndef MOAT_HUB_SERVER_H
#define MOAT_HUB_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct hub_server hub_server;

typedef struct hub_server_opts {
    /* An explicit plaintext listener for conformance tools that cannot do
     * client certificates: binds 127.0.0.1 only, and every connection on it
     * is the named service (which must exist in the registry). 0: none. */
    uint16_t test_port;
    const char *test_service;
    /* For SIGHUP: the file to read again, and which settings came from the
     * command line (they win over the file on reload too). */
    const char *config_path;
    bool listen_override;
    bool log_format_override;
} hub_server_opts;

/* Load the TLS context, the registry and the store; bind the listeners.
 * NULL with err set on failure. */
hub_server *hub_server_new(const hub_config *cfg, const hub_server_opts *opts, char *err,
                           size_t errlen);

/* Run until SIGTERM or SIGINT (drain and stop cleanly). SIGHUP reloads the
 * config's limits and re-checks the registry. Returns 0 on a clean stop. */
int hub_server_run(hub_server *srv);

void hub_server_free(hub_server *srv);

/* The ports actually bound (useful with port 0). */
uint16_t hub_server_port(const hub_server *srv);

#endif /* MOAT_HUB_SERVER_H */
