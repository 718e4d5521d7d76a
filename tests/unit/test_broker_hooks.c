/*
 * Unit tests for the broker's hooks toward the hub's monitor and its own
 * services (src/hub/broker.h): refusals as data (broker_config.refused),
 * PUBLISHes to "$" topics offered to the server (broker_config.request),
 * messages injected for one session only (broker_fwd.to), and the per
 * connection facts liveness needs (packets, session, clean disconnect).
 *
 * A small fake server: connections are opened with a principal, fed encoded
 * packets, and each loop pass ends as the server ends it (commit, then the
 * output of every dirty connection, then closes); what the broker sent is
 * decoded, so assertions are about packets on the wire.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

#define DEVICE_POLICY                                                                              \
    "allow connect\n"                                                                              \
    "allow publish moat/${device}/up/#\n"                                                          \
    "allow subscribe moat/${device}/down/#\n"                                                      \
    "allow receive moat/${device}/down/#\n"
#define SERVICE_POLICY "allow connect\nallow all #\nallow all $moat/#\n"
#define BLIND_POLICY   "allow connect\nallow publish #\nallow subscribe r/#\n"

typedef struct fconn {
    broker_conn *c;
    broker_principal who;
    uint8_t out[65536];
    size_t out_len, out_pos;
    bool closing;
} fconn;

typedef struct refusal_rec {
    broker_event ev;
    void *io;
    char topic[128];
    char reason[32];
} refusal_rec;

typedef struct fake {
    broker *b;
    uint64_t now;
    fconn conns[8];
    size_t nconns;
    refusal_rec refusals[16];
    size_t nrefusals;
    int answer;    /* what the request hook returns */
    size_t offers; /* how often it was called */
    char offered[128];
} fake;

static policy_set *policies_for(void *ctx, const broker_principal *who)
{
    (void)ctx;
    const char *text = who->kind == BROKER_DEVICE      ? DEVICE_POLICY
                       : strcmp(who->id, "blind") == 0 ? BLIND_POLICY
                                                       : SERVICE_POLICY;
    policy_doc *doc = NULL;
    char err[128];
    assert_int_equal(policy_parse(text, strlen(text), &doc, err, sizeof(err)), POLICY_OK);
    codec_bytes id = {(const uint8_t *)who->id, strlen(who->id)};
    policy_vars vars = {.device = who->kind == BROKER_DEVICE ? id : (codec_bytes){NULL, 0},
                        .service = who->kind == BROKER_SERVICE ? id : (codec_bytes){NULL, 0}};
    const policy_doc *docs[1] = {doc};
    policy_set *set = NULL;
    assert_int_equal(policy_set_build(docs, 1, &vars, &set), POLICY_OK);
    policy_doc_free(doc);
    return set;
}

static void on_refused(void *ctx, const broker_refusal *r)
{
    fake *f = ctx;
    assert_true(f->nrefusals < 16);
    refusal_rec *rec = &f->refusals[f->nrefusals++];
    rec->ev = r->ev;
    rec->io = r->io;
    snprintf(rec->topic, sizeof(rec->topic), "%.*s", (int)r->topic.len,
             r->topic.len ? (const char *)r->topic.ptr : "");
    snprintf(rec->reason, sizeof(rec->reason), "%s", r->reason);
}

static int on_request(void *ctx, const broker_request *r)
{
    fake *f = ctx;
    f->offers++;
    snprintf(f->offered, sizeof(f->offered), "%.*s", (int)r->topic.len, (const char *)r->topic.ptr);
    return f->answer;
}

static fake *fake_new(void)
{
    fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->now = 1000000;
    f->answer = BROKER_REQUEST_PASS;
    broker_config cfg = {.policies_for = policies_for,
                         .log_ctx = f,
                         .refused = on_refused,
                         .request = on_request,
                         .request_ctx = f};
    broker_limits_default(&cfg.limits);
    cfg.limits.max_publish_rate = 0;
    f->b = broker_new(&cfg, f->now);
    assert_non_null(f->b);
    return f;
}

