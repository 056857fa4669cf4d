/* Fork-join thread pool (see pool.h).  Why not OpenMP: the library must link only libc/libm and
 * must not bring a second OpenMP runtime into a process that may already host one. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#define SPIN_ROUNDS 20000

struct EdgePool {
  int n;
  pthread_t* threads;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned gen;    /* bumped (atomically) for every job */
  int pending;     /* workers still running the current job */
  int stop;
  EdgeTaskFn fn;
  void* arg;
};

typedef struct {
  EdgePool* pool;
  int share;
} WorkerArg;

static void* worker(void* varg) {
  WorkerArg* wa = (WorkerArg*)varg;
  EdgePool* p = wa->pool;
  const int share = wa->share;
  free(wa);
  unsigned seen = 0;
  for (;;) {
    unsigned g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
    for (int i = 0; g == seen && i < SPIN_ROUNDS; i++) {
      if ((i & 63) == 63) sched_yield();
      g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
    }
    if (g == seen) {
      pthread_mutex_lock(&p->mu);
      while ((g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE)) == seen && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
      pthread_mutex_unlock(&p->mu);
    }
    if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) return NULL;
    seen = g;
    p->fn(p->arg, share, p->n);
    __atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL);
  }
}

EdgePool* edge_pool_create(int nthreads) {
  if (nthreads < 2) return NULL;
  EdgePool* p = (EdgePool*)calloc(1, sizeof(EdgePool));
  if (!p) return NULL;
  p->n = nthreads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->threads = (pthread_t*)calloc((size_t)nthreads, sizeof(pthread_t));
  if (!p->threads) {
    free(p);
    return NULL;
  }
  for (int i = 1; i < nthreads; i++) {
    WorkerArg* wa = (WorkerArg*)malloc(sizeof(WorkerArg));
    wa->pool = p;
    wa->share = i;
    if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
      free(wa);
      p->n = i; /* run with the threads we got */
      break;
    }
  }
  return p;
}

int edge_pool_size(const EdgePool* p) { return p ? p->n : 1; }

void edge_pool_run(EdgePool* p, EdgeTaskFn fn, void* arg) {
  if (!p || p->n < 2) {
    fn(arg, 0, 1);
    return;
  }
  p->fn = fn;
  p->arg = arg;
  __atomic_store_n(&p->pending, p->n - 1, __ATOMIC_RELEASE);
  pthread_mutex_lock(&p->mu);
  __atomic_add_fetch(&p->gen, 1, __ATOMIC_ACQ_REL);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  fn(arg, 0, p->n);
  for (int i = 0; __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0; i++)
    if ((i & 255) == 255) sched_yield();
}

void edge_pool_destroy(EdgePool* p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
  __atomic_add_fetch(&p->gen, 1, __ATOMIC_ACQ_REL);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->threads);
  free(p);
}
