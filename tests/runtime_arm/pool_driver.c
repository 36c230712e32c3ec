/*
 * Stress driver for runtime_arm/src/thread_pool.c (test_thread_pool.py).
 *
 *   pool_driver JOBS
 *
 * For pool sizes 2..5 it runs JOBS jobs back to back with task counts 1..200 and a per-task
 * amount of work that varies, so workers arrive late, spin, sleep and wake in every order.
 * Each job checks that every task index ran exactly once and that no task of an older job ran
 * with the newer job's context (the failure a late worker would cause).  Between some jobs
 * the caller sleeps past the spin window, so the condition-variable path runs too.
 * Prints "ok" and exits 0, or names the first violation and exits 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ek_internal.h"

#define MAX_TASKS 200

typedef struct {
    int job;
    int hits[MAX_TASKS];
} job_ctx;

static int current_job;
static volatile int failed;

static void task(void *ctx, int64_t t, uint8_t *scratch) {
    job_ctx *j = ctx;
    if (j->job != __atomic_load_n(&current_job, __ATOMIC_RELAXED) || t < 0 || t >= MAX_TASKS) failed = 1;
    scratch[0] = (uint8_t)t; /* each thread owns its scratch block: a shared one would race (TSan) */
    for (volatile int spin = 0; spin < (int)(t % 7) * 400; spin++) {
    }
    __atomic_add_fetch(&j->hits[t], 1, __ATOMIC_RELAXED);
}

int main(int argc, char **argv) {
    int jobs = argc > 1 ? atoi(argv[1]) : 2000;
    static uint8_t scratch[8 * 64];
    for (int threads = 2; threads <= 5; threads++) {
        ek_pool *pool = ek_pool_create(threads);
        if (!pool) {
            puts("could not start the pool");
            return 1;
        }
        for (int job = 0; job < jobs; job++) {
            job_ctx ctx = {job, {0}};
            int ntasks = 1 + (job * 37) % MAX_TASKS;
            __atomic_store_n(&current_job, job, __ATOMIC_RELAXED);
            ek_pool_run(pool, ntasks, task, &ctx, scratch, 64);
            for (int t = 0; t < ntasks; t++)
                if (ctx.hits[t] != 1) {
                    printf("threads %d job %d: task %d ran %d times\n", threads, job, t, ctx.hits[t]);
                    return 1;
                }
            if (failed) {
                printf("threads %d job %d: a task ran with another job's context\n", threads, job);
                return 1;
            }
            if (job % 97 == 0) { /* past the spin window: the workers go to sleep */
                struct timespec pause = {0, 1000000};
                nanosleep(&pause, NULL);
            }
        }
        ek_pool_destroy(pool);
    }
    puts("ok");
    return 0;
}
