/*
 * Unit tests for the pki module (src/pki): the hub CA and the server
 * certificate verify with X509_verify_cert and carry the extensions a TLS
 * stack checks (CA:TRUE/pathlen 0, keyCertSign, key identifiers; serverAuth,
 * localhost/127.0.0.1/::1 always present); a CSR survives a PEM round trip;
 * a CSR whose signature was tampered with is refused (the attack: enroll a
 * public key without holding its private key); an issued client certificate
 * takes only the public key from the CSR — its CN is the id given, not the
 * one requested, and a CA:TRUE request does not make it a CA; refused key
 * types; the fingerprint is stable and equals SHA-256 over the DER; keys are
 * written 0600 atomically, never clobbered, and refused when others can read
 * them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "pki.h"

static pki_error err;

#define OK(expr)                                                                                   \
    do {                                                                                           \
        pki_status st_ = (expr);                                                                   \
        if (st_ != PKI_OK)                                                                         \
            fail_msg("%s: %s (%s)", #expr, pki_status_name(st_), err.msg);                         \
    } while (0)

typedef struct fixture {
    pki_ca ca;
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    EVP_PKEY *key = NULL;
    OK(pki_key_generate(&key, &err));
    OK(pki_ca_create(&f->ca, key, "moat test CA", 0, &err));
    EVP_PKEY_free(key);
    snprintf(f->dir, sizeof f->dir, "/tmp/moat-test-pki-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
                continue;
            snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(f->dir);
    pki_ca_free(&f->ca);
    free(f);
    return 0;
}

/* Verify cert against ca with X509_verify_cert for the given purpose. */
static int verify(const pki_ca *ca, X509 *cert, int purpose)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    assert_non_null(store);
    assert_non_null(ctx);
    assert_int_equal(X509_STORE_add_cert(store, ca->cert), 1);
    assert_int_equal(X509_STORE_CTX_init(ctx, store, cert, NULL), 1);
    if (purpose)
        assert_int_equal(X509_STORE_CTX_set_purpose(ctx, purpose), 1);
    int ok = X509_verify_cert(ctx);
    int e = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok == 1 ? X509_V_OK : (e ? e : -1);
}

static bool ext_critical(X509 *x, int nid)
{
    int idx = X509_get_ext_by_NID(x, nid, -1);
    assert_true(idx >= 0);
    return X509_EXTENSION_get_critical(X509_get_ext(x, idx)) == 1;
}

static X509_REQ *make_csr(EVP_PKEY **key_out, const char *cn)
{
    EVP_PKEY *key = NULL;
    X509_REQ *csr = NULL;
    OK(pki_key_generate(&key, &err));
    OK(pki_csr_create(&csr, key, cn, &err));
    if (key_out)
        *key_out = key;
    else
        EVP_PKEY_free(key);
    return csr;
}

static void test_ca_extensions(void **state)
{
    fixture *f = *state;
    X509 *ca = f->ca.cert;
    assert_int_equal(X509_get_version(ca), X509_VERSION_3);
    assert_int_equal(X509_check_ca(ca), 1);
    assert_true(ext_critical(ca, NID_basic_constraints));
    assert_true(ext_critical(ca, NID_key_usage));
    uint32_t ku = X509_get_key_usage(ca);
    assert_true(ku & KU_KEY_CERT_SIGN);
    assert_true(ku & KU_CRL_SIGN);
    assert_int_equal(X509_get_pathlen(ca), 0);
    assert_non_null(X509_get0_subject_key_id(ca));
    assert_non_null(X509_get0_authority_key_id(ca));
    /* Self-signed: its own signature verifies with its own key. */
    assert_int_equal(X509_verify(ca, X509_get0_pubkey(ca)), 1);
    /* 10 years by default. */
    int64_t na = 0;
    OK(pki_cert_not_after(ca, &na, &err));
    int64_t years10 = (int64_t)time(NULL) + 3650LL * 86400;
    assert_true(na > years10 - 3600 && na < years10 + 3600);
    /* 128-bit random serial: at most 32 hex digits, and differs per CA. */
    char s1[80], s2[80];
    OK(pki_cert_serial_hex(ca, s1, sizeof s1, &err));
    assert_true(strlen(s1) <= 32 && strlen(s1) >= 16);
    pki_ca other = {0};
    EVP_PKEY *k = NULL;
    OK(pki_key_generate(&k, &err));
    OK(pki_ca_create(&other, k, "other", 0, &err));
    OK(pki_cert_serial_hex(other.cert, s2, sizeof s2, &err));
    assert_string_not_equal(s1, s2);
    EVP_PKEY_free(k);
    pki_ca_free(&other);
}

