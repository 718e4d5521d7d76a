/*
 * settings.c — per-group settings: small named values (retention_days,
 * report_interval, ...) that other parts of the hub read for the devices of
 * a group. The registry stores them without knowing what they mean; each
 * user of a key parses and checks its own values.
 *
 * The table is created on the first write (CREATE TABLE IF NOT EXISTS)
 * rather than by the schema: registries made before settings existed keep
 * working with no migration and no schema version change, an older moatctl
 * simply ignores the extra table, and readers treat a missing table as "no
 * settings". Rows go with their group (ON DELETE CASCADE).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char TABLE_SQL[] = "CREATE TABLE IF NOT EXISTS group_settings("
                                " grp TEXT NOT NULL REFERENCES \"groups\"(name) ON DELETE CASCADE,"
                                " key TEXT NOT NULL,"
                                " value TEXT NOT NULL,"
                                " PRIMARY KEY(grp, key)) WITHOUT ROWID";

bool registry_setting_key_valid(const char *key)
{
    if (!key || !(key[0] >= 'a' && key[0] <= 'z'))
        return false;
    size_t i = 0;
    for (; key[i]; i++) {
        char c = key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        if (i >= REGISTRY_SETTING_KEY_MAX || !ok)
            return false;
    }
    return true;
}

bool registry_setting_value_valid(const char *value)
{
    if (!value || !value[0])
        return false;
    size_t i = 0;
    for (; value[i]; i++) {
        unsigned char c = (unsigned char)value[i];
        /* No control characters: values are printed by moatctl and end up
         * in logs, where a newline or an escape sequence would forge lines. */
        if (i >= REGISTRY_SETTING_VALUE_MAX || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* Whether the table exists yet (see the file comment). */
static registry_status have_table(registry *reg, bool *found)
{
    sqlite3_stmt *s = NULL;
    registry_status st = reg_prepare(
        reg, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'group_settings'", &s);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            *found = rc == SQLITE_ROW;
        else
            st = reg_sqlerr(reg, rc, "looking for group settings");
    }
    sqlite3_finalize(s);
    return st;
}

static registry_status group_exists(registry *reg, const char *group)
{
    if (!registry_name_valid(group))
        return reg_fail(reg, REGISTRY_INVALID, "invalid group name '%.64s'", group ? group : "");
    sqlite3_stmt *s = NULL;
    registry_status st = reg_prepare(reg, "SELECT 1 FROM \"groups\" WHERE name = ?1", &s);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 1, group);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            st = reg_fail(reg, REGISTRY_NOT_FOUND, "group '%s' does not exist", group);
        else if (rc != SQLITE_ROW)
            st = reg_sqlerr(reg, rc, "looking up a group");
    }
    sqlite3_finalize(s);
    return st;
}

static registry_status check_key(registry *reg, const char *key)
{
    if (!registry_setting_key_valid(key))
        return reg_fail(reg, REGISTRY_INVALID,
                        "invalid setting name '%.64s' (use [a-z][a-z0-9_]{0,62})", key ? key : "");
    return REGISTRY_OK;
}

registry_status registry_group_setting_set(registry *reg, const char *group, const char *key,
                                           const char *value)
{
    registry_status st = check_key(reg, key);
    if (st != REGISTRY_OK)
        return st;
    if (value && !registry_setting_value_valid(value))
        return reg_fail(reg, REGISTRY_INVALID,
                        "invalid value for '%s': 1 to %u printable bytes, no control characters",
                        key, REGISTRY_SETTING_VALUE_MAX);
    bool own;
    if ((st = reg_write_begin(reg, &own)) != REGISTRY_OK)
        return st;
    if ((st = group_exists(reg, group)) != REGISTRY_OK)
        goto out;
    int rc = sqlite3_exec(reg->db, TABLE_SQL, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        st = reg_sqlerr(reg, rc, "creating the group settings table");
        goto out;
    }
    sqlite3_stmt *s = NULL;
    st = reg_prepare(reg,
                     value ? "INSERT INTO group_settings(grp, key, value) VALUES(?1, ?2, ?3)"
                             " ON CONFLICT(grp, key) DO UPDATE SET value = excluded.value"
                           : "DELETE FROM group_settings WHERE grp = ?1 AND key = ?2",
                     &s);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 1, group);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 2, key);
    if (st == REGISTRY_OK && value)
        st = reg_bind_text(reg, s, 3, value);
    if (st == REGISTRY_OK) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
            st = reg_sqlerr(reg, rc, "storing a group setting");
        else if (!value && sqlite3_changes(reg->db) == 0)
            st = reg_fail(reg, REGISTRY_NOT_FOUND, "group '%s' has no setting '%s'", group, key);
    }
    sqlite3_finalize(s);
out:
    return reg_write_end(reg, own, st);
}

/* Copy a stored value after checking it obeys the rules set() enforces. */
static registry_status column_value(registry *reg, sqlite3_stmt *s, int col,
                                    char out[REGISTRY_SETTING_VALUE_MAX + 1])
{
    const unsigned char *v = sqlite3_column_text(s, col);
    int n = sqlite3_column_bytes(s, col);
    if (sqlite3_column_type(s, col) != SQLITE_TEXT || !v || n <= 0 ||
        (size_t)n > REGISTRY_SETTING_VALUE_MAX)
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: bad group setting value");
    memcpy(out, v, (size_t)n);
    out[n] = '\0';
    if (!registry_setting_value_valid(out))
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: bad group setting value");
    return REGISTRY_OK;
}

