/*
 * moat_bench.c — moat-bench: a load generator for MQTT brokers over TLS 1.3
 * with client certificates, and the yardstick of moat's hub against others.
 *
 * This file is the conductor: it parses the command line, plans which
 * connection plays which role (publisher, subscriber, storm or idle client)
 * and which worker thread owns it, moves the workers through the phases of a
 * run (set-up, warm-up, measurement, drain, close), samples the broker's CPU
 * time and memory from /proc around the measured window, and reports a human
 * table and, on request, JSON. The work on the wire is in client.c.
 *
 * The tool is bounded by design: loopback addresses only, a duration, an
 * optional message count, a set-up deadline; SIGINT ends the run early with
 * a report of what was measured.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "codec.h"
#include "report.h"

#define MOAT_BENCH_VERSION "0.1.0"
#define MAX_THREADS        64u
#define MAX_CONNS          1000000u

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *out)
{
    fputs("NAME\n"
          "    moat-bench - load generator for MQTT brokers over TLS 1.3 with client certificates\n"
          "\n"
          "SYNOPSIS\n"
          "    moat-bench SCENARIO --cafile F --cert F --key F [OPTIONS]\n"
          "    moat-bench SCENARIO --cafile F --cert F --key F --devices DIR\n"
          "               -t 'moat/%d/up/STREAM' [OPTIONS]\n"
          "\n"
          "SCENARIOS\n"
          "    fan-in         N publishers -> K subscribers (each gets every message, or\n"
          "                   one share each with --shared); topics PATTERN with %i = 0..N-1\n"
          "    fan-out        1 publisher -> N subscribers of one topic\n"
          "    pairs          N publishers, each with its own subscriber\n"
          "    connect-storm  N new mTLS connections (CONNECT, CONNACK, DISCONNECT) as fast\n"
          "                   as --concurrency allows: handshakes/s\n"
          "    idle           N connections held open with keep-alive: broker memory per\n"
          "                   connection (needs --broker-pid)\n"
          "\n"
          "CONNECTION\n"
          "    -H, --host ADDR        broker address, loopback only (default 127.0.0.1)\n"
          "    -p, --port PORT        (default 8883)\n"
          "    --cafile, --cert, --key FILE\n"
          "                           CA that signed the broker's certificate; the client\n"
          "                           certificate and key every connection presents (with\n"
          "                           --devices: every subscriber)\n"
          "    --devices DIR          publishers act as devices: publisher i presents the\n"
          "                           certificate and key of the i-th device of DIR in name\n"
          "                           order (DIR/ID.crt and DIR/ID.key, as `moatctl device\n"
          "                           add --out DIR` writes them; the first N are used) and\n"
          "                           its client id is the device id. fan-in, fan-out and\n"
          "                           pairs only\n"
          "    --source A,B,...       loopback source addresses to spread connections over\n"
          "                           (about 28,000 connections per address)\n"
          "    --ciphersuites LIST    TLS 1.3 suites offered, in order\n"
          "                           (default TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:\n"
          "                           TLS_CHACHA20_POLY1305_SHA256)\n"
          "    --no-verify-server     skip checking the broker's certificate (saves the\n"
          "                           tool a signature check per handshake)\n"
          "    -V, --mqtt 3.1.1|5     protocol version (default 5)\n"
          "    -i, --client-id PREFIX client ids are PREFIX/p<n> (publishers, unless they\n"
          "                           are devices), PREFIX/s<n> (subscribers), PREFIX/c<n>\n"
          "                           (storm), PREFIX/i<n> (idle); default 'bench'\n"
          "    -t, --topic PATTERN    topic of publisher %i (default bench/%i); %d is the\n"
          "                           publisher's device id (needs --devices). fan-in\n"
          "                           subscribers use it with %i and %d replaced by '+'; a\n"
          "                           pairs or fan-out subscriber with those of its publisher\n"
          "    --keepalive S          MQTT keep-alive, seconds (default 60; PINGREQ at S/2)\n"
          "    --persistent           clean start off (session expiry 3600 s in MQTT 5)\n"
          "\n"
          "LOAD\n"
          "    -n, --connections N    publishers (fan-in), subscribers (fan-out), pairs,\n"
          "                           storm or idle connections (default 100; storm 1000)\n"
          "    -k, --subscribers K    fan-in subscribers (default 1)\n"
          "    --shared               fan-in subscribers share $share/bench/FILTER\n"
          "    -q, --qos 0|1|2        (default 0)\n"
          "    -s, --size BYTES       payload size, 16 to 16777216 (default 64); the payload\n"
          "                           carries the send time for the latency\n"
          "    -r, --rate MSG/S       total offered rate; 0 = as fast as the broker takes\n"
          "                           them with at most --window messages in flight (default 0)\n"
          "    --window N             as-fast-as-possible: deliveries still owed for what\n"
          "                           was published (a fan-out publish owes one per\n"
          "                           subscriber); default 4096, at most 4 MiB of payload\n"
          "    --burst N              as-fast-as-possible: messages one publisher adds per\n"
          "                           loop pass (default 1)\n"
          "    --inflight N           QoS 1/2 messages in flight per publisher (default 16;\n"
          "                           lowered to the broker's Receive Maximum)\n"
          "    -c, --concurrency N    connections being opened at once (default 64)\n"
          "    --connect-rate R       new connections per second (default: no limit)\n"
          "    -j, --threads N        worker threads, one event loop each (default 1)\n"
          "\n"
          "RUN\n"
          "    -d, --duration S       measured seconds; idle: how long to hold (default 10)\n"
          "    --warmup S             publishing before measuring (default 2)\n"
          "    --drain S              wait for deliveries after publishing stops (default 2)\n"
          "    --max-messages N       stop once N messages were published\n"
          "    --setup-timeout S      give up when connections take longer (default\n"
          "                           60 + N/200)\n"
          "    --settle S             idle: wait before reading the broker's memory (default 2)\n"
          "    --broker-pid PID       read the broker's CPU time and memory from /proc\n"
          "    --json FILE            write the results as JSON (with QoS 1/2: the publishes\n"
          "                           the broker acknowledged, measured and whole run)\n"
          "    --progress, --no-progress\n"
          "                           a progress line every second (default: on a terminal)\n"
          "    --quiet                no table on stdout (errors still go to stderr)\n"
          "\n"
          "EXIT STATUS\n"
          "    0 done; 1 the run failed (set-up failed, nothing delivered, no handshake);\n"
          "    2 usage error; 130 interrupted (the partial report is still printed).\n"
          "\n"
          "EXAMPLES\n"
          "    moat-bench fan-in -n 1000 -q 1 -s 64 --cafile ca.crt --cert bench.crt \\\n"
          "        --key bench.key -p 8883 --broker-pid $(pidof moatd) --json out.json\n"
          "\n"
          "    # 100 devices publishing readings to a moat hub, one service reading them\n"
          "    # (its policy: allow subscribe and receive moat/+/up/#)\n"
          "    for i in $(seq 100); do moatctl device add --out devs; done\n"
          "    moat-bench fan-in -n 100 -q 1 --devices devs -t 'moat/%d/up/bench' \\\n"
          "        --cafile devs/ca.crt --cert reader.crt --key reader.key -i reader\n",
          out);
}

/* ---- parsing ------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* A loopback IPv4 address ("localhost" is 127.0.0.1). */
static bool parse_loopback(const char *s, struct sockaddr_in *sa, uint16_t port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (!strcmp(s, "localhost"))
        s = "127.0.0.1";
    if (inet_pton(AF_INET, s, &sa->sin_addr) != 1)
        return false;
    return (ntohl(sa->sin_addr.s_addr) >> 24) == 127;
}

