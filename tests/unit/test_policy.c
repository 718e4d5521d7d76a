/*
 * Unit tests for src/policy: the document parser (every statement form,
 * comments, CRLF, each syntax error with its line number, the limits), the
 * expansion of ${device}/${service} (values that could widen a filter are
 * refused, a variable without a value drops its statement), the four
 * decisions on the default device policy and on deny/allow mixes, shared
 * subscriptions, the fail-closed sets, and the filter algebra.
 *
 * The algebra (covers, overlaps) is where a subtle mistake would let a
 * device subscribe to other devices' topics, so besides named examples it is
 * checked exhaustively against its definition: every filter of a small
 * grammar is turned into the set of topic names it matches (by
 * codec_topic_matches, over every topic of a small alphabet), and covers and
 * overlaps must equal set inclusion and intersection for every pair. The
 * decisions are checked the same way through real policy sets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* Lets the compiler check format strings against their arguments. */
#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static codec_bytes cstr(const char *s)
{
    codec_bytes b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

static policy_doc *parse_ok(const char *text)
{
    char err[256];
    policy_doc *doc = NULL;
    policy_status st = policy_parse(text, strlen(text), &doc, err, sizeof(err));
    if (st != POLICY_OK)
        fail_msg("parse of \"%s\" failed (%d): %s", text, (int)st, err);
    assert_non_null(doc);
    return doc;
}

/* A set for one document; device or service may be NULL (no value). */
static policy_set *set_of(const char *text, const char *device, const char *service)
{
    policy_doc *doc = parse_ok(text);
    policy_vars vars = {cstr(device), cstr(service)};
    const policy_doc *docs[] = {doc};
    policy_set *set = NULL;
    assert_int_equal(policy_set_build(docs, 1, &vars, &set), POLICY_OK);
    assert_non_null(set);
    policy_doc_free(doc);
    return set;
}

static bool pub(const policy_set *s, const char *t)
{
    return policy_may_publish(s, cstr(t));
}

static bool sub(const policy_set *s, const char *f)
{
    return policy_may_subscribe(s, cstr(f));
}

static bool recv_(const policy_set *s, const char *t)
{
    return policy_may_receive(s, cstr(t));
}

static const char hub_example[] = "# comment\n"
                                  "allow publish   moat/${device}/up/#\n"
                                  "allow subscribe moat/${device}/down/#\n"
                                  "allow receive   moat/${device}/down/#\n"
                                  "deny  subscribe moat/+/up/#\n"
                                  "allow connect\n";

static const char device_default[] = "allow publish   moat/${device}/up/#\n"
                                     "allow subscribe moat/${device}/down/#\n"
                                     "allow receive   moat/${device}/down/#\n"
                                     "allow connect\n";

/* ---- parser: accepted documents ------------------------------------------ */

static void test_parse_hub_example(void **state)
{
    (void)state;
    policy_doc *doc = parse_ok(hub_example);
    assert_int_equal(policy_doc_count(doc), 5);
    policy_doc_free(doc);

    doc = parse_ok(device_default);
    assert_int_equal(policy_doc_count(doc), 4);
    policy_doc_free(doc);
}

static void test_parse_layout(void **state)
{
    (void)state;
    /* Comments after indentation, blank and whitespace-only lines, tabs,
     * CRLF, no final newline. */
    const char *text = "  # indented comment\r\n"
                       "\t\r\n"
                       "\r\n"
                       "   \n"
                       "\tallow\t publish \ta/b\t \r\n"
                       "#allow publish c\n"
                       "deny receive a/#";
    policy_doc *doc = parse_ok(text);
    assert_int_equal(policy_doc_count(doc), 2);
    policy_doc_free(doc);

    /* '#' is a comment only at the start: as a filter it is the wildcard. */
    policy_set *s = set_of("allow subscribe #\nallow publish #\n", NULL, NULL);
    assert_true(sub(s, "a/b"));
    assert_true(sub(s, "#"));
    assert_true(pub(s, "x"));
    assert_false(sub(s, "$SYS/#"));
    policy_set_free(s);

    /* Empty documents parse to zero statements. */
    doc = parse_ok("");
    assert_int_equal(policy_doc_count(doc), 0);
    policy_doc_free(doc);
    doc = parse_ok("# nothing\n\n");
    assert_int_equal(policy_doc_count(doc), 0);
    policy_doc_free(doc);

    /* Every action, every variable placement allowed. */
    doc = parse_ok("allow all a/${device}\n"
                   "deny all #\n"
                   "allow publish ${device}\n"
                   "allow subscribe ${service}/+/#\n"
                   "allow receive /${device}/${service}/\n"
                   "deny connect\n"
                   "allow publish $SYS/x\n"
                   "allow publish caf\xc3\xa9/+\n");
    assert_int_equal(policy_doc_count(doc), 8);
    policy_doc_free(doc);
}

/* ---- parser: errors -------------------------------------------------------- */

struct bad_case {
    const char *text;
    size_t len; /* 0: strlen(text) */
    policy_status want;
    const char *msg;
};

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"allow publsh a\n", 0, POLICY_ERR_SYNTAX, "line 1: unknown action 'publsh'"},
        {"permit publish a\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unknown effect 'permit' (want allow or deny)"},
        {"Allow publish a\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unknown effect 'Allow' (want allow or deny)"},
        {"allow Publish a\n", 0, POLICY_ERR_SYNTAX, "line 1: unknown action 'Publish'"},
        {"allow\n", 0, POLICY_ERR_SYNTAX, "line 1: missing action after 'allow'"},
        {"deny \t \n", 0, POLICY_ERR_SYNTAX, "line 1: missing action after 'deny'"},
        {"allow publish\n", 0, POLICY_ERR_SYNTAX, "line 1: action 'publish' needs a topic filter"},
        {"allow subscribe \n", 0, POLICY_ERR_SYNTAX,
         "line 1: action 'subscribe' needs a topic filter"},
        {"deny receive", 0, POLICY_ERR_SYNTAX, "line 1: action 'receive' needs a topic filter"},
        {"deny all", 0, POLICY_ERR_SYNTAX, "line 1: action 'all' needs a topic filter"},
        {"allow connect a/b\n", 0, POLICY_ERR_SYNTAX, "line 1: connect takes no topic filter"},
        {"allow connect #\n", 0, POLICY_ERR_SYNTAX, "line 1: connect takes no topic filter"},
        {"allow publish a b\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unexpected text after the topic filter"},
        /* A comment does not start after a statement. */
        {"allow publish a # note\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unexpected text after the topic filter"},
        {"allow connect # note\n", 0, POLICY_ERR_SYNTAX, "line 1: connect takes no topic filter"},
        {"allow publish a+\n", 0, POLICY_ERR_SYNTAX, "line 1: invalid topic filter 'a+'"},
        {"allow publish a/#/b\n", 0, POLICY_ERR_SYNTAX, "line 1: invalid topic filter 'a/#/b'"},
        {"allow subscribe a#\n", 0, POLICY_ERR_SYNTAX, "line 1: invalid topic filter 'a#'"},
        {"allow publish moat/a${device}\n", 0, POLICY_ERR_SYNTAX,
         "line 1: a variable must be a whole topic level: 'a${device}'"},
        {"allow publish moat/${device}x/up\n", 0, POLICY_ERR_SYNTAX,
         "line 1: a variable must be a whole topic level: '${device}x'"},
        {"allow publish ${device}${service}\n", 0, POLICY_ERR_SYNTAX,
         "line 1: a variable must be a whole topic level: '${device}${service}'"},
        {"allow publish moat/${device\n", 0, POLICY_ERR_SYNTAX,
         "line 1: a variable must be a whole topic level: '${device'"},
        {"allow publish moat/${dev}/up\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unknown variable '${dev}' (want ${device} or ${service})"},
        {"allow publish ${}\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unknown variable '${}' (want ${device} or ${service})"},
        {"allow publish ${DEVICE}\n", 0, POLICY_ERR_SYNTAX,
         "line 1: unknown variable '${DEVICE}' (want ${device} or ${service})"},
        {"allow subscribe $share/g/moat/#\n", 0, POLICY_ERR_SYNTAX,
         "line 1: shared subscription filter '$share/g/moat/#' in a policy (subscriptions are "
         "judged on their inner filter: write that)"},
        {"allow subscribe $share/${device}/#\n", 0, POLICY_ERR_SYNTAX,
         "line 1: shared subscription filter '$share/${device}/#' in a policy (subscriptions are "
         "judged on their inner filter: write that)"},
        {"allow publish a\x01"
         "b\n",
         0, POLICY_ERR_SYNTAX, "line 1: control character 0x01"},
        {"allow\rpublish a\n", 0, POLICY_ERR_SYNTAX, "line 1: control character 0x0d"},
        {"allow publish a\r\r\n", 0, POLICY_ERR_SYNTAX, "line 1: control character 0x0d"},
        {"# fine\n# \x1b[2J hidden\n", 0, POLICY_ERR_SYNTAX, "line 2: control character 0x1b"},
        {"allow publish a\x7f\n", 0, POLICY_ERR_SYNTAX, "line 1: control character 0x7f"},
        {"allow publish a\0b\n", 18, POLICY_ERR_SYNTAX, "line 1: control character 0x00"},
        {"allow publish caf\xc3\n", 0, POLICY_ERR_SYNTAX, "line 1: not valid UTF-8"},
        {"# \xc0\xaf overlong\n", 0, POLICY_ERR_SYNTAX, "line 1: not valid UTF-8"},
        /* Line numbers count comments, blank lines and CRLF lines. */
        {"# c\n\nallow publish a\nallow publsh b\n", 0, POLICY_ERR_SYNTAX,
         "line 4: unknown action 'publsh'"},
        {"# c\r\n\r\nallow publish a\r\n\r\nallow publish +a\r\n", 0, POLICY_ERR_SYNTAX,
         "line 5: invalid topic filter '+a'"},
        {"\n\n\n\n\n\n\n\n\nallow connect x", 0, POLICY_ERR_SYNTAX,
         "line 10: connect takes no topic filter"},
        /* Long tokens are quoted cut at 40 bytes, on a UTF-8 boundary. */
        {"allow publish aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9+\n", 0, POLICY_ERR_SYNTAX,
         "line 1: invalid topic filter 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'"},
    };

    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct bad_case *c = &cases[i];
        char err[256];
        policy_doc *doc = (policy_doc *)&err; /* must be set to NULL */
        size_t len = c->len ? c->len : strlen(c->text);
        policy_status st = policy_parse(c->text, len, &doc, err, sizeof(err));
        if (st != c->want || strcmp(err, c->msg) != 0 || doc != NULL)
            fail_msg("case %zu: got %d \"%s\", want %d \"%s\"", i, (int)st, err, (int)c->want,
                     c->msg);
    }
}

