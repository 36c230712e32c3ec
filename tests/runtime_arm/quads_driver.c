/*
 * Test and benchmark driver for the k-quad packed AVX-512 VNNI GEMM (gemm_s8_quads_vnni512.c),
 * run natively on x86_64 by tests/runtime_arm/test_gemm_quads.py.
 *
 *   quads_driver selftest [seed]       pack + GEMM vs the C reference GEMM on every k tail, every
 *                                      pixel tail and random shapes/strides, operands flush against
 *                                      PROT_NONE pages; prints "quads: N cases, F failed", or
 *                                      "quads: skipped (...)" on a CPU without AVX-512 VNNI
 *   quads_driver bench m n k reps      best ns of pack + GEMM, and of the row-major vnni512 and avx2
 *                                      kernels on the same product (their im2col rows given)
 *
 * The activations are given k-major (A transposed: k rows of m pixels, row stride lda >= m), the
 * layout an NCHW im2col produces; the result must be channel-major C[j*ldc + i] = (A·Bᵀ)[i][j].
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ek_gemm.h"

#define DRIVER_RNG_SEED 0x2545F4914F6CDD1Dull
#include "driver_support.h"

/* uniform, or the extremes that maximise |sum| (both -128, or -128 against 127) */
static int8_t draw(int fill, int is_b) {
    if (fill == 1) return -128;
    if (fill == 2) return is_b ? 127 : -128;
    return (int8_t)(rng() & 0xff);
}

#if defined(__x86_64__)
/* Packs k-major at (k rows, stride lda) into ceil(k/4) quad rows. */
static void pack_all(const int8_t *at, int lda, int m, int k, uint8_t *aq) {
    const size_t ldq = 4 * (size_t)ek_quads_pixels(m);
    for (int q = 0; 4 * q < k; q++) {
        const int taps = k - 4 * q < 4 ? k - 4 * q : 4;
        ek_pack_quads_vnni512(at + (size_t)4 * q * lda, lda, taps, m, aq + q * ldq);
    }
}

static int run_case(int m, int n, int k, int lda, int ldb, int ldc, int fill, int guard_after) {
    const size_t at_bytes = (size_t)(k - 1) * lda + m, b_bytes = (size_t)(n - 1) * ldb + k;
    const size_t aq_bytes = (size_t)((k + 3) / 4) * 4 * ek_quads_pixels(m), c_elems = (size_t)(n - 1) * ldc + m;
    guarded gat = guarded_alloc(at_bytes, guard_after), gb = guarded_alloc(b_bytes, guard_after);
    guarded gq = guarded_alloc(aq_bytes, guard_after), gc = guarded_alloc(c_elems * 4, guard_after);
    int8_t *at = gat.data, *b = gb.data, *a = malloc((size_t)m * k);
    int32_t *c = gc.data, *want = malloc((size_t)m * n * 4);
    for (size_t t = 0; t < at_bytes; t++) at[t] = ((long)(t % lda) < m) ? draw(fill, 0) : (int8_t)rng();
    for (size_t t = 0; t < b_bytes; t++) b[t] = ((long)(t % ldb) < k) ? draw(fill, 1) : (int8_t)rng();
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++) a[(size_t)i * k + p] = at[(size_t)p * lda + i];
    const int32_t sentinel = (int32_t)0x5A5A5A5A;
    for (size_t t = 0; t < c_elems; t++) c[t] = sentinel;
    snprintf(current_case, sizeof current_case, "quads m=%d n=%d k=%d lda=%d ldb=%d ldc=%d fill=%d %s", m, n, k, lda,
             ldb, ldc, fill, guard_after ? "guard-after" : "guard-before");
    ek_gemm_s8_ref(m, n, k, a, k, b, ldb, want, n);
    pack_all(at, lda, m, k, gq.data);
    ek_gemm_s8_quads_vnni512(m, n, k, gq.data, b, ldb, c, ldc);
    int bad = 0;
    for (size_t t = 0; t < c_elems && !bad; t++) {
        const int j = (int)(t / ldc), i = (int)(t % ldc);
        const int32_t expect = i < m ? want[(size_t)i * n + j] : sentinel;
        if (c[t] != expect) {
            printf("MISMATCH %s at C[%d][%d]%s: got %d want %d\n", current_case, j, i,
                   i >= m ? " (padding, must stay untouched)" : "", c[t], expect);
            bad = 1;
        }
    }
    free(a);
    free(want);
    guarded_free(gat);
    guarded_free(gb);
    guarded_free(gq);
    guarded_free(gc);
    return bad;
}

