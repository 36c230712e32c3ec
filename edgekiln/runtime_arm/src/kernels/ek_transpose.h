/* int8 matrix transpose (transpose_i8.c). */
#ifndef EK_TRANSPOSE_H
#define EK_TRANSPOSE_H

#include <stdint.h>

/* dst[c · dst_stride + r] = src[r · src_stride + c] for r < rows, c < cols (no overlap). */
void ek_transpose_i8(const int8_t *src, int64_t src_stride, int64_t rows, int64_t cols, int8_t *dst,
                     int64_t dst_stride);

#endif
