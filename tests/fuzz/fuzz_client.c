/*
 * fuzz_client.c — libFuzzer target: the libmoat client (src/sdk/client*.c)
 * fed whatever a hostile or broken hub could send.
 *
 * The input is the byte stream from the "hub". Its first byte picks the
 * setup: bit 0 MQTT 3.1.1 instead of 5, bit 1 shaper on, bit 2 prepend a
 * valid CONNACK (so that most inputs reach the online state), bits 3..5 the
 * chunk size in which bytes arrive, bit 6 a transport that takes 1 byte per
 * send. The client starts with readings queued and a trusted command key,
 * then is polled while the stream arrives, the clock moving on by a second
 * per poll (keep-alive, shaper slots, back-off all run).
 *
 * Invariants, beyond ASan/UBSan: everything the client writes decodes as
 * valid client-to-server packets; the queue never holds more than was put
 * in, and a record leaves it only after a PUBACK (so never while the stream
 * held no PUBACK at all); the client's state stays one of its states.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moat/moat.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fz {
    const uint8_t *in;
    size_t in_len, in_off, chunk;
    uint8_t pre[8];
    size_t pre_len, pre_off;
    uint8_t out[8192];
    size_t out_len;
    bool one_byte_sends;
    uint8_t version;
    uint64_t now;
    uint8_t area[MOAT_AREA_COUNT][8192];
} fz;

static fz F;

static moat_status t_connect(void *ctx, const char *host, uint16_t port)
{
    (void)ctx;
    (void)host;
    (void)port;
    return MOAT_OK;
}

static long t_send(void *ctx, const uint8_t *buf, size_t len)
{
    fz *f = ctx;
    size_t n = f->one_byte_sends && len > 1 ? 1 : len;
    CHECK(n <= sizeof(f->out) - f->out_len);
    memcpy(f->out + f->out_len, buf, n);
    f->out_len += n;
    return (long)n;
}

static long t_recv(void *ctx, uint8_t *buf, size_t cap)
{
    fz *f = ctx;
    if (f->pre_off < f->pre_len) {
        size_t n = f->pre_len - f->pre_off;
        n = n < cap ? n : cap;
        memcpy(buf, f->pre + f->pre_off, n);
        f->pre_off += n;
        return (long)n;
    }
    if (f->in_off >= f->in_len)
        return MOAT_ERR_CLOSED;
    size_t n = f->in_len - f->in_off;
    n = n < f->chunk ? n : f->chunk;
    n = n < cap ? n : cap;
    memcpy(buf, f->in + f->in_off, n);
    f->in_off += n;
    return (long)n;
}

/* A new connection starts a new byte stream: what the client had not
 * finished writing on the old one is gone with it. */
static void t_close(void *ctx)
{
    fz *f = ctx;
    f->out_len = 0;
    f->version = 0;
}

static uint64_t k_now(void *ctx)
{
    return ((fz *)ctx)->now;
}

static uint64_t k_unix(void *ctx)
{
    (void)ctx;
    return 1700000000u;
}

static void k_random(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    memset(buf, 0x5a, len);
}

static size_t s_size(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return sizeof(F.area[0]);
}

static moat_status s_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    fz *f = ctx;
    CHECK(area < MOAT_AREA_COUNT && off <= sizeof(f->area[0]) && len <= sizeof(f->area[0]) - off);
    memcpy(buf, f->area[area] + off, len);
    return MOAT_OK;
}

static moat_status s_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    fz *f = ctx;
    CHECK(area < MOAT_AREA_COUNT && off <= sizeof(f->area[0]) && len <= sizeof(f->area[0]) - off);
    memcpy(f->area[area] + off, buf, len);
    return MOAT_OK;
}

static moat_status s_sync(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return MOAT_OK;
}

/* No signature is ever valid: what is fuzzed is everything before it. */
static bool c_verify(void *ctx, const uint8_t sig[64], const uint8_t *msg, size_t len,
                     const uint8_t pk[32])
{
    (void)ctx;
    (void)sig;
    (void)msg;
    (void)len;
    (void)pk;
    return false;
}

