/*
 * main.c — moatctl's entry point: global options (--dir, --help,
 * --version), MOAT_DIR, and dispatch to the command groups.
 *
 * Output is line-buffered into stdout and checked at exit: a full disk or a
 * closed pipe while printing an id or a certificate must turn into a failure
 * status, not a silent success that leaves a script without the id.
 */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#ifndef MOAT_VERSION
#define MOAT_VERSION "0.1.0"
#endif

static int dispatch(const ctl_ctx *ctx, const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "init") == 0)
        return ctl_cmd_init(ctx, argc, argv);
    if (strcmp(cmd, "device") == 0)
        return ctl_cmd_principal(ctx, REGISTRY_DEVICE, argc, argv);
    if (strcmp(cmd, "service") == 0)
        return ctl_cmd_principal(ctx, REGISTRY_SERVICE, argc, argv);
    if (strcmp(cmd, "group") == 0)
        return ctl_cmd_group(ctx, argc, argv);
    if (strcmp(cmd, "policy") == 0)
        return ctl_cmd_policy(ctx, argc, argv);
    if (strcmp(cmd, "telemetry") == 0)
        return ctl_cmd_telemetry(ctx, argc, argv);
    if (strcmp(cmd, "key") == 0)
        return ctl_cmd_key(ctx, argc, argv);
    if (strcmp(cmd, "command") == 0)
        return ctl_cmd_command(ctx, argc, argv);
    if (strcmp(cmd, "audit") == 0)
        return ctl_cmd_audit(ctx, argc, argv);
    if (strcmp(cmd, "alerts") == 0)
        return ctl_cmd_alerts(ctx, argc, argv);
    if (strcmp(cmd, "help") == 0) {
        if (argc > 1)
            return ctl_usage(NULL, "help takes at most one command");
        if (!ctl_help(argc == 1 ? argv[0] : NULL, stdout))
            return ctl_usage(NULL, "no command '%s'", argv[0]);
        return CTL_EXIT_OK;
    }
    return ctl_usage(NULL, "unknown command '%s'", cmd);
}

int main(int argc, char **argv)
{
    ctl_ctx ctx = {.dir = getenv("MOAT_DIR")};
    if (ctx.dir && !*ctx.dir)
        ctx.dir = NULL;
    int i = 1;
    /* Global options come before the command. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            ctl_help(NULL, stdout);
            return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
        }
        if (strcmp(a, "--version") == 0) {
            printf("moatctl %s\n", MOAT_VERSION);
            return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
        }
        if (strcmp(a, "--dir") == 0) {
            if (i + 1 >= argc)
                return ctl_usage(NULL, "option '--dir' needs a value");
            ctx.dir = argv[++i];
        } else if (strncmp(a, "--dir=", 6) == 0) {
            ctx.dir = a + 6;
        } else {
            return ctl_usage(NULL, "unknown option '%s'", a);
        }
    }
    if (i >= argc)
        return ctl_usage(NULL, "missing command");
    ctx.command = argv[i];
    int rc = dispatch(&ctx, argv[i], argc - i - 1, argv + i + 1);
    /* Anything printed must have reached its destination. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        ctl_err("writing to standard output failed");
        if (rc == CTL_EXIT_OK)
            rc = CTL_EXIT_FAIL;
    }
    return rc;
}
