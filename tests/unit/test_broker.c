/*
 * Unit tests for the broker (src/hub/broker.c, session.c, publish.c,
 * subscribe.c): the hub's MQTT logic driven as the server drives it, with
 * bytes in and bytes out.
 *
 * A small harness plays the server: it opens connections for principals,
 * feeds them packets built with the codec, ends each loop pass as the server
 * does (broker_commit, then broker_dirty and broker_output, then
 * broker_closing) and decodes every byte the broker sent, so each assertion is
 * about exact packets on the wire. Time is a fake clock moved by the test and
 * handed to broker_tick. Policies come from a table in the harness, built
 * with policy_parse and policy_set_build as the server builds them.
 *
 * Covered: CONNECT and CONNACK in both versions, identity (client id against
 * the certificate's principal), policy refusals, routing and QoS downgrade,
 * overlapping subscriptions, the QoS 1 and 2 flows both ways with resends on
 * session resume, receive maximum, retained messages and retain handling,
 * wills and will delay, keep-alive, CONNECT and session timeouts, offline
 * queues and their limits, message expiry, topic aliases both ways, messages
 * too large for the client, shared subscriptions, no-local,
 * re-authorization, shutdown, malformed input, and durability with the real
 * SQLite store (restart, merged deliveries, and a store whose begin, write or
 * commit fails: nothing it owed is acknowledged).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "store.h"
#include "store_sqlite.h"

#define DEVICE_POLICY                                                                              \
    "allow connect\n"                                                                              \
    "allow publish moat/${device}/up/#\n"                                                          \
    "allow subscribe moat/${device}/down/#\n"                                                      \
    "allow receive moat/${device}/down/#\n"
#define SERVICE_POLICY "allow connect\nallow all #\n"

/* ---- the harness ---------------------------------------------------------- */

typedef struct harness harness;

/* One connection as the test's fake server sees it. */
typedef struct tconn {
    harness *h;
    broker_conn *c; /* NULL once gone */
    broker_principal who;
    uint8_t version; /* the version its CONNECT asked for */
    uint8_t *out;    /* every byte the broker sent it */
    size_t out_len, out_cap;
    size_t out_pos; /* bytes of out already decoded by the test */
    bool closing;   /* listed by broker_closing */
    struct tconn *next;
} tconn;

#define MAX_OVERRIDES 8

struct harness {
    broker *b;
    broker_config cfg;
    uint64_t now;
    tconn *conns;
    struct {
        char id[64];
        const char *text; /* NULL: no policy at all */
    } policy[MAX_OVERRIDES];
    size_t npolicy;
    const char *revoked; /* principal id still_active says no to */
    unsigned events[BROKER_EV_STORE_FAILED + 1];
    char last_who[BROKER_EV_STORE_FAILED + 1][64]; /* the principal of each event's latest */
};

static policy_set *policies_for(void *ctx, const broker_principal *who)
{
    harness *h = ctx;
    const char *text = who->kind == BROKER_DEVICE ? DEVICE_POLICY : SERVICE_POLICY;
    for (size_t i = 0; i < h->npolicy; i++)
        if (strcmp(h->policy[i].id, who->id) == 0)
            text = h->policy[i].text;
    if (!text)
        return NULL;
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

static void set_policy(harness *h, const char *id, const char *text)
{
    for (size_t i = 0; i < h->npolicy; i++) {
        if (strcmp(h->policy[i].id, id) == 0) {
            h->policy[i].text = text;
            return;
        }
    }
    assert_true(h->npolicy < MAX_OVERRIDES);
    snprintf(h->policy[h->npolicy].id, sizeof(h->policy[0].id), "%s", id);
    h->policy[h->npolicy++].text = text;
}

static void log_event(void *ctx, broker_event ev, const broker_principal *who, const char *detail)
{
    harness *h = ctx;
    (void)detail;
    h->events[ev]++;
    snprintf(h->last_who[ev], sizeof(h->last_who[ev]), "%s", who ? who->id : "");
}

/* Limits for the tests: the defaults, with a few changed so that the values
 * the broker announces are visibly the configured ones, and no rate limit. */
static void test_limits(broker_limits *l)
{
    broker_limits_default(l);
    l->max_inflight = 10;
    l->topic_alias_maximum = 4;
    l->max_publish_rate = 0;
}

#define T0 1000000u /* the fake clock's start (ms) */

static harness *h_new_with(const broker_limits *lim, broker_store *st)
{
    harness *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    h->now = T0;
    if (lim)
        h->cfg.limits = *lim;
    else
        test_limits(&h->cfg.limits);
    h->cfg.store = st;
    h->cfg.log = log_event;
    h->cfg.log_ctx = h;
    h->cfg.policies_for = policies_for;
    h->cfg.policies_ctx = h;
    h->b = broker_new(&h->cfg, h->now);
    assert_non_null(h->b);
    return h;
}

static harness *h_new(void)
{
    return h_new_with(NULL, NULL);
}

static void forget_conns(harness *h)
{
    while (h->conns) {
        tconn *t = h->conns;
        h->conns = t->next;
        free(t->out);
        free(t);
    }
}

static void h_free(harness *h)
{
    broker_free(h->b);
    forget_conns(h);
    free(h);
}

/* broker_free and broker_new on the same store, as a restart of the hub
 * would (every connection is lost). */
static void h_restart(harness *h)
{
    broker_free(h->b);
    forget_conns(h);
    h->b = broker_new(&h->cfg, h->now);
    assert_non_null(h->b);
}

static void take_output(tconn *t, buf *o)
{
    size_t n = o->len;
    if (t->out_len + n > t->out_cap) {
        size_t cap = t->out_cap ? t->out_cap : 4096;
        while (cap < t->out_len + n)
            cap *= 2;
        uint8_t *p = realloc(t->out, cap);
        assert_non_null(p);
        t->out = p;
        t->out_cap = cap;
    }
    if (n)
        memcpy(t->out + t->out_len, buf_ptr(o), n);
    t->out_len += n;
    buf_consume(o, n);
}

/* End a loop pass as the server does: commit, hand out the output (and let
 * the broker refill what was drained), then note the connections to close.
 * Returns what every broker_commit of the pass returned. Views into a
 * tconn's output stay valid until the next pass. */
static bool pass(harness *h)
{
    bool ok = true;
    for (int round = 0; round < 1000; round++) {
        if (!broker_commit(h->b))
            ok = false;
        broker_conn **list;
        size_t n = broker_dirty(h->b, &list);
        if (n == 0)
            break;
        broker_conn *drained[256];
        assert_true(n <= 256);
        memcpy(drained, list, n * sizeof(*list));
        for (size_t i = 0; i < n; i++)
            take_output(broker_conn_io(drained[i]), broker_output(drained[i]));
        for (size_t i = 0; i < n; i++)
            broker_output_drained(h->b, drained[i], h->now);
    }
    broker_conn **list;
    size_t n = broker_closing(h->b, &list);
    for (size_t i = 0; i < n; i++) {
        tconn *t = broker_conn_io(list[i]);
        t->closing = true;
    }
    return ok;
}

/* Move the fake clock and run the timers. */
static void advance_to(harness *h, uint64_t at)
{
    assert_true(at >= h->now);
    h->now = at;
    (void)broker_tick(h->b, h->now);
    pass(h);
}

static void advance(harness *h, uint64_t ms)
{
    advance_to(h, h->now + ms);
}

static tconn *open_conn(harness *h, broker_kind kind, const char *id)
{
    tconn *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->h = h;
    t->who.kind = kind;
    snprintf(t->who.id, sizeof(t->who.id), "%s", id);
    t->c = broker_conn_open(h->b, &t->who, t, h->now);
    assert_non_null(t->c);
    t->next = h->conns;
    h->conns = t;
    return t;
}

/* The server saw the socket go (or closed it). */
static void gone(tconn *t)
{
    assert_non_null(t->c);
    broker_conn_gone(t->h->b, t->c, t->h->now);
    t->c = NULL;
    /* The server keeps the principal only as long as the connection: an
     * offline session that still read it would see this. */
    memset(&t->who, 0xA5, sizeof(t->who));
    pass(t->h);
}

static void input(tconn *t, const uint8_t *bytes, size_t n)
{
    assert_non_null(t->c);
    broker_input(t->h->b, t->c, bytes, n, t->h->now);
}

static void feed(tconn *t, const uint8_t *bytes, size_t n)
{
    input(t, bytes, n);
    pass(t->h);
}

/* ---- packets in ------------------------------------------------------------ */

static codec_bytes str(const char *s)
{
    return (codec_bytes){(const uint8_t *)s, strlen(s)};
}

static bool bytes_is(codec_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.ptr, s, n) == 0);
}

#define assert_bytes(b, s)                                                                         \
    do {                                                                                           \
        codec_bytes b_ = (b);                                                                      \
        if (!bytes_is(b_, s))                                                                      \
            fail_msg("got '%.*s', want '%s'", (int)b_.len, (const char *)b_.ptr, s);               \
    } while (0)

/* A CONNECT with the usual choices: clean start, keep alive 1000 s (longer
 * than any test runs its clock, below the maximum). */
static codec_connect connect_pkt(uint8_t version, const char *client_id)
{
    codec_connect c = {.protocol_version = version,
                       .clean_start = true,
                       .keep_alive = 1000,
                       .client_id = str(client_id)};
    return c;
}

/* Encode a CONNECT (the tconn remembers its version for decoding). */
static void send_connect(tconn *t, const codec_connect *c)
{
    uint8_t pkt[1024];
    size_t n;
    assert_int_equal(codec_encode_connect(c, pkt, sizeof(pkt), &n), CODEC_OK);
    t->version = c->protocol_version;
    feed(t, pkt, n);
}