static void test_parse_error_buffer(void **state)
{
    (void)state;
    policy_doc *doc = NULL;
    /* No buffer, or a zero-sized one: the status alone. */
    assert_int_equal(policy_parse("x", 1, &doc, NULL, 0), POLICY_ERR_SYNTAX);
    assert_null(doc);
    char err[8] = "zzzzzzz";
    assert_int_equal(policy_parse("x", 1, &doc, err, 0), POLICY_ERR_SYNTAX);
    assert_string_equal(err, "zzzzzzz");
    /* A small buffer is truncated and terminated. */
    assert_int_equal(policy_parse("x", 1, &doc, err, sizeof(err)), POLICY_ERR_SYNTAX);
    assert_string_equal(err, "line 1:");
    char tiny[12];
    assert_int_equal(policy_parse("x", 1, &doc, tiny, sizeof(tiny)), POLICY_ERR_SYNTAX);
    assert_string_equal(tiny, "line 1: unk");
    /* Success clears the message. */
    char ok[32] = "stale";
    assert_int_equal(policy_parse("allow connect", 13, &doc, ok, sizeof(ok)), POLICY_OK);
    assert_string_equal(ok, "");
    policy_doc_free(doc);
    /* The text is a view: bytes after len are not read. */
    assert_int_equal(policy_parse("allow connect garbage", 13, &doc, NULL, 0), POLICY_OK);
    assert_int_equal(policy_doc_count(doc), 1);
    policy_doc_free(doc);
    /* NULL text with no length is the empty document. */
    assert_int_equal(policy_parse(NULL, 0, &doc, NULL, 0), POLICY_OK);
    assert_int_equal(policy_doc_count(doc), 0);
    policy_doc_free(doc);
    assert_int_equal(policy_parse(NULL, 3, &doc, NULL, 0), POLICY_ERR_SYNTAX);
    assert_null(doc);
    assert_int_equal(policy_doc_count(NULL), 0);
    policy_doc_free(NULL);
}

