/*
 * Picks the SIMD table of ek_simd.h for a model's ISA (compile with baseline flags).
 *
 * The model's ISA string is the GEMM selector's choice (ek_model_set_isa), which already
 * checked the CPU's feature bits: "c" means portable everywhere, an aarch64 ISA implies NEON,
 * "avx2", "avxvnni" and "avx512vnni" imply AVX2 (ek_isa_implies_avx2), and "avx512vnni" also
 * AVX-512 F/BW/VL (its table swaps in AVX-512 requantization).  So forcing `--isa c` times the
 * portable kernels in the same binary.
 */
#include <string.h>

#include "ek_simd.h"

#if defined(__x86_64__)
static const ek_simd_kernels avx2 = {"avx2", ek_depthwise_row_avx2, ek_qadd_avx2, ek_qmul_avx2,
                                     ek_requantize_column_avx2, ek_requantize_channels_avx2, ek_deinterleave2_avx2,
                                     ek_depthwise_channels_avx2, ek_lookup_avx2, ek_quantize_avx2};
/* AVX-512 (under --isa avx512vnni, whose selection checked F/BW/VL): the AVX2 table with the two
 * requantizing entries on 16 lanes (gemm/requantize_rows_vnni512.c) */
void ek_requantize_column_avx512(const int32_t *src, int64_t stride, int64_t n, int32_t add, const ek_rq *rq, int8_t *y);
void ek_requantize_channels_avx512(const int32_t *acc, const int32_t *add, const int32_t *m, const int32_t *shift,
                                   int64_t n, int32_t zp, int32_t lo, int32_t hi, int8_t *y);
static const ek_simd_kernels avx512 = {"avx512", ek_depthwise_row_avx2, ek_qadd_avx2, ek_qmul_avx2,
                                       ek_requantize_column_avx512, ek_requantize_channels_avx512, ek_deinterleave2_avx2,
                                       ek_depthwise_channels_avx2, ek_lookup_avx2, ek_quantize_avx2};
#endif
#if defined(__aarch64__)
static const ek_simd_kernels neon = {"neon", ek_depthwise_row_neon, ek_qadd_neon, ek_qmul_neon,
                                     ek_requantize_column_neon, ek_requantize_channels_neon, ek_deinterleave2_neon,
                                     ek_depthwise_channels_neon, ek_lookup_neon, ek_quantize_neon};
#endif

const ek_simd_kernels *ek_simd_for(const struct ek_model *m) {
    const char *isa = m->isa ? m->isa : "c";
#if defined(__x86_64__)
    if (strcmp(isa, "avx512vnni") == 0) return &avx512;
    if (ek_isa_implies_avx2(isa)) return &avx2; /* avx2, avxvnni */
#endif
#if defined(__aarch64__)
    if (strcmp(isa, "neon") == 0 || strcmp(isa, "dotprod") == 0 || strcmp(isa, "i8mm") == 0) return &neon;
#endif
    return NULL;
}
