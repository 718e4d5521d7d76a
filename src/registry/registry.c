/*
 * registry.c — opening the registry, its schema, names and ids, and the
 * read path the hub uses on every handshake (lookup by fingerprint, the
 * policies of a principal, the change counter).
 *
 * The schema is versioned with PRAGMA user_version; an older program refuses
 * a newer file instead of misreading it. Every connection turns on foreign
 * keys (so deleting a principal removes its certificates and memberships),
 * a 5 s busy timeout (moatctl and moatd share the file), defensive mode and
 * untrusted schema (a tampered file cannot make SQLite run functions hidden
 * in views or triggers), and, for writers, WAL with synchronous=FULL: a
 * revocation that moatctl reported done survives a power cut.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "internal.h"

static const char SCHEMA[] =
    "CREATE TABLE principals("
    " id TEXT PRIMARY KEY NOT NULL,"
    " kind TEXT NOT NULL CHECK(kind IN ('device','service')),"
    " status TEXT NOT NULL CHECK(status IN ('active','disabled','revoked')),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"
    "CREATE TABLE certificates("
    " fingerprint BLOB PRIMARY KEY NOT NULL CHECK(typeof(fingerprint)='blob'"
    "  AND length(fingerprint)=32),"
    " principal TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,"
    " serial TEXT NOT NULL,"
    " not_after INTEGER NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0 CHECK(revoked IN (0,1)));"
    "CREATE INDEX certificates_principal ON certificates(principal);"
    "CREATE TABLE \"groups\"("
    " name TEXT PRIMARY KEY NOT NULL,"
    " description TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE group_members("
    " grp TEXT NOT NULL REFERENCES \"groups\"(name) ON DELETE CASCADE,"
    " principal TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,"
    " PRIMARY KEY(grp, principal));"
    "CREATE INDEX group_members_principal ON group_members(principal);"
    "CREATE TABLE policies("
    " name TEXT PRIMARY KEY NOT NULL,"
    " document TEXT NOT NULL);"
    "CREATE TABLE group_policies("
    " grp TEXT NOT NULL REFERENCES \"groups\"(name) ON DELETE CASCADE,"
    " policy TEXT NOT NULL REFERENCES policies(name) ON DELETE RESTRICT,"
    " PRIMARY KEY(grp, policy));"
    "CREATE INDEX group_policies_policy ON group_policies(policy);";

const char *registry_status_name(registry_status st)
{
    switch (st) {
    case REGISTRY_OK:
        return "ok";
    case REGISTRY_NOT_FOUND:
        return "not found";
    case REGISTRY_EXISTS:
        return "exists";
    case REGISTRY_INVALID:
        return "invalid";
    case REGISTRY_REFUSED:
        return "refused";
    case REGISTRY_BUSY:
        return "busy";
    case REGISTRY_CORRUPT:
        return "corrupt";
    case REGISTRY_VERSION:
        return "version";
    case REGISTRY_IO:
        return "io";
    case REGISTRY_NOMEM:
        return "out of memory";
    }
    return "unknown";
}

const char *registry_kind_name(registry_kind kind)
{
    switch (kind) {
    case REGISTRY_DEVICE:
        return "device";
    case REGISTRY_SERVICE:
        return "service";
    }
    return "unknown";
}

const char *registry_principal_status_name(registry_principal_status st)
{
    switch (st) {
    case REGISTRY_ACTIVE:
        return "active";
    case REGISTRY_DISABLED:
        return "disabled";
    case REGISTRY_REVOKED:
        return "revoked";
    }
    return "unknown";
}

registry_kind reg_kind_parse(const unsigned char *text)
{
    if (!text)
        return 0;
    if (strcmp((const char *)text, "device") == 0)
        return REGISTRY_DEVICE;
    if (strcmp((const char *)text, "service") == 0)
        return REGISTRY_SERVICE;
    return 0;
}

registry_principal_status reg_status_parse(const unsigned char *text)
{
    if (!text)
        return 0;
    if (strcmp((const char *)text, "active") == 0)
        return REGISTRY_ACTIVE;
    if (strcmp((const char *)text, "disabled") == 0)
        return REGISTRY_DISABLED;
    if (strcmp((const char *)text, "revoked") == 0)
        return REGISTRY_REVOKED;
    return 0;
}

/* ---- names and ids ----------------------------------------------------- */

static const char B32[] = "abcdefghijklmnopqrstuvwxyz234567";