/* ---- parser: limits ---------------------------------------------------------- */

/* A heap document of n statement lines, each "allow publish t/N\n". */
static char *statements(size_t n, size_t *len)
{
    char *buf = malloc(n * 32 + 1);
    assert_non_null(buf);
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(buf + used, 32, "allow publish t/%zu\n", i);
    *len = used;
    return buf;
}

static void test_parse_limits(void **state)
{
    (void)state;
    char err[256];
    policy_doc *doc = NULL;
    size_t len;

    /* Statements: 256 parse, the 257th is refused on its own line. */
    char *text = statements(POLICY_MAX_STATEMENTS, &len);
    assert_int_equal(policy_parse(text, len, &doc, err, sizeof(err)), POLICY_OK);
    assert_int_equal(policy_doc_count(doc), POLICY_MAX_STATEMENTS);
    policy_doc_free(doc);
    free(text);
    text = statements(POLICY_MAX_STATEMENTS + 1, &len);
    assert_int_equal(policy_parse(text, len, &doc, err, sizeof(err)), POLICY_ERR_LIMIT);
    assert_string_equal(err, "line 257: more than 256 statements");
    assert_null(doc);
    free(text);

    /* Filter: 1024 bytes parse, 1025 do not. */
    static char line[2048];
    memcpy(line, "allow publish ", 14);
    memset(line + 14, 'f', POLICY_MAX_FILTER);
    assert_int_equal(policy_parse(line, 14 + POLICY_MAX_FILTER, &doc, err, sizeof(err)), POLICY_OK);
    policy_doc_free(doc);
    line[14 + POLICY_MAX_FILTER] = 'f';
    assert_int_equal(policy_parse(line, 15 + POLICY_MAX_FILTER, &doc, err, sizeof(err)),
                     POLICY_ERR_LIMIT);
    assert_string_equal(err, "line 1: topic filter longer than 1024 bytes");
    assert_null(doc);

    /* Line: 4096 bytes (a comment) parse, 4097 do not; the CR of a CRLF
     * does not count. */
    static char comment[4100];
    comment[0] = '#';
    memset(comment + 1, ' ', sizeof(comment) - 1);
    assert_int_equal(policy_parse(comment, 4096, &doc, err, sizeof(err)), POLICY_OK);
    policy_doc_free(doc);
    comment[4096] = '\r';
    assert_int_equal(policy_parse(comment, 4097, &doc, err, sizeof(err)), POLICY_OK);
    policy_doc_free(doc);
    comment[4096] = ' ';
    assert_int_equal(policy_parse(comment, 4097, &doc, err, sizeof(err)), POLICY_ERR_LIMIT);
    assert_string_equal(err, "line 1: longer than 4096 bytes");

    /* Document: 65536 bytes parse, 65537 do not. */
    text = malloc(POLICY_MAX_DOCUMENT + 1);
    assert_non_null(text);
    memset(text, '\n', POLICY_MAX_DOCUMENT + 1);
    memcpy(text + POLICY_MAX_DOCUMENT - 13, "allow connect", 13);
    assert_int_equal(policy_parse(text, POLICY_MAX_DOCUMENT, &doc, err, sizeof(err)), POLICY_OK);
    assert_int_equal(policy_doc_count(doc), 1);
    policy_doc_free(doc);
    assert_int_equal(policy_parse(text, POLICY_MAX_DOCUMENT + 1, &doc, err, sizeof(err)),
                     POLICY_ERR_LIMIT);
    assert_string_equal(err, "document is 65537 bytes, more than 65536");
    assert_null(doc);
    free(text);
}

/* ---- building sets ----------------------------------------------------------- */

