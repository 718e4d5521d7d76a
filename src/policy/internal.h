/*
 * internal.h — pieces shared between the policy module's own files
 * (policy.c, filter.c). Not for use outside src/policy.
 *
 * The public policy_filter_covers/overlaps validate their arguments on every
 * call; the decisions in policy.c have validated both sides already (the
 * statement's filter when the set was built, the request on entry), so they
 * call these unchecked versions and pay for validation once.
 */
#ifndef MOAT_POLICY_INTERNAL_H
#define MOAT_POLICY_INTERNAL_H

#include <stdbool.h>

#include "codec.h"

/* policy_filter_covers for filters that passed codec_topic_filter_check and
 * are not shared subscriptions (a "$share/..." filter is taken literally). */
bool policy_covers_valid(codec_bytes outer, codec_bytes inner);

/* policy_filter_overlaps, with the same precondition. */
bool policy_overlaps_valid(codec_bytes a, codec_bytes b);

#endif /* MOAT_POLICY_INTERNAL_H */
