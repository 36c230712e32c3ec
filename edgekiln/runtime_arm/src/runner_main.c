/*
 * ek_run: the runner executable shipped in an artifact (static; runs on the device or under
 * qemu-user).
 *
 *   ek_run MODEL.blob --input NAME=FILE ... [--output NAME=FILE ...] [--threads N]
 *          [--repeat R] [--warmup W] [--profile FILE.json] [--isa auto|c|neon|dotprod|i8mm|avx2]
 *          [--mark-calls]
 *
 * Tensor files are raw little-endian, C-ordered, exactly the byte size of the tensor (the
 * Python side converts .npy).  After the runs it prints one JSON line on stdout: the GEMM path,
 * threads, memory and the latency of the timed runs (min / median / p90 / mean, ms).
 * --profile writes each call's mean time over the timed runs.  The peak resident set size is
 * printed too (VmHWM of /proc/self/status: getrusage's ru_maxrss would carry over the peak of
 * the process that exec'd us; under qemu-user it is the emulator's), -1 where unknown.
 *
 * --mark-calls brackets each timed run with a marker system call (EK_MARK_SYSCALL, argument 1
 * before the run, 2 after it) that no kernel implements: the qemu instruction-count plugin
 * (runtime_arm/tools/qemu_insn_plugin.c) sees it and attributes the instructions in between.
 * Only for emulated runs: a real kernel answers ENOSYS, a seccomp sandbox may kill the process.
 *
 * Exit status: 0 ok, 2 bad usage or unreadable file, 3 the blob does not load (corrupted,
 * truncated, unsupported), 4 the run failed, 5 the requested ISA is not available.
 */
#define _DEFAULT_SOURCE /* syscall() */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ek_runtime.h"

#define MAX_IO 256
/* "EK": a system call number no Linux architecture uses (see --mark-calls). */
#define EK_MARK_SYSCALL 0x4b45

typedef struct {
    const char *name, *path;
} binding;

static int usage(const char *msg) {
    fprintf(stderr, "ek_run: %s\nusage: ek_run MODEL.blob --input NAME=FILE ... [--output NAME=FILE ...] "
                    "[--threads N] [--repeat R] [--warmup W] [--profile FILE.json] [--isa ISA] [--mark-calls]\n", msg);
    return 2;
}

