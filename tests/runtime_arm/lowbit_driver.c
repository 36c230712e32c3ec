/*
 * Test and benchmark driver for the int4 / ternary GEMMs (ek_gemm.h, "Low-bit weights"), run
 * natively on x86_64 and under qemu-aarch64 by tests/runtime_arm/test_lowbit_kernels.py and
 * benchmarks/lowbit_gemm.py.  BITS is 4 (int4), 2 (ternary), 8 (the int8 kernels, for
 * comparison in the benchmark) or 32 (the float GEMM, ek_sgemm_*: A m x k and B k x n float32).
 *
 *   lowbit_driver selftest ISA|all [seed]   every low-bit kernel the CPU runs (and the portable
 *                                           one) vs int8 products of the same weights, on random
 *                                           and tail shapes, operands in guard-paged buffers
 *   lowbit_driver gemm ISA BITS m n k       A (m*k int8) then B (n rows of packed bytes, as
 *                                           backends/arm_cpu/weight_packing.py writes them)
 *                                           on stdin -> C int32 on stdout
 *   lowbit_driver bench ISA BITS m n k reps   best ns of reps timed calls
 *   lowbit_driver repeat ISA BITS m n k reps  reps untimed calls (instruction counting)
 *
 * The packer here is written from the layout's description in ek_gemm.h, independently of the
 * runtime's ek_lowbit_weight, and the expected C comes from plain int32 products of the int8
 * weights, so a layout mistake on either side shows up.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ek_gemm.h"

#define DRIVER_RNG_SEED 0x2545F4914F6CDD1Dull
#include "driver_support.h"

static const char *const isa_names[] = {"c", "neon", "dotprod", "i8mm", "avx2", "neon-mask", "i8mm-paired"};
#define N_ISAS (sizeof isa_names / sizeof isa_names[0])

/* ---- the layouts, written from their descriptions ---- */
static int per_block(int bits) { return bits == 4 ? 32 : 64; }
static int row_bytes(int bits, int k) { return (k + per_block(bits) - 1) / per_block(bits) * 16; }

/* bits 8 in the selftest: int8 weights pre-paired for i8mm (EK_PACK_I8_PAIRS8), bytes per pair. */
static int pair_bytes(int k) { return (k + 7) / 8 * 16; }

/* Rows 2q, 2q+1 (row1 NULL: zeros) into one pair: chunk c = row0[8c, 8c+8) then row1's, zeros past k. */
static void pack_pair(const int8_t *row0, const int8_t *row1, int k, int8_t *out) {
    memset(out, 0, (size_t)pair_bytes(k));
    for (int p = 0; p < k; p++) {
        out[p / 8 * 16 + p % 8] = row0[p];
        out[p / 8 * 16 + 8 + p % 8] = row1 ? row1[p] : 0;
    }
}

/* One row of k weights into its packed blocks; padding fields get `junk` codes (kernels must
 * ignore them). */
static void pack_row(int bits, const int8_t *w, int k, uint8_t *out, int junk) {
    const int bytes = row_bytes(bits, k), per = per_block(bits);
    memset(out, 0, (size_t)bytes);
    for (int p = 0; p < bytes / 16 * per; p++) {
        const int block = p / per, within = p % per, field = within / 16, byte = within % 16;
        const unsigned code = p < k ? (unsigned)w[p] & ((1u << bits) - 1) : (unsigned)(junk ? rng() : 0) & ((1u << bits) - 1);
        out[block * 16 + byte] |= (uint8_t)(code << (bits * field));
    }
}

static int8_t draw_act(int fill);

static int8_t draw_weight(int bits, int fill) {
    if (bits == 8) return draw_act(fill);
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    if (bits == 2) return (int8_t)rng_int(-1, 1); /* ternary: the code -2 is never written */
    if (fill == 1) return (int8_t)((rng() & 1) ? hi : lo);
    if (fill == 2) return (int8_t)lo;
    return (int8_t)rng_int(lo, hi);
}

static int8_t draw_act(int fill) {
    if (fill == 1) return (rng() & 1) ? 127 : -128;
    if (fill == 2) return -128;
    return (int8_t)(rng() & 0xff);
}

