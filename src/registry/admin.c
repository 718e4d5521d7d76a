/*
 * admin.c — the registry's write path and listings, used by moatctl:
 * principals and their status, certificates, groups, memberships and
 * policies.
 *
 * Each change is one short IMMEDIATE transaction (or part of the caller's,
 * see registry_begin), so the hub, polling data_version, sees either all of
 * it or none. Rules that keep the fleet safe are enforced here rather than
 * only in the CLI: revocation is final and revokes every certificate, the
 * `devices` group always holds every device and only devices, and a policy
 * attached to a group cannot be deleted from under it.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static int64_t now(void)
{
    return (int64_t)time(NULL);
}

/* Run a statement that returns no rows. */
static registry_status step_done(registry *reg, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    return rc == SQLITE_DONE ? REGISTRY_OK : reg_sqlerr(reg, rc, what);
}

/* Prepare sql and bind up to three text parameters (NULL = not bound). */
static registry_status prep3(registry *reg, const char *sql, sqlite3_stmt **s, const char *a,
                             const char *b, const char *c)
{
    registry_status st = reg_prepare(reg, sql, s);
    if (st == REGISTRY_OK && a)
        st = reg_bind_text(reg, *s, 1, a);
    if (st == REGISTRY_OK && b)
        st = reg_bind_text(reg, *s, 2, b);
    if (st == REGISTRY_OK && c)
        st = reg_bind_text(reg, *s, 3, c);
    return st;
}

/* Execute a one-off statement with text parameters that returns no rows;
 * *changes (if given) receives the number of rows it changed. */
static registry_status run(registry *reg, const char *sql, const char *a, const char *b,
                           const char *c, int *changes, const char *what)
{
    sqlite3_stmt *s = NULL;
    registry_status st = prep3(reg, sql, &s, a, b, c);
    if (st == REGISTRY_OK)
        st = step_done(reg, s, what);
    if (st == REGISTRY_OK && changes)
        *changes = sqlite3_changes(reg->db);
    sqlite3_finalize(s);
    return st;
}

/* Does a row exist? sql selects anything with parameters a (and b). */
static registry_status exists(registry *reg, const char *sql, const char *a, const char *b,
                              bool *found)
{
    sqlite3_stmt *s = NULL;
    registry_status st = prep3(reg, sql, &s, a, b, NULL);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            *found = rc == SQLITE_ROW;
        else
            st = reg_sqlerr(reg, rc, "registry query");
    }
    sqlite3_finalize(s);
    return st;
}

static registry_status need_group(registry *reg, const char *group)
{
    if (!registry_name_valid(group))
        return reg_fail(reg, REGISTRY_INVALID, "invalid group name '%.64s'", group ? group : "");
    bool found = false;
    registry_status st =
        exists(reg, "SELECT 1 FROM \"groups\" WHERE name = ?1", group, NULL, &found);
    if (st == REGISTRY_OK && !found)
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "group '%s' does not exist", group);
    return st;
}

static registry_status need_policy(registry *reg, const char *policy)
{
    if (!registry_name_valid(policy))
        return reg_fail(reg, REGISTRY_INVALID, "invalid policy name '%.64s'", policy ? policy : "");
    bool found = false;
    registry_status st =
        exists(reg, "SELECT 1 FROM policies WHERE name = ?1", policy, NULL, &found);
    if (st == REGISTRY_OK && !found)
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "policy '%s' does not exist", policy);
    return st;
}

/* Walk a one-column list of names. */
static registry_status walk_names(registry *reg, const char *sql, const char *a,
                                  registry_name_cb cb, void *ctx, const char *what)
{
    sqlite3_stmt *s = NULL;
    registry_status st = prep3(reg, sql, &s, a, NULL, NULL);
    while (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, what);
            break;
        }
        char name[REGISTRY_NAME_MAX + 1];
        st = reg_column_name(reg, s, 0, name, sizeof name, what);
        if (st == REGISTRY_OK && cb(ctx, name) != 0)
            st = reg_fail(reg, REGISTRY_REFUSED, "stopped by the caller");
    }
    sqlite3_finalize(s);
    return st;
}

