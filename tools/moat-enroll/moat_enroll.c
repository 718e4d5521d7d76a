/*
 * moat_enroll.c — moat-enroll: enrollment on the device, a thin command
 * line over moat_linux_enroll_request / moat_linux_enroll_install
 * (include/moat/linux.h). The private key is made here and never leaves the
 * device; only the CSR goes to the operator, who runs
 * `moatctl device enroll --csr device.csr --out device.crt`.
 */
#include <stdio.h>
#include <string.h>

#include <moat/linux.h>

static void usage(FILE *f)
{
    fputs("usage: moat-enroll request --key FILE --csr FILE\n"
          "       moat-enroll install --cert FILE --key FILE --ca FILE --out FILE\n"
          "       moat-enroll id CERT\n"
          "\n"
          "request  make a new EC P-256 key (mode 0600; an existing key is never\n"
          "         replaced) and a certificate signing request for it. Give the CSR\n"
          "         to the hub operator: moatctl device enroll --csr FILE --out CRT\n"
          "install  check the certificate that came back (this key, the hub CA, a\n"
          "         client certificate), write it to --out, print the device id\n"
          "id       print the device id a certificate names\n",
          f);
}

/* --name VALUE pairs after the subcommand; false on anything else. */
static bool get_opts(int argc, char **argv, const char *const *names, const char **values, size_t n)
{
    for (int i = 2; i < argc; i += 2) {
        size_t k = 0;
        while (k < n && strcmp(argv[i], names[k]) != 0)
            k++;
        if (k == n || i + 1 >= argc)
            return false;
        values[k] = argv[i + 1];
    }
    for (size_t k = 0; k < n; k++) {
        if (!values[k])
            return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    char err[512], id[128];
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "request") == 0) {
        static const char *const names[] = {"--key", "--csr"};
        const char *v[2] = {NULL, NULL};
        if (!get_opts(argc, argv, names, v, 2)) {
            usage(stderr);
            return 2;
        }
        if (moat_linux_enroll_request(v[0], v[1], err, sizeof(err)) != MOAT_OK) {
            fprintf(stderr, "moat-enroll: %s\n", err);
            return 1;
        }
        printf("key %s, request %s\n", v[0], v[1]);
        return 0;
    }
    if (strcmp(argv[1], "install") == 0) {
        static const char *const names[] = {"--cert", "--key", "--ca", "--out"};
        const char *v[4] = {NULL, NULL, NULL, NULL};
        if (!get_opts(argc, argv, names, v, 4)) {
            usage(stderr);
            return 2;
        }
        if (moat_linux_enroll_install(v[0], v[1], v[2], v[3], id, sizeof(id), err, sizeof(err)) !=
            MOAT_OK) {
            fprintf(stderr, "moat-enroll: %s\n", err);
            return 1;
        }
        printf("%s\n", id);
        return 0;
    }
    if (strcmp(argv[1], "id") == 0 && argc == 3) {
        if (moat_linux_cert_device_id(argv[2], id, sizeof(id), err, sizeof(err)) != MOAT_OK) {
            fprintf(stderr, "moat-enroll: %s\n", err);
            return 1;
        }
        printf("%s\n", id);
        return 0;
    }
    usage(stderr);
    return 2;
}
