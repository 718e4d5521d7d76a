/*
 * device.c — the smallest device program that uses the whole libmoat client,
 * for scripts/footprint: init with the shaper and a trusted command key,
 * connect, publish, poll, wait, disconnect. Linked for a Cortex-M4 with
 * --gc-sections, it carries exactly the SDK code a real device would (the
 * shaper, the queue and the command verifier are chosen at run time, so the
 * linker keeps them), and its size minus that of empty.c is what a device
 * pays for libmoat (docs/sdk-footprint.md). The platform functions are
 * stubs: a real port's transport, clock, storage and Ed25519 come on top and
 * depend on the platform. It is compiled and linked, never run.
 */
#include <moat/moat.h>

static moat_status tr_connect(void *ctx, const char *host, uint16_t port)
{
    (void)ctx;
    (void)host;
    (void)port;
    return MOAT_AGAIN;
}

static long tr_send(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    return (long)len;
}

static long tr_recv(void *ctx, uint8_t *buf, size_t cap)
{
    (void)ctx;
    (void)buf;
    (void)cap;
    return 0;
}

static void tr_close(void *ctx)
{
    (void)ctx;
}

static volatile uint64_t ticks; /* a timer interrupt would advance it */

static uint64_t clk_now(void *ctx)
{
    (void)ctx;
    return ticks;
}

static uint64_t clk_unix(void *ctx)
{
    (void)ctx;
    return 0;
}

static void clk_random(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)ticks;
}

static uint8_t flash[2][8192];

static size_t st_size(void *ctx, unsigned area)
{
    (void)ctx;
    return area < 2 ? sizeof(flash[0]) : 0;
}

static moat_status st_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++)
        buf[i] = flash[area & 1][(off + i) % sizeof(flash[0])];
    return MOAT_OK;
}

static moat_status st_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++)
        flash[area & 1][(off + i) % sizeof(flash[0])] = buf[i];
    return MOAT_OK;
}

static moat_status st_sync(void *ctx, unsigned area)
{
    (void)ctx;
    (void)area;
    return MOAT_OK;
}

static bool cr_verify(void *ctx, const uint8_t sig[64], const uint8_t *msg, size_t len,
                      const uint8_t pk[32])
{
    (void)ctx;
    (void)sig;
    (void)msg;
    (void)len;
    (void)pk;
    return false;
}

static void on_command(void *user, const moat_command *cmd)
{
    (void)user;
    (void)cmd;
}

static const moat_transport transport = {NULL, tr_connect, tr_send, tr_recv, tr_close};
static const moat_clock clock_table = {NULL, clk_now, clk_unix, clk_random};
static const moat_storage storage = {NULL, st_size, st_read, st_write, st_sync};
static const moat_crypto crypto = {NULL, cr_verify};
static const uint8_t owner_key[1][32] = {{1}};
static const moat_endpoint hubs[] = {{"hub.example.com", 8883}};

static moat_client client;
static uint8_t tx[512], rx[512], work[512];

int main(void)
{
    moat_config cfg;
    moat_config_defaults(&cfg);
    cfg.device_id = "thermo-1";
    cfg.endpoints = hubs;
    cfg.endpoint_count = 1;
    cfg.transport = &transport;
    cfg.clock = &clock_table;
    cfg.storage = &storage;
    cfg.crypto = &crypto;
    cfg.tx_buf = tx;
    cfg.tx_cap = sizeof(tx);
    cfg.rx_buf = rx;
    cfg.rx_cap = sizeof(rx);
    cfg.work_buf = work;
    cfg.work_cap = sizeof(work);
    cfg.command_keys = owner_key;
    cfg.command_key_count = 1;
    cfg.on_command = on_command;
    cfg.shaper_interval_ms = 60000;
    cfg.shaper_record_size = 256;
    if (moat_client_init(&client, &cfg) != MOAT_OK)
        return 1;
    moat_connect(&client);
    while (moat_client_state(&client) != MOAT_STATE_STOPPED) {
        if ((uint32_t)ticks % 10000u == 0) /* 32-bit: the M4 divides that itself */
            moat_publish(&client, "temp", (const uint8_t *)"21.5", 4, NULL);
        moat_poll(&client);
        ticks += moat_next_deadline_ms(&client);
    }
    moat_disconnect(&client);
    return 0;
}
