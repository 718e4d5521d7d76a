/*
 * policy.c — policy documents: the parser, the expansion of documents for one
 * principal into a policy_set, and the four decisions (connect, publish,
 * subscribe, receive).
 *
 * The work is split by when it runs. Parsing and building happen when the
 * registry changes: they validate everything, allocate everything, and may be
 * slow. The decisions run for every packet: they only walk the set's filters,
 * never allocate, and fail closed on any input they do not expect (a NULL
 * set, a topic or filter that is not valid).
 *
 * Variables are the dangerous part: a value spliced into a filter must never
 * widen it. So a variable must be a whole topic level (it cannot be glued to
 * other text and form a '$' prefix or a "$share/" with it), and a value is
 * refused if it holds '/', '+', '#', U+0000 or starts with '$' — anything
 * that would add levels, wildcards, or reach the server's '$' topics from a
 * first-level variable. A variable with no value (a device's ${service})
 * drops its statement: it matches nothing, whichever its effect.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "policy.h"
#include "utf8clip.h"

/* A line longer than this is refused (POLICY_ERR_LIMIT): a statement is two
 * keywords and a filter of at most POLICY_MAX_FILTER bytes, and a comment
 * has no reason to be longer. */
#define POLICY_MAX_LINE 4096u

/* Lets the compiler check format strings against their arguments. */
#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

/* Longest token quoted back in an error message. */
#define QUOTE_MAX 40

#define VAR_DEVICE      "${device}"
#define VAR_SERVICE     "${service}"
#define VAR_DEVICE_LEN  (sizeof(VAR_DEVICE) - 1)
#define VAR_SERVICE_LEN (sizeof(VAR_SERVICE) - 1)

#define SHARE_PREFIX     "$share/"
#define SHARE_PREFIX_LEN (sizeof(SHARE_PREFIX) - 1)

enum effect { EFFECT_ALLOW = 1, EFFECT_DENY = 2 };

/* One parsed statement. The filter is kept unexpanded, in the document's
 * filter buffer; the variable counts let the set builder size the expansion
 * without scanning the filter again. */
struct statement {
    size_t line;
    size_t filter_off;
    size_t filter_len; /* 0: no filter (connect) */
    uint16_t n_device; /* ${device} levels in the filter */
    uint16_t n_service;
    uint8_t effect;
    uint8_t actions; /* policy_action bits */
};

struct policy_doc {
    struct statement *stmts;
    size_t count;
    uint8_t *filters; /* every statement's filter, back to back */
};

/* One expanded filter of a set with the actions it applies to (connect
 * excluded: that is a flag of the set). */
struct set_entry {
    codec_bytes filter;
    uint8_t actions;
};

/* entries[0..ndeny) are deny statements, entries[ndeny..ndeny+nallow) allow
 * statements: the decisions scan the denies first and stop at the first
 * hit, which is how "deny wins" is kept. */
struct policy_set {
    struct set_entry *entries;
    size_t ndeny;
    size_t nallow;
    uint8_t *arena; /* the expanded filters */
    bool may_connect;
    unsigned refs; /* holders; the set never changes once built */
};

/* ---- small helpers ------------------------------------------------------ */

static bool bytes_is(codec_bytes b, const char *lit)
{
    size_t n = strlen(lit);
    return b.len == n && memcmp(b.ptr, lit, n) == 0;
}

