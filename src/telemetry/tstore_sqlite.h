/*
 * tstore_sqlite.h — the embedded telemetry store: DATA_DIR/telemetry.db.
 *
 * The file is in WAL mode with synchronous=FULL (a commit that returned is
 * on disk, so the hub may acknowledge), secure_delete on (deleted readings
 * are overwritten, not just unlinked), foreign keys enforced, and the schema
 * version checked (an older program refuses a newer file). It is created
 * mode 0600. The master key is read from DATA_DIR/master.key (made by
 * moatctl init) only when a data key must be unwrapped or re-wrapped.
 */
#ifndef MOAT_TELEMETRY_TSTORE_SQLITE_H
#define MOAT_TELEMETRY_TSTORE_SQLITE_H

#include <stddef.h>

#include "tstore.h"

#define TSTORE_SQLITE_SCHEMA_VERSION 1
#define TSTORE_SQLITE_FILE           "telemetry.db"
#define TSTORE_MASTER_FILE           "master.key"

enum {
    TSTORE_OPEN_CREATE = 1 /* create telemetry.db (and its first data key) if missing */
};

/*
 * Open the telemetry store of the data directory dir.
 *
 *   dir     the hub's data directory (holds master.key)
 *   flags   TSTORE_OPEN_CREATE or 0 (then a missing file is TSTORE_NOT_FOUND)
 *   out     receives the store; NULL on failure
 *   err     one line on failure: "master.key is not the key of ..." etc.
 *
 * Returns TSTORE_OK, TSTORE_NOT_FOUND, TSTORE_KEY (master key missing, wrong
 * or too open), TSTORE_VERSION, TSTORE_CORRUPT, TSTORE_IO, ...
 *
 *     tstore *ts;
 *     char why[384];
 *     if (tstore_sqlite_open("/var/lib/moat", TSTORE_OPEN_CREATE, &ts, why, sizeof why))
 *         die("telemetry: %s", why);
 *     ...
 *     tstore_close(ts);
 */
tstore_status tstore_sqlite_open(const char *dir, int flags, tstore **out, char *err,
                                 size_t errlen);

#endif /* MOAT_TELEMETRY_TSTORE_SQLITE_H */
