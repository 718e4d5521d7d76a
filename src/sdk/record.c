/*
 * record.c — the up-link envelope: readings as the queue stores them, batches
 * and cover records as they travel (include/moat/record.h, docs/sdk-wire.md).
 *
 * The decoder runs in the hub on whatever a device sends, so it reads only
 * through the codec's bounded reader and checks a whole envelope before the
 * iterator hands out a single reading. Encoding writes into caller buffers
 * and checks room before every write.
 */
#include <string.h>

#include <moat/record.h>

#include "trust.h"

#define BATCH_VERSION 1u

/* "\0mtb": a text or JSON payload never starts with NUL, so a plain publish
 * is not mistaken for an envelope. */
static const uint8_t batch_magic[4] = {0x00, 'm', 't', 'b'};

bool moat_trust_level_valid(const uint8_t *s, size_t len, size_t max)
{
    if (s == NULL || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        if (c < 0x21 || c > 0x7e || c == '/' || c == '+' || c == '#')
            return false;
    }
    return true;
}

bool moat_record_stream_valid(const uint8_t *s, size_t len)
{
    return moat_trust_level_valid(s, len, MOAT_RECORD_MAX_STREAM) && s[0] != '_';
}

/* One record (stream, time, payload) from r; the caller checks r->failed. */
static bool record_read(rd *r, moat_reading *out)
{
    codec_bytes stream = rd_bytes(r, rd_u8(r));
    out->device_time_ms = trust_rd_u64(r);
    codec_bytes payload = rd_lenbytes(r);
    out->stream = stream.ptr;
    out->stream_len = stream.len;
    out->payload = payload.ptr;
    out->payload_len = payload.len;
    return !r->failed && moat_record_stream_valid(stream.ptr, stream.len);
}

moat_status moat_record_encode_reading(uint8_t *buf, size_t cap, const char *stream,
                                       uint64_t device_time_ms, const uint8_t *payload,
                                       size_t payload_len, size_t *out_len)
{
    if (stream == NULL || out_len == NULL || (payload == NULL && payload_len > 0))
        return MOAT_ERR_ARG;
    size_t slen = strlen(stream);
    if (!moat_record_stream_valid((const uint8_t *)stream, slen) ||
        payload_len > MOAT_RECORD_MAX_PAYLOAD)
        return MOAT_ERR_ARG;
    size_t need = MOAT_RECORD_SIZE(slen, payload_len);
    *out_len = need;
    if (buf == NULL || need > cap)
        return MOAT_ERR_SPACE;
    wr w = wr_init(buf, cap);
    wr_u8(&w, (uint8_t)slen);
    wr_raw(&w, stream, slen);
    trust_wr_u64(&w, device_time_ms);
    wr_u16(&w, (uint16_t)payload_len);
    wr_raw(&w, payload, payload_len);
    return MOAT_OK;
}

moat_status moat_record_decode_reading(const uint8_t *buf, size_t len, moat_reading *out)
{
    if (buf == NULL || out == NULL)
        return MOAT_ERR_ARG;
    rd r = rd_init(buf, len);
    out->seq = 0;
    if (!record_read(&r, out) || rd_left(&r) != 0)
        return MOAT_ERR_PROTOCOL;
    return MOAT_OK;
}

/* ---- building ---------------------------------------------------------- */

static void batch_header(uint8_t *buf, moat_batch_kind kind, uint32_t count)
{
    memcpy(buf, batch_magic, sizeof batch_magic);
    buf[4] = BATCH_VERSION;
    buf[5] = (uint8_t)kind;
    buf[6] = (uint8_t)(count >> 8);
    buf[7] = (uint8_t)count;
}

moat_status moat_batch_begin(moat_batch *b, uint8_t *buf, size_t cap)
{
    if (b == NULL || buf == NULL)
        return MOAT_ERR_ARG;
    if (cap < MOAT_BATCH_HEADER)
        return MOAT_ERR_SPACE;
    b->buf = buf;
    b->cap = cap;
    b->len = MOAT_BATCH_HEADER;
    b->count = 0;
    batch_header(buf, MOAT_BATCH_READINGS, 0);
    return MOAT_OK;
}

size_t moat_batch_room(const moat_batch *b)
{
    size_t left = b->cap - b->len;
    return left > MOAT_BATCH_ENTRY_OVERHEAD ? left - MOAT_BATCH_ENTRY_OVERHEAD : 0;
}

/* Commit the entry whose record (rec_len bytes) already sits after the room
 * for its sequence number: check the record, then write the number. */
static moat_status batch_commit(moat_batch *b, uint64_t seq, size_t rec_len)
{
    uint8_t *entry = b->buf + b->len;
    moat_reading ignored;
    if (moat_record_decode_reading(entry + MOAT_BATCH_ENTRY_OVERHEAD, rec_len, &ignored) != MOAT_OK)
        return MOAT_ERR_PROTOCOL;
    wr w = wr_init(entry, MOAT_BATCH_ENTRY_OVERHEAD);
    trust_wr_u64(&w, seq);
    b->len += MOAT_BATCH_ENTRY_OVERHEAD + rec_len;
    b->count++;
    return MOAT_OK;
}

