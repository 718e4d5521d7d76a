/*
 * sdk_traffic_device.c — a light switch on libmoat's public API, for the
 * traffic test (tests/blackbox/test_sdk_traffic.py, "leak no routine").
 *
 * The device connects like any libmoat device and, once its command
 * subscription is in place, opens a measurement window of --window ms. In
 * the window it switches its light --switches times at random moments (a
 * seeded generator, uniform over the first 80% of the window, so that the
 * last readings still go out before it closes): each switch is one
 * moat_publish on the stream "light". When the window closes it prints its
 * counters and disconnects. Two runs that differ only in --switches (30 vs
 * 0) give the test two captures of the same length to compare.
 *
 * With the shaper on, the window opens half an interval after the first
 * shaped record that follows the subscription and lasts a whole number of
 * intervals, so its edges fall between grid points: a capture cut at the
 * window holds exactly one record per slot, whatever the scheduling jitter.
 *
 * Output lines (times are CLOCK_MONOTONIC ms, the clock Python's
 * time.monotonic() reads, so the test can cut its capture at the window):
 *   subscribed
 *   window start=T0 end=T1
 *   switch seq=N at=T
 *   stats shaped=S cover=C sent=R queued=Q publishes=P
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

#define MAX_SWITCHES 1000

typedef struct options {
    moat_endpoint hub;
    char host[256];
    const char *ca, *cert, *key, *state;
    unsigned long window_ms, switches, seed, shaper_ms, shaper_size, keep_alive;
} options;

static bool subscribed;

static void on_event(void *user, moat_event ev, moat_status st, uint64_t detail)
{
    (void)user;
    (void)st;
    (void)detail;
    if (ev == MOAT_EV_SUBSCRIBED)
        subscribed = true;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool parse_ulong(const char *s, unsigned long hi, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    if (!s || !*s || *s == '-')
        return false;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_hub(options *o, const char *s)
{
    const char *colon = strrchr(s, ':');
    unsigned long port;
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(o->host) ||
        !parse_ulong(colon + 1, 65535, &port) || port == 0)
        return false;
    memcpy(o->host, s, (size_t)(colon - s));
    o->host[colon - s] = '\0';
    o->hub = (moat_endpoint){o->host, (uint16_t)port};
    return true;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: sdk_traffic_device --hub HOST:PORT --ca F --cert F --key F --state DIR\n"
            "       --window MS --switches N [--seed S] [--shaper MS:BYTES]\n"
            "       [--keep-alive S]\n");
    return 2;
}

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longs[] = {
        {"hub", required_argument, NULL, 'h'},
        {"ca", required_argument, NULL, 'a'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"state", required_argument, NULL, 's'},
        {"window", required_argument, NULL, 'w'},
        {"switches", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 'r'},
        {"shaper", required_argument, NULL, 'p'},
        {"keep-alive", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->window_ms = 5000;
    o->seed = 1;
    o->keep_alive = 60;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        bool ok = true;
        char *colon;
        switch (opt) {
        case 'h':
            ok = parse_hub(o, optarg);
            break;
        case 'a':
            o->ca = optarg;
            break;
        case 'c':
            o->cert = optarg;
            break;
        case 'k':
            o->key = optarg;
            break;
        case 's':
            o->state = optarg;
            break;
        case 'w':
            ok = parse_ulong(optarg, 600000, &o->window_ms) && o->window_ms > 0;
            break;
        case 'n':
            ok = parse_ulong(optarg, MAX_SWITCHES, &o->switches);
            break;
        case 'r':
            ok = parse_ulong(optarg, 0xffffffffUL, &o->seed);
            break;
        case 'p':
            colon = strchr(optarg, ':');
            ok = colon != NULL;
            if (ok) {
                *colon = '\0';
                ok = parse_ulong(optarg, 600000, &o->shaper_ms) && o->shaper_ms > 0 &&
                     parse_ulong(colon + 1, 1024, &o->shaper_size);
            }
            break;
        case 'l':
            ok = parse_ulong(optarg, 65535, &o->keep_alive);
            break;
        default:
            return usage();
        }
        if (!ok) {
            fprintf(stderr, "sdk_traffic_device: bad value: %s\n", optarg);
            return 2;
        }
    }
    if (optind != argc || !o->host[0] || !o->ca || !o->cert || !o->key || !o->state)
        return usage();
    return 0;
}

/* xorshift32: the same switch times for the same seed on every machine. */
static uint32_t next_random(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static moat_client client;
static uint8_t tx[1536], rx[1536], work[1536];
static uint64_t switch_at[MAX_SWITCHES];

int main(int argc, char **argv)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    moat_linux_key key;
    moat_linux_tls *tls = NULL;
    moat_linux_storage store;
    moat_transport tr;
    moat_clock clk;
    moat_storage sto;
    char id[MOAT_DEVICE_ID_MAX + 1];
    if (moat_linux_cert_device_id(o.cert, id, sizeof(id), err, sizeof(err)) != MOAT_OK) {
        fprintf(stderr, "sdk_traffic_device: %s\n", err);
        return 1;
    }
    moat_linux_tls_config tc = {.ca_file = o.ca, .cert_file = o.cert, .key = &key};
    if (moat_linux_key_file(&key, o.key) != MOAT_OK ||
        moat_linux_tls_new(&tls, &tc, err, sizeof(err)) != MOAT_OK) {
        fprintf(stderr, "sdk_traffic_device: %s\n", err);
        return 1;
    }
    if (moat_linux_storage_open(&store, o.state, 65536, 4096, err, sizeof(err)) != MOAT_OK) {
        fprintf(stderr, "sdk_traffic_device: %s\n", err);
        moat_linux_tls_free(tls);
        return 1;
    }
    rc = 1;
    moat_linux_tls_transport(tls, &tr);
    moat_linux_clock(&clk);
    moat_linux_storage_table(&store, &sto);

    moat_config cfg;
    moat_config_defaults(&cfg);
    cfg.device_id = id;
    cfg.endpoints = &o.hub;
    cfg.endpoint_count = 1;
    cfg.transport = &tr;
    cfg.clock = &clk;
    cfg.storage = &sto;
    cfg.tx_buf = tx;
    cfg.tx_cap = sizeof(tx);
    cfg.rx_buf = rx;
    cfg.rx_cap = sizeof(rx);
    cfg.work_buf = work;
    cfg.work_cap = sizeof(work);
    cfg.keep_alive_s = (uint16_t)o.keep_alive;
    cfg.backoff_max_ms = 500;
    cfg.shaper_interval_ms = (uint32_t)o.shaper_ms;
    cfg.shaper_record_size = o.shaper_size;
    cfg.on_event = on_event;
    moat_status st = moat_client_init(&client, &cfg);
    if (st != MOAT_OK) {
        fprintf(stderr, "sdk_traffic_device: cannot start the client: %s\n", moat_status_str(st));
        goto out;
    }
    moat_connect(&client);

    uint64_t give_up = mono_ms() + 20000, t0 = 0, t1 = 0, shaped_at_sub = 0;
    size_t next_switch = 0;
    bool announced = false;
    for (;;) {
        moat_poll(&client);
        uint64_t now = mono_ms();
        moat_client_stats s;
        moat_client_get_stats(&client, &s);
        if (!t0) {
            if (!subscribed) {
                if (now > give_up) {
                    fprintf(stderr, "sdk_traffic_device: not subscribed after 20 s\n");
                    goto out;
                }
            } else if (!announced) {
                printf("subscribed\n");
                announced = true;
                shaped_at_sub = s.shaped_records;
                if (!o.shaper_ms)
                    t0 = now + 300;
            } else if (o.shaper_ms && s.shaped_records > shaped_at_sub) {
                t0 = now + o.shaper_ms / 2;
            }
            if (t0) {
                t1 = t0 + o.window_ms;
                uint32_t seed = (uint32_t)o.seed ? (uint32_t)o.seed : 1u;
                uint64_t span = o.window_ms * 8 / 10;
                for (size_t i = 0; i < o.switches; i++)
                    switch_at[i] = t0 + next_random(&seed) % (span ? span : 1);
                qsort(switch_at, o.switches, sizeof(switch_at[0]), cmp_u64);
                printf("window start=%llu end=%llu\n", (unsigned long long)t0,
                       (unsigned long long)t1);
            }
        }
        while (t0 && next_switch < o.switches && now >= switch_at[next_switch]) {
            const char *v = next_switch % 2 ? "off" : "on";
            uint64_t seq = 0;
            st = moat_publish(&client, "light", (const uint8_t *)v, strlen(v), &seq);
            if (st != MOAT_OK) {
                fprintf(stderr, "sdk_traffic_device: switch not stored: %s\n", moat_status_str(st));
                goto out;
            }
            printf("switch seq=%llu at=%llu\n", (unsigned long long)seq, (unsigned long long)now);
            next_switch++;
        }
        if (t1 && now >= t1) {
            printf("stats shaped=%llu cover=%llu sent=%llu queued=%u publishes=%llu\n",
                   (unsigned long long)s.shaped_records, (unsigned long long)s.cover_records,
                   (unsigned long long)s.records_sent, (unsigned)s.queue.count,
                   (unsigned long long)s.publishes);
            rc = 0;
            break;
        }
        uint64_t wait = moat_next_deadline_ms(&client);
        uint64_t until = t1 ? t1 : now + 50;
        if (t0 && next_switch < o.switches && switch_at[next_switch] < until)
            until = switch_at[next_switch];
        if (until <= now)
            continue;
        if (until - now < wait)
            wait = until - now;
        moat_linux_tls_wait(tls, (uint32_t)wait);
    }
    moat_disconnect(&client);
out:
    moat_linux_storage_close(&store);
    moat_linux_tls_free(tls);
    return rc;
}