registry_status registry_device_id_new(char out[REGISTRY_DEVICE_ID_LEN + 1])
{
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return REGISTRY_IO;
    /* RFC 4648 base32: 5 bits per character, most significant first; 128
     * bits give 25 full characters and a 26th holding the last 3 bits. */
    unsigned buffer = 0, bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < sizeof rnd; i++) {
        buffer = (buffer << 8) | rnd[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = B32[(buffer >> (bits - 5)) & 31u];
            bits -= 5;
        }
        buffer &= (1u << bits) - 1u;
    }
    if (bits > 0)
        out[o++] = B32[(buffer << (5 - bits)) & 31u];
    out[o] = '\0';
    return o == REGISTRY_DEVICE_ID_LEN ? REGISTRY_OK : REGISTRY_INVALID;
}

static int b32_value(char c)
{
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

bool registry_device_id_valid(const char *id)
{
    if (!id)
        return false;
    for (size_t i = 0; i < REGISTRY_DEVICE_ID_LEN; i++)
        if (b32_value(id[i]) < 0)
            return false; /* also stops at a NUL before 26 characters */
    if (id[REGISTRY_DEVICE_ID_LEN] != '\0')
        return false;
    /* The last character carries 3 bits; its 2 low bits are padding and
     * must be zero in the canonical form. */
    return (b32_value(id[REGISTRY_DEVICE_ID_LEN - 1]) & 3) == 0;
}

bool registry_name_valid(const char *name)
{
    if (!name)
        return false;
    size_t i = 0;
    for (; name[i]; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (i >= REGISTRY_NAME_MAX || !(alnum || (i > 0 && c == '-')))
            return false;
    }
    return i > 0;
}

bool registry_service_name_valid(const char *name)
{
    if (!registry_name_valid(name))
        return false;
    /* Any 26 characters of the base32 alphabet would read as a device id. */
    if (strlen(name) != REGISTRY_DEVICE_ID_LEN)
        return true;
    for (size_t i = 0; i < REGISTRY_DEVICE_ID_LEN; i++)
        if (b32_value(name[i]) < 0)
            return true;
    return false;
}

/* ---- errors and statement helpers ------------------------------------- */

static void vrecord(char *buf, size_t len, const char *fmt, va_list ap) REG_PRINTF(3, 0);

static void vrecord(char *buf, size_t len, const char *fmt, va_list ap)
{
    if (vsnprintf(buf, len, fmt, ap) < 0)
        buf[0] = '\0';
}

registry_status reg_fail(registry *reg, registry_status st, const char *fmt, ...)
{
    if (reg) {
        va_list ap;
        va_start(ap, fmt);
        vrecord(reg->err, sizeof reg->err, fmt, ap);
        va_end(ap);
    }
    return st;
}

static registry_status map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return REGISTRY_BUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_FORMAT:
        return REGISTRY_CORRUPT;
    case SQLITE_NOMEM:
        return REGISTRY_NOMEM;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
            return REGISTRY_EXISTS;
        return REGISTRY_REFUSED;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    default:
        return REGISTRY_IO;
    }
}

registry_status reg_sqlerr(registry *reg, int rc, const char *what)
{
    const char *msg = reg && reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc);
    return reg_fail(reg, map_rc(rc), "%s: %s", what, msg);
}

registry_status reg_prepare(registry *reg, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v2(reg->db, sql, -1, out, NULL);
    if (rc != SQLITE_OK) {
        *out = NULL;
        return reg_sqlerr(reg, rc, "registry query");
    }
    return REGISTRY_OK;
}

registry_status reg_bind_text(registry *reg, sqlite3_stmt *s, int i, const char *text)
{
    int rc = sqlite3_bind_text(s, i, text, -1, SQLITE_STATIC);
    return rc == SQLITE_OK ? REGISTRY_OK : reg_sqlerr(reg, rc, "binding a parameter");
}

registry_status reg_bind_int64(registry *reg, sqlite3_stmt *s, int i, int64_t v)
{
    int rc = sqlite3_bind_int64(s, i, (sqlite3_int64)v);
    return rc == SQLITE_OK ? REGISTRY_OK : reg_sqlerr(reg, rc, "binding a parameter");
}

static registry_status exec(registry *reg, const char *sql, const char *what)
{
    int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? REGISTRY_OK : reg_sqlerr(reg, rc, what);
}

registry_status reg_write_begin(registry *reg, bool *own)
{
    *own = false;
    if (reg->readonly)
        return reg_fail(reg, REGISTRY_REFUSED, "registry opened read-only");
    if (!sqlite3_get_autocommit(reg->db))
        return REGISTRY_OK; /* inside the caller's transaction */
    /* IMMEDIATE takes the write lock now, so the checks made inside the
     * transaction still hold when it commits. */
    registry_status st = exec(reg, "BEGIN IMMEDIATE", "starting a transaction");
    if (st == REGISTRY_OK)
        *own = true;
    return st;
}

