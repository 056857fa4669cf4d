/*
 * Two threads run jobs on one pool at once (converters/delegate/src/pool.c as it is; built and run
 * by test_delegate_pool.py), as two interpreters sharing the delegate do.  Every job counts the
 * shares it ran; after edge_pool_run returns, a job run on the pool must have run each of its
 * shares exactly once, and one that found the pool busy must have run share 0 of 1 alone.
 * Prints "pool POOL_JOBS alone ALONE_JOBS wrong WRONG_JOBS".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

#include "pool.h"

#define RUNS 200000

typedef struct {
  int ran[2];
  int nshares;
} Job;

static EdgePool* pool;
static long pool_jobs, alone_jobs, wrong_jobs;

static void count(void* arg, int share, int nshares) {
  Job* j = (Job*)arg;
  if (share >= 0 && share < 2) __atomic_add_fetch(&j->ran[share], 1, __ATOMIC_RELAXED);
  if (share == 0) j->nshares = nshares;
}

static void* caller(void* unused) {
  (void)unused;
  long pooled = 0, alone = 0, wrong = 0;
  for (int i = 0; i < RUNS; i++) {
    Job j = {{0, 0}, 0};
    edge_pool_run(pool, count, &j);
    if (j.nshares == 2 && j.ran[0] == 1 && j.ran[1] == 1)
      pooled++;
    else if (j.nshares == 1 && j.ran[0] == 1 && j.ran[1] == 0)
      alone++;
    else
      wrong++;
  }
  __atomic_add_fetch(&pool_jobs, pooled, __ATOMIC_RELAXED);
  __atomic_add_fetch(&alone_jobs, alone, __ATOMIC_RELAXED);
  __atomic_add_fetch(&wrong_jobs, wrong, __ATOMIC_RELAXED);
  return NULL;
}

int main(void) {
  pool = edge_pool_create(2);
  if (!pool || edge_pool_size(pool) != 2) return 1;
  pthread_t other;
  if (pthread_create(&other, NULL, caller, NULL) != 0) return 2;
  caller(NULL);
  pthread_join(other, NULL);
  edge_pool_destroy(pool);
  printf("pool %ld alone %ld wrong %ld\n", pool_jobs, alone_jobs, wrong_jobs);
  return 0;
}
