/*
 * Unit tests for codec_decode_body_from_server, the decoder entry a client
 * (the SDK) uses so that a device links none of the decoders of packets only
 * clients send. Its promise is to behave exactly like codec_decode_body with
 * {version, CODEC_FROM_SERVER}: the same status and the same decoded fields
 * (views pointing at the same bytes) for every input. Checked on every packet
 * of tests/fixtures/wire (both directions, decoded as MQTT 3.1.1 and 5),
 * on thousands of mutations of each (bytes changed, bodies cut short, other
 * packet types and flags in the first byte), and on an empty body of every
 * first byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define MAX_FILE  4096
#define MUTATIONS 2000

static bool same_bytes(codec_bytes a, codec_bytes b)
{
    return a.ptr == b.ptr && a.len == b.len;
}

static bool same_props(const codec_props *a, const codec_props *b)
{
    return a->present == b->present && a->message_expiry == b->message_expiry &&
           a->session_expiry == b->session_expiry && a->will_delay == b->will_delay &&
           a->maximum_packet_size == b->maximum_packet_size &&
           a->subscription_id == b->subscription_id &&
           a->server_keep_alive == b->server_keep_alive &&
           a->receive_maximum == b->receive_maximum &&
           a->topic_alias_maximum == b->topic_alias_maximum && a->topic_alias == b->topic_alias &&
           a->payload_format == b->payload_format &&
           a->request_problem_info == b->request_problem_info &&
           a->request_response_info == b->request_response_info &&
           a->maximum_qos == b->maximum_qos && a->retain_available == b->retain_available &&
           a->wildcard_sub_available == b->wildcard_sub_available &&
           a->sub_id_available == b->sub_id_available &&
           a->shared_sub_available == b->shared_sub_available &&
           same_bytes(a->content_type, b->content_type) &&
           same_bytes(a->response_topic, b->response_topic) &&
           same_bytes(a->correlation_data, b->correlation_data) &&
           same_bytes(a->assigned_client_id, b->assigned_client_id) &&
           same_bytes(a->auth_method, b->auth_method) && same_bytes(a->auth_data, b->auth_data) &&
           same_bytes(a->response_info, b->response_info) &&
           same_bytes(a->server_reference, b->server_reference) &&
           same_bytes(a->reason_string, b->reason_string) && same_bytes(a->raw, b->raw) &&
           a->user_count == b->user_count && a->sub_id_count == b->sub_id_count;
}

/* The fields a server-sent packet of p's type decodes into. */
static bool same_packet(const codec_packet *a, const codec_packet *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case CODEC_CONNACK:
        return a->u.connack.session_present == b->u.connack.session_present &&
               a->u.connack.reason == b->u.connack.reason &&
               same_props(&a->u.connack.props, &b->u.connack.props);
    case CODEC_PUBLISH: {
        const codec_publish *x = &a->u.publish, *y = &b->u.publish;
        return x->dup == y->dup && x->qos == y->qos && x->retain == y->retain &&
               same_bytes(x->topic, y->topic) && x->packet_id == y->packet_id &&
               same_props(&x->props, &y->props) && same_bytes(x->payload, y->payload);
    }
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        return a->u.ack.packet_id == b->u.ack.packet_id && a->u.ack.reason == b->u.ack.reason &&
               same_props(&a->u.ack.props, &b->u.ack.props);
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        return a->u.suback.packet_id == b->u.suback.packet_id &&
               same_props(&a->u.suback.props, &b->u.suback.props) &&
               same_bytes(a->u.suback.reasons, b->u.suback.reasons);
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        return a->u.disconnect.reason == b->u.disconnect.reason &&
               same_props(&a->u.disconnect.props, &b->u.disconnect.props);
    case CODEC_PINGRESP:
        return true;
    default:
        return false; /* nothing else may decode from a server */
    }
}

static unsigned long compared, decoded_ok;

/* Frame buf and decode its body both ways; they must agree. */
static void compare(const uint8_t *buf, size_t len, uint8_t version)
{
    codec_frame f;
    if (codec_frame_parse(buf, len, 0, &f) != CODEC_OK)
        return;
    codec_decode_opts o = {.version = version, .sender = CODEC_FROM_SERVER};
    codec_packet a, b;
    codec_status sa = codec_decode_body(&f, buf + f.header_len, &o, &a);
    codec_status sb = codec_decode_body_from_server(&f, buf + f.header_len, version, &b);
    if (sa != sb)
        fail_msg("first byte 0x%02x, %zu bytes, version %u: codec_decode_body \"%s\", "
                 "from_server \"%s\"",
                 buf[0], len, version, codec_status_name(sa), codec_status_name(sb));
    compared++;
    if (sa == CODEC_OK) {
        decoded_ok++;
        if (!same_packet(&a, &b))
            fail_msg("first byte 0x%02x, %zu bytes, version %u: the decoded fields differ", buf[0],
                     len, version);
    }
}

