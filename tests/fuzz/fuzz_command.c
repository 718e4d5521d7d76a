/*
 * fuzz_command.c — libFuzzer target for libmoat's command verification
 * (src/sdk/command.c): the envelope parser, the topic check and the counter
 * store, run on whatever arrives on a device's down topics.
 *
 * A real Ed25519 signature is out of a fuzzer's reach, so the crypto table
 * here accepts a signature whose first byte is 0x01 (and checks that it is
 * asked about exactly the bytes before the signature, with a trusted key):
 * that lets inputs through to the clock, expiry, counter and storage code,
 * which is what the signature normally hides from a fuzzer.
 *
 * Input: byte 0 chooses the situation —
 *   bit 0     the device does not know the time (unix_time() == 0)
 *   bit 1     the storage write of the counter fails
 *   bit 2     the topic comes from the input (byte 1 = its length, then the
 *             topic, then the payload); otherwise it is built from the name
 *             the envelope carries (moat/dev-1/down/NAME), so that inputs
 *             reach the checks after the topic
 *   bits 3-4  the last counter already stored: none, 1000, 2^63, 2^64 - 2
 * the rest is the payload, copied to an exact-size heap buffer.
 *
 * Invariants: a refusal changes no state; an acceptance means every check
 * command.h lists holds (checked here independently), the counter rose, is
 * what a restarted verifier reads back, and the same input is then refused
 * as a replay.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moat/command.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define DEVICE "dev-1"
#define NOW    1700000000u

/* Two trusted keys; the fuzzer finds their key ids in the seeds. */
static const uint8_t keys[2][32] = {
    {0x4d, 0x6f, 0x61, 0x74, 0x4b, 0x65, 0x79, 0x31, 1, 2, 3, 4, 5, 6, 7, 8},
    {0x4d, 0x6f, 0x61, 0x74, 0x4b, 0x65, 0x79, 0x32, 8, 7, 6, 5, 4, 3, 2, 1},
};

struct world {
    uint8_t area[64];
    bool write_fails;
    bool clock_unknown;
    const uint8_t *payload;
    size_t payload_len;
    size_t verify_calls;
};

static struct world W;

static size_t st_size(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return sizeof W.area;
}

static moat_status st_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)area;
    CHECK(off <= sizeof W.area && len <= sizeof W.area - off);
    memcpy(buf, W.area + off, len);
    return MOAT_OK;
}

static moat_status st_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)area;
    CHECK(off <= sizeof W.area && len <= sizeof W.area - off);
    if (W.write_fails) {
        memcpy(W.area + off, buf, len / 2); /* torn */
        return MOAT_ERR_IO;
    }
    memcpy(W.area + off, buf, len);
    return MOAT_OK;
}

static moat_status st_sync(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return MOAT_OK;
}

static uint64_t now_ms(void *ctx)
{
    (void)ctx;
    return 0;
}

static uint64_t unix_time(void *ctx)
{
    (void)ctx;
    return W.clock_unknown ? 0 : NOW;
}

static void no_random(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    memset(buf, 0, len);
}

static bool fake_verify(void *ctx, const uint8_t sig[64], const uint8_t *msg, size_t len,
                        const uint8_t pk[32])
{
    (void)ctx;
    W.verify_calls++;
    /* Asked about the signed part of this very payload, with a trusted key. */
    CHECK(msg == W.payload && len + 64 == W.payload_len && sig == W.payload + len);
    CHECK(memcmp(pk, keys[0], 32) == 0 || memcmp(pk, keys[1], 32) == 0);
    CHECK(memcmp(pk, msg + MOAT_COMMAND_DOMAIN_LEN, MOAT_COMMAND_KEY_ID_LEN) == 0);
    return sig[0] == 0x01;
}

static const moat_storage storage = {NULL, st_size, st_read, st_write, st_sync};
static const moat_clock clock_ = {NULL, now_ms, unix_time, no_random};
static const moat_crypto crypto = {NULL, fake_verify};

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* The envelope's name and counter, read independently of command.c, for the
 * derived topic and for the checks after an acceptance. */
static bool peek_name(const uint8_t *p, size_t len, const uint8_t **name, size_t *name_len)
{
    size_t pos = MOAT_COMMAND_DOMAIN_LEN + MOAT_COMMAND_KEY_ID_LEN + 16;
    if (len < pos + 1 || len - pos - 1 < p[pos])
        return false;
    pos += 1 + p[pos];
    if (len < pos + 1 || len - pos - 1 < p[pos])
        return false;
    *name = p + pos + 1;
    *name_len = p[pos];
    return true;
}