static void send_publish(tconn *t, const codec_publish *p)
{
    uint8_t pkt[4096];
    size_t n;
    assert_int_equal(codec_encode_publish(p, t->version, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(t, pkt, n);
}

static void publish(tconn *t, const char *topic, const char *payload, uint8_t qos, bool retain,
                    uint16_t id)
{
    codec_publish p = {.qos = qos,
                       .retain = retain,
                       .topic = str(topic),
                       .packet_id = qos ? id : 0,
                       .payload = str(payload)};
    send_publish(t, &p);
}

static void send_ack(tconn *t, uint8_t type, uint16_t id, uint8_t reason)
{
    codec_ack a = {.packet_id = id, .reason = reason};
    uint8_t pkt[64];
    size_t n;
    assert_int_equal(codec_encode_ack(type, &a, t->version, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(t, pkt, n);
}

static void send_subscribe(tconn *t, uint16_t id, const codec_subscription *list, size_t count,
                           uint32_t sub_id)
{
    codec_subscribe s = {.packet_id = id, .count = count, .list = list};
    if (sub_id) {
        s.props.sub_ids = &sub_id;
        s.props.sub_ids_len = 1;
    }
    uint8_t pkt[2048];
    size_t n;
    assert_int_equal(codec_encode_subscribe(&s, t->version, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(t, pkt, n);
}

static void send_unsubscribe(tconn *t, uint16_t id, const char *filter)
{
    codec_bytes f = str(filter);
    codec_unsubscribe u = {.packet_id = id, .count = 1, .list = &f};
    uint8_t pkt[512];
    size_t n;
    assert_int_equal(codec_encode_unsubscribe(&u, t->version, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(t, pkt, n);
}

static void send_disconnect(tconn *t, uint8_t reason)
{
    codec_disconnect d = {.reason = reason};
    uint8_t pkt[64];
    size_t n;
    assert_int_equal(
        codec_encode_disconnect(CODEC_DISCONNECT, &d, t->version, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(t, pkt, n);
}

static void send_ping(tconn *t)
{
    uint8_t pkt[2];
    size_t n;
    assert_int_equal(codec_encode_ping(CODEC_PINGREQ, pkt, sizeof(pkt), &n), CODEC_OK);
    feed(t, pkt, n);
}

/* ---- packets out ----------------------------------------------------------- */

/* Decode the next packet the broker sent t; false when there is none. Every
 * byte must decode as a server packet of t's version. */
static bool next_packet(tconn *t, codec_packet *p)
{
    if (t->out_pos == t->out_len)
        return false;
    codec_decode_opts o = {.version = t->version, .sender = CODEC_FROM_SERVER};
    size_t used;
    codec_status st = codec_decode(t->out + t->out_pos, t->out_len - t->out_pos, &o, p, &used);
    if (st != CODEC_OK)
        fail_msg("output does not decode: %s", codec_status_name(st));
    t->out_pos += used;
    return true;
}

static codec_packet expect_packet(tconn *t, uint8_t type)
{
    codec_packet p;
    if (!next_packet(t, &p))
        fail_msg("expected %s, got nothing", codec_packet_name(type));
    if (p.type != type)
        fail_msg("expected %s, got %s", codec_packet_name(type), codec_packet_name(p.type));
    return p;
}

static void expect_nothing(tconn *t)
{
    codec_packet p;
    if (next_packet(t, &p))
        fail_msg("expected nothing, got %s", codec_packet_name(p.type));
}

static codec_connack expect_connack(tconn *t, uint8_t reason, bool session_present)
{
    codec_packet p = expect_packet(t, CODEC_CONNACK);
    assert_int_equal(p.u.connack.reason, reason);
    assert_int_equal(p.u.connack.session_present, session_present);
    return p.u.connack;
}

static void expect_ack(tconn *t, uint8_t type, uint16_t id, uint8_t reason)
{
    codec_packet p = expect_packet(t, type);
    assert_int_equal(p.u.ack.packet_id, id);
    assert_int_equal(p.u.ack.reason, reason);
}

static codec_publish expect_publish(tconn *t, const char *topic, const char *payload, uint8_t qos,
                                    bool retain)
{
    codec_packet p = expect_packet(t, CODEC_PUBLISH);
    assert_bytes(p.u.publish.topic, topic);
    assert_bytes(p.u.publish.payload, payload);
    assert_int_equal(p.u.publish.qos, qos);
    assert_int_equal(p.u.publish.retain, retain);
    assert_false(p.u.publish.dup);
    return p.u.publish;
}

static void expect_suback(tconn *t, uint16_t id, const uint8_t *reasons, size_t n)
{
    codec_packet p = expect_packet(t, CODEC_SUBACK);
    assert_int_equal(p.u.suback.packet_id, id);
    assert_int_equal(p.u.suback.reasons.len, n);
    assert_memory_equal(p.u.suback.reasons.ptr, reasons, n);
}

static void expect_disconnect(tconn *t, uint8_t reason)
{
    codec_packet p = expect_packet(t, CODEC_DISCONNECT);
    assert_int_equal(p.u.disconnect.reason, reason);
}

/* The subscription identifiers a PUBLISH carries, in order. */
static size_t sub_ids_of(const codec_publish *p, uint32_t *ids, size_t max)
{
    size_t pos = 0, n = 0;
    codec_prop prop;
    while (codec_props_next(p->props.raw, &pos, &prop))
        if (prop.id == CODEC_PROP_SUBSCRIPTION_ID && n < max)
            ids[n++] = prop.num;
    return n;
}

/* ---- conveniences ---------------------------------------------------------- */

/* Subscribe to one filter and check the SUBACK's one code. */
static void subscribe(tconn *t, const char *filter, uint8_t qos, uint32_t sub_id, uint8_t want)
{
    codec_subscription e = {.filter = str(filter), .qos = qos};
    send_subscribe(t, 77, &e, 1, sub_id);
    expect_suback(t, 77, &want, 1);
}

static void subscribe_opts(tconn *t, const codec_subscription *e, uint8_t want)
{
    send_subscribe(t, 78, e, 1, 0);
    expect_suback(t, 78, &want, 1);
}

/* A connected client: open, CONNECT, CONNACK 0. persistent: clean start off
 * and (MQTT 5) a session expiry of one hour. */
static tconn *join_as(harness *h, broker_kind kind, const char *principal, const char *client_id,
                      uint8_t version, bool persistent, bool session_present)
{
    tconn *t = open_conn(h, kind, principal);
    codec_connect c = connect_pkt(version, client_id);
    if (persistent) {
        c.clean_start = false;
        if (version == CODEC_V5) {
            CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
            c.props.session_expiry = 3600;
        }
    }
    send_connect(t, &c);
    expect_connack(t, 0, session_present);
    return t;
}

static tconn *join(harness *h, broker_kind kind, const char *id, uint8_t version)
{
    return join_as(h, kind, id, id, version, false, false);
}

static tconn *device(harness *h, uint8_t version)
{
    return join(h, BROKER_DEVICE, "dev1", version);
}

static tconn *service(harness *h, uint8_t version)
{
    return join(h, BROKER_SERVICE, "svc", version);
}

static broker_stats stats(harness *h)
{
    broker_stats s;
    broker_get_stats(h->b, &s);
    return s;
}

static bool still_active(void *ctx, const broker_principal *who, void *io)
{
    harness *h = ctx;
    (void)io;
    return !h->revoked || strcmp(who->id, h->revoked) != 0;
}

/* ---- CONNECT ----------------------------------------------------------------- */

static void test_connect_v311(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *t = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V311, "dev1");
    uint8_t pkt[256];
    size_t n;
    assert_int_equal(codec_encode_connect(&c, pkt, sizeof(pkt), &n), CODEC_OK);
    t->version = CODEC_V311;
    /* One byte at a time: the broker reassembles the packet. */
    for (size_t i = 0; i < n; i++) {
        input(t, pkt + i, 1);
        pass(h);
        if (i + 1 < n)
            expect_nothing(t);
    }
    codec_connack a = expect_connack(t, 0, false);
    assert_int_equal(a.props.present, 0);
    expect_nothing(t);
    assert_false(t->closing);
    send_ping(t);
    expect_packet(t, CODEC_PINGRESP);
    expect_nothing(t);
    assert_int_equal(stats(h).connections, 1);
    assert_int_equal(stats(h).sessions, 1);
    assert_int_equal(h->events[BROKER_EV_CONNECTED], 1);

    /* An empty client id with a clean session: the device's id is used. */
    tconn *u = open_conn(h, BROKER_DEVICE, "dev2");
    c = connect_pkt(CODEC_V311, "");
    send_connect(u, &c);
    expect_connack(u, 0, false);
    expect_nothing(u);
    subscribe(u, "moat/dev2/down/#", 0, 0, 0);
    tconn *s = service(h, CODEC_V311);
    publish(s, "moat/dev2/down/x", "hi", 0, false, 0);
    expect_publish(u, "moat/dev2/down/x", "hi", 0, false);

    /* An empty client id with clean session off is refused ([MQTT-3.1.3-8]). */
    tconn *w = open_conn(h, BROKER_DEVICE, "dev3");
    c = connect_pkt(CODEC_V311, "");
    c.clean_start = false;
    send_connect(w, &c);
    expect_connack(w, 0x02, false);
    expect_nothing(w);
    assert_true(w->closing);
    h_free(h);
}

static void test_connect_v5_properties(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *t = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    send_connect(t, &c);
    codec_connack a = expect_connack(t, 0, false);
    assert_true(CODEC_HAS(&a.props, CODEC_PROP_RECEIVE_MAXIMUM));
    assert_int_equal(a.props.receive_maximum, 10);
    assert_true(CODEC_HAS(&a.props, CODEC_PROP_MAXIMUM_PACKET_SIZE));
    assert_int_equal(a.props.maximum_packet_size, 262144);
    assert_true(CODEC_HAS(&a.props, CODEC_PROP_TOPIC_ALIAS_MAXIMUM));
    assert_int_equal(a.props.topic_alias_maximum, 4);
    assert_false(CODEC_HAS(&a.props, CODEC_PROP_ASSIGNED_CLIENT_ID));
    assert_false(CODEC_HAS(&a.props, CODEC_PROP_SERVER_KEEP_ALIVE));
    assert_false(CODEC_HAS(&a.props, CODEC_PROP_SESSION_EXPIRY));
    expect_nothing(t);
    assert_false(t->closing);

    /* Empty client id: assigned, and it is the device id. Keep alive 0 and
     * a session expiry above the maximum are answered with the server's. */
    tconn *u = open_conn(h, BROKER_DEVICE, "dev2");
    c = connect_pkt(CODEC_V5, "");
    c.keep_alive = 0;
    CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
    c.props.session_expiry = 10000000;
    send_connect(u, &c);
    a = expect_connack(u, 0, false);
    assert_true(CODEC_HAS(&a.props, CODEC_PROP_ASSIGNED_CLIENT_ID));
    assert_bytes(a.props.assigned_client_id, "dev2");
    assert_true(CODEC_HAS(&a.props, CODEC_PROP_SERVER_KEEP_ALIVE));
    assert_int_equal(a.props.server_keep_alive, 3600);
    assert_true(CODEC_HAS(&a.props, CODEC_PROP_SESSION_EXPIRY));
    assert_int_equal(a.props.session_expiry, 604800);
    assert_int_equal(a.props.receive_maximum, 10);
    expect_nothing(u);
    h_free(h);
}

static void test_connect_identity(void **state)
{
    (void)state;
    harness *h = h_new();
    /* A device naming another device's client id (MQTT 5, then 3.1.1). */
    tconn *t = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev2");
    send_connect(t, &c);
    codec_connack a = expect_connack(t, 0x85, false);
    assert_int_equal(a.props.present, (uint64_t)1 << CODEC_PROP_REASON_STRING);
    assert_bytes(a.props.reason_string, "client identifier not valid for this identity");
    expect_nothing(t);
    assert_true(t->closing);
    send_ping(t); /* nothing is read after a refused CONNECT */
    expect_nothing(t);

    tconn *u = open_conn(h, BROKER_DEVICE, "dev1");
    c = connect_pkt(CODEC_V311, "dev1/x");
    send_connect(u, &c);
    expect_connack(u, 0x02, false);
    expect_nothing(u);
    assert_true(u->closing);

    /* Services: NAME and NAME/anything, not NAMEsuffix nor NAME/ alone. */
    tconn *s1 = join_as(h, BROKER_SERVICE, "svc", "svc/worker-1", CODEC_V5, false, false);
    assert_false(s1->closing);
    tconn *s2 = open_conn(h, BROKER_SERVICE, "svc");
    c = connect_pkt(CODEC_V5, "svcx");
    send_connect(s2, &c);
    expect_connack(s2, 0x85, false);
    assert_true(s2->closing);
    tconn *s3 = open_conn(h, BROKER_SERVICE, "svc");
    c = connect_pkt(CODEC_V5, "svc/");
    send_connect(s3, &c);
    expect_connack(s3, 0x85, false);
    assert_true(s3->closing);
    /* A device may not use a service's name either. */
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    c = connect_pkt(CODEC_V5, "svc");
    send_connect(d, &c);
    expect_connack(d, 0x85, false);

    /* A principal without the connect right, and a will topic the policy
     * does not allow. */
    set_policy(h, "dev9", "allow publish moat/${device}/up/#\n");
    tconn *n = open_conn(h, BROKER_DEVICE, "dev9");
    c = connect_pkt(CODEC_V5, "dev9");
    send_connect(n, &c);
    expect_connack(n, 0x87, false);
    assert_true(n->closing);
    tconn *w = open_conn(h, BROKER_DEVICE, "dev1");
    c = connect_pkt(CODEC_V311, "dev1");
    c.will_flag = true;
    c.will_topic = str("moat/dev2/up/status");
    c.will_payload = str("x");
    send_connect(w, &c);
    expect_connack(w, 0x05, false);
    assert_true(w->closing);

    assert_int_equal(stats(h).sessions, 1); /* only svc/worker-1 */
    assert_int_equal(h->events[BROKER_EV_CONNECTED], 1);
    h_free(h);
}

/* ---- policy refusals --------------------------------------------------------- */

static void test_publish_refused_v5(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "#", 2, 0, 2);
    tconn *d = device(h, CODEC_V5);
    publish(d, "moat/dev2/up/x", "no", 1, false, 5);
    expect_ack(d, CODEC_PUBACK, 5, 0x87);
    publish(d, "moat/dev1/down/x", "no", 2, false, 6);
    expect_ack(d, CODEC_PUBREC, 6, 0x87);
    publish(d, "moat/dev2/up/x", "no", 0, false, 0); /* QoS 0: nothing to answer */
    expect_nothing(d);
    assert_false(d->closing);
    expect_nothing(s);
    publish(d, "moat/dev1/up/x", "yes", 1, false, 7);
    expect_ack(d, CODEC_PUBACK, 7, 0);
    expect_nothing(d);
    codec_publish p = expect_publish(s, "moat/dev1/up/x", "yes", 1, false);
    assert_int_not_equal(p.packet_id, 0);
    expect_nothing(s);
    assert_int_equal(h->events[BROKER_EV_REFUSED_PUBLISH], 3);
    h_free(h);
}

static void test_publish_refused_v311(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "#", 1, 0, 1);
    tconn *d = device(h, CODEC_V311);
    publish(d, "moat/dev2/up/x", "no", 1, false, 5);
    expect_nothing(d); /* no PUBACK: the connection is closed instead */
    assert_true(d->closing);
    expect_nothing(s);

    tconn *e = join(h, BROKER_DEVICE, "dev3", CODEC_V311);
    publish(e, "moat/dev1/up/x", "no", 0, false, 0);
    expect_nothing(e);
    assert_true(e->closing);
    expect_nothing(s);
    assert_false(s->closing);
    h_free(h);
}

static void test_subscribe_refused(void **state)
{
    (void)state;
    harness *h = h_new();
    codec_subscription list[4] = {
        {.filter = str("moat/dev2/down/#"), .qos = 1},
        {.filter = str("moat/dev1/down/#"), .qos = 1},
        {.filter = str("moat/dev1/up/#"), .qos = 0},
        {.filter = str("moat/dev1/#/down"), .qos = 0},
    };
    tconn *d = device(h, CODEC_V5);
    send_subscribe(d, 9, list, 4, 0);
    const uint8_t want5[4] = {0x87, 0x01, 0x87, 0x8F};
    expect_suback(d, 9, want5, 4);
    expect_nothing(d);
    assert_false(d->closing);

    tconn *e = join(h, BROKER_DEVICE, "dev1", CODEC_V311); /* takes the session over */
    send_subscribe(e, 10, list, 4, 0);
    const uint8_t want3[4] = {0x80, 0x01, 0x80, 0x80};
    expect_suback(e, 10, want3, 4);
    expect_nothing(e);
    assert_int_equal(stats(h).subscriptions, 1);

    /* Only the granted filter delivers. */
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev2/down/x", "a", 0, false, 0);
    publish(s, "moat/dev1/down/x", "b", 0, false, 0);
    expect_publish(e, "moat/dev1/down/x", "b", 0, false);
    expect_nothing(e);
    h_free(h);
}

/* ---- routing -------------------------------------------------------------------- */

static void test_routing_qos_downgrade(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s1 = service(h, CODEC_V5);
    subscribe(s1, "moat/+/up/#", 1, 0, 1);
    tconn *s0 = join_as(h, BROKER_SERVICE, "svc", "svc/zero", CODEC_V311, false, false);
    subscribe(s0, "moat/dev1/up/temp", 0, 0, 0);
    tconn *d = device(h, CODEC_V5);

    publish(d, "moat/dev1/up/temp", "21", 2, false, 1);
    expect_ack(d, CODEC_PUBREC, 1, 0);
    codec_publish p = expect_publish(s1, "moat/dev1/up/temp", "21", 1, false);
    assert_int_not_equal(p.packet_id, 0);
    expect_publish(s0, "moat/dev1/up/temp", "21", 0, false);
    send_ack(d, CODEC_PUBREL, 1, 0);
    expect_ack(d, CODEC_PUBCOMP, 1, 0);

    publish(d, "moat/dev1/up/temp", "22", 0, false, 0);
    expect_publish(s1, "moat/dev1/up/temp", "22", 0, false);
    expect_publish(s0, "moat/dev1/up/temp", "22", 0, false);

    publish(d, "moat/dev1/up/hum", "50", 1, false, 2);
    expect_ack(d, CODEC_PUBACK, 2, 0);
    expect_publish(s1, "moat/dev1/up/hum", "50", 1, false);
    expect_nothing(s0);

    /* Nobody subscribed: MQTT 5 says so (0x10). */
    publish(s1, "nobody/here", "x", 1, false, 3);
    expect_ack(s1, CODEC_PUBACK, 3, 0x10);
    expect_nothing(s1);
    expect_nothing(d);
    h_free(h);
}

static void test_overlapping_subscriptions(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "moat/#", 0, 1, 0);
    subscribe(s, "moat/dev1/up/+", 1, 2, 1);
    tconn *o = join_as(h, BROKER_SERVICE, "svc", "svc/old", CODEC_V311, false, false);
    subscribe(o, "moat/#", 1, 0, 1);
    subscribe(o, "moat/+/up/t", 0, 0, 0);
    tconn *d = device(h, CODEC_V5);

    publish(d, "moat/dev1/up/t", "x", 1, false, 3);
    expect_ack(d, CODEC_PUBACK, 3, 0);
    codec_publish p = expect_publish(s, "moat/dev1/up/t", "x", 1, false);
    uint32_t ids[8];
    size_t n = sub_ids_of(&p, ids, 8);
    assert_int_equal(n, 2);
    assert_true((ids[0] == 1 && ids[1] == 2) || (ids[0] == 2 && ids[1] == 1));
    expect_nothing(s);
    expect_publish(o, "moat/dev1/up/t", "x", 1, false);
    expect_nothing(o);

    /* Only one of them matches: one identifier. */
    publish(d, "moat/dev1/up/a/b", "y", 1, false, 4);
    expect_ack(d, CODEC_PUBACK, 4, 0);
    p = expect_publish(s, "moat/dev1/up/a/b", "y", 0, false);
    n = sub_ids_of(&p, ids, 8);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    expect_nothing(s);
    expect_publish(o, "moat/dev1/up/a/b", "y", 1, false);
    expect_nothing(o);
    h_free(h);
}

/* ---- QoS flows --------------------------------------------------------------------- */

static void test_qos1_flows(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device(h, CODEC_V5);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    tconn *s = service(h, CODEC_V311);
    subscribe(s, "moat/+/up/#", 1, 0, 1);

    publish(s, "moat/dev1/down/cmd", "go", 1, false, 11);
    expect_ack(s, CODEC_PUBACK, 11, 0);
    codec_publish p = expect_publish(d, "moat/dev1/down/cmd", "go", 1, false);
    uint16_t id = p.packet_id;
    assert_int_not_equal(id, 0);
    send_ack(d, CODEC_PUBACK, id, 0);
    expect_nothing(d);
    send_ack(d, CODEC_PUBACK, id, 0); /* again: unknown now, ignored */
    expect_nothing(d);
    assert_false(d->closing);

    publish(d, "moat/dev1/up/ack", "done", 1, false, 1);
    expect_ack(d, CODEC_PUBACK, 1, 0);
    p = expect_publish(s, "moat/dev1/up/ack", "done", 1, false);
    send_ack(s, CODEC_PUBACK, p.packet_id, 0);
    expect_nothing(s);
    expect_nothing(d);
    h_free(h);
}

static void test_qos2_inbound(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "moat/+/up/#", 0, 0, 0);
    tconn *d = device(h, CODEC_V5);

    publish(d, "moat/dev1/up/q", "once", 2, false, 10);
    expect_ack(d, CODEC_PUBREC, 10, 0);
    expect_publish(s, "moat/dev1/up/q", "once", 0, false);
    /* The same packet again (DUP): acknowledged, not routed again. */
    codec_publish again = {.dup = true,
                           .qos = 2,
                           .topic = str("moat/dev1/up/q"),
                           .packet_id = 10,
                           .payload = str("once")};
    send_publish(d, &again);
    expect_ack(d, CODEC_PUBREC, 10, 0);
    expect_nothing(s);
    send_ack(d, CODEC_PUBREL, 10, 0);
    expect_ack(d, CODEC_PUBCOMP, 10, 0);
    send_ack(d, CODEC_PUBREL, 10, 0); /* released already */
    expect_ack(d, CODEC_PUBCOMP, 10, 0x92);
    send_ack(d, CODEC_PUBREL, 99, 0); /* never seen */
    expect_ack(d, CODEC_PUBCOMP, 99, 0x92);
    expect_nothing(d);
    assert_false(d->closing);
    /* The id is free again: a new message. */
    publish(d, "moat/dev1/up/q", "twice", 2, false, 10);
    expect_ack(d, CODEC_PUBREC, 10, 0);
    expect_publish(s, "moat/dev1/up/q", "twice", 0, false);

    /* 3.1.1 has no reason codes: a plain PUBCOMP. */
    tconn *e = join(h, BROKER_DEVICE, "dev2", CODEC_V311);
    send_ack(e, CODEC_PUBREL, 5, 0);
    expect_ack(e, CODEC_PUBCOMP, 5, 0);
    expect_nothing(e);
    h_free(h);
}

static void test_qos2_outbound(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device(h, CODEC_V5);
    subscribe(d, "moat/dev1/down/#", 2, 0, 2);
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/cmd", "x", 2, false, 1);
    expect_ack(s, CODEC_PUBREC, 1, 0);
    send_ack(s, CODEC_PUBREL, 1, 0);
    expect_ack(s, CODEC_PUBCOMP, 1, 0);

    codec_publish p = expect_publish(d, "moat/dev1/down/cmd", "x", 2, false);
    uint16_t id = p.packet_id;
    send_ack(d, CODEC_PUBREC, id, 0);
    expect_ack(d, CODEC_PUBREL, id, 0);
    expect_nothing(d);
    send_ack(d, CODEC_PUBCOMP, id, 0);
    expect_nothing(d);
    send_ack(d, CODEC_PUBREC, 999, 0); /* not in flight */
    expect_ack(d, CODEC_PUBREL, 999, 0x92);
    expect_nothing(d);

    /* A client refusing with PUBREC >= 0x80 ends the flow. */
    publish(s, "moat/dev1/down/cmd", "y", 2, false, 2);
    expect_ack(s, CODEC_PUBREC, 2, 0);
    p = expect_publish(d, "moat/dev1/down/cmd", "y", 2, false);
    send_ack(d, CODEC_PUBREC, p.packet_id, 0x80);
    expect_nothing(d);
    assert_false(d->closing);
    h_free(h);
}

static void test_resume_resends(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "moat/+/up/#", 1, 0, 1);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 2, 0, 2);

    publish(s, "moat/dev1/down/a", "A", 1, false, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    publish(s, "moat/dev1/down/b", "B", 2, false, 2);
    expect_ack(s, CODEC_PUBREC, 2, 0);
    send_ack(s, CODEC_PUBREL, 2, 0);
    expect_ack(s, CODEC_PUBCOMP, 2, 0);
    uint16_t ida = expect_publish(d, "moat/dev1/down/a", "A", 1, false).packet_id;
    uint16_t idb = expect_publish(d, "moat/dev1/down/b", "B", 2, false).packet_id;
    assert_int_not_equal(ida, idb);
    send_ack(d, CODEC_PUBREC, idb, 0);
    expect_ack(d, CODEC_PUBREL, idb, 0);
    /* A QoS 2 message in: PUBREC sent, PUBREL not yet received. */
    publish(d, "moat/dev1/up/q", "Q", 2, false, 9);
    expect_ack(d, CODEC_PUBREC, 9, 0);
    codec_publish q = expect_publish(s, "moat/dev1/up/q", "Q", 1, false);
    send_ack(s, CODEC_PUBACK, q.packet_id, 0);
    expect_nothing(d);
    gone(d);

    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    codec_packet p = expect_packet(d, CODEC_PUBLISH);
    assert_true(p.u.publish.dup);
    assert_int_equal(p.u.publish.qos, 1);
    assert_int_equal(p.u.publish.packet_id, ida);
    assert_bytes(p.u.publish.topic, "moat/dev1/down/a");
    assert_bytes(p.u.publish.payload, "A");
    expect_ack(d, CODEC_PUBREL, idb, 0);
    expect_nothing(d);
    /* The client resends its QoS 2 PUBLISH: acknowledged, not routed twice. */
    codec_publish again = {
        .dup = true, .qos = 2, .topic = str("moat/dev1/up/q"), .packet_id = 9, .payload = str("Q")};
    send_publish(d, &again);
    expect_ack(d, CODEC_PUBREC, 9, 0);
    send_ack(d, CODEC_PUBREL, 9, 0);
    expect_ack(d, CODEC_PUBCOMP, 9, 0);
    expect_nothing(s);

    send_ack(d, CODEC_PUBACK, ida, 0);
    send_ack(d, CODEC_PUBCOMP, idb, 0);
    expect_nothing(d);
    gone(d);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    expect_nothing(d);
    h_free(h);
}

static void test_receive_maximum(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    CODEC_SET(&c.props, CODEC_PROP_RECEIVE_MAXIMUM);
    c.props.receive_maximum = 2;
    send_connect(d, &c);
    expect_connack(d, 0, false);
    subscribe(d, "moat/dev1/down/#", 2, 0, 2);
    tconn *s = service(h, CODEC_V5);
    const char *payloads[5] = {"0", "1", "2", "3", "4"};
    for (uint16_t i = 0; i < 5; i++) {
        publish(s, "moat/dev1/down/n", payloads[i], i == 2 ? 2 : 1, false, (uint16_t)(i + 1));
        if (i == 2) {
            expect_ack(s, CODEC_PUBREC, 3, 0);
            send_ack(s, CODEC_PUBREL, 3, 0);
            expect_ack(s, CODEC_PUBCOMP, 3, 0);
        } else {
            expect_ack(s, CODEC_PUBACK, (uint16_t)(i + 1), 0);
        }
    }
    uint16_t id0 = expect_publish(d, "moat/dev1/down/n", "0", 1, false).packet_id;
    uint16_t id1 = expect_publish(d, "moat/dev1/down/n", "1", 1, false).packet_id;
    expect_nothing(d);
    send_ack(d, CODEC_PUBACK, id1, 0);
    uint16_t id2 = expect_publish(d, "moat/dev1/down/n", "2", 2, false).packet_id;
    expect_nothing(d);
    /* PUBREC does not end a QoS 2 flow: still two in flight. */
    send_ack(d, CODEC_PUBREC, id2, 0);
    expect_ack(d, CODEC_PUBREL, id2, 0);
    expect_nothing(d);
    send_ack(d, CODEC_PUBCOMP, id2, 0);
    uint16_t id3 = expect_publish(d, "moat/dev1/down/n", "3", 1, false).packet_id;
    expect_nothing(d);
    send_ack(d, CODEC_PUBACK, id0, 0);
    uint16_t id4 = expect_publish(d, "moat/dev1/down/n", "4", 1, false).packet_id;
    expect_nothing(d);
    assert_int_not_equal(id3, id4);
    send_ack(d, CODEC_PUBACK, id3, 0);
    send_ack(d, CODEC_PUBACK, id4, 0);
    expect_nothing(d);
    h_free(h);
}

/* ---- retained messages -------------------------------------------------------- */

static void test_retained(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/cfg", "v1", 1, true, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0x10);
    assert_int_equal(stats(h).retained, 1);

    tconn *d = device(h, CODEC_V5);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    uint16_t id = expect_publish(d, "moat/dev1/down/cfg", "v1", 1, true).packet_id;
    send_ack(d, CODEC_PUBACK, id, 0);
    expect_nothing(d);

    /* Replaced while subscribed: delivered live, without the retain flag. */
    publish(s, "moat/dev1/down/cfg", "v2", 0, true, 0);
    expect_publish(d, "moat/dev1/down/cfg", "v2", 0, false);
    expect_nothing(d);
    assert_int_equal(stats(h).retained, 1);
    /* A new subscriber gets only the latest, at its subscription's QoS. */
    tconn *r = join_as(h, BROKER_SERVICE, "svc", "svc/r", CODEC_V311, false, false);
    subscribe(r, "moat/+/down/+", 0, 0, 0);
    expect_publish(r, "moat/dev1/down/cfg", "v2", 0, true);
    expect_nothing(r);

    /* Cleared by an empty retained message, which is still delivered. */
    publish(s, "moat/dev1/down/cfg", "", 0, true, 0);
    expect_publish(d, "moat/dev1/down/cfg", "", 0, false);
    expect_publish(r, "moat/dev1/down/cfg", "", 0, false);
    assert_int_equal(stats(h).retained, 0);
    tconn *r2 = join_as(h, BROKER_SERVICE, "svc", "svc/r2", CODEC_V5, false, false);
    subscribe(r2, "moat/#", 1, 0, 1);
    expect_nothing(r2);
    h_free(h);
}

static void test_retain_handling(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/r", "R", 1, true, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0x10);
    tconn *d = device(h, CODEC_V5);

    /* 0: at every SUBSCRIBE. */
    codec_subscription e = {.filter = str("moat/dev1/down/#"), .qos = 0, .retain_handling = 0};
    subscribe_opts(d, &e, 0);
    expect_publish(d, "moat/dev1/down/r", "R", 0, true);
    subscribe_opts(d, &e, 0);
    expect_publish(d, "moat/dev1/down/r", "R", 0, true);
    expect_nothing(d);
    /* 1: only when the subscription is new. */
    e = (codec_subscription){.filter = str("moat/dev1/down/+"), .qos = 0, .retain_handling = 1};
    subscribe_opts(d, &e, 0);
    expect_publish(d, "moat/dev1/down/r", "R", 0, true);
    subscribe_opts(d, &e, 0);
    expect_nothing(d);
    /* 2: never. */
    e = (codec_subscription){.filter = str("moat/dev1/down/r"), .qos = 0, .retain_handling = 2};
    subscribe_opts(d, &e, 0);
    expect_nothing(d);

    /* Retain as published keeps the flag on live messages. */
    tconn *r = join_as(h, BROKER_SERVICE, "svc", "svc/rap", CODEC_V5, false, false);
    e = (codec_subscription){.filter = str("moat/dev1/down/r"),
                             .qos = 0,
                             .retain_as_published = true,
                             .retain_handling = 2};
    subscribe_opts(r, &e, 0);
    expect_nothing(r);
    publish(s, "moat/dev1/down/r", "R2", 0, true, 0);
    expect_publish(r, "moat/dev1/down/r", "R2", 0, true);
    expect_publish(d, "moat/dev1/down/r", "R2", 0, false);
    expect_nothing(d);
    h_free(h);
}

/* ---- wills -------------------------------------------------------------------- */

/* A device connection with a will on moat/ID/up/status. */
static tconn *device_with_will_as(harness *h, const char *id, uint8_t version,
                                  uint32_t session_expiry, uint32_t will_delay,
                                  bool session_present)
{
    tconn *d = open_conn(h, BROKER_DEVICE, id);
    codec_connect c = connect_pkt(version, id);
    char topic[64];
    snprintf(topic, sizeof(topic), "moat/%s/up/status", id);
    c.will_flag = true;
    c.will_qos = 1;
    c.will_topic = str(topic);
    c.will_payload = str("offline");
    if (session_expiry) {
        c.clean_start = false;
        CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
        c.props.session_expiry = session_expiry;
    }
    if (will_delay) {
        CODEC_SET(&c.will_props, CODEC_PROP_WILL_DELAY);
        c.will_props.will_delay = will_delay;
    }
    send_connect(d, &c);
    expect_connack(d, 0, session_present);
    return d;
}

static tconn *device_with_will(harness *h, uint8_t version, uint32_t session_expiry,
                               uint32_t will_delay, bool session_present)
{
    return device_with_will_as(h, "dev1", version, session_expiry, will_delay, session_present);
}

static tconn *will_watcher(harness *h)
{
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "moat/+/up/#", 1, 0, 1);
    return s;
}

static void test_will_on_abrupt_close(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = will_watcher(h);
    tconn *d = device_with_will(h, CODEC_V311, 0, 0, false);
    expect_nothing(s);
    gone(d);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    expect_nothing(s);

    d = device_with_will(h, CODEC_V5, 0, 0, false);
    gone(d);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    expect_nothing(s);
    h_free(h);
}

static void test_will_not_on_disconnect(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = will_watcher(h);
    tconn *d = device_with_will(h, CODEC_V5, 0, 0, false);
    send_disconnect(d, 0x00);
    expect_nothing(d);
    assert_true(d->closing);
    gone(d);
    expect_nothing(s);

    d = device_with_will(h, CODEC_V311, 0, 0, false);
    send_disconnect(d, 0x00);
    assert_true(d->closing);
    gone(d);
    expect_nothing(s);

    /* 0x04: disconnect with will message. */
    d = device_with_will(h, CODEC_V5, 0, 0, false);
    send_disconnect(d, 0x04);
    expect_nothing(d);
    assert_true(d->closing);
    expect_nothing(s);
    gone(d);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    expect_nothing(s);
    h_free(h);
}

static void test_will_delay(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = will_watcher(h);
    tconn *d = device_with_will(h, CODEC_V5, 60, 10, false);
    uint64_t t = h->now;
    gone(d);
    expect_nothing(s);
    advance_to(h, t + 9999);
    expect_nothing(s);
    advance_to(h, t + 10000);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    expect_nothing(s);
    advance_to(h, t + 120000);
    expect_nothing(s);

    /* A delay longer than the session: the will goes when the session ends. */
    d = device_with_will(h, CODEC_V5, 5, 30, false);
    t = h->now;
    gone(d);
    advance_to(h, t + 4999);
    expect_nothing(s);
    advance_to(h, t + 5000);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    assert_int_equal(stats(h).sessions, 1); /* the watcher's */
    h_free(h);
}

/* Online, a session shares its connection's principal; offline, it must
 * have its own copy (gone() scribbles over the connection's). */
static void test_offline_session_keeps_its_principal(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = will_watcher(h);
    tconn *d = device_with_will(h, CODEC_V5, 60, 10, false);
    uint64_t t = h->now;
    gone(d);
    advance_to(h, t + 10000);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    advance_to(h, t + 60000);
    assert_int_equal(stats(h).sessions, 1);                           /* the watcher's */
    assert_string_equal(h->last_who[BROKER_EV_DISCONNECTED], "dev1"); /* "session expired" */

    /* Back online after a copy: the session follows the new connection. */
    d = device_with_will(h, CODEC_V5, 60, 10, false);
    gone(d);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    gone(d);
    advance_to(h, h->now + 3600 * 1000);
    assert_int_equal(stats(h).sessions, 1);
    assert_string_equal(h->last_who[BROKER_EV_DISCONNECTED], "dev1");
    h_free(h);
}

static void test_will_delay_cancelled_by_reconnect(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = will_watcher(h);
    tconn *d = device_with_will(h, CODEC_V5, 60, 10, false);
    uint64_t t = h->now;
    gone(d);
    advance_to(h, t + 5000);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    advance_to(h, t + 30000);
    expect_nothing(s);
    send_disconnect(d, 0);
    gone(d);
    advance_to(h, t + 100000);
    expect_nothing(s);

    /* Reconnecting with clean start ends the old session: its will goes. */
    d = device_with_will(h, CODEC_V5, 60, 10, true);
    gone(d);
    advance(h, 1000);
    expect_nothing(s);
    d = join(h, BROKER_DEVICE, "dev1", CODEC_V5);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    expect_nothing(s);
    advance(h, 60000);
    expect_nothing(s);
    h_free(h);
}

/* ---- timers -------------------------------------------------------------------- */

static void test_keep_alive(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    c.keep_alive = 10;
    send_connect(d, &c);
    expect_connack(d, 0, false);
    uint64_t t = h->now;
    advance_to(h, t + 14999);
    assert_false(d->closing);
    expect_nothing(d);
    advance_to(h, t + 15000);
    assert_true(d->closing);
    expect_disconnect(d, 0x8D);
    expect_nothing(d);

    /* Any packet restarts the 1.5 x keep alive. */
    tconn *e = open_conn(h, BROKER_DEVICE, "dev2");
    c = connect_pkt(CODEC_V311, "dev2");
    c.keep_alive = 10;
    send_connect(e, &c);
    expect_connack(e, 0, false);
    t = h->now;
    advance_to(h, t + 10000);
    send_ping(e);
    expect_packet(e, CODEC_PINGRESP);
    advance_to(h, t + 15000);
    assert_false(e->closing);
    advance_to(h, t + 24999);
    assert_false(e->closing);
    advance_to(h, t + 25000);
    assert_true(e->closing);
    expect_nothing(e); /* 3.1.1: no DISCONNECT from a server */
    h_free(h);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *t = open_conn(h, BROKER_DEVICE, "dev1");
    tconn *u = open_conn(h, BROKER_DEVICE, "dev2");
    uint64_t t0 = h->now;
    advance_to(h, t0 + 5000);
    codec_connect c = connect_pkt(CODEC_V5, "dev2");
    c.keep_alive = 100;
    send_connect(u, &c);
    expect_connack(u, 0, false);
    advance_to(h, t0 + 9999);
    assert_false(t->closing);
    advance_to(h, t0 + 10000);
    assert_true(t->closing);
    expect_nothing(t);
    assert_false(u->closing);
    expect_nothing(u);
    h_free(h);
}

static void test_session_expiry(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    c.clean_start = false;
    CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
    c.props.session_expiry = 30;
    send_connect(d, &c);
    expect_connack(d, 0, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    uint64_t t = h->now;
    gone(d);
    assert_int_equal(stats(h).sessions, 1);
    advance_to(h, t + 29999);
    assert_int_equal(stats(h).sessions, 1);
    assert_int_equal(stats(h).subscriptions, 1);
    advance_to(h, t + 30000);
    assert_int_equal(stats(h).sessions, 0);
    assert_int_equal(stats(h).subscriptions, 0);
    d = open_conn(h, BROKER_DEVICE, "dev1");
    send_connect(d, &c);
    expect_connack(d, 0, false);

    /* MQTT 5 without a session expiry: gone with the connection. */
    tconn *e = join(h, BROKER_DEVICE, "dev2", CODEC_V5);
    assert_int_equal(stats(h).sessions, 2);
    gone(e);
    assert_int_equal(stats(h).sessions, 1);
    h_free(h);
}

/* ---- offline sessions ------------------------------------------------------------ */

static void test_offline_queue(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V311, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/a", "1", 1, false, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    publish(s, "moat/dev1/down/b", "2", 2, false, 2);
    expect_ack(s, CODEC_PUBREC, 2, 0);
    send_ack(s, CODEC_PUBREL, 2, 0);
    expect_ack(s, CODEC_PUBCOMP, 2, 0);

    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V311, true, true);
    uint16_t a = expect_publish(d, "moat/dev1/down/a", "1", 1, false).packet_id;
    uint16_t b = expect_publish(d, "moat/dev1/down/b", "2", 1, false).packet_id;
    expect_nothing(d);
    send_ack(d, CODEC_PUBACK, a, 0);
    send_ack(d, CODEC_PUBACK, b, 0);
    expect_nothing(d);
    h_free(h);
}

static void test_offline_qos0_not_queued(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/zero", "0", 0, false, 0);
    publish(s, "moat/dev1/down/one", "1", 1, false, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    expect_publish(d, "moat/dev1/down/one", "1", 1, false);
    expect_nothing(d);
    h_free(h);
}

static void test_max_queued(void **state)
{
    (void)state;
    broker_limits lim;
    test_limits(&lim);
    lim.max_queued = 3;
    harness *h = h_new_with(&lim, NULL);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    const char *payloads[5] = {"0", "1", "2", "3", "4"};
    for (uint16_t i = 0; i < 5; i++) {
        publish(s, "moat/dev1/down/n", payloads[i], 1, false, (uint16_t)(i + 1));
        expect_ack(s, CODEC_PUBACK, (uint16_t)(i + 1), 0);
    }
    assert_int_equal(stats(h).dropped, 2);
    /* Counted each time, logged once per 10 s per session. */
    assert_int_equal(h->events[BROKER_EV_DROPPED], 1);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    expect_publish(d, "moat/dev1/down/n", "0", 1, false);
    expect_publish(d, "moat/dev1/down/n", "1", 1, false);
    expect_publish(d, "moat/dev1/down/n", "2", 1, false);
    expect_nothing(d);
    h_free(h);
}

static void test_message_expiry_while_queued(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    codec_publish p = {
        .qos = 1, .topic = str("moat/dev1/down/short"), .packet_id = 1, .payload = str("s")};
    CODEC_SET(&p.props, CODEC_PROP_MESSAGE_EXPIRY);
    p.props.message_expiry = 5;
    send_publish(s, &p);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    p.topic = str("moat/dev1/down/long");
    p.packet_id = 2;
    p.payload = str("l");
    p.props.message_expiry = 100;
    send_publish(s, &p);
    expect_ack(s, CODEC_PUBACK, 2, 0);
    publish(s, "moat/dev1/down/never", "n", 1, false, 3);
    expect_ack(s, CODEC_PUBACK, 3, 0);

    advance(h, 6000);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    codec_publish got = expect_publish(d, "moat/dev1/down/long", "l", 1, false);
    assert_true(CODEC_HAS(&got.props, CODEC_PROP_MESSAGE_EXPIRY));
    assert_int_equal(got.props.message_expiry, 94);
    got = expect_publish(d, "moat/dev1/down/never", "n", 1, false);
    assert_false(CODEC_HAS(&got.props, CODEC_PROP_MESSAGE_EXPIRY));
    expect_nothing(d);
    h_free(h);
}

/* ---- topic aliases ----------------------------------------------------------------- */

static void publish_alias(tconn *t, const char *topic, uint16_t alias, const char *payload)
{
    codec_publish p = {.topic = str(topic), .payload = str(payload)};
    CODEC_SET(&p.props, CODEC_PROP_TOPIC_ALIAS);
    p.props.topic_alias = alias;
    send_publish(t, &p);
}

static void test_topic_alias_in(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V311);
    subscribe(s, "moat/+/up/#", 0, 0, 0);
    tconn *d = device(h, CODEC_V5);
    publish_alias(d, "moat/dev1/up/a", 1, "1");
    expect_publish(s, "moat/dev1/up/a", "1", 0, false);
    publish_alias(d, "", 1, "2");
    expect_publish(s, "moat/dev1/up/a", "2", 0, false);
    publish_alias(d, "moat/dev1/up/b", 1, "3"); /* alias 1 now means b */
    expect_publish(s, "moat/dev1/up/b", "3", 0, false);
    publish_alias(d, "", 1, "4");
    expect_publish(s, "moat/dev1/up/b", "4", 0, false);
    publish_alias(d, "moat/dev1/up/c", 4, "5"); /* the maximum itself */
    expect_publish(s, "moat/dev1/up/c", "5", 0, false);
    publish_alias(d, "", 4, "6");
    expect_publish(s, "moat/dev1/up/c", "6", 0, false);
    expect_nothing(s);
    expect_nothing(d);
    assert_false(d->closing);

    /* Aliases belong to one connection. */
    gone(d);
    d = device(h, CODEC_V5);
    publish_alias(d, "", 1, "7");
    expect_disconnect(d, 0x82);
    assert_true(d->closing);
    expect_nothing(s);
    h_free(h);
}

static void test_topic_alias_in_errors(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V311);
    subscribe(s, "moat/+/up/#", 0, 0, 0);
    tconn *d = device(h, CODEC_V5);
    publish_alias(d, "", 2, "x"); /* never set */
    expect_disconnect(d, 0x82);
    expect_nothing(d);
    assert_true(d->closing);
    gone(d);

    d = device(h, CODEC_V5);
    publish_alias(d, "moat/dev1/up/a", 5, "x"); /* above the maximum (4) */
    expect_disconnect(d, 0x94);
    expect_nothing(d);
    assert_true(d->closing);
    expect_nothing(s);
    assert_false(s->closing);
    h_free(h);
}

/* MQTT 5 Reason Strings: on refusals, unless the client turned problem
 * information off (then still on CONNACK and DISCONNECT, 3.1.2.11.7), and
 * never past the client's Maximum Packet Size. */
static tconn *device_asking(harness *h, bool problem_info, uint32_t max_packet)
{
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    if (!problem_info) {
        CODEC_SET(&c.props, CODEC_PROP_REQUEST_PROBLEM_INFO);
        c.props.request_problem_info = 0;
    }
    if (max_packet) {
        CODEC_SET(&c.props, CODEC_PROP_MAXIMUM_PACKET_SIZE);
        c.props.maximum_packet_size = max_packet;
    }
    send_connect(d, &c);
    expect_connack(d, 0, false);
    return d;
}

static void expect_reason_string(const codec_props *props, const char *want)
{
    if (!want)
        assert_false(CODEC_HAS(props, CODEC_PROP_REASON_STRING));
    else
        assert_bytes(props->reason_string, want);
}

/* A device that asked as given has a PUBLISH and a SUBSCRIBE refused, then
 * uses a topic alias it never set: the Reason Strings of the PUBACK, the
 * SUBACK and the DISCONNECT are as wanted (NULL: none). */
static void expect_refusal_strings(harness *h, bool problem_info, uint32_t max_packet,
                                   const char *puback, const char *suback, const char *disconnect)
{
    tconn *d = device_asking(h, problem_info, max_packet);
    publish(d, "moat/dev2/up/x", "a", 1, false, 7);
    codec_packet p = expect_packet(d, CODEC_PUBACK);
    assert_int_equal(p.u.ack.reason, 0x87);
    expect_reason_string(&p.u.ack.props, puback);
    codec_subscription e = {.filter = str("moat/dev2/down/#"), .qos = 1};
    send_subscribe(d, 8, &e, 1, 0);
    p = expect_packet(d, CODEC_SUBACK);
    assert_int_equal(p.u.suback.reasons.ptr[0], 0x87);
    expect_reason_string(&p.u.suback.props, suback);
    publish_alias(d, "", 2, "x");
    p = expect_packet(d, CODEC_DISCONNECT);
    assert_int_equal(p.u.disconnect.reason, 0x82);
    expect_reason_string(&p.u.disconnect.props, disconnect);
    gone(d);
}

static void test_reason_strings(void **state)
{
    (void)state;
    harness *h = h_new();
    const char *policy = "not authorized by policy", *alias = "unknown topic alias";
    expect_refusal_strings(h, true, 0, policy, policy, alias);
    /* Request Problem Information 0: none on PUBACK or SUBACK, still on
     * DISCONNECT. */
    expect_refusal_strings(h, false, 0, NULL, NULL, alias);
    /* A client taking at most 16-byte packets gets the refusals without their
     * strings, not larger packets. */
    expect_refusal_strings(h, true, 16, NULL, NULL, NULL);

    /* A session taken over: the old connection is told why. */
    tconn *d = device_asking(h, true, 0);
    tconn *e = device_asking(h, true, 0);
    codec_packet p = expect_packet(d, CODEC_DISCONNECT);
    assert_int_equal(p.u.disconnect.reason, 0x8E);
    assert_bytes(p.u.disconnect.props.reason_string, "another connection took over this session");
    expect_nothing(e);

    /* MQTT 3.1.1 has no properties: a refused CONNECT is only its code. */
    tconn *v3 = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V311, "dev2");
    send_connect(v3, &c);
    expect_connack(v3, 0x02, false);
    h_free(h);
}

static tconn *device_alias_max(harness *h, uint16_t alias_max, uint32_t max_packet)
{
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    CODEC_SET(&c.props, CODEC_PROP_TOPIC_ALIAS_MAXIMUM);
    c.props.topic_alias_maximum = alias_max;
    if (max_packet) {
        CODEC_SET(&c.props, CODEC_PROP_MAXIMUM_PACKET_SIZE);
        c.props.maximum_packet_size = max_packet;
    }
    send_connect(d, &c);
    expect_connack(d, 0, false);
    subscribe(d, "moat/dev1/down/#", 0, 0, 0);
    return d;
}

static void expect_aliased(tconn *t, const char *topic, uint16_t alias, const char *payload)
{
    codec_packet p = expect_packet(t, CODEC_PUBLISH);
    assert_bytes(p.u.publish.topic, topic);
    assert_bytes(p.u.publish.payload, payload);
    if (alias) {
        assert_true(CODEC_HAS(&p.u.publish.props, CODEC_PROP_TOPIC_ALIAS));
        assert_int_equal(p.u.publish.props.topic_alias, alias);
    } else {
        assert_false(CODEC_HAS(&p.u.publish.props, CODEC_PROP_TOPIC_ALIAS));
    }
}

static void test_topic_alias_out(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device_alias_max(h, 2, 0);
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "moat/dev1/down/#", 0, 0, 0);
    publish(s, "moat/dev1/down/a", "1", 0, false, 0);
    expect_aliased(d, "moat/dev1/down/a", 1, "1");
    expect_aliased(s, "moat/dev1/down/a", 0, "1"); /* s announced no alias maximum */
    publish(s, "moat/dev1/down/a", "2", 0, false, 0);
    expect_aliased(d, "", 1, "2");
    publish(s, "moat/dev1/down/b", "3", 0, false, 0);
    expect_aliased(d, "moat/dev1/down/b", 2, "3");
    publish(s, "moat/dev1/down/c", "4", 0, false, 0); /* no alias left */
    expect_aliased(d, "moat/dev1/down/c", 0, "4");
    publish(s, "moat/dev1/down/b", "5", 0, false, 0);
    expect_aliased(d, "", 2, "5");
    expect_nothing(d);

    /* A new connection starts with no aliases. */
    gone(d);
    d = device_alias_max(h, 2, 0);
    publish(s, "moat/dev1/down/b", "6", 0, false, 0);
    expect_aliased(d, "moat/dev1/down/b", 1, "6");
    expect_nothing(d);
    h_free(h);
}

