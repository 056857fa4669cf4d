/*
 * edge-lottery sparse delegate for TFLite / LiteRT (external-delegate plugin).
 *
 * Why the project writes its own: no open-source CPU delegate runs pruned (sparse) weights faster
 * on x86; XNNPACK refuses sparse FULLY_CONNECTED and int8 DENSIFY graphs and the builtin sparse
 * kernels are scalar there.  This delegate claims FULLY_CONNECTED and CONV_2D nodes (and the
 * DENSIFY nodes feeding them), decodes whatever weight encoding the model carries, re-encodes the
 * weights at init into the layout that runs fastest (measured per layer, or forced by an option)
 * and runs them with kernels chosen at run time for the CPU (AVX-512 VNNI, AVX2, portable C/NEON).
 * Everything it does not claim is left to the next delegate (XNNPACK) or the builtin kernels.
 *
 * It reaches the runtime only through the function pointers handed over in TfLiteContext; the
 * declarations of that ABI are the project's own (tflite_abi.h).
 */
#define _GNU_SOURCE
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_kernels.h"
#include "pack.h"
#include "pool.h"
#include "tflite_abi.h"

#define EXPORT __attribute__((visibility("default")))

static const char* const kLayoutNames[EDGE_LAYOUT_COUNT] = {"dense", "csr", "1x16", "16x1", "16x4"};

typedef struct Options {
  float min_sparsity;
  int dense_neighbour_max_macs; /* a node too dense to claim is claimed next to a claimed one up to this */
  unsigned layouts; /* bit mask of allowed layouts */
  int num_threads;  /* 0: the interpreter's recommended_num_threads */
  int dense_threads; /* shared-graph estimate: threads of the dense runtime; -1 the interpreter's, 0/1 off */
  int verbose;
  int rounding; /* ROUNDING_BUILTIN or ROUNDING_REFERENCE */
  char isa[16];
} Options;

enum { ROUNDING_BUILTIN = 0, ROUNDING_REFERENCE = 1 };

typedef struct DelegateData {
  EdgeDelegate base; /* first member: the runtime sees a TfLiteDelegate* */
  Options opt;
  EdgeKernelTable kt;
  int whole_graph; /* the graph being prepared is claimed entirely (set before its kernels init) */
  /* One pool for all the partitions of the graph: a pool per partition had a worker per partition,
   * each given one job per invoke and asleep (or descheduled) by the time of the next, so every job
   * paid a wake-up (tens of microseconds here, against ops of a few). */
  EdgePool* pool;
} DelegateData;

