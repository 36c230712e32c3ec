/*
 * Chooses the low-bit (int4 / ternary) GEMM from the CPU feature bits, with the same ISA names,
 * preference order and refusal messages as the int8 selector (gemm_s8_select.c), so one
 * `--isa` picks the same path for every precision.  Compile with baseline flags.
 */
#include <string.h>

#include "ek_gemm.h"

typedef struct {
    const char *name;
    ek_gemm_lowbit_fn s4, t2; /* NULL: not built for this architecture */
    unsigned needs;
} lowbit_choice;

static const lowbit_choice choices[] = {
#if defined(__aarch64__)
    {"i8mm", ek_gemm_s4_i8mm, ek_gemm_t2_i8mm, EK_CPU_I8MM | EK_CPU_DOTPROD},
    {"dotprod", ek_gemm_s4_dotprod, ek_gemm_t2_dotprod, EK_CPU_DOTPROD},
    {"neon", ek_gemm_s4_neon, ek_gemm_t2_neon, EK_CPU_NEON},
#endif
#if defined(__x86_64__)
    {"avx2", ek_gemm_s4_avx2, ek_gemm_t2_avx2, EK_CPU_AVX2},
#endif
    {"c", ek_gemm_s4_ref, ek_gemm_t2_ref, 0},
};

#define N_CHOICES (sizeof choices / sizeof choices[0])

ek_gemm_lowbit_fn ek_select_gemm_lowbit(int bits, unsigned features, const char *force_isa,
                                        const char **chosen_name) {
    if (bits != 4 && bits != 2) {
        if (chosen_name) *chosen_name = "low-bit GEMMs exist for 4 (int4) and 2 (ternary) bits only";
        return 0;
    }
    /* The int8 selector owns the names and the refusal messages: ask it first. */
    const char *name = NULL;
    if (!ek_select_gemm_s8(features, force_isa, &name)) {
        if (chosen_name) *chosen_name = name;
        return 0;
    }
    /* the x86 VNNI names have no low-bit kernel of their own: they imply AVX2 */
    if (ek_isa_implies_avx2(name)) name = "avx2";
    for (unsigned i = 0; i < N_CHOICES; i++)
        if (strcmp(choices[i].name, name) == 0) {
            if (chosen_name) *chosen_name = name;
            return bits == 4 ? choices[i].s4 : choices[i].t2;
        }
    /* An ISA with an int8 GEMM but no low-bit one (armv7 NEON): the portable low-bit kernel, which
     * reads the same K-blocked layout.  Never NULL here: callers size their scratch for in-place
     * weights once the int8 selector accepted the ISA. */
    if (chosen_name) *chosen_name = "c";
    return bits == 4 ? ek_gemm_s4_ref : ek_gemm_t2_ref;
}