/* A message too large for the client is not sent ([MQTT-3.1.2-25]); the
 * alias it would have set was never seen by the client, so the next message
 * to that topic must carry the topic. */
static void test_topic_alias_out_oversized(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device_alias_max(h, 2, 64);
    tconn *s = service(h, CODEC_V5);
    char big[101];
    memset(big, 'x', 100);
    big[100] = '\0';
    publish(s, "moat/dev1/down/a", big, 0, false, 0);
    expect_nothing(d);
    publish(s, "moat/dev1/down/a", "small", 0, false, 0);
    codec_packet p = expect_packet(d, CODEC_PUBLISH);
    assert_bytes(p.u.publish.topic, "moat/dev1/down/a");
    assert_bytes(p.u.publish.payload, "small");
    publish(s, "moat/dev1/down/a", "again", 0, false, 0);
    p = expect_packet(d, CODEC_PUBLISH);
    assert_bytes(p.u.publish.payload, "again");
    if (p.u.publish.topic.len == 0) {
        assert_true(CODEC_HAS(&p.u.publish.props, CODEC_PROP_TOPIC_ALIAS));
    }
    expect_nothing(d);
    h_free(h);
}

/* A QoS 1 message too large for the client is discarded as if its delivery
 * had completed ([MQTT-3.1.2-25]): it must not hold one of the client's
 * receive maximum slots for ever. */
