/*
 * moat_sim.c — moat-sim: N simulated devices from one process, for demos
 * and for load. Each device is a complete libmoat client of its own (its
 * certificate and key, its TLS connection, its store-and-forward queue on
 * disk, its command verifier), exactly as on a real device; one poll(2)
 * loop drives them all. Credentials come from a directory as
 * `moatctl device add --out DIR` writes it (ID.crt, ID.key, ca.crt).
 *
 * The simulated readings are random walks ("temp" and "hum"); commands that
 * pass verification are printed. A status line every --stats seconds and a
 * summary at the end say how many readings were stored and acknowledged.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <moat/linux.h>
#include <moat/moat.h>
#include <moat/sign.h>

#define SIM_BUF       1024u
#define SIM_MAX_TRUST 4u
#define SIM_PATH      4096u

typedef struct device {
    moat_client client;
    uint8_t tx[SIM_BUF], rx[SIM_BUF], work[SIM_BUF];
    char id[MOAT_DEVICE_ID_MAX + 1];
    moat_linux_key key;
    moat_linux_tls *tls;
    moat_linux_storage store;
    moat_transport tr;
    moat_storage sto;
    uint64_t next_reading;
    double temp, hum;
    unsigned long readings, store_failures, commands;
    bool online;
} device;

typedef struct sim_opts {
    const char *certs, *state;
    moat_linux_hubs hubs;
    unsigned long devices, interval_ms, duration_s, stats_s, queue_size, payload;
    unsigned long shaper_ms, shaper_size, backoff_max_ms, keep_alive;
    uint8_t trust[SIM_MAX_TRUST][32];
    size_t ntrust;
    bool mqtt311, verbose;
} sim_opts;

static volatile sig_atomic_t stop_now;
static sim_opts opt;
static moat_clock clk;
static moat_crypto crypto;

static void on_signal(int sig)
{
    (void)sig;
    stop_now = 1;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void usage(FILE *f)
{
    fputs("NAME\n"
          "    moat-sim - run many simulated moat devices from one process\n"
          "\n"
          "SYNOPSIS\n"
          "    moat-sim --certs DIR [--devices N] [--hub HOST:PORT]... [options]\n"
          "\n"
          "DESCRIPTION\n"
          "    Each simulated device is a complete libmoat client with its own\n"
          "    certificate and key, TLS 1.3 connection, store-and-forward queue on\n"
          "    disk and command verifier, as on a real device. Every --interval ms\n"
          "    each device stores a reading (streams \"temp\" and \"hum\", random\n"
          "    walks); the SDK sends them in order, QoS 1, and resends after a\n"
          "    reconnect. Devices start their schedules spread over one interval, so\n"
          "    a large fleet does not publish in lockstep.\n"
          "\n"
          "    Credentials are read from DIR as `moatctl device add --out DIR` writes\n"
          "    them: ca.crt (the hub CA), and ID.crt with ID.key (mode 0600) for each\n"
          "    device. The first N devices in name order are used.\n"
          "\n"
          "    A status line goes to standard output every --stats seconds and a\n"
          "    summary at the end:\n"
          "        t=SECONDS online=K/N stored=S acked=A queued=Q reconnects=R\n"
          "        commands=C rejected=J\n"
          "\n"
          "OPTIONS\n"
          "    --certs DIR         where the device credentials are (required)\n"
          "    --devices N         how many devices to run (default: all in DIR)\n"
          "    --hub HOST:PORT     hub endpoint; repeat for a list tried in turn\n"
          "                        (default 127.0.0.1:8883)\n"
          "    --state DIR         per-device queues and counters go in DIR/ID/\n"
          "                        (default ./moat-sim-state)\n"
          "    --interval MS       reading period per device (default 5000)\n"
          "    --payload BYTES     pad each reading to this size (default: short text)\n"
          "    --duration S        stop after S seconds (default: until SIGINT/SIGTERM)\n"
          "    --stats S           status line period in seconds (default 5; 0 = off)\n"
          "    --trust HEX         command signing public key, from `moatctl command\n"
          "                        keygen`; repeatable. Without one every command is\n"
          "                        refused and reported\n"
          "    --shaper MS:BYTES   traffic shaping: one BYTES-sized record every MS ms\n"
          "    --queue-size BYTES  queue area per device (default 32768)\n"
          "    --backoff-max MS    longest reconnect wait (default 30000)\n"
          "    --keep-alive S      MQTT keep-alive (default 60)\n"
          "    --mqtt311           speak MQTT 3.1.1 instead of 5\n"
          "    --verbose           print every connection change and command\n"
          "    --help              this text\n"
          "\n"
          "EXAMPLES\n"
          "    Fifty devices against a local hub:\n"
          "        for i in $(seq 50); do moatctl device add --out certs; done\n"
          "        moat-sim --certs certs --interval 1000 --duration 60\n"
          "\n"
          "    Two hubs, shaped traffic:\n"
          "        moat-sim --certs certs --hub hub1:8883 --hub hub2:8883 \\\n"
          "                 --shaper 2000:256\n"
          "\n"
          "EXIT STATUS\n"
          "    0 after --duration or a signal, 1 if no device could start, 2 for a\n"
          "    usage error.\n",
          f);
}

static int parse_options(int argc, char **argv, sim_opts *o)
{
    enum {
        O_CERTS = 256,
        O_DEVICES,
        O_HUB,
        O_STATE,
        O_INTERVAL,
        O_PAYLOAD,
        O_DURATION,
        O_STATS,
        O_TRUST,
        O_SHAPER,
        O_QSIZE,
        O_BACKOFF,
        O_KA,
        O_311,
        O_VERBOSE,
        O_HELP
    };
    static const struct option longs[] = {
        {"certs", required_argument, NULL, O_CERTS},
        {"devices", required_argument, NULL, O_DEVICES},
        {"hub", required_argument, NULL, O_HUB},
        {"state", required_argument, NULL, O_STATE},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"payload", required_argument, NULL, O_PAYLOAD},
        {"duration", required_argument, NULL, O_DURATION},
        {"stats", required_argument, NULL, O_STATS},
        {"trust", required_argument, NULL, O_TRUST},
        {"shaper", required_argument, NULL, O_SHAPER},
        {"queue-size", required_argument, NULL, O_QSIZE},
        {"backoff-max", required_argument, NULL, O_BACKOFF},
        {"keep-alive", required_argument, NULL, O_KA},
        {"mqtt311", no_argument, NULL, O_311},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->state = "moat-sim-state";
    o->interval_ms = 5000;
    o->stats_s = 5;
    o->queue_size = 32768;
    o->backoff_max_ms = 30000;
    o->keep_alive = 60;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case O_CERTS:
            o->certs = optarg;
            break;
        case O_DEVICES:
            ok = moat_linux_parse_ulong(optarg, 1, 1000000, &o->devices);
            break;
        case O_HUB:
            ok = moat_linux_hubs_add(&o->hubs, optarg);
            break;
        case O_STATE:
            o->state = optarg;
            break;
        case O_INTERVAL:
            ok = moat_linux_parse_ulong(optarg, 1, 86400000, &o->interval_ms);
            break;
        case O_PAYLOAD:
            ok = moat_linux_parse_ulong(optarg, 1, 800, &o->payload);
            break;
        case O_DURATION:
            ok = moat_linux_parse_ulong(optarg, 1, 31536000, &o->duration_s);
            break;
        case O_STATS:
            ok = moat_linux_parse_ulong(optarg, 0, 86400, &o->stats_s);
            break;
        case O_TRUST:
            ok = o->ntrust < SIM_MAX_TRUST && moat_linux_parse_key_hex(optarg, o->trust[o->ntrust]);
            o->ntrust += ok;
            break;
        case O_SHAPER: {
            char *colon = strchr(optarg, ':');
            ok = colon != NULL;
            if (ok) {
                *colon = '\0';
                ok = moat_linux_parse_ulong(optarg, 1, 86400000, &o->shaper_ms) &&
                     moat_linux_parse_ulong(colon + 1, 16, SIM_BUF - 64, &o->shaper_size);
            }
            break;
        }
        case O_QSIZE:
            ok = moat_linux_parse_ulong(optarg, 4096, 1ul << 30, &o->queue_size);
            break;
        case O_BACKOFF:
            ok = moat_linux_parse_ulong(optarg, 1, 3600000, &o->backoff_max_ms);
            break;
        case O_KA:
            ok = moat_linux_parse_ulong(optarg, 0, 65535, &o->keep_alive);
            break;
        case O_311:
            o->mqtt311 = true;
            break;
        case O_VERBOSE:
            o->verbose = true;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            fputs("Try 'moat-sim --help'.\n", stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "moat-sim: bad value for --%s: %s\n", longs[c - O_CERTS].name, optarg);
            return 2;
        }
    }
    if (optind != argc || !o->certs) {
        fputs("moat-sim: --certs DIR is required. Try 'moat-sim --help'.\n", stderr);
        return 2;
    }
    if (o->hubs.count == 0)
        (void)moat_linux_hubs_add(&o->hubs, "127.0.0.1:8883");
    return 0;
}

/* ---- callbacks ------------------------------------------------------------ */

