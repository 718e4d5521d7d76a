/*
 * audit.c — moatctl's side of the audit log (src/audit): every command that
 * changes the registry writes its entry in the same transaction as the
 * change, and `moatctl audit` lists and verifies the log.
 *
 * Fail closed: if the entry cannot be written (audit.key unreadable, the
 * audit tables gone, the chain's head forged), the change is rolled back and
 * the command fails. An operator change that left no trace is exactly what
 * the log exists to rule out.
 *
 * The actor is "operator/UID" for the real user id running moatctl; the
 * details add the login name and, when running as root through sudo, the
 * SUDO_USER that sudo set (recorded as what it is: a claim from the
 * environment, useful to a reader, not an identity).
 */
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "ctl.h"

/* ---- writing entries ------------------------------------------------------ */

static void actor_of(char *buf, size_t len)
{
    snprintf(buf, len, "operator/%lu", (unsigned long)getuid());
}

/* details (stolen, may be NULL) plus who ran moatctl. */
static json_t *with_operator(json_t *details)
{
    json_t *d = json_is_object(details) ? details : json_object();
    if (details && d != details)
        json_decref(details);
    if (!d)
        return NULL;
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_name)
        json_object_set_new(d, "user", json_string(res->pw_name));
    const char *sudo = getenv("SUDO_USER");
    if (getuid() == 0 && sudo && *sudo && strlen(sudo) < 64) {
        json_t *s = json_string(sudo);
        if (s)
            json_object_set_new(d, "sudo_user", s);
    }
    return d;
}

static int append(registry *reg, const char *dir, const audit_key *given, const char *action,
                  const char *subject, const char *outcome, json_t *details, bool quiet)
{
    char path[4096], err[320], actor[64];
    audit_key *key = NULL;
    audit_log *log = NULL;
    int rc = CTL_EXIT_FAIL;
    audit_status st = AUDIT_OK;
    details = with_operator(details);
    if (!given) {
        if (!ctl_path(path, sizeof path, dir, "audit.key"))
            goto out;
        st = audit_key_load(path, &key, err, sizeof err);
        if (st != AUDIT_OK) {
            if (!quiet)
                ctl_err("audit log: cannot read its key: %s", err);
            goto out;
        }
        given = key;
    }
    st = audit_attach(registry_sqlite(reg), given, 0, &log);
    if (st == AUDIT_OK) {
        actor_of(actor, sizeof actor);
        audit_record rec = {.actor = actor,
                            .action = action,
                            .subject = subject,
                            .outcome = outcome,
                            .details = details};
        st = audit_append(log, &rec, NULL);
    }
    if (st != AUDIT_OK) {
        if (!quiet)
            ctl_err("audit log: %s", st == AUDIT_NOT_FOUND
                                         ? "missing from the registry (was it removed?); "
                                           "see 'moatctl audit verify'"
                                     : log ? audit_errmsg(log)
                                           : audit_status_name(st));
        goto out;
    }
    rc = CTL_EXIT_OK;
out:
    audit_close(log);
    audit_key_free(key);
    json_decref(details);
    return rc;
}

int ctl_audit_ok(registry *reg, const char *dir, const char *action, const char *subject,
                 struct json_t *details)
{
    int rc = append(reg, dir, NULL, action, subject, "ok", details, false);
    if (rc != CTL_EXIT_OK)
        ctl_err("nothing was changed: a change that cannot be audited is not made");
    return rc;
}

void ctl_audit_failed(registry *reg, const char *dir, const char *action, const char *subject,
                      const char *reason, struct json_t *details)
{
    json_t *d = json_is_object(details) ? details : json_object();
    if (details && d != details)
        json_decref(details);
    if (d && reason)
        json_object_set_new(d, "error", json_string(reason));
    /* Its own transaction: the change was rolled back. Failing to record a
     * failed attempt only warns: nothing changed that needs the record. */
    if (append(reg, dir, NULL, action, subject, "failed", d, true) != CTL_EXIT_OK)
        ctl_err("note: the failed attempt could not be written to the audit log");
}

int ctl_change_begin(registry *reg)
{
    registry_status st = registry_begin(reg);
    if (st == REGISTRY_OK)
        return CTL_EXIT_OK;
    ctl_reg_fail(reg, st);
    registry_close(reg);
    return CTL_EXIT_FAIL;
}

