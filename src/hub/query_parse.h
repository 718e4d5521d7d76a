/*
 * query_parse.h — a service's telemetry query request, parsed and checked
 * (docs/telemetry.md, "Queries from services"), and the page cursor as text.
 *
 * Apart from query.c so that the parser of these untrusted bytes has a fuzz
 * target of its own (tests/fuzz/fuzz_query.c) without a store or a
 * registry: jansson parses, this file checks every field's type and range.
 */
#ifndef MOAT_HUB_QUERY_PARSE_H
#define MOAT_HUB_QUERY_PARSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tstore.h"

#define QUERY_REQUEST_MAX   4096u /* bytes of a request's payload */
#define QUERY_PAGE_MAX      500u  /* readings per answer */
#define QUERY_DEFAULT_LIMIT 100u
#define QUERY_CURSOR_MAX    48u /* bytes of a cursor's text, with its NUL */

/* Parse payload into q. NULL on success: q's views point into *doc, which
 * the caller frees with json_decref after using q. Otherwise a short
 * message for the error answer (*doc is then NULL). */
const char *query_parse(const uint8_t *payload, size_t len, tstore_query *q, json_t **doc);

/* "RECEIVED_MS.ROW", both decimal: what an answer's "next" holds. */
bool query_cursor_parse(const char *text, tstore_cursor *out);
void query_cursor_format(const tstore_cursor *c, char out[QUERY_CURSOR_MAX]);

#endif