static void on_command(void *user, const moat_command *cmd)
{
    device *d = user;
    d->commands++;
    printf("%s: command %.*s %.*s (counter %llu)\n", d->id, (int)cmd->name_len,
           (const char *)cmd->name, (int)(cmd->body_len > 200 ? 200 : cmd->body_len),
           (const char *)cmd->body, (unsigned long long)cmd->counter);
}

static void on_rejected(void *user, const moat_command_rejection *r)
{
    device *d = user;
    if (opt.verbose)
        printf("%s: command on %.*s rejected: %s\n", d->id, (int)r->topic_len,
               (const char *)r->topic, moat_command_reason_str(r->reason));
}

static void on_event(void *user, moat_event ev, moat_status st, uint64_t detail)
{
    device *d = user;
    (void)detail;
    if (ev == MOAT_EV_ONLINE)
        d->online = true;
    if (ev == MOAT_EV_OFFLINE)
        d->online = false;
    if (!opt.verbose)
        return;
    if (ev == MOAT_EV_ONLINE)
        printf("%s: online\n", d->id);
    else if (ev == MOAT_EV_OFFLINE)
        printf("%s: offline (%s)\n", d->id, moat_status_str(st));
    else if (ev == MOAT_EV_CONNECT_FAILED)
        printf("%s: connect failed (%s: %s)\n", d->id, moat_status_str(st),
               moat_linux_tls_last_error(d->tls));
}