moat_status moat_batch_add(moat_batch *b, uint64_t seq, const uint8_t *rec, size_t rec_len)
{
    if (b == NULL || rec == NULL)
        return MOAT_ERR_ARG;
    if (b->count >= MOAT_BATCH_MAX_READINGS)
        return MOAT_ERR_FULL;
    if (rec_len > moat_batch_room(b))
        return MOAT_ERR_SPACE;
    memmove(b->buf + b->len + MOAT_BATCH_ENTRY_OVERHEAD, rec, rec_len);
    return batch_commit(b, seq, rec_len);
}

moat_status moat_batch_finish(moat_batch *b, size_t pad_to, size_t *out_len)
{
    if (b == NULL || out_len == NULL)
        return MOAT_ERR_ARG;
    if (b->count == 0)
        return MOAT_ERR_STATE;
    size_t total = b->len;
    if (pad_to > 0) {
        if (pad_to > b->cap || b->len > pad_to)
            return MOAT_ERR_SPACE;
        memset(b->buf + b->len, 0, pad_to - b->len);
        total = pad_to;
    }
    batch_header(b->buf, MOAT_BATCH_READINGS, b->count);
    *out_len = total;
    return MOAT_OK;
}

moat_status moat_batch_cover(uint8_t *buf, size_t cap, size_t size)
{
    if (buf == NULL)
        return MOAT_ERR_ARG;
    if (size < MOAT_BATCH_MIN_SIZE || size > cap)
        return MOAT_ERR_SPACE;
    memset(buf, 0, size);
    batch_header(buf, MOAT_BATCH_COVER, 0);
    return MOAT_OK;
}

/* ---- decoding ---------------------------------------------------------- */

bool moat_batch_is_envelope(const uint8_t *buf, size_t len)
{
    return buf != NULL && len >= sizeof batch_magic &&
           memcmp(buf, batch_magic, sizeof batch_magic) == 0;
}

/* One entry (sequence number, then a record). */
static bool entry_read(rd *r, moat_reading *out)
{
    out->seq = trust_rd_u64(r);
    return record_read(r, out);
}

moat_status moat_batch_decode(moat_batch_iter *it, const uint8_t *buf, size_t len,
                              moat_batch_kind *kind, uint32_t *count)
{
    if (it == NULL || (buf == NULL && len > 0))
        return MOAT_ERR_ARG;
    memset(it, 0, sizeof *it);
    if (!moat_batch_is_envelope(buf, len))
        return MOAT_ERR_PROTOCOL;
    rd r = rd_init(buf, len);
    (void)rd_bytes(&r, sizeof batch_magic);
    uint8_t version = rd_u8(&r);
    uint8_t k = rd_u8(&r);
    uint32_t n = rd_u16(&r);
    if (r.failed || version != BATCH_VERSION)
        return MOAT_ERR_PROTOCOL;
    if (!(k == MOAT_BATCH_READINGS && n > 0) && !(k == MOAT_BATCH_COVER && n == 0))
        return MOAT_ERR_PROTOCOL;
    size_t first = r.pos;
    moat_reading e;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* The queue hands out readings in order: sequence numbers rise. */
        if (!entry_read(&r, &e) || (i > 0 && e.seq <= prev))
            return MOAT_ERR_PROTOCOL;
        prev = e.seq;
    }
    /* Everything after the last entry is padding, and padding is zeros. */
    for (size_t i = r.pos; i < len; i++)
        if (buf[i] != 0)
            return MOAT_ERR_PROTOCOL;
    it->buf = buf;
    it->len = len;
    it->pos = first;
    it->left = n;
    it->count = n;
    it->kind = (moat_batch_kind)k;
    if (kind != NULL)
        *kind = it->kind;
    if (count != NULL)
        *count = n;
    return MOAT_OK;
}

bool moat_batch_next(moat_batch_iter *it, moat_reading *out)
{
    if (it == NULL || out == NULL || it->left == 0)
        return false;
    rd r = rd_init(it->buf, it->len);
    r.pos = it->pos;
    if (!entry_read(&r, out)) {
        /* Cannot happen after moat_batch_decode; stay closed if it does. */
        it->left = 0;
        return false;
    }
    it->pos = r.pos;
    it->left--;
    return true;
}

moat_status moat_batch_decode_first(moat_batch_iter *it, const uint8_t *buf, size_t len,
                                    moat_reading *out)
{
    moat_status st = moat_batch_decode(it, buf, len, NULL, NULL);
    if (st != MOAT_OK)
        return st;
    return moat_batch_decode_next(it, out);
}

moat_status moat_batch_decode_next(moat_batch_iter *it, moat_reading *out)
{
    return moat_batch_next(it, out) ? MOAT_OK : MOAT_ERR_STATE;
}
