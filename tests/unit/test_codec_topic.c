/*
 * Unit tests for src/codec/topic.c: topic name and filter syntax, shared
 * subscription filters ($share/NAME/filter) and their split, filter matching,
 * and level counting. Every example of MQTT 5 section 4.7 (wildcards, "$"
 * topics, "/finance", case and spaces) is here, plus each rejection rule, the
 * 65535/65536 length boundary on heap buffers, invalid UTF-8 inside names and
 * filters, and views that point into larger buffers with no terminator, so
 * that any use of strlen or any read past the view would change a result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Initializer for a codec_bytes member from a string literal. */
#define B(lit)                                                                                     \
    {                                                                                              \
        (const uint8_t *)(lit), sizeof(lit) - 1                                                    \
    }

static codec_bytes view(const void *p, size_t n)
{
    codec_bytes b = {(const uint8_t *)p, n};
    return b;
}

struct syntax_case {
    codec_bytes s;
    codec_status want;
};

struct match_case {
    codec_bytes filter;
    codec_bytes topic;
    bool want;
};

static void check_names(const struct syntax_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        codec_status got = codec_topic_name_check(c[i].s);
        if (got != c[i].want)
            fail_msg("name \"%.*s\" (%zu bytes): got %d, want %d", (int)c[i].s.len,
                     (const char *)c[i].s.ptr, c[i].s.len, (int)got, (int)c[i].want);
    }
}

static void check_filters(const struct syntax_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        codec_status got = codec_topic_filter_check(c[i].s);
        if (got != c[i].want)
            fail_msg("filter \"%.*s\" (%zu bytes): got %d, want %d", (int)c[i].s.len,
                     (const char *)c[i].s.ptr, c[i].s.len, (int)got, (int)c[i].want);
    }
}

static void check_matches(const struct match_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool got = codec_topic_matches(c[i].filter, c[i].topic);
        if (got != c[i].want)
            fail_msg("filter \"%.*s\" vs topic \"%.*s\": got %d, want %d", (int)c[i].filter.len,
                     (const char *)c[i].filter.ptr, (int)c[i].topic.len,
                     (const char *)c[i].topic.ptr, got, c[i].want);
    }
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A heap buffer of n bytes filled with 'a', with '/' every 10 bytes so that
 * it has many levels. Exact size, so ASan catches a read past it. */
static uint8_t *long_topic(size_t n)
{
    uint8_t *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (i % 10 == 9) ? '/' : 'a';
    return p;
}

/* ---- topic names -------------------------------------------------------- */

static void test_name_valid(void **state)
{
    (void)state;
    const struct syntax_case cases[] = {
        {B("sport/tennis/player1"), CODEC_OK},
        {B("sport/tennis/player1/ranking"), CODEC_OK},
        {B("sport/tennis/player1/score/wimbledon"), CODEC_OK},
        {B("sport"), CODEC_OK},
        {B("sport/"), CODEC_OK},
        {B("/finance"), CODEC_OK},
        {B("finance"), CODEC_OK},
        {B("/"), CODEC_OK},
        {B("//"), CODEC_OK},
        {B("a//b"), CODEC_OK},
        {B("ACCOUNTS"), CODEC_OK},
        {B("Accounts payable"), CODEC_OK},
        {B("$SYS/monitor/Clients"), CODEC_OK},
        {B("$share/g/t"), CODEC_OK}, /* no special meaning in a name */
        {B("caf\xc3\xa9/\xf0\x9f\x98\x80"), CODEC_OK},
        {B("\xef\xbf\xbf"), CODEC_OK}, /* U+FFFF is only SHOULD NOT */
        {B(" "), CODEC_OK},
    };
    check_names(cases, COUNT(cases));
}

