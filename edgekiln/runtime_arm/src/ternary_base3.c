/*
 * Decoding base-3 packed ternary weights (EK_PACK_INT2_B3, ternary_base3.h).
 *
 * One table row per byte value: its five digits minus one, i.e. the five int8 weights, padded
 * to 8 bytes so the loop can copy a whole row with one 8-byte move and advance by 5 (the three
 * extra bytes are overwritten by the next row; the last rows copy exactly what is left).  The
 * table is built by the C preprocessor from the definition itself (no generated file to keep
 * in sync): EK_B3_ROW(v) is byte value v's row, the EK_B3_ROWSn macros list n rows from v on.
 * A decode is then one load, one table lookup and one copy per five weights, four bytes per loop
 * step (about 0.8 guest instructions per weight on aarch64).
 */
#include <string.h>

#include "ternary_base3.h"

#define EK_B3_ROW(v) {(int8_t)((v) % 3 - 1), (int8_t)((v) / 3 % 3 - 1), (int8_t)((v) / 9 % 3 - 1), \
                      (int8_t)((v) / 27 % 3 - 1), (int8_t)((v) / 81 % 3 - 1), 0, 0, 0}
#define EK_B3_ROWS3(v) EK_B3_ROW(v), EK_B3_ROW((v) + 1), EK_B3_ROW((v) + 2)
#define EK_B3_ROWS9(v) EK_B3_ROWS3(v), EK_B3_ROWS3((v) + 3), EK_B3_ROWS3((v) + 6)
#define EK_B3_ROWS27(v) EK_B3_ROWS9(v), EK_B3_ROWS9((v) + 9), EK_B3_ROWS9((v) + 18)
#define EK_B3_ROWS81(v) EK_B3_ROWS27(v), EK_B3_ROWS27((v) + 27), EK_B3_ROWS27((v) + 54)

/* rows 243..255 would be garbage, so they are not there: the loader rejects such bytes */
static const int8_t base3_rows[EK_BASE3_MAX_BYTE + 1][8] = {EK_B3_ROWS81(0), EK_B3_ROWS81(81), EK_B3_ROWS81(162)};

void ek_unpack_base3(const uint8_t *data, int64_t first, int64_t count, int8_t *dst) {
    if (count <= 0) return;
    const uint8_t *src = data + first / EK_BASE3_PER_BYTE;
    const int64_t skip = first % EK_BASE3_PER_BYTE;
    if (skip) { /* the tail of a partly wanted first byte */
        const int64_t take = EK_BASE3_PER_BYTE - skip < count ? EK_BASE3_PER_BYTE - skip : count;
        memcpy(dst, base3_rows[*src++] + skip, (size_t)take);
        dst += take;
        count -= take;
    }
    /* four bytes (20 values) per step: the last 8-byte copy ends at dst + 23 */
    for (; count >= 23; count -= 20, dst += 20, src += 4) {
        memcpy(dst, base3_rows[src[0]], 8);
        memcpy(dst + 5, base3_rows[src[1]], 8);
        memcpy(dst + 10, base3_rows[src[2]], 8);
        memcpy(dst + 15, base3_rows[src[3]], 8);
    }
    for (; count >= 8; count -= EK_BASE3_PER_BYTE, dst += EK_BASE3_PER_BYTE) memcpy(dst, base3_rows[*src++], 8);
    for (; count > 0; count -= EK_BASE3_PER_BYTE, dst += EK_BASE3_PER_BYTE)
        memcpy(dst, base3_rows[*src++], (size_t)(count < EK_BASE3_PER_BYTE ? count : EK_BASE3_PER_BYTE));
}

int64_t ek_base3_first_invalid(const uint8_t *data, size_t nbytes) {
    for (size_t i = 0; i < nbytes; i++)
        if (data[i] > EK_BASE3_MAX_BYTE) return (int64_t)i;
    return -1;
}
