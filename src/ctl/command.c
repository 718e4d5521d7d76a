/*
 * command.c — `moatctl command keygen` and `moatctl command sign`: the
 * operator's side of signed commands (include/moat/command.h).
 *
 * A device obeys a command only if it is signed by a key it trusts, names
 * the device, carries a counter above the last one the device accepted and
 * has not expired. keygen makes such a key (the secret stays in a 0600 file,
 * the public half is printed for the device's trusted list); sign writes the
 * envelope, to be published on moat/DEVICE/down/NAME by any MQTT client. The
 * default counter is the time in milliseconds, so successive commands from
 * one or several operators keep rising without shared state.
 *
 * The key file is text: a first line naming the format and a second with the
 * 32-byte Ed25519 seed in hex. moatctl refuses one that group or others may
 * read, like the hub's other keys.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include <moat/sign.h>

#include "ctl.h"

#define KEY_HEADER      "moat-command-key-v1\n"
#define KEY_FILE_LEN    (sizeof KEY_HEADER - 1 + 64 + 1)
#define BODY_MAX        (1024u * 1024u)
#define EXPIRES_DEFAULT 300u
#define EXPIRES_MAX     (366u * 24u * 3600u)

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- keygen -------------------------------------------------------------- */

static int command_keygen(int argc, char **argv)
{
    ctl_args args;
    int rc = ctl_parse("command", argc, argv, NULL, 0, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("command", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 1)
        return ctl_usage("command", "usage: moatctl command keygen FILE");
    const char *path = args.pos[0];

    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    char text[KEY_FILE_LEN + 1];
    char pk_hex[2 * sizeof pk + 1];
    rc = CTL_EXIT_FAIL;
    if (moat_sign_keygen(pk, sk) != MOAT_OK) {
        ctl_err("libsodium could not start");
        goto out;
    }
    /* The seed is the first half of libsodium's secret key. */
    memcpy(text, KEY_HEADER, sizeof KEY_HEADER - 1);
    ctl_hex(sk, crypto_sign_SEEDBYTES, text + sizeof KEY_HEADER - 1);
    text[KEY_FILE_LEN - 1] = '\n';
    pki_error err;
    if (pki_file_write_atomic(path, text, KEY_FILE_LEN, 0600, PKI_WRITE_NOCLOBBER, &err) !=
        PKI_OK) {
        ctl_err("%s", err.msg);
        goto out;
    }
    ctl_hex(pk, sizeof pk, pk_hex);
    printf("%s\n", pk_hex);
    fprintf(stderr,
            "moatctl: wrote %s (keep it secret); add the public key above to the trusted "
            "command keys of each device that should obey it\n",
            path);
    rc = CTL_EXIT_OK;
out:
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(text, sizeof text);
    return rc;
}

/* Read a key file made by keygen into libsodium's 64-byte secret key. */
static int key_load(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES])
{
    char text[KEY_FILE_LEN + 1];
    uint8_t seed[crypto_sign_SEEDBYTES];
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    size_t have = 0;
    int rc = CTL_EXIT_FAIL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        ctl_err("%s: %s", path, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        ctl_err("%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
        ctl_err("%s: a signing key must be a regular file only its owner may read (chmod 600)",
                path);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, text + have, sizeof text - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ctl_err("%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have == sizeof text)
            break; /* longer than a key file: refused below */
    }
    if (have != KEY_FILE_LEN || memcmp(text, KEY_HEADER, sizeof KEY_HEADER - 1) != 0 ||
        text[KEY_FILE_LEN - 1] != '\n') {
        ctl_err("%s: not a moat command key (made by moatctl command keygen)", path);
        goto out;
    }
    const char *hex = text + sizeof KEY_HEADER - 1;
    for (size_t i = 0; i < sizeof seed; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            ctl_err("%s: not a moat command key (made by moatctl command keygen)", path);
            goto out;
        }
        seed[i] = (uint8_t)(hi << 4 | lo);
    }
    if (sodium_init() < 0 || crypto_sign_seed_keypair(pk, sk, seed) != 0) {
        ctl_err("libsodium could not start");
        goto out;
    }
    rc = CTL_EXIT_OK;
out:
    sodium_memzero(text, sizeof text);
    sodium_memzero(seed, sizeof seed);
    close(fd);
    return rc;
}

/* ---- sign ---------------------------------------------------------------- */

/* ctl_parse knows long options only; -o is the one short option here. */
static void short_options(int argc, char **argv, char **out)
{
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        out[i] = argv[i];
        if (strcmp(argv[i], "--") == 0)
            only_pos = true;
        else if (!only_pos && strcmp(argv[i], "-o") == 0)
            out[i] = (char *)"--out";
    }
}

