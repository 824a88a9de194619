/* threadpool.h — a small fixed-size pool of worker threads for the CPU backend's parallel loops.
 * One job at a time: dsv4_threadpool_run blocks until every task of the job has run. */
#ifndef DSV4_CORE_THREADPOOL_H
#define DSV4_CORE_THREADPOOL_H

#include "core/status.h"
#include "dsv4_limits.h"   /* DSV4_THREADS_MAX */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_threadpool dsv4_threadpool;


/* n_threads <= 0 means the number of online CPUs. The calling thread also works during run(). */
dsv4_status dsv4_threadpool_create(int n_threads, dsv4_threadpool **out, dsv4_err *err);
void dsv4_threadpool_destroy(dsv4_threadpool *pool);
int dsv4_threadpool_size(const dsv4_threadpool *pool);   /* 1 for a NULL pool */

/* Runs fn(ctx, task) for every task in [0, n_tasks) and returns when all have finished. A NULL pool
 * runs the tasks inline in order. Tasks must not call run() on the same pool. Results must not depend on
 * which thread ran a task (the CPU reference is deterministic regardless of thread count). */
void dsv4_threadpool_run(dsv4_threadpool *pool, void (*fn)(void *ctx, int task), void *ctx, int n_tasks);

#ifdef __cplusplus
}
#endif
#endif
