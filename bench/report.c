/*
 * report.c — the broker's CPU time and memory from /proc, the tool's own CPU
 * time, and the two forms of the results: a table on stdout and a JSON file.
 *
 * The tool's CPU use is printed next to the broker's so that a reader can see
 * at once whether the load generator had headroom: a busiest worker thread
 * above 90 % of a core means the tool, not the broker, may have set the pace,
 * and the table says so.
 */
#include "report.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"

#define SATURATED 0.90

/* ---- /proc --------------------------------------------------------------- */

static bool read_file(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    fclose(f);
    return n > 0;
}

static bool parse_field(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    *out = v;
    return true;
}

void proc_read(pid_t pid, proc_sample *s)
{
    memset(s, 0, sizeof(*s));
    if (pid <= 0)
        return;
    char path[64], text[4096];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    if (!read_file(path, text, sizeof(text)))
        return;
    /* After the command name in parentheses: state is field 3, utime 14,
     * stime 15. */
    char *p = strrchr(text, ')');
    if (!p)
        return;
    p++;
    uint64_t utime = 0, stime = 0;
    for (int field = 3; field <= 15 && p; field++) {
        while (*p == ' ')
            p++;
        if (field == 14 && !parse_field(p, &utime))
            return;
        if (field == 15 && !parse_field(p, &stime))
            return;
        p = strchr(p, ' ');
    }
    long hz = sysconf(_SC_CLK_TCK);
    s->cpu_s = (double)(utime + stime) / (double)(hz > 0 ? hz : 100);
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    if (!read_file(path, text, sizeof(text)))
        return;
    const char *rss = strstr(text, "\nVmRSS:");
    const char *hwm = strstr(text, "\nVmHWM:");
    const char *thr = strstr(text, "\nThreads:");
    uint64_t v;
    if (rss && parse_field(rss + 7, &v))
        s->rss_kb = v;
    if (hwm && parse_field(hwm + 7, &v))
        s->hwm_kb = v;
    if (thr && parse_field(thr + 9, &v))
        s->threads = (unsigned)v;
    s->ok = true;
}

