/*
 * policy.h — access policies: parse documents, expand them for one principal,
 * and decide whether it may connect, publish, subscribe or receive.
 *
 * Pure and self-contained (only the codec's topic functions), so the rules
 * that keep each device inside its own namespace are unit-tested and fuzzed
 * without a hub. See docs/hub.md, "Policies", for the document format.
 *
 * Fail closed everywhere: a document that does not parse allows nothing, an
 * empty statement list allows nothing, a variable that cannot be expanded
 * makes its statement match nothing.
 */
#ifndef MOAT_POLICY_H
#define MOAT_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

typedef enum policy_action {
    POLICY_CONNECT = 1,
    POLICY_PUBLISH = 2,
    POLICY_SUBSCRIBE = 4,
    POLICY_RECEIVE = 8,
    POLICY_ALL = 15
} policy_action;

typedef enum policy_status {
    POLICY_OK = 0,
    POLICY_ERR_SYNTAX, /* a line is not a valid statement */
    POLICY_ERR_LIMIT,  /* too many statements, a line or filter too long */
    POLICY_ERR_NOMEM
} policy_status;

/* Limits on documents, so that a stored document cannot blow up the hub. */
#define POLICY_MAX_DOCUMENT   65536u
#define POLICY_MAX_STATEMENTS 256u
#define POLICY_MAX_FILTER     1024u

/* A parsed document: statements with their unexpanded filters. */
typedef struct policy_doc policy_doc;

/*
 * Parse a policy document (see docs/hub.md). On error, err receives a
 * one-line message naming the line ("line 3: unknown action 'publsh'").
 */
policy_status policy_parse(const char *text, size_t len, policy_doc **out, char *err,
                           size_t errlen);
void policy_doc_free(policy_doc *doc);

/* Number of statements (for `moatctl policy show`). */
size_t policy_doc_count(const policy_doc *doc);

/* Values for ${device} and ${service}; the principal has one of them, the
 * other is empty (a statement using an empty variable matches nothing). */
typedef struct policy_vars {
    codec_bytes device;
    codec_bytes service;
} policy_vars;

/* The statements of several documents expanded for one principal: concrete
 * topic filters, ready to check. Rebuilt when policies or the registry
 * change. */
typedef struct policy_set policy_set;

/* Expand docs[0..ndocs) for vars. A variable value containing '/', '+', '#'
 * or U+0000 is refused (POLICY_ERR_SYNTAX): it could widen a filter. */
policy_status policy_set_build(const policy_doc *const *docs, size_t ndocs, const policy_vars *vars,
                               policy_set **out);
/* Drops one holder's reference; the last one frees the set. */
void policy_set_free(policy_set *set);
/* One more holder of set (NULL gives NULL). The count is not atomic: a set
 * is shared only within one thread. */
policy_set *policy_set_ref(policy_set *set);

/* A set that allows nothing, for principals whose policies failed to load. */
policy_status policy_set_deny_all(policy_set **out);

bool policy_may_connect(const policy_set *set);

/* topic is a topic name (publish, receive). */
bool policy_may_publish(const policy_set *set, codec_bytes topic);
bool policy_may_receive(const policy_set *set, codec_bytes topic);

/* filter is a valid topic filter; a shared subscription is judged on its
 * inner filter. Allowed when an allow statement covers it and no deny
 * statement overlaps it. */
bool policy_may_subscribe(const policy_set *set, codec_bytes filter);

/* Topic-filter algebra used above, exposed for tests:
 * covers: every topic name that `inner` matches is matched by `outer`;
 * overlaps: some topic name is matched by both. */
bool policy_filter_covers(codec_bytes outer, codec_bytes inner);
bool policy_filter_overlaps(codec_bytes a, codec_bytes b);

#endif /* MOAT_POLICY_H */
