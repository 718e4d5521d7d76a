/*
 * log.c — stderr logging, text or JSON lines (see log.h).
 *
 * Each line is formatted into one buffer and written with a single write(2),
 * so lines from several threads do not interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static bool log_json;
static log_level log_min = LOG_INFO;

void log_set_json(bool json)
{
    log_json = json;
}

void log_set_level(log_level min)
{
    log_min = min;
}

static const char *level_name(log_level l)
{
    switch (l) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warning";
    default:
        return "error";
    }
}

/* Append s to out as a JSON string body (escaped, without quotes). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

void log_msg(log_level level, const char *principal, const char *fmt, ...)
{
    if (level < log_min)
        return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[2048];
    int n;
    if (log_json) {
        char msg_esc[1400], who_esc[200];
        json_escape(msg_esc, sizeof(msg_esc), text);
        json_escape(who_esc, sizeof(who_esc), principal ? principal : "");
        n = snprintf(line, sizeof(line),
                     "{\"time\":\"%s\",\"level\":\"%s\",\"principal\":\"%s\",\"msg\":\"%s\"}\n",
                     when, level_name(level), who_esc, msg_esc);
    } else {
        n = snprintf(line, sizeof(line), "%s moatd %s: %s%s%s\n", when, level_name(level),
                     principal ? principal : "", principal ? ": " : "", text);
    }
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (len > 0 && line[len - 1] != '\n')
        line[len - 1] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
