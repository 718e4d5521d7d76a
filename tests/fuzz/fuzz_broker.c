/*
 * fuzz_broker — the hub's broker (src/hub/broker.h) driven by a fuzzed
 * script of connections, bytes, time and registry changes, with every byte it
 * sends checked.
 *
 * The harness plays the server: it opens connections for a few principals,
 * feeds them bytes, ends loop passes (broker_commit, broker_dirty,
 * broker_closing), closes what the broker asks to close, runs the timers with
 * a clock that only moves forward, re-authorizes, shuts down and restarts.
 * The store is a fake (store.h) that keeps nothing and can be told to fail
 * its begin, its commit or its writes, so the durability paths run without
 * SQLite.
 *
 * The input: byte 0 sets up the run (bits 0-1: connections opened at the
 * start, 1..4; bits 2-3: store: none, working, failing on demand, failing on
 * demand; bits 4-5: limits variant; bit 6: a publish rate limit). Then one
 * byte per initial connection: bits 0-1 the principal (devices d0 and d1,
 * services svc and ops), bit 2 MQTT 5, bit 3 send a well-formed CONNECT for
 * it at once. The rest is a list of operations: an opcode byte whose high
 * nibble picks a connection (the first open slot from there) and whose low
 * nibble is the operation, then its operands:
 *   0-4  raw bytes: a length byte and that many bytes, for broker_input
 *   5    end of the pass (commit, send, note closings); bit 4 clear: close
 *        what the broker listed, at once
 *   6-10 a well-formed CONNECT, SUBSCRIBE or UNSUBSCRIBE, PUBLISH,
 *        acknowledgement (of a packet id the broker used lately), DISCONNECT
 *        or PINGREQ, each built from a few operand bytes (see op_connect ...)
 *        so that the fuzzer reaches deep session states quickly
 *   11   one byte: bit 0 the connection goes (broker_conn_gone), else a new
 *        one opens for principal bits 1-2
 *   12   time passes (byte squared x 10 ms), broker_tick
 *   13   the registry changes: revoked principals (bits 0-3), one principal
 *        (bits 4-5) gets another policy or none (bits 6-7); reauthorize
 *   14   the store's failures: begin, commit, writes (bits 0-2)
 *   15   bit 4: broker_shutdown; else a restart (broker_free, broker_new)
 *
 * Invariants (abort() on failure, so libFuzzer keeps the input), besides no
 * crash, no undefined behaviour and no leak:
 *  - every byte the broker outputs decodes as a sequence of valid server
 *    packets (codec_decode with CODEC_FROM_SERVER, fuzz_walk_packet) in the
 *    version the client asked for, which the harness reads from the client's
 *    own first packet (framed as the broker frames it), not from the broker;
 *  - nothing is sent before the first packet was decided; the first packet
 *    sent is a CONNACK, and there is only one; after a refusing CONNACK or a
 *    DISCONNECT nothing more, and the connection is listed for closing by the
 *    end of the pass, as is one whose output a failed commit dropped; no
 *    DISCONNECT to a 3.1.1 client; once listed for closing, a connection gets
 *    no more bytes;
 *  - no packet is larger than the client's Maximum Packet Size; a topic alias
 *    is within the client's Topic Alias Maximum and is set (with its topic)
 *    before it is used alone;
 *  - a QoS 1/2 PUBLISH never reuses a packet id still in flight and never
 *    passes the client's Receive Maximum (the in-flight set is modelled from
 *    the PUBLISHes sent, PUBRELs resent on a resumed session, and the
 *    acknowledgements the client sent back; the broker is handed one client
 *    packet at a time so that each answer is matched to its packet); DUP is
 *    set only on a resumed session;
 *  - broker_tick's next deadline is in the future; the broker's count of
 *    connections is the harness's;
 *  - the store is written only inside a transaction, never while the broker
 *    is being freed, and transactions do not nest.
 */
#include "fuzz_common.h"

#include "broker.h"
#include "policy.h"
#include "store.h"

#define MAX_CONNS    8
#define MAX_INFLIGHT 64
#define T_START      1000000u

/* ---- principals and policies ---------------------------------------------- */

static const broker_principal principals[4] = {
    {BROKER_DEVICE, "d0"},
    {BROKER_DEVICE, "d1"},
    {BROKER_SERVICE, "svc"},
    {BROKER_SERVICE, "ops"},
};

static const char *const policy_texts[] = {
    /* 0: the device default */
    ("allow connect\nallow publish moat/${device}/up/#\n"
     "allow subscribe moat/${device}/down/#\nallow receive moat/${device}/down/#\n"),
    /* 1: a service that may do anything */
    "allow connect\nallow all #\n",
    /* 2: a service kept to moat/, not allowed to read devices' uplinks */
    "allow connect\nallow all moat/#\ndeny subscribe moat/+/up/#\ndeny receive moat/d1/#\n",
    /* 3: a device that lost its subscribe rights */
    "allow connect\nallow publish moat/${device}/up/#\n",
};
#define NPOLICY (sizeof(policy_texts) / sizeof(policy_texts[0]))

typedef struct run run;

static policy_doc *docs[NPOLICY];