/* ---- principals ------------------------------------------------------- */

static registry_status check_id(registry *reg, registry_kind kind, const char *id)
{
    if (kind == REGISTRY_DEVICE && !registry_device_id_valid(id))
        return reg_fail(reg, REGISTRY_INVALID, "invalid device id '%.64s'", id ? id : "");
    if (kind == REGISTRY_SERVICE && !registry_service_name_valid(id))
        return reg_fail(reg, REGISTRY_INVALID,
                        "invalid service name '%.64s' (use [a-z0-9][a-z0-9-]{0,62}, not "
                        "shaped like a device id)",
                        id ? id : "");
    if (kind != REGISTRY_DEVICE && kind != REGISTRY_SERVICE)
        return reg_fail(reg, REGISTRY_INVALID, "invalid principal kind");
    return REGISTRY_OK;
}

registry_status registry_principal_add(registry *reg, registry_kind kind, const char *id)
{
    registry_status st = check_id(reg, kind, id);
    if (st != REGISTRY_OK)
        return st;
    bool own;
    if ((st = reg_write_begin(reg, &own)) != REGISTRY_OK)
        return st;
    sqlite3_stmt *s = NULL;
    st = prep3(reg,
               "INSERT INTO principals(id, kind, status, created_at, updated_at)"
               " VALUES(?1, ?2, 'active', ?3, ?3)",
               &s, id, registry_kind_name(kind), NULL);
    if (st == REGISTRY_OK)
        st = reg_bind_int64(reg, s, 3, now());
    if (st == REGISTRY_OK)
        st = step_done(reg, s, "adding a principal");
    sqlite3_finalize(s);
    if (st == REGISTRY_EXISTS)
        st = reg_fail(reg, st, "'%s' already exists", id);
    if (st == REGISTRY_OK && kind == REGISTRY_DEVICE) {
        st = run(reg, "INSERT INTO group_members(grp, principal) VALUES(?1, ?2)",
                 REGISTRY_DEVICES_GROUP, id, NULL, NULL, "joining the devices group");
        if (st == REGISTRY_REFUSED) /* foreign key: the group is missing */
            st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: no '%s' group",
                          REGISTRY_DEVICES_GROUP);
    }
    return reg_write_end(reg, own, st);
}

registry_status registry_principal_get(registry *reg, const char *id, registry_kind kind,
                                       registry_principal *out)
{
    memset(out, 0, sizeof *out);
    if (!registry_name_valid(id))
        return reg_fail(reg, REGISTRY_NOT_FOUND, "no %s '%.64s'",
                        kind ? registry_kind_name(kind) : "principal", id ? id : "");
    sqlite3_stmt *s = NULL;
    registry_status st = prep3(reg,
                               "SELECT id, kind, status, created_at, updated_at"
                               " FROM principals WHERE id = ?1",
                               &s, id, NULL, NULL);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
            st = reg_row_principal(reg, s, out);
        else if (rc == SQLITE_DONE)
            st = REGISTRY_NOT_FOUND;
        else
            st = reg_sqlerr(reg, rc, "reading a principal");
    }
    sqlite3_finalize(s);
    /* A service is not found when asked for as a device, and vice versa. */
    if (st == REGISTRY_NOT_FOUND || (st == REGISTRY_OK && kind && out->kind != kind)) {
        memset(out, 0, sizeof *out);
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "no %s '%s'",
                      kind ? registry_kind_name(kind) : "principal", id);
    }
    return st;
}

registry_status registry_principal_list(registry *reg, registry_kind kind, registry_principal_cb cb,
                                        void *ctx)
{
    sqlite3_stmt *s = NULL;
    registry_status st = prep3(reg,
                               "SELECT id, kind, status, created_at, updated_at FROM principals"
                               " WHERE ?1 = '' OR kind = ?1 ORDER BY id",
                               &s, kind ? registry_kind_name(kind) : "", NULL, NULL);
    while (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, "listing principals");
            break;
        }
        registry_principal p;
        st = reg_row_principal(reg, s, &p);
        if (st == REGISTRY_OK && cb(ctx, &p) != 0)
            st = reg_fail(reg, REGISTRY_REFUSED, "stopped by the caller");
    }
    sqlite3_finalize(s);
    return st;
}

