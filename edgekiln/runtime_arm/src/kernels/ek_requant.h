/*
 * The integer primitives of compiler/integer_kernels.py and compiler/requantize.py, in C.
 *
 *   rshift_round(v, n) = (v + 2^(n-1)) >> n  for n >= 1, v for n = 0   (ties toward +inf)
 *   rescale(v, m, sh)  = rshift_round(int64(v) * m, 31 + sh)
 *   requantize(acc, m, sh, zp, lo, hi) = clamp(rescale(acc, m, sh) + zp, lo, hi)
 *
 * `>>` on a negative int64 is an arithmetic (flooring) shift on every compiler the runtime
 * targets (gcc, clang: implementation-defined in C99, documented as arithmetic), which is what
 * numpy's >> does.  Shifts are validated at load to keep 31 + sh within [1, 62].  Left shifts
 * of possibly negative values are written as multiplications (a negative << is undefined).
 */
#ifndef EK_REQUANT_H
#define EK_REQUANT_H

#include <stdint.h>

/* The sums wrap instead of overflowing (unsigned arithmetic): identical results for every
 * input the lowering can produce, and defined behaviour for a corrupted one. */
static inline int64_t ek_wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t ek_wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

static inline int64_t ek_rshift_round(int64_t v, int n) {
    return n > 0 ? ek_wrap_add(v, (int64_t)1 << (n - 1)) >> n : v;
}

static inline int64_t ek_rescale(int64_t v, int32_t m, int32_t sh) {
    return ek_rshift_round(ek_wrap_mul(v, m), 31 + sh);
}

static inline int8_t ek_requantize(int64_t acc, int32_t m, int32_t sh, int32_t zp, int32_t lo, int32_t hi) {
    int64_t q = ek_rescale(acc, m, sh) + zp;
    if (q < lo) q = lo;
    if (q > hi) q = hi;
    return (int8_t)q;
}

static inline int8_t ek_clamp_i8(int64_t q) { return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q); }

#endif /* EK_REQUANT_H */
