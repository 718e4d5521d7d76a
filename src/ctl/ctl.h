/*
 * ctl.h — what the files of moatctl share: exit codes, the command-line
 * option parser, the data-directory context, and small output helpers.
 *
 * moatctl is the operator's only way to change who may talk to the hub, so
 * every command either does all of what it says or nothing (one registry
 * transaction, files written atomically and removed again on failure), and
 * says what went wrong in one line on stderr.
 */
#ifndef MOAT_CTL_H
#define MOAT_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pki.h"
#include "registry.h"

#if defined(__GNUC__) || defined(__clang__)
#define CTL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CTL_PRINTF(a, b)
#endif

/* Exit status: documented in `moatctl --help`. */
enum { CTL_EXIT_OK = 0, CTL_EXIT_FAIL = 1, CTL_EXIT_USAGE = 2 };

/* ---- options ---------------------------------------------------------- */

#define CTL_MAX_VALUES 64
#define CTL_MAX_POS    8

/* One long option a command accepts ("group" for --group). */
typedef struct ctl_opt {
    const char *name;
    bool has_arg;
    bool multi; /* may be given more than once */
    const char *values[CTL_MAX_VALUES];
    size_t count; /* times given (for flags too) */
} ctl_opt;

/* What a command's arguments parse into. --dir and --help are accepted by
 * every command. */
typedef struct ctl_args {
    const char *pos[CTL_MAX_POS];
    size_t npos;
    const char *dir;
    bool help;
} ctl_args;

/* Parse argv[0..argc) (after the command words) against opts[0..nopts).
 * Returns CTL_EXIT_OK or CTL_EXIT_USAGE (message already printed, pointing
 * at the help of group). */
int ctl_parse(const char *group, int argc, char **argv, ctl_opt *opts, size_t nopts, ctl_args *out);

/* The option named name in opts (must exist). */
ctl_opt *ctl_opt_get(ctl_opt *opts, size_t nopts, const char *name);

/* Parse a decimal number in [min, max]; false on anything else. */
bool ctl_parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out);

/* ---- context ---------------------------------------------------------- */

typedef struct ctl_ctx {
    const char *dir;     /* from --dir or MOAT_DIR; NULL if neither */
    const char *command; /* "device", ... for messages */
} ctl_ctx;

/* Print "moatctl: ..." to stderr. */
void ctl_err(const char *fmt, ...) CTL_PRINTF(1, 2);

/* Usage error: message plus a pointer to the help of group. Returns
 * CTL_EXIT_USAGE. */
int ctl_usage(const char *group, const char *fmt, ...) CTL_PRINTF(2, 3);

/* Resolve the data directory (args->dir, then ctx->dir). Prints a usage
 * error and returns NULL if there is none. */
const char *ctl_data_dir(const ctl_ctx *ctx, const ctl_args *args, const char *group);

/* dir + "/" + name into buf; false (and a message) if it does not fit. */
bool ctl_path(char *buf, size_t len, const char *dir, const char *name);

/* Open DIR/registry.db of an initialised data directory. */
int ctl_open_registry(const char *dir, registry **out);

/* Map a registry failure to a message and exit status 1. */
int ctl_reg_fail(registry *reg, registry_status st);

/* Read a whole file (or stdin for "-") of at most max bytes. */
int ctl_read_input(const char *path, size_t max, char **out, size_t *len);

/* ---- output ----------------------------------------------------------- */

/* A JSON string literal for s. */
void ctl_json_str(FILE *f, const char *s);

/* ISO 8601 UTC time ("2025-01-31T12:00:00Z"). */
void ctl_format_time(int64_t t, char buf[32]);

/* Lower-case hex of n bytes into buf (2n+1 bytes). */
void ctl_hex(const uint8_t *data, size_t n, char *buf);

/* ---- commands (argv starts after the group word) ---------------------- */

int ctl_cmd_init(const ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_principal(const ctl_ctx *ctx, registry_kind kind, int argc, char **argv);
int ctl_cmd_group(const ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_policy(const ctl_ctx *ctx, int argc, char **argv);

/* ---- help --------------------------------------------------------------- */

/* Print the manual of group (NULL = moatctl itself) to f. False if there is
 * no such group. */
bool ctl_help(const char *group, FILE *f);

#endif /* MOAT_CTL_H */
