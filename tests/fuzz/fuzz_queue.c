/*
 * fuzz_queue.c — libFuzzer target for src/sdk/queue.c, libmoat's
 * store-and-forward queue.
 *
 * Input: two bytes choose the area size (MOAT_QUEUE_MIN_AREA .. +2047), the
 * next `size` bytes are the area's contents as found at boot (short inputs
 * are padded with 0xFF), and the rest is a script of operations: push,
 * pop, peek, pop with a wrong number, reopen, and power loss after a number
 * of written bytes (optionally losing unsynced writes) followed by a reboot.
 * The storage double aborts on any access outside the area, so an overread
 * driven by stored lengths or offsets stops the run, as does ASan.
 *
 * Invariants, on any contents:
 *  - open succeeds; the records it reports can all be peeked, with strictly
 *    increasing numbers, and no more; counts and fill level agree.
 * And when the area started without a valid header, so that the queue
 * formatted it, checked against a model:
 *  - every push that returned MOAT_OK has a number above every number seen;
 *  - after a reopen, exactly the records pushed and not popped are there, in
 *    order, with their bytes; after a power loss, plus at most what the cut
 *    operation was adding or removing.
 * The model is not applied to an image that already holds a valid header:
 * such an image can be crafted with records planted where the queue does not
 * look until later (inside another record's payload, with the area's salt,
 * which the image shows), and the salted CRC is not meant to stop that
 * (docs/sdk-queue.md). For the same reason the payloads pushed here never
 * hold the record magic at a 4-aligned offset: libFuzzer's comparison
 * feedback would otherwise plant a valid record in one.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moat/queue.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define AREA_MAX (MOAT_QUEUE_MIN_AREA + 2048)
#define RECS_MAX (AREA_MAX / MOAT_QUEUE_RECORD_OVERHEAD + 2)

typedef struct mem {
    uint8_t b[AREA_MAX], synced[AREA_MAX];
    size_t size;
    long budget; /* < 0: no power loss planned */
    bool dead;
} mem;

static size_t m_size(void *ctx, unsigned area)
{
    return area == MOAT_AREA_QUEUE ? ((mem *)ctx)->size : 0;
}

static moat_status m_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    mem *m = ctx;
    CHECK(area == MOAT_AREA_QUEUE && off <= m->size && len <= m->size - off);
    if (m->dead)
        return MOAT_ERR_IO;
    memcpy(buf, m->b + off, len);
    return MOAT_OK;
}

static moat_status m_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    mem *m = ctx;
    CHECK(area == MOAT_AREA_QUEUE && off <= m->size && len <= m->size - off);
    if (m->dead)
        return MOAT_ERR_IO;
    if (m->budget >= 0 && len > (size_t)m->budget) {
        memcpy(m->b + off, buf, (size_t)m->budget);
        m->dead = true;
        return MOAT_ERR_IO;
    }
    memcpy(m->b + off, buf, len);
    if (m->budget >= 0)
        m->budget -= (long)len;
    return MOAT_OK;
}

static moat_status m_sync(void *ctx, unsigned area)
{
    mem *m = ctx;
    CHECK(area == MOAT_AREA_QUEUE);
    if (m->dead || m->budget == 0) {
        m->dead = true;
        return MOAT_ERR_IO;
    }
    memcpy(m->synced, m->b, m->size);
    return MOAT_OK;
}

typedef struct mrec {
    uint64_t seq, hash;
    size_t len;
} mrec;

typedef struct model {
    mrec r[RECS_MAX];
    size_t n;
} model;

/* The fuzzer's whole state: static, it is too big for the stack. */
static struct {
    mem m;
    model want, got, gone;
    mrec pushing;
    int inflight; /* 0 none, 1 push, 2 pop or drop */
    uint64_t max_seq;
    bool strict;
    uint8_t buf[MOAT_QUEUE_MAX_RECORD];
} S;

static uint64_t hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211u;
    return h;
}

static bool same(const mrec *a, const mrec *b)
{
    return a->seq == b->seq && a->len == b->len && a->hash == b->hash;
}

