/*
 * moat/record.h — the up-link wire format: readings, batches, cover records.
 *
 * What a device publishes on moat/{id}/up/... is either a plain payload
 * (anything a standard MQTT client sends; the hub stores it as one raw
 * reading of the topic's stream) or a moat batch envelope, recognised by its
 * four-byte magic. A batch holds 1..MOAT_BATCH_MAX_READINGS readings, each
 * {stream name, sequence number, device time, payload}, and may be padded
 * with zero bytes to a fixed size; a cover record holds no reading and is all
 * padding. The shaper (shaper.h) sends nothing but fixed-size batches and
 * cover records, so a batch must carry its own end: the decoder finds the
 * readings from the count in the header and checks that all that follows is
 * zero padding. docs/sdk-wire.md has the byte layout.
 *
 * The same code encodes on the device and decodes in the hub, so the decoder
 * is pure and bounded: it checks the whole envelope before it hands out the
 * first reading (a caller never acts on half of a bad batch), reads only
 * inside [buf, buf + len), and returns views into the input. Everything here
 * works on caller buffers; nothing allocates.
 *
 * A reading goes through two forms:
 *   - the record (moat_record_encode_reading): stream, device time, payload,
 *     without a sequence number. These are the bytes the device's
 *     store-and-forward queue keeps, which assigns the sequence number when
 *     it stores them;
 *   - the batch entry (moat_batch_add): the queue's sequence number followed
 *     by the record, which is what travels.
 */
#ifndef MOAT_RECORD_H
#define MOAT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moat/platform.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits ------------------------------------------------------------ */

/* A stream name is one topic level: 1..MOAT_RECORD_MAX_STREAM bytes of
 * printable ASCII (0x21..0x7e) other than '/', '+' and '#', not starting
 * with '_' (names beginning with '_' are the SDK's, like "_shaped"). */
#define MOAT_RECORD_MAX_STREAM 64u
/* A payload is at most 65535 bytes (its length is a u16 on the wire). */
#define MOAT_RECORD_MAX_PAYLOAD 65535u
/* Readings in one batch (its count is a u16 on the wire). */
#define MOAT_BATCH_MAX_READINGS 65535u

/* Bytes of framing around a reading's stream name and payload in a record,
 * and what a batch entry adds to a record (the sequence number). */
#define MOAT_RECORD_OVERHEAD      11u /* stream length u8, device time u64, payload length u16 */
#define MOAT_BATCH_ENTRY_OVERHEAD 8u
/* The batch header: magic (4), version (1), kind (1), count (2). */
#define MOAT_BATCH_HEADER 8u
/* The smallest fixed size a shaped record can have (a header alone). */
#define MOAT_BATCH_MIN_SIZE MOAT_BATCH_HEADER

/* Bytes a record of this stream and payload takes (no overflow: both are
 * bounded by the limits above). */
#define MOAT_RECORD_SIZE(stream_len, payload_len)                                                  \
    ((size_t)MOAT_RECORD_OVERHEAD + (size_t)(stream_len) + (size_t)(payload_len))

/* The largest record that fits into a batch of `size` bytes on its own (0 if
 * none). A device that shapes its traffic to records of `size` bytes must not
 * queue a larger record: it could never be sent. */
#define MOAT_BATCH_MAX_RECORD(size)                                                                \
    ((size) > MOAT_BATCH_HEADER + MOAT_BATCH_ENTRY_OVERHEAD                                        \
         ? (size_t)(size)-MOAT_BATCH_HEADER - MOAT_BATCH_ENTRY_OVERHEAD                            \
         : (size_t)0)

/* What an envelope is. */
typedef enum { MOAT_BATCH_READINGS = 1, MOAT_BATCH_COVER = 2 } moat_batch_kind;

/* One decoded reading: views into the bytes it was decoded from. */
typedef struct moat_reading {
    const uint8_t *stream; /* not NUL-terminated */
    size_t stream_len;
    uint64_t seq;            /* the device queue's sequence number (0 in a bare record) */
    uint64_t device_time_ms; /* ms since the Unix epoch, 0 = the device did not know */
    const uint8_t *payload;
    size_t payload_len;
} moat_reading;

/* True if s (len bytes, not NUL-terminated) is a valid stream name. */
bool moat_record_stream_valid(const uint8_t *s, size_t len);

/* ---- records (what the queue stores) --------------------------------- */