static void test_build_vars_refused(void **state)
{
    (void)state;
    policy_doc *doc = parse_ok(device_default);
    const policy_doc *docs[] = {doc};
    static const struct {
        codec_bytes value;
        policy_status want;
    } bad[] = {
        {{(const uint8_t *)"a/b", 3}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"/", 1}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"+", 1}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"d+", 2}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"#", 1}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"d#", 2}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"d\0x", 3}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"\xc3", 1}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"$SYS", 4}, POLICY_ERR_SYNTAX},
        {{(const uint8_t *)"$share", 6}, POLICY_ERR_SYNTAX},
        {{NULL, 3}, POLICY_ERR_SYNTAX},
    };
    for (size_t i = 0; i < COUNT(bad); i++) {
        /* Refused as either variable, even when no statement uses it. */
        policy_vars as_device = {bad[i].value, {NULL, 0}};
        policy_vars as_service = {{NULL, 0}, bad[i].value};
        policy_set *set = (policy_set *)&as_device; /* must be set to NULL */
        if (policy_set_build(docs, 1, &as_device, &set) != bad[i].want || set != NULL)
            fail_msg("device value %zu accepted", i);
        set = (policy_set *)&as_device;
        if (policy_set_build(docs, 1, &as_service, &set) != bad[i].want || set != NULL)
            fail_msg("service value %zu accepted", i);
    }

    /* Values that are fine: '$' inside, UTF-8, spaces. */
    static const char *good[] = {"d1", "a$b", "caf\xc3\xa9", "x y", "ab2345abcdefghijklmnopqrst"};
    for (size_t i = 0; i < COUNT(good); i++) {
        policy_vars vars = {cstr(good[i]), {NULL, 0}};
        policy_set *set = NULL;
        assert_int_equal(policy_set_build(docs, 1, &vars, &set), POLICY_OK);
        char topic[64];
        snprintf(topic, sizeof(topic), "moat/%s/up/t", good[i]);
        assert_true(pub(set, topic));
        policy_set_free(set);
    }
    policy_doc_free(doc);
}

static void test_build_limits_and_args(void **state)
{
    (void)state;
    /* An expansion over POLICY_MAX_FILTER refuses the whole build. */
    policy_doc *doc = parse_ok("allow publish ${device}/${device}\n");
    const policy_doc *docs[] = {doc};
    static char value[POLICY_MAX_FILTER + 1];
    memset(value, 'v', sizeof(value));
    policy_vars vars = {{(const uint8_t *)value, 511}, {NULL, 0}};
    policy_set *set = NULL;
    assert_int_equal(policy_set_build(docs, 1, &vars, &set), POLICY_OK); /* 1023 bytes */
    policy_set_free(set);
    vars.device.len = 512; /* 1025 bytes */
    assert_int_equal(policy_set_build(docs, 1, &vars, &set), POLICY_ERR_LIMIT);
    assert_null(set);
    vars.device.len = POLICY_MAX_FILTER + 1;
    assert_int_equal(policy_set_build(docs, 1, &vars, &set), POLICY_ERR_LIMIT);
    assert_null(set);
    policy_doc_free(doc);

    /* A missing document refuses the build rather than being skipped. */
    const policy_doc *holes[] = {NULL};
    assert_int_equal(policy_set_build(holes, 1, NULL, &set), POLICY_ERR_SYNTAX);
    assert_null(set);
    assert_int_equal(policy_set_build(NULL, 1, NULL, &set), POLICY_ERR_SYNTAX);
    assert_int_equal(policy_set_build(NULL, 0, NULL, NULL), POLICY_ERR_SYNTAX);
    policy_set_free(NULL);

    /* NULL vars: no values, so statements with variables are dropped. */
    doc = parse_ok("allow publish a/${device}\nallow publish b\n");
    docs[0] = doc;
    assert_int_equal(policy_set_build(docs, 1, NULL, &set), POLICY_OK);
    assert_false(pub(set, "a/"));
    assert_false(pub(set, "a/x"));
    assert_true(pub(set, "b"));
    policy_set_free(set);
    policy_doc_free(doc);
}

/* ---- decisions ----------------------------------------------------------------- */

static void test_device_default(void **state)
{
    (void)state;
    policy_set *s = set_of(device_default, "d1", NULL);

    assert_true(policy_may_connect(s));

    assert_true(pub(s, "moat/d1/up/temp"));
    assert_true(pub(s, "moat/d1/up"));
    assert_true(pub(s, "moat/d1/up/a/b/c"));
    assert_false(pub(s, "moat/d2/up/temp"));
    assert_false(pub(s, "moat/d1/down/x"));
    assert_false(pub(s, "moat/d1"));
    assert_false(pub(s, "moat/d10/up/x"));
    assert_false(pub(s, "moat/d/up/x"));
    assert_false(pub(s, "moat/+/up/x"));  /* not a topic name */
    assert_false(pub(s, "moat/d1/up/#")); /* not a topic name */
    assert_false(pub(s, ""));
    assert_false(pub(s, "$SYS/x"));

    assert_true(sub(s, "moat/d1/down/#"));
    assert_true(sub(s, "moat/d1/down"));
    assert_true(sub(s, "moat/d1/down/cmd"));
    assert_true(sub(s, "moat/d1/down/+/x"));
    assert_false(sub(s, "#"));
    assert_false(sub(s, "+/#"));
    assert_false(sub(s, "moat/+/up/#"));
    assert_false(sub(s, "moat/+/down/#"));
    assert_false(sub(s, "moat/d2/down/#"));
    assert_false(sub(s, "moat/#"));
    assert_false(sub(s, "moat/d1/#"));
    assert_false(sub(s, "moat/d1/+/cmd"));
    assert_false(sub(s, "moat/d1/up/#"));
    assert_false(sub(s, "moat/d1/down/#/x")); /* not a valid filter */
    assert_false(sub(s, ""));

    assert_true(recv_(s, "moat/d1/down/cmd"));
    assert_true(recv_(s, "moat/d1/down"));
    assert_false(recv_(s, "moat/d2/down/cmd"));
    assert_false(recv_(s, "moat/d1/up/temp"));
    policy_set_free(s);

    /* The example in docs/hub.md adds a deny that overlaps nothing the
     * device may subscribe to, and refuses the rest as before. */
    s = set_of(hub_example, "d1", NULL);
    assert_true(policy_may_connect(s));
    assert_true(sub(s, "moat/d1/down/#"));
    assert_false(sub(s, "moat/+/up/#"));
    assert_false(sub(s, "moat/d1/up/x"));
    assert_true(pub(s, "moat/d1/up/temp"));
    policy_set_free(s);
}

