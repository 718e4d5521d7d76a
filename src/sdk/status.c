/*
 * status.c — the words for libmoat's status codes (moat_status_str).
 */
#include <moat/platform.h>

const char *moat_status_str(moat_status s)
{
    switch (s) {
    case MOAT_OK:
        return "ok";
    case MOAT_AGAIN:
        return "would block";
    case MOAT_ERR_ARG:
        return "invalid argument";
    case MOAT_ERR_SPACE:
        return "buffer too small";
    case MOAT_ERR_IO:
        return "I/O error";
    case MOAT_ERR_CLOSED:
        return "connection closed";
    case MOAT_ERR_PROTOCOL:
        return "protocol error";
    case MOAT_ERR_REFUSED:
        return "refused by the hub";
    case MOAT_ERR_CORRUPT:
        return "stored data corrupt";
    case MOAT_ERR_FULL:
        return "queue full";
    case MOAT_ERR_AUTH:
        return "authentication failed";
    case MOAT_ERR_TIMEOUT:
        return "timed out";
    case MOAT_ERR_STATE:
        return "not allowed in this state";
    }
    return "unknown status";
}
