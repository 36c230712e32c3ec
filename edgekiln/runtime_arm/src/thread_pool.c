/*
 * A small pthread pool for the parallel kernels.  Workers are started once (set_threads); a job
 * is `ntasks` independent tasks claimed one at a time by the workers and the calling thread
 * alike, so the caller never idles and load imbalance evens out.  Each executing thread owns
 * one scratch block, so results do not depend on which thread ran which task.
 *
 * Latency is what matters here: a model run is a chain of short calls (tens of microseconds
 * each), and a futex wake-up costs about as much.  So:
 *   - workers spin (with the CPU's pause hint) for a while after a job before they sleep on
 *     the condition variable; the caller only takes the mutex when one of them sleeps;
 *   - the caller waits for the *tasks* to finish, not for every worker to wake up: a worker
 *     that comes late finds nothing left to claim and the caller has already returned;
 *   - the task counter ("ticket") holds the job's generation in its high 32 bits and the tasks
 *     left in its low 32; a claim is a compare-and-swap that checks the generation the worker
 *     saw, and the job's fields are read only after a successful claim (the job cannot end,
 *     so the caller cannot overwrite them, before the claimed task is done): a late worker can
 *     never run a newer job's task with an older job's function;
 *   - the caller also spins before it sleeps on the last tasks.
 * Fields written by different threads sit on their own cache lines (no false sharing).
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "ek_internal.h"

/* How long a thread spins before it sleeps: about the gap between two parallel calls of a
 * typical model (a few short serial calls), short enough not to burn a shared core. */
#define EK_SPIN_NS 50000

#define EK_CACHE_LINE 64
#define EK_LINE_ALIGNED __attribute__((aligned(EK_CACHE_LINE)))

struct ek_pool {
    /* read-mostly: the job, written by the caller before it publishes a new generation */
    int threads, started;
    pthread_t *workers;
    ek_task_fn fn;
    void *ctx;
    uint8_t *scratch;
    size_t stride;
    uint64_t ntasks;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    /* written by the caller once per job */
    EK_LINE_ALIGNED uint32_t generation;
    int stop;
    /* the task counter: (generation << 32) | tasks not yet claimed */
    EK_LINE_ALIGNED uint64_t ticket;
    /* tasks finished in the current job */
    EK_LINE_ALIGNED uint64_t done;
    /* who sleeps (changed under mu, read without it) */
    EK_LINE_ALIGNED int sleeping_workers;
    int caller_sleeping;
};

typedef struct {
    ek_pool *pool;
    int index;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins (with the pause hint) until cond(p, arg) holds or EK_SPIN_NS pass; returns whether it
 * holds.  No sched_yield: on a loaded machine a yielding thread is runnable but queued behind
 * other processes for a whole time slice, while a thread sleeping on the condition variable
 * is woken with the scheduler's wake-up preference -- so after the spin window we sleep. */
static int spin_until(int (*cond)(ek_pool *, uint64_t), ek_pool *p, uint64_t arg) {
    int64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        if (cond(p, arg)) return 1;
        cpu_relax();
        if ((i & 255) == 0) { /* the clock is read rarely: a vDSO call still costs ~20 ns */
            int64_t t = now_ns();
            if (!deadline) deadline = t + EK_SPIN_NS;
            else if (t > deadline) return 0;
        }
    }
}

static int new_job(ek_pool *p, uint64_t seen) {
    return __atomic_load_n(&p->generation, __ATOMIC_ACQUIRE) != (uint32_t)seen ||
           __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE);
}

static int job_done(ek_pool *p, uint64_t ntasks) { return __atomic_load_n(&p->done, __ATOMIC_ACQUIRE) >= ntasks; }

