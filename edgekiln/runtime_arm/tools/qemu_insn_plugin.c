/*
 * A qemu TCG plugin that counts executed guest instructions: the deterministic cost measure
 * for comparing kernels under qemu-aarch64, where wall time means nothing.
 *
 *   qemu-aarch64 -plugin ./libinsn.so -d plugin ./program   ->  qemu log (stderr): "insns: N"
 *   qemu-aarch64 -plugin ./libinsn.so,out=trace.txt,watch=113,watch=17733 ./program
 *
 * Each translated block gets an inline "counter += n_insns" op, so the count is exact for
 * single-threaded guests and costs little (threads share the counter without atomics, so a
 * multi-threaded count is approximate).
 *
 * Per-call attribution: with `out=FILE`, every system call whose number is `watch`ed is written
 * to FILE as "syscall NUM ARG1 COUNT", COUNT being the instructions executed so far (the block
 * ending in the `svc` included), and the total as "insns N" at exit.  The instructions between
 * two events belong to the guest code between them: ek_run --mark-calls brackets its measured
 * run with a marker syscall, and the runtime's per-call profile reads the clock (a syscall under
 * qemu-user 7.x, which maps no vDSO) before and after each kernel call.
 *
 * Debian ships qemu's plugin API (qemu_plugin_* in the qemu-user binary) but not its header,
 * so the few entry points used are declared here (QEMU_PLUGIN_VERSION 1, as in qemu 7.x/8.x;
 * the binary checks the version we export).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_WATCHED 16

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t; /* only passed through */
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                                              uint64_t a6, uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_outs(const char *string);

EXPORT int qemu_plugin_version = 1;

static uint64_t insn_count;
static FILE *trace;              /* out=FILE, or NULL: only the total, on the qemu log */
static int64_t watched[MAX_WATCHED];
static int n_watched;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    (void)id, (void)vcpu, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    for (int i = 0; i < n_watched; i++)
        if (watched[i] == num) {
            fprintf(trace, "syscall %" PRId64 " %" PRIu64 " %" PRIu64 "\n", num, a1, insn_count);
            return;
        }
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    if (trace) {
        fprintf(trace, "insns %" PRIu64 "\n", insn_count);
        fclose(trace);
        trace = NULL;
        return;
    }
    char line[64];
    snprintf(line, sizeof line, "insns: %" PRIu64 "\n", insn_count);
    qemu_plugin_outs(line);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
                               char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) {
            trace = fopen(argv[i] + 4, "w");
            if (!trace) return -1;
        } else if (!strncmp(argv[i], "watch=", 6) && n_watched < MAX_WATCHED) {
            watched[n_watched++] = strtoll(argv[i] + 6, NULL, 10);
        } else {
            return -1; /* qemu reports the plugin failed to install */
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    if (trace && n_watched) qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