registry_status registry_principal_set_status(registry *reg, const char *id, registry_kind kind,
                                              registry_principal_status want)
{
    if (want != REGISTRY_ACTIVE && want != REGISTRY_DISABLED && want != REGISTRY_REVOKED)
        return reg_fail(reg, REGISTRY_INVALID, "invalid status");
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    registry_principal p;
    st = registry_principal_get(reg, id, kind, &p);
    if (st != REGISTRY_OK)
        goto out;
    if (p.status == REGISTRY_REVOKED) {
        if (want != REGISTRY_REVOKED)
            st = reg_fail(reg, REGISTRY_REFUSED, "%s '%s' is revoked; revocation is permanent",
                          registry_kind_name(p.kind), id);
        goto out; /* revoking again changes nothing */
    }
    if (p.status == want)
        goto out;
    sqlite3_stmt *s = NULL;
    st = prep3(reg, "UPDATE principals SET status = ?2, updated_at = ?3 WHERE id = ?1", &s, id,
               registry_principal_status_name(want), NULL);
    if (st == REGISTRY_OK)
        st = reg_bind_int64(reg, s, 3, now());
    if (st == REGISTRY_OK)
        st = step_done(reg, s, "changing status");
    sqlite3_finalize(s);
    if (st == REGISTRY_OK && want == REGISTRY_REVOKED)
        st = run(reg, "UPDATE certificates SET revoked = 1 WHERE principal = ?1", id, NULL, NULL,
                 NULL, "revoking certificates");
out:
    return reg_write_end(reg, own, st);
}

registry_status registry_principal_delete(registry *reg, const char *id, registry_kind kind)
{
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    registry_principal p;
    st = registry_principal_get(reg, id, kind, &p);
    if (st == REGISTRY_OK)
        st = run(reg, "DELETE FROM principals WHERE id = ?1", id, NULL, NULL, NULL,
                 "deleting a principal");
    return reg_write_end(reg, own, st);
}

/* ---- certificates ----------------------------------------------------- */

