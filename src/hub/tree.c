/*
 * tree.c — the hub's trie over MQTT topic levels (see tree.h for the API).
 *
 * One node per level of every stored path. A node's ordinary children sit in
 * a small hash table keyed by the level's bytes with SipHash-2-4 under a key
 * drawn at random per tree, so that a client cannot pick level names that
 * all land in one bucket; the "+" and "#" children have their own pointers
 * because the routing lookup asks for them at every level.
 *
 * Paths are not stored once per node: that costs the square of a path's
 * length, and "/////..." (65535 bytes, 65536 levels) would take gigabytes.
 * Instead each tree_get that creates nodes copies the whole path once, into
 * the shallowest node it creates, and every node made by that call points
 * into that copy (its path is a prefix of the copy, its level a suffix of its
 * path). The shallowest node is an ancestor of all the others, and a node
 * with children is never pruned, so the copy outlives every node that points
 * into it. Cost: memory linear in the bytes inserted; a node kept alive by
 * later children keeps the whole copy it was created with.
 *
 * The lookups use no stack and no recursion: every node knows its parent,
 * and a child knows its place among its siblings (its cached hash gives its
 * bucket), so a depth-first walk can always find where to go next from where
 * it is. Matching therefore allocates nothing and cannot run out of stack,
 * however many levels a topic has. Each lookup agrees with
 * codec_topic_matches() on every non-empty input, checked or not: only a
 * level that is exactly "+" (anywhere) or exactly "#" (last) is a wildcard,
 * any other level compares byte for byte.
 *
 * Visitors may change values but must not create or prune nodes while a
 * lookup or walk is running: the walk's position is a node.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keyhash.h"
#include "tree.h"

enum {
    /* The node's path contains '+' or '#' somewhere, so it is not a topic
     * name. Inherited by every descendant. */
    NODE_WILD = 1u,
};

struct tree_node {
    tree_node *parent; /* NULL for the root */
    tree_node *next;   /* next child in the parent's bucket */
    /* Ordinary children (not "+", not "#"). With bits == 0 there is one
     * bucket, the pointer `one` itself, so that the common node with a single
     * child needs no table; otherwise `many` has 1 << bits buckets. */
    union {
        tree_node *one;
        tree_node **many;
    } kids;
    tree_node *plus;     /* the child whose level is "+" */
    tree_node *multi;    /* the child whose level is "#" */
    void *value;         /* the caller's */
    const uint8_t *path; /* full path; level = last level_len bytes */
    uint32_t hash;       /* SipHash of the level; 0 for "+" and "#" */
    uint32_t nkids;      /* ordinary children */
    uint16_t path_len;
    uint16_t level_len;
    uint8_t bits;
    uint8_t flags;
};

struct tree {
    tree_node root;
    uint8_t key[KEYHASH_KEY_BYTES];
};

/* ---- levels ------------------------------------------------------------ */

/* End of the level starting at `start` (the next '/' or the end). */
static size_t level_end(codec_bytes s, size_t start)
{
    const uint8_t *slash = memchr(s.ptr + start, '/', s.len - start);
    return slash ? (size_t)(slash - s.ptr) : s.len;
}

/* Start of the level that ends at `end` (scanning back to a '/'). */
static size_t level_start(codec_bytes s, size_t end)
{
    while (end > 0 && s.ptr[end - 1] != '/')
        end--;
    return end;
}

static bool is_level(const uint8_t *p, size_t n, uint8_t c)
{
    return n == 1 && p[0] == c;
}

static bool has_wildcard(const uint8_t *p, size_t n)
{
    return memchr(p, '+', n) != NULL || memchr(p, '#', n) != NULL;
}

static const uint8_t *node_level(const tree_node *n)
{
    return n->path + (n->path_len - n->level_len);
}

/* A node whose path starts with '$' is a "$" topic (only depth-1 nodes are
 * asked: below that the answer is inherited from the ancestor). */
static bool is_dollar(const tree_node *n)
{
    return n->path_len > 0 && n->path[0] == '$';
}

static uint32_t level_hash(const tree *t, const uint8_t *p, size_t n)
{
    return (uint32_t)keyhash(t->key, p, n);
}