static void test_oversized_qos1_discarded(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = open_conn(h, BROKER_DEVICE, "dev1");
    codec_connect c = connect_pkt(CODEC_V5, "dev1");
    CODEC_SET(&c.props, CODEC_PROP_MAXIMUM_PACKET_SIZE);
    c.props.maximum_packet_size = 64;
    CODEC_SET(&c.props, CODEC_PROP_RECEIVE_MAXIMUM);
    c.props.receive_maximum = 1;
    send_connect(d, &c);
    expect_connack(d, 0, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    tconn *s = service(h, CODEC_V5);
    char big[101];
    memset(big, 'x', 100);
    big[100] = '\0';
    publish(s, "moat/dev1/down/a", big, 1, false, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    expect_nothing(d);
    publish(s, "moat/dev1/down/a", "small", 1, false, 2);
    expect_ack(s, CODEC_PUBACK, 2, 0);
    uint16_t id = expect_publish(d, "moat/dev1/down/a", "small", 1, false).packet_id;
    send_ack(d, CODEC_PUBACK, id, 0);
    expect_nothing(d);
    assert_int_equal(stats(h).dropped, 1);
    gone(d);

    /* In flight from a connection that took it, resent to one that cannot. */
    d = join_as(h, BROKER_DEVICE, "dev2", "dev2", CODEC_V5, true, false);
    subscribe(d, "moat/dev2/down/#", 1, 0, 1);
    publish(s, "moat/dev2/down/a", big, 1, false, 3);
    expect_ack(s, CODEC_PUBACK, 3, 0);
    expect_publish(d, "moat/dev2/down/a", big, 1, false);
    gone(d);
    d = open_conn(h, BROKER_DEVICE, "dev2");
    c = connect_pkt(CODEC_V5, "dev2");
    c.clean_start = false;
    CODEC_SET(&c.props, CODEC_PROP_SESSION_EXPIRY);
    c.props.session_expiry = 3600;
    CODEC_SET(&c.props, CODEC_PROP_MAXIMUM_PACKET_SIZE);
    c.props.maximum_packet_size = 64;
    CODEC_SET(&c.props, CODEC_PROP_RECEIVE_MAXIMUM);
    c.props.receive_maximum = 1;
    send_connect(d, &c);
    expect_connack(d, 0, true);
    expect_nothing(d);
    publish(s, "moat/dev2/down/a", "small", 1, false, 4);
    expect_ack(s, CODEC_PUBACK, 4, 0);
    expect_publish(d, "moat/dev2/down/a", "small", 1, false);
    expect_nothing(d);
    h_free(h);
}

/* ---- shared subscriptions, no-local -------------------------------------------------- */

static void test_shared_round_robin(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *a = join_as(h, BROKER_SERVICE, "svc", "svc/a", CODEC_V5, false, false);
    subscribe(a, "$share/g/moat/+/up/#", 0, 0, 0);
    tconn *b = join_as(h, BROKER_SERVICE, "svc", "svc/b", CODEC_V311, false, false);
    subscribe(b, "$share/g/moat/+/up/#", 0, 0, 0);
    tconn *d = device(h, CODEC_V5);
    tconn *last = NULL;
    int got_a = 0, got_b = 0;
    const char *payloads[6] = {"0", "1", "2", "3", "4", "5"};
    for (int i = 0; i < 6; i++) {
        publish(d, "moat/dev1/up/t", payloads[i], 0, false, 0);
        codec_packet p;
        bool in_a = next_packet(a, &p);
        if (in_a) {
            assert_int_equal(p.type, CODEC_PUBLISH);
            assert_bytes(p.u.publish.payload, payloads[i]);
        }
        bool in_b = next_packet(b, &p);
        if (in_b) {
            assert_int_equal(p.type, CODEC_PUBLISH);
            assert_bytes(p.u.publish.payload, payloads[i]);
        }
        assert_true(in_a != in_b); /* exactly one member gets it */
        tconn *now = in_a ? a : b;
        assert_ptr_not_equal(now, last);
        last = now;
        got_a += in_a;
        got_b += in_b;
    }
    assert_int_equal(got_a, 3);
    assert_int_equal(got_b, 3);

    /* No retained messages for shared subscriptions; a plain subscription
     * alongside gets its own copy. */
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/up/r", "R", 0, true, 0);
    codec_packet p;
    bool in_a = next_packet(a, &p), in_b = next_packet(b, &p); /* live: group g */
    assert_true(in_a != in_b);
    assert_int_equal(p.type, CODEC_PUBLISH);
    tconn *c = join_as(h, BROKER_SERVICE, "svc", "svc/c", CODEC_V5, false, false);
    subscribe(c, "$share/h/moat/dev1/up/#", 0, 0, 0);
    expect_nothing(c);
    subscribe(c, "moat/dev1/up/#", 0, 0, 0);
    expect_publish(c, "moat/dev1/up/r", "R", 0, true);
    publish(d, "moat/dev1/up/t", "x", 0, false, 0);
    expect_publish(c, "moat/dev1/up/t", "x", 0, false); /* group h */
    expect_publish(c, "moat/dev1/up/t", "x", 0, false); /* its plain subscription */
    expect_nothing(c);
    h_free(h);
}

/* A member's session ends with messages it never confirmed: they go to
 * another member (MQTT 5 4.8.2), not a QoS 2 message past PUBREC, and not
 * while the session is only offline. */
static void test_shared_member_session_ends(void **state)
{
    (void)state;
    harness *h = h_new();
    const char *group = "$share/g/moat/+/up/#";
    tconn *a = join_as(h, BROKER_SERVICE, "svc", "svc/a", CODEC_V5, false, false);
    subscribe(a, group, 2, 0, 2);
    tconn *d = device(h, CODEC_V5);
    publish(d, "moat/dev1/up/t", "q1", 1, false, 1);
    publish(d, "moat/dev1/up/t", "q2", 2, false, 2);
    publish(d, "moat/dev1/up/t", "q3", 1, false, 3);
    codec_publish p1 = expect_publish(a, "moat/dev1/up/t", "q1", 1, false);
    codec_publish p2 = expect_publish(a, "moat/dev1/up/t", "q2", 2, false);
    codec_publish p3 = expect_publish(a, "moat/dev1/up/t", "q3", 1, false);
    (void)p1;
    send_ack(a, CODEC_PUBREC, p2.packet_id, 0); /* q2 is the client's now */
    expect_ack(a, CODEC_PUBREL, p2.packet_id, 0);
    send_ack(a, CODEC_PUBACK, p3.packet_id, 0);
    tconn *b = join_as(h, BROKER_SERVICE, "svc", "svc/b", CODEC_V5, false, false);
    subscribe(b, group, 1, 0, 1);
    expect_nothing(b);
    gone(a); /* a clean session: it ends with its connection */
    expect_publish(b, "moat/dev1/up/t", "q1", 1, false);
    expect_nothing(b);

    /* Offline, a persistent member keeps what it has until its session ends. */
    send_unsubscribe(b, 5, group);
    expect_packet(b, CODEC_UNSUBACK);
    tconn *c = join_as(h, BROKER_SERVICE, "svc", "svc/c", CODEC_V5, true, false);
    subscribe(c, group, 1, 0, 1);
    publish(d, "moat/dev1/up/t", "p1", 1, false, 4);
    expect_publish(c, "moat/dev1/up/t", "p1", 1, false);
    subscribe(b, group, 1, 0, 1);
    gone(c);
    pass(h);
    expect_nothing(b);
    for (int i = 0; i < 3; i++) { /* b stays within its keep alive */
        advance(h, 1000u * 1000u);
        send_ping(b);
        expect_packet(b, CODEC_PINGRESP);
    }
    expect_nothing(b);
    advance(h, 601u * 1000u); /* c's session expiry (3,600 s) ends */
    expect_publish(b, "moat/dev1/up/t", "p1", 1, false);
    expect_nothing(b);

    /* No member left: the message goes with the session. */
    d = device(h, CODEC_V5); /* the first one's keep alive ran out meanwhile */
    publish(d, "moat/dev1/up/t", "last", 1, false, 5);
    expect_publish(b, "moat/dev1/up/t", "last", 1, false);
    gone(b);
    assert_int_equal(stats(h).sessions, 1); /* the device's */
    h_free(h);
}

static void test_no_local(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    codec_subscription e = {.filter = str("moat/+/up/#"), .qos = 1, .no_local = true};
    subscribe_opts(s, &e, 1);
    tconn *o = join_as(h, BROKER_SERVICE, "svc", "svc/other", CODEC_V5, false, false);
    subscribe(o, "moat/+/up/#", 0, 0, 0);
    publish(s, "moat/dev1/up/x", "own", 0, false, 0);
    expect_nothing(s);
    expect_publish(o, "moat/dev1/up/x", "own", 0, false);
    tconn *d = device(h, CODEC_V5);
    publish(d, "moat/dev1/up/x", "dev", 0, false, 0);
    expect_publish(s, "moat/dev1/up/x", "dev", 0, false);
    expect_publish(o, "moat/dev1/up/x", "dev", 0, false);
    expect_nothing(s);
    h_free(h);
}

/* ---- registry changes, shutdown, bad input ------------------------------------------- */

static void test_reauthorize_revoked(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device(h, CODEC_V5);
    tconn *e = join(h, BROKER_DEVICE, "dev3", CODEC_V311);
    tconn *s = service(h, CODEC_V5);
    h->revoked = "dev1";
    broker_reauthorize(h->b, still_active, h, h->now);
    pass(h);
    expect_disconnect(d, 0x98);
    expect_nothing(d);
    assert_true(d->closing);
    assert_false(e->closing);
    assert_false(s->closing);
    expect_nothing(e);
    expect_nothing(s);

    h->revoked = "dev3";
    broker_reauthorize(h->b, still_active, h, h->now);
    pass(h);
    assert_true(e->closing);
    expect_nothing(e); /* 3.1.1: closed without a word */
    assert_false(s->closing);
    h_free(h);
}

static void test_reauthorize_policy_change(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *s = service(h, CODEC_V5);
    subscribe(s, "other/#", 0, 0, 0);
    subscribe(s, "moat/#", 0, 0, 0);
    tconn *ops = join(h, BROKER_SERVICE, "ops", CODEC_V5);
    assert_int_equal(stats(h).subscriptions, 2);

    set_policy(h, "svc", "allow connect\nallow all moat/#\n");
    broker_reauthorize(h->b, still_active, h, h->now);
    pass(h);
    assert_false(s->closing);
    expect_nothing(s);
    assert_int_equal(stats(h).subscriptions, 1);
    publish(ops, "other/x", "no", 0, false, 0);
    expect_nothing(s);
    publish(ops, "moat/x", "yes", 0, false, 0);
    expect_publish(s, "moat/x", "yes", 0, false);
    send_unsubscribe(s, 5, "other/#");
    codec_packet p = expect_packet(s, CODEC_UNSUBACK);
    assert_int_equal(p.u.suback.packet_id, 5);
    assert_int_equal(p.u.suback.reasons.len, 1);
    assert_int_equal(p.u.suback.reasons.ptr[0], 0x11);
    /* Its publish rights changed too. */
    publish(s, "other/y", "no", 1, false, 6);
    expect_ack(s, CODEC_PUBACK, 6, 0x87);
    expect_nothing(s);

    /* Policies that fail to load: deny all. Every subscription goes, and the
     * connection with them, since connecting is no longer allowed either. */
    set_policy(h, "svc", NULL);
    broker_reauthorize(h->b, still_active, h, h->now);
    pass(h);
    assert_int_equal(stats(h).subscriptions, 0);
    expect_disconnect(s, 0x87);
    expect_nothing(s);
    assert_true(s->closing);
    publish(ops, "moat/x", "no", 0, false, 0);
    expect_nothing(s);
    assert_false(ops->closing);
    h_free(h);
}

static void test_shutdown(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device(h, CODEC_V5);
    tconn *s = service(h, CODEC_V311);
    tconn *n = open_conn(h, BROKER_DEVICE, "dev2"); /* no CONNECT yet */
    broker_shutdown(h->b, h->now);
    pass(h);
    expect_disconnect(d, 0x8B);
    expect_nothing(d);
    assert_true(d->closing);
    expect_nothing(s);
    assert_true(s->closing);
    expect_nothing(n);
    assert_true(n->closing);
    h_free(h);
}

static void test_malformed_input(void **state)
{
    (void)state;
    harness *h = h_new();
    tconn *d = device(h, CODEC_V5);
    tconn *s = service(h, CODEC_V311);
    tconn *u = join(h, BROKER_DEVICE, "dev2", CODEC_V5);
    subscribe(u, "moat/dev2/down/#", 0, 0, 0);

    const uint8_t junk[] = {0x00, 0x00};
    feed(d, junk, sizeof(junk));
    expect_disconnect(d, 0x81);
    expect_nothing(d);
    assert_true(d->closing);
    const uint8_t auth[] = {0xF0, 0x00}; /* AUTH is reserved in 3.1.1 */
    feed(s, auth, sizeof(auth));
    expect_nothing(s);
    assert_true(s->closing);
    /* A second CONNECT is a protocol error. */
    tconn *e = join(h, BROKER_DEVICE, "dev3", CODEC_V5);
    codec_connect c = connect_pkt(CODEC_V5, "dev3");
    send_connect(e, &c);
    expect_disconnect(e, 0x82);
    assert_true(e->closing);

    /* The others are untouched. */
    assert_false(u->closing);
    send_ping(u);
    expect_packet(u, CODEC_PINGRESP);
    tconn *o = join(h, BROKER_SERVICE, "ops", CODEC_V5);
    publish(o, "moat/dev2/down/x", "ok", 0, false, 0);
    expect_publish(u, "moat/dev2/down/x", "ok", 0, false);
    expect_nothing(u);

    /* Before CONNECT: anything else is refused without an answer. */
    tconn *f = open_conn(h, BROKER_DEVICE, "dev4");
    const uint8_t ping[] = {0xC0, 0x00};
    feed(f, ping, sizeof(ping));
    expect_nothing(f);
    assert_true(f->closing);
    /* A CONNECT that is malformed after its version: MQTT 5 gets CONNACK
     * 0x81 (a will QoS of 3 here). */
    tconn *g = open_conn(h, BROKER_DEVICE, "dev5");
    const uint8_t bad[] = {0x10, 0x0D, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                           0x05, 0x1E, 0x00, 0x3C, 0x00, 0x00, 0x00};
    g->version = CODEC_V5;
    feed(g, bad, sizeof(bad));
    expect_connack(g, 0x81, false);
    expect_nothing(g);
    assert_true(g->closing);
    /* A first packet larger than the pre-CONNECT limit is refused from its
     * header, before the body arrives. */
    tconn *k = open_conn(h, BROKER_DEVICE, "dev6");
    const uint8_t huge[] = {0x10, 0xFF, 0xFF, 0x03};
    feed(k, huge, sizeof(huge));
    assert_true(k->closing);
    expect_nothing(k);
    h_free(h);
}

/* ---- durability with the SQLite store ------------------------------------------------- */

typedef struct tmpstore {
    char dir[64];
    char path[128];
    broker_store *st;
} tmpstore;

static void tmpstore_open(tmpstore *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/moat-broker-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/hub.db", t->dir);
    char err[256];
    if (!store_sqlite_open(t->path, &t->st, err, sizeof(err)))
        fail_msg("store_sqlite_open: %s", err);
}

static void tmpstore_close(tmpstore *t)
{
    store_sqlite_close(t->st);
    const char *suffix[3] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s%s", t->path, suffix[i]);
        (void)unlink(p);
    }
    (void)rmdir(t->dir);
}

/* The hub stops while a persistent session's client is connected (a crash:
 * the store still says "online"). That connection ended with the hub, so the
 * session's expiry interval (3600 s from join_as) runs from the restart. */
static void test_session_online_at_restart_expires_after_it(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    harness *h = h_new_with(NULL, ts.st);
    (void)join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    (void)join_as(h, BROKER_DEVICE, "dev2", "dev2", CODEC_V311, true, false);
    h_restart(h);
    assert_int_equal(stats(h).sessions, 2);
    advance(h, 3599 * 1000);
    assert_int_equal(stats(h).sessions, 2);
    advance(h, 2 * 1000);
    /* dev2's 3.1.1 session has no expiry interval: it stays. */
    assert_int_equal(stats(h).sessions, 1);
    h_restart(h);
    assert_int_equal(stats(h).sessions, 1);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    (void)d;
    h_free(h);
    tmpstore_close(&ts);
}

static void test_durable_restart(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    harness *h = h_new_with(NULL, ts.st);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/cmd", "reboot", 1, false, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    publish(s, "moat/dev1/down/cfg", "retained", 0, true, 0);

    /* The hub stops: nothing else is written. */
    h_restart(h);
    assert_int_equal(stats(h).sessions, 1);
    assert_int_equal(stats(h).subscriptions, 1);
    assert_int_equal(stats(h).retained, 1);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    uint16_t id = expect_publish(d, "moat/dev1/down/cmd", "reboot", 1, false).packet_id;
    expect_nothing(d);
    /* Not acknowledged before the next restart: sent again, as a DUP. */
    h_restart(h);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    codec_packet p = expect_packet(d, CODEC_PUBLISH);
    assert_true(p.u.publish.dup);
    assert_int_equal(p.u.publish.packet_id, id);
    assert_bytes(p.u.publish.payload, "reboot");
    expect_nothing(d);
    send_ack(d, CODEC_PUBACK, id, 0);
    /* The subscription is back too: new messages reach it. */
    s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/cmd", "again", 1, false, 2);
    expect_ack(s, CODEC_PUBACK, 2, 0);
    id = expect_publish(d, "moat/dev1/down/cmd", "again", 1, false).packet_id;
    send_ack(d, CODEC_PUBACK, id, 0);
    expect_nothing(d);

    /* Acknowledged messages stay acknowledged across a restart. */
    h_restart(h);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    expect_nothing(d);
    tconn *r = join_as(h, BROKER_SERVICE, "svc", "svc/r", CODEC_V5, false, false);
    subscribe(r, "moat/+/down/cfg", 0, 0, 0);
    expect_publish(r, "moat/dev1/down/cfg", "retained", 0, true);
    h_free(h);
    tmpstore_close(&ts);
}

/* Wills of connections the hub had when it crashed are published after the
 * restart: a clean session's at the first tick, a persistent one's after its
 * delay (which runs from the restart). A will that was cancelled or already
 * published is not. */
static void test_wills_survive_a_crash(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    harness *h = h_new_with(NULL, ts.st);
    (void)device_with_will_as(h, "dev1", CODEC_V311, 0, 0, false);
    (void)device_with_will_as(h, "dev2", CODEC_V5, 3600, 10, false);
    tconn *d3 = device_with_will_as(h, "dev3", CODEC_V5, 0, 0, false);
    send_disconnect(d3, 0); /* normal disconnect: no will */
    tconn *d4 = device_with_will_as(h, "dev4", CODEC_V5, 0, 0, false);
    tconn *early = will_watcher(h);
    gone(d4); /* published before the crash */
    expect_publish(early, "moat/dev4/up/status", "offline", 1, false);

    h_restart(h); /* the store is as a kill -9 leaves it */
    tconn *s = will_watcher(h);
    expect_nothing(s);
    advance(h, 0);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    expect_nothing(s);
    advance(h, 9999);
    expect_nothing(s);
    advance(h, 1);
    expect_publish(s, "moat/dev2/up/status", "offline", 1, false);
    expect_nothing(s);
    assert_int_equal(stats(h).sessions, 2); /* dev2's persistent one, and s */

    /* Published once: not again after another restart. */
    h_restart(h);
    s = will_watcher(h);
    advance(h, 60000);
    expect_nothing(s);

    /* Reconnecting within the delay cancels a persistent session's will, also
     * after a crash; a clean session's will goes anyway. */
    (void)device_with_will_as(h, "dev2", CODEC_V5, 3600, 10, true);
    (void)device_with_will_as(h, "dev1", CODEC_V5, 0, 0, false);
    h_restart(h);
    s = will_watcher(h);
    (void)device_with_will_as(h, "dev1", CODEC_V5, 0, 0, false);
    expect_publish(s, "moat/dev1/up/status", "offline", 1, false);
    (void)device_with_will_as(h, "dev2", CODEC_V5, 3600, 10, true);
    advance(h, 20000);
    expect_nothing(s);
    h_free(h);
    tmpstore_close(&ts);
}

/* A persistent member's queued share-group message still goes to another
 * member when the session ends after a restart: the mark is stored. */
static void test_shared_mark_survives_a_restart(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    harness *h = h_new_with(NULL, ts.st);
    const char *group = "$share/g/moat/+/up/#";
    tconn *c = join_as(h, BROKER_SERVICE, "svc", "svc/c", CODEC_V5, true, false);
    subscribe(c, group, 1, 0, 1);
    gone(c);
    tconn *d = device(h, CODEC_V5);
    publish(d, "moat/dev1/up/t", "kept", 1, false, 1);
    expect_ack(d, CODEC_PUBACK, 1, 0);

    h_restart(h);
    tconn *b = join_as(h, BROKER_SERVICE, "svc", "svc/b", CODEC_V5, false, false);
    subscribe(b, group, 1, 0, 1);
    for (int i = 0; i < 3; i++) { /* b stays within its keep alive */
        advance(h, 1000u * 1000u);
        send_ping(b);
        expect_packet(b, CODEC_PINGRESP);
    }
    expect_nothing(b);
    advance(h, 601u * 1000u); /* svc/c's session expiry (3,600 s) ends */
    expect_publish(b, "moat/dev1/up/t", "kept", 1, false);
    h_free(h);
    tmpstore_close(&ts);
}

/* A delivery merged from two subscriptions of a persistent session must be
 * stored as what was sent (QoS and all), whichever subscription the routing
 * met first. */
static void test_durable_overlapping(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    harness *h = h_new_with(NULL, ts.st);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 0, 0, 0);
    subscribe(d, "moat/dev1/down/+", 1, 0, 1);
    subscribe(d, "moat/dev1/down/x/+", 2, 0, 2);
    subscribe(d, "moat/dev1/down/x/#", 1, 0, 1);
    tconn *s = service(h, CODEC_V5);
    publish(s, "moat/dev1/down/a", "one", 1, false, 1);
    expect_ack(s, CODEC_PUBACK, 1, 0);
    publish(s, "moat/dev1/down/x/b", "two", 2, false, 2);
    expect_ack(s, CODEC_PUBREC, 2, 0);
    uint16_t id1 = expect_publish(d, "moat/dev1/down/a", "one", 1, false).packet_id;
    uint16_t id2 = expect_publish(d, "moat/dev1/down/x/b", "two", 2, false).packet_id;
    expect_nothing(d);

    h_restart(h);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    codec_packet p = expect_packet(d, CODEC_PUBLISH);
    assert_true(p.u.publish.dup);
    assert_int_equal(p.u.publish.qos, 1);
    assert_int_equal(p.u.publish.packet_id, id1);
    assert_bytes(p.u.publish.payload, "one");
    p = expect_packet(d, CODEC_PUBLISH);
    assert_true(p.u.publish.dup);
    assert_int_equal(p.u.publish.qos, 2);
    assert_int_equal(p.u.publish.packet_id, id2);
    assert_bytes(p.u.publish.payload, "two");
    expect_nothing(d);
    h_free(h);
    tmpstore_close(&ts);
}

