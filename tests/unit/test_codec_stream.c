/*
 * Unit tests for incremental decoding with codec_decode, the way a socket
 * reader uses it: bytes arrive in arbitrary pieces, are appended to a buffer,
 * and codec_decode is called until it answers CODEC_NEED_MORE ("wait for more
 * bytes"); each decoded packet is removed from the front of the buffer. Four
 * streams of about 20 packets of mixed types (client to server and server to
 * client, in MQTT 3.1.1 and 5.0, with remaining lengths of 1, 2 and 3 bytes
 * and MQTT 5 properties) are encoded into one buffer, decoded whole as a
 * reference, and then delivered in chunks of every size from 1 to 17 bytes
 * and in random splits from a fixed seed: every delivery must give the same
 * sequence of packets (type, size, packet id, flags, reason, entry counts and
 * a digest of every byte view) as the whole-buffer decode. The accumulating
 * buffer is kept at exactly its filled size on the heap, so that a sanitizer
 * build catches any read past the bytes received so far; while a packet is
 * incomplete, codec_frame_parse must report its total size as soon as its
 * length bytes are in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>

#include <cmocka.h>

#include "codec.h"

#define COUNT(a)    (sizeof(a) / sizeof((a)[0]))
#define MAX_PACKETS 32

/* What a decoded packet looked like, copied out before its bytes go. */
typedef struct summary {
    uint8_t type;
    size_t size;
    uint16_t packet_id;
    uint8_t flags;  /* PUBLISH: DUP, QoS, RETAIN as in the header; CONNACK: session present */
    uint8_t reason; /* acks, CONNACK, DISCONNECT */
    size_t count;   /* SUBSCRIBE entries, UNSUBSCRIBE filters, SUBACK/UNSUBACK codes */
    size_t topic_len;
    size_t payload_len;
    size_t user_count;
    size_t sub_id_count;
    uint32_t digest; /* FNV-1a over every view and option */
} summary;

/* An encoded stream and what went into it. */
typedef struct stream {
    uint8_t *buf;
    size_t len;
    size_t n;
    uint8_t types[MAX_PACKETS];
    size_t sizes[MAX_PACKETS];
    size_t header_lens[MAX_PACKETS];
    uint16_t ids[MAX_PACKETS];
} stream;

