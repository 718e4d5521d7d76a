/*
 * utf8clip.h — shortening text to a byte limit without cutting a UTF-8
 * character in two. Log lines, audit fields, alert subjects and quoted
 * tokens have fixed sizes, and what they hold comes from clients: a cut in
 * the middle of a character would leave invalid UTF-8 in JSON and in logs.
 */
#ifndef MOAT_COMMON_UTF8CLIP_H
#define MOAT_COMMON_UTF8CLIP_H

#include <stddef.h>
#include <stdint.h>

/* How many of s's len bytes to keep: len when len <= max, else at most max,
 * moved back so that the byte after the cut does not continue a character. */
size_t utf8_clip_len(const uint8_t *s, size_t len, size_t max);

/* Copy the NUL-terminated s (NULL: "") into buf, which holds max + 1 bytes,
 * clipped as above; buf is always terminated. */
void utf8_clip_copy(char *buf, size_t max, const char *s);

#endif