static bool has_share_prefix(codec_bytes f)
{
    return f.len >= SHARE_PREFIX_LEN && memcmp(f.ptr, SHARE_PREFIX, SHARE_PREFIX_LEN) == 0;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* ---- errors ------------------------------------------------------------- */

struct parser {
    const uint8_t *text;
    struct statement *stmts; /* POLICY_MAX_STATEMENTS of them */
    size_t count;
    size_t filter_bytes; /* sum of filter_len so far */
    size_t line;         /* current line, from 1 */
    char *err;
    size_t errlen;
};

PRINTF_LIKE(3, 4)
static policy_status fail(struct parser *pr, policy_status st, const char *fmt, ...)
{
    if (pr->err == NULL || pr->errlen == 0)
        return st;
    int used = 0;
    if (pr->line > 0)
        used = snprintf(pr->err, pr->errlen, "line %zu: ", pr->line);
    if (used >= 0 && (size_t)used < pr->errlen) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(pr->err + used, pr->errlen - (size_t)used, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* How many bytes of a token to quote in a message: at most QUOTE_MAX, cut
 * before a UTF-8 continuation byte so the message stays valid UTF-8. */
static int quote_len(codec_bytes t)
{
    return (int)utf8_clip_len(t.ptr, t.len, QUOTE_MAX);
}

#define QUOTE(t) quote_len(t), (const char *)(t).ptr

/* ---- parser ------------------------------------------------------------- */

/* Checks one level of a filter template for variables. A level that holds
 * "${" must be exactly ${device} or ${service}: a variable glued to other
 * text could combine with it into something the author did not write. */
static policy_status check_level(struct parser *pr, codec_bytes lvl, struct statement *st)
{
    bool has_var = false;
    for (size_t i = 0; i + 1 < lvl.len; i++) {
        if (lvl.ptr[i] == '$' && lvl.ptr[i + 1] == '{') {
            has_var = true;
            break;
        }
    }
    if (!has_var)
        return POLICY_OK;
    if (bytes_is(lvl, VAR_DEVICE)) {
        st->n_device++;
        return POLICY_OK;
    }
    if (bytes_is(lvl, VAR_SERVICE)) {
        st->n_service++;
        return POLICY_OK;
    }
    /* "${name}" alone in its level: a misspelt or unknown variable. */
    const uint8_t *close = memchr(lvl.ptr, '}', lvl.len);
    if (lvl.ptr[0] == '$' && lvl.ptr[1] == '{' && close == lvl.ptr + lvl.len - 1)
        return fail(pr, POLICY_ERR_SYNTAX, "unknown variable '%.*s' (want ${device} or ${service})",
                    QUOTE(lvl));
    return fail(pr, POLICY_ERR_SYNTAX, "a variable must be a whole topic level: '%.*s'",
                QUOTE(lvl));
}

/* Validates a filter template: variables as whole levels, and the filter
 * valid once each variable stands for a plain level ("x"). A shared
 * subscription filter is refused: subscriptions are judged on their inner
 * filter, so a "$share/..." statement could only mislead its reader. */
static policy_status check_filter(struct parser *pr, codec_bytes f, struct statement *st)
{
    uint8_t placeholder[POLICY_MAX_FILTER];
    size_t n = 0;
    size_t start = 0;

    if (f.len > POLICY_MAX_FILTER)
        return fail(pr, POLICY_ERR_LIMIT, "topic filter longer than %u bytes", POLICY_MAX_FILTER);

    /* Each level is copied or replaced by "x", which is never longer than
     * the level, so the placeholder fits in POLICY_MAX_FILTER bytes. */
    for (size_t i = 0; i <= f.len; i++) {
        if (i < f.len && f.ptr[i] != '/')
            continue;
        codec_bytes lvl = {f.ptr + start, i - start};
        size_t before = (size_t)st->n_device + st->n_service;
        policy_status s = check_level(pr, lvl, st);
        if (s != POLICY_OK)
            return s;
        if ((size_t)st->n_device + st->n_service != before) {
            placeholder[n++] = 'x';
        } else {
            memcpy(placeholder + n, lvl.ptr, lvl.len);
            n += lvl.len;
        }
        if (i < f.len)
            placeholder[n++] = '/';
        start = i + 1;
    }

    codec_bytes ph = {placeholder, n};
    if (has_share_prefix(ph))
        return fail(pr, POLICY_ERR_SYNTAX,
                    "shared subscription filter '%.*s' in a policy (subscriptions are judged on "
                    "their inner filter: write that)",
                    QUOTE(f));
    if (codec_topic_filter_check(ph) != CODEC_OK)
        return fail(pr, POLICY_ERR_SYNTAX, "invalid topic filter '%.*s'", QUOTE(f));
    return POLICY_OK;
}

static const struct {
    const char *name;
    uint8_t actions;
} action_names[] = {
    {"connect", POLICY_CONNECT}, {"publish", POLICY_PUBLISH}, {"subscribe", POLICY_SUBSCRIBE},
    {"receive", POLICY_RECEIVE}, {"all", POLICY_ALL},
};

/* Splits a line into at most `max` whitespace-separated tokens; returns how
 * many there are, counting one past max when there are more. */
static size_t tokenize(codec_bytes line, codec_bytes *tok, size_t max)
{
    size_t count = 0;
    size_t i = 0;
    while (i < line.len) {
        while (i < line.len && is_ws(line.ptr[i]))
            i++;
        if (i == line.len)
            break;
        size_t start = i;
        while (i < line.len && !is_ws(line.ptr[i]))
            i++;
        if (count == max)
            return max + 1;
        tok[count].ptr = line.ptr + start;
        tok[count].len = i - start;
        count++;
    }
    return count;
}

/* Checks the bytes of a line before anything reads its tokens: valid UTF-8
 * and no control characters but tab (a stored policy is shown to operators,
 * and a stray CR or escape sequence would make it read differently). */
static policy_status check_line_bytes(struct parser *pr, codec_bytes line)
{
    for (size_t i = 0; i < line.len; i++) {
        uint8_t c = line.ptr[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F)
            return fail(pr, POLICY_ERR_SYNTAX, "control character 0x%02x", (unsigned)c);
    }
    if (!codec_utf8_valid(line))
        return fail(pr, POLICY_ERR_SYNTAX, "not valid UTF-8");
    return POLICY_OK;
}

static policy_status parse_line(struct parser *pr, codec_bytes line)
{
    /* CRLF line ends: the '\n' is gone already, drop the '\r'. */
    if (line.len > 0 && line.ptr[line.len - 1] == '\r')
        line.len--;
    if (line.len > POLICY_MAX_LINE)
        return fail(pr, POLICY_ERR_LIMIT, "longer than %u bytes", POLICY_MAX_LINE);
    policy_status s = check_line_bytes(pr, line);
    if (s != POLICY_OK)
        return s;

    /* A comment starts a line; elsewhere '#' is the multi-level wildcard. */
    size_t i = 0;
    while (i < line.len && is_ws(line.ptr[i]))
        i++;
    if (i == line.len || line.ptr[i] == '#')
        return POLICY_OK;

    codec_bytes tok[3];
    size_t ntok = tokenize(line, tok, 3);
    struct statement st = {.line = pr->line};

    if (bytes_is(tok[0], "allow"))
        st.effect = EFFECT_ALLOW;
    else if (bytes_is(tok[0], "deny"))
        st.effect = EFFECT_DENY;
    else
        return fail(pr, POLICY_ERR_SYNTAX, "unknown effect '%.*s' (want allow or deny)",
                    QUOTE(tok[0]));

    if (ntok < 2)
        return fail(pr, POLICY_ERR_SYNTAX, "missing action after '%.*s'", QUOTE(tok[0]));
    for (size_t a = 0; a < sizeof(action_names) / sizeof(action_names[0]); a++) {
        if (bytes_is(tok[1], action_names[a].name))
            st.actions = action_names[a].actions;
    }
    if (st.actions == 0)
        return fail(pr, POLICY_ERR_SYNTAX, "unknown action '%.*s'", QUOTE(tok[1]));

    if (st.actions == POLICY_CONNECT && ntok >= 3)
        return fail(pr, POLICY_ERR_SYNTAX, "connect takes no topic filter");
    if (ntok > 3)
        return fail(pr, POLICY_ERR_SYNTAX, "unexpected text after the topic filter");
    if (st.actions != POLICY_CONNECT) {
        if (ntok < 3)
            return fail(pr, POLICY_ERR_SYNTAX, "action '%.*s' needs a topic filter", QUOTE(tok[1]));
        s = check_filter(pr, tok[2], &st);
        if (s != POLICY_OK)
            return s;
        /* Statements keep offsets into the text; the filters are copied to
         * the document's own buffer once parsing has succeeded. */
        st.filter_off = (size_t)(tok[2].ptr - pr->text);
        st.filter_len = tok[2].len;
    }

    if (pr->count == POLICY_MAX_STATEMENTS)
        return fail(pr, POLICY_ERR_LIMIT, "more than %u statements", POLICY_MAX_STATEMENTS);
    pr->stmts[pr->count++] = st;
    pr->filter_bytes += st.filter_len;
    return POLICY_OK;
}

/* Copies the parsed statements and their filters into a new document. */
static policy_status make_doc(const struct parser *pr, policy_doc **out)
{
    policy_doc *doc = calloc(1, sizeof(*doc));
    if (doc == NULL)
        return POLICY_ERR_NOMEM;
    if (pr->count > 0) {
        doc->stmts = calloc(pr->count, sizeof(doc->stmts[0]));
        if (doc->stmts == NULL)
            goto nomem;
    }
    if (pr->filter_bytes > 0) {
        doc->filters = malloc(pr->filter_bytes);
        if (doc->filters == NULL)
            goto nomem;
    }
    size_t off = 0;
    for (size_t i = 0; i < pr->count; i++) {
        struct statement st = pr->stmts[i];
        if (st.filter_len > 0)
            memcpy(doc->filters + off, pr->text + st.filter_off, st.filter_len);
        st.filter_off = off;
        off += st.filter_len;
        doc->stmts[i] = st;
    }
    doc->count = pr->count;
    *out = doc;
    return POLICY_OK;

nomem:
    policy_doc_free(doc);
    return POLICY_ERR_NOMEM;
}

policy_status policy_parse(const char *text, size_t len, policy_doc **out, char *err, size_t errlen)
{
    struct statement stmts[POLICY_MAX_STATEMENTS];
    struct parser pr = {
        .text = (const uint8_t *)text, .stmts = stmts, .err = err, .errlen = errlen};

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&pr, POLICY_ERR_SYNTAX, "no place for the result");
    *out = NULL;
    if (text == NULL && len > 0)
        return fail(&pr, POLICY_ERR_SYNTAX, "no text");
    if (len > POLICY_MAX_DOCUMENT)
        return fail(&pr, POLICY_ERR_LIMIT, "document is %zu bytes, more than %u", len,
                    POLICY_MAX_DOCUMENT);

    size_t start = 0;
    while (start < len) {
        const uint8_t *nl = memchr(pr.text + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - pr.text) : len;
        codec_bytes line = {pr.text + start, end - start};
        pr.line++;
        policy_status s = parse_line(&pr, line);
        if (s != POLICY_OK)
            return s;
        start = end + 1;
    }
    pr.line = 0;
    return make_doc(&pr, out);
}

void policy_doc_free(policy_doc *doc)
{
    if (doc == NULL)
        return;
    free(doc->stmts);
    free(doc->filters);
    free(doc);
}

size_t policy_doc_count(const policy_doc *doc)
{
    return doc ? doc->count : 0;
}

/* ---- building a set ----------------------------------------------------- */

/* A variable value may only ever stand for one plain level. */
static policy_status check_value(codec_bytes v)
{
    if (v.len == 0)
        return POLICY_OK;
    if (v.ptr == NULL)
        return POLICY_ERR_SYNTAX;
    if (v.len > POLICY_MAX_FILTER)
        return POLICY_ERR_LIMIT;
    /* A leading '$' would let a first-level variable reach the server's '$'
     * topics, or spell "$share" and turn the filter into a shared one. */
    if (v.ptr[0] == '$')
        return POLICY_ERR_SYNTAX;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '/' || v.ptr[i] == '+' || v.ptr[i] == '#')
            return POLICY_ERR_SYNTAX;
    }
    /* Also refuses U+0000. */
    if (!codec_utf8_valid(v))
        return POLICY_ERR_SYNTAX;
    return POLICY_OK;
}

