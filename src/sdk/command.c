/*
 * command.c — verification of signed commands (include/moat/command.h).
 *
 * The checks run in the order command.h lists, cheapest and least
 * state-dependent first; nothing is written until every check has passed.
 * The last accepted counter lives in two slots of MOAT_COMMAND_STATE_SIZE / 2
 * bytes: {magic, generation, counter, CRC-32 of the first 20 bytes}. A new
 * counter always goes into the slot that is NOT the newest valid one, so a
 * power cut during the write can only spoil that slot: the previous counter
 * stays readable, and the newest valid slot wins when the verifier starts.
 * moat_command_verify returns MOAT_OK only after the write is synced.
 */
#include <string.h>

#include <moat/command.h>

#include "trust.h"

#define SLOT_SIZE (MOAT_COMMAND_STATE_SIZE / 2u)
#define SLOT_BODY 20u /* magic, generation, counter: what the CRC covers */

static const uint8_t slot_magic[4] = {'m', 'c', 'c', '1'};

const char *moat_command_reason_str(moat_command_reason r)
{
    switch (r) {
    case MOAT_CMD_OK:
        return "ok";
    case MOAT_CMD_MALFORMED:
        return "malformed envelope";
    case MOAT_CMD_WRONG_TOPIC:
        return "wrong topic";
    case MOAT_CMD_WRONG_DEVICE:
        return "wrong device";
    case MOAT_CMD_UNKNOWN_KEY:
        return "unknown key";
    case MOAT_CMD_BAD_SIGNATURE:
        return "bad signature";
    case MOAT_CMD_CLOCK_UNKNOWN:
        return "clock unknown";
    case MOAT_CMD_EXPIRED:
        return "expired";
    case MOAT_CMD_REPLAYED:
        return "replayed counter";
    case MOAT_CMD_STORAGE:
        return "counter not stored";
    }
    return "unknown reason";
}

bool moat_command_name_valid(const uint8_t *s, size_t len, size_t max)
{
    return moat_trust_level_valid(s, len, max);
}

/* CRC-32 (IEEE, reflected), bit by bit: 20 bytes do not need a table. */
static uint32_t crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* A slot's generation and counter, if its magic and CRC hold. */
static bool slot_read(const uint8_t *slot, uint64_t *gen, uint64_t *counter)
{
    rd r = rd_init(slot, SLOT_SIZE);
    codec_bytes magic = rd_bytes(&r, sizeof slot_magic);
    *gen = trust_rd_u64(&r);
    *counter = trust_rd_u64(&r);
    uint32_t crc = rd_u32(&r);
    return !r.failed && memcmp(magic.ptr, slot_magic, sizeof slot_magic) == 0 &&
           crc == crc32(slot, SLOT_BODY);
}

moat_status moat_command_verifier_init(moat_command_verifier *v, const char *device_id,
                                       const uint8_t (*keys)[32], unsigned nkeys,
                                       const moat_storage *st, unsigned area, size_t off)
{
    if (v == NULL || device_id == NULL || keys == NULL || st == NULL || nkeys == 0 ||
        nkeys > MOAT_COMMAND_MAX_KEYS)
        return MOAT_ERR_ARG;
    size_t id_len = strlen(device_id);
    if (!moat_trust_level_valid((const uint8_t *)device_id, id_len, MOAT_COMMAND_MAX_ID))
        return MOAT_ERR_ARG;
    memset(v, 0, sizeof *v);
    memcpy(v->keys, keys, (size_t)nkeys * 32u);
    v->nkeys = nkeys;
    memcpy(v->id, device_id, id_len);
    v->id_len = id_len;
    v->st = st;
    v->area = area;
    v->off = off;
    v->newest = 1; /* so that the first counter goes to slot 0 */

    size_t size = st->size(st->ctx, area);
    if (off > size || size - off < MOAT_COMMAND_STATE_SIZE)
        return MOAT_ERR_SPACE;
    uint8_t raw[MOAT_COMMAND_STATE_SIZE];
    if (st->read(st->ctx, area, off, raw, sizeof raw) != MOAT_OK)
        return MOAT_ERR_IO;
    for (unsigned i = 0; i < 2; i++) {
        uint64_t gen;
        uint64_t counter;
        if (slot_read(raw + i * SLOT_SIZE, &gen, &counter) && gen >= v->gen) {
            /* Equal generations cannot come from this code; if they do,
             * the higher counter is the safe side. */
            if (gen == v->gen && counter < v->last_counter)
                continue;
            v->gen = gen;
            v->last_counter = counter;
            v->newest = i;
        }
    }
    return MOAT_OK;
}

uint64_t moat_command_last_counter(const moat_command_verifier *v)
{
    return v->last_counter;
}

/* Write counter into the older slot and sync it. */
static moat_status counter_store(moat_command_verifier *v, uint64_t counter)
{
    uint8_t slot[SLOT_SIZE];
    unsigned target = v->newest ^ 1u;
    wr w = wr_init(slot, sizeof slot);
    wr_raw(&w, slot_magic, sizeof slot_magic);
    trust_wr_u64(&w, v->gen + 1);
    trust_wr_u64(&w, counter);
    wr_u32(&w, crc32(slot, SLOT_BODY));
    memset(slot + w.pos, 0, sizeof slot - w.pos);
    const moat_storage *st = v->st;
    if (st->write(st->ctx, v->area, v->off + target * SLOT_SIZE, slot, sizeof slot) != MOAT_OK ||
        st->sync(st->ctx, v->area) != MOAT_OK)
        return MOAT_ERR_IO;
    v->gen++;
    v->newest = target;
    v->last_counter = counter;
    return MOAT_OK;
}