static void test_deny_wins(void **state)
{
    (void)state;
    /* Order inside a document does not matter. */
    static const char *docs[] = {
        "allow publish moat/#\ndeny publish moat/secret/#\n",
        "deny publish moat/secret/#\nallow publish moat/#\n",
    };
    for (size_t i = 0; i < COUNT(docs); i++) {
        policy_set *s = set_of(docs[i], NULL, NULL);
        assert_true(pub(s, "moat/public/x"));
        assert_true(pub(s, "moat/secretary"));
        assert_false(pub(s, "moat/secret"));
        assert_false(pub(s, "moat/secret/x"));
        assert_false(policy_may_connect(s)); /* nobody allowed it */
        policy_set_free(s);
    }

    /* Across documents: a deny in one wins over an allow in another. */
    policy_doc *a = parse_ok("allow all moat/#\nallow connect\n");
    policy_doc *d = parse_ok("deny receive moat/secret/#\ndeny connect\n");
    const policy_doc *both[] = {a, d};
    policy_set *s = NULL;
    assert_int_equal(policy_set_build(both, 2, NULL, &s), POLICY_OK);
    assert_true(recv_(s, "moat/x"));
    assert_false(recv_(s, "moat/secret/x"));
    assert_true(pub(s, "moat/secret/x")); /* the deny was for receive only */
    assert_false(policy_may_connect(s));
    policy_set_free(s);
    const policy_doc *rev[] = {d, a};
    assert_int_equal(policy_set_build(rev, 2, NULL, &s), POLICY_OK);
    assert_false(recv_(s, "moat/secret/x"));
    assert_false(policy_may_connect(s));
    policy_set_free(s);
    policy_doc_free(a);
    policy_doc_free(d);

    /* Actions stay apart: an allow for one is not an allow for another. */
    s = set_of("allow subscribe a/#\n", NULL, NULL);
    assert_true(sub(s, "a/b"));
    assert_false(pub(s, "a/b"));
    assert_false(recv_(s, "a/b"));
    assert_false(policy_may_connect(s));
    policy_set_free(s);
}

static void test_subscribe_covers_not_matches(void **state)
{
    (void)state;
    /* The requested filter has to be covered, not merely match the allowed
     * filter as if it were a topic name. */
    policy_set *s = set_of("allow subscribe moat/d1/+\nallow subscribe +\n", NULL, NULL);
    assert_true(sub(s, "moat/d1/x"));
    assert_true(sub(s, "moat/d1/+"));
    assert_false(sub(s, "moat/d1/#")); /* matches "moat/d1" and deeper */
    assert_false(sub(s, "moat/d1/+/x"));
    assert_true(sub(s, "x"));
    assert_false(sub(s, "#"));
    assert_false(sub(s, "$SYS"));
    policy_set_free(s);
}

static void test_subscribe_deny_overlap(void **state)
{
    (void)state;
    policy_set *s = set_of("allow subscribe moat/#\ndeny subscribe moat/secret/#\n", NULL, NULL);
    assert_false(sub(s, "moat/#"));
    assert_false(sub(s, "moat/+"));          /* reaches moat/secret */
    assert_false(sub(s, "moat/+/x"));        /* reaches moat/secret/x */
    assert_false(sub(s, "moat/secret"));     /* "moat/secret/#" matches it */
    assert_false(sub(s, "moat/secret/a/b")); /* inside the deny */
    assert_true(sub(s, "moat/public/#"));
    assert_true(sub(s, "moat/secretary/#"));
    assert_true(sub(s, "moat/public/+/x"));
    assert_true(sub(s, "moat"));
    assert_false(sub(s, "other/#"));
    policy_set_free(s);
}

static void test_subscribe_shared(void **state)
{
    (void)state;
    policy_set *s = set_of(hub_example, "d1", NULL);
    assert_true(sub(s, "$share/g/moat/d1/down/#"));
    assert_true(sub(s, "$share/g/moat/d1/down/cmd"));
    assert_false(sub(s, "$share/g/#"));
    assert_false(sub(s, "$share/g/moat/d2/down/#"));
    /* The group name is not a level of the filter: this one's inner filter
     * is "d1/down/x", which nothing allows. */
    assert_false(sub(s, "$share/moat/d1/down/x"));
    /* Denies are checked on the inner filter too. */
    assert_false(sub(s, "$share/g/moat/+/up/#"));
    /* Malformed shared filters are refused. */
    assert_false(sub(s, "$share/g"));
    assert_false(sub(s, "$share//moat/d1/down/x"));
    assert_false(sub(s, "$share/g+/moat/d1/down/x"));
    policy_set_free(s);

    s = set_of("allow subscribe moat/#\ndeny subscribe moat/secret/#\n", NULL, NULL);
    assert_true(sub(s, "$share/g/moat/public/#"));
    assert_false(sub(s, "$share/g/moat/secret/x"));
    assert_false(sub(s, "$share/g/moat/#"));
    policy_set_free(s);
}

static void test_fail_closed_sets(void **state)
{
    (void)state;
    /* No documents: nothing, not even connect. */
    policy_set *s = NULL;
    assert_int_equal(policy_set_build(NULL, 0, NULL, &s), POLICY_OK);
    assert_false(policy_may_connect(s));
    assert_false(pub(s, "a"));
    assert_false(sub(s, "a"));
    assert_false(recv_(s, "a"));
    policy_set_free(s);

    /* Documents with no statements: the same. */
    policy_doc *empty = parse_ok("# nothing here\n");
    const policy_doc *docs[] = {empty, empty};
    assert_int_equal(policy_set_build(docs, 2, NULL, &s), POLICY_OK);
    assert_false(policy_may_connect(s));
    assert_false(pub(s, "a"));
    assert_false(sub(s, "a"));
    assert_false(recv_(s, "a"));
    policy_set_free(s);
    policy_doc_free(empty);

    /* The deny-all set. */
    assert_int_equal(policy_set_deny_all(&s), POLICY_OK);
    assert_non_null(s);
    assert_false(policy_may_connect(s));
    assert_false(pub(s, "a"));
    assert_false(pub(s, "$SYS/x"));
    assert_false(sub(s, "a"));
    assert_false(sub(s, "#"));
    assert_false(recv_(s, "a"));
    policy_set_free(s);
    assert_int_equal(policy_set_deny_all(NULL), POLICY_ERR_SYNTAX);

    /* No set at all. */
    assert_false(policy_may_connect(NULL));
    assert_false(pub(NULL, "a"));
    assert_false(sub(NULL, "a"));
    assert_false(recv_(NULL, "a"));
}