static bool serial_valid(const char *s)
{
    size_t n = strnlen(s, REGISTRY_SERIAL_MAX + 1);
    if (n == 0 || n > REGISTRY_SERIAL_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

registry_status registry_cert_add(registry *reg, const registry_cert *c)
{
    if (!serial_valid(c->serial))
        return reg_fail(reg, REGISTRY_INVALID, "invalid certificate serial");
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    registry_principal p;
    st = registry_principal_get(reg, c->principal, 0, &p);
    if (st == REGISTRY_OK && p.status == REGISTRY_REVOKED)
        st = reg_fail(reg, REGISTRY_REFUSED, "'%s' is revoked", c->principal);
    sqlite3_stmt *s = NULL;
    if (st == REGISTRY_OK)
        st = prep3(reg,
                   "INSERT INTO certificates(fingerprint, principal, serial, not_after, revoked)"
                   " VALUES(?4, ?1, ?2, ?3, ?5)",
                   &s, c->principal, c->serial, NULL);
    if (st == REGISTRY_OK)
        st = reg_bind_int64(reg, s, 3, c->not_after);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_bind_blob(s, 4, c->fingerprint, REGISTRY_FINGERPRINT_LEN, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            st = reg_sqlerr(reg, rc, "binding a parameter");
    }
    if (st == REGISTRY_OK)
        st = reg_bind_int64(reg, s, 5, c->revoked ? 1 : 0);
    if (st == REGISTRY_OK)
        st = step_done(reg, s, "recording a certificate");
    sqlite3_finalize(s);
    if (st == REGISTRY_EXISTS)
        st = reg_fail(reg, st, "certificate already recorded");
    return reg_write_end(reg, own, st);
}

registry_status registry_cert_list(registry *reg, const char *principal_id, registry_cert_cb cb,
                                   void *ctx)
{
    sqlite3_stmt *s = NULL;
    registry_status st = prep3(reg,
                               "SELECT fingerprint, principal, serial, not_after, revoked"
                               " FROM certificates WHERE principal = ?1"
                               " ORDER BY not_after DESC, fingerprint",
                               &s, principal_id, NULL, NULL);
    while (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, "listing certificates");
            break;
        }
        registry_cert c;
        memset(&c, 0, sizeof c);
        const void *fp = sqlite3_column_blob(s, 0);
        const unsigned char *serial = sqlite3_column_text(s, 2);
        int64_t revoked = sqlite3_column_int64(s, 4);
        if (sqlite3_column_type(s, 0) != SQLITE_BLOB || !fp ||
            sqlite3_column_bytes(s, 0) != (int)REGISTRY_FINGERPRINT_LEN ||
            sqlite3_column_type(s, 2) != SQLITE_TEXT || !serial ||
            sqlite3_column_type(s, 3) != SQLITE_INTEGER ||
            sqlite3_column_type(s, 4) != SQLITE_INTEGER || (revoked != 0 && revoked != 1) ||
            !serial_valid((const char *)serial)) {
            st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: a certificate of '%s'",
                          principal_id);
            break;
        }
        memcpy(c.fingerprint, fp, REGISTRY_FINGERPRINT_LEN);
        st = reg_column_name(reg, s, 1, c.principal, sizeof c.principal, "principal id");
        if (st != REGISTRY_OK)
            break;
        memcpy(c.serial, serial, strlen((const char *)serial) + 1);
        c.not_after = sqlite3_column_int64(s, 3);
        c.revoked = revoked == 1;
        if (cb(ctx, &c) != 0)
            st = reg_fail(reg, REGISTRY_REFUSED, "stopped by the caller");
    }
    sqlite3_finalize(s);
    return st;
}

registry_status registry_cert_revoke(registry *reg, const char *principal_id,
                                     const uint8_t fp[REGISTRY_FINGERPRINT_LEN])
{
    if (!registry_name_valid(principal_id))
        return reg_fail(reg, REGISTRY_NOT_FOUND, "no principal '%.64s'",
                        principal_id ? principal_id : "");
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    sqlite3_stmt *s = NULL;
    st = prep3(reg, "UPDATE certificates SET revoked = 1 WHERE principal = ?1 AND fingerprint = ?2",
               &s, principal_id, NULL, NULL);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_bind_blob(s, 2, fp, REGISTRY_FINGERPRINT_LEN, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            st = reg_sqlerr(reg, rc, "binding a parameter");
    }
    if (st == REGISTRY_OK)
        st = step_done(reg, s, "revoking a certificate");
    /* Matched rows count even when already revoked: none means not theirs. */
    if (st == REGISTRY_OK && sqlite3_changes(reg->db) == 0)
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "'%s' holds no such certificate", principal_id);
    sqlite3_finalize(s);
    return reg_write_end(reg, own, st);
}

/* ---- groups ----------------------------------------------------------- */

registry_status registry_group_add(registry *reg, const char *name, const char *description)
{
    if (!registry_name_valid(name))
        return reg_fail(reg, REGISTRY_INVALID,
                        "invalid group name '%.64s' (use [a-z0-9][a-z0-9-]{0,62})",
                        name ? name : "");
    if (!description)
        description = "";
    if (strnlen(description, REG_DESCRIPTION_MAX + 1) > REG_DESCRIPTION_MAX)
        return reg_fail(reg, REGISTRY_INVALID, "description longer than %u bytes",
                        REG_DESCRIPTION_MAX);
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    st = run(reg, "INSERT INTO \"groups\"(name, description) VALUES(?1, ?2)", name, description,
             NULL, NULL, "adding a group");
    if (st == REGISTRY_EXISTS)
        st = reg_fail(reg, st, "group '%s' already exists", name);
    return reg_write_end(reg, own, st);
}

