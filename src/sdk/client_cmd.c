/*
 * client_cmd.c — messages from the hub: commands on moat/{id}/down/...
 *
 * Every command goes through the verifier (command.c): only one that is
 * well formed, for this device, signed by a trusted key, not expired, and
 * with a counter above every earlier one reaches on_command, and its counter
 * is stored before it does. Anything else is refused: on_rejected is told,
 * and a short report goes to the hub on moat/{id}/up/_rejected (QoS 0,
 * outside the queue and the shaper: a refusal is not a reading, and the
 * refused command itself already showed on the wire). Reports are rate
 * limited, so whoever can publish to the device's down topics cannot make
 * it flood the hub; the ones left out are counted.
 *
 * A message is acknowledged (PUBACK) only after it has been handled, and is
 * handled only when the output buffer has room for that PUBACK: the hub
 * redelivers what the device did not acknowledge, and a redelivered command
 * that was already accepted is refused as a replay, so a command acts at
 * most once.
 */
#include <string.h>

#include "client_int.h"

static void refill_reports(moat_client *c, uint64_t now)
{
    if (c->reject_refill_ms == 0)
        c->reject_refill_ms = now;
    while (c->reject_tokens < CLIENT_REJECT_BURST &&
           now - c->reject_refill_ms >= CLIENT_REJECT_INTERVAL_MS) {
        c->reject_tokens++;
        c->reject_refill_ms += CLIENT_REJECT_INTERVAL_MS;
    }
    if (c->reject_tokens == CLIENT_REJECT_BURST)
        c->reject_refill_ms = now;
}

/* Append s to out[*n..cap) as the inside of a JSON string; false when it
 * does not fit. Bytes that need escaping other than '"' and '\' (controls)
 * become '?': the report is for people and dashboards, not a transcript. */
static bool json_put(uint8_t *out, size_t cap, size_t *n, const uint8_t *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = s[i];
        bool esc = ch == '"' || ch == '\\';
        if (*n + (esc ? 2u : 1u) > cap)
            return false;
        if (esc)
            out[(*n)++] = '\\';
        out[(*n)++] = ch < 0x20 || ch == 0x7f ? '?' : ch;
    }
    return true;
}

static bool json_lit(uint8_t *out, size_t cap, size_t *n, const char *s)
{
    size_t len = strlen(s);
    if (*n + len > cap)
        return false;
    memcpy(out + *n, s, len);
    *n += len;
    return true;
}

/* {"reason":"replayed counter","topic":"moat/ID/down/NAME"} on
 * moat/{id}/up/_rejected, if the bucket and the output buffer allow. */
static void report(moat_client *c, codec_bytes topic, moat_command_reason why)
{
    refill_reports(c, client_now(c));
    uint8_t *out = c->work_buf;
    size_t cap = c->work_cap, n = 0;
    const char *word = moat_command_reason_str(why);
    bool ok = c->reject_tokens > 0 && json_lit(out, cap, &n, "{\"reason\":\"") &&
              json_put(out, cap, &n, (const uint8_t *)word, strlen(word)) &&
              json_lit(out, cap, &n, "\",\"topic\":\"") &&
              json_put(out, cap, &n, topic.ptr, topic.len) && json_lit(out, cap, &n, "\"}");
    if (ok) {
        size_t tl = client_topic(c, "up", (const uint8_t *)"_rejected", 9);
        codec_packet p = {.type = CODEC_PUBLISH};
        p.u.publish.qos = 0;
        p.u.publish.topic = (codec_bytes){(const uint8_t *)c->topic, tl};
        p.u.publish.payload = (codec_bytes){out, n};
        ok = tl > 0 && client_send_packet(c, &p) == MOAT_OK;
    }
    if (ok)
        c->reject_tokens--;
    else
        c->stats.rejections_unreported++;
}

static bool is_command_topic(moat_client *c, codec_bytes topic)
{
    size_t n = client_topic(c, "down", (const uint8_t *)"", 0);
    return n > 0 && topic.len > n && memcmp(topic.ptr, c->topic, n) == 0;
}

static void handle_command(moat_client *c, const codec_publish *p)
{
    moat_command cmd;
    moat_command_reason why = MOAT_CMD_UNKNOWN_KEY;
    moat_status st = MOAT_ERR_AUTH;
    memset(&cmd, 0, sizeof(cmd));
    /* No trusted key (or no crypto): every command is refused. */
    if (c->have_keys && c->have_crypto)
        st = moat_command_verify(&c->verifier, &c->crypto, &c->clock, p->topic.ptr, p->topic.len,
                                 p->payload.ptr, p->payload.len, &cmd, &why);
    if (st == MOAT_OK) {
        c->stats.commands_accepted++;
        if (c->on_command)
            c->on_command(c->user, &cmd);
        return;
    }
    c->stats.commands_rejected++;
    if (c->on_rejected) {
        moat_command_rejection r = {.topic = p->topic.ptr,
                                    .topic_len = p->topic.len,
                                    .reason = why,
                                    .status = st == MOAT_ERR_IO ? MOAT_ERR_IO : MOAT_ERR_AUTH};
        c->on_rejected(c->user, &r);
    }
    report(c, p->topic, why);
}

/* A message too large for rx_buf (client_io.c skips it): a command that
 * cannot be read is a malformed one, refused and reported like any other. */
void client_cmd_oversized(moat_client *c, codec_bytes topic)
{
    if (!is_command_topic(c, topic))
        return;
    c->stats.commands_rejected++;
    if (c->on_rejected) {
        moat_command_rejection r = {.topic = topic.ptr,
                                    .topic_len = topic.len,
                                    .reason = MOAT_CMD_MALFORMED,
                                    .status = MOAT_ERR_SPACE};
        c->on_rejected(c->user, &r);
    }
    report(c, topic, MOAT_CMD_MALFORMED);
}

moat_status client_cmd_publish(moat_client *c, const codec_publish *p)
{
    if (p->qos > 1 || p->topic.len == 0)
        return MOAT_ERR_PROTOCOL; /* subscribed at QoS 1; no topic aliases */
    if (p->qos == 1) {
        /* The PUBACK goes into the output buffer first, but leaves only
         * after the handling below (the buffer is written at the end of the
         * poll), so the order on the wire is still handle-then-acknowledge. */
        codec_packet ack = {.type = CODEC_PUBACK};
        ack.u.ack.packet_id = p->packet_id;
        moat_status st = client_send_packet(c, &ack);
        if (st != MOAT_OK)
            return st == MOAT_AGAIN ? MOAT_AGAIN : st;
    }
    if (is_command_topic(c, p->topic))
        handle_command(c, p);
    return MOAT_OK;
}
