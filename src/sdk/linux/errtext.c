/*
 * errtext.c — error text for the Linux port (see errtext.h).
 */
#include "errtext.h"

#include <stdarg.h>
#include <stdio.h>

#include <openssl/err.h>

void errtext_put(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *errtext_ssl(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "no detail");
    ERR_clear_error();
    return buf;
}
