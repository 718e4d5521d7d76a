/*
 * queue.c — the store-and-forward queue (moat/queue.h): a ring of
 * CRC-checked records in one storage area, recoverable after power loss at
 * any byte.
 *
 * Layout (docs/sdk-queue.md has the full argument): two 32-byte header
 * copies at offsets 0 and 32, then the ring [64, end). A header copy holds the
 * per-format salt, a generation, and the sequence number of the oldest
 * record; it is rewritten, alternating copies, only when the oldest record
 * changes (pop, drop, and when recovery skipped unreadable oldest records).
 * A push writes only
 * its record: 16 bytes {magic, length, sequence number, CRC} and the payload,
 * padded to 4 in space (the padding is not written). Records never straddle
 * the end of the ring: one that does not fit is written at its start.
 *
 * Recovery takes, in one pass over the ring, the valid record (magic,
 * bounds, salted CRC) with the smallest sequence number at least the
 * header's; from it, each next record is the first valid one with a larger
 * number, scanning forward at 4-byte steps and wrapping once. (The oldest
 * record's offset is not stored: a record written when the queue was empty
 * may sit anywhere, even across where the previous one ended.) Everything outside the queued
 * records was written before the oldest of them, so carries smaller numbers, or is a torn
 * (CRC-failing) attempt: that is what makes the scans safe. Drops are written to the header before
 * the record that needed their room, so dropped records cannot come back
 * once it overwrote part of them.
 */
#include <string.h>

#include <moat/queue.h>

#define BEG      MOAT_QUEUE_HEADER_BYTES
#define HDR      MOAT_QUEUE_RECORD_OVERHEAD
#define SLOT     32u
#define SLOT_CRC 24u
#define SB_MAGIC 0x3151544du /* "MTQ1" */
#define RC_MAGIC 0x714du     /* "Mq" */

typedef struct rec {
    size_t off, len;
    uint64_t seq;
} rec;

/* A position in the ring and how many bytes of ring may still be walked. */
typedef struct walk {
    size_t pos, left;
} walk;