/* ---- children ---------------------------------------------------------- */

static size_t nbuckets(const tree_node *n)
{
    return (size_t)1 << n->bits;
}

static tree_node **buckets(tree_node *n)
{
    return n->bits == 0 ? &n->kids.one : n->kids.many;
}

static tree_node *const *cbuckets(const tree_node *n)
{
    return n->bits == 0 ? &n->kids.one : n->kids.many;
}

static bool childless(const tree_node *n)
{
    return n->nkids == 0 && n->plus == NULL && n->multi == NULL;
}

/* The ordinary child with level p[0..len), if any. */
static tree_node *find_kid(const tree *t, const tree_node *n, const uint8_t *p, size_t len)
{
    if (n->nkids == 0)
        return NULL;
    /* One bucket: compare directly, the hash would cost more than it saves. */
    bool single = n->bits == 0;
    uint32_t h = single ? 0 : level_hash(t, p, len);
    tree_node *c = cbuckets(n)[single ? 0 : (h & (nbuckets(n) - 1))];
    for (; c; c = c->next) {
        if ((single || c->hash == h) && c->level_len == len &&
            (len == 0 || memcmp(node_level(c), p, len) == 0))
            return c;
    }
    return NULL;
}

/* Any child with level p[0..len), the wildcard ones included. */
static tree_node *find_child(const tree *t, const tree_node *n, const uint8_t *p, size_t len)
{
    if (is_level(p, len, '+'))
        return n->plus;
    if (is_level(p, len, '#'))
        return n->multi;
    return find_kid(t, n, p, len);
}

/* Rebuild n's table with 1 << bits buckets. false (n unchanged) when out of
 * memory. */
static bool rehash(tree_node *n, uint8_t bits)
{
    tree_node *single = NULL;
    tree_node **fresh = &single;
    size_t count = (size_t)1 << bits;

    if (bits > 0) {
        fresh = calloc(count, sizeof(*fresh));
        if (fresh == NULL)
            return false;
    }
    tree_node **old = buckets(n);
    size_t old_count = nbuckets(n);
    for (size_t b = 0; b < old_count; b++) {
        tree_node *c = old[b];
        while (c) {
            tree_node *next = c->next;
            size_t nb = c->hash & (count - 1);
            c->next = fresh[nb];
            fresh[nb] = c;
            c = next;
        }
    }
    if (n->bits > 0)
        free(n->kids.many);
    if (bits > 0)
        n->kids.many = fresh;
    else
        n->kids.one = single;
    n->bits = bits;
    return true;
}

/* Make room for one more ordinary child: at most one child per bucket on
 * average keeps chains short. */
static bool reserve_kid(tree_node *n)
{
    if (n->nkids == UINT32_MAX)
        return false;
    if (n->nkids < nbuckets(n))
        return true;
    if (n->bits >= 31)
        return true; /* chains grow; 2^31 buckets is more than memory allows */
    return rehash(n, (uint8_t)(n->bits + 1));
}

/* Link a new child c under n; for an ordinary child reserve_kid(n) came
 * first. */
static void link_child(tree_node *n, tree_node *c)
{
    const uint8_t *lv = node_level(c);

    c->parent = n;
    if (is_level(lv, c->level_len, '+')) {
        n->plus = c;
    } else if (is_level(lv, c->level_len, '#')) {
        n->multi = c;
    } else {
        tree_node **b = &buckets(n)[c->hash & (nbuckets(n) - 1)];
        c->next = *b;
        *b = c;
        n->nkids++;
    }
}

static void unlink_child(tree_node *n, tree_node *c)
{
    if (n->plus == c) {
        n->plus = NULL;
        return;
    }
    if (n->multi == c) {
        n->multi = NULL;
        return;
    }
    tree_node **p = &buckets(n)[c->hash & (nbuckets(n) - 1)];
    while (*p != c)
        p = &(*p)->next;
    *p = c->next;
    n->nkids--;
    /* Shrink a table that is three-quarters empty, so that walking the
     * children ("+" in a retained lookup) stays proportional to their
     * number. Failing to shrink is harmless. */
    if (n->bits > 0 && (size_t)n->nkids * 4 <= nbuckets(n)) {
        uint8_t bits = 0;
        while (((size_t)1 << bits) < n->nkids)
            bits++;
        (void)rehash(n, bits);
    }
}

