/*
 * query.h — the service-facing telemetry query: MQTT 5 request/response
 * over the hub (docs/telemetry.md, "Queries from services").
 *
 * A service publishes a JSON request to QUERY_TOPIC with a Response Topic
 * and Correlation Data; the worker that took the PUBLISH queues a copy here
 * and goes on (it never waits on SQLite). The telemetry writer thread
 * (ingest.c), which owns the hub's one handle on telemetry.db, serves the
 * queue between its batches: it checks each request against the service's
 * policies (receive on moat/{device}/up/...) with its own registry
 * connection, reads one bounded page, and hands the JSON answer back to the
 * worker that owns the requesting session through `answer`, which publishes
 * it to that session only.
 *
 * Why not a thread with a handle of its own: SQLite's POSIX locks belong to
 * the process, and opening telemetry.db a second time in moatd (the store's
 * open touches the file directly) would drop the locks the writer's
 * connection relies on. Pages are bounded (QUERY_PAGE_MAX readings,
 * QUERY_PAGE_BYTES of payload), so a query delays the next commit by a few
 * milliseconds at most, and the writer serves at most a few per round.
 *
 * Requests wait in a bounded queue; when it is full the caller answers
 * "busy" at once, so a flood of queries cannot grow memory or starve the
 * writer.
 */
#ifndef MOAT_HUB_QUERY_H
#define MOAT_HUB_QUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "broker.h"
#include "query_parse.h"
#include "registry.h"
#include "tstore.h"

#define QUERY_TOPIC      "$moat/telemetry/query"
#define QUERY_PAGE_BYTES (256u * 1024u) /* payload bytes per answer (at least one reading) */
#define QUERY_QUEUE_MAX  64u            /* requests waiting */

typedef struct hub_query hub_query;

/* One request as the worker saw it; every view is copied by query_submit. */
typedef struct query_request {
    unsigned worker; /* the worker that owns the requesting session */
    const broker_principal *who;
    codec_bytes client_id;
    codec_bytes response_topic;
    codec_bytes correlation;
    codec_bytes payload;
} query_request;

/* An answer to publish (views valid during the call), on the query thread. */
typedef void (*query_answer_fn)(void *ctx, unsigned worker, codec_bytes client_id,
                                codec_bytes response_topic, codec_bytes correlation,
                                codec_bytes payload);

/* wake: makes the serving thread look at the queue (called after a
 * request is queued, from the worker's thread). NULL when out of memory. */
hub_query *query_new(query_answer_fn answer, void *ctx, void (*wake)(void *ctx), void *wake_ctx);
/* Queue a copy of r; false when the queue is full or closed. */
bool query_submit(hub_query *q, const query_request *r);
/* On the thread that owns the telemetry store: answer at most max queued
 * requests; returns how many still wait. */
size_t query_serve(hub_query *q, tstore *ts, registry *reg, size_t max);
/* Take no more requests (the serving thread is stopping). */
void query_close(hub_query *q);
/* Drops what still waits. NULL is fine. */
void query_free(hub_query *q);

/* An error answer: {"error":CODE,"message":TEXT}. malloc'd; NULL when out
 * of memory. */
char *query_error_json(const char *code, const char *message);

#endif
