/*
 * init.c — `moatctl init DIR`: create a hub's data directory.
 *
 * Everything is made in memory first (CA key and certificate, server key and
 * certificate for the names given), so a bad --host or --ip fails before any
 * file exists. Then the directory is created with mode 0700 and each file is
 * written atomically without ever replacing an existing one; if any step
 * fails, what this run created is removed again. An existing data directory
 * is never touched: its keys are the identity of a running fleet, and a new
 * CA would silently cut every device off.
 *
 * The master key is 32 random bytes from OpenSSL's private DRBG, for the
 * hub's data-at-rest encryption; it is wiped from memory once written.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ctl.h"

/* The files of a data directory, in the order they are made. */
static const char *const FILES[] = {"ca.key",     "ca.crt",    "server.key",  "server.crt",
                                    "master.key", "audit.key", "registry.db", "moatd.conf"};
enum { REGISTRY_FILE = 6 }; /* index of registry.db above */
#define NFILES (sizeof FILES / sizeof FILES[0])

static const char CONFIG[] =
    "# moatd.conf — configuration of the moat hub (moatd), written by `moatctl init`.\n"
    "#\n"
    "# Every value shown is the default; delete a line to keep the default, edit it\n"
    "# to change it. File names are relative to the data directory holding this\n"
    "# file. moatd re-reads it on SIGHUP (listen needs a restart). See docs/operating.md.\n"
    "\n"
    "[hub]\n"
    "# Address and TCP port of the MQTT-over-TLS listener (host:port, [v6addr]:port).\n"
    "# Loopback only until you choose to serve a network, e.g. 0.0.0.0:8883.\n"
    "listen = 127.0.0.1:8883\n"
    "# Worker threads, each with its own event loop (count; 0 = one per CPU core).\n"
    "workers = 0\n"
    "# Format of log lines on stderr: text (for people) or json (one object per line).\n"
    "log_format = text\n"
    "\n"
    "[tls]\n"
    "# Lowest TLS version accepted (1.3, or 1.2 with ECDHE+AEAD cipher suites only).\n"
    "min_version = 1.3\n"
    "# CA certificate that every client certificate must chain to (PEM file).\n"
    "ca = ca.crt\n"
    "# The hub's server certificate (PEM file).\n"
    "cert = server.crt\n"
    "# The server certificate's private key (PEM file, must be mode 0600).\n"
    "key = server.key\n"
    "\n"
    "[limits]\n"
    "# Largest MQTT packet accepted from an authenticated client (bytes).\n"
    "max_packet_size = 262144\n"
    "# Longest topic name or filter (bytes).\n"
    "max_topic_length = 256\n"
    "# Most levels ('/'-separated parts) in a topic name or filter (count).\n"
    "max_topic_levels = 16\n"
    "# Most subscriptions one session may hold (count).\n"
    "max_subscriptions = 64\n"
    "# Most QoS 1/2 messages in flight each way between the hub and one client (count).\n"
    "max_inflight = 32\n"
    "# Most messages queued for one offline or slow session; more are dropped (count).\n"
    "max_queued = 1000\n"
    "# Most simultaneous client connections to the hub (count).\n"
    "max_connections = 100000\n"
    "# Most simultaneous connections from one source IP address (count).\n"
    "max_connections_per_ip = 1000\n"
    "# Most TLS handshakes started per second from one source IP address (per second).\n"
    "handshakes_per_second_per_ip = 50\n"
    "# Time allowed to complete the TLS handshake (seconds).\n"
    "handshake_timeout = 10\n"
    "# Time allowed between the handshake and the MQTT CONNECT packet (seconds).\n"
    "connect_timeout = 10\n"
    "# Most PUBLISH packets one client may send (per second).\n"
    "max_publish_rate = 100\n"
    "# Longest keep-alive interval a client may ask for (seconds).\n"
    "max_keep_alive = 3600\n"
    "# Longest session expiry interval a client may ask for (seconds).\n"
    "max_session_expiry = 604800\n";

/* What init made in memory before touching the disk. */
typedef struct made {
    pki_ca ca;
    EVP_PKEY *server_key;
    X509 *server_cert;
    unsigned char master[32];
} made;

static void made_free(made *m)
{
    pki_ca_free(&m->ca);
    EVP_PKEY_free(m->server_key);
    X509_free(m->server_cert);
    OPENSSL_cleanse(m->master, sizeof m->master);
}

