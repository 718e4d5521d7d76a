/*
 * thermostat.c — a small moat device, written only against libmoat's
 * public headers (moat/moat.h, moat/linux.h, moat/sign.h for the
 * libsodium verifier): the example the SDK guide (docs/sdk.md) walks
 * through.
 *
 * It "measures" a room temperature (simulated: it drifts towards the
 * setpoint, with a little noise), stores a reading every --interval
 * milliseconds with moat_publish (durable before the call returns, sent in
 * order whenever the hub is reachable), and obeys one signed command,
 * "setpoint", whose body is the new target in degrees Celsius. Everything
 * else — connecting, reconnecting, keep-alive, draining the queue, checking
 * command signatures — is the SDK's job, driven by moat_poll.
 *
 * Output, one line each, for people and for the black-box tests:
 *   reading seq=N temp=T     a reading was stored
 *   sent seq=N               the hub acknowledged the records up to N
 *   setpoint T counter=C     an authentic "setpoint" command was obeyed
 *   rejected REASON TOPIC    a command was refused (and reported to the hub)
 *   online / offline REASON  the connection came or went
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moat/linux.h>
#include <moat/moat.h>
#include <moat/sign.h>

#define MAX_TRUST 4

typedef struct thermostat {
    moat_linux_tls *tls; /* for the reason a connection attempt failed */
    double temp, setpoint;
    unsigned long readings;
    uint64_t last_acked;
    bool quiet;
} thermostat;

static volatile sig_atomic_t stop_now;

static void on_signal(int sig)
{
    (void)sig;
    stop_now = 1;
}

/* ---- what the device does with commands and events ---------------------- */

static void on_command(void *user, const moat_command *cmd)
{
    thermostat *t = user;
    if (cmd->name_len == 8 && memcmp(cmd->name, "setpoint", 8) == 0) {
        char text[16];
        char *end = NULL;
        if (cmd->body_len == 0 || cmd->body_len >= sizeof(text)) {
            fprintf(stderr, "setpoint: body is not a temperature\n");
            return;
        }
        memcpy(text, cmd->body, cmd->body_len);
        text[cmd->body_len] = '\0';
        errno = 0;
        double v = strtod(text, &end);
        /* Authentic is not the same as sensible: keep the range plausible. */
        if (errno || end != text + cmd->body_len || !(v >= 5.0 && v <= 35.0)) {
            fprintf(stderr, "setpoint: %s is not between 5 and 35\n", text);
            return;
        }
        t->setpoint = v;
        printf("setpoint %.1f counter=%llu\n", v, (unsigned long long)cmd->counter);
        return;
    }
    fprintf(stderr, "unknown command %.*s ignored\n", (int)cmd->name_len, (const char *)cmd->name);
}

static void on_rejected(void *user, const moat_command_rejection *r)
{
    (void)user;
    printf("rejected %s %.*s\n", moat_command_reason_str(r->reason), (int)r->topic_len,
           (const char *)r->topic);
}

static void on_event(void *user, moat_event ev, moat_status st, uint64_t detail)
{
    thermostat *t = user;
    switch (ev) {
    case MOAT_EV_ONLINE:
        printf("online session_present=%d\n", (int)detail);
        break;
    case MOAT_EV_OFFLINE:
        printf("offline %s\n", moat_status_str(st));
        break;
    case MOAT_EV_CONNECT_FAILED:
        if (!t->quiet)
            fprintf(stderr, "connect to endpoint %llu failed: %s (%s)\n",
                    (unsigned long long)detail, moat_status_str(st),
                    moat_linux_tls_last_error(t->tls));
        break;
    case MOAT_EV_SENT:
        t->last_acked = detail;
        if (!t->quiet)
            printf("sent seq=%llu\n", (unsigned long long)detail);
        break;
    case MOAT_EV_SUBSCRIBE_FAILED:
        fprintf(stderr, "the hub refused the command subscription\n");
        break;
    case MOAT_EV_RECORD_REFUSED:
        fprintf(stderr, "the hub refused record %llu: dropped\n", (unsigned long long)detail);
        break;
    case MOAT_EV_SUBSCRIBED:
        break;
    }
}

