/*
 * Helpers shared by the SIMD int8 GEMM kernels: loading a row's tail, and cache blocking.
 *
 * Tail: the kernels step through k in 16- or 8-byte vectors; the r = k % 8 bytes left over must not
 * be loaded as a full vector, because the row may end at the end of a mapping.  When k >= 8 the
 * 8 bytes ending at row[k-1] lie inside the row: load them and shift out the 8 - r bytes already
 * consumed, which also zero-fills the top (zero lanes add nothing to a dot product).  Only when
 * the whole row is shorter than 8 bytes is it gathered byte by byte.
 */
#ifndef EK_GEMM_S8_COMMON_H
#define EK_GEMM_S8_COMMON_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the int8 GEMM kernels assume a little-endian target (lane 0 = lowest address)"
#endif

/* row[k-r .. k-1] in bytes 0 .. r-1 of the result, zeros above; 1 <= r <= 7, k >= r. */
static inline uint64_t ek_gemm_load_tail8(const int8_t *row, int k, int r) {
    uint64_t v;
    if (k >= 8) {
        memcpy(&v, row + k - 8, 8);
        return v >> (8 * (8 - r));
    }
    v = 0;
    for (int t = 0; t < r; t++) v |= (uint64_t)(uint8_t)row[k - r + t] << (8 * t);
    return v;
}

/* Rows per cache block of A: about 128 KiB of A stays in L2 while every column tile of B
 * passes over it; a multiple of `mr`, at least `mr`. */
static inline int ek_gemm_block_rows(int k, int mr) {
    int rows = (int)(131072L / k);
    rows -= rows % mr;
    return rows < mr ? mr : rows;
}

#endif /* EK_GEMM_S8_COMMON_H */
