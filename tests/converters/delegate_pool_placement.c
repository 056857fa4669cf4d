/*
 * Where the sparse delegate's pool workers run (converters/delegate/src/pool.c, compiled in as it
 * is; built and run by test_delegate_pool.py).
 * - For each of 5 fresh pools, runs one job at once and prints "ROUND CALLER_CPU WORKER_CPU
 *   WORKER_CPUS ALLOWED_CPUS": the CPUs the two shares ran on, how many CPUs the worker may use
 *   while running the job, and how many the process may use.
 * - Then, 5 times on one pool, moves the caller onto the CPU its worker last ran on and runs three
 *   jobs, printing "moved JOB CALLER_CPU WORKER_CPU WORKER_CPUS ALLOWED_CPUS" for each.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#include "pool.h"

static int cpu_of[2], worker_cpus;

static void where(void* arg, int share, int nshares) {
  (void)arg, (void)nshares;
  cpu_of[share] = sched_getcpu();
  if (share == 1) {
    cpu_set_t set;
    worker_cpus = pthread_getaffinity_np(pthread_self(), sizeof(set), &set) == 0 ? CPU_COUNT(&set) : -1;
  }
}

int main(void) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return 2;
  for (int round = 0; round < 5; round++) {
    EdgePool* pool = edge_pool_create(2);
    if (!pool || edge_pool_size(pool) != 2) return 1;
    edge_pool_run(pool, where, NULL);
    printf("%d %d %d %d %d\n", round, cpu_of[0], cpu_of[1], worker_cpus, CPU_COUNT(&allowed));
    edge_pool_destroy(pool);
  }
  EdgePool* pool = edge_pool_create(2);
  if (!pool) return 1;
  edge_pool_run(pool, where, NULL);
  for (int round = 0; round < 5 && CPU_COUNT(&allowed) > 1; round++) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu_of[1], &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) return 3; /* the caller joins its worker */
    for (int job = 0; job < 3; job++) {
      edge_pool_run(pool, where, NULL);
      printf("moved %d %d %d %d %d\n", job, cpu_of[0], cpu_of[1], worker_cpus, CPU_COUNT(&allowed));
    }
    if (sched_setaffinity(0, sizeof(allowed), &allowed) != 0) return 3;
  }
  edge_pool_destroy(pool);
  return 0;
}
