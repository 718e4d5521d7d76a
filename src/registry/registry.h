/*
 * registry.h — who may talk to the hub: principals (devices and services),
 * the exact certificates each holds, groups, and the policies attached to
 * groups. One SQLite file, DATA_DIR/registry.db, written by moatctl and read
 * by moatd while it runs.
 *
 * The hub identifies a client by the SHA-256 fingerprint of the certificate
 * it presented (registry_lookup_cert), so a certificate that moatctl did not
 * record can never act as anyone, even if it chains to the CA. It learns of
 * changes by polling registry_data_version (PRAGMA data_version), which moves
 * whenever another connection commits.
 *
 * Concurrency: one handle per thread. The file is in WAL mode, so the hub's
 * readers never block moatctl's short write transactions and vice versa;
 * writers wait up to 5 s for each other (busy_timeout). Every statement is
 * prepared with bound parameters. Stored data that breaks the schema's rules
 * (an unknown status, a fingerprint that is not 32 bytes...) is reported as
 * REGISTRY_CORRUPT, never guessed at.
 *
 * Example (the hub, after a TLS handshake):
 *
 *     registry_identity who;
 *     switch (registry_lookup_cert(reg, fp, &who)) {
 *     case REGISTRY_OK:
 *         if (registry_identity_active(&who, time(NULL)))
 *             break; // accept; then registry_policies_for(reg, who.id, ...)
 *         // fall through: refuse
 *     default:
 *         refuse();
 *     }
 */
#ifndef MOAT_REGISTRY_H
#define MOAT_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define REGISTRY_MUST_CHECK __attribute__((warn_unused_result))
#else
#define REGISTRY_MUST_CHECK
#endif

typedef enum registry_status {
    REGISTRY_OK = 0,
    REGISTRY_NOT_FOUND, /* no such principal, group, policy or certificate */
    REGISTRY_EXISTS,    /* the name or id is already taken */
    REGISTRY_INVALID,   /* a name or argument breaks the rules below */
    REGISTRY_REFUSED,   /* not allowed in the current state (enable a revoked
                           principal, delete an attached policy, ...) */
    REGISTRY_BUSY,      /* another writer held the lock for more than 5 s */
    REGISTRY_CORRUPT,   /* stored data breaks the schema's rules */
    REGISTRY_VERSION,   /* the file's schema is newer than this program */
    REGISTRY_IO,        /* SQLite reported an error (see registry_errmsg) */
    REGISTRY_NOMEM
} registry_status;

/* Short name of a status, for logs and tests. */
const char *registry_status_name(registry_status st);

/* The schema version this program writes (PRAGMA user_version). */
#define REGISTRY_SCHEMA_VERSION 1

/* Device ids are 26 characters, service/group/policy names at most 63. */
#define REGISTRY_DEVICE_ID_LEN   26u
#define REGISTRY_NAME_MAX        63u
#define REGISTRY_ID_MAX          63u
#define REGISTRY_FINGERPRINT_LEN 32u
#define REGISTRY_SERIAL_MAX      64u

/* The group every device belongs to, and its policy. */
#define REGISTRY_DEVICES_GROUP "devices"
#define REGISTRY_DEVICE_POLICY "device-default"
#define REGISTRY_DEVICE_POLICY_TEXT                                                                \
    "allow connect\n"                                                                              \
    "allow publish moat/${device}/up/#\n"                                                          \
    "allow subscribe moat/${device}/down/#\n"                                                      \
    "allow receive moat/${device}/down/#\n"

typedef enum registry_kind { REGISTRY_DEVICE = 1, REGISTRY_SERVICE = 2 } registry_kind;

typedef enum registry_principal_status {
    REGISTRY_ACTIVE = 1,
    REGISTRY_DISABLED = 2, /* refused until enabled again */
    REGISTRY_REVOKED = 3   /* refused forever; every certificate revoked */
} registry_principal_status;

const char *registry_kind_name(registry_kind kind);                       /* "device", "service" */
const char *registry_principal_status_name(registry_principal_status st); /* "active", ... */

/* ---- names ------------------------------------------------------------ */

/* A new device id: 16 random bytes as lower-case RFC 4648 base32 without
 * padding (26 characters of [a-z2-7]), written to out with a NUL. */