int ctl_change_finish(registry *reg, const char *dir, registry_status st, const char *action,
                      const char *subject, struct json_t *details, const char *done)
{
    int rc = CTL_EXIT_OK;
    if (st == REGISTRY_OK) {
        if (ctl_audit_ok(reg, dir, action, subject, details) != CTL_EXIT_OK) {
            registry_rollback(reg);
            rc = CTL_EXIT_FAIL;
        } else if ((st = registry_commit(reg)) != REGISTRY_OK) {
            rc = ctl_reg_fail(reg, st);
            registry_rollback(reg);
        }
    } else {
        /* The registry's message, before anything else overwrites it. */
        char why[320];
        snprintf(why, sizeof why, "%s", registry_errmsg(reg));
        rc = ctl_reg_fail(reg, st);
        registry_rollback(reg);
        ctl_audit_failed(reg, dir, action, subject, why, details);
    }
    if (rc == CTL_EXIT_OK && done)
        printf("%s\n", done);
    registry_close(reg);
    return rc;
}

int ctl_audit_init(registry *reg, const char *dir, X509 *ca_cert)
{
    audit_key *key = NULL;
    audit_log *log = NULL;
    int rc = CTL_EXIT_FAIL;
    char path[4096], err[320];
    if (!ctl_path(path, sizeof path, dir, "audit.key"))
        return CTL_EXIT_FAIL;
    if (audit_key_load(path, &key, err, sizeof err) != AUDIT_OK) {
        ctl_err("audit log: cannot read its key: %s", err);
        return CTL_EXIT_FAIL;
    }
    json_t *d = json_object();
    uint8_t fp[PKI_FINGERPRINT_LEN];
    char hex[2 * PKI_FINGERPRINT_LEN + 1];
    pki_error perr;
    if (d && ca_cert && pki_cert_fingerprint(ca_cert, fp, &perr) == PKI_OK) {
        ctl_hex(fp, sizeof fp, hex);
        json_object_set_new(d, "ca_sha256", json_string(hex));
    }
    registry_status rst = registry_begin(reg);
    audit_status st =
        rst == REGISTRY_OK ? audit_attach(registry_sqlite(reg), key, AUDIT_CREATE, &log) : AUDIT_IO;
    if (st == AUDIT_OK) {
        audit_close(log);
        log = NULL;
        /* The first entry: the hub was made, under this CA. */
        if (append(reg, NULL, key, "hub.init", "", "ok", d, false) == CTL_EXIT_OK &&
            registry_commit(reg) == REGISTRY_OK)
            rc = CTL_EXIT_OK;
        d = NULL; /* taken by append */
    } else {
        ctl_err("audit log: cannot create it (%s)", audit_status_name(st));
    }
    if (rc != CTL_EXIT_OK)
        registry_rollback(reg);
    json_decref(d);
    audit_key_free(key);
    return rc;
}

struct json_t *ctl_audit_kv(const char *k1, const char *v1, const char *k2, const char *v2)
{
    if (!k1)
        return NULL;
    json_t *d = json_object();
    const char *keys[] = {k1, k2}, *vals[] = {v1, v2};
    for (size_t i = 0; d && i < 2; i++) {
        json_t *v = keys[i] && vals[i] ? json_string(vals[i]) : NULL; /* not UTF-8: left out */
        if (v)
            json_object_set_new(d, keys[i], v);
    }
    return d;
}

struct json_t *ctl_audit_document(const char *text, size_t len, bool replace)
{
    /* The hash names the exact document; the text itself can be long and
     * stays in the registry (and in the operator's own files). */
    uint8_t h[crypto_hash_sha256_BYTES];
    char hex[2 * sizeof h + 1];
    crypto_hash_sha256(h, (const unsigned char *)text, len);
    ctl_hex(h, sizeof h, hex);
    return json_pack("{s:s, s:I, s:b}", "sha256", hex, "bytes", (json_int_t)len, "replace",
                     replace);
}

struct json_t *ctl_audit_cert_details(const registry_cert *c, const ctl_opt *groups,
                                      const ctl_opt *policies)
{
    char fp[2 * REGISTRY_FINGERPRINT_LEN + 1], until[32];
    ctl_hex(c->fingerprint, sizeof c->fingerprint, fp);
    ctl_format_time(c->not_after, until);
    json_t *d = json_pack("{s:s, s:s, s:s}", "sha256", fp, "serial", c->serial, "not_after", until);
    const ctl_opt *lists[] = {groups, policies};
    const char *names[] = {"groups", "policies"};
    for (size_t k = 0; d && k < 2; k++) {
        if (!lists[k] || lists[k]->count == 0)
            continue;
        json_t *a = json_array();
        for (size_t i = 0; a && i < lists[k]->count; i++) {
            json_t *v = json_string(lists[k]->values[i]);
            if (v)
                json_array_append_new(a, v);
        }
        if (a)
            json_object_set_new(d, names[k], a);
    }
    return d;
}

