/*
 * moat/queue.h — libmoat's store-and-forward queue: readings survive power
 * loss until the hub has acknowledged them.
 *
 * The queue is a bounded log in one storage area (MOAT_AREA_QUEUE, through
 * the moat_storage callbacks of moat/platform.h), used as a ring. Records are
 * opaque bytes (the client stores encoded readings); each gets a sequence
 * number and a CRC-32. The queue allocates nothing and does no I/O other than
 * the storage callbacks; its state is the caller-allocated struct below.
 * docs/sdk-queue.md has the byte layout and the recovery argument.
 *
 * Guarantees, for a storage that behaves as platform.h says (a write cut by
 * power loss leaves a prefix of its bytes, nothing else changes):
 *   - a record whose push returned MOAT_OK stays queued, intact and in order,
 *     until a pop of it returns MOAT_OK, whatever byte a power loss hits;
 *   - a push cut by power loss loses at most that one record (it may also
 *     turn out complete: it was never acknowledged, so either is correct);
 *   - a pop cut by power loss may leave its record queued, so it is delivered
 *     again once: receivers drop duplicates by sequence number (likewise the
 *     records a cut DROP_OLDEST push was dropping: all stay, or none). Nothing
 *     that was not popped or dropped is ever lost, and nothing comes back
 *     after a pop that returned MOAT_OK;
 *   - sequence numbers are strictly increasing for the life of the area,
 *     never reused, also after the queue empties and across reopen. (A number
 *     whose push did not return MOAT_OK may be handed out again: no one saw
 *     it.) The life of an area ends when both copies of its header are
 *     destroyed (not a power-loss case): it is then formatted afresh.
 *
 * Not thread-safe: one queue is used from one task.
 *
 * Example (the client's drain loop, error handling shortened):
 *
 *     moat_queue q;
 *     moat_queue_open(&q, &storage, MOAT_AREA_QUEUE, MOAT_QUEUE_DROP_OLDEST);
 *     moat_queue_push(&q, reading, reading_len, &seq);
 *     ...
 *     if (moat_queue_peek(&q, 0, &seq, buf, sizeof buf, &len) == MOAT_OK)
 *         publish_qos1(buf, len);          // and on its PUBACK:
 *     moat_queue_pop(&q, seq);
 */
#ifndef MOAT_QUEUE_H
#define MOAT_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include <moat/platform.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest record (payload bytes) the queue takes. Compile-time; at most
 * 65535 (the length is stored in 16 bits). A record must also fit the area. */
#ifndef MOAT_QUEUE_MAX_RECORD
#define MOAT_QUEUE_MAX_RECORD 1024
#endif

/* Bytes at the start of the area taken by the two header copies. */
#define MOAT_QUEUE_HEADER_BYTES 64u
/* Bytes of framing per record (length, sequence number, CRC). */
#define MOAT_QUEUE_RECORD_OVERHEAD 16u
/* Bytes of the area one record of len payload bytes takes (framing plus
 * padding to a multiple of 4). Size an area for N records of up to L bytes
 * as MOAT_QUEUE_HEADER_BYTES + N * MOAT_QUEUE_RECORD_SPACE(L) + (one record's
 * space, lost at most once per lap where a record does not fit before the
 * end of the area and is written at its start instead). */
#define MOAT_QUEUE_RECORD_SPACE(len)                                                               \
    ((MOAT_QUEUE_RECORD_OVERHEAD + (size_t)(len) + 3u) & ~(size_t)3u)
/* Smallest area moat_queue_open accepts: the headers and one empty record. */
#define MOAT_QUEUE_MIN_AREA (MOAT_QUEUE_HEADER_BYTES + MOAT_QUEUE_RECORD_OVERHEAD)

/* What a push does when the record does not fit. */
typedef enum {
    MOAT_QUEUE_DROP_OLDEST, /* pop the oldest records (counted as dropped) */
    MOAT_QUEUE_REFUSE_NEW   /* fail with MOAT_ERR_FULL (counted as refused) */
} moat_queue_full_policy;

/* The queue's state. Caller-allocated (static or on a task's stack);
 * filled in by moat_queue_open; the fields are private. */
typedef struct moat_queue {
    const moat_storage *st; /* kept: the caller's table must outlive the queue */
    unsigned area;
    uint8_t policy;
    uint8_t dirty;   /* head moved in RAM, header not yet rewritten */
    int err;         /* sticky error (moat_status), 0 when healthy */
    uint32_t salt;   /* per-format salt, seeds every record's CRC */
    uint32_t gen;    /* generation of the newest header copy */
    size_t end;      /* end of the ring (area size rounded down to 4) */
    size_t head;     /* offset of the oldest record */
    size_t head_end; /* offset just past the oldest record */
    size_t tail;     /* offset where the next record would go */
    uint32_t count;
    uint64_t head_seq; /* sequence number of the oldest record (next if empty) */
    uint64_t next_seq;
    uint64_t dropped, refused, corrupt_skipped;
} moat_queue;