static bool parse_sources(bench_opts *o, const char *list)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    o->sources = calloc(n, sizeof(*o->sources));
    if (!o->sources)
        return false;
    const char *p = list;
    o->nsources = 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char one[INET_ADDRSTRLEN + 1];
        if (len == 0 || len >= sizeof(one))
            return false;
        memcpy(one, p, len);
        one[len] = '\0';
        if (!parse_loopback(one, &o->sources[o->nsources], 0))
            return false;
        o->nsources++;
        p += len + (comma ? 1 : 0);
    }
    return o->nsources > 0;
}

enum {
    OPT_CAFILE = 256,
    OPT_CERT,
    OPT_KEY,
    OPT_DEVICES,
    OPT_SOURCE,
    OPT_CIPHERS,
    OPT_NO_VERIFY,
    OPT_KEEPALIVE,
    OPT_PERSISTENT,
    OPT_SHARED,
    OPT_WINDOW,
    OPT_BURST,
    OPT_INFLIGHT,
    OPT_CONNECT_RATE,
    OPT_WARMUP,
    OPT_DRAIN,
    OPT_MAX_MESSAGES,
    OPT_SETUP_TIMEOUT,
    OPT_SETTLE,
    OPT_BROKER_PID,
    OPT_JSON,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_QUIET,
    OPT_VERSION
};

static const struct option long_opts[] = {
    {"host", required_argument, NULL, 'H'},
    {"port", required_argument, NULL, 'p'},
    {"cafile", required_argument, NULL, OPT_CAFILE},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"devices", required_argument, NULL, OPT_DEVICES},
    {"source", required_argument, NULL, OPT_SOURCE},
    {"ciphersuites", required_argument, NULL, OPT_CIPHERS},
    {"no-verify-server", no_argument, NULL, OPT_NO_VERIFY},
    {"mqtt", required_argument, NULL, 'V'},
    {"client-id", required_argument, NULL, 'i'},
    {"topic", required_argument, NULL, 't'},
    {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
    {"persistent", no_argument, NULL, OPT_PERSISTENT},
    {"connections", required_argument, NULL, 'n'},
    {"subscribers", required_argument, NULL, 'k'},
    {"shared", no_argument, NULL, OPT_SHARED},
    {"qos", required_argument, NULL, 'q'},
    {"size", required_argument, NULL, 's'},
    {"rate", required_argument, NULL, 'r'},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"burst", required_argument, NULL, OPT_BURST},
    {"inflight", required_argument, NULL, OPT_INFLIGHT},
    {"concurrency", required_argument, NULL, 'c'},
    {"connect-rate", required_argument, NULL, OPT_CONNECT_RATE},
    {"threads", required_argument, NULL, 'j'},
    {"duration", required_argument, NULL, 'd'},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"drain", required_argument, NULL, OPT_DRAIN},
    {"max-messages", required_argument, NULL, OPT_MAX_MESSAGES},
    {"setup-timeout", required_argument, NULL, OPT_SETUP_TIMEOUT},
    {"settle", required_argument, NULL, OPT_SETTLE},
    {"broker-pid", required_argument, NULL, OPT_BROKER_PID},
    {"json", required_argument, NULL, OPT_JSON},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0}};

