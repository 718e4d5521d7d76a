/*
 * tree.h — a trie over MQTT topic levels, the hub's index for both
 * subscriptions and retained messages.
 *
 * A node stands for a path of levels ("a/b/+"); the caller keeps one value per
 * node (a list of subscriptions, or a retained message). Two lookups walk it:
 * every stored *filter* that matches a topic name (routing a PUBLISH), and
 * every stored *topic name* that a filter matches (retained messages for a new
 * subscription). Both apply MQTT's rule that a '$' topic is matched only by a
 * filter whose first level is written out.
 *
 * Children are kept in a hash table keyed with a random SipHash key
 * (libsodium crypto_shorthash), so a client cannot choose level names that
 * collide and turn lookups quadratic. Not thread-safe: one tree per worker.
 */
#ifndef MOAT_HUB_TREE_H
#define MOAT_HUB_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

typedef struct tree tree;
typedef struct tree_node tree_node;

/* NULL when out of memory. */
tree *tree_new(void);

/* Free the tree; free_value (may be NULL) is called on each non-NULL value. */
void tree_free(tree *t, void (*free_value)(void *value));

/*
 * The node for a path (a topic name or a filter; levels split on '/', empty
 * levels allowed). With create, missing nodes are made (NULL when out of
 * memory); without, NULL when the path has no node.
 */
tree_node *tree_get(tree *t, codec_bytes path, bool create);

/* The caller's value slot of a node (initially NULL). */
void **tree_value(tree_node *node);

/* The node's full path (owned by the tree, valid while the node exists). */
codec_bytes tree_path(const tree_node *node);

/* Remove node and its now-useless ancestors if their values are NULL and they
 * have no children. Call after setting a value to NULL. */
void tree_prune(tree *t, tree_node *node);

/* Nodes holding a value. */
size_t tree_count(const tree *t);

typedef void (*tree_visit_fn)(tree_node *node, void *value, void *ctx);

/* Visit every node with a value whose path, read as a filter, matches the
 * topic name (the routing lookup). Each node at most once. */
void tree_match_filters(tree *t, codec_bytes topic, tree_visit_fn visit, void *ctx);

/* Visit every node with a value whose path, read as a topic name, is matched
 * by the filter (the retained lookup). Each node at most once. Paths
 * containing '+' or '#' are not topic names and are never visited. */
void tree_match_topics(tree *t, codec_bytes filter, tree_visit_fn visit, void *ctx);

/* Visit every node with a value (for saving, policy re-checks, tests). */
void tree_walk(tree *t, tree_visit_fn visit, void *ctx);

#endif /* MOAT_HUB_TREE_H */
