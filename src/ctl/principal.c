/*
 * principal.c — `moatctl device ...` and `moatctl service ...`: enrolling,
 * listing, showing, disabling, enabling, revoking and deleting principals.
 *
 * Enrollment is one flow for both kinds and both paths: the id is chosen
 * here (128 random bits for a device, the operator's name for a service),
 * a certificate is issued from a CSR with that id as its subject — whatever
 * the CSR asked for — and the principal, its memberships and the exact
 * certificate fingerprint are recorded in one transaction. Files are written
 * inside that transaction and removed if it does not commit, so a failure
 * leaves neither a registered certificate without its files nor files for a
 * certificate the hub would not accept.
 *
 * `add` makes the key pair here (development, or devices without a key
 * store); `enroll` is the normal path where the private key never leaves the
 * device: the hub only ever sees its CSR.
 *
 * `renew` runs the same two paths for a principal that exists and is
 * active: one more certificate under the same id. The old one keeps working
 * until it expires, so a fleet can move over at its own pace, unless
 * --revoke-old revokes it in the same transaction (the hub then closes a
 * connection that uses it within a poll interval).
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

#define SERVICE_GROUP_PREFIX "service-"

typedef struct plan {
    registry_kind kind;
    const char *word; /* "device" or "service" */
    const char *dir;
    char id[REGISTRY_ID_MAX + 1];
    const ctl_opt *groups;
    const ctl_opt *policies; /* services only; may be NULL */
    unsigned days;
    const char *how;    /* "add", "enroll" or "renew", for the audit log */
    bool renew;         /* one more certificate for the existing principal id */
    bool revoke_old;    /* renew: revoke its other certificates in the same transaction */
    bool key_here;      /* renew: the key pair was made here (for the audit log) */
    size_t still_valid; /* renew, set on success: older certificates still valid */
} plan;

/* Files written during an enrollment, removed again if it fails. */
typedef struct written {
    char path[3][4096];
    size_t n;
} written;

static void written_undo(written *w)
{
    for (size_t i = 0; i < w->n; i++)
        (void)unlink(w->path[i]);
    w->n = 0;
}

/* Output step run inside the transaction. */
typedef int (*output_fn)(void *ctx, const plan *p, X509 *cert, const pki_ca *ca, written *w);

static int parse_days(const ctl_opt *o, const char *group, unsigned *days)
{
    *days = 0;
    if (o->count == 0)
        return CTL_EXIT_OK;
    unsigned long v;
    if (!ctl_parse_uint(o->values[0], 1, PKI_CLIENT_DAYS_MAX, &v))
        return ctl_usage(group, "--days must be a number from 1 to %u", PKI_CLIENT_DAYS_MAX);
    *days = (unsigned)v;
    return CTL_EXIT_OK;
}

