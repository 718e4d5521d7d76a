/*
 * fuzz_topic — UTF-8, topic name and filter syntax, shared subscriptions and
 * matching, each against a slow, obviously correct model written here.
 *
 * These functions decide who receives which message: a filter that matches
 * more than it should leaks messages, a name check that lets an overlong '/'
 * through defeats topic ACLs. The input is split in two strings: the first
 * byte, modulo the remaining length + 1, is the length of the first string
 * (U+0000 cannot serve as a separator, since it is itself something
 * codec_utf8_valid must refuse). Each string goes into its own exact-size heap
 * block so that a read past either end is an AddressSanitizer report. Checked:
 *   - codec_utf8_valid agrees with a code-point decoder (RFC 3629, no
 *     surrogates, nothing above U+10FFFF, no U+0000) on both strings, on the
 *     whole input and on the whole input from offsets 1..7 (its word-at-a-time
 *     path depends on alignment and length);
 *   - codec_topic_name_check and codec_topic_filter_check agree with models of
 *     MQTT 5 4.7.1 / 4.7.3 / 4.8.2, and codec_topic_shared_split with the
 *     split the model makes; codec_topic_levels counts '/' + 1;
 *   - a valid name is a valid filter that matches itself, except a name that
 *     starts with "$share/": it is a legal topic name (nothing in MQTT reserves
 *     it for names), but as a filter it means a shared subscription -- either
 *     refused ("$share/x" has no filter part) or standing for its inner filter,
 *     which is not the name -- so neither half of the rule holds for it;
 *   - a valid, non-shared filter without wildcards matches exactly the topic
 *     with the same bytes (whatever the topic holds);
 *   - "#" matches every valid name not starting with '$', and "+" those of
 *     them with one level; nothing matches an empty topic or filter;
 *   - for a valid non-shared filter and a valid name, codec_topic_matches
 *     agrees with a level-by-level model, in both directions of the split.
 */
#include "fuzz_common.h"

#define SHARE     "$share/"
#define SHARE_LEN (sizeof(SHARE) - 1)

/* ---- models ----------------------------------------------------------- */