/*
 * Encode one reading as a record into buf (cap bytes).
 *   stream          the stream name (see limits), NUL-terminated
 *   device_time_ms  ms since the Unix epoch, 0 if unknown
 *   payload, len    the reading's bytes (len <= MOAT_RECORD_MAX_PAYLOAD)
 *   out_len         gets the record's size
 * Returns MOAT_OK, MOAT_ERR_ARG (bad stream name or payload too long),
 * MOAT_ERR_SPACE (cap < MOAT_RECORD_SIZE(...); *out_len still gets the size
 * needed).
 */
moat_status moat_record_encode_reading(uint8_t *buf, size_t cap, const char *stream,
                                       uint64_t device_time_ms, const uint8_t *payload,
                                       size_t payload_len, size_t *out_len);

/* Decode a record made by moat_record_encode_reading: exactly len bytes, no
 * more, no less. out->seq is 0. Returns MOAT_OK or MOAT_ERR_PROTOCOL. */
moat_status moat_record_decode_reading(const uint8_t *buf, size_t len, moat_reading *out);

/* ---- batches (what travels) -------------------------------------------- */

/* A batch being built in a caller buffer. Fields are private. */
typedef struct moat_batch {
    uint8_t *buf;
    size_t cap;
    size_t len;
    uint32_t count;
} moat_batch;

/* Start a batch in buf. MOAT_ERR_SPACE if cap < MOAT_BATCH_HEADER. */
moat_status moat_batch_begin(moat_batch *b, uint8_t *buf, size_t cap);

/*
 * Append one reading: seq (from the queue) and the record bytes (as made by
 * moat_record_encode_reading; checked again here). Returns MOAT_OK,
 * MOAT_ERR_SPACE when the entry does not fit (the batch is unchanged; finish
 * it and send it), MOAT_ERR_PROTOCOL when rec is not a valid record,
 * MOAT_ERR_FULL after MOAT_BATCH_MAX_READINGS entries.
 */
moat_status moat_batch_add(moat_batch *b, uint64_t seq, const uint8_t *rec, size_t rec_len);

/* The largest record (rec_len) that moat_batch_add would still accept. For a
 * shaped record, begin the batch with cap = the record size, so that what
 * fits is exactly what fits after padding. */
size_t moat_batch_room(const moat_batch *b);

/*
 * Close the batch: write the header's count and pad with zeros to pad_to
 * bytes (0 = no padding). *out_len gets the envelope size (== pad_to when
 * pad_to > 0). MOAT_ERR_STATE for an empty batch (send a cover record
 * instead), MOAT_ERR_SPACE if pad_to > cap or the entries already exceed
 * pad_to.
 */
moat_status moat_batch_finish(moat_batch *b, size_t pad_to, size_t *out_len);

/* Write a cover record of exactly size bytes into buf (cap bytes).
 * MOAT_ERR_SPACE if size < MOAT_BATCH_MIN_SIZE or size > cap. */
moat_status moat_batch_cover(uint8_t *buf, size_t cap, size_t size);

/* ---- decoding (device tests, and the hub) -------------------------------- */

/* True if buf starts with the batch magic: the publish is a moat envelope
 * (to be decoded, and refused if malformed), not a plain payload. */
bool moat_batch_is_envelope(const uint8_t *buf, size_t len);

/* An iterator over a checked batch. Fields are private. */
typedef struct moat_batch_iter {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    uint32_t left;
    moat_batch_kind kind;
    uint32_t count;
} moat_batch_iter;

/*
 * Check a whole envelope (magic, version, kind, count, every entry with a
 * valid stream name and a sequence number above the previous entry's, zero
 * padding to the end) and point the iterator before its first reading.
 *   kind, count  optional (may be NULL): what the envelope is and how many
 *                readings it holds (0 for a cover record)
 * Returns MOAT_OK, or MOAT_ERR_PROTOCOL for anything else (nothing is handed
 * out from a bad envelope).
 */
moat_status moat_batch_decode(moat_batch_iter *it, const uint8_t *buf, size_t len,
                              moat_batch_kind *kind, uint32_t *count);

/* The next reading of a batch moat_batch_decode accepted; false at the end.
 * The views point into the decoded buffer. */
bool moat_batch_next(moat_batch_iter *it, moat_reading *out);

/* Convenience for the common loop: moat_batch_decode + the first reading.
 * MOAT_OK with *out set, MOAT_ERR_STATE for a valid cover record (no
 * reading), MOAT_ERR_PROTOCOL for a malformed envelope. */
moat_status moat_batch_decode_first(moat_batch_iter *it, const uint8_t *buf, size_t len,
                                    moat_reading *out);
/* The following readings: MOAT_OK with *out set, MOAT_ERR_STATE at the end. */
moat_status moat_batch_decode_next(moat_batch_iter *it, moat_reading *out);

#ifdef __cplusplus
}
#endif
#endif
