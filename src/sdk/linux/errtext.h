/*
 * errtext.h — how the Linux port's OpenSSL parts (transport, enrollment) fill
 * the caller's error text: one formatter, and OpenSSL's last error as words.
 */
#ifndef MOAT_SDK_LINUX_ERRTEXT_H
#define MOAT_SDK_LINUX_ERRTEXT_H

#include <stddef.h>

/* Format into err (errlen bytes, always terminated); nothing when err is
 * NULL or errlen is 0. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
void errtext_put(char *err, size_t errlen, const char *fmt, ...);

/* OpenSSL's most recent error as text in buf (or "no detail"), with the
 * error queue cleared so that it does not leak into the next report. */
const char *errtext_ssl(char *buf, size_t len);

#endif