/* ---- moatctl audit ----------------------------------------------------------- */

/* Text for a terminal: control characters (an attacker's topic name could
 * hold an escape sequence) shown as \xNN. */
static void print_clean(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

/* A JSON string for stored text; bytes that are not valid UTF-8 (a
 * tampered row) become '?' rather than invalid JSON. */
static json_t *text_value(const char *s)
{
    json_t *v = json_string(s);
    if (v)
        return v;
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (!copy)
        return json_null();
    for (size_t i = 0; i <= n; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    v = json_string(copy);
    free(copy);
    return v ? v : json_null();
}

typedef struct list_ctx {
    bool json;
    json_t *arr;
} list_ctx;

static int print_entry(void *vctx, const audit_entry *e)
{
    list_ctx *c = vctx;
    char when[32], tag[2 * AUDIT_TAG_LEN + 1];
    ctl_format_time(e->time, when);
    ctl_hex(e->tag, AUDIT_TAG_LEN, tag);
    if (c->json) {
        json_t *details = json_loads(e->details, JSON_REJECT_DUPLICATES, NULL);
        if (!details) /* not JSON any more: shown as the text it is */
            details = text_value(e->details);
        json_t *o = json_object();
        if (!o) {
            json_decref(details);
            return 1;
        }
        json_object_set_new(o, "seq", json_integer((json_int_t)e->seq));
        json_object_set_new(o, "time", json_string(when));
        json_object_set_new(o, "time_s", json_integer((json_int_t)e->time));
        json_object_set_new(o, "actor", text_value(e->actor));
        json_object_set_new(o, "action", text_value(e->action));
        json_object_set_new(o, "subject", text_value(e->subject));
        json_object_set_new(o, "outcome", text_value(e->outcome));
        json_object_set_new(o, "details", details);
        json_object_set_new(o, "tag", json_string(tag));
        json_array_append_new(c->arr, o);
        return 0;
    }
    printf("%6lld  %s  ", (long long)e->seq, when);
    print_clean(e->actor);
    fputs("  ", stdout);
    print_clean(e->action);
    fputs("  ", stdout);
    print_clean(e->subject[0] ? e->subject : "-");
    fputs("  ", stdout);
    print_clean(e->outcome);
    if (strcmp(e->details, "{}") != 0) {
        fputs("  ", stdout);
        print_clean(e->details);
    }
    putchar('\n');
    return 0;
}

/* Open the registry and the log in it (reading). */
static int open_log(const char *dir, registry **reg, audit_key **key, audit_log **log)
{
    char path[4096], err[320];
    int rc = ctl_open_registry(dir, reg);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (!ctl_path(path, sizeof path, dir, "audit.key"))
        return CTL_EXIT_FAIL;
    if (audit_key_load(path, key, err, sizeof err) != AUDIT_OK) {
        ctl_err("cannot read the audit log's key: %s", err);
        return CTL_EXIT_FAIL;
    }
    audit_status st = audit_attach(registry_sqlite(*reg), *key, 0, log);
    if (st == AUDIT_NOT_FOUND) {
        ctl_err("%s/registry.db holds no audit log: it is made by moatctl init, so it was "
                "removed (or this data directory predates it)",
                dir);
        return CTL_EXIT_FAIL;
    }
    if (st != AUDIT_OK) {
        ctl_err("audit log: %s", audit_status_name(st));
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

static int check_format(const ctl_opt *o, bool *json)
{
    *json = false;
    if (o->count == 0 || strcmp(o->values[0], "text") == 0)
        return CTL_EXIT_OK;
    if (strcmp(o->values[0], "json") == 0) {
        *json = true;
        return CTL_EXIT_OK;
    }
    return ctl_usage("audit", "--format must be text or json");
}

static int flush_json(json_t *v)
{
    int rc = json_dumpf(v, stdout, JSON_INDENT(2)) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    putchar('\n');
    json_decref(v);
    return rc;
}

static int audit_list_cmd(const char *dir, ctl_opt *opts)
{
    int64_t since = INT64_MIN;
    unsigned long limit = 100;
    bool json;
    int rc = check_format(&opts[2], &json);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (opts[0].count && !ctl_parse_when(opts[0].values[0], (int64_t)time(NULL), &since))
        return ctl_usage("audit",
                         "--since: '%s' is not a time (RFC 3339, unix seconds, or -2h, "
                         "-7d...)",
                         opts[0].values[0]);
    if (opts[1].count && !ctl_parse_uint(opts[1].values[0], 0, 100000000ul, &limit))
        return ctl_usage("audit", "--limit must be a number (0 = all)");
    registry *reg = NULL;
    audit_key *key = NULL;
    audit_log *log = NULL;
    if ((rc = open_log(dir, &reg, &key, &log)) == CTL_EXIT_OK) {
        list_ctx c = {.json = json, .arr = json ? json_array() : NULL};
        audit_status st = audit_list(log, since, limit, print_entry, &c);
        if (st != AUDIT_OK) {
            ctl_err("audit log: %s", audit_errmsg(log));
            rc = CTL_EXIT_FAIL;
            json_decref(c.arr);
        } else if (json) {
            rc = flush_json(c.arr);
        }
    }
    audit_close(log);
    audit_key_free(key);
    registry_close(reg);
    return rc;
}

/* "SEQ:HEX" as printed by `moatctl audit head`. */
static bool parse_anchor(const char *s, audit_head *out)
{
    const char *colon = strchr(s, ':');
    char num[24];
    unsigned long seq;
    if (!colon || (size_t)(colon - s) >= sizeof num || strlen(colon + 1) != 2 * AUDIT_TAG_LEN)
        return false;
    memcpy(num, s, (size_t)(colon - s));
    num[colon - s] = '\0';
    if (!ctl_parse_uint(num, 1, (unsigned long)INT64_MAX, &seq))
        return false;
    out->seq = (int64_t)seq;
    for (size_t i = 0; i < AUDIT_TAG_LEN; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = colon[1 + 2 * i + (size_t)k];
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                                : 16u;
            if (d > 15)
                return false;
            v = v * 16 + d;
        }
        out->tag[i] = (uint8_t)v;
    }
    return true;
}

static int audit_verify_cmd(const char *dir, ctl_opt *anchor_opt)
{
    audit_head anchor;
    if (anchor_opt->count && !parse_anchor(anchor_opt->values[0], &anchor))
        return ctl_usage("audit", "--anchor must be SEQ:TAG as printed by 'moatctl audit head'");
    registry *reg = NULL;
    audit_key *key = NULL;
    audit_log *log = NULL;
    int rc = open_log(dir, &reg, &key, &log);
    if (rc == CTL_EXIT_OK) {
        audit_verdict v;
        audit_status st = audit_verify(log, anchor_opt->count ? &anchor : NULL, &v);
        char tag[2 * AUDIT_TAG_LEN + 1];
        ctl_hex(v.head.tag, AUDIT_TAG_LEN, tag);
        if (st == AUDIT_OK) {
            printf("audit log verified: %lld entr%s, head %lld:%s\n", (long long)v.entries,
                   v.entries == 1 ? "y" : "ies", (long long)v.head.seq, tag);
        } else if (st == AUDIT_BROKEN) {
            if (v.bad_seq > 0)
                ctl_err("audit log FAILED verification at entry %lld: %s", (long long)v.bad_seq,
                        v.reason);
            else
                ctl_err("audit log FAILED verification: %s", v.reason);
            rc = CTL_EXIT_FAIL;
        } else {
            ctl_err("audit log: %s", audit_errmsg(log));
            rc = CTL_EXIT_FAIL;
        }
    }
    audit_close(log);
    audit_key_free(key);
    registry_close(reg);
    return rc;
}

static int audit_head_cmd(const char *dir, ctl_opt *format)
{
    bool json;
    int rc = check_format(format, &json);
    if (rc != CTL_EXIT_OK)
        return rc;
    registry *reg = NULL;
    audit_key *key = NULL;
    audit_log *log = NULL;
    if ((rc = open_log(dir, &reg, &key, &log)) == CTL_EXIT_OK) {
        audit_head h;
        audit_status st = audit_head_get(log, &h);
        char tag[2 * AUDIT_TAG_LEN + 1];
        ctl_hex(h.tag, AUDIT_TAG_LEN, tag);
        if (st != AUDIT_OK) {
            ctl_err("audit log: %s", audit_errmsg(log));
            rc = CTL_EXIT_FAIL;
        } else if (json) {
            rc = flush_json(json_pack("{s:I, s:s}", "seq", (json_int_t)h.seq, "tag", tag));
        } else {
            printf("%lld:%s\n", (long long)h.seq, tag);
        }
    }
    audit_close(log);
    audit_key_free(key);
    registry_close(reg);
    return rc;
}

/* `moatctl audit init`: start the log in a data directory made before the
 * audit log existed. A directory whose audit.key exists had a log: if its
 * tables are gone, that is tampering to investigate, so only --restart
 * starts a new log there, and its first entry says so. */
static int audit_init_cmd(const char *dir, bool restart)
{
    char path[4096], err[320];
    registry *reg = NULL;
    audit_key *key = NULL;
    audit_log *log = NULL;
    int rc = ctl_open_registry(dir, &reg);
    if (rc != CTL_EXIT_OK)
        return rc;
    rc = CTL_EXIT_FAIL;
    if (!ctl_path(path, sizeof path, dir, "audit.key"))
        goto out;
    bool had_key = access(path, F_OK) == 0;
    if (!had_key) {
        unsigned char k[32];
        pki_error perr;
        randombytes_buf(k, sizeof k);
        pki_status ps = pki_file_write_atomic(path, k, sizeof k, 0600, PKI_WRITE_NOCLOBBER, &perr);
        sodium_memzero(k, sizeof k);
        if (ps != PKI_OK) {
            ctl_err("%s", perr.msg);
            goto out;
        }
    }
    if (audit_key_load(path, &key, err, sizeof err) != AUDIT_OK) {
        ctl_err("%s", err);
        goto out;
    }
    if (registry_begin(reg) != REGISTRY_OK) {
        ctl_err("%s", registry_errmsg(reg));
        goto out;
    }
    bool existed = audit_attach(registry_sqlite(reg), key, 0, &log) == AUDIT_OK;
    audit_close(log);
    log = NULL;
    if (existed) {
        ctl_err("%s/registry.db already has an audit log", dir);
        registry_rollback(reg);
        goto out;
    }
    if (had_key && !restart) {
        ctl_err("%s exists, so this directory had an audit log, and its tables are gone. "
                "Find out why; 'moatctl audit init --restart' starts a new log anyway",
                path);
        registry_rollback(reg);
        goto out;
    }
    if (audit_attach(registry_sqlite(reg), key, AUDIT_CREATE, &log) != AUDIT_OK) {
        ctl_err("cannot create the audit log");
        registry_rollback(reg);
        goto out;
    }
    audit_close(log);
    log = NULL;
    json_t *d = json_pack("{s:b}", "restart", restart);
    if (append(reg, NULL, key, "audit.init", "", "ok", d, false) != CTL_EXIT_OK ||
        registry_commit(reg) != REGISTRY_OK) {
        registry_rollback(reg);
        goto out;
    }
    printf("audit log started in %s/registry.db\n", dir);
    rc = CTL_EXIT_OK;
out:
    audit_close(log);
    audit_key_free(key);
    registry_close(reg);
    return rc;
}

int ctl_cmd_audit(const ctl_ctx *ctx, int argc, char **argv)
{
    const char *sub = argc > 0 && argv[0][0] != '-' ? argv[0] : "list";
    if (strcmp(sub, "help") == 0) {
        ctl_help("audit", stdout);
        return CTL_EXIT_OK;
    }
    bool explicit = argc > 0 && argv[0][0] != '-';
    if (explicit) {
        argc--;
        argv++;
    }
    ctl_opt opts[] = {{.name = "since", .has_arg = true},
                      {.name = "limit", .has_arg = true},
                      {.name = "format", .has_arg = true},
                      {.name = "anchor", .has_arg = true},
                      {.name = "restart"}};
    ctl_args args;
    int rc;
    if (strcmp(sub, "list") == 0)
        rc = ctl_parse("audit", argc, argv, opts, 3, &args);
    else if (strcmp(sub, "verify") == 0)
        rc = ctl_parse("audit", argc, argv, opts + 3, 1, &args);
    else if (strcmp(sub, "head") == 0)
        rc = ctl_parse("audit", argc, argv, opts + 2, 1, &args);
    else if (strcmp(sub, "init") == 0)
        rc = ctl_parse("audit", argc, argv, opts + 4, 1, &args);
    else
        return ctl_usage("audit", "unknown audit command '%s'", sub);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help) {
        ctl_help("audit", stdout);
        return CTL_EXIT_OK;
    }
    if (args.npos != 0)
        return ctl_usage("audit", "audit %s takes no arguments", sub);
    const char *dir = ctl_data_dir(ctx, &args, "audit");
    if (!dir)
        return CTL_EXIT_USAGE;
    if (strcmp(sub, "verify") == 0)
        return audit_verify_cmd(dir, &opts[3]);
    if (strcmp(sub, "head") == 0)
        return audit_head_cmd(dir, &opts[2]);
    if (strcmp(sub, "init") == 0)
        return audit_init_cmd(dir, opts[4].count > 0);
    return audit_list_cmd(dir, opts);
}
