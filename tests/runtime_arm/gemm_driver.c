/*
 * Test and benchmark driver for the int8 GEMM kernels (ek_gemm.h), run natively on x86_64 and
 * under qemu-aarch64 by tests/runtime_arm/test_gemm_kernels.py.
 *
 *   gemm_driver features                 feature bits, and what the selector says per ISA
 *   gemm_driver selftest ISA|all [seed]  every SIMD kernel the CPU runs vs the C reference on
 *                                        random and tail shapes, operands in guard-paged buffers
 *   gemm_driver guardcheck after|before  reads one byte outside a guarded buffer: must die
 *                                        with SIGSEGV (exit 3), proving the guards work here
 *   gemm_driver gemm ISA m n k           A (m*k) then B (n*k) int8 on stdin -> C int32 on stdout
 *   gemm_driver bench ISA m n k reps     reps timed calls on fixed data; prints the best ns
 *   gemm_driver repeat ISA m n k reps    reps untimed calls (for counting guest instructions:
 *                                        count(reps=2) - count(reps=1) is exactly one call)
 *
 * Guard pages: each operand is placed flush against a PROT_NONE page, after its last byte or
 * before its first, so a kernel that touches one byte outside its rows dies with SIGSEGV
 * (reported with the case that caused it).  Row padding (lda > k) holds random bytes and the
 * padding of C must come back untouched.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ek_gemm.h"

#define DRIVER_RNG_SEED 0x9E3779B97F4A7C15ull
#include "driver_support.h"

static const char *const isa_names[] = {"c", "neon", "dotprod", "i8mm", "avx2", "avxvnni", "avx512vnni"};
#define N_ISAS (sizeof isa_names / sizeof isa_names[0])

/* ---- deterministic random numbers (xorshift64*) ---- */

/* Value patterns: uniform, the extremes only, and the two that maximise |sum|. */
enum { FILL_UNIFORM, FILL_EXTREMES, FILL_MIN_MIN, FILL_MIN_MAX, N_FILLS };
static int8_t draw(int fill, int is_b) {
    switch (fill) {
    case FILL_EXTREMES: return (rng() & 1) ? 127 : -128;
    case FILL_MIN_MIN: return -128;
    case FILL_MIN_MAX: return is_b ? 127 : -128;
    default: return (int8_t)(rng() & 0xff);
    }
}

/* ---- one test case ---- */
static int run_case(ek_gemm_s8_fn fn, const char *isa, int m, int n, int k, int lda, int ldb,
                    int ldc, int fill, int guard_after) {
    const size_t a_bytes = (size_t)(m - 1) * lda + k, b_bytes = (size_t)(n - 1) * ldb + k;
    const size_t c_elems = (size_t)(m - 1) * ldc + n;
    guarded ga = guarded_alloc(a_bytes, guard_after), gb = guarded_alloc(b_bytes, guard_after);
    guarded gc = guarded_alloc(c_elems * sizeof(int32_t), guard_after);
    int8_t *a = ga.data, *b = gb.data;
    int32_t *c = gc.data;
    int32_t *want = malloc(c_elems * sizeof(int32_t));
    for (size_t t = 0; t < a_bytes; t++) a[t] = ((long)(t % lda) < k) ? draw(fill, 0) : (int8_t)rng();
    for (size_t t = 0; t < b_bytes; t++) b[t] = ((long)(t % ldb) < k) ? draw(fill, 1) : (int8_t)rng();
    const int32_t sentinel = (int32_t)0x5A5A5A5A;
    for (size_t t = 0; t < c_elems; t++) c[t] = want[t] = sentinel;

    snprintf(current_case, sizeof current_case, "%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d fill=%d %s",
             isa, m, n, k, lda, ldb, ldc, fill, guard_after ? "guard-after" : "guard-before");
    ek_gemm_s8_ref(m, n, k, a, lda, b, ldb, want, ldc);
    fn(m, n, k, a, lda, b, ldb, c, ldc);

    int bad = 0;
    for (size_t t = 0; t < c_elems && !bad; t++) {
        if (c[t] != want[t]) {
            const int i = (int)(t / ldc), j = (int)(t % ldc);
            printf("MISMATCH %s at C[%d][%d]%s: got %d want %d\n", current_case, i, j,
                   j >= n ? " (padding, must stay untouched)" : "", c[t], want[t]);
            bad = 1;
        }
    }
    free(want);
    guarded_free(ga);
    guarded_free(gb);
    guarded_free(gc);
    return bad;
}