/* Everything the client wrote must be valid client packets. */
static void check_output(fz *f)
{
    size_t off = 0;
    while (off < f->out_len) {
        codec_packet p;
        size_t used = 0;
        codec_decode_opts o = {.version = f->version, .sender = CODEC_FROM_CLIENT};
        codec_status cs = codec_decode(f->out + off, f->out_len - off, &o, &p, &used);
        if (cs == CODEC_NEED_MORE)
            break;
        CHECK(cs == CODEC_OK);
        if (p.type == CODEC_CONNECT)
            f->version = p.u.connect.protocol_version;
        off += used;
    }
    memmove(f->out, f->out + off, f->out_len - off);
    f->out_len -= off;
}

static bool has_puback_byte(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((d[i] & 0xf0) == 0x40)
            return true;
    }
    return false;
}

static moat_client C;
static uint8_t TX[512], RX[512], WORK[512];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t setup = data[0];
    memset(&F, 0, sizeof(F));
    F.in = data + 1;
    F.in_len = size - 1;
    F.chunk = (size_t)((setup >> 3) & 7) * 37 + 1;
    F.one_byte_sends = setup & 0x40;
    F.now = 1000;
    if (setup & 4) {
        /* CONNACK, accepted: MQTT 5 with an empty property block. */
        static const uint8_t v5[] = {0x20, 0x03, 0x00, 0x00, 0x00};
        static const uint8_t v311[] = {0x20, 0x02, 0x00, 0x00};
        const uint8_t *ca = (setup & 1) ? v311 : v5;
        F.pre_len = (setup & 1) ? sizeof(v311) : sizeof(v5);
        memcpy(F.pre, ca, F.pre_len);
    }

    moat_transport tr = {&F, t_connect, t_send, t_recv, t_close};
    moat_clock ck = {&F, k_now, k_unix, k_random};
    moat_storage st = {&F, s_size, s_read, s_write, s_sync};
    moat_crypto cr = {&F, c_verify};
    static const uint8_t keys[1][32] = {{1, 2, 3}};
    static const moat_endpoint ep[] = {{"hub", 8883}};
    moat_config cfg;
    moat_config_defaults(&cfg);
    cfg.device_id = "dev1";
    cfg.endpoints = ep;
    cfg.endpoint_count = 1;
    cfg.transport = &tr;
    cfg.clock = &ck;
    cfg.storage = &st;
    cfg.crypto = &cr;
    cfg.tx_buf = TX;
    cfg.tx_cap = sizeof(TX);
    cfg.rx_buf = RX;
    cfg.rx_cap = sizeof(RX);
    cfg.work_buf = WORK;
    cfg.work_cap = sizeof(WORK);
    cfg.protocol_version = (setup & 1) ? CODEC_V311 : CODEC_V5;
    cfg.keep_alive_s = 2;
    cfg.command_keys = keys;
    cfg.command_key_count = 1;
    if (setup & 2) {
        cfg.shaper_interval_ms = 1500;
        cfg.shaper_record_size = 128;
    }
    CHECK(moat_client_init(&C, &cfg) == MOAT_OK);
    const unsigned pushed = 5;
    for (unsigned i = 0; i < pushed; i++)
        CHECK(moat_publish(&C, i % 2 ? "a" : "b", (const uint8_t *)"12.5", 4, NULL) == MOAT_OK);
    moat_connect(&C);
    bool any_puback = has_puback_byte(F.in, F.in_len);
    for (int i = 0; i < 64; i++) {
        (void)moat_poll(&C);
        check_output(&F);
        moat_client_stats s;
        moat_client_get_stats(&C, &s);
        CHECK(s.queue.count <= pushed);
        CHECK(s.queue.count + s.records_sent + s.records_refused == pushed);
        if (!any_puback)
            CHECK(s.records_sent == 0);
        moat_state state = moat_client_state(&C);
        CHECK(state <= MOAT_STATE_ONLINE);
        (void)moat_next_deadline_ms(&C);
        F.now += 1000;
        if (F.in_off >= F.in_len && state == MOAT_STATE_WAITING)
            break;
    }
    moat_disconnect(&C);
    return 0;
}
