/*
 * Unit tests for src/hub/tree.c, the topic trie behind routing and retained
 * messages. The MQTT 5 section 4.7 examples are checked in both directions
 * (stored filters matched by a topic name, stored topic names matched by a
 * filter), with empty levels and the '$' rule. Randomized differential tests
 * (fixed seeds) compare every lookup with a brute-force scan that asks
 * codec_topic_matches() about each stored path, on valid names and filters
 * and on unchecked ones with wildcards in odd places, before and after
 * pruning half of the paths. The rest: paths copied out of non-terminated
 * buffers, the 65535-byte / 65536-level limit (no recursion to overflow),
 * pruning, hash tables that grow and shrink under one node, 100k
 * subscriptions, and tree_free handing back every value (the sanitizer build
 * reports any leak).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tree.h"

static codec_bytes str(const char *s)
{
    codec_bytes b = {(const uint8_t *)s, strlen(s)};
    return b;
}

static bool bytes_eq(codec_bytes a, codec_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static tree *new_tree(void)
{
    tree *t = tree_new();
    assert_non_null(t);
    return t;
}

/* Store path with a value (the path's own string, never NULL). */
static tree_node *put(tree *t, const char *path)
{
    tree_node *n = tree_get(t, str(path), true);
    assert_non_null(n);
    *tree_value(n) = (void *)(uintptr_t)path;
    return n;
}

/* ---- collecting visits ------------------------------------------------- */

#define MAX_SEEN 64

struct seen {
    tree_node *nodes[MAX_SEEN];
    size_t n;
};

static void collect(tree_node *node, void *value, void *ctx)
{
    struct seen *s = ctx;

    assert_non_null(value);
    assert_ptr_equal(value, *tree_value(node));
    for (size_t i = 0; i < s->n; i++)
        assert_ptr_not_equal(s->nodes[i], node); /* at most once */
    assert_true(s->n < MAX_SEEN);
    s->nodes[s->n++] = node;
}

/* The visited paths must be exactly want[] (NULL-terminated), any order. */
static void expect_seen(const struct seen *s, const char *const *want, const char *what,
                        const char *query)
{
    size_t n = 0;
    for (; want[n]; n++) {
        bool found = false;
        for (size_t i = 0; i < s->n && !found; i++)
            found = bytes_eq(tree_path(s->nodes[i]), str(want[n]));
        if (!found)
            fail_msg("%s \"%s\": \"%s\" not visited", what, query, want[n]);
    }
    if (s->n != n) {
        for (size_t i = 0; i < s->n; i++) {
            codec_bytes p = tree_path(s->nodes[i]);
            print_message("visited \"%.*s\"\n", (int)p.len, (const char *)p.ptr);
        }
        fail_msg("%s \"%s\": %zu visited, want %zu", what, query, s->n, n);
    }
}

#define WANT(...)                                                                                  \
    (const char *const[])                                                                          \
    {                                                                                              \
        __VA_ARGS__, NULL                                                                          \
    }
#define NONE                                                                                       \
    (const char *const[])                                                                          \
    {                                                                                              \
        NULL                                                                                       \
    }

static void filters_for(tree *t, const char *topic, const char *const *want)
{
    struct seen s = {.n = 0};
    tree_match_filters(t, str(topic), collect, &s);
    expect_seen(&s, want, "topic", topic);
}

static void topics_for(tree *t, const char *filter, const char *const *want)
{
    struct seen s = {.n = 0};
    tree_match_topics(t, str(filter), collect, &s);
    expect_seen(&s, want, "filter", filter);
}

static void count_visit(tree_node *node, void *value, void *ctx)
{
    (void)node;
    (void)value;
    (*(size_t *)ctx)++;
}

static size_t walk_count(tree *t)
{
    size_t n = 0;
    tree_walk(t, count_visit, &n);
    return n;
}

/* ---- nodes and paths --------------------------------------------------- */

