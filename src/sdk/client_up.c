/*
 * client_up.c — draining the store-and-forward queue to the hub.
 *
 * The records in flight are always the oldest ones in the queue: entry k of
 * c->inflight (one QoS 1 PUBLISH awaiting its PUBACK) carries the `count`
 * records after those of entries 0..k-1, and c->inflight_records is their
 * total, i.e. the queue index of the next record to send. A PUBACK marks its
 * entry; acknowledged entries at the front are popped from the queue (only
 * then is a record gone), so the queue is emptied strictly in order even if
 * a broker acknowledged out of order. A connection that ends forgets every
 * entry: the next one starts again from the oldest record (the hub and the
 * receivers drop the duplicates by sequence number).
 *
 * Unshaped, one PUBLISH carries a batch of consecutive records of the same
 * stream on moat/{id}/up/{stream}, as many as fit; shaped, the shaper decides
 * when (one slot per interval) and the record is a fixed-size batch or cover
 * record on moat/{id}/up/_shaped.
 */
#include <string.h>

#include <moat/record.h>

#include "client_int.h"

/* Longest topic of an unshaped PUBLISH, before the stream is known. */
static size_t topic_bound(const moat_client *c)
{
    return 5 + c->id_len + 4 + MOAT_RECORD_MAX_STREAM;
}

void client_up_reset(moat_client *c)
{
    c->inflight_count = 0;
    c->inflight_records = 0;
}

/* Drop-oldest evicted n of the oldest records: those in flight go first. */
void client_up_dropped(moat_client *c, uint64_t n)
{
    for (size_t k = 0; k < c->inflight_count && n > 0; k++) {
        uint32_t take = c->inflight[k].count < n ? c->inflight[k].count : (uint32_t)n;
        c->inflight[k].count -= take;
        c->inflight_records -= take;
        n -= take;
    }
}

static size_t quota(const moat_client *c)
{
    size_t q = c->send_quota < MOAT_MAX_INFLIGHT ? c->send_quota : MOAT_MAX_INFLIGHT;
    return q ? q : 1;
}

bool client_up_pending(const moat_client *c)
{
    if (c->shaped || c->state != MOAT_STATE_ONLINE || c->inflight_count >= quota(c))
        return false;
    moat_queue_stats qs;
    moat_queue_get_stats(&c->queue, &qs);
    return qs.count > c->inflight_records;
}

/* Remove the queue's head records up to and including seq `last`. */
static moat_status pop_through(moat_client *c, uint32_t count, uint64_t last)
{
    for (uint32_t i = 0; i < count; i++) {
        uint64_t seq = 0;
        size_t len = 0;
        moat_status st = moat_queue_peek(&c->queue, 0, &seq, c->work_buf, c->work_cap, &len);
        if (st == MOAT_ERR_STATE)
            return MOAT_OK; /* evicted meanwhile */
        if (st != MOAT_OK && st != MOAT_ERR_SPACE)
            return st;
        if (seq > last)
            return MOAT_OK;
        if ((st = moat_queue_pop(&c->queue, seq)) != MOAT_OK)
            return st;
    }
    return MOAT_OK;
}

/* A stored error from the queue: reopen it (that re-reads what is stored and
 * skips a damaged record) and start again from the oldest record. */
static moat_status queue_trouble(moat_client *c, moat_status st)
{
    moat_status again = moat_queue_open(&c->queue, &c->storage, MOAT_AREA_QUEUE,
                                        (moat_queue_full_policy)c->queue.policy);
    client_up_reset(c);
    return again == MOAT_OK ? st : again;
}

/* The head record can never be sent (too large for the buffers or the hub,
 * or not a record): drop it, counted, so that it does not block the rest. */
static moat_status refuse_head(moat_client *c)
{
    uint64_t seq = 0;
    size_t len = 0;
    moat_status st = moat_queue_peek(&c->queue, 0, &seq, c->work_buf, c->work_cap, &len);
    if (st == MOAT_OK || st == MOAT_ERR_SPACE)
        st = moat_queue_pop(&c->queue, seq);
    if (st != MOAT_OK)
        return queue_trouble(c, st);
    c->stats.records_refused++;
    client_event(c, MOAT_EV_RECORD_REFUSED, MOAT_ERR_SPACE, seq);
    return MOAT_OK;
}