registry_status registry_group_get(registry *reg, const char *name, char **description)
{
    *description = NULL;
    registry_status st = need_group(reg, name);
    if (st != REGISTRY_OK)
        return st;
    sqlite3_stmt *s = NULL;
    st = prep3(reg, "SELECT description FROM \"groups\" WHERE name = ?1", &s, name, NULL, NULL);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        const unsigned char *d = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
        int n = rc == SQLITE_ROW ? sqlite3_column_bytes(s, 0) : 0;
        if (rc == SQLITE_DONE)
            st = reg_fail(reg, REGISTRY_NOT_FOUND, "group '%s' does not exist", name);
        else if (rc != SQLITE_ROW)
            st = reg_sqlerr(reg, rc, "reading a group");
        else if (sqlite3_column_type(s, 0) != SQLITE_TEXT || !d || n < 0 ||
                 memchr(d, '\0', (size_t)n))
            st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: group '%s'", name);
        else if (!(*description = malloc((size_t)n + 1)))
            st = reg_fail(reg, REGISTRY_NOMEM, "out of memory");
        else {
            memcpy(*description, d, (size_t)n);
            (*description)[n] = '\0';
        }
    }
    sqlite3_finalize(s);
    return st;
}

registry_status registry_group_delete(registry *reg, const char *name)
{
    if (name && strcmp(name, REGISTRY_DEVICES_GROUP) == 0)
        return reg_fail(reg, REGISTRY_REFUSED, "the '%s' group is built in and cannot be deleted",
                        REGISTRY_DEVICES_GROUP);
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    st = need_group(reg, name);
    if (st == REGISTRY_OK)
        st = run(reg, "DELETE FROM \"groups\" WHERE name = ?1", name, NULL, NULL, NULL,
                 "deleting a group");
    return reg_write_end(reg, own, st);
}

registry_status registry_group_list(registry *reg, registry_group_cb cb, void *ctx)
{
    sqlite3_stmt *s = NULL;
    registry_status st =
        reg_prepare(reg,
                    "SELECT g.name, g.description,"
                    " (SELECT count(*) FROM group_members m WHERE m.grp = g.name),"
                    " (SELECT count(*) FROM group_policies gp WHERE gp.grp = g.name)"
                    " FROM \"groups\" g ORDER BY g.name",
                    &s);
    while (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, "listing groups");
            break;
        }
        registry_group g;
        if ((st = reg_column_name(reg, s, 0, g.name, sizeof g.name, "group name")) != REGISTRY_OK)
            break;
        const unsigned char *d = sqlite3_column_text(s, 1);
        if (sqlite3_column_type(s, 1) != SQLITE_TEXT || !d ||
            memchr(d, '\0', (size_t)sqlite3_column_bytes(s, 1))) {
            st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: group '%s'", g.name);
            break;
        }
        g.description = (const char *)d;
        g.members = sqlite3_column_int64(s, 2);
        g.policies = sqlite3_column_int64(s, 3);
        if (cb(ctx, &g) != 0)
            st = reg_fail(reg, REGISTRY_REFUSED, "stopped by the caller");
    }
    sqlite3_finalize(s);
    return st;
}

registry_status registry_group_attach(registry *reg, const char *policy, const char *group)
{
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    if ((st = need_policy(reg, policy)) == REGISTRY_OK &&
        (st = need_group(reg, group)) == REGISTRY_OK)
        st = run(reg, "INSERT INTO group_policies(grp, policy) VALUES(?1, ?2)", group, policy, NULL,
                 NULL, "attaching a policy");
    if (st == REGISTRY_EXISTS)
        st = reg_fail(reg, st, "policy '%s' is already attached to group '%s'", policy, group);
    return reg_write_end(reg, own, st);
}

