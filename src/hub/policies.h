/*
 * policies.h — a principal's policy set, built from the registry: the
 * documents attached to its groups, parsed and expanded for it.
 *
 * Used by every worker (at CONNECT and when the registry changes) and by the
 * telemetry query thread (which judges each request by the same rules the
 * broker applies to live traffic). Each caller passes its own registry
 * connection: SQLite handles are not shared between threads.
 */
#ifndef MOAT_HUB_POLICIES_H
#define MOAT_HUB_POLICIES_H

#include "broker.h"
#include "policy.h"
#include "registry.h"

/* NULL when any document fails to load or parse, or the set cannot be
 * built: callers treat NULL as deny-all (fail closed). */
policy_set *hub_policies_for(registry *reg, const broker_principal *who);

#endif