static int bad(const char *opt, const char *val, const char *want)
{
    fprintf(stderr, "moat-bench: %s '%s': expected %s\n", opt, val ? val : "", want);
    return 2;
}

static bool scenario_of(const char *s, bench_opts *o)
{
    static const struct {
        const char *name;
        scenario sc;
    } names[] = {{"fan-in", SC_FANIN},        {"fan-out", SC_FANOUT}, {"pairs", SC_PAIRS},
                 {"connect-storm", SC_STORM}, {"storm", SC_STORM},    {"idle", SC_IDLE}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!strcmp(s, names[i].name)) {
            o->sc = names[i].sc;
            o->scenario_name = names[i].sc == SC_STORM ? "connect-storm" : names[i].name;
            return true;
        }
    }
    return false;
}

/* Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    uint64_t v;
    double d;
    bool have_n = false, have_window = false, have_timeout = false;
    const char *host = "127.0.0.1";
    *o = (bench_opts){.port = 8883,
                      .ciphersuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                      "TLS_CHACHA20_POLY1305_SHA256",
                      .verify_server = true,
                      .conns = 100,
                      .subs = 1,
                      .size = 64,
                      .version = CODEC_V5,
                      .duration = 10,
                      .warmup = 2,
                      .drain = 2,
                      .id_prefix = "bench",
                      .topic = "bench/%i",
                      .threads = 1,
                      .keepalive = 60,
                      .inflight = 16,
                      .burst = 1,
                      .concurrency = 64,
                      .progress = -1,
                      .settle = 2};
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:V:i:t:n:k:q:s:r:c:j:d:h", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            if (!parse_u64(optarg, 1, 65535, &v))
                return bad("--port", optarg, "1 to 65535");
            o->port = (uint16_t)v;
            break;
        case OPT_CAFILE:
            o->cafile = optarg;
            break;
        case OPT_CERT:
            o->cert = optarg;
            break;
        case OPT_KEY:
            o->key = optarg;
            break;
        case OPT_DEVICES:
            o->devices_dir = optarg;
            break;
        case OPT_SOURCE:
            if (!parse_sources(o, optarg))
                return bad("--source", optarg, "comma-separated 127.x.y.z addresses");
            break;
        case OPT_CIPHERS:
            o->ciphersuites = optarg;
            break;
        case OPT_NO_VERIFY:
            o->verify_server = false;
            break;
        case 'V':
            if (!strcmp(optarg, "5"))
                o->version = CODEC_V5;
            else if (!strcmp(optarg, "3.1.1") || !strcmp(optarg, "3") || !strcmp(optarg, "4"))
                o->version = CODEC_V311;
            else
                return bad("--mqtt", optarg, "3.1.1 or 5");
            break;
        case 'i':
            o->id_prefix = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case OPT_KEEPALIVE:
            if (!parse_u64(optarg, 0, 65535, &v))
                return bad("--keepalive", optarg, "0 to 65535 seconds");
            o->keepalive = (uint16_t)v;
            break;
        case OPT_PERSISTENT:
            o->persistent = true;
            break;
        case 'n':
            if (!parse_u64(optarg, 1, MAX_CONNS, &v))
                return bad("--connections", optarg, "1 to 1000000");
            o->conns = (uint32_t)v;
            have_n = true;
            break;
        case 'k':
            if (!parse_u64(optarg, 1, MAX_CONNS, &v))
                return bad("--subscribers", optarg, "1 to 1000000");
            o->subs = (uint32_t)v;
            break;
        case OPT_SHARED:
            o->shared = true;
            break;
        case 'q':
            if (!parse_u64(optarg, 0, 2, &v))
                return bad("--qos", optarg, "0, 1 or 2");
            o->qos = (uint8_t)v;
            break;
        case 's':
            if (!parse_u64(optarg, BENCH_STAMP_LEN, BENCH_MAX_PAYLOAD, &v))
                return bad("--size", optarg, "16 to 16777216 bytes");
            o->size = (uint32_t)v;
            break;
        case 'r':
            if (!parse_double(optarg, 0, 1e9, &d))
                return bad("--rate", optarg, "0 to 1e9 messages per second");
            o->rate = d;
            break;
        case OPT_WINDOW:
            if (!parse_u64(optarg, 1, 10000000, &v))
                return bad("--window", optarg, "1 to 10000000 messages");
            o->window = (uint32_t)v;
            have_window = true;
            break;
        case OPT_BURST:
            if (!parse_u64(optarg, 1, 100000, &v))
                return bad("--burst", optarg, "1 to 100000");
            o->burst = (uint32_t)v;
            break;
        case OPT_INFLIGHT:
            if (!parse_u64(optarg, 1, 65535, &v))
                return bad("--inflight", optarg, "1 to 65535");
            o->inflight = (uint32_t)v;
            break;
        case 'c':
            if (!parse_u64(optarg, 1, 100000, &v))
                return bad("--concurrency", optarg, "1 to 100000");
            o->concurrency = (uint32_t)v;
            break;
        case OPT_CONNECT_RATE:
            if (!parse_double(optarg, 0, 1e7, &d))
                return bad("--connect-rate", optarg, "0 to 1e7 per second");
            o->connect_rate = d;
            break;
        case 'j':
            if (!parse_u64(optarg, 1, MAX_THREADS, &v))
                return bad("--threads", optarg, "1 to 64");
            o->threads = (unsigned)v;
            break;
        case 'd':
            if (!parse_double(optarg, 0.1, 86400, &d))
                return bad("--duration", optarg, "0.1 to 86400 seconds");
            o->duration = d;
            break;
        case OPT_WARMUP:
            if (!parse_double(optarg, 0, 3600, &d))
                return bad("--warmup", optarg, "0 to 3600 seconds");
            o->warmup = d;
            break;
        case OPT_DRAIN:
            if (!parse_double(optarg, 0, 600, &d))
                return bad("--drain", optarg, "0 to 600 seconds");
            o->drain = d;
            break;
        case OPT_MAX_MESSAGES:
            if (!parse_u64(optarg, 1, UINT64_MAX / 2, &v))
                return bad("--max-messages", optarg, "a positive count");
            o->max_messages = v;
            break;
        case OPT_SETUP_TIMEOUT:
            if (!parse_double(optarg, 1, 86400, &d))
                return bad("--setup-timeout", optarg, "1 to 86400 seconds");
            o->setup_timeout = d;
            have_timeout = true;
            break;
        case OPT_SETTLE:
            if (!parse_double(optarg, 0, 600, &d))
                return bad("--settle", optarg, "0 to 600 seconds");
            o->settle = d;
            break;
        case OPT_BROKER_PID:
            if (!parse_u64(optarg, 1, INT_MAX, &v))
                return bad("--broker-pid", optarg, "a process id");
            o->broker_pid = (pid_t)v;
            break;
        case OPT_JSON:
            o->json_path = optarg;
            break;
        case OPT_PROGRESS:
            o->progress = 1;
            break;
        case OPT_NO_PROGRESS:
            o->progress = 0;
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("moat-bench %s\n", MOAT_BENCH_VERSION);
            return 0;
        default:
            fprintf(stderr, "moat-bench: see moat-bench --help\n");
            return 2;
        }
    }
    if (optind + 1 != argc || !scenario_of(argv[optind], o)) {
        fprintf(stderr, "moat-bench: give one scenario: fan-in, fan-out, pairs, connect-storm "
                        "or idle (see --help)\n");
        return 2;
    }
    if (!o->cafile || !o->cert || !o->key) {
        fprintf(stderr, "moat-bench: --cafile, --cert and --key are required\n");
        return 2;
    }
    if (!parse_loopback(host, &o->addr, o->port))
        return bad("--host", host, "a loopback address (127.x.y.z or localhost)");
    o->host = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    if (o->sc == SC_STORM && !have_n)
        o->conns = 1000;
    if (!have_window) {
        uint64_t w = (4u * 1024u * 1024u) / ((uint64_t)o->size + 64u);
        o->window = (uint32_t)(w > 4096 ? 4096 : w < 16 ? 16 : w);
    }
    if (!have_timeout)
        o->setup_timeout = 60.0 + o->conns / 200.0;
    if (o->devices_dir && (o->sc == SC_STORM || o->sc == SC_IDLE)) {
        fprintf(stderr, "moat-bench: --devices: publishers only (fan-in, fan-out, pairs)\n");
        return 2;
    }
    if (strstr(o->topic, "%d") && !o->devices_dir) {
        fprintf(stderr, "moat-bench: --topic %s: %%d is a device id and needs --devices\n",
                o->topic);
        return 2;
    }
    size_t plen = strlen(o->id_prefix);
    if (plen == 0 || plen > 64) {
        fprintf(stderr, "moat-bench: --client-id: 1 to 64 characters\n");
        return 2;
    }
    return -1;
}

/* ---- the plan ------------------------------------------------------------ */

