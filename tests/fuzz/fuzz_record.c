/*
 * fuzz_record.c — libFuzzer target for libmoat's up-link envelope
 * (src/sdk/record.c), which the hub runs on whatever a device publishes.
 *
 * The input, copied to an exact-size heap buffer so that any over-read is an
 * ASan report, is decoded both as a batch envelope and as a bare record.
 * Besides "no crash, no leak, no undefined behaviour" it checks what
 * record.h promises, so that a wrong answer stops the run like a crash:
 *  - an accepted envelope starts with the magic, iterates to exactly the
 *    count it reported (none for a cover record), with views inside the
 *    input, valid stream names and rising sequence numbers;
 *  - the format is canonical: re-encoding the decoded readings with the
 *    encoder (moat_record_encode_reading, moat_batch_add, moat_batch_finish
 *    padded to the input's size) or a cover record of that size gives back
 *    exactly the input bytes; the same for a bare record;
 *  - the encoder refuses nothing the decoder accepted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moat/record.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t len)
{
    return n == 0 || (p >= buf && n <= len && (size_t)(p - buf) <= len - n);
}

/* A reading's stream as a C string for the encoder (stream names have no NUL). */
static void stream_str(const moat_reading *r, char out[MOAT_RECORD_MAX_STREAM + 1])
{
    CHECK(r->stream_len <= MOAT_RECORD_MAX_STREAM);
    memcpy(out, r->stream, r->stream_len);
    out[r->stream_len] = '\0';
}

static void check_batch(const uint8_t *buf, size_t len)
{
    moat_batch_iter it;
    moat_batch_kind kind = 0;
    uint32_t count = 0;
    if (moat_batch_decode(&it, buf, len, &kind, &count) != MOAT_OK) {
        moat_reading r;
        CHECK(!moat_batch_next(&it, &r));
        return;
    }
    CHECK(moat_batch_is_envelope(buf, len));
    CHECK(len >= MOAT_BATCH_HEADER);
    CHECK(kind == MOAT_BATCH_READINGS || kind == MOAT_BATCH_COVER);
    CHECK((kind == MOAT_BATCH_COVER) == (count == 0));

    uint8_t *again = malloc(len);
    uint8_t *rec = malloc(len);
    CHECK(again && rec);
    moat_batch b;
    CHECK(moat_batch_begin(&b, again, len) == MOAT_OK);
    moat_reading r;
    uint32_t seen = 0;
    uint64_t prev = 0;
    while (moat_batch_next(&it, &r)) {
        CHECK(inside(r.stream, r.stream_len, buf, len));
        CHECK(inside(r.payload, r.payload_len, buf, len));
        CHECK(moat_record_stream_valid(r.stream, r.stream_len));
        CHECK(seen == 0 || r.seq > prev);
        prev = r.seq;
        char stream[MOAT_RECORD_MAX_STREAM + 1];
        stream_str(&r, stream);
        size_t n = 0;
        CHECK(moat_record_encode_reading(rec, len, stream, r.device_time_ms, r.payload,
                                         r.payload_len, &n) == MOAT_OK);
        CHECK(moat_batch_add(&b, r.seq, rec, n) == MOAT_OK);
        seen++;
    }
    CHECK(seen == count);
    CHECK(!moat_batch_next(&it, &r));
    size_t out = 0;
    if (kind == MOAT_BATCH_COVER)
        CHECK(moat_batch_cover(again, len, len) == MOAT_OK);
    else
        CHECK(moat_batch_finish(&b, len, &out) == MOAT_OK && out == len);
    CHECK(memcmp(again, buf, len) == 0);
    free(again);
    free(rec);
}

static void check_record(const uint8_t *buf, size_t len)
{
    moat_reading r;
    if (moat_record_decode_reading(buf, len, &r) != MOAT_OK)
        return;
    CHECK(r.seq == 0);
    CHECK(inside(r.stream, r.stream_len, buf, len));
    CHECK(inside(r.payload, r.payload_len, buf, len));
    CHECK(MOAT_RECORD_SIZE(r.stream_len, r.payload_len) == len);
    char stream[MOAT_RECORD_MAX_STREAM + 1];
    stream_str(&r, stream);
    uint8_t *again = malloc(len);
    CHECK(again);
    size_t n = 0;
    CHECK(moat_record_encode_reading(again, len, stream, r.device_time_ms, r.payload, r.payload_len,
                                     &n) == MOAT_OK);
    CHECK(n == len && memcmp(again, buf, len) == 0);
    /* A batch of this one record decodes back to it. */
    size_t cap = MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD + len;
    uint8_t *batch = malloc(cap);
    CHECK(batch);
    moat_batch b;
    size_t out = 0;
    CHECK(moat_batch_begin(&b, batch, cap) == MOAT_OK);
    CHECK(moat_batch_add(&b, 5, buf, len) == MOAT_OK);
    CHECK(moat_batch_finish(&b, 0, &out) == MOAT_OK && out == cap);
    moat_batch_iter it;
    moat_reading back;
    CHECK(moat_batch_decode_first(&it, batch, out, &back) == MOAT_OK);
    CHECK(back.seq == 5 && back.payload_len == r.payload_len &&
          back.device_time_ms == r.device_time_ms && back.stream_len == r.stream_len);
    CHECK(moat_batch_decode_next(&it, &back) == MOAT_ERR_STATE);
    free(again);
    free(batch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    check_batch(buf, size);
    check_record(buf, size);
    free(buf);
    return 0;
}