/* A statement that uses a variable without a value matches nothing. */
static bool statement_dropped(const struct statement *st, codec_bytes dev, codec_bytes svc)
{
    return (st->n_device > 0 && dev.len == 0) || (st->n_service > 0 && svc.len == 0);
}

/* Length of the filter once expanded. Values are at most POLICY_MAX_FILTER
 * bytes and a filter holds at most POLICY_MAX_FILTER / 9 variables, so this
 * cannot overflow. */
static size_t expanded_len(const struct statement *st, codec_bytes dev, codec_bytes svc)
{
    return st->filter_len - st->n_device * VAR_DEVICE_LEN - st->n_service * VAR_SERVICE_LEN +
           st->n_device * dev.len + st->n_service * svc.len;
}

/* Writes the expansion of the statement's filter at dst (expanded_len bytes)
 * and checks the result: with the values checked, it is valid whenever the
 * placeholder form was, but the check is cheap and this is where a mistake
 * would widen access. */
static policy_status expand(const policy_doc *doc, const struct statement *st, codec_bytes dev,
                            codec_bytes svc, uint8_t *dst, size_t *written)
{
    codec_bytes f = {doc->filters + st->filter_off, st->filter_len};
    size_t n = 0;
    size_t start = 0;

    for (size_t i = 0; i <= f.len; i++) {
        if (i < f.len && f.ptr[i] != '/')
            continue;
        codec_bytes lvl = {f.ptr + start, i - start};
        if (bytes_is(lvl, VAR_DEVICE))
            lvl = dev;
        else if (bytes_is(lvl, VAR_SERVICE))
            lvl = svc;
        if (lvl.len > 0)
            memcpy(dst + n, lvl.ptr, lvl.len);
        n += lvl.len;
        if (i < f.len)
            dst[n++] = '/';
        start = i + 1;
    }
    *written = n;

    codec_bytes out = {dst, n};
    if (has_share_prefix(out) || codec_topic_filter_check(out) != CODEC_OK)
        return POLICY_ERR_SYNTAX;
    return POLICY_OK;
}

