/*
 * mqtt_dump.c — moat-mqtt-dump: decode a captured MQTT byte stream and print
 * one line per packet.
 *
 * For looking at what a client or broker really sent, for checking captures
 * against the codec, and for the black-box tests that feed it live traffic
 * from real MQTT tools. It reads one direction of one connection, raw or as
 * hex, and stops at the first packet the codec refuses, saying why and where.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define MAX_INPUT (64u * 1024 * 1024)
#define SHOW_MAX 80

static void usage(FILE *out)
{
    fputs("usage: moat-mqtt-dump [--from client|server] [--version 4|5] [--hex] [FILE]\n"
          "\n"
          "Decode the MQTT packets in FILE (or standard input), one direction of one\n"
          "connection, and print one line per packet.\n"
          "\n"
          "  --from client   bytes a client sent (default); the first packet must be\n"
          "                  CONNECT, which sets the protocol version\n"
          "  --from server   bytes a server sent; give the version with --version\n"
          "  --version N     protocol level: 4 (MQTT 3.1.1) or 5 (MQTT 5.0); default 5\n"
          "  --hex           input is hexadecimal text; whitespace and lines starting\n"
          "                  with '#' are ignored\n"
          "\n"
          "Exit status: 0 when every packet decoded, 1 at the first packet refused\n"
          "(the reason and byte offset are printed), 2 for a usage or input error.\n",
          out);
}

static unsigned char *read_all(FILE *in, size_t *len)
{
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_INPUT) {
                free(buf);
                errno = EFBIG;
                return NULL;
            }
            unsigned char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, in);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(in)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Turn hex text into bytes in place. Returns false on a stray character or
 * an odd digit count. */
static bool unhex(unsigned char *buf, size_t *len)
{
    size_t out = 0;
    int high = -1;
    bool comment = false;
    for (size_t i = 0; i < *len; i++) {
        int c = buf[i];
        if (comment) {
            comment = c != '\n';
            continue;
        }
        if (c == '#') {
            comment = true;
            continue;
        }
        if (isspace(c))
            continue;
        int v = hex_value(c);
        if (v < 0)
            return false;
        if (high < 0) {
            high = v;
        } else {
            buf[out++] = (unsigned char)(high << 4 | v);
            high = -1;
        }
    }
    *len = out;
    return high < 0;
}

