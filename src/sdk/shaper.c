/*
 * shaper.c — the fixed schedule of fixed-size records (include/moat/shaper.h).
 *
 * Slots sit on a grid start + k * interval that never moves: a late send does
 * not push the next slot back (no drift), and after a stall the missed slots
 * are dropped rather than sent back to back (no burst that would mark the
 * moment the device woke up). moat_shaper_build fills a slot in place: each
 * queued record is copied by the source straight into the batch, after room
 * for its sequence number, so no second buffer is needed.
 */
#include <string.h>

#include <moat/record.h>
#include <moat/shaper.h>

moat_status moat_shaper_init(moat_shaper *s, uint32_t interval_ms, size_t record_size, bool cover)
{
    if (s == NULL || interval_ms == 0 || record_size < MOAT_BATCH_MIN_SIZE)
        return MOAT_ERR_ARG;
    memset(s, 0, sizeof *s);
    s->interval_ms = interval_ms;
    s->record_size = record_size;
    s->cover = cover;
    return MOAT_OK;
}

void moat_shaper_start(moat_shaper *s, uint64_t now_ms)
{
    s->start_ms = now_ms;
    s->next_ms = now_ms;
    s->started = true;
}

bool moat_shaper_due(moat_shaper *s, uint64_t now_ms)
{
    if (!s->started)
        moat_shaper_start(s, now_ms);
    return now_ms >= s->next_ms;
}

/* n / d and n % d for a 32-bit divisor by binary long division. A
 * Cortex-M has a 32-bit divider only: the C operators on uint64_t would pull
 * in the compiler's 64-bit division (about 750 bytes of libgcc) for two
 * divisions per slot (docs/sdk-footprint.md). r < d < 2^32 keeps r << 1 in
 * range. */
static uint64_t div_u64_u32(uint64_t n, uint32_t d, uint64_t *rem)
{
    uint64_t q = 0, r = 0;
    for (int bit = 63; bit >= 0; bit--) {
        r = r << 1 | ((n >> bit) & 1u);
        q <<= 1;
        if (r >= d) {
            r -= d;
            q |= 1u;
        }
    }
    *rem = r;
    return q;
}

void moat_shaper_sent(moat_shaper *s, uint64_t now_ms)
{
    if (!moat_shaper_due(s, now_ms))
        return; /* no slot was due: nothing to consume */
    /* interval_ms came in as a uint32_t (moat_shaper_init). */
    uint32_t iv = (uint32_t)s->interval_ms;
    uint64_t phase = 0, unused = 0;
    (void)div_u64_u32(now_ms - s->start_ms, iv, &phase);
    /* The first grid point strictly after now. */
    uint64_t next = now_ms - phase + iv;
    s->skipped += div_u64_u32(next - s->next_ms, iv, &unused) - 1;
    s->next_ms = next;
    s->sent++;
}

uint64_t moat_shaper_next_ms(const moat_shaper *s)
{
    return s->next_ms;
}

size_t moat_shaper_record_size(const moat_shaper *s)
{
    return s->record_size;
}

uint64_t moat_shaper_skipped(const moat_shaper *s)
{
    return s->skipped;
}

moat_status moat_shaper_build(const moat_shaper *s, moat_shaper_source src, void *ctx, uint8_t *buf,
                              size_t cap, size_t *out_len, uint32_t *taken)
{
    if (s == NULL || src == NULL || buf == NULL || out_len == NULL || taken == NULL ||
        cap < s->record_size)
        return MOAT_ERR_ARG;
    *out_len = 0;
    *taken = 0;
    moat_batch b;
    moat_status st = moat_batch_begin(&b, buf, s->record_size);
    moat_status err = MOAT_OK;
    for (uint32_t i = 0; st == MOAT_OK; i++) {
        size_t room = moat_batch_room(&b);
        uint64_t seq = 0;
        size_t len = 0;
        if (room == 0)
            break;
        st = src(ctx, i, &seq, buf + b.len + MOAT_BATCH_ENTRY_OVERHEAD, room, &len);
        if (st == MOAT_OK && len <= room)
            st = moat_batch_add(&b, seq, buf + b.len + MOAT_BATCH_ENTRY_OVERHEAD, len);
        else if (st == MOAT_OK)
            st = MOAT_ERR_PROTOCOL; /* the source broke its promise */
        if (i == 0 && (st == MOAT_ERR_SPACE || st == MOAT_ERR_PROTOCOL))
            err = st; /* the oldest record can never go out: tell the client */
    }
    if (b.count > 0) {
        *taken = b.count;
        st = moat_batch_finish(&b, s->record_size, out_len);
        return st != MOAT_OK ? st : err;
    }
    if (s->cover) {
        st = moat_batch_cover(buf, cap, s->record_size);
        if (st != MOAT_OK)
            return st;
        *out_len = s->record_size;
    }
    return err;
}
