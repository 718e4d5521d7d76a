/*
 * tstore_sqlite_keys.c — the SQLite back-end's keys: checking the master key
 * file against the store, finishing a rotation that stopped after its
 * commit, unwrapping data keys on first use (and holding them, in guarded
 * memory, by id), and noticing what another connection changed (a new
 * current key during re-encryption) through PRAGMA data_version.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "tsq.h"

/* ---- the master key and data keys ------------------------------------ */

static bool master_matches(const tcrypt_master *m, const uint8_t want[TCRYPT_CHECK_LEN])
{
    uint8_t have[TCRYPT_CHECK_LEN];
    tcrypt_master_check(m, have);
    return sodium_memcmp(have, want, TCRYPT_CHECK_LEN) == 0;
}

tstore_status tsq_master(tsq *s, tcrypt_master **out)
{
    *out = NULL;
    uint8_t want[TCRYPT_CHECK_LEN];
    tstore_status st = tsq_meta_get_check(s, want);
    if (st != TSTORE_OK)
        return st;
    tcrypt_master *m = NULL;
    char why[320];
    st = tcrypt_master_load(s->path_master, &m, why, sizeof why);
    if (st != TSTORE_OK)
        return tsq_fail(s, st, "master key: %s", why);
    if (master_matches(m, want)) {
        *out = m;
        return TSTORE_OK;
    }
    tcrypt_master_free(m);
    m = NULL;
    /* A rotation that committed but stopped before replacing the key file
     * left the new key beside it: finish the job (see rotate_master). */
    if (tcrypt_master_load(s->path_master_new, &m, why, sizeof why) == TSTORE_OK &&
        master_matches(m, want)) {
        if (rename(s->path_master_new, s->path_master) != 0 && errno != ENOENT) {
            tcrypt_master_free(m);
            return tsq_fail(s, TSTORE_IO, "finishing a master key rotation: %s: %s", s->path_master,
                            strerror(errno));
        }
        (void)tcrypt_sync_dir(s->path_master, why, sizeof why); /* retried by the next rename */
        *out = m;
        return TSTORE_OK;
    }
    tcrypt_master_free(m);
    return tsq_fail(s, TSTORE_KEY,
                    "%s is not the master key of %s (wrong or damaged key file); restore the "
                    "right master.key",
                    s->path_master, s->path_db);
}

static bool key_is_live(const tsq *s, int64_t id)
{
    for (size_t i = 0; i < s->nlive; i++)
        if (s->live[i] == id)
            return true;
    return false;
}

void tsq_keys_prune(tsq *s)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->nkeys; i++) {
        if (key_is_live(s, s->keys[i]->id) || s->keys[i]->id == s->current_key)
            s->keys[kept++] = s->keys[i];
        else
            tcrypt_datakey_free(s->keys[i]);
    }
    s->nkeys = kept;
}

tstore_status tsq_key(tsq *s, int64_t id, const tcrypt_datakey **out)
{
    for (size_t i = 0; i < s->nkeys; i++) {
        if (s->keys[i]->id == id) {
            *out = s->keys[i];
            return TSTORE_OK;
        }
    }
    *out = NULL;
    if (s->nkeys == TSQ_KEYS_MAX)
        tsq_keys_prune(s);
    if (s->nkeys == TSQ_KEYS_MAX)
        return tsq_fail(s, TSTORE_CORRUPT, "corrupt: more than %d live data keys", TSQ_KEYS_MAX);
    /* Read the wrapped key before the master key file, so a reference to a
     * key that does not exist is reported as what it is. */
    tstore_status st = tsq_bind_int(s, ST_KEY_GET, 1, id);
    uint8_t wrapped[TCRYPT_WRAPPED_LEN];
    if (st == TSTORE_OK) {
        sqlite3_stmt *q = s->st[ST_KEY_GET];
        int rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            st =
                tsq_fail(s, TSTORE_CORRUPT, "corrupt: data key %lld does not exist", (long long)id);
        else if (rc != SQLITE_ROW)
            st = tsq_sqlerr(s, rc, "reading a data key");
        else if (sqlite3_column_type(q, 0) != SQLITE_BLOB ||
                 sqlite3_column_bytes(q, 0) != TCRYPT_WRAPPED_LEN)
            st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: data key %lld has a bad length",
                          (long long)id);
        else
            memcpy(wrapped, sqlite3_column_blob(q, 0), TCRYPT_WRAPPED_LEN);
    }
    tsq_done(s, ST_KEY_GET);
    if (st != TSTORE_OK)
        return st;
    tcrypt_master *m = NULL;
    if ((st = tsq_master(s, &m)) != TSTORE_OK)
        return st;
    uint8_t *raw = sodium_malloc(TCRYPT_KEY_LEN);
    tcrypt_datakey *k = NULL;
    if (!raw)
        st = tsq_fail(s, TSTORE_NOMEM, "out of memory");
    else if (!tcrypt_unwrap(m, id, wrapped, raw))
        st = tsq_fail(s, TSTORE_CORRUPT,
                      "corrupt: data key %lld does not open under the master key (the data_keys "
                      "row was altered)",
                      (long long)id);
    else if (!(k = tcrypt_datakey_derive(id, raw)))
        st = tsq_fail(s, TSTORE_NOMEM, "out of memory");
    if (raw)
        sodium_free(raw);
    tcrypt_master_free(m);
    if (st != TSTORE_OK)
        return st;
    s->keys[s->nkeys++] = k;
    *out = k;
    return TSTORE_OK;
}

static tstore_status load_live(tsq *s)
{
    sqlite3_stmt *q = s->st[ST_KEY_ALL];
    tstore_status st = TSTORE_OK;
    int rc;
    s->nlive = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (s->nlive == TSQ_KEYS_MAX) {
            st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: more than %d data keys", TSQ_KEYS_MAX);
            break;
        }
        s->live[s->nlive++] = sqlite3_column_int64(q, 0);
    }
    if (st == TSTORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        st = tsq_sqlerr(s, rc, "listing data keys");
    tsq_done(s, ST_KEY_ALL);
    return st;
}

tstore_status tsq_refresh(tsq *s, bool force)
{
    sqlite3_stmt *q = s->st[ST_DATA_VERSION];
    int rc = sqlite3_step(q);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    tsq_done(s, ST_DATA_VERSION);
    if (rc != SQLITE_ROW)
        return tsq_sqlerr(s, rc, "reading data_version");
    if (!force && v == s->data_version && s->current_key != 0)
        return TSTORE_OK;
    /* Another connection committed: a device may have been deleted, a new
     * data key made current, rows added. */
    tsq_devs_clear(s);
    s->next_row_known = false;
    bool found = false;
    int64_t cur = 0;
    tstore_status st = tsq_meta_get_int(s, "current_key", &cur, &found);
    if (st == TSTORE_OK && !found)
        st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: no current data key");
    if (st == TSTORE_OK)
        st = load_live(s);
    if (st == TSTORE_OK && !key_is_live(s, cur))
        st = tsq_fail(s, TSTORE_CORRUPT, "corrupt: the current data key %lld does not exist",
                      (long long)cur);
    if (st != TSTORE_OK)
        return st;
    s->current_key = cur;
    s->data_version = v;
    tsq_keys_prune(s);
    return TSTORE_OK;
}