static bool has_san(X509 *x, int type, const void *data, size_t len)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(gens);
    bool found = false;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        int t;
        const ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, i), &t);
        if (t == type && (size_t)ASN1_STRING_length(s) == len &&
            memcmp(ASN1_STRING_get0_data(s), data, len) == 0)
            found = true;
    }
    GENERAL_NAMES_free(gens);
    return found;
}

static void test_server_cert_verifies(void **state)
{
    fixture *f = *state;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    const char *hosts[] = {"Hub.Example.com", "localhost"};
    const char *ips[] = {"192.0.2.10", "2001:db8::1"};
    pki_server_names names = {.dns = hosts, .ndns = 2, .ips = ips, .nips = 2};
    OK(pki_key_generate(&key, &err));
    OK(pki_issue_server(&cert, &f->ca, key, &names, 0, &err));
    assert_int_equal(verify(&f->ca, cert, X509_PURPOSE_SSL_SERVER), X509_V_OK);
    /* A server certificate must not pass as a client one. */
    assert_int_not_equal(verify(&f->ca, cert, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
    assert_int_equal(X509_check_ca(cert), 0);
    assert_true(ext_critical(cert, NID_basic_constraints));
    assert_true(X509_get_extended_key_usage(cert) & XKU_SSL_SERVER);
    assert_false(X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT);
    /* Names: given ones (lower-cased), and the loopback ones always. */
    assert_true(has_san(cert, GEN_DNS, "hub.example.com", 15));
    assert_true(has_san(cert, GEN_DNS, "localhost", 9));
    static const unsigned char v4[] = {192, 0, 2, 10}, lo4[] = {127, 0, 0, 1};
    static const unsigned char lo6[16] = {[15] = 1};
    static const unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    assert_true(has_san(cert, GEN_IPADD, v4, 4));
    assert_true(has_san(cert, GEN_IPADD, lo4, 4));
    assert_true(has_san(cert, GEN_IPADD, lo6, 16));
    assert_true(has_san(cert, GEN_IPADD, v6, 16));
    assert_int_equal(X509_check_host(cert, "hub.example.com", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(cert, "::1", 0), 1);
    /* localhost given twice appears once. */
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 6);
    GENERAL_NAMES_free(gens);
    /* 825 days at most. */
    int64_t na = 0;
    OK(pki_cert_not_after(cert, &na, &err));
    assert_true(na <= (int64_t)time(NULL) + 825LL * 86400 + 60);
    X509_free(cert);
    EVP_PKEY_free(key);
}

static void test_server_cert_refusals(void **state)
{
    fixture *f = *state;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    OK(pki_key_generate(&key, &err));
    assert_int_equal(pki_issue_server(&cert, &f->ca, key, NULL, 826, &err), PKI_ERR_ARG);
    const char *bad_hosts[] = {"a,DNS:evil.com", "-bad.com", "bad..com", "", "10.0.0.1"};
    for (size_t i = 0; i < sizeof bad_hosts / sizeof bad_hosts[0]; i++) {
        pki_server_names n = {.dns = &bad_hosts[i], .ndns = 1};
        assert_int_equal(pki_issue_server(&cert, &f->ca, key, &n, 0, &err), PKI_ERR_ARG);
        assert_null(cert);
    }
    const char *bad_ip[] = {"300.1.1.1"};
    pki_server_names n = {.ips = bad_ip, .nips = 1};
    assert_int_equal(pki_issue_server(&cert, &f->ca, key, &n, 0, &err), PKI_ERR_ARG);
    assert_non_null(strstr(err.msg, "300.1.1.1"));
    EVP_PKEY_free(key);
}

static void test_csr_round_trip(void **state)
{
    (void)state;
    EVP_PKEY *key = NULL;
    X509_REQ *csr = make_csr(&key, "device-1");
    char *pem = NULL;
    size_t len = 0;
    OK(pki_csr_to_pem(csr, &pem, &len, &err));
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----"));
    X509_REQ *back = NULL;
    OK(pki_csr_parse(&back, pem, len, &err));
    OK(pki_csr_verify(back, &err));
    assert_true(pki_key_public_equal(X509_REQ_get0_pubkey(back), key));
    /* DER works too. */
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(back, &der);
    assert_true(n > 0);
    X509_REQ *from_der = NULL;
    OK(pki_csr_parse(&from_der, der, (size_t)n, &err));
    OK(pki_csr_verify(from_der, &err));
    OPENSSL_free(der);
    X509_REQ_free(from_der);
    X509_REQ_free(back);
    X509_REQ_free(csr);
    free(pem);
    EVP_PKEY_free(key);
}

static void test_csr_tampered_signature_refused(void **state)
{
    fixture *f = *state;
    X509_REQ *csr = make_csr(NULL, "victim");
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(csr, &der);
    assert_true(n > 10);
    /* Flip a bit inside the signature (the last bytes of the DER). */
    der[n - 3] ^= 0x01;
    X509_REQ *bad = NULL;
    OK(pki_csr_parse(&bad, der, (size_t)n, &err));
    assert_int_equal(pki_csr_verify(bad, &err), PKI_ERR_SIGNATURE);
    assert_non_null(strstr(err.msg, "signature"));
    X509 *cert = NULL;
    assert_int_equal(pki_issue_client(&cert, &f->ca, bad, "abc", 0, &err), PKI_ERR_SIGNATURE);
    assert_null(cert);

    /* A CSR carrying someone else's public key, signed by another key: the
     * classic attempt to get a certificate for a key one does not hold. */
    EVP_PKEY *victim = NULL, *attacker = NULL;
    OK(pki_key_generate(&victim, &err));
    OK(pki_key_generate(&attacker, &err));
    X509_REQ *forged = X509_REQ_new();
    assert_int_equal(X509_REQ_set_pubkey(forged, victim), 1);
    assert_true(X509_REQ_sign(forged, attacker, EVP_sha256()) > 0);
    assert_int_equal(pki_csr_verify(forged, &err), PKI_ERR_SIGNATURE);
    assert_int_equal(pki_issue_client(&cert, &f->ca, forged, "abc", 0, &err), PKI_ERR_SIGNATURE);

    /* Garbage is a parse error, not a crash. */
    X509_REQ *g = NULL;
    assert_int_equal(pki_csr_parse(&g, "garbage\n", 8, &err), PKI_ERR_PARSE);
    assert_int_equal(pki_csr_parse(&g, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", 41, &err),
                     PKI_ERR_PARSE);
    assert_null(g);
    X509_REQ_free(forged);
    EVP_PKEY_free(victim);
    EVP_PKEY_free(attacker);
    X509_REQ_free(bad);
    X509_REQ_free(csr);
    OPENSSL_free(der);
}

static void test_client_cert_takes_only_the_key(void **state)
{
    fixture *f = *state;
    EVP_PKEY *key = NULL;
    X509_REQ *csr = X509_REQ_new();
    OK(pki_key_generate(&key, &err));
    /* The request asks for another identity and for CA powers. */
    X509_NAME *name = X509_REQ_get_subject_name(csr);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"other-device", -1,
                               -1, 0);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"Evil", -1, -1, 0);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(
        exts, X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE"));
    sk_X509_EXTENSION_push(exts,
                           X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:evil.com"));
    assert_int_equal(X509_REQ_add_extensions(csr, exts), 1);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    assert_int_equal(X509_REQ_set_pubkey(csr, key), 1);
    assert_true(X509_REQ_sign(csr, key, EVP_sha256()) > 0);

    X509 *cert = NULL;
    OK(pki_issue_client(&cert, &f->ca, csr, "ab3xyz", 0, &err));
    char cn[128];
    OK(pki_cert_subject_cn(cert, cn, sizeof cn, &err));
    assert_string_equal(cn, "ab3xyz");
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(cert)), 1);
    assert_int_equal(X509_check_ca(cert), 0);
    assert_true(ext_critical(cert, NID_basic_constraints));
    assert_int_equal(X509_get_ext_by_NID(cert, NID_subject_alt_name, -1), -1);
    assert_int_equal(X509_get_extended_key_usage(cert), XKU_SSL_CLIENT);
    assert_int_equal(X509_get_key_usage(cert), KU_DIGITAL_SIGNATURE);
    assert_true(pki_key_public_equal(X509_get0_pubkey(cert), key));
    assert_int_equal(verify(&f->ca, cert, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
    assert_int_not_equal(verify(&f->ca, cert, X509_PURPOSE_SSL_SERVER), X509_V_OK);
    /* Default validity 397 days. */
    int64_t na = 0;
    OK(pki_cert_not_after(cert, &na, &err));
    int64_t want = (int64_t)time(NULL) + 397LL * 86400;
    assert_true(na > want - 60 && na < want + 60);
    /* An id with characters that mean something in a DN is refused. */
    X509 *bad = NULL;
    assert_int_equal(pki_issue_client(&bad, &f->ca, csr, "a,CN=b", 0, &err), PKI_ERR_ARG);
    assert_int_equal(pki_issue_client(&bad, &f->ca, csr, "x", 826, &err), PKI_ERR_ARG);
    X509_free(cert);
    X509_REQ_free(csr);
    EVP_PKEY_free(key);
}

static void test_client_cert_within_ca_lifetime(void **state)
{
    (void)state;
    pki_ca shortca = {0};
    EVP_PKEY *k = NULL;
    OK(pki_key_generate(&k, &err));
    OK(pki_ca_create(&shortca, k, "short", 30, &err));
    X509_REQ *csr = make_csr(NULL, NULL);
    X509 *cert = NULL;
    OK(pki_issue_client(&cert, &shortca, csr, "dev", 0, &err));
    assert_true(ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(shortca.cert)) <= 0);
    X509_free(cert);
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
    pki_ca_free(&shortca);
}

static EVP_PKEY *keygen(const char *type, const char *arg)
{
    EVP_PKEY *k = NULL;
    if (strcmp(type, "RSA") == 0)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)(strcmp(arg, "2048") == 0 ? 2048 : 1024));
    else if (arg)
        k = EVP_PKEY_Q_keygen(NULL, NULL, type, arg);
    else
        k = EVP_PKEY_Q_keygen(NULL, NULL, type);
    assert_non_null(k);
    return k;
}

