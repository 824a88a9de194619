/* test_threadpool.c — the worker pool (threadpool.h): every task runs exactly once, run() returns only after
 * all tasks finished, a NULL pool runs inline in order, many back-to-back jobs (races show up under ASan /
 * repeated runs), two threads calling run() on one pool, and sizes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "test_util.h"

typedef struct {
    atomic_int *hits;  /* [n] per-task run counts */
    int *order;        /* inline-order record (NULL pool only) */
    atomic_int pos;
} count_ctx;

static void count_task(void *v, int t) {
    count_ctx *c = v;
    atomic_fetch_add(&c->hits[t], 1);
    if (c->order) c->order[atomic_fetch_add(&c->pos, 1)] = t;
}

static void test_null_pool_inline(void) {
    enum { N = 37 };
    atomic_int hits[N];
    int order[N];
    for (int i = 0; i < N; i++) atomic_init(&hits[i], 0);
    count_ctx c = {hits, order, 0};
    dsv4_threadpool_run(NULL, count_task, &c, N);
    for (int i = 0; i < N; i++) CHECK(order[i] == i && atomic_load(&hits[i]) == 1, "task %d", i);
    CHECK(dsv4_threadpool_size(NULL) == 1, "NULL size");
    dsv4_threadpool_run(NULL, count_task, &c, 0); /* no tasks: no call */
}

static void test_each_task_once(void) {
    static const int sizes[] = {1, 2, 3, 4, 8};
    static const int ntask[] = {0, 1, 2, 3, 7, 64, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        dsv4_threadpool *p;
        CHECK(dsv4_threadpool_create(sizes[s], &p, NULL) == DSV4_OK, "create %d", sizes[s]);
        CHECK(dsv4_threadpool_size(p) == sizes[s], "size");
        for (size_t t = 0; t < sizeof ntask / sizeof ntask[0]; t++) {
            int n = ntask[t];
            atomic_int *hits = calloc((size_t)n + 1, sizeof *hits);
            for (int i = 0; i < n; i++) atomic_init(&hits[i], 0);
            count_ctx c = {hits, NULL, 0};
            for (int rep = 0; rep < 3; rep++) dsv4_threadpool_run(p, count_task, &c, n);
            int bad = 0;
            for (int i = 0; i < n; i++) bad += atomic_load(&hits[i]) != 3;
            CHECK(bad == 0, "pool %d, %d tasks: %d tasks not run exactly 3 times", sizes[s], n, bad);
            free(hits);
        }
        dsv4_threadpool_destroy(p);
    }
}

/* Non-atomic writes by tasks must be visible to the caller after run() returns. */
typedef struct { long *out; int reps; } sum_ctx;
static void sum_task(void *v, int t) {
    sum_ctx *c = v;
    long s = 0;
    for (int i = 0; i <= t * c->reps; i++) s += i;
    c->out[t] = s;
}

static void test_many_jobs_visibility(void) {
    dsv4_threadpool *p;
    CHECK(dsv4_threadpool_create(4, &p, NULL) == DSV4_OK, "create");
    long out[16];
    int bad = 0;
    for (int job = 0; job < 2000; job++) {
        memset(out, 0, sizeof out);
        sum_ctx c = {out, job % 5};
        dsv4_threadpool_run(p, sum_task, &c, 16);
        for (int t = 0; t < 16; t++) {
            long n = (long)t * (job % 5);
            bad += out[t] != n * (n + 1) / 2;
        }
    }
    CHECK(bad == 0, "%d wrong results", bad);
    dsv4_threadpool_destroy(p);
}

typedef struct { dsv4_threadpool *p; int bad; } caller_arg;
static void *caller_main(void *v) {
    caller_arg *a = v;
    for (int job = 0; job < 300; job++) {
        atomic_int hits[20];
        for (int i = 0; i < 20; i++) atomic_init(&hits[i], 0);
        count_ctx c = {hits, NULL, 0};
        dsv4_threadpool_run(a->p, count_task, &c, 20);
        for (int i = 0; i < 20; i++) a->bad += atomic_load(&hits[i]) != 1;
    }
    return NULL;
}

static void test_two_callers(void) {
    dsv4_threadpool *p;
    CHECK(dsv4_threadpool_create(3, &p, NULL) == DSV4_OK, "create");
    caller_arg a = {p, 0}, b = {p, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, caller_main, &a);
    pthread_create(&tb, NULL, caller_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.bad == 0 && b.bad == 0, "concurrent callers: %d %d", a.bad, b.bad);
    dsv4_threadpool_destroy(p);
}

static void test_default_size(void) {
    dsv4_threadpool *p;
    CHECK(dsv4_threadpool_create(0, &p, NULL) == DSV4_OK, "create default");
    CHECK(dsv4_threadpool_size(p) >= 1, "default size %d", dsv4_threadpool_size(p));
    dsv4_threadpool_destroy(p);
    dsv4_threadpool_destroy(NULL);
    dsv4_err err;
    CHECK(dsv4_threadpool_create(100000, &p, &err) == DSV4_ERR_INVALID_ARG && p == NULL, "absurd size refused");
}

int main(void) {
    RUN(test_null_pool_inline);
    RUN(test_each_task_once);
    RUN(test_many_jobs_visibility);
    RUN(test_two_callers);
    RUN(test_default_size);
    return test_finish();
}