/* ---- devices -------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The ids of DIR's ID.crt files that have an ID.key, sorted. */
static size_t list_ids(const char *dir, char ***out)
{
    DIR *dh = opendir(dir);
    if (!dh)
        return 0;
    size_t n = 0, cap = 0;
    char **ids = NULL;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || len - 4 > MOAT_DEVICE_ID_MAX || strcmp(e->d_name + len - 4, ".crt") != 0 ||
            strcmp(e->d_name, "ca.crt") == 0)
            continue;
        char key[SIM_PATH];
        struct stat sb;
        snprintf(key, sizeof(key), "%s/%.*s.key", dir, (int)(len - 4), e->d_name);
        if (stat(key, &sb) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(ids, cap * sizeof(*ids));
            if (!grown)
                break;
            ids = grown;
        }
        ids[n] = strndup(e->d_name, len - 4);
        if (ids[n])
            n++;
    }
    closedir(dh);
    qsort(ids, n, sizeof(*ids), cmp_str);
    *out = ids;
    return n;
}

static bool device_start(device *d, const char *id, uint64_t now, size_t index, size_t total)
{
    char err[512], ca[SIM_PATH], cert[SIM_PATH], key[SIM_PATH], state[SIM_PATH];
    snprintf(d->id, sizeof(d->id), "%s", id);
    snprintf(ca, sizeof(ca), "%s/ca.crt", opt.certs);
    snprintf(cert, sizeof(cert), "%s/%s.crt", opt.certs, id);
    snprintf(key, sizeof(key), "%s/%s.key", opt.certs, id);
    snprintf(state, sizeof(state), "%s/%s", opt.state, id);
    moat_linux_tls_config tc = {.ca_file = ca, .cert_file = cert, .key = &d->key};
    if (moat_linux_key_file(&d->key, key) != MOAT_OK ||
        moat_linux_tls_new(&d->tls, &tc, err, sizeof(err)) != MOAT_OK) {
        fprintf(stderr, "moat-sim: %s: %s\n", id, err);
        return false;
    }
    if (moat_linux_storage_open(&d->store, state, opt.queue_size, 4096, err, sizeof(err)) !=
        MOAT_OK) {
        fprintf(stderr, "moat-sim: %s: %s\n", id, err);
        return false;
    }
    moat_linux_tls_transport(d->tls, &d->tr);
    moat_linux_storage_table(&d->store, &d->sto);
    moat_config cfg;
    moat_config_defaults(&cfg);
    cfg.device_id = d->id;
    cfg.endpoints = opt.hubs.list;
    cfg.endpoint_count = opt.hubs.count;
    cfg.transport = &d->tr;
    cfg.clock = &clk;
    cfg.storage = &d->sto;
    cfg.crypto = &crypto;
    cfg.tx_buf = d->tx;
    cfg.tx_cap = sizeof(d->tx);
    cfg.rx_buf = d->rx;
    cfg.rx_cap = sizeof(d->rx);
    cfg.work_buf = d->work;
    cfg.work_cap = sizeof(d->work);
    cfg.protocol_version = opt.mqtt311 ? 4 : 5;
    cfg.keep_alive_s = (uint16_t)opt.keep_alive;
    cfg.backoff_max_ms = (uint32_t)opt.backoff_max_ms;
    if (cfg.backoff_base_ms > cfg.backoff_max_ms)
        cfg.backoff_base_ms = cfg.backoff_max_ms;
    cfg.command_keys = (const uint8_t(*)[32])opt.trust;
    cfg.command_key_count = opt.ntrust;
    cfg.shaper_interval_ms = (uint32_t)opt.shaper_ms;
    cfg.shaper_record_size = opt.shaper_size;
    cfg.on_command = on_command;
    cfg.on_rejected = on_rejected;
    cfg.on_event = on_event;
    cfg.user = d;
    moat_status st = moat_client_init(&d->client, &cfg);
    if (st != MOAT_OK) {
        fprintf(stderr, "moat-sim: %s: client: %s\n", id, moat_status_str(st));
        return false;
    }
    d->temp = 18.0 + (double)(rand() % 60) / 10.0;
    d->hum = 40.0 + (double)(rand() % 200) / 10.0;
    d->next_reading = now + opt.interval_ms * index / (total ? total : 1);
    moat_connect(&d->client);
    return true;
}