REGISTRY_MUST_CHECK registry_status registry_device_id_new(char out[REGISTRY_DEVICE_ID_LEN + 1]);

/* True for a canonical device id (as made by registry_device_id_new). */
bool registry_device_id_valid(const char *id);

/* True for a group, policy or service name: [a-z0-9][a-z0-9-]{0,62}. */
bool registry_name_valid(const char *name);

/* True for a service name: a valid name that does not have the shape of a
 * device id (so the two kinds can never be mistaken for each other). */
bool registry_service_name_valid(const char *name);

/* ---- opening ---------------------------------------------------------- */

typedef struct registry registry;

enum {
    REGISTRY_OPEN_CREATE = 1,  /* create the file and schema if missing (moatctl init) */
    REGISTRY_OPEN_READONLY = 2 /* the hub: never write */
};

/* Open path. Without REGISTRY_OPEN_CREATE a missing file or one without the
 * schema is an error. On failure *out is NULL and err (if not NULL) holds a
 * one-line reason. */
REGISTRY_MUST_CHECK registry_status registry_open(const char *path, int flags, registry **out,
                                                  char *err, size_t errlen);
void registry_close(registry *reg);

/* One line on the last failure of a call on reg ("group 'x' does not exist",
 * or SQLite's own message). */
const char *registry_errmsg(const registry *reg);

/* The SQLite connection, for a module that keeps tables of its own in
 * registry.db and must commit them in the same transaction as a registry
 * change (the audit log, src/audit). Never use it on the registry's tables. */
struct sqlite3 *registry_sqlite(registry *reg);

/* ---- what the hub calls ----------------------------------------------- */

typedef struct registry_identity {
    char id[REGISTRY_ID_MAX + 1];
    registry_kind kind;
    registry_principal_status status;
    bool cert_revoked;
    int64_t not_after; /* the certificate's, seconds since the epoch */
} registry_identity;

/* Find the principal holding the certificate with SHA-256 fingerprint fp.
 * REGISTRY_OK (out filled) or REGISTRY_NOT_FOUND; the caller decides with
 * registry_identity_active. */
REGISTRY_MUST_CHECK registry_status registry_lookup_cert(registry *reg,
                                                         const uint8_t fp[REGISTRY_FINGERPRINT_LEN],
                                                         registry_identity *out);

/* True only if the principal is active, the certificate not revoked, and
 * now is before not_after. Fails closed on anything else. */
bool registry_identity_active(const registry_identity *who, int64_t now);

/* Called once per policy; a non-zero return stops the walk and is returned
 * (as REGISTRY_REFUSED) by the caller. document is NUL-terminated, len bytes. */
typedef int (*registry_policy_cb)(void *ctx, const char *name, const char *document, size_t len);

/* Every distinct policy attached to any group the principal is a member of,
 * in name order. */
REGISTRY_MUST_CHECK registry_status registry_policies_for(registry *reg, const char *principal_id,
                                                          registry_policy_cb cb, void *ctx);

/* PRAGMA data_version: changes when another connection commits. */
REGISTRY_MUST_CHECK registry_status registry_data_version(registry *reg, int64_t *out);

/* Read several things from one consistent snapshot: everything between
 * begin and end sees the same committed state. */
REGISTRY_MUST_CHECK registry_status registry_read_begin(registry *reg);
REGISTRY_MUST_CHECK registry_status registry_read_end(registry *reg);

/* ---- transactions (moatctl) ------------------------------------------- */

/* Group several changes into one atomic write (BEGIN IMMEDIATE). Each
 * change below otherwise commits on its own. */
REGISTRY_MUST_CHECK registry_status registry_begin(registry *reg);
REGISTRY_MUST_CHECK registry_status registry_commit(registry *reg);
void registry_rollback(registry *reg);

/* ---- principals ------------------------------------------------------- */

typedef struct registry_principal {
    char id[REGISTRY_ID_MAX + 1];
    registry_kind kind;
    registry_principal_status status;
    int64_t created_at, updated_at; /* seconds since the epoch */
} registry_principal;

/* Add an active principal. A device is put in the `devices` group. */
REGISTRY_MUST_CHECK registry_status registry_principal_add(registry *reg, registry_kind kind,
                                                           const char *id);