/* PATTERN with every %i replaced by num and every %d by dev (NULL: none,
 * checked by parse_args). False when it does not fit in out. */
static bool expand(const char *pattern, const char *num, const char *dev, char *out, size_t len)
{
    size_t k = 0;
    for (const char *p = pattern; *p;) {
        const char *put = NULL;
        if (p[0] == '%' && p[1] == 'i')
            put = num;
        else if (p[0] == '%' && p[1] == 'd')
            put = dev;
        size_t n = put ? strlen(put) : 1;
        if (n >= len - k)
            return false;
        memcpy(out + k, put ? put : p, n);
        k += n;
        p += put ? 2 : 1;
    }
    out[k] = '\0';
    return k > 0;
}

/* The device id of publisher i, or NULL without --devices. */
static const char *device_of(const bench *b, uint32_t i)
{
    return i < b->ndevices ? b->devices[i].id : NULL;
}

static bool set_topic(bconn *c, const char *s, bool filter)
{
    codec_bytes t = {(const uint8_t *)s, strlen(s)};
    if ((filter ? codec_topic_filter_check(t) : codec_topic_name_check(t)) != CODEC_OK) {
        fprintf(stderr, "moat-bench: '%s' is not a valid topic %s%s\n", s,
                filter ? "filter" : "name",
                filter ? " (for fan-in, put %i or %d alone in its level: bench/%i)" : "");
        return false;
    }
    c->topic = strdup(s);
    c->topic_len = t.len;
    return c->topic != NULL;
}

