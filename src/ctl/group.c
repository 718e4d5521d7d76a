/*
 * group.c — `moatctl group ...` and `moatctl policy ...`.
 *
 * Policies attach to groups, never to single principals, so that access is
 * granted by role and reviewed in one place. A policy document is parsed
 * with the hub's own parser (src/policy) before it is stored: a document the
 * hub could not read would make it deny everything for that policy (it fails
 * closed), so moatctl refuses it up front with the parser's line-numbered
 * message instead of letting the mistake reach a running fleet.
 */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "policy.h"

/* Parse args for a command taking exactly npos positionals; resolves the data
 * directory and opens the registry. Returns CTL_EXIT_OK with *reg open, or
 * the exit status to return. A help request sets *helped. */
static int setup(const ctl_ctx *ctx, const char *word, const char *sub, const char *synopsis,
                 int argc, char **argv, ctl_opt *opts, size_t nopts, size_t npos, ctl_args *args,
                 registry **reg, bool *helped)
{
    *helped = false;
    int rc = ctl_parse(word, argc, argv, opts, nopts, args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args->help) {
        ctl_help(word, stdout);
        *helped = true;
        return CTL_EXIT_OK;
    }
    if (args->npos != npos)
        return ctl_usage(word, "usage: moatctl %s %s %s", word, sub, synopsis);
    const char *dir = ctl_data_dir(ctx, args, word);
    if (!dir)
        return CTL_EXIT_USAGE;
    return ctl_open_registry(dir, reg);
}

static int finish(registry *reg, registry_status st, const char *done)
{
    int rc = CTL_EXIT_OK;
    if (st != REGISTRY_OK)
        rc = ctl_reg_fail(reg, st);
    else if (done)
        printf("%s\n", done);
    registry_close(reg);
    return rc;
}

/* ---- group ------------------------------------------------------------- */

typedef struct names_ctx {
    bool json;
    size_t n;
    const char *sep;
} names_ctx;

static int print_name(void *vctx, const char *name)
{
    names_ctx *c = vctx;
    if (c->json) {
        printf("%s", c->n ? ", " : "");
        ctl_json_str(stdout, name);
    } else {
        printf("%s%s", c->n ? c->sep : "", name);
    }
    c->n++;
    return 0;
}

/* One listing (`group list`, `policy list`): a line per entry, or a JSON
 * array of objects. */
typedef struct list_ctx {
    registry *reg;
    bool json;
    size_t n;
    registry_status inner; /* a failure inside an entry's own lookup */
} list_ctx;

typedef registry_status (*list_fn)(list_ctx *c);