registry_status reg_write_end(registry *reg, bool own, registry_status st)
{
    if (!own)
        return st;
    if (st == REGISTRY_OK)
        return exec(reg, "COMMIT", "committing");
    /* Keep the first error's message: ROLLBACK's own failure matters less. */
    (void)sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

registry_status registry_begin(registry *reg)
{
    if (reg->readonly)
        return reg_fail(reg, REGISTRY_REFUSED, "registry opened read-only");
    return exec(reg, "BEGIN IMMEDIATE", "starting a transaction");
}

registry_status registry_commit(registry *reg)
{
    return exec(reg, "COMMIT", "committing");
}

void registry_rollback(registry *reg)
{
    if (reg && reg->db && !sqlite3_get_autocommit(reg->db))
        (void)sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
}

registry_status registry_read_begin(registry *reg)
{
    return exec(reg, "BEGIN DEFERRED", "starting a read");
}

registry_status registry_read_end(registry *reg)
{
    return exec(reg, "COMMIT", "ending a read");
}

const char *registry_errmsg(const registry *reg)
{
    return reg ? reg->err : "no registry";
}

struct sqlite3 *registry_sqlite(registry *reg)
{
    return reg ? reg->db : NULL;
}

registry_status reg_column_name(registry *reg, sqlite3_stmt *s, int col, char *buf, size_t buflen,
                                const char *what)
{
    if (sqlite3_column_type(s, col) != SQLITE_TEXT)
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: %s is not text", what);
    const unsigned char *t = sqlite3_column_text(s, col);
    int n = sqlite3_column_bytes(s, col);
    if (!t)
        return reg_fail(reg, REGISTRY_NOMEM, "out of memory reading %s", what);
    if (n <= 0 || (size_t)n >= buflen || memchr(t, '\0', (size_t)n))
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: bad %s", what);
    memcpy(buf, t, (size_t)n);
    buf[n] = '\0';
    if (!registry_name_valid(buf)) /* device ids are valid names too */
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: bad %s '%.64s'", what, buf);
    return REGISTRY_OK;
}

static bool id_valid_for(registry_kind kind, const char *id)
{
    return kind == REGISTRY_DEVICE ? registry_device_id_valid(id) : registry_service_name_valid(id);
}

registry_status reg_row_principal(registry *reg, sqlite3_stmt *s, registry_principal *p)
{
    registry_status st = reg_column_name(reg, s, 0, p->id, sizeof p->id, "principal id");
    if (st != REGISTRY_OK)
        return st;
    p->kind = reg_kind_parse(sqlite3_column_text(s, 1));
    p->status = reg_status_parse(sqlite3_column_text(s, 2));
    if (!p->kind || !p->status || !id_valid_for(p->kind, p->id) ||
        sqlite3_column_type(s, 3) != SQLITE_INTEGER || sqlite3_column_type(s, 4) != SQLITE_INTEGER)
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: principal '%s'", p->id);
    p->created_at = sqlite3_column_int64(s, 3);
    p->updated_at = sqlite3_column_int64(s, 4);
    return REGISTRY_OK;
}

/* ---- opening ---------------------------------------------------------- */

static registry_status user_version(registry *reg, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    registry_status st = reg_prepare(reg, "PRAGMA user_version", &s);
    if (st != REGISTRY_OK)
        return st;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else
        st = reg_sqlerr(reg, rc, "reading the schema version");
    sqlite3_finalize(s);
    return st;
}

static registry_status seed(registry *reg)
{
    registry_status st = exec(reg, SCHEMA, "creating the schema");
    if (st != REGISTRY_OK)
        return st;
    sqlite3_stmt *s = NULL;
    static const char *const sql[] = {
        "INSERT INTO \"groups\"(name, description) VALUES(?1, 'every device')",
        "INSERT INTO policies(name, document) VALUES(?2, ?3)",
        "INSERT INTO group_policies(grp, policy) VALUES(?1, ?2)",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0] && st == REGISTRY_OK; i++) {
        if ((st = reg_prepare(reg, sql[i], &s)) != REGISTRY_OK)
            break;
        /* Unused parameters are simply not present in the statement. */
        int n = sqlite3_bind_parameter_count(s);
        if (n >= 1)
            st = reg_bind_text(reg, s, 1, REGISTRY_DEVICES_GROUP);
        if (st == REGISTRY_OK && n >= 2)
            st = reg_bind_text(reg, s, 2, REGISTRY_DEVICE_POLICY);
        if (st == REGISTRY_OK && n >= 3)
            st = reg_bind_text(reg, s, 3, REGISTRY_DEVICE_POLICY_TEXT);
        if (st == REGISTRY_OK) {
            int rc = sqlite3_step(s);
            if (rc != SQLITE_DONE)
                st = reg_sqlerr(reg, rc, "seeding the registry");
        }
        sqlite3_finalize(s);
        s = NULL;
    }
    if (st == REGISTRY_OK) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", REGISTRY_SCHEMA_VERSION);
        st = exec(reg, pragma, "setting the schema version");
    }
    return st;
}

