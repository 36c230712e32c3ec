/*
 * What SIMD the running CPU (and OS) supports, as EK_CPU_* bits; compile with baseline flags.
 *
 * aarch64 Linux/Android: the kernel's hwcaps (getauxval), the only reliable source in user
 * space (the ID registers trap or are virtualised).  Other aarch64 OSes: NEON only, which every
 * armv8-a CPU has.  32-bit arm Linux: HWCAP_NEON from the same hwcaps.  x86_64: cpuid for
 * AVX2/FMA, plus xgetbv to check that the OS saves the ymm registers (XCR0 bits 1 and 2),
 * without which AVX code faults; AVX-VNNI (leaf 7 subleaf 1, eax bit 4) needs the same state,
 * AVX-512 VNNI (leaf 7: F ebx 16, BW ebx 30, VL ebx 31, VNNI ecx 11) also the opmask and zmm
 * state (XCR0 bits 5, 6, 7), which an OS or hypervisor may leave off even on a CPU that has it.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* getauxval is not in C99's namespace */
#endif
#include "ek_gemm.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>

/* Values from the kernel's arch/arm64/include/uapi/asm/hwcap.h, for older libc headers. */
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1UL << 13)
#endif

unsigned ek_cpu_features(void) {
    const unsigned long hwcap = getauxval(AT_HWCAP);
    const unsigned long hwcap2 = getauxval(AT_HWCAP2);
    unsigned f = 0;
    if (hwcap & HWCAP_ASIMD) f |= EK_CPU_NEON;
    if (hwcap & HWCAP_ASIMDDP) f |= EK_CPU_DOTPROD;
    if (hwcap2 & HWCAP2_I8MM) f |= EK_CPU_I8MM;
    return f;
}

#elif defined(__aarch64__)

unsigned ek_cpu_features(void) { return EK_CPU_NEON; }

#elif defined(__arm__) && defined(__linux__)
#include <sys/auxv.h>

/* 32-bit arm: NEON is optional in Armv7-A (a Cortex-A9 may lack it), so ask the kernel
 * (arch/arm/include/uapi/asm/hwcap.h).  dotprod / i8mm kernels are AArch64 code: never set. */
#ifndef HWCAP_NEON
#define HWCAP_NEON (1UL << 12)
#endif

unsigned ek_cpu_features(void) { return (getauxval(AT_HWCAP) & HWCAP_NEON) ? EK_CPU_NEON : 0; }

#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

static unsigned detect(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, fma = (ecx >> 12) & 1;
    if (!osxsave || !avx) return 0;
    unsigned xcr0_lo, xcr0_hi;
    /* xgetbv as raw asm: the intrinsic would need -mxsave on this baseline-flags file. */
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 0x6) != 0x6) return 0; /* OS does not save xmm + ymm state */
    unsigned f = fma ? EK_CPU_FMA : 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
    if ((ebx >> 5) & 1) f |= EK_CPU_AVX2;
    const unsigned avx512_bits = (1u << 16) | (1u << 30) | (1u << 31); /* F, BW, VL */
    if ((ebx & avx512_bits) == avx512_bits && ((ecx >> 11) & 1) && (xcr0_lo & 0xE6) == 0xE6)
        f |= EK_CPU_AVX512VNNI;
    const unsigned max_subleaf = eax;
    if (max_subleaf >= 1 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && ((eax >> 4) & 1)) f |= EK_CPU_AVXVNNI;
    return f;
}

/* Computed once: kernels ask per call, and under a hypervisor every cpuid is a VM exit (about a
 * microsecond).  Two threads racing here store the same value. */
unsigned ek_cpu_features(void) {
    static unsigned cached; /* the bits + 1; 0 = not yet detected */
    unsigned f = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!f) {
        f = detect() + 1;
        __atomic_store_n(&cached, f, __ATOMIC_RELAXED);
    }
    return f - 1;
}

#else

unsigned ek_cpu_features(void) { return 0; }

#endif
