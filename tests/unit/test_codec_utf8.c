/*
 * Unit tests for codec_utf8_valid (src/codec/utf8.c): the MQTT string rule of
 * RFC 3629 well-formed UTF-8 without U+0000. Covers the boundaries of every
 * sequence length, each overlong form of '/', surrogates, code points above
 * U+10FFFF, forbidden lead bytes, stray continuation bytes, sequences cut off
 * at the end of the view (in heap buffers of exact size, so that a sanitizer
 * build catches any read past the end), views into the middle of larger
 * buffers, and an exhaustive comparison with a simple decode-then-check
 * reference over all 1- and 2-byte inputs, all 3-byte inputs starting with a
 * non-ASCII byte, and every encoded code point.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* A view of n bytes at p: the tests build views by hand, never via strlen. */
static codec_bytes view(const void *p, size_t n)
{
    codec_bytes b = {(const uint8_t *)p, n};
    return b;
}

/* Copy bytes into a heap block of exactly n bytes, so ASan flags any read at
 * or past p[n]. */
static uint8_t *exact_copy(const void *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n)
        memcpy(p, src, n);
    return p;
}

static bool valid_exact(const void *src, size_t n)
{
    uint8_t *p = exact_copy(src, n);
    bool ok = codec_utf8_valid(view(p, n));
    free(p);
    return ok;
}

#define VALID(lit) valid_exact((lit), sizeof(lit) - 1)

/*
 * Reference: decode by bit pattern, then refuse what RFC 3629 and MQTT
 * refuse. Written differently from utf8.c (which compares byte ranges) so
 * that the two cannot share a mistake.
 */
static bool ref_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp = p[i];
        size_t more;
        uint32_t min;
        if (cp < 0x80) {
            more = 0;
            min = 0;
        } else if ((cp & 0xE0) == 0xC0) {
            more = 1;
            cp &= 0x1F;
            min = 0x80;
        } else if ((cp & 0xF0) == 0xE0) {
            more = 2;
            cp &= 0x0F;
            min = 0x800;
        } else if ((cp & 0xF8) == 0xF0) {
            more = 3;
            cp &= 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        if (more > n - i - 1)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3Fu);
        }
        if (cp == 0 || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += more + 1;
    }
    return true;
}