/* The store under test with its commit, begin or queue_put made to fail on
 * demand. The others go straight to the SQLite store. */
static struct {
    broker_store *inner;
    bool fail; /* commit */
    bool fail_begin;
    bool fail_queue; /* queue_put, without the SQLite store knowing */
} failing;

static bool failing_commit(void *ctx)
{
    if (failing.fail) {
        failing.inner->rollback(ctx);
        return false;
    }
    return failing.inner->commit(ctx);
}

static bool failing_begin(void *ctx)
{
    return !failing.fail_begin && failing.inner->begin(ctx);
}

static bool failing_queue_put(void *ctx, const store_queue_row *row)
{
    return !failing.fail_queue && failing.inner->queue_put(ctx, row);
}

static broker_store failing_store(broker_store *inner)
{
    broker_store wrapped = *inner;
    wrapped.commit = failing_commit;
    wrapped.begin = failing_begin;
    wrapped.queue_put = failing_queue_put;
    failing.inner = inner;
    failing.fail = failing.fail_begin = failing.fail_queue = false;
    return wrapped;
}

static void test_store_commit_fails(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    broker_store wrapped = failing_store(ts.st);
    harness *h = h_new_with(NULL, &wrapped);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    tconn *w = join_as(h, BROKER_SERVICE, "svc", "svc/w", CODEC_V5, false, false);

    failing.fail = true;
    publish(s, "moat/dev1/down/cmd", "lost", 1, false, 1); /* feeds and ends the pass */
    assert_int_equal(h->events[BROKER_EV_STORE_FAILED], 1);
    expect_nothing(s); /* no PUBACK for what was not stored */
    assert_true(s->closing);
    assert_false(w->closing);

    /* broker_commit itself reports it. */
    uint8_t pkt[128];
    size_t n;
    codec_publish p = {
        .qos = 1, .topic = str("moat/dev1/down/cmd"), .packet_id = 2, .payload = str("lost too")};
    assert_int_equal(codec_encode_publish(&p, CODEC_V5, pkt, sizeof(pkt), &n), CODEC_OK);
    input(w, pkt, n);
    assert_false(broker_commit(h->b));
    pass(h);
    expect_nothing(w);
    assert_true(w->closing);
    failing.fail = false;
    h_free(h);
    tmpstore_close(&ts);
}