static registry_status check_schema(registry *reg, bool create)
{
    int64_t v = 0;
    registry_status st = user_version(reg, &v);
    if (st != REGISTRY_OK)
        return st;
    if (v == REGISTRY_SCHEMA_VERSION)
        return REGISTRY_OK;
    if (v > REGISTRY_SCHEMA_VERSION)
        return reg_fail(reg, REGISTRY_VERSION,
                        "registry schema version %lld is newer than this program's (%d)",
                        (long long)v, REGISTRY_SCHEMA_VERSION);
    if (v != 0)
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: schema version %lld",
                        (long long)v);
    if (!create)
        return reg_fail(reg, REGISTRY_CORRUPT, "not a moat registry (no schema); run moatctl init");
    /* Check again under the write lock: two `moatctl init`s may race. */
    if ((st = exec(reg, "BEGIN IMMEDIATE", "starting a transaction")) != REGISTRY_OK)
        return st;
    st = user_version(reg, &v);
    if (st == REGISTRY_OK && v == 0)
        st = seed(reg);
    else if (st == REGISTRY_OK && v != REGISTRY_SCHEMA_VERSION)
        st = reg_fail(reg, REGISTRY_VERSION, "registry schema version %lld", (long long)v);
    return reg_write_end(reg, true, st);
}

