/*
 * Which sparse micro-kernels run: the SIMD ones of the model's ISA when the CPU has them,
 * the portable ones for `--isa c` (so tests can compare the two) or on other CPUs.  The
 * aarch64 kernels need only baseline Advanced SIMD, so neon, dotprod and i8mm models all
 * take them.  Built with baseline flags.
 */
#include <string.h>

#include "ek_sparse.h"

void ek_select_spmm(const ek_model *m, ek_spmm_s16_fn *s16, ek_spmm_f32_fn *f32) {
    const char *isa = m->isa ? m->isa : "auto";
    *s16 = ek_spmm_s16_c;
    *f32 = ek_spmm_f32_c;
    if (strcmp(isa, "c") == 0) return;
    const unsigned features = ek_cpu_features();
#if defined(__aarch64__)
    if (features & EK_CPU_NEON) {
        *s16 = ek_spmm_s16_neon;
        *f32 = ek_spmm_f32_neon;
    }
#elif defined(__x86_64__)
    if (features & EK_CPU_AVX2) {
        *s16 = ek_spmm_s16_avx2;
        *f32 = ek_spmm_f32_avx2;
    }
#else
    (void)features;
#endif
}
