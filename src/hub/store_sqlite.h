/*
 * store_sqlite.h — the broker's durable state (store.h) in one SQLite file.
 *
 * moatd opens one store per broker at start-up, hands it to broker_new in
 * broker_config.store, and closes it after broker_free. The file is created
 * with its schema when missing; its schema version (PRAGMA user_version) is
 * checked so that an older moatd never writes over a newer layout. The file
 * is in WAL mode with synchronous=FULL, so a transaction that commit()
 * reported as done survives a crash or a power loss: that is what lets the
 * broker acknowledge a QoS 1/2 PUBLISH right after the commit.
 *
 * A store handle is used by one thread (the broker's worker), like the
 * broker itself. Several handles may open the same file.
 */
#ifndef MOAT_HUB_STORE_SQLITE_H
#define MOAT_HUB_STORE_SQLITE_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

/* The schema version this build writes and reads. */
#define STORE_SQLITE_SCHEMA_VERSION 2

/*
 * Opens the store at path, creating the file and its tables when missing.
 *
 *   path    file name (":memory:" gives a store that lives as long as the
 *           handle, for tests)
 *   out     receives the store on success; untouched on failure
 *   err     receives a NUL-terminated reason on failure (may be NULL)
 *   errlen  size of err
 *
 * Returns false when the file cannot be opened or created, is not a moat
 * store, or has a schema version newer than STORE_SQLITE_SCHEMA_VERSION.
 *
 *   broker_store *st;
 *   char why[256];
 *   if (!store_sqlite_open("/var/lib/moat/hub.db", &st, why, sizeof why))
 *       die("store: %s", why);
 */
bool store_sqlite_open(const char *path, broker_store **out, char *err, size_t errlen);

/* Closes the store; a transaction still open is rolled back. NULL is fine. */
void store_sqlite_close(broker_store *s);

/*
 * Why the last operation that returned false (or the 0 of a failed
 * msg_max_id) failed, as a NUL-terminated string owned by the store; "" when
 * nothing failed yet. Bad stored data gives a message that starts with
 * "corrupt". Valid until the next call on the store.
 */
const char *store_sqlite_error(broker_store *s);

#endif /* MOAT_HUB_STORE_SQLITE_H */