static void parse_policies(void)
{
    static bool parsed;
    if (parsed)
        return;
    for (size_t i = 0; i < NPOLICY; i++) {
        char err[128];
        FUZZ_CHECK(policy_parse(policy_texts[i], strlen(policy_texts[i]), &docs[i], err,
                                sizeof(err)) == POLICY_OK);
    }
    parsed = true;
}

/* ---- the fake store --------------------------------------------------------- */

typedef struct fake_store {
    bool in_txn;
    bool freeing; /* broker_free is running: no write may happen */
    bool fail_begin, fail_commit, fail_write;
} fake_store;

static bool fs_begin(void *ctx)
{
    fake_store *f = ctx;
    FUZZ_CHECK(!f->in_txn); /* the broker begins once per pass */
    FUZZ_CHECK(!f->freeing);
    if (f->fail_begin)
        return false;
    f->in_txn = true;
    return true;
}

static bool fs_commit(void *ctx)
{
    fake_store *f = ctx;
    FUZZ_CHECK(f->in_txn);
    if (f->fail_commit)
        return false; /* still open: the broker must roll it back */
    f->in_txn = false;
    return true;
}

static void fs_rollback(void *ctx)
{
    fake_store *f = ctx;
    f->in_txn = false;
}

static bool fs_load(void *ctx, const store_loader *loader)
{
    (void)ctx;
    (void)loader;
    return true;
}

static bool fs_write(fake_store *f)
{
    FUZZ_CHECK(f->in_txn);
    FUZZ_CHECK(!f->freeing);
    return !f->fail_write;
}

static bool fs_msg_put(void *ctx, const store_msg_row *row)
{
    FUZZ_CHECK(row->id != 0);
    return fs_write(ctx);
}

static bool fs_msg_delete(void *ctx, uint64_t id)
{
    FUZZ_CHECK(id != 0);
    return fs_write(ctx);
}

static uint64_t fs_msg_max_id(void *ctx)
{
    (void)ctx;
    return 0;
}

static bool fs_session_put(void *ctx, const store_session_row *row)
{
    (void)row;
    return fs_write(ctx);
}

static bool fs_session_delete(void *ctx, codec_bytes client_id)
{
    (void)client_id;
    return fs_write(ctx);
}

static bool fs_sub_put(void *ctx, codec_bytes client_id, codec_bytes filter, uint8_t options,
                       uint32_t sub_id)
{
    (void)client_id;
    (void)sub_id;
    FUZZ_CHECK(filter.len > 0 && (options & 3) != 3);
    return fs_write(ctx);
}

static bool fs_sub_delete(void *ctx, codec_bytes client_id, codec_bytes filter)
{
    (void)client_id;
    (void)filter;
    return fs_write(ctx);
}

static bool fs_queue_put(void *ctx, const store_queue_row *row)
{
    FUZZ_CHECK(row->qos >= 1 && row->qos <= 2 && row->msg_id != 0 && row->nsub_ids <= 4);
    return fs_write(ctx);
}

static bool fs_queue_delete(void *ctx, codec_bytes client_id, uint64_t seq)
{
    (void)client_id;
    (void)seq;
    return fs_write(ctx);
}

static bool fs_qos2(void *ctx, codec_bytes client_id, uint16_t packet_id)
{
    (void)client_id;
    FUZZ_CHECK(packet_id != 0);
    return fs_write(ctx);
}

static bool fs_retained_put(void *ctx, codec_bytes topic, uint64_t msg_id)
{
    FUZZ_CHECK(topic.len > 0 && msg_id != 0);
    return fs_write(ctx);
}

static bool fs_retained_delete(void *ctx, codec_bytes topic)
{
    (void)topic;
    return fs_write(ctx);
}

static bool fs_will_put(void *ctx, const store_will_row *row)
{
    FUZZ_CHECK(row->msg_id != 0 && row->client_id.len > 0 && row->principal.len > 0);
    return fs_write(ctx);
}

static bool fs_will_delete(void *ctx, codec_bytes client_id)
{
    (void)client_id;
    return fs_write(ctx);
}

/* ---- connections as the harness sees them -------------------------------- */

typedef struct inflight {
    uint16_t id;
    uint8_t qos;
    bool released; /* QoS 2 after the client's PUBREC */
} inflight;

typedef struct fconn {
    broker_conn *c; /* NULL: slot free */
    uint8_t principal;

    /* The client's side: its byte stream, decoded as the broker decodes it. */
    uint8_t in[8192];
    size_t in_len;
    bool in_stopped;     /* a decode error, or more than the harness keeps */
    bool first_decided;  /* the first packet was decoded or refused */
    uint8_t version;     /* what the client's first packet asked for */
    uint32_t max_packet; /* 0: none */
    uint16_t receive_max;
    uint16_t alias_max;

    /* The server's side. */
    size_t out_checked; /* bytes of the broker's output buffer checked */
    bool got_connack;
    bool resumed;   /* CONNACK said session present */
    bool resending; /* right after that CONNACK: PUBRELs owed from before */
    bool ended;     /* refusing CONNACK or DISCONNECT seen */
    bool closing;   /* handed out by broker_closing */
    bool dropped;   /* output dropped by a failed commit */
    bool model_ok;  /* the in-flight model is complete */
    inflight fl[MAX_INFLIGHT];
    size_t nfl;
    uint8_t alias_set[(65535 / 8) + 1];
    uint16_t last_ids[4]; /* packet ids the server used lately, for acks */
} fconn;