static uint32_t fnv(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t fnv_view(uint32_t h, codec_bytes b)
{
    uint8_t len[4] = {(uint8_t)(b.len >> 24), (uint8_t)(b.len >> 16), (uint8_t)(b.len >> 8),
                      (uint8_t)b.len};
    h = fnv(h, len, sizeof(len));
    return b.len ? fnv(h, b.ptr, b.len) : h;
}

static uint32_t fnv_byte(uint32_t h, uint8_t v)
{
    return fnv(h, &v, 1);
}

static summary summarize(const codec_packet *p, size_t size, uint8_t version)
{
    summary s;
    memset(&s, 0, sizeof(s));
    s.type = p->type;
    s.size = size;
    uint32_t h = 2166136261u;
    const codec_props *props = NULL;
    switch (p->type) {
    case CODEC_CONNACK:
        s.flags = p->u.connack.session_present;
        s.reason = p->u.connack.reason;
        props = &p->u.connack.props;
        break;
    case CODEC_PUBLISH: {
        const codec_publish *m = &p->u.publish;
        s.packet_id = m->packet_id;
        s.flags = (uint8_t)((m->dup ? 8 : 0) | m->qos << 1 | (m->retain ? 1 : 0));
        s.topic_len = m->topic.len;
        s.payload_len = m->payload.len;
        h = fnv_view(h, m->topic);
        h = fnv_view(h, m->payload);
        props = &m->props;
        break;
    }
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        s.packet_id = p->u.ack.packet_id;
        s.reason = p->u.ack.reason;
        props = &p->u.ack.props;
        break;
    case CODEC_SUBSCRIBE: {
        const codec_subscribe *sub = &p->u.subscribe;
        s.packet_id = sub->packet_id;
        s.count = sub->count;
        size_t pos = 0;
        codec_subscription e;
        size_t walked = 0;
        while (codec_subscribe_next(sub, version, &pos, &e)) {
            h = fnv_view(h, e.filter);
            h = fnv_byte(h, e.qos);
            h = fnv_byte(h, e.no_local);
            h = fnv_byte(h, e.retain_as_published);
            h = fnv_byte(h, e.retain_handling);
            walked++;
        }
        assert_int_equal(walked, sub->count);
        props = &sub->props;
        break;
    }
    case CODEC_UNSUBSCRIBE: {
        const codec_unsubscribe *u = &p->u.unsubscribe;
        s.packet_id = u->packet_id;
        s.count = u->count;
        size_t pos = 0;
        codec_bytes f;
        size_t walked = 0;
        while (codec_unsubscribe_next(u, &pos, &f)) {
            h = fnv_view(h, f);
            walked++;
        }
        assert_int_equal(walked, u->count);
        props = &u->props;
        break;
    }
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        s.packet_id = p->u.suback.packet_id;
        s.count = p->u.suback.reasons.len;
        h = fnv_view(h, p->u.suback.reasons);
        props = &p->u.suback.props;
        break;
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        s.reason = p->u.disconnect.reason;
        props = &p->u.disconnect.props;
        break;
    default:
        break;
    }
    if (props) {
        s.user_count = props->user_count;
        s.sub_id_count = props->sub_id_count;
        h = fnv_view(h, props->raw);
    }
    s.digest = h;
    return s;
}

static void assert_summary_equal(const summary *got, const summary *want, size_t i, const char *how)
{
    if (got->type != want->type || got->size != want->size || got->packet_id != want->packet_id ||
        got->flags != want->flags || got->reason != want->reason || got->count != want->count ||
        got->topic_len != want->topic_len || got->payload_len != want->payload_len ||
        got->user_count != want->user_count || got->sub_id_count != want->sub_id_count ||
        got->digest != want->digest)
        fail_msg("%s: packet %zu differs: type %u/%u size %zu/%zu id %u/%u digest %08x/%08x", how,
                 i, got->type, want->type, got->size, want->size, got->packet_id, want->packet_id,
                 got->digest, want->digest);
}

/* ---- building the streams ------------------------------------------------ */

static void append(stream *s, const codec_packet *pkt, uint8_t version, uint16_t id)
{
    assert_true(s->n < MAX_PACKETS);
    size_t need = 0;
    assert_int_equal(codec_encode(pkt, version, NULL, 0, &need), CODEC_ERR_BUFFER);
    uint8_t *grown = realloc(s->buf, s->len + need);
    assert_non_null(grown);
    s->buf = grown;
    size_t n = 0;
    assert_int_equal(codec_encode(pkt, version, s->buf + s->len, need, &n), CODEC_OK);
    assert_int_equal(n, need);
    codec_frame f;
    assert_int_equal(codec_frame_parse(s->buf + s->len, need, 0, &f), CODEC_OK);
    assert_int_equal(f.total_len, need);
    assert_int_equal(f.type, pkt->type);
    s->types[s->n] = pkt->type;
    s->sizes[s->n] = need;
    s->header_lens[s->n] = f.header_len;
    s->ids[s->n] = id;
    s->n++;
    s->len += need;
}

static void add_publish(stream *s, uint8_t version, codec_publish m)
{
    codec_packet p = {.type = CODEC_PUBLISH};
    p.u.publish = m;
    append(s, &p, version, m.packet_id);
}

static void add_ack(stream *s, uint8_t version, uint8_t type, codec_ack a)
{
    codec_packet p = {.type = type};
    p.u.ack = a;
    append(s, &p, version, a.packet_id);
}

static void add_simple(stream *s, uint8_t version, uint8_t type)
{
    codec_packet p = {.type = type};
    append(s, &p, version, 0);
}

/* Payloads of 300 bytes (2-byte remaining length) and 16500 bytes (3-byte). */
static uint8_t mid_payload[300];
static uint8_t big_payload[16500];

static void fill_payloads(void)
{
    for (size_t i = 0; i < sizeof(mid_payload); i++)
        mid_payload[i] = (uint8_t)(i * 7u + 1u);
    for (size_t i = 0; i < sizeof(big_payload); i++)
        big_payload[i] = (uint8_t)(i * 13u + 5u);
}

static void build_client_stream(stream *s, uint8_t version)
{
    const bool v5 = version == CODEC_V5;
    memset(s, 0, sizeof(*s));
    static const codec_string_pair user[] = {
        {{(const uint8_t *)"u", 1}, {(const uint8_t *)"1", 1}}};
    static const uint32_t sub_id[] = {42};

    add_publish(s, version, (codec_publish){.topic = CODEC_LIT("a/b"), .payload = CODEC_LIT("hi")});
    add_publish(s, version,
                (codec_publish){.qos = 1,
                                .retain = true,
                                .packet_id = 1,
                                .topic = CODEC_LIT("sensors/1/temp"),
                                .payload = {mid_payload, sizeof(mid_payload)}});
    add_ack(s, version, CODEC_PUBACK, (codec_ack){.packet_id = 100});
    add_publish(s, version,
                (codec_publish){.dup = true, .qos = 2, .packet_id = 2, .topic = CODEC_LIT("x")});
    add_ack(s, version, CODEC_PUBREC, (codec_ack){.packet_id = 2, .reason = v5 ? 0x10 : 0});
    add_ack(s, version, CODEC_PUBREL, (codec_ack){.packet_id = 3});
    add_ack(s, version, CODEC_PUBCOMP, (codec_ack){.packet_id = 4, .reason = v5 ? 0x92 : 0});

    const codec_subscription entries[] = {
        {.filter = CODEC_LIT("a/+"), .qos = 1},
        {.filter = CODEC_LIT("b/#"), .qos = 2, .no_local = v5, .retain_handling = v5 ? 1 : 0},
    };
    codec_packet p = {.type = CODEC_SUBSCRIBE};
    p.u.subscribe = (codec_subscribe){.packet_id = 5, .count = 2, .list = entries};
    if (v5) {
        p.u.subscribe.props.sub_ids = sub_id;
        p.u.subscribe.props.sub_ids_len = 1;
    }
    append(s, &p, version, 5);

    add_simple(s, version, CODEC_PINGREQ);

    const codec_bytes filters[] = {CODEC_LIT("a/+"), CODEC_LIT("b/#")};
    p = (codec_packet){.type = CODEC_UNSUBSCRIBE};
    p.u.unsubscribe = (codec_unsubscribe){.packet_id = 6, .count = 2, .list = filters};
    append(s, &p, version, 6);

    codec_publish m = {
        .qos = 1, .packet_id = 7, .topic = CODEC_LIT("t/props"), .payload = {mid_payload, 130}};
    if (v5) {
        CODEC_SET(&m.props, CODEC_PROP_MESSAGE_EXPIRY);
        m.props.message_expiry = 10;
        CODEC_SET(&m.props, CODEC_PROP_CONTENT_TYPE);
        m.props.content_type = CODEC_LIT("application/json");
        m.props.user = user;
        m.props.user_len = 1;
    }
    add_publish(s, version, m);

    codec_ack a = {.packet_id = 8};
    if (v5) {
        a.reason = 0x97;
        CODEC_SET(&a.props, CODEC_PROP_REASON_STRING);
        a.props.reason_string = CODEC_LIT("quota");
    }
    add_ack(s, version, CODEC_PUBACK, a);
    add_simple(s, version, CODEC_PINGREQ);
    add_publish(s, version, (codec_publish){.topic = CODEC_LIT("t"), .payload = CODEC_LIT("!")});

    const codec_subscription shared[] = {{.filter = CODEC_LIT("$share/g/t")}};
    p = (codec_packet){.type = CODEC_SUBSCRIBE};
    p.u.subscribe = (codec_subscribe){.packet_id = 9, .count = 1, .list = shared};
    append(s, &p, version, 9);

    a = (codec_ack){.packet_id = 10};
    if (v5) {
        a.reason = 0x92;
        a.props.user = user;
        a.props.user_len = 1;
    }
    add_ack(s, version, CODEC_PUBREL, a);
    add_publish(s, version,
                (codec_publish){.qos = 2,
                                .packet_id = 11,
                                .topic = CODEC_LIT("big"),
                                .payload = {big_payload, sizeof(big_payload)}});
    add_ack(s, version, CODEC_PUBACK, (codec_ack){.packet_id = 12});

    m = (codec_publish){.qos = 1,
                        .packet_id = 13,
                        .topic = CODEC_LIT("caf\xc3\xa9"),
                        .payload = CODEC_LIT("\xc3\xa9")};
    if (v5) {
        CODEC_SET(&m.props, CODEC_PROP_TOPIC_ALIAS);
        m.props.topic_alias = 3;
    }
    add_publish(s, version, m);
    /* In MQTT 5 the alias now stands for the topic. */
    m = (codec_publish){.topic = CODEC_LIT("caf\xc3\xa9"), .payload = CODEC_LIT("again")};
    if (v5) {
        m.topic = (codec_bytes){NULL, 0};
        CODEC_SET(&m.props, CODEC_PROP_TOPIC_ALIAS);
        m.props.topic_alias = 3;
    }
    add_publish(s, version, m);

    p = (codec_packet){.type = CODEC_DISCONNECT};
    p.u.disconnect.reason = v5 ? 0x04 : 0; /* with will message: client only */
    append(s, &p, version, 0);
}

static void build_server_stream(stream *s, uint8_t version)
{
    const bool v5 = version == CODEC_V5;
    memset(s, 0, sizeof(*s));
    static const uint32_t sub_ids[] = {1, 300};

    codec_packet p = {.type = CODEC_CONNACK};
    p.u.connack.session_present = true;
    if (v5) {
        CODEC_SET(&p.u.connack.props, CODEC_PROP_RECEIVE_MAXIMUM);
        p.u.connack.props.receive_maximum = 20;
        CODEC_SET(&p.u.connack.props, CODEC_PROP_TOPIC_ALIAS_MAXIMUM);
        p.u.connack.props.topic_alias_maximum = 10;
    }
    append(s, &p, version, 0);

    codec_publish m = {
        .qos = 1, .packet_id = 1, .topic = CODEC_LIT("a/b"), .payload = CODEC_LIT("hi")};
    if (v5) {
        m.props.sub_ids = sub_ids;
        m.props.sub_ids_len = 2;
    }
    add_publish(s, version, m);

    static const uint8_t granted[] = {0x01, 0x02};
    p = (codec_packet){.type = CODEC_SUBACK};
    p.u.suback = (codec_suback){.packet_id = 5, .reasons = {granted, sizeof(granted)}};
    if (v5) {
        CODEC_SET(&p.u.suback.props, CODEC_PROP_REASON_STRING);
        p.u.suback.props.reason_string = CODEC_LIT("ok");
    }
    append(s, &p, version, 5);

    static const uint8_t unsub_codes[] = {0x00, 0x11};
    p = (codec_packet){.type = CODEC_UNSUBACK};
    p.u.suback = (codec_suback){.packet_id = 6};
    if (v5)
        p.u.suback.reasons = (codec_bytes){unsub_codes, sizeof(unsub_codes)};
    append(s, &p, version, 6);

    add_simple(s, version, CODEC_PINGRESP);
    add_ack(s, version, CODEC_PUBACK, (codec_ack){.packet_id = 7});
    add_ack(s, version, CODEC_PUBREC, (codec_ack){.packet_id = 8});
    add_ack(s, version, CODEC_PUBREL, (codec_ack){.packet_id = 8});
    add_ack(s, version, CODEC_PUBCOMP, (codec_ack){.packet_id = 9});
    add_publish(s, version,
                (codec_publish){.qos = 2,
                                .retain = true,
                                .packet_id = 2,
                                .topic = CODEC_LIT("r/t"),
                                .payload = {mid_payload, sizeof(mid_payload)}});

    static const uint8_t refused_v311[] = {0x80};
    static const uint8_t refused_v5[] = {0x9e};
    p = (codec_packet){.type = CODEC_SUBACK};
    p.u.suback = (codec_suback){.packet_id = 9, .reasons = {v5 ? refused_v5 : refused_v311, 1}};
    append(s, &p, version, 9);

    add_simple(s, version, CODEC_PINGRESP);
    add_publish(
        s, version,
        (codec_publish){.topic = CODEC_LIT("big"), .payload = {big_payload, sizeof(big_payload)}});
    add_publish(s, version,
                (codec_publish){.dup = true,
                                .qos = 1,
                                .packet_id = 3,
                                .topic = CODEC_LIT("x"),
                                .payload = CODEC_LIT("y")});
    add_ack(s, version, CODEC_PUBACK, (codec_ack){.packet_id = 4, .reason = v5 ? 0x10 : 0});
    add_publish(s, version, (codec_publish){.topic = CODEC_LIT("z")});

    p = (codec_packet){.type = CODEC_UNSUBACK};
    p.u.suback = (codec_suback){.packet_id = 10};
    if (v5)
        p.u.suback.reasons = (codec_bytes){unsub_codes, 1};
    append(s, &p, version, 10);

    add_simple(s, version, CODEC_PINGRESP);
    add_ack(s, version, CODEC_PUBREL, (codec_ack){.packet_id = 11});
    if (v5) {
        p = (codec_packet){.type = CODEC_DISCONNECT};
        p.u.disconnect.reason = 0x8b; /* server shutting down: server only */
        append(s, &p, version, 0);
    } else {
        add_simple(s, version, CODEC_PINGRESP);
    }
}

/* ---- decoding ---------------------------------------------------------------- */

/* Decode the whole buffer at once, packet after packet. */
static size_t decode_whole(const stream *s, const codec_decode_opts *o, summary *out)
{
    size_t off = 0;
    size_t count = 0;
    while (off < s->len) {
        codec_packet p;
        size_t used = 0;
        codec_status st = codec_decode(s->buf + off, s->len - off, o, &p, &used);
        if (st != CODEC_OK)
            fail_msg("whole buffer, packet %zu at %zu: %s", count, off, codec_status_name(st));
        assert_true(count < MAX_PACKETS);
        out[count++] = summarize(&p, used, o->version);
        off += used;
    }
    assert_int_equal(off, s->len);
    return count;
}

/* Chunk sizes: fixed, or pseudo-random from a seed (a 64-bit LCG, so the
 * sequence is the same on every platform). */
typedef struct chunker {
    size_t fixed;
    uint64_t state;
} chunker;

static size_t next_chunk(chunker *c)
{
    if (c->fixed)
        return c->fixed;
    c->state = c->state * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t r = (uint32_t)(c->state >> 33);
    if (r % 10 == 0)
        return 1 + (r >> 8) % 3000; /* now and then a large read */
    return 1 + (r >> 8) % 40;
}

/* Deliver the stream in chunks into a buffer kept at exactly its filled
 * size; decode until "need more" after each delivery. */
static size_t decode_chunked(const stream *s, const codec_decode_opts *o, chunker *c, summary *out)
{
    uint8_t *acc = NULL;
    size_t fill = 0;
    size_t delivered = 0;
    size_t count = 0;
    while (delivered < s->len) {
        size_t k = next_chunk(c);
        if (k > s->len - delivered)
            k = s->len - delivered;
        uint8_t *grown = realloc(acc, fill + k);
        assert_non_null(grown);
        acc = grown;
        memcpy(acc + fill, s->buf + delivered, k);
        fill += k;
        delivered += k;

        while (fill > 0) {
            codec_packet p;
            size_t used = 99;
            codec_status st = codec_decode(acc, fill, o, &p, &used);
            if (st == CODEC_NEED_MORE) {
                assert_int_equal(used, 0);
                assert_true(count < s->n);
                /* The frame's size is known once its length bytes are in. */
                codec_frame f;
                assert_int_equal(codec_frame_parse(acc, fill, o->max_packet, &f), CODEC_NEED_MORE);
                if (fill >= s->header_lens[count])
                    assert_int_equal(f.total_len, s->sizes[count]);
                else
                    assert_int_equal(f.total_len, 0);
                assert_true(fill < s->sizes[count]);
                break;
            }
            if (st != CODEC_OK)
                fail_msg("chunked, packet %zu with %zu bytes buffered: %s", count, fill,
                         codec_status_name(st));
            assert_true(count < s->n);
            assert_int_equal(used, s->sizes[count]);
            assert_true(used <= fill);
            out[count++] = summarize(&p, used, o->version);
            /* Drop the packet; its views die with it. */
            memmove(acc, acc + used, fill - used);
            fill -= used;
            if (fill == 0) {
                free(acc);
                acc = NULL;
            } else {
                grown = realloc(acc, fill);
                assert_non_null(grown);
                acc = grown;
            }
        }
    }
    assert_int_equal(fill, 0);
    free(acc);
    return count;
}

/* The reference decode must match what was encoded. */
static void check_reference(const stream *s, const summary *ref, size_t n)
{
    assert_int_equal(n, s->n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ref[i].type, s->types[i]);
        assert_int_equal(ref[i].size, s->sizes[i]);
        assert_int_equal(ref[i].packet_id, s->ids[i]);
    }
}

