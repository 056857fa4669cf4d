/* Fork-join thread pool (see pool.h).  Why not OpenMP: the library must link only libc/libm and
 * must not bring a second OpenMP runtime into a process that may already host one. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* After a job a worker first polls with the CPU's pause hint (a batch-1 invoke is a few
 * microseconds: the next job must start within ~100 ns, which a sleeping thread cannot), then
 * polls while yielding the core to other threads, then sleeps on the condvar.  A hand-off can
 * still be slow on a VM (the worker's vCPU descheduled), and two vCPUs computing at once can each
 * run slower than one alone ("Pool halves in steady state" in docs/results/delegate_profile.md);
 * other polling policies were no better across processes, so the delegate times the pool against
 * one thread before using it. */
#ifndef SPIN_PAUSE_ROUNDS /* overridable for tests: with 0 and 0 workers sleep after every job */
#define SPIN_PAUSE_ROUNDS 4000
#endif
#ifndef SPIN_ROUNDS
#define SPIN_ROUNDS 20000
#endif

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

struct EdgePool {
  /* The line the workers poll: the caller writes it once per job, and it holds all a worker reads
   * to start one, so a hand-off costs one cache-line transfer.  With fn and arg on the next line
   * it cost two in a row, and the caller's locked exchange of `busy` on that line (which workers
   * had read) stalled it for a third: an empty job (hand-off and join) took 374 TSC cycles in the
   * profile at eab5c7a and 181 at a1d88ac, which has this layout. */
  _Alignas(64) unsigned gen; /* bumped for every job */
  int pending;               /* workers still running the current job */
  EdgeTaskFn fn;
  void* arg;
  int n;
  int stop;
  int sleepers; /* workers waiting (or about to wait) on cv */
  /* the caller's own fields */
  _Alignas(64) int busy; /* a job is running: a second caller (two interpreters sharing the delegate) runs alone */
  pthread_t caller;      /* the thread running the current job's share 0 */
  double late_us;        /* see edge_pool_late_us; written by the caller of a job only */
  pthread_t* threads;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* barrier among the n threads of a running job (edge_pool_barrier), on its own cache line */
  _Alignas(64) unsigned bar_count;
  unsigned bar_gen;
#ifdef __linux__
  /* Linux keeps a new thread on its creator's CPU and may later wake the caller onto a worker's
   * CPU; it moves one of them away only milliseconds later.  Meanwhile the shares of every job
   * take turns on one CPU (many times slower than one thread), and the delegate's thread trials
   * time exactly such jobs.  So a worker starts on the allowed CPUs minus the
   * caller's (and takes the whole set back once running), and a worker that finds itself on the
   * caller's CPU after a job moves off it for the next one (and takes the whole set back after
   * that).  Off the hand-off's path: the caller notes its CPU after its own share (sched_getcpu
   * reads the rseq area, ~10 cycles; the line is written only when the CPU changes), the worker
   * checks after its share.  These read-mostly fields keep their own cache lines. */
  _Alignas(64) int caller_cpu; /* the CPU the caller last ran a share on (atomic) */
  int placing;                 /* the process may use more than one CPU */
  cpu_set_t allowed;           /* the creating thread's CPUs */
#endif
};

typedef struct {
  EdgePool* pool;
  int share;
  int confined; /* started on `allowed` minus the creator's CPU */
} WorkerArg;

#ifdef __linux__
/* `away`: the pool's allowed CPUs without `cpu`; 0 when that leaves none */
static int cpus_except(const EdgePool* p, int cpu, cpu_set_t* away) {
  if (!p->placing || cpu < 0 || cpu >= CPU_SETSIZE) return 0;
  *away = p->allowed;
  CPU_CLR(cpu, away);
  return CPU_COUNT(away) > 0;
}
#endif

static void* worker(void* varg) {
  WorkerArg* wa = (WorkerArg*)varg;
  EdgePool* p = wa->pool;
  const int share = wa->share;
  const int confined = wa->confined;
  free(wa);
#ifdef __linux__
  pthread_setname_np(pthread_self(), "edge-pool"); /* shows in top and /proc: whose thread this is */
  /* running now, away from the creator's CPU: let the scheduler place it from here on */
  if (confined) pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &p->allowed);
  int widen = 0; /* confined after a job on the caller's CPU: widen again after the next one */
#endif
  unsigned seen = 0;
  for (;;) {
    unsigned g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
    for (int i = 0; g == seen && i < SPIN_PAUSE_ROUNDS; i++) {
      cpu_relax();
      g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
    }
    for (int i = 0; g == seen && i < SPIN_ROUNDS; i++) {
      if ((i & 63) == 63) sched_yield();
      g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
    }
    if (g == seen) {
      pthread_mutex_lock(&p->mu);
      /* announce the sleep (a locked increment) before the last look at gen, under the mutex:
       * edge_pool_run either sees the announcement when it posts the job or while it waits for the
       * job, and then broadcasts under the same mutex, so this wait cannot miss the job */
      __atomic_add_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
      while ((g = __atomic_load_n(&p->gen, __ATOMIC_SEQ_CST)) == seen && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
      __atomic_sub_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
      pthread_mutex_unlock(&p->mu);
    }
    if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) return NULL;
    seen = g;
    p->fn(p->arg, share, p->n);
    __atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL);
#ifdef __linux__
    if (p->placing) {
      if (widen) widen = pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &p->allowed) != 0;
      cpu_set_t away;
      const int here = sched_getcpu();
      if (here == __atomic_load_n(&p->caller_cpu, __ATOMIC_RELAXED) && cpus_except(p, here, &away) &&
          pthread_setaffinity_np(pthread_self(), sizeof(away), &away) == 0)
        widen = 1;
    }
