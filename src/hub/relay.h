/*
 * relay.h — how moatd's worker threads hand each other work.
 *
 * Every worker has one inbox: a mutex-protected FIFO of envelopes and an
 * eventfd that wakes the worker's event loop. Envelopes carry a connection
 * handed to the worker that owns its principal, a batch of messages
 * published elsewhere, a ticket (the answer to a batch: "the pass that took
 * your batch is committed here"), or a control order (stop, reload). A
 * worker fills one outbox batch per other worker during a loop pass and
 * posts them at the end of the pass: one lock per destination per pass, not
 * one per message.
 *
 * The tickets make "acknowledged means stored" hold across workers: the
 * origin holds its PUBACKs for a pass until every worker it sent QoS 1/2
 * messages to in that pass has committed them (relay_pending).
 */
#ifndef MOAT_HUB_RELAY_H
#define MOAT_HUB_RELAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"

typedef enum relay_kind {
    RELAY_CONN,    /* conn: a connection for the receiving worker */
    RELAY_BATCH,   /* items from worker `from`, pass `pass` */
    RELAY_TICKET,  /* worker `from` committed our pass `pass` (ok or not) */
    RELAY_CONTROL, /* control: RELAY_STOP, RELAY_RELOAD */
} relay_kind;

enum { RELAY_STOP = 1, RELAY_RELOAD = 2, RELAY_RECHECK = 3 };

/* One message, copied: the views in f point into data. */
typedef struct relay_item {
    broker_fwd f;
    uint8_t data[];
} relay_item;

typedef struct relay_env {
    relay_kind kind;
    unsigned from;
    uint64_t pass;
    bool ok;            /* ticket: the pass committed */
    bool needs_ticket;  /* batch: the sender holds acknowledgements for it */
    uint64_t pass_time; /* batch: when its pass took the messages (ms) */
    int control;
    void *conn; /* RELAY_CONN */
    void *arg;  /* RELAY_CONTROL payload (owned by the receiver) */
    relay_item **items;
    size_t n, cap;
    uint64_t *gids; /* ticket: messages that found subscribers there */
    size_t ngids, gids_cap;
    struct relay_env *next;
} relay_env;

typedef struct relay_inbox {
    pthread_mutex_t mu;
    relay_env *head, *tail;
    int efd; /* eventfd: readable while something waits */
} relay_inbox;

bool relay_inbox_init(relay_inbox *in);
void relay_inbox_free(relay_inbox *in); /* envelopes still inside: relay_take first */
void relay_post(relay_inbox *in, relay_env *env);
/* Everything posted so far, oldest first (and resets the eventfd). */
relay_env *relay_take(relay_inbox *in);

relay_env *relay_env_new(relay_kind kind, unsigned from);
/* Append a copy of f with the given flags; false when out of memory. */
bool relay_env_add(relay_env *env, const broker_fwd *f, uint8_t flags);
bool relay_env_add_gid(relay_env *env, uint64_t gid);
void relay_env_free(relay_env *env);

/* The passes of one worker still waiting for tickets, oldest first. */
typedef struct relay_pending {
    struct {
        uint64_t pass;
        unsigned waiting;
        bool failed;
    } * v;
    size_t head, len, cap;
} relay_pending;

bool relay_pending_add(relay_pending *p, uint64_t pass, unsigned waiting);
/* A ticket arrived. */
void relay_pending_ticket(relay_pending *p, uint64_t pass, bool ok);
/* The oldest pass whose tickets have all arrived: true with its number and
 * whether all were ok, and removes it. */
bool relay_pending_pop(relay_pending *p, uint64_t *pass, bool *ok);
bool relay_pending_empty(const relay_pending *p);
void relay_pending_free(relay_pending *p);

#endif
