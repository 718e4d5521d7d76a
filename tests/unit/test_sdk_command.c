/*
 * Unit tests for src/sdk/command.c with the Linux signing side
 * (src/sdk/linux/command_sign.c, crypto_sodium.c): every refusal the device
 * must make is performed as an attack and must fail — one flipped bit
 * anywhere in the envelope, a replayed or lower counter, an expired command,
 * an unknown clock, another device's command, the wrong topic, an unknown
 * key, truncated and extended envelopes — and the last counter survives a
 * restart and a power cut at every byte of its write without ever letting a
 * command that was accepted be accepted again.
 *
 * Storage is a RAM area with a power switch: after `budget` more bytes have
 * been written, writes stop part-way (the torn write platform.h allows) and
 * every later call fails, as on a device that lost power. A "reboot" is a new
 * verifier over the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <moat/command.h>
#include <moat/sign.h>

#define ID    "abcdefghijklmnopqrstuvwxyz"
#define OTHER "bbcdefghijklmnopqrstuvwxyz"
#define NOW   1700000000u

/* ---- fakes ---------------------------------------------------------------- */

struct ram {
    uint8_t bytes[256];
    long budget; /* bytes that may still be written; < 0: unlimited */
    bool dead;
    bool fail_sync;
    bool fail_read;
    unsigned writes;
};

static size_t ram_size(void *ctx, unsigned area)
{
    (void)area;
    return sizeof((struct ram *)ctx)->bytes;
}

static moat_status ram_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    struct ram *r = ctx;
    assert_int_equal(area, MOAT_AREA_STATE);
    assert_true(off <= sizeof r->bytes && len <= sizeof r->bytes - off);
    if (r->dead || r->fail_read)
        return MOAT_ERR_IO;
    memcpy(buf, r->bytes + off, len);
    return MOAT_OK;
}

static moat_status ram_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    struct ram *r = ctx;
    assert_int_equal(area, MOAT_AREA_STATE);
    assert_true(off <= sizeof r->bytes && len <= sizeof r->bytes - off);
    if (r->dead)
        return MOAT_ERR_IO;
    r->writes++;
    size_t n = len;
    if (r->budget >= 0 && (size_t)r->budget < len) {
        n = (size_t)r->budget;
        r->dead = true;
    }
    memcpy(r->bytes + off, buf, n);
    if (r->budget >= 0)
        r->budget -= (long)n;
    return r->dead ? MOAT_ERR_IO : MOAT_OK;
}

static moat_status ram_sync(void *ctx, unsigned area)
{
    struct ram *r = ctx;
    (void)area;
    return r->dead || r->fail_sync ? MOAT_ERR_IO : MOAT_OK;
}

static moat_storage ram_storage(struct ram *r)
{
    moat_storage st = {r, ram_size, ram_read, ram_write, ram_sync};
    return st;
}

static uint64_t fake_unix;
static uint64_t fake_now_ms(void *ctx)
{
    (void)ctx;
    return 0;
}
static uint64_t fake_unix_time(void *ctx)
{
    (void)ctx;
    return fake_unix;
}
static void fake_random(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    randombytes_buf(buf, len);
}
static const moat_clock fake_clock = {NULL, fake_now_ms, fake_unix_time, fake_random};

/* ---- fixture ------------------------------------------------------------- */

struct fx {
    uint8_t pk[3][32];
    uint8_t sk[3][64]; /* 0, 1 trusted; 2 not */
    struct ram ram;
    moat_storage st;
    moat_crypto crypto;
    moat_command_verifier v;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(moat_sign_keygen(f->pk[i], f->sk[i]), MOAT_OK);
    f->ram.budget = -1;
    f->st = ram_storage(&f->ram);
    assert_int_equal(moat_crypto_sodium(&f->crypto), MOAT_OK);
    assert_int_equal(moat_command_verifier_init(&f->v, ID, (const uint8_t(*)[32])f->pk, 2, &f->st,
                                                MOAT_AREA_STATE, 0),
                     MOAT_OK);
    fake_unix = NOW;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sodium_memzero(f, sizeof *f);
    free(f);
    return 0;
}

