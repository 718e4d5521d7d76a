/*
 * main.c — moatd: command line, configuration, and the server's life.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "server.h"

#define MOATD_VERSION "0.1.0"

static void usage(FILE *out)
{
    fputs("NAME\n"
          "    moatd - the moat hub: an MQTT 3.1.1/5.0 broker over mutual TLS\n"
          "\n"
          "SYNOPSIS\n"
          "    moatd --dir DIR [--config FILE] [--listen HOST:PORT] [--log-format text|json]\n"
          "          [--insecure-test-listener PORT --as-service NAME]\n"
          "    moatd --help | --version\n"
          "\n"
          "DESCRIPTION\n"
          "    Serves devices and back-end services over MQTT with TLS 1.3 and client\n"
          "    certificates from the hub's CA. Every client is identified by the exact\n"
          "    certificate it presents, looked up in DIR/registry.db (written by moatctl);\n"
          "    its MQTT client identifier must match that identity. What each identity may\n"
          "    do is set by the policies of its groups. Sessions, queued messages and\n"
          "    retained messages are kept in DIR/hub.db (and DIR/hub-K.db, one file per\n"
          "    worker) and survive restarts and crashes: a message the hub acknowledged\n"
          "    has been written to disk.\n"
          "\n"
          "    The hub runs one event loop per worker thread ([hub] workers; default one\n"
          "    per CPU core it may run on). Each identity is served by one worker; its\n"
          "    messages reach the others without a global lock.\n"
          "\n"
          "    Changes made with moatctl take effect within a second: a revoked or\n"
          "    disabled identity is disconnected, and subscriptions that new policies no\n"
          "    longer allow are removed.\n"
          "\n"
          "    What devices publish under moat/ID/up/... is stored encrypted in\n"
          "    DIR/telemetry.db; services read it back over MQTT 5 request/response\n"
          "    ($moat/telemetry/query). A monitor watches the fleet: silent devices,\n"
          "    bursts of refusals, certificates near expiry, the store failing. Alerts go\n"
          "    to DIR/alerts.db, to services on $moat/alerts/KIND/SUBJECT, and to signed\n"
          "    webhooks ([alerts] in moatd.conf), with an optional heartbeat; refused\n"
          "    accesses go to the audit log. See docs/monitoring.md.\n"
          "\n"
          "OPTIONS\n"
          "    -d, --dir DIR       the data directory made by `moatctl init DIR`\n"
          "                        (default: $MOAT_DIR)\n"
          "    -c, --config FILE   configuration file (default: DIR/moatd.conf)\n"
          "    -l, --listen HOST:PORT\n"
          "                        listen here instead of the config's [hub] listen\n"
          "    --log-format FMT    text (default) or json: one JSON object per line\n"
          "    --insecure-test-listener PORT\n"
          "                        also listen on 127.0.0.1:PORT in plaintext, without\n"
          "                        client certificates, for conformance tools; every\n"
          "                        connection there acts as the service given with\n"
          "                        --as-service. Logged loudly. Never use in production.\n"
          "    --as-service NAME   the registered service the test listener acts as\n"
          "    -h, --help          this text\n"
          "    --version           print the version\n"
          "\n"
          "SIGNALS\n"
          "    SIGTERM, SIGINT     stop: close every connection (MQTT 5 clients are told\n"
          "                        \"server shutting down\"), commit, exit 0\n"
          "    SIGHUP              re-read the configuration (limits, TLS certificate and\n"
          "                        key, log format; the listen address needs a restart)\n"
          "                        and the registry\n"
          "\n"
          "FILES\n"
          "    DIR/moatd.conf      configuration (INI); see docs/operating.md\n"
          "    DIR/ca.crt          the CA that client certificates must chain to\n"
          "    DIR/server.crt, DIR/server.key\n"
          "                        the hub's TLS certificate and key\n"
          "    DIR/registry.db     identities, certificates, groups, policies\n"
          "    DIR/hub.db          worker 0's sessions and queued messages; the retained\n"
          "                        messages\n"
          "    DIR/hub-K.db        worker K's sessions and queued messages (K >= 1)\n"
          "    DIR/telemetry.db    devices' readings, encrypted (keys under DIR/master.key)\n"
          "    DIR/alerts.db       the monitor's alerts (moatctl alerts)\n"
          "    DIR/webhook.key     the webhooks' HMAC key, if [alerts] names it\n"
          "\n"
          "EXIT STATUS\n"
          "    0 after a clean stop; 1 when the hub cannot start or fails; 2 for a usage\n"
          "    error.\n"
          "\n"
          "EXAMPLE\n"
          "    moatctl init /var/lib/moat --host hub.example.com\n"
          "    moatd --dir /var/lib/moat\n",
          out);
}

int main(int argc, char **argv)
{
    const char *dir = getenv("MOAT_DIR");
    const char *config_path = NULL;
    const char *listen = NULL;
    const char *log_format = NULL;
    const char *test_port_arg = NULL;
    const char *test_service = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("moatd %s\n", MOATD_VERSION);
            return 0;
        } else if ((!strcmp(a, "-d") || !strcmp(a, "--dir")) && next) {
            dir = argv[++i];
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && next) {
            config_path = argv[++i];
        } else if ((!strcmp(a, "-l") || !strcmp(a, "--listen")) && next) {
            listen = argv[++i];
        } else if (!strcmp(a, "--log-format") && next) {
            log_format = argv[++i];
        } else if (!strcmp(a, "--insecure-test-listener") && next) {
            test_port_arg = argv[++i];
        } else if (!strcmp(a, "--as-service") && next) {
            test_service = argv[++i];
        } else {
            fprintf(stderr, "moatd: unknown or incomplete option '%s' (see moatd --help)\n", a);
            return 2;
        }
    }
    if (!dir || !*dir) {
        fprintf(stderr, "moatd: no data directory: give --dir DIR or set MOAT_DIR\n");
        return 2;
    }
    if ((test_port_arg != NULL) != (test_service != NULL)) {
        fprintf(stderr, "moatd: --insecure-test-listener and --as-service go together\n");
        return 2;
    }

    hub_config cfg;
    hub_config_defaults(&cfg, dir);
    char path[CONFIG_PATH_MAX + 16];
    if (!config_path) {
        snprintf(path, sizeof(path), "%s/moatd.conf", dir);
        config_path = path;
    }
    char err[1024];
    if (!hub_config_load(&cfg, config_path, err, sizeof(err))) {
        fprintf(stderr, "moatd: %s\n", err);
        return 1;
    }
    if (listen && !hub_config_parse_listen(listen, cfg.listen_host, sizeof(cfg.listen_host),
                                           &cfg.listen_port)) {
        fprintf(stderr, "moatd: --listen '%s': expected HOST:PORT\n", listen);
        return 2;
    }
    if (log_format) {
        if (strcmp(log_format, "text") && strcmp(log_format, "json")) {
            fprintf(stderr, "moatd: --log-format must be text or json\n");
            return 2;
        }
        cfg.log_json = !strcmp(log_format, "json");
    }
    log_set_json(cfg.log_json);

    hub_server_opts opts = {.config_path = config_path,
                            .listen_override = listen != NULL,
                            .log_format_override = log_format != NULL};
    if (test_port_arg) {
        char *end;
        errno = 0;
        unsigned long p = strtoul(test_port_arg, &end, 10);
        if (errno || *end || p == 0 || p > 65535) {
            fprintf(stderr, "moatd: --insecure-test-listener '%s' is not a port\n", test_port_arg);
            return 2;
        }
        opts.test_port = (uint16_t)p;
        opts.test_service = test_service;
    }

    signal(SIGPIPE, SIG_IGN);
    hub_server *srv = hub_server_new(&cfg, &opts, err, sizeof(err));
    if (!srv) {
        log_msg(LOG_ERROR, NULL, "cannot start: %s", err);
        return 1;
    }
    int rc = hub_server_run(srv);
    hub_server_free(srv);
    return rc;
}