moat_status client_up_puback(moat_client *c, const codec_ack *a)
{
    size_t k = 0;
    while (k < c->inflight_count && c->inflight[k].packet_id != a->packet_id)
        k++;
    if (k == c->inflight_count)
        return MOAT_OK; /* of an earlier connection's packet: nothing to do */
    moat_inflight *e = &c->inflight[k];
    if (a->reason >= 0x80) {
        /* For good: the hub will never take these (policy, topic, format).
         * Anything else (quota, an error on the hub) may pass later: end the
         * connection and resend after the back-off. */
        if (a->reason != 0x87 && a->reason != 0x90 && a->reason != 0x99)
            return MOAT_ERR_REFUSED;
        e->refused = true;
    }
    e->acked = true;
    while (c->inflight_count > 0 && c->inflight[0].acked) {
        moat_inflight done = c->inflight[0];
        moat_status st = pop_through(c, done.count, done.last_seq);
        if (st != MOAT_OK)
            return queue_trouble(c, st);
        c->inflight_records -= done.count;
        memmove(&c->inflight[0], &c->inflight[1], (c->inflight_count - 1) * sizeof(c->inflight[0]));
        c->inflight_count--;
        if (done.refused) {
            c->stats.records_refused += done.count;
            client_event(c, MOAT_EV_RECORD_REFUSED, MOAT_ERR_REFUSED, done.last_seq);
        } else if (done.count > 0) {
            c->stats.records_sent += done.count;
            client_event(c, MOAT_EV_SENT, MOAT_OK, done.last_seq);
        }
    }
    return MOAT_OK;
}

/* Write a QoS 1 PUBLISH of work_buf[0..len) on c->topic[0..topic_len) and
 * remember it as in flight. */
static moat_status publish(moat_client *c, size_t topic_len, size_t len, uint32_t count,
                           uint64_t first_seq, uint64_t last_seq)
{
    codec_packet p = {.type = CODEC_PUBLISH};
    codec_publish *pub = &p.u.publish;
    bool again = count > 0 && c->any_sent && first_seq <= c->max_sent_seq;
    pub->dup = again;
    pub->qos = 1;
    pub->topic = (codec_bytes){(const uint8_t *)c->topic, topic_len};
    pub->packet_id = client_packet_id(c);
    pub->payload = (codec_bytes){c->work_buf, len};
    moat_status st = client_send_packet(c, &p);
    if (st != MOAT_OK)
        return st;
    c->inflight[c->inflight_count++] = (moat_inflight){
        .packet_id = pub->packet_id, .count = (uint16_t)count, .last_seq = last_seq};
    c->inflight_records += count;
    if (again)
        c->stats.resends++;
    if (count > 0 && (!c->any_sent || last_seq > c->max_sent_seq)) {
        c->max_sent_seq = last_seq;
        c->any_sent = true;
    }
    return MOAT_OK;
}

/* The payload limit of a PUBLISH with a topic of topic_len bytes now. */
static size_t payload_limit(moat_client *c, size_t topic_len)
{
    client_tx_room(c, c->tx_cap); /* compacts */
    size_t lim = c->work_cap;
    size_t room = c->tx_cap - c->tx_len;
    size_t over = CLIENT_PUBLISH_OVERHEAD + topic_len;
    room = room > over ? room - over : 0;
    if (room < lim)
        lim = room;
    if (c->max_packet_out > 0) {
        size_t mp = c->max_packet_out > over ? c->max_packet_out - over : 0;
        if (mp < lim)
            lim = mp;
    }
    return lim;
}

/* One unshaped PUBLISH: the next records of one stream, as many as fit.
 * MOAT_AGAIN when there is nothing to send or no room for it now. */