static void test_key_types(void **state)
{
    fixture *f = *state;
    struct {
        const char *type, *arg;
        pki_status want;
    } cases[] = {
        {"EC", "P-256", PKI_OK},          {"ED25519", NULL, PKI_OK},
        {"RSA", "2048", PKI_OK},          {"RSA", "1024", PKI_ERR_KEYTYPE},
        {"EC", "P-384", PKI_ERR_KEYTYPE}, {"ED448", NULL, PKI_ERR_KEYTYPE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        EVP_PKEY *k = keygen(cases[i].type, cases[i].arg);
        assert_int_equal(pki_key_check_accepted(k, &err), cases[i].want);
        X509_REQ *csr = NULL;
        OK(pki_csr_create(&csr, k, "x", &err));
        X509 *cert = NULL;
        pki_status st = pki_issue_client(&cert, &f->ca, csr, "dev", 0, &err);
        assert_int_equal(st, cases[i].want);
        if (st == PKI_OK)
            assert_int_equal(verify(&f->ca, cert, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
        else
            assert_non_null(strstr(err.msg, "accepted: EC P-256, Ed25519, RSA"));
        X509_free(cert);
        X509_REQ_free(csr);
        EVP_PKEY_free(k);
    }
}

static void test_fingerprint(void **state)
{
    fixture *f = *state;
    X509_REQ *csr = make_csr(NULL, NULL);
    X509 *a = NULL, *b = NULL;
    OK(pki_issue_client(&a, &f->ca, csr, "dev", 0, &err));
    OK(pki_issue_client(&b, &f->ca, csr, "dev", 0, &err));
    uint8_t fa[32], fa2[32], fb[32], want[32];
    OK(pki_cert_fingerprint(a, fa, &err));
    OK(pki_cert_fingerprint(a, fa2, &err));
    OK(pki_cert_fingerprint(b, fb, &err));
    assert_memory_equal(fa, fa2, 32);
    /* Same key, same id: still a different certificate (serial), so a
     * different fingerprint. */
    assert_memory_not_equal(fa, fb, 32);
    unsigned char *der = NULL;
    int n = i2d_X509(a, &der);
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(der, (size_t)n, want, &mdlen, EVP_sha256(), NULL), 1);
    assert_memory_equal(fa, want, 32);
    OPENSSL_free(der);
    /* Through PEM and back: same fingerprint. */
    char *pem = NULL;
    size_t len = 0;
    OK(pki_cert_to_pem(a, &pem, &len, &err));
    X509 *back = NULL;
    OK(pki_cert_from_pem(&back, pem, len, &err));
    OK(pki_cert_fingerprint(back, fa2, &err));
    assert_memory_equal(fa, fa2, 32);
    free(pem);
    X509_free(back);
    X509_free(a);
    X509_free(b);
    X509_REQ_free(csr);
}

static size_t count_entries(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_key_files(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/k.key", f->dir);
    mode_t old = umask(0); /* even with a permissive umask the key is 0600 */
    OK(pki_key_write(f->ca.key, path, PKI_WRITE_NOCLOBBER, &err));
    umask(old);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(count_entries(f->dir), 1); /* no temporary left behind */
    EVP_PKEY *back = NULL;
    OK(pki_key_read(&back, path, &err));
    assert_int_equal(EVP_PKEY_eq(back, f->ca.key), 1);
    EVP_PKEY_free(back);
    /* Never clobbered. */
    EVP_PKEY *other = NULL;
    OK(pki_key_generate(&other, &err));
    assert_int_equal(pki_key_write(other, path, PKI_WRITE_NOCLOBBER, &err), PKI_ERR_EXISTS);
    OK(pki_key_read(&back, path, &err));
    assert_int_equal(EVP_PKEY_eq(back, f->ca.key), 1);
    EVP_PKEY_free(back);
    assert_int_equal(count_entries(f->dir), 1);
    /* A key others can read is refused. */
    assert_int_equal(chmod(path, 0644), 0);
    back = NULL;
    assert_int_equal(pki_key_read(&back, path, &err), PKI_ERR_PERM);
    assert_null(back);
    assert_non_null(strstr(err.msg, "chmod 600"));
    /* Replacing atomically keeps the mode asked for. */
    OK(pki_key_write(other, path, PKI_WRITE_REPLACE, &err));
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    OK(pki_key_read(&back, path, &err));
    assert_int_equal(EVP_PKEY_eq(back, other), 1);
    EVP_PKEY_free(back);
    EVP_PKEY_free(other);
    /* CA load checks that key and certificate belong together. */
    char crt[128];
    snprintf(crt, sizeof crt, "%s/ca.crt", f->dir);
    OK(pki_cert_write(f->ca.cert, crt, PKI_WRITE_NOCLOBBER, &err));
    assert_int_equal(stat(crt, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0644);
    pki_ca loaded = {0};
    assert_int_equal(pki_ca_load(&loaded, crt, path, &err), PKI_ERR_ARG);
    /* Writing into a missing directory fails cleanly. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nodir/k.key", f->dir);
    assert_int_equal(pki_key_write(f->ca.key, missing, 0, &err), PKI_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ca_extensions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cert_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cert_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csr_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csr_tampered_signature_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_cert_takes_only_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_cert_within_ca_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fingerprint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