/* CRC-32 (IEEE, reflected), bitwise: a table would cost 1 KiB of flash. */
static uint32_t crc_update(uint32_t c, const uint8_t *p, size_t n)
{
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* Any storage failure becomes the sticky MOAT_ERR_IO. */
static moat_status io(moat_queue *q, moat_status s)
{
    if (s != MOAT_OK)
        q->err = MOAT_ERR_IO;
    return (moat_status)q->err;
}

static moat_status rd(moat_queue *q, size_t off, uint8_t *b, size_t n)
{
    return io(q, q->st->read(q->st->ctx, q->area, off, b, n));
}

static moat_status wr(moat_queue *q, size_t off, const uint8_t *b, size_t n)
{
    return io(q, q->st->write(q->st->ctx, q->area, off, b, n));
}

static size_t dist(const moat_queue *q, size_t a, size_t b)
{
    return b >= a ? b - a : (q->end - a) + (b - BEG);
}

static size_t used(const moat_queue *q)
{
    if (q->count == 0)
        return 0;
    return q->tail > q->head ? q->tail - q->head : (q->end - q->head) + (q->tail - BEG);
}

/* Feed len stored bytes at off to the CRC register *c. */
static moat_status crc_stored(moat_queue *q, uint32_t *c, size_t off, size_t len)
{
    uint8_t chunk[32];
    while (len > 0) {
        size_t n = len < sizeof chunk ? len : sizeof chunk;
        if (rd(q, off, chunk, n) != MOAT_OK)
            return (moat_status)q->err;
        *c = crc_update(*c, chunk, n);
        off += n;
        len -= n;
    }
    return MOAT_OK;
}

/* Is the record whose header h sits at p valid, with a sequence number in
 * [e, e + size of the ring]? (One unsigned test does both ends; the upper
 * one is loose, only there to keep numbers far from overflow.)
 * 1 yes, 0 no, <0 storage error. */
static int check(moat_queue *q, size_t p, const uint8_t *h, uint64_t e, size_t left, rec *r)
{
    size_t len = (size_t)h[2] | (size_t)h[3] << 8;
    size_t space = MOAT_QUEUE_RECORD_SPACE(len);
    uint64_t seq = get64(h + 4);
    if (h[0] != (RC_MAGIC & 0xff) || h[1] != RC_MAGIC >> 8 || len > MOAT_QUEUE_MAX_RECORD ||
        space > left || space > q->end - p || seq - e > q->end)
        return 0;
    uint32_t c = crc_update(~q->salt, h, 12);
    if (crc_stored(q, &c, p + HDR, len) != MOAT_OK)
        return -1;
    if (~c != get32(h + 12))
        return 0;
    r->off = p;
    r->len = len;
    r->seq = seq;
    return 1;
}

/* The first valid record with sequence number >= e at or after w->pos,
 * within w->left bytes of ring; on success w moves past it.
 * 1 found, 0 none, <0 storage error. */
static int find(moat_queue *q, walk *w, uint64_t e, rec *r)
{
    size_t p = w->pos, left = w->left;
    uint8_t h[HDR];
    while (left >= HDR) {
        if (q->end - p < HDR) { /* no record starts here: on to the ring's start */
            left -= q->end - p;
            p = BEG;
            continue;
        }
        if (rd(q, p, h, HDR) != MOAT_OK)
            return -1;
        int ok = check(q, p, h, e, left, r);
        if (ok != 0) {
            size_t space = MOAT_QUEUE_RECORD_SPACE(r->len);
            w->pos = p + space;
            w->left = left - space;
            return ok;
        }
        p += 4;
        left -= 4;
    }
    return 0;
}

/* Rewrite the older header copy with the RAM state and sync. */
static moat_status commit(moat_queue *q)
{
    uint8_t s[SLOT_CRC + 4];
    uint32_t gen = q->gen + 1;
    put32(s, SB_MAGIC);
    put32(s + 4, q->salt);
    put32(s + 8, gen);
    put32(s + 12, 0); /* reserved */
    put64(s + 16, q->head_seq);
    put32(s + SLOT_CRC, ~crc_update(~0u, s, SLOT_CRC));
    if (wr(q, (gen & 1u) * SLOT, s, sizeof s) != MOAT_OK ||
        io(q, q->st->sync(q->st->ctx, q->area)) != MOAT_OK)
        return (moat_status)q->err;
    q->gen = gen;
    q->dirty = 0;
    return MOAT_OK;
}

/* Copy i holds the even (i = 0) or odd generations: a commit overwrites the
 * copy the newest one is not in, so one that sits in the wrong place is not
 * ours. */
static int slot_ok(const uint8_t *s, uint32_t i)
{
    return get32(s) == SB_MAGIC && get32(s + SLOT_CRC) == ~crc_update(~0u, s, SLOT_CRC) &&
           (get32(s + 8) & 1u) == i && get64(s + 16) >> 62 == 0;
}

/* Find the records from the header's oldest one on; fill the RAM state. */
static moat_status recover(moat_queue *q, uint64_t seq)
{
    size_t lap = q->end - BEG;
    walk w = {BEG, lap};
    uint64_t e = seq;
    rec r, first;
    int f;
    q->head = q->head_end = q->tail = BEG;
    q->head_seq = seq;
    /* The oldest record is the valid one with the smallest number (number
     * `seq` itself unless it rotted, or the newest header copy did and the
     * older one names a record since popped and overwritten). */
    first.seq = UINT64_MAX;
    while ((f = find(q, &w, e, &r)) > 0)
        if (r.seq < first.seq)
            first = r;
    if (f < 0)
        return (moat_status)q->err;
    if (first.seq != UINT64_MAX) {
        w.pos = first.off;
        w.left = lap;
        while ((f = find(q, &w, e, &r)) > 0) {
            q->corrupt_skipped += r.seq - e;
            if (q->count++ == 0) { /* the lap is measured from the oldest */
                q->head = r.off;
                q->head_end = w.pos;
                q->head_seq = r.seq;
                w.left = lap - MOAT_QUEUE_RECORD_SPACE(r.len);
            }
            q->tail = w.pos;
            e = r.seq + 1;
        }
        if (f < 0)
            return (moat_status)q->err;
    }
    q->next_seq = e;
    /* The header names a record that is gone: name the real oldest, so the
     * loss is counted once. */
    if (q->head_seq != seq)
        return commit(q);
    return MOAT_OK;
}

moat_status moat_queue_open(moat_queue *q, const moat_storage *st, unsigned area,
                            moat_queue_full_policy policy)
{
    uint8_t s[2 * SLOT];
    if (q == NULL || st == NULL || (unsigned)policy > MOAT_QUEUE_REFUSE_NEW)
        return MOAT_ERR_ARG;
    memset(q, 0, sizeof *q);
    q->st = st;
    q->area = area;
    q->policy = (uint8_t)policy;
    size_t size = st->size(st->ctx, area);
    if (size < MOAT_QUEUE_MIN_AREA)
        return MOAT_ERR_SPACE;
    q->end = size & ~(size_t)3;
    /* What is read back must be durable: a record whose push was cut before
     * its sync may still be in a cache (a restarted process, not a power
     * loss); found and sent, then lost, its number would be reused. */
    if (io(q, st->sync(st->ctx, area)) != MOAT_OK || rd(q, 0, s, sizeof s) != MOAT_OK)
        return (moat_status)q->err;
    int ok0 = slot_ok(s, 0), ok1 = slot_ok(s + SLOT, 1);
    if (ok0 || ok1) {
        const uint8_t *n = s;
        if (ok1 && (!ok0 || (int32_t)(get32(s + SLOT + 8) - get32(s + 8)) > 0))
            n = s + SLOT;
        q->salt = get32(n + 4);
        q->gen = get32(n + 8);
        return recover(q, get64(n + 16));
    }
    /* No valid header: a new area. The salt is a CRC of everything stored,
     * so records of an earlier format (which changed those bytes after its
     * salt was taken) do not check under the new one. */
    uint32_t c = ~0u;
    if (crc_stored(q, &c, 0, q->end) != MOAT_OK)
        return (moat_status)q->err;
    q->salt = ~c;
    q->gen = UINT32_MAX; /* the first commit writes copy 0, generation 0 */
    q->head = q->head_end = q->tail = BEG;
    q->head_seq = q->next_seq = 1;
    return commit(q);
}

/* Where a record of `space` bytes fits without touching queued records:
 * after the newest one, or at the ring's start. 0 if nowhere. */
static int fits(const moat_queue *q, size_t space, size_t *p)
{
    if (q->count == 0 || q->tail > q->head) {
        if (q->end - q->tail >= space) {
            *p = q->tail;
            return 1;
        }
        *p = BEG;
        return q->count == 0 || q->head - BEG >= space;
    }
    *p = q->tail;
    return q->head - q->tail >= space;
}

/* Forget the oldest record in RAM (the caller commits). */
static moat_status advance(moat_queue *q)
{
    if (q->count == 1) {
        q->head = q->head_end = q->tail;
        q->head_seq = q->next_seq;
    } else {
        walk w = {q->head_end, dist(q, q->head_end, q->tail)};
        rec r;
        int f = find(q, &w, q->head_seq + 1, &r);
        if (f <= 0) {
            if (f == 0)
                q->err = MOAT_ERR_CORRUPT;
            return (moat_status)q->err;
        }
        q->head = r.off;
        q->head_end = w.pos;
        q->head_seq = r.seq;
    }
    q->count--;
    q->dirty = 1;
    return MOAT_OK;
}

moat_status moat_queue_push(moat_queue *q, const uint8_t *data, size_t len, uint64_t *seq)
{
    uint8_t h[HDR];
    size_t p;
    moat_status s;
    if (q == NULL || (data == NULL && len > 0) || len > MOAT_QUEUE_MAX_RECORD)
        return MOAT_ERR_ARG;
    if (q->err != MOAT_OK)
        return (moat_status)q->err;
    size_t space = MOAT_QUEUE_RECORD_SPACE(len);
    if (space > q->end - BEG)
        return MOAT_ERR_SPACE;
    while (!fits(q, space, &p)) {
        if (q->policy == MOAT_QUEUE_REFUSE_NEW) {
            q->refused++;
            return MOAT_ERR_FULL;
        }
        if ((s = advance(q)) != MOAT_OK)
            return s;
        q->dropped++;
    }
    if (q->dirty && (s = commit(q)) != MOAT_OK)
        return s;
    h[0] = RC_MAGIC & 0xff;
    h[1] = RC_MAGIC >> 8;
    h[2] = (uint8_t)len;
    h[3] = (uint8_t)(len >> 8);
    put64(h + 4, q->next_seq);
    put32(h + 12, ~crc_update(crc_update(~q->salt, h, 12), data, len));
    if (wr(q, p, h, HDR) != MOAT_OK || (len > 0 && wr(q, p + HDR, data, len) != MOAT_OK) ||
        io(q, q->st->sync(q->st->ctx, q->area)) != MOAT_OK)
        return (moat_status)q->err;
    if (q->count++ == 0) {
        q->head = p;
        q->head_end = p + space;
    }
    q->tail = p + space;
    if (seq != NULL)
        *seq = q->next_seq;
    q->next_seq++;
    return MOAT_OK;
}

moat_status moat_queue_peek(moat_queue *q, uint32_t i, uint64_t *seq, uint8_t *buf, size_t cap,
                            size_t *len)
{
    if (q == NULL || (buf == NULL && cap > 0))
        return MOAT_ERR_ARG;
    if (q->err != MOAT_OK)
        return (moat_status)q->err;
    if (i >= q->count)
        return MOAT_ERR_STATE;
    walk w = {q->head, used(q)};
    uint64_t e = q->head_seq;
    rec r;
    for (uint32_t k = 0; k <= i; k++) {
        /* The oldest record must be where RAM says: if it rotted, the next
         * one must not stand in for it (the caller pops by number). */
        int f = find(q, &w, e, &r);
        if (f < 0)
            return (moat_status)q->err;
        if (f == 0 || (k == 0 && r.off != q->head)) {
            q->err = MOAT_ERR_CORRUPT;
            return MOAT_ERR_CORRUPT;
        }
        e = r.seq + 1;
    }
    if (seq != NULL)
        *seq = r.seq;
    if (len != NULL)
        *len = r.len;
    if (r.len > cap)
        return MOAT_ERR_SPACE;
    return r.len > 0 ? rd(q, r.off + HDR, buf, r.len) : MOAT_OK;
}

moat_status moat_queue_pop(moat_queue *q, uint64_t seq)
{
    moat_status s;
    if (q == NULL)
        return MOAT_ERR_ARG;
    if (q->err != MOAT_OK)
        return (moat_status)q->err;
    if (q->count == 0)
        return MOAT_ERR_STATE;
    if (seq != q->head_seq)
        return MOAT_ERR_ARG;
    if ((s = advance(q)) != MOAT_OK)
        return s;
    return commit(q);
}

void moat_queue_get_stats(const moat_queue *q, moat_queue_stats *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (q == NULL)
        return;
    out->count = q->count;
    out->bytes_used = used(q);
    out->capacity = q->end > BEG ? q->end - BEG : 0;
    out->dropped = q->dropped;
    out->refused = q->refused;
    out->corrupt_skipped = q->corrupt_skipped;
}