typedef struct moat_queue_stats {
    uint32_t count;           /* records queued */
    size_t bytes_used;        /* bytes of the ring between oldest and newest record */
    size_t capacity;          /* bytes of the ring (area size minus the headers) */
    uint64_t dropped;         /* records dropped by MOAT_QUEUE_DROP_OLDEST */
    uint64_t refused;         /* pushes refused by MOAT_QUEUE_REFUSE_NEW */
    uint64_t corrupt_skipped; /* records found unreadable and skipped */
} moat_queue_stats;

/*
 * Open (recover) the queue that lives in storage area `area`.
 *
 * Syncs the area first (what it then reads back is durable), reads the two
 * header copies and takes the newest valid one, then finds the oldest record
 * and walks on to the newest, checking each one's CRC, to learn the next
 * sequence number. A record that fails its check but is followed by valid
 * ones is skipped and counted in corrupt_skipped; a failed record at the end
 * is the push a power loss cut, and is dropped silently (so is a newest
 * record that rotted: the two cannot be told apart, and its number is then
 * handed out again). Cost: two passes over the area, reading 16 bytes per
 * 4-byte step where no record starts, each record once per pass. An area
 * with no valid header (new, erased to 0x00 or 0xFF, or garbage) is formatted
 * as an empty queue; formatting reads the whole area once more (the new
 * format's salt is a CRC of it) and writes 28 bytes.
 *
 * Counters (dropped, refused, corrupt_skipped) start at zero. Open may write
 * (formatting, or moving the header past skipped records) and syncs what it
 * writes. Calling it again on an open queue re-reads the area: that is how a
 * caller recovers from a sticky error.
 *
 * Returns MOAT_OK; MOAT_ERR_ARG (NULL argument, unknown policy);
 * MOAT_ERR_SPACE (area smaller than MOAT_QUEUE_MIN_AREA); MOAT_ERR_IO (a
 * storage callback failed).
 */
moat_status moat_queue_open(moat_queue *q, const moat_storage *st, unsigned area,
                            moat_queue_full_policy policy);

/*
 * Append one record of `len` bytes (data may be NULL when len is 0).
 *
 * Durable when it returns MOAT_OK (written and synced); *seq (if seq is not
 * NULL) receives the record's sequence number. If the record does not fit,
 * the policy applies: DROP_OLDEST pops as many of the oldest records as
 * needed (each counted in dropped; they are gone even if the write of the new
 * record then fails), REFUSE_NEW returns MOAT_ERR_FULL (counted in refused).
 *
 * Returns MOAT_OK; MOAT_ERR_ARG (len > MOAT_QUEUE_MAX_RECORD, or data NULL
 * with len > 0); MOAT_ERR_SPACE (the record cannot fit even an empty area);
 * MOAT_ERR_FULL; MOAT_ERR_IO, or the sticky error (see below).
 */
moat_status moat_queue_push(moat_queue *q, const uint8_t *data, size_t len, uint64_t *seq);

/*
 * Copy the i-th oldest record (0 = oldest) into buf[0..cap).
 *
 * *seq and *len (either may be NULL) receive its sequence number and length.
 * Reads the storage and re-checks the record's CRC; costs a walk over the i
 * records before it.
 *
 * Returns MOAT_OK; MOAT_ERR_STATE (fewer than i + 1 records queued);
 * MOAT_ERR_SPACE (cap too small: *len says how much is needed, nothing is
 * copied); MOAT_ERR_CORRUPT (the stored record changed since open: sticky,
 * reopen to skip it); MOAT_ERR_IO, or the sticky error.
 */
moat_status moat_queue_peek(moat_queue *q, uint32_t i, uint64_t *seq, uint8_t *buf, size_t cap,
                            size_t *len);

/*
 * Remove the oldest record, which must have sequence number `seq` (the hub
 * acknowledged it). Durable when it returns MOAT_OK: rewrites one header copy
 * and syncs.
 *
 * Returns MOAT_OK; MOAT_ERR_STATE (queue empty); MOAT_ERR_ARG (seq is not
 * the oldest record's); MOAT_ERR_CORRUPT (the next record changed since open:
 * sticky); MOAT_ERR_IO, or the sticky error.
 */
moat_status moat_queue_pop(moat_queue *q, uint64_t seq);

/*
 * Sticky errors: after a storage callback fails, or stored bytes are found
 * changed under an open queue, every later push, peek and pop returns that
 * same status until moat_queue_open is called again, which re-derives the
 * state from what is actually stored.
 */

/* The queue's counters and fill level (counters count since open). Does
 * nothing if out is NULL; all zero if q is NULL. */
void moat_queue_get_stats(const moat_queue *q, moat_queue_stats *out);

#ifdef __cplusplus
}
#endif
#endif