static void test_get_and_path(void **state)
{
    (void)state;
    tree *t = new_tree();

    /* Not NUL-terminated, inside a larger buffer that changes afterwards:
     * the tree must keep its own copy of exactly the view. */
    char buf[] = "a/b/cXYZ";
    codec_bytes in = {(const uint8_t *)buf, 5};
    tree_node *abc = tree_get(t, in, true);
    assert_non_null(abc);
    memset(buf, '?', sizeof(buf) - 1);
    assert_true(bytes_eq(tree_path(abc), str("a/b/c")));
    assert_ptr_equal(tree_get(t, str("a/b/c"), false), abc);
    assert_ptr_equal(tree_get(t, str("a/b/c"), true), abc);
    assert_null(*tree_value(abc));

    /* Intermediate nodes exist and know their paths. */
    tree_node *ab = tree_get(t, str("a/b"), false);
    assert_non_null(ab);
    assert_true(bytes_eq(tree_path(ab), str("a/b")));
    assert_true(bytes_eq(tree_path(tree_get(t, str("a"), false)), str("a")));

    /* A later insertion below an existing node has its own copy. */
    tree_node *abcd = tree_get(t, str("a/b/c/d/e"), true);
    assert_true(bytes_eq(tree_path(abcd), str("a/b/c/d/e")));
    assert_true(bytes_eq(tree_path(tree_get(t, str("a/b/c/d"), false)), str("a/b/c/d")));

    /* Missing, and not paths at all. */
    assert_null(tree_get(t, str("a/x"), false));
    assert_null(tree_get(t, str("b"), false));
    assert_null(tree_get(t, str(""), true));
    assert_null(tree_get(t, str("a/"), false));

    /* Wildcard levels are ordinary path components to tree_get. */
    tree_node *p = tree_get(t, str("+/#"), true);
    assert_true(bytes_eq(tree_path(p), str("+/#")));
    assert_ptr_equal(tree_get(t, str("+/#"), false), p);
    assert_null(tree_get(t, str("+/+"), false));
    assert_null(tree_get(t, str("#"), false));

    /* Nothing holds a value yet. */
    assert_int_equal(tree_count(t), 0);
    assert_int_equal(walk_count(t), 0);
    tree_free(t, NULL);
}

/* 65535 bytes of '/' is 65536 empty levels, the deepest path there is: the
 * lookups and tree_free must not recurse, and 65536 bytes is refused. */
