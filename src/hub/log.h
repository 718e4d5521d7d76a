/*
 * log.h — moatd's log: one line per event on stderr, human-readable by
 * default or JSON (one object per line) for log collectors.
 *
 * Every refusal is logged with the principal and the reason, so that an
 * operator can see who tried what. Secrets never reach the log: callers pass
 * identifiers and reasons, never keys, tokens or payloads.
 */
#ifndef MOAT_HUB_LOG_H
#define MOAT_HUB_LOG_H

#include <stdbool.h>

typedef enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_json(bool json);
void log_set_level(log_level min);

/* principal may be NULL. */
void log_msg(log_level level, const char *principal, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* MOAT_HUB_LOG_H */
