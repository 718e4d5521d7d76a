/*
 * policies.c — a principal's policy set from the registry (policies.h).
 */
#include "policies.h"

#include <string.h>

#include "log.h"

typedef struct doc_list {
    policy_doc *docs[64];
    size_t n;
    bool failed;
    const char *principal;
} doc_list;

static int collect_doc(void *ctx, const char *name, const char *document, size_t len)
{
    doc_list *l = ctx;
    char err[256];
    if (l->n == sizeof(l->docs) / sizeof(l->docs[0])) {
        l->failed = true;
        return 1;
    }
    policy_doc *doc;
    if (policy_parse(document, len, &doc, err, sizeof(err)) != POLICY_OK) {
        /* Fail closed: a broken document makes the whole set deny-all. */
        log_msg(LOG_ERROR, l->principal, "policy '%s' does not parse (%s): denying all", name, err);
        l->failed = true;
        return 1;
    }
    l->docs[l->n++] = doc;
    return 0;
}

policy_set *hub_policies_for(registry *reg, const broker_principal *who)
{
    doc_list l = {.principal = who->id};
    policy_set *set = NULL;
    if (registry_policies_for(reg, who->id, collect_doc, &l) != REGISTRY_OK)
        l.failed = true;
    if (!l.failed) {
        codec_bytes id = {(const uint8_t *)who->id, strlen(who->id)};
        policy_vars vars = {.device = who->kind == BROKER_DEVICE ? id : (codec_bytes){0},
                            .service = who->kind == BROKER_SERVICE ? id : (codec_bytes){0}};
        if (policy_set_build((const policy_doc *const *)l.docs, l.n, &vars, &set) != POLICY_OK)
            set = NULL;
    }
    for (size_t i = 0; i < l.n; i++)
        policy_doc_free(l.docs[i]);
    return set;
}
