/*
 * filter.c — the topic-filter algebra behind subscribe decisions: does one
 * filter cover another (every topic name the inner one matches, the outer one
 * matches too), and do two filters overlap (some topic name matches both)?
 *
 * A SUBSCRIBE asks for a filter, not a topic, so the policy cannot simply
 * match: "moat/+" matches the topic "moat/#" byte for byte, yet a
 * subscription to "moat/#" receives far more than "moat/+" allows. The
 * answers here are about the sets of topic names the filters match under
 * codec_topic_matches, and the unit tests check them against those sets by
 * brute force.
 *
 * Three details of that matching make the set view differ from a naive level
 * by level comparison, and each is handled below where it bites:
 *  - '#' also matches its parent level ("a/#" matches "a");
 *  - a filter whose first level is '+' or '#' never matches a topic starting
 *    with '$' (MQTT 4.7.2), so "#" does not cover "$SYS/x" while it does
 *    cover "+/x";
 *  - the empty string is not a topic name, so the one-level topic "" does
 *    not exist: "+/#" covers "#" (the only topic "#" could add, the empty
 *    one, is not a topic), "/+/#" covers "/#" ("/#" cannot match its parent,
 *    the empty topic), and "/#" does not overlap "+".
 *
 * Both functions walk the two filters once, level by level: no recursion, no
 * allocation, linear time, so a long requested filter cannot make a
 * decision expensive.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "policy.h"

/* Walks the levels of a filter: "a//b" gives "a", "", "b"; "a/" gives "a",
 * "". Levels are views into the filter. */
typedef struct level_iter {
    const uint8_t *p;
    size_t n;
    size_t pos;
    bool done;
} level_iter;

static level_iter levels_of(codec_bytes f)
{
    level_iter it = {f.ptr, f.len, 0, false};
    return it;
}

/* Next level into *lvl; false once every level has been returned. */
static bool next_level(level_iter *it, codec_bytes *lvl)
{
    if (it->done)
        return false;
    size_t end = it->pos;
    while (end < it->n && it->p[end] != '/')
        end++;
    lvl->ptr = it->p + it->pos;
    lvl->len = end - it->pos;
    if (end == it->n)
        it->done = true;
    else
        it->pos = end + 1;
    return true;
}

static bool is_hash(codec_bytes lvl)
{
    return lvl.len == 1 && lvl.ptr[0] == '#';
}

static bool is_plus(codec_bytes lvl)
{
    return lvl.len == 1 && lvl.ptr[0] == '+';
}

static bool same(codec_bytes a, codec_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Does the filter's first level exclude '$' topics (MQTT 4.7.2)? In a valid
 * filter a wildcard is alone in its level, so the first byte tells. */
static bool hides_dollar(codec_bytes f)
{
    return f.ptr[0] == '+' || f.ptr[0] == '#';
}

bool policy_covers_valid(codec_bytes outer, codec_bytes inner)
{
    /* A wildcard first level in outer never reaches '$' topics; if inner
     * names a '$' first level, all of its topics are out of outer's reach.
     * (An inner with a wildcard first level avoids them too: no conflict.) */
    if (hides_dollar(outer) && inner.ptr[0] == '$')
        return false;

    level_iter o = levels_of(outer);
    level_iter i = levels_of(inner);
    bool inner_first_empty = false;

    for (size_t k = 0;; k++) {
        codec_bytes lo = {NULL, 0};
        codec_bytes li = {NULL, 0};
        bool has_o = next_level(&o, &lo);
        bool has_i = next_level(&i, &li);

        /* Outer '#' takes whatever inner has left, including nothing at all
         * (its parent-level rule): "a/#" covers "a" and "a/+/#". */
        if (has_o && is_hash(lo))
            return true;

        if (has_i && is_hash(li)) {
            /* Inner reaches every depth from k on, the parent included. Only
             * "+/#" here can follow it that deep without a '#' of its own,
             * and it misses just the parent: the inner prefix of k levels.
             * That prefix is no topic when it is empty (k == 0) or is the
             * one empty level (k == 1, inner began with ""). */
            codec_bytes next;
            if (!has_o || !is_plus(lo) || !next_level(&o, &next) || !is_hash(next))
                return false;
            return k == 0 || (k == 1 && inner_first_empty);
        }

        /* Without '#' a filter matches topics of exactly its own depth. */
        if (!has_o || !has_i)
            return has_o == has_i;

        if (k == 0)
            inner_first_empty = li.len == 0;
        if (is_plus(lo))
            continue; /* any one level: a literal or '+' */
        if (is_plus(li) || !same(lo, li))
            return false;
    }
}

bool policy_overlaps_valid(codec_bytes a, codec_bytes b)
{
    /* The topics both match are those of one pattern built level by level
     * (a literal against '+' gives the literal, '+' against '+' gives '+',
     * '#' gives whatever the other has left). Some topic matches the pattern
     * unless its first level is a '$' literal that a wildcard first level of
     * a or b forbids, or the pattern is exactly the one empty level. */
    bool no_dollar = hides_dollar(a) || hides_dollar(b);
    bool first_empty = false;
    level_iter ia = levels_of(a);
    level_iter ib = levels_of(b);

    for (size_t k = 0;; k++) {
        codec_bytes la = {NULL, 0};
        codec_bytes lb = {NULL, 0};
        bool has_a = next_level(&ia, &la);
        bool has_b = next_level(&ib, &lb);

        if ((has_a && is_hash(la)) || (has_b && is_hash(lb))) {
            bool a_hash = has_a && is_hash(la);
            codec_bytes other = a_hash ? lb : la;
            bool has_other = a_hash ? has_b : has_a;
            if (k == 0) {
                /* The pattern is the other filter, whose topics may start
                 * with '$' only when it names that first level literally,
                 * and this filter's leading '#' forbids exactly those. */
                return !(other.len > 0 && other.ptr[0] == '$');
            }
            /* With the other filter over, the pattern is the prefix so far
             * (parent rule); it is empty of topics only as the lone "". */
            return has_other || !(k == 1 && first_empty);
        }

        /* Both over at once: the pattern is their common levels, which
         * is never the lone "" (neither filter is empty). Only one over:
         * different depths and no '#' to bridge them. */
        if (!has_a || !has_b)
            return has_a == has_b;

        codec_bytes common;
        if (is_plus(la))
            common = lb;
        else if (is_plus(lb))
            common = la;
        else if (same(la, lb))
            common = la;
        else
            return false;

        if (k == 0 && !is_plus(common)) {
            if (no_dollar && common.len > 0 && common.ptr[0] == '$')
                return false;
            first_empty = common.len == 0;
        }
    }
}

/* The public forms check their arguments so that they can be called on
 * anything. On a filter that is not valid they give the answer that refuses:
 * an allow does not cover it, a deny overlaps it. */
bool policy_filter_covers(codec_bytes outer, codec_bytes inner)
{
    if (codec_topic_filter_check(outer) != CODEC_OK || codec_topic_filter_check(inner) != CODEC_OK)
        return false;
    return policy_covers_valid(outer, inner);
}

bool policy_filter_overlaps(codec_bytes a, codec_bytes b)
{
    if (codec_topic_filter_check(a) != CODEC_OK || codec_topic_filter_check(b) != CODEC_OK)
        return true;
    return policy_overlaps_valid(a, b);
}
