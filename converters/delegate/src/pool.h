/* A minimal fork-join pool on pthreads: the caller runs share 0, workers the rest.  Workers spin
 * briefly after each job (ops come back-to-back inside one invoke) and then sleep on a condvar. */
#ifndef EDGE_POOL_H_
#define EDGE_POOL_H_

#include "edge_kernels.h"

typedef struct EdgePool EdgePool;
typedef void (*EdgeTaskFn)(void* arg, int share, int nshares);

EDGE_HIDDEN EdgePool* edge_pool_create(int nthreads);
EDGE_HIDDEN void edge_pool_destroy(EdgePool* p);
EDGE_HIDDEN int edge_pool_size(const EdgePool* p);
/* runs fn(arg, s, n) for s in [0, n) with n = pool size, returns when all shares are done; while
 * another thread's job runs, fn(arg, 0, 1) on the calling thread instead */
EDGE_HIDDEN void edge_pool_run(EdgePool* p, EdgeTaskFn fn, void* arg);
/* called by every share of a running job: returns once all n shares have called it (a no-op
 * without a pool) */
EDGE_HIDDEN void edge_pool_barrier(EdgePool* p);
/* microseconds the threads calling edge_pool_run have spent waiting for late workers (at the join
 * and at barriers, past the first rounds of polling), summed over all jobs: what workers
 * descheduled in the middle of jobs cost their callers (0 without a pool) */
EDGE_HIDDEN double edge_pool_late_us(const EdgePool* p);
/* the monotonic clock in microseconds */
EDGE_HIDDEN double edge_now_us(void);

#endif
