/*
 * ingest.h — the hub's telemetry writer: one thread that stores what devices
 * publish under moat/{id}/up/... in the telemetry store (src/telemetry).
 *
 * Workers hand it batches like they hand each other messages (relay.h): a
 * batch per worker per loop pass. The thread takes everything waiting, writes
 * it in one transaction (so one fsync covers the passes of every worker),
 * and answers each batch with a ticket; the worker holds the PUBACKs of that
 * pass until the ticket says the readings are stored. A failed commit (disk
 * full, I/O error) answers "not stored": the publishers are closed
 * unacknowledged and publish again later, and the error is logged loudly.
 *
 * Payloads that are SDK envelopes (include/moat/record.h) are unpacked:
 * each reading is stored with its stream, device time and sequence number
 * (duplicates by device and sequence number are dropped), padding and cover
 * records are dropped. Any other payload is one reading whose stream is the
 * topic after moat/{id}/up/. The thread also applies retention in bounded
 * slices and answers services' telemetry queries (query.h): it owns the
 * hub's one handle on telemetry.db.
 */
#ifndef MOAT_HUB_INGEST_H
#define MOAT_HUB_INGEST_H

#include <stdbool.h>
#include <stddef.h>

#include "query.h"
#include "relay.h"

typedef struct hub_ingest hub_ingest;

/* Open DATA_DIR/telemetry.db (made if missing). NULL with err set. */
hub_ingest *ingest_new(const char *data_dir, char *err, size_t errlen);
bool ingest_start(hub_ingest *in);
/* Where workers post their batches (kind RELAY_BATCH, `from` their index). */
relay_inbox *ingest_inbox(hub_ingest *in);
/* Tell the thread where tickets go (the workers' inboxes). */
void ingest_set_workers(hub_ingest *in, relay_inbox *const *inboxes, unsigned n);
/* Called on the writer thread after each commit: ok, or why not (one line,
 * for the store_failure alert). Set before ingest_start. */
void ingest_set_watch(hub_ingest *in, void (*fn)(void *ctx, bool ok, const char *detail),
                      void *ctx);
/* Serve the service-facing queries of q (query.h) between batches, with
 * this thread's store handle and registry connection. Set before
 * ingest_start; q outlives the thread. */
void ingest_set_queries(hub_ingest *in, hub_query *q);
/* Wake the thread (query.h's wake callback; ctx is the hub_ingest). */
void ingest_wake(void *ctx);
/* After every worker stopped: store what is left, then end the thread. */
void ingest_stop(hub_ingest *in);
void ingest_free(hub_ingest *in);

/* 0 when a device's PUBLISH to its own up/ topic may be stored; otherwise
 * the MQTT 5 reason code to refuse it with (an envelope that does not
 * decode is refused rather than kept as an opaque blob). */
unsigned ingest_check(const uint8_t *payload, size_t len);

/* True when topic is moat/{device}/up/{stream} for this device, with a
 * non-empty stream; *stream gets the stream part. */
bool ingest_topic(codec_bytes topic, const char *device, codec_bytes *stream);

#endif
