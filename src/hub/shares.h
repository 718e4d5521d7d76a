/*
 * shares.h — the hub-wide table of shared-subscription groups.
 *
 * A share group ($share/NAME/filter) can have members on several workers.
 * Each worker that has members joins the group here; for every message the
 * workers with members agree, from the message's hub-wide id and the set of
 * workers in the group, on the one that serves it (shares_mine), without
 * talking to each other. The set is an atomic bit mask read on the hot path;
 * join and leave (SUBSCRIBE, UNSUBSCRIBE, session end) take the mutex.
 *
 * While a join or leave is in flight, a message may be served by no worker
 * or by two: the window is one SUBSCRIBE or UNSUBSCRIBE, documented in
 * docs/hub.md.
 */
#ifndef MOAT_HUB_SHARES_H
#define MOAT_HUB_SHARES_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

typedef struct hub_shares hub_shares;
typedef struct share_entry share_entry;

hub_shares *shares_new(void);
void shares_free(hub_shares *t);

/* Worker `worker` has (another) local group on share/filter. NULL: out of memory. */
share_entry *shares_join(hub_shares *t, unsigned worker, codec_bytes share, codec_bytes filter);
void shares_leave(hub_shares *t, unsigned worker, share_entry *e);
/* Whether `worker` serves message gid for this group. */
bool shares_mine(const share_entry *e, unsigned worker, uint64_t gid);

#endif
