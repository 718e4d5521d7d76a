/*
 * buf.c — growable bounded byte buffer (see buf.h).
 *
 * Consumed bytes at the front are reclaimed lazily: moved down only when room
 * is needed, so consuming is O(1) and a buffer drained packet by packet does
 * not copy on every packet.
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 256u

void buf_init(buf *b, size_t max)
{
    *b = (buf){.max = max > BUF_MAX_LIMIT ? BUF_MAX_LIMIT : (uint32_t)max};
}

void buf_free(buf *b)
{
    free(b->data);
    *b = (buf){.max = b->max};
}

bool buf_reserve(buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return false;
    size_t need = b->len + n;
    if (b->start + need <= b->cap)
        return true;
    /* Slide the held bytes down only when the consumed front is at least as
     * large as they are (or the buffer cannot grow): otherwise a buffer kept
     * nearly full would move all of its bytes on every append. */
    if (need <= b->cap && (b->start >= b->len || b->cap >= b->max)) {
        memmove(b->data, b->data + b->start, b->len);
        b->start = 0;
        return true;
    }
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need || cap == b->cap)
        cap *= 2; /* cannot overflow: need <= max <= UINT32_MAX */
    if (cap > b->max)
        cap = b->max;
    uint8_t *data = malloc(cap);
    if (!data)
        return false;
    if (b->len)
        memcpy(data, b->data + b->start, b->len);
    free(b->data);
    b->data = data;
    b->cap = (uint32_t)cap;
    b->start = 0;
    return true;
}

bool buf_append(buf *b, const void *src, size_t n)
{
    if (n == 0)
        return true;
    if (!buf_reserve(b, n))
        return false;
    memcpy(b->data + b->start + b->len, src, n);
    b->len += (uint32_t)n;
    return true;
}

uint8_t *buf_tail(buf *b, size_t n)
{
    if (!buf_reserve(b, n) || !b->data) /* no data: nothing was asked for */
        return NULL;
    return b->data + b->start + b->len;
}

void buf_commit(buf *b, size_t n)
{
    b->len += (uint32_t)n; /* n <= what buf_tail reserved */
}

void buf_consume(buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        b->start = 0;
        return;
    }
    b->start += (uint32_t)n; /* n < len */
    b->len -= (uint32_t)n;
}

void buf_shrink(buf *b)
{
    if (b->len == 0 && b->data) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
        b->start = 0;
    }
}