static void fake_free(fake *f)
{
    broker_free(f->b);
    free(f);
}

/* End a loop pass as the server does. */
static void pass(fake *f)
{
    (void)broker_commit(f->b);
    broker_conn **list;
    size_t n = broker_dirty(f->b, &list);
    for (size_t i = 0; i < n; i++) {
        fconn *fc = broker_conn_io(list[i]);
        buf *out = broker_output(list[i]);
        if (out->len == 0)
            continue;
        assert_true(fc->out_len + out->len <= sizeof(fc->out));
        memcpy(fc->out + fc->out_len, buf_ptr(out), out->len);
        fc->out_len += out->len;
        buf_consume(out, out->len);
        broker_output_drained(f->b, list[i], f->now);
    }
    n = broker_closing(f->b, &list);
    for (size_t i = 0; i < n; i++)
        ((fconn *)broker_conn_io(list[i]))->closing = true;
}

static void feed(fake *f, fconn *fc, const uint8_t *bytes, size_t len)
{
    broker_input(f->b, fc->c, bytes, len, f->now);
    pass(f);
}

/* The next packet the broker sent fc (false when there is none). */
static bool next_packet(fconn *fc, codec_packet *p)
{
    if (fc->out_pos == fc->out_len)
        return false;
    codec_decode_opts o = {.version = CODEC_V5, .sender = CODEC_FROM_SERVER};
    size_t used = 0;
    assert_int_equal(codec_decode(fc->out + fc->out_pos, fc->out_len - fc->out_pos, &o, p, &used),
                     CODEC_OK);
    fc->out_pos += used;
    return true;
}

static void expect_packet(fconn *fc, uint8_t type, codec_packet *p)
{
    assert_true(next_packet(fc, p));
    assert_int_equal(p->type, type);
}

