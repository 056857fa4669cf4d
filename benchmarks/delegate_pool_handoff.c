/*
 * Hand-off cost of the sparse delegate's thread pool (converters/delegate/src/pool.c, compiled in
 * as it is): TSC cycles per edge_pool_run of an empty job on 2 threads, and of a job whose shares
 * meet at two barriers (the shape of a three-op chain, run_chain in delegate.c): back to back
 * (best of 5 rounds of 100000 jobs; the worker is polling, as between the ops of an invoke), and
 * spaced by ~5000 cycles of work on the caller (median of 2000 jobs; as between invokes).  Built
 * and run by benchmarks/delegate_profile.py (x86-64); prints "name cycles" lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <x86intrin.h>

#include "pool.h"

static EdgePool* pool;

static void empty_job(void* arg, int share, int nshares) {
  (void)arg, (void)share, (void)nshares;
}

static void two_barriers(void* arg, int share, int nshares) {
  (void)arg, (void)share, (void)nshares;
  edge_pool_barrier(pool);
  edge_pool_barrier(pool);
}

enum { BOUNCES = 10000 };
static _Alignas(64) unsigned ping;
static _Alignas(64) unsigned pong;
static unsigned bounce_base;
static unsigned long long bounce_cycles;

static void bounce_job(void* arg, int share, int nshares) {
  (void)arg, (void)nshares;
  const unsigned base = bounce_base;
  if (share == 0) {
    const unsigned long long t0 = __rdtsc();
    for (unsigned i = base + 1; i <= base + BOUNCES; i++) {
      __atomic_store_n(&ping, i, __ATOMIC_RELEASE);
      while (__atomic_load_n(&pong, __ATOMIC_ACQUIRE) != i) _mm_pause();
    }
    bounce_cycles = __rdtsc() - t0;
  } else {
    for (unsigned i = base + 1; i <= base + BOUNCES; i++) {
      while (__atomic_load_n(&ping, __ATOMIC_ACQUIRE) != i) _mm_pause();
      __atomic_store_n(&pong, i, __ATOMIC_RELEASE);
    }
  }
}

static double line_round_trip(void) {
  double best = 1e30;
  for (int round = 0; round < 5; round++, bounce_base += BOUNCES) {
    edge_pool_run(pool, bounce_job, NULL);
    const double c = (double)bounce_cycles / BOUNCES;
    if (c < best) best = c;
  }
  return best;
}

static double per_job(EdgeTaskFn fn) {
  double best = 1e30;
  for (int round = 0; round < 5; round++) {
    const unsigned long long t0 = __rdtsc();
    for (int i = 0; i < 100000; i++) edge_pool_run(pool, fn, NULL);
    const double c = (double)(__rdtsc() - t0) / 100000;
    if (c < best) best = c;
  }
  return best;
}

static int cmp_u64(const void* a, const void* b) {
  const unsigned long long x = *(const unsigned long long*)a, y = *(const unsigned long long*)b;
  return x < y ? -1 : x > y;
}

static double spaced(EdgeTaskFn fn) {
  static unsigned long long t[2000];
  for (int i = 0; i < 2000; i++) {
    const unsigned long long t0 = __rdtsc();
    edge_pool_run(pool, fn, NULL);
    t[i] = __rdtsc() - t0;
    for (const unsigned long long w = __rdtsc(); __rdtsc() - w < 5000;) {
    }
  }
  qsort(t, 2000, sizeof(t[0]), cmp_u64);
  return (double)t[1000];
}

int main(void) {
  pool = edge_pool_create(2);
  if (!pool || edge_pool_size(pool) != 2) return 1;
  printf("empty_job %.0f\n", per_job(empty_job));
  printf("two_barriers %.0f\n", per_job(two_barriers));
  printf("empty_job_spaced %.0f\n", spaced(empty_job));
  printf("two_barriers_spaced %.0f\n", spaced(two_barriers));
  printf("line_round_trip %.0f\n", line_round_trip());
  edge_pool_destroy(pool);
  return 0;
}
