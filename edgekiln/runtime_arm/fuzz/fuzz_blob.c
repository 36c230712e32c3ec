/*
 * Fuzzing the blob loader (and the kernels of blobs that still load).
 *
 * LLVMFuzzerTestOneInput is the libFuzzer entry point (clang -fsanitize=fuzzer,address with
 * -DEK_LIBFUZZER).  Without libFuzzer, main() is a self-contained mutation driver meant for
 * an AddressSanitizer + UBSan build:
 *
 *     fuzz_blob SEED.blob SECONDS RANDOM_SEED   ->  stdout: "iterations N loaded L ran R"
 *
 * It mutates a real blob (bit flips, interesting integers written over table fields,
 * truncation, byte runs), mostly in the header and tables rather than in the constants, and
 * usually re-computes the CRC so the mutation reaches the deeper checks.  Any out-of-bounds
 * access or undefined behaviour aborts through the sanitizers; a clean run exits 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/ek_internal.h"

/* Skip running blobs whose buffers are large: the fuzzer looks for memory errors, not for
 * slow programs. */
#define RUN_LIMIT_BYTES ((uint64_t)4 << 20)

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int run_once(const uint8_t *data, size_t size, int threads) {
    if (size >= 64 && (rd64(data + 48) > RUN_LIMIT_BYTES || rd64(data + 56) > RUN_LIMIT_BYTES)) return 0;
    ek_model *m = NULL;
    char err[256];
    if (ek_model_load(data, size, &m, err, sizeof err) != EK_STATUS_OK) return 0;
    int ran = 0;
    int ni = ek_model_num_inputs(m), no = ek_model_num_outputs(m);
    void *bufs[512] = {0};
    int ok = ni + no <= 512 && ek_model_set_threads(m, threads, err, sizeof err) == EK_STATUS_OK;
    for (int i = 0; ok && i < ni + no; i++) {
        ek_tensor_info info;
        ek_model_io(m, i >= ni, i >= ni ? i - ni : i, &info);
        if (info.nbytes > RUN_LIMIT_BYTES || !(bufs[i] = calloc(1, info.nbytes + 1))) ok = 0;
    }
    if (ok) {
        ek_model_run(m, (const void *const *)bufs, bufs + ni, err, sizeof err);
        ran = 1;
    }
    for (int i = 0; i < ni + no && i < 512; i++) free(bufs[i]);
    ek_model_free(m);
    return ran;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run_once(data, size, 1);
    return 0;
}

#ifndef EK_LIBFUZZER
static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64*: reproducible from the seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void wr(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_crc(uint8_t *b, size_t size) {
    if (size >= EK_BLOB_PREFIX_BYTES) wr(b + 24, ek_crc32(b + EK_BLOB_PREFIX_BYTES, size - EK_BLOB_PREFIX_BYTES), 4);
}

static size_t mutate(uint8_t *b, size_t size, size_t tables_end) {
    static const uint64_t interesting[] = {0, 1, 2, 3, 7, 8, 63, 64, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF,
                                           0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu, 0xFFFFFFFFFFFFFFFFull,
                                           (uint64_t)1 << 40, (uint64_t)1 << 62};
    int n = 1 + (int)(rnd() % 4);
    for (int k = 0; k < n && size > 0; k++) {
        size_t span = (rnd() % 4) && tables_end > 0 && tables_end < size ? tables_end : size;
        size_t at = (size_t)(rnd() % span);
        switch (rnd() % 6) {
        case 0: b[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: b[at] = (uint8_t)rnd(); break;
        case 2: {
            int w = (int)(1u << (rnd() % 4)); /* 1, 2, 4 or 8 bytes */
            at &= ~(size_t)(w - 1);
            if (at + (size_t)w <= size) wr(b + at, interesting[rnd() % (sizeof interesting / sizeof *interesting)] + (rnd() % 3) - 1, w);
            break;
        }
        case 3: {
            size_t len = 1 + rnd() % 16;
            for (size_t i = at; i < at + len && i < size; i++) b[i] = (uint8_t)(rnd() & 1 ? 0 : 0xFF);
            break;
        }
        case 4: if (rnd() % 8 == 0) size = at; break; /* truncate */
        default: {
            size_t from = (size_t)(rnd() % size), len = 1 + rnd() % 8;
            if (from + len <= size && at + len <= size) memmove(b + at, b + from, len);
            break;
        }
        }
    }
    return size;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: fuzz_blob SEED.blob SECONDS RANDOM_SEED\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *seed = malloc((size_t)size), *work = NULL;
    if (!seed || fread(seed, 1, (size_t)size, f) != (size_t)size) return 2;
    fclose(f);
    double seconds = atof(argv[2]);
    rng_state = strtoull(argv[3], NULL, 10) * 0x9E3779B97F4A7C15ull + 1;
    /* Tables end where the constants section begins (section 7's offset). */
    size_t tables_end = size >= EK_BLOB_HEADER_BYTES ? (size_t)rd64(seed + 64 + 16 * EK_SECTION_CONSTANTS) : (size_t)size;
    if (posix_memalign((void **)&work, 64, (size_t)size + 64)) return 2;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long iterations = 0, loaded = 0, ran = 0;
    /* EK_FUZZ_LAST=FILE: write each mutant there before trying it, to reproduce a crash. */
    const char *last = getenv("EK_FUZZ_LAST");
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) > seconds) break;
        memcpy(work, seed, (size_t)size);
        size_t n = mutate(work, (size_t)size, tables_end);
        if (rnd() % 10) fix_crc(work, n);
        if (last) {
            FILE *out = fopen(last, "wb");
            if (out) {
                fwrite(work, 1, n, out);
                fclose(out);
            }
        }
        ek_model *m = NULL;
        char err[256];
        if (n >= 64 && rd64(work + 48) <= RUN_LIMIT_BYTES && rd64(work + 56) <= RUN_LIMIT_BYTES &&
            ek_model_load(work, n, &m, err, sizeof err) == EK_STATUS_OK) {
            loaded++;
            ek_model_free(m);
            ran += run_once(work, n, 1 + (int)(iterations % 7 == 0));
        }
        iterations++;
    }
    printf("iterations %ld loaded %ld ran %ld\n", iterations, loaded, ran);
    free(seed);
    free(work);
    return 0;
}
#endif
