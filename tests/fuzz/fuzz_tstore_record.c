/*
 * fuzz_tstore_record.c — libFuzzer target for the telemetry store's sealed
 * record layout (tcrypt_record_decode in src/telemetry/tcrypt.c), which
 * parses what a ciphertext opened to. The AEAD makes forged records
 * unlikely, but a record written by a buggy or older program, or read with
 * a key an attacker knows, must still be parsed within its bounds.
 *
 * The input is copied to an exact-size heap buffer, so any over-read is an
 * ASan report. An accepted record must have views inside the input and
 * within the limits, and re-encoding it must give back exactly the input
 * (the layout is canonical: nothing is ignored on the way in).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcrypt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool inside(codec_bytes b, const uint8_t *buf, size_t len)
{
    return b.len == 0 || (b.ptr >= buf && b.len <= len && (size_t)(b.ptr - buf) <= len - b.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    tstore_reading r;
    memset(&r, 0, sizeof r);
    if (tcrypt_record_decode(buf, size, &r)) {
        CHECK(inside(r.stream, buf, size) && inside(r.payload, buf, size));
        CHECK(r.stream.len >= 1 && r.stream.len <= TSTORE_STREAM_MAX);
        CHECK(r.payload.len <= TSTORE_PAYLOAD_MAX);
        r.device = "d";
        CHECK(tcrypt_record_len(&r) == size);
        uint8_t *again = malloc(size);
        CHECK(again != NULL);
        tcrypt_record_encode(&r, again);
        CHECK(memcmp(again, buf, size) == 0);
        free(again);
    }
    free(buf);
    return 0;
}
