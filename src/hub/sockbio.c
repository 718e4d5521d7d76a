/*
 * sockbio.c — the socket BIO under the hub's TLS connections (see sockbio.h).
 */
#include "sockbio.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>

static BIO_METHOD *method;
static int method_type;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static bool would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

static int sock_read(BIO *b, char *out, int len)
{
    sockbio_state *st = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (st->rx_empty) {
        BIO_set_retry_read(b);
        return -1;
    }
    ssize_t n = recv(st->fd, out, (size_t)len, 0);
    if (n > 0) {
        if (n < len)
            st->rx_empty = true;
        return (int)n;
    }
    if (n < 0 && would_block(errno)) {
        st->rx_empty = errno != EINTR;
        BIO_set_retry_read(b);
        return -1;
    }
    return (int)n; /* 0: the peer closed; -1: an error, errno says which */
}

static int sock_write(BIO *b, const char *data, int len)
{
    sockbio_state *st = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    ssize_t n = send(st->fd, data, (size_t)len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    if (would_block(errno))
        BIO_set_retry_write(b);
    return -1;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* nothing is buffered here */
    case BIO_CTRL_GET_CLOSE:
        return BIO_get_shutdown(b);
    case BIO_CTRL_SET_CLOSE:
        BIO_set_shutdown(b, (int)num);
        return 1;
    default:
        return 0; /* kTLS, pending counts, ...: not offered */
    }
}

static int sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_method(void)
{
    int type = BIO_get_new_index();
    if (type == -1)
        return;
    BIO_METHOD *m = BIO_meth_new(type | BIO_TYPE_SOURCE_SINK, "moat socket");
    if (!m)
        return;
    if (!BIO_meth_set_read(m, sock_read) || !BIO_meth_set_write(m, sock_write) ||
        !BIO_meth_set_ctrl(m, sock_ctrl) || !BIO_meth_set_create(m, sock_create)) {
        BIO_meth_free(m);
        return;
    }
    method_type = type | BIO_TYPE_SOURCE_SINK;
    method = m;
}

BIO *sockbio_new(sockbio_state *st)
{
    pthread_once(&method_once, make_method);
    if (!method)
        return NULL;
    BIO *b = BIO_new(method);
    if (b)
        BIO_set_data(b, st);
    return b;
}

sockbio_state *sockbio_state_of(BIO *b)
{
    if (!b || !method || BIO_method_type(b) != method_type)
        return NULL;
    return BIO_get_data(b);
}