/* First pass of the build: how many entries, denies and bytes. */
static policy_status measure(const policy_doc *const *docs, size_t ndocs, codec_bytes dev,
                             codec_bytes svc, size_t *nentries, size_t *ndeny, size_t *nbytes)
{
    for (size_t d = 0; d < ndocs; d++) {
        /* A missing document is a caller's mistake; refusing the build
         * makes the caller fall back to a deny-all set. */
        if (docs[d] == NULL)
            return POLICY_ERR_SYNTAX;
        for (size_t i = 0; i < docs[d]->count; i++) {
            const struct statement *st = &docs[d]->stmts[i];
            if (statement_dropped(st, dev, svc) || st->filter_len == 0)
                continue;
            size_t len = expanded_len(st, dev, svc);
            if (len > POLICY_MAX_FILTER)
                return POLICY_ERR_LIMIT;
            if (*nbytes > SIZE_MAX - len)
                return POLICY_ERR_NOMEM;
            *nbytes += len;
            (*nentries)++;
            if (st->effect == EFFECT_DENY)
                (*ndeny)++;
        }
    }
    return POLICY_OK;
}

policy_status policy_set_build(const policy_doc *const *docs, size_t ndocs, const policy_vars *vars,
                               policy_set **out)
{
    codec_bytes dev = {NULL, 0};
    codec_bytes svc = {NULL, 0};
    size_t nentries = 0;
    size_t ndeny = 0;
    size_t nbytes = 0;
    bool allow_connect = false;
    bool deny_connect = false;
    policy_set *set = NULL;
    policy_status st;

    if (out == NULL)
        return POLICY_ERR_SYNTAX;
    *out = NULL;
    if (docs == NULL && ndocs > 0)
        return POLICY_ERR_SYNTAX;
    if (vars != NULL) {
        dev = vars->device;
        svc = vars->service;
    }
    st = check_value(dev);
    if (st == POLICY_OK)
        st = check_value(svc);
    if (st == POLICY_OK)
        st = measure(docs, ndocs, dev, svc, &nentries, &ndeny, &nbytes);
    if (st != POLICY_OK)
        return st;

    set = calloc(1, sizeof(*set));
    if (set == NULL)
        return POLICY_ERR_NOMEM;
    set->refs = 1;
    st = POLICY_ERR_NOMEM;
    if (nentries > 0 && (set->entries = calloc(nentries, sizeof(set->entries[0]))) == NULL)
        goto out;
    if (nbytes > 0 && (set->arena = malloc(nbytes)) == NULL)
        goto out;
    set->ndeny = ndeny;
    set->nallow = nentries - ndeny;

    size_t di = 0;
    size_t ai = ndeny;
    size_t used = 0;
    for (size_t d = 0; d < ndocs; d++) {
        const policy_doc *doc = docs[d];
        for (size_t i = 0; i < doc->count; i++) {
            const struct statement *s = &doc->stmts[i];
            if (statement_dropped(s, dev, svc))
                continue;
            if (s->actions & POLICY_CONNECT) {
                if (s->effect == EFFECT_DENY)
                    deny_connect = true;
                else
                    allow_connect = true;
            }
            if (s->filter_len == 0)
                continue;
            size_t n = 0;
            st = expand(doc, s, dev, svc, set->arena + used, &n);
            if (st != POLICY_OK)
                goto out;
            struct set_entry *e = &set->entries[s->effect == EFFECT_DENY ? di++ : ai++];
            e->filter.ptr = set->arena + used;
            e->filter.len = n;
            e->actions = s->actions & (uint8_t)~POLICY_CONNECT;
            used += n;
        }
    }
    set->may_connect = allow_connect && !deny_connect;
    *out = set;
    set = NULL;
    st = POLICY_OK;

out:
    policy_set_free(set);
    return st;
}