struct env {
    uint8_t b[512];
    size_t len;
    char topic[160];
};

static void sign_as(struct fx *f, int key, const char *dev, const char *name, uint64_t counter,
                    uint64_t expiry, const char *body, struct env *e)
{
    assert_int_equal(moat_command_sign(f->sk[key], dev, name, counter, expiry,
                                       (const uint8_t *)body, strlen(body), e->b, sizeof e->b,
                                       &e->len),
                     MOAT_OK);
    snprintf(e->topic, sizeof e->topic, "moat/%s/down/%s", dev, name);
}

static void sign_ok(struct fx *f, uint64_t counter, struct env *e)
{
    sign_as(f, 0, ID, "set", counter, NOW + 300, "{\"target\":21}", e);
}

static moat_command_reason verify_env(struct fx *f, const struct env *e, const char *topic,
                                      moat_status *st_out)
{
    moat_command cmd;
    moat_command_reason why = MOAT_CMD_OK;
    const char *t = topic ? topic : e->topic;
    moat_status st = moat_command_verify(&f->v, &f->crypto, &fake_clock, (const uint8_t *)t,
                                         strlen(t), e->b, e->len, &cmd, &why);
    if (st_out)
        *st_out = st;
    if (why == MOAT_CMD_OK)
        assert_int_equal(st, MOAT_OK);
    else
        assert_int_not_equal(st, MOAT_OK);
    return why;
}

static moat_command_reason verify(struct fx *f, const struct env *e)
{
    return verify_env(f, e, NULL, NULL);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_accepts_valid(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 100, &e);
    moat_command cmd;
    moat_command_reason why = 99;
    assert_int_equal(moat_command_verify(&f->v, &f->crypto, &fake_clock, (const uint8_t *)e.topic,
                                         strlen(e.topic), e.b, e.len, &cmd, &why),
                     MOAT_OK);
    assert_int_equal(why, MOAT_CMD_OK);
    assert_int_equal(cmd.name_len, 3);
    assert_memory_equal(cmd.name, "set", 3);
    assert_int_equal(cmd.body_len, 13);
    assert_memory_equal(cmd.body, "{\"target\":21}", 13);
    assert_true(cmd.body >= e.b && cmd.body + cmd.body_len <= e.b + e.len);
    assert_int_equal(cmd.counter, 100);
    assert_int_equal(cmd.expiry, NOW + 300);
    assert_int_equal(cmd.key_index, 0);
    assert_int_equal(moat_command_last_counter(&f->v), 100);

    /* The second trusted key, an empty body. */
    sign_as(f, 1, ID, "reboot", 101, NOW + 1, "", &e);
    assert_int_equal(moat_command_verify(&f->v, &f->crypto, &fake_clock, (const uint8_t *)e.topic,
                                         strlen(e.topic), e.b, e.len, &cmd, &why),
                     MOAT_OK);
    assert_int_equal(cmd.key_index, 1);
    assert_int_equal(cmd.body_len, 0);
}

/* One flipped bit anywhere: refused, and the refusal changes nothing (the
 * untouched envelope is accepted afterwards). */
static void test_every_bit_flip_refused(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 500, &e);
    unsigned writes = f->ram.writes;
    for (size_t i = 0; i < e.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            struct env m = e;
            m.b[i] ^= (uint8_t)(1u << bit);
            moat_status st;
            moat_command_reason why = verify_env(f, &m, NULL, &st);
            assert_int_not_equal(why, MOAT_CMD_OK);
            assert_int_equal(st, MOAT_ERR_AUTH);
        }
    }
    assert_int_equal(f->ram.writes, writes); /* no refusal touched the counter */
    assert_int_equal(moat_command_last_counter(&f->v), 0);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
}

