/*
 * when.c — times given on moatctl's command line (--since, --until), for
 * every command that takes one (telemetry, audit, alerts): RFC 3339
 * ("2025-01-31T12:00:00Z", "2025-01-31T13:00:00.250+01:00", or a date
 * alone, midnight UTC), unix seconds ("1738324800", "1738324800.25"),
 * "now", or now minus an amount ("-30s", "-15m", "-2h", "-7d", "-1w").
 *
 * One parser, to the millisecond (the telemetry store's unit); commands
 * that keep whole seconds take the floor. Parsed by hand with bounds on
 * every number: strptime/timegm are not POSIX.1-2008, and a mistyped time
 * must be a usage error, never a different time. Digits past the third
 * after a decimal point are accepted and dropped.
 */
#include <string.h>

#include "ctl.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (civil calendar
 * arithmetic: shift the year to start in March, count 400-year eras). */
static int64_t civil_days(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* Exactly n decimal digits at *p; advances *p. */
static bool take(const char **p, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* After a '.': one or more digits as milliseconds (the first three count). */
static bool take_fraction(const char **p, int64_t *ms)
{
    int n = 0;
    int64_t v = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++, n++)
        if (n < 3)
            v = v * 10 + (**p - '0');
    if (n == 0)
        return false;
    for (; n < 3; n++)
        v *= 10;
    *ms = v;
    return true;
}

/* YYYY-MM-DD[(T| )HH:MM[:SS[.fff]](Z|+HH:MM|-HH:MM)]: a time needs its
 * offset (RFC 3339 has no local time). */
static bool rfc3339(const char *s, int64_t *ms)
{
    int64_t y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, off = 0;
    const char *p = s;
    if (!take(&p, 4, &y) || *p++ != '-' || !take(&p, 2, &mo) || *p++ != '-' || !take(&p, 2, &d))
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
        return false;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ')
            return false;
        p++;
        if (!take(&p, 2, &h) || *p++ != ':' || !take(&p, 2, &mi))
            return false;
        if (*p == ':' && (p++, !take(&p, 2, &sec)))
            return false;
        if (*p == '.' && (p++, !take_fraction(&p, &frac)))
            return false;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int64_t oh, om;
            int sign = *p++ == '-' ? -1 : 1;
            if (!take(&p, 2, &oh) || *p++ != ':' || !take(&p, 2, &om) || oh > 23 || om > 59)
                return false;
            off = sign * (oh * 60 + om) * 60;
        } else {
            return false;
        }
        if (*p || h > 23 || mi > 59 || sec > 60)
            return false;
    }
    *ms = (civil_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off) * 1000 + frac;
    return true;
}

/* -N followed by one unit letter. */
static bool relative(const char *s, int64_t now_ms, int64_t *ms)
{
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', 86400000}, {'w', 604800000}};
    size_t n = strlen(s);
    char num[16];
    unsigned long v;
    if (n < 3 || n - 2 >= sizeof num)
        return false;
    memcpy(num, s + 1, n - 2);
    num[n - 2] = '\0';
    if (!ctl_parse_uint(num, 0, 100000000ul, &v))
        return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (s[n - 1] == units[i].unit) {
            *ms = now_ms - (int64_t)v * units[i].ms;
            return true;
        }
    }
    return false;
}

/* Digits, optionally with a fraction: 1738324800 or 1738324800.250. */
static bool unix_seconds(const char *s, int64_t *ms)
{
    const char *dot = strchr(s, '.');
    size_t wl = dot ? (size_t)(dot - s) : strlen(s);
    char whole[24];
    unsigned long v;
    int64_t frac = 0;
    if (wl == 0 || wl >= sizeof whole)
        return false;
    memcpy(whole, s, wl);
    whole[wl] = '\0';
    if (!ctl_parse_uint(whole, 0, 253402300799ul, &v)) /* up to the year 9999 */
        return false;
    if (dot) {
        const char *p = dot + 1;
        if (!take_fraction(&p, &frac) || *p)
            return false;
    }
    *ms = (int64_t)v * 1000 + frac;
    return true;
}

bool ctl_parse_when_ms(const char *s, int64_t now_ms, int64_t *out_ms)
{
    if (!s || !*s)
        return false;
    if (strcmp(s, "now") == 0) {
        *out_ms = now_ms;
        return true;
    }
    if (s[0] == '-')
        return relative(s, now_ms, out_ms);
    if (!strchr(s, '-') && !strchr(s, ':'))
        return unix_seconds(s, out_ms);
    return rfc3339(s, out_ms);
}

bool ctl_parse_when(const char *s, int64_t now, int64_t *out)
{
    int64_t ms;
    if (!ctl_parse_when_ms(s, now * 1000, &ms))
        return false;
    /* The floor: the second that holds the time, also before 1970. */
    *out = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    return true;
}
