/*
 * args.c — parsing the two things every Linux device program is told on its
 * command line: hub endpoints (HOST:PORT, [V6]:PORT), trusted command keys
 * (64 hex digits, as `moatctl command keygen` prints them) and numbers. One
 * copy, so the example, moat-sim and the tests accept exactly the same forms.
 */
#include <moat/linux.h>

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

bool moat_linux_parse_endpoint(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || colon == s || !colon[1] || colon[1] == '-' || strlen(colon + 1) > 5)
        return false;
    unsigned long p = 0;
    for (const char *d = colon + 1; *d; d++) {
        if (*d < '0' || *d > '9')
            return false;
        p = p * 10 + (unsigned long)(*d - '0');
    }
    if (p < 1 || p > 65535)
        return false;
    size_t len = (size_t)(colon - s);
    if (s[0] == '[' && len >= 2 && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= cap)
        return false;
    memcpy(host, s, len);
    host[len] = '\0';
    *port = (uint16_t)p;
    return true;
}

bool moat_linux_parse_key_hex(const char *s, uint8_t out[32])
{
    size_t n = 0;
    const char *end = NULL;
    return s && strlen(s) == 64 && sodium_hex2bin(out, 32, s, 64, NULL, &n, &end) == 0 && n == 32 &&
           *end == '\0';
}

bool moat_linux_hubs_add(moat_linux_hubs *hubs, const char *s)
{
    size_t i = hubs->count;
    if (i == MOAT_MAX_ENDPOINTS ||
        !moat_linux_parse_endpoint(s, hubs->hosts[i], sizeof(hubs->hosts[i]), &hubs->list[i].port))
        return false;
    hubs->list[i].host = hubs->hosts[i];
    hubs->count++;
    return true;
}

bool moat_linux_parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}