static int selftest_one(ek_gemm_s8_fn fn, const char *isa) {
    static const int edge[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17};
    const int n_edge = (int)(sizeof edge / sizeof edge[0]);
    int cases = 0, failures = 0;
    /* Every k tail 1..40 against edge-sized m and n (all 4/8-row and column remainders). */
    for (int k = 1; k <= 40; k++)
        for (int x = 0; x < n_edge; x++)
            for (int y = 0; y < n_edge; y++) {
                const int m = edge[x], n = edge[(y + k) % n_edge];
                failures += run_case(fn, isa, m, n, k, k, k, n, cases % N_FILLS, cases & 1);
                cases++;
            }
    /* Random shapes, strides with padding, value patterns and guard sides. */
    for (int t = 0; t < 400; t++) {
        const int m = rng_int(1, 40), n = rng_int(1, 40), k = rng_int(1, 700);
        const int lda = k + (rng() % 3 ? 0 : rng_int(1, 33)), ldb = k + (rng() % 3 ? 0 : rng_int(1, 33));
        const int ldc = n + (rng() % 3 ? 0 : rng_int(1, 9));
        failures += run_case(fn, isa, m, n, k, lda, ldb, ldc, rng_int(0, N_FILLS - 1), (int)(rng() & 1));
        cases++;
    }
    /* Realistic sizes: a 3x3 conv's im2col block, a first conv (k = 27), an FC layer (GEMV). */
    static const int big[][3] = {{64, 64, 576}, {67, 29, 27}, {1, 1000, 1280}};
    for (unsigned t = 0; t < sizeof big / sizeof big[0]; t++)
        for (int fill = 0; fill < N_FILLS; fill++, cases++)
            failures += run_case(fn, isa, big[t][0], big[t][1], big[t][2], big[t][2], big[t][2],
                                 big[t][1], fill, fill & 1);
    /* The largest k whose sums of (-128)^2 products still fit int32, with both signs. */
    for (int fill = FILL_MIN_MIN; fill <= FILL_MIN_MAX; fill++, cases++)
        failures += run_case(fn, isa, 3, 5, 131071, 131071, 131071, 5, fill, fill & 1);
    printf("%s: %d cases, %d failed\n", isa, cases, failures);
    return failures;
}

static int cmd_guardcheck(int after) {
    guarded g = guarded_alloc(100, after);
    volatile const int8_t *p = g.data;
    snprintf(current_case, sizeof current_case, "guardcheck %s (expected)", after ? "after" : "before");
    const int8_t outside = after ? p[100] : p[-1];
    printf("guard did not fault (read %d)\n", outside);
    return 1;
}

static ek_gemm_s8_fn select_or_die(const char *isa) {
    const char *why = NULL;
    ek_gemm_s8_fn fn = ek_select_gemm_s8(ek_cpu_features(), isa, &why);
    if (!fn) {
        fprintf(stderr, "%s\n", why);
        exit(4);
    }
    return fn;
}

static int cmd_features(void) {
    const unsigned f = ek_cpu_features();
    printf("features:%s%s%s%s%s%s%s\n", f & EK_CPU_NEON ? " neon" : "", f & EK_CPU_DOTPROD ? " dotprod" : "",
           f & EK_CPU_I8MM ? " i8mm" : "", f & EK_CPU_AVX2 ? " avx2" : "", f & EK_CPU_FMA ? " fma" : "",
           f & EK_CPU_AVXVNNI ? " avxvnni" : "", f & EK_CPU_AVX512VNNI ? " avx512vnni" : "");
    const char *name = NULL;
    ek_select_gemm_s8(f, NULL, &name);
    printf("auto: %s\n", name);
    for (unsigned i = 0; i < N_ISAS; i++) {
        ek_gemm_s8_fn fn = ek_select_gemm_s8(f, isa_names[i], &name);
        printf("%s: %s\n", isa_names[i], fn ? "ok" : name);
    }
    ek_gemm_s8_fn fn = ek_select_gemm_s8(f, "sve", &name);
    printf("sve: %s\n", fn ? "ok" : name);
    return 0;
}