struct run {
    broker *b;
    broker_config cfg;
    fake_store fs;
    broker_store store;
    uint64_t now;
    fconn conns[MAX_CONNS];
    uint8_t policy_of[4]; /* index into policy_texts per principal */
    uint8_t revoked;      /* bit per principal */
};

static policy_set *policies_for(void *ctx, const broker_principal *who)
{
    run *r = ctx;
    size_t p = 0;
    while (p < 4 && strcmp(principals[p].id, who->id) != 0)
        p++;
    FUZZ_CHECK(p < 4 && principals[p].kind == who->kind);
    uint8_t which = r->policy_of[p];
    if (which >= NPOLICY)
        return NULL; /* policies that failed to load */
    codec_bytes id = {(const uint8_t *)who->id, strlen(who->id)};
    policy_vars vars = {.device = who->kind == BROKER_DEVICE ? id : (codec_bytes){NULL, 0},
                        .service = who->kind == BROKER_SERVICE ? id : (codec_bytes){NULL, 0}};
    const policy_doc *d[1] = {docs[which]};
    policy_set *set = NULL;
    if (policy_set_build(d, 1, &vars, &set) != POLICY_OK)
        return NULL;
    return set;
}

static bool still_active(void *ctx, const broker_principal *who, void *io)
{
    run *r = ctx;
    fconn *f = io;
    FUZZ_CHECK(f >= r->conns && f < r->conns + MAX_CONNS && f->c);
    FUZZ_CHECK(strcmp(principals[f->principal].id, who->id) == 0);
    return !((r->revoked >> f->principal) & 1);
}

static void log_event(void *ctx, broker_event ev, const broker_principal *who, const char *detail)
{
    (void)ctx;
    (void)who;
    FUZZ_CHECK(ev <= BROKER_EV_STORE_FAILED);
    FUZZ_CHECK(memchr(detail, '\0', 512) != NULL);
}

/* FUZZ_BROKER_TRACE=1 in the environment: print the packets both ways, for
 * reading a crash. */
static bool tracing(void)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FUZZ_BROKER_TRACE") != NULL;
    return on;
}

static void trace(const char *dir, const fconn *f, const codec_packet *p)
{
    if (!tracing())
        return;
    unsigned id = 0, flags = 0;
    if (p->type == CODEC_PUBLISH) {
        id = p->u.publish.packet_id;
        flags = (unsigned)(p->u.publish.dup << 3 | p->u.publish.qos << 1 | p->u.publish.retain);
    } else if (p->type >= CODEC_PUBACK && p->type <= CODEC_PUBCOMP) {
        id = p->u.ack.packet_id;
        flags = p->u.ack.reason;
    } else if (p->type == CODEC_CONNACK) {
        flags = (unsigned)(p->u.connack.session_present << 8 | p->u.connack.reason);
    }
    fprintf(stderr, "%s principal %u: %s id %u flags 0x%x\n", dir, (unsigned)f->principal,
            codec_packet_name(p->type), id, flags);
}

/* ---- the client's stream ------------------------------------------------- */

static inflight *fl_find(fconn *f, uint16_t id)
{
    for (size_t i = 0; i < f->nfl; i++)
        if (f->fl[i].id == id)
            return &f->fl[i];
    return NULL;
}

static void fl_remove(fconn *f, inflight *e)
{
    *e = f->fl[--f->nfl];
}

/* A packet the client sent, as the broker will have read it. */
static void client_packet(run *r, fconn *f, const codec_packet *p)
{
    trace("->", f, p);
    if (p->type == CODEC_CONNECT) {
        const codec_props *props = &p->u.connect.props;
        f->max_packet =
            CODEC_HAS(props, CODEC_PROP_MAXIMUM_PACKET_SIZE) ? props->maximum_packet_size : 0;
        f->receive_max =
            CODEC_HAS(props, CODEC_PROP_RECEIVE_MAXIMUM) ? props->receive_maximum : 65535;
        f->alias_max =
            CODEC_HAS(props, CODEC_PROP_TOPIC_ALIAS_MAXIMUM) ? props->topic_alias_maximum : 0;
        return;
    }
    f->resending = false; /* what follows answers this packet */
    inflight *e;
    const codec_ack *a = &p->u.ack;
    switch (p->type) {
    case CODEC_PUBACK:
        if ((e = fl_find(f, a->packet_id)) && e->qos == 1 && !e->released)
            fl_remove(f, e);
        break;
    case CODEC_PUBREC:
        if ((e = fl_find(f, a->packet_id)) && e->qos == 2 && !e->released) {
            if (a->reason >= 0x80)
                fl_remove(f, e);
            else
                e->released = true;
        }
        break;
    case CODEC_PUBCOMP:
        if ((e = fl_find(f, a->packet_id)) && e->qos == 2 && e->released)
            fl_remove(f, e);
        break;
    default:
        break;
    }
    (void)r;
}

