/*
 * What the GEMM test drivers (gemm_driver.c, lowbit_driver.c, quads_driver.c) share: a seeded
 * xorshift generator, guard-paged operand buffers, a SIGSEGV handler that names the case that
 * crashed, and a monotonic clock for their bench commands.
 *
 * Guard pages: guarded_alloc places `bytes` flush against a PROT_NONE page, after the data or
 * before it, so a kernel that touches one byte outside its operand dies with SIGSEGV; on_segv
 * then prints `current_case` (each driver writes its case description there) and exits 3.
 *
 * A driver defines DRIVER_RNG_SEED before including this header: each keeps the seed its cases
 * were drawn with.  _GNU_SOURCE must be defined before the first system header (MAP_ANONYMOUS).
 */
#ifndef EK_TEST_DRIVER_SUPPORT_H
#define EK_TEST_DRIVER_SUPPORT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef DRIVER_RNG_SEED
#error "define DRIVER_RNG_SEED before including driver_support.h"
#endif

/* ---- random numbers ---- */
static uint64_t rng_state = DRIVER_RNG_SEED;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static int rng_int(int lo, int hi) { return lo + (int)(rng() % (uint64_t)(hi - lo + 1)); }

/* ---- guard-paged buffers: an operand flush against a PROT_NONE page ---- */
typedef struct {
    unsigned char *map;
    size_t map_len;
    void *data;
} guarded;

static guarded guarded_alloc(size_t bytes, int guard_after) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t data_pages = (bytes + page - 1) / page;
    guarded g;
    g.map_len = (data_pages + 1) * page;
    g.map = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.map == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (guard_after) {
        mprotect(g.map + data_pages * page, page, PROT_NONE);
        g.data = g.map + data_pages * page - bytes;
    } else {
        mprotect(g.map, page, PROT_NONE);
        g.data = g.map + page;
    }
    return g;
}

static void guarded_free(guarded g) { munmap(g.map, g.map_len); }

/* ---- crash reporting ---- */
static char current_case[256] = "(none)";
static void on_segv(int sig) {
    (void)sig;
    static const char msg[] = "SIGSEGV (read/write outside the operands) in case: ";
    if (write(2, msg, sizeof msg - 1) < 0 || write(2, current_case, strlen(current_case)) < 0 ||
        write(2, "\n", 1) < 0) {
    }
    _exit(3);
}

/* ---- timing ---- */
static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#endif