/* What each region's flip is refused as (the order of the checks). */
static void test_flip_reasons(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 500, &e);
    struct {
        size_t off;
        moat_command_reason want;
    } cases[] = {
        {0, MOAT_CMD_MALFORMED},              /* domain string */
        {15, MOAT_CMD_MALFORMED},             /* its NUL */
        {16, MOAT_CMD_UNKNOWN_KEY},           /* key id */
        {24, MOAT_CMD_BAD_SIGNATURE},         /* counter */
        {39, MOAT_CMD_BAD_SIGNATURE},         /* expiry */
        {41, MOAT_CMD_WRONG_DEVICE},          /* device id ('a' -> 'c') */
        {68, MOAT_CMD_WRONG_TOPIC},           /* name ('s' -> 'q') */
        {e.len - 65, MOAT_CMD_BAD_SIGNATURE}, /* body */
        {e.len - 1, MOAT_CMD_BAD_SIGNATURE},  /* signature */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct env m = e;
        m.b[cases[i].off] ^= 2;
        assert_int_equal(verify(f, &m), cases[i].want);
    }
}

static void test_replay_and_lower_counter(void **state)
{
    struct fx *f = *state;
    struct env e, lower, higher;
    sign_ok(f, 1000, &e);
    sign_ok(f, 999, &lower);
    sign_ok(f, 1001, &higher);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
    assert_int_equal(verify(f, &e), MOAT_CMD_REPLAYED);
    assert_int_equal(verify(f, &lower), MOAT_CMD_REPLAYED);
    assert_int_equal(verify(f, &higher), MOAT_CMD_OK);
    assert_int_equal(verify(f, &e), MOAT_CMD_REPLAYED);
    assert_int_equal(verify(f, &higher), MOAT_CMD_REPLAYED);
    /* Counter 0 is never above anything. */
    sign_ok(f, 0, &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_REPLAYED);
}

static void test_counter_zero_on_fresh_device(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 0, &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_REPLAYED);
    sign_ok(f, 1, &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
}

static void test_expiry_and_clock(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_as(f, 0, ID, "set", 10, NOW, "x", &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_EXPIRED); /* expiry == now: passed */
    sign_as(f, 0, ID, "set", 11, NOW - 3600, "x", &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_EXPIRED);
    fake_unix = 0;
    sign_as(f, 0, ID, "set", 12, NOW + 60, "x", &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_CLOCK_UNKNOWN);
    fake_unix = NOW;
    sign_as(f, 0, ID, "set", 13, NOW + 1, "x", &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
    /* Refusals stored nothing: a lower counter that is still fresh is fine. */
    assert_int_equal(moat_command_last_counter(&f->v), 13);
}

static void test_wrong_device_and_topic(void **state)
{
    struct fx *f = *state;
    struct env e;
    /* Signed for another device, delivered on this device's topic. */
    sign_as(f, 0, OTHER, "set", 20, NOW + 60, "x", &e);
    assert_int_equal(verify_env(f, &e, "moat/" ID "/down/set", NULL), MOAT_CMD_WRONG_DEVICE);
    assert_int_equal(verify(f, &e), MOAT_CMD_WRONG_TOPIC); /* its own topic is not ours */

    sign_as(f, 0, ID, "set", 21, NOW + 60, "x", &e);
    const char *topics[] = {
        "moat/" ID "/down/open", "moat/" OTHER "/down/set", "moat/" ID "/up/set",
        "moat/" ID "/down/set/", "moat/" ID "/down/se",     "moat/" ID "/down/sett",
        "moat/" ID "/down/",     "moat/" ID "/down",        "moat/" ID "x/down/set",
        "moat//down/set",        "Moat/" ID "/down/set",    "/moat/" ID "/down/set",
        "moat/" ID "/down/+",    "moat/" ID "/down/#",      "",
    };
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
        assert_int_equal(verify_env(f, &e, topics[i], NULL), MOAT_CMD_WRONG_TOPIC);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
}

static void test_unknown_key(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_as(f, 2, ID, "set", 30, NOW + 60, "x", &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_UNKNOWN_KEY);
    /* The untrusted key's signature under a trusted key's id. */
    memcpy(e.b + MOAT_COMMAND_DOMAIN_LEN, f->pk[0], MOAT_COMMAND_KEY_ID_LEN);
    assert_int_equal(verify(f, &e), MOAT_CMD_BAD_SIGNATURE);
    /* A trusted signer's signature moved onto another body. */
    struct env a, b;
    sign_as(f, 0, ID, "set", 31, NOW + 60, "on", &a);
    sign_as(f, 0, ID, "set", 31, NOW + 60, "of", &b);
    memcpy(b.b + b.len - 64, a.b + a.len - 64, 64);
    assert_int_equal(verify(f, &b), MOAT_CMD_BAD_SIGNATURE);
    assert_int_equal(verify(f, &a), MOAT_CMD_OK);
}

static void test_truncated_and_extended(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 40, &e);
    for (size_t n = 0; n < e.len; n++) {
        uint8_t *p = malloc(n ? n : 1); /* exact size, so ASan sees any over-read */
        assert_non_null(p);
        memcpy(p, e.b, n);
        moat_command cmd;
        moat_command_reason why;
        assert_int_equal(moat_command_verify(&f->v, &f->crypto, &fake_clock,
                                             (const uint8_t *)e.topic, strlen(e.topic), p, n, &cmd,
                                             &why),
                         MOAT_ERR_AUTH);
        assert_int_equal(why, MOAT_CMD_MALFORMED);
        free(p);
    }
    for (size_t extra = 1; extra < 70; extra++) {
        struct env m = e;
        memset(m.b + e.len, extra == 1 ? 0 : 0x41, extra);
        m.len = e.len + extra;
        assert_int_equal(verify(f, &m), MOAT_CMD_MALFORMED);
    }
    /* A body length that claims more or less than is there. */
    struct env m = e;
    size_t body_len_at = e.len - 64 - 13 - 4;
    m.b[body_len_at + 3] = 14;
    assert_int_equal(verify(f, &m), MOAT_CMD_MALFORMED);
    m.b[body_len_at + 3] = 12;
    assert_int_equal(verify(f, &m), MOAT_CMD_MALFORMED);
    m.b[body_len_at] = 0xff;
    assert_int_equal(verify(f, &m), MOAT_CMD_MALFORMED);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
}

