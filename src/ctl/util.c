/*
 * util.c — moatctl's plumbing: the long-option parser, checked number
 * parsing, finding the data directory and the registry in it, reading input
 * files, and JSON/time/hex output.
 *
 * The option parser is small and strict on purpose: only --name and
 * --name=value forms, unknown options are usage errors (a mistyped --grup
 * must not silently enroll a device into no group), and values are kept as
 * pointers into argv.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

void ctl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("moatctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int ctl_usage(const char *group, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("moatctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see moatctl%s%s --help)\n", group ? " " : "", group ? group : "");
    return CTL_EXIT_USAGE;
}

ctl_opt *ctl_opt_get(ctl_opt *opts, size_t nopts, const char *name)
{
    for (size_t i = 0; i < nopts; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

int ctl_parse(const char *group, int argc, char **argv, ctl_opt *opts, size_t nopts, ctl_args *out)
{
    memset(out, 0, sizeof *out);
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (out->npos >= CTL_MAX_POS)
                return ctl_usage(group, "too many arguments");
            out->pos[out->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            out->help = true;
            continue;
        }
        if (a[1] != '-')
            return ctl_usage(group, "unknown option '%s'", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        bool is_dir = nlen == 3 && memcmp(name, "dir", 3) == 0;
        ctl_opt *o = NULL;
        for (size_t k = 0; k < nopts && !o; k++)
            if (strlen(opts[k].name) == nlen && memcmp(opts[k].name, name, nlen) == 0)
                o = &opts[k];
        if (!o && !is_dir)
            return ctl_usage(group, "unknown option '--%.*s'", (int)nlen, name);
        bool has_arg = is_dir || o->has_arg;
        if (has_arg && !value) {
            if (i + 1 >= argc)
                return ctl_usage(group, "option '--%.*s' needs a value", (int)nlen, name);
            value = argv[++i];
        } else if (!has_arg && value) {
            return ctl_usage(group, "option '--%.*s' takes no value", (int)nlen, name);
        }
        if (is_dir) {
            out->dir = value;
            continue;
        }
        if (o->count > 0 && !o->multi)
            return ctl_usage(group, "option '--%s' given twice", o->name);
        if (o->count >= CTL_MAX_VALUES)
            return ctl_usage(group, "option '--%s' given too often", o->name);
        o->values[o->count++] = value;
    }
    return CTL_EXIT_OK;
}

bool ctl_parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    if (!text || !*text)
        return false;
    unsigned long v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (d > max || v > (max - d) / 10) /* v*10 + d would pass max */
            return false;
        v = v * 10 + d;
    }
    if (v < min)
        return false;
    *out = v;
    return true;
}

const char *ctl_data_dir(const ctl_ctx *ctx, const ctl_args *args, const char *group)
{
    const char *dir = args && args->dir ? args->dir : ctx->dir;
    if (!dir || !*dir) {
        ctl_usage(group, "no data directory: give --dir DIR or set MOAT_DIR");
        return NULL;
    }
    return dir;
}

bool ctl_path(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len) {
        ctl_err("%s/%s: path too long", dir, name);
        return false;
    }
    return true;
}

int ctl_open_registry(const char *dir, registry **out)
{
    char path[4096];
    if (!ctl_path(path, sizeof path, dir, "registry.db"))
        return CTL_EXIT_FAIL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            ctl_err("%s is not a moat data directory (no registry.db); run moatctl init %s", dir,
                    dir);
        else
            ctl_err("%s: %s", path, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    char err[320];
    registry_status st = registry_open(path, 0, out, err, sizeof err);
    if (st != REGISTRY_OK) {
        ctl_err("%s: %s", path, err);
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

int ctl_reg_fail(registry *reg, registry_status st)
{
    if (st == REGISTRY_BUSY)
        ctl_err("%s (the registry stayed locked; retry)", registry_errmsg(reg));
    else
        ctl_err("%s", registry_errmsg(reg));
    return CTL_EXIT_FAIL;
}

int ctl_read_input(const char *path, size_t max, char **out, size_t *len)
{
    bool in = strcmp(path, "-") == 0;
    int fd = in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ctl_err("%s: %s", path, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    int rc = CTL_EXIT_OK;
    size_t have = 0;
    char *buf = malloc(max + 1);
    if (!buf) {
        ctl_err("out of memory");
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + have, max + 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ctl_err("%s: %s", in ? "standard input" : path, strerror(errno));
            rc = CTL_EXIT_FAIL;
            goto out;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have > max) {
            ctl_err("%s: larger than %zu bytes", in ? "standard input" : path, max);
            rc = CTL_EXIT_FAIL;
            goto out;
        }
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    buf = NULL;
out:
    free(buf);
    if (!in && close(fd) != 0 && rc == CTL_EXIT_OK) {
        ctl_err("%s: %s", path, strerror(errno));
        free(*out);
        *out = NULL;
        rc = CTL_EXIT_FAIL;
    }
    return rc;
}

void ctl_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void ctl_format_time(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, 32, "@%lld", (long long)t);
}

void ctl_hex(const uint8_t *data, size_t n, char *buf)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        buf[2 * i] = digits[data[i] >> 4];
        buf[2 * i + 1] = digits[data[i] & 15];
    }
    buf[2 * n] = '\0';
}