/* "neon-mask": the multiply-free ternary kernel, which the selector never returns. */
static ek_gemm_lowbit_fn pick(const char *isa, int bits, const char **why) {
    if (strcmp(isa, "i8mm-paired") == 0) { /* int8 weights pre-paired (bits 8), same signature */
#if defined(__aarch64__)
        if (bits == 8 && (ek_cpu_features() & EK_CPU_I8MM)) return (ek_gemm_lowbit_fn)(void (*)(void))ek_gemm_s8_i8mm_paired;
#endif
        *why = "i8mm-paired: int8 weights on an i8mm CPU only";
        return 0;
    }
    if (strcmp(isa, "neon-mask") == 0) {
#if defined(__aarch64__)
        if (bits == 2) return ek_gemm_t2_neon_mask;
#endif
        *why = "neon-mask: the multiply-free kernel is ternary and aarch64 only";
        return 0;
    }
    return ek_select_gemm_lowbit(bits, ek_cpu_features(), isa, why);
}

static int run_case(ek_gemm_lowbit_fn fn, const char *isa, int bits, int m, int n, int k, int lda, int ldb,
                    int ldc, int fill, int guard_after) {
    const size_t a_bytes = (size_t)(m - 1) * lda + k;
    const size_t b_bytes = bits == 8 ? (size_t)((n + 1) / 2) * ldb : (size_t)(n - 1) * ldb + row_bytes(bits, k);
    const size_t c_elems = (size_t)(m - 1) * ldc + n;
    guarded ga = guarded_alloc(a_bytes, guard_after), gb = guarded_alloc(b_bytes, guard_after);
    guarded gc = guarded_alloc(c_elems * sizeof(int32_t), guard_after);
    int8_t *a = ga.data;
    uint8_t *b = gb.data;
    int32_t *c = gc.data;
    int8_t *w = malloc((size_t)n * k);
    int32_t *want = malloc(c_elems * sizeof(int32_t));
    for (size_t t = 0; t < a_bytes; t++) a[t] = ((long)(t % lda) < k) ? draw_act(fill) : (int8_t)rng();
    for (size_t t = 0; t < b_bytes; t++) b[t] = (uint8_t)rng(); /* row padding: random */
    for (int j = 0; j < n; j++) {
        for (int p = 0; p < k; p++) w[(size_t)j * k + p] = draw_weight(bits, fill);
        if (bits != 8) pack_row(bits, w + (size_t)j * k, k, b + (size_t)j * ldb, 1);
    }
    for (int j = 0; bits == 8 && j < n; j += 2)
        pack_pair(w + (size_t)j * k, j + 1 < n ? w + (size_t)(j + 1) * k : NULL, k, (int8_t *)b + (size_t)(j / 2) * ldb);
    const int32_t sentinel = (int32_t)0x5A5A5A5A;
    for (size_t t = 0; t < c_elems; t++) c[t] = want[t] = sentinel;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            int32_t acc = 0;
            for (int p = 0; p < k; p++) acc += (int32_t)a[(size_t)i * lda + p] * w[(size_t)j * k + p];
            want[(size_t)i * ldc + j] = acc;
        }
    snprintf(current_case, sizeof current_case, "%s bits=%d m=%d n=%d k=%d lda=%d ldb=%d ldc=%d fill=%d %s", isa,
             bits, m, n, k, lda, ldb, ldc, fill, guard_after ? "guard-after" : "guard-before");
    fn(m, n, k, a, lda, b, ldb, c, ldc);
    int bad = 0;
    for (size_t t = 0; t < c_elems && !bad; t++)
        if (c[t] != want[t]) {
            printf("MISMATCH %s at C[%d][%d]: got %d want %d\n", current_case, (int)(t / ldc), (int)(t % ldc), c[t],
                   want[t]);
            bad = 1;
        }
    free(w);
    free(want);
    guarded_free(ga);
    guarded_free(gb);
    guarded_free(gc);
    return bad;
}

/* B's row stride (the pair stride for pre-paired int8) for k-long rows. */
static int b_stride(int bits, int k) { return bits == 8 ? pair_bytes(k) : row_bytes(bits, k); }