/* The simulated sensor: a first-order approach to the setpoint plus noise. */
static double measure(thermostat *t)
{
    double noise = ((double)(rand() % 1000) - 500.0) / 5000.0;
    t->temp += (t->setpoint - t->temp) * 0.1 + noise;
    return t->temp;
}

/* ---- options ------------------------------------------------------------- */

typedef struct options {
    moat_linux_hubs hubs;
    const char *ca, *cert, *key, *id, *state;
    unsigned long interval_ms, count, backoff_max_ms, keep_alive, queue_size, padding;
    unsigned long shaper_ms, shaper_size;
    uint8_t trust[MAX_TRUST][32];
    size_t ntrust;
    bool exit_when_sent, mqtt311, quiet;
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: thermostat --ca FILE --cert FILE --key FILE [options]\n"
               "\n"
               "A simulated thermostat on libmoat: stores a temperature reading every\n"
               "--interval ms, sends them in order to the hub, and obeys signed\n"
               "\"setpoint\" commands.\n"
               "\n"
               "  --hub HOST:PORT      hub endpoint, repeatable (tried in turn;\n"
               "                       default 127.0.0.1:8883)\n"
               "  --ca FILE            the hub CA certificate (the only one trusted)\n"
               "  --cert FILE          this device's certificate\n"
               "  --key FILE           its private key (must be mode 0600)\n"
               "  --id ID              device id (default: the certificate's CN)\n"
               "  --state DIR          where the queue and counters live\n"
               "                       (default ./thermostat-state)\n"
               "  --trust HEX          a command signing public key (from `moatctl command\n"
               "                       keygen`), repeatable; without one, every command is\n"
               "                       refused\n"
               "  --interval MS        reading period (default 10000)\n"
               "  --count N            take N readings, then stop measuring\n"
               "  --exit-when-sent     with --count: exit once the hub has them all\n"
               "  --shaper MS:BYTES    send one BYTES-sized record every MS ms (cover\n"
               "                       records when there is nothing to say)\n"
               "  --backoff-max MS     longest wait between connection attempts (60000)\n"
               "  --keep-alive S       MQTT keep-alive (60)\n"
               "  --queue-size BYTES   size of the store-and-forward queue (65536)\n"
               "  --padding N          TLS record padding block (256; 1 = off)\n"
               "  --mqtt311            speak MQTT 3.1.1 instead of 5\n"
               "  --quiet              print only readings, commands and connection changes\n");
}