static int run_list(const ctl_ctx *ctx, const char *word, int argc, char **argv, list_fn list)
{
    ctl_opt opts[] = {{.name = "json"}};
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc = setup(ctx, word, "list", "[--json]", argc, argv, opts, 1, 0, &args, &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    list_ctx c = {.reg = reg, .json = opts[0].count > 0};
    if (c.json)
        printf("[");
    registry_status st = registry_read_begin(reg);
    if (st == REGISTRY_OK)
        st = list(&c);
    if (st == REGISTRY_REFUSED && c.inner != REGISTRY_OK)
        st = c.inner;
    if (c.json)
        printf("%s]\n", c.n ? "\n" : "");
    registry_rollback(reg);
    return finish(reg, st, NULL);
}

static int print_group(void *vctx, const registry_group *g)
{
    list_ctx *c = vctx;
    if (c->json) {
        printf("%s\n  {\"name\": ", c->n ? "," : "");
        ctl_json_str(stdout, g->name);
        printf(", \"description\": ");
        ctl_json_str(stdout, g->description);
        printf(", \"members\": %lld, \"policies\": [", (long long)g->members);
    } else {
        printf("%-24s  %6lld member%s  policies: ", g->name, (long long)g->members,
               g->members == 1 ? " " : "s");
    }
    names_ctx nc = {.json = c->json, .sep = ", "};
    c->inner = registry_group_policies(c->reg, g->name, print_name, &nc);
    if (c->json)
        printf("]}");
    else
        printf("%s\n", nc.n ? "" : "(none)");
    c->n++;
    return c->inner != REGISTRY_OK;
}

static registry_status list_groups(list_ctx *c)
{
    return registry_group_list(c->reg, print_group, c);
}

static int group_list(const ctl_ctx *ctx, int argc, char **argv)
{
    return run_list(ctx, "group", argc, argv, list_groups);
}

typedef struct settings_ctx {
    bool json;
    size_t n;
} settings_ctx;

static int print_setting(void *vctx, const char *group, const char *key, const char *value)
{
    settings_ctx *c = vctx;
    (void)group;
    if (c->json) {
        printf("%s", c->n ? ", " : "");
        ctl_json_str(stdout, key);
        printf(": ");
        ctl_json_str(stdout, value);
    } else {
        printf("  %-20s %s\n", key, value);
    }
    c->n++;
    return 0;
}

static int group_show(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "json"}};
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc =
        setup(ctx, "group", "show", "NAME [--json]", argc, argv, opts, 1, 1, &args, &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    const char *name = args.pos[0];
    bool json = opts[0].count > 0;
    char *description = NULL;
    /* One snapshot for the group, its policies and its members. */
    registry_status st = registry_read_begin(reg);
    if (st == REGISTRY_OK)
        st = registry_group_get(reg, name, &description);
    if (st != REGISTRY_OK)
        goto out;
    names_ctx pc = {.json = json, .sep = ", "};
    names_ctx mc = {.json = json, .sep = "\n  "};
    if (json) {
        printf("{\"name\": ");
        ctl_json_str(stdout, name);
        printf(", \"description\": ");
        ctl_json_str(stdout, description);
        printf(", \"policies\": [");
    } else {
        printf("name:         %s\ndescription:  %s\npolicies:     ", name, description);
    }
    if ((st = registry_group_policies(reg, name, print_name, &pc)) != REGISTRY_OK)
        goto out;
    if (json)
        printf("], \"members\": [");
    else
        printf("%s\nmembers:\n  ", pc.n ? "" : "(none)");
    if ((st = registry_group_members(reg, name, print_name, &mc)) != REGISTRY_OK)
        goto out;
    if (json)
        printf("], \"settings\": {");
    else
        printf("%s\nsettings:\n", mc.n ? "" : "(none)");
    settings_ctx sc = {.json = json};
    if ((st = registry_group_setting_list(reg, name, print_setting, &sc)) != REGISTRY_OK)
        goto out;
    if (json)
        printf("}}\n");
    else if (sc.n == 0)
        printf("  (none)\n");
out:
    free(description);
    registry_rollback(reg);
    return finish(reg, st, NULL);
}

static int group_simple(const ctl_ctx *ctx, const char *sub, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "description", .has_arg = true}};
    bool is_add = strcmp(sub, "add") == 0;
    bool two = strcmp(sub, "attach") == 0 || strcmp(sub, "detach") == 0 ||
               strcmp(sub, "add-member") == 0 || strcmp(sub, "remove-member") == 0;
    const char *synopsis = is_add                       ? "NAME [--description TEXT]"
                           : strcmp(sub, "delete") == 0 ? "NAME"
                           : (strcmp(sub, "attach") == 0 || strcmp(sub, "detach") == 0)
                               ? "POLICY GROUP"
                               : "GROUP ID";
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc = setup(ctx, "group", sub, synopsis, argc, argv, opts, is_add ? 1 : 0, two ? 2 : 1,
                   &args, &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    const char *a = args.pos[0], *b = two ? args.pos[1] : NULL;
    registry_status st;
    char done[256];
    if ((rc = ctl_change_begin(reg)) != CTL_EXIT_OK)
        return rc;
    if (is_add) {
        st = registry_group_add(reg, a, opts[0].count ? opts[0].values[0] : "");
        snprintf(done, sizeof done, "group %s: added", a);
    } else if (strcmp(sub, "delete") == 0) {
        st = registry_group_delete(reg, a);
        snprintf(done, sizeof done, "group %s: deleted", a);
    } else if (strcmp(sub, "attach") == 0) {
        st = registry_group_attach(reg, a, b);
        snprintf(done, sizeof done, "policy %s: attached to group %s", a, b);
    } else if (strcmp(sub, "detach") == 0) {
        st = registry_group_detach(reg, a, b);
        snprintf(done, sizeof done, "policy %s: detached from group %s", a, b);
    } else if (strcmp(sub, "add-member") == 0) {
        st = registry_member_add(reg, a, b);
        snprintf(done, sizeof done, "group %s: %s added", a, b);
    } else {
        st = registry_member_remove(reg, a, b);
        snprintf(done, sizeof done, "group %s: %s removed", a, b);
    }
    /* Audited under the group's name; the policy or member in the details. */
    const char *subject = a, *dkey = NULL, *dval = NULL;
    if (strcmp(sub, "attach") == 0 || strcmp(sub, "detach") == 0) {
        subject = b;
        dkey = "policy";
        dval = a;
    } else if (b) {
        dkey = "member";
        dval = b;
    } else if (is_add && opts[0].count) {
        dkey = "description";
        dval = opts[0].values[0];
    }
    char action[40];
    snprintf(action, sizeof action, "group.%s", sub);
    return ctl_change_finish(reg, ctl_data_dir(ctx, &args, "group"), st, action, subject,
                             ctl_audit_kv(dkey, dval, NULL, NULL), done);
}