static moat_status send_next(moat_client *c)
{
    uint32_t idx = c->inflight_records;
    size_t lim = payload_limit(c, topic_bound(c));
    moat_batch b;
    size_t used = MOAT_BATCH_HEADER, topic_len = 0;
    uint64_t first = 0, last = 0;
    if (moat_batch_begin(&b, c->work_buf, c->work_cap) != MOAT_OK)
        return MOAT_ERR_SPACE;
    for (uint32_t i = 0; i < 0xffffu; i++) {
        uint64_t seq = 0;
        size_t len = 0;
        size_t room = moat_batch_room(&b);
        uint8_t *at = c->work_buf + used + MOAT_BATCH_ENTRY_OVERHEAD;
        moat_status st =
            room ? moat_queue_peek(&c->queue, idx + i, &seq, at, room, &len) : MOAT_ERR_SPACE;
        if (st == MOAT_ERR_STATE)
            break; /* no more records */
        if (st == MOAT_ERR_CORRUPT || st == MOAT_ERR_IO)
            return queue_trouble(c, st);
        moat_reading r;
        bool fits = st == MOAT_OK && used + MOAT_BATCH_ENTRY_OVERHEAD + len <= lim;
        if (st == MOAT_OK && moat_record_decode_reading(at, len, &r) != MOAT_OK) {
            if (i == 0 && idx == 0)
                return refuse_head(c);
            break;
        }
        if (!fits) {
            /* The first record not fitting an empty output buffer never will. */
            if (i == 0 && idx == 0 && c->tx_len == 0)
                return refuse_head(c);
            break;
        }
        if (i == 0) {
            topic_len = client_topic(c, "up", r.stream, r.stream_len);
            first = seq;
        } else if (5 + c->id_len + 4 + r.stream_len != topic_len ||
                   memcmp(c->topic + topic_len - r.stream_len, r.stream, r.stream_len) != 0) {
            break; /* another stream: its own PUBLISH */
        }
        if (moat_batch_add(&b, seq, at, len) != MOAT_OK)
            break;
        used += MOAT_BATCH_ENTRY_OVERHEAD + len;
        last = seq;
    }
    if (b.count == 0)
        return MOAT_AGAIN;
    size_t out_len = 0;
    if (moat_batch_finish(&b, 0, &out_len) != MOAT_OK)
        return MOAT_ERR_STATE;
    moat_status st = publish(c, topic_len, out_len, b.count, first, last);
    return st == MOAT_ERR_SPACE ? refuse_head(c) : st;
}

/* The shaper's view of the queue: skips the records already in flight. */
static moat_status shaper_source(void *ctx, uint32_t i, uint64_t *seq, uint8_t *buf, size_t cap,
                                 size_t *len)
{
    moat_client *c = ctx;
    moat_status st = moat_queue_peek(&c->queue, c->inflight_records + i, seq, buf, cap, len);
    if (st == MOAT_OK) {
        /* The shaper adds record i after this returns, before asking for
         * i + 1, and stops at the first it cannot add: the records taken are
         * those of the first `taken` calls, so the last one taken is this
         * call's or the one before. */
        if (i == 0)
            c->sh_first = *seq;
        c->sh_prev = c->sh_last;
        c->sh_last = *seq;
        c->sh_n = i + 1;
    }
    return st;
}

static moat_status shaped_tick(moat_client *c, uint64_t now)
{
    c->shaper_started = true;
    if (!moat_shaper_due(&c->shaper, now))
        return MOAT_OK;
    size_t rs = moat_shaper_record_size(&c->shaper);
    size_t topic_len =
        client_topic(c, "up", (const uint8_t *)MOAT_SHAPER_STREAM, sizeof(MOAT_SHAPER_STREAM) - 1);
    /* Offline, or no room: this slot goes by (the shaper counts it). */
    if (c->state != MOAT_STATE_ONLINE || c->inflight_count >= quota(c) ||
        payload_limit(c, topic_len) < rs) {
        moat_shaper_sent(&c->shaper, now);
        return MOAT_OK;
    }
    size_t out_len = 0;
    uint32_t taken = 0;
    c->sh_n = 0;
    moat_status bst =
        moat_shaper_build(&c->shaper, shaper_source, c, c->work_buf, c->work_cap, &out_len, &taken);
    if (bst == MOAT_ERR_CORRUPT || bst == MOAT_ERR_IO)
        return queue_trouble(c, bst);
    moat_status st = MOAT_OK;
    if (out_len > 0) {
        uint64_t last = taken == c->sh_n ? c->sh_last : c->sh_prev;
        st = publish(c, topic_len, out_len, taken, c->sh_first, last);
        if (st == MOAT_OK) {
            c->stats.shaped_records++;
            if (taken == 0)
                c->stats.cover_records++;
        }
    }
    moat_shaper_sent(&c->shaper, now);
    /* The oldest record fits no shaped record: drop it (once nothing is in
     * flight it is the head), or it would block every later reading. */
    if (st == MOAT_OK && (bst == MOAT_ERR_SPACE || bst == MOAT_ERR_PROTOCOL) && taken == 0 &&
        c->inflight_records == 0)
        st = refuse_head(c);
    return st == MOAT_AGAIN ? MOAT_OK : st;
}

moat_status client_up_work(moat_client *c, uint64_t now)
{
    if (c->shaped)
        return shaped_tick(c, now);
    if (c->state != MOAT_STATE_ONLINE)
        return MOAT_OK;
    while (c->inflight_count < quota(c)) {
        moat_status st = send_next(c);
        if (st == MOAT_AGAIN)
            break;
        if (st != MOAT_OK)
            return st;
    }
    return MOAT_OK;
}