static void run_stream(const stream *s, uint8_t version, codec_sender sender)
{
    codec_decode_opts o = {.version = version, .sender = sender, .max_packet = 0};
    summary ref[MAX_PACKETS];
    size_t n = decode_whole(s, &o, ref);
    check_reference(s, ref, n);

    for (size_t k = 1; k <= 17; k++) {
        chunker c = {.fixed = k, .state = 0};
        summary got[MAX_PACKETS];
        size_t m = decode_chunked(s, &o, &c, got);
        if (m != n)
            fail_msg("chunks of %zu: %zu packets, want %zu", k, m, n);
        for (size_t i = 0; i < n; i++)
            assert_summary_equal(&got[i], &ref[i], i, "fixed chunks");
    }

    for (uint64_t run = 0; run < 40; run++) {
        chunker c = {.fixed = 0, .state = 0x6d6f6174ull + run};
        summary got[MAX_PACKETS];
        size_t m = decode_chunked(s, &o, &c, got);
        if (m != n)
            fail_msg("random split %u: %zu packets, want %zu", (unsigned)run, m, n);
        for (size_t i = 0; i < n; i++)
            assert_summary_equal(&got[i], &ref[i], i, "random split");
    }

    /* With max_packet at the largest packet, the same stream passes. */
    size_t largest = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->sizes[i] > largest)
            largest = s->sizes[i];
    o.max_packet = largest;
    chunker c = {.fixed = 7, .state = 0};
    summary got[MAX_PACKETS];
    assert_int_equal(decode_chunked(s, &o, &c, got), n);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_client_stream_v311(void **state)
{
    (void)state;
    stream s;
    build_client_stream(&s, CODEC_V311);
    assert_int_equal(s.n, 21);
    /* Remaining lengths of 1, 2 and 3 bytes are all in the stream. */
    assert_int_equal(s.header_lens[0], 2);
    assert_int_equal(s.header_lens[1], 3);
    assert_int_equal(s.header_lens[16], 4);
    run_stream(&s, CODEC_V311, CODEC_FROM_CLIENT);
    free(s.buf);
}