static void test_all_action(void **state)
{
    (void)state;
    policy_set *s = set_of("allow all moat/x/#\ndeny all moat/x/secret/#\n", NULL, NULL);
    /* The deny's connect part wins as well. */
    assert_false(policy_may_connect(s));
    assert_true(pub(s, "moat/x/a"));
    assert_true(sub(s, "moat/x/a/#"));
    assert_true(recv_(s, "moat/x/a"));
    assert_false(pub(s, "moat/x/secret/a"));
    assert_false(sub(s, "moat/x/+/a"));
    assert_false(recv_(s, "moat/x/secret"));
    policy_set_free(s);

    s = set_of("allow all moat/x/#\n", NULL, NULL);
    assert_true(policy_may_connect(s));
    assert_true(pub(s, "moat/x"));
    assert_true(sub(s, "moat/x/#"));
    assert_true(recv_(s, "moat/x/y"));
    assert_false(pub(s, "moat/y"));
    policy_set_free(s);
}

static void test_service_policy(void **state)
{
    (void)state;
    static const char doc[] = "allow connect\n"
                              "allow publish   svc/${service}/#\n"
                              "allow subscribe moat/+/up/#\n"
                              "allow receive   moat/+/up/#\n"
                              "allow publish   moat/${device}/down/#\n"
                              "deny  all       svc/${device}/#\n";
    policy_set *s = set_of(doc, NULL, "billing");
    assert_true(policy_may_connect(s));
    assert_true(pub(s, "svc/billing/x"));
    assert_true(pub(s, "svc/billing"));
    assert_false(pub(s, "svc/other/x"));
    assert_false(pub(s, "svc/billingx/x"));
    /* ${device} has no value for a service: the statement matches nothing,
     * neither as an allow (no publishing to any device's down topics) nor
     * as a deny (its connect part does not deny the connection). */
    assert_false(pub(s, "moat/d1/down/x"));
    assert_false(pub(s, "moat//down/x"));
    assert_false(pub(s, "moat/${device}/down/x"));
    assert_true(sub(s, "moat/+/up/#"));
    assert_true(sub(s, "moat/d1/up/temp"));
    assert_false(sub(s, "moat/#"));
    assert_true(recv_(s, "moat/d1/up/temp"));
    policy_set_free(s);

    /* The same document for a device: the service statements drop out and
     * the device ones apply, including the deny. */
    s = set_of(doc, "d1", NULL);
    assert_true(policy_may_connect(s) == false);
    assert_false(pub(s, "svc/billing/x"));
    assert_true(pub(s, "moat/d1/down/x"));
    assert_false(pub(s, "moat/d2/down/x"));
    policy_set_free(s);
}

/* ---- filter algebra: named cases ------------------------------------------------ */

struct algebra_case {
    const char *a;
    const char *b;
    bool covers; /* covers(a, b) */
    bool overlaps;
};

static void test_filter_algebra_examples(void **state)
{
    (void)state;
    static const struct algebra_case cases[] = {
        {"a", "a", true, true},
        {"a", "b", false, false},
        {"+", "a", true, true},
        {"a", "+", false, true},
        {"+", "+", true, true},
        {"#", "a/b/c", true, true},
        {"a/#", "a", true, true}, /* '#' includes its parent level */
        {"a", "a/#", false, true},
        {"a/#", "a/#", true, true},
        {"a/+", "a/#", false, true},
        {"a/+/#", "a/#", false, true},
        {"a/+", "a/b/c", false, false},
        {"a/#", "b/#", false, false},
        {"+/+", "a/#", false, true},
        {"+/b", "a/+", false, true},
        {"a/b", "a/b/c", false, false},
        {"moat/d1/down/#", "moat/+/down/#", false, true},
        {"moat/+/up/#", "moat/d1/up/x", true, true},
        {"moat/secret/#", "moat/#", false, true},
        {"moat/secret/#", "moat/+", false, true},
        {"moat/secret/#", "moat/public/#", false, false},
        /* '$' topics: a wildcard first level never reaches them. */
        {"#", "$SYS/#", false, false},
        {"#", "$SYS/x", false, false},
        {"+/x", "$a/x", false, false},
        {"+/#", "$SYS", false, false},
        {"#", "+/x", true, true},
        {"$SYS/#", "$SYS/x", true, true},
        {"$SYS/#", "#", false, false},
        {"$SYS/+", "+/+", false, false},
        {"a/#", "a/$x", true, true}, /* only the first level is special */
        {"+/+", "a/$x", true, true},
        /* The empty string is not a topic, so "#" matches nothing "+/#"
         * does not, and "/#" cannot match its parent "". */
        {"+/#", "#", true, true},
        {"#", "+/#", true, true},
        {"/+/#", "/#", true, true},
        {"/#", "/+/#", true, true},
        {"+/+/#", "+/#", false, true},
        {"+/+/#", "/#", true, true},
        {"/#", "+", false, false},
        {"+", "/#", false, false},
        {"/#", "#", false, true},
        {"/#", "/", true, true},
        {"/", "/#", false, true},
        {"+", "#", false, true},
        {"/", "+/+", false, true},
        {"+/+", "/", true, true},
        /* Invalid filters: covers refuses, overlaps assumes the worst. */
        {"#", "a/#/b", false, true},
        {"a/#/b", "a", false, true},
        {"", "a", false, true},
        {"a", "", false, true},
        {"a+", "a+", false, true},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct algebra_case *c = &cases[i];
        bool cov = policy_filter_covers(cstr(c->a), cstr(c->b));
        bool ovl = policy_filter_overlaps(cstr(c->a), cstr(c->b));
        bool ovl_rev = policy_filter_overlaps(cstr(c->b), cstr(c->a));
        if (cov != c->covers || ovl != c->overlaps || ovl_rev != c->overlaps)
            fail_msg("\"%s\" vs \"%s\": covers %d overlaps %d/%d, want %d %d", c->a, c->b, cov, ovl,
                     ovl_rev, c->covers, c->overlaps);
    }
}

