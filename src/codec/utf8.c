/*
 * utf8.c — the UTF-8 check every MQTT string goes through.
 *
 * MQTT (3.1.1 section 1.5.3, 5.0 section 1.5.4) requires strings to be
 * well-formed UTF-8 as RFC 3629 defines it and forbids U+0000; a receiver
 * that finds anything else must close the connection. Two strings that render
 * alike but differ in bytes (an overlong '/', say) would otherwise slip past
 * topic and ACL checks, so the check is strict: it follows the table of
 * well-formed byte sequences in the Unicode Standard (Table 3-7) rather than
 * decoding and re-checking, which makes every rule a byte-range comparison.
 *
 * Code points MQTT only says SHOULD NOT appear (controls, non-characters such
 * as U+FFFF) are accepted: refusing them would close connections the spec
 * wants kept open.
 */
#include <stdint.h>
#include <string.h>

#include "codec.h"

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* True when none of the 8 bytes in w is 0x00 or >= 0x80: the classic
 * "has a zero byte" test, which is exact about whether any byte is zero. */
static bool word_is_plain_ascii(uint64_t w)
{
    return ((w & HIGHS) | ((w - ONES) & ~w & HIGHS)) == 0;
}

bool codec_utf8_valid(codec_bytes s)
{
    const uint8_t *p = s.ptr;
    size_t n = s.len;
    size_t i = 0;

    while (i < n) {
        /* Topics and client ids are mostly ASCII: skip it a word at a time.
         * memcpy keeps the load legal at any alignment. */
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, sizeof(w));
            if (word_is_plain_ascii(w)) {
                i += 8;
                continue;
            }
        }

        uint8_t c = p[i];
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }

        /* The lead byte fixes the sequence length and, for four lead bytes,
         * a narrower range for the second byte: that range is what excludes
         * overlongs (E0, F0), surrogates (ED) and values above U+10FFFF
         * (F4). 80..C1 and F5..FF never start a well-formed sequence. */
        size_t more;
        uint8_t lo = 0x80;
        uint8_t hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c == 0xE0) {
            more = 2;
            lo = 0xA0;
        } else if (c == 0xED) {
            more = 2;
            hi = 0x9F;
        } else if (c >= 0xE1 && c <= 0xEF) {
            more = 2;
        } else if (c == 0xF0) {
            more = 3;
            lo = 0x90;
        } else if (c == 0xF4) {
            more = 3;
            hi = 0x8F;
        } else if (c >= 0xF1 && c <= 0xF3) {
            more = 3;
        } else {
            return false;
        }

        if (more > n - i - 1)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= more; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += more + 1;
    }
    return true;
}