static int selftest_one(ek_gemm_lowbit_fn fn, const char *isa, int bits) {
    static const int edge[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 17};
    const int n_edge = (int)(sizeof edge / sizeof edge[0]);
    int cases = 0, failures = 0;
    /* Every k tail around one and two blocks, against edge-sized m and n. */
    for (int k = 1; k <= 2 * (bits == 8 ? 32 : per_block(bits)) + 3; k++)
        for (int x = 0; x < 3; x++) {
            const int m = edge[(3 * x + k) % n_edge], n = edge[(7 * x + 2 * k) % n_edge];
            failures += run_case(fn, isa, bits, m, n, k, k, b_stride(bits, k), n, cases % 3, cases & 1);
            cases++;
        }
    for (int t = 0; t < 120; t++) {
        const int m = rng_int(1, 24), n = rng_int(1, 24), k = rng_int(1, 600);
        const int lda = k + (rng() % 3 ? 0 : rng_int(1, 33));
        const int ldb = b_stride(bits, k) + (rng() % 3 ? 0 : 16 * rng_int(0, 2) + rng_int(0, 15));
        const int ldc = n + (rng() % 3 ? 0 : rng_int(1, 9));
        failures += run_case(fn, isa, bits, m, n, k, lda, ldb, ldc, rng_int(0, 2), (int)(rng() & 1));
        cases++;
    }
    static const int big[][3] = {{64, 64, 576}, {1, 256, 1280}, {67, 29, 27}};
    for (unsigned t = 0; t < sizeof big / sizeof big[0]; t++, cases++)
        failures += run_case(fn, isa, bits, big[t][0], big[t][1], big[t][2], big[t][2], b_stride(bits, big[t][2]),
                             big[t][1], (int)t % 3, (int)t & 1);
    /* The largest k the runtime allows, extreme values. */
    failures += run_case(fn, isa, bits, 3, 5, 65536, 65536, b_stride(bits, 65536), 5, 2, 0);
    cases++;
    printf("%s/%s: %d cases, %d failed\n", isa, bits == 8 ? "int8" : bits == 4 ? "int4" : "ternary", cases, failures);
    return failures;
}

static int cmd_selftest(const char *isa) {
    int failures = 0;
    for (unsigned i = 0; i < N_ISAS; i++) {
        if (strcmp(isa, "all") != 0 && strcmp(isa, isa_names[i]) != 0) continue;
        for (int bits = 8; bits >= 2; bits -= 2) {
            if (bits == 6 || (bits == 8) != (strcmp(isa_names[i], "i8mm-paired") == 0)) continue;
            const char *why = NULL;
            ek_gemm_lowbit_fn fn = pick(isa_names[i], bits, &why);
            if (!fn) {
                printf("%s: skipped (%s)\n", isa_names[i], why);
                continue;
            }
            failures += selftest_one(fn, isa_names[i], bits);
        }
    }
    return failures ? 1 : 0;
}

/* One GEMM, any precision: bits 8 goes to the int8 kernel with unpacked weights. */
typedef struct {
    int bits;
    ek_gemm_s8_fn s8;
    ek_gemm_lowbit_fn lowbit;
    ek_sgemm_fn f32;
} kernel;

static kernel pick_or_die(const char *isa, int bits) {
    kernel kn = {bits, 0, 0, 0};
    const char *why = NULL;
    if (strcmp(isa, "i8mm-paired") == 0) kn.lowbit = pick(isa, bits, &why); /* pre-paired int8 */
    else if (bits == 8 || bits == 32) kn.s8 = ek_select_gemm_s8(ek_cpu_features(), isa, &why);
    else kn.lowbit = pick(isa, bits, &why);
    if (bits == 32 && kn.s8) kn.f32 = ek_select_sgemm(ek_cpu_features(), isa);
    if (!kn.s8 && !kn.lowbit) {
        fprintf(stderr, "%s\n", why ? why : "no kernel");
        exit(4);
    }
    return kn;
}

static void call(const kernel *kn, int m, int n, int k, const int8_t *a, const void *b, int ldb, int32_t *c) {
    if (kn->bits == 32) kn->f32(m, n, k, (const float *)(const void *)a, k, b, n, (float *)c, n);
    else if (kn->bits == 8 && kn->s8) kn->s8(m, n, k, a, k, b, k, c, n);
    else kn->lowbit(m, n, k, a, k, b, ldb, c, n);
}

