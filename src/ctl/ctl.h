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
int ctl_cmd_telemetry(const ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_key(const ctl_ctx *ctx, int argc, char **argv);

/* ---- the telemetry store (telemetry.c) --------------------------------- */

struct tstore;

/* Open DIR/telemetry.db (created if missing with create); message printed
 * on failure. */
int ctl_telemetry_open(const char *dir, bool create, struct tstore **out);

/* Erase every stored reading of device (moatctl device delete). No store
 * yet is not an error (0 erased). *wiped false: the old pages are
 * overwritten at the next checkpoint rather than now. */
int ctl_telemetry_erase(const char *dir, const char *device, uint64_t *deleted, bool *wiped);

struct json_t;

/* Record an action on the telemetry store or its keys in the audit log, in
 * a registry transaction of its own, after the fact (these changes are not
 * in the registry, so they cannot commit with their entry). reason NULL:
 * it succeeded. details (JSON object or NULL) is consumed. */
int ctl_telemetry_audit(const char *dir, const char *action, const char *subject,
                        const char *reason, struct json_t *details);
int ctl_cmd_command(const ctl_ctx *ctx, int argc, char **argv);

/* ---- the audit log (audit.c) and alerts (alerts.c) ---------------------- */

struct json_t;

int ctl_cmd_audit(const ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_alerts(const ctl_ctx *ctx, int argc, char **argv);

/* Every command that changes the registry records it in the audit log in
 * the same transaction; if the entry cannot be written, nothing changes.
 * The simple form, around one change on reg (opened by ctl_open_registry):
 *
 *     if ((rc = ctl_change_begin(reg)) != CTL_EXIT_OK)  // closes reg on failure
 *         return rc;
 *     st = registry_...(reg, ...);
 *     return ctl_change_finish(reg, dir, st, "group.add", name, details, "group x: added");
 *
 * ctl_change_finish writes the entry (outcome "ok") and commits, or, when st
 * is a failure, rolls back and records the failed attempt; prints done on
 * success; closes reg. details (a JSON object or NULL) is consumed. */
int ctl_change_begin(registry *reg);
int ctl_change_finish(registry *reg, const char *dir, registry_status st, const char *action,
                      const char *subject, struct json_t *details, const char *done);

/* The parts, for commands with their own transaction: an "ok" entry inside
 * reg's open transaction (message printed on failure: roll back then), and
 * a "failed" entry in a transaction of its own after a rollback. details is
 * consumed. */
int ctl_audit_ok(registry *reg, const char *dir, const char *action, const char *subject,
                 struct json_t *details);
void ctl_audit_failed(registry *reg, const char *dir, const char *action, const char *subject,
                      const char *reason, struct json_t *details);

/* Details {k1: v1, k2: v2} (k2 may be NULL; NULL for k1 means no details),
 * and those of a policy document: its SHA-256, size, and whether it
 * replaced one. */
struct json_t *ctl_audit_kv(const char *k1, const char *v1, const char *k2, const char *v2);
struct json_t *ctl_audit_document(const char *text, size_t len, bool replace);

/* What an enrollment records: the certificate's SHA-256, serial, expiry,
 * and the groups and policies given (either may be NULL). */
struct json_t *ctl_audit_cert_details(const registry_cert *c, const ctl_opt *groups,
                                      const ctl_opt *policies);

/* moatctl init: create the audit log in the new registry (keyed by
 * DIR/audit.key, written just before) and write its first entry
 * ("hub.init", with the CA's fingerprint). */
int ctl_audit_init(registry *reg, const char *dir, X509 *ca_cert);

/* A time for --since/--until (when.c), the one parser every command uses:
 * RFC 3339 (fractions of a second to the millisecond), unix seconds
 * (1738324800 or 1738324800.25), "now", or -30s, -15m, -2h, -7d, -1w.
 * ctl_parse_when_ms: milliseconds since the epoch (now_ms likewise);
 * ctl_parse_when: whole seconds, the floor of the same time. False for
 * anything else (a usage error for the caller). */
bool ctl_parse_when_ms(const char *s, int64_t now_ms, int64_t *out_ms);
bool ctl_parse_when(const char *s, int64_t now, int64_t *out);

/* ---- help --------------------------------------------------------------- */

/* Print the manual of group (NULL = moatctl itself) to f. False if there is
 * no such group. */
bool ctl_help(const char *group, FILE *f);

#endif /* MOAT_CTL_H */
