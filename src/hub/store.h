/*
 * store.h — what the broker makes durable, as an interface.
 *
 * The broker calls these inside one transaction per loop pass (begin is
 * implicit in the first write; commit is broker_commit), so many messages
 * cost one fsync. The SQLite implementation is store_sqlite.c; a PostgreSQL
 * one can follow without touching the broker. Every write returns false on
 * failure; the broker then treats the pass as lost (see broker_commit).
 *
 * Rows are keyed by client identifier (sessions, subscriptions, queues) and
 * by message id (messages, shared by queues and retained topics).
 */
#ifndef MOAT_HUB_STORE_H
#define MOAT_HUB_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

typedef struct store_session_row {
    codec_bytes client_id;
    uint8_t kind;          /* broker_kind */
    codec_bytes principal; /* device id or service name */
    uint8_t version;
    uint32_t expiry_interval; /* seconds */
    uint64_t expires_at;      /* ms wall clock when offline; 0 while online */
} store_session_row;

typedef struct store_msg_row {
    uint64_t id;
    codec_bytes topic;
    codec_bytes payload;
    codec_bytes props;
    codec_bytes origin;
    uint8_t qos;
    bool retain;
    uint64_t expires_at;
} store_msg_row;

typedef struct store_queue_row {
    codec_bytes client_id;
    uint64_t seq;
    uint64_t msg_id;
    uint8_t qos;
    bool retain;
    uint8_t state; /* delivery_state */
    uint16_t packet_id;
    uint8_t nsub_ids;
    uint32_t sub_ids[4];
    bool shared; /* came through a share group (delivery.shared) */
} store_queue_row;

/* The will of a client whose connection was open (or whose will delay had
 * not ended) when this row was written: after a crash the hub publishes it. */
typedef struct store_will_row {
    codec_bytes client_id;
    uint8_t kind;          /* broker_kind */
    codec_bytes principal; /* device id or service name */
    uint64_t msg_id;       /* the will message */
    uint32_t delay;        /* Will Delay Interval, seconds */
    bool expires;          /* it has a Message Expiry Interval: */
    uint32_t expiry;       /* seconds from its publication */
} store_will_row;

/* Callbacks through which a store hands its contents back at start-up, in
 * this order: messages, sessions, subscriptions, queues, QoS 2 ids, retained,
 * wills. */
typedef struct store_loader {
    void *ctx;
    bool (*msg)(void *ctx, const store_msg_row *row);
    bool (*session)(void *ctx, const store_session_row *row);
    bool (*sub)(void *ctx, codec_bytes client_id, codec_bytes filter, uint8_t options,
                uint32_t sub_id);
    bool (*queue)(void *ctx, const store_queue_row *row);
    bool (*qos2)(void *ctx, codec_bytes client_id, uint16_t packet_id);
    bool (*retained)(void *ctx, codec_bytes topic, uint64_t msg_id);
    bool (*will)(void *ctx, const store_will_row *row);
} store_loader;

typedef struct broker_store {
    void *ctx;
    bool (*begin)(void *ctx);
    bool (*commit)(void *ctx);
    void (*rollback)(void *ctx);
    bool (*load)(void *ctx, const store_loader *loader);

    bool (*msg_put)(void *ctx, const store_msg_row *row);
    bool (*msg_delete)(void *ctx, uint64_t id);
    /* The largest message id in use, so new ids do not collide. */
    uint64_t (*msg_max_id)(void *ctx);

    bool (*session_put)(void *ctx, const store_session_row *row);
    /* Also deletes the session's subscriptions, queue and QoS 2 ids. */
    bool (*session_delete)(void *ctx, codec_bytes client_id);

    bool (*sub_put)(void *ctx, codec_bytes client_id, codec_bytes filter, uint8_t options,
                    uint32_t sub_id);
    bool (*sub_delete)(void *ctx, codec_bytes client_id, codec_bytes filter);

    bool (*queue_put)(void *ctx, const store_queue_row *row); /* insert or replace */
    bool (*queue_delete)(void *ctx, codec_bytes client_id, uint64_t seq);

    bool (*qos2_put)(void *ctx, codec_bytes client_id, uint16_t packet_id);
    bool (*qos2_delete)(void *ctx, codec_bytes client_id, uint16_t packet_id);

    bool (*retained_put)(void *ctx, codec_bytes topic, uint64_t msg_id);
    bool (*retained_delete)(void *ctx, codec_bytes topic);

    bool (*will_put)(void *ctx, const store_will_row *row); /* insert or replace */
    bool (*will_delete)(void *ctx, codec_bytes client_id);
} broker_store;

#endif /* MOAT_HUB_STORE_H */