/*
 * The child of n that comes after c (c == NULL: the first child), in a fixed
 * order: ordinary children by bucket, then "+", then "#". c's cached hash
 * gives its bucket, so no search is needed.
 */
static tree_node *child_after(const tree_node *n, const tree_node *c)
{
    size_t b = 0;

    if (c != NULL) {
        if (c == n->multi)
            return NULL;
        if (c == n->plus)
            return n->multi;
        if (c->next)
            return c->next;
        b = (c->hash & (nbuckets(n) - 1)) + 1;
    }
    if (n->nkids > 0) {
        tree_node *const *bk = cbuckets(n);
        for (size_t count = nbuckets(n); b < count; b++) {
            if (bk[b])
                return bk[b];
        }
    }
    return n->plus ? n->plus : n->multi;
}

/* Pre-order successor of n within the subtree of base (NULL when done). */
static tree_node *preorder_next(const tree_node *n, const tree_node *base)
{
    tree_node *c = child_after(n, NULL);

    if (c)
        return c;
    while (n != base) {
        c = child_after(n->parent, n);
        if (c)
            return c;
        n = n->parent;
    }
    return NULL;
}

/* ---- tree -------------------------------------------------------------- */

tree *tree_new(void)
{
    tree *t = calloc(1, sizeof(*t));
    if (t && !keyhash_key_new(t->key)) {
        free(t);
        t = NULL;
    }
    return t;
}

static void free_node(tree_node *n, void (*free_value)(void *value))
{
    if (n->value && free_value)
        free_value(n->value);
    if (n->bits > 0)
        free(n->kids.many);
    free(n);
}

void tree_free(tree *t, void (*free_value)(void *value))
{
    if (t == NULL)
        return;
    /* Post-order without a stack: free a node once its children are gone,
     * taking its successor first (it is found through the node itself). The
     * nodes that own path copies are ancestors, so they go last. */
    tree_node *root = &t->root;
    tree_node *n = root;
    tree_node *c;
    while ((c = child_after(n, NULL)) != NULL)
        n = c;
    while (n != root) {
        tree_node *parent = n->parent;
        tree_node *next = child_after(parent, n);
        free_node(n, free_value);
        if (next) {
            n = next;
            while ((c = child_after(n, NULL)) != NULL)
                n = c;
        } else {
            /* All of parent's children are freed: it is next, and its
             * buckets (which still name them) are not read again. */
            n = parent;
        }
    }
    if (root->bits > 0)
        free(root->kids.many);
    sodium_memzero(t->key, sizeof(t->key));
    free(t);
}

/*
 * Make the nodes for levels [from, path.len) of path under n, all at once:
 * either every node exists afterwards or (out of memory) nothing changed.
 * The first node made holds the copy of the path the others point into.
 */
static tree_node *create_rest(tree *t, tree_node *n, codec_bytes path, size_t from)
{
    size_t first_end = level_end(path, from);
    bool ordinary = !is_level(path.ptr + from, first_end - from, '+') &&
                    !is_level(path.ptr + from, first_end - from, '#');
    if (ordinary && !reserve_kid(n))
        return NULL;

    tree_node *top = calloc(1, sizeof(tree_node) + path.len);
    if (top == NULL)
        return NULL;
    uint8_t *copy = (uint8_t *)(top + 1);
    memcpy(copy, path.ptr, path.len);

    /* Build the chain top -> ... -> leaf, each the only child of the one
     * above, linked to n at the end. */
    tree_node *leaf = top;
    bool wild = (n->flags & NODE_WILD) != 0;
    size_t start = from;
    for (;;) {
        size_t end = level_end(path, start);
        leaf->path = copy;
        leaf->path_len = (uint16_t)end;
        leaf->level_len = (uint16_t)(end - start);
        wild = wild || has_wildcard(path.ptr + start, end - start);
        leaf->flags = wild ? NODE_WILD : 0;
        if (!is_level(path.ptr + start, end - start, '+') &&
            !is_level(path.ptr + start, end - start, '#'))
            leaf->hash = level_hash(t, path.ptr + start, end - start);
        if (end == path.len)
            break;
        start = end + 1;
        tree_node *c = calloc(1, sizeof(tree_node));
        if (c == NULL)
            goto fail;
        c->parent = leaf;
        leaf = c;
    }
    /* Link bottom-up: link_child reads only the child's own fields, and a
     * new node's single ordinary child fits its one inline bucket. */
    for (tree_node *c = leaf; c != top; c = c->parent)
        link_child(c->parent, c);
    link_child(n, top);
    return leaf;

fail:
    while (leaf != top) {
        tree_node *up = leaf->parent;
        free(leaf);
        leaf = up;
    }
    free(top);
    return NULL;
}

