/*
 * moat/shaper.h — a fixed schedule of fixed-size records (leak no routine).
 *
 * Without shaping, an observer of a device's encrypted traffic sees a record
 * go out whenever something happens (the light was switched at 07:12), and
 * its size. With the shaper on, the device sends exactly one record of
 * exactly record_size bytes per interval, on a grid fixed when the shaper
 * started, whatever there is to say: a batch of the oldest queued readings
 * (as many as fit) padded to record_size, or a cover record when the queue
 * is empty. All shaped records go to the one topic moat/{id}/up/_shaped, so
 * the topic length says nothing either. What this hides and what it does not
 * is in docs/sdk-wire.md.
 *
 * The shaper is pure: it is told the time and says when a slot is due; it
 * does no I/O, keeps no buffer, allocates nothing.
 *
 * Schedule: slot k is due at start + k * interval (start = the first time
 * moat_shaper_due is called, or the one given to moat_shaper_start). Each
 * slot is used at most once. After a stall (the device was busy, asleep or
 * offline for several intervals) the missed slots are skipped, not made up:
 * one record goes out for the current slot and the next one is due at the
 * next grid point, so the schedule never bursts and never drifts. Skipped
 * slots are counted (an observer saw the silence anyway).
 *
 * Typical use in the client's poll:
 *
 *     if (moat_shaper_due(&s, now)) {
 *         size_t n; uint32_t taken;
 *         if (moat_shaper_build(&s, peek, queue, buf, sizeof buf, &n, &taken) == MOAT_OK
 *             && n > 0)
 *             publish("moat/{id}/up/_shaped", buf, n);  // QoS 1; pop `taken` on PUBACK
 *         moat_shaper_sent(&s, now);
 *     }
 */
#ifndef MOAT_SHAPER_H
#define MOAT_SHAPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moat/platform.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The topic level of shaped records. */
#define MOAT_SHAPER_STREAM "_shaped"

/* Fields are private. */
typedef struct moat_shaper {
    uint64_t interval_ms;
    uint64_t start_ms;
    uint64_t next_ms; /* when the next slot is due */
    uint64_t skipped; /* slots missed after stalls */
    uint64_t sent;    /* slots used */
    size_t record_size;
    bool cover;
    bool started;
} moat_shaper;

/*
 * Set up a schedule of one record of record_size bytes every interval_ms.
 *   cover  true: send a cover record when there is nothing to say (the
 *          traffic is constant; use this to hide routine). false: an empty
 *          slot sends nothing (sizes stay fixed and times stay on the grid,
 *          but an observer learns which slots carried readings).
 * Returns MOAT_ERR_ARG for interval_ms == 0 or record_size <
 * MOAT_BATCH_MIN_SIZE (record.h).
 */
moat_status moat_shaper_init(moat_shaper *s, uint32_t interval_ms, size_t record_size, bool cover);

/* Fix the grid's origin: slot 0 is due at now_ms. Optional: the first
 * moat_shaper_due call does it otherwise. */
void moat_shaper_start(moat_shaper *s, uint64_t now_ms);

/* True when a slot is due at now_ms (monotonic ms). Stays true until
 * moat_shaper_sent is called. */
bool moat_shaper_due(moat_shaper *s, uint64_t now_ms);

/* The slot due at or before now_ms has been used (or, with cover off,
 * deliberately left empty): the next one is the first grid point after
 * now_ms. Slots between the two are counted as skipped. */
void moat_shaper_sent(moat_shaper *s, uint64_t now_ms);

/* When the next slot is due (monotonic ms), for a caller that sleeps until
 * then. Only meaningful after the schedule started. */
uint64_t moat_shaper_next_ms(const moat_shaper *s);

size_t moat_shaper_record_size(const moat_shaper *s);
uint64_t moat_shaper_skipped(const moat_shaper *s);

/*
 * Where moat_shaper_build takes readings from: copy the i-th oldest queued
 * record (0 = oldest) into buf (cap bytes), its sequence number into *seq
 * and its size into *len. Return MOAT_OK, MOAT_ERR_SPACE when it does not fit
 * in cap, anything else when there is no i-th record. moat_queue_peek
 * (queue.h) has this shape: pass a one-line wrapper that calls it with ctx
 * as the queue (not a cast of it, which would be undefined behaviour).
 */
typedef moat_status (*moat_shaper_source)(void *ctx, uint32_t i, uint64_t *seq, uint8_t *buf,
                                          size_t cap, size_t *len);

/*
 * Build the record for a due slot into buf (cap >= record_size): a batch of
 * the oldest records src gives (in order, as many as fit) padded to exactly
 * record_size bytes, or, if there are none, a cover record of record_size
 * bytes (with cover on) or nothing (*out_len = 0, with cover off).
 *   out_len  gets record_size or 0
 *   taken    gets how many records went in (pop that many once acknowledged)
 * If the oldest record cannot go out (larger than a slot holds, see
 * MOAT_BATCH_MAX_RECORD, or not a valid record), the slot is filled as if the
 * queue were empty and the call returns MOAT_ERR_SPACE or MOAT_ERR_PROTOCOL
 * with *taken = 0: the slot keeps its size, and the client decides what to do
 * with that record (report and drop it). Refusing oversized readings before
 * queueing them avoids this. MOAT_ERR_ARG if cap < record_size.
 */
moat_status moat_shaper_build(const moat_shaper *s, moat_shaper_source src, void *ctx, uint8_t *buf,
                              size_t cap, size_t *out_len, uint32_t *taken);

#ifdef __cplusplus
}
#endif
#endif
