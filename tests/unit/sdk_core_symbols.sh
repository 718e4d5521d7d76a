#!/bin/sh
# sdk_core_symbols.sh ARCHIVE... — fail if the libmoat core (with the codec
# it links) needs anything from outside itself beyond what a bare-metal
# device has: memcpy, memset, memcmp, memmove, strlen (and the compiler's own
# helpers; the codec's reason tables also use memchr). No heap (malloc, free, ...), no stdio, no time, no errno: the
# core must stay allocation-free and portable (docs/sdk-porting.md).
# NM may name the nm to use (arm-none-eabi-nm for a cross build).
set -eu
nm=${NM:-nm}
[ $# -ge 1 ] || { echo "usage: $0 ARCHIVE..." >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for a in "$@"; do
    "$nm" --defined-only "$a" 2>/dev/null | awk 'NF == 3 { print $3 }'
done | sort -u > "$tmp/defined"
for a in "$@"; do
    "$nm" -u "$a" 2>/dev/null | awk 'NF >= 2 && $(NF-1) == "U" { print $NF }'
done | sort -u > "$tmp/undefined"
comm -23 "$tmp/undefined" "$tmp/defined" > "$tmp/external"
# Allowed from outside: the pure memory/string functions every libc has, compiler helpers
# (stack protector, PIC), and the instrumentation of sanitizer builds.
grep -Ev '^(memcpy|memset|memcmp|memmove|memchr|strlen|__stack_chk_fail|__stack_chk_guard|_GLOBAL_OFFSET_TABLE_|__memcpy_chk|__memset_chk|__memmove_chk)$|^__(asan|ubsan|sanitizer|sancov|lsan|msan)_' \
    "$tmp/external" > "$tmp/bad" || true
if [ -s "$tmp/bad" ]; then
    echo "the libmoat core references what it must not:" >&2
    sed 's/^/  /' "$tmp/bad" >&2
    exit 1
fi
echo "sdk core: external symbols are only $(tr '\n' ' ' < "$tmp/external")"