static int parse_options(int argc, char **argv, options *o)
{
    enum {
        O_HUB = 256,
        O_CA,
        O_CERT,
        O_KEY,
        O_ID,
        O_STATE,
        O_TRUST,
        O_INTERVAL,
        O_COUNT,
        O_EXIT,
        O_SHAPER,
        O_BACKOFF,
        O_KA,
        O_QSIZE,
        O_PAD,
        O_311,
        O_QUIET,
        O_HELP
    };
    static const struct option longs[] = {
        {"hub", required_argument, NULL, O_HUB},
        {"ca", required_argument, NULL, O_CA},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"id", required_argument, NULL, O_ID},
        {"state", required_argument, NULL, O_STATE},
        {"trust", required_argument, NULL, O_TRUST},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"count", required_argument, NULL, O_COUNT},
        {"exit-when-sent", no_argument, NULL, O_EXIT},
        {"shaper", required_argument, NULL, O_SHAPER},
        {"backoff-max", required_argument, NULL, O_BACKOFF},
        {"keep-alive", required_argument, NULL, O_KA},
        {"queue-size", required_argument, NULL, O_QSIZE},
        {"padding", required_argument, NULL, O_PAD},
        {"mqtt311", no_argument, NULL, O_311},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->state = "thermostat-state";
    o->interval_ms = 10000;
    o->backoff_max_ms = 60000;
    o->keep_alive = 60;
    o->queue_size = 65536;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        bool ok = true;
        switch (opt) {
        case O_HUB:
            ok = moat_linux_hubs_add(&o->hubs, optarg);
            break;
        case O_CA:
            o->ca = optarg;
            break;
        case O_CERT:
            o->cert = optarg;
            break;
        case O_KEY:
            o->key = optarg;
            break;
        case O_ID:
            o->id = optarg;
            break;
        case O_STATE:
            o->state = optarg;
            break;
        case O_TRUST:
            ok = o->ntrust < MAX_TRUST && moat_linux_parse_key_hex(optarg, o->trust[o->ntrust]);
            o->ntrust += ok;
            break;
        case O_INTERVAL:
            ok = moat_linux_parse_ulong(optarg, 1, 86400000, &o->interval_ms);
            break;
        case O_COUNT:
            ok = moat_linux_parse_ulong(optarg, 1, 1000000000, &o->count);
            break;
        case O_EXIT:
            o->exit_when_sent = true;
            break;
        case O_SHAPER: {
            char *colon = strchr(optarg, ':');
            ok = colon != NULL;
            if (ok) {
                *colon = '\0';
                ok = moat_linux_parse_ulong(optarg, 1, 86400000, &o->shaper_ms) &&
                     moat_linux_parse_ulong(colon + 1, 16, 1024, &o->shaper_size);
            }
            break;
        }
        case O_BACKOFF:
            ok = moat_linux_parse_ulong(optarg, 1, 3600000, &o->backoff_max_ms);
            break;
        case O_KA:
            ok = moat_linux_parse_ulong(optarg, 0, 65535, &o->keep_alive);
            break;
        case O_QSIZE:
            ok = moat_linux_parse_ulong(optarg, 4096, 1ul << 30, &o->queue_size);
            break;
        case O_PAD:
            ok = moat_linux_parse_ulong(optarg, 1, 16384, &o->padding);
            break;
        case O_311:
            o->mqtt311 = true;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "thermostat: bad value for --%s: %s\n", longs[opt - O_HUB].name,
                    optarg);
            return 2;
        }
    }
    if (optind != argc || !o->ca || !o->cert || !o->key) {
        usage(stderr);
        return 2;
    }
    if (o->hubs.count == 0)
        (void)moat_linux_hubs_add(&o->hubs, "127.0.0.1:8883");
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- main ---------------------------------------------------------------- */

/* The client and its buffers: fixed size, no heap, as on a microcontroller. */
static moat_client client;
static uint8_t tx[1536], rx[1536], work[1536];