/* B's row (pair) stride as the call reads it, and the bytes of A and B, per precision; pre-paired
 * int8 (isa i8mm-paired) has ceil(n / 2) pairs. */
static int paired_isa;
static int b_row_bytes(int bits, int k) { return bits == 8 ? (paired_isa ? pair_bytes(k) : k) : row_bytes(bits, k); }
static size_t a_bytes(int bits, int m, int k) { return (size_t)m * k * (bits == 32 ? 4 : 1); }
static size_t b_bytes(int bits, int n, int k) {
    if (bits == 32) return (size_t)k * n * 4;
    return (size_t)(bits == 8 && paired_isa ? (n + 1) / 2 : n) * b_row_bytes(bits, k);
}

static int cmd_gemm(const char *isa, int bits, int m, int n, int k) {
    kernel kn = pick_or_die(isa, bits);
    const int ldb = b_row_bytes(bits, k);
    int8_t *a = malloc(a_bytes(bits, m, k));
    uint8_t *b = malloc(b_bytes(bits, n, k));
    int32_t *c = malloc((size_t)m * n * sizeof(int32_t));
    if (fread(a, 1, a_bytes(bits, m, k), stdin) != a_bytes(bits, m, k) ||
        fread(b, 1, b_bytes(bits, n, k), stdin) != b_bytes(bits, n, k)) {
        fprintf(stderr, "short input\n");
        return 2;
    }
    call(&kn, m, n, k, a, b, ldb, c);
    fwrite(c, sizeof(int32_t), (size_t)m * n, stdout);
    free(a);
    free(b);
    free(c);
    return 0;
}

static int cmd_bench(const char *isa, int bits, int m, int n, int k, int reps, int timed) {
    kernel kn = pick_or_die(isa, bits);
    const int ldb = b_row_bytes(bits, k);
    int8_t *a = malloc(a_bytes(bits, m, k));
    uint8_t *b = malloc(b_bytes(bits, n, k));
    int32_t *c = malloc((size_t)m * n * sizeof(int32_t));
    for (size_t t = 0; t < a_bytes(bits, m, k); t++) a[t] = (int8_t)(bits == 32 ? (t % 4 == 3 ? 0x3f : rng()) : rng());
    for (size_t t = 0; t < b_bytes(bits, n, k); t++) b[t] = (uint8_t)(bits == 32 ? (t % 4 == 3 ? 0x3f : rng()) : rng());
    double best = 1e300;
    int32_t check = 0;
    for (int r = 0; r < reps; r++) {
        const double t0 = timed ? now_ns() : 0;
        call(&kn, m, n, k, a, b, ldb, c);
        const double dt = timed ? now_ns() - t0 : 0;
        if (dt < best) best = dt;
        check ^= c[(size_t)r % ((size_t)m * n)];
    }
    if (timed) printf("%s bits=%d m=%d n=%d k=%d reps=%d best_ns=%.0f check=%d\n", isa, bits, m, n, k, reps, best,
                      (int)check);
    free(a);
    free(b);
    free(c);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGSEGV, on_segv);
    signal(SIGBUS, on_segv);
    if (argc >= 3 && strcmp(argv[1], "selftest") == 0) {
        if (argc >= 4) rng_state ^= strtoull(argv[3], NULL, 0) * 0x9E3779B97F4A7C15ull;
        return cmd_selftest(argv[2]);
    }
    if (argc >= 3) paired_isa = strcmp(argv[2], "i8mm-paired") == 0;
    if (argc == 7 && strcmp(argv[1], "gemm") == 0)
        return cmd_gemm(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    if (argc == 8 && (strcmp(argv[1], "bench") == 0 || strcmp(argv[1], "repeat") == 0))
        return cmd_bench(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]),
                         strcmp(argv[1], "bench") == 0);
    fprintf(stderr, "usage: %s selftest ISA|all [seed] | gemm ISA BITS m n k | bench|repeat ISA BITS m n k reps\n",
            argv[0]);
    return 2;
}