static void test_client_stream_v5(void **state)
{
    (void)state;
    stream s;
    build_client_stream(&s, CODEC_V5);
    assert_int_equal(s.n, 21);
    assert_int_equal(s.header_lens[16], 4);
    run_stream(&s, CODEC_V5, CODEC_FROM_CLIENT);

    /* Spot checks of the MQTT 5 fields in the reference decode. */
    codec_decode_opts o = {.version = CODEC_V5, .sender = CODEC_FROM_CLIENT};
    summary ref[MAX_PACKETS];
    assert_int_equal(decode_whole(&s, &o, ref), 21);
    assert_int_equal(ref[4].reason, 0x10);    /* PUBREC */
    assert_int_equal(ref[7].sub_id_count, 1); /* SUBSCRIBE */
    assert_int_equal(ref[7].count, 2);
    assert_int_equal(ref[10].user_count, 1); /* PUBLISH with properties */
    assert_int_equal(ref[11].reason, 0x97);  /* PUBACK */
    assert_int_equal(ref[19].topic_len, 0);  /* aliased PUBLISH */
    assert_int_equal(ref[20].type, CODEC_DISCONNECT);
    assert_int_equal(ref[20].reason, 0x04);
    free(s.buf);
}

static void test_server_stream_v311(void **state)
{
    (void)state;
    stream s;
    build_server_stream(&s, CODEC_V311);
    assert_int_equal(s.n, 20);
    run_stream(&s, CODEC_V311, CODEC_FROM_SERVER);
    free(s.buf);
}

