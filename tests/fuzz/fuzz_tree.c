/*
 * fuzz_tree — the hub's topic trie (src/hub/tree.c) against a brute-force
 * model.
 *
 * The input is a program of operations on one tree: make a node, store a
 * value, clear and prune, prune a bare node, look up stored filters for a
 * topic name, look up stored topic names for a filter, count and walk. A
 * shadow list keeps every path holding a value. Each lookup is compared with
 * codec_topic_matches() asked about every path in the list (the retained
 * lookup skips paths containing '+' or '#'), each node must be visited at
 * most once, and after every prune every stored path must still lead to its
 * own node. Any disagreement aborts, so libFuzzer keeps the input.
 *
 * Paths are not checked as names or filters: the tree promises to agree with
 * codec_topic_matches on any non-empty bytes. To reach interesting shapes
 * quickly, ASCII input bytes become one of "ab//+#$c" and bytes >= 0x80 stay
 * as they are (non-ASCII, never a separator or wildcard).
 *
 * Operation format: an opcode byte (low 3 bits), then for operations taking a
 * path a length byte (below 0xF8: length % 48; otherwise the rest of the
 * input, for long and deep paths) and that many path bytes; "clear" takes an
 * index byte instead.
 */
#include "fuzz_common.h"
#include "tree.h"

#define MAX_ENTRIES 256

struct entry {
    codec_bytes path; /* a view into the mapped input */
    tree_node *node;
    int hits;
};

struct model {
    tree *t;
    struct entry e[MAX_ENTRIES];
    size_t n;
};

struct cursor {
    const uint8_t *raw;
    const uint8_t *mapped;
    size_t size;
    size_t pos;
};

static bool next_byte(struct cursor *c, uint8_t *out)
{
    if (c->pos >= c->size)
        return false;
    *out = c->raw[c->pos++];
    return true;
}

static bool next_path(struct cursor *c, codec_bytes *out)
{
    uint8_t l;
    if (!next_byte(c, &l))
        return false;
    size_t rest = c->size - c->pos;
    size_t len = l < 0xF8 ? (size_t)(l % 48) : rest;
    if (len > rest)
        len = rest;
    out->ptr = c->mapped + c->pos;
    out->len = len;
    c->pos += len;
    return true;
}

static bool has_wildcard(codec_bytes p)
{
    return memchr(p.ptr, '+', p.len) != NULL || memchr(p.ptr, '#', p.len) != NULL;
}

static struct entry *entry_of(struct model *m, void *value)
{
    struct entry *e = value;
    FUZZ_CHECK(e >= m->e && e < m->e + m->n);
    return e;
}

static void hit(tree_node *node, void *value, void *ctx)
{
    struct model *m = ctx;
    struct entry *e = entry_of(m, value);
    FUZZ_CHECK(e->node == node);
    FUZZ_CHECK(*tree_value(node) == value);
    FUZZ_CHECK(e->hits == 0);
    e->hits++;
}

/* Every stored path leads to its own node, holding its entry. */
static void check_nodes(struct model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        struct entry *e = &m->e[i];
        FUZZ_CHECK(tree_get(m->t, e->path, false) == e->node);
        FUZZ_CHECK(*tree_value(e->node) == e);
        FUZZ_CHECK(fuzz_bytes_eq(tree_path(e->node), e->path));
    }
}

static tree_node *get(struct model *m, codec_bytes path, bool create)
{
    tree_node *node = tree_get(m->t, path, create);
    if (path.len == 0) {
        FUZZ_CHECK(node == NULL);
        return NULL;
    }
    if (create)
        FUZZ_CHECK(node != NULL);
    if (node) {
        FUZZ_CHECK(fuzz_bytes_eq(tree_path(node), path));
        FUZZ_CHECK(tree_get(m->t, path, false) == node);
        void *v = *tree_value(node);
        if (v)
            FUZZ_CHECK(fuzz_bytes_eq(entry_of(m, v)->path, path));
    }
    return node;
}

