/*
 * fuzz_policy.c — libFuzzer target for src/policy.
 *
 * The input is a policy document. Whether or not it parses, its
 * whitespace-separated words are also used as topic names and filters: the
 * words of a document that nearly parses are the filters its statements
 * name, which is where the decisions and the filter algebra have their edge
 * cases. When it parses, the document is expanded for a device and for a
 * service and every decision is asked about every word.
 *
 * Besides "no crash, no leak, no undefined behaviour", it checks properties
 * that hold for any valid filters a and b, so that a wrong answer stops the
 * run as surely as a crash:
 *  - covers(a, a); covers(a, b) implies overlaps(a, b) (no valid filter
 *    matches nothing); overlaps is symmetric;
 *  - for a topic name t that is also a valid filter, covers(a, t),
 *    overlaps(a, t) and codec_topic_matches(a, t) agree;
 *  - the deny-all set allows nothing; the error message is terminated.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "policy.h"

#define MAX_WORDS 16

static void check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static size_t words_of(const uint8_t *data, size_t size, codec_bytes *w, size_t max)
{
    size_t n = 0;
    size_t i = 0;
    while (i < size && n < max) {
        while (i < size &&
               (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
            i++;
        size_t start = i;
        while (i < size && data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r')
            i++;
        if (i > start) {
            w[n].ptr = data + start;
            w[n].len = i - start;
            n++;
        }
    }
    return n;
}

static bool is_filter(codec_bytes f)
{
    return codec_topic_filter_check(f) == CODEC_OK;
}

static void check_algebra(const codec_bytes *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            bool cov = policy_filter_covers(w[i], w[j]);
            bool ovl = policy_filter_overlaps(w[i], w[j]);
            if (!is_filter(w[i]) || !is_filter(w[j])) {
                /* The answers that refuse. */
                check(!cov && ovl);
                continue;
            }
            check(!cov || ovl);
            check(ovl == policy_filter_overlaps(w[j], w[i]));
            if (i == j)
                check(cov);
            if (codec_topic_name_check(w[j]) == CODEC_OK) {
                bool m = codec_topic_matches(w[i], w[j]);
                check(cov == m && ovl == m);
            }
        }
    }
}

static void ask(const policy_set *set, const codec_bytes *w, size_t n)
{
    static const char *const fixed[] = {"moat/d1/up/x", "moat/d1/down/#", "#", "$SYS/x",
                                        "$share/g/moat/d1/down/#"};
    for (size_t i = 0; i < n; i++) {
        (void)policy_may_publish(set, w[i]);
        (void)policy_may_receive(set, w[i]);
        (void)policy_may_subscribe(set, w[i]);
    }
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        codec_bytes b = {(const uint8_t *)fixed[i], strlen(fixed[i])};
        (void)policy_may_publish(set, b);
        (void)policy_may_receive(set, b);
        (void)policy_may_subscribe(set, b);
    }
    (void)policy_may_connect(set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    codec_bytes w[MAX_WORDS];
    size_t n = words_of(data, size, w, MAX_WORDS);
    check_algebra(w, n);

    char err[160];
    policy_doc *doc = NULL;
    policy_status st = policy_parse((const char *)data, size, &doc, err, sizeof(err));
    check(memchr(err, '\0', sizeof(err)) != NULL);
    check((st == POLICY_OK) == (doc != NULL));

    if (st == POLICY_OK) {
        check(policy_doc_count(doc) <= POLICY_MAX_STATEMENTS);
        const policy_doc *docs[] = {doc, doc};
        static const policy_vars vars[] = {
            {{(const uint8_t *)"d1", 2}, {NULL, 0}},
            {{NULL, 0}, {(const uint8_t *)"billing", 7}},
        };
        for (size_t v = 0; v < sizeof(vars) / sizeof(vars[0]); v++) {
            policy_set *set = NULL;
            if (policy_set_build(docs, 2, &vars[v], &set) == POLICY_OK)
                ask(set, w, n);
            policy_set_free(set);
        }
        policy_doc_free(doc);
    }

    policy_set *none = NULL;
    if (policy_set_deny_all(&none) == POLICY_OK) {
        check(!policy_may_connect(none));
        for (size_t i = 0; i < n; i++) {
            check(!policy_may_publish(none, w[i]));
            check(!policy_may_receive(none, w[i]));
            check(!policy_may_subscribe(none, w[i]));
        }
        policy_set_free(none);
    }
    return 0;
}