static void drop_front(model *m, size_t k)
{
    CHECK(k <= m->n);
    memmove(m->r, m->r + k, (m->n - k) * sizeof m->r[0]);
    m->n -= k;
}

/* Everything queued, via peek; numbers strictly increasing. */
static void read_all(moat_queue *q, model *out)
{
    moat_queue_stats s;
    uint64_t seq;
    size_t len;
    moat_queue_get_stats(q, &s);
    CHECK(s.bytes_used <= s.capacity && s.count <= RECS_MAX);
    out->n = 0;
    for (uint32_t i = 0; i < s.count; i++) {
        CHECK(moat_queue_peek(q, i, &seq, S.buf, sizeof S.buf, &len) == MOAT_OK);
        CHECK(len <= MOAT_QUEUE_MAX_RECORD);
        CHECK(out->n == 0 || seq > out->r[out->n - 1].seq);
        out->r[out->n++] = (mrec){seq, hash(S.buf, len), len};
        if (seq > S.max_seq)
            S.max_seq = seq;
    }
    CHECK(moat_queue_peek(q, s.count, &seq, S.buf, sizeof S.buf, &len) == MOAT_ERR_STATE);
}

/* got must be: [all of `gone`, if the cut op was removing], want, [the
 * record being pushed]. */
static void check_against_model(void)
{
    size_t i = 0;
    if (!S.strict)
        return;
    if (S.inflight != 0 && S.gone.n > 0 && S.got.n > 0 && same(&S.got.r[0], &S.gone.r[0])) {
        for (; i < S.gone.n; i++)
            CHECK(i < S.got.n && same(&S.got.r[i], &S.gone.r[i]));
    }
    for (size_t k = 0; k < S.want.n; k++, i++)
        CHECK(i < S.got.n && same(&S.got.r[i], &S.want.r[k]));
    if (i < S.got.n && S.inflight == 1 && S.got.r[i].len == S.pushing.len &&
        S.got.r[i].hash == S.pushing.hash)
        i++;
    CHECK(i == S.got.n);
}