static moat_status run(moat_command_verifier *v, const uint8_t *topic, size_t topic_len,
                       const uint8_t *payload, size_t len, moat_command *cmd,
                       moat_command_reason *why)
{
    W.payload = payload;
    W.payload_len = len;
    return moat_command_verify(v, &crypto, &clock_, topic, topic_len, payload, len, cmd, why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    memset(&W, 0, sizeof W);
    uint8_t mode = data[0];
    data++;
    size--;
    W.clock_unknown = mode & 1;
    static const uint64_t presets[4] = {0, 1000, (uint64_t)1 << 63, UINT64_MAX - 1};
    uint64_t preset = presets[(mode >> 3) & 3];

    moat_command_verifier v;
    CHECK(moat_command_verifier_init(&v, DEVICE, keys, 2, &storage, MOAT_AREA_STATE, 8) == MOAT_OK);
    CHECK(moat_command_last_counter(&v) == 0);
    if (preset) {
        /* Store the preset the honest way: a command that is accepted. */
        W.clock_unknown = false;
        uint8_t env[MOAT_COMMAND_OVERHEAD + 5 + 1];
        size_t n = 0;
        memcpy(env, MOAT_COMMAND_DOMAIN, MOAT_COMMAND_DOMAIN_LEN);
        n = MOAT_COMMAND_DOMAIN_LEN;
        memcpy(env + n, keys[0], 8);
        n += 8;
        for (int i = 7; i >= 0; i--)
            env[n++] = (uint8_t)(preset >> (8 * i));
        for (int i = 7; i >= 0; i--)
            env[n++] = (uint8_t)((uint64_t)(NOW + 10) >> (8 * i));
        env[n++] = 5;
        memcpy(env + n, DEVICE, 5);
        n += 5;
        env[n++] = 1;
        env[n++] = 'x';
        memset(env + n, 0, 4);
        n += 4;
        memset(env + n, 0x01, 64);
        n += 64;
        moat_command cmd;
        CHECK(run(&v, (const uint8_t *)"moat/" DEVICE "/down/x", 17, env, n, &cmd, NULL) ==
              MOAT_OK);
        CHECK(moat_command_last_counter(&v) == preset);
        W.clock_unknown = mode & 1;
    }
    W.write_fails = mode & 2;

    const uint8_t *topic_in = NULL;
    size_t topic_len = 0;
    if (mode & 4) {
        if (size < 1)
            return 0;
        topic_len = data[0];
        if (size - 1 < topic_len)
            return 0;
        topic_in = data + 1;
        data += 1 + topic_len;
        size -= 1 + topic_len;
    }
    uint8_t *payload = malloc(size ? size : 1);
    uint8_t *topic = malloc(topic_len + 80);
    CHECK(payload && topic);
    memcpy(payload, data, size);
    if (topic_in) {
        memcpy(topic, topic_in, topic_len);
    } else {
        const uint8_t *name;
        size_t nl;
        topic_len = 0;
        if (peek_name(payload, size, &name, &nl) && nl <= 64) {
            memcpy(topic, "moat/" DEVICE "/down/", 16);
            memcpy(topic + 16, name, nl);
            topic_len = 16 + nl;
        }
    }

    uint8_t before[sizeof W.area];
    memcpy(before, W.area, sizeof W.area);
    uint64_t last = moat_command_last_counter(&v);
    moat_command cmd;
    moat_command_reason why = MOAT_CMD_OK;
    W.verify_calls = 0;
    moat_status st = run(&v, topic, topic_len, payload, size, &cmd, &why);
    CHECK(moat_command_reason_str(why) != NULL);
    if (st != MOAT_OK) {
        CHECK(why != MOAT_CMD_OK);
        CHECK(st == (why == MOAT_CMD_STORAGE ? MOAT_ERR_IO : MOAT_ERR_AUTH));
        CHECK(moat_command_last_counter(&v) == last);
        if (why != MOAT_CMD_STORAGE)
            CHECK(memcmp(before, W.area, sizeof W.area) == 0);
        /* Whatever a failed write left behind, a restart never goes back. */
        moat_command_verifier again;
        W.write_fails = false;
        CHECK(moat_command_verifier_init(&again, DEVICE, keys, 2, &storage, MOAT_AREA_STATE, 8) ==
              MOAT_OK);
        CHECK(moat_command_last_counter(&again) == last);
    } else {
        CHECK(why == MOAT_CMD_OK);
        CHECK(!W.clock_unknown && !W.write_fails);
        CHECK(W.verify_calls >= 1);
        CHECK(size >= MOAT_COMMAND_OVERHEAD);
        CHECK(payload[size - 64] == 0x01);
        CHECK(memcmp(payload, MOAT_COMMAND_DOMAIN, MOAT_COMMAND_DOMAIN_LEN) == 0);
        uint64_t counter = be64(payload + 24);
        uint64_t expiry = be64(payload + 32);
        CHECK(cmd.counter == counter && cmd.expiry == expiry);
        CHECK(counter > last && expiry > NOW);
        CHECK(payload[40] == 5 && memcmp(payload + 41, DEVICE, 5) == 0);
        CHECK(cmd.name == payload + 47 && cmd.name_len == payload[46]);
        CHECK(topic_len == 16 + cmd.name_len && memcmp(topic, "moat/" DEVICE "/down/", 16) == 0 &&
              memcmp(topic + 16, cmd.name, cmd.name_len) == 0);
        CHECK(cmd.body >= payload && cmd.body + cmd.body_len == payload + size - 64);
        CHECK(moat_command_name_valid(cmd.name, cmd.name_len, MOAT_COMMAND_MAX_NAME));
        CHECK(moat_command_last_counter(&v) == counter);
        /* The same bytes again: a replay. */
        CHECK(run(&v, topic, topic_len, payload, size, &cmd, &why) == MOAT_ERR_AUTH &&
              why == MOAT_CMD_REPLAYED);
        /* After a restart the counter is still there. */
        moat_command_verifier again;
        CHECK(moat_command_verifier_init(&again, DEVICE, keys, 2, &storage, MOAT_AREA_STATE, 8) ==
              MOAT_OK);
        CHECK(moat_command_last_counter(&again) == counter);
        CHECK(run(&again, topic, topic_len, payload, size, &cmd, &why) == MOAT_ERR_AUTH &&
              why == MOAT_CMD_REPLAYED);
    }
    free(payload);
    free(topic);
    return 0;
}