static size_t encode_cp(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static void test_empty_is_valid(void **state)
{
    (void)state;
    assert_true(codec_utf8_valid(view(NULL, 0)));
    assert_true(codec_utf8_valid(CODEC_LIT("")));
}

static void test_ascii(void **state)
{
    (void)state;
    assert_true(VALID("a"));
    assert_true(VALID("sport/tennis/player1"));
    assert_true(VALID("Accounts payable"));
    /* Controls other than NUL are only SHOULD NOT in MQTT. */
    assert_true(VALID("\x01\x1f\x7f"));
    assert_true(VALID("tab\there\r\n"));
}

static void test_nul_refused(void **state)
{
    (void)state;
    assert_false(VALID("\0"));
    assert_false(VALID("ab\0cd"));
    assert_false(VALID("abc\0"));
    assert_false(VALID("\0abc"));
    /* A NUL hidden by a multi-byte neighbour. */
    assert_false(VALID("\xc3\xa9\0"));
}

/* NUL at every position of strings long enough to use the word fast path,
 * at every alignment, so that neither the word test nor the tail loop can
 * miss it. */
static void test_nul_anywhere_in_long_ascii(void **state)
{
    (void)state;
    uint8_t buf[64];

    for (size_t len = 1; len <= 40; len++) {
        for (size_t off = 0; off < 8; off++) {
            memset(buf, 'x', sizeof(buf));
            assert_true(codec_utf8_valid(view(buf + off, len)));
            for (size_t at = 0; at < len; at++) {
                buf[off + at] = 0;
                if (codec_utf8_valid(view(buf + off, len)))
                    fail_msg("NUL at %zu of %zu (offset %zu) accepted", at, len, off);
                buf[off + at] = 'x';
            }
        }
    }
}

/* A non-ASCII byte after a run of ASCII at every position of a long string. */
static void test_high_byte_anywhere_in_long_ascii(void **state)
{
    (void)state;
    uint8_t buf[40];

    for (size_t at = 0; at < sizeof(buf); at++) {
        memset(buf, 'y', sizeof(buf));
        buf[at] = 0x80;
        if (codec_utf8_valid(view(buf, sizeof(buf))))
            fail_msg("stray 0x80 at %zu accepted", at);
        buf[at] = 0xFF;
        if (codec_utf8_valid(view(buf, sizeof(buf))))
            fail_msg("0xFF at %zu accepted", at);
    }
    /* And a valid 2-byte sequence straddling an 8-byte boundary. */
    memset(buf, 'y', sizeof(buf));
    buf[7] = 0xC3;
    buf[8] = 0xA9;
    assert_true(codec_utf8_valid(view(buf, sizeof(buf))));
}

static void test_boundaries_of_each_length(void **state)
{
    (void)state;
    assert_true(VALID("\x7f"));             /* U+007F */
    assert_true(VALID("\xc2\x80"));         /* U+0080 */
    assert_true(VALID("\xdf\xbf"));         /* U+07FF */
    assert_true(VALID("\xe0\xa0\x80"));     /* U+0800 */
    assert_true(VALID("\xed\x9f\xbf"));     /* U+D7FF */
    assert_true(VALID("\xee\x80\x80"));     /* U+E000 */
    assert_true(VALID("\xef\xbf\xbd"));     /* U+FFFD */
    assert_true(VALID("\xf0\x90\x80\x80")); /* U+10000 */
    assert_true(VALID("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
}

static void test_noncharacters_accepted(void **state)
{
    (void)state;
    assert_true(VALID("\xef\xbf\xbf"));     /* U+FFFF */
    assert_true(VALID("\xef\xbf\xbe"));     /* U+FFFE */
    assert_true(VALID("\xef\xb7\x90"));     /* U+FDD0 */
    assert_true(VALID("\xf4\x8f\xbf\xbe")); /* U+10FFFE */
}

static void test_emoji_and_mixed(void **state)
{
    (void)state;
    assert_true(VALID("\xf0\x9f\x98\x80")); /* U+1F600 */
    assert_true(VALID("home/\xf0\x9f\x8f\xa0/temp"));
    assert_true(VALID("caf\xc3\xa9/\xe2\x82\xac/\xe6\x97\xa5\xe6\x9c\xac"));
}

static void test_overlong_forms_refused(void **state)
{
    (void)state;
    /* '/' (U+002F) in every longer form. */
    assert_false(VALID("\xc0\xaf"));
    assert_false(VALID("\xe0\x80\xaf"));
    assert_false(VALID("\xf0\x80\x80\xaf"));
    /* NUL in its 2-byte "modified UTF-8" form. */
    assert_false(VALID("\xc0\x80"));
    /* The largest overlong of each length. */
    assert_false(VALID("\xc1\xbf"));         /* U+007F */
    assert_false(VALID("\xe0\x9f\xbf"));     /* U+07FF */
    assert_false(VALID("\xf0\x8f\xbf\xbf")); /* U+FFFF */
    /* An overlong after valid text. */
    assert_false(VALID("a/b\xc0\xaf"));
}

static void test_surrogates_refused(void **state)
{
    (void)state;
    assert_false(VALID("\xed\xa0\x80")); /* U+D800 */
    assert_false(VALID("\xed\xaf\xbf")); /* U+DBFF */
    assert_false(VALID("\xed\xb0\x80")); /* U+DC00 */
    assert_false(VALID("\xed\xbf\xbf")); /* U+DFFF */
    /* A CESU-8 style pair for U+1F600. */
    assert_false(VALID("\xed\xa0\xbd\xed\xb8\x80"));
}

static void test_above_max_refused(void **state)
{
    (void)state;
    assert_false(VALID("\xf4\x90\x80\x80")); /* U+110000 */
    assert_false(VALID("\xf4\xbf\xbf\xbf"));
    assert_false(VALID("\xf5\x80\x80\x80"));
    assert_false(VALID("\xf7\xbf\xbf\xbf")); /* U+1FFFFF */
}

static void test_forbidden_bytes_refused(void **state)
{
    (void)state;
    static const uint8_t bad[] = {0xC0, 0xC1, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9,
                                  0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF};
    for (size_t i = 0; i < sizeof(bad); i++) {
        uint8_t seq[4] = {bad[i], 0x80, 0x80, 0x80};
        for (size_t n = 1; n <= 4; n++) {
            if (valid_exact(seq, n))
                fail_msg("lead byte 0x%02x with %zu bytes accepted", bad[i], n);
        }
    }
    /* 5- and 6-byte forms of the old RFC 2279. */
    assert_false(VALID("\xf8\x88\x80\x80\x80"));
    assert_false(VALID("\xfc\x84\x80\x80\x80\x80"));
}

static void test_stray_continuation_refused(void **state)
{
    (void)state;
    assert_false(VALID("\x80"));
    assert_false(VALID("\xbf"));
    assert_false(VALID("a\x80"
                       "b"));
    assert_false(VALID("\xc3\xa9\xa9")); /* one continuation too many */
    assert_false(VALID("\xe2\x82\xac\x80"));
    assert_false(VALID("\xf0\x9f\x98\x80\x80"));
}

static void test_bad_continuation_refused(void **state)
{
    (void)state;
    assert_false(VALID("\xc3\x28"));
    assert_false(VALID("\xc3\xc3\xa9"));
    assert_false(VALID("\xe2\x28\xa1"));
    assert_false(VALID("\xe2\x82\x28"));
    assert_false(VALID("\xf0\x28\x8c\xbc"));
    assert_false(VALID("\xf0\x9f\x28\x80"));
    assert_false(VALID("\xf0\x9f\x98\x28"));
    /* The start of a new sequence where a continuation should be. */
    assert_false(VALID("\xe2\x82\xe2\x82\xac"));
}

/* Sequences cut short by the end of the buffer. Each is in a heap block of
 * its exact size, so reading the missing bytes would be an ASan error. */
static void test_truncated_at_end_refused(void **state)
{
    (void)state;
    assert_false(VALID("\xc3"));
    assert_false(VALID("\xe2"));
    assert_false(VALID("\xe2\x82"));
    assert_false(VALID("\xf0"));
    assert_false(VALID("\xf0\x9f"));
    assert_false(VALID("\xf0\x9f\x98"));
    assert_false(VALID("abc\xc3"));
    assert_false(VALID("abcdefghijk\xe2\x82"));
    assert_false(VALID("abcdefghijklmno\xf0\x9f\x98"));
}

/* The view's length, not the bytes after it, decides: a sequence completed
 * just past the end of the view is still truncated. */
static void test_view_length_is_respected(void **state)
{
    (void)state;
    static const uint8_t euro[] = {'x', 0xE2, 0x82, 0xAC, 'y'};
    assert_true(codec_utf8_valid(view(euro, 5)));
    assert_true(codec_utf8_valid(view(euro, 4)));
    assert_false(codec_utf8_valid(view(euro, 3)));
    assert_false(codec_utf8_valid(view(euro, 2)));
    assert_true(codec_utf8_valid(view(euro, 1)));
    /* Starting inside the sequence: a stray continuation byte. */
    assert_false(codec_utf8_valid(view(euro + 2, 3)));
    assert_true(codec_utf8_valid(view(euro + 4, 1)));

    /* A NUL just after the view does not count; one inside it does. */
    static const uint8_t nul_after[] = {'a', 'b', 0, 'c'};
    assert_true(codec_utf8_valid(view(nul_after, 2)));
    assert_false(codec_utf8_valid(view(nul_after, 3)));

    /* A view with no terminator at all inside a larger buffer, long
     * enough for the word fast path. */
    static const uint8_t big[] = "0123456789abcdef\xff";
    assert_true(codec_utf8_valid(view(big, 16)));
    assert_true(codec_utf8_valid(view(big + 3, 13)));
    assert_false(codec_utf8_valid(view(big, 17)));
}

static void test_exhaustive_one_and_two_bytes(void **state)
{
    (void)state;
    for (unsigned a = 0; a < 256; a++) {
        uint8_t one = (uint8_t)a;
        if (codec_utf8_valid(view(&one, 1)) != ref_valid(&one, 1))
            fail_msg("disagree on %02x", a);
        for (unsigned b = 0; b < 256; b++) {
            uint8_t two[2] = {(uint8_t)a, (uint8_t)b};
            if (codec_utf8_valid(view(two, 2)) != ref_valid(two, 2))
                fail_msg("disagree on %02x %02x", a, b);
        }
    }
}

static void test_exhaustive_three_bytes(void **state)
{
    (void)state;
    size_t accepted = 0;
    for (unsigned a = 0x80; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (unsigned c = 0; c < 256; c++) {
                uint8_t s[3] = {(uint8_t)a, (uint8_t)b, (uint8_t)c};
                bool got = codec_utf8_valid(view(s, 3));
                if (got != ref_valid(s, 3))
                    fail_msg("disagree on %02x %02x %02x", a, b, c);
                accepted += got;
            }
        }
    }
    /* 3-byte code points U+0800..U+FFFF minus 2048 surrogates, plus every
     * 2-byte code point followed by any of 127 non-NUL ASCII bytes. */
    assert_int_equal(accepted, (0x10000 - 0x800 - 0x800) + (0x800 - 0x80) * 127);
}

/* Four-byte lead bytes against the reference, with every second byte and a
 * spread of third and fourth bytes around the continuation range edges. */
static void test_four_byte_leads(void **state)
{
    (void)state;
    static const uint8_t edge[] = {0x00, 0x2F, 0x7F, 0x80, 0x8F, 0x90, 0x9F,
                                   0xA0, 0xBF, 0xC0, 0xC2, 0xF0, 0xFF};
    for (unsigned a = 0xF0; a <= 0xFF; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (size_t c = 0; c < sizeof(edge); c++) {
                for (size_t d = 0; d < sizeof(edge); d++) {
                    uint8_t s[4] = {(uint8_t)a, (uint8_t)b, edge[c], edge[d]};
                    if (codec_utf8_valid(view(s, 4)) != ref_valid(s, 4))
                        fail_msg("disagree on %02x %02x %02x %02x", a, b, edge[c], edge[d]);
                }
            }
        }
    }
}

/* Every code point, encoded minimally: all but U+0000 and the surrogates. */
static void test_every_code_point(void **state)
{
    (void)state;
    uint8_t s[4];
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        size_t n = encode_cp(cp, s);
        bool want = cp != 0 && (cp < 0xD800 || cp > 0xDFFF);
        if (codec_utf8_valid(view(s, n)) != want)
            fail_msg("U+%04X: expected %s", (unsigned)cp, want ? "valid" : "invalid");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_is_valid),
        cmocka_unit_test(test_ascii),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_nul_anywhere_in_long_ascii),
        cmocka_unit_test(test_high_byte_anywhere_in_long_ascii),
        cmocka_unit_test(test_boundaries_of_each_length),
        cmocka_unit_test(test_noncharacters_accepted),
        cmocka_unit_test(test_emoji_and_mixed),
        cmocka_unit_test(test_overlong_forms_refused),
        cmocka_unit_test(test_surrogates_refused),
        cmocka_unit_test(test_above_max_refused),
        cmocka_unit_test(test_forbidden_bytes_refused),
        cmocka_unit_test(test_stray_continuation_refused),
        cmocka_unit_test(test_bad_continuation_refused),
        cmocka_unit_test(test_truncated_at_end_refused),
        cmocka_unit_test(test_view_length_is_respected),
        cmocka_unit_test(test_exhaustive_one_and_two_bytes),
        cmocka_unit_test(test_exhaustive_three_bytes),
        cmocka_unit_test(test_four_byte_leads),
        cmocka_unit_test(test_every_code_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
