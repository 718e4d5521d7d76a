/*
 * refusals.h — bounded aggregation of refused accesses (handshakes,
 * CONNECTs, publishes, subscribes) before they reach the audit log.
 *
 * Every refusal belongs in the audit log, but an attacker controls how many
 * there are: one entry per refused packet would let a client make the hub
 * write without bound. So refusals are grouped by (action, source address,
 * principal, reason) in windows of window_ms (one minute by default): the
 * first refusal of a group is emitted at once (count 1), so an operator sees
 * it without delay, and when the window closes one summary carries how many
 * more there were. At most max_keys groups are tracked; refusals of new
 * groups beyond that fall into one overflow group per window. So per window
 * at most 2 * max_keys + 1 entries are written, however the attacker varies
 * addresses, topics or reasons, and memory stays bounded.
 *
 * Pure and single-threaded: no clock (the caller passes now), no I/O; the
 * emit callback receives each entry (its strings and details are valid
 * during the call only; json_incref the details to keep them).
 *
 *     audit_refusals *r = audit_refusals_new(&cfg, emit, ctx);
 *     audit_refusals_note(r, now, "publish", "192.0.2.7", "device:abc...", "policy", topic);
 *     next = audit_refusals_tick(r, now);   // at that time, call tick again
 */
#ifndef MOAT_AUDIT_REFUSALS_H
#define MOAT_AUDIT_REFUSALS_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"

typedef struct audit_refusals audit_refusals;

typedef void (*audit_refusals_emit)(void *ctx, const audit_record *rec);

typedef struct audit_refusals_config {
    int64_t window_ms; /* grouping window; 0 = 60000 */
    size_t max_keys;   /* groups tracked at once; 0 = 1024 */
} audit_refusals_config;

/* NULL when out of memory. */
audit_refusals *audit_refusals_new(const audit_refusals_config *cfg, audit_refusals_emit emit,
                                   void *ctx);
/* Frees without emitting: call audit_refusals_flush first to keep counts. */
void audit_refusals_free(audit_refusals *r);

/* One refusal at now_ms (milliseconds since the epoch). action: "handshake",
 * "connect", "publish", "subscribe"; source: the peer address; principal:
 * "device:ID" / "service:NAME" or NULL before authentication; reason: a
 * short fixed word ("policy", "revoked", "rate"...); example: the topic or
 * other object, kept from the first refusal of the window (may be NULL). */
void audit_refusals_note(audit_refusals *r, int64_t now_ms, const char *action, const char *source,
                         const char *principal, const char *reason, const char *example);

/* Close the windows that ended by now_ms (emitting their summaries) and
 * return when the next one ends, or INT64_MAX if none is open. */
int64_t audit_refusals_tick(audit_refusals *r, int64_t now_ms);

/* Close every window now (clean shutdown). */
void audit_refusals_flush(audit_refusals *r, int64_t now_ms);

typedef struct audit_refusals_stats {
    uint64_t noted;      /* refusals seen */
    uint64_t emitted;    /* entries emitted */
    uint64_t overflowed; /* refusals that fell into the overflow group */
    size_t groups;       /* groups open now */
} audit_refusals_stats;

void audit_refusals_get_stats(const audit_refusals *r, audit_refusals_stats *out);

#endif /* MOAT_AUDIT_REFUSALS_H */