tree_node *tree_get(tree *t, codec_bytes path, bool create)
{
    /* Neither a topic name nor a filter: no node, even with create. The
     * limit also lets lengths fit the node's 16-bit fields. */
    if (path.len == 0 || path.len > CODEC_MAX_STRING)
        return NULL;

    tree_node *n = &t->root;
    size_t start = 0;
    for (;;) {
        size_t end = level_end(path, start);
        tree_node *c = find_child(t, n, path.ptr + start, end - start);
        if (c == NULL)
            return create ? create_rest(t, n, path, start) : NULL;
        n = c;
        if (end == path.len)
            return n;
        start = end + 1;
    }
}

void **tree_value(tree_node *node)
{
    return &node->value;
}

codec_bytes tree_path(const tree_node *node)
{
    codec_bytes b = {node->path, node->path_len};
    return b;
}

void tree_prune(tree *t, tree_node *node)
{
    tree_node *root = &t->root;

    while (node != root && node->value == NULL && childless(node)) {
        tree_node *parent = node->parent;
        unlink_child(parent, node);
        free_node(node, NULL);
        node = parent;
    }
}

size_t tree_count(const tree *t)
{
    size_t count = 0;

    for (const tree_node *n = preorder_next(&t->root, &t->root); n;
         n = preorder_next(n, &t->root)) {
        if (n->value)
            count++;
    }
    return count;
}

void tree_walk(tree *t, tree_visit_fn visit, void *ctx)
{
    for (tree_node *n = preorder_next(&t->root, &t->root); n; n = preorder_next(n, &t->root)) {
        if (n->value)
            visit(n, n->value, ctx);
    }
}

static void visit_if(tree_node *n, tree_visit_fn visit, void *ctx)
{
    if (n && n->value)
        visit(n, n->value, ctx);
}

/* ---- routing lookup: stored filters matching a topic name -------------- */

/*
 * Depth-first over the nodes whose path matches a prefix of the topic. At a
 * node of depth d, pos is where topic level d+1 starts (topic.len + 1 once
 * all levels are used), so that climbing back can recover the level a node
 * matched by scanning back from pos - 1.
 *
 * A node's candidates for the next level L are, in order: the child named L
 * (for L == "#", the "#" child taken literally, whose own value is then
 * skipped: it was already visited as the wildcard), then the "+" child. The
 * "#" child is visited, not entered, as the wildcard for the rest.
 */
