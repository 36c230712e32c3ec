/*
 * Ternary weights stored base-3 (EK_PACK_INT2_B3, written by `--weight-layout compact`,
 * backends/arm_cpu/ternary_base3.py): five values per byte over the tensor's flat index,
 *
 *     byte b = sum_{i < 5} (w[5b + i] + 1) * 3^i,   w in {-1, 0, +1}, so byte b <= 242,
 *
 * ceil(count / 5) bytes, positions past the end hold value 0 (digit 1).  3^5 = 243 <= 256:
 * 1.6 bits per value instead of the flat packing's 2.
 */
#ifndef EK_TERNARY_BASE3_H
#define EK_TERNARY_BASE3_H

#include <stddef.h>
#include <stdint.h>

#define EK_BASE3_PER_BYTE 5
#define EK_BASE3_MAX_BYTE 242

/* Bytes of `count` base-3 packed values. */
static inline uint64_t ek_base3_bytes(uint64_t count) { return (count + EK_BASE3_PER_BYTE - 1) / EK_BASE3_PER_BYTE; }

/* Values [first, first + count) of a base-3 packed tensor as int8 (`first` need not be a
 * multiple of 5).  Every byte read must be <= 242 (the loader checks the whole tensor). */
void ek_unpack_base3(const uint8_t *data, int64_t first, int64_t count, int8_t *dst);

/* The index of the first byte above 242 in data[0, nbytes), or -1 when there is none. */
int64_t ek_base3_first_invalid(const uint8_t *data, size_t nbytes);

#endif