static void test_name_refused(void **state)
{
    (void)state;
    const struct syntax_case cases[] = {
        {B(""), CODEC_ERR_TOPIC_NAME},
        {B("+"), CODEC_ERR_TOPIC_NAME},
        {B("#"), CODEC_ERR_TOPIC_NAME},
        {B("sport/+"), CODEC_ERR_TOPIC_NAME},
        {B("sport/#"), CODEC_ERR_TOPIC_NAME},
        {B("sport/+/player1"), CODEC_ERR_TOPIC_NAME},
        {B("sport+"), CODEC_ERR_TOPIC_NAME},
        {B("a#b"), CODEC_ERR_TOPIC_NAME},
        {B("+/tennis"), CODEC_ERR_TOPIC_NAME},
        {B("a/b\0c"), CODEC_ERR_TOPIC_NAME},
        {B("\0"), CODEC_ERR_TOPIC_NAME},
        {B("a/\xc0\xaf"), CODEC_ERR_TOPIC_NAME},     /* overlong '/' */
        {B("a/\xed\xa0\x80"), CODEC_ERR_TOPIC_NAME}, /* surrogate */
        {B("a/\xe2\x82"), CODEC_ERR_TOPIC_NAME},     /* truncated */
        {B("\xff"), CODEC_ERR_TOPIC_NAME},
    };
    check_names(cases, COUNT(cases));
    assert_int_equal(codec_topic_name_check(view(NULL, 0)), CODEC_ERR_TOPIC_NAME);
}

static void test_name_length_limit(void **state)
{
    (void)state;
    uint8_t *p = long_topic(65536);

    assert_int_equal(codec_topic_name_check(view(p, 65535)), CODEC_OK);
    assert_int_equal(codec_topic_name_check(view(p, 65536)), CODEC_ERR_TOPIC_NAME);
    assert_int_equal(codec_topic_name_check(view(p, 1)), CODEC_OK);
    /* A wildcard or bad byte at the very end of a maximal name is seen. */
    p[65534] = '#';
    assert_int_equal(codec_topic_name_check(view(p, 65535)), CODEC_ERR_TOPIC_NAME);
    p[65534] = 0xC3;
    assert_int_equal(codec_topic_name_check(view(p, 65535)), CODEC_ERR_TOPIC_NAME);
    p[65534] = 'z';
    assert_int_equal(codec_topic_name_check(view(p, 65535)), CODEC_OK);
    free(p);

    /* Exactly 65535 bytes in a block of that size, for ASan. */
    p = long_topic(65535);
    assert_int_equal(codec_topic_name_check(view(p, 65535)), CODEC_OK);
    free(p);
}

static void test_name_view_not_terminated(void **state)
{
    (void)state;
    /* The bytes after each view would make it invalid. */
    static const char buf[] = "xx/sport/tennis+#\xff";
    assert_int_equal(codec_topic_name_check(view(buf + 3, 12)), CODEC_OK); /* sport/tennis */
    assert_int_equal(codec_topic_name_check(view(buf + 3, 13)), CODEC_ERR_TOPIC_NAME);
    assert_int_equal(codec_topic_name_check(view(buf, 2)), CODEC_OK);
    assert_int_equal(codec_topic_name_check(view(buf + 17, 1)), CODEC_ERR_TOPIC_NAME);
}

/* ---- topic filters ------------------------------------------------------ */

static void test_filter_valid(void **state)
{
    (void)state;
    const struct syntax_case cases[] = {
        /* MQTT 5 4.7.1.2 */
        {B("sport/tennis/player1/#"), CODEC_OK},
        {B("sport/#"), CODEC_OK},
        {B("#"), CODEC_OK},
        {B("sport/tennis/#"), CODEC_OK},
        /* MQTT 5 4.7.1.3 */
        {B("sport/tennis/+"), CODEC_OK},
        {B("sport/+"), CODEC_OK},
        {B("+"), CODEC_OK},
        {B("+/tennis/#"), CODEC_OK},
        {B("sport/+/player1"), CODEC_OK},
        {B("+/+"), CODEC_OK},
        {B("/+"), CODEC_OK},
        /* MQTT 5 4.7.2 and 4.7.3 */
        {B("$SYS/#"), CODEC_OK},
        {B("$SYS/monitor/+"), CODEC_OK},
        {B("+/monitor/Clients"), CODEC_OK},
        {B("/"), CODEC_OK},
        {B("a//b"), CODEC_OK},
        {B("//"), CODEC_OK},
        {B("Accounts payable"), CODEC_OK},
        /* More wildcard placements */
        {B("+/+/+"), CODEC_OK},
        {B("+/#"), CODEC_OK},
        {B("/#"), CODEC_OK},
        {B("a/+/"), CODEC_OK},
        {B("//+//#"), CODEC_OK},
        {B("caf\xc3\xa9/+/\xf0\x9f\x98\x80/#"), CODEC_OK},
        /* Ordinary filters that only look like shared ones */
        {B("$sharefoo/x"), CODEC_OK},
        {B("$share"), CODEC_OK},
        {B("$SHARE//a"), CODEC_OK},
        {B("$shar/+"), CODEC_OK},
        {B("a/$share/b/c"), CODEC_OK},
    };
    check_filters(cases, COUNT(cases));
}