static int cmd_selftest(void) {
    const char *why = NULL;
    if (!ek_select_gemm_s8(ek_cpu_features(), "avx512vnni", &why)) {
        printf("quads: skipped (%s)\n", why);
        return 0;
    }
    static const int pix[] = {1, 2, 15, 16, 17, 31, 33, 48, 63, 64, 65, 100};
    const int n_pix = (int)(sizeof pix / sizeof pix[0]);
    int cases = 0, failures = 0;
    for (int k = 1; k <= 40; k++) /* every k tail, every pixel tail, every channel tile height */
        for (int x = 0; x < n_pix; x++) {
            const int m = pix[x], n = 1 + (k + x) % 13;
            failures += run_case(m, n, k, m, k, m, cases % 3, cases & 1);
            cases++;
        }
    for (int t = 0; t < 300; t++) {
        const int m = rng_int(1, 140), n = rng_int(1, 40), k = rng_int(1, 1200);
        const int lda = m + (rng() % 3 ? 0 : rng_int(1, 33)), ldb = k + (rng() % 3 ? 0 : rng_int(1, 33));
        const int ldc = m + (rng() % 3 ? 0 : rng_int(1, 9));
        failures += run_case(m, n, k, lda, ldb, ldc, rng_int(0, 2), (int)(rng() & 1));
        cases++;
    }
    for (int fill = 1; fill <= 2; fill++, cases++) /* the largest k whose true sums fit int32 */
        failures += run_case(17, 7, 131071, 17, 131071, 17, fill, fill & 1);
    printf("quads: %d cases, %d failed\n", cases, failures);
    return failures ? 1 : 0;
}

static int cmd_bench(int m, int n, int k, int reps) {
    int8_t *at = malloc((size_t)m * k), *a = malloc((size_t)m * k), *b = malloc((size_t)n * k);
    uint8_t *aq = malloc((size_t)((k + 3) / 4) * 4 * ek_quads_pixels(m));
    int32_t *c = malloc((size_t)m * n * 4);
    for (size_t t = 0; t < (size_t)m * k; t++) at[t] = (int8_t)rng();
    for (size_t t = 0; t < (size_t)n * k; t++) b[t] = (int8_t)rng();
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++) a[(size_t)i * k + p] = at[(size_t)p * m + i];
    const char *names[] = {"quads", "vnni512", "avx2"};
    for (int which = 0; which < 3; which++) {
        ek_gemm_s8_fn fn = which ? ek_select_gemm_s8(ek_cpu_features(), which == 1 ? "avx512vnni" : "avx2", NULL) : 0;
        if (which && !fn) continue;
        double best = 1e300;
        for (int r = 0; r < reps; r++) {
            const double t0 = now_ns();
            if (which == 0) {
                pack_all(at, m, m, k, aq);
                ek_gemm_s8_quads_vnni512(m, n, k, aq, b, k, c, m);
            } else {
                fn(m, n, k, a, k, b, k, c, n);
            }
            const double dt = now_ns() - t0;
            if (dt < best) best = dt;
        }
        printf("%s m=%d n=%d k=%d best_ns=%.0f gmacs=%.2f\n", names[which], m, n, k, best, (double)m * n * k / best);
    }
    return 0;
}
#endif

int main(int argc, char **argv) {
    signal(SIGSEGV, on_segv);
    signal(SIGBUS, on_segv);
#if defined(__x86_64__)
    if (argc >= 2 && strcmp(argv[1], "selftest") == 0) {
        if (argc >= 3) rng_state ^= strtoull(argv[2], NULL, 0) * 0x9E3779B97F4A7C15ull;
        return cmd_selftest();
    }
    if (argc == 6 && strcmp(argv[1], "bench") == 0)
        return cmd_bench(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
#endif
    fprintf(stderr, "usage: %s selftest [seed] | bench m n k reps   (x86_64 only)\n", argv[0]);
    return 2;
}
