/*
 * tstore_registry.c — the registry-backed retention policy (see
 * tstore_registry.h). Values are parsed strictly (digits only, in range);
 * one that is not is ignored rather than read as something else, since
 * moatctl refuses such values and another writer's typo must not shorten
 * what is kept.
 */
#include "tstore_registry.h"

#include <stdint.h>
#include <string.h>

#define MAX_DAYS 36500u
#define MAX_MB   16777216u

typedef struct smallest {
    uint64_t max;
    uint64_t value; /* 0: none seen */
} smallest;

static int take_smallest(void *ctx, const char *group, const char *key, const char *value)
{
    smallest *s = ctx;
    uint64_t v = 0;
    (void)group;
    (void)key;
    if (!*value)
        return 0;
    for (const char *p = value; *p; p++) {
        if (*p < '0' || *p > '9' || v > (s->max - (uint64_t)(*p - '0')) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v >= 1 && (s->value == 0 || v < s->value))
        s->value = v;
    return 0;
}

tstore_status tstore_registry_policy(void *ctx, const char *device, tstore_retention_policy *out)
{
    registry *reg = ctx;
    registry_principal p;
    memset(out, 0, sizeof *out);
    registry_status st = registry_principal_get(reg, device, REGISTRY_DEVICE, &p);
    if (st == REGISTRY_NOT_FOUND || st == REGISTRY_INVALID) {
        /* Gone (or never a device id the registry could hold). */
        out->erase = true;
        return TSTORE_OK;
    }
    if (st != REGISTRY_OK)
        return TSTORE_IO;
    smallest days = {MAX_DAYS, 0}, mb = {MAX_MB, 0};
    st = registry_principal_settings(reg, device, TSTORE_SETTING_DAYS, take_smallest, &days);
    if (st == REGISTRY_OK)
        st = registry_principal_settings(reg, device, TSTORE_SETTING_MAX_MB, take_smallest, &mb);
    if (st != REGISTRY_OK)
        return TSTORE_IO;
    out->max_age_ms = (int64_t)days.value * 86400000;
    out->max_bytes = mb.value * 1048576u;
    return TSTORE_OK;
}
