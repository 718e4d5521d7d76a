/*
 * reader.h — the bounded reader and the counting writer behind every codec.
 *
 * The reader is the only way codec code touches wire bytes: every read checks
 * `n <= len - pos` first, and a failed read leaves the reader failed so that a
 * chain of reads can be checked once at the end. The writer never writes past
 * its capacity but keeps counting, so one pass over a packet both encodes it
 * and measures it (run it with cap 0 to measure only).
 *
 * Internal to the codec and to other project parsers; not part of any public
 * API. All functions are static inline so that each user gets only what it
 * calls.
 */
#ifndef MOAT_CODEC_READER_H
#define MOAT_CODEC_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"

typedef struct rd {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    bool failed;
} rd;

static inline rd rd_init(const uint8_t *buf, size_t len)
{
    rd r = {buf, len, 0, false};
    return r;
}

static inline size_t rd_left(const rd *r)
{
    return r->failed ? 0 : r->len - r->pos;
}

static inline bool rd_need(rd *r, size_t n)
{
    if (r->failed || n > r->len - r->pos) {
        r->failed = true;
        return false;
    }
    return true;
}

static inline uint8_t rd_u8(rd *r)
{
    if (!rd_need(r, 1))
        return 0;
    return r->buf[r->pos++];
}

static inline uint16_t rd_u16(rd *r)
{
    if (!rd_need(r, 2))
        return 0;
    uint16_t v = (uint16_t)((uint16_t)r->buf[r->pos] << 8 | r->buf[r->pos + 1]);
    r->pos += 2;
    return v;
}

static inline uint32_t rd_u32(rd *r)
{
    if (!rd_need(r, 4))
        return 0;
    const uint8_t *p = r->buf + r->pos;
    r->pos += 4;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* n raw bytes as a view. */
static inline codec_bytes rd_bytes(rd *r, size_t n)
{
    codec_bytes b = {NULL, 0};
    if (!rd_need(r, n))
        return b;
    b.ptr = r->buf + r->pos;
    b.len = n;
    r->pos += n;
    return b;
}

/* Two-byte length followed by that many bytes (MQTT "Binary Data"; a UTF-8
 * string before validation). */
static inline codec_bytes rd_lenbytes(rd *r)
{
    size_t n = rd_u16(r);
    return rd_bytes(r, n);
}

/* Everything that is left. */
static inline codec_bytes rd_rest(rd *r)
{
    return rd_bytes(r, rd_left(r));
}

/*
 * Variable Byte Integer: at most 4 bytes. Sets *status to CODEC_NEED_MORE when
 * the input stops inside the integer (the caller decides if that is "wait" or
 * "malformed"), CODEC_ERR_MALFORMED for a fifth byte or a non-minimal
 * encoding ([MQTT-1.5.5-1]), CODEC_OK otherwise.
 */
static inline uint32_t rd_vbi(rd *r, codec_status *status)
{
    uint32_t value = 0;
    for (unsigned i = 0; i < 4; i++) {
        if (r->failed || r->pos >= r->len) {
            *status = CODEC_NEED_MORE;
            r->failed = true;
            return 0;
        }
        uint8_t byte = r->buf[r->pos++];
        value |= (uint32_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            /* A last byte of 0 after the first means a shorter form existed. */
            if (i > 0 && byte == 0) {
                *status = CODEC_ERR_MALFORMED;
                r->failed = true;
                return 0;
            }
            *status = CODEC_OK;
            return value;
        }
    }
    *status = CODEC_ERR_MALFORMED;
    r->failed = true;
    return 0;
}

/* ---- writer ----------------------------------------------------------- */

typedef struct wr {
    uint8_t *buf;
    size_t cap;
    size_t pos; /* bytes the output needs so far, even past cap */
} wr;

static inline wr wr_init(uint8_t *buf, size_t cap)
{
    wr w = {buf, cap, 0};
    return w;
}

static inline void wr_raw(wr *w, const void *src, size_t n)
{
    if (n > 0 && w->pos <= w->cap && n <= w->cap - w->pos)
        memcpy(w->buf + w->pos, src, n);
    w->pos += n; /* sizes are bounded by the caller to the protocol maximum */
}

static inline void wr_u8(wr *w, uint8_t v)
{
    wr_raw(w, &v, 1);
}

static inline void wr_u16(wr *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    wr_raw(w, b, 2);
}

static inline void wr_u32(wr *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    wr_raw(w, b, 4);
}

/* Bytes a Variable Byte Integer takes; 0 when v is over the 4-byte maximum. */
static inline size_t vbi_size(size_t v)
{
    if (v < 128u)
        return 1;
    if (v < 16384u)
        return 2;
    if (v < 2097152u)
        return 3;
    if (v <= CODEC_MAX_VBI)
        return 4;
    return 0;
}

/* Caller has checked v <= CODEC_MAX_VBI. */
static inline void wr_vbi(wr *w, uint32_t v)
{
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        if (v)
            byte |= 0x80;
        wr_u8(w, byte);
    } while (v);
}

/* Two-byte length then bytes; caller has checked b.len <= 65535. */
static inline void wr_lenbytes(wr *w, codec_bytes b)
{
    wr_u16(w, (uint16_t)b.len);
    wr_raw(w, b.ptr, b.len);
}

#endif /* MOAT_CODEC_READER_H */