static void vlog(const DelegateData* dd, const char* fmt, ...) {
  if (!dd->opt.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "edge_sparse_delegate: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

/* ------------------------------------------------------------------ CPU dispatch */

static void select_kernels(EdgeKernelTable* kt, const char* want) {
  memset(kt, 0, sizeof(*kt));
  edge_kernels_scalar(kt);
  if (strcmp(want, "scalar") == 0) return;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const int has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const int has_512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  if (has_512 && (strcmp(want, "auto") == 0 || strcmp(want, "avx512") == 0)) {
    edge_kernels_avx512(kt);
    return;
  }
  if (has_avx2 && strcmp(want, "scalar") != 0) edge_kernels_avx2(kt);
#elif defined(__aarch64__) && defined(__ARM_NEON)
  edge_kernels_neon(kt);
#endif
}

/* ------------------------------------------------------------------ node analysis */

enum { KIND_FC = 0, KIND_CONV = 1 };

typedef struct OpSpec {
  int kind, node, dtype, act;
  int in_t, out_t, bias_t;
  int w_src_t;   /* tensor holding the weight values (constant, maybe sparse-encoded) */
  int w_shape_t; /* tensor whose dims are the dense weight shape */
  int densify_node;
  int N, K, M;
  int B, H, W, C, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl;
  float sparsity;
  int sparse_input; /* weights arrived sparse-encoded (FC v8 or behind DENSIFY) */
} OpSpec;

static int64_t numel(const EdgeTensor* t) {
  if (!t->dims) return -1;
  int64_t n = 1;
  for (int i = 0; i < t->dims->size; i++) n *= t->dims->data[i];
  return n;
}

static int tensor_ok(const EdgeContext* ctx, int idx) { return idx >= 0 && (size_t)idx < ctx->tensors_size; }

#define DECLINE(...)                       \
  do {                                     \
    snprintf(why, whylen, __VA_ARGS__);    \
    return -1;                             \
  } while (0)

/* Dense weights [N][K] (float or int8) of a spec; NULL with `why` set on malformed encodings. */
static void* load_weights(EdgeContext* ctx, const OpSpec* s, char* why, size_t whylen) {
  const EdgeTensor* src = &ctx->tensors[s->w_src_t];
  const EdgeTensor* shp = &ctx->tensors[s->w_shape_t];
  const int es = s->dtype == EDGE_F32 ? 4 : 1;
  const size_t dense_bytes = (size_t)s->N * (size_t)s->K * es;
  void* w = malloc(dense_bytes ? dense_bytes : 1);
  if (!w) {
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  if (src->sparsity) {
    if (edge_sparse_decode(src->sparsity, src->data, src->bytes, es, shp->dims->data, shp->dims->size, w, why,
                           whylen) != 0) {
      free(w);
      return NULL;
    }
  } else {
    if (src->bytes != dense_bytes || !src->data) {
      snprintf(why, whylen, "weight bytes %zu, expected %zu", src->bytes, dense_bytes);
      free(w);
      return NULL;
    }
    memcpy(w, src->data, dense_bytes);
  }
  return w;
}

static int check_int8_quant(const EdgeContext* ctx, const OpSpec* s, char* why, size_t whylen) {
  const EdgeTensor* in = &ctx->tensors[s->in_t];
  const EdgeTensor* out = &ctx->tensors[s->out_t];
  /* the FC/CONV's own weight input (a DENSIFY output when there is one) carries the quantization
   * the builtin kernel would use */
  const EdgeTensor* wt = &ctx->tensors[s->w_shape_t];
  if (wt->quantization.type != eQuantAffine || !wt->quantization.params) DECLINE("int8 weights without affine quantization");
  const EdgeAffineQuantization* q = (const EdgeAffineQuantization*)wt->quantization.params;
  if (!q->scale || (q->scale->size != 1 && q->scale->size != s->N)) DECLINE("weight scales: %d", q->scale ? q->scale->size : -1);
  if (q->scale->size > 1 && q->quantized_dimension != 0) DECLINE("weights quantized on dimension %d", q->quantized_dimension);
  if (q->zero_point)
    for (int i = 0; i < q->zero_point->size; i++)
      if (q->zero_point->data[i] != 0) DECLINE("asymmetric weights (zero point %d)", q->zero_point->data[i]);
  for (int i = 0; i < q->scale->size; i++)
    if (!(q->scale->data[i] > 0.f)) DECLINE("non-positive weight scale");
  if (!(in->params.scale > 0.f) || !(out->params.scale > 0.f)) DECLINE("activation scales missing");
  if (in->params.zero_point < -128 || in->params.zero_point > 127 || out->params.zero_point < -128 ||
      out->params.zero_point > 127)
    DECLINE("zero point outside int8");
  return 0;
}

static int weight_source(EdgeContext* ctx, OpSpec* s, int w_t, const int* densify_of, char* why, size_t whylen) {
  s->w_shape_t = w_t;
  s->w_src_t = w_t;
  s->densify_node = -1;
  const EdgeTensor* w = &ctx->tensors[w_t];
  if (w->allocation_type != eAllocMmapRo) {
    const int dn = densify_of ? densify_of[w_t] : -1;
    if (dn < 0) DECLINE("weights are not constant");
    EdgeNode* dnode;
    EdgeRegistration* dreg;
    if (ctx->GetNodeAndRegistration(ctx, dn, &dnode, &dreg) != eStatusOk) DECLINE("DENSIFY node lookup failed");
    if (!dnode->inputs || dnode->inputs->size != 1 || !tensor_ok(ctx, dnode->inputs->data[0])) DECLINE("DENSIFY inputs");
    const int src = dnode->inputs->data[0];
    const EdgeTensor* st = &ctx->tensors[src];
    if (st->allocation_type != eAllocMmapRo || !st->sparsity) DECLINE("DENSIFY input is not a constant sparse tensor");
    if (st->type != w->type) DECLINE("DENSIFY changes the type");
    s->w_src_t = src;
    s->densify_node = dn;
    s->sparse_input = 1;
  } else if (w->sparsity) {
    s->sparse_input = 1;
  }
  return 0;
}

/* Whether node_index can run here (min_sparsity aside: the caller decides on s->sparsity). */
static int analyze(EdgeContext* ctx, int node_index, const int* densify_of, OpSpec* s, char* why, size_t whylen) {
  EdgeNode* node;
  EdgeRegistration* reg;
  memset(s, 0, sizeof(*s));
  s->node = node_index;
  s->bias_t = -1;
  s->densify_node = -1;
  if (ctx->GetNodeAndRegistration(ctx, node_index, &node, &reg) != eStatusOk) DECLINE("node lookup failed");
  if (reg->builtin_code == eOpFullyConnected) {
    s->kind = KIND_FC;
  } else if (reg->builtin_code == eOpConv2D) {
    s->kind = KIND_CONV;
  } else {
    DECLINE("op %d is not FULLY_CONNECTED or CONV_2D", reg->builtin_code);
  }
  if (!node->inputs || node->inputs->size < 2 || node->inputs->size > 3 || !node->outputs || node->outputs->size != 1)
    DECLINE("unexpected inputs/outputs");
  s->in_t = node->inputs->data[0];
  const int w_t = node->inputs->data[1];
  s->bias_t = node->inputs->size == 3 ? node->inputs->data[2] : -1;
  s->out_t = node->outputs->data[0];
  if (!tensor_ok(ctx, s->in_t) || !tensor_ok(ctx, w_t) || !tensor_ok(ctx, s->out_t)) DECLINE("tensor index");
  if (s->bias_t >= 0 && !tensor_ok(ctx, s->bias_t)) DECLINE("bias index");
  if (!node->builtin_data) DECLINE("no builtin options");
  const EdgeTensor* in = &ctx->tensors[s->in_t];
  const EdgeTensor* out = &ctx->tensors[s->out_t];
  const EdgeTensor* wt = &ctx->tensors[w_t];
  if (in->type == eTypeFloat32 && wt->type == eTypeFloat32 && out->type == eTypeFloat32) {
    s->dtype = EDGE_F32;
  } else if (in->type == eTypeInt8 && wt->type == eTypeInt8 && out->type == eTypeInt8) {
    s->dtype = EDGE_I8;
  } else {
    DECLINE("types in=%d weights=%d out=%d (need all float32 or all int8)", in->type, wt->type, out->type);
  }
  if (weight_source(ctx, s, w_t, densify_of, why, whylen) != 0) return -1;
  if (!wt->dims || !in->dims || !out->dims) DECLINE("missing shapes");
  if (s->bias_t >= 0) {
    const EdgeTensor* b = &ctx->tensors[s->bias_t];
    if (b->allocation_type != eAllocMmapRo || !b->data) DECLINE("bias is not constant");
    if (b->type != (s->dtype == EDGE_F32 ? eTypeFloat32 : eTypeInt32)) DECLINE("bias type %d", b->type);
  }
  if (s->kind == KIND_FC) {
    const EdgeFullyConnectedParams* p = (const EdgeFullyConnectedParams*)node->builtin_data;
    if (p->weights_format != 0) DECLINE("shuffled weights format");
    s->act = p->activation;
    if (wt->dims->size != 2) DECLINE("weights rank %d", wt->dims->size);
    s->N = wt->dims->data[0];
    s->K = wt->dims->data[1];
    if (s->N <= 0 || s->K <= 0) DECLINE("empty weights");
    const int64_t ni = numel(in), no = numel(out);
    if (ni <= 0 || ni % s->K != 0) DECLINE("input size %lld not a multiple of %d", (long long)ni, s->K);
    s->M = (int)(ni / s->K);
    if (no != (int64_t)s->M * s->N) DECLINE("output size");
  } else {
    const EdgeConvParams* p = (const EdgeConvParams*)node->builtin_data;
    s->act = p->activation;
    if (in->dims->size != 4 || wt->dims->size != 4 || out->dims->size != 4) DECLINE("conv ranks");
    s->B = in->dims->data[0];
    s->H = in->dims->data[1];
    s->W = in->dims->data[2];
    s->C = in->dims->data[3];
    s->N = wt->dims->data[0];
    s->KH = wt->dims->data[1];
    s->KW = wt->dims->data[2];
    if (wt->dims->data[3] != s->C) DECLINE("grouped convolution");
    s->sh = p->stride_height;
    s->sw = p->stride_width;
    s->dh = p->dilation_height_factor;
    s->dw = p->dilation_width_factor;
    if (s->sh < 1 || s->sw < 1 || s->dh < 1 || s->dw < 1) DECLINE("strides/dilations");
    if (s->B < 1 || s->H < 1 || s->W < 1 || s->C < 1 || s->N < 1 || s->KH < 1 || s->KW < 1) DECLINE("conv shape");
    const int ekh = (s->KH - 1) * s->dh + 1, ekw = (s->KW - 1) * s->dw + 1;
    if (p->padding == ePadSame) {
      s->OH = (s->H + s->sh - 1) / s->sh;
      s->OW = (s->W + s->sw - 1) / s->sw;
    } else if (p->padding == ePadValid) {
      s->OH = (s->H - ekh + s->sh) / s->sh;
      s->OW = (s->W - ekw + s->sw) / s->sw;
    } else {
      DECLINE("padding %d", p->padding);
    }
    const int th = (s->OH - 1) * s->sh + ekh - s->H, tw = (s->OW - 1) * s->sw + ekw - s->W;
    s->pt = th > 0 ? th / 2 : 0;
    s->pl = tw > 0 ? tw / 2 : 0;
    if (out->dims->data[0] != s->B || out->dims->data[1] != s->OH || out->dims->data[2] != s->OW ||
        out->dims->data[3] != s->N)
      DECLINE("conv output shape");
    s->K = s->KH * s->KW * s->C;
    s->M = s->B * s->OH * s->OW;
  }
  if (s->act < eActNone || s->act > eActRelu6) DECLINE("fused activation %d", s->act);
  if (s->bias_t >= 0 && numel(&ctx->tensors[s->bias_t]) != s->N) DECLINE("bias size");
  if (s->dtype == EDGE_I8) {
    if (s->K < 4) DECLINE("int8 reduction length %d < 4", s->K);
    if (check_int8_quant(ctx, s, why, whylen) != 0) return -1;
  }
  const EdgeTensor* shp = &ctx->tensors[s->w_shape_t];
  if (numel(shp) != (int64_t)s->N * s->K) DECLINE("dense weight shape");
  /* sparsity (decodes sparse encodings: malformed metadata declines the node here) */
  void* w = load_weights(ctx, s, why, whylen);
  if (!w) return -1;
  size_t zeros = 0;
  const size_t total = (size_t)s->N * s->K;
  for (size_t i = 0; i < total; i++)
    zeros += s->dtype == EDGE_F32 ? ((const float*)w)[i] == 0.f : ((const int8_t*)w)[i] == 0;
  free(w);
  s->sparsity = total ? (float)zeros / (float)total : 0.f;
  return 0;
}

/* ------------------------------------------------------------------ kernel state */

/* Whether a job pays on the thread pool is measured, not assumed (see THREAD_TRIALS). */
typedef struct ThreadChoice {
  int trials;   /* runs timed so far, alternating one thread and the pool */
  int use_pool; /* the measured choice once the trials (or the last re-check) are done */
  double t_one, t_pool;
  long long runs;       /* runs since the trials, outside re-check windows */
  long long next_check; /* run count at which the next re-check window starts */
  int window;           /* runs done in the current re-check window (0: none open) */
  int w_side;           /* the current turn of the window: 0 one thread, 1 the pool */
  int w_turn_runs;      /* runs in a turn, fixed by the window's first (one-thread) turn */
  int w_in_turn;        /* runs done in the current turn */
  int one_runs, pool_runs; /* runs in the window's finished turns on each side (the last check's, for the log) */
  int cut;              /* the last check's pool side was cut short */
  int triggered;        /* the open window was started by the monitor, not the schedule */
  int was_triggered;    /* ... the last one was (for the log) */
  double retry_us;      /* running time to the next check while the pool has lost since a triggered check (0: none) */
  double span_one, span_pool; /* running time of each side's finished turns */
  double w_turn_start;  /* when the current turn started */
  double w_last_end;    /* when the window's last run returned */
  double w_pause;       /* the caller's pauses in the current turn */
  double ref_one;       /* the monitor's reference: us per run on one thread (see run_measured) */
  double prev_one;      /* us per run on one thread, invoke to invoke, at the last re-check */
  double check_end;     /* when the last re-check ended */
  double run_us;        /* us per run of the choice the last re-check made (the monitor's idle test) */
  int mon_step;         /* runs since the monitor last read the clock */
  int mon_long;         /* the last step took MONITOR_IDLE times its expected time */
  int mon_after_pause;  /* the last step was a pause: the next one is left out too */
  int mon_runs;         /* runs in the monitor's current span */
  double mon_last;      /* when it last read the clock */
  double mon_late;      /* the pool's late-worker time then (edge_pool_late_us) */
  double mon_time;      /* running time in the current span */
  double busy;          /* running time since the last re-check */
} ThreadChoice;

typedef struct Op Op;
typedef struct Kernel Kernel;

/* One op's run: its tensors' memory for this invoke. */
typedef struct Job {
  Kernel* k;
  Op* op;
  const void* x;
  void* y;
} Job;

/* Stores j into *kept only when it differs (see Kernel.chain_jobs).  Field by field: memcmp is a
 * library call per op on every invoke (about 1 % of the int8 LeNet ticket's invoke on 2 threads in
 * a scratch A/B from Python; the rest of what the chain path cost there is counted_one_thread_run's). */
static inline void keep_job(Job* kept, const Job* j) {
  if (kept->x != j->x || kept->y != j->y || kept->op != j->op || kept->k != j->k) *kept = *j;
}

typedef struct Chain {
  Kernel* k;
  Job* jobs;
} Chain;

struct Op {
  OpSpec s;
  EdgePacked pk;
  EdgeEpilogue ep;
  EdgeGemmFn fn;
  float* fbias;
  int32_t *bias_s8, *bias_u8, *mult, *lshift, *rshift, *tshift;
  uint8_t* fsh;
  int direct; /* conv whose input rows are the GEMM rows (1x1, stride 1, no padding) */
  int8_t pad8;
  int parallel;   /* enough work to try splitting it over the pool */
  /* written on every run of the op, by the calling thread only: padded off the lines of the
   * fields pool workers read (see Kernel) */
  char pad_threads0[64];
  ThreadChoice threads;
  char pad_threads1[64];
  int trial_M, trial_nt; /* rows and threads the trials were for (a re-prepare keeps them) */
  Job job; /* the argument of its pool jobs, rewritten only when its tensors move (see chain_jobs) */
#ifdef EDGE_PROFILE
  unsigned long long prof_cycles;
#endif
};

#define CHAIN_MAX_OPS 64
/* weights (bytes, as stored) up to which an op chain with rows to spare splits rows, not panels:
 * half the smallest per-core L2 of the x86 and Arm cores this targets (1 MB and up on current
 * server cores, 512 KB on many phone cores) */
#define CHAIN_ROWS_MAX_BYTES (256.0 * 1024.0)
/* ops in one batch-1 int8 stream call (see prepare) */
#define STREAM_CHAIN_MAX_OPS 16

struct Kernel {
  DelegateData* dd;
  int nops;
  Op* ops;
  int nint;
  int* int_t;
  void** int_buf;
  int nalias; /* claimed RESHAPE nodes: their output is their input's memory */
  int* alias_out;
  int* alias_in;
  int ncopy; /* claimed RESHAPEs whose output is also a partition output */
  int* copy_out;
  int* copy_in;
  EdgePool* pool;
  int nthreads;
  int whole_graph;
  /* small direct ops (batch-1 layers) that may run as one pool job (run_chain), measured like
   * single ops */
  int chain, chain_nt;
  int chain_rows; /* the chain splits rows, not output panels (see prepare) */
  /* on one thread, the ops as one batch-1 int8 stream call (kt.stream_chain_i8; see prepare) */
  int stream_chain;
  /* batch-1 chains: the first two ops run as a pair (see run_pair); pair_nt threads' parts */
  int chain_pair, pair_nt;
  int* pair_p;        /* pair_nt + 1 panel boundaries of the first op's outputs, one range per thread */
  int32_t* pair_cut;  /* (pair_nt + 1) x npanels of the second op: its blocks by the same column ranges */
  void** pair_buf;    /* per thread: the second op's partial sums, 16 x npanels floats (int32 for int8) */
  /* a chain job's argument: the ops' tensors, rewritten only when they move, so that a worker
   * starting a job reads lines it already holds; every line the calling thread writes per invoke
   * costs each worker a cache-line transfer (~200 TSC cycles here), and reading the argument off
   * the caller's stack took several of them one after another */
  Job* chain_jobs;
  Chain chain_arg;
  char pad_threads0[64];
  /* written on every invoke, by the calling thread only */
  ThreadChoice chain_threads;
  int pair_pooled; /* the last run_pair went to the pool: pair_finish adds up pair_buf */
  char pad_threads1[64];
  void** scratch;
  size_t scratch_bytes;
  char error[256];
#ifdef EDGE_PROFILE
  unsigned long long prof_cycles, prof_calls;
  int prof_warm; /* the first 100 invokes were left out */
  /* the op chain as a pool job: cycles of each share's part of each op (barrier waits excluded) */
  unsigned long long prof_pool_jobs, prof_share[2][CHAIN_MAX_OPS];
#endif
};

#define IM2COL_ROWS 64
/* Whether splitting an op over threads pays is measured, not assumed: the first 2 * THREAD_TRIALS
 * invokes alternate one thread and the pool (best time of each), then the faster one stays.  Other
 * threads of the process (XNNPACK's own pool spins between its jobs) can make the split slower
 * than one core, which no static work threshold predicts. */
#define THREAD_TRIALS 8
/* A few short trials can catch the pool in a good moment: best-of-8 times hide late hand-offs (a
 * worker whose vCPU the hypervisor deschedules) and the slowdown of two vCPUs computing at once,
 * which in steady state can make the pool slower on average ("Pool halves in steady state" in
 * docs/results/delegate_profile.md), and another process can take the second CPU at any time.
 * So the choice is checked again while the model runs: after 1024, 4096, 16384, ... runs (and
 * after every CHECK_MAX_GAP_US of running, so that one check that caught a slow moment does not
 * decide for long), in turns of one thread and the pool, until one thread has had at least
 * CHECK_RUNS runs and CHECK_US, and the pool as many runs.  A turn is as many runs as the first
 * one-thread turn took to last CHECK_TURN_US; each is timed from invoke to invoke (so late
 * hand-offs and whatever a spinning worker costs the caller between invokes count).  Turns, not
 * two halves: this VM's speed drifts while a check runs (a one-thread half timed in a slow stretch
 * once made a slower pool win), and a turn is long enough that moving the weights between
 * the cores' caches at its start costs little.  The pool side stops early once it has taken
 * CHECK_CUT times the one-thread side, so a pool whose worker is late, or that simply loses by far
 * (the usual case at batch 1), costs about one turn of each.
 * A monitor reads the clock every MONITOR_STEP runs and adds up spans of MONITOR_RUNS runs; while
 * the pool is in use it starts a check at once when one ran slower than one thread did at the last
 * two checks (the faster of the two; see ref_one).  A span is several milliseconds, so a busy
 * second CPU shows in its mean even when it takes the worker away in bursts; a check that a single
 * descheduled moment starts costs one check, and they are at least MONITOR_GAP_US apart.
 * Running time excludes idle time: a step that took MONITOR_IDLE times what its runs should have,
 * after one that did not (the caller paused between bursts of invokes, as apps and benchmarks do),
 * is left out of the spans and of the CHECK_MAX_GAP_US count, unless the caller spent most of it
 * waiting inside invokes for late workers (edge_pool_late_us): that is the pool being slow.
 * Counting wall time instead started a check in every burst that began a second after the last
 * check, and a check window that spanned a pause took the pause for the cost of one side. */
#define CHECK_RUNS 512
#define CHECK_US 5000.0
#define CHECK_TURN_US 1000.0
#define CHECK_TURN_RUNS 16
#define CHECK_CUT 1.25
/* Time between invokes longer than this inside a check window is the caller pausing (between
 * bursts), not a cost of either choice: it is left out of the turn it fell in.  A late pool worker
 * shows inside an invoke, which this does not touch. */
#define CHECK_PAUSE_US 2000.0
#define FIRST_CHECK 1024
#define CHECK_MAX_GAP_US 1e6
/* A check the monitor started runs while the pool is slow, which may be a moment (another
 * interpreter's threads still spinning after its burst, a vCPU descheduled for a while): when the
 * pool loses it, the next check comes after CHECK_RETRY_US of running instead of
 * CHECK_MAX_GAP_US, then after twice as long each time the pool loses again, so a passing
 * slowdown does not keep a faster pool off for a second of running, and a lasting one costs a few
 * checks more. */
#define CHECK_RETRY_US 50e3
#define MONITOR_STEP 64
#define MONITOR_RUNS 1024
#define MONITOR_SLOWER 1.1
#define MONITOR_IDLE 16.0
#define MONITOR_GAP_US (20 * CHECK_US)

static void run_on(int on_pool, EdgePool* pool, EdgeTaskFn fn, void* arg) {
  if (on_pool)
    edge_pool_run(pool, fn, arg);
  else
    fn(arg, 0, 1);
}

static void no_task(void* arg, int share, int nshares) {
  (void)arg;
  (void)share;
  (void)nshares;
}

static double run_timed(int on_pool, EdgePool* pool, EdgeTaskFn fn, void* arg) {
  const double t0 = edge_now_us();
  run_on(on_pool, pool, fn, arg);
  return edge_now_us() - t0;
}

/* Whether run_measured would run this invoke's job on one thread with nothing else to do (the
 * choice made and not the pool, no re-check window open or due, the monitor not reading the clock);
 * if so it counts the run as run_measured would and returns 1, and the caller runs the ops itself
 * with its own jobs.  Going through run_measured and the chain's kept jobs cost the int8 LeNet
 * ticket ~3 % of its invoke on 2 threads where one thread ran (scratch A/B from Python). */
static int counted_one_thread_run(ThreadChoice* tc) {
  if (tc->trials < 2 * THREAD_TRIALS || tc->use_pool || tc->window || tc->runs + 1 >= tc->next_check ||
      (tc->ref_one > 0 && tc->mon_step + 1 >= MONITOR_STEP))
    return 0;
  tc->runs++;
  if (tc->ref_one > 0) tc->mon_step++;
  return 1;
}

/* Runs fn(arg, ...) once, on the pool or on this thread: alternately (timed) for the first
 * 2 * THREAD_TRIALS runs, then as the best times of the two decided, re-checked now and then (see
 * CHECK_RUNS).  Returns 1 on the run that completes the trials and 2 on the one that completes a
 * re-check (the caller logs the choice). */
static int run_measured(ThreadChoice* tc, EdgePool* pool, EdgeTaskFn fn, void* arg) {
#ifdef EDGE_PROFILE /* EDGE_PROFILE_THREADS=pool|one: the profile times each path in its steady state */
  static int forced = -2;
  if (forced == -2) {
    const char* e = getenv("EDGE_PROFILE_THREADS");
    forced = !e ? -1 : !strcmp(e, "pool") ? 1 : !strcmp(e, "one") ? 0 : -1;
  }
  if (forced >= 0) {
    run_on(forced, pool, fn, arg);
    return 0;
  }
#endif
  if (tc->trials < 2 * THREAD_TRIALS) {
    const int on_pool = tc->trials & 1;
    const double dt = run_timed(on_pool, pool, fn, arg);
    double* best = on_pool ? &tc->t_pool : &tc->t_one;
    if (tc->trials < 2 || dt < *best) *best = dt;
    if (++tc->trials < 2 * THREAD_TRIALS) return 0;
    tc->use_pool = tc->t_pool < 0.9 * tc->t_one;
    tc->runs = 0;
    tc->next_check = FIRST_CHECK;
    tc->window = 0;
    return 1;
  }
  if (tc->window == 0 && ++tc->runs < tc->next_check) {
    if (tc->ref_one > 0 && ++tc->mon_step == MONITOR_STEP) { /* the monitor, once a check has timed one thread */
      const double t = edge_now_us(), dt = t - tc->mon_last, late = edge_pool_late_us(pool);
      const double waited = late - tc->mon_late;
      tc->mon_step = 0;
      tc->mon_last = t;
      tc->mon_late = late;
      /* a long step after a normal one is a pause between bursts of invokes; long steps in a row are
       * the runs themselves being slow (or a caller that paces every invoke), which counts, and so
       * does a long step spent mostly waiting inside invokes for a worker whose CPU was taken away
       * (a kernel that preempts in slices longer than MONITOR_IDLE steps showed only such steps).
       * A pause is left out of the span, and so is the step after it (a worker that went to sleep
       * meanwhile is woken in it), but the span goes on: when a pause restarted the span instead, a
       * CI run of the test that preempts the caller every 12 ms (real-time processes taking each CPU
       * for 6 ms of them) got no check from the monitor, only the one after a second of running,
       * with the pool at 68 us per run against 7 on one thread: fewer than MONITOR_RUNS such runs
       * fit between two preemptions of the caller.  (Counting the step after a pause made bursts of
       * invokes with pauses between them look like a slow pool.) */
      const int is_long = dt > MONITOR_IDLE * MONITOR_STEP * tc->run_us && waited < 0.5 * dt;
      const int idle = is_long && !tc->mon_long;
      const int after_pause = tc->mon_after_pause;
      tc->mon_long = is_long;
      tc->mon_after_pause = idle;
      if (!idle && !after_pause) {
        tc->mon_runs += MONITOR_STEP;
        tc->mon_time += dt;
        tc->busy += dt;
        if (tc->mon_runs >= MONITOR_RUNS) {
          const int slower = tc->use_pool && tc->mon_time / tc->mon_runs > MONITOR_SLOWER * tc->ref_one &&
                             t - tc->check_end >= MONITOR_GAP_US;
          if (slower || tc->busy >= (tc->retry_us > 0 ? tc->retry_us : CHECK_MAX_GAP_US)) {
            tc->next_check = tc->runs;
            tc->triggered = slower;
          }
          tc->mon_runs = 0;
          tc->mon_time = 0;
        }
      }
    }
    if (tc->runs < tc->next_check) {
      run_on(tc->use_pool, pool, fn, arg);
      return 0;
    }
  }
  /* a re-check window in turns; each turn spans from the start of its first run to the start of
   * the run after its last, less the caller's pauses between invokes (see CHECK_PAUSE_US) */
  const double t = edge_now_us();
  int done = 0, paused = 0;
  if (tc->window == 0) {
    tc->w_side = 0;
    tc->w_turn_runs = 0;
    tc->w_in_turn = 0;
    tc->one_runs = tc->pool_runs = 0;
    tc->span_one = tc->span_pool = 0;
    tc->cut = 0;
    tc->w_turn_start = t;
    tc->w_pause = 0;
  } else {
    paused = t - tc->w_last_end > CHECK_PAUSE_US;
    if (paused) tc->w_pause += t - tc->w_last_end;
    const double spent = t - tc->w_turn_start - tc->w_pause;
    if (tc->w_side && tc->span_pool + spent > CHECK_CUT * tc->span_one) { /* the pool loses by far */
      tc->span_pool += spent;
      tc->pool_runs += tc->w_in_turn;
      tc->cut = done = 1;
    } else if (tc->w_turn_runs ? tc->w_in_turn >= tc->w_turn_runs
                               : tc->w_in_turn >= CHECK_TURN_RUNS && spent >= CHECK_TURN_US) {
      if (tc->w_side) {
        tc->span_pool += spent;
        tc->pool_runs += tc->w_in_turn;
      } else {
        tc->span_one += spent;
        tc->one_runs += tc->w_in_turn;
        if (!tc->w_turn_runs) tc->w_turn_runs = tc->w_in_turn;
      }
      tc->w_side ^= 1;
      tc->w_in_turn = 0;
      tc->w_turn_start = t;
      tc->w_pause = 0;
      done = !tc->w_side && tc->one_runs >= CHECK_RUNS && tc->span_one >= CHECK_US;
    }
  }
  if (!done && tc->w_side && (tc->w_in_turn == 0 || paused)) {
    /* a pool turn starts, or the caller paused in one: the worker may have gone to sleep meanwhile,
     * and waking a sleeping thread costs far more than a hand-off to a polling one, which a pool in
     * use (jobs back to back) does not pay; wake it untimed, as part of the pause */
    const double t_wake = edge_now_us();
    edge_pool_run(pool, no_task, NULL);
    tc->w_pause += edge_now_us() - t_wake;
  }
  if (done) {
    /* adopting the pool takes a 10 % win (as after the trials); keeping it, any */
    tc->use_pool = !tc->cut && tc->span_pool < (tc->use_pool ? 1.0 : 0.9) * tc->span_one;
    /* the monitor's reference: the faster of the last two one-thread sides, so that one side
     * timed in a slow moment does not hide a pool that is slower than one thread */
    const double one = tc->span_one / tc->one_runs;
    tc->ref_one = tc->prev_one > 0 && tc->prev_one < one ? tc->prev_one : one;
    tc->prev_one = one;
    tc->next_check = 4 * tc->runs;
    tc->window = 0;
    tc->was_triggered = tc->triggered;
    if (tc->use_pool)
      tc->retry_us = 0;
    else if (tc->triggered)
      tc->retry_us = CHECK_RETRY_US;
    else if (tc->retry_us > 0) /* the pool lost again: wait twice as long, up to the usual gap */
      tc->retry_us = 2 * tc->retry_us < CHECK_MAX_GAP_US ? 2 * tc->retry_us : 0;
    tc->triggered = 0;
    tc->check_end = t;
    tc->run_us = tc->use_pool ? tc->span_pool / tc->pool_runs : one;
    tc->mon_step = 0;
    tc->mon_long = 0;
    tc->mon_after_pause = 0;
    tc->mon_runs = 0;
    tc->mon_time = 0;
    tc->mon_last = t;
    tc->mon_late = edge_pool_late_us(pool);
    tc->busy = 0;
    run_on(tc->use_pool, pool, fn, arg);
    return 2;
  }
  tc->window++;
  tc->w_in_turn++;
  run_on(tc->w_side, pool, fn, arg);
  tc->w_last_end = edge_now_us();
  return 0;
}

static int setup_epilogue(EdgeContext* ctx, Op* op, const void* w, int rounding) {
  const OpSpec* s = &op->s;
  const int N = s->N, Np = (N + 15) & ~15;
  if (s->dtype == EDGE_F32) {
    op->fbias = (float*)calloc((size_t)Np, sizeof(float));
    if (!op->fbias) return -1;
    if (s->bias_t >= 0) memcpy(op->fbias, ctx->tensors[s->bias_t].data, (size_t)N * sizeof(float));
    op->ep.fbias = op->fbias;
    op->ep.fmin = -INFINITY;
    op->ep.fmax = INFINITY;
    if (s->act == eActRelu) op->ep.fmin = 0.f;
    if (s->act == eActRelu6) {
      op->ep.fmin = 0.f;
      op->ep.fmax = 6.f;
    }
    if (s->act == eActReluN1To1) {
      op->ep.fmin = -1.f;
      op->ep.fmax = 1.f;
    }
    return 0;
  }
  op->bias_s8 = (int32_t*)calloc((size_t)Np, sizeof(int32_t));
  op->bias_u8 = (int32_t*)calloc((size_t)Np, sizeof(int32_t));
  op->mult = (int32_t*)calloc((size_t)Np, sizeof(int32_t));
  op->lshift = (int32_t*)calloc((size_t)Np, sizeof(int32_t));
  op->rshift = (int32_t*)calloc((size_t)Np, sizeof(int32_t));
  op->tshift = (int32_t*)calloc((size_t)Np, sizeof(int32_t));
  if (!op->bias_s8 || !op->bias_u8 || !op->mult || !op->lshift || !op->rshift || !op->tshift) return -1;
  const EdgeTensor* in = &ctx->tensors[s->in_t];
  const EdgeTensor* out = &ctx->tensors[s->out_t];
  const EdgeAffineQuantization* q = (const EdgeAffineQuantization*)ctx->tensors[s->w_shape_t].quantization.params;
  const int32_t* bias = s->bias_t >= 0 ? (const int32_t*)ctx->tensors[s->bias_t].data : NULL;
  const int32_t zp_in = in->params.zero_point;
  const int8_t* w8 = (const int8_t*)w;
  for (int n = 0; n < N; n++) {
    int32_t rowsum = 0;
    for (int k = 0; k < s->K; k++) rowsum += w8[(size_t)n * s->K + k];
    const uint32_t b = bias ? (uint32_t)bias[n] : 0u;
    op->bias_s8[n] = (int32_t)(b - (uint32_t)zp_in * (uint32_t)rowsum);
    op->bias_u8[n] = (int32_t)(b - (uint32_t)(zp_in + 128) * (uint32_t)rowsum);
    const float ws = q->scale->data[q->scale->size > 1 ? n : 0];
    double real;
    if (s->kind == KIND_FC && q->scale->size == 1) {
      /* TFLite's per-tensor FC multiplier: scale product formed in float */
      real = (double)(in->params.scale * ws) / (double)out->params.scale;
    } else {
      real = (double)in->params.scale * (double)ws / (double)out->params.scale;
    }
    int32_t qm;
    int shift;
    edge_quantize_multiplier(real, &qm, &shift);
    op->mult[n] = qm;
    op->lshift[n] = shift > 0 ? shift : 0;
    op->rshift[n] = shift > 0 ? 0 : -shift;
    op->tshift[n] = 31 - shift;
  }
  const float os = out->params.scale;
  const int32_t zp = out->params.zero_point;
  int32_t lo = -128, hi = 127;
  if (s->act == eActRelu || s->act == eActRelu6) lo = zp > lo ? zp : lo;
  if (s->act == eActRelu6) {
    const int32_t v = zp + (int32_t)roundf(6.0f / os);
    hi = v < hi ? v : hi;
  }
  if (s->act == eActReluN1To1) {
    const int32_t a = zp + (int32_t)roundf(-1.0f / os), b = zp + (int32_t)roundf(1.0f / os);
    lo = a > lo ? a : lo;
    hi = b < hi ? b : hi;
  }
  op->ep.bias_s8 = op->bias_s8;
  op->ep.bias_u8 = op->bias_u8;
  op->ep.mult = op->mult;
  op->ep.lshift = op->lshift;
  op->ep.rshift = op->rshift;
  op->ep.tshift = op->tshift;
  /* Match the kernel the runtime itself would have run (see EdgeRounding): CONV_2D and the sparse
   * (version 8) FC kernels use TFLite's arithmetic; dense FC differs between builtin and reference. */
  const int fc_sparse_kernel = s->kind == KIND_FC && s->sparse_input && s->densify_node < 0;
  if (s->kind == KIND_CONV || fc_sparse_kernel)
    op->ep.rmode = EDGE_ROUND_DOUBLE_AWAY;
  else
    op->ep.rmode = rounding == ROUNDING_REFERENCE ? EDGE_ROUND_SINGLE : EDGE_ROUND_DOUBLE_UP;
  /* Ties away from zero and ties toward +inf differ only where the high-mul result x is negative,
   * and there the rounding right shift gives 0 or less either way, so the output is zp or less;
   * a lower clamp at zp or above (ReLU, ReLU6) turns both into the same byte. The cheaper
   * rounding saves the fused epilogue its sign fix-up (4 of ~12 vector operations per 16 outputs
   * of a 1x1 convolution). */
  if (op->ep.rmode == EDGE_ROUND_DOUBLE_AWAY && lo >= zp) op->ep.rmode = EDGE_ROUND_DOUBLE_UP;
  op->ep.zp_out = zp;
  op->ep.qmin = lo;
  op->ep.qmax = hi;
  op->pad8 = (int8_t)zp_in;
  return edge_epilogue_fuse(&op->ep, N, &op->fsh);
}

/* Packs the weights into the fastest allowed layout, measured on this CPU (or the only allowed one). */
static int choose_layout(const DelegateData* dd, Op* op, const void* w) {
  const OpSpec* s = &op->s;
  int cands[EDGE_LAYOUT_COUNT], nc = 0;
  for (int l = 0; l < EDGE_LAYOUT_COUNT; l++)
    if ((dd->opt.layouts >> l & 1u) && dd->kt.gemm[s->dtype][l] && edge_layout_applicable(l, s->dtype, s->K))
      cands[nc++] = l;
  if (nc == 0) { /* nothing the user allowed fits: fall back to dense */
    cands[nc++] = EDGE_LAYOUT_DENSE;
    if (!edge_layout_applicable(EDGE_LAYOUT_DENSE, s->dtype, s->K)) cands[0] = EDGE_LAYOUT_CSR;
  }
  if (nc == 1) {
    if (edge_pack(w, s->dtype, s->N, s->K, cands[0], &op->pk) != 0) return -1;
    op->fn = dd->kt.gemm[s->dtype][cands[0]];
    return 0;
  }
  const int es = s->dtype == EDGE_F32 ? 4 : 1;
  const int Mt = s->M < IM2COL_ROWS ? s->M : IM2COL_ROWS;
  uint8_t* x = (uint8_t*)malloc((size_t)Mt * s->K * es);
  uint8_t* y = (uint8_t*)malloc((size_t)Mt * s->N * es);
  if (!x || !y) {
    free(x);
    free(y);
    return -1;
  }
  for (size_t i = 0; i < (size_t)Mt * s->K; i++) {
    if (es == 4)
      ((float*)x)[i] = (float)((i * 2654435761u) % 255) / 255.f;
    else
      x[i] = (uint8_t)(i * 2654435761u);
  }
  double best = 1e300;
  char report[512];
  size_t rl = 0;
  report[0] = 0;
  for (int c = 0; c < nc; c++) {
    EdgePacked pk;
    if (edge_pack(w, s->dtype, s->N, s->K, cands[c], &pk) != 0) {
      edge_packed_free(&pk);
      continue;
    }
    EdgeGemmFn fn = dd->kt.gemm[s->dtype][cands[c]];
    fn(&pk, &op->ep, x, Mt, s->K, y, s->N, 0, s->N);
    double t0 = edge_now_us();
    fn(&pk, &op->ep, x, Mt, s->K, y, s->N, 0, s->N);
    double one = edge_now_us() - t0;
    int reps = one > 0 ? (int)(150.0 / one) : 100;
    if (reps < 1) reps = 1;
    if (reps > 2000) reps = 2000;
    double tbest = 1e300;
    for (int trial = 0; trial < 3; trial++) {
      t0 = edge_now_us();
      for (int r = 0; r < reps; r++) fn(&pk, &op->ep, x, Mt, s->K, y, s->N, 0, s->N);
      const double t = (edge_now_us() - t0) / reps;
      if (t < tbest) tbest = t;
    }
    if (rl < sizeof(report))
      rl += (size_t)snprintf(report + rl, sizeof(report) - rl, "%s%s %.2fus", c ? ", " : "", kLayoutNames[cands[c]],
                             tbest);
    if (tbest < best) {
      best = tbest;
      edge_packed_free(&op->pk);
      op->pk = pk;
      op->fn = fn;
    } else {
      edge_packed_free(&pk);
    }
  }
  free(x);
  free(y);
  if (!op->fn) return -1;
  vlog(dd, "node %d: autotune (%d rows): %s", s->node, Mt, report);
  return 0;
}

static void op_free(Op* op) {
  edge_packed_free(&op->pk);
  free(op->fbias);
  free(op->bias_s8);
  free(op->bias_u8);
  free(op->mult);
  free(op->lshift);
  free(op->rshift);
  free(op->tshift);
  free(op->fsh);
}

static void pair_free(Kernel* k) {
  if (k->pair_buf)
    for (int i = 0; i < k->pair_nt; i++) free(k->pair_buf[i]);
  free(k->pair_buf);
  free(k->pair_p);
  free(k->pair_cut);
  k->pair_buf = NULL;
  k->pair_p = NULL;
  k->pair_cut = NULL;
  k->pair_nt = 0;
}

static int is_panel_layout(int layout) {
  return layout == EDGE_LAYOUT_DENSE || layout == EDGE_LAYOUT_16X1 || layout == EDGE_LAYOUT_16X4;
}

/* MACs of an op's stored weights plus ~16 per output for its epilogue (the chain's work measure). */
static double op_work(const OpSpec* s) { return (double)s->M * s->N * (s->K * (1.0 - s->sparsity) + 16.0); }

static int resolve_alias(const Kernel* k, int t);

/* Whether a panels chain runs its first two ops as a pair (run_pair): both f32, or both int8, on
 * one input row, the second reading the first's output through blocks that never span two threads'
 * columns (one column wide; int8, four wide with K a multiple of four, so none is re-anchored),
 * and the two holding most of the chain's work (the ops after them run on one thread). */
static int pair_applies(const Kernel* k, double chain_work) {
  if (k->nops < 2) return 0;
  const Op *a = &k->ops[0], *b = &k->ops[1];
  const EdgeKernelTable* kt = &k->dd->kt;
  const int f32 = a->s.dtype == EDGE_F32 && b->s.dtype == EDGE_F32 && kt->partial_f32 && kt->split_f32 &&
                  b->pk.kb == 1;
  const int i8 = a->s.dtype == EDGE_I8 && b->s.dtype == EDGE_I8 && kt->partial_i8 && b->pk.kb == 4 && b->s.K % 4 == 0;
  return (f32 || i8) && a->s.M == 1 && b->s.M == 1 && is_panel_layout(a->pk.layout) && a->pk.ptr &&
         is_panel_layout(b->pk.layout) && b->pk.ptr && b->s.K == a->s.N &&
         resolve_alias(k, b->s.in_t) == a->s.out_t && op_work(&a->s) + op_work(&b->s) >= 0.75 * chain_work;
}

/* Each thread's range of the first op's output panels and the second op's blocks in the same
 * columns.  The ranges balance stored blocks (plus two per panel of the first op for its epilogue
 * and loop exit), except that a worker gets PAIR_HANDOFF_BLOCKS fewer: it starts a hand-off after
 * the caller, and its sums reach the caller a hand-off after it ends.  Timed with scratch
 * instrumentation on this project's 2-vCPU VM from Python (LeNet f32, 19 + 7 panels): ~220 + ~440
 * TSC cycles, at ~2.2 per block;
 * a static figure rather than a measured one keeps the split, and so the float sums, the same
 * in every process on a machine. */
#define PAIR_HANDOFF_BLOCKS 300.0
static int pair_setup(Kernel* k, int nt) {
  pair_free(k);
  const Op *a = &k->ops[0], *b = &k->ops[1];
  const EdgePacked *pa = &a->pk, *pb = &b->pk;
  const int npa = pa->npanels, npb = pb->npanels;
  double* cost = (double*)calloc((size_t)npa, sizeof(double));
  k->pair_p = (int*)calloc((size_t)nt + 1, sizeof(int));
  k->pair_cut = (int32_t*)calloc(((size_t)nt + 1) * npb, sizeof(int32_t));
  k->pair_buf = (void**)calloc((size_t)nt, sizeof(void*));
  k->pair_nt = nt;
  if (!cost || !k->pair_p || !k->pair_cut || !k->pair_buf) {
    free(cost);
    return -1;
  }
  double total = 0.0;
  for (int pn = 0; pn < npa; pn++) cost[pn] = pa->ptr[pn + 1] - pa->ptr[pn] + 2.0;
  for (size_t i = 0; i < pb->nblocks; i++) cost[pb->idx[i] / 16] += 1.0;
  for (int pn = 0; pn < npa; pn++) total += cost[pn];
  const double each = (total + (nt - 1) * PAIR_HANDOFF_BLOCKS) / nt;
  double done = 0.0;
  int pn = 0;
  for (int t = 0; t < nt - 1; t++) { /* thread t's range ends where its blocks reach its share */
    const double goal = (t + 1) * each - t * PAIR_HANDOFF_BLOCKS;
    while (pn < npa && done + cost[pn] / 2.0 < goal) done += cost[pn++];
    k->pair_p[t + 1] = pn;
  }
  k->pair_p[nt] = npa;
  free(cost);
  for (int q = 0; q < npb; q++) {
    int bk = pb->ptr[q];
    for (int t = 0; t <= nt; t++) {
      const int col = t == nt ? b->s.K : 16 * k->pair_p[t];
      while (bk < pb->ptr[q + 1] && pb->idx[bk] < col) bk++;
      k->pair_cut[(size_t)t * npb + q] = bk;
    }
  }
  for (int t = 0; t < nt; t++) {
    if (!(k->pair_buf[t] = aligned_alloc(64, (size_t)npb * 16 * 4))) return -1; /* floats or int32 */
    const int a_blocks = pa->ptr[k->pair_p[t + 1]] - pa->ptr[k->pair_p[t]];
    int b_blocks = 0;
    for (int q = 0; q < npb; q++)
      b_blocks += k->pair_cut[(size_t)(t + 1) * npb + q] - k->pair_cut[(size_t)t * npb + q];
    vlog(k->dd, "nodes %d and %d as a pair, thread %d: outputs %d-%d of node %d (%d blocks), the same inputs of node %d "
         "(%d blocks)", a->s.node, b->s.node, t, 16 * k->pair_p[t], (16 * k->pair_p[t + 1] < a->s.N ? 16 * k->pair_p[t + 1] : a->s.N) - 1,
         a->s.node, a_blocks, b->s.node, b_blocks);
  }
  return 0;
}

static void kernel_destroy(Kernel* k) {
  if (!k) return;
#ifdef EDGE_PROFILE /* developer build (-DEDGE_PROFILE, x86 only): mean TSC cycles per invoke, per op */
  if (k->prof_calls) {
    fprintf(stderr, "edge_sparse_delegate profile: %llu invokes, %.0f cycles each\n", k->prof_calls,
            (double)k->prof_cycles / k->prof_calls);
    for (int i = 0; i < k->nops; i++)
      fprintf(stderr, "  node %d M=%d K=%d N=%d: %.0f cycles\n", k->ops[i].s.node, k->ops[i].s.M, k->ops[i].s.K,
              k->ops[i].s.N, (double)k->ops[i].prof_cycles / k->prof_calls);
    for (int i = 0; k->prof_pool_jobs && i < k->nops; i++)
      fprintf(stderr, "  pool job node %d: share 0 %.0f cycles, share 1 %.0f cycles\n", k->ops[i].s.node,
              (double)k->prof_share[0][i] / k->prof_pool_jobs, (double)k->prof_share[1][i] / k->prof_pool_jobs);
  }
#endif
  for (int i = 0; i < k->nops; i++) op_free(&k->ops[i]);
  free(k->ops);
  for (int i = 0; i < k->nint; i++) free(k->int_buf[i]);
  free(k->int_buf);
  free(k->int_t);
  free(k->alias_out);
  free(k->alias_in);
  free(k->copy_out);
  free(k->copy_in);
  if (k->scratch)
    for (int i = 0; i < k->nthreads; i++) free(k->scratch[i]);
  free(k->scratch);
  pair_free(k);
  free(k->chain_jobs);
  if (k->pool != k->dd->pool) edge_pool_destroy(k->pool);
  free(k);
}

static int resolve_alias(const Kernel* k, int t) {
  for (int i = 0; i < k->nalias; i++)
    if (k->alias_out[i] == t) return k->alias_in[i];
  return t;
}

static int in_array(const EdgeIntArray* a, int v) {
  if (!a) return 0;
  for (int i = 0; i < a->size; i++)
    if (a->data[i] == v) return 1;
  return 0;
}

static void* kernel_init(EdgeContext* ctx, const char* buffer, size_t length) {
  (void)length;
  const EdgeDelegateParams* params = (const EdgeDelegateParams*)buffer;
  DelegateData* dd = (DelegateData*)params->delegate;
  Kernel* k = (Kernel*)calloc(1, sizeof(Kernel));
  if (!k) return NULL;
  k->dd = dd;
  k->whole_graph = dd->whole_graph;
  const EdgeIntArray* nodes = params->nodes_to_replace;
  int* densify_of = (int*)malloc(ctx->tensors_size * sizeof(int));
  k->ops = (Op*)calloc((size_t)nodes->size, sizeof(Op));
  k->int_t = (int*)calloc((size_t)nodes->size, sizeof(int));
  k->int_buf = (void**)calloc((size_t)nodes->size, sizeof(void*));
  k->alias_out = (int*)calloc((size_t)nodes->size, sizeof(int));
  k->alias_in = (int*)calloc((size_t)nodes->size, sizeof(int));
  k->copy_out = (int*)calloc((size_t)nodes->size, sizeof(int));
  k->copy_in = (int*)calloc((size_t)nodes->size, sizeof(int));
  if (!densify_of || !k->ops || !k->int_t || !k->int_buf || !k->alias_out || !k->alias_in || !k->copy_out ||
      !k->copy_in) {
    free(densify_of);
    snprintf(k->error, sizeof(k->error), "out of memory");
    return k;
  }
  for (size_t i = 0; i < ctx->tensors_size; i++) densify_of[i] = -1;
  /* DENSIFY producers among the replaced nodes (the execution plan is being rewritten right now) */
  for (int i = 0; i < nodes->size; i++) {
    EdgeNode* node;
    EdgeRegistration* reg;
    if (ctx->GetNodeAndRegistration(ctx, nodes->data[i], &node, &reg) != eStatusOk) continue;
    if (reg->builtin_code == eOpDensify && node->outputs && node->outputs->size == 1 && tensor_ok(ctx, node->outputs->data[0]))
      densify_of[node->outputs->data[0]] = nodes->data[i];
  }
  for (int i = 0; i < nodes->size; i++) {
    EdgeNode* node;
    EdgeRegistration* reg;
    if (ctx->GetNodeAndRegistration(ctx, nodes->data[i], &node, &reg) != eStatusOk) continue;
    if (reg->builtin_code == eOpDensify) continue;
    if (reg->builtin_code == eOpReshape) {
      if (in_array(params->output_tensors, node->outputs->data[0])) { /* runtime-owned output: copy */
        k->copy_out[k->ncopy] = node->outputs->data[0];
        k->copy_in[k->ncopy++] = node->inputs->data[0];
        continue;
      }
      k->alias_out[k->nalias] = node->outputs->data[0];
      k->alias_in[k->nalias++] = node->inputs->data[0];
      continue;
    }
    Op* op = &k->ops[k->nops];
    char why[200];
    const int rc = analyze(ctx, nodes->data[i], densify_of, &op->s, why, sizeof(why));
    if (rc != 0) {
      snprintf(k->error, sizeof(k->error), "node %d: %s", nodes->data[i], why);
      break;
    }
    k->nops++;
    void* w = load_weights(ctx, &op->s, why, sizeof(why));
    if (!w || setup_epilogue(ctx, op, w, dd->opt.rounding) != 0 || choose_layout(dd, op, w) != 0) {
      free(w);
      snprintf(k->error, sizeof(k->error), "node %d: cannot prepare weights", nodes->data[i]);
      break;
    }
    free(w);
    const OpSpec* s = &op->s;
    op->direct = s->kind == KIND_FC ||
                 (s->KH == 1 && s->KW == 1 && s->sh == 1 && s->sw == 1 && s->pt == 0 && s->pl == 0);
    vlog(dd, "node %d: %s %s M=%d K=%d N=%d sparsity %.3f%s -> layout %s (%zu blocks, kernels %s)", s->node,
         s->kind == KIND_FC ? "FULLY_CONNECTED" : "CONV_2D", s->dtype == EDGE_F32 ? "float32" : "int8", s->M, s->K,
         s->N, s->sparsity, s->densify_node >= 0 ? " (via DENSIFY)" : (s->sparse_input ? " (sparse-encoded)" : ""),
         kLayoutNames[op->pk.layout], op->pk.nblocks, dd->kt.isa);
    if (!in_array(params->output_tensors, s->out_t)) k->int_t[k->nint++] = s->out_t;
  }
  free(densify_of);
  return k;
}

static void kernel_free(EdgeContext* ctx, void* buffer) {
  (void)ctx;
  kernel_destroy((Kernel*)buffer);
}

static int kernel_prepare(EdgeContext* ctx, EdgeNode* node) {
  Kernel* k = (Kernel*)node->user_data;
  if (!k) {
    ctx->ReportError(ctx, "edge_sparse_delegate: init failed (out of memory)");
    return eStatusError;
  }
  if (k->error[0]) {
    ctx->ReportError(ctx, "edge_sparse_delegate: %s", k->error);
    return eStatusError;
  }
  for (int i = 0; i < k->nops; i++) {
    Op* op = &k->ops[i];
    OpSpec* s = &op->s;
    const EdgeTensor* in = &ctx->tensors[resolve_alias(k, s->in_t)];
    const EdgeTensor* out = &ctx->tensors[s->out_t];
    if (s->kind == KIND_FC) {
      const int64_t ni = numel(in);
      if (ni <= 0 || ni % s->K != 0 || numel(out) != ni / s->K * s->N) {
        ctx->ReportError(ctx, "edge_sparse_delegate: node %d: input shape changed to an incompatible size", s->node);
        return eStatusError;
      }
      s->M = (int)(ni / s->K);
    } else if (!in->dims || in->dims->size != 4 || in->dims->data[0] != s->B || in->dims->data[1] != s->H ||
               in->dims->data[2] != s->W || in->dims->data[3] != s->C) {
      ctx->ReportError(ctx, "edge_sparse_delegate: node %d: CONV_2D input shape changed; static shapes only", s->node);
      return eStatusError;
    }
  }
  for (int i = 0; i < k->nint; i++) {
    const EdgeTensor* t = &ctx->tensors[k->int_t[i]];
    free(k->int_buf[i]);
    k->int_buf[i] = aligned_alloc(64, (t->bytes + 63) & ~(size_t)63);
    if (!k->int_buf[i]) return eStatusError;
  }
  /* By default threads are used only when this partition is the whole graph (see delegate_prepare). */
  int nt = k->dd->opt.num_threads > 0 ? k->dd->opt.num_threads
                                      : (k->whole_graph ? ctx->recommended_num_threads : 1);
  if (nt < 1) nt = 1;
  if (nt > 64) nt = 64;
  if (nt != k->nthreads) {
    if (k->scratch)
      for (int i = 0; i < k->nthreads; i++) free(k->scratch[i]);
    free(k->scratch);
    k->scratch = NULL;
    if (k->pool != k->dd->pool) edge_pool_destroy(k->pool);
    k->pool = NULL;
    if (nt > 1) { /* the delegate's pool; a partition asking for another thread count gets its own */
      EdgePool* shared = __atomic_load_n(&k->dd->pool, __ATOMIC_ACQUIRE);
      if (!shared && (shared = edge_pool_create(nt)) != NULL) { /* two interpreters may prepare at once */
        EdgePool* none = NULL;
        if (!__atomic_compare_exchange_n(&k->dd->pool, &none, shared, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
          edge_pool_destroy(shared);
          shared = none;
        }
      }
      k->pool = shared && edge_pool_size(shared) == nt ? shared : edge_pool_create(nt);
    }
    k->nthreads = nt;
  }
  size_t sb = 0;
  for (int i = 0; i < k->nops; i++) {
    Op* op = &k->ops[i];
    const size_t es = op->s.dtype == EDGE_F32 ? 4 : 1;
    if (!op->direct) {
      const size_t b = (size_t)IM2COL_ROWS * op->s.K * es;
      if (b > sb) sb = b;
    }
    /* threads pay off only for ops with enough work; tiny batch-1 layers stay on one core */
    /* sparse products plus the per-output requantization (~16 multiply-adds' worth each) */
    const double work = op_work(&op->s);
    const int parallel = nt > 1 && work > 400000.0;
    if (parallel != op->parallel || op->s.M != op->trial_M || nt != op->trial_nt) { /* measure again */
      memset(&op->threads, 0, sizeof(op->threads));
      op->trial_M = op->s.M;
      op->trial_nt = nt;
    }
    op->parallel = parallel;
  }
  /* A batch-1 int8 chain whose every op has the grouped stream runs on one thread as one kernel
   * call that converts the input once and has each op also store its output converted for the
   * next: per op, the conversion pass and the calls down to the stream were a fixed cost of a few
   * per cent of the int8 LeNet ticket's invoke.  Profile builds keep the per-op calls they time. */
  int stream_chain = k->dd->kt.stream_chain_i8 != NULL && k->nops <= STREAM_CHAIN_MAX_OPS;
  for (int i = 0; i < k->nops && stream_chain; i++) {
    const Op* op = &k->ops[i];
    stream_chain = op->s.dtype == EDGE_I8 && op->s.M == 1 && op->direct && !op->parallel && op->pk.s_pan &&
                   (i == 0 || resolve_alias(k, op->s.in_t) == k->ops[i - 1].s.out_t);
  }
#ifdef EDGE_PROFILE
  stream_chain = 0;
#endif
  if (stream_chain && !k->stream_chain)
    vlog(k->dd, "nodes %d-%d: one batch-1 int8 stream call on one thread (the input converted once)",
         k->ops[0].s.node, k->ops[k->nops - 1].s.node);
  k->stream_chain = stream_chain;
  /* ops too small to split one by one (batch-1 layers) may still pay as one job for the chain.
   * With the same rows (batch rows, or pixels) in every op, row m of each op's input is row m of
   * an earlier op's output or of a partition input (a claimed RESHAPE keeps the bytes, and with
   * equal rows keeps them per row), so each thread can run its own rows through the whole chain:
   * no barriers, and no activations crossing cores.  Each thread then reads all the weights, so
   * only while they fit a core's L2 (CHAIN_ROWS_MAX_BYTES); beyond, panels halve each one's share. */
  int chain = nt > 1 && k->nops <= CHAIN_MAX_OPS, same_rows = 1;
  double chain_work = 0.0, chain_bytes = 0.0;
  for (int i = 0; i < k->nops && chain; i++) {
    const OpSpec* s = &k->ops[i].s;
    chain = k->ops[i].direct && !k->ops[i].parallel;
    chain_work += op_work(s);
    chain_bytes += (double)s->N * s->K * (1.0 - s->sparsity) * (s->dtype == EDGE_F32 ? 4 : 1);
    same_rows = same_rows && s->M == k->ops[0].s.M;
  }
  chain = chain && chain_work > 20000.0;
  const int chain_rows = chain && same_rows && k->ops[0].s.M >= 2 && chain_bytes <= CHAIN_ROWS_MAX_BYTES;
  const int chain_pair = chain && !chain_rows && pair_applies(k, chain_work);
  if (chain != k->chain || nt != k->chain_nt || chain_rows != k->chain_rows || chain_pair != k->chain_pair) {
    memset(&k->chain_threads, 0, sizeof(k->chain_threads)); /* measure again */
    k->chain_nt = nt;
  }
  if (chain && !k->chain_jobs) {
    k->chain_jobs = (Job*)aligned_alloc(64, ((size_t)k->nops * sizeof(Job) + 63) & ~(size_t)63);
    if (!k->chain_jobs) return eStatusError;
    memset(k->chain_jobs, 0, (size_t)k->nops * sizeof(Job));
    k->chain_arg = (Chain){k, k->chain_jobs};
  }
  k->chain = chain;
  k->chain_rows = chain_rows;
  k->chain_pair = chain_pair;
  if (!chain_pair)
    pair_free(k);
  else if (pair_setup(k, nt) != 0)
    return eStatusError;
  if (sb > k->scratch_bytes || !k->scratch) {
    if (k->scratch)
      for (int i = 0; i < k->nthreads; i++) free(k->scratch[i]);
    free(k->scratch);
    k->scratch = (void**)calloc((size_t)k->nthreads, sizeof(void*));
    if (!k->scratch) return eStatusError;
    for (int i = 0; i < k->nthreads; i++) {
      k->scratch[i] = aligned_alloc(64, (sb + 63) & ~(size_t)63);
      if (!k->scratch[i]) return eStatusError;
    }
    k->scratch_bytes = sb;
  }
  return eStatusOk;
}

static void* tensor_ptr(EdgeContext* ctx, Kernel* k, int t) {
  t = resolve_alias(k, t);
  for (int i = 0; i < k->nint; i++)
    if (k->int_t[i] == t) return k->int_buf[i];
  return ctx->tensors[t].data;
}

static void im2col_rows(const Op* op, const void* xin, void* buf, int m0, int mt) {
  const OpSpec* s = &op->s;
  const int es = s->dtype == EDGE_F32 ? 4 : 1;
  const size_t rowb = (size_t)s->C * es;
  for (int r = 0; r < mt; r++) {
    const int m = m0 + r;
    const int ox = m % s->OW, oy = (m / s->OW) % s->OH, b = m / (s->OW * s->OH);
    uint8_t* dst = (uint8_t*)buf + (size_t)r * s->K * es;
    for (int kh = 0; kh < s->KH; kh++) {
      const int iy = oy * s->sh - s->pt + kh * s->dh;
      for (int kw = 0; kw < s->KW; kw++) {
        const int ix = ox * s->sw - s->pl + kw * s->dw;
        if (iy < 0 || iy >= s->H || ix < 0 || ix >= s->W) {
          if (es == 4)
            memset(dst, 0, rowb);
          else
            memset(dst, (uint8_t)op->pad8, rowb);
        } else {
          memcpy(dst, (const uint8_t*)xin + (((size_t)b * s->H + iy) * s->W + ix) * rowb, rowb);
        }
        dst += rowb;
      }
    }
  }
}

/* First output panel of a share when an op's panels are split over threads: panel layouts split
 * at equal stored blocks (plus two blocks' worth per panel for its epilogue), since pruning leaves
 * panels with very different block counts; other layouts at equal panel counts. */
static int share_start(const EdgePacked* pk, int N, int share, int nshares) {
  const int np = (N + 15) / 16;
  if (share <= 0) return 0;
  if (share >= nshares) return np;
  const int panels = pk->layout == EDGE_LAYOUT_DENSE || pk->layout == EDGE_LAYOUT_16X1 ||
                     pk->layout == EDGE_LAYOUT_16X4;
  if (!panels || !pk->ptr || pk->npanels != np) return (int)((int64_t)np * share / nshares);
  const int64_t total = (int64_t)pk->ptr[np] + 2 * (int64_t)np;
  const int64_t goal = total * share / nshares;
  int pn = 0;
  while (pn < np && (int64_t)pk->ptr[pn] + 2 * (int64_t)pn < goal) pn++;
  return pn;
}

/* Rows share/nshares of a direct op (its GEMM rows: batch rows, or pixels of a 1x1 conv). */
static void run_rows(const Job* j, int share, int nshares) {
  const Op* op = j->op;
  const OpSpec* s = &op->s;
  const size_t es = s->dtype == EDGE_F32 ? 4 : 1;
  const int m0 = (int)((int64_t)s->M * share / nshares), m1 = (int)((int64_t)s->M * (share + 1) / nshares);
  if (m1 > m0)
    op->fn(&op->pk, &op->ep, (const uint8_t*)j->x + (size_t)m0 * s->K * es, m1 - m0, s->K,
           (uint8_t*)j->y + (size_t)m0 * s->N * es, s->N, 0, s->N);
}

static void run_share(void* arg, int share, int nshares) {
  Job* j = (Job*)arg;
  Op* op = j->op;
  const OpSpec* s = &op->s;
  const size_t es = s->dtype == EDGE_F32 ? 4 : 1;
  if (op->direct) {
    if (s->M >= 8 * nshares && s->kind == KIND_CONV) { /* split pixels */
      run_rows(j, share, nshares);
    } else { /* split output panels */
      const int p0 = share_start(&op->pk, s->N, share, nshares), p1 = share_start(&op->pk, s->N, share + 1, nshares);
      const int n1 = p1 * 16 < s->N ? p1 * 16 : s->N;
      if (p1 > p0) op->fn(&op->pk, &op->ep, j->x, s->M, s->K, j->y, s->N, p0 * 16, n1);
    }
    return;
  }
  void* buf = j->k->scratch[share];
  const int nchunks = (s->M + IM2COL_ROWS - 1) / IM2COL_ROWS;
  for (int c = share; c < nchunks; c += nshares) {
    const int m0 = c * IM2COL_ROWS;
    const int mt = s->M - m0 < IM2COL_ROWS ? s->M - m0 : IM2COL_ROWS;
    im2col_rows(op, j->x, buf, m0, mt);
    op->fn(&op->pk, &op->ep, buf, mt, s->K, (uint8_t*)j->y + (size_t)m0 * s->N * es, s->N, 0, s->N);
  }
}

/* The whole op chain as one pool job: each thread runs its share of every op, with a barrier
 * between ops (the next op reads all of the previous op's outputs).  One wake-up per invoke
 * instead of one per op is what lets batch-1 layers of a few microseconds use two cores. */
static void run_chain(void* arg, int share, int nshares) {
  const Chain* c = (const Chain*)arg;
  const int rows = c->k->chain_rows && nshares > 1;
  for (int i = 0; i < c->k->nops; i++) {
    if (i && nshares > 1 && !rows) edge_pool_barrier(c->k->pool);
#ifdef EDGE_PROFILE
    const unsigned long long t_op = __builtin_ia32_rdtsc();
#endif
    if (rows)
      run_rows(&c->jobs[i], share, nshares);
    else
      run_share(&c->jobs[i], share, nshares);
#ifdef EDGE_PROFILE
    const unsigned long long dt = __builtin_ia32_rdtsc() - t_op;
    if (nshares == 1)
      c->k->ops[i].prof_cycles += dt;
    else if (share < 2)
      c->k->prof_share[share][i] += dt;
#endif
  }
#ifdef EDGE_PROFILE
  if (nshares > 1 && share == 0) c->k->prof_pool_jobs++;
#endif
}

/* Thread t's part of a pair: its panels of the first op (full outputs, epilogue included), then
 * the partial sums of the second op over the same columns, which are the ones it just wrote. */
static void pair_part(const Chain* c, int t, int pooled) {
  Kernel* k = c->k;
  const Op *a = &k->ops[0], *b = &k->ops[1];
  const int n0 = 16 * k->pair_p[t], n1 = 16 * k->pair_p[t + 1] < a->s.N ? 16 * k->pair_p[t + 1] : a->s.N;
  const int npb = b->pk.npanels;
#ifdef EDGE_PROFILE
  const unsigned long long t0 = __builtin_ia32_rdtsc();
#endif
  if (n1 > n0) a->fn(&a->pk, &a->ep, c->jobs[0].x, 1, a->s.K, c->jobs[0].y, a->s.N, n0, n1);
#ifdef EDGE_PROFILE
  const unsigned long long t1 = __builtin_ia32_rdtsc();
#endif
  const int32_t *lo = k->pair_cut + (size_t)t * npb, *hi = k->pair_cut + (size_t)(t + 1) * npb;
  if (b->s.dtype == EDGE_F32)
    k->dd->kt.partial_f32(&b->pk, lo, hi, (const float*)c->jobs[1].x, (float*)k->pair_buf[t]);
  else
    k->dd->kt.partial_i8(&b->pk, lo, hi, (const int8_t*)c->jobs[1].x, (int32_t*)k->pair_buf[t]);
#ifdef EDGE_PROFILE
  const unsigned long long t2 = __builtin_ia32_rdtsc();
  if (!pooled) {
    k->ops[0].prof_cycles += t1 - t0;
    k->ops[1].prof_cycles += t2 - t1;
  } else if (t < 2) {
    k->prof_share[t][0] += t1 - t0;
    k->prof_share[t][1] += t2 - t1;
  }
#else
  (void)pooled;
#endif
}

/* A batch-1 f32 chain whose first op feeds the second (LeNet's first two layers) as one pool job
 * without crossing cores between them: thread t computes a range of the first op's outputs and
 * then the second op over the same range of its inputs (a split along K), into its own partial
 * sums; once the job is done the caller adds them up (pair_finish) and runs the rest of the chain.
 * The panels split (run_chain) instead waits at a barrier after every op and reads half of each
 * op's inputs from the other core's cache, which cost about as much as the split saved ("Pool
 * halves in steady state" in docs/results/delegate_profile.md).  On one thread the same parts run
 * in turn, so the sums, and the outputs, are the same whichever way a run goes. */
static void run_pair(void* arg, int share, int nshares) {
  const Chain* c = (const Chain*)arg;
  Kernel* k = c->k;
  const int pooled = nshares == k->pair_nt && nshares > 1;
  if (share == 0) k->pair_pooled = pooled;
  if (pooled) {
    pair_part(c, share, 1);
  } else if (share == 0 && k->ops[0].s.dtype == EDGE_I8) { /* integer sums: the ops whole give the same bits */
    for (int i = 0; i < 2; i++) {
#ifdef EDGE_PROFILE
      const unsigned long long t0 = __builtin_ia32_rdtsc();
#endif
      run_share(&c->jobs[i], 0, 1);
#ifdef EDGE_PROFILE
      k->ops[i].prof_cycles += __builtin_ia32_rdtsc() - t0;
#endif
    }
  } else if (share == 0) { /* the first op whole, the second op's parts added up per panel as it goes */
    const Op *a = &k->ops[0], *b = &k->ops[1];
#ifdef EDGE_PROFILE
    const unsigned long long t0 = __builtin_ia32_rdtsc();
#endif
    a->fn(&a->pk, &a->ep, c->jobs[0].x, 1, a->s.K, c->jobs[0].y, a->s.N, 0, a->s.N);
#ifdef EDGE_PROFILE
    const unsigned long long t1 = __builtin_ia32_rdtsc();
#endif
    k->dd->kt.split_f32(&b->pk, &b->ep, k->pair_cut, k->pair_nt, c->jobs[1].x, (float*)c->jobs[1].y);
#ifdef EDGE_PROFILE
    k->ops[0].prof_cycles += t1 - t0;
    k->ops[1].prof_cycles += __builtin_ia32_rdtsc() - t1;
#endif
  }
}

/* After run_pair: the second op's outputs (the threads' partial sums in thread order, plus the
 * bias, clamped; plain loops over restrict pointers, which gcc vectorises), then the ops after the
 * pair, on the calling thread. */
static void pair_finish(Kernel* k) {
#ifdef EDGE_PROFILE
  unsigned long long t0 = __builtin_ia32_rdtsc();
#endif
  if (k->pair_pooled && k->ops[1].s.dtype == EDGE_I8) {
    const EdgeEpilogue* e = &k->ops[1].ep;
    const int N = k->ops[1].s.N;
    int32_t* restrict acc = (int32_t*)k->pair_buf[0];
    for (int t = 1; t < k->pair_nt; t++) {
      const int32_t* restrict part = (const int32_t*)k->pair_buf[t];
      for (int n = 0; n < N; n++) acc[n] = (int32_t)((uint32_t)acc[n] + (uint32_t)part[n]);
    }
    /* sums of (x + 128) * w: bias_u8 completes them, the requant entry adds bias_s8 */
    const int32_t* restrict bu = e->bias_u8;
    const int32_t* restrict bs = e->bias_s8;
    for (int n = 0; n < N; n++) acc[n] = (int32_t)((uint32_t)acc[n] + (uint32_t)bu[n] - (uint32_t)bs[n]);
    k->dd->kt.requant(e, acc, (int8_t*)k->chain_jobs[1].y, N);
  } else if (k->pair_pooled) {
    const EdgeEpilogue* e = &k->ops[1].ep;
    const int N = k->ops[1].s.N;
    float* restrict y = (float*)k->chain_jobs[1].y;
    float* restrict acc = (float*)k->pair_buf[0];
    for (int t = 1; t < k->pair_nt; t++) {
      const float* restrict part = (const float*)k->pair_buf[t];
      for (int n = 0; n < N; n++) acc[n] += part[n];
    }
    const float* restrict bias = e->fbias;
    const float lo = e->fmin, hi = e->fmax;
    for (int n = 0; n < N; n++) {
      float v = acc[n] + bias[n];
      v = v < lo ? lo : v;
      y[n] = v > hi ? hi : v;
    }
  }
  for (int i = 2; i < k->nops; i++) {
#ifdef EDGE_PROFILE
    const unsigned long long t1 = __builtin_ia32_rdtsc();
    if (k->pair_pooled)
      k->prof_share[0][i - 1] += t1 - t0;
    else
      k->ops[i - 1].prof_cycles += t1 - t0;
    t0 = t1;
#endif
    run_share(&k->chain_jobs[i], 0, 1);
  }
#ifdef EDGE_PROFILE
  const unsigned long long t1 = __builtin_ia32_rdtsc();
  if (k->pair_pooled) {
    k->prof_share[0][k->nops - 1] += t1 - t0;
    k->prof_pool_jobs++;
  } else {
    k->ops[k->nops - 1].prof_cycles += t1 - t0;
  }
#endif
}

/* The job of one op for this invoke (its tensors' current memory); 0 if one is not allocated. */
static int op_job(EdgeContext* ctx, Kernel* k, Op* op, Job* j) {
  *j = (Job){k, op, tensor_ptr(ctx, k, op->s.in_t), tensor_ptr(ctx, k, op->s.out_t)};
  if (j->x && j->y) return 1;
  ctx->ReportError(ctx, "edge_sparse_delegate: node %d: unallocated tensor", op->s.node);
  return 0;
}

/* The verbose line for run_measured's return code rc (1: trials done, 2: a re-check done). */
static void log_choice(const Kernel* k, const char* what, const ThreadChoice* tc, int rc) {
  const char* kept = tc->use_pool ? "threads" : "1 thread";
  if (rc == 1)
    vlog(k->dd, "%s: %d threads %.2fus, 1 thread %.2fus (best of %d) -> %s", what, k->nthreads, tc->t_pool,
         tc->t_one, THREAD_TRIALS, kept);
  else if (rc == 2)
    vlog(k->dd, "%s: re-checked after %lld runs%s: %d threads %.2fus (mean of %d runs%s), 1 thread %.2fus (mean of %d "
         "runs), in turns of %d runs, invoke to invoke -> %s", what, tc->runs,
         tc->was_triggered ? " (the pool ran slower than 1 thread had)" : "", k->nthreads,
         tc->pool_runs ? tc->span_pool / tc->pool_runs : 0.0, tc->pool_runs, tc->cut ? ", cut short" : "",
         tc->span_one / tc->one_runs, tc->one_runs, tc->w_turn_runs, kept);
}

static int kernel_invoke(EdgeContext* ctx, EdgeNode* node) {
  Kernel* k = (Kernel*)node->user_data;
  if (!k || k->error[0]) return eStatusError;
#ifdef EDGE_PROFILE
  const unsigned long long t_start = __builtin_ia32_rdtsc();
#endif
  for (int i = 0; i < k->ncopy; i++) {
    const void* src = tensor_ptr(ctx, k, k->copy_in[i]);
    void* dst = ctx->tensors[k->copy_out[i]].data;
    if (src && dst && src != dst) memcpy(dst, src, ctx->tensors[k->copy_out[i]].bytes);
  }
  /* a float32 pair on one thread sums its second op in the pool's parts (run_pair), so that one
   * always goes through the chain */
  if (k->chain && k->pool &&
      ((k->chain_pair && k->ops[0].s.dtype == EDGE_F32) || !counted_one_thread_run(&k->chain_threads))) {
    for (int i = 0; i < k->nops; i++) {
      Job j;
      if (!op_job(ctx, k, &k->ops[i], &j)) return eStatusError;
      keep_job(&k->chain_jobs[i], &j);
    }
    const int rc = run_measured(&k->chain_threads, k->pool, k->chain_pair ? run_pair : run_chain, &k->chain_arg);
    if (k->chain_pair) pair_finish(k);
    if (rc) {
      char what[32];
      snprintf(what, sizeof(what), "%d ops as one job (%s)", k->nops,
               k->chain_rows ? "rows" : (k->chain_pair ? "pair" : "panels"));
      log_choice(k, what, &k->chain_threads, rc);
    }
  } else if (k->stream_chain) {
    const EdgePacked* pk[STREAM_CHAIN_MAX_OPS];
    const EdgeEpilogue* ep[STREAM_CHAIN_MAX_OPS];
    int8_t* y[STREAM_CHAIN_MAX_OPS];
    const void* x = NULL;
    for (int i = 0; i < k->nops; i++) {
      Job j;
      if (!op_job(ctx, k, &k->ops[i], &j)) return eStatusError;
      if (i == 0) x = j.x;
      pk[i] = &k->ops[i].pk;
      ep[i] = &k->ops[i].ep;
      y[i] = (int8_t*)j.y;
    }
    k->dd->kt.stream_chain_i8(pk, ep, k->nops, (const int8_t*)x, y);
  } else {
    for (int i = 0; i < k->nops; i++) {
      Op* op = &k->ops[i];
      Job j;
      if (!op_job(ctx, k, op, &j)) return eStatusError;
#ifdef EDGE_PROFILE
      const unsigned long long t_op = __builtin_ia32_rdtsc();
#endif
      if (op->parallel && k->pool) {
        keep_job(&op->job, &j);
        const int rc = run_measured(&op->threads, k->pool, run_share, &op->job);
        if (rc) {
          char what[32];
          snprintf(what, sizeof(what), "node %d", op->s.node);
          log_choice(k, what, &op->threads, rc);
        }
      } else {
        run_share(&j, 0, 1);
      }
#ifdef EDGE_PROFILE
      op->prof_cycles += __builtin_ia32_rdtsc() - t_op;
#endif
    }
  }
#ifdef EDGE_PROFILE
  k->prof_cycles += __builtin_ia32_rdtsc() - t_start;
  /* leave out the warm-up: thread trials and the pool's first wake-ups (a few take milliseconds,
   * enough to move a mean over 20000 runs) */
  if (++k->prof_calls == 100 && !k->prof_warm) {
    k->prof_warm = 1;
    k->prof_cycles = k->prof_calls = k->prof_pool_jobs = 0;
    memset(k->prof_share, 0, sizeof(k->prof_share));
    for (int i = 0; i < k->nops; i++) k->ops[i].prof_cycles = 0;
  }
#endif
  return eStatusOk;
}

/* ------------------------------------------------------------------ delegate Prepare */

static int cmp_int(const void* a, const void* b) { return *(const int*)a - *(const int*)b; }

/* Below min_sparsity (weights that arrive sparse-encoded are always taken: the alternative is the
 * builtin sparse path or a failure under XNNPACK). */
static int too_dense(const DelegateData* dd, const OpSpec* s) {
  return !s->sparse_input && s->sparsity < dd->opt.min_sparsity;
}

static void log_too_dense(const DelegateData* dd, const OpSpec* s) {
  vlog(dd, "node %d: %s declined: sparsity %.3f < min_sparsity %.3f", s->node,
       s->kind == KIND_FC ? "FULLY_CONNECTED" : "CONV_2D", s->sparsity, dd->opt.min_sparsity);
}

/* Per output, the requantization of an int8 layer costs about as much as this many multiply-adds,
 * in these kernels and in a dense runtime's alike: single int8 1x1 convolutions at batch 8 over
 * 24x24 pixels, K = 8..128 inputs, 50-90 % 16x4 sparsity, ran in about (22 + density K) x 5.0 ps
 * per output here on one thread, and XNNPACK's dense kernel in about (30 + K) x 4.4 ps per output
 * and thread (docs/results/delegate_shared_graph.md).  24 for both is a little high for these
 * kernels and low for XNNPACK's, so it leans towards declining; the verdicts matched 14 of 15.  Groups
 * of 16 outputs without weights (a constant here) did not make a layer measurably cheaper per
 * output, short of a layer without any weight. */
#define REQUANT_MACS 24.0

/* In a graph shared with a dense runtime on `dense_threads` threads (XNNPACK, which runs the rest),
 * whether the dense runtime would run this int8 layer faster than the sparse kernels on `threads`
 * threads, by the estimate above.  Sparsity saves multiply-adds, not the requantization of each
 * output, so a layer with few inputs per output (the first 1x1 convolutions of a MobileNet) saves
 * little, and next to XNNPACK on 2 threads it runs faster there; leaving it also spares a partition
 * switch with its activations crossing between cores.  Float32 outputs cost next to nothing, so
 * float32 layers are always taken.  Writes the figures compared to `why`. */
static int dense_peer_faster(const OpSpec* s, int threads, int dense_threads, char* why, size_t whylen) {
  /* a layer without any weight is a constant here: no products, no requantization, only stores */
  if (s->dtype != EDGE_I8 || s->sparse_input || dense_threads <= threads || s->sparsity >= 1.f) return 0;
  const double here = (REQUANT_MACS + (1.0 - s->sparsity) * s->K) / threads;
  const double dense = (REQUANT_MACS + s->K) / dense_threads;
  snprintf(why, whylen, "%d inputs per output at sparsity %.3f: about %.1f multiply-add equivalents per output on %d "
           "thread%s here against %.1f dense on the next delegate's %d threads",
           s->K, s->sparsity, here, threads, threads == 1 ? "" : "s", dense, dense_threads);
  return here > dense;
}

/* Whether some node of the plan is of a kind this delegate never claims (so another delegate runs
 * part of the graph whatever is claimed here). */
static int plan_is_shared(EdgeContext* ctx, const int* nodes, int nplan) {
  for (int i = 0; i < nplan; i++) {
    EdgeNode* node;
    EdgeRegistration* reg;
    if (ctx->GetNodeAndRegistration(ctx, nodes[i], &node, &reg) != eStatusOk) return 1;
    const int c = reg->builtin_code;
    if (c != eOpFullyConnected && c != eOpConv2D && c != eOpDensify && c != eOpReshape) return 1;
  }
  return 0;
}

/* The nodes delegate_prepare has claimed so far, with the input and output tensor of each claimed
 * FC/CONV_2D (the neighbour pass looks for layers next to them). */
typedef struct Claims {
  EdgeIntArray* list;
  int *link_in, *link_out;
  int nlinks, nfc, nconv;
} Claims;

/* Adds s's node (and the DENSIFY in front of it) to the claims; -1 if it cannot be claimed. */
static int claim_node(const DelegateData* dd, Claims* c, const OpSpec* s, const int* uses, const char* note) {
  if (s->densify_node >= 0) {
    if (uses[s->w_shape_t] != 1) {
      vlog(dd, "node %d: declined: DENSIFY output has other consumers", s->node);
      return -1;
    }
    c->list->data[c->list->size++] = s->densify_node;
  }
  c->list->data[c->list->size++] = s->node;
  c->link_in[c->nlinks] = s->in_t;
  c->link_out[c->nlinks++] = s->out_t;
  *(s->kind == KIND_FC ? &c->nfc : &c->nconv) += 1;
  vlog(dd, "node %d: %s claimed (sparsity %.3f%s%s)", s->node, s->kind == KIND_FC ? "FULLY_CONNECTED" : "CONV_2D",
       s->sparsity, s->sparse_input ? ", sparse-encoded weights" : "", note);
  return 0;
}

static int delegate_prepare(EdgeContext* ctx, EdgeDelegate* d) {
  DelegateData* dd = (DelegateData*)d;
  EdgeIntArray* plan = NULL;
  if (ctx->GetExecutionPlan(ctx, &plan) != eStatusOk || !plan) return eStatusError;
  const int nplan = plan->size;
  int* nodes = (int*)malloc(((size_t)nplan + 1) * sizeof(int));
  int* densify_of = (int*)malloc((ctx->tensors_size + 1) * sizeof(int));
  int* uses = (int*)calloc(ctx->tensors_size + 1, sizeof(int));
  int* scratch = (int*)malloc(((size_t)nplan + 1) * 3 * sizeof(int));
  OpSpec* low_spec = (OpSpec*)malloc(((size_t)nplan + 1) * sizeof(OpSpec));
  if (!nodes || !densify_of || !uses || !scratch || !low_spec) {
    free(nodes);
    free(densify_of);
    free(uses);
    free(scratch);
    free(low_spec);
    return eStatusError;
  }
  /* per plan entry: too dense but small (low_spec[i] holds its analysis) */
  int* low = scratch;
  memcpy(nodes, plan->data, (size_t)nplan * sizeof(int)); /* copy: the plan may change under us */
  for (size_t i = 0; i < ctx->tensors_size; i++) densify_of[i] = -1;
  for (int i = 0; i < nplan; i++) {
    EdgeNode* node;
    EdgeRegistration* reg;
    if (ctx->GetNodeAndRegistration(ctx, nodes[i], &node, &reg) != eStatusOk) continue;
    if (node->inputs)
      for (int j = 0; j < node->inputs->size; j++)
        if (tensor_ok(ctx, node->inputs->data[j])) uses[node->inputs->data[j]]++;
    if (reg->builtin_code == eOpDensify && node->outputs && node->outputs->size == 1 &&
        tensor_ok(ctx, node->outputs->data[0]))
      densify_of[node->outputs->data[0]] = nodes[i];
  }
  EdgeIntArray* claim = (EdgeIntArray*)malloc(sizeof(EdgeIntArray) + (size_t)(2 * nplan + 1) * sizeof(int));
  if (!claim) {
    free(nodes);
    free(densify_of);
    free(uses);
    free(scratch);
    free(low_spec);
    return eStatusError;
  }
  claim->size = 0;
  Claims claims = {claim, scratch + nplan + 1, scratch + 2 * ((size_t)nplan + 1), 0, 0, 0};
  int nlow = 0;
  /* The shared-graph estimate (dense_peer_faster): the kernels' threads in a shared graph (as in
   * kernel_init) against the dense runtime's. */
  const int dense_threads = dd->opt.dense_threads < 0 ? ctx->recommended_num_threads : dd->opt.dense_threads;
  const int shared_threads = dd->opt.num_threads > 0 ? dd->opt.num_threads : 1;
  const int estimate = dense_threads > shared_threads && plan_is_shared(ctx, nodes, nplan);
  for (int i = 0; i < nplan; i++) {
    EdgeNode* node;
    EdgeRegistration* reg;
    low[i] = 0;
    if (ctx->GetNodeAndRegistration(ctx, nodes[i], &node, &reg) != eStatusOk) continue;
    if (reg->builtin_code != eOpFullyConnected && reg->builtin_code != eOpConv2D) continue;
    OpSpec s;
    char why[320];
    if (analyze(ctx, nodes[i], densify_of, &s, why, sizeof(why)) != 0) {
      vlog(dd, "node %d: %s declined: %s", nodes[i], reg->builtin_code == eOpConv2D ? "CONV_2D" : "FULLY_CONNECTED",
           why);
      continue;
    }
    if (too_dense(dd, &s)) {
      if ((int64_t)s.M * s.N * s.K <= dd->opt.dense_neighbour_max_macs) { /* for the neighbour pass below */
        low[i] = 1;
        low_spec[i] = s;
        nlow++;
      } else {
        log_too_dense(dd, &s);
      }
      continue;
    }
    if (estimate && dense_peer_faster(&s, shared_threads, dense_threads, why, sizeof(why))) {
      vlog(dd, "node %d: %s declined: the next delegate runs it faster dense (%s; option dense_threads)", s.node,
           s.kind == KIND_FC ? "FULLY_CONNECTED" : "CONV_2D", why);
      continue;
    }
    claim_node(dd, &claims, &s, uses, "");
  }
  /* A small layer declined only for being dense, whose input comes from a claimed node or whose
   * output feeds one (Keras' 10-way output layer after a pruned MLP), is claimed too: handing it to
   * the next delegate costs a partition switch and an invoke of its own, which a few thousand
   * multiply-adds here do not.  Small means few MACs per invoke (M x N x K), so a dense convolution
   * over a large feature map stays with XNNPACK.  Repeated so a chain of such layers joins one by one. */
  for (int changed = claims.nlinks > 0 && nlow > 0; changed;) {
    changed = 0;
    for (int i = 0; i < nplan; i++) {
      if (!low[i]) continue;
      const OpSpec s = low_spec[i];
      int next_to_claimed = 0;
      for (int c = 0; c < claims.nlinks && !next_to_claimed; c++)
        next_to_claimed = claims.link_out[c] == s.in_t || claims.link_in[c] == s.out_t;
      if (!next_to_claimed) continue;
      low[i] = 0;
      char note[120];
      snprintf(note, sizeof(note), ", %lld MACs <= dense_neighbour_max_macs %d, next to a claimed node",
               (long long)s.M * s.N * s.K, dd->opt.dense_neighbour_max_macs);
      if (claim_node(dd, &claims, &s, uses, note) == 0) changed = 1;
    }
  }
  for (int i = 0; i < nplan; i++)
    if (low[i]) log_too_dense(dd, &low_spec[i]);
  /* A RESHAPE (Keras Flatten) whose only consumer is a claimed FULLY_CONNECTED is claimed too and
   * becomes an alias: it saves a separate partition (and its invoke) for the next delegate. */
  const int nclaimed = claim->size;
  for (int i = 0; i < nplan && nclaimed > 0; i++) {
    EdgeNode* node;
    EdgeRegistration* reg;
    if (ctx->GetNodeAndRegistration(ctx, nodes[i], &node, &reg) != eStatusOk || reg->builtin_code != eOpReshape)
      continue;
    if (!node->inputs || node->inputs->size < 1 || !node->outputs || node->outputs->size != 1) continue;
    const int ti = node->inputs->data[0], to = node->outputs->data[0];
    if (!tensor_ok(ctx, ti) || !tensor_ok(ctx, to) || uses[to] != 1) continue;
    const EdgeTensor* a = &ctx->tensors[ti];
    const EdgeTensor* b = &ctx->tensors[to];
    if (a->type != b->type || a->bytes != b->bytes || a->params.scale != b->params.scale ||
        a->params.zero_point != b->params.zero_point || (a->type != eTypeFloat32 && a->type != eTypeInt8))
      continue;
    int consumer_claimed = 0;
    for (int c = 0; c < nclaimed && !consumer_claimed; c++) {
      EdgeNode* cn;
      EdgeRegistration* cr;
      if (ctx->GetNodeAndRegistration(ctx, claim->data[c], &cn, &cr) != eStatusOk) continue;
      consumer_claimed = cr->builtin_code == eOpFullyConnected && cn->inputs && cn->inputs->data[0] == to;
    }
    if (!consumer_claimed) continue;
    claim->data[claim->size++] = nodes[i];
    vlog(dd, "node %d: RESHAPE claimed (alias feeding a claimed FULLY_CONNECTED)", nodes[i]);
  }
  int rc = eStatusOk;
  dd->whole_graph = claim->size == nplan;
  if (claim->size > 0 && !dd->whole_graph && dd->opt.num_threads == 0 && ctx->recommended_num_threads > 1)
    vlog(dd, "threads: the rest of the graph runs on the next delegate's %d threads; a second pool on the same "
         "cores would compete with it, so the kernels stay on one thread (set num_threads to override)",
         ctx->recommended_num_threads);
  if (claim->size > 0) {
    qsort(claim->data, (size_t)claim->size, sizeof(int), cmp_int);
    EdgeRegistration reg;
    memset(&reg, 0, sizeof(reg));
    reg.init = kernel_init;
    reg.free = kernel_free;
    reg.prepare = kernel_prepare;
    reg.invoke = kernel_invoke;
    reg.builtin_code = eOpDelegate;
    reg.custom_name = "EdgeSparseDelegate";
    reg.version = 1;
    rc = ctx->ReplaceNodeSubsetsWithDelegateKernels(ctx, reg, claim, d);
  }
  vlog(dd, "claimed %d FULLY_CONNECTED and %d CONV_2D nodes (kernels: %s)", claims.nfc, claims.nconv, dd->kt.isa);
  free(claim);
  free(nodes);
  free(densify_of);
  free(uses);
  free(scratch);
  free(low_spec);
  return rc;
}

/* ------------------------------------------------------------------ plugin entry points */

static int parse_layouts(const char* v, unsigned* mask) {
  *mask = 0;
  char buf[128];
  snprintf(buf, sizeof(buf), "%s", v);
  for (char* tok = strtok(buf, ", "); tok; tok = strtok(NULL, ", ")) {
    int found = 0;
    if (strcmp(tok, "auto") == 0 || strcmp(tok, "all") == 0) {
      *mask |= (1u << EDGE_LAYOUT_COUNT) - 1u;
      found = 1;
    }
    for (int l = 0; l < EDGE_LAYOUT_COUNT && !found; l++)
      if (strcmp(tok, kLayoutNames[l]) == 0) {
        *mask |= 1u << l;
        found = 1;
      }
    if (!found) return -1;
  }
  return *mask ? 0 : -1;
}

EXPORT const char* edge_sparse_delegate_abi(void) { return EDGE_ABI_TAG; }

/* Test entry point, not used by the runtime: runs the int8 requantization epilogue of the kernel set
 * `isa` (auto/avx512/avx2/scalar, as the option) on n accumulators with per-channel bias, Q31
 * multiplier and TFLite shift, so the vector versions can be compared with the scalar reference.
 * Returns the name of the kernel set that ran, or NULL on bad arguments / out of memory. */
EXPORT const char* edge_sparse_delegate_requant_check(const char* isa, int rmode, int n, const int32_t* acc,
                                                      const int32_t* bias, const int32_t* mult,
                                                      const int32_t* shift, int32_t zp, int32_t qmin, int32_t qmax,
                                                      int8_t* y) {
  if (!isa || n < 0 || rmode < EDGE_ROUND_DOUBLE_AWAY || rmode > EDGE_ROUND_SINGLE) return NULL;
  static EdgeKernelTable kt;
  select_kernels(&kt, isa);
  const size_t np = ((size_t)n + 15) & ~(size_t)15;
  int32_t* buf = (int32_t*)calloc(np * 6 + 1, sizeof(int32_t));
  if (!buf) return NULL;
  int32_t *a = buf, *b = buf + np, *m = buf + 2 * np, *ls = buf + 3 * np, *rs = buf + 4 * np, *ts = buf + 5 * np;
  for (int i = 0; i < n; i++) {
    if (shift[i] < -31 || shift[i] > 30 || mult[i] < 0) {
      free(buf);
      return NULL;
    }
    a[i] = acc[i];
    b[i] = bias[i];
    m[i] = mult[i];
    ls[i] = shift[i] > 0 ? shift[i] : 0;
    rs[i] = shift[i] > 0 ? 0 : -shift[i];
    ts[i] = 31 - shift[i];
  }
  EdgeEpilogue e;
  memset(&e, 0, sizeof(e));
  e.bias_s8 = b;
  e.bias_u8 = b;
  e.mult = m;
  e.lshift = ls;
  e.rshift = rs;
  e.tshift = ts;
  e.rmode = rmode;
  e.zp_out = zp;
  e.qmin = qmin;
  e.qmax = qmax;
  uint8_t* fsh;
  if (edge_epilogue_fuse(&e, n, &fsh) != 0) {
    free(buf);
    return NULL;
  }
  kt.requant(&e, a, y, n);
  free(buf);
  free(fsh);
  return kt.isa;
}

EXPORT EdgeDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t num_options,
                                                   void (*report_error)(const char*)) {
  /* The Python loader passes the count as a C int: only the low 32 bits are defined. */
  const int count = (int)(uint32_t)(num_options & 0xffffffffu);
  Options opt;
  memset(&opt, 0, sizeof(opt));
  opt.min_sparsity = 0.5f;
  opt.dense_neighbour_max_macs = 16384;
  opt.layouts = (1u << EDGE_LAYOUT_COUNT) - 1u;
  opt.dense_threads = -1;
  snprintf(opt.isa, sizeof(opt.isa), "auto");
  char msg[320];
  for (int i = 0; i < count; i++) {
    const char* k = keys[i];
    const char* v = values[i];
    char* end = NULL;
    if (strcmp(k, "abi_version") == 0) {
      if (strcmp(v, EDGE_ABI_TAG) != 0) {
        snprintf(msg, sizeof(msg),
                 "edge_sparse_delegate: library built for ABI '%s' but the caller expects '%s'; rebuild it with "
                 "`pip install -e .`",
                 EDGE_ABI_TAG, v);
        goto fail;
      }
    } else if (strcmp(k, "min_sparsity") == 0) {
      opt.min_sparsity = strtof(v, &end);
      if (!end || *end || opt.min_sparsity < 0.f || opt.min_sparsity > 1.f) {
        snprintf(msg, sizeof(msg), "edge_sparse_delegate: min_sparsity must be a number in [0, 1], got '%s'", v);
        goto fail;
      }
    } else if (strcmp(k, "dense_neighbour_max_macs") == 0) {
      const long n = strtol(v, &end, 10);
      if (!end || *end || !*v || n < 0 || n > 1L << 30) {
        snprintf(msg, sizeof(msg),
                 "edge_sparse_delegate: dense_neighbour_max_macs must be an integer in 0..2^30, got '%s'", v);
        goto fail;
      }
      opt.dense_neighbour_max_macs = (int)n;
    } else if (strcmp(k, "layouts") == 0) {
      if (parse_layouts(v, &opt.layouts) != 0) {
        snprintf(msg, sizeof(msg),
                 "edge_sparse_delegate: layouts must be a comma list of dense,csr,1x16,16x1,16x4 or auto, got '%s'", v);
        goto fail;
      }
    } else if (strcmp(k, "num_threads") == 0) {
      const long n = strtol(v, &end, 10);
      if (!end || *end || n < 0 || n > 64) {
        snprintf(msg, sizeof(msg), "edge_sparse_delegate: num_threads must be an integer in 0..64, got '%s'", v);
        goto fail;
      }
      opt.num_threads = (int)n;
    } else if (strcmp(k, "dense_threads") == 0) {
      const long n = strtol(v, &end, 10);
      if (!end || *end || !*v || n < -1 || n > 64) {
        snprintf(msg, sizeof(msg), "edge_sparse_delegate: dense_threads must be an integer in -1..64, got '%s'", v);
        goto fail;
      }
      opt.dense_threads = (int)n;
    } else if (strcmp(k, "verbose") == 0) {
      opt.verbose = strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "True") == 0;
    } else if (strcmp(k, "rounding") == 0) {
      if (strcmp(v, "builtin") == 0) {
        opt.rounding = ROUNDING_BUILTIN;
      } else if (strcmp(v, "reference") == 0) {
        opt.rounding = ROUNDING_REFERENCE;
      } else {
        snprintf(msg, sizeof(msg), "edge_sparse_delegate: rounding must be builtin or reference, got '%s'", v);
        goto fail;
      }
    } else if (strcmp(k, "isa") == 0) {
      if (strcmp(v, "auto") && strcmp(v, "scalar") && strcmp(v, "avx2") && strcmp(v, "avx512")) {
        snprintf(msg, sizeof(msg), "edge_sparse_delegate: isa must be auto, scalar, avx2 or avx512, got '%s'", v);
        goto fail;
      }
      snprintf(opt.isa, sizeof(opt.isa), "%s", v);
    } else {
      snprintf(msg, sizeof(msg),
               "edge_sparse_delegate: unknown option '%s' (accepted: abi_version, min_sparsity, "
               "dense_neighbour_max_macs, layouts, num_threads, dense_threads, verbose, isa, rounding)",
               k);
      goto fail;
    }
  }
  DelegateData* dd = (DelegateData*)calloc(1, sizeof(DelegateData));
  if (!dd) {
    snprintf(msg, sizeof(msg), "edge_sparse_delegate: out of memory");
    goto fail;
  }
  dd->opt = opt;
  select_kernels(&dd->kt, opt.isa);
  dd->base.data_ = dd;
  dd->base.Prepare = delegate_prepare;
  dd->base.flags = 0;
  vlog(dd, "created (abi %s, kernels %s, min_sparsity %.2f, dense_neighbour_max_macs %d)", EDGE_ABI_TAG, dd->kt.isa,
       opt.min_sparsity, opt.dense_neighbour_max_macs);
  return &dd->base;
fail:
  if (report_error) report_error(msg);
  return NULL;
}

/* The runtime frees a graph's kernels before its delegate (the Python wrapper keeps the delegate alive
 * as long as an interpreter that uses it), so the shared pool goes last. */
EXPORT void tflite_plugin_destroy_delegate(EdgeDelegate* d) {
  if (d) edge_pool_destroy(((DelegateData*)d)->pool);
  free(d);
}
