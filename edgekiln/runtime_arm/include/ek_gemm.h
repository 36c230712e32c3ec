/*
 * int8 GEMM microkernels and their run-time selection.
 *
 *   C[i*ldc + j] = sum_{p<k} (int32)A[i*lda + p] * (int32)B[j*ldb + p]   for i < m, j < n
 *
 * A holds one row of k activations per output pixel (im2col rows), B one row of k weights per
 * output channel, so every kernel is a dot product of two k-contiguous rows.  Accumulation is
 * exact int32 (no saturating instruction anywhere; exact for k <= 131071, where k * (-128)^2
 * still fits), every kernel handles any m, n, k >= 1 and any lda, ldb >= k, ldc >= n, and none
 * reads or writes a byte outside the rows it is given (A: (m-1)*lda + k bytes, B: (n-1)*ldb + k,
 * C: the m x n outputs only; the padding between rows is never touched).  No alignment is
 * required.  m, n or k <= 0 is a no-op.  The kernels are pure functions: thread-safe.
 *
 * Each ISA kernel is compiled only for its architecture, from its own file with its own flags:
 *   gemm_s8_ref.c      any C99 compiler
 *   gemm_s8_neon.c     aarch64  -march=armv8-a
 *   gemm_s8_dotprod.c  aarch64  -march=armv8.2-a+dotprod
 *   gemm_s8_i8mm.c     aarch64  -march=armv8.6-a+dotprod+i8mm (gcc: +i8mm alone is enough)
 *   gemm_s8_avx2.c     x86_64   -mavx2 -mfma
 *   cpu_features.c, gemm_s8_select.c   baseline flags (they must run on any CPU)
 * The selector only returns a kernel the CPU can run, so the binary runs everywhere.
 */
#ifndef EK_GEMM_H
#define EK_GEMM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ek_gemm_s8_fn)(int m, int n, int k, const int8_t *a, int lda, const int8_t *b,
                              int ldb, int32_t *c, int ldc);

/* Feature bits returned by ek_cpu_features(). */
#define EK_CPU_NEON (1u << 0)    /* aarch64 Advanced SIMD (HWCAP_ASIMD) */
#define EK_CPU_DOTPROD (1u << 1) /* aarch64 SDOT/UDOT (HWCAP_ASIMDDP) */
#define EK_CPU_I8MM (1u << 2)    /* aarch64 SMMLA/USMMLA (HWCAP2_I8MM) */
#define EK_CPU_AVX2 (1u << 3)    /* x86_64 AVX2 with OS-enabled ymm state */
#define EK_CPU_FMA (1u << 4)     /* x86_64 FMA3 with OS-enabled ymm state */

/* What this CPU (and OS) can run; 0 on an architecture the runtime has no SIMD path for. */
unsigned ek_cpu_features(void);

/*
 * Picks the int8 GEMM kernel.  force_isa: NULL or "auto" (the fastest the features allow),
 * or one of "c", "neon", "dotprod", "i8mm", "avx2".  Returns NULL when the forced ISA is not
 * built for this architecture, not in `features`, or unknown; *chosen_name (when chosen_name is
 * not NULL) is then a static message saying why, else the kernel's name ("c", "neon", ...).
 */
ek_gemm_s8_fn ek_select_gemm_s8(unsigned features, const char *force_isa, const char **chosen_name);

/* The kernels themselves; each exists only where its file compiles (see above). */
void ek_gemm_s8_ref(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                    int32_t *c, int ldc);
#if defined(__aarch64__)
void ek_gemm_s8_neon(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc);
void ek_gemm_s8_dotprod(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                        int32_t *c, int ldc);
void ek_gemm_s8_i8mm(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc);
#endif
#if defined(__x86_64__)
void ek_gemm_s8_avx2(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc);
#endif

#ifdef __cplusplus
}
#endif

#endif /* EK_GEMM_H */