static void device_reading(device *d)
{
    char payload[1024];
    bool temp = d->readings % 2 == 0;
    double *v = temp ? &d->temp : &d->hum;
    *v += ((double)(rand() % 1000) - 500.0) / 2500.0;
    int n = snprintf(payload, sizeof(payload), "%.2f", *v);
    size_t len = (size_t)n;
    if (opt.payload > len) {
        memset(payload + len, ' ', opt.payload - len);
        len = opt.payload;
    }
    if (moat_publish(&d->client, temp ? "temp" : "hum", (const uint8_t *)payload, len, NULL) !=
        MOAT_OK)
        d->store_failures++;
    d->readings++;
}

static void print_stats(device *devs, size_t n, uint64_t t0, const char *label)
{
    unsigned long online = 0, stored = 0, failed = 0, commands = 0;
    uint64_t acked = 0, queued = 0, reconnects = 0, rejected = 0;
    for (size_t i = 0; i < n; i++) {
        moat_client_stats s;
        moat_client_get_stats(&devs[i].client, &s);
        online += moat_client_state(&devs[i].client) == MOAT_STATE_ONLINE;
        stored += devs[i].readings - devs[i].store_failures;
        failed += devs[i].store_failures;
        commands += devs[i].commands;
        acked += s.records_sent;
        queued += s.queue.count;
        reconnects += s.connects > 0 ? s.connects - 1 : 0;
        rejected += s.commands_rejected;
    }
    printf("%st=%.1f online=%lu/%zu stored=%lu acked=%llu queued=%llu reconnects=%llu "
           "commands=%lu rejected=%llu store_failures=%lu\n",
           label, (double)(mono_ms() - t0) / 1000.0, online, n, stored, (unsigned long long)acked,
           (unsigned long long)queued, (unsigned long long)reconnects, commands,
           (unsigned long long)rejected, failed);
}