static int make_all(made *m, const ctl_opt *hosts, const ctl_opt *ips)
{
    pki_error err;
    EVP_PKEY *ca_key = NULL;
    unsigned char tag[4];
    char cn[64];
    if (RAND_bytes(tag, sizeof tag) != 1 || RAND_priv_bytes(m->master, sizeof m->master) != 1) {
        ctl_err("the random number generator failed");
        return CTL_EXIT_FAIL;
    }
    /* A distinct CA name per hub, so certificates of two hubs are never
     * confused by name in logs or trust stores. */
    char hex[9];
    ctl_hex(tag, sizeof tag, hex);
    snprintf(cn, sizeof cn, "moat hub CA %s", hex);
    pki_server_names names = {
        .dns = hosts->values, .ndns = hosts->count, .ips = ips->values, .nips = ips->count};
    pki_status st = pki_key_generate(&ca_key, &err);
    if (st == PKI_OK)
        st = pki_ca_create(&m->ca, ca_key, cn, 0, &err);
    if (st == PKI_OK)
        st = pki_key_generate(&m->server_key, &err);
    if (st == PKI_OK)
        st = pki_issue_server(&m->server_cert, &m->ca, m->server_key, &names, 0, &err);
    EVP_PKEY_free(ca_key); /* m->ca holds its own reference */
    if (st != PKI_OK) {
        ctl_err("%s", err.msg);
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

/* Refuse a path that exists as anything but an empty directory. */
static int check_target(const char *dir, bool *existed)
{
    struct stat sb;
    *existed = false;
    if (lstat(dir, &sb) != 0) {
        if (errno == ENOENT)
            return CTL_EXIT_OK;
        ctl_err("%s: %s", dir, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    if (!S_ISDIR(sb.st_mode)) {
        ctl_err("%s exists and is not a directory", dir);
        return CTL_EXIT_FAIL;
    }
    *existed = true;
    char path[4096];
    for (size_t i = 0; i < NFILES; i++) {
        if (!ctl_path(path, sizeof path, dir, FILES[i]))
            return CTL_EXIT_FAIL;
        if (lstat(path, &sb) == 0) {
            ctl_err("%s is already a moat data directory (%s exists); refusing to overwrite "
                    "its keys",
                    dir, FILES[i]);
            return CTL_EXIT_FAIL;
        }
    }
    /* Any other content means this is not a directory made for the hub. */
    DIR *d = opendir(dir);
    if (!d) {
        ctl_err("%s: %s", dir, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    bool empty = true;
    struct dirent *e;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    (void)closedir(d); /* read-only handle: nothing to lose */
    if (!empty) {
        ctl_err("%s is not empty; give a new or empty directory", dir);
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

static int write_all(const char *dir, made *m, bool created[NFILES])
{
    char path[4096];
    pki_error err;
    pki_status st = PKI_OK;
    for (size_t i = 0; i < NFILES && st == PKI_OK; i++) {
        if (!ctl_path(path, sizeof path, dir, FILES[i]))
            return CTL_EXIT_FAIL;
        const char *f = FILES[i];
        if (strcmp(f, "master.key") == 0)
            st = pki_file_write_atomic(path, m->master, sizeof m->master, 0600, PKI_WRITE_NOCLOBBER,
                                       &err);
        else if (strcmp(f, "ca.key") == 0)
            st = pki_key_write(m->ca.key, path, PKI_WRITE_NOCLOBBER, &err);
        else if (strcmp(f, "ca.crt") == 0)
            st = pki_cert_write(m->ca.cert, path, PKI_WRITE_NOCLOBBER, &err);
        else if (strcmp(f, "server.key") == 0)
            st = pki_key_write(m->server_key, path, PKI_WRITE_NOCLOBBER, &err);
        else if (strcmp(f, "server.crt") == 0)
            st = pki_cert_write(m->server_cert, path, PKI_WRITE_NOCLOBBER, &err);
        else if (strcmp(f, "moatd.conf") == 0)
            st = pki_file_write_atomic(path, CONFIG, sizeof CONFIG - 1, 0644, PKI_WRITE_NOCLOBBER,
                                       &err);
        else if (strcmp(f, "audit.key") == 0) {
            /* The audit log's own key (not master.key: that one is rotated). */
            unsigned char k[32];
            if (RAND_priv_bytes(k, sizeof k) != 1) {
                ctl_err("the random number generator failed");
                return CTL_EXIT_FAIL;
            }
            st = pki_file_write_atomic(path, k, sizeof k, 0600, PKI_WRITE_NOCLOBBER, &err);
            OPENSSL_cleanse(k, sizeof k);
        } else if (strcmp(f, "registry.db") == 0) {
            registry *reg = NULL;
            char rerr[320];
            created[i] = true; /* registry_open may have created it even on failure */
            if (registry_open(path, REGISTRY_OPEN_CREATE, &reg, rerr, sizeof rerr) != REGISTRY_OK) {
                ctl_err("%s", rerr);
                return CTL_EXIT_FAIL;
            }
            /* The audit log starts with the hub: its first entry is this init. */
            int arc = ctl_audit_init(reg, dir, m->ca.cert);
            registry_close(reg);
            if (arc != CTL_EXIT_OK)
                return arc;
            continue;
        }
        if (st == PKI_OK)
            created[i] = true;
    }
    if (st != PKI_OK) {
        ctl_err("%s", err.msg);
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

/* Remove what this run created, after a failure. */
static void undo(const char *dir, const bool created[NFILES], bool made_dir)
{
    char path[4096];
    static const char *const extra[] = {"registry.db-wal", "registry.db-shm",
                                        "registry.db-journal"};
    for (size_t i = 0; i < NFILES; i++)
        if (created[i] && ctl_path(path, sizeof path, dir, FILES[i]))
            (void)unlink(path);
    if (created[REGISTRY_FILE])
        for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
            if (ctl_path(path, sizeof path, dir, extra[i]))
                (void)unlink(path);
    if (made_dir)
        (void)rmdir(dir);
}

static void print_summary(const char *dir, const made *m)
{
    uint8_t fp[PKI_FINGERPRINT_LEN];
    char hex[2 * PKI_FINGERPRINT_LEN + 1] = "?";
    pki_error err;
    if (pki_cert_fingerprint(m->ca.cert, fp, &err) == PKI_OK)
        ctl_hex(fp, sizeof fp, hex);
    printf("initialised %s\n", dir);
    printf("CA certificate: %s/ca.crt (sha256 %s)\n", dir, hex);
    printf("next: moatd --dir %s; then moatctl --dir %s device enroll --csr FILE\n", dir, dir);
}

int ctl_cmd_init(const ctl_ctx *ctx, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "host", .has_arg = true, .multi = true},
                      {.name = "ip", .has_arg = true, .multi = true}};
    ctl_args args;
    int rc = ctl_parse("init", argc, argv, opts, 2, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help) {
        ctl_help("init", stdout);
        return CTL_EXIT_OK;
    }
    if (args.npos > 1)
        return ctl_usage("init", "init takes one directory");
    const char *dir = args.npos == 1 ? args.pos[0] : ctl_data_dir(ctx, &args, "init");
    if (!dir)
        return CTL_EXIT_USAGE;
    if (args.npos == 1 && args.dir && strcmp(args.dir, dir) != 0)
        return ctl_usage("init", "two different directories given (%s and %s)", args.dir, dir);

    made m;
    memset(&m, 0, sizeof m);
    bool existed = false, made_dir = false;
    bool created[NFILES] = {false};
    if ((rc = check_target(dir, &existed)) != CTL_EXIT_OK)
        goto out;
    if ((rc = make_all(&m, &opts[0], &opts[1])) != CTL_EXIT_OK)
        goto out;
    if (!existed) {
        if (mkdir(dir, 0700) != 0) {
            ctl_err("cannot create %s: %s%s", dir, strerror(errno),
                    errno == ENOENT ? " (create its parent directory first)" : "");
            rc = CTL_EXIT_FAIL;
            goto out;
        }
        made_dir = true;
    }
    /* The umask can only remove bits, and an existing empty directory may
     * be wider: make the mode exactly 0700. */
    if (chmod(dir, 0700) != 0) {
        ctl_err("%s: chmod: %s", dir, strerror(errno));
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    if ((rc = write_all(dir, &m, created)) != CTL_EXIT_OK)
        goto out;
    print_summary(dir, &m);
out:
    if (rc != CTL_EXIT_OK)
        undo(dir, created, made_dir);
    made_free(&m);
    return rc;
}