/* ---- filter algebra: exhaustive check against topic sets ---------------------------
 *
 * Filters: 0..3 levels from {a, b, +, $s, ""}, optionally followed by "#"
 * (so at most 4 levels). Topics: 1..5 levels from {a, b, $s, ""}.
 *
 * Why this enumeration decides every pair of these filters: a topic that
 * separates two filters (matched by one and not the other, or by both) can
 * be cut to its first 5 levels and still separate them, because a filter of
 * at most 4 levels either ends in '#' (and keeps matching the cut topic) or
 * cannot match anything of 5 levels or more. A level value outside the
 * alphabet can only sit where both filters have a wildcard, or where one has
 * a wildcard and the other a literal; "a" or "b" (whichever differs from that
 * literal) then separates just as well, and neither is empty nor starts with
 * '$', the two properties matching treats specially. */

#define MAX_TOPICS  1400
#define MAX_FILTERS 320
#define WORDS       ((MAX_TOPICS + 63) / 64)

static char topics[MAX_TOPICS][24];
static size_t ntopics;
static char filters[MAX_FILTERS][24];
static size_t nfilters;
static uint64_t matched[MAX_FILTERS][WORDS];

static void join(char *out, size_t cap, const char *const *lv, size_t n, bool hash)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "/" : "", lv[i]);
    if (hash)
        snprintf(out + used, cap - used, "%s#", n ? "/" : "");
}

static void enumerate(void)
{
    static const char *const tl[] = {"a", "b", "$s", ""};
    static const char *const fl[] = {"a", "b", "+", "$s", ""};
    const char *lv[5];

    if (ntopics > 0)
        return;
    for (size_t n = 1; n <= 5; n++) {
        size_t total = 1;
        for (size_t i = 0; i < n; i++)
            total *= COUNT(tl);
        for (size_t code = 0; code < total; code++) {
            size_t c = code;
            for (size_t i = 0; i < n; i++, c /= COUNT(tl))
                lv[i] = tl[c % COUNT(tl)];
            char t[24];
            join(t, sizeof(t), lv, n, false);
            if (t[0] == '\0')
                continue; /* the empty string is not a topic name */
            assert_int_equal(codec_topic_name_check(cstr(t)), CODEC_OK);
            assert_true(ntopics < MAX_TOPICS);
            memcpy(topics[ntopics++], t, sizeof(t));
        }
    }
    for (size_t n = 0; n <= 3; n++) {
        size_t total = 1;
        for (size_t i = 0; i < n; i++)
            total *= COUNT(fl);
        for (int hash = 0; hash <= 1; hash++) {
            for (size_t code = 0; code < total; code++) {
                size_t c = code;
                for (size_t i = 0; i < n; i++, c /= COUNT(fl))
                    lv[i] = fl[c % COUNT(fl)];
                char f[24];
                join(f, sizeof(f), lv, n, hash);
                if (codec_topic_filter_check(cstr(f)) != CODEC_OK)
                    continue; /* "" */
                assert_true(nfilters < MAX_FILTERS);
                memcpy(filters[nfilters], f, sizeof(f));
                for (size_t t = 0; t < ntopics; t++) {
                    if (codec_topic_matches(cstr(f), cstr(topics[t])))
                        matched[nfilters][t / 64] |= (uint64_t)1 << (t % 64);
                }
                nfilters++;
            }
        }
    }
    assert_int_equal(ntopics, 4 + 16 + 64 + 256 + 1024 - 1);
    assert_int_equal(nfilters, 1 + 9 + 50 + 250);
}

static bool set_subset(const uint64_t *a, const uint64_t *b)
{
    for (size_t w = 0; w < WORDS; w++) {
        if (a[w] & ~b[w])
            return false;
    }
    return true;
}

static bool set_meet(const uint64_t *a, const uint64_t *b)
{
    for (size_t w = 0; w < WORDS; w++) {
        if (a[w] & b[w])
            return true;
    }
    return false;
}

static size_t filter_index(const char *f)
{
    for (size_t i = 0; i < nfilters; i++) {
        if (strcmp(filters[i], f) == 0)
            return i;
    }
    fail_msg("filter %s not enumerated", f);
    return 0;
}

