/*
 * telemetry.c — `moatctl telemetry ...`: read a device's stored readings
 * back (CSV or JSON), apply retention now, show counts; and the erase step
 * of `moatctl device delete`.
 *
 * Readings are decrypted here with the hub's own store code (the master key
 * never leaves DATA_DIR/master.key), so moatctl must run as the hub's user.
 * A payload is printed as text only when it is valid UTF-8 without control
 * characters (tab, newline and carriage return aside), so a device cannot
 * put escape sequences on the operator's terminal; anything else is printed
 * as hex (CSV) or base64 (JSON), and the encoding column says which.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ctl.h"
#include "tstore_registry.h"
#include "tstore_sqlite.h"

/* ---- times ------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 3339 UTC with milliseconds. */
static void format_ms(int64_t ms, char buf[40])
{
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int64_t frac = ms - sec * 1000;
    time_t tt = (time_t)sec;
    struct tm tm;
    char head[32];
    if (!gmtime_r(&tt, &tm) || strftime(head, sizeof head, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(buf, 40, "@%lld", (long long)ms);
        return;
    }
    snprintf(buf, 40, "%s.%03dZ", head, (int)frac);
}

/* ---- output ------------------------------------------------------------ */

/* Valid UTF-8 with no control characters but tab, LF, CR (C0, DEL, C1). */
static bool printable_text(codec_bytes b)
{
    if (b.len && !codec_utf8_valid(b))
        return false;
    for (size_t i = 0; i < b.len; i++) {
        uint8_t c = b.ptr[i];
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
            return false;
        if (c == 0xc2 && i + 1 < b.len && b.ptr[i + 1] >= 0x80 && b.ptr[i + 1] <= 0x9f)
            return false;
    }
    return true;
}

typedef struct out_ctx {
    bool json;
    size_t n;
    char *scratch; /* for NUL-terminated copies, hex and base64 */
    size_t cap;
    bool nomem;
} out_ctx;

static char *scratch(out_ctx *o, size_t n)
{
    if (n > o->cap) {
        char *p = realloc(o->scratch, n);
        if (!p) {
            o->nomem = true;
            return NULL;
        }
        o->scratch = p;
        o->cap = n;
    }
    return o->scratch;
}

/* A CSV field: quoted, quotes doubled; control bytes (only in a stream
 * name, never in a text payload) written as \xNN. */
static void csv_field(codec_bytes b)
{
    putchar('"');
    for (size_t i = 0; i < b.len; i++) {
        uint8_t c = b.ptr[i];
        if (c == '"')
            fputs("\"\"", stdout);
        else if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int print_reading(void *ctx, const tstore_reading *r)
{
    out_ctx *o = ctx;
    char rx[40], dt[40] = "";
    format_ms(r->received_ms, rx);
    if (r->has_device_time)
        format_ms(r->device_time_ms, dt);
    bool text = printable_text(r->payload);
    size_t need = text ? r->payload.len + 1
                       : sodium_base64_encoded_len(r->payload.len, sodium_base64_VARIANT_ORIGINAL) +
                             2 * r->payload.len + 1;
    size_t sneed = r->stream.len + 1;
    char *buf = scratch(o, (need > sneed ? need : sneed) + sneed);
    if (!buf)
        return 1;
    if (!o->json) {
        printf("%s,%s,", rx, dt);
        if (r->has_seq)
            printf("%llu", (unsigned long long)r->seq);
        putchar(',');
        csv_field(r->stream);
        printf(",%s,", text ? "text" : "hex");
        if (text) {
            csv_field(r->payload);
        } else {
            ctl_hex(r->payload.ptr, r->payload.len, buf);
            fputs(buf, stdout);
        }
        putchar('\n');
        o->n++;
        return 0;
    }
    /* JSON strings go through ctl_json_str, which wants NUL-terminated
     * text: the stream has no NUL (MQTT forbids U+0000 in topics) and a
     * text payload has none either (printable_text). */
    char *stream = buf + (need > sneed ? need : sneed);
    memcpy(stream, r->stream.ptr, r->stream.len);
    stream[r->stream.len] = '\0';
    printf("%s\n  {\"received\": \"%s\", \"received_ms\": %lld, \"device_time\": ", o->n ? "," : "",
           rx, (long long)r->received_ms);
    if (r->has_device_time)
        printf("\"%s\", \"device_time_ms\": %lld", dt, (long long)r->device_time_ms);
    else
        printf("null, \"device_time_ms\": null");
    if (r->has_seq)
        printf(", \"seq\": %llu", (unsigned long long)r->seq);
    else
        printf(", \"seq\": null");
    printf(", \"stream\": ");
    ctl_json_str(stdout, stream);
    printf(", \"encoding\": \"%s\", \"payload\": ", text ? "text" : "base64");
    if (text) {
        if (r->payload.len)
            memcpy(buf, r->payload.ptr, r->payload.len);
        buf[r->payload.len] = '\0';
        ctl_json_str(stdout, buf);
    } else {
        sodium_bin2base64(buf, need, r->payload.ptr, r->payload.len,
                          sodium_base64_VARIANT_ORIGINAL);
        printf("\"%s\"", buf);
    }
    putchar('}');
    o->n++;
    return 0;
}

/* ---- opening the store --------------------------------------------------- */

/* Open DIR/telemetry.db. *none (if given) is set, without an error, when no
 * store exists yet; otherwise a missing store is an error. */
static int open_store(const char *dir, bool create, tstore **out, bool *none)
{
    char err[512];
    *out = NULL;
    if (none)
        *none = false;
    tstore_status st =
        tstore_sqlite_open(dir, create ? TSTORE_OPEN_CREATE : 0, out, err, sizeof err);
    if (st == TSTORE_NOT_FOUND && none) {
        *none = true;
        return CTL_EXIT_OK;
    }
    if (st != TSTORE_OK) {
        ctl_err("telemetry store: %s", err);
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

int ctl_telemetry_open(const char *dir, bool create, tstore **out)
{
    return open_store(dir, create, out, NULL);
}

int ctl_telemetry_audit(const char *dir, const char *action, const char *subject,
                        const char *reason, struct json_t *details)
{
    registry *reg = NULL;
    int rc = ctl_open_registry(dir, &reg);
    if (rc != CTL_EXIT_OK) {
        json_decref(details);
        return rc;
    }
    if (reason) {
        ctl_audit_failed(reg, dir, action, subject, reason, details);
    } else {
        registry_status st = registry_begin(reg);
        if (st != REGISTRY_OK) {
            json_decref(details);
            rc = ctl_reg_fail(reg, st);
        } else if ((rc = ctl_audit_ok(reg, dir, action, subject, details)) != CTL_EXIT_OK) {
            registry_rollback(reg);
        } else if ((st = registry_commit(reg)) != REGISTRY_OK) {
            rc = ctl_reg_fail(reg, st);
            registry_rollback(reg);
        }
        if (rc != CTL_EXIT_OK)
            ctl_err("note: %s was done but could not be written to the audit log", action);
    }
    registry_close(reg);
    return rc;
}

int ctl_telemetry_erase(const char *dir, const char *device, uint64_t *deleted, bool *wiped)
{
    tstore *ts = NULL;
    bool none = false;
    *deleted = 0;
    *wiped = true;
    int rc = open_store(dir, false, &ts, &none);
    if (rc != CTL_EXIT_OK || none)
        return rc;
    tstore_status st = tstore_delete_device(ts, device, deleted, wiped);
    if (st != TSTORE_OK) {
        ctl_err("erasing the readings of %s: %s", device, tstore_error(ts));
        rc = CTL_EXIT_FAIL;
    }
    tstore_close(ts);
    return rc;
}

/* ---- moatctl telemetry DEVICE -------------------------------------------- */

enum { O_STREAM, O_SINCE, O_UNTIL, O_LIMIT, O_FORMAT, O_NEWEST, O_COUNT };

static int query(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[O_COUNT] = {[O_STREAM] = {.name = "stream", .has_arg = true},
                             [O_SINCE] = {.name = "since", .has_arg = true},
                             [O_UNTIL] = {.name = "until", .has_arg = true},
                             [O_LIMIT] = {.name = "limit", .has_arg = true},
                             [O_FORMAT] = {.name = "format", .has_arg = true},
                             [O_NEWEST] = {.name = "newest-first"}};
    ctl_args args;
    int rc = ctl_parse("telemetry", argc, argv, opts, O_COUNT, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("telemetry", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 1)
        return ctl_usage("telemetry", "usage: moatctl telemetry DEVICE [--stream S] [--since T] "
                                      "[--until T] [--limit N] [--format csv|json]");
    const char *device = args.pos[0];
    if (!tstore_device_valid(device))
        return ctl_usage("telemetry", "'%.64s' is not a device id", device);
    int64_t now = now_ms();
    tstore_query q = {.device = device, .since_ms = INT64_MIN, .until_ms = INT64_MAX};
    if (opts[O_SINCE].count && !ctl_parse_when_ms(opts[O_SINCE].values[0], now, &q.since_ms))
        return ctl_usage("telemetry",
                         "--since: '%s' is not a time (RFC 3339, unix seconds, or "
                         "-30m, -2h, -7d...)",
                         opts[O_SINCE].values[0]);
    if (opts[O_UNTIL].count && !ctl_parse_when_ms(opts[O_UNTIL].values[0], now, &q.until_ms))
        return ctl_usage("telemetry", "--until: '%s' is not a time", opts[O_UNTIL].values[0]);
    unsigned long limit = 1000;
    if (opts[O_LIMIT].count && !ctl_parse_uint(opts[O_LIMIT].values[0], 0, ULONG_MAX, &limit))
        return ctl_usage("telemetry", "--limit: a number of readings (0 = all)");
    bool json = false;
    if (opts[O_FORMAT].count) {
        const char *f = opts[O_FORMAT].values[0];
        if (strcmp(f, "json") == 0)
            json = true;
        else if (strcmp(f, "csv") != 0)
            return ctl_usage("telemetry", "--format: csv or json");
    }
    if (opts[O_STREAM].count) {
        const char *s = opts[O_STREAM].values[0];
        size_t n = strlen(s);
        if (n == 0 || n > TSTORE_STREAM_MAX)
            return ctl_usage("telemetry", "--stream: 1 to %u bytes", TSTORE_STREAM_MAX);
        q.stream = (codec_bytes){(const uint8_t *)s, n};
    }
    q.newest_first = opts[O_NEWEST].count > 0;
    const char *dir = ctl_data_dir(ctx, &args, "telemetry");
    if (!dir)
        return CTL_EXIT_USAGE;
    tstore *ts = NULL;
    bool none = false;
    if ((rc = open_store(dir, false, &ts, &none)) != CTL_EXIT_OK)
        return rc;
    out_ctx o = {.json = json};
    if (json)
        printf("[");
    else
        printf("received,device_time,seq,stream,encoding,payload\n");
    tstore_status st = TSTORE_OK;
    bool more = false;
    size_t shown = 0;
    while (!none) {
        tstore_page page;
        size_t left = limit ? limit - shown : TSTORE_PAGE_MAX;
        q.limit = left < TSTORE_PAGE_MAX ? left : TSTORE_PAGE_MAX;
        st = tstore_query_page(ts, &q, print_reading, &o, &page);
        if (st != TSTORE_OK)
            break;
        shown += page.count;
        q.has_after = true;
        q.after = page.next;
        more = page.more;
        if (!page.more || (limit && shown >= limit))
            break;
    }
    if (json)
        printf("%s]\n", o.n ? "\n" : "");
    if (st != TSTORE_OK) {
        ctl_err("telemetry %s: %s", device, o.nomem ? "out of memory" : tstore_error(ts));
        rc = CTL_EXIT_FAIL;
    } else if (more) {
        ctl_err("note: showing the first %zu readings; more match (use --limit 0 for all, or "
                "--since/--until)",
                shown);
    }
    free(o.scratch);
    tstore_close(ts);
    return rc;
}

/* ---- moatctl telemetry purge --------------------------------------------- */

static int purge(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "batch", .has_arg = true}};
    ctl_args args;
    int rc = ctl_parse("telemetry", argc, argv, opts, 1, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("telemetry", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 0)
        return ctl_usage("telemetry", "usage: moatctl telemetry purge [--batch N]");
    unsigned long batch = 5000;
    if (opts[0].count && !ctl_parse_uint(opts[0].values[0], 1, TSTORE_SLICE_MAX, &batch))
        return ctl_usage("telemetry", "--batch: 1 to %u rows per transaction", TSTORE_SLICE_MAX);
    const char *dir = ctl_data_dir(ctx, &args, "telemetry");
    if (!dir)
        return CTL_EXIT_USAGE;
    registry *reg = NULL;
    tstore *ts = NULL;
    bool none = false;
    if ((rc = ctl_open_registry(dir, &reg)) != CTL_EXIT_OK)
        return rc;
    if ((rc = open_store(dir, false, &ts, &none)) != CTL_EXIT_OK || none) {
        if (none)
            printf("retention: nothing stored\n");
        registry_close(reg);
        return rc;
    }
    tstore_retention_run run;
    memset(&run, 0, sizeof run);
    tstore_status st = TSTORE_OK;
    int64_t now = now_ms();
    while (!run.done && st == TSTORE_OK)
        st = tstore_apply_retention(ts, tstore_registry_policy, reg, now, batch, &run);
    char count[32];
    snprintf(count, sizeof count, "%llu", (unsigned long long)run.deleted);
    if (st != TSTORE_OK) {
        ctl_err("retention: %s", tstore_error(ts));
        rc = CTL_EXIT_FAIL;
        (void)ctl_telemetry_audit(dir, "telemetry.purge", NULL, tstore_error(ts),
                                  ctl_audit_kv("deleted", count, NULL, NULL));
    } else if (ctl_telemetry_audit(dir, "telemetry.purge", NULL, NULL,
                                   ctl_audit_kv("deleted", count, NULL, NULL)) != CTL_EXIT_OK) {
        rc = CTL_EXIT_FAIL;
    } else {
        printf("retention: %llu readings deleted; %llu devices checked",
               (unsigned long long)run.deleted, (unsigned long long)run.devices);
        if (run.skipped)
            printf(", %llu skipped (registry lookup failed: %s)", (unsigned long long)run.skipped,
                   registry_errmsg(reg));
        printf("\n");
        if (run.skipped)
            rc = CTL_EXIT_FAIL;
    }
    tstore_close(ts);
    registry_close(reg);
    return rc;
}

/* ---- moatctl telemetry stats ---------------------------------------------- */

static int stats(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "json"}};
    ctl_args args;
    int rc = ctl_parse("telemetry", argc, argv, opts, 1, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("telemetry", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos > 1)
        return ctl_usage("telemetry", "usage: moatctl telemetry stats [DEVICE] [--json]");
    const char *device = args.npos ? args.pos[0] : NULL;
    if (device && !tstore_device_valid(device))
        return ctl_usage("telemetry", "'%.64s' is not a device id", device);
    const char *dir = ctl_data_dir(ctx, &args, "telemetry");
    if (!dir)
        return CTL_EXIT_USAGE;
    tstore *ts = NULL;
    bool none = false;
    if ((rc = open_store(dir, false, &ts, &none)) != CTL_EXIT_OK)
        return rc;
    tstore_stats s;
    memset(&s, 0, sizeof s);
    if (!none && tstore_get_stats(ts, device, &s) != TSTORE_OK) {
        ctl_err("telemetry stats: %s", tstore_error(ts));
        tstore_close(ts);
        return CTL_EXIT_FAIL;
    }
    if (opts[0].count)
        printf("{\"devices\": %llu, \"readings\": %llu, \"bytes\": %llu, \"data_keys\": %llu, "
               "\"current_key\": %lld, \"reencrypt_pending\": %s}\n",
               (unsigned long long)s.devices, (unsigned long long)s.readings,
               (unsigned long long)s.bytes, (unsigned long long)s.data_keys,
               (long long)s.current_key, s.reencrypt_pending ? "true" : "false");
    else
        printf("devices:            %llu\nreadings:           %llu\nbytes:              %llu\n"
               "data keys:          %llu (current: %lld)\nre-encryption:      %s\n",
               (unsigned long long)s.devices, (unsigned long long)s.readings,
               (unsigned long long)s.bytes, (unsigned long long)s.data_keys,
               (long long)s.current_key,
               s.reencrypt_pending ? "under way (moatctl key reencrypt)" : "none");
    tstore_close(ts);
    return CTL_EXIT_OK;
}

int ctl_cmd_telemetry(const ctl_ctx *ctx, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("telemetry", "missing device id or telemetry command");
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ctl_help("telemetry", stdout);
        return CTL_EXIT_OK;
    }
    if (sodium_init() < 0) {
        ctl_err("libsodium cannot be initialised");
        return CTL_EXIT_FAIL;
    }
    /* Device ids never take these shapes, so the words cannot clash. */
    if (strcmp(sub, "purge") == 0)
        return purge(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "stats") == 0)
        return stats(ctx, argc - 1, argv + 1);
    return query(ctx, argc, argv);
}
