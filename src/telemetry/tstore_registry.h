/*
 * tstore_registry.h — retention policies from the registry's group
 * settings, as a tstore_policy_cb.
 *
 * A device's readings are kept for the smallest retention_days and the
 * smallest retention_max_mb (MiB, 1048576 bytes) set by any group it
 * belongs to; no setting means no limit. A device the registry no longer
 * knows is erased: its readings are personal data of a device that was
 * deleted (this also catches readings stored in the moment between a
 * `moatctl device delete` and the hub noticing it).
 *
 *     tstore_retention_run run = {0};
 *     while (!run.done)
 *         if (tstore_apply_retention(ts, tstore_registry_policy, reg, now_ms, 5000, &run))
 *             break;
 */
#ifndef MOAT_TELEMETRY_TSTORE_REGISTRY_H
#define MOAT_TELEMETRY_TSTORE_REGISTRY_H

#include "registry.h"
#include "tstore.h"

/* The group setting keys read here. */
#define TSTORE_SETTING_DAYS   "retention_days"
#define TSTORE_SETTING_MAX_MB "retention_max_mb"

/* ctx is a registry *. Registry errors (busy, corrupt) return TSTORE_IO, so
 * the device is skipped for this run, never erased on a failed lookup. */
tstore_status tstore_registry_policy(void *ctx, const char *device, tstore_retention_policy *out);

#endif /* MOAT_TELEMETRY_TSTORE_REGISTRY_H */
