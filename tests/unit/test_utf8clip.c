/*
 * Unit tests for src/common/utf8clip.c: text from clients is cut to fixed
 * field sizes (audit, refusals, alerts, policy messages) and must stay valid
 * UTF-8. Every cut point of strings mixing 1- to 4-byte characters is tried
 * and the result checked against a decoder-free rule: the kept bytes are a
 * prefix, never longer than the limit, end on a character boundary, and lose
 * less than one whole character.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "utf8clip.h"

static bool starts_character(uint8_t b)
{
    return (b & 0xC0) != 0x80;
}

static void test_short_text_is_kept_whole(void **state)
{
    (void)state;
    char out[16];
    utf8_clip_copy(out, 15, "h\xc3\xa9llo");
    assert_string_equal(out, "h\xc3\xa9llo");
    utf8_clip_copy(out, 6, "h\xc3\xa9llo"); /* exactly the limit */
    assert_string_equal(out, "h\xc3\xa9llo");
    utf8_clip_copy(out, 15, NULL);
    assert_string_equal(out, "");
    utf8_clip_copy(out, 0, "abc");
    assert_string_equal(out, "");
}

static void test_every_cut_point_ends_on_a_boundary(void **state)
{
    (void)state;
    /* a, é (2), € (3), 𝄞 (4), b, then the same backwards */
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e"
                    "b\xf0\x9d\x84\x9e\xe2\x82\xac\xc3\xa9z";
    const uint8_t *u = (const uint8_t *)s;
    size_t len = strlen(s);
    for (size_t max = 0; max <= len + 1; max++) {
        size_t n = utf8_clip_len(u, len, max);
        if (len <= max) {
            assert_int_equal(n, len);
            continue;
        }
        assert_true(n <= max);
        assert_true(starts_character(u[n])); /* the cut is before a character */
        /* Nothing between n and max starts a character: no more was droppable. */
        for (size_t i = n + 1; i <= max; i++)
            assert_false(starts_character(u[i]));
        char out[64];
        utf8_clip_copy(out, max, s);
        assert_int_equal(strlen(out), n);
        assert_memory_equal(out, s, n);
    }
}

static void test_a_lone_continuation_run_clips_to_nothing(void **state)
{
    (void)state;
    /* Not UTF-8 at all: the rule still terminates and stays in bounds. */
    const uint8_t junk[] = {0x80, 0x80, 0x80, 0x80, 0x80};
    assert_int_equal(utf8_clip_len(junk, sizeof junk, 3), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_text_is_kept_whole),
        cmocka_unit_test(test_every_cut_point_ends_on_a_boundary),
        cmocka_unit_test(test_a_lone_continuation_run_clips_to_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