/* What the registry records of cert, issued to id. */
static int cert_record(X509 *cert, const char *id, registry_cert *c)
{
    pki_error perr;
    memset(c, 0, sizeof *c);
    memcpy(c->principal, id, strlen(id) + 1);
    if (pki_cert_fingerprint(cert, c->fingerprint, &perr) != PKI_OK ||
        pki_cert_serial_hex(cert, c->serial, sizeof c->serial, &perr) != PKI_OK ||
        pki_cert_not_after(cert, &c->not_after, &perr) != PKI_OK) {
        ctl_err("%s", perr.msg);
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

/* The end of a change that also writes files: the audit record, the files,
 * the commit. On any failure the transaction is rolled back and the files
 * written so far are removed, so the registry and the disk agree. */
static int audit_write_commit(registry *reg, const plan *p, const char *action, json_t *details,
                              X509 *cert, const pki_ca *ca, output_fn out, void *octx, written *w)
{
    int rc = ctl_audit_ok(reg, p->dir, action, p->id, details);
    if (rc == CTL_EXIT_OK && (rc = out(octx, p, cert, ca, w)) != CTL_EXIT_OK)
        written_undo(w);
    registry_status st;
    if (rc == CTL_EXIT_OK && (st = registry_commit(reg)) != REGISTRY_OK) {
        rc = ctl_reg_fail(reg, st);
        written_undo(w);
    }
    if (rc != CTL_EXIT_OK)
        registry_rollback(reg);
    return rc;
}

/* Record principal, groups, policies and certificate; run out() before the
 * commit. */
static int register_cert(registry *reg, const plan *p, X509 *cert, const pki_ca *ca, output_fn out,
                         void *octx, written *w)
{
    registry_cert c;
    int rc = cert_record(cert, p->id, &c);
    if (rc != CTL_EXIT_OK)
        return rc;
    registry_status st = registry_begin(reg);
    if (st == REGISTRY_OK)
        st = registry_principal_add(reg, p->kind, p->id);
    if (st == REGISTRY_OK && p->policies && p->policies->count > 0) {
        char group[REGISTRY_NAME_MAX + 16];
        snprintf(group, sizeof group, SERVICE_GROUP_PREFIX "%s", p->id);
        st = registry_group_add(reg, group, "policies of one service (moatctl service add)");
        if (st == REGISTRY_EXISTS)
            st = REGISTRY_OK; /* made by hand earlier: use it */
        for (size_t i = 0; st == REGISTRY_OK && i < p->policies->count; i++) {
            st = registry_group_attach(reg, p->policies->values[i], group);
            if (st == REGISTRY_EXISTS)
                st = REGISTRY_OK;
        }
        if (st == REGISTRY_OK)
            st = registry_member_add(reg, group, p->id);
    }
    for (size_t i = 0; st == REGISTRY_OK && i < p->groups->count; i++) {
        const char *g = p->groups->values[i];
        if (p->kind == REGISTRY_DEVICE && strcmp(g, REGISTRY_DEVICES_GROUP) == 0)
            continue; /* every device is already in it */
        st = registry_member_add(reg, g, p->id);
        if (st == REGISTRY_EXISTS)
            st = REGISTRY_OK; /* the same --group twice */
    }
    if (st == REGISTRY_OK)
        st = registry_cert_add(reg, &c);
    char action[32];
    snprintf(action, sizeof action, "%s.%s", p->word, p->how);
    if (st != REGISTRY_OK) {
        char why[320];
        snprintf(why, sizeof why, "%s", registry_errmsg(reg));
        rc = ctl_reg_fail(reg, st);
        registry_rollback(reg);
        ctl_audit_failed(reg, p->dir, action, p->id, why, NULL);
        return rc;
    }
    return audit_write_commit(reg, p, action, ctl_audit_cert_details(&c, p->groups, p->policies),
                              cert, ca, out, octx, w);
}

/* ---- renew: one more certificate for an existing principal --------------- */

/* The certificates a principal holds that are not revoked yet, taken before
 * the new one is added. */
typedef struct old_certs {
    uint8_t (*fp)[REGISTRY_FINGERPRINT_LEN];
    int64_t *not_after;
    size_t n, cap;
    bool nomem;
} old_certs;

static int collect_unrevoked(void *vctx, const registry_cert *c)
{
    old_certs *o = vctx;
    if (c->revoked)
        return 0;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4;
        if (cap > SIZE_MAX / sizeof *o->fp) {
            o->nomem = true;
            return 1;
        }
        void *fp = realloc(o->fp, cap * sizeof *o->fp);
        if (fp)
            o->fp = fp;
        void *na = fp ? realloc(o->not_after, cap * sizeof *o->not_after) : NULL;
        if (!na) {
            o->nomem = true;
            return 1;
        }
        o->not_after = na;
        o->cap = cap;
    }
    memcpy(o->fp[o->n], c->fingerprint, REGISTRY_FINGERPRINT_LEN);
    o->not_after[o->n++] = c->not_after;
    return 0;
}

/* Add cert to the active principal p->id; with p->revoke_old revoke every
 * other certificate it holds, in the same transaction as the audit entry
 * that lists them; run out() before the commit. *still_valid: how many
 * older, unexpired certificates stay valid. */
static int renew_cert(registry *reg, const plan *p, X509 *cert, const pki_ca *ca, output_fn out,
                      void *octx, written *w, size_t *still_valid)
{
    registry_cert c;
    int rc = cert_record(cert, p->id, &c);
    if (rc != CTL_EXIT_OK)
        return rc;
    char action[32], why[320] = "";
    snprintf(action, sizeof action, "%s.renew", p->word);
    old_certs old = {.n = 0};
    json_t *revoked = json_array(), *details = NULL;
    int64_t now = (int64_t)time(NULL);
    registry_principal pr;
    registry_status st = registry_begin(reg);
    if (st == REGISTRY_OK)
        st = registry_principal_get(reg, p->id, p->kind, &pr);
    /* Inside the transaction, so a revoke or disable cannot slip in between
     * the check and the new certificate. */
    if (st == REGISTRY_OK && pr.status != REGISTRY_ACTIVE) {
        if (pr.status == REGISTRY_REVOKED)
            snprintf(why, sizeof why,
                     "%s %s is revoked: it cannot be renewed (revocation is permanent; "
                     "enroll a new %s instead)",
                     p->word, p->id, p->word);
        else
            snprintf(why, sizeof why, "%s %s is disabled: enable it before renewing", p->word,
                     p->id);
        st = REGISTRY_REFUSED;
    }
    if (st == REGISTRY_OK) {
        st = registry_cert_list(reg, p->id, collect_unrevoked, &old);
        if (old.nomem)
            snprintf(why, sizeof why, "out of memory");
    }
    if (st == REGISTRY_OK)
        st = registry_cert_add(reg, &c);
    *still_valid = 0;
    for (size_t i = 0; st == REGISTRY_OK && i < old.n; i++) {
        if (!p->revoke_old) {
            *still_valid += old.not_after[i] > now;
            continue;
        }
        st = registry_cert_revoke(reg, p->id, old.fp[i]);
        char hex[2 * REGISTRY_FINGERPRINT_LEN + 1];
        ctl_hex(old.fp[i], REGISTRY_FINGERPRINT_LEN, hex);
        if (revoked)
            json_array_append_new(revoked, json_string(hex));
    }
    if (st == REGISTRY_OK && !revoked) {
        snprintf(why, sizeof why, "out of memory");
        st = REGISTRY_NOMEM;
    }
    if (st != REGISTRY_OK) {
        if (!why[0])
            snprintf(why, sizeof why, "%s", registry_errmsg(reg));
        if (st == REGISTRY_BUSY)
            ctl_reg_fail(reg, st);
        else
            ctl_err("%s", why);
        registry_rollback(reg);
        ctl_audit_failed(reg, p->dir, action, p->id, why, NULL);
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    details = ctl_audit_cert_details(&c, NULL, NULL);
    if (details) {
        json_object_set_new(details, "key", json_string(p->key_here ? "made by moatctl" : "csr"));
        json_object_set(details, "revoked_old", revoked);
    }
    rc = audit_write_commit(reg, p, action, details, cert, ca, out, octx, w);
    if (rc != CTL_EXIT_OK)
        goto out;
    if (p->revoke_old && old.n)
        fprintf(stderr, "moatctl: %s %s: %zu older certificate%s revoked\n", p->word, p->id, old.n,
                old.n == 1 ? "" : "s");
out:
    json_decref(revoked);
    free(old.fp);
    free(old.not_after);
    return rc;
}

/* Issue a client certificate for csr under p->id and register it. */
static int enroll(plan *p, X509_REQ *csr, output_fn out, void *octx)
{
    char ca_crt[4096], ca_key[4096];
    if (!ctl_path(ca_crt, sizeof ca_crt, p->dir, "ca.crt") ||
        !ctl_path(ca_key, sizeof ca_key, p->dir, "ca.key"))
        return CTL_EXIT_FAIL;
    pki_ca ca = {0};
    X509 *cert = NULL;
    pki_error err;
    written w = {.n = 0};
    registry *reg = NULL;
    /* Refuse a bad CSR before anything else, with the reason. */
    if (pki_csr_verify(csr, &err) != PKI_OK) {
        ctl_err("CSR refused: %s", err.msg);
        return CTL_EXIT_FAIL;
    }
    int rc = ctl_open_registry(p->dir, &reg);
    if (rc != CTL_EXIT_OK)
        return rc;
    rc = CTL_EXIT_FAIL;
    if (pki_ca_load(&ca, ca_crt, ca_key, &err) != PKI_OK) {
        ctl_err("%s", err.msg);
        goto out;
    }
    if (p->kind == REGISTRY_DEVICE && !p->renew && registry_device_id_new(p->id) != REGISTRY_OK) {
        ctl_err("the random number generator failed");
        goto out;
    }
    if (pki_issue_client(&cert, &ca, csr, p->id, p->days, &err) != PKI_OK) {
        ctl_err("%s", err.msg);
        goto out;
    }
    rc = p->renew ? renew_cert(reg, p, cert, &ca, out, octx, &w, &p->still_valid)
                  : register_cert(reg, p, cert, &ca, out, octx, &w);
out:
    X509_free(cert);
    pki_ca_free(&ca);
    registry_close(reg);
    return rc;
}

static bool remember(written *w, const char *path)
{
    size_t n = strlen(path);
    if (w->n >= sizeof w->path / sizeof w->path[0] || n >= sizeof w->path[0])
        return false;
    memcpy(w->path[w->n++], path, n + 1);
    return true;
}

/* ---- add: key pair made here ------------------------------------------ */

typedef struct add_ctx {
    const char *outdir;
    EVP_PKEY *key;
} add_ctx;

static int ensure_dir(const char *dir)
{
    struct stat sb;
    if (mkdir(dir, 0700) == 0)
        return CTL_EXIT_OK;
    if (errno == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
        return CTL_EXIT_OK;
    ctl_err("%s: %s", dir, errno == EEXIST ? "not a directory" : strerror(errno));
    return CTL_EXIT_FAIL;
}

static int add_output(void *vctx, const plan *p, X509 *cert, const pki_ca *ca, written *w)
{
    add_ctx *a = vctx;
    char name[REGISTRY_ID_MAX + 8], key_path[4096], crt_path[4096], ca_path[4096];
    pki_error err;
    snprintf(name, sizeof name, "%s.key", p->id);
    if (!ctl_path(key_path, sizeof key_path, a->outdir, name))
        return CTL_EXIT_FAIL;
    snprintf(name, sizeof name, "%s.crt", p->id);
    if (!ctl_path(crt_path, sizeof crt_path, a->outdir, name) ||
        !ctl_path(ca_path, sizeof ca_path, a->outdir, "ca.crt"))
        return CTL_EXIT_FAIL;
    if (ensure_dir(a->outdir) != CTL_EXIT_OK)
        return CTL_EXIT_FAIL;
    if (pki_key_write(a->key, key_path, PKI_WRITE_NOCLOBBER, &err) != PKI_OK)
        goto fail;
    remember(w, key_path);
    if (pki_cert_write(cert, crt_path, PKI_WRITE_NOCLOBBER, &err) != PKI_OK)
        goto fail;
    remember(w, crt_path);
    /* ca.crt is public and shared by every file in OUTDIR: replace it. */
    if (pki_cert_write(ca->cert, ca_path, PKI_WRITE_REPLACE, &err) != PKI_OK)
        goto fail;
    return CTL_EXIT_OK;
fail:
    ctl_err("%s", err.msg);
    return CTL_EXIT_FAIL;
}

/* The new principal's id, for add and enroll: a service is named on the
 * command line; a device's id is chosen by the hub. */
static int plan_id(plan *p, const ctl_args *args)
{
    if (p->kind != REGISTRY_SERVICE) {
        if (args->npos != 0)
            return ctl_usage(p->word, "device %s takes no arguments (the hub chooses the id)",
                             p->how);
        return CTL_EXIT_OK;
    }
    if (args->npos != 1)
        return ctl_usage(p->word, "service %s needs exactly one NAME", p->how);
    const char *name = args->pos[0];
    if (!registry_service_name_valid(name))
        return ctl_usage(p->word, "invalid service name '%s' (use [a-z0-9][a-z0-9-]{0,62})", name);
    if (p->policies && p->policies->count > 0 &&
        strlen(name) + strlen(SERVICE_GROUP_PREFIX) > REGISTRY_NAME_MAX)
        return ctl_usage(p->word,
                         "service name too long for --policy (group '%s%s' would exceed %u "
                         "characters)",
                         SERVICE_GROUP_PREFIX, name, REGISTRY_NAME_MAX);
    memcpy(p->id, name, strlen(name) + 1);
    return CTL_EXIT_OK;
}

static int cmd_add(const ctl_ctx *ctx, registry_kind kind, const char *word, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "group", .has_arg = true, .multi = true},
                      {.name = "out", .has_arg = true},
                      {.name = "days", .has_arg = true},
                      {.name = "policy", .has_arg = true, .multi = true}};
    size_t nopts = kind == REGISTRY_SERVICE ? 4 : 3;
    ctl_args args;
    int rc = ctl_parse(word, argc, argv, opts, nopts, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help(word, stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    plan p = {.kind = kind, .word = word, .groups = &opts[0], .how = "add"};
    if (kind == REGISTRY_SERVICE)
        p.policies = &opts[3];
    if ((rc = plan_id(&p, &args)) != CTL_EXIT_OK)
        return rc;
    if (opts[1].count == 0)
        return ctl_usage(word, "%s add needs --out OUTDIR", word);
    if ((rc = parse_days(&opts[2], word, &p.days)) != CTL_EXIT_OK)
        return rc;
    if (!(p.dir = ctl_data_dir(ctx, &args, word)))
        return CTL_EXIT_USAGE;

    add_ctx a = {.outdir = opts[1].values[0]};
    X509_REQ *csr = NULL;
    pki_error err;
    /* The CSR is made for the key here, with no subject: the id is set when
     * the certificate is issued. */
    if (pki_key_generate(&a.key, &err) != PKI_OK ||
        pki_csr_create(&csr, a.key, NULL, &err) != PKI_OK) {
        ctl_err("%s", err.msg);
        rc = CTL_EXIT_FAIL;
    } else {
        rc = enroll(&p, csr, add_output, &a);
    }
    X509_REQ_free(csr);
    EVP_PKEY_free(a.key); /* OpenSSL wipes the private key as it frees it */
    if (rc == CTL_EXIT_OK) {
        printf("%s\n", p.id);
        fprintf(stderr, "moatctl: wrote %s/%s.key (keep it secret), %s/%s.crt and %s/ca.crt\n",
                a.outdir, p.id, a.outdir, p.id, a.outdir);
    }
    return rc;
}

/* ---- enroll: from the device's CSR --------------------------------------- */

typedef struct enroll_ctx {
    const char *out; /* certificate file, or NULL for stdout */
} enroll_ctx;

static int enroll_output(void *vctx, const plan *p, X509 *cert, const pki_ca *ca, written *w)
{
    (void)p;
    (void)ca;
    enroll_ctx *e = vctx;
    if (!e->out)
        return CTL_EXIT_OK; /* printed after the commit */
    pki_error err;
    if (pki_cert_write(cert, e->out, PKI_WRITE_NOCLOBBER, &err) != PKI_OK) {
        ctl_err("%s", err.msg);
        return CTL_EXIT_FAIL;
    }
    remember(w, e->out);
    return CTL_EXIT_OK;
}

/* Wraps enroll_output to keep the certificate for printing after commit. */
typedef struct enroll_keep {
    enroll_ctx e;
    char *pem;
} enroll_keep;

static int enroll_keep_output(void *vctx, const plan *p, X509 *cert, const pki_ca *ca, written *w)
{
    enroll_keep *k = vctx;
    pki_error err;
    if (!k->e.out && pki_cert_to_pem(cert, &k->pem, NULL, &err) != PKI_OK) {
        ctl_err("%s", err.msg);
        return CTL_EXIT_FAIL;
    }
    return enroll_output(&k->e, p, cert, ca, w);
}

static int cmd_enroll(const ctl_ctx *ctx, registry_kind kind, const char *word, int argc,
                      char **argv)
{
    ctl_opt opts[] = {{.name = "csr", .has_arg = true},
                      {.name = "group", .has_arg = true, .multi = true},
                      {.name = "out", .has_arg = true},
                      {.name = "days", .has_arg = true},
                      {.name = "policy", .has_arg = true, .multi = true}};
    size_t nopts = kind == REGISTRY_SERVICE ? 5 : 4;
    ctl_args args;
    int rc = ctl_parse(word, argc, argv, opts, nopts, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help(word, stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    plan p = {.kind = kind, .word = word, .groups = &opts[1], .how = "enroll"};
    if (kind == REGISTRY_SERVICE)
        p.policies = &opts[4];
    if ((rc = plan_id(&p, &args)) != CTL_EXIT_OK)
        return rc;
    if (opts[0].count == 0)
        return ctl_usage(word, "%s enroll needs --csr FILE", word);
    if ((rc = parse_days(&opts[3], word, &p.days)) != CTL_EXIT_OK)
        return rc;
    if (!(p.dir = ctl_data_dir(ctx, &args, word)))
        return CTL_EXIT_USAGE;

    char *data = NULL;
    size_t len = 0;
    if ((rc = ctl_read_input(opts[0].values[0], PKI_MAX_FILE, &data, &len)) != CTL_EXIT_OK)
        return rc;
    X509_REQ *csr = NULL;
    pki_error err;
    if (pki_csr_parse(&csr, data, len, &err) != PKI_OK) {
        ctl_err("%s: CSR refused: %s", opts[0].values[0], err.msg);
        free(data);
        return CTL_EXIT_FAIL;
    }
    free(data);
    enroll_keep k = {.e = {.out = opts[2].count ? opts[2].values[0] : NULL}, .pem = NULL};
    rc = enroll(&p, csr, enroll_keep_output, &k);
    X509_REQ_free(csr);
    if (rc == CTL_EXIT_OK) {
        printf("%s\n", p.id);
        if (k.pem)
            fputs(k.pem, stdout);
    }
    free(k.pem);
    return rc;
}

/* ---- renew ----------------------------------------------------------------- */

/* renew --out: refuse at once, with a reason, to overwrite the files of the
 * key and certificate in use (written without clobbering anyway). */
static int renew_outdir_free(const char *outdir, const char *id)
{
    static const char *const ext[] = {".key", ".crt"};
    for (size_t i = 0; i < 2; i++) {
        char name[REGISTRY_ID_MAX + 8], path[4096];
        struct stat sb;
        snprintf(name, sizeof name, "%s%s", id, ext[i]);
        if (!ctl_path(path, sizeof path, outdir, name))
            return CTL_EXIT_FAIL;
        if (lstat(path, &sb) == 0) {
            ctl_err("%s exists: renew never overwrites a key or certificate; use another "
                    "--out directory, or move the old files away",
                    path);
            return CTL_EXIT_FAIL;
        }
    }
    return CTL_EXIT_OK;
}

static int renew_from_csr(plan *p, const char *csr_path, const char *out)
{
    char *data = NULL;
    size_t len = 0;
    int rc = ctl_read_input(csr_path, PKI_MAX_FILE, &data, &len);
    if (rc != CTL_EXIT_OK)
        return rc;
    X509_REQ *csr = NULL;
    pki_error err;
    if (pki_csr_parse(&csr, data, len, &err) != PKI_OK) {
        ctl_err("%s: CSR refused: %s", csr_path, err.msg);
        free(data);
        return CTL_EXIT_FAIL;
    }
    free(data);
    enroll_keep k = {.e = {.out = out}, .pem = NULL};
    rc = enroll(p, csr, enroll_keep_output, &k);
    X509_REQ_free(csr);
    if (rc == CTL_EXIT_OK) {
        printf("%s\n", p->id);
        if (k.pem)
            fputs(k.pem, stdout);
    }
    free(k.pem);
    return rc;
}

static int renew_with_new_key(plan *p, const char *outdir)
{
    int rc = renew_outdir_free(outdir, p->id);
    if (rc != CTL_EXIT_OK)
        return rc;
    add_ctx a = {.outdir = outdir};
    X509_REQ *csr = NULL;
    pki_error err;
    if (pki_key_generate(&a.key, &err) != PKI_OK ||
        pki_csr_create(&csr, a.key, NULL, &err) != PKI_OK) {
        ctl_err("%s", err.msg);
        rc = CTL_EXIT_FAIL;
    } else {
        rc = enroll(p, csr, add_output, &a);
    }
    X509_REQ_free(csr);
    EVP_PKEY_free(a.key);
    if (rc == CTL_EXIT_OK) {
        printf("%s\n", p->id);
        fprintf(stderr, "moatctl: wrote %s/%s.key (keep it secret), %s/%s.crt and %s/ca.crt\n",
                outdir, p->id, outdir, p->id, outdir);
    }
    return rc;
}

static int cmd_renew(const ctl_ctx *ctx, registry_kind kind, const char *word, int argc,
                     char **argv)
{
    ctl_opt opts[] = {{.name = "csr", .has_arg = true},
                      {.name = "out", .has_arg = true},
                      {.name = "days", .has_arg = true},
                      {.name = "revoke-old"}};
    ctl_args args;
    int rc = ctl_parse(word, argc, argv, opts, 4, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help(word, stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 1)
        return ctl_usage(word, "%s renew needs exactly one %s", word,
                         kind == REGISTRY_DEVICE ? "ID" : "NAME");
    if (opts[0].count == 0 && opts[1].count == 0)
        return ctl_usage(word,
                         "%s renew needs --csr FILE (the %s keeps its key) or --out OUTDIR "
                         "(a new key pair made here)",
                         word, word);
    plan p = {.kind = kind,
              .word = word,
              .how = "renew",
              .renew = true,
              .revoke_old = opts[3].count > 0,
              .key_here = opts[0].count == 0};
    if ((rc = parse_days(&opts[2], word, &p.days)) != CTL_EXIT_OK)
        return rc;
    if (!(p.dir = ctl_data_dir(ctx, &args, word)))
        return CTL_EXIT_USAGE;
    const char *id = args.pos[0];
    if (!(kind == REGISTRY_DEVICE ? registry_device_id_valid(id)
                                  : registry_service_name_valid(id))) {
        ctl_err("no %s '%.64s'", word, id);
        return CTL_EXIT_FAIL;
    }
    memcpy(p.id, id, strlen(id) + 1); /* a valid id fits */
    if (opts[0].count)
        rc = renew_from_csr(&p, opts[0].values[0], opts[1].count ? opts[1].values[0] : NULL);
    else
        rc = renew_with_new_key(&p, opts[1].values[0]);
    if (rc == CTL_EXIT_OK && p.still_valid == 1)
        ctl_err("%s %s: the older certificate stays valid until it expires "
                "(--revoke-old revokes it in the renewal itself)",
                word, p.id);
    else if (rc == CTL_EXIT_OK && p.still_valid > 1)
        ctl_err("%s %s: %zu older certificates stay valid until they expire "
                "(--revoke-old revokes them in the renewal itself)",
                word, p.id, p.still_valid);
    return rc;
}

/* ---- list and show -------------------------------------------------------- */

typedef struct list_ctx {
    bool json;
    size_t n;
} list_ctx;

static int print_principal(void *vctx, const registry_principal *pr)
{
    list_ctx *l = vctx;
    char created[32], updated[32];
    ctl_format_time(pr->created_at, created);
    ctl_format_time(pr->updated_at, updated);
    if (l->json) {
        printf("%s\n  {\"id\": ", l->n ? "," : "");
        ctl_json_str(stdout, pr->id);
        printf(", \"kind\": \"%s\", \"status\": \"%s\", \"created_at\": \"%s\", "
               "\"updated_at\": \"%s\"}",
               registry_kind_name(pr->kind), registry_principal_status_name(pr->status), created,
               updated);
    } else {
        printf("%-26s  %-8s  %s\n", pr->id, registry_principal_status_name(pr->status), created);
    }
    l->n++;
    return 0;
}

static int cmd_list(const ctl_ctx *ctx, registry_kind kind, const char *word, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "json"}};
    ctl_args args;
    int rc = ctl_parse(word, argc, argv, opts, 1, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help(word, stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 0)
        return ctl_usage(word, "%s list takes no arguments", word);
    const char *dir = ctl_data_dir(ctx, &args, word);
    if (!dir)
        return CTL_EXIT_USAGE;
    registry *reg = NULL;
    if ((rc = ctl_open_registry(dir, &reg)) != CTL_EXIT_OK)
        return rc;
    list_ctx l = {.json = opts[0].count > 0};
    if (l.json)
        printf("[");
    registry_status st = registry_principal_list(reg, kind, print_principal, &l);
    if (l.json)
        printf("%s]\n", l.n ? "\n" : "");
    if (st != REGISTRY_OK)
        rc = ctl_reg_fail(reg, st);
    registry_close(reg);
    return rc;
}

typedef struct show_ctx {
    bool json;
    size_t n;
} show_ctx;

static int show_group(void *vctx, const char *name)
{
    show_ctx *s = vctx;
    if (s->json) {
        printf("%s", s->n ? ", " : "");
        ctl_json_str(stdout, name);
    } else {
        printf("%s%s", s->n ? ", " : "", name);
    }
    s->n++;
    return 0;
}

static int show_cert(void *vctx, const registry_cert *c)
{
    show_ctx *s = vctx;
    char fp[2 * REGISTRY_FINGERPRINT_LEN + 1], expires[32];
    ctl_hex(c->fingerprint, sizeof c->fingerprint, fp);
    ctl_format_time(c->not_after, expires);
    if (s->json)
        printf("%s\n    {\"sha256\": \"%s\", \"serial\": \"%s\", \"not_after\": \"%s\", "
               "\"revoked\": %s}",
               s->n ? "," : "", fp, c->serial, expires, c->revoked ? "true" : "false");
    else
        printf("  sha256 %s\n    serial %s, expires %s%s\n", fp, c->serial, expires,
               c->revoked ? ", REVOKED" : "");
    s->n++;
    return 0;
}

static int cmd_show(const ctl_ctx *ctx, registry_kind kind, const char *word, int argc, char **argv)
{
    ctl_opt opts[] = {{.name = "json"}};
    ctl_args args;
    int rc = ctl_parse(word, argc, argv, opts, 1, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help(word, stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 1)
        return ctl_usage(word, "%s show needs exactly one %s", word,
                         kind == REGISTRY_DEVICE ? "ID" : "NAME");
    const char *dir = ctl_data_dir(ctx, &args, word);
    if (!dir)
        return CTL_EXIT_USAGE;
    registry *reg = NULL;
    if ((rc = ctl_open_registry(dir, &reg)) != CTL_EXIT_OK)
        return rc;
    const char *id = args.pos[0];
    bool json = opts[0].count > 0;
    registry_principal pr;
    /* One snapshot for the principal, its groups and its certificates. */
    registry_status st = registry_read_begin(reg);
    if (st == REGISTRY_OK)
        st = registry_principal_get(reg, id, kind, &pr);
    if (st != REGISTRY_OK)
        goto out;
    char created[32], updated[32];
    ctl_format_time(pr.created_at, created);
    ctl_format_time(pr.updated_at, updated);
    show_ctx s = {.json = json};
    if (json) {
        printf("{\"id\": ");
        ctl_json_str(stdout, pr.id);
        printf(", \"kind\": \"%s\", \"status\": \"%s\", \"created_at\": \"%s\", "
               "\"updated_at\": \"%s\", \"groups\": [",
               registry_kind_name(pr.kind), registry_principal_status_name(pr.status), created,
               updated);
    } else {
        printf("id:       %s\nkind:     %s\nstatus:   %s\ncreated:  %s\nupdated:  %s\ngroups:   ",
               pr.id, registry_kind_name(pr.kind), registry_principal_status_name(pr.status),
               created, updated);
    }
    st = registry_principal_groups(reg, id, show_group, &s);
    if (st != REGISTRY_OK)
        goto out;
    printf(json ? "], \"certificates\": [" : "\ncertificates:\n");
    s.n = 0;
    st = registry_cert_list(reg, id, show_cert, &s);
    if (st != REGISTRY_OK)
        goto out;
    if (json)
        printf("%s]}\n", s.n ? "\n  " : "");
out:
    if (st != REGISTRY_OK)
        rc = ctl_reg_fail(reg, st);
    registry_rollback(reg); /* ends the read snapshot */
    registry_close(reg);
    return rc;
}

/* ---- status changes and delete ------------------------------------------- */

static int cmd_change(const ctl_ctx *ctx, registry_kind kind, const char *word, const char *sub,
                      int argc, char **argv)
{
    ctl_args args;
    int rc = ctl_parse(word, argc, argv, NULL, 0, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (args.help)
        return ctl_help(word, stdout) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    if (args.npos != 1)
        return ctl_usage(word, "%s %s needs exactly one %s", word, sub,
                         kind == REGISTRY_DEVICE ? "ID" : "NAME");
    const char *dir = ctl_data_dir(ctx, &args, word);
    if (!dir)
        return CTL_EXIT_USAGE;
    registry *reg = NULL;
    if ((rc = ctl_open_registry(dir, &reg)) != CTL_EXIT_OK)
        return rc;
    const char *id = args.pos[0];
    registry_status st;
    const char *done;
    char action[32];
    snprintf(action, sizeof action, "%s.%s", word, sub);
    if ((rc = ctl_change_begin(reg)) != CTL_EXIT_OK)
        return rc;
    if (strcmp(sub, "delete") == 0) {
        /* A service's own policy group goes with it. */
        st = registry_principal_delete(reg, id, kind);
        if (st == REGISTRY_OK && kind == REGISTRY_SERVICE) {
            char group[REGISTRY_NAME_MAX + 16];
            snprintf(group, sizeof group, SERVICE_GROUP_PREFIX "%s", id);
            if (registry_name_valid(group)) {
                st = registry_group_delete(reg, group);
                if (st == REGISTRY_NOT_FOUND)
                    st = REGISTRY_OK;
            }
        }
        done = "deleted";
    } else {
        registry_principal_status want = strcmp(sub, "enable") == 0    ? REGISTRY_ACTIVE
                                         : strcmp(sub, "disable") == 0 ? REGISTRY_DISABLED
                                                                       : REGISTRY_REVOKED;
        st = registry_principal_set_status(reg, id, kind, want);
        done = registry_principal_status_name(want);
    }
    /* The audit entry commits with the change (or the failure is recorded). */
    rc = ctl_change_finish(reg, dir, st, action, id, NULL, NULL);
    if (rc != CTL_EXIT_OK) {
        /* said by ctl_change_finish */
    } else if (kind == REGISTRY_DEVICE && strcmp(sub, "delete") == 0) {
        /* The device's readings are its owner's personal data (ETSI EN 303
         * 645 5.11): they go with it. After the registry, so the hub stops
         * accepting it first; readings it stored in between are erased by
         * retention (a device the registry does not know). */
        uint64_t erased = 0;
        bool wiped = true;
        rc = ctl_telemetry_erase(dir, id, &erased, &wiped);
        printf("%s %s: %s; %llu stored reading%s erased%s\n", word, id, done,
               (unsigned long long)erased, erased == 1 ? "" : "s",
               wiped ? "" : " (old pages are overwritten at the next checkpoint)");
        if (rc != CTL_EXIT_OK)
            ctl_err("the device is deleted but its readings are not all erased; "
                    "'moatctl telemetry purge' erases them");
    } else {
        printf("%s %s: %s\n", word, id, done);
    }
    return rc;
}

int ctl_cmd_principal(const ctl_ctx *ctx, registry_kind kind, int argc, char **argv)
{
    const char *word = registry_kind_name(kind);
    if (argc < 1)
        return ctl_usage(word, "missing %s command", word);
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ctl_help(word, stdout);
        return CTL_EXIT_OK;
    }
    argc--;
    argv++;
    if (strcmp(sub, "add") == 0)
        return cmd_add(ctx, kind, word, argc, argv);
    if (strcmp(sub, "enroll") == 0)
        return cmd_enroll(ctx, kind, word, argc, argv);
    if (strcmp(sub, "renew") == 0)
        return cmd_renew(ctx, kind, word, argc, argv);
    if (strcmp(sub, "list") == 0)
        return cmd_list(ctx, kind, word, argc, argv);
    if (strcmp(sub, "show") == 0)
        return cmd_show(ctx, kind, word, argc, argv);
    if (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0 || strcmp(sub, "revoke") == 0 ||
        strcmp(sub, "delete") == 0)
        return cmd_change(ctx, kind, word, sub, argc, argv);
    return ctl_usage(word, "unknown %s command '%s'", word, sub);
}