static void set_value(struct model *m, codec_bytes path)
{
    tree_node *node = get(m, path, true);
    if (node == NULL || *tree_value(node) != NULL || m->n == MAX_ENTRIES)
        return;
    struct entry *e = &m->e[m->n++];
    e->path = path;
    e->node = node;
    e->hits = 0;
    *tree_value(node) = e;
}

static void clear(struct model *m, uint8_t which)
{
    if (m->n == 0)
        return;
    size_t i = which % m->n;
    struct entry gone = m->e[i];
    *tree_value(gone.node) = NULL;
    /* Keep the list dense; the moved entry's node must point at its new
     * place. */
    m->e[i] = m->e[--m->n];
    if (i < m->n)
        *tree_value(m->e[i].node) = &m->e[i];
    tree_prune(m->t, gone.node);
    tree_node *node = tree_get(m->t, gone.path, false);
    FUZZ_CHECK(node == NULL || *tree_value(node) == NULL);
    check_nodes(m);
}

static void prune_bare(struct model *m, codec_bytes path)
{
    tree_node *node = get(m, path, false);
    if (node == NULL || *tree_value(node) != NULL)
        return;
    tree_prune(m->t, node);
    check_nodes(m);
}

static void match_filters(struct model *m, codec_bytes topic)
{
    tree_match_filters(m->t, topic, hit, m);
    for (size_t i = 0; i < m->n; i++) {
        struct entry *e = &m->e[i];
        FUZZ_CHECK(e->hits == (int)codec_topic_matches(e->path, topic));
        e->hits = 0;
    }
}

static void match_topics(struct model *m, codec_bytes filter)
{
    tree_match_topics(m->t, filter, hit, m);
    for (size_t i = 0; i < m->n; i++) {
        struct entry *e = &m->e[i];
        bool want = !has_wildcard(e->path) && codec_topic_matches(filter, e->path);
        FUZZ_CHECK(e->hits == (int)want);
        e->hits = 0;
    }
}

static void count_and_walk(struct model *m)
{
    FUZZ_CHECK(tree_count(m->t) == m->n);
    tree_walk(m->t, hit, m);
    for (size_t i = 0; i < m->n; i++) {
        FUZZ_CHECK(m->e[i].hits == 1);
        m->e[i].hits = 0;
    }
}

static size_t freed;

static void count_free(void *value)
{
    (void)value;
    freed++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t alphabet[8] = {'a', 'b', '/', '/', '+', '#', '$', 'c'};
    uint8_t *mapped = malloc(size ? size : 1);
    struct model *m = calloc(1, sizeof(*m));
    FUZZ_CHECK(mapped != NULL && m != NULL);
    for (size_t i = 0; i < size; i++)
        mapped[i] = data[i] < 0x80 ? alphabet[data[i] & 7] : data[i];
    m->t = tree_new();
    FUZZ_CHECK(m->t != NULL);

    struct cursor c = {data, mapped, size, 0};
    uint8_t op;
    while (next_byte(&c, &op)) {
        codec_bytes path;
        uint8_t which;
        switch (op & 7) {
        case 0:
            if (next_path(&c, &path))
                (void)get(m, path, true);
            break;
        case 1:
        case 2:
            if (next_path(&c, &path))
                set_value(m, path);
            break;
        case 3:
            if (next_byte(&c, &which))
                clear(m, which);
            break;
        case 4:
            if (next_path(&c, &path))
                prune_bare(m, path);
            break;
        case 5:
            if (next_path(&c, &path))
                match_filters(m, path);
            break;
        case 6:
            if (next_path(&c, &path))
                match_topics(m, path);
            break;
        default:
            count_and_walk(m);
            break;
        }
    }
    check_nodes(m);
    count_and_walk(m);

    freed = 0;
    tree_free(m->t, count_free);
    FUZZ_CHECK(freed == m->n);
    free(m);
    free(mapped);
    return 0;
}