static void test_deepest_path(void **state)
{
    (void)state;
    tree *t = new_tree();
    size_t n = CODEC_MAX_STRING;
    uint8_t *slashes = malloc(n + 1);
    assert_non_null(slashes);
    memset(slashes, '/', n + 1);

    codec_bytes too_long = {slashes, n + 1};
    assert_null(tree_get(t, too_long, true));

    codec_bytes deep = {slashes, n};
    tree_node *leaf = tree_get(t, deep, true);
    assert_non_null(leaf);
    assert_true(bytes_eq(tree_path(leaf), deep));
    *tree_value(leaf) = slashes;

    /* A "#" at the bottom as well. */
    uint8_t *filter = malloc(n);
    assert_non_null(filter);
    memset(filter, '/', n);
    filter[n - 1] = '#';
    codec_bytes deep_hash = {filter, n};
    tree_node *hash = tree_get(t, deep_hash, true);
    assert_non_null(hash);
    *tree_value(hash) = filter;

    struct seen s = {.n = 0};
    tree_match_filters(t, deep, collect, &s);
    assert_int_equal(s.n, 2);
    s.n = 0;
    tree_match_topics(t, str("#"), collect, &s);
    assert_int_equal(s.n, 1);
    assert_ptr_equal(s.nodes[0], leaf);
    s.n = 0;
    tree_match_topics(t, deep, collect, &s);
    assert_int_equal(s.n, 1);
    s.n = 0;
    tree_match_topics(t, deep_hash, collect, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(tree_count(t), 2);

    /* Pruning the leaf removes its now-useless ancestors, but stops where
     * the "#" branch hangs. */
    *tree_value(leaf) = NULL;
    tree_prune(t, leaf);
    assert_null(tree_get(t, deep, false));
    assert_ptr_equal(tree_get(t, deep_hash, false), hash);
    *tree_value(hash) = NULL;
    tree_prune(t, hash);
    assert_null(tree_get(t, str("/"), false));
    assert_int_equal(tree_count(t), 0);

    /* And once more, freed by tree_free this time. */
    assert_non_null(tree_get(t, deep, true));
    tree_free(t, NULL);
    free(filter);
    free(slashes);
}

/* ---- MQTT 5 section 4.7 ------------------------------------------------ */

static void test_spec_filters(void **state)
{
    (void)state;
    tree *t = new_tree();
    const char *subs[] = {
        "sport/tennis/player1/#",
        "sport/#",
        "sport/tennis/+",
        "sport/+",
        "+/+",
        "/+",
        "+",
        "#",
        "+/tennis/#",
        "$SYS/#",
        "$SYS/monitor/+",
        "+/monitor/Clients",
        "ACCOUNTS",
        "Accounts payable",
        "sport/tennis/player1",
    };
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        put(t, subs[i]);
    assert_int_equal(tree_count(t), sizeof(subs) / sizeof(subs[0]));

    filters_for(t, "sport/tennis/player1",
                WANT("sport/tennis/player1/#", "sport/#", "sport/tennis/+", "#", "+/tennis/#",
                     "sport/tennis/player1"));
    filters_for(t, "sport/tennis/player1/ranking",
                WANT("sport/tennis/player1/#", "sport/#", "#", "+/tennis/#"));
    filters_for(t, "sport/tennis/player1/score/wimbledon",
                WANT("sport/tennis/player1/#", "sport/#", "#", "+/tennis/#"));
    filters_for(t, "sport/tennis/player2", WANT("sport/#", "sport/tennis/+", "#", "+/tennis/#"));
    filters_for(t, "sport", WANT("sport/#", "+", "#"));
    filters_for(t, "sport/", WANT("sport/#", "sport/+", "+/+", "#"));
    filters_for(t, "sport/tennis", WANT("sport/#", "sport/+", "+/+", "#", "+/tennis/#"));
    filters_for(t, "/finance", WANT("+/+", "/+", "#"));
    filters_for(t, "$SYS/monitor/Clients", WANT("$SYS/#", "$SYS/monitor/+"));
    filters_for(t, "$SYS", WANT("$SYS/#"));
    filters_for(t, "ACCOUNTS", WANT("ACCOUNTS", "+", "#"));
    filters_for(t, "Accounts", WANT("+", "#"));
    filters_for(t, "Accounts payable", WANT("Accounts payable", "+", "#"));
    filters_for(t, "", NONE);
    tree_free(t, NULL);
}

static void test_spec_topics(void **state)
{
    (void)state;
    tree *t = new_tree();
    const char *retained[] = {
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "/finance",
        "$SYS/monitor/Clients",
        "$SYS",
        "ACCOUNTS",
        "Accounts payable",
    };
    for (size_t i = 0; i < sizeof(retained) / sizeof(retained[0]); i++)
        put(t, retained[i]);
    /* Filters stored in the same tree are not topic names. */
    put(t, "sport/+");
    put(t, "sport/tennis/#");
    put(t, "+");

    topics_for(t, "sport/tennis/player1/#",
               WANT("sport/tennis/player1", "sport/tennis/player1/ranking",
                    "sport/tennis/player1/score/wimbledon"));
    topics_for(t, "sport/#",
               WANT("sport", "sport/", "sport/tennis", "sport/tennis/player1",
                    "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon",
                    "sport/tennis/player2"));
    topics_for(t, "sport/tennis/+", WANT("sport/tennis/player1", "sport/tennis/player2"));
    topics_for(t, "sport/+", WANT("sport/", "sport/tennis"));
    topics_for(t, "+/+", WANT("sport/", "sport/tennis", "/finance"));
    topics_for(t, "/+", WANT("/finance"));
    topics_for(t, "+", WANT("sport", "ACCOUNTS", "Accounts payable"));
    topics_for(t, "#",
               WANT("sport", "sport/", "sport/tennis", "sport/tennis/player1",
                    "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon",
                    "sport/tennis/player2", "/finance", "ACCOUNTS", "Accounts payable"));
    topics_for(t, "$SYS/#", WANT("$SYS/monitor/Clients", "$SYS"));
    topics_for(t, "$SYS/monitor/+", WANT("$SYS/monitor/Clients"));
    topics_for(t, "+/monitor/Clients", NONE);
    topics_for(t, "$SYS", WANT("$SYS"));
    topics_for(t, "Accounts", NONE);
    topics_for(t, "sport/tennis/player1", WANT("sport/tennis/player1"));
    topics_for(t, "sport/tennis", WANT("sport/tennis"));
    topics_for(t, "", NONE);
    /* Unchecked filters: wildcards out of place match no topic name. */
    topics_for(t, "sport/#/player1", NONE);
    topics_for(t, "sport+", NONE);
    tree_free(t, NULL);
}

/* Empty levels are levels: "a//b" has three, "/" has two. */
static void test_empty_levels(void **state)
{
    (void)state;
    tree *t = new_tree();
    const char *paths[] = {"a//b", "a/+/b", "/", "+/+", "/+", "+/", "//",
                           "a/",   "/a",    "+", "#",   "/#", "a/#"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        put(t, paths[i]);

    filters_for(t, "a//b", WANT("a//b", "a/+/b", "#", "a/#"));
    filters_for(t, "/", WANT("/", "+/+", "/+", "+/", "#", "/#"));
    filters_for(t, "//", WANT("//", "#", "/#"));
    filters_for(t, "a/", WANT("a/", "+/+", "+/", "#", "a/#"));
    filters_for(t, "/a", WANT("/a", "+/+", "/+", "#", "/#"));
    filters_for(t, "a", WANT("+", "#", "a/#"));

    topics_for(t, "+/+", WANT("/", "a/", "/a"));
    topics_for(t, "/+", WANT("/", "/a"));
    topics_for(t, "+/", WANT("/", "a/"));
    topics_for(t, "/#", WANT("/", "//", "/a"));
    topics_for(t, "+/+/+", WANT("a//b", "//"));
    topics_for(t, "a/+/b", WANT("a//b"));
    topics_for(t, "a/#", WANT("a//b", "a/"));
    topics_for(t, "#", WANT("a//b", "/", "//", "a/", "/a"));
    topics_for(t, "/", WANT("/"));
    tree_free(t, NULL);
}

/* MQTT 4.7.2: topics starting with '$' are reached only by a filter whose
 * first level is written out; below the first level '$' is ordinary. */
static void test_dollar(void **state)
{
    (void)state;
    tree *t = new_tree();
    const char *paths[] = {"$SYS/x", "$SYS/+", "$SYS/#", "+/x",  "#",   "+",
                           "$",      "a/$b",   "a/+",    "+/$b", "$/#", "$x"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        put(t, paths[i]);

    filters_for(t, "$SYS/x", WANT("$SYS/x", "$SYS/+", "$SYS/#"));
    filters_for(t, "$SYS", WANT("$SYS/#"));
    filters_for(t, "$", WANT("$", "$/#"));
    filters_for(t, "$x", WANT("$x"));
    filters_for(t, "a/$b", WANT("a/$b", "a/+", "+/$b", "#"));

    topics_for(t, "#", WANT("a/$b"));
    topics_for(t, "+", NONE);
    topics_for(t, "+/x", NONE);
    topics_for(t, "+/$b", WANT("a/$b"));
    topics_for(t, "a/+", WANT("a/$b"));
    topics_for(t, "$SYS/#", WANT("$SYS/x"));
    topics_for(t, "$SYS/+", WANT("$SYS/x"));
    topics_for(t, "$/#", WANT("$"));
    topics_for(t, "$", WANT("$"));
    tree_free(t, NULL);
}

/* codec_topic_matches on input that never passed the checks: only a level
 * that is exactly "+" or "#" (last) is a wildcard, anything else literal. */
static void test_unchecked(void **state)
{
    (void)state;
    tree *t = new_tree();
    const char *paths[] = {"a/#/b", "a/#/#", "a/#", "a+", "a/b#", "#/x", "+/#"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        put(t, paths[i]);

    filters_for(t, "a/#/b", WANT("a/#/b", "a/#/#", "a/#", "+/#"));
    filters_for(t, "a/#", WANT("a/#/#", "a/#", "+/#"));
    filters_for(t, "a/+", WANT("a/#", "+/#"));
    filters_for(t, "a+", WANT("a+", "+/#"));
    filters_for(t, "#/x", WANT("#/x", "+/#"));
    filters_for(t, "a/b#", WANT("a/b#", "a/#", "+/#"));
    topics_for(t, "#", NONE);
    topics_for(t, "a+", NONE);
    tree_free(t, NULL);
}

/* ---- prune, count, walk ------------------------------------------------ */

static void test_prune(void **state)
{
    (void)state;
    tree *t = new_tree();
    tree_node *a = put(t, "a");
    tree_node *abc = put(t, "a/b/c");
    tree_node *plus = put(t, "a/+/c");
    tree_node *hash = put(t, "a/#");
    assert_int_equal(tree_count(t), 4);

    /* A node with a value, or with children, stays. */
    tree_prune(t, abc);
    assert_ptr_equal(tree_get(t, str("a/b/c"), false), abc);
    *tree_value(a) = NULL;
    tree_prune(t, a);
    assert_ptr_equal(tree_get(t, str("a"), false), a);

    /* Clearing a leaf removes it and the ancestors nothing else needs. */
    *tree_value(abc) = NULL;
    tree_prune(t, abc);
    assert_null(tree_get(t, str("a/b/c"), false));
    assert_null(tree_get(t, str("a/b"), false));
    assert_ptr_equal(tree_get(t, str("a"), false), a);
    filters_for(t, "a/b/c", WANT("a/+/c", "a/#"));

    *tree_value(plus) = NULL;
    tree_prune(t, plus);
    assert_null(tree_get(t, str("a/+"), false));
    filters_for(t, "a/b/c", WANT("a/#"));

    *tree_value(hash) = NULL;
    tree_prune(t, hash);
    assert_null(tree_get(t, str("a"), false));
    assert_int_equal(tree_count(t), 0);
    assert_int_equal(walk_count(t), 0);
    filters_for(t, "a", NONE);

    /* Nodes made without a value are pruned the same way. */
    tree_node *bare = tree_get(t, str("x/y/z"), true);
    assert_non_null(bare);
    tree_prune(t, bare);
    assert_null(tree_get(t, str("x"), false));

    /* The tree is usable after being emptied. */
    put(t, "a/b");
    filters_for(t, "a/b", WANT("a/b"));
    tree_free(t, NULL);
}

static void test_count_and_walk(void **state)
{
    (void)state;
    tree *t = new_tree();
    put(t, "a/b/c");
    put(t, "a/+/#");
    put(t, "$SYS/x");
    tree_get(t, str("q/r"), true); /* no value: not counted */
    assert_int_equal(tree_count(t), 3);
    assert_int_equal(walk_count(t), 3);
    *tree_value(tree_get(t, str("a/b/c"), false)) = NULL;
    assert_int_equal(tree_count(t), 2); /* counted, not cached */
    assert_int_equal(walk_count(t), 2);
    tree_free(t, NULL);
}

/* One node with many children: its table grows, then shrinks as they go. */
static void test_many_children(void **state)
{
    (void)state;
    enum { N = 3000 };
    tree *t = new_tree();
    static char names[N][16];
    tree_node *nodes[N];

    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "x/%d", i);
        nodes[i] = put(t, names[i]);
    }
    put(t, "x/+");
    for (int i = 0; i < N; i++)
        assert_ptr_equal(tree_get(t, str(names[i]), false), nodes[i]);

    size_t n = 0;
    tree_match_topics(t, str("x/+"), count_visit, &n);
    assert_int_equal(n, N);

    /* Remove all but every hundredth. */
    for (int i = 0; i < N; i++) {
        if (i % 100 == 0)
            continue;
        *tree_value(nodes[i]) = NULL;
        tree_prune(t, nodes[i]);
        assert_null(tree_get(t, str(names[i]), false));
    }
    for (int i = 0; i < N; i += 100)
        assert_ptr_equal(tree_get(t, str(names[i]), false), nodes[i]);
    n = 0;
    tree_match_topics(t, str("x/+"), count_visit, &n);
    assert_int_equal(n, N / 100);
    filters_for(t, "x/500", WANT("x/500", "x/+"));
    filters_for(t, "x/501", WANT("x/+"));
    tree_free(t, NULL);
}

/* ---- randomized differential tests ------------------------------------- */

/* splitmix64: a fixed sequence on every platform. */
static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t pick(size_t n)
{
    return (size_t)(rng() % n);
}

#define MAX_PATH    64
#define MAX_ENTRIES 4000

struct entry {
    char path[MAX_PATH];
    size_t len;
    tree_node *node;
    bool live;
    int hits;
};

struct world {
    tree *t;
    struct entry e[MAX_ENTRIES];
    size_t n;
    size_t live;
    bool checked; /* valid names and filters only */
};

static const char *const topic_levels[] = {"a", "b", "c", "", "$x"};
static const char *const odd_levels[] = {"a", "b", "", "$x", "+", "#", "a+", "#b", "$", "x#"};

/*
 * A random path into buf. Checked: a topic name, or (filter) a valid filter
 * with "+" anywhere and "#" only last. Unchecked: levels from odd_levels
 * anywhere, wildcards or not.
 */
static size_t random_path(char *buf, bool checked, bool filter)
{
    size_t levels = 1 + pick(6);
    size_t len = 0;

    for (size_t i = 0; i < levels; i++) {
        const char *lv;
        if (!checked)
            lv = odd_levels[pick(sizeof(odd_levels) / sizeof(odd_levels[0]))];
        else if (filter && pick(4) == 0)
            lv = "+";
        else if (filter && i + 1 == levels && pick(3) == 0)
            lv = "#";
        else
            lv = topic_levels[pick(sizeof(topic_levels) / sizeof(topic_levels[0]))];
        if (i > 0)
            buf[len++] = '/';
        size_t n = strlen(lv);
        memcpy(buf + len, lv, n);
        len += n;
    }
    if (len == 0) /* one empty level is no path; make it "/" */
        buf[len++] = '/';
    buf[len] = '\0';
    codec_bytes b = {(const uint8_t *)buf, len};
    if (checked && filter)
        assert_int_equal(codec_topic_filter_check(b), CODEC_OK);
    else if (checked)
        assert_int_equal(codec_topic_name_check(b), CODEC_OK);
    return len;
}

static void world_insert(struct world *w, bool filter)
{
    if (w->n == MAX_ENTRIES)
        return;
    struct entry *e = &w->e[w->n];
    e->len = random_path(e->path, w->checked, filter);
    codec_bytes p = {(const uint8_t *)e->path, e->len};
    tree_node *node = tree_get(w->t, p, true);
    assert_non_null(node);
    assert_true(bytes_eq(tree_path(node), p));
    if (*tree_value(node) != NULL)
        return; /* a duplicate path */
    *tree_value(node) = e;
    e->node = node;
    e->live = true;
    e->hits = 0;
    w->n++;
    w->live++;
}

static void hit(tree_node *node, void *value, void *ctx)
{
    struct world *w = ctx;
    struct entry *e = value;

    assert_true(e >= w->e && e < w->e + w->n);
    assert_true(e->live);
    assert_ptr_equal(e->node, node);
    assert_int_equal(e->hits, 0); /* each node at most once */
    e->hits++;
}

static bool has_wildcard(const struct entry *e)
{
    return memchr(e->path, '+', e->len) != NULL || memchr(e->path, '#', e->len) != NULL;
}

/* One lookup each way for a random query, compared with brute force. */
static void world_query(struct world *w)
{
    char q[MAX_PATH];
    size_t qlen = random_path(q, w->checked, false);
    codec_bytes topic = {(const uint8_t *)q, qlen};
    tree_match_filters(w->t, topic, hit, w);
    for (size_t i = 0; i < w->n; i++) {
        struct entry *e = &w->e[i];
        codec_bytes f = {(const uint8_t *)e->path, e->len};
        bool want = e->live && codec_topic_matches(f, topic);
        if (e->hits != (int)want)
            fail_msg("filter \"%s\" vs topic \"%s\": visited %d, want %d", e->path, q, e->hits,
                     (int)want);
        e->hits = 0;
    }

    qlen = random_path(q, w->checked, true);
    codec_bytes filter = {(const uint8_t *)q, qlen};
    tree_match_topics(w->t, filter, hit, w);
    for (size_t i = 0; i < w->n; i++) {
        struct entry *e = &w->e[i];
        codec_bytes tp = {(const uint8_t *)e->path, e->len};
        bool want = e->live && !has_wildcard(e) && codec_topic_matches(filter, tp);
        if (e->hits != (int)want)
            fail_msg("topic \"%s\" vs filter \"%s\": visited %d, want %d", e->path, q, e->hits,
                     (int)want);
        e->hits = 0;
    }
}

static void differential(bool checked, uint64_t seed)
{
    struct world *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->t = new_tree();
    w->checked = checked;
    rng_state = seed;

    for (int i = 0; i < 6000; i++)
        world_insert(w, pick(2) == 0);
    assert_true(w->n > 1000);
    assert_int_equal(tree_count(w->t), w->live);
    for (int i = 0; i < 1500; i++)
        world_query(w);

    /* Clear and prune about half; the rest must be untouched. */
    for (size_t i = 0; i < w->n; i++) {
        struct entry *e = &w->e[i];
        if (pick(2) == 0)
            continue;
        *tree_value(e->node) = NULL;
        tree_prune(w->t, e->node);
        e->live = false;
        e->node = NULL;
        w->live--;
    }
    for (size_t i = 0; i < w->n; i++) {
        struct entry *e = &w->e[i];
        codec_bytes p = {(const uint8_t *)e->path, e->len};
        tree_node *node = tree_get(w->t, p, false);
        if (e->live)
            assert_ptr_equal(node, e->node);
        else
            assert_true(node == NULL || *tree_value(node) == NULL);
    }
    assert_int_equal(tree_count(w->t), w->live);
    for (int i = 0; i < 1500; i++)
        world_query(w);

    /* Grow again over the holes. */
    for (int i = 0; i < 2000; i++)
        world_insert(w, pick(2) == 0);
    assert_int_equal(tree_count(w->t), w->live);
    for (int i = 0; i < 1500; i++)
        world_query(w);

    tree_free(w->t, NULL);
    free(w);
}

static void test_differential_checked(void **state)
{
    (void)state;
    differential(true, 1);
    differential(true, 0xC0FFEE);
}

static void test_differential_unchecked(void **state)
{
    (void)state;
    differential(false, 2);
    differential(false, 0xBADC0DE);
}

/* ---- scale and clean-up ------------------------------------------------ */

static void free_counted(void *value)
{
    size_t *freed = *(size_t **)value;
    (*freed)++;
    free(value);
}

/* 100k subscriptions of a fleet, each value on the heap and handed back by
 * tree_free; lookups must give exact counts. No timing assertions: the
 * point is that it completes (and leaks nothing under the sanitizers). */
static void test_large(void **state)
{
    (void)state;
    enum { DEVICES = 50000, GROUPS = 100 };
    tree *subs = new_tree();
    tree *retained = new_tree();
    size_t freed = 0;
    char path[64];

    for (int i = 0; i < DEVICES; i++) {
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof(path), "fleet/%d/dev%d/%s", i % GROUPS, i,
                     k == 0 ? "+" : "cmd/#");
            tree_node *n = tree_get(subs, str(path), true);
            assert_non_null(n);
            size_t **v = malloc(sizeof(*v));
            assert_non_null(v);
            *v = &freed;
            *tree_value(n) = v;
        }
        snprintf(path, sizeof(path), "fleet/%d/dev%d/temp", i % GROUPS, i);
        put(retained, "x"); /* same node every time; keeps one extra entry */
        tree_node *r = tree_get(retained, str(path), true);
        assert_non_null(r);
        *tree_value(r) = r;
    }
    put(subs, "fleet/+/+/temp");
    put(subs, "fleet/#");
    assert_int_equal(tree_count(subs), 2 * DEVICES + 2);
    assert_int_equal(tree_count(retained), DEVICES + 1);

    for (int i = 0; i < DEVICES; i += 97) {
        size_t n = 0;
        snprintf(path, sizeof(path), "fleet/%d/dev%d/temp", i % GROUPS, i);
        tree_match_filters(subs, str(path), count_visit, &n);
        assert_int_equal(n, 3); /* dev/+, fleet/+/+/temp, fleet/# */
        n = 0;
        snprintf(path, sizeof(path), "fleet/%d/dev%d/cmd", i % GROUPS, i);
        tree_match_filters(subs, str(path), count_visit, &n);
        assert_int_equal(n, 3); /* dev/+, dev/cmd/#, fleet/# */
    }

    size_t n = 0;
    tree_match_topics(retained, str("fleet/+/+/temp"), count_visit, &n);
    assert_int_equal(n, DEVICES);
    n = 0;
    tree_match_topics(retained, str("fleet/7/#"), count_visit, &n);
    assert_int_equal(n, DEVICES / GROUPS);
    n = 0;
    tree_match_topics(retained, str("#"), count_visit, &n);
    assert_int_equal(n, DEVICES + 1);
    n = 0;
    tree_match_topics(retained, str("fleet/7/dev7/temp"), count_visit, &n);
    assert_int_equal(n, 1);

    /* The two plain values (string literals) are cleared first: only heap
     * values go to free_counted. */
    *tree_value(tree_get(subs, str("fleet/+/+/temp"), false)) = NULL;
    *tree_value(tree_get(subs, str("fleet/#"), false)) = NULL;
    tree_free(subs, free_counted);
    assert_int_equal(freed, 2 * DEVICES);
    tree_free(retained, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_path),
        cmocka_unit_test(test_deepest_path),
        cmocka_unit_test(test_spec_filters),
        cmocka_unit_test(test_spec_topics),
        cmocka_unit_test(test_empty_levels),
        cmocka_unit_test(test_dollar),
        cmocka_unit_test(test_unchecked),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_count_and_walk),
        cmocka_unit_test(test_many_children),
        cmocka_unit_test(test_differential_checked),
        cmocka_unit_test(test_differential_unchecked),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