int main(int argc, char **argv)
{
    int rc = parse_options(argc, argv, &opt);
    if (rc)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    moat_linux_clock(&clk);
    if (moat_crypto_sodium(&crypto) != MOAT_OK) {
        fprintf(stderr, "moat-sim: libsodium did not start\n");
        return 1;
    }
    if (mkdir(opt.state, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "moat-sim: %s: %s\n", opt.state, strerror(errno));
        return 1;
    }
    char **ids = NULL;
    size_t nids = list_ids(opt.certs, &ids);
    size_t n = opt.devices && opt.devices < nids ? opt.devices : nids;
    if (n == 0 || (opt.devices && opt.devices > nids)) {
        fprintf(stderr, "moat-sim: %s holds %zu device credentials (ID.crt + ID.key)%s\n",
                opt.certs, nids, opt.devices ? ", fewer than --devices" : "");
        return 1;
    }
    device *devs = calloc(n, sizeof(*devs));
    struct pollfd *pfds = calloc(n, sizeof(*pfds));
    if (!devs || !pfds) {
        fprintf(stderr, "moat-sim: out of memory\n");
        return 1;
    }
    srand((unsigned)mono_ms());
    uint64_t t0 = mono_ms();
    size_t started = 0;
    for (size_t i = 0; i < n; i++) {
        if (!device_start(&devs[started], ids[i], t0, i, n)) {
            moat_linux_storage_close(&devs[started].store);
            moat_linux_tls_free(devs[started].tls);
            memset(&devs[started], 0, sizeof(devs[started]));
            continue;
        }
        started++;
    }
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    free(ids);
    if (started == 0)
        return 1;
    printf("moat-sim: %zu devices, reading every %lu ms\n", started, opt.interval_ms);

    uint64_t end = opt.duration_s ? t0 + opt.duration_s * 1000u : 0;
    uint64_t next_stats = opt.stats_s ? t0 + opt.stats_s * 1000u : 0;
    while (!stop_now) {
        uint64_t now = mono_ms();
        if (end && now >= end)
            break;
        if (next_stats && now >= next_stats) {
            print_stats(devs, started, t0, "");
            next_stats += opt.stats_s * 1000u;
        }
        uint64_t wait = 1000;
        if (end && end - now < wait)
            wait = end - now;
        for (size_t i = 0; i < started; i++) {
            device *d = &devs[i];
            if (now >= d->next_reading) {
                device_reading(d);
                d->next_reading += opt.interval_ms;
                if (d->next_reading < now)
                    d->next_reading = now + opt.interval_ms;
            }
            moat_poll(&d->client);
            uint64_t w = moat_next_deadline_ms(&d->client);
            uint64_t r = d->next_reading > now ? d->next_reading - now : 0;
            if (r < w)
                w = r;
            if (moat_linux_tls_pending(d->tls))
                w = 0;
            if (w < wait)
                wait = w;
            pfds[i].fd = moat_linux_tls_fd(d->tls);
            pfds[i].events = POLLIN | (moat_linux_tls_wants_write(d->tls) ? POLLOUT : 0);
            pfds[i].revents = 0;
        }
        (void)poll(pfds, started, (int)wait);
    }
    for (size_t i = 0; i < started; i++) {
        moat_disconnect(&devs[i].client);
    }
    print_stats(devs, started, t0, "summary: ");
    for (size_t i = 0; i < started; i++) {
        moat_linux_storage_close(&devs[i].store);
        moat_linux_tls_free(devs[i].tls);
    }
    free(devs);
    free(pfds);
    return 0;
}