static void test_filter_refused(void **state)
{
    (void)state;
    const struct syntax_case cases[] = {
        {B(""), CODEC_ERR_TOPIC_FILTER},
        /* MQTT 5 4.7.1.2 and 4.7.1.3 */
        {B("sport/tennis#"), CODEC_ERR_TOPIC_FILTER},
        {B("sport/tennis/#/ranking"), CODEC_ERR_TOPIC_FILTER},
        {B("sport+"), CODEC_ERR_TOPIC_FILTER},
        /* '+' not alone in its level */
        {B("sport/+tennis"), CODEC_ERR_TOPIC_FILTER},
        {B("sport/tennis+"), CODEC_ERR_TOPIC_FILTER},
        {B("+sport"), CODEC_ERR_TOPIC_FILTER},
        {B("a/b+/c"), CODEC_ERR_TOPIC_FILTER},
        {B("++"), CODEC_ERR_TOPIC_FILTER},
        {B("+#"), CODEC_ERR_TOPIC_FILTER},
        /* '#' not alone, or not last */
        {B("#/"), CODEC_ERR_TOPIC_FILTER},
        {B("#/a"), CODEC_ERR_TOPIC_FILTER},
        {B("##"), CODEC_ERR_TOPIC_FILTER},
        {B("#+"), CODEC_ERR_TOPIC_FILTER},
        {B("a#"), CODEC_ERR_TOPIC_FILTER},
        {B("a/#b"), CODEC_ERR_TOPIC_FILTER},
        {B("a/#/"), CODEC_ERR_TOPIC_FILTER},
        {B("a/#/#"), CODEC_ERR_TOPIC_FILTER},
        /* UTF-8 */
        {B("a/\0/b"), CODEC_ERR_TOPIC_FILTER},
        {B("\0"), CODEC_ERR_TOPIC_FILTER},
        {B("\xc0\xaf"), CODEC_ERR_TOPIC_FILTER},
        {B("+/\xe0\x80\xaf"), CODEC_ERR_TOPIC_FILTER},
        {B("a/\xed\xbf\xbf/#"), CODEC_ERR_TOPIC_FILTER},
        {B("a/\xf4\x90\x80\x80"), CODEC_ERR_TOPIC_FILTER},
        {B("a/\xf0\x9f\x98"), CODEC_ERR_TOPIC_FILTER},
        {B("\x80/#"), CODEC_ERR_TOPIC_FILTER},
    };
    check_filters(cases, COUNT(cases));
    assert_int_equal(codec_topic_filter_check(view(NULL, 0)), CODEC_ERR_TOPIC_FILTER);
}

static void test_filter_length_limit(void **state)
{
    (void)state;
    uint8_t *p = long_topic(65536);

    /* 65535 bytes ending in "/#", then one byte more. */
    p[65533] = '/';
    p[65534] = '#';
    assert_int_equal(codec_topic_filter_check(view(p, 65535)), CODEC_OK);
    p[65535] = 'a';
    assert_int_equal(codec_topic_filter_check(view(p, 65536)), CODEC_ERR_TOPIC_FILTER);
    p[65534] = 'a';
    p[65535] = 'a';
    assert_int_equal(codec_topic_filter_check(view(p, 65536)), CODEC_ERR_TOPIC_FILTER);
    assert_int_equal(codec_topic_filter_check(view(p, 65535)), CODEC_OK);
    free(p);

    /* The limit covers the whole shared filter, prefix included. */
    p = long_topic(65536);
    memcpy(p, "$share/g/", 9);
    assert_int_equal(codec_topic_filter_check(view(p, 65535)), CODEC_OK);
    assert_int_equal(codec_topic_filter_check(view(p, 65536)), CODEC_ERR_TOPIC_FILTER);
    free(p);
}

static void test_filter_view_not_terminated(void **state)
{
    (void)state;
    /* "sport/+" followed by bytes that would spoil it. */
    static const char buf[] = "sport/+X#\xc3";
    assert_int_equal(codec_topic_filter_check(view(buf, 7)), CODEC_OK);
    assert_int_equal(codec_topic_filter_check(view(buf, 8)), CODEC_ERR_TOPIC_FILTER);
    assert_int_equal(codec_topic_filter_check(view(buf + 6, 1)), CODEC_OK); /* "+" */
    assert_int_equal(codec_topic_filter_check(view(buf + 8, 1)), CODEC_OK); /* "#" */
    assert_int_equal(codec_topic_filter_check(view(buf + 8, 2)), CODEC_ERR_TOPIC_FILTER);
    /* "#" whose next byte in memory is '/', outside the view. */
    static const char hash_slash[] = "a/#/b";
    assert_int_equal(codec_topic_filter_check(view(hash_slash, 3)), CODEC_OK);
    assert_int_equal(codec_topic_filter_check(view(hash_slash, 4)), CODEC_ERR_TOPIC_FILTER);
}

