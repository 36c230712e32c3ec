/*
 * Test driver for the base-3 ternary decoder (src/ternary_base3.c): reads ceil(n / 5) packed
 * bytes from stdin and writes, for every first in [0, n) and count in [0, n - first], the
 * decoded values [first, first + count), in that order.  Each decode lands in a buffer with
 * canary bytes behind it; a decoder that writes past `count` exits 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ternary_base3.h"

int main(int argc, char **argv) {
    if (argc != 2) return 1;
    const long n = strtol(argv[1], NULL, 10);
    const size_t nbytes = (size_t)ek_base3_bytes((uint64_t)n);
    uint8_t *packed = malloc(nbytes + 1);
    int8_t *out = malloc((size_t)n + 16);
    int status = 0;
    if (!packed || !out || fread(packed, 1, nbytes, stdin) != nbytes) status = 1;
    else if (ek_base3_first_invalid(packed, nbytes) >= 0) status = 3;
    for (long first = 0; !status && first < n; first++)
        for (long count = 0; !status && count <= n - first; count++) {
            memset(out, 0x5A, (size_t)n + 16);
            ek_unpack_base3(packed, first, count, out);
            for (long i = count; i < n + 16; i++)
                if (out[i] != 0x5A) status = 2;
            fwrite(out, 1, (size_t)count, stdout);
        }
    free(packed);
    free(out);
    return status;
}
