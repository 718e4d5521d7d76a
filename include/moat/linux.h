/*
 * moat/linux.h — libmoat's Linux port: the platform tables of
 * moat/platform.h for a Linux device, and device enrollment.
 *
 *   transport  TCP + OpenSSL 3, TLS 1.3 only, mutual authentication: the
 *              device's key and certificate, the hub's certificate checked
 *              against the one hub CA given (pinned; the system store is
 *              never used) and against the endpoint's host name or IP
 *              address; TLS record padding so that record sizes say little.
 *              The private key sits behind moat_linux_key, so a PKCS#11
 *              token can stand in for the key file later.
 *   clock      CLOCK_MONOTONIC, the wall clock, getrandom(2).
 *   storage    each area a preallocated file, synced with fdatasync(2).
 *   enroll     make a P-256 key on the device and a CSR for
 *              `moatctl device enroll --csr`; check and install the
 *              certificate that comes back.
 *
 * Unlike the core, this port uses the heap, stdio and errno freely: it runs
 * on a full operating system. Every call that can fail writes one line
 * saying why into the caller's `err` buffer (may be NULL).
 *
 * Example (the full program is examples/thermostat/):
 *
 *     moat_linux_key key;
 *     moat_linux_tls *tls;
 *     moat_linux_storage st;
 *     moat_transport tr; moat_clock clk; moat_storage sto;
 *     moat_linux_key_file(&key, "device.key");
 *     moat_linux_tls_config tc = {.ca_file = "ca.crt", .cert_file = "device.crt", .key = &key};
 *     if (moat_linux_tls_new(&tls, &tc, err, sizeof err) != MOAT_OK) ...
 *     moat_linux_tls_transport(tls, &tr);
 *     moat_linux_clock(&clk);
 *     if (moat_linux_storage_open(&st, "/var/lib/thermo", 65536, 4096, err, sizeof err)) ...
 *     moat_linux_storage_table(&st, &sto);
 */