/* Fetch one principal; with kind 0 any kind matches. */
REGISTRY_MUST_CHECK registry_status registry_principal_get(registry *reg, const char *id,
                                                           registry_kind kind,
                                                           registry_principal *out);

typedef int (*registry_principal_cb)(void *ctx, const registry_principal *p);

/* Every principal of kind (0 = all), in id order. */
REGISTRY_MUST_CHECK registry_status registry_principal_list(registry *reg, registry_kind kind,
                                                            registry_principal_cb cb, void *ctx);

/* Change the status of the principal id of the given kind. Revoked is final:
 * it also revokes every certificate, and any later change is REFUSED. */
REGISTRY_MUST_CHECK registry_status registry_principal_set_status(registry *reg, const char *id,
                                                                  registry_kind kind,
                                                                  registry_principal_status st);

/* Delete a principal with its certificates and memberships. */
REGISTRY_MUST_CHECK registry_status registry_principal_delete(registry *reg, const char *id,
                                                              registry_kind kind);

/* ---- certificates ----------------------------------------------------- */

typedef struct registry_cert {
    uint8_t fingerprint[REGISTRY_FINGERPRINT_LEN];
    char principal[REGISTRY_ID_MAX + 1];
    char serial[REGISTRY_SERIAL_MAX + 1]; /* lower-case hex */
    int64_t not_after;
    bool revoked;
} registry_cert;

/* Record a certificate of an existing principal. REFUSED for a revoked one. */
REGISTRY_MUST_CHECK registry_status registry_cert_add(registry *reg, const registry_cert *cert);

typedef int (*registry_cert_cb)(void *ctx, const registry_cert *c);

/* The certificates of one principal, newest expiry first. */
REGISTRY_MUST_CHECK registry_status registry_cert_list(registry *reg, const char *principal_id,
                                                       registry_cert_cb cb, void *ctx);

/* Revoke the one certificate of principal_id whose fingerprint is fp (a
 * renewal's old certificate): the hub refuses it from then on and closes a
 * connection that uses it; the principal and its other certificates are
 * untouched. NOT_FOUND if principal_id holds no such certificate (another
 * principal's is never touched); revoking it again changes nothing. */
REGISTRY_MUST_CHECK registry_status registry_cert_revoke(registry *reg, const char *principal_id,
                                                         const uint8_t fp[REGISTRY_FINGERPRINT_LEN]);

/* ---- groups ----------------------------------------------------------- */

REGISTRY_MUST_CHECK registry_status registry_group_add(registry *reg, const char *name,
                                                       const char *description);
/* A group's description in a new NUL-terminated buffer (free with free());
 * NOT_FOUND if there is no such group. */
REGISTRY_MUST_CHECK registry_status registry_group_get(registry *reg, const char *name,
                                                       char **description);

/* Delete a group with its memberships and attachments. The `devices` group
 * cannot be deleted. */
REGISTRY_MUST_CHECK registry_status registry_group_delete(registry *reg, const char *name);

typedef struct registry_group {
    char name[REGISTRY_NAME_MAX + 1];
    const char *description; /* valid during the callback only */
    int64_t members;
    int64_t policies;
} registry_group;

typedef int (*registry_group_cb)(void *ctx, const registry_group *g);

/* Every group in name order. */
REGISTRY_MUST_CHECK registry_status registry_group_list(registry *reg, registry_group_cb cb,
                                                        void *ctx);

/* Attach a policy to a group (EXISTS if already attached) and detach it. */
REGISTRY_MUST_CHECK registry_status registry_group_attach(registry *reg, const char *policy,
                                                          const char *group);
REGISTRY_MUST_CHECK registry_status registry_group_detach(registry *reg, const char *policy,
                                                          const char *group);

/* Membership. Only devices may be members of `devices`, and a device cannot
 * leave it. */
REGISTRY_MUST_CHECK registry_status registry_member_add(registry *reg, const char *group,
                                                        const char *principal_id);
REGISTRY_MUST_CHECK registry_status registry_member_remove(registry *reg, const char *group,
                                                           const char *principal_id);

/* Called with one name at a time (a group, a member id or a policy name). */
typedef int (*registry_name_cb)(void *ctx, const char *name);