static int write_out(const char *path, const uint8_t *env, size_t len)
{
    if (path) {
        pki_error err;
        if (pki_file_write_atomic(path, env, len, 0644, PKI_WRITE_REPLACE, &err) != PKI_OK) {
            ctl_err("%s", err.msg);
            return CTL_EXIT_FAIL;
        }
        return CTL_EXIT_OK;
    }
    if (fwrite(env, 1, len, stdout) != len) {
        ctl_err("writing to standard output failed");
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

static int command_sign(int argc, char **argv)
{
    char *av[256];
    if (argc > (int)(sizeof av / sizeof av[0]))
        return ctl_usage("command", "too many arguments");
    short_options(argc, argv, av);
    ctl_opt opts[] = {{.name = "key", .has_arg = true},       {.name = "body", .has_arg = true},
                      {.name = "body-file", .has_arg = true}, {.name = "expires", .has_arg = true},
                      {.name = "counter", .has_arg = true},   {.name = "out", .has_arg = true}};
    ctl_args args;
    int rc = ctl_parse("command", argc, av, opts, sizeof opts / sizeof opts[0], &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help("command", stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 2)
        return ctl_usage("command", "usage: moatctl command sign --key FILE DEVICE NAME");
    const char *device = args.pos[0], *name = args.pos[1];
    const char *out = opts[5].count ? opts[5].values[0] : NULL;
    if (opts[0].count == 0)
        return ctl_usage("command", "command sign needs --key FILE");
    if (!moat_command_name_valid((const uint8_t *)device, strlen(device), MOAT_COMMAND_MAX_ID))
        return ctl_usage("command", "invalid device id '%s'", device);
    if (!moat_command_name_valid((const uint8_t *)name, strlen(name), MOAT_COMMAND_MAX_NAME))
        return ctl_usage("command",
                         "invalid command name '%s' (1..%u printable characters, no space, "
                         "'/', '+' or '#')",
                         name, MOAT_COMMAND_MAX_NAME);
    if (opts[1].count && opts[2].count)
        return ctl_usage("command", "give --body or --body-file, not both");
    unsigned long expires = EXPIRES_DEFAULT;
    if (opts[3].count && !ctl_parse_uint(opts[3].values[0], 1, EXPIRES_MAX, &expires))
        return ctl_usage("command", "--expires needs a number of seconds from 1 to %u",
                         EXPIRES_MAX);
    unsigned long counter = 0;
    if (opts[4].count && !ctl_parse_uint(opts[4].values[0], 1, ULONG_MAX, &counter))
        return ctl_usage("command", "--counter needs a positive number");
    if (!out && isatty(STDOUT_FILENO))
        return ctl_usage("command", "the envelope is binary: give -o FILE or redirect output");

    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec <= 0) {
        ctl_err("the system clock is not usable");
        return CTL_EXIT_FAIL;
    }
    if (!opts[4].count)
        counter = (unsigned long)ts.tv_sec * 1000ul + (unsigned long)(ts.tv_nsec / 1000000);
    uint64_t expiry = (uint64_t)ts.tv_sec + expires;

    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    char *body_file = NULL;
    uint8_t *env = NULL;
    const uint8_t *body = (const uint8_t *)(opts[1].count ? opts[1].values[0] : "");
    size_t body_len = strlen((const char *)body);
    if ((rc = key_load(opts[0].values[0], sk)) != CTL_EXIT_OK)
        goto out;
    rc = CTL_EXIT_FAIL;
    if (opts[2].count) {
        if (ctl_read_input(opts[2].values[0], BODY_MAX, &body_file, &body_len) != CTL_EXIT_OK)
            goto out;
        body = (const uint8_t *)body_file;
    } else if (body_len > BODY_MAX) {
        ctl_err("--body is longer than %u bytes", BODY_MAX);
        goto out;
    }
    size_t need = MOAT_COMMAND_ENVELOPE_SIZE(strlen(device), strlen(name), body_len);
    size_t len = 0;
    env = malloc(need);
    if (!env) {
        ctl_err("out of memory");
        goto out;
    }
    moat_status st = moat_command_sign(sk, device, name, (uint64_t)counter, expiry, body, body_len,
                                       env, need, &len);
    if (st != MOAT_OK) {
        ctl_err("signing failed: %s", moat_status_str(st));
        goto out;
    }
    if ((rc = write_out(out, env, len)) != CTL_EXIT_OK)
        goto out;
    char when[32];
    ctl_format_time((int64_t)expiry, when);
    fprintf(stderr,
            "moatctl: signed '%s' for %s, counter %lu, expires %s; publish it on "
            "moat/%s/down/%s\n",
            name, device, counter, when, device, name);
out:
    sodium_memzero(sk, sizeof sk);
    free(body_file);
    free(env);
    return rc;
}

int ctl_cmd_command(const ctl_ctx *ctx, int argc, char **argv)
{
    (void)ctx;
    if (argc < 1)
        return ctl_usage("command", "missing command subcommand (keygen or sign)");
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ctl_help("command", stdout);
        return CTL_EXIT_OK;
    }
    if (strcmp(sub, "keygen") == 0)
        return command_keygen(argc - 1, argv + 1);
    if (strcmp(sub, "sign") == 0)
        return command_sign(argc - 1, argv + 1);
    return ctl_usage("command", "unknown command subcommand '%s'", sub);
}
