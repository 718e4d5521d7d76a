/*
 * fuzz_query.c — libFuzzer target for the telemetry query request parser
 * (src/hub/query_parse.c): the bytes an authenticated service publishes to
 * $moat/telemetry/query.
 *
 * Besides "no crash, no leak, no undefined behaviour", a request that parses
 * must satisfy what the store relies on, so a wrong answer stops the run:
 * a device id the store accepts, a stream within its limit, a page size
 * from 1 to QUERY_PAGE_MAX, and a cursor that survives formatting and
 * parsing again. The input is also tried as a cursor on its own.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "query_parse.h"

static void check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_cursor_round_trip(const tstore_cursor *c)
{
    char text[QUERY_CURSOR_MAX];
    query_cursor_format(c, text);
    tstore_cursor back;
    check(query_cursor_parse(text, &back));
    check(back.received_ms == c->received_ms && back.row == c->row);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tstore_query q;
    json_t *doc = NULL;
    const char *bad = query_parse(data, size, &q, &doc);
    if (bad) {
        check(doc == NULL && bad[0] != '\0');
    } else {
        check(doc != NULL);
        check(tstore_device_valid(q.device));
        check(q.stream.len <= TSTORE_STREAM_MAX);
        check(q.limit >= 1 && q.limit <= QUERY_PAGE_MAX);
        if (q.has_after)
            check_cursor_round_trip(&q.after);
        json_decref(doc);
    }
    if (size < 64) {
        char text[64];
        memcpy(text, data, size);
        text[size] = '\0';
        tstore_cursor c;
        if (query_cursor_parse(text, &c))
            check_cursor_round_trip(&c);
    }
    return 0;
}
