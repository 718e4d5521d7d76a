/*
 * buf.h — a growable byte buffer with a maximum fixed at creation.
 *
 * Connection input and output go through these. The maximum is what makes a
 * slow or hostile peer unable to grow the hub's memory without bound: an
 * append that would pass it fails, and the caller decides (close the
 * connection, drop a QoS 0 message).
 */
#ifndef MOAT_COMMON_BUF_H
#define MOAT_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 32-bit sizes: every idle connection holds two of these, and no MQTT packet
 * or output backlog the hub allows comes near 4 GiB. */
typedef struct buf {
    uint8_t *data;
    uint32_t len;   /* bytes held, from data[start] */
    uint32_t start; /* bytes already consumed at the front */
    uint32_t cap;
    uint32_t max;
} buf;

#define BUF_MAX_LIMIT UINT32_MAX

/* max is clipped to BUF_MAX_LIMIT. */
void buf_init(buf *b, size_t max);
void buf_free(buf *b);

/* The held bytes. */
static inline uint8_t *buf_ptr(const buf *b)
{
    return b->data + b->start;
}

/* Make room for n more bytes; false when that would pass the maximum or
 * memory runs out. */
bool buf_reserve(buf *b, size_t n);

/* Append n bytes; false (and nothing appended) as for buf_reserve. */
bool buf_append(buf *b, const void *src, size_t n);

/* Space for n bytes at the end, to be filled and then committed with
 * buf_commit; NULL as for buf_reserve. */
uint8_t *buf_tail(buf *b, size_t n);
void buf_commit(buf *b, size_t n);

/* Drop n bytes from the front. */
void buf_consume(buf *b, size_t n);

/* Give memory back when empty (idle connections stay small). */
void buf_shrink(buf *b);

#endif /* MOAT_COMMON_BUF_H */
