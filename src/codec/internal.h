/*
 * internal.h — pieces shared between the codec's own files (props.c,
 * decode.c, encode.c). Not for use outside src/codec.
 */
#ifndef MOAT_CODEC_INTERNAL_H
#define MOAT_CODEC_INTERNAL_H

#include "codec.h"
#include "reader.h"

/* Read a property block (VBI length, then the block) for a context. A block
 * running past the packet is CODEC_ERR_MALFORMED. */
codec_status props_read(rd *r, codec_prop_context ctx, codec_sender sender, codec_props *out);

/* Write a property block (VBI length, then the block). Returns CODEC_ERR_ARG
 * for a property not allowed in ctx or a value out of range. */
codec_status props_write(wr *w, const codec_props *p, codec_prop_context ctx);

/* May a packet of this type carry this reason code in this version, sent by
 * this side? (reasons.c) */
bool reason_valid(unsigned type, uint8_t version, codec_sender sender, uint8_t code);

/* The fixed-header flags a packet type must carry (PUBLISH: any, -1). */
int frame_required_flags(unsigned type);

#endif /* MOAT_CODEC_INTERNAL_H */
