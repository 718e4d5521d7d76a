/*
 * trust.h — small helpers the trust part of the core (record.c, shaper.c,
 * command.c) shares: big-endian u64 on top of the codec's bounded reader and
 * counting writer, and the one check for a name that is a single topic level
 * (stream names, device ids, command names). Internal to libmoat.
 */
#ifndef MOAT_SDK_TRUST_H
#define MOAT_SDK_TRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reader.h"

static inline uint64_t trust_rd_u64(rd *r)
{
    uint64_t hi = rd_u32(r);
    return hi << 32 | rd_u32(r);
}

static inline void trust_wr_u64(wr *w, uint64_t v)
{
    wr_u32(w, (uint32_t)(v >> 32));
    wr_u32(w, (uint32_t)v);
}

/* 1..max bytes of printable ASCII (0x21..0x7e) other than '/', '+' and '#':
 * safe as one MQTT topic level, in a file name and in a log line. */
bool moat_trust_level_valid(const uint8_t *s, size_t len, size_t max);

#endif /* MOAT_SDK_TRUST_H */