/* Mirror the broker's framing of the client's bytes: take them up to the
 * end of the next complete packet (all of them when none completes, or when
 * the harness stopped following) and return how many were taken, so that
 * the broker is handed one packet at a time and what it sends can be told
 * apart per packet. */
static size_t client_bytes(run *r, fconn *f, const uint8_t *data, size_t len)
{
    if (f->in_stopped)
        return len;
    size_t old = f->in_len;
    size_t take = len < sizeof(f->in) - old ? len : sizeof(f->in) - old;
    if (take == 0) {
        f->in_stopped = true; /* more than the harness keeps: drop the model */
        f->model_ok = false;
        return len;
    }
    memcpy(f->in + old, data, take);
    f->in_len += take;
    bool before = !f->first_decided;
    codec_decode_opts o = {.version = before ? 0 : f->version,
                           .sender = CODEC_FROM_CLIENT,
                           .max_packet = before ? r->cfg.limits.max_packet_before_connect
                                                : r->cfg.limits.max_packet_size};
    codec_packet p;
    size_t used;
    codec_status st = codec_decode(f->in, f->in_len, &o, &p, &used);
    if (st == CODEC_NEED_MORE)
        return take;
    if (before) {
        f->first_decided = true;
        f->version = p.type == CODEC_CONNECT ? p.u.connect.protocol_version : 0;
        /* An unsupported level is answered in the 3.1.1 form (the MQTT 5
         * form when level 5 was asked under another protocol name). */
        if (st == CODEC_ERR_BAD_VERSION)
            f->version = f->version == CODEC_V5 ? CODEC_V5 : CODEC_V311;
    }
    if (st != CODEC_OK) {
        f->in_stopped = true; /* the broker closes the connection */
        return len;
    }
    FUZZ_CHECK(used > old && used <= f->in_len);
    client_packet(r, f, &p);
    f->in_len = 0; /* the bytes after the packet come again in the next call */
    return used - old;
}

/* ---- the server's output -------------------------------------------------- */

static void remember_id(fconn *f, uint16_t id)
{
    memmove(f->last_ids + 1, f->last_ids, sizeof(f->last_ids) - sizeof(f->last_ids[0]));
    f->last_ids[0] = id;
}

static void server_packet(fconn *f, const codec_packet *p, size_t size)
{
    trace("<-", f, p);
    FUZZ_CHECK(!f->ended);
    FUZZ_CHECK(f->max_packet == 0 || size <= f->max_packet);
    if (!f->got_connack) {
        FUZZ_CHECK(p->type == CODEC_CONNACK);
        f->got_connack = true;
        f->resumed = f->resending = p->u.connack.session_present;
        if (p->u.connack.reason != 0)
            f->ended = true;
        return;
    }
    FUZZ_CHECK(p->type != CODEC_CONNACK);
    /* A resumed session's PUBRELs come right after the CONNACK, among DUP
     * PUBLISHes; those may also wait for room in the Receive Maximum. */
    if (!(p->type == CODEC_PUBREL || (p->type == CODEC_PUBLISH && p->u.publish.dup)))
        f->resending = false;
    switch (p->type) {
    case CODEC_DISCONNECT:
        FUZZ_CHECK(f->version == CODEC_V5);
        f->ended = true;
        break;
    case CODEC_PUBLISH: {
        const codec_publish *pub = &p->u.publish;
        if (CODEC_HAS(&pub->props, CODEC_PROP_TOPIC_ALIAS)) {
            uint16_t a = pub->props.topic_alias;
            FUZZ_CHECK(a >= 1 && a <= f->alias_max);
            if (pub->topic.len)
                f->alias_set[a / 8] |= (uint8_t)(1u << (a % 8));
            else
                FUZZ_CHECK((f->alias_set[a / 8] >> (a % 8)) & 1);
        } else {
            FUZZ_CHECK(pub->topic.len > 0);
        }
        if (pub->qos == 0)
            break;
        remember_id(f, pub->packet_id);
        inflight *e = fl_find(f, pub->packet_id);
        FUZZ_CHECK(!pub->dup || f->resumed); /* a DUP is sent on an earlier connection */
        if (f->model_ok) {
            FUZZ_CHECK(e == NULL); /* the id is not in use */
            FUZZ_CHECK(f->nfl < f->receive_max);
        }
        if (f->nfl < MAX_INFLIGHT)
            f->fl[f->nfl++] = (inflight){pub->packet_id, pub->qos, false};
        else
            f->model_ok = false;
        break;
    }
    case CODEC_PUBREL: {
        remember_id(f, p->u.ack.packet_id);
        if (f->resending) { /* released on an earlier connection */
            FUZZ_CHECK(p->u.ack.reason == 0 && fl_find(f, p->u.ack.packet_id) == NULL);
            if (f->nfl < MAX_INFLIGHT)
                f->fl[f->nfl++] = (inflight){p->u.ack.packet_id, 2, true};
            else
                f->model_ok = false;
        }
        break;
    }
    default:
        break;
    }
}