static void test_counter_survives_reopen(void **state)
{
    struct fx *f = *state;
    struct env a, b, c;
    sign_ok(f, 7000, &a);
    sign_ok(f, 7001, &b);
    sign_ok(f, 7002, &c);
    assert_int_equal(verify(f, &a), MOAT_CMD_OK);
    assert_int_equal(verify(f, &b), MOAT_CMD_OK);
    for (int boot = 0; boot < 3; boot++) {
        assert_int_equal(moat_command_verifier_init(&f->v, ID, (const uint8_t(*)[32])f->pk, 2,
                                                    &f->st, MOAT_AREA_STATE, 0),
                         MOAT_OK);
        assert_int_equal(moat_command_last_counter(&f->v), 7001);
        assert_int_equal(verify(f, &a), MOAT_CMD_REPLAYED);
        assert_int_equal(verify(f, &b), MOAT_CMD_REPLAYED);
    }
    assert_int_equal(verify(f, &c), MOAT_CMD_OK);
    assert_int_equal(moat_command_verifier_init(&f->v, ID, (const uint8_t(*)[32])f->pk, 2, &f->st,
                                                MOAT_AREA_STATE, 0),
                     MOAT_OK);
    assert_int_equal(verify(f, &c), MOAT_CMD_REPLAYED);

    /* At another offset of the area, independent of what is at 0. */
    assert_int_equal(moat_command_verifier_init(&f->v, ID, (const uint8_t(*)[32])f->pk, 2, &f->st,
                                                MOAT_AREA_STATE, 100),
                     MOAT_OK);
    assert_int_equal(moat_command_last_counter(&f->v), 0);
}

/*
 * The power-cut test. For n = 1..5 commands accepted before, and for every
 * byte k of the next counter write, power fails after k bytes. After the
 * reboot, none of the commands that verify accepted may be accepted again,
 * and the device still works.
 */