/* Groups a principal belongs to; members of a group; policies attached to a
 * group; groups a policy is attached to. All in name order. */
REGISTRY_MUST_CHECK registry_status registry_principal_groups(registry *reg,
                                                              const char *principal_id,
                                                              registry_name_cb cb, void *ctx);
REGISTRY_MUST_CHECK registry_status registry_group_members(registry *reg, const char *group,
                                                           registry_name_cb cb, void *ctx);
REGISTRY_MUST_CHECK registry_status registry_group_policies(registry *reg, const char *group,
                                                            registry_name_cb cb, void *ctx);
REGISTRY_MUST_CHECK registry_status registry_policy_groups(registry *reg, const char *policy,
                                                           registry_name_cb cb, void *ctx);

/* ---- policies --------------------------------------------------------- */

/* Store a policy document (not validated here: moatctl parses it first).
 * With replace, an existing policy of that name is overwritten; otherwise
 * that is EXISTS. */
REGISTRY_MUST_CHECK registry_status registry_policy_put(registry *reg, const char *name,
                                                        const char *document, size_t len,
                                                        bool replace);

/* The document in a new NUL-terminated buffer (free with free()). */
REGISTRY_MUST_CHECK registry_status registry_policy_get(registry *reg, const char *name,
                                                        char **document, size_t *len);

/* Every policy name in order. */
REGISTRY_MUST_CHECK registry_status registry_policy_list(registry *reg, registry_name_cb cb,
                                                         void *ctx);

/* Delete a policy; REFUSED while it is attached to any group. */
REGISTRY_MUST_CHECK registry_status registry_policy_delete(registry *reg, const char *name);

/* ---- group settings (settings.c) --------------------------------------- */

/*
 * Named values attached to a group, read by the parts of the hub that act
 * per group. The registry does not interpret them; each user parses its own
 * keys. Keys in use: retention_days, retention_max_mb (telemetry store,
 * docs/telemetry.md), report_interval (liveness).
 *
 * A device is in several groups (always `devices`, maybe more), so a key may
 * have several values for one device: registry_principal_settings hands
 * them all to the caller, who decides (retention takes the smallest).
 *
 *     registry_group_setting_set(reg, "sensors", "retention_days", "30");
 *     char v[REGISTRY_SETTING_VALUE_MAX + 1];
 *     if (registry_group_setting_get(reg, "sensors", "retention_days", v) == REGISTRY_OK)
 *         ...parse v...
 */

#define REGISTRY_SETTING_KEY_MAX   63u  /* [a-z][a-z0-9_]{0,62} */
#define REGISTRY_SETTING_VALUE_MAX 255u /* bytes, no control characters */

bool registry_setting_key_valid(const char *key);
bool registry_setting_value_valid(const char *value);

/* Set key of group to value (insert or replace); with value NULL, remove the
 * key (NOT_FOUND if it was not set). NOT_FOUND for an unknown group. */
REGISTRY_MUST_CHECK registry_status registry_group_setting_set(registry *reg, const char *group,
                                                               const char *key, const char *value);

/* The value of key in group, NUL-terminated; NOT_FOUND if the group or the
 * key does not exist (value is then ""). */
REGISTRY_MUST_CHECK registry_status
registry_group_setting_get(registry *reg, const char *group, const char *key,
                           char value[REGISTRY_SETTING_VALUE_MAX + 1]);

/* Called once per setting; the strings are valid during the call only. A
 * non-zero return stops the walk (the caller then gets REGISTRY_REFUSED). */
typedef int (*registry_setting_cb)(void *ctx, const char *group, const char *key,
                                   const char *value);

/* Every setting of group in key order; with group NULL, every setting of
 * every group in (group, key) order. */
REGISTRY_MUST_CHECK registry_status registry_group_setting_list(registry *reg, const char *group,
                                                                registry_setting_cb cb, void *ctx);

/* The value of key in each group principal_id belongs to, in group order
 * (nothing if no group of it sets key). */
REGISTRY_MUST_CHECK registry_status registry_principal_settings(registry *reg,
                                                                const char *principal_id,
                                                                const char *key,
                                                                registry_setting_cb cb, void *ctx);

#endif /* MOAT_REGISTRY_H */