/* The parsed envelope: views into the payload. */
typedef struct envelope {
    codec_bytes key_id, id, name, body, sig;
    uint64_t counter, expiry;
    size_t signed_len;
} envelope;

static bool envelope_parse(const uint8_t *p, size_t len, envelope *e)
{
    rd r = rd_init(p, len);
    codec_bytes domain = rd_bytes(&r, MOAT_COMMAND_DOMAIN_LEN);
    e->key_id = rd_bytes(&r, MOAT_COMMAND_KEY_ID_LEN);
    e->counter = trust_rd_u64(&r);
    e->expiry = trust_rd_u64(&r);
    e->id = rd_bytes(&r, rd_u8(&r));
    e->name = rd_bytes(&r, rd_u8(&r));
    e->body = rd_bytes(&r, rd_u32(&r));
    e->signed_len = r.pos;
    e->sig = rd_bytes(&r, MOAT_COMMAND_SIG_LEN);
    return !r.failed && rd_left(&r) == 0 &&
           memcmp(domain.ptr, MOAT_COMMAND_DOMAIN, MOAT_COMMAND_DOMAIN_LEN) == 0 &&
           moat_trust_level_valid(e->id.ptr, e->id.len, MOAT_COMMAND_MAX_ID) &&
           moat_trust_level_valid(e->name.ptr, e->name.len, MOAT_COMMAND_MAX_NAME);
}

/* Is topic exactly "moat/" id "/down/" name? */
static bool topic_matches(const moat_command_verifier *v, const uint8_t *t, size_t len,
                          codec_bytes name)
{
    rd r = rd_init(t, len);
    codec_bytes pre = rd_bytes(&r, 5);
    codec_bytes id = rd_bytes(&r, v->id_len);
    codec_bytes mid = rd_bytes(&r, 6);
    codec_bytes nm = rd_bytes(&r, name.len);
    return !r.failed && rd_left(&r) == 0 && memcmp(pre.ptr, "moat/", 5) == 0 &&
           memcmp(id.ptr, v->id, v->id_len) == 0 && memcmp(mid.ptr, "/down/", 6) == 0 &&
           memcmp(nm.ptr, name.ptr, name.len) == 0;
}

/* The trusted key that signed the envelope: *index, MOAT_CMD_OK, or why not. */
static moat_command_reason signer_find(const moat_command_verifier *v, const moat_crypto *crypto,
                                       const uint8_t *payload, const envelope *e, unsigned *index)
{
    moat_command_reason why = MOAT_CMD_UNKNOWN_KEY;
    for (unsigned i = 0; i < v->nkeys; i++) {
        if (memcmp(v->keys[i], e->key_id.ptr, MOAT_COMMAND_KEY_ID_LEN) != 0)
            continue;
        if (crypto->ed25519_verify(crypto->ctx, e->sig.ptr, payload, e->signed_len, v->keys[i])) {
            *index = i;
            return MOAT_CMD_OK;
        }
        why = MOAT_CMD_BAD_SIGNATURE;
    }
    return why;
}

static moat_command_reason check(moat_command_verifier *v, const moat_crypto *crypto,
                                 const moat_clock *clock, const uint8_t *topic, size_t topic_len,
                                 const uint8_t *payload, size_t len, moat_command *cmd)
{
    envelope e;
    if (!envelope_parse(payload, len, &e))
        return MOAT_CMD_MALFORMED;
    if (!topic_matches(v, topic, topic_len, e.name))
        return MOAT_CMD_WRONG_TOPIC;
    if (e.id.len != v->id_len || memcmp(e.id.ptr, v->id, v->id_len) != 0)
        return MOAT_CMD_WRONG_DEVICE;
    unsigned key = 0;
    moat_command_reason why = signer_find(v, crypto, payload, &e, &key);
    if (why != MOAT_CMD_OK)
        return why;
    uint64_t now = clock->unix_time(clock->ctx);
    if (now == 0)
        return MOAT_CMD_CLOCK_UNKNOWN;
    if (now >= e.expiry)
        return MOAT_CMD_EXPIRED;
    if (e.counter <= v->last_counter)
        return MOAT_CMD_REPLAYED;
    if (counter_store(v, e.counter) != MOAT_OK)
        return MOAT_CMD_STORAGE;
    cmd->name = e.name.ptr;
    cmd->name_len = e.name.len;
    cmd->body = e.body.ptr;
    cmd->body_len = e.body.len;
    cmd->counter = e.counter;
    cmd->expiry = e.expiry;
    cmd->key_index = key;
    return MOAT_CMD_OK;
}

moat_status moat_command_verify(moat_command_verifier *v, const moat_crypto *crypto,
                                const moat_clock *clock, const uint8_t *topic, size_t topic_len,
                                const uint8_t *payload, size_t len, moat_command *cmd,
                                moat_command_reason *why)
{
    moat_command_reason r = MOAT_CMD_MALFORMED;
    moat_status st = MOAT_ERR_ARG;
    if (v != NULL && crypto != NULL && clock != NULL && cmd != NULL &&
        (topic != NULL || topic_len == 0) && (payload != NULL || len == 0)) {
        memset(cmd, 0, sizeof *cmd);
        r = check(v, crypto, clock, topic, topic_len, payload, len, cmd);
        st = r == MOAT_CMD_OK ? MOAT_OK : r == MOAT_CMD_STORAGE ? MOAT_ERR_IO : MOAT_ERR_AUTH;
    }
    if (why != NULL)
        *why = r;
    return st;
}