/* A store that cannot begin its transaction (SQLITE_BUSY, say), or whose
 * write fails without the store refusing the commit by itself: the pass is
 * lost all the same, so nothing it owed may be acknowledged (store.h). */
static void test_store_write_fails(void **state)
{
    (void)state;
    tmpstore ts;
    tmpstore_open(&ts);
    broker_store wrapped = failing_store(ts.st);
    harness *h = h_new_with(NULL, &wrapped);
    tconn *d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, false);
    subscribe(d, "moat/dev1/down/#", 1, 0, 1);
    gone(d);
    tconn *s = service(h, CODEC_V5);
    tconn *w = join_as(h, BROKER_SERVICE, "svc", "svc/w", CODEC_V5, false, false);

    failing.fail_begin = true;
    uint8_t pkt[128];
    size_t n;
    codec_publish p = {
        .qos = 1, .topic = str("moat/dev1/down/cmd"), .packet_id = 1, .payload = str("lost")};
    assert_int_equal(codec_encode_publish(&p, CODEC_V5, pkt, sizeof(pkt), &n), CODEC_OK);
    input(s, pkt, n);
    assert_false(broker_commit(h->b));
    pass(h);
    expect_nothing(s);
    assert_true(s->closing);
    assert_false(w->closing);
    failing.fail_begin = false;

    failing.fail_queue = true;
    p.packet_id = 2;
    assert_int_equal(codec_encode_publish(&p, CODEC_V5, pkt, sizeof(pkt), &n), CODEC_OK);
    input(w, pkt, n);
    assert_false(broker_commit(h->b));
    pass(h);
    expect_nothing(w);
    assert_true(w->closing);
    failing.fail_queue = false;

    /* The store works again: so does the broker. */
    tconn *v = join_as(h, BROKER_SERVICE, "svc", "svc/v", CODEC_V5, false, false);
    publish(v, "moat/dev1/down/cmd", "kept", 1, false, 3);
    expect_ack(v, CODEC_PUBACK, 3, 0);
    h_restart(h);
    d = join_as(h, BROKER_DEVICE, "dev1", "dev1", CODEC_V5, true, true);
    expect_publish(d, "moat/dev1/down/cmd", "kept", 1, false);
    expect_nothing(d);
    h_free(h);
    tmpstore_close(&ts);
}