/* Check what the broker appended to f's output since the last look. */
static void check_output(fconn *f)
{
    if (!f->c)
        return;
    buf *o = broker_output(f->c);
    if (o->len < f->out_checked) {
        f->out_checked = 0; /* dropped by a failed commit: never sent */
        f->dropped = true;
    }
    if (o->len == f->out_checked)
        return;
    FUZZ_CHECK(!f->closing); /* nothing more once listed for closing */
    FUZZ_CHECK(f->first_decided);
    FUZZ_CHECK(f->version == CODEC_V311 || f->version == CODEC_V5);
    const uint8_t *data = buf_ptr(o);
    size_t pos = f->out_checked;
    while (pos < o->len) {
        codec_decode_opts opts = {.version = f->version, .sender = CODEC_FROM_SERVER};
        codec_packet p;
        size_t used;
        codec_status st = codec_decode(data + pos, o->len - pos, &opts, &p, &used);
        if (st != CODEC_OK) {
            fprintf(stderr, "server output does not decode: %s\n", codec_status_name(st));
            abort();
        }
        fuzz_walk_packet(&p, f->version, CODEC_FROM_SERVER, (codec_bytes){data + pos, used});
        server_packet(f, &p, used);
        pos += used;
    }
    f->out_checked = pos;
}

static void check_all(run *r)
{
    for (size_t i = 0; i < MAX_CONNS; i++)
        check_output(&r->conns[i]);
}

/* ---- the server's moves ---------------------------------------------------- */

static fconn *conn_at(run *r, uint8_t sel)
{
    for (size_t k = 0; k < MAX_CONNS; k++) {
        fconn *f = &r->conns[(sel + k) % MAX_CONNS];
        if (f->c)
            return f;
    }
    return NULL;
}

static fconn *open_conn(run *r, uint8_t principal)
{
    for (size_t i = 0; i < MAX_CONNS; i++) {
        fconn *f = &r->conns[i];
        if (f->c)
            continue;
        memset(f, 0, sizeof(*f));
        f->principal = principal & 3;
        f->receive_max = 65535;
        f->model_ok = true;
        f->c = broker_conn_open(r->b, &principals[f->principal], f, r->now);
        FUZZ_CHECK(f->c != NULL);
        FUZZ_CHECK(broker_conn_io(f->c) == f);
        FUZZ_CHECK(strcmp(broker_conn_principal(f->c)->id, principals[f->principal].id) == 0);
        return f;
    }
    return NULL;
}

static void conn_gone(run *r, fconn *f)
{
    check_output(f);
    broker_conn_gone(r->b, f->c, r->now);
    f->c = NULL;
    check_all(r); /* a will may have gone out */
}

static void feed(run *r, fconn *f, const uint8_t *data, size_t len)
{
    while (len > 0) {
        size_t n = client_bytes(r, f, data, len);
        broker_input(r->b, f->c, data, n, r->now);
        check_all(r);
        data += n;
        len -= n;
    }
}

/* End a loop pass: commit, send, note the closings; close them if asked. */
static void end_pass(run *r, bool close_now)
{
    for (int round = 0; round < 8; round++) {
        (void)broker_commit(r->b);
        check_all(r);
        broker_conn **list;
        size_t n = broker_dirty(r->b, &list);
        if (n == 0)
            break;
        broker_conn *sent[MAX_CONNS * 4];
        FUZZ_CHECK(n <= MAX_CONNS);
        memcpy(sent, list, n * sizeof(*list));
        for (size_t i = 0; i < n; i++) {
            fconn *f = broker_conn_io(sent[i]);
            FUZZ_CHECK(f >= r->conns && f < r->conns + MAX_CONNS && f->c == sent[i]);
            buf *o = broker_output(sent[i]);
            FUZZ_CHECK(f->out_checked == o->len);
            buf_consume(o, o->len);
            f->out_checked = 0;
        }
        for (size_t i = 0; i < n; i++)
            broker_output_drained(r->b, sent[i], r->now);
        check_all(r);
    }
    broker_conn **list;
    size_t n = broker_closing(r->b, &list);
    fconn *closing[MAX_CONNS];
    FUZZ_CHECK(n <= MAX_CONNS);
    for (size_t i = 0; i < n; i++) {
        fconn *f = broker_conn_io(list[i]);
        FUZZ_CHECK(f >= r->conns && f < r->conns + MAX_CONNS && f->c == list[i]);
        f->closing = true;
        closing[i] = f;
    }
    /* A refusing CONNACK or a DISCONNECT means the connection closes; so
     * does what a failed commit owed. */
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (r->conns[i].c && (r->conns[i].ended || r->conns[i].dropped))
            FUZZ_CHECK(r->conns[i].closing);
    if (close_now)
        for (size_t i = 0; i < n; i++)
            conn_gone(r, closing[i]);
}

/* ---- well-formed packets from a few bytes ---------------------------------- */

typedef struct cursor {
    const uint8_t *p;
    size_t n, pos;
} cursor;

static uint8_t next(cursor *c)
{
    return c->pos < c->n ? c->p[c->pos++] : 0;
}

