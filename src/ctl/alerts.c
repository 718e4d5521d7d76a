/*
 * alerts.c — `moatctl alerts`: what the hub's monitor recorded in
 * DATA_DIR/alerts.db (devices offline, bursts of refusals, rate anomalies,
 * certificates close to expiry, store failures, clock jumps), read-only.
 *
 * The file is the hub's: moatctl only reads it, and a hub that has never
 * run (no alerts.db yet) simply has no alerts.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "alert_store.h"
#include "ctl.h"

typedef struct show_ctx {
    bool json;
    json_t *arr;
} show_ctx;

/* Printable for a terminal (see print_clean in audit.c). */
static void put_clean(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

static int show(void *vctx, const alert_row *r)
{
    show_ctx *c = vctx;
    char raised[32], last[32], cleared[32] = "";
    alert_format_time(r->raised_ms, raised);
    alert_format_time(r->last_ms, last);
    if (r->cleared_ms)
        alert_format_time(r->cleared_ms, cleared);
    const char *kind = alert_kind_name(r->kind);
    if (c->json) {
        json_t *details = json_loads(r->details, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(details)) {
            json_decref(details);
            details = json_object();
        }
        json_t *subject = json_string(r->subject);
        json_t *o =
            json_pack("{s:I, s:s, s:s, s:o, s:s, s:s, s:I}", "id", (json_int_t)r->id, "kind", kind,
                      "state", r->state, "subject", subject ? subject : json_string("?"), "raised",
                      raised, "last", last, "count", (json_int_t)r->count);
        if (o) {
            json_object_set_new(o, "cleared", r->cleared_ms ? json_string(cleared) : json_null());
            json_object_set_new(o, "details", details);
            json_array_append_new(c->arr, o);
        } else {
            json_decref(details);
        }
        return 0;
    }
    printf("%5lld  %-7s  %-21s  ", (long long)r->id, r->state, kind);
    put_clean(r->subject);
    printf("  %s", raised);
    if (r->cleared_ms)
        printf(" .. %s", cleared);
    if (r->count > 1)
        printf("  x%lld (last %s)", (long long)r->count, last);
    if (strcmp(r->details, "{}") != 0) {
        printf("  ");
        put_clean(r->details);
    }
    putchar('\n');
    return 0;
}

int ctl_cmd_alerts(const ctl_ctx *ctx, int argc, char **argv)
{
    if (argc > 0 && strcmp(argv[0], "help") == 0) {
        ctl_help("alerts", stdout);
        return CTL_EXIT_OK;
    }
    ctl_opt opts[] = {{.name = "open"},
                      {.name = "kind", .has_arg = true},
                      {.name = "since", .has_arg = true},
                      {.name = "limit", .has_arg = true},
                      {.name = "format", .has_arg = true}};
    ctl_args args;
    int rc = ctl_parse("alerts", argc, argv, opts, 5, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help) {
        ctl_help("alerts", stdout);
        return CTL_EXIT_OK;
    }
    if (args.npos != 0)
        return ctl_usage("alerts", "alerts takes no arguments");
    alert_filter f = {.open_only = opts[0].count > 0, .limit = 100};
    if (opts[1].count && !(f.kind = alert_kind_parse(opts[1].values[0])))
        return ctl_usage("alerts", "unknown alert kind '%s'", opts[1].values[0]);
    int64_t since = 0;
    if (opts[2].count) {
        if (!ctl_parse_when(opts[2].values[0], (int64_t)time(NULL), &since))
            return ctl_usage("alerts", "--since: '%s' is not a time", opts[2].values[0]);
        f.since_ms = since * 1000;
    }
    unsigned long limit = 100;
    if (opts[3].count && !ctl_parse_uint(opts[3].values[0], 0, 100000000ul, &limit))
        return ctl_usage("alerts", "--limit must be a number (0 = all)");
    f.limit = limit;
    bool json = false;
    if (opts[4].count) {
        if (strcmp(opts[4].values[0], "json") == 0)
            json = true;
        else if (strcmp(opts[4].values[0], "text") != 0)
            return ctl_usage("alerts", "--format must be text or json");
    }
    const char *dir = ctl_data_dir(ctx, &args, "alerts");
    if (!dir)
        return CTL_EXIT_USAGE;
    char path[4096], err[512];
    if (!ctl_path(path, sizeof path, dir, "alerts.db"))
        return CTL_EXIT_FAIL;
    show_ctx c = {.json = json, .arr = json ? json_array() : NULL};
    alert_store *s = NULL;
    monitor_status st = alert_store_open(path, ALERT_STORE_READONLY, &s, err, sizeof err);
    if (st == MONITOR_OK) {
        st = alert_store_list(s, &f, show, &c);
        if (st != MONITOR_OK)
            snprintf(err, sizeof err, "%s", alert_store_errmsg(s));
        alert_store_close(s);
    } else if (st == MONITOR_NOT_FOUND) {
        st = MONITOR_OK; /* the hub has not recorded any alert yet */
        if (!json)
            fprintf(stderr, "moatctl: no alerts recorded (%s does not exist yet)\n", path);
    }
    if (st != MONITOR_OK) {
        ctl_err("%s", err);
        json_decref(c.arr);
        return CTL_EXIT_FAIL;
    }
    if (json) {
        rc = json_dumpf(c.arr, stdout, JSON_INDENT(2)) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
        putchar('\n');
        json_decref(c.arr);
    }
    return rc;
}