/* ---- several workers: the relay hooks (broker_relay) ---------------------- */

/* What a broker forwarded, copied (the views die with the pass). */
typedef struct captured {
    broker_fwd f;
    uint8_t mem[1024];
} captured;

typedef struct test_relay {
    broker_relay relay;
    captured got[16];
    size_t n;
    uint64_t ids;
    bool local; /* forward says nobody else stores it: acks need not wait */
} test_relay;

static bool capture_forward(void *ctx, const broker_fwd *f)
{
    test_relay *r = ctx;
    assert_true(r->n < 16);
    captured *c = &r->got[r->n++];
    c->f = *f;
    size_t at = 0;
    codec_bytes *parts[] = {&c->f.topic, &c->f.payload, &c->f.props, &c->f.origin};
    for (size_t i = 0; i < 4; i++) {
        assert_true(at + parts[i]->len <= sizeof(c->mem));
        if (parts[i]->len)
            memcpy(c->mem + at, parts[i]->ptr, parts[i]->len);
        parts[i]->ptr = c->mem + at;
        at += parts[i]->len;
    }
    return !r->local; /* as if another worker stores it: acks wait */
}

static uint64_t counting_id(void *ctx)
{
    test_relay *r = ctx;
    return ++r->ids;
}

static harness *h_relay(test_relay *r, bool replica)
{
    memset(r, 0, sizeof(*r));
    r->relay = (broker_relay){.ctx = r,
                              .forward = capture_forward,
                              .next_id = counting_id,
                              .retained_replica = replica,
                              .hold_acks = true};
    harness *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    h->now = T0;
    test_limits(&h->cfg.limits);
    h->cfg.log = log_event;
    h->cfg.log_ctx = h;
    h->cfg.policies_for = policies_for;
    h->cfg.policies_ctx = h;
    h->cfg.relay = &r->relay;
    h->b = broker_new(&h->cfg, h->now);
    assert_non_null(h->b);
    return h;
}

