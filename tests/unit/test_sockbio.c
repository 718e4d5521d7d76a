/*
 * Unit tests for src/hub/sockbio.c, the socket BIO under the hub's TLS: over
 * a real socket pair, a read that empties the socket makes the next read
 * answer "would block" without asking the kernel (bytes that arrived since
 * wait for the loop's next readiness report, and are not lost), a full read
 * keeps reading, EOF and errors are not mistaken for "would block", writes
 * go through, and the BIO finds its state again (sockbio_state_of) but not
 * in a BIO of another kind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockbio.h"

typedef struct pair {
    int hub, peer;
    sockbio_state st;
    BIO *bio;
} pair;

static int setup(void **state)
{
    static pair p;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    p = (pair){.hub = fds[0], .peer = fds[1], .st = {.fd = fds[0]}};
    p.bio = sockbio_new(&p.st);
    assert_non_null(p.bio);
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    pair *p = *state;
    BIO_free(p->bio);
    close(p->hub);
    if (p->peer >= 0)
        close(p->peer);
    return 0;
}

static void test_short_read_marks_the_socket_empty(void **state)
{
    pair *p = *state;
    char buf[64];
    assert_int_equal(write(p->peer, "hello", 5), 5);
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_true(p->st.rx_empty);

    /* More arrives, but the loop has not said so yet: no read. */
    assert_int_equal(write(p->peer, "world", 5), 5);
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), -1);
    assert_true(BIO_should_retry(p->bio) && BIO_should_read(p->bio));

    /* The loop reports the socket readable: the bytes are all there. */
    sockbio_readable(&p->st);
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "world", 5);
}

static void test_full_read_keeps_reading(void **state)
{
    pair *p = *state;
    char buf[8];
    assert_int_equal(write(p->peer, "0123456789abcdef", 16), 16);
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), 8);
    assert_false(p->st.rx_empty); /* the socket may hold more: it does */
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), 8);
    assert_memory_equal(buf, "89abcdef", 8);
    /* Now empty, and the BIO learns it from EAGAIN. */
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), -1);
    assert_true(BIO_should_retry(p->bio));
    assert_true(p->st.rx_empty);
}

static void test_eof_and_errors_are_not_retries(void **state)
{
    pair *p = *state;
    char buf[8];
    close(p->peer);
    p->peer = -1;
    assert_int_equal(BIO_read(p->bio, buf, sizeof(buf)), 0);
    assert_false(BIO_should_retry(p->bio));
    assert_int_equal(BIO_write(p->bio, "x", 1), -1); /* EPIPE, without SIGPIPE */
    assert_false(BIO_should_retry(p->bio));
}

static void test_writes_reach_the_peer(void **state)
{
    pair *p = *state;
    char buf[16];
    assert_int_equal(BIO_write(p->bio, "ping", 4), 4);
    assert_int_equal(BIO_flush(p->bio), 1);
    assert_int_equal(read(p->peer, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ping", 4);
}

static void test_state_is_found_only_in_its_own_bios(void **state)
{
    pair *p = *state;
    assert_ptr_equal(sockbio_state_of(p->bio), &p->st);
    BIO *other = BIO_new(BIO_s_mem());
    assert_non_null(other);
    assert_null(sockbio_state_of(other));
    assert_null(sockbio_state_of(NULL));
    BIO_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_short_read_marks_the_socket_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_read_keeps_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof_and_errors_are_not_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writes_reach_the_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_is_found_only_in_its_own_bios, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
