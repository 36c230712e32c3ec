/*
 * A small pthread pool for the parallel kernels.  Workers are started once (set_threads) and
 * sleep on a condition variable between jobs; a job is `ntasks` independent tasks taken from
 * a shared atomic counter by the workers and the calling thread alike, so the caller never
 * idles and load imbalance evens out.  Each executing thread owns one scratch block.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>

#include "ek_internal.h"

struct ek_pool {
    int threads;
    pthread_t *workers;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    unsigned long generation;
    int stop, active;
    ek_task_fn fn;
    void *ctx;
    int64_t ntasks, next;
    uint8_t *scratch;
    size_t stride;
};

typedef struct {
    ek_pool *pool;
    int index;
} worker_arg;

static void run_tasks(ek_pool *p, int thread) {
    uint8_t *scratch = p->scratch + (size_t)thread * p->stride;
    for (;;) {
        int64_t t = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (t >= p->ntasks) break;
        p->fn(p->ctx, t, scratch);
    }
}

static void *worker_main(void *arg) {
    worker_arg *w = arg;
    ek_pool *p = w->pool;
    int index = w->index;
    free(w);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->generation == seen && !p->stop) pthread_cond_wait(&p->start_cv, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, index);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ek_pool *ek_pool_create(int threads) {
    ek_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
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
    p->stop = 1;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->next = 0;
    p->scratch = scratch;
    p->stride = stride;
    p->active = p->started;
    p->generation++;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void ek_parallel(ek_model *m, int64_t ntasks, ek_task_fn fn, void *ctx) {
    if (m->pool && ntasks > 1) {
        ek_pool_run(m->pool, ntasks, fn, ctx, m->scratch, m->scratch_per_thread);
        return;
    }
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t, m->scratch);
}
