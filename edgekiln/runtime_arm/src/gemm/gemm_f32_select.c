/*
 * Chooses the float GEMM for the model's ISA name, so one `--isa` picks every kernel family:
 * the aarch64 names (neon, dotprod, i8mm) all take the NEON float kernel (float has no dotprod
 * or i8mm form), avx2 takes the AVX2+FMA kernel when the CPU also has FMA (else the portable
 * one), c the portable one.  Compile with baseline flags.
 */
#include <string.h>

#include "ek_gemm.h"

ek_sgemm_fn ek_select_sgemm(unsigned features, const char *isa) {
    const char *name = NULL;
    if (!ek_select_gemm_s8(features, isa, &name)) return ek_sgemm_ref; /* refused: portable */
#if defined(__aarch64__)
    if (strcmp(name, "c") != 0) return ek_sgemm_neon;
#endif
#if defined(__x86_64__)
    if (ek_isa_implies_avx2(name) && (features & EK_CPU_FMA)) return ek_sgemm_avx2; /* avx2 or a VNNI name */
#endif
    return ek_sgemm_ref;
}