/* A PUBACK waits for release; the message crosses as a copy that routes on
 * the other broker; a match there turns the provisional 0x10 into 0x00. */
static void test_relay_holds_acks_until_released(void **state)
{
    (void)state;
    test_relay ra, rb;
    harness *a = h_relay(&ra, false), *b = h_relay(&rb, true);
    tconn *pub = join(a, BROKER_SERVICE, "pub", CODEC_V5);
    tconn *sub = join(b, BROKER_SERVICE, "sub", CODEC_V5);
    subscribe(sub, "t/#", 1, 0, 1);

    uint64_t p1 = broker_pass(a->b);
    publish(pub, "t/1", "one", 1, false, 7);
    expect_nothing(pub); /* held */
    assert_int_equal(ra.n, 1);
    assert_true(bytes_is(ra.got[0].f.payload, "one"));
    assert_int_equal(ra.got[0].f.flags, BROKER_FWD_ROUTE);
    assert_int_not_equal(ra.got[0].f.gid, 0);

    assert_true(broker_inject(b->b, &ra.got[0].f, b->now));
    assert_true(pass(b));
    expect_publish(sub, "t/1", "one", 1, false);

    broker_ack_matched(a->b, ra.got[0].f.gid);
    broker_release_acks(a->b, p1, true);
    assert_true(pass(a));
    expect_ack(pub, CODEC_PUBACK, 7, 0x00);

    /* Nobody anywhere: 0x10 stays. */
    uint64_t p2 = broker_pass(a->b);
    publish(pub, "x/1", "two", 1, false, 8);
    expect_nothing(pub);
    assert_false(broker_inject(b->b, &ra.got[1].f, b->now));
    broker_release_acks(a->b, p2, true);
    assert_true(pass(a));
    expect_ack(pub, CODEC_PUBACK, 8, 0x10);
    h_free(a);
    h_free(b);
}

/* A pass lost on another worker: no acknowledgement, the publisher closed. */
static void test_relay_lost_pass_closes_unacknowledged(void **state)
{
    (void)state;
    test_relay ra;
    harness *a = h_relay(&ra, false);
    tconn *pub = join(a, BROKER_SERVICE, "pub", CODEC_V5);
    uint64_t p = broker_pass(a->b);
    publish(pub, "t/1", "one", 1, false, 3);
    expect_nothing(pub);
    broker_release_acks(a->b, p, false);
    pass(a);
    assert_true(pub->closing);
    expect_nothing(pub);
    h_free(a);
}

/* A refusal queued behind a held ack keeps its Reason String. */
static void test_relay_held_refusal_says_why(void **state)
{
    (void)state;
    test_relay ra;
    harness *a = h_relay(&ra, false);
    tconn *dev = join(a, BROKER_DEVICE, "dev1", CODEC_V5);
    uint64_t p = broker_pass(a->b);
    publish(dev, "moat/dev1/up/a", "a", 1, false, 1);
    publish(dev, "moat/dev2/up/a", "b", 1, false, 2);
    expect_nothing(dev);
    assert_true(broker_pass(a->b) > p); /* the refusal waits for a later pass */
    broker_release_acks(a->b, broker_pass(a->b), true);
    pass(a);
    expect_ack(dev, CODEC_PUBACK, 1, 0x10);
    codec_packet q = expect_packet(dev, CODEC_PUBACK);
    assert_int_equal(q.u.ack.packet_id, 2);
    assert_int_equal(q.u.ack.reason, 0x87);
    assert_bytes(q.u.ack.props.reason_string, "not authorized by policy");
    h_free(a);
}

/* Acks stay in PUBLISH order even when released in two steps. */
static void test_relay_acks_keep_their_order(void **state)
{
    (void)state;
    test_relay ra;
    harness *a = h_relay(&ra, false);
    tconn *pub = join(a, BROKER_SERVICE, "pub", CODEC_V5);
    uint64_t p1 = broker_pass(a->b);
    publish(pub, "t/1", "a", 1, false, 1);
    uint64_t p2 = broker_pass(a->b);
    assert_true(p2 > p1);
    publish(pub, "t/2", "b", 1, false, 2);
    expect_nothing(pub);
    broker_release_acks(a->b, p1, true);
    pass(a);
    expect_ack(pub, CODEC_PUBACK, 1, 0x10);
    expect_nothing(pub);
    broker_release_acks(a->b, p2, true);
    pass(a);
    expect_ack(pub, CODEC_PUBACK, 2, 0x10);
    h_free(a);
}

/* A replica does not set retained messages itself: the authority stores the
 * change and hands it back as a replica, so every worker sees one order. */
static void test_relay_retained_goes_through_the_authority(void **state)
{
    (void)state;
    test_relay ra, rb;
    harness *auth = h_relay(&ra, false), *rep = h_relay(&rb, true);
    tconn *pub = join(rep, BROKER_SERVICE, "pub", CODEC_V5);
    publish(pub, "t/r", "kept", 0, true, 0);
    pass(rep);
    tconn *s1 = join(rep, BROKER_SERVICE, "s1", CODEC_V5);
    subscribe(s1, "t/r", 0, 0, 0);
    expect_nothing(s1); /* not applied locally */
    assert_int_equal(rb.n, 1);
    assert_true(rb.got[0].f.retain);

    broker_fwd to_auth = rb.got[0].f;
    to_auth.flags = BROKER_FWD_ROUTE | BROKER_FWD_RETAIN_STORE;
    broker_inject(auth->b, &to_auth, auth->now);
    assert_int_equal(ra.n, 1);
    assert_int_equal(ra.got[0].f.flags, BROKER_FWD_RETAIN_REPLICA);
    tconn *s2 = join(auth, BROKER_SERVICE, "s2", CODEC_V5);
    subscribe(s2, "t/r", 0, 0, 0);
    expect_publish(s2, "t/r", "kept", 0, true);

    broker_inject(rep->b, &ra.got[0].f, rep->now);
    tconn *s3 = join(rep, BROKER_SERVICE, "s3", CODEC_V5);
    subscribe(s3, "t/r", 0, 0, 0);
    expect_publish(s3, "t/r", "kept", 0, true);
    h_free(auth);
    h_free(rep);
}

/* An ack that nothing else must store goes out with its pass, unless an
 * earlier held ack of the same connection is still waiting (order). */
static void test_relay_unneeded_acks_are_not_held(void **state)
{
    (void)state;
    test_relay ra;
    harness *a = h_relay(&ra, false);
    tconn *pub = join(a, BROKER_SERVICE, "pub", CODEC_V5);
    ra.local = true;
    publish(pub, "t/1", "a", 1, false, 1);
    expect_ack(pub, CODEC_PUBACK, 1, 0x10);
    ra.local = false;
    uint64_t p2 = broker_pass(a->b);
    publish(pub, "t/2", "b", 1, false, 2);
    ra.local = true;
    publish(pub, "t/3", "c", 1, false, 3);
    expect_nothing(pub); /* 3 waits behind 2 */
    broker_release_acks(a->b, p2 + 1, true);
    pass(a);
    expect_ack(pub, CODEC_PUBACK, 2, 0x10);
    expect_ack(pub, CODEC_PUBACK, 3, 0x10);
    h_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_v311),
        cmocka_unit_test(test_connect_v5_properties),
        cmocka_unit_test(test_connect_identity),
        cmocka_unit_test(test_publish_refused_v5),
        cmocka_unit_test(test_publish_refused_v311),
        cmocka_unit_test(test_subscribe_refused),
        cmocka_unit_test(test_routing_qos_downgrade),
        cmocka_unit_test(test_overlapping_subscriptions),
        cmocka_unit_test(test_qos1_flows),
        cmocka_unit_test(test_qos2_inbound),
        cmocka_unit_test(test_qos2_outbound),
        cmocka_unit_test(test_resume_resends),
        cmocka_unit_test(test_receive_maximum),
        cmocka_unit_test(test_retained),
        cmocka_unit_test(test_retain_handling),
        cmocka_unit_test(test_will_on_abrupt_close),
        cmocka_unit_test(test_will_not_on_disconnect),
        cmocka_unit_test(test_will_delay),
        cmocka_unit_test(test_will_delay_cancelled_by_reconnect),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_session_expiry),
        cmocka_unit_test(test_offline_session_keeps_its_principal),
        cmocka_unit_test(test_offline_queue),
        cmocka_unit_test(test_offline_qos0_not_queued),
        cmocka_unit_test(test_max_queued),
        cmocka_unit_test(test_message_expiry_while_queued),
        cmocka_unit_test(test_topic_alias_in),
        cmocka_unit_test(test_topic_alias_in_errors),
        cmocka_unit_test(test_reason_strings),
        cmocka_unit_test(test_topic_alias_out),
        cmocka_unit_test(test_topic_alias_out_oversized),
        cmocka_unit_test(test_oversized_qos1_discarded),
        cmocka_unit_test(test_shared_round_robin),
        cmocka_unit_test(test_shared_member_session_ends),
        cmocka_unit_test(test_no_local),
        cmocka_unit_test(test_reauthorize_revoked),
        cmocka_unit_test(test_reauthorize_policy_change),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_malformed_input),
        cmocka_unit_test(test_durable_restart),
        cmocka_unit_test(test_wills_survive_a_crash),
        cmocka_unit_test(test_shared_mark_survives_a_restart),
        cmocka_unit_test(test_session_online_at_restart_expires_after_it),
        cmocka_unit_test(test_durable_overlapping),
        cmocka_unit_test(test_store_commit_fails),
        cmocka_unit_test(test_store_write_fails),
        cmocka_unit_test(test_relay_holds_acks_until_released),
        cmocka_unit_test(test_relay_lost_pass_closes_unacknowledged),
        cmocka_unit_test(test_relay_acks_keep_their_order),
        cmocka_unit_test(test_relay_held_refusal_says_why),
        cmocka_unit_test(test_relay_unneeded_acks_are_not_held),
        cmocka_unit_test(test_relay_retained_goes_through_the_authority),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
