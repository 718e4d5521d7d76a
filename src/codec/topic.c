/*
 * topic.c — topic name and filter syntax, shared subscriptions, and matching.
 *
 * The rules are those of MQTT 5 section 4.7 (the same in 3.1.1) and 4.8.2 for
 * "$share/NAME/filter". Names and filters are byte views, never C strings, and
 * every function here makes at most two bounded passes: no recursion, no
 * allocation, time linear in the input, so that a hostile subscriber cannot
 * make validation or matching expensive.
 *
 * Validation and matching are kept apart on purpose: the decoders validate
 * once on the way in, and the router then matches without re-checking.
 * Matching is still memory-safe on any input; on input that never passed the
 * checks it fails closed (an empty filter or topic matches nothing, and a
 * misplaced wildcard is compared as a plain byte).
 */
#include <stdint.h>

#include "codec.h"

#define SHARE_PREFIX     "$share/"
#define SHARE_PREFIX_LEN (sizeof(SHARE_PREFIX) - 1)

static bool starts_with_share(codec_bytes f)
{
    static const uint8_t prefix[] = SHARE_PREFIX;

    if (f.len < SHARE_PREFIX_LEN)
        return false;
    for (size_t i = 0; i < SHARE_PREFIX_LEN; i++) {
        if (f.ptr[i] != prefix[i])
            return false;
    }
    return true;
}

/* Wildcard placement of a filter without the shared prefix. Only ASCII bytes
 * are inspected, and UTF-8 continuation and lead bytes are all >= 0x80, so
 * this gives the same answer before or after the UTF-8 check. */
static bool wildcards_placed_well(codec_bytes f)
{
    const uint8_t *p = f.ptr;
    size_t n = f.len;

    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c != '+' && c != '#')
            continue;
        bool level_start = i == 0 || p[i - 1] == '/';
        bool level_end = i + 1 == n || p[i + 1] == '/';
        if (!level_start || !level_end)
            return false;
        /* '#' also has to be the last level, not merely a whole one. */
        if (c == '#' && i + 1 != n)
            return false;
    }
    return true;
}

codec_status codec_topic_name_check(codec_bytes topic)
{
    if (topic.len == 0 || topic.len > CODEC_MAX_STRING)
        return CODEC_ERR_TOPIC_NAME;
    for (size_t i = 0; i < topic.len; i++) {
        if (topic.ptr[i] == '+' || topic.ptr[i] == '#')
            return CODEC_ERR_TOPIC_NAME;
    }
    if (!codec_utf8_valid(topic))
        return CODEC_ERR_TOPIC_NAME;
    return CODEC_OK;
}

/* The part after "$share/": NAME, '/', then a non-empty filter. MQTT 5
 * forbids '/', '+' and '#' in NAME (4.8.2) so that the split is unambiguous
 * and no NAME looks like a wildcard. Writes *name and *inner only on success. */
static bool shared_rest_valid(codec_bytes rest, codec_bytes *name, codec_bytes *inner)
{
    size_t slash = 0;

    while (slash < rest.len && rest.ptr[slash] != '/') {
        if (rest.ptr[slash] == '+' || rest.ptr[slash] == '#')
            return false;
        slash++;
    }
    if (slash == 0 || slash == rest.len || slash + 1 == rest.len)
        return false;
    name->ptr = rest.ptr;
    name->len = slash;
    inner->ptr = rest.ptr + slash + 1;
    inner->len = rest.len - slash - 1;
    return true;
}

codec_status codec_topic_filter_check(codec_bytes filter)
{
    if (filter.len == 0 || filter.len > CODEC_MAX_STRING)
        return CODEC_ERR_TOPIC_FILTER;

    codec_bytes plain = filter;
    if (starts_with_share(filter)) {
        codec_bytes rest = {filter.ptr + SHARE_PREFIX_LEN, filter.len - SHARE_PREFIX_LEN};
        codec_bytes name;
        if (!shared_rest_valid(rest, &name, &plain))
            return CODEC_ERR_TOPIC_FILTER;
    }
    if (!wildcards_placed_well(plain))
        return CODEC_ERR_TOPIC_FILTER;
    /* UTF-8 last: the cheaper structural checks refuse most bad filters. */
    if (!codec_utf8_valid(filter))
        return CODEC_ERR_TOPIC_FILTER;
    return CODEC_OK;
}

bool codec_topic_shared_split(codec_bytes filter, codec_bytes *share_name, codec_bytes *inner)
{
    codec_bytes name = {NULL, 0};
    codec_bytes rest_filter = {NULL, 0};
    bool shared = false;

    /* The shape is checked again rather than assumed, so that a caller who
     * skipped codec_topic_filter_check gets false, not a half-made split. */
    if (starts_with_share(filter)) {
        codec_bytes rest = {filter.ptr + SHARE_PREFIX_LEN, filter.len - SHARE_PREFIX_LEN};
        shared = shared_rest_valid(rest, &name, &rest_filter);
    }
    if (share_name)
        *share_name = name;
    if (inner)
        *inner = rest_filter;
    return shared;
}

bool codec_topic_matches(codec_bytes filter, codec_bytes topic)
{
    const uint8_t *fp = filter.ptr;
    const uint8_t *tp = topic.ptr;
    size_t fn = filter.len;
    size_t tn = topic.len;
    size_t f = 0;
    size_t t = 0;

    if (fn == 0 || tn == 0)
        return false;
    /* MQTT 4.7.2: "$" topics belong to the server and are only reached by a
     * filter that names their first level literally. Any filter starting
     * with '+' or '#' is either that wildcard or (when malformed) a literal
     * that could not equal '$' anyway. */
    if (tp[0] == '$' && (fp[0] == '+' || fp[0] == '#'))
        return false;

    /* Invariant: f and t are at the start of a level (position 0, or just
     * after a '/'; a level may be empty and may end at the buffer end). */
    for (;;) {
        if (fp[f] == '#' && f + 1 == fn)
            return true;

        if (fp[f] == '+' && (f + 1 == fn || fp[f + 1] == '/')) {
            f++;
            while (t < tn && tp[t] != '/')
                t++;
        } else {
            while (f < fn && fp[f] != '/') {
                if (t == tn || tp[t] != fp[f])
                    return false;
                f++;
                t++;
            }
            if (t < tn && tp[t] != '/')
                return false;
        }

        /* Both levels ended; f and t are each at a '/' or at the end. */
        bool f_more = f < fn;
        bool t_more = t < tn;
        if (!t_more) {
            /* "a/#" also matches "a": '#' includes its parent level. */
            return !f_more || (f + 2 == fn && fp[f + 1] == '#');
        }
        if (!f_more)
            return false;
        f++;
        t++;
        /* A filter ending in '/' has an empty last level, which matches only
         * an empty last topic level. Returning here also keeps the loop head
         * from reading fp[fn]. */
        if (f == fn)
            return t == tn;
    }
}

size_t codec_topic_levels(codec_bytes topic)
{
    if (topic.len == 0)
        return 0;
    size_t levels = 1;
    for (size_t i = 0; i < topic.len; i++) {
        if (topic.ptr[i] == '/')
            levels++;
    }
    return levels;
}