/*
 * A topic name, or with wildcards a filter, from two bytes, shaped like the
 * topics the policies speak of so that most are allowed somewhere:
 *   a: bits 0-1 levels - 1; bit 2 first level "x" or "$SYS" instead of
 *      "moat"; bits 3-4 second level d0, d1, svc or (filters) "+";
 *      bit 5 third level up or down; bits 6-7 fourth level a, b, or
 *      (filters) "+" and "#";
 *   b: bits 6-7 both set: a shared subscription, group g0 or g1 (bit 0);
 *      bit 5: (filters) the last level is "#".
 */
static size_t make_topic(cursor *c, char *out, size_t cap, bool filter)
{
    static const char *const first[2][2] = {{"moat", "moat"}, {"x", "$SYS"}};
    static const char *const second[4] = {"d0", "d1", "svc", "+"};
    static const char *const fourth[4] = {"a", "b", "+", "#"};
    uint8_t a = next(c), b = next(c);
    const char *lv[4] = {first[(a >> 2) & 1][b & 1], second[(a >> 3) & 3],
                         (a & 0x20) ? "down" : "up", fourth[(a >> 6) & 3]};
    size_t n = 1 + (a & 3);
    size_t len = 0;
    if (filter && (b & 0xC0) == 0xC0)
        len += (size_t)snprintf(out, cap, "$share/g%u/", (unsigned)(b & 1));
    for (size_t i = 0; i < n && len < cap; i++) {
        const char *l = lv[i];
        if (!filter && (l[0] == '+' || l[0] == '#'))
            l = "z";
        if (filter && i == n - 1 && (b & 0x20))
            l = "#";
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "/" : "", l);
    }
    return len < cap ? len : cap - 1;
}

static void send_packet(run *r, fconn *f, const codec_packet *p, uint8_t version)
{
    uint8_t pkt[1024];
    size_t n;
    if (codec_encode(p, version, pkt, sizeof(pkt), &n) == CODEC_OK)
        feed(r, f, pkt, n);
}

static void op_connect(run *r, fconn *f, cursor *c)
{
    uint8_t a = next(c), b = next(c);
    codec_connect cc = {.protocol_version = (a & 1) ? CODEC_V5 : CODEC_V311,
                        .clean_start = (a & 2) != 0,
                        .keep_alive = (uint16_t)((a & 4) ? (b & 0x3F) : 0)};
    char id[80];
    const char *me = principals[f->principal].id;
    switch ((a >> 3) & 3) {
    case 0:
        snprintf(id, sizeof(id), "%s", me);
        break;
    case 1:
        id[0] = '\0';
        break;
    case 2:
        snprintf(id, sizeof(id), "%s/%u", me, (unsigned)(b & 1));
        break;
    default:
        snprintf(id, sizeof(id), "%s", principals[(f->principal + 1) & 3].id);
        break;
    }
    cc.client_id = (codec_bytes){(const uint8_t *)id, strlen(id)};
    if (cc.protocol_version == CODEC_V5) {
        uint8_t p = next(c);
        if (p & 1) {
            CODEC_SET(&cc.props, CODEC_PROP_SESSION_EXPIRY);
            cc.props.session_expiry = (p & 2) ? 0xFFFFFFFFu : (uint32_t)(b >> 2);
        }
        if (p & 4) {
            CODEC_SET(&cc.props, CODEC_PROP_RECEIVE_MAXIMUM);
            cc.props.receive_maximum = (uint16_t)(1 + (p >> 6));
        }
        if (p & 8) {
            CODEC_SET(&cc.props, CODEC_PROP_TOPIC_ALIAS_MAXIMUM);
            cc.props.topic_alias_maximum = (uint16_t)((p >> 4) & 3);
        }
        if (p & 0x10) {
            CODEC_SET(&cc.props, CODEC_PROP_MAXIMUM_PACKET_SIZE);
            /* From just above the largest CONNACK the broker sends (which has
             * no room to shrink) up to where most PUBLISHes fit. */
            cc.props.maximum_packet_size = 48u + 2u * (uint32_t)(b & 0x3F);
        }
    }
    char will_topic[96];
    if (a & 0x20) {
        cc.will_flag = true;
        cc.will_qos = (uint8_t)((a >> 6) % 3);
        cc.will_retain = (b & 0x40) != 0;
        cc.will_topic =
            (codec_bytes){(const uint8_t *)will_topic, make_topic(c, will_topic, 96, false)};
        cc.will_payload = CODEC_LIT("gone");
        if (cc.protocol_version == CODEC_V5 && (b & 0x80)) {
            CODEC_SET(&cc.will_props, CODEC_PROP_WILL_DELAY);
            cc.will_props.will_delay = b & 0x0F;
        }
    }
    codec_packet p = {.type = CODEC_CONNECT, .u.connect = cc};
    send_packet(r, f, &p, cc.protocol_version);
}

static uint8_t conn_version(const fconn *f)
{
    return f->version == CODEC_V5 ? CODEC_V5 : CODEC_V311;
}

