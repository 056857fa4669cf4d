/*
 * Jobs posted while the pool's workers poll, fall asleep or are about to (converters/delegate/src/
 * pool.c as it is; built and run by test_delegate_pool.py).  The caller posts a job without a full
 * fence, so it can miss a worker announcing its sleep at that moment and must wake it while it
 * waits; a missed wake-up hangs the job (the test's timeout).  Gaps between jobs are random, from
 * none to past the workers' spin, for pools of 2 and 3 threads; every job must run each share once.
 * Prints "threads N jobs JOBS wrong WRONG" per pool.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"

#define JOBS 1500

typedef struct {
  int ran[3];
  int nshares;
} Job;

static void count(void* arg, int share, int nshares) {
  Job* j = (Job*)arg;
  if (share >= 0 && share < 3) __atomic_add_fetch(&j->ran[share], 1, __ATOMIC_RELAXED);
  if (share == 0) j->nshares = nshares;
}

int main(void) {
  srand(1);
  for (int n = 2; n <= 3; n++) {
    EdgePool* pool = edge_pool_create(n);
    if (!pool || edge_pool_size(pool) != n) return 1;
    long wrong = 0;
    for (int i = 0; i < JOBS; i++) {
      /* 0 to ~1.2 ms: polling workers, workers yielding, asleep, and the moments in between */
      const struct timespec gap = {0, (rand() % 1200) * 1000L};
      if (rand() % 2) nanosleep(&gap, NULL); /* else back to back */
      Job j = {{0, 0, 0}, 0};
      edge_pool_run(pool, count, &j);
      for (int s = 0; s < 3; s++) wrong += j.ran[s] != (s < n);
      wrong += j.nshares != n;
    }
    edge_pool_destroy(pool);
    printf("threads %d jobs %d wrong %ld\n", n, JOBS, wrong);
  }
  return 0;
}
