/*
 * Picks the SIMD table of ek_simd.h for a model's ISA (compile with baseline flags).
 *
 * The model's ISA string is the GEMM selector's choice (ek_model_set_isa), which already
 * checked the CPU's feature bits: "c" means portable everywhere, an aarch64 ISA implies NEON,
 * "avx2" implies AVX2.  So forcing `--isa c` times the portable kernels in the same binary.
 */
#include <string.h>

#include "ek_simd.h"

#if defined(__x86_64__)
static const ek_simd_kernels avx2 = {"avx2", ek_depthwise_row_avx2, ek_qadd_avx2, ek_qmul_avx2,
                                     ek_requantize_column_avx2, ek_requantize_channels_avx2, ek_deinterleave2_avx2,
                                     ek_depthwise_channels_avx2};
#endif
#if defined(__aarch64__)
static const ek_simd_kernels neon = {"neon", ek_depthwise_row_neon, ek_qadd_neon, ek_qmul_neon,
                                     ek_requantize_column_neon, ek_requantize_channels_neon, ek_deinterleave2_neon,
                                     ek_depthwise_channels_neon};
#endif

const ek_simd_kernels *ek_simd_for(const struct ek_model *m) {
    const char *isa = m->isa ? m->isa : "c";
#if defined(__x86_64__)
    if (strcmp(isa, "avx2") == 0) return &avx2;
#endif
#if defined(__aarch64__)
    if (strcmp(isa, "neon") == 0 || strcmp(isa, "dotprod") == 0 || strcmp(isa, "i8mm") == 0) return &neon;
#endif
    return NULL;
}