static void op_subscribe(run *r, fconn *f, cursor *c)
{
    uint8_t a = next(c);
    size_t n = 1 + (a & 1);
    char filters[2][96];
    codec_subscription list[2];
    for (size_t i = 0; i < n; i++) {
        uint8_t o = next(c);
        size_t len = make_topic(c, filters[i], sizeof(filters[i]), true);
        list[i] = (codec_subscription){.filter = {(const uint8_t *)filters[i], len},
                                       .qos = (uint8_t)(o % 3)};
        if (f->version == CODEC_V5) {
            list[i].no_local = (o & 4) != 0;
            list[i].retain_as_published = (o & 8) != 0;
            list[i].retain_handling = (uint8_t)(((o >> 4) & 3) % 3);
        }
    }
    codec_packet p = {.type = CODEC_SUBSCRIBE};
    p.u.subscribe = (codec_subscribe){.packet_id = (uint16_t)(1 + a), .count = n, .list = list};
    uint32_t sub_id = (uint32_t)(a >> 5);
    if (f->version == CODEC_V5 && sub_id) {
        p.u.subscribe.props.sub_ids = &sub_id;
        p.u.subscribe.props.sub_ids_len = 1;
    }
    if ((a & 2) && !(a & 4)) {
        codec_bytes filt = list[0].filter;
        p.type = CODEC_UNSUBSCRIBE;
        p.u.unsubscribe =
            (codec_unsubscribe){.packet_id = (uint16_t)(1 + a), .count = 1, .list = &filt};
        send_packet(r, f, &p, conn_version(f));
        return;
    }
    send_packet(r, f, &p, conn_version(f));
}

static void op_publish(run *r, fconn *f, cursor *c)
{
    uint8_t a = next(c), b = next(c);
    char topic[96];
    size_t len = make_topic(c, topic, sizeof(topic), false);
    codec_publish pub = {.qos = (uint8_t)(a % 3),
                         .retain = (a & 4) != 0,
                         .topic = {(const uint8_t *)topic, len},
                         .payload = {(const uint8_t *)"payload-payload-payload-payload", b & 31}};
    pub.packet_id = pub.qos ? (uint16_t)(1 + (b >> 5)) : 0;
    pub.dup = pub.qos && (a & 8);
    if (f->version == CODEC_V5) {
        if (a & 0x10) {
            CODEC_SET(&pub.props, CODEC_PROP_TOPIC_ALIAS);
            pub.props.topic_alias = (uint16_t)(1 + ((a >> 5) & 3));
            if (b & 0x10)
                pub.topic = (codec_bytes){NULL, 0};
        }
        if (a & 0x80) {
            CODEC_SET(&pub.props, CODEC_PROP_MESSAGE_EXPIRY);
            pub.props.message_expiry = b & 7;
        }
    }
    codec_packet p = {.type = CODEC_PUBLISH, .u.publish = pub};
    send_packet(r, f, &p, conn_version(f));
}

/* Acknowledge (or not quite) something the server sent lately. */
static void op_ack(run *r, fconn *f, cursor *c)
{
    uint8_t a = next(c);
    static const uint8_t types[4] = {CODEC_PUBACK, CODEC_PUBREC, CODEC_PUBREL, CODEC_PUBCOMP};
    codec_packet p = {.type = types[a & 3]};
    p.u.ack.packet_id = f->last_ids[(a >> 2) & 3];
    if (p.u.ack.packet_id == 0 || (a & 0x40))
        p.u.ack.packet_id = (uint16_t)(1 + (a >> 4));
    if (f->version == CODEC_V5 && (a & 0x80))
        p.u.ack.reason = p.type == CODEC_PUBREC ? 0x80 : 0x92;
    send_packet(r, f, &p, conn_version(f));
}

static void op_disconnect(run *r, fconn *f, cursor *c)
{
    uint8_t a = next(c);
    codec_packet p = {.type = (a & 3) == 3 ? CODEC_PINGREQ : CODEC_DISCONNECT};
    if (f->version == CODEC_V5) {
        p.u.disconnect.reason = (a & 1) ? 0x04 : 0x00;
        if (a & 4) {
            CODEC_SET(&p.u.disconnect.props, CODEC_PROP_SESSION_EXPIRY);
            p.u.disconnect.props.session_expiry = a >> 3;
        }
    }
    send_packet(r, f, &p, conn_version(f));
}

/* ---- the run ---------------------------------------------------------------- */

static void set_limits(broker_limits *l, uint8_t variant, bool rate)
{
    broker_limits_default(l);
    l->max_packet_size = 4096;
    l->max_packet_before_connect = 512;
    l->max_keep_alive = 60;
    l->max_session_expiry = 120;
    l->connect_timeout_ms = 2000;
    l->max_publish_rate = rate ? 5 : 0;
    l->max_queued = 32;
    switch (variant & 3) {
    case 0:
        break;
    case 1:
        l->max_queued = 4;
        l->max_inflight = 2;
        l->max_subscriptions = 3;
        break;
    case 2:
        l->topic_alias_maximum = 0;
        l->max_topic_levels = 3;
        l->max_topic_length = 16;
        break;
    default:
        l->max_output = 256; /* slow readers everywhere */
        l->max_queued = 8;
        break;
    }
    FUZZ_CHECK(l->max_queued < MAX_INFLIGHT);
}