int main(int argc, char **argv)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    char err[512], id[MOAT_DEVICE_ID_MAX + 1];
    moat_linux_key key;
    moat_linux_tls *tls = NULL;
    moat_linux_storage store;
    moat_transport tr;
    moat_clock clk;
    moat_storage sto;
    moat_crypto cr;
    rc = 1;

    if (!o.id) {
        if (moat_linux_cert_device_id(o.cert, id, sizeof(id), err, sizeof(err)) != MOAT_OK) {
            fprintf(stderr, "thermostat: %s\n", err);
            return 1;
        }
        o.id = id;
    }
    moat_linux_tls_config tc = {
        .ca_file = o.ca, .cert_file = o.cert, .key = &key, .record_padding = o.padding};
    if (moat_linux_key_file(&key, o.key) != MOAT_OK ||
        moat_linux_tls_new(&tls, &tc, err, sizeof(err)) != MOAT_OK) {
        fprintf(stderr, "thermostat: %s\n", err);
        return 1;
    }
    if (moat_linux_storage_open(&store, o.state, o.queue_size, 4096, err, sizeof(err)) != MOAT_OK) {
        fprintf(stderr, "thermostat: %s\n", err);
        moat_linux_tls_free(tls);
        return 1;
    }
    moat_linux_tls_transport(tls, &tr);
    moat_linux_clock(&clk);
    moat_linux_storage_table(&store, &sto);
    if (moat_crypto_sodium(&cr) != MOAT_OK) {
        fprintf(stderr, "thermostat: libsodium did not start\n");
        goto out;
    }

    thermostat t = {.tls = tls, .temp = 19.0, .setpoint = 21.0, .quiet = o.quiet};
    moat_config cfg;
    moat_config_defaults(&cfg);
    cfg.device_id = o.id;
    cfg.endpoints = o.hubs.list;
    cfg.endpoint_count = o.hubs.count;
    cfg.transport = &tr;
    cfg.clock = &clk;
    cfg.storage = &sto;
    cfg.crypto = &cr;
    cfg.tx_buf = tx;
    cfg.tx_cap = sizeof(tx);
    cfg.rx_buf = rx;
    cfg.rx_cap = sizeof(rx);
    cfg.work_buf = work;
    cfg.work_cap = sizeof(work);
    cfg.protocol_version = o.mqtt311 ? 4 : 5;
    cfg.keep_alive_s = (uint16_t)o.keep_alive;
    cfg.backoff_max_ms = (uint32_t)o.backoff_max_ms;
    if (cfg.backoff_base_ms > cfg.backoff_max_ms)
        cfg.backoff_base_ms = cfg.backoff_max_ms;
    cfg.command_keys = (const uint8_t(*)[32])o.trust;
    cfg.command_key_count = o.ntrust;
    cfg.shaper_interval_ms = (uint32_t)o.shaper_ms;
    cfg.shaper_record_size = o.shaper_size;
    cfg.on_command = on_command;
    cfg.on_rejected = on_rejected;
    cfg.on_event = on_event;
    cfg.user = &t;
    moat_status st = moat_client_init(&client, &cfg);
    if (st != MOAT_OK) {
        fprintf(stderr, "thermostat: cannot start the client: %s\n", moat_status_str(st));
        goto out;
    }
    moat_connect(&client);
    srand((unsigned)mono_ms());

    uint64_t next_reading = mono_ms();
    moat_state last_state = MOAT_STATE_STOPPED;
    while (!stop_now) {
        uint64_t now = mono_ms();
        if ((!o.count || t.readings < o.count) && now >= next_reading) {
            char payload[32];
            int n = snprintf(payload, sizeof(payload), "%.2f", measure(&t));
            uint64_t seq = 0;
            st = moat_publish(&client, "temp", (const uint8_t *)payload, (size_t)n, &seq);
            if (st == MOAT_OK)
                printf("reading seq=%llu temp=%s\n", (unsigned long long)seq, payload);
            else
                fprintf(stderr, "thermostat: reading not stored: %s\n", moat_status_str(st));
            t.readings++;
            next_reading += o.interval_ms;
            if (next_reading < now) /* we were asleep: do not catch up in a burst */
                next_reading = now + o.interval_ms;
        }
        moat_poll(&client);
        moat_client_stats s;
        moat_client_get_stats(&client, &s);
        if (o.exit_when_sent && o.count && t.readings >= o.count && s.queue.count == 0) {
            rc = 0;
            break;
        }
        moat_state cur = moat_client_state(&client);
        if (cur != last_state && cur == MOAT_STATE_WAITING && last_state == MOAT_STATE_ONLINE &&
            !o.quiet && moat_linux_tls_last_error(tls)[0])
            fprintf(stderr, "thermostat: %s\n", moat_linux_tls_last_error(tls));
        last_state = cur;
        uint32_t wait = moat_next_deadline_ms(&client);
        now = mono_ms();
        if (!o.count || t.readings < o.count) {
            uint64_t until = next_reading > now ? next_reading - now : 0;
            if (until < wait)
                wait = (uint32_t)until;
        }
        moat_linux_tls_wait(tls, wait);
    }
    if (stop_now)
        rc = 0;
    moat_disconnect(&client);
out:
    moat_linux_storage_close(&store);
    moat_linux_tls_free(tls);
    return rc;
}
