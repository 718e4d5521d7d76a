/*
 * utf8clip.c — clipping text at a character boundary (see utf8clip.h).
 */
#include "utf8clip.h"

#include <string.h>

size_t utf8_clip_len(const uint8_t *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && (s[n] & 0xC0) == 0x80)
        n--; /* s[n] continues a character that starts before the cut */
    return n;
}

void utf8_clip_copy(char *buf, size_t max, const char *s)
{
    size_t n = s ? utf8_clip_len((const uint8_t *)s, strlen(s), max) : 0;
    if (n)
        memcpy(buf, s, n);
    buf[n] = '\0';
}