/* Settings moat itself reads, with the values it accepts. Other keys are
 * stored too (a newer hub may know them) but draw a warning, so that a typo
 * does not go unnoticed. */
static const struct {
    const char *key;
    unsigned long min, max;
    const char *meaning;
} known_settings[] = {
    {"retention_days", 1, 36500, "days a device's readings are kept"},
    {"retention_max_mb", 1, 16777216, "MiB of readings kept per device"},
    {"report_interval", 1, 31536000, "seconds within which a device is expected to report"},
};

static int group_setting(const ctl_ctx *ctx, const char *sub, int argc, char **argv)
{
    bool set = strcmp(sub, "set") == 0;
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc = setup(ctx, "group", sub, set ? "GROUP KEY VALUE" : "GROUP KEY", argc, argv, NULL, 0,
                   set ? 3 : 2, &args, &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    const char *group = args.pos[0], *key = args.pos[1], *value = set ? args.pos[2] : NULL;
    bool known = false;
    for (size_t i = 0; i < sizeof known_settings / sizeof known_settings[0]; i++) {
        unsigned long v;
        if (strcmp(key, known_settings[i].key) != 0)
            continue;
        known = true;
        if (set && !ctl_parse_uint(value, known_settings[i].min, known_settings[i].max, &v)) {
            ctl_err("group %s: %s (%s) must be a whole number from %lu to %lu", group, key,
                    known_settings[i].meaning, known_settings[i].min, known_settings[i].max);
            registry_close(reg);
            return CTL_EXIT_FAIL;
        }
    }
    if ((rc = ctl_change_begin(reg)) != CTL_EXIT_OK)
        return rc;
    registry_status st = registry_group_setting_set(reg, group, key, value);
    if (st == REGISTRY_OK && set && !known)
        ctl_err("note: '%s' is not a setting this moatctl knows; stored anyway", key);
    char done[256];
    if (set)
        snprintf(done, sizeof done, "group %s: %s = %s", group, key, value);
    else
        snprintf(done, sizeof done, "group %s: %s removed", group, key);
    return ctl_change_finish(reg, ctl_data_dir(ctx, &args, "group"), st,
                             set ? "group.set" : "group.unset", group,
                             ctl_audit_kv("key", key, set ? "value" : NULL, value), done);
}

int ctl_cmd_group(const ctl_ctx *ctx, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("group", "missing group command");
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ctl_help("group", stdout);
        return CTL_EXIT_OK;
    }
    if (strcmp(sub, "list") == 0)
        return group_list(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "show") == 0)
        return group_show(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "set") == 0 || strcmp(sub, "unset") == 0)
        return group_setting(ctx, sub, argc - 1, argv + 1);
    static const char *const simple[] = {"add",    "delete",     "attach",
                                         "detach", "add-member", "remove-member"};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (strcmp(sub, simple[i]) == 0)
            return group_simple(ctx, sub, argc - 1, argv + 1);
    return ctl_usage("group", "unknown group command '%s'", sub);
}

/* ---- policy ------------------------------------------------------------ */