static void test_power_cut_at_every_byte(void **state)
{
    struct fx *f = *state;
    const size_t slot = MOAT_COMMAND_STATE_SIZE / 2;
    for (int n = 1; n <= 5; n++) {
        for (size_t k = 0; k <= slot; k++) {
            memset(&f->ram, 0, sizeof f->ram);
            f->ram.budget = -1;
            assert_int_equal(moat_command_verifier_init(&f->v, ID, (const uint8_t(*)[32])f->pk, 2,
                                                        &f->st, MOAT_AREA_STATE, 0),
                             MOAT_OK);
            struct env acc[6];
            int accepted = 0;
            for (int i = 0; i < n; i++) {
                sign_ok(f, 100 + (uint64_t)i, &acc[accepted]);
                assert_int_equal(verify(f, &acc[accepted]), MOAT_CMD_OK);
                accepted++;
            }
            /* Power fails k bytes into the next counter write. */
            f->ram.budget = (long)k;
            sign_ok(f, 200, &acc[accepted]);
            moat_status st;
            moat_command_reason why = verify_env(f, &acc[accepted], NULL, &st);
            if (k < slot) {
                assert_int_equal(why, MOAT_CMD_STORAGE);
                assert_int_equal(st, MOAT_ERR_IO);
            } else {
                assert_int_equal(why, MOAT_CMD_OK);
                accepted++;
            }
            /* Reboot. */
            f->ram.dead = false;
            f->ram.budget = -1;
            assert_int_equal(moat_command_verifier_init(&f->v, ID, (const uint8_t(*)[32])f->pk, 2,
                                                        &f->st, MOAT_AREA_STATE, 0),
                             MOAT_OK);
            uint64_t last = moat_command_last_counter(&f->v);
            assert_true(last == 100 + (uint64_t)n - 1 || (last == 200 && k == slot));
            for (int i = 0; i < accepted; i++)
                assert_int_equal(verify(f, &acc[i]), MOAT_CMD_REPLAYED);
            /* A new command still goes through, and is then not replayable. */
            struct env next;
            sign_ok(f, 300, &next);
            assert_int_equal(verify(f, &next), MOAT_CMD_OK);
            assert_int_equal(verify(f, &next), MOAT_CMD_REPLAYED);
        }
    }
}

/* A write that lands but whose sync fails: refused (never acted on). */
static void test_sync_failure_refuses(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 50, &e);
    f->ram.fail_sync = true;
    moat_status st;
    assert_int_equal(verify_env(f, &e, NULL, &st), MOAT_CMD_STORAGE);
    assert_int_equal(st, MOAT_ERR_IO);
    f->ram.fail_sync = false;
    assert_int_equal(verify(f, &e), MOAT_CMD_OK);
    assert_int_equal(verify(f, &e), MOAT_CMD_REPLAYED);
}

static void test_init_errors_and_fresh_areas(void **state)
{
    struct fx *f = *state;
    moat_command_verifier v;
    const uint8_t(*keys)[32] = (const uint8_t(*)[32])f->pk;
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 0, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, MOAT_COMMAND_MAX_KEYS + 1, &f->st,
                                                MOAT_AREA_STATE, 0),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_verifier_init(&v, "a/b", keys, 1, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_verifier_init(&v, "", keys, 1, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE,
                                                256 - MOAT_COMMAND_STATE_SIZE + 1),
                     MOAT_ERR_SPACE);
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE,
                                                256 - MOAT_COMMAND_STATE_SIZE),
                     MOAT_OK);
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE, SIZE_MAX),
                     MOAT_ERR_SPACE);
    f->ram.fail_read = true;
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_ERR_IO);
    f->ram.fail_read = false;
    /* Erased flash (0xff) and zeroed files hold no counter. */
    memset(f->ram.bytes, 0xff, sizeof f->ram.bytes);
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_OK);
    assert_int_equal(moat_command_last_counter(&v), 0);
    memset(f->ram.bytes, 0, sizeof f->ram.bytes);
    assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_OK);
    assert_int_equal(moat_command_last_counter(&v), 0);
    /* A slot with one byte changed is not trusted; the other slot is. */
    assert_int_equal(moat_command_verifier_init(&f->v, ID, keys, 2, &f->st, MOAT_AREA_STATE, 0),
                     MOAT_OK);
    struct env e;
    sign_ok(f, 10, &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK); /* slot 0 */
    sign_ok(f, 11, &e);
    assert_int_equal(verify(f, &e), MOAT_CMD_OK); /* slot 1 */
    for (size_t i = 0; i < MOAT_COMMAND_STATE_SIZE / 2; i++) {
        f->ram.bytes[MOAT_COMMAND_STATE_SIZE / 2 + i] ^= 0x10;
        assert_int_equal(moat_command_verifier_init(&v, ID, keys, 1, &f->st, MOAT_AREA_STATE, 0),
                         MOAT_OK);
        assert_int_equal(moat_command_last_counter(&v), 10);
        f->ram.bytes[MOAT_COMMAND_STATE_SIZE / 2 + i] ^= 0x10;
    }
}

