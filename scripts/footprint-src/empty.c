/*
 * empty.c — the baseline of scripts/footprint: a program that does nothing,
 * linked like device.c (same C library, start-up code and flags). The
 * difference between the two is what libmoat adds to a device.
 */
int main(void)
{
    return 0;
}