#ifndef MOAT_LINUX_H
#define MOAT_LINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moat/moat.h>
#include <moat/platform.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- keys
 * Where the device's private key lives. `load` hands OpenSSL a key object
 * (an EVP_PKEY *, typed void * so that this header does not pull in
 * OpenSSL's); the caller frees it with EVP_PKEY_free. A PKCS#11 key would
 * load a handle through an OpenSSL provider here; the rest of the port does
 * not change. */
typedef struct moat_linux_key {
    void *ctx;
    moat_status (*load)(void *ctx, void **evp_pkey, char *err, size_t errlen);
    char path[512]; /* the file key's path (moat_linux_key_file) */
} moat_linux_key;

/*
 * A private key in a PEM file. The file must be a regular file that group
 * and others can neither read nor write (0600 or stricter): a key that other
 * users could read is no longer the device's alone, so it is refused at load
 * time rather than used. Returns MOAT_OK or MOAT_ERR_ARG (path too long).
 */
moat_status moat_linux_key_file(moat_linux_key *key, const char *path);

/* ---------------------------------------------------------------- transport */

/* Opaque: one TLS connection (at a time) and its settings. */
typedef struct moat_linux_tls moat_linux_tls;

typedef struct moat_linux_tls_config {
    const char *ca_file;       /* the hub CA (PEM): the only one trusted */
    const char *cert_file;     /* the device certificate (PEM, with chain) */
    const moat_linux_key *key; /* its private key */
    /* TLS 1.3 record padding: every record is padded to a multiple of this
     * many bytes (SSL_CTX_set_block_padding). 0 = 256 (default); 1 = off. */
    size_t record_padding;
    /* TCP connect + TLS handshake time limit in ms (0 = 15000). The client
     * has its own, longer limit over the whole connect. */
    uint32_t handshake_timeout_ms;
} moat_linux_tls_config;

/*
 * Set up a TLS transport: loads the CA, the certificate and the key (which
 * must match), TLS 1.3 only. No network I/O. Free with moat_linux_tls_free.
 * Returns MOAT_OK; MOAT_ERR_ARG (missing file name); MOAT_ERR_IO (a file
 * unreadable or invalid, a key file readable by others, key and certificate
 * not matching): err says which.
 */
moat_status moat_linux_tls_new(moat_linux_tls **out, const moat_linux_tls_config *cfg, char *err,
                               size_t errlen);

/* Close any connection and free everything (NULL is fine). */
void moat_linux_tls_free(moat_linux_tls *tls);

/* Fill a moat_transport table that drives this TLS transport. */
void moat_linux_tls_transport(moat_linux_tls *tls, moat_transport *out);

/* The socket to wait on (poll for POLLIN; POLLOUT too while connecting or
 * when moat_linux_tls_wants_write), or -1 when there is no connection. */
int moat_linux_tls_fd(const moat_linux_tls *tls);

/* True while the connection waits to be writable (TCP connect, handshake,
 * or a write that could not complete). */
bool moat_linux_tls_wants_write(const moat_linux_tls *tls);

/* True when OpenSSL holds bytes already read from the socket that the
 * client has not taken yet: poll the client again before waiting. */
bool moat_linux_tls_pending(const moat_linux_tls *tls);

/* Wait at most timeout_ms for the transport to have something to do: poll(2)
 * on its socket (readable; writable too when it wants to write), returning
 * at once when bytes are pending. Without a socket it sleeps timeout_ms.
 * Call moat_poll afterwards in any case. For one client per program; a
 * program with many clients polls their descriptors itself. */
void moat_linux_tls_wait(const moat_linux_tls *tls, uint32_t timeout_ms);

/* The last failure, one line (the connect, handshake or I/O error); "" if
 * none. Valid until the next call on tls. */
const char *moat_linux_tls_last_error(const moat_linux_tls *tls);

/* ---------------------------------------------------------------- clock */

/* Fill a moat_clock table: CLOCK_MONOTONIC, time(2) (0 while the wall clock
 * is obviously unset, before 2020), getrandom(2). */
void moat_linux_clock(moat_clock *out);

/* ---------------------------------------------------------------- storage */

typedef struct moat_linux_storage {
    int fd[MOAT_AREA_COUNT];
    size_t size[MOAT_AREA_COUNT];
} moat_linux_storage;

/*
 * Open (create when missing) the areas as files in directory dir:
 * dir/queue.area (queue_size bytes) and dir/state.area (state_size bytes),
 * mode 0600, fully allocated and synced on creation so that later writes
 * cannot fail for lack of space. An existing file must have the size asked
 * for (the queue's layout depends on it): MOAT_ERR_ARG otherwise.
 * Returns MOAT_OK, MOAT_ERR_ARG or MOAT_ERR_IO.
 */
moat_status moat_linux_storage_open(moat_linux_storage *st, const char *dir, size_t queue_size,
                                    size_t state_size, char *err, size_t errlen);

/* Close the files (the struct may be opened again). */
void moat_linux_storage_close(moat_linux_storage *st);

/* Fill a moat_storage table backed by st (which must stay alive). */
void moat_linux_storage_table(moat_linux_storage *st, moat_storage *out);

/* ---------------------------------------------------------------- enroll
 * The device side of `moatctl device enroll`:
 *   1. moat_linux_enroll_request: a new EC P-256 key (written 0600, never
 *      leaves the device) and a CSR for it (PEM);
 *   2. the operator runs `moatctl device enroll --csr device.csr --out
 *      device.crt` and gives back device.crt (and the hub's ca.crt);
 *   3. moat_linux_enroll_install: checks that the certificate is for this
 *      key, chains to the hub CA and is a client certificate, installs it,
 *      and says the device id the hub chose (the certificate's CN). */

/* Make key_path (must not exist: an existing key is never overwritten) and
 * csr_path. Returns MOAT_OK, MOAT_ERR_STATE (key_path exists) or
 * MOAT_ERR_IO. */
moat_status moat_linux_enroll_request(const char *key_path, const char *csr_path, char *err,
                                      size_t errlen);

/* Check cert_in (PEM or DER) against key_path and ca_path and write it to
 * cert_out (PEM, atomically); id (cap bytes, may be NULL) gets the device id.
 * Returns MOAT_OK, MOAT_ERR_AUTH (wrong key, not from this CA, not a client
 * certificate, no usable id), MOAT_ERR_SPACE (id too long for cap) or
 * MOAT_ERR_IO. */
moat_status moat_linux_enroll_install(const char *cert_in, const char *key_path,
                                      const char *ca_path, const char *cert_out, char *id,
                                      size_t cap, char *err, size_t errlen);

/* The device id (the subject's CN) of the certificate in cert_path.
 * Returns MOAT_OK, MOAT_ERR_SPACE, MOAT_ERR_IO or MOAT_ERR_AUTH (no CN). */
moat_status moat_linux_cert_device_id(const char *cert_path, char *id, size_t cap, char *err,
                                      size_t errlen);

/* ---------------------------------------------------------------- arguments */

/* "HOST:PORT" or "[V6ADDR]:PORT" into host (NUL-terminated, cap bytes) and
 * *port (1..65535). False for anything else. */
bool moat_linux_parse_endpoint(const char *s, char *host, size_t cap, uint16_t *port);

/* A trusted command key as 64 hex digits (`moatctl command keygen`). */
bool moat_linux_parse_key_hex(const char *s, uint8_t out[32]);

/* The hubs a device program was given (--hub, repeatable), in the form
 * moat_config takes: list[0..count), each host name kept in hosts. */
typedef struct moat_linux_hubs {
    moat_endpoint list[MOAT_MAX_ENDPOINTS];
    char hosts[MOAT_MAX_ENDPOINTS][256];
    size_t count;
} moat_linux_hubs;

/* Append the endpoint s (as moat_linux_parse_endpoint reads it); false when
 * it is malformed or the list is full. */
bool moat_linux_hubs_add(moat_linux_hubs *hubs, const char *s);

/* A decimal number in [lo, hi]: digits only (no sign, no spaces, nothing
 * after), as command-line options take them. */
bool moat_linux_parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out);

#ifdef __cplusplus
}
#endif
#endif
