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
 *   gemm_s8_neon.c     aarch64  -march=armv8-a; also 32-bit armv7 with NEON (-mfpu=neon-vfpv4)
 *   gemm_s8_dotprod.c  aarch64  -march=armv8.2-a+dotprod
 *   gemm_s8_i8mm.c     aarch64  -march=armv8.6-a+dotprod+i8mm (gcc: +i8mm alone is enough)
 *   gemm_s8_avx2.c     x86_64   -mavx2 -mfma
 *   gemm_s8_avxvnni.c  x86_64   -mavx2 -mfma -mavxvnni
 *   gemm_s8_vnni512.c  x86_64   -mavx512f -mavx512bw -mavx512vl -mavx512vnni
 *   gemm_s8_quads_vnni512.c, im2col_quads_vnni512.c, requantize_rows_vnni512.c   the same flags
 *   cpu_features.c, gemm_s8_select.c   baseline flags (they must run on any CPU)
 * and the int4 / ternary kernels (below) likewise: gemm_lowbit_ref.c and gemm_lowbit_select.c
 * with baseline flags, gemm_lowbit_{neon,neon_mask,dotprod,i8mm,avx2}.c with their ISA's flags;
 * the float kernels: gemm_f32_ref.c, gemm_f32_select.c and gemm_f32_neon.c with baseline flags,
 * gemm_f32_avx2.c with -mavx2 -mfma.
 * The selector only returns a kernel the CPU can run, so the binary runs everywhere.
 */
#ifndef EK_GEMM_H
#define EK_GEMM_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ek_gemm_s8_fn)(int m, int n, int k, const int8_t *a, int lda, const int8_t *b,
                              int ldb, int32_t *c, int ldc);

/* Feature bits returned by ek_cpu_features(). */
#define EK_CPU_NEON (1u << 0)    /* aarch64 Advanced SIMD (HWCAP_ASIMD); armv7 NEON (HWCAP_NEON) */

/* The int8 NEON GEMM is built for aarch64 and for armv7 compiled with NEON enabled. */
#if defined(__aarch64__) || (defined(__arm__) && defined(__ARM_NEON))
#define EK_GEMM_S8_NEON_BUILT 1
#endif
#define EK_CPU_DOTPROD (1u << 1) /* aarch64 SDOT/UDOT (HWCAP_ASIMDDP) */
#define EK_CPU_I8MM (1u << 2)    /* aarch64 SMMLA/USMMLA (HWCAP2_I8MM) */
#define EK_CPU_AVX2 (1u << 3)    /* x86_64 AVX2 with OS-enabled ymm state */
#define EK_CPU_FMA (1u << 4)     /* x86_64 FMA3 with OS-enabled ymm state */
#define EK_CPU_AVXVNNI (1u << 5)    /* x86_64 AVX-VNNI (VEX vpdpbusd on ymm), OS-enabled ymm state */
#define EK_CPU_AVX512VNNI (1u << 6) /* x86_64 AVX-512 F+BW+VL+VNNI with OS-enabled zmm and mask state */

/* The x86_64 ISA names whose kernels all imply AVX2: the other kernel families (low-bit and
 * float GEMMs, the SIMD table of the kernels) take their AVX2 code under any of them. */
static inline int ek_isa_implies_avx2(const char *name) {
    if (!name) return 0;
    return strcmp(name, "avx2") == 0 || strcmp(name, "avxvnni") == 0 || strcmp(name, "avx512vnni") == 0;
}

/* What this CPU (and OS) can run; 0 on an architecture the runtime has no SIMD path for. */
unsigned ek_cpu_features(void);

/*
 * Picks the int8 GEMM kernel.  force_isa: NULL or "auto" (the fastest the features allow),
 * or one of "c", "neon", "dotprod", "i8mm", "avx2", "avxvnni", "avx512vnni".  Returns NULL when the forced ISA is not
 * built for this architecture, not in `features`, or unknown; *chosen_name (when chosen_name is
 * not NULL) is then a static message saying why, else the kernel's name ("c", "neon", ...).
 */
ek_gemm_s8_fn ek_select_gemm_s8(unsigned features, const char *force_isa, const char **chosen_name);

/* The kernels themselves; each exists only where its file compiles (see above). */
void ek_gemm_s8_ref(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                    int32_t *c, int ldc);
#if defined(EK_GEMM_S8_NEON_BUILT)
void ek_gemm_s8_neon(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc);
#endif
#if defined(__aarch64__)
void ek_gemm_s8_dotprod(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                        int32_t *c, int ldc);
void ek_gemm_s8_i8mm(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc);
/* The i8mm kernel on pre-paired weights (below): b = pair 0 of the n rows, ldp = bytes per pair. */
void ek_gemm_s8_i8mm_paired(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldp,
                            int32_t *c, int ldc);