static fconn *open_as(fake *f, broker_kind kind, const char *id, const char *client_id)
{
    fconn *fc = &f->conns[f->nconns++];
    fc->who.kind = kind;
    snprintf(fc->who.id, sizeof(fc->who.id), "%s", id);
    fc->c = broker_conn_open(f->b, &fc->who, fc, f->now);
    assert_non_null(fc->c);
    codec_connect cn = {.protocol_version = CODEC_V5,
                        .clean_start = true,
                        .keep_alive = 60,
                        .client_id = {(const uint8_t *)client_id, strlen(client_id)}};
    uint8_t pkt[256];
    size_t n;
    assert_int_equal(codec_encode_connect(&cn, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(f, fc, pkt, n);
    return fc;
}

static fconn *connect_ok(fake *f, broker_kind kind, const char *id)
{
    fconn *fc = open_as(f, kind, id, id);
    codec_packet p;
    expect_packet(fc, CODEC_CONNACK, &p);
    assert_int_equal(p.u.connack.reason, 0);
    return fc;
}

static void publish(fake *f, fconn *fc, const char *topic, const char *payload, uint16_t pid)
{
    codec_publish pub = {.qos = pid ? 1 : 0,
                         .packet_id = pid,
                         .topic = {(const uint8_t *)topic, strlen(topic)},
                         .payload = {(const uint8_t *)payload, strlen(payload)}};
    uint8_t pkt[512];
    size_t n;
    assert_int_equal(codec_encode_publish(&pub, CODEC_V5, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(f, fc, pkt, n);
}

static uint8_t subscribe(fake *f, fconn *fc, const char *filter)
{
    codec_subscription s = {.filter = {(const uint8_t *)filter, strlen(filter)}, .qos = 1};
    codec_subscribe sub = {.packet_id = 7, .count = 1, .list = &s};
    uint8_t pkt[256];
    size_t n;
    assert_int_equal(codec_encode_subscribe(&sub, CODEC_V5, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(f, fc, pkt, n);
    codec_packet p;
    expect_packet(fc, CODEC_SUBACK, &p);
    assert_int_equal(p.u.suback.reasons.len, 1);
    return p.u.suback.reasons.ptr[0];
}

/* ---- refusals as data ----------------------------------------------------- */

static void test_refusals_carry_topic_reason_and_connection(void **state)
{
    (void)state;
    fake *f = fake_new();
    fconn *d = connect_ok(f, BROKER_DEVICE, "dev1");
    publish(f, d, "moat/dev2/up/temp", "forged", 1);
    codec_packet p;
    expect_packet(d, CODEC_PUBACK, &p);
    assert_int_equal(p.u.ack.reason, 0x87);
    assert_int_equal(f->nrefusals, 1);
    assert_int_equal(f->refusals[0].ev, BROKER_EV_REFUSED_PUBLISH);
    assert_ptr_equal(f->refusals[0].io, d);
    assert_string_equal(f->refusals[0].topic, "moat/dev2/up/temp");
    assert_string_equal(f->refusals[0].reason, "policy");

    assert_int_equal(subscribe(f, d, "moat/dev2/down/#"), 0x87);
    assert_int_equal(f->nrefusals, 2);
    assert_int_equal(f->refusals[1].ev, BROKER_EV_REFUSED_SUBSCRIBE);
    assert_string_equal(f->refusals[1].topic, "moat/dev2/down/#");
    assert_string_equal(f->refusals[1].reason, "policy");

    /* A client id that is not the certificate's. */
    fconn *x = open_as(f, BROKER_DEVICE, "dev3", "dev4");
    expect_packet(x, CODEC_CONNACK, &p);
    assert_int_equal(p.u.connack.reason, 0x85);
    assert_int_equal(f->refusals[f->nrefusals - 1].ev, BROKER_EV_REFUSED_CONNECT);
    assert_string_equal(f->refusals[f->nrefusals - 1].reason, "client_id");
    assert_ptr_equal(f->refusals[f->nrefusals - 1].io, x);
    fake_free(f);
}

/* ---- requests to the hub ---------------------------------------------------- */

static void test_dollar_publishes_are_offered_and_taken_or_refused(void **state)
{
    (void)state;
    fake *f = fake_new();
    fconn *s = connect_ok(f, BROKER_SERVICE, "ops");
    fconn *spy = connect_ok(f, BROKER_SERVICE, "spy");
    assert_int_equal(subscribe(f, spy, "$moat/#"), 1);
    codec_packet p;

    /* Taken: acknowledged as a success, routed to nobody. */
    f->answer = BROKER_REQUEST_TAKEN;
    publish(f, s, "$moat/telemetry/query", "{}", 1);
    assert_int_equal(f->offers, 1);
    assert_string_equal(f->offered, "$moat/telemetry/query");
    expect_packet(s, CODEC_PUBACK, &p);
    assert_int_equal(p.u.ack.reason, 0);
    assert_false(next_packet(spy, &p));

    /* Refused: the reason code, and a refusal record. */
    f->answer = 0x87;
    publish(f, s, "$moat/telemetry/query", "{}", 2);
    expect_packet(s, CODEC_PUBACK, &p);
    assert_int_equal(p.u.ack.reason, 0x87);
    assert_int_equal(f->refusals[f->nrefusals - 1].ev, BROKER_EV_REFUSED_PUBLISH);
    assert_false(next_packet(spy, &p));

    /* Passed: routed as any message. */
    f->answer = BROKER_REQUEST_PASS;
    publish(f, s, "$moat/other", "x", 3);
    expect_packet(spy, CODEC_PUBLISH, &p);
    assert_int_equal(p.u.publish.topic.len, strlen("$moat/other"));

    /* Topics not starting with '$' are never offered. */
    size_t offers = f->offers;
    publish(f, s, "plain/topic", "x", 4);
    assert_int_equal(f->offers, offers);
    fake_free(f);
}

/* ---- injected for one session ------------------------------------------------ */

static void inject_to(fake *f, const char *topic, const char *to)
{
    broker_fwd fw = {.topic = {(const uint8_t *)topic, strlen(topic)},
                     .payload = {(const uint8_t *)"answer", 6},
                     .qos = 1,
                     .flags = BROKER_FWD_ROUTE,
                     .to = {(const uint8_t *)to, to ? strlen(to) : 0}};
    (void)broker_inject(f->b, &fw, f->now);
    pass(f);
}

static void test_a_message_for_one_session_reaches_it_only(void **state)
{
    (void)state;
    fake *f = fake_new();
    fconn *a = connect_ok(f, BROKER_SERVICE, "alice");
    fconn *b = connect_ok(f, BROKER_SERVICE, "bob");
    fconn *blind = connect_ok(f, BROKER_SERVICE, "blind");
    assert_int_equal(subscribe(f, a, "r/#"), 1);
    assert_int_equal(subscribe(f, b, "r/#"), 1);
    assert_int_equal(subscribe(f, blind, "r/#"), 1);
    codec_packet p;

    inject_to(f, "r/x", "alice");
    expect_packet(a, CODEC_PUBLISH, &p);
    assert_memory_equal(p.u.publish.payload.ptr, "answer", 6);
    assert_false(next_packet(b, &p));

    /* Not subscribed to it, unknown, or not allowed to receive it: nobody. */
    inject_to(f, "q/x", "alice");
    inject_to(f, "r/x", "nobody");
    inject_to(f, "r/x", "blind");
    assert_false(next_packet(a, &p));
    assert_false(next_packet(b, &p));
    assert_false(next_packet(blind, &p));

    /* Without `to`: everyone who subscribed and may receive it. */
    inject_to(f, "r/y", NULL);
    expect_packet(a, CODEC_PUBLISH, &p);
    expect_packet(b, CODEC_PUBLISH, &p);
    assert_false(next_packet(blind, &p));
    fake_free(f);
}

/* ---- liveness facts ------------------------------------------------------------ */

static void test_connection_facts_for_liveness(void **state)
{
    (void)state;
    fake *f = fake_new();
    fconn *d = connect_ok(f, BROKER_DEVICE, "dev1");
    assert_true(broker_conn_has_session(d->c));
    assert_int_equal(broker_conn_take_packets(d->c), 0);
    publish(f, d, "moat/dev1/up/t", "1", 0);
    publish(f, d, "moat/dev1/up/t", "2", 0);
    assert_int_equal(broker_conn_take_packets(d->c), 2);
    assert_int_equal(broker_conn_take_packets(d->c), 0); /* counted once */
    publish(f, d, "moat/dev1/up/t", "3", 0);
    assert_int_equal(broker_conn_take_packets(d->c), 1);
    assert_false(broker_conn_clean(d->c));

    /* A second connection takes the session over: the first no longer has it. */
    fconn *d2 = connect_ok(f, BROKER_DEVICE, "dev1");
    assert_false(broker_conn_has_session(d->c));
    assert_true(broker_conn_has_session(d2->c));
    broker_conn_gone(f->b, d->c, f->now);

    /* DISCONNECT (no will asked for): clean. */
    codec_disconnect dc = {.reason = 0};
    uint8_t pkt[16];
    size_t n;
    assert_int_equal(codec_encode_disconnect(CODEC_DISCONNECT, &dc, CODEC_V5, pkt, sizeof(pkt), &n),
                     CODEC_OK);
    feed(f, d2, pkt, n);
    assert_true(broker_conn_clean(d2->c));
    assert_true(d2->closing);
    broker_conn_gone(f->b, d2->c, f->now);

    /* DISCONNECT asking for the will (0x04): not clean. */
    fconn *d3 = connect_ok(f, BROKER_DEVICE, "dev1");
    dc.reason = 0x04;
    assert_int_equal(codec_encode_disconnect(CODEC_DISCONNECT, &dc, CODEC_V5, pkt, sizeof(pkt), &n),
                     CODEC_OK);
    feed(f, d3, pkt, n);
    assert_false(broker_conn_clean(d3->c));
    fake_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals_carry_topic_reason_and_connection),
        cmocka_unit_test(test_dollar_publishes_are_offered_and_taken_or_refused),
        cmocka_unit_test(test_a_message_for_one_session_reaches_it_only),
        cmocka_unit_test(test_connection_facts_for_liveness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