static bool plan(bench *b)
{
    bench_opts *o = &b->o;
    uint32_t n = o->conns;
    switch (o->sc) {
    case SC_FANIN:
        b->nsubs = o->subs;
        b->npubs = n;
        b->fan = o->shared ? 1 : o->subs;
        break;
    case SC_FANOUT:
        b->nsubs = n;
        b->npubs = 1;
        b->fan = n;
        break;
    case SC_PAIRS:
        b->nsubs = n;
        b->npubs = n;
        b->fan = 1;
        break;
    default:
        b->nsubs = 0;
        b->npubs = 0;
        b->fan = 1;
        break;
    }
    b->nconns = (o->sc == SC_STORM || o->sc == SC_IDLE) ? n : (size_t)b->nsubs + b->npubs;
    b->conns = calloc(b->nconns, sizeof(*b->conns));
    if (!b->conns)
        return false;
    if (o->devices_dir && !devices_load(b, b->npubs))
        return false;
    char topic[BENCH_MAX_TOPIC + 32], num[16];
    size_t in_max = (size_t)o->size + 64u * 1024u + 16384u * 2u;
    for (size_t g = 0; g < b->nconns; g++) {
        bconn *c = &b->conns[g];
        c->fd = -1;
        buf_init(&c->in, in_max);
        buf_init(&c->out, 32u * 1024u * 1024u);
        if (o->sc == SC_STORM || o->sc == SC_IDLE) {
            c->role = o->sc == SC_STORM ? ROLE_STORM : ROLE_IDLE;
            c->index = (uint32_t)g;
            continue;
        }
        if (g < b->nsubs) {
            c->role = ROLE_SUB;
            c->index = (uint32_t)g;
            if (o->sc == SC_FANIN) {
                char filter[BENCH_MAX_TOPIC + 32];
                if (!expand(o->topic, "+", "+", filter, sizeof(filter)))
                    return false;
                int k = o->shared ? snprintf(topic, sizeof(topic), "$share/bench/%s", filter)
                                  : snprintf(topic, sizeof(topic), "%s", filter);
                if (k < 0 || (size_t)k >= sizeof(topic))
                    return false;
            } else {
                uint32_t pub = o->sc == SC_FANOUT ? 0u : (uint32_t)g;
                snprintf(num, sizeof(num), "%u", (unsigned)pub);
                if (!expand(o->topic, num, device_of(b, pub), topic, sizeof(topic)))
                    return false;
            }
            if (!set_topic(c, topic, true))
                return false;
        } else {
            c->role = ROLE_PUB;
            c->index = (uint32_t)(g - b->nsubs);
            snprintf(num, sizeof(num), "%u", (unsigned)c->index);
            c->device = device_of(b, c->index);
            if (c->device)
                c->ctx = b->devices[c->index].ctx;
            if (!expand(o->topic, num, c->device, topic, sizeof(topic)) ||
                !set_topic(c, topic, false))
                return false;
        }
    }
    /* Connection g belongs to worker g mod threads. */
    for (unsigned t = 0; t < o->threads; t++) {
        worker *w = &b->workers[t];
        size_t mine = b->nconns / o->threads + (t < b->nconns % o->threads ? 1 : 0);
        w->conns = calloc(mine ? mine : 1, sizeof(*w->conns));
        w->pubs = calloc(mine ? mine : 1, sizeof(*w->pubs));
        if (!w->conns || !w->pubs)
            return false;
    }
    for (size_t g = 0; g < b->nconns; g++) {
        worker *w = &b->workers[g % o->threads];
        bconn *c = &b->conns[g];
        c->w = w;
        w->conns[w->nconns++] = c;
        if (c->role == ROLE_PUB)
            w->pubs[w->npubs++] = c;
    }
    for (unsigned t = 0; t < o->threads; t++) {
        worker *w = &b->workers[t];
        w->rate = b->npubs ? o->rate * (double)w->npubs / (double)b->npubs : 0;
    }
    return true;
}