static void test_bad_arguments(void **state)
{
    struct fx *f = *state;
    struct env e;
    sign_ok(f, 60, &e);
    moat_command cmd;
    moat_command_reason why;
    const uint8_t *t = (const uint8_t *)e.topic;
    size_t tl = strlen(e.topic);
    assert_int_equal(
        moat_command_verify(NULL, &f->crypto, &fake_clock, t, tl, e.b, e.len, &cmd, &why),
        MOAT_ERR_ARG);
    assert_int_equal(moat_command_verify(&f->v, NULL, &fake_clock, t, tl, e.b, e.len, &cmd, &why),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_verify(&f->v, &f->crypto, NULL, t, tl, e.b, e.len, &cmd, &why),
                     MOAT_ERR_ARG);
    assert_int_equal(
        moat_command_verify(&f->v, &f->crypto, &fake_clock, t, tl, NULL, 5, &cmd, &why),
        MOAT_ERR_ARG);
    assert_int_equal(
        moat_command_verify(&f->v, &f->crypto, &fake_clock, t, tl, NULL, 0, &cmd, &why),
        MOAT_ERR_AUTH);
    assert_int_equal(why, MOAT_CMD_MALFORMED);
    assert_int_equal(
        moat_command_verify(&f->v, &f->crypto, &fake_clock, t, tl, e.b, e.len, &cmd, NULL),
        MOAT_OK);
}

static void test_sign_errors(void **state)
{
    struct fx *f = *state;
    uint8_t out[512];
    size_t n = 0;
    const uint8_t body[1] = {'x'};
    assert_int_equal(moat_command_sign(f->sk[0], "a/b", "set", 1, 2, body, 1, out, sizeof out, &n),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_sign(f->sk[0], ID, "", 1, 2, body, 1, out, sizeof out, &n),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_sign(f->sk[0], ID, "s#", 1, 2, body, 1, out, sizeof out, &n),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_sign(f->sk[0], ID, "set", 1, 2, NULL, 1, out, sizeof out, &n),
                     MOAT_ERR_ARG);
    assert_int_equal(moat_command_sign(f->sk[0], ID, "set", 1, 2, body, 1, out, 10, &n),
                     MOAT_ERR_SPACE);
    assert_int_equal(n, MOAT_COMMAND_ENVELOPE_SIZE(26, 3, 1));
    assert_int_equal(moat_command_sign(f->sk[0], ID, "set", 1, 2, body, 1, out, n, &n), MOAT_OK);
    assert_int_equal(n, MOAT_COMMAND_OVERHEAD + 26 + 3 + 1);
    /* Independent check with libsodium of what the signature covers. */
    assert_memory_equal(out, "moat command v1\0", 16);
    assert_memory_equal(out + 16, f->pk[0], 8);
    assert_int_equal(crypto_sign_verify_detached(out + n - 64, out, n - 64, f->pk[0]), 0);
}

static void test_reason_strings(void **state)
{
    (void)state;
    for (int a = MOAT_CMD_OK; a <= MOAT_CMD_STORAGE; a++) {
        const char *sa = moat_command_reason_str((moat_command_reason)a);
        assert_non_null(sa);
        assert_true(strlen(sa) > 0);
        for (int b = a + 1; b <= MOAT_CMD_STORAGE; b++)
            assert_string_not_equal(sa, moat_command_reason_str((moat_command_reason)b));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepts_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_bit_flip_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flip_reasons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_and_lower_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counter_zero_on_fresh_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_device_and_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_and_extended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counter_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_cut_at_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_failure_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_errors_and_fresh_areas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reason_strings, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