static void show(const char *label, codec_bytes b)
{
    if (*label)
        printf(" %s=\"", label);
    else
        printf("=\"");
    for (size_t i = 0; i < b.len && i < SHOW_MAX; i++) {
        unsigned char c = b.ptr[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    printf(b.len > SHOW_MAX ? "\"...(%zu bytes)" : "\"", b.len);
}

static void show_props(const char *label, const codec_props *props)
{
    if (props->raw.len == 0)
        return;
    printf(" %s{", label);
    size_t pos = 0;
    codec_prop p;
    bool first = true;
    while (codec_props_next(props->raw, &pos, &p)) {
        codec_prop_type type = CODEC_PT_BYTE;
        (void)codec_prop_type_of(p.id, &type);
        printf("%s0x%02x", first ? "" : ",", p.id);
        first = false;
        switch (type) {
        case CODEC_PT_STRING:
        case CODEC_PT_BINARY:
            show("", p.str);
            break;
        case CODEC_PT_STRING_PAIR:
            show("", p.str);
            show("", p.value);
            break;
        default:
            printf("=%lu", (unsigned long)p.num);
            break;
        }
    }
    printf("}");
}

static void show_packet(const codec_packet *pkt, uint8_t version)
{
    printf("%s", codec_packet_name(pkt->type));
    switch (pkt->type) {
    case CODEC_CONNECT: {
        const codec_connect *c = &pkt->u.connect;
        printf(" version=%u clean_start=%d keep_alive=%u", c->protocol_version, c->clean_start,
               c->keep_alive);
        show_props("props", &c->props);
        show("client_id", c->client_id);
        if (c->will_flag) {
            printf(" will_qos=%u will_retain=%d", c->will_qos, c->will_retain);
            show_props("will_props", &c->will_props);
            show("will_topic", c->will_topic);
            show("will_payload", c->will_payload);
        }
        if (c->username_flag)
            show("username", c->username);
        if (c->password_flag)
            printf(" password=(%zu bytes)", c->password.len);
        break;
    }
    case CODEC_CONNACK:
        printf(" session_present=%d reason=0x%02x", pkt->u.connack.session_present,
               pkt->u.connack.reason);
        show_props("props", &pkt->u.connack.props);
        break;
    case CODEC_PUBLISH: {
        const codec_publish *p = &pkt->u.publish;
        printf(" qos=%u dup=%d retain=%d", p->qos, p->dup, p->retain);
        if (p->qos)
            printf(" packet_id=%u", p->packet_id);
        show("topic", p->topic);
        show_props("props", &p->props);
        show("payload", p->payload);
        break;
    }
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        printf(" packet_id=%u reason=0x%02x", pkt->u.ack.packet_id, pkt->u.ack.reason);
        show_props("props", &pkt->u.ack.props);
        break;
    case CODEC_SUBSCRIBE: {
        const codec_subscribe *s = &pkt->u.subscribe;
        printf(" packet_id=%u", s->packet_id);
        show_props("props", &s->props);
        size_t pos = 0;
        codec_subscription e;
        while (codec_subscribe_next(s, version, &pos, &e)) {
            show("filter", e.filter);
            printf(" qos=%u nl=%d rap=%d rh=%u", e.qos, e.no_local, e.retain_as_published,
                   e.retain_handling);
        }
        break;
    }
    case CODEC_SUBACK:
    case CODEC_UNSUBACK: {
        const codec_suback *s = &pkt->u.suback;
        printf(" packet_id=%u", s->packet_id);
        show_props("props", &s->props);
        printf(" reasons=");
        for (size_t i = 0; i < s->reasons.len; i++)
            printf("%s0x%02x", i ? "," : "", s->reasons.ptr[i]);
        break;
    }
    case CODEC_UNSUBSCRIBE: {
        const codec_unsubscribe *u = &pkt->u.unsubscribe;
        printf(" packet_id=%u", u->packet_id);
        show_props("props", &u->props);
        size_t pos = 0;
        codec_bytes f;
        while (codec_unsubscribe_next(u, &pos, &f))
            show("filter", f);
        break;
    }
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        printf(" reason=0x%02x", pkt->u.disconnect.reason);
        show_props("props", &pkt->u.disconnect.props);
        break;
    default:
        break;
    }
    putchar('\n');
}

int main(int argc, char **argv)
{
    codec_decode_opts opts = {.version = 0, .sender = CODEC_FROM_CLIENT};
    uint8_t server_version = CODEC_V5;
    bool hex = false;
    const char *path = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--hex")) {
            hex = true;
        } else if (!strcmp(a, "--from") && i + 1 < argc) {
            const char *who = argv[++i];
            if (!strcmp(who, "client"))
                opts.sender = CODEC_FROM_CLIENT;
            else if (!strcmp(who, "server"))
                opts.sender = CODEC_FROM_SERVER;
            else
                return usage(stderr), 2;
        } else if (!strcmp(a, "--version") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "4"))
                server_version = CODEC_V311;
            else if (!strcmp(v, "5"))
                server_version = CODEC_V5;
            else
                return usage(stderr), 2;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage(stderr), 2;
        } else if (!path) {
            path = a;
        } else {
            return usage(stderr), 2;
        }
    }
    if (opts.sender == CODEC_FROM_SERVER)
        opts.version = server_version;

    FILE *in = path ? fopen(path, "rb") : stdin;
    if (!in) {
        fprintf(stderr, "moat-mqtt-dump: %s: %s\n", path, strerror(errno));
        return 2;
    }
    size_t len = 0;
    unsigned char *buf = read_all(in, &len);
    if (path)
        fclose(in);
    if (!buf) {
        fprintf(stderr, "moat-mqtt-dump: cannot read input: %s\n", strerror(errno));
        return 2;
    }
    if (hex && !unhex(buf, &len)) {
        fprintf(stderr, "moat-mqtt-dump: input is not hexadecimal\n");
        free(buf);
        return 2;
    }

    int rc = 0;
    size_t off = 0;
    while (off < len) {
        codec_packet pkt;
        size_t used;
        codec_status st = codec_decode(buf + off, len - off, &opts, &pkt, &used);
        if (st == CODEC_ERR_BAD_VERSION && pkt.type == CODEC_CONNECT) {
            printf("CONNECT refused: protocol level %u is not supported\n",
                   pkt.u.connect.protocol_version);
            rc = 1;
            break;
        }
        if (st != CODEC_OK) {
            printf("error at byte %zu: %s (reason 0x%02x)\n", off, codec_status_name(st),
                   codec_status_reason(st));
            rc = 1;
            break;
        }
        show_packet(&pkt, opts.version ? opts.version : pkt.u.connect.protocol_version);
        if (pkt.type == CODEC_CONNECT)
            opts.version = pkt.u.connect.protocol_version;
        off += used;
    }
    free(buf);
    return rc;
}