void tree_match_filters(tree *t, codec_bytes topic, tree_visit_fn visit, void *ctx)
{
    if (topic.len == 0)
        return;
    tree_node *root = &t->root;
    /* MQTT 4.7.2: a "$" topic is not matched by a first-level wildcard. */
    bool dollar = topic.ptr[0] == '$';
    tree_node *n = root;
    size_t pos = 0;
    bool skip_self = false;

descend:
    if (pos > topic.len) {
        if (!skip_self)
            visit_if(n, visit, ctx);
        /* "a/#" matches "a". */
        visit_if(n->multi, visit, ctx);
    } else {
        bool wild_ok = n != root || !dollar;
        if (wild_ok)
            visit_if(n->multi, visit, ctx);
        size_t end = level_end(topic, pos);
        const uint8_t *lv = topic.ptr + pos;
        size_t len = end - pos;
        tree_node *c = NULL;
        skip_self = false;
        if (is_level(lv, len, '#')) {
            c = n->multi;
            skip_self = true;
        } else if (!is_level(lv, len, '+')) {
            /* A topic level "+" is matched by the "+" child alone. */
            c = find_kid(t, n, lv, len);
        }
        if (c == NULL) {
            skip_self = false;
            c = wild_ok ? n->plus : NULL;
        }
        if (c) {
            n = c;
            pos = end + 1;
            goto descend;
        }
    }

    /* Climb until some ancestor has a candidate left. */
    while (n != root) {
        tree_node *parent = n->parent;
        size_t end = pos - 1;
        if (n != parent->plus && parent->plus && (parent != root || !dollar)) {
            /* n was the literal candidate: the "+" child is next. */
            n = parent->plus;
            skip_self = false;
            goto descend;
        }
        n = parent;
        pos = level_start(topic, end);
    }
}

/* ---- retained lookup: stored topic names matching a filter ------------- */

/* May child c of n be a topic level here? Paths with wildcards are not topic
 * names, and a filter starting with a wildcard skips "$" topics. */
static bool topic_child(const tree_node *n, const tree_node *c, const tree_node *root,
                        bool no_dollar)
{
    if (c->flags & NODE_WILD)
        return false;
    return !(no_dollar && n == root && is_dollar(c));
}

static tree_node *topic_child_after(const tree_node *n, const tree_node *c, const tree_node *root,
                                    bool no_dollar)
{
    tree_node *next = child_after(n, c);

    while (next && !topic_child(n, next, root, no_dollar))
        next = child_after(n, next);
    return next;
}

/* Visit every topic-name node strictly below base. */
static void visit_subtree(tree_node *base, const tree_node *root, bool no_dollar,
                          tree_visit_fn visit, void *ctx)
{
    tree_node *n = base;
    tree_node *c = topic_child_after(n, NULL, root, no_dollar);

    while (c) {
        n = c;
        visit_if(n, visit, ctx);
        c = topic_child_after(n, NULL, root, no_dollar);
        while (c == NULL && n != base) {
            c = topic_child_after(n->parent, n, root, no_dollar);
            n = n->parent;
        }
    }
}

/*
 * Depth-first over the stored topic names that match a prefix of the
 * filter, with the same position bookkeeping as tree_match_filters. A "+"
 * level enters each child in turn; climbing back from one finds the next
 * through child_after.
 */
void tree_match_topics(tree *t, codec_bytes filter, tree_visit_fn visit, void *ctx)
{
    if (filter.len == 0)
        return;
    tree_node *root = &t->root;
    bool no_dollar = filter.ptr[0] == '+' || filter.ptr[0] == '#';
    tree_node *n = root;
    size_t pos = 0;

descend:
    if (pos > filter.len) {
        visit_if(n, visit, ctx);
    } else {
        size_t end = level_end(filter, pos);
        const uint8_t *lv = filter.ptr + pos;
        size_t len = end - pos;
        tree_node *c = NULL;
        if (is_level(lv, len, '#') && end == filter.len) {
            /* "a/#" matches "a" and everything below it. */
            if (n != root)
                visit_if(n, visit, ctx);
            visit_subtree(n, root, no_dollar, visit, ctx);
        } else if (is_level(lv, len, '+')) {
            c = topic_child_after(n, NULL, root, no_dollar);
        } else {
            /* A literal level with a wildcard in it (or a "#" before the
             * end) finds only WILD nodes, which topic_child refuses. */
            c = find_kid(t, n, lv, len);
            if (c && !topic_child(n, c, root, no_dollar))
                c = NULL;
        }
        if (c) {
            n = c;
            pos = end + 1;
            goto descend;
        }
    }

    while (n != root) {
        tree_node *parent = n->parent;
        size_t end = pos - 1;
        size_t start = level_start(filter, end);
        if (is_level(filter.ptr + start, end - start, '+')) {
            tree_node *c = topic_child_after(parent, n, root, no_dollar);
            if (c) {
                n = c;
                goto descend;
            }
        }
        n = parent;
        pos = start;
    }
}