#endif

/*
 * Pre-paired int8 weights (EK_PACK_I8_PAIRS8), the layout the i8mm kernel's smmla operands take:
 * rows (output channels) in pairs (2q, 2q+1), each pair ceil(k / 8) chunks of 16 bytes, chunk c =
 * row 2q's k slice [8c, 8c+8) then row 2q+1's; zeros past k, and an odd last row paired with a
 * zero row.  Written by the compiler for targets with i8mm (weight_packing.py).
 */
static inline int64_t ek_pairs_pair_bytes(int64_t k) { return (k + 7) / 8 * 16; }
/* The i8mm kernels where they are built, else NULL (callers compare with the selected kernel). */
static inline ek_gemm_s8_fn ek_gemm_s8_i8mm_fn(void) {
#if defined(__aarch64__)
    return ek_gemm_s8_i8mm;
#else
    return 0;
#endif
}
static inline ek_gemm_s8_fn ek_gemm_s8_i8mm_paired_fn(void) {
#if defined(__aarch64__)
    return ek_gemm_s8_i8mm_paired;
#else
    return 0;
#endif
}
static inline int ek_pairs_weight(const int8_t *base, int64_t row, int64_t p, int64_t pair_bytes) {
    return base[(row / 2) * pair_bytes + p / 8 * 16 + (row % 2) * 8 + p % 8];
}
#if defined(__x86_64__)
void ek_gemm_s8_avx2(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc);
/* vpdpbusd kernels: unsigned x signed bytes, so A is shifted by +128 and 128·Σb taken off. */
void ek_gemm_s8_avxvnni(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                        int32_t *c, int ldc);
void ek_gemm_s8_vnni512(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                        int32_t *c, int ldc);
#endif

/*
 * k-quad packed activations, channel-major result (gemm_s8_quads_vnni512.c, AVX-512 VNNI): for an
 * NCHW convolution, whose im2col is naturally k-major and whose output rows are channels.
 *   ek_pack_quads_vnni512: one quad row from `taps` (1..4) k-major rows of m pixels (row t at
 *     rows + t * stride; no byte past pixel m is read): out[4i + t] = rows[t][i] ^ 0x80 for i < m,
 *     t < taps, then padding up to ek_quads_pixels(m) pixels; 4 * ek_quads_pixels(m) bytes.
 *   ek_gemm_s8_quads_vnni512: C[j*ldc + i] = Σ_p a[i][p]·B[j*ldb + p] for i < m, j < n, with `aq`
 *     ceil(k / 4) such quad rows back to back (row q = k values [4q, 4q+4)); exact int32.
 */
static inline int ek_quads_pixels(int m) { return (m + 15) / 16 * 16; }
/* An NCHW convolution's geometry, for building its im2col block as k-quads directly from the image
 * (ek_im2col_quads_vnni512): tap k = (c, ky, kx) of output pixel p = (oy, ox) reads input
 * (c, oy·sh − pt + ky·dh, ox·sw − pl + kx·dw), or zx outside the H x W plane. */
typedef struct {
    int64_t H, W, Wo, Cg, kh, kw, sh, sw, dh, dw, pt, pl;
    int8_t zx;
} ek_conv_geometry;

#if defined(__x86_64__)
void ek_pack_quads_vnni512(const int8_t *rows, int64_t stride, int taps, int m, uint8_t *out);
/* The im2col block of output pixels [p0, p0 + m) as quad rows (K = Cg·kh·kw, ceil(K / 4) rows of
 * 4·ek_quads_pixels(m) bytes), `planes` = the group's first input channel plane; reads only
 * in-bounds input bytes. */
void ek_im2col_quads_vnni512(const ek_conv_geometry *g, const int8_t *planes, int64_t p0, int m, uint8_t *aq);
/* The quad GEMM's epilogue (requantize_rows_vnni512.c): y[i] = clamp(rshift_round(int64(src[i] + add)·m, t)
 * + zp, lo, hi) for i < n, t in [1, 62], each src[i] + add fitting int32; ek_requant.h's rule exactly. */
void ek_requantize_row_vnni512(const int32_t *src, int64_t n, int32_t add, int32_t m, int32_t t, int32_t zp, int32_t lo,
                               int32_t hi, int8_t *y);
void ek_gemm_s8_quads_vnni512(int m, int n, int k, const uint8_t *aq, const int8_t *b, int ldb, int32_t *c,
                              int ldc);
#endif