static const char *wire_dir(void)
{
    static char dir[1024];
    const char *base = getenv("FIXTURES_DIR");
    if (base == NULL)
        base = "tests/fixtures";
    int n = snprintf(dir, sizeof(dir), "%s/wire", base);
    assert_true(n > 0 && (size_t)n < sizeof(dir));
    return dir;
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A fixture's bytes: '#' lines are comments, the rest hex. */
static size_t load_hex(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t len = 0;
    int high = -1, c;
    bool line_start = true, comment = false;
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') {
            line_start = true;
            comment = false;
            continue;
        }
        if (comment || c == ' ' || c == '\t' || c == '\r')
            continue;
        if (c == '#' && line_start) {
            comment = true;
            continue;
        }
        line_start = false;
        int v = hex_digit(c);
        if (v < 0 || (high >= 0 && len == cap)) {
            fclose(f);
            fail_msg("%s: not a hex fixture of at most %zu bytes", path, cap);
        }
        if (high < 0) {
            high = v;
        } else {
            out[len++] = (uint8_t)(high << 4 | v);
            high = -1;
        }
    }
    fclose(f);
    return len;
}

/* Each mutation is decoded from a heap block of exactly its size, so that a
 * sanitizer build catches a read past the packet in either entry. */
static void compare_copy(const uint8_t *buf, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    compare(copy, len, CODEC_V311);
    compare(copy, len, CODEC_V5);
    free(copy);
}

static void mutate_and_compare(const uint8_t *pkt, size_t len, unsigned *seed)
{
    uint8_t m[MAX_FILE];
    compare_copy(pkt, len);
    for (int i = 0; i < MUTATIONS; i++) {
        memcpy(m, pkt, len);
        size_t n = len;
        unsigned r = (unsigned)rand_r(seed);
        switch (r % 4) {
        case 0: /* another type and flags, same body */
            m[0] = (uint8_t)(r >> 8);
            break;
        case 1: /* a few bytes of the body changed */
            for (int k = 0; k < 1 + (int)(r >> 8) % 3 && n > 2; k++)
                m[2 + (size_t)rand_r(seed) % (n - 2)] = (uint8_t)rand_r(seed);
            break;
        case 2: /* the body cut short, its length made to match */
            if (n > 2 && n < 129) {
                n = 2 + (size_t)rand_r(seed) % (n - 1);
                m[1] = (uint8_t)(n - 2);
            }
            break;
        default: /* both */
            m[0] = (uint8_t)(r >> 8);
            if (n > 2)
                m[2 + (size_t)rand_r(seed) % (n - 2)] = (uint8_t)rand_r(seed);
            break;
        }
        compare_copy(m, n);
    }
}

static void test_fixtures_and_mutations(void **state)
{
    (void)state;
    DIR *d = opendir(wire_dir());
    if (d == NULL)
        fail_msg("cannot open %s", wire_dir());
    unsigned seed = 4242, files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".hex") != 0)
            continue;
        char path[2048];
        int n = snprintf(path, sizeof(path), "%s/%s", wire_dir(), e->d_name);
        assert_true(n > 0 && (size_t)n < sizeof(path));
        static uint8_t pkt[MAX_FILE];
        size_t len = load_hex(path, pkt, sizeof(pkt));
        mutate_and_compare(pkt, len, &seed);
        files++;
    }
    closedir(d);
    assert_true(files >= 40);
    /* Both outcomes were exercised, not only refusals. */
    assert_true(decoded_ok > 1000);
    assert_true(compared - decoded_ok > 1000);
}

/* Every first byte with an empty body, and with a body of two zero bytes. */
static void test_every_first_byte(void **state)
{
    (void)state;
    for (unsigned b = 0; b < 256; b++) {
        uint8_t empty[2] = {(uint8_t)b, 0};
        compare_copy(empty, sizeof(empty));
        uint8_t two[4] = {(uint8_t)b, 2, 0, 1};
        compare_copy(two, sizeof(two));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_and_mutations),
        cmocka_unit_test(test_every_first_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