#endif
  }
}

EdgePool* edge_pool_create(int nthreads) {
  if (nthreads < 2) return NULL;
  EdgePool* p = (EdgePool*)aligned_alloc(64, (sizeof(EdgePool) + 63) & ~(size_t)63);
  if (!p) return NULL;
  memset(p, 0, sizeof(EdgePool));
  p->n = nthreads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->threads = (pthread_t*)calloc((size_t)nthreads, sizeof(pthread_t));
  if (!p->threads) {
    free(p);
    return NULL;
  }
  pthread_attr_t attr;
  pthread_attr_t* attr_p = NULL;
#ifdef __linux__
  p->placing = pthread_getaffinity_np(pthread_self(), sizeof(p->allowed), &p->allowed) == 0 &&
               CPU_COUNT(&p->allowed) > 1;
  cpu_set_t away;
  p->caller_cpu = sched_getcpu();
  if (cpus_except(p, p->caller_cpu, &away) && pthread_attr_init(&attr) == 0) {
    if (pthread_attr_setaffinity_np(&attr, sizeof(away), &away) == 0)
      attr_p = &attr;
    else
      pthread_attr_destroy(&attr);
  }
#endif
  for (int i = 1; i < nthreads; i++) {
    WorkerArg* wa = (WorkerArg*)malloc(sizeof(WorkerArg));
    if (!wa) {
      p->n = i;
      break;
    }
    wa->pool = p;
    wa->share = i;
    wa->confined = attr_p != NULL;
    if (pthread_create(&p->threads[i], attr_p, worker, wa) != 0) {
      free(wa);
      p->n = i; /* run with the threads we got */
      break;
    }
  }
  if (attr_p) pthread_attr_destroy(attr_p);
  return p;
}

int edge_pool_size(const EdgePool* p) { return p ? p->n : 1; }

double edge_pool_late_us(const EdgePool* p) { return p ? p->late_us : 0.0; }

double edge_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static void wake_sleepers(EdgePool* p) {
  pthread_mutex_lock(&p->mu);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

void edge_pool_run(EdgePool* p, EdgeTaskFn fn, void* arg) {
  if (!p || p->n < 2 || __atomic_exchange_n(&p->busy, 1, __ATOMIC_ACQUIRE)) {
    fn(arg, 0, 1);
    return;
  }
  p->fn = fn;
  p->arg = arg;
  p->caller = pthread_self();
  __atomic_store_n(&p->pending, p->n - 1, __ATOMIC_RELAXED);
  /* A plain release store, not a locked increment: the workers poll this line, so a locked
   * instruction would stall the caller for a cache-line round trip to their CPUs (`line_round_trip`
   * in docs/results/delegate_profile.md) before it starts its own share;
   * the store drains while the caller computes.  Without a full fence this read of `sleepers` can
   * miss a worker going to sleep at this very moment; the wait below catches that one. */
  __atomic_store_n(&p->gen, __atomic_load_n(&p->gen, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
  int woken = __atomic_load_n(&p->sleepers, __ATOMIC_RELAXED) > 0;
  if (woken) wake_sleepers(p); /* only sleeping workers need the condvar */
  fn(arg, 0, p->n);
#ifdef __linux__
  if (p->placing) {
    const int here = sched_getcpu();
    if (here != __atomic_load_n(&p->caller_cpu, __ATOMIC_RELAXED)) __atomic_store_n(&p->caller_cpu, here, __ATOMIC_RELAXED);
  }
#endif
  double late_from = 0; /* the wait is long (a worker descheduled?): the caller's clock from then on */
  for (int i = 0; __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0; i++) {
    /* a worker that announced its sleep while the job was being posted: its announcement is a
     * locked increment, so it shows here; the caller's mutex lock makes the new gen visible to it
     * (with more than one worker, a later sleeper is woken within 256 rounds) */
    if ((!woken || (i & 255) == 255) && __atomic_load_n(&p->sleepers, __ATOMIC_ACQUIRE) > 0) {
      wake_sleepers(p);
      woken = 1;
    }
    cpu_relax();
    if ((i & 255) == 255) {
      if (i == 255) late_from = edge_now_us();
      sched_yield();
    }
  }
  if (late_from > 0) p->late_us += edge_now_us() - late_from;
  __atomic_store_n(&p->busy, 0, __ATOMIC_RELEASE);
}

void edge_pool_barrier(EdgePool* p) {
  if (!p || p->n < 2) return;
  /* read the generation before arriving: the last thread to arrive resets the count, then
   * advances the generation, which releases the others */
  const unsigned g = __atomic_load_n(&p->bar_gen, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&p->bar_count, 1, __ATOMIC_ACQ_REL) == (unsigned)p->n) {
    __atomic_store_n(&p->bar_count, 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->bar_gen, 1, __ATOMIC_ACQ_REL);
    return;
  }
  double late_from = 0; /* as at edge_pool_run's join, counted for the job's caller only */
  for (int i = 0; __atomic_load_n(&p->bar_gen, __ATOMIC_ACQUIRE) == g; i++) {
    cpu_relax();
    if ((i & 1023) == 1023) {
      if (i == 1023 && pthread_equal(pthread_self(), p->caller)) late_from = edge_now_us();
      sched_yield();
    }
  }
  if (late_from > 0) p->late_us += edge_now_us() - late_from;
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