static registry_status column_key(registry *reg, sqlite3_stmt *s, int col,
                                  char out[REGISTRY_SETTING_KEY_MAX + 1])
{
    const unsigned char *v = sqlite3_column_text(s, col);
    int n = sqlite3_column_bytes(s, col);
    if (sqlite3_column_type(s, col) != SQLITE_TEXT || !v || n <= 0 ||
        (size_t)n > REGISTRY_SETTING_KEY_MAX)
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: bad group setting name");
    memcpy(out, v, (size_t)n);
    out[n] = '\0';
    if (!registry_setting_key_valid(out))
        return reg_fail(reg, REGISTRY_CORRUPT, "registry corrupt: bad group setting name");
    return REGISTRY_OK;
}

registry_status registry_group_setting_get(registry *reg, const char *group, const char *key,
                                           char value[REGISTRY_SETTING_VALUE_MAX + 1])
{
    value[0] = '\0';
    bool found = false;
    registry_status st = check_key(reg, key);
    if (st == REGISTRY_OK)
        st = group_exists(reg, group);
    if (st == REGISTRY_OK)
        st = have_table(reg, &found);
    if (st != REGISTRY_OK)
        return st;
    if (!found)
        return reg_fail(reg, REGISTRY_NOT_FOUND, "group '%s' has no setting '%s'", group, key);
    sqlite3_stmt *s = NULL;
    st = reg_prepare(reg, "SELECT value FROM group_settings WHERE grp = ?1 AND key = ?2", &s);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 1, group);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 2, key);
    if (st == REGISTRY_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            st = reg_fail(reg, REGISTRY_NOT_FOUND, "group '%s' has no setting '%s'", group, key);
        else if (rc != SQLITE_ROW)
            st = reg_sqlerr(reg, rc, "reading a group setting");
        else
            st = column_value(reg, s, 0, value);
    }
    sqlite3_finalize(s);
    if (st != REGISTRY_OK)
        value[0] = '\0';
    return st;
}

/* Walk rows of (group, key, value) from a prepared statement. */
static registry_status walk_settings(registry *reg, sqlite3_stmt *s, registry_setting_cb cb,
                                     void *ctx)
{
    registry_status st = REGISTRY_OK;
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = reg_sqlerr(reg, rc, "reading group settings");
            break;
        }
        char grp[REGISTRY_NAME_MAX + 1], key[REGISTRY_SETTING_KEY_MAX + 1];
        char value[REGISTRY_SETTING_VALUE_MAX + 1];
        if ((st = reg_column_name(reg, s, 0, grp, sizeof grp, "group name")) != REGISTRY_OK ||
            (st = column_key(reg, s, 1, key)) != REGISTRY_OK ||
            (st = column_value(reg, s, 2, value)) != REGISTRY_OK)
            break;
        if (cb(ctx, grp, key, value) != 0) {
            st = reg_fail(reg, REGISTRY_REFUSED, "stopped by the caller");
            break;
        }
    }
    return st;
}

registry_status registry_group_setting_list(registry *reg, const char *group,
                                            registry_setting_cb cb, void *ctx)
{
    bool found = false;
    registry_status st = group ? group_exists(reg, group) : REGISTRY_OK;
    if (st == REGISTRY_OK)
        st = have_table(reg, &found);
    if (st != REGISTRY_OK || !found)
        return st;
    sqlite3_stmt *s = NULL;
    st =
        reg_prepare(reg,
                    group ? "SELECT grp, key, value FROM group_settings WHERE grp = ?1 ORDER BY key"
                          : "SELECT grp, key, value FROM group_settings ORDER BY grp, key",
                    &s);
    if (st == REGISTRY_OK && group)
        st = reg_bind_text(reg, s, 1, group);
    if (st == REGISTRY_OK)
        st = walk_settings(reg, s, cb, ctx);
    sqlite3_finalize(s);
    return st;
}

registry_status registry_principal_settings(registry *reg, const char *principal_id,
                                            const char *key, registry_setting_cb cb, void *ctx)
{
    bool found = false;
    registry_status st = check_key(reg, key);
    if (st == REGISTRY_OK && !registry_name_valid(principal_id))
        st = reg_fail(reg, REGISTRY_INVALID, "invalid principal id '%.64s'",
                      principal_id ? principal_id : "");
    if (st == REGISTRY_OK)
        st = have_table(reg, &found);
    if (st != REGISTRY_OK || !found)
        return st;
    sqlite3_stmt *s = NULL;
    st = reg_prepare(reg,
                     "SELECT s.grp, s.key, s.value FROM group_members m"
                     " JOIN group_settings s ON s.grp = m.grp"
                     " WHERE m.principal = ?1 AND s.key = ?2 ORDER BY s.grp",
                     &s);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 1, principal_id);
    if (st == REGISTRY_OK)
        st = reg_bind_text(reg, s, 2, key);
    if (st == REGISTRY_OK)
        st = walk_settings(reg, s, cb, ctx);
    sqlite3_finalize(s);
    return st;
}