static bool model_utf8(codec_bytes s)
{
    size_t i = 0;
    while (i < s.len) {
        uint32_t c = s.ptr[i];
        size_t len;
        uint32_t min;
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            c &= 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            c &= 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            c &= 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        if (s.len - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s.ptr[i + k] & 0xC0) != 0x80)
                return false;
            c = c << 6 | (s.ptr[i + k] & 0x3Fu);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

static bool has_byte(codec_bytes s, uint8_t b)
{
    return s.len > 0 && memchr(s.ptr, b, s.len) != NULL;
}

static bool has_wildcard(codec_bytes s)
{
    return has_byte(s, '+') || has_byte(s, '#');
}

static bool starts_share(codec_bytes s)
{
    return s.len >= SHARE_LEN && memcmp(s.ptr, SHARE, SHARE_LEN) == 0;
}

static bool is_lit(codec_bytes s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* Levels of a name or filter, left to right; "" has one empty level. */
typedef struct levels {
    codec_bytes s;
    size_t pos;
    bool done;
} levels;

static levels levels_of(codec_bytes s)
{
    levels it = {s, 0, false};
    return it;
}

static bool level_next(levels *it, codec_bytes *out)
{
    if (it->done)
        return false;
    size_t end = it->pos;
    while (end < it->s.len && it->s.ptr[end] != '/')
        end++;
    out->ptr = it->s.ptr + it->pos;
    out->len = end - it->pos;
    if (end == it->s.len)
        it->done = true;
    else
        it->pos = end + 1;
    return true;
}

static bool model_name_ok(codec_bytes s)
{
    return s.len >= 1 && s.len <= CODEC_MAX_STRING && !has_wildcard(s) && model_utf8(s);
}

/* "$share/NAME/inner": NAME non-empty without '+' or '#' (nor '/': it ends
 * at the first one), inner non-empty. */
static bool model_share_split(codec_bytes f, codec_bytes *name, codec_bytes *inner)
{
    if (!starts_share(f))
        return false;
    codec_bytes rest = {f.ptr + SHARE_LEN, f.len - SHARE_LEN};
    const uint8_t *slash = rest.len ? memchr(rest.ptr, '/', rest.len) : NULL;
    if (slash == NULL)
        return false;
    name->ptr = rest.ptr;
    name->len = (size_t)(slash - rest.ptr);
    inner->ptr = slash + 1;
    inner->len = rest.len - name->len - 1;
    return name->len > 0 && !has_wildcard(*name) && inner->len > 0;
}

/* '+' and '#' only as whole levels, '#' only as the last one. */
static bool model_wildcards_ok(codec_bytes f)
{
    levels it = levels_of(f);
    codec_bytes level;
    while (level_next(&it, &level)) {
        if (!has_wildcard(level))
            continue;
        if (is_lit(level, "+"))
            continue;
        if (is_lit(level, "#") && it.done)
            continue;
        return false;
    }
    return true;
}

static bool model_filter_ok(codec_bytes f)
{
    if (f.len < 1 || f.len > CODEC_MAX_STRING || !model_utf8(f))
        return false;
    codec_bytes plain = f;
    codec_bytes name;
    if (starts_share(f) && !model_share_split(f, &name, &plain))
        return false;
    return model_wildcards_ok(plain);
}

/* A valid non-shared filter against a valid name (MQTT 5 4.7). */
static bool model_matches(codec_bytes f, codec_bytes t)
{
    if (t.ptr[0] == '$' && (f.ptr[0] == '+' || f.ptr[0] == '#'))
        return false;
    levels fi = levels_of(f);
    levels ti = levels_of(t);
    for (;;) {
        codec_bytes fl;
        codec_bytes tl;
        bool more_f = level_next(&fi, &fl);
        bool more_t = level_next(&ti, &tl);
        if (!more_f)
            return !more_t;
        if (is_lit(fl, "#"))
            return true; /* also the parent level: "a/#" matches "a" */
        if (!more_t)
            return false;
        if (is_lit(fl, "+"))
            continue;
        if (!fuzz_bytes_eq(fl, tl))
            return false;
    }
}

static size_t model_levels(codec_bytes s)
{
    if (s.len == 0)
        return 0;
    size_t n = 1;
    for (size_t i = 0; i < s.len; i++)
        n += s.ptr[i] == '/';
    return n;
}

/* ---- checks ----------------------------------------------------------- */

static void check_utf8(codec_bytes s)
{
    FUZZ_CHECK(codec_utf8_valid(s) == model_utf8(s));
}

/* Everything about one string on its own. */
static void check_string(codec_bytes s)
{
    check_utf8(s);
    bool name_ok = codec_topic_name_check(s) == CODEC_OK;
    bool filter_ok = codec_topic_filter_check(s) == CODEC_OK;
    FUZZ_CHECK(name_ok == model_name_ok(s));
    FUZZ_CHECK(filter_ok == model_filter_ok(s));
    FUZZ_CHECK(codec_topic_levels(s) == model_levels(s));

    codec_bytes name = {(const uint8_t *)"x", 1};
    codec_bytes inner = {(const uint8_t *)"x", 1};
    bool shared = codec_topic_shared_split(s, &name, &inner);
    if (filter_ok) {
        FUZZ_CHECK(shared == starts_share(s));
    }
    if (shared) {
        codec_bytes mname;
        codec_bytes minner;
        FUZZ_CHECK(model_share_split(s, &mname, &minner));
        FUZZ_CHECK(name.ptr == mname.ptr && name.len == mname.len);
        FUZZ_CHECK(inner.ptr == minner.ptr && inner.len == minner.len);
        /* The inner filter stands alone, unless it is itself "$share/..."
         * (then it is a literal filter of a shared subscription). */
        if (filter_ok && !starts_share(inner))
            FUZZ_CHECK(codec_topic_filter_check(inner) == CODEC_OK);
    } else {
        FUZZ_CHECK(name.len == 0 && inner.len == 0);
    }

    if (name_ok && !starts_share(s)) {
        FUZZ_CHECK(filter_ok);
        FUZZ_CHECK(codec_topic_matches(s, s));
    }
    if (name_ok) {
        bool dollar = s.ptr[0] == '$';
        FUZZ_CHECK(codec_topic_matches(CODEC_LIT("#"), s) == !dollar);
        FUZZ_CHECK(codec_topic_matches(CODEC_LIT("+"), s) == (!dollar && !has_byte(s, '/')));
    }
    if (s.len == 0) {
        FUZZ_CHECK(!codec_topic_matches(s, CODEC_LIT("a")));
        FUZZ_CHECK(!codec_topic_matches(CODEC_LIT("#"), s));
    }
}

/* f used as a filter against t used as a topic. */
static void check_pair(codec_bytes f, codec_bytes t)
{
    bool m = codec_topic_matches(f, t);
    if (f.len == 0 || t.len == 0)
        FUZZ_CHECK(!m);
    if (codec_topic_filter_check(f) != CODEC_OK || starts_share(f))
        return;
    if (!has_wildcard(f))
        FUZZ_CHECK(m == fuzz_bytes_eq(f, t));
    if (codec_topic_name_check(t) == CODEC_OK)
        FUZZ_CHECK(m == model_matches(f, t));
}

static uint8_t *copy_of(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    FUZZ_CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    size_t split = data[0] % (n + 1);

    uint8_t *whole = copy_of(rest, n);
    uint8_t *first = copy_of(rest, split);
    uint8_t *second = copy_of(rest + split, n - split);
    codec_bytes a = {first, split};
    codec_bytes b = {second, n - split};

    for (size_t off = 0; off < 8 && off <= n; off++) {
        codec_bytes w = {whole + off, n - off};
        check_utf8(w);
    }
    check_string(a);
    check_string(b);
    check_pair(a, b);
    check_pair(b, a);

    free(second);
    free(first);
    free(whole);
    return 0;
}
