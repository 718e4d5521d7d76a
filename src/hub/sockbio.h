/*
 * sockbio.h — the socket under a connection's TLS, as an OpenSSL BIO that
 * knows when the kernel's receive queue ran dry.
 *
 * With read-ahead on, OpenSSL asks for a whole buffer at a time; a recv()
 * that returns less than that has emptied the socket. Reading it again in the
 * same readiness event can only fail with EAGAIN, one wasted syscall per
 * event on every busy connection (a third of the hub's syscalls under
 * fan-in). The BIO answers "would block" without the syscall until the event
 * loop reports the socket readable again (sockbio_readable). The loop is
 * level-triggered, so bytes that arrive in between are not missed.
 */
#ifndef MOAT_HUB_SOCKBIO_H
#define MOAT_HUB_SOCKBIO_H

#include <stdbool.h>

#include <openssl/bio.h>

typedef struct sockbio_state {
    int fd;
    bool rx_empty; /* the last recv() emptied the socket */
} sockbio_state;

/* A BIO over st->fd; st must outlive it. The BIO never closes the fd. NULL
 * when out of memory. */
BIO *sockbio_new(sockbio_state *st);

/* The state under b, or NULL when b is not one of these BIOs. */
sockbio_state *sockbio_state_of(BIO *b);

/* The event loop reports the socket readable. */
static inline void sockbio_readable(sockbio_state *st)
{
    st->rx_empty = false;
}

#endif /* MOAT_HUB_SOCKBIO_H */
