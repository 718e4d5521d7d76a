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

static void test_numbers(void **state)
{
    (void)state;
    unsigned long v = 7;
    assert_true(moat_linux_parse_ulong("0", 0, 10, &v));
    assert_int_equal(v, 0);
    assert_true(moat_linux_parse_ulong("65535", 0, 65535, &v));
    assert_int_equal(v, 65535);
    const char *bad[] = {
        "", "-1", "+1", " 1", "1 ", "1x", "0x10", "65536", "99999999999999999999999999", NULL};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        assert_false(moat_linux_parse_ulong(bad[i], 0, 65535, &v));
        assert_int_equal(v, 7); /* untouched on refusal */
    }
    assert_false(moat_linux_parse_ulong("3", 4, 10, &v));
}

static void test_hub_list(void **state)
{
    (void)state;
    moat_linux_hubs hubs = {0};
    assert_true(moat_linux_hubs_add(&hubs, "hub.example:8883"));
    assert_true(moat_linux_hubs_add(&hubs, "[::1]:1883"));
    assert_false(moat_linux_hubs_add(&hubs, "nohost"));
    assert_int_equal(hubs.count, 2);
    assert_string_equal(hubs.list[0].host, "hub.example");
    assert_int_equal(hubs.list[0].port, 8883);
    assert_string_equal(hubs.list[1].host, "::1");
    assert_ptr_equal(hubs.list[1].host, hubs.hosts[1]);
    while (hubs.count < MOAT_MAX_ENDPOINTS)
        assert_true(moat_linux_hubs_add(&hubs, "h:1"));
    assert_false(moat_linux_hubs_add(&hubs, "h:1")); /* full: refused, nothing written */
    assert_int_equal(hubs.count, MOAT_MAX_ENDPOINTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_hub_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