static moat_status reopen(moat_queue *q, const moat_storage *st, int policy)
{
    moat_status s = moat_queue_open(q, st, MOAT_AREA_QUEUE, (moat_queue_full_policy)policy);
    CHECK(s == MOAT_OK || S.m.dead);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    memset(&S, 0, sizeof S);
    S.m.size = MOAT_QUEUE_MIN_AREA + ((size_t)data[0] | (size_t)data[1] << 8) % 2048;
    S.m.budget = -1;
    data += 2;
    size -= 2;
    size_t take = size < S.m.size ? size : S.m.size;
    memset(S.m.b, 0xff, S.m.size);
    memcpy(S.m.b, data, take);
    memcpy(S.m.synced, S.m.b, S.m.size);
    data += take;
    size -= take;

    moat_storage st = {&S.m, m_size, m_read, m_write, m_sync};
    moat_queue q;
    int policy = MOAT_QUEUE_DROP_OLDEST;
    uint8_t hdr_before[MOAT_QUEUE_HEADER_BYTES];
    memcpy(hdr_before, S.m.b, sizeof hdr_before);
    CHECK(reopen(&q, &st, policy) == MOAT_OK);
    moat_queue_stats s0, s1;
    moat_queue_get_stats(&q, &s0);
    /* Formatted: the salt is new, only what is pushed from now on counts. */
    S.strict = s0.count == 0 && memcmp(hdr_before, S.m.b, sizeof hdr_before) != 0;
    read_all(&q, &S.want);

    size_t pos = 0;
    for (int ops = 0; ops < 300 && pos < size; ops++) {
        uint8_t op = data[pos++];
        uint8_t arg = pos < size ? data[pos++] : 0;
        uint64_t seq;
        size_t len;
        switch (op % 8) {
        case 0:
        case 1:
        case 2: { /* push: length from arg, bytes from the input */
            len = (size_t)arg * (op & 0x80 ? 4u : 1u);
            if (len > MOAT_QUEUE_MAX_RECORD)
                len = MOAT_QUEUE_MAX_RECORD;
            for (size_t i = 0; i < len; i++) {
                S.buf[i] = pos + i < size ? data[pos + i] : (uint8_t)i;
                if (i % 4 == 0 && S.buf[i] == 0x4d) /* no record magic */
                    S.buf[i] = 0x4e;
            }
            S.pushing = (mrec){0, hash(S.buf, len), len};
            S.inflight = 1;
            moat_queue_get_stats(&q, &s0);
            moat_status rc = moat_queue_push(&q, S.buf, len, &seq);
            moat_queue_get_stats(&q, &s1);
            size_t dropped = (size_t)(s1.dropped - s0.dropped);
            CHECK(dropped <= S.want.n);
            S.gone.n = 0;
            for (size_t i = 0; i < dropped; i++)
                S.gone.r[S.gone.n++] = S.want.r[i];
            drop_front(&S.want, dropped);
            if (rc == MOAT_OK) {
                CHECK((seq > S.max_seq || !S.strict) && S.want.n < RECS_MAX);
                S.max_seq = seq;
                S.pushing.seq = seq;
                S.want.r[S.want.n++] = S.pushing;
                S.inflight = 0;
            } else {
                CHECK(rc == MOAT_ERR_FULL || rc == MOAT_ERR_SPACE || rc == MOAT_ERR_IO ||
                      (rc == MOAT_ERR_CORRUPT && !S.strict));
                CHECK(rc != MOAT_ERR_IO || S.m.dead);
                CHECK(rc != MOAT_ERR_FULL || policy == MOAT_QUEUE_REFUSE_NEW);
                if (rc != MOAT_ERR_IO)
                    S.inflight = 0;
            }
            break;
        }
        case 3: /* pop the oldest */
            if (S.want.n == 0)
                break;
            S.gone.n = 1;
            S.gone.r[0] = S.want.r[0];
            drop_front(&S.want, 1);
            S.inflight = 2;
            if (moat_queue_pop(&q, S.gone.r[0].seq) == MOAT_OK)
                S.inflight = 0;
            else
                CHECK(S.m.dead || !S.strict);
            break;
        case 4: /* peek */
            if (S.m.dead)
                break;
            if (moat_queue_peek(&q, arg, &seq, S.buf, sizeof S.buf, &len) == MOAT_OK) {
                CHECK(arg < S.want.n || !S.strict);
                if (S.strict)
                    CHECK(seq == S.want.r[arg].seq && hash(S.buf, len) == S.want.r[arg].hash);
            }
            break;
        case 5: /* a pop of anything but the oldest is refused */
            if (S.m.dead)
                break;
            seq = S.want.n ? S.want.r[0].seq + 1 + arg : arg;
            CHECK(moat_queue_pop(&q, seq) != MOAT_OK);
            break;
        case 6: /* clean reopen, perhaps with the other policy */
            if (S.m.dead)
                break;
            policy = arg & 1 ? MOAT_QUEUE_REFUSE_NEW : MOAT_QUEUE_DROP_OLDEST;
            S.inflight = 0;
            if (reopen(&q, &st, policy) != MOAT_OK)
                break; /* cut while it rewrote the header: reboot below */
            read_all(&q, &S.got);
            check_against_model();
            S.want = S.got;
            break;
        case 7: /* plan a power loss: after arg more bytes are written */
            if (S.m.budget < 0 && !S.m.dead)
                S.m.budget = arg;
            break;
        }
        if (!S.m.dead && q.err != MOAT_OK) { /* a crafted image confused it */
            CHECK(!S.strict && q.err == MOAT_ERR_CORRUPT);
            S.inflight = 0;
            if (reopen(&q, &st, policy) == MOAT_OK) {
                read_all(&q, &S.got);
                S.want = S.got;
            }
        }
        if (S.m.dead) { /* reboot */
            if (op & 0x40)
                memcpy(S.m.b, S.m.synced, S.m.size);
            S.m.dead = false;
            S.m.budget = -1;
            CHECK(reopen(&q, &st, policy) == MOAT_OK);
            read_all(&q, &S.got);
            check_against_model();
            S.want = S.got;
            S.inflight = 0;
        }
    }
    return 0;
}
