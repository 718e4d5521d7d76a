/*
 * test_sessions.c — the broker's session index (src/hub/sessions.c): every
 * session found by its client id and only by it, through growth, removal in
 * any order, and a walk that may remove as it goes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker_int.h"

#define N 3000

static session *make(const char *id)
{
    size_t len = strlen(id);
    session *s = calloc(1, sizeof(*s) + len + 1); /* NUL-terminated for strtol below */
    assert_non_null(s);
    memcpy(s->client_id_bytes, id, len);
    s->client_id_len = (uint16_t)len;
    return s;
}

static codec_bytes str(const char *s)
{
    return (codec_bytes){(const uint8_t *)s, strlen(s)};
}

static session *all[N];

static void fill(session_index *x)
{
    assert_true(session_index_init(x));
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "dev%d", i);
        all[i] = make(id);
        assert_true(session_index_add(x, all[i]));
    }
    assert_int_equal(x->count, N);
}

static void test_find_through_growth_and_removal(void **state)
{
    (void)state;
    session_index x;
    fill(&x);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "dev%d", i);
        assert_ptr_equal(session_find(&x, str(id)), all[i]);
    }
    assert_null(session_find(&x, str("dev")));
    assert_null(session_find(&x, str("dev30000")));
    assert_null(session_find(&x, (codec_bytes){NULL, 0}));
    /* Remove every third, from the end: the rest are still found. */
    for (int i = N - 1; i >= 0; i -= 3) {
        session_index_remove(&x, all[i]);
        free(all[i]);
        all[i] = NULL;
    }
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "dev%d", i);
        assert_ptr_equal(session_find(&x, str(id)), all[i]);
    }
    assert_int_equal(x.count, N - N / 3);
    /* A walk sees each remaining session once. */
    size_t bucket = 0, seen = 0;
    for (session *s = session_index_first(&x, &bucket); s; s = session_index_next(&x, &bucket, s)) {
        int i = (int)strtol((const char *)session_id(s).ptr + 3, NULL, 10);
        assert_ptr_equal(all[i], s);
        all[i] = NULL; /* seen */
        seen++;
    }
    assert_int_equal(seen, x.count);
    /* Removing what session_index_first returned, again and again, empties it. */
    bucket = 0;
    session *s;
    while ((s = session_index_first(&x, &bucket))) {
        session_index_remove(&x, s);
        free(s);
    }
    assert_int_equal(x.count, 0);
    assert_null(session_find(&x, str("dev1")));
    session_index_free(&x);
}

/* Removing a session the index does not hold changes nothing. */
static void test_remove_unknown(void **state)
{
    (void)state;
    session_index x;
    assert_true(session_index_init(&x));
    session *a = make("a"), *b = make("b");
    session_index_remove(&x, a); /* empty index */
    assert_true(session_index_add(&x, a));
    b->index_hash = a->index_hash; /* same chain, not linked */
    session_index_remove(&x, b);
    assert_int_equal(x.count, 1);
    assert_ptr_equal(session_find(&x, str("a")), a);
    session_index_remove(&x, a);
    assert_int_equal(x.count, 0);
    session_index_free(&x);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_through_growth_and_removal),
        cmocka_unit_test(test_remove_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
