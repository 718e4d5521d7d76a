/*
 * key.c — `moatctl key rotate` and `moatctl key reencrypt`: the two halves
 * of key rotation for data at rest (docs/telemetry.md).
 *
 * rotate replaces DATA_DIR/master.key. The data keys are re-wrapped under
 * the new key in one transaction; the new key file is written before that
 * transaction and takes the old one's place only after it commits, so a
 * crash at any point leaves a key file that opens the store (the store
 * finishes an interrupted rotation when it is next opened). It is quick: no
 * reading is touched.
 *
 * reencrypt makes a new data key and rewrites every reading under it in
 * short transactions beside a running hub, then deletes the old key. Every
 * reading stays readable meanwhile; stopped (Ctrl-C, crash), it continues
 * where it was when run again.
 */
#include <sodium.h>
#include <string.h>

#include "ctl.h"
#include "tstore_sqlite.h"

static int rotate(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_args args;
    int rc = ctl_parse("key", argc, argv, NULL, 0, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("key", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 0)
        return ctl_usage("key", "usage: moatctl key rotate");
    const char *dir = ctl_data_dir(ctx, &args, "key");
    if (!dir)
        return CTL_EXIT_USAGE;
    tstore *ts = NULL;
    /* Created if missing, so that the new master key covers it from the
     * start and every later rotation has the same shape. */
    if ((rc = ctl_telemetry_open(dir, true, &ts)) != CTL_EXIT_OK)
        return rc;
    uint64_t n = 0;
    if (tstore_rotate_master(ts, &n) != TSTORE_OK) {
        ctl_err("key rotate: %s", tstore_error(ts));
        rc = CTL_EXIT_FAIL;
        (void)ctl_telemetry_audit(dir, "key.rotate", TSTORE_MASTER_FILE, tstore_error(ts), NULL);
    } else if ((rc = ctl_telemetry_audit(dir, "key.rotate", TSTORE_MASTER_FILE, NULL, NULL)) ==
               CTL_EXIT_OK) {
        printf("master key rotated: %s/%s replaced; %llu data key%s re-wrapped\n", dir,
               TSTORE_MASTER_FILE, (unsigned long long)n, n == 1 ? "" : "s");
        printf("keep the old master key with backups made before now: they need it\n");
    }
    tstore_close(ts);
    return rc;
}

static int reencrypt(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "batch", .has_arg = true}, {.name = "quiet"}};
    ctl_args args;
    int rc = ctl_parse("key", argc, argv, opts, 2, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("key", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 0)
        return ctl_usage("key", "usage: moatctl key reencrypt [--batch N]");
    unsigned long batch = 2000;
    if (opts[0].count && !ctl_parse_uint(opts[0].values[0], 1, TSTORE_SLICE_MAX, &batch))
        return ctl_usage("key", "--batch: 1 to %u rows per transaction", TSTORE_SLICE_MAX);
    bool quiet = opts[1].count > 0;
    const char *dir = ctl_data_dir(ctx, &args, "key");
    if (!dir)
        return CTL_EXIT_USAGE;
    tstore *ts = NULL;
    if ((rc = ctl_telemetry_open(dir, false, &ts)) != CTL_EXIT_OK)
        return rc;
    bool started = false;
    tstore_stats s;
    memset(&s, 0, sizeof s);
    tstore_status st = tstore_reencrypt_start(ts, &started);
    if (st == TSTORE_OK)
        st = tstore_get_stats(ts, NULL, &s);
    if (st == TSTORE_OK)
        printf("%s re-encryption under data key %lld\n", started ? "started" : "continuing",
               (long long)s.current_key);
    uint64_t rewritten = 0, deleted = 0;
    tstore_reencrypt_progress p;
    memset(&p, 0, sizeof p);
    while (st == TSTORE_OK && !p.done) {
        st = tstore_reencrypt_step(ts, batch, &p);
        rewritten += p.rewritten;
        deleted += p.keys_deleted;
        if (st == TSTORE_OK && !quiet && !p.done)
            fprintf(stderr, "moatctl: %llu readings re-encrypted, at most %llu to go\n",
                    (unsigned long long)rewritten, (unsigned long long)p.remaining);
    }
    char count[32], key[32];
    snprintf(count, sizeof count, "%llu", (unsigned long long)rewritten);
    snprintf(key, sizeof key, "%lld", (long long)s.current_key);
    if (st != TSTORE_OK) {
        ctl_err("key reencrypt: %s (run it again to continue)", tstore_error(ts));
        rc = CTL_EXIT_FAIL;
        (void)ctl_telemetry_audit(dir, "key.reencrypt", TSTORE_SQLITE_FILE, tstore_error(ts),
                                  ctl_audit_kv("rewritten", count, NULL, NULL));
    } else if ((rc = ctl_telemetry_audit(dir, "key.reencrypt", TSTORE_SQLITE_FILE, NULL,
                                         ctl_audit_kv("rewritten", count, "data_key", key))) ==
               CTL_EXIT_OK) {
        printf("re-encrypted %llu readings; %llu old data key%s deleted%s\n",
               (unsigned long long)rewritten, (unsigned long long)deleted, deleted == 1 ? "" : "s",
               p.wiped || deleted == 0 ? ""
                                       : " (old pages are overwritten at the next checkpoint)");
    }
    tstore_close(ts);
    return rc;
}

int ctl_cmd_key(const ctl_ctx *ctx, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("key", "missing key command");
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ctl_help("key", stdout);
        return CTL_EXIT_OK;
    }
    if (sodium_init() < 0) {
        ctl_err("libsodium cannot be initialised");
        return CTL_EXIT_FAIL;
    }
    if (strcmp(sub, "rotate") == 0)
        return rotate(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "reencrypt") == 0)
        return reencrypt(ctx, argc - 1, argv + 1);
    return ctl_usage("key", "unknown key command '%s'", sub);
}