policy_set *policy_set_ref(policy_set *set)
{
    if (set)
        set->refs++;
    return set;
}

void policy_set_free(policy_set *set)
{
    if (set == NULL || --set->refs > 0)
        return;
    free(set->entries);
    free(set->arena);
    free(set);
}

policy_status policy_set_deny_all(policy_set **out)
{
    if (out == NULL)
        return POLICY_ERR_SYNTAX;
    /* No entries and may_connect false: every decision says no. */
    *out = calloc(1, sizeof(**out));
    if (*out == NULL)
        return POLICY_ERR_NOMEM;
    (*out)->refs = 1;
    return POLICY_OK;
}

/* ---- decisions (hot path: no allocation) -------------------------------- */

bool policy_may_connect(const policy_set *set)
{
    return set != NULL && set->may_connect;
}

static bool may_topic(const policy_set *set, codec_bytes topic, uint8_t action)
{
    /* The hub validates topics on the way in; checking again here keeps a
     * wildcard or malformed name from ever being compared as a literal. */
    if (set == NULL || codec_topic_name_check(topic) != CODEC_OK)
        return false;
    const struct set_entry *e = set->entries;
    for (size_t i = 0; i < set->ndeny; i++) {
        if ((e[i].actions & action) && codec_topic_matches(e[i].filter, topic))
            return false;
    }
    for (size_t i = set->ndeny; i < set->ndeny + set->nallow; i++) {
        if ((e[i].actions & action) && codec_topic_matches(e[i].filter, topic))
            return true;
    }
    return false;
}

bool policy_may_publish(const policy_set *set, codec_bytes topic)
{
    return may_topic(set, topic, POLICY_PUBLISH);
}

bool policy_may_receive(const policy_set *set, codec_bytes topic)
{
    return may_topic(set, topic, POLICY_RECEIVE);
}

bool policy_may_subscribe(const policy_set *set, codec_bytes filter)
{
    if (set == NULL || codec_topic_filter_check(filter) != CODEC_OK)
        return false;
    /* What a shared subscription receives is what its inner filter matches;
     * the group name changes who gets each message, not which ones. */
    codec_bytes inner;
    if (codec_topic_shared_split(filter, NULL, &inner))
        filter = inner;

    const struct set_entry *e = set->entries;
    for (size_t i = 0; i < set->ndeny; i++) {
        if ((e[i].actions & POLICY_SUBSCRIBE) && policy_overlaps_valid(e[i].filter, filter))
            return false;
    }
    for (size_t i = set->ndeny; i < set->ndeny + set->nallow; i++) {
        if ((e[i].actions & POLICY_SUBSCRIBE) && policy_covers_valid(e[i].filter, filter))
            return true;
    }
    return false;
}