static void test_filter_algebra_exhaustive(void **state)
{
    (void)state;
    enumerate();
    size_t ncovers = 0;
    size_t noverlaps = 0;
    size_t failures = 0;

    for (size_t o = 0; o < nfilters; o++) {
        /* Every filter matches some topic: no vacuous inclusions below. */
        assert_true(set_meet(matched[o], matched[o]));
        for (size_t i = 0; i < nfilters; i++) {
            bool want_cov = set_subset(matched[i], matched[o]);
            bool want_ovl = set_meet(matched[i], matched[o]);
            bool cov = policy_filter_covers(cstr(filters[o]), cstr(filters[i]));
            bool ovl = policy_filter_overlaps(cstr(filters[o]), cstr(filters[i]));
            if (cov != want_cov || ovl != want_ovl) {
                if (failures++ < 20)
                    print_error("\"%s\" vs \"%s\": covers %d (want %d), overlaps %d (want %d)\n",
                                filters[o], filters[i], cov, want_cov, ovl, want_ovl);
            }
            ncovers += want_cov;
            noverlaps += want_ovl;
        }
    }
    assert_int_equal(failures, 0);
    /* The grammar gives a real mix of answers. */
    size_t pairs = nfilters * nfilters;
    assert_true(ncovers > nfilters && ncovers < pairs / 4);
    assert_true(noverlaps > pairs / 10 && noverlaps < pairs - pairs / 10);
}

static void test_filter_algebra_topics(void **state)
{
    (void)state;
    enumerate();
    /* A topic name without wildcards is also a filter whose only topic is
     * itself: covering it or overlapping it is matching it. */
    for (size_t f = 0; f < nfilters; f++) {
        for (size_t t = 0; t < ntopics; t++) {
            codec_bytes fb = cstr(filters[f]);
            codec_bytes tb = cstr(topics[t]);
            bool m = codec_topic_matches(fb, tb);
            if (policy_filter_covers(fb, tb) != m || policy_filter_overlaps(fb, tb) != m ||
                policy_filter_overlaps(tb, fb) != m)
                fail_msg("\"%s\" vs topic \"%s\": matches %d", filters[f], topics[t], m);
            /* A single topic covers only itself. */
            if (policy_filter_covers(tb, fb) != (strcmp(filters[f], topics[t]) == 0))
                fail_msg("topic \"%s\" covers \"%s\"", topics[t], filters[f]);
        }
    }
}

/* A set for "allow ACTION F" (and more lines), from a format. */
PRINTF_LIKE(1, 2)
static policy_set *set_fmt(const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    return set_of(text, NULL, NULL);
}

static void test_decisions_exhaustive(void **state)
{
    (void)state;
    enumerate();
    size_t all = filter_index("#");
    size_t dollar = filter_index("$s/#");

    for (size_t f = 0; f < nfilters; f++) {
        const char *fs = filters[f];

        /* publish and receive: exactly the topics the filter matches; with
         * the filter denied under allows for everything, exactly the rest. */
        policy_set *allow = set_fmt("allow publish %s\nallow receive %s\n", fs, fs);
        policy_set *deny = set_fmt("allow all #\nallow all $s/#\n"
                                   "deny publish %s\ndeny receive %s\n",
                                   fs, fs);
        for (size_t t = 0; t < ntopics; t++) {
            bool m = (matched[f][t / 64] >> (t % 64)) & 1u;
            if (pub(allow, topics[t]) != m || recv_(allow, topics[t]) != m ||
                pub(deny, topics[t]) == m || recv_(deny, topics[t]) == m)
                fail_msg("filter \"%s\", topic \"%s\"", fs, topics[t]);
        }
        policy_set_free(allow);
        policy_set_free(deny);

        /* subscribe: allowed iff covered; with the filter denied under
         * allows for everything, iff some allow covers and no overlap. */
        allow = set_fmt("allow subscribe %s\n", fs);
        deny = set_fmt("allow subscribe #\nallow subscribe $s/#\ndeny subscribe %s\n", fs);
        for (size_t r = 0; r < nfilters; r++) {
            bool cov = set_subset(matched[r], matched[f]);
            bool free_ =
                (set_subset(matched[r], matched[all]) || set_subset(matched[r], matched[dollar])) &&
                !set_meet(matched[r], matched[f]);
            if (sub(allow, filters[r]) != cov || sub(deny, filters[r]) != free_)
                fail_msg("allow/deny \"%s\", request \"%s\"", fs, filters[r]);
        }
        policy_set_free(allow);
        policy_set_free(deny);
    }
}

/* Sessions of one principal share a set: it lives until its last holder
 * lets go, and answers the same for every holder meanwhile (the sanitizer
 * build reports a use after free or a leak). */
static void test_set_shared_by_holders(void **state)
{
    (void)state;
    policy_set *set = set_of("allow connect\nallow publish moat/${device}/up/#\n", "d1", NULL);
    assert_non_null(set);
    policy_set *again = policy_set_ref(set);
    assert_ptr_equal(again, set);
    assert_null(policy_set_ref(NULL));
    policy_set_free(set);
    assert_true(policy_may_publish(again, (codec_bytes){(const uint8_t *)"moat/d1/up/t", 12}));
    assert_false(policy_may_publish(again, (codec_bytes){(const uint8_t *)"moat/d2/up/t", 12}));
    policy_set_free(again);

    policy_set *none = NULL;
    assert_int_equal(policy_set_deny_all(&none), POLICY_OK);
    policy_set_ref(none);
    policy_set_free(none);
    assert_false(policy_may_connect(none));
    policy_set_free(none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_hub_example),
        cmocka_unit_test(test_set_shared_by_holders),
        cmocka_unit_test(test_parse_layout),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_error_buffer),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_build_vars_refused),
        cmocka_unit_test(test_build_limits_and_args),
        cmocka_unit_test(test_device_default),
        cmocka_unit_test(test_deny_wins),
        cmocka_unit_test(test_subscribe_covers_not_matches),
        cmocka_unit_test(test_subscribe_deny_overlap),
        cmocka_unit_test(test_subscribe_shared),
        cmocka_unit_test(test_fail_closed_sets),
        cmocka_unit_test(test_all_action),
        cmocka_unit_test(test_service_policy),
        cmocka_unit_test(test_filter_algebra_examples),
        cmocka_unit_test(test_filter_algebra_exhaustive),
        cmocka_unit_test(test_filter_algebra_topics),
        cmocka_unit_test(test_decisions_exhaustive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