static int policy_add(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "replace"}};
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc = setup(ctx, "policy", "add", "NAME FILE [--replace]", argc, argv, opts, 1, 2, &args,
                   &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    const char *name = args.pos[0], *file = args.pos[1];
    char *text = NULL;
    size_t len = 0;
    struct json_t *details = NULL;
    if ((rc = ctl_read_input(file, POLICY_MAX_DOCUMENT, &text, &len)) != CTL_EXIT_OK) {
        registry_close(reg);
        return rc;
    }
    registry_status st = REGISTRY_OK;
    if (memchr(text, '\0', len)) {
        ctl_err("policy %s: %s contains a NUL byte; a policy is text", name, file);
        rc = CTL_EXIT_FAIL;
    } else {
        policy_doc *doc = NULL;
        char perr[256] = "";
        policy_status ps = policy_parse(text, len, &doc, perr, sizeof perr);
        policy_doc_free(doc);
        if (ps != POLICY_OK) {
            ctl_err("policy %s refused: %s: %s", name, file, perr[0] ? perr : "does not parse");
            rc = CTL_EXIT_FAIL;
        } else {
            st = registry_begin(reg);
            if (st == REGISTRY_OK)
                st = registry_policy_put(reg, name, text, len, opts[0].count > 0);
            details = ctl_audit_document(text, len, opts[0].count > 0);
        }
    }
    free(text);
    if (rc != CTL_EXIT_OK) {
        registry_close(reg);
        return rc;
    }
    char done[128];
    snprintf(done, sizeof done, "policy %s: %s", name, opts[0].count ? "stored" : "added");
    return ctl_change_finish(reg, ctl_data_dir(ctx, &args, "policy"), st, "policy.add", name,
                             details, done);
}

static int policy_show(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc = setup(ctx, "policy", "show", "NAME", argc, argv, NULL, 0, 1, &args, &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    char *doc = NULL;
    size_t len = 0;
    registry_status st = registry_policy_get(reg, args.pos[0], &doc, &len);
    if (st == REGISTRY_OK) {
        fwrite(doc, 1, len, stdout);
        if (len > 0 && doc[len - 1] != '\n')
            putchar('\n');
    }
    free(doc);
    return finish(reg, st, NULL);
}

static int print_policy(void *vctx, const char *name)
{
    list_ctx *c = vctx;
    names_ctx nc = {.json = c->json, .sep = ", "};
    if (c->json) {
        printf("%s\n  {\"name\": ", c->n ? "," : "");
        ctl_json_str(stdout, name);
        printf(", \"groups\": [");
    } else {
        printf("%-24s  groups: ", name);
    }
    c->inner = registry_policy_groups(c->reg, name, print_name, &nc);
    if (c->json)
        printf("]}");
    else
        printf("%s\n", nc.n ? "" : "(none)");
    c->n++;
    return c->inner != REGISTRY_OK;
}

static registry_status list_policies(list_ctx *c)
{
    return registry_policy_list(c->reg, print_policy, c);
}

static int policy_list(const ctl_ctx *ctx, int argc, char **argv)
{
    return run_list(ctx, "policy", argc, argv, list_policies);
}

static int policy_delete(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_args args;
    registry *reg = NULL;
    bool helped;
    int rc = setup(ctx, "policy", "delete", "NAME", argc, argv, NULL, 0, 1, &args, &reg, &helped);
    if (rc != CTL_EXIT_OK || helped)
        return rc;
    char done[128];
    snprintf(done, sizeof done, "policy %s: deleted", args.pos[0]);
    if ((rc = ctl_change_begin(reg)) != CTL_EXIT_OK)
        return rc;
    return ctl_change_finish(reg, ctl_data_dir(ctx, &args, "policy"),
                             registry_policy_delete(reg, args.pos[0]), "policy.delete", args.pos[0],
                             NULL, done);
}

int ctl_cmd_policy(const ctl_ctx *ctx, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("policy", "missing policy command");
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ctl_help("policy", stdout);
        return CTL_EXIT_OK;
    }
    if (strcmp(sub, "add") == 0)
        return policy_add(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "show") == 0)
        return policy_show(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return policy_list(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "delete") == 0)
        return policy_delete(ctx, argc - 1, argv + 1);
    return ctl_usage("policy", "unknown policy command '%s'", sub);
}
