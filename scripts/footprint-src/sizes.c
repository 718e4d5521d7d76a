/*
 * sizes.c — one object of each caller-owned libmoat struct, for
 * scripts/footprint: compiled (never linked or run) for each target, the
 * size of every symbol read back with nm -S is that struct's sizeof on that
 * target, without running anything on the device.
 */
#include <moat/command.h>
#include <moat/moat.h>
#include <moat/queue.h>
#include <moat/record.h>
#include <moat/shaper.h>

moat_client footprint_moat_client;
moat_config footprint_moat_config;
moat_client_stats footprint_moat_client_stats;
moat_endpoint footprint_moat_endpoint;
moat_queue footprint_moat_queue;
moat_command_verifier footprint_moat_command_verifier;
moat_shaper footprint_moat_shaper;
moat_batch footprint_moat_batch;
moat_batch_iter footprint_moat_batch_iter;
