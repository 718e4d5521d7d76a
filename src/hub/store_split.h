/*
 * store_split.h — which store file each worker keeps, who owns a principal,
 * and moving sessions when the worker count changes (store_split.c).
 */
#ifndef MOAT_HUB_STORE_SPLIT_H
#define MOAT_HUB_STORE_SPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Workers (and store files) moatd supports. */
#define STORE_SPLIT_MAX 64u

/* DATA_DIR/hub.db for worker 0, DATA_DIR/hub-K.db for worker K. */
void store_split_path(char *out, size_t cap, const char *dir, unsigned worker);

/* The worker that owns a principal (device id or service name). */
unsigned store_split_owner(const uint8_t *principal, size_t len, unsigned nworkers);

/* Before the workers start: move every session to its owner's file and the
 * retained messages to worker 0's. *max_id gets the largest message id in
 * any file (the shared id counter starts above it); *moved the sessions
 * moved. False with err set when a file cannot be read or written. */
bool store_split(const char *dir, unsigned nworkers, uint64_t *max_id, size_t *moved, char *err,
                 size_t errlen);

#endif
