/*
 * Chooses the int8 GEMM kernel from the CPU feature bits (or a forced ISA, for tests and for
 * `--isa` style overrides); compile with baseline flags.
 *
 * Preference, fastest first: i8mm (32 MACs per smmla), dotprod (16 per sdot), neon (4 per
 * smull/sadalp), then on x86_64 avx512vnni (64 MACs per vpdpbusd on zmm), avxvnni (32 per
 * vpdpbusd on ymm), avx2 (16 per vpmaddwd + add), then the portable C kernel.  The i8mm kernel
 * also runs sdot on an odd last row, so it needs both bits (every i8mm CPU shipped has dotprod);
 * the VNNI kernels need the AVX2 bit too, because their ISA names also pick the AVX2 code of the
 * other kernel families (ek_isa_implies_avx2).
 */
#include <string.h>

#include "ek_gemm.h"

typedef struct {
    const char *name;
    ek_gemm_s8_fn fn;   /* NULL: not built for this architecture */
    unsigned needs;     /* EK_CPU_* bits the kernel executes */
    const char *refuse; /* why it cannot run when a needed bit is missing */
} gemm_choice;

static const gemm_choice choices[] = {
#if defined(__aarch64__)
    {"i8mm", ek_gemm_s8_i8mm, EK_CPU_I8MM | EK_CPU_DOTPROD,
     "i8mm refused: the CPU lacks FEAT_I8MM (smmla) or FEAT_DotProd (HWCAP2_I8MM/HWCAP_ASIMDDP)"},
    {"dotprod", ek_gemm_s8_dotprod, EK_CPU_DOTPROD,
     "dotprod refused: the CPU lacks FEAT_DotProd (sdot, HWCAP_ASIMDDP)"},
#else
    {"i8mm", 0, 0, "i8mm refused: not built (aarch64 only)"},
    {"dotprod", 0, 0, "dotprod refused: not built (aarch64 only)"},
#endif
#if defined(EK_GEMM_S8_NEON_BUILT)
    {"neon", ek_gemm_s8_neon, EK_CPU_NEON, "neon refused: the CPU lacks Advanced SIMD (HWCAP_ASIMD / HWCAP_NEON)"},
#else
    {"neon", 0, 0, "neon refused: not built (aarch64 only)"}, /* or armv7 built with NEON */
#endif
#if defined(__x86_64__)
    {"avx512vnni", ek_gemm_s8_vnni512, EK_CPU_AVX512VNNI | EK_CPU_AVX2,
     "avx512vnni refused: the CPU or OS lacks AVX-512 F/BW/VL/VNNI (or zmm state)"},
    {"avxvnni", ek_gemm_s8_avxvnni, EK_CPU_AVXVNNI | EK_CPU_AVX2, "avxvnni refused: the CPU or OS lacks AVX-VNNI"},
    {"avx2", ek_gemm_s8_avx2, EK_CPU_AVX2, "avx2 refused: the CPU or OS lacks AVX2"},
#else
    {"avx512vnni", 0, 0, "avx512vnni refused: not built (x86_64 only)"},
    {"avxvnni", 0, 0, "avxvnni refused: not built (x86_64 only)"},
    {"avx2", 0, 0, "avx2 refused: not built (x86_64 only)"},
#endif
    {"c", ek_gemm_s8_ref, 0, ""},
};

#define N_CHOICES (sizeof choices / sizeof choices[0])

ek_gemm_s8_fn ek_select_gemm_s8(unsigned features, const char *force_isa, const char **chosen_name) {
    const char *why = "unknown ISA (expected auto, c, neon, dotprod, i8mm, avx2, avxvnni or avx512vnni)";
    ek_gemm_s8_fn fn = 0;
    const int automatic = force_isa == 0 || strcmp(force_isa, "auto") == 0;
    for (unsigned i = 0; i < N_CHOICES; i++) {
        const gemm_choice *ch = &choices[i];
        if (!automatic && strcmp(force_isa, ch->name) != 0) continue;
        if (ch->fn && (features & ch->needs) == ch->needs) {
            fn = ch->fn;
            why = ch->name;
            break;
        }
        if (!automatic) {
            why = ch->refuse;
            break;
        }
    }
    if (chosen_name) *chosen_name = why;
    return fn;
}