/*
 * Low-bit weights: the same GEMM with B read straight from its packed, K-blocked layout (the
 * compiler writes it, backends/arm_cpu/weight_packing.py; EK_PACK_INT4_K32 / EK_PACK_INT2_K64
 * in ek_ops.h).  A row of k weights is ceil(k / per_block) blocks of EK_LOWBIT_BLOCK_BYTES:
 *
 *   int4    (bits 4, 32 weights per block): byte i holds w[32b + i] in its low nibble and
 *           w[32b + 16 + i] in its high nibble, two's complement;
 *   ternary (bits 2, 64 weights per block): bits 2s..2s+1 of byte i hold w[64b + 16s + i],
 *           two's complement (-1 = 0b11, 0 = 0b00, +1 = 0b01).
 *
 * So one 16-byte load and one or two shifts per 16 weights give the int8 lanes a 16-byte
 * activation slice multiplies (the weights are never copied out as int8).  Weights past k in a
 * row's last block are ignored (the kernels zero the activations there).  ldb is the row stride
 * in bytes (>= the blocks' bytes); A, C, m, n, k as for the int8 kernels; k <= 65536.
 */
#define EK_LOWBIT_BLOCK_BYTES 16

typedef void (*ek_gemm_lowbit_fn)(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b,
                                  int ldb, int32_t *c, int ldc);

/* Weights per 16-byte block (32 for bits 4, 64 for bits 2), and the bytes of a k-long row. */
static inline int ek_lowbit_per_block(int bits) { return 8 * EK_LOWBIT_BLOCK_BYTES / bits; }
static inline int64_t ek_lowbit_row_bytes(int bits, int64_t k) {
    const int per = ek_lowbit_per_block(bits);
    return (k + per - 1) / per * EK_LOWBIT_BLOCK_BYTES;
}

/* Weight p of a packed row (the layout's definition, for the portable kernels). */
static inline int ek_lowbit_weight(const uint8_t *row, int bits, int64_t p) {
    const int per = ek_lowbit_per_block(bits);
    const int64_t block = p / per;
    const int within = (int)(p % per);
    const int field = within / EK_LOWBIT_BLOCK_BYTES; /* which nibble / 2-bit field */
    const unsigned byte = row[block * EK_LOWBIT_BLOCK_BYTES + within % EK_LOWBIT_BLOCK_BYTES];
    const int v = (int)((byte >> (bits * field)) & ((1u << bits) - 1));
    return v >= 1 << (bits - 1) ? v - (1 << bits) : v;
}

/*
 * Picks the low-bit GEMM for `bits` (4: int4, 2: ternary) like ek_select_gemm_s8: the same
 * ISA names, the same refusals, NULL with *chosen_name saying why.
 */
ek_gemm_lowbit_fn ek_select_gemm_lowbit(int bits, unsigned features, const char *force_isa,
                                        const char **chosen_name);

void ek_gemm_s4_ref(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                    int32_t *c, int ldc);
void ek_gemm_t2_ref(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                    int32_t *c, int ldc);
#if defined(__aarch64__)
void ek_gemm_s4_neon(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                     int32_t *c, int ldc);
void ek_gemm_t2_neon(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                     int32_t *c, int ldc);
/* The multiply-free ternary variant, for measurement only (gemm_lowbit_neon_mask.c). */
void ek_gemm_t2_neon_mask(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                          int32_t *c, int ldc);
void ek_gemm_s4_dotprod(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                        int32_t *c, int ldc);
void ek_gemm_t2_dotprod(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                        int32_t *c, int ldc);
void ek_gemm_s4_i8mm(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                     int32_t *c, int ldc);
void ek_gemm_t2_i8mm(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                     int32_t *c, int ldc);
#endif
#if defined(__x86_64__)
void ek_gemm_s4_avx2(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                     int32_t *c, int ldc);
void ek_gemm_t2_avx2(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                     int32_t *c, int ldc);
#endif

/*
 * Float GEMM: C[i][j] = sum_p A[i][p] * B[p][j] (C overwritten), A row-major m x k (row stride
 * lda), B row-major k x n (row stride ldb), C m x n (ldc); m, n <= 0 is a no-op, k = 0 gives
 * zeros.  Portable (gemm_f32_ref.c), NEON (gemm_f32_neon.c, aarch64) and AVX2+FMA
 * (gemm_f32_avx2.c, -mavx2 -mfma); the SIMD ones sum each output as one fused multiply-add chain
 * in k order, so they differ from the portable one by rounding only.
 */
typedef void (*ek_sgemm_fn)(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                            int ldc);

/* The float GEMM for an ISA name as ek_select_gemm_s8 takes it (NULL / "auto" too); never NULL:
 * what the CPU cannot run falls back to the portable kernel. */
ek_sgemm_fn ek_select_sgemm(unsigned features, const char *isa);

void ek_sgemm_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc);
#if defined(__aarch64__)
void ek_sgemm_neon(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc);
#endif
#if defined(__x86_64__)
void ek_sgemm_avx2(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc);
#endif

#ifdef __cplusplus
}
#endif

#endif /* EK_GEMM_H */