static registry_status configure(registry *reg, bool create)
{
    int rc = sqlite3_extended_result_codes(reg->db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(reg->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(reg->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(reg->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(reg->db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, (int *)NULL);
    if (rc != SQLITE_OK)
        return reg_sqlerr(reg, rc, "configuring the registry connection");
    registry_status st = REGISTRY_OK;
    if (!reg->readonly) {
        /* journal_mode answers with the mode in force: anything but "wal"
         * means another connection holds the file in a different mode. */
        sqlite3_stmt *s = NULL;
        if ((st = reg_prepare(reg, "PRAGMA journal_mode=WAL", &s)) != REGISTRY_OK)
            return st;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
            st = reg_sqlerr(reg, rc, "switching to WAL");
        else if (sqlite3_column_type(s, 0) != SQLITE_TEXT ||
                 strcmp((const char *)sqlite3_column_text(s, 0), "wal") != 0)
            st = reg_fail(reg, REGISTRY_IO, "registry could not switch to WAL mode");
        sqlite3_finalize(s);
        if (st == REGISTRY_OK)
            st = exec(reg, "PRAGMA synchronous=FULL", "setting synchronous");
    }
    if (st == REGISTRY_OK)
        st = check_schema(reg, create);
    if (st == REGISTRY_OK)
        st = reg_prepare(reg,
                         "SELECT p.id, p.kind, p.status, c.revoked, c.not_after"
                         " FROM certificates c JOIN principals p ON p.id = c.principal"
                         " WHERE c.fingerprint = ?1",
                         &reg->lookup);
    if (st == REGISTRY_OK)
        st = reg_prepare(reg, "PRAGMA data_version", &reg->data_version);
    return st;
}

registry_status registry_open(const char *path, int flags, registry **out, char *err, size_t errlen)
{
    *out = NULL;
    bool create = flags & REGISTRY_OPEN_CREATE;
    bool readonly = flags & REGISTRY_OPEN_READONLY;
    if (!path || (create && readonly)) {
        if (err && errlen)
            snprintf(err, errlen, "registry_open: invalid arguments");
        return REGISTRY_INVALID;
    }
    if (create) {
        /* Create the file ourselves so it is 0600 from the start; SQLite
         * gives the -wal and -shm files the same mode. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || close(fd) != 0) {
            if (err && errlen)
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return REGISTRY_IO;
        }
    }
    registry *reg = calloc(1, sizeof *reg);
    if (!reg) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return REGISTRY_NOMEM;
    }
    reg->readonly = readonly;
    int oflags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX |
                 SQLITE_OPEN_NOFOLLOW;
    int rc = sqlite3_open_v2(path, &reg->db, oflags, NULL);
    registry_status st;
    if (rc != SQLITE_OK)
        st = reg_fail(reg, map_rc(rc), "%s: %s", path,
                      reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc));
    else
        st = configure(reg, create);
    if (st != REGISTRY_OK) {
        if (err && errlen)
            snprintf(err, errlen, "%s", reg->err);
        registry_close(reg);
        return st;
    }
    *out = reg;
    return REGISTRY_OK;
}

void registry_close(registry *reg)
{
    if (!reg)
        return;
    sqlite3_finalize(reg->lookup);
    sqlite3_finalize(reg->data_version);
    if (reg->db && !sqlite3_get_autocommit(reg->db))
        (void)sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
    (void)sqlite3_close_v2(reg->db);
    free(reg);
}

/* ---- the hub's read path ---------------------------------------------- */

registry_status registry_lookup_cert(registry *reg, const uint8_t fp[REGISTRY_FINGERPRINT_LEN],
                                     registry_identity *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = reg->lookup;
    registry_status st = REGISTRY_OK;
    int rc = sqlite3_bind_blob(s, 1, fp, REGISTRY_FINGERPRINT_LEN, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        st = reg_sqlerr(reg, rc, "looking up a certificate");
        goto out;
    }
    rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        st = reg_fail(reg, REGISTRY_NOT_FOUND, "unknown certificate");
        goto out;
    }
    if (rc != SQLITE_ROW) {
        st = reg_sqlerr(reg, rc, "looking up a certificate");
        goto out;
    }
    if ((st = reg_column_name(reg, s, 0, out->id, sizeof out->id, "principal id")) != REGISTRY_OK)
        goto out;
    out->kind = reg_kind_parse(sqlite3_column_text(s, 1));
    out->status = reg_status_parse(sqlite3_column_text(s, 2));
    int64_t revoked = sqlite3_column_int64(s, 3);
    if (!out->kind || !out->status || !id_valid_for(out->kind, out->id) ||
        sqlite3_column_type(s, 3) != SQLITE_INTEGER || (revoked != 0 && revoked != 1) ||
        sqlite3_column_type(s, 4) != SQLITE_INTEGER) {
        st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: certificate of '%s'", out->id);
        goto out;
    }
    out->cert_revoked = revoked == 1;
    out->not_after = sqlite3_column_int64(s, 4);
out:
    if (st != REGISTRY_OK) {
        /* Never hand back a half-filled identity that could read as active. */
        memset(out, 0, sizeof *out);
        out->cert_revoked = true;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return st;
}

bool registry_identity_active(const registry_identity *who, int64_t now)
{
    return who && (who->kind == REGISTRY_DEVICE || who->kind == REGISTRY_SERVICE) &&
           who->status == REGISTRY_ACTIVE && !who->cert_revoked && now < who->not_after &&
           who->id[0] != '\0';
}

registry_status registry_policies_for(registry *reg, const char *principal_id,
                                      registry_policy_cb cb, void *ctx)
{
    sqlite3_stmt *s = NULL;
    registry_status st = reg_prepare(reg,
                                     "SELECT DISTINCT p.name, p.document"
                                     " FROM group_members m"
                                     " JOIN group_policies gp ON gp.grp = m.grp"
                                     " JOIN policies p ON p.name = gp.policy"
                                     " WHERE m.principal = ?1 ORDER BY p.name",
                                     &s);
    if (st != REGISTRY_OK)
        return st;
    if ((st = reg_bind_text(reg, s, 1, principal_id)) != REGISTRY_OK)
        goto out;
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, "reading policies");
            break;
        }
        char name[REGISTRY_NAME_MAX + 1];
        if ((st = reg_column_name(reg, s, 0, name, sizeof name, "policy name")) != REGISTRY_OK)
            break;
        const unsigned char *doc = sqlite3_column_text(s, 1);
        int len = sqlite3_column_bytes(s, 1);
        if (sqlite3_column_type(s, 1) != SQLITE_TEXT || !doc || len < 0 ||
            (size_t)len > REG_DOCUMENT_MAX || memchr(doc, '\0', (size_t)len)) {
            st = reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: policy '%s'", name);
            break;
        }
        if (cb(ctx, name, (const char *)doc, (size_t)len) != 0) {
            st = reg_fail(reg, REGISTRY_REFUSED, "stopped by the caller");
            break;
        }
    }
out:
    sqlite3_finalize(s);
    return st;
}

registry_status registry_data_version(registry *reg, int64_t *out)
{
    sqlite3_stmt *s = reg->data_version;
    registry_status st = REGISTRY_OK;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else
        st = reg_sqlerr(reg, rc, "reading data_version");
    sqlite3_reset(s);
    return st;
}