double self_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double thread_cpu_seconds(pthread_t t)
{
    clockid_t id;
    struct timespec ts;
    if (pthread_getcpuclockid(t, &id) != 0 || clock_gettime(id, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- derived numbers ----------------------------------------------------- */

static bool is_messages(const report_context *ctx)
{
    return ctx->o->sc == SC_FANIN || ctx->o->sc == SC_FANOUT || ctx->o->sc == SC_PAIRS;
}

static double per_s(uint64_t n, double s)
{
    return s > 0 ? (double)n / s : 0;
}

static double pct(double part, double whole)
{
    return whole > 0 ? 100.0 * part / whole : 0;
}

/* Bytes of broker memory per connection: from before set-up to after it. */
static double rss_per_conn(const report_context *ctx, const result *r)
{
    if (!r->broker_before.ok || !r->broker_connected.ok || r->connected == 0)
        return 0;
    double d = (double)r->broker_connected.rss_kb - (double)r->broker_before.rss_kb;
    return d * 1024.0 / (double)(ctx->o->sc == SC_IDLE ? r->connected : ctx->nconns);
}

static bool saturated(const result *r)
{
    return r->measured_s > 0 && r->busiest_thread_cpu_s / r->measured_s > SATURATED;
}

static const char *mqtt_name(uint8_t v)
{
    return v == CODEC_V5 ? "5" : "3.1.1";
}

/* ---- the table ----------------------------------------------------------- */

static void fmt_ns(char *out, size_t len, uint64_t ns)
{
    if (ns < 10000)
        snprintf(out, len, "%.1f us", (double)ns / 1e3);
    else if (ns < 10000000)
        snprintf(out, len, "%.0f us", (double)ns / 1e3);
    else if (ns < 10000000000ull)
        snprintf(out, len, "%.1f ms", (double)ns / 1e6);
    else
        snprintf(out, len, "%.1f s", (double)ns / 1e9);
}

static void print_hist(FILE *out, const char *label, const hist *h)
{
    char p50[32], p99[32], p999[32], mx[32];
    fmt_ns(p50, sizeof(p50), hist_percentile(h, 50));
    fmt_ns(p99, sizeof(p99), hist_percentile(h, 99));
    fmt_ns(p999, sizeof(p999), hist_percentile(h, 99.9));
    fmt_ns(mx, sizeof(mx), h->max);
    fprintf(out, "  %-18s p50 %s  p99 %s  p99.9 %s  max %s  (%llu samples)\n", label, p50, p99,
            p999, mx, (unsigned long long)h->count);
}

static void print_header(FILE *out, const report_context *ctx)
{
    const bench_opts *o = ctx->o;
    fprintf(out, "moat-bench %s against %s:%u, MQTT %s, TLS 1.3 with client certificates\n",
            o->scenario_name, o->host, (unsigned)o->port, mqtt_name(o->version));
    switch (o->sc) {
    case SC_FANIN:
    case SC_FANOUT:
    case SC_PAIRS: {
        char rate[48];
        if (o->rate > 0)
            snprintf(rate, sizeof(rate), "%.0f msg/s offered", o->rate);
        else
            snprintf(rate, sizeof(rate), "as fast as possible (window %u)", o->window);
        fprintf(out, "  %u publisher%s%s -> %u subscriber%s%s, QoS %u, %u B payload, %s\n",
                ctx->npubs, ctx->npubs == 1 ? "" : "s", ctx->ndevices ? " (devices)" : "",
                ctx->nsubs, ctx->nsubs == 1 ? "" : "s", o->shared ? " (shared)" : "",
                (unsigned)o->qos, o->size, rate);
        fprintf(out, "  %.1f s measured after %.1f s warm-up, %u thread%s\n", o->duration,
                o->warmup, o->threads, o->threads == 1 ? "" : "s");
        break;
    }
    case SC_STORM:
        fprintf(out, "  %u connections, %u at a time, %u thread%s\n", o->conns, o->concurrency,
                o->threads, o->threads == 1 ? "" : "s");
        break;
    case SC_IDLE:
        fprintf(out, "  %u connections held %.0f s, keep-alive %u s, %u thread%s\n", o->conns,
                o->duration, (unsigned)o->keepalive, o->threads, o->threads == 1 ? "" : "s");
        break;
    }
}

void report_table(FILE *out, const report_context *ctx, const result *r)
{
    const bench_opts *o = ctx->o;
    print_header(out, ctx);
    if (o->sc == SC_STORM) {
        fprintf(out, "  %-18s %llu in %.2f s: %.0f handshakes/s (%llu failed)\n", "handshakes",
                (unsigned long long)r->connected, r->measured_s, per_s(r->connected, r->measured_s),
                (unsigned long long)r->failed);
        print_hist(out, "connect->CONNACK", &r->hs);
    } else {
        fprintf(out, "  %-18s %llu in %.2f s (%.0f/s), %llu failed\n", "connections",
                (unsigned long long)r->connected, r->setup_s, per_s(r->connected, r->setup_s),
                (unsigned long long)r->failed);
    }
    if (is_messages(ctx) && r->connected == ctx->nconns) {
        double s = r->measured_s;
        fprintf(out, "  %-18s %llu (%.0f msg/s)\n", "published", (unsigned long long)r->sent,
                per_s(r->sent, s));
        if (o->qos > 0)
            fprintf(out, "  %-18s %llu (%.0f msg/s); whole run %llu of %llu published\n",
                    "acknowledged", (unsigned long long)r->acked, per_s(r->acked, s),
                    (unsigned long long)r->total_acked, (unsigned long long)r->total_sent);
        fprintf(out, "  %-18s %llu (%.0f msg/s, %.2f MB/s payload, %.2f MB/s MQTT)\n", "delivered",
                (unsigned long long)r->delivered, per_s(r->delivered, s),
                per_s(r->payload_bytes, s) / 1e6, per_s(r->wire_bytes, s) / 1e6);
        print_hist(out, "latency", &r->lat);
        fprintf(out, "  %-18s %llu lost of %llu expected, %llu refused, %llu connections lost\n",
                "whole run", (unsigned long long)r->lost,
                (unsigned long long)(r->total_sent * ctx->fan), (unsigned long long)r->refused,
                (unsigned long long)r->run_errors);
        if (o->rate > 0 && r->behind)
            fprintf(out, "  %-18s the schedule slipped in %llu loop passes\n", "offered rate",
                    (unsigned long long)r->behind);
    }
    if (r->broker_after.ok) {
        fprintf(out, "  %-18s pid %ld: %.2f CPU s (%.0f%% of a core)", "broker",
                (long)o->broker_pid, r->broker_cpu_s, pct(r->broker_cpu_s, r->measured_s));
        if (is_messages(ctx) && r->delivered)
            fprintf(out, ", %.2f CPU s per million delivered",
                    r->broker_cpu_s / (double)r->delivered * 1e6);
        if (o->sc == SC_STORM && r->connected)
            fprintf(out, ", %.2f CPU ms per handshake",
                    r->broker_cpu_s * 1e3 / (double)r->connected);
        fprintf(out, "\n");
        if (r->broker_connected.ok) {
            fprintf(out,
                    "  %-18s RSS %.1f MiB before, %.1f MiB connected, %.1f MiB at the end: "
                    "%.1f KiB per connection\n",
                    "broker memory", (double)r->broker_before.rss_kb / 1024.0,
                    (double)r->broker_connected.rss_kb / 1024.0,
                    (double)r->broker_after.rss_kb / 1024.0, rss_per_conn(ctx, r) / 1024.0);
        }
    }
    fprintf(out, "  %-18s %.2f CPU s (%.0f%% of a core; busiest thread %.0f%%)%s\n", "moat-bench",
            r->tool_cpu_s, pct(r->tool_cpu_s, r->measured_s),
            pct(r->busiest_thread_cpu_s, r->measured_s),
            saturated(r) ? "  <- SATURATED: the tool may be the bottleneck, add -j" : "");
    if (r->interrupted)
        fprintf(out, "  interrupted: the numbers cover the part that ran\n");
    if (r->error[0])
        fprintf(out, "  error: %s\n", r->error);
    else if (r->first_error[0])
        fprintf(out, "  first error: %s\n", r->first_error);
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_hist(FILE *f, const char *name, const hist *h)
{
    fprintf(f,
            "\"%s\": {\"count\": %llu, \"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, "
            "\"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}",
            name, (unsigned long long)h->count, hist_mean(h) / 1e3,
            (double)hist_percentile(h, 50) / 1e3, (double)hist_percentile(h, 90) / 1e3,
            (double)hist_percentile(h, 99) / 1e3, (double)hist_percentile(h, 99.9) / 1e3,
            (double)h->max / 1e3);
}

static void json_proc(FILE *f, const char *name, const proc_sample *s)
{
    if (!s->ok) {
        fprintf(f, "\"%s\": null", name);
        return;
    }
    fprintf(f, "\"%s\": {\"cpu_s\": %.3f, \"rss_kb\": %llu, \"hwm_kb\": %llu, \"threads\": %u}",
            name, s->cpu_s, (unsigned long long)s->rss_kb, (unsigned long long)s->hwm_kb,
            s->threads);
}

bool report_json(const char *path, const report_context *ctx, const result *r)
{
    const bench_opts *o = ctx->o;
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    double s = r->measured_s;
    fprintf(f, "{\n  \"program\": \"moat-bench\",\n  \"scenario\": \"%s\",\n", o->scenario_name);
    fprintf(f, "  \"params\": {\"host\": ");
    json_str(f, o->host);
    fprintf(f,
            ", \"port\": %u, \"mqtt\": \"%s\", \"connections\": %zu, \"publishers\": %u, "
            "\"subscribers\": %u, \"shared\": %s, \"qos\": %u, \"payload_bytes\": %u, "
            "\"rate\": %.3f, \"window\": %u, \"burst\": %u, \"inflight\": %u, "
            "\"duration_s\": %.3f, \"warmup_s\": %.3f, \"threads\": %u, \"concurrency\": %u, "
            "\"connect_rate\": %.3f, \"keepalive\": %u, \"persistent\": %s, \"sources\": %zu, "
            "\"ciphersuites\": ",
            (unsigned)o->port, mqtt_name(o->version), ctx->nconns, ctx->npubs, ctx->nsubs,
            o->shared ? "true" : "false", (unsigned)o->qos, o->size, o->rate, o->window, o->burst,
            o->inflight, o->duration, o->warmup, o->threads, o->concurrency, o->connect_rate,
            (unsigned)o->keepalive, o->persistent ? "true" : "false",
            o->nsources ? o->nsources : 1);
    json_str(f, o->ciphersuites);
    fprintf(f, ", \"client_id_prefix\": ");
    json_str(f, o->id_prefix);
    fprintf(f, ", \"topic\": ");
    json_str(f, o->topic);
    fprintf(f, ", \"devices\": %zu, \"devices_dir\": ", ctx->ndevices);
    if (o->devices_dir)
        json_str(f, o->devices_dir);
    else
        fputs("null", f);
    fprintf(f, "},\n  \"interrupted\": %s,\n  \"error\": ", r->interrupted ? "true" : "false");
    json_str(f, r->error);
    fprintf(f, ",\n  \"first_error\": ");
    json_str(f, r->first_error);
    fprintf(f, ",\n  \"status\": %d,\n", report_status(ctx, r));
    fprintf(f,
            "  \"setup\": {\"connected\": %llu, \"failed\": %llu, \"seconds\": %.3f, "
            "\"per_s\": %.1f, ",
            (unsigned long long)r->connected, (unsigned long long)r->failed, r->setup_s,
            per_s(r->connected, r->setup_s));
    json_hist(f, "connect_us", &r->hs);
    fprintf(f, "},\n  \"measured_s\": %.3f,\n", s);
    if (is_messages(ctx)) {
        fprintf(f,
                "  \"messages\": {\"published\": %llu, \"published_per_s\": %.1f, "
                "\"delivered\": %llu, \"delivered_per_s\": %.1f, \"payload_bytes_per_s\": %.1f, "
                "\"wire_bytes_per_s\": %.1f, \"lost\": %llu, \"expected\": %llu, "
                "\"refused\": %llu, \"connections_lost\": %llu, \"schedule_slips\": %llu, "
                "\"acknowledged\": %llu, \"acknowledged_per_s\": %.1f, "
                "\"published_total\": %llu, \"acknowledged_total\": %llu, ",
                (unsigned long long)r->sent, per_s(r->sent, s), (unsigned long long)r->delivered,
                per_s(r->delivered, s), per_s(r->payload_bytes, s), per_s(r->wire_bytes, s),
                (unsigned long long)r->lost, (unsigned long long)(r->total_sent * ctx->fan),
                (unsigned long long)r->refused, (unsigned long long)r->run_errors,
                (unsigned long long)r->behind, (unsigned long long)r->acked, per_s(r->acked, s),
                (unsigned long long)r->total_sent, (unsigned long long)r->total_acked);
        json_hist(f, "latency_us", &r->lat);
        fprintf(f, "},\n");
    } else {
        fprintf(f, "  \"messages\": null,\n");
    }
    if (o->sc == SC_STORM)
        fprintf(
            f,
            "  \"storm\": {\"handshakes\": %llu, \"failed\": %llu, \"handshakes_per_s\": %.1f},\n",
            (unsigned long long)r->connected, (unsigned long long)r->failed,
            per_s(r->connected, s));
    else
        fprintf(f, "  \"storm\": null,\n");
    if (r->broker_after.ok) {
        fprintf(f, "  \"broker\": {\"pid\": %ld, \"cpu_s\": %.3f, \"cpu_percent\": %.1f, ",
                (long)o->broker_pid, r->broker_cpu_s, pct(r->broker_cpu_s, s));
        if (is_messages(ctx) && r->delivered)
            fprintf(f, "\"cpu_s_per_million\": %.4f, ",
                    r->broker_cpu_s / (double)r->delivered * 1e6);
        else
            fprintf(f, "\"cpu_s_per_million\": null, ");
        if (o->sc == SC_STORM && r->connected)
            fprintf(f, "\"cpu_ms_per_handshake\": %.4f, ",
                    r->broker_cpu_s * 1e3 / (double)r->connected);
        else
            fprintf(f, "\"cpu_ms_per_handshake\": null, ");
        fprintf(f, "\"rss_per_connection_bytes\": %.1f, ", rss_per_conn(ctx, r));
        json_proc(f, "before", &r->broker_before);
        fprintf(f, ", ");
        json_proc(f, "connected", &r->broker_connected);
        fprintf(f, ", ");
        json_proc(f, "after", &r->broker_after);
        fprintf(f, "},\n");
    } else {
        fprintf(f, "  \"broker\": null,\n");
    }
    fprintf(f,
            "  \"tool\": {\"cpu_s\": %.3f, \"cpu_percent\": %.1f, \"busiest_thread_percent\": "
            "%.1f, \"threads\": %u, \"saturated\": %s}\n}\n",
            r->tool_cpu_s, pct(r->tool_cpu_s, s), pct(r->busiest_thread_cpu_s, s), o->threads,
            saturated(r) ? "true" : "false");
    int err = ferror(f);
    if (fclose(f) != 0 || err) {
        if (!errno)
            errno = EIO;
        return false;
    }
    return true;
}

int report_status(const report_context *ctx, const result *r)
{
    if (r->interrupted)
        return 130;
    if (r->error[0] || r->failed > 0 || r->run_errors > 0)
        return 1;
    if (ctx->o->sc == SC_STORM || ctx->o->sc == SC_IDLE)
        return r->connected > 0 ? 0 : 1;
    return r->delivered > 0 ? 0 : 1;
}