static void *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && posix_memalign(&buf, 64, (size_t)n + 1) == 0) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* NAME=FILE, split at the last '=' (names may contain '='; our file paths do not). */
static int parse_binding(const char *arg, binding *b) {
    const char *eq = strrchr(arg, '=');
    if (!eq || eq == arg || !eq[1]) return 0;
    size_t n = (size_t)(eq - arg);
    char *name = malloc(n + 1);
    if (!name) return 0;
    memcpy(name, arg, n);
    name[n] = 0;
    b->name = name;
    b->path = eq + 1;
    return 1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set of this process image in KiB, -1 when /proc is not there. */
static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv) {
    binding ins[MAX_IO], outs[MAX_IO];
    int n_in = 0, n_out = 0, threads = 1, repeat = 1, warmup = 0, mark_calls = 0;
    const char *blob_path = NULL, *profile_path = NULL, *isa = "auto";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--input") || !strcmp(a, "--output")) {
            binding *list = a[2] == 'i' ? ins : outs;
            int *n = a[2] == 'i' ? &n_in : &n_out;
            if (!v || *n >= MAX_IO || !parse_binding(v, &list[*n])) return usage("bad --input/--output NAME=FILE");
            (*n)++;
            i++;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "--repeat") || !strcmp(a, "--warmup")) {
            char *end;
            long x = v ? strtol(v, &end, 10) : -1;
            if (!v || *end || x < (a[2] == 'w' ? 0 : 1) || x > 1000000) return usage("bad count");
            *(a[2] == 't' ? &threads : a[2] == 'r' ? &repeat : &warmup) = (int)x;
            i++;
        } else if (!strcmp(a, "--profile")) {
            if (!v) return usage("--profile needs a file");
            profile_path = v;
            i++;
        } else if (!strcmp(a, "--mark-calls")) {
            mark_calls = 1;
        } else if (!strcmp(a, "--isa")) {
            if (!v) return usage("--isa needs a value");
            isa = v;
            i++;
        } else if (a[0] == '-') {
            return usage("unknown option");
        } else if (!blob_path) {
            blob_path = a;
        } else {
            return usage("more than one model file");
        }
    }
    if (!blob_path) return usage("no model file");

    size_t size = 0;
    void *blob = read_file(blob_path, &size);
    if (!blob) {
        fprintf(stderr, "ek_run: error: cannot read %s\n", blob_path);
        return 2;
    }
    char err[512];
    ek_model *model = NULL;
    int rc = ek_model_load(blob, size, &model, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ek_run: error: %s: %s (%s)\n", blob_path, err, ek_status_name(rc));
        free(blob);
        return 3;
    }
    int status = 0;
    void *in_bufs[MAX_IO] = {0}, *out_bufs[MAX_IO] = {0};
    double *times = NULL, *profile = NULL, *profile_sum = NULL;
    int ni = ek_model_num_inputs(model), no = ek_model_num_outputs(model), nc = ek_model_num_calls(model);
    if (ni > MAX_IO || no > MAX_IO) {
        fprintf(stderr, "ek_run: error: more than %d inputs or outputs\n", MAX_IO);
        status = 2;
        goto done;
    }
    if ((rc = ek_model_set_threads(model, threads, err, sizeof err)) || (rc = ek_model_set_isa(model, isa, err, sizeof err))) {
        fprintf(stderr, "ek_run: error: %s\n", err);
        status = rc == EK_STATUS_ISA ? 5 : 2;
        goto done;
    }
    for (int i = 0; i < ni && !status; i++) {
        ek_tensor_info info;
        ek_model_io(model, 0, i, &info);
        int found = -1;
        for (int k = 0; k < n_in; k++)
            if (!strcmp(ins[k].name, info.name)) found = k;
        if (found < 0) {
            fprintf(stderr, "ek_run: error: no --input for model input '%s'\n", info.name);
            status = 2;
            break;
        }
        size_t got = 0;
        in_bufs[i] = read_file(ins[found].path, &got);
        if (!in_bufs[i] || got != info.nbytes) {
            fprintf(stderr, "ek_run: error: input '%s': %s is %zu bytes, the model takes %zu\n", info.name,
                    ins[found].path, got, info.nbytes);
            status = 2;
        }
    }
    for (int k = 0; k < n_in && !status; k++) {
        int known = 0;
        for (int i = 0; i < ni; i++) {
            ek_tensor_info info;
            ek_model_io(model, 0, i, &info);
            known |= !strcmp(ins[k].name, info.name);
        }
        if (!known) {
            fprintf(stderr, "ek_run: error: the model has no input '%s'\n", ins[k].name);
            status = 2;
        }
    }
    for (int i = 0; i < no && !status; i++) {
        ek_tensor_info info;
        ek_model_io(model, 1, i, &info);
        if (posix_memalign(&out_bufs[i], 64, info.nbytes + 64)) {
            fprintf(stderr, "ek_run: error: out of memory\n");
            status = 2;
        }
    }
    if (status) goto done;
    times = calloc((size_t)repeat, sizeof(double));
    profile = calloc((size_t)nc + 1, sizeof(double));
    profile_sum = calloc((size_t)nc + 1, sizeof(double));
    if (!times || !profile || !profile_sum) {
        fprintf(stderr, "ek_run: error: out of memory\n");
        status = 2;
        goto done;
    }
    for (int r = 0; r < warmup + repeat; r++) {
        int timed = r >= warmup;
        ek_model_set_profile(model, timed && profile_path ? profile : NULL);
        if (timed && mark_calls) syscall(EK_MARK_SYSCALL, 1L);
        double t0 = now();
        rc = ek_model_run(model, (const void *const *)in_bufs, out_bufs, err, sizeof err);
        double t1 = now();
        if (timed && mark_calls) syscall(EK_MARK_SYSCALL, 2L);
        if (rc) {
            fprintf(stderr, "ek_run: error: %s\n", err);
            status = 4;
            goto done;
        }
        if (timed) {
            times[r - warmup] = t1 - t0;
            if (profile_path)
                for (int k = 0; k < nc; k++) profile_sum[k] += profile[k];
        }
    }
    for (int k = 0; k < n_out && !status; k++) {
        int found = -1;
        ek_tensor_info info;
        for (int i = 0; i < no; i++) {
            ek_model_io(model, 1, i, &info);
            if (!strcmp(outs[k].name, info.name)) {
                found = i;
                break;
            }
        }
        if (found < 0) {
            fprintf(stderr, "ek_run: error: the model has no output '%s'\n", outs[k].name);
            status = 2;
            break;
        }
        FILE *f = fopen(outs[k].path, "wb");
        if (!f || fwrite(out_bufs[found], 1, info.nbytes, f) != info.nbytes || fclose(f)) {
            fprintf(stderr, "ek_run: error: cannot write %s\n", outs[k].path);
            status = 2;
        }
    }
    if (profile_path && !status) {
        FILE *f = fopen(profile_path, "w");
        if (!f) {
            fprintf(stderr, "ek_run: error: cannot write %s\n", profile_path);
            status = 2;
        } else {
            fprintf(f, "{\"repeat\": %d, \"calls\": [", repeat);
            for (int k = 0; k < nc; k++) {
                fprintf(f, "%s\n  {\"name\": ", k ? "," : "");
                json_string(f, ek_model_call_name(model, k));
                fprintf(f, ", \"op\": ");
                json_string(f, ek_model_call_op(model, k));
                fprintf(f, ", \"seconds\": %.9g}", profile_sum[k] / repeat);
            }
            fprintf(f, "\n]}\n");
            fclose(f);
        }
    }
    if (!status) {
        qsort(times, (size_t)repeat, sizeof(double), cmp_double);
        double sum = 0.0;
        for (int r = 0; r < repeat; r++) sum += times[r];
        int p90 = (int)(0.9 * (repeat - 1) + 0.5);
        printf("{\"isa\": \"%s\", \"threads\": %d, \"warmup\": %d, \"repeat\": %d, \"arena_bytes\": %zu, "
               "\"scratch_bytes\": %zu, \"max_rss_kb\": %ld, "
               "\"latency_ms\": {\"min\": %.6f, \"median\": %.6f, \"p90\": %.6f, \"mean\": %.6f}}\n",
               ek_model_isa(model), threads, warmup, repeat, ek_model_arena_bytes(model), ek_model_scratch_bytes(model),
               peak_rss_kb(),
               1e3 * times[0], 1e3 * (repeat % 2 ? times[repeat / 2] : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2])),
               1e3 * times[p90], 1e3 * sum / repeat);
    }
done:
    for (int i = 0; i < MAX_IO; i++) {
        free(in_bufs[i]);
        free(out_bufs[i]);
    }
    for (int k = 0; k < n_in; k++) free((void *)ins[k].name);
    for (int k = 0; k < n_out; k++) free((void *)outs[k].name);
    free(times);
    free(profile);
    free(profile_sum);
    ek_model_free(model);
    free(blob);
    return status;
}