static void start(run *r)
{
    r->b = broker_new(&r->cfg, r->now);
    FUZZ_CHECK(r->b != NULL);
}

static void stop(run *r)
{
    r->fs.freeing = true;
    broker_free(r->b);
    r->fs.freeing = false;
    r->b = NULL;
    r->fs.in_txn = false; /* what the last pass left open is abandoned */
    for (size_t i = 0; i < MAX_CONNS; i++)
        r->conns[i].c = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    parse_policies();
    static run r;
    memset(&r, 0, sizeof(r));
    cursor c = {data, size, 0};
    uint8_t setup = next(&c);
    r.now = T_START;
    set_limits(&r.cfg.limits, setup >> 4, (setup & 0x40) != 0);
    r.cfg.log = log_event;
    r.cfg.policies_for = policies_for;
    r.cfg.policies_ctx = &r;
    r.policy_of[0] = r.policy_of[1] = 0;
    r.policy_of[2] = 1;
    r.policy_of[3] = 2;
    if ((setup >> 2) & 3) {
        r.store = (broker_store){.ctx = &r.fs,
                                 .begin = fs_begin,
                                 .commit = fs_commit,
                                 .rollback = fs_rollback,
                                 .load = fs_load,
                                 .msg_put = fs_msg_put,
                                 .msg_delete = fs_msg_delete,
                                 .msg_max_id = fs_msg_max_id,
                                 .session_put = fs_session_put,
                                 .session_delete = fs_session_delete,
                                 .sub_put = fs_sub_put,
                                 .sub_delete = fs_sub_delete,
                                 .queue_put = fs_queue_put,
                                 .queue_delete = fs_queue_delete,
                                 .qos2_put = fs_qos2,
                                 .qos2_delete = fs_qos2,
                                 .retained_put = fs_retained_put,
                                 .retained_delete = fs_retained_delete,
                                 .will_put = fs_will_put,
                                 .will_delete = fs_will_delete};
        r.cfg.store = &r.store;
    }
    bool can_fail = ((setup >> 2) & 3) >= 2;
    start(&r);

    size_t initial = 1 + (setup & 3);
    for (size_t i = 0; i < initial; i++) {
        uint8_t b = next(&c);
        fconn *f = open_conn(&r, b & 3);
        if (f && (b & 8)) {
            cursor cc = {(const uint8_t[]){(b & 4) ? 0x01 : 0x00, 0x00, 0x00}, 3, 0};
            op_connect(&r, f, &cc);
        }
    }
    end_pass(&r, false);

    while (c.pos < c.n) {
        uint8_t op = next(&c);
        fconn *f = conn_at(&r, op >> 4);
        switch (op & 0x0F) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4: { /* raw bytes */
            size_t len = next(&c);
            if (len > c.n - c.pos)
                len = c.n - c.pos;
            if (f)
                feed(&r, f, c.p + c.pos, len);
            c.pos += len;
            break;
        }
        case 5:
            end_pass(&r, (op & 0x10) == 0);
            break;
        case 6:
            if (f)
                op_connect(&r, f, &c);
            break;
        case 7:
            if (f)
                op_subscribe(&r, f, &c);
            break;
        case 8:
            if (f)
                op_publish(&r, f, &c);
            break;
        case 9:
            if (f)
                op_ack(&r, f, &c);
            break;
        case 10:
            if (f)
                op_disconnect(&r, f, &c);
            break;
        case 11: { /* a connection closes or opens */
            uint8_t a = next(&c);
            if (f && (a & 1))
                conn_gone(&r, f);
            else
                (void)open_conn(&r, a >> 1);
            break;
        }
        case 12: { /* time passes */
            uint8_t t = next(&c);
            r.now += (uint64_t)t * t * 10u;
            uint64_t due = broker_tick(r.b, r.now);
            FUZZ_CHECK(due > r.now);
            check_all(&r);
            break;
        }
        case 13: { /* the registry changes */
            uint8_t a = next(&c);
            r.revoked = a & 0x0F;
            r.policy_of[(a >> 4) & 3] = (uint8_t)((a >> 6) % (NPOLICY + 1));
            broker_reauthorize(r.b, still_active, &r, r.now);
            check_all(&r);
            break;
        }
        case 14: { /* the store */
            uint8_t a = next(&c);
            if (can_fail) {
                r.fs.fail_begin = a & 1;
                r.fs.fail_commit = (a & 2) != 0;
                r.fs.fail_write = (a & 4) != 0;
            }
            break;
        }
        default: /* shutdown or restart */
            if (op & 0x10) {
                broker_shutdown(r.b, r.now);
                check_all(&r);
            } else {
                end_pass(&r, false);
                stop(&r);
                start(&r);
            }
            break;
        }
    }
    end_pass(&r, true);
    broker_stats st;
    broker_get_stats(r.b, &st);
    size_t live = 0;
    for (size_t i = 0; i < MAX_CONNS; i++)
        live += r.conns[i].c != NULL;
    FUZZ_CHECK(st.connections == live);
    stop(&r);
    return 0;
}