registry_status registry_group_detach(registry *reg, const char *policy, const char *group)
{
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    int n = 0;
    if ((st = need_policy(reg, policy)) == REGISTRY_OK &&
        (st = need_group(reg, group)) == REGISTRY_OK)
        st = run(reg, "DELETE FROM group_policies WHERE grp = ?1 AND policy = ?2", group, policy,
                 NULL, &n, "detaching a policy");
    if (st == REGISTRY_OK && n == 0)
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "policy '%s' is not attached to group '%s'", policy,
                      group);
    return reg_write_end(reg, own, st);
}

registry_status registry_member_add(registry *reg, const char *group, const char *principal_id)
{
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    registry_principal p;
    if ((st = need_group(reg, group)) == REGISTRY_OK)
        st = registry_principal_get(reg, principal_id, 0, &p);
    if (st == REGISTRY_OK && strcmp(group, REGISTRY_DEVICES_GROUP) == 0 &&
        p.kind != REGISTRY_DEVICE)
        st = reg_fail(reg, REGISTRY_REFUSED, "only devices can be members of '%s'",
                      REGISTRY_DEVICES_GROUP);
    if (st == REGISTRY_OK)
        st = run(reg, "INSERT INTO group_members(grp, principal) VALUES(?1, ?2)", group,
                 principal_id, NULL, NULL, "adding a member");
    if (st == REGISTRY_EXISTS)
        st = reg_fail(reg, st, "'%s' is already a member of '%s'", principal_id, group);
    return reg_write_end(reg, own, st);
}

registry_status registry_member_remove(registry *reg, const char *group, const char *principal_id)
{
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    registry_principal p;
    int n = 0;
    if ((st = need_group(reg, group)) == REGISTRY_OK)
        st = registry_principal_get(reg, principal_id, 0, &p);
    if (st == REGISTRY_OK && strcmp(group, REGISTRY_DEVICES_GROUP) == 0 &&
        p.kind == REGISTRY_DEVICE)
        st = reg_fail(reg, REGISTRY_REFUSED, "every device stays in '%s'", REGISTRY_DEVICES_GROUP);
    if (st == REGISTRY_OK)
        st = run(reg, "DELETE FROM group_members WHERE grp = ?1 AND principal = ?2", group,
                 principal_id, NULL, &n, "removing a member");
    if (st == REGISTRY_OK && n == 0)
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "'%s' is not a member of '%s'", principal_id, group);
    return reg_write_end(reg, own, st);
}

registry_status registry_principal_groups(registry *reg, const char *principal_id,
                                          registry_name_cb cb, void *ctx)
{
    return walk_names(reg, "SELECT grp FROM group_members WHERE principal = ?1 ORDER BY grp",
                      principal_id, cb, ctx, "group name");
}

registry_status registry_group_members(registry *reg, const char *group, registry_name_cb cb,
                                       void *ctx)
{
    registry_status st = need_group(reg, group);
    if (st != REGISTRY_OK)
        return st;
    return walk_names(reg, "SELECT principal FROM group_members WHERE grp = ?1 ORDER BY principal",
                      group, cb, ctx, "member id");
}

registry_status registry_group_policies(registry *reg, const char *group, registry_name_cb cb,
                                        void *ctx)
{
    registry_status st = need_group(reg, group);
    if (st != REGISTRY_OK)
        return st;
    return walk_names(reg, "SELECT policy FROM group_policies WHERE grp = ?1 ORDER BY policy",
                      group, cb, ctx, "policy name");
}

registry_status registry_policy_groups(registry *reg, const char *policy, registry_name_cb cb,
                                       void *ctx)
{
    registry_status st = need_policy(reg, policy);
    if (st != REGISTRY_OK)
        return st;
    return walk_names(reg, "SELECT grp FROM group_policies WHERE policy = ?1 ORDER BY grp", policy,
                      cb, ctx, "group name");
}

/* ---- policies --------------------------------------------------------- */