/* One descriptor per connection, and some to spare. */
static bool raise_fd_limit(size_t conns)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)conns + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur >= need)
        return true;
    if (rl.rlim_max < need)
        rl.rlim_max = need; /* works with CAP_SYS_RESOURCE */
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        return true;
    fprintf(stderr,
            "moat-bench: %zu connections need %llu descriptors; raise the limit "
            "(ulimit -n)\n",
            conns, (unsigned long long)need);
    return false;
}

/* ---- running ------------------------------------------------------------- */

static void set_phase(bench *b, phase p)
{
    atomic_store_explicit(&b->phase, (int)p, memory_order_release);
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static double secs(uint64_t from, uint64_t to)
{
    return to > from ? (double)(to - from) / 1e9 : 0.0;
}

typedef struct sample {
    uint64_t t;
    proc_sample broker;
    double tool_cpu;
    double thread_cpu[MAX_THREADS];
} sample;

static void take_sample(bench *b, sample *s)
{
    s->t = bench_now();
    proc_read(b->o.broker_pid, &s->broker);
    s->tool_cpu = self_cpu_seconds();
    for (unsigned i = 0; i < b->o.threads; i++)
        s->thread_cpu[i] = thread_cpu_seconds(b->workers[i].thread);
}

static void progress_line(bench *b, const char *what, bool final)
{
    if (!b->o.progress)
        return;
    bool tty = isatty(STDERR_FILENO);
    fprintf(stderr, "%s[moat-bench] %s%s", tty ? "\r\033[K" : "", what, final || !tty ? "\n" : "");
    fflush(stderr);
}

/* Wait for every connection of the set-up: true when all succeeded (a storm
 * also ends with failures). */
static bool wait_setup(bench *b, result *r)
{
    uint64_t t0 = bench_now(), last_print = t0;
    uint64_t deadline = t0 + (uint64_t)(b->o.setup_timeout * 1e9);
    for (;;) {
        uint64_t ok = bench_total_opened(b), failed = bench_total_failed(b);
        uint64_t now = bench_now();
        if (ok + failed >= b->nconns)
            break;
        if (failed > 0 && b->o.sc != SC_STORM)
            break;
        if (interrupted) {
            r->interrupted = true;
            break;
        }
        if (now > deadline) {
            snprintf(r->error, sizeof(r->error),
                     "set-up did not finish within %.0f s: %llu of %zu connections ready",
                     b->o.setup_timeout, (unsigned long long)ok, b->nconns);
            break;
        }
        if (now - last_print >= 1000000000ull) {
            char line[160];
            snprintf(line, sizeof(line), "connecting: %llu/%zu ready, %llu failed, %.1f s",
                     (unsigned long long)ok, b->nconns, (unsigned long long)failed, secs(t0, now));
            progress_line(b, line, false);
            last_print = now;
        }
        sleep_s(0.005);
    }
    uint64_t t1 = bench_now();
    r->setup_s = secs(t0, t1);
    r->connected = bench_total_opened(b);
    r->failed = bench_total_failed(b);
    if (r->connected + r->failed >= b->nconns && b->o.progress) {
        char line[160];
        snprintf(line, sizeof(line), "connected %llu in %.2f s", (unsigned long long)r->connected,
                 r->setup_s);
        progress_line(b, line, true);
    }
    return r->connected == b->nconns;
}

/* Write off messages that will never arrive (QoS 0 drops, a broker that
 * discards), so that the window does not close for ever. */
static void unstick_window(bench *b, uint64_t *last_recv, uint64_t *since)
{
    if (b->o.rate > 0)
        return;
    uint64_t recv = bench_total_recv(b), now = bench_now();
    if (recv != *last_recv) {
        *last_recv = recv;
        *since = now;
        return;
    }
    if (now - *since < 500000000ull)
        return;
    atomic_fetch_add(&b->forgiven, bench_in_flight(b));
    *since = now;
}

static void run_messages(bench *b, result *r)
{
    const bench_opts *o = &b->o;
    sample s0, s1;
    proc_read(o->broker_pid, &r->broker_before);
    set_phase(b, PH_SETUP);
    if (!wait_setup(b, r) || r->interrupted) {
        if (!r->error[0] && !r->interrupted)
            snprintf(r->error, sizeof(r->error), "set-up failed: %s", b->first_error);
        return;
    }
    proc_read(o->broker_pid, &r->broker_connected);
    set_phase(b, PH_WARMUP);
    uint64_t last_recv = 0, since = bench_now();
    for (uint64_t end = bench_now() + (uint64_t)(o->warmup * 1e9); bench_now() < end;) {
        if (interrupted) {
            r->interrupted = true;
            return;
        }
        unstick_window(b, &last_recv, &since);
        sleep_s(0.01);
    }
    take_sample(b, &s0);
    set_phase(b, PH_MEASURE);
    uint64_t end = s0.t + (uint64_t)(o->duration * 1e9);
    uint64_t last_print = s0.t, p_sent = bench_total_sent(b), p_recv = bench_total_recv(b);
    for (;;) {
        uint64_t now = bench_now();
        if (now >= end)
            break;
        if (interrupted) {
            r->interrupted = true;
            break;
        }
        if (o->max_messages && bench_total_sent(b) >= o->max_messages)
            break;
        unstick_window(b, &last_recv, &since);
        if (now - last_print >= 1000000000ull) {
            uint64_t sent = bench_total_sent(b), recv = bench_total_recv(b);
            double dt = secs(last_print, now);
            char line[200];
            snprintf(line, sizeof(line),
                     "%.0f/%.0f s: published %.0f/s, delivered %.0f/s, in flight %llu, "
                     "connections lost %llu",
                     secs(s0.t, now), o->duration, (double)(sent - p_sent) / dt,
                     (double)(recv - p_recv) / dt, (unsigned long long)bench_in_flight(b),
                     (unsigned long long)bench_total_failed(b));
            progress_line(b, line, false);
            p_sent = sent;
            p_recv = recv;
            last_print = now;
        }
        sleep_s(0.01);
    }
    set_phase(b, PH_DRAIN);
    take_sample(b, &s1);
    atomic_store(&b->stop_publishing, true);
    proc_read(o->broker_pid, &r->broker_after);
    /* Let what is in flight arrive, for the loss count, and (QoS 1/2) be
     * acknowledged, so that the count of acknowledged publishes is final. */
    uint64_t drain_end = bench_now() + (uint64_t)(o->drain * 1e9);
    while (bench_now() < drain_end && !interrupted) {
        uint64_t sent = bench_total_sent(b);
        if (bench_total_recv(b) >= sent * b->fan &&
            (o->qos == 0 || bench_total_answered(b) >= sent))
            break;
        sleep_s(0.01);
    }
    if (o->progress)
        progress_line(b, "measured", true);
    r->measured_s = secs(s0.t, s1.t);
    r->broker_cpu_s = s1.broker.cpu_s - s0.broker.cpu_s;
    r->tool_cpu_s = s1.tool_cpu - s0.tool_cpu;
    for (unsigned i = 0; i < o->threads; i++) {
        double t = s1.thread_cpu[i] - s0.thread_cpu[i];
        if (t > r->busiest_thread_cpu_s)
            r->busiest_thread_cpu_s = t;
    }
}

static void run_storm(bench *b, result *r)
{
    sample s0, s1;
    proc_read(b->o.broker_pid, &r->broker_before);
    take_sample(b, &s0);
    set_phase(b, PH_SETUP);
    wait_setup(b, r);
    take_sample(b, &s1);
    proc_read(b->o.broker_pid, &r->broker_after);
    r->measured_s = secs(s0.t, s1.t);
    r->broker_cpu_s = s1.broker.cpu_s - s0.broker.cpu_s;
    r->tool_cpu_s = s1.tool_cpu - s0.tool_cpu;
    for (unsigned i = 0; i < b->o.threads; i++) {
        double t = s1.thread_cpu[i] - s0.thread_cpu[i];
        if (t > r->busiest_thread_cpu_s)
            r->busiest_thread_cpu_s = t;
    }
    if (r->failed && !r->error[0])
        snprintf(r->error, sizeof(r->error), "%llu connections failed; first: %s",
                 (unsigned long long)r->failed, b->first_error);
}

static void run_idle(bench *b, result *r)
{
    const bench_opts *o = &b->o;
    sample s0, s1;
    proc_read(o->broker_pid, &r->broker_before);
    set_phase(b, PH_SETUP);
    if (!wait_setup(b, r) || r->interrupted) {
        if (!r->error[0] && !r->interrupted)
            snprintf(r->error, sizeof(r->error), "set-up failed: %s", b->first_error);
        return;
    }
    for (uint64_t end = bench_now() + (uint64_t)(o->settle * 1e9); bench_now() < end;) {
        if (interrupted)
            break;
        sleep_s(0.01);
    }
    proc_read(o->broker_pid, &r->broker_connected);
    take_sample(b, &s0);
    uint64_t end = s0.t + (uint64_t)(o->duration * 1e9), last_print = s0.t;
    while (bench_now() < end && !interrupted) {
        uint64_t now = bench_now();
        if (now - last_print >= 1000000000ull) {
            char line[160];
            snprintf(line, sizeof(line), "holding %llu connections: %.0f/%.0f s, %llu lost",
                     (unsigned long long)r->connected, secs(s0.t, now), o->duration,
                     (unsigned long long)bench_total_failed(b));
            progress_line(b, line, false);
            last_print = now;
        }
        sleep_s(0.05);
    }
    r->interrupted = interrupted != 0;
    take_sample(b, &s1);
    proc_read(o->broker_pid, &r->broker_after);
    if (o->progress)
        progress_line(b, "held", true);
    r->measured_s = secs(s0.t, s1.t);
    r->broker_cpu_s = s1.broker.cpu_s - s0.broker.cpu_s;
    r->tool_cpu_s = s1.tool_cpu - s0.tool_cpu;
    for (unsigned i = 0; i < o->threads; i++) {
        double t = s1.thread_cpu[i] - s0.thread_cpu[i];
        if (t > r->busiest_thread_cpu_s)
            r->busiest_thread_cpu_s = t;
    }
}

/* Add up what the workers measured, once they have stopped. */
static void collect(bench *b, result *r)
{
    hist_reset(&r->lat);
    hist_reset(&r->hs);
    for (unsigned i = 0; i < b->o.threads; i++) {
        worker *w = &b->workers[i];
        r->sent += w->m_sent;
        r->delivered += w->m_delivered;
        r->payload_bytes += w->m_payload_bytes;
        r->wire_bytes += w->m_wire_bytes;
        r->refused += w->refused;
        r->acked += w->m_acked;
        r->total_acked += w->acked;
        r->run_errors += w->run_errors;
        r->behind += w->behind;
        hist_merge(&r->lat, &w->lat);
        hist_merge(&r->hs, &w->hs);
    }
    r->total_sent = bench_total_sent(b);
    r->total_recv = bench_total_recv(b);
    uint64_t expected = r->total_sent * b->fan;
    r->lost = expected > r->total_recv ? expected - r->total_recv : 0;
    bool messages = b->o.sc == SC_FANIN || b->o.sc == SC_FANOUT || b->o.sc == SC_PAIRS;
    if (messages && !r->error[0] && !r->interrupted && r->connected == b->nconns &&
        r->delivered == 0)
        snprintf(r->error, sizeof(r->error),
                 "nothing was delivered (%llu published): does the broker let these clients "
                 "publish to and receive %s?",
                 (unsigned long long)r->total_sent, b->o.topic);
    snprintf(r->first_error, sizeof(r->first_error), "%s", b->first_error);
}

int main(int argc, char **argv)
{
    static bench b; /* large (histograms): not on the stack */
    int rc = parse_args(argc, argv, &b.o);
    if (rc >= 0)
        return rc;
    bench_opts *o = &b.o;
    if (o->sc == SC_IDLE && !o->broker_pid)
        fprintf(stderr, "moat-bench: idle without --broker-pid measures no memory\n");
    if (o->progress < 0)
        o->progress = isatty(STDERR_FILENO) && !o->quiet;
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&b.err_lock, NULL);

    b.workers = calloc(o->threads, sizeof(*b.workers));
    b.counts = aligned_alloc(64, sizeof(wcount) * o->threads);
    if (!b.workers || !b.counts) {
        fprintf(stderr, "moat-bench: out of memory\n");
        return 1;
    }
    memset(b.counts, 0, sizeof(wcount) * o->threads);
    for (unsigned i = 0; i < o->threads; i++)
        b.workers[i].ep = -1;
    static result r;
    int status = 1;
    if (!plan(&b)) {
        fprintf(stderr, "moat-bench: cannot plan the connections\n");
        goto out;
    }
    if (!raise_fd_limit(b.nconns))
        goto out;
    for (unsigned i = 0; i < o->threads; i++) {
        if (!worker_init(&b, &b.workers[i], i))
            goto out;
    }

    /* Workers must not take SIGINT: the main thread ends the run. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    unsigned started = 0;
    for (; started < o->threads; started++) {
        if (pthread_create(&b.workers[started].thread, NULL, worker_main, &b.workers[started]))
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (started == o->threads) {
        switch (o->sc) {
        case SC_STORM:
            run_storm(&b, &r);
            break;
        case SC_IDLE:
            run_idle(&b, &r);
            break;
        default:
            run_messages(&b, &r);
            break;
        }
    } else {
        snprintf(r.error, sizeof(r.error), "cannot start worker threads");
    }
    set_phase(&b, PH_CLOSE);
    for (unsigned i = 0; i < started; i++)
        pthread_join(b.workers[i].thread, NULL);
    collect(&b, &r);
    r.interrupted = r.interrupted || interrupted;

    report_context ctx = {.o = o,
                          .nconns = b.nconns,
                          .npubs = b.npubs,
                          .nsubs = b.nsubs,
                          .fan = b.fan,
                          .ndevices = b.ndevices};
    if (!o->quiet)
        report_table(stdout, &ctx, &r);
    if (o->json_path && !report_json(o->json_path, &ctx, &r))
        fprintf(stderr, "moat-bench: cannot write %s: %s\n", o->json_path, strerror(errno));
    status = report_status(&ctx, &r);
    if (status != 0 && r.error[0])
        fprintf(stderr, "moat-bench: %s\n", r.error);
    else if (status != 0 && r.first_error[0])
        fprintf(stderr, "moat-bench: %s\n", r.first_error);
out:
    for (unsigned i = 0; i < o->threads; i++)
        worker_free(&b.workers[i]);
    for (size_t g = 0; g < b.nconns; g++)
        free(b.conns[g].topic);
    free(b.conns);
    devices_free(&b);
    free(b.workers);
    free(b.counts);
    free(o->sources);
    return status;
}
