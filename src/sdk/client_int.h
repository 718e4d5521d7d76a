/*
 * client_int.h — what the files of the client (client*.c) share: the
 * connection steps, the output buffer, the up-link drain and the command
 * path. Internal to libmoat; the public side is include/moat/moat.h.
 *
 * The client is split by what each file is about:
 *   client.c       configuration, the public calls, publish into the queue
 *   client_conn.c  moat_poll and the connection state machine
 *   client_io.c    the output buffer, reading and dispatching packets
 *   client_up.c    draining the queue: QoS 1 publishes, shaped records
 *   client_cmd.c   commands: verify, deliver, reject and report
 */
#ifndef MOAT_SDK_CLIENT_INT_H
#define MOAT_SDK_CLIENT_INT_H

#include <moat/moat.h>

#include "codec.h"

/* Fixed-header bytes plus packet id and an empty property block: what a
 * PUBLISH adds to its topic and payload (the topic's own 2-byte length is
 * counted here too). */
#define CLIENT_PUBLISH_OVERHEAD 12u
/* PINGREQ, PUBACK, DISCONNECT: the largest control packet the client writes
 * without a topic (a PUBACK with a reason code). */
#define CLIENT_SMALL_PACKET 8u
/* A connection up this long resets the back-off when it ends. */
#define CLIENT_STABLE_MS 30000u
/* Rejection reports: a bucket of this many, one more every interval. */
#define CLIENT_REJECT_BURST       4u
#define CLIENT_REJECT_INTERVAL_MS 5000u

static inline uint64_t client_now(const moat_client *c)
{
    return c->clock.now_ms(c->clock.ctx);
}

static inline void client_event(moat_client *c, moat_event ev, moat_status st, uint64_t detail)
{
    if (c->on_event)
        c->on_event(c->user, ev, st, detail);
}

/* client.c */
size_t client_topic(moat_client *c, const char *kind, const uint8_t *tail, size_t tail_len);
uint16_t client_packet_id(moat_client *c);

/* client_conn.c */
void client_connection_lost(moat_client *c, moat_status why);
moat_status client_on_connack(moat_client *c, const codec_connack *a);

/* client_io.c */
moat_status client_flush(moat_client *c);
bool client_tx_room(moat_client *c, size_t need);
moat_status client_send_packet(moat_client *c, const codec_packet *p);
moat_status client_read(moat_client *c);

/* client_up.c */
moat_status client_up_work(moat_client *c, uint64_t now);
moat_status client_up_puback(moat_client *c, const codec_ack *a);
void client_up_reset(moat_client *c);
void client_up_dropped(moat_client *c, uint64_t n);
bool client_up_pending(const moat_client *c);

/* client_cmd.c */
moat_status client_cmd_publish(moat_client *c, const codec_publish *p);
void client_cmd_oversized(moat_client *c, codec_bytes topic);

#endif