static int cmd_selftest(const char *isa) {
    int failures = 0;
    for (unsigned i = 0; i < N_ISAS; i++) {
        if (strcmp(isa, "all") != 0 && strcmp(isa, isa_names[i]) != 0) continue;
        if (strcmp(isa_names[i], "c") == 0) {
            printf("c: is the reference (the tests check it against numpy)\n");
            continue;
        }
        const char *why = NULL;
        ek_gemm_s8_fn fn = ek_select_gemm_s8(ek_cpu_features(), isa_names[i], &why);
        if (!fn) {
            if (strcmp(isa, "all") != 0) {
                printf("%s\n", why);
                return 4;
            }
            printf("%s: skipped (%s)\n", isa_names[i], why);
            continue;
        }
        failures += selftest_one(fn, isa_names[i]);
    }
    return failures ? 1 : 0;
}

static int cmd_gemm(const char *isa, int m, int n, int k) {
    ek_gemm_s8_fn fn = select_or_die(isa);
    int8_t *a = malloc((size_t)m * k), *b = malloc((size_t)n * k);
    int32_t *c = malloc((size_t)m * n * sizeof(int32_t));
    if (fread(a, 1, (size_t)m * k, stdin) != (size_t)m * k || fread(b, 1, (size_t)n * k, stdin) != (size_t)n * k) {
        fprintf(stderr, "short input\n");
        return 2;
    }
    fn(m, n, k, a, k, b, k, c, n);
    fwrite(c, sizeof(int32_t), (size_t)m * n, stdout);
    free(a);
    free(b);
    free(c);
    return 0;
}

static int cmd_bench(const char *isa, int m, int n, int k, int reps, int timed) {
    ek_gemm_s8_fn fn = select_or_die(isa);
    int8_t *a = malloc((size_t)m * k), *b = malloc((size_t)n * k);
    int32_t *c = malloc((size_t)m * n * sizeof(int32_t));
    for (size_t t = 0; t < (size_t)m * k; t++) a[t] = (int8_t)rng();
    for (size_t t = 0; t < (size_t)n * k; t++) b[t] = (int8_t)rng();
    double best = 1e300;
    int32_t check = 0;
    for (int r = 0; r < reps; r++) {
        const double t0 = timed ? now_ns() : 0;
        fn(m, n, k, a, k, b, k, c, n);
        const double dt = timed ? now_ns() - t0 : 0;
        if (dt < best) best = dt;
        check ^= c[(size_t)r % ((size_t)m * n)];
    }
    if (timed) printf("%s m=%d n=%d k=%d reps=%d best_ns=%.0f gmacs=%.2f check=%d\n", isa, m, n, k, reps, best,
           reps ? (double)m * n * k / best : 0.0, (int)check);
    free(a);
    free(b);
    free(c);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGSEGV, on_segv);
    signal(SIGBUS, on_segv);
    if (argc >= 2 && strcmp(argv[1], "features") == 0) return cmd_features();
    if (argc >= 3 && strcmp(argv[1], "selftest") == 0) {
        if (argc >= 4) rng_state ^= strtoull(argv[3], NULL, 0) * 0x9E3779B97F4A7C15ull;
        return cmd_selftest(argv[2]);
    }
    if (argc == 3 && strcmp(argv[1], "guardcheck") == 0)
        return cmd_guardcheck(strcmp(argv[2], "after") == 0);
    if (argc == 6 && strcmp(argv[1], "gemm") == 0)
        return cmd_gemm(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc == 7 && (strcmp(argv[1], "bench") == 0 || strcmp(argv[1], "repeat") == 0))
        return cmd_bench(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]),
                         strcmp(argv[1], "bench") == 0);
    fprintf(stderr,
            "usage: %s features | selftest ISA|all [seed] | guardcheck after|before | gemm ISA m n k |"
            " bench|repeat ISA m n k reps\n",
            argv[0]);
    return 2;
}