/* ---- shared subscriptions ----------------------------------------------- */

static void test_shared_valid(void **state)
{
    (void)state;
    const struct syntax_case cases[] = {
        /* MQTT 5 4.8.2 */
        {B("$share/consumer1/sport/tennis/+"), CODEC_OK},
        {B("$share/consumer2/sport/tennis/+"), CODEC_OK},
        {B("$share/consumer1//finance"), CODEC_OK},
        {B("$share/g/#"), CODEC_OK},
        {B("$share/g/+"), CODEC_OK},
        {B("$share/g/+/b/#"), CODEC_OK},
        {B("$share/g//"), CODEC_OK},
        {B("$share/g/$SYS/#"), CODEC_OK},
        {B("$share/$share/a"), CODEC_OK},
        {B("$share/caf\xc3\xa9/x"), CODEC_OK},
        {B("$share/g/$share"), CODEC_OK},
    };
    check_filters(cases, COUNT(cases));
}

static void test_shared_refused(void **state)
{
    (void)state;
    const struct syntax_case cases[] = {
        {B("$share/"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/x"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/x/"), CODEC_ERR_TOPIC_FILTER},
        {B("$share//a"), CODEC_ERR_TOPIC_FILTER},
        {B("$share//"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/a+b/c"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/a#b/c"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/+/c"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/#/c"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/#"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/+"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/g/sport+"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/g/a/#/b"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/g/#/"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/g/a\0b"), CODEC_ERR_TOPIC_FILTER},
        {B("$share/g\xc0\xaf/a"), CODEC_ERR_TOPIC_FILTER},
    };
    check_filters(cases, COUNT(cases));
}

static void test_shared_split(void **state)
{
    (void)state;
    static const char f[] = "$share/consumer1/sport/tennis/+";
    codec_bytes name = {NULL, 99};
    codec_bytes inner = {NULL, 99};

    assert_true(codec_topic_shared_split(view(f, sizeof(f) - 1), &name, &inner));
    assert_ptr_equal(name.ptr, (const uint8_t *)f + 7);
    assert_int_equal(name.len, 9);
    assert_memory_equal(name.ptr, "consumer1", 9);
    assert_ptr_equal(inner.ptr, (const uint8_t *)f + 17);
    assert_int_equal(inner.len, 14);
    assert_memory_equal(inner.ptr, "sport/tennis/+", 14);

    static const char g[] = "$share/g//finance";
    assert_true(codec_topic_shared_split(view(g, sizeof(g) - 1), &name, &inner));
    assert_int_equal(name.len, 1);
    assert_memory_equal(name.ptr, "g", 1);
    assert_int_equal(inner.len, 8);
    assert_memory_equal(inner.ptr, "/finance", 8);

    /* Only the first "$share/" is a prefix. */
    static const char h[] = "$share/a/$share/b/c";
    assert_true(codec_topic_shared_split(view(h, sizeof(h) - 1), &name, &inner));
    assert_int_equal(name.len, 1);
    assert_memory_equal(name.ptr, "a", 1);
    assert_int_equal(inner.len, 10);
    assert_memory_equal(inner.ptr, "$share/b/c", 10);

    /* Either output may be left out. */
    assert_true(codec_topic_shared_split(view(f, sizeof(f) - 1), NULL, NULL));
    assert_true(codec_topic_shared_split(view(f, sizeof(f) - 1), &name, NULL));
    assert_int_equal(name.len, 9);
}

static void test_shared_split_ordinary(void **state)
{
    (void)state;
    const codec_bytes ordinary[] = {
        B("sport/tennis/+"), B("$sharefoo/x"), B("$share"),       B("$SHARE/g/a"), B("#"),
        B("$share/x"),       B("$share//a"),   B("$share/a+b/c"), B("$share/x/"),  B(""),
    };
    for (size_t i = 0; i < COUNT(ordinary); i++) {
        codec_bytes name = {(const uint8_t *)"junk", 4};
        codec_bytes inner = {(const uint8_t *)"junk", 4};
        if (codec_topic_shared_split(ordinary[i], &name, &inner))
            fail_msg("\"%.*s\" split as shared", (int)ordinary[i].len,
                     (const char *)ordinary[i].ptr);
        assert_null(name.ptr);
        assert_int_equal(name.len, 0);
        assert_null(inner.ptr);
        assert_int_equal(inner.len, 0);
    }
}

static void test_shared_split_view_not_terminated(void **state)
{
    (void)state;
    /* The view ends before the second '/', so it is not shared. */
    static const char buf[] = "$share/group/topic";
    codec_bytes name;
    codec_bytes inner;
    assert_false(codec_topic_shared_split(view(buf, 12), &name, &inner));
    assert_false(codec_topic_shared_split(view(buf, 13), &name, &inner));
    assert_true(codec_topic_shared_split(view(buf, 14), &name, &inner));
    assert_int_equal(name.len, 5);
    assert_int_equal(inner.len, 1);
    assert_memory_equal(inner.ptr, "t", 1);
}

/* ---- matching ----------------------------------------------------------- */

static void test_match_multi_level_examples(void **state)
{
    (void)state;
    /* MQTT 5 4.7.1.2 */
    const struct match_case cases[] = {
        {B("sport/tennis/player1/#"), B("sport/tennis/player1"), true},
        {B("sport/tennis/player1/#"), B("sport/tennis/player1/ranking"), true},
        {B("sport/tennis/player1/#"), B("sport/tennis/player1/score/wimbledon"), true},
        {B("sport/tennis/player1/#"), B("sport/tennis/player2"), false},
        {B("sport/tennis/player1/#"), B("sport/tennis"), false},
        {B("sport/#"), B("sport"), true},
        {B("sport/#"), B("sport/"), true},
        {B("sport/#"), B("sport/tennis/player1"), true},
        {B("sport/#"), B("sports"), false},
        {B("sport/#"), B("spor"), false},
        {B("#"), B("sport"), true},
        {B("#"), B("sport/tennis/player1"), true},
        {B("#"), B("/"), true},
        {B("#"), B("/finance"), true},
        {B("sport/tennis/#"), B("sport/tennis/player1/ranking"), true},
        {B("sport/tennis/#"), B("sport/tennis"), true},
        {B("sport/tennis/#"), B("sport"), false},
    };
    check_matches(cases, COUNT(cases));
}

static void test_match_single_level_examples(void **state)
{
    (void)state;
    /* MQTT 5 4.7.1.3 */
    const struct match_case cases[] = {
        {B("sport/tennis/+"), B("sport/tennis/player1"), true},
        {B("sport/tennis/+"), B("sport/tennis/player2"), true},
        {B("sport/tennis/+"), B("sport/tennis/player1/ranking"), false},
        {B("sport/tennis/+"), B("sport/tennis"), false},
        {B("sport/tennis/+"), B("sport/tennis/"), true},
        {B("sport/+"), B("sport"), false},
        {B("sport/+"), B("sport/"), true},
        {B("sport/+"), B("sport/tennis"), true},
        {B("+"), B("sport"), true},
        {B("+/tennis/#"), B("sport/tennis"), true},
        {B("+/tennis/#"), B("sport/tennis/player1"), true},
        {B("+/tennis/#"), B("sport/golf/player1"), false},
        {B("sport/+/player1"), B("sport/tennis/player1"), true},
        {B("sport/+/player1"), B("sport//player1"), true},
        {B("sport/+/player1"), B("sport/tennis/player2"), false},
        {B("sport/+/player1"), B("sport/tennis/x/player1"), false},
        /* "/finance" */
        {B("+/+"), B("/finance"), true},
        {B("/+"), B("/finance"), true},
        {B("+"), B("/finance"), false},
        {B("+"), B("finance"), true},
        {B("/+"), B("finance"), false},
    };
    check_matches(cases, COUNT(cases));
}

static void test_match_dollar_topics(void **state)
{
    (void)state;
    /* MQTT 5 4.7.2 */
    const struct match_case cases[] = {
        {B("#"), B("$SYS/x"), false},
        {B("#"), B("$SYS"), false},
        {B("#"), B("$"), false},
        {B("+"), B("$SYS"), false},
        {B("+/monitor/Clients"), B("$SYS/monitor/Clients"), false},
        {B("+/#"), B("$SYS/monitor"), false},
        {B("$SYS/#"), B("$SYS/x"), true},
        {B("$SYS/#"), B("$SYS"), true},
        {B("$SYS/#"), B("$SYS/monitor/Clients"), true},
        {B("$SYS/monitor/+"), B("$SYS/monitor/Clients"), true},
        {B("$SYS/+/Clients"), B("$SYS/monitor/Clients"), true},
        {B("$SYS/monitor/Clients"), B("$SYS/monitor/Clients"), true},
        /* '$' elsewhere than the first byte is an ordinary character. */
        {B("#"), B("a/$SYS"), true},
        {B("+/+"), B("a/$SYS"), true},
        {B("+/$SYS"), B("a/$SYS"), true},
        {B("/#"), B("/$SYS"), true},
        {B("+/monitor/Clients"), B("/monitor/Clients"), true},
    };
    check_matches(cases, COUNT(cases));
}

static void test_match_exact_bytes(void **state)
{
    (void)state;
    /* MQTT 5 4.7.3: case, spaces and leading '/' all matter. */
    const struct match_case cases[] = {
        {B("ACCOUNTS"), B("Accounts"), false},
        {B("Accounts"), B("ACCOUNTS"), false},
        {B("Accounts"), B("Accounts"), true},
        {B("Accounts payable"), B("Accounts payable"), true},
        {B("Accounts payable"), B("Accounts  payable"), false},
        {B("/finance"), B("finance"), false},
        {B("finance"), B("/finance"), false},
        {B("/finance"), B("/finance"), true},
        {B("/"), B("/"), true},
        {B("/"), B("//"), false},
        {B("//"), B("/"), false},
        {B("a//b"), B("a//b"), true},
        {B("a//b"), B("a/b"), false},
        {B("a/"), B("a"), false},
        {B("a"), B("a/"), false},
        {B("sport/ten"), B("sport/tennis"), false},
        {B("sport/tennis"), B("sport/ten"), false},
        {B("sport/tennis"), B("sport/tennis/player1"), false},
        {B("sport/tennis/player1"), B("sport/tennis"), false},
        {B("caf\xc3\xa9/+"), B("caf\xc3\xa9/x"), true},
        {B("caf\xc3\xa9/+"), B("cafe\xcc\x81/x"), false}, /* no normalisation */
    };
    check_matches(cases, COUNT(cases));
}

static void test_match_empty_levels(void **state)
{
    (void)state;
    const struct match_case cases[] = {
        {B("+/+"), B("/"), true},      {B("+"), B("/"), false},      {B("/+"), B("/"), true},
        {B("+/"), B("/"), true},       {B("/#"), B("/"), true},      {B("/#"), B("a"), false},
        {B("/#"), B("/a/b"), true},    {B("+/#"), B("a"), true},     {B("+/#"), B("/"), true},
        {B("a/+/b"), B("a//b"), true}, {B("a/+/+"), B("a//"), true}, {B("a/+"), B("a//"), false},
        {B("a/+/"), B("a/x/"), true},  {B("a/+/"), B("a/x"), false}, {B("a/"), B("a/"), true},
        {B("a/"), B("a/b"), false},    {B("a//"), B("a/"), false},   {B("+/+/+"), B("//"), true},
        {B("a/#"), B("a//"), true},
    };
    check_matches(cases, COUNT(cases));
}

/* Invalid or empty input never matches by accident and never over-reads. */
static void test_match_degenerate(void **state)
{
    (void)state;
    const struct match_case cases[] = {
        {B(""), B(""), false},
        {B(""), B("a"), false},
        {B("#"), B(""), false},
        {B("+"), B(""), false},
        /* Misplaced wildcards are plain bytes. */
        {B("a#"), B("ab"), false},
        {B("a+"), B("ab"), false},
        {B("a/#/b"), B("a/x/b"), false},
        {B("a/#/b"), B("a/#/b"), true},
        {B("+a"), B("+a"), true},
        {B("+a"), B("ba"), false},
        {B("a/+b"), B("a/+b"), true},
        {B("a/+b"), B("a/cb"), false},
        {B("#a"), B("#a"), true},
    };
    check_matches(cases, COUNT(cases));
    assert_false(codec_topic_matches(view(NULL, 0), view(NULL, 0)));
}

static void test_match_views_not_terminated(void **state)
{
    (void)state;
    static const char topic_buf[] = "sport/tennis/player1";
    static const char filter_buf[] = "sport/tennis/+/#";
    codec_bytes t12 = view(topic_buf, 12); /* "sport/tennis" */
    codec_bytes t13 = view(topic_buf, 13); /* "sport/tennis/" */

    assert_true(codec_topic_matches(view(filter_buf, 12), t12));
    assert_false(codec_topic_matches(view(filter_buf, 12), view(topic_buf, 20)));
    assert_false(codec_topic_matches(view(filter_buf, 14), t12));
    assert_true(codec_topic_matches(view(filter_buf, 14), t13));
    assert_true(codec_topic_matches(view(filter_buf, 14), view(topic_buf, 20)));
    /* "sport/tennis/" as a filter: its next byte '+' is outside the view. */
    assert_false(codec_topic_matches(view(filter_buf, 13), view(topic_buf, 20)));
    assert_true(codec_topic_matches(view(filter_buf, 13), t13));
    /* "sport/tennis/+/" and "sport/tennis/+/#" */
    assert_false(codec_topic_matches(view(filter_buf, 15), view(topic_buf, 20)));
    assert_true(codec_topic_matches(view(filter_buf, 16), view(topic_buf, 20)));
    /* A topic prefix in the middle of a buffer. */
    assert_true(codec_topic_matches(CODEC_LIT("tennis"), view(topic_buf + 6, 6)));
    assert_true(codec_topic_matches(CODEC_LIT("tennis/+"), view(topic_buf + 6, 7)));
    assert_false(codec_topic_matches(CODEC_LIT("tennis"), view(topic_buf + 6, 7)));
}

/* Heap buffers of exact size so that ASan checks the bounds. */
static void test_match_long(void **state)
{
    (void)state;
    uint8_t *topic = long_topic(65535);
    uint8_t *filter = long_topic(65535);

    assert_true(codec_topic_matches(CODEC_LIT("#"), view(topic, 65535)));
    assert_true(codec_topic_matches(view(filter, 65535), view(topic, 65535)));
    assert_false(codec_topic_matches(view(filter, 65534), view(topic, 65535)));
    assert_false(codec_topic_matches(view(filter, 65535), view(topic, 65534)));
    /* Replace the last level with '+': matches the same topic, and one
     * level shorter does not. 65535 = 6553 * 10 + 5, so the last level
     * starts at 65530. */
    filter[65530] = '+';
    assert_true(codec_topic_matches(view(filter, 65531), view(topic, 65535)));
    assert_false(codec_topic_matches(view(filter, 65531), view(topic, 65529)));
    free(filter);

    /* "+" followed by every level of the topic but its first. */
    const size_t flen = 1 + (65535 - 9);
    filter = malloc(flen);
    assert_non_null(filter);
    filter[0] = '+';
    memcpy(filter + 1, topic + 9, 65535 - 9);
    assert_true(codec_topic_matches(view(filter, flen), view(topic, 65535)));
    topic[3] = 'b';
    assert_true(codec_topic_matches(view(filter, flen), view(topic, 65535)));
    topic[65534] = 'b';
    assert_false(codec_topic_matches(view(filter, flen), view(topic, 65535)));
    free(filter);
    free(topic);
}

/*
 * Level-by-level reference matcher for the random comparison below: split
 * both strings at '/', then compare level lists. Slower and shaped unlike
 * topic.c's single pass, so that the two are unlikely to share a mistake.
 * Only for valid filters and names of at most 31 levels.
 */
struct levels {
    size_t n;
    codec_bytes at[32];
};

static void split_levels(codec_bytes s, struct levels *out)
{
    size_t start = 0;
    out->n = 0;
    for (size_t i = 0; i <= s.len; i++) {
        if (i == s.len || s.ptr[i] == '/') {
            assert_true(out->n < 32);
            out->at[out->n].ptr = s.ptr + start;
            out->at[out->n].len = i - start;
            out->n++;
            start = i + 1;
        }
    }
}

static bool level_is(codec_bytes level, char c)
{
    return level.len == 1 && level.ptr[0] == (uint8_t)c;
}

static bool ref_matches(codec_bytes filter, codec_bytes topic)
{
    struct levels f;
    struct levels t;
    split_levels(filter, &f);
    split_levels(topic, &t);
    if (topic.ptr[0] == '$' && (level_is(f.at[0], '+') || level_is(f.at[0], '#')))
        return false;
    for (size_t i = 0; i < f.n; i++) {
        if (level_is(f.at[i], '#'))
            return true;
        if (i >= t.n)
            return false;
        if (level_is(f.at[i], '+'))
            continue;
        if (f.at[i].len != t.at[i].len || memcmp(f.at[i].ptr, t.at[i].ptr, f.at[i].len) != 0)
            return false;
    }
    return f.n == t.n;
}

static uint32_t rng_next(uint32_t *x)
{
    /* xorshift32: fixed seed, so a failure reproduces. */
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static size_t random_string(uint32_t *rng, uint8_t *out, size_t cap)
{
    static const char alphabet[] = "ab/+#$";
    size_t n = rng_next(rng) % (cap + 1);
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)alphabet[rng_next(rng) % (sizeof(alphabet) - 1)];
    return n;
}

/* Random short filters and names over a small alphabet, so that wildcards,
 * empty levels and '$' collide often, compared with the reference. */
static void test_match_random_against_reference(void **state)
{
    (void)state;
    uint32_t rng = 0x12345678u;
    size_t compared = 0;
    size_t matched = 0;

    while (compared < 200000) {
        uint8_t fbuf[12];
        uint8_t tbuf[12];
        codec_bytes filter = view(fbuf, random_string(&rng, fbuf, sizeof(fbuf)));
        codec_bytes topic = view(tbuf, random_string(&rng, tbuf, sizeof(tbuf)));
        if (codec_topic_filter_check(filter) != CODEC_OK ||
            codec_topic_name_check(topic) != CODEC_OK)
            continue;
        bool got = codec_topic_matches(filter, topic);
        if (got != ref_matches(filter, topic))
            fail_msg("filter \"%.*s\" vs topic \"%.*s\": got %d", (int)filter.len,
                     (const char *)filter.ptr, (int)topic.len, (const char *)topic.ptr, got);
        compared++;
        matched += got;
    }
    /* The generator must produce both outcomes often for this to mean
     * anything. */
    assert_true(matched > compared / 50);
    assert_true(matched < compared - compared / 50);
}

/* ---- levels ------------------------------------------------------------- */

static void test_levels(void **state)
{
    (void)state;
    assert_int_equal(codec_topic_levels(view(NULL, 0)), 0);
    assert_int_equal(codec_topic_levels(CODEC_LIT("")), 0);
    assert_int_equal(codec_topic_levels(CODEC_LIT("a")), 1);
    assert_int_equal(codec_topic_levels(CODEC_LIT("/")), 2);
    assert_int_equal(codec_topic_levels(CODEC_LIT("a/b")), 2);
    assert_int_equal(codec_topic_levels(CODEC_LIT("a//b")), 3);
    assert_int_equal(codec_topic_levels(CODEC_LIT("/finance")), 2);
    assert_int_equal(codec_topic_levels(CODEC_LIT("sport/")), 2);
    assert_int_equal(codec_topic_levels(CODEC_LIT("sport/tennis/player1/#")), 4);
    assert_int_equal(codec_topic_levels(CODEC_LIT("//")), 3);

    static const char buf[] = "a/b/c/d";
    assert_int_equal(codec_topic_levels(view(buf, 3)), 2);
    assert_int_equal(codec_topic_levels(view(buf, 4)), 3);
    assert_int_equal(codec_topic_levels(view(buf + 2, 1)), 1);

    uint8_t *p = long_topic(65535);
    assert_int_equal(codec_topic_levels(view(p, 65535)), 6554);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_name_refused),
        cmocka_unit_test(test_name_length_limit),
        cmocka_unit_test(test_name_view_not_terminated),
        cmocka_unit_test(test_filter_valid),
        cmocka_unit_test(test_filter_refused),
        cmocka_unit_test(test_filter_length_limit),
        cmocka_unit_test(test_filter_view_not_terminated),
        cmocka_unit_test(test_shared_valid),
        cmocka_unit_test(test_shared_refused),
        cmocka_unit_test(test_shared_split),
        cmocka_unit_test(test_shared_split_ordinary),
        cmocka_unit_test(test_shared_split_view_not_terminated),
        cmocka_unit_test(test_match_multi_level_examples),
        cmocka_unit_test(test_match_single_level_examples),
        cmocka_unit_test(test_match_dollar_topics),
        cmocka_unit_test(test_match_exact_bytes),
        cmocka_unit_test(test_match_empty_levels),
        cmocka_unit_test(test_match_degenerate),
        cmocka_unit_test(test_match_views_not_terminated),
        cmocka_unit_test(test_match_long),
        cmocka_unit_test(test_match_random_against_reference),
        cmocka_unit_test(test_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