/* Claims and runs tasks of job `gen` until none is left (or a newer job replaced it). */
static void run_tasks(ek_pool *p, int thread, uint32_t gen) {
    for (;;) {
        uint64_t t = __atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE);
        do {
            if ((uint32_t)(t >> 32) != gen || (uint32_t)t == 0) return;
        } while (!__atomic_compare_exchange_n(&p->ticket, &t, t - 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
        /* job `gen`'s fields: it cannot end, so the caller cannot replace them, before this task does */
        uint64_t ntasks = p->ntasks;
        p->fn(p->ctx, (int64_t)(ntasks - (uint32_t)t), p->scratch + (size_t)thread * p->stride);
        if (__atomic_add_fetch(&p->done, 1, __ATOMIC_SEQ_CST) == ntasks &&
            __atomic_load_n(&p->caller_sleeping, __ATOMIC_SEQ_CST)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg) {
    worker_arg *w = arg;
    ek_pool *p = w->pool;
    int index = w->index;
    free(w);
    uint32_t seen = 0;
    for (;;) {
        if (!spin_until(new_job, p, seen)) {
            pthread_mutex_lock(&p->mu);
            __atomic_add_fetch(&p->sleeping_workers, 1, __ATOMIC_SEQ_CST);
            while (!new_job(p, seen)) pthread_cond_wait(&p->start_cv, &p->mu);
            __atomic_sub_fetch(&p->sleeping_workers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&p->mu);
        }
        if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) break;
        seen = __atomic_load_n(&p->generation, __ATOMIC_ACQUIRE);
        run_tasks(p, index, seen);
    }
    return NULL;
}

ek_pool *ek_pool_create(int threads) {
    ek_pool *p;
    if (posix_memalign((void **)&p, EK_CACHE_LINE, sizeof *p)) return NULL;
    *p = (ek_pool){0};
    p->threads = threads;
    p->workers = calloc((size_t)threads, sizeof(pthread_t));
    if (!p->workers || pthread_mutex_init(&p->mu, NULL) || pthread_cond_init(&p->start_cv, NULL) ||
        pthread_cond_init(&p->done_cv, NULL)) {
        free(p->workers);
        free(p);
        return NULL;
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (!w) break;
        w->pool = p;
        w->index = i;
        if (pthread_create(&p->workers[i - 1], NULL, worker_main, w)) {
            free(w);
            break;
        }
        p->started++;
    }
    if (p->started != threads - 1) {
        ek_pool_destroy(p);
        return NULL;
    }
    return p;
}

void ek_pool_destroy(ek_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stop, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

void ek_pool_run(ek_pool *p, int64_t ntasks, ek_task_fn fn, void *ctx, uint8_t *scratch, size_t stride) {
    uint32_t gen = __atomic_load_n(&p->generation, __ATOMIC_RELAXED) + 1;
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = (uint64_t)ntasks;
    p->scratch = scratch;
    p->stride = stride;
    __atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
    /* the ticket releases the fields above to whoever claims a task from it */
    __atomic_store_n(&p->ticket, (uint64_t)gen << 32 | (uint64_t)ntasks, __ATOMIC_SEQ_CST);
    __atomic_store_n(&p->generation, gen, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->sleeping_workers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->start_cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, 0, gen);
    if (spin_until(job_done, p, (uint64_t)ntasks)) return;
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->caller_sleeping, 1, __ATOMIC_SEQ_CST);
    while (!job_done(p, (uint64_t)ntasks)) pthread_cond_wait(&p->done_cv, &p->mu);
    __atomic_store_n(&p->caller_sleeping, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&p->mu);
}

void ek_parallel(ek_model *m, int64_t ntasks, ek_task_fn fn, void *ctx) {
    /* the ticket holds 32 bits of task index; no kernel comes near that, but stay correct */
    if (m->pool && ntasks > 1 && ntasks <= (int64_t)0xffffffffu) {
        ek_pool_run(m->pool, ntasks, fn, ctx, m->scratch, m->scratch_per_thread);
        return;
    }
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t, m->scratch);
}

typedef struct {
    ek_range_fn fn;
    void *ctx;
    int64_t n, chunk;
} range_job;

static void range_task(void *ctx, int64_t t, uint8_t *scratch) {
    (void)scratch;
    const range_job *j = ctx;
    int64_t begin = t * j->chunk, end = begin + j->chunk < j->n ? begin + j->chunk : j->n;
    j->fn(j->ctx, begin, end);
}

void ek_parallel_range(ek_model *m, int64_t n, int64_t min_chunk, ek_range_fn fn, void *ctx) {
    /* a few chunks per thread even out uneven progress; each at least min_chunk elements (the
     * split must pay for itself) and a multiple of 64 (no two threads write one cache line) */
    int64_t chunks = m->pool ? 4 * (int64_t)m->threads : 1;
    if (chunks > n / (min_chunk > 0 ? min_chunk : 1)) chunks = n / (min_chunk > 0 ? min_chunk : 1);
    if (chunks < 2) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    int64_t chunk = ((n + chunks - 1) / chunks + 63) & ~(int64_t)63;
    range_job j = {fn, ctx, n, chunk};
    ek_parallel(m, (n + chunk - 1) / chunk, range_task, &j);
}