static void test_server_stream_v5(void **state)
{
    (void)state;
    stream s;
    build_server_stream(&s, CODEC_V5);
    assert_int_equal(s.n, 20);
    run_stream(&s, CODEC_V5, CODEC_FROM_SERVER);

    codec_decode_opts o = {.version = CODEC_V5, .sender = CODEC_FROM_SERVER};
    summary ref[MAX_PACKETS];
    assert_int_equal(decode_whole(&s, &o, ref), 20);
    assert_int_equal(ref[0].type, CODEC_CONNACK);
    assert_int_equal(ref[0].flags, 1);
    assert_int_equal(ref[1].sub_id_count, 2); /* PUBLISH with two subscription ids */
    assert_int_equal(ref[2].count, 2);        /* SUBACK codes */
    assert_int_equal(ref[3].count, 2);        /* UNSUBACK codes */
    assert_int_equal(ref[19].reason, 0x8b);
    free(s.buf);
}

/* A stream that turns bad part-way: the packets before the bad one decode,
 * then the error is reported however the bytes were split. */
static void test_error_mid_stream(void **state)
{
    (void)state;
    static const uint8_t bytes[] = {
        0x30, 0x05, 0x00, 0x03, 'a', '/', 'b', /* PUBLISH QoS 0 */
        0xc0, 0x00,                            /* PINGREQ */
        0x40, 0x02, 0x00, 0x00,                /* PUBACK with packet id 0 */
        0xc0, 0x00,
    };
    codec_decode_opts o = {.version = CODEC_V311, .sender = CODEC_FROM_CLIENT};
    for (size_t k = 1; k <= 17; k++) {
        uint8_t acc[sizeof(bytes)];
        size_t fill = 0;
        size_t delivered = 0;
        size_t decoded = 0;
        codec_status last = CODEC_OK;
        while (delivered < sizeof(bytes) && last != CODEC_ERR_PROTOCOL) {
            size_t n = k < sizeof(bytes) - delivered ? k : sizeof(bytes) - delivered;
            memcpy(acc + fill, bytes + delivered, n);
            fill += n;
            delivered += n;
            for (;;) {
                codec_packet p;
                size_t used = 0;
                last = codec_decode(acc, fill, &o, &p, &used);
                if (last != CODEC_OK)
                    break;
                decoded++;
                memmove(acc, acc + used, fill - used);
                fill -= used;
            }
            /* The bad PUBACK is bytes 9..12: refused once all are in. */
            assert_int_equal(last, delivered >= 13 ? CODEC_ERR_PROTOCOL : CODEC_NEED_MORE);
        }
        assert_int_equal(last, CODEC_ERR_PROTOCOL);
        assert_int_equal(decoded, 2);
    }
}

int main(void)
{
    fill_payloads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_stream_v311), cmocka_unit_test(test_client_stream_v5),
        cmocka_unit_test(test_server_stream_v311), cmocka_unit_test(test_server_stream_v5),
        cmocka_unit_test(test_error_mid_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
