/*
 * The last, partial K block of the low-bit kernels.  Its packed weights are padded to the whole
 * block, but the activations end at k and must not be loaded past it (a row may end at the end
 * of a mapping).  The kernels run only the 16-weight slices that hold some of [p, k) (the
 * others would multiply padding by nothing) and load the one slice that straddles k with
 * ek_lowbit_tail16: row[p .. k) in its low bytes, zeros above, without touching a byte past
 * row[k - 1] (ek_gemm_load_tail8 does the at most two 8-byte halves).
 */
#ifndef EK_GEMM_LOWBIT_TAIL_H
#define EK_GEMM_LOWBIT_TAIL_H

#include <stdint.h>
#include <string.h>

#include "gemm_s8_common.h"

/* Bytes 0..15 of the result, as two little-endian halves: row[p + i] for p + i < k, else 0;
 * 0 < k - p < 16. */
static inline void ek_lowbit_tail16(const int8_t *row, int p, int k, uint64_t half[2]) {
    const int r = k - p;
    if (r > 8) {
        memcpy(&half[0], row + p, 8);
        half[1] = ek_gemm_load_tail8(row, k, r - 8);
    } else {
        half[0] = ek_gemm_load_tail8(row, k, r);
        half[1] = 0;
    }
}

/* 16-weight slices of the block starting at p that hold weights below k. */
static inline int ek_lowbit_live_slices(int p, int k, int per_block) {
    const int left = k - p < per_block ? k - p : per_block;
    return (left + 15) / 16;
}

#endif /* EK_GEMM_LOWBIT_TAIL_H */
