/*
 * query_parse.c — telemetry query requests and cursors (query_parse.h).
 *
 * Strict: an unknown field, a duplicate key, a wrong type or a value out of
 * range is an error, so a typo in a back end's request is told at once
 * rather than silently widening or narrowing what it reads.
 */
#include "query_parse.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool query_cursor_parse(const char *s, tstore_cursor *out)
{
    char *end;
    errno = 0;
    long long rx = strtoll(s, &end, 10);
    if (errno || end == s || *end != '.')
        return false;
    const char *row_text = end + 1;
    long long row = strtoll(row_text, &end, 10);
    if (errno || end == row_text || *end != '\0')
        return false;
    out->received_ms = rx;
    out->row = row;
    return true;
}

void query_cursor_format(const tstore_cursor *c, char out[QUERY_CURSOR_MAX])
{
    snprintf(out, QUERY_CURSOR_MAX, "%" PRId64 ".%" PRId64, c->received_ms, c->row);
}

static bool get_ms(json_t *v, int64_t *out)
{
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static bool present(json_t *v)
{
    return v && !json_is_null(v);
}

static const char *check_fields(json_t *req)
{
    static const char *const known[] = {"device", "stream", "since",       "until",
                                        "limit",  "after",  "newest_first"};
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok)
            return "unknown field in the request";
    }
    return NULL;
}

static const char *parse_fields(json_t *req, tstore_query *q)
{
    const char *bad = check_fields(req);
    if (bad)
        return bad;
    json_t *v = json_object_get(req, "device");
    const char *device = json_string_value(v);
    if (!device || strlen(device) != json_string_length(v) || !tstore_device_valid(device))
        return "\"device\" must be a device id";
    q->device = device;
    if (present(v = json_object_get(req, "stream"))) {
        const char *st = json_string_value(v);
        size_t len = st ? json_string_length(v) : 0;
        if (!st || len == 0 || len > TSTORE_STREAM_MAX || strlen(st) != len)
            return "\"stream\" must be a non-empty string of at most 256 bytes";
        q->stream = (codec_bytes){(const uint8_t *)st, len};
    }
    if (present(v = json_object_get(req, "since")) && !get_ms(v, &q->since_ms))
        return "\"since\" must be milliseconds since the epoch";
    if (present(v = json_object_get(req, "until")) && !get_ms(v, &q->until_ms))
        return "\"until\" must be milliseconds since the epoch";
    if (present(v = json_object_get(req, "limit"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > (json_int_t)QUERY_PAGE_MAX)
            return "\"limit\" must be from 1 to 500";
        q->limit = (size_t)json_integer_value(v);
    }
    if (present(v = json_object_get(req, "after"))) {
        const char *c = json_string_value(v);
        if (!c || strlen(c) != json_string_length(v) || !query_cursor_parse(c, &q->after))
            return "\"after\" must be the \"next\" of an earlier answer";
        q->has_after = true;
    }
    if (present(v = json_object_get(req, "newest_first"))) {
        if (!json_is_boolean(v))
            return "\"newest_first\" must be true or false";
        q->newest_first = json_is_true(v);
    }
    return NULL;
}

const char *query_parse(const uint8_t *payload, size_t len, tstore_query *q, json_t **doc)
{
    *doc = NULL;
    *q = (tstore_query){.since_ms = INT64_MIN, .until_ms = INT64_MAX, .limit = QUERY_DEFAULT_LIMIT};
    if (len > QUERY_REQUEST_MAX)
        return "the request is larger than 4096 bytes";
    json_error_t jerr;
    json_t *req = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        return "the request is not a JSON object";
    }
    const char *bad = parse_fields(req, q);
    if (bad) {
        json_decref(req);
        return bad;
    }
    *doc = req;
    return NULL;
}