registry_status registry_policy_put(registry *reg, const char *name, const char *document,
                                    size_t len, bool replace)
{
    if (!registry_name_valid(name))
        return reg_fail(reg, REGISTRY_INVALID,
                        "invalid policy name '%.64s' (use [a-z0-9][a-z0-9-]{0,62})",
                        name ? name : "");
    if (!document || len > REG_DOCUMENT_MAX || memchr(document, '\0', len))
        return reg_fail(reg, REGISTRY_INVALID, "policy document must be text of at most %u bytes",
                        REG_DOCUMENT_MAX);
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    sqlite3_stmt *s = NULL;
    st = prep3(reg,
               replace ? "INSERT INTO policies(name, document) VALUES(?1, ?2)"
                         " ON CONFLICT(name) DO UPDATE SET document = excluded.document"
                       : "INSERT INTO policies(name, document) VALUES(?1, ?2)",
               &s, name, NULL, NULL);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_bind_text(s, 2, document, (int)len, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            st = reg_sqlerr(reg, rc, "binding a parameter");
    }
    if (st == REGISTRY_OK)
        st = step_done(reg, s, "storing a policy");
    sqlite3_finalize(s);
    if (st == REGISTRY_EXISTS)
        st = reg_fail(reg, st, "policy '%s' already exists (use --replace to change it)", name);
    return reg_write_end(reg, own, st);
}

registry_status registry_policy_get(registry *reg, const char *name, char **document, size_t *len)
{
    *document = NULL;
    if (!registry_name_valid(name))
        return reg_fail(reg, REGISTRY_NOT_FOUND, "no policy '%.64s'", name ? name : "");
    sqlite3_stmt *s = NULL;
    registry_status st =
        prep3(reg, "SELECT document FROM policies WHERE name = ?1", &s, name, NULL, NULL);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
            st = reg_fail(reg, REGISTRY_NOT_FOUND, "policy '%s' does not exist", name);
        } else if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, "reading a policy");
        } else {
            const unsigned char *doc = sqlite3_column_text(s, 0);
            int n = sqlite3_column_bytes(s, 0);
            if (sqlite3_column_type(s, 0) != SQLITE_TEXT || !doc || n < 0 ||
                (size_t)n > REG_DOCUMENT_MAX || memchr(doc, '\0', (size_t)n)) {
                st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: policy '%s'", name);
            } else if (!(*document = malloc((size_t)n + 1))) {
                st = reg_fail(reg, REGISTRY_NOMEM, "out of memory");
            } else {
                memcpy(*document, doc, (size_t)n);
                (*document)[n] = '\0';
                if (len)
                    *len = (size_t)n;
            }
        }
    }
    sqlite3_finalize(s);
    return st;
}

registry_status registry_policy_list(registry *reg, registry_name_cb cb, void *ctx)
{
    return walk_names(reg, "SELECT name FROM policies ORDER BY name", NULL, cb, ctx, "policy name");
}

registry_status registry_policy_delete(registry *reg, const char *name)
{
    bool own;
    registry_status st = reg_write_begin(reg, &own);
    if (st != REGISTRY_OK)
        return st;
    sqlite3_stmt *s = NULL;
    if ((st = need_policy(reg, name)) == REGISTRY_OK)
        st = prep3(reg, "SELECT grp FROM group_policies WHERE policy = ?1 ORDER BY grp LIMIT 1", &s,
                   name, NULL, NULL);
    if (st == REGISTRY_OK) {
        /* Name one group it is attached to, so the operator knows what to
         * detach. */
        int rc = sqlite3_step(s);
        char grp[REGISTRY_NAME_MAX + 1];
        if (rc == SQLITE_ROW) {
            st = reg_column_name(reg, s, 0, grp, sizeof grp, "group name");
            if (st == REGISTRY_OK)
                st = reg_fail(reg, REGISTRY_REFUSED,
                              "policy '%s' is attached to group '%s'; detach it first", name, grp);
        } else if (rc != SQLITE_DONE) {
            st = reg_sqlerr(reg, rc, "checking attachments");
        }
    }
    sqlite3_finalize(s);
    if (st == REGISTRY_OK)
        st = run(reg, "DELETE FROM policies WHERE name = ?1", name, NULL, NULL, NULL,
                 "deleting a policy");
    return reg_write_end(reg, own, st);
}
