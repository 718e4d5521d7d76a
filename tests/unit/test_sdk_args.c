/*
 * test_sdk_args.c — the Linux port's command-line parsers: hub endpoints
 * and trusted command keys (src/sdk/linux/args.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include <moat/linux.h>

static void test_endpoints(void **state)
{
    (void)state;
    char host[16];
    uint16_t port = 0;
    assert_true(moat_linux_parse_endpoint("127.0.0.1:8883", host, sizeof(host), &port));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8883);
    assert_true(moat_linux_parse_endpoint("[::1]:1", host, sizeof(host), &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 1);
    assert_true(moat_linux_parse_endpoint("hub:65535", host, sizeof(host), &port));
    const char *bad[] = {"",
                         "hub",
                         ":8883",
                         "hub:",
                         "hub:0",
                         "hub:65536",
                         "hub:-1",
                         "hub:88a3",
                         "hub:123456",
                         "[]:80",
                         "averyveryverylonghostname:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(moat_linux_parse_endpoint(bad[i], host, sizeof(host), &port));
    assert_false(moat_linux_parse_endpoint(NULL, host, sizeof(host), &port));
}

static void test_keys(void **state)
{
    (void)state;
    uint8_t key[32];
    char hex[65];
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = "0123456789abcdef"[i % 16];
        hex[2 * i + 1] = "FEDCBA9876543210"[i % 16];
    }
    hex[64] = '\0';
    assert_true(moat_linux_parse_key_hex(hex, key));
    assert_int_equal(key[0], 0x0F);
    assert_int_equal(key[1], 0x1E);
    hex[10] = 'g';
    assert_false(moat_linux_parse_key_hex(hex, key));
    hex[10] = 'a';
    hex[63] = '\0';
    assert_false(moat_linux_parse_key_hex(hex, key)); /* 63 digits */
    assert_false(moat_linux_parse_key_hex("", key));
    assert_false(moat_linux_parse_key_hex(NULL, key));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
