/*
 * Packed weight layouts and the per-ISA GEMM kernel table of the edge-lottery sparse delegate.
 *
 * Every claimed op is a GEMM  y[M][N] = act(x[M][K] . W[N][K]^T + b)  where M is batch (FC) or
 * pixels (CONV_2D through an im2col/indirection buffer), N output channels and K the reduction.
 * Kernels never read x beyond column K-1: the last partial block of a row is re-anchored to end at
 * K-1 during packing (its overlapping columns are zero), so no input copy or padding is needed.
 */
#ifndef EDGE_KERNELS_H_
#define EDGE_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

#define EDGE_HIDDEN __attribute__((visibility("hidden")))

enum EdgeLayout {
  EDGE_LAYOUT_DENSE = 0, /* panels of 16 output rows, every K column present */
  EDGE_LAYOUT_CSR,       /* unstructured: per row (column, value) pairs */
  EDGE_LAYOUT_1X16,      /* per row, blocks of 16 consecutive input columns */
  EDGE_LAYOUT_16X1,      /* panels of 16 output rows x 1 input column, zero blocks skipped */
  EDGE_LAYOUT_16X4,      /* panels of 16 output rows x 4 input columns, zero blocks skipped */
  EDGE_LAYOUT_COUNT
};

enum EdgeDType { EDGE_F32 = 0, EDGE_I8 = 1 };

/* Batch-1 int8 inputs up to this many columns are converted to x ^ 0x80 once on the stack (and the
 * batch-1 stream, whose columns are 16-bit, is built only for them). */
#define EDGE_STREAM_MAX_K 16384

/* int8 requantization flavours found in LiteRT 2.3.0's kernels (all "multiply by quantized
 * multiplier", they differ only in rounding):
 *  DOUBLE_AWAY: rounding doubling high-mul, then rounding right shift with ties away from zero
 *               (TFLite's own arithmetic; what the optimized CONV_2D kernels produce);
 *  DOUBLE_UP:   same high-mul, final shift with ties toward +inf (what the optimized
 *               FULLY_CONNECTED kernels produce: ruy's rounding);
 *  SINGLE:      one 64-bit product rounded once (the BUILTIN_REF kernels and XNNPACK). */
enum EdgeRounding { EDGE_ROUND_DOUBLE_AWAY = 0, EDGE_ROUND_DOUBLE_UP = 1, EDGE_ROUND_SINGLE = 2 };

typedef struct EdgePacked {
  int layout;
  int dtype;
  int N, K;
  int kb;          /* block width along K for panel layouts (1 or 4); 16 for 1x16 */
  int npanels;     /* panel layouts: ceil(N / 16) */
  int32_t* ptr;    /* panel layouts: npanels+1 block offsets; CSR/1x16: N+1 offsets */
  int32_t* idx;    /* block start column (panel layouts, 1x16) or column (CSR) */
  uint16_t* idx16; /* f32 16x1 with K <= 65536: idx as 16 bits, for the batch-1 loop (fewer bytes) */
  void* w;         /* 64-byte aligned values (float or int8) */
  size_t nblocks;  /* stored blocks (or non-zeros for CSR) */
  /* int8 16x4 only: the same blocks as a batch-1 stream in groups of 4 panels; within a group the
   * panels take turns (block j of panels 0..3, then block j+1, ...) and are padded with zero blocks
   * to the group's longest panel, so a batch-1 kernel keeps four independent accumulator chains and
   * has one loop trip count per group instead of one per panel (per-panel loop exits mispredict
   * once the interpreter around the delegate has evicted the branch history).  Panels are grouped
   * by block count (s_pan) so the padding stays small; the last group has npanels % 4 panels
   * when that is not zero (then its entries take turns among that many panels). */
  int s_ngroups;   /* ceil(npanels / 4) */
  int32_t* s_pan;  /* npanels panel numbers, 4 per group in group order */
  int32_t* s_cnt;  /* per group: blocks per panel after padding */
  uint16_t* s_col; /* per entry: input column (the stream is built only for K <= EDGE_STREAM_MAX_K) */
  void* s_w;       /* 64 bytes per entry, 64-byte aligned */
} EdgePacked;

typedef struct EdgeEpilogue {
  /* f32 */
  const float* fbias; /* N entries (zeros when the op has no bias) */
  float fmin, fmax;
  /* int8: acc = sum(x*w) (x as int8) ; y = clamp(zp + requant(acc + bias_s8[n])) */
  const int32_t* bias_s8; /* bias - zp_in * rowsum */
  const int32_t* bias_u8; /* bias - (zp_in + 128) * rowsum, for kernels that feed x ^ 0x80 */
  const int32_t* mult;    /* per-channel fixed-point multiplier (Q31) */
  const int32_t* lshift;  /* max(shift, 0) */
  const int32_t* rshift;  /* max(-shift, 0) */
  const int32_t* tshift;  /* 31 - shift (single-rounding mode) */
  int32_t rmode;          /* EdgeRounding */
  int32_t zp_out, qmin, qmax;
  /* Fused double rounding (vector fast path; see edge_epilogue_fuse): when every channel has
   * 1 <= rshift <= 22 (so no left shift), SRDHM, the rounding right shift and the output zero point
   * collapse into  y = (P + rc) >> (31 + rshift)  on the 64-bit product P = (acc + bias) * mult,
   * less 2^31 where P < -2^30 when ties round away from zero; rc = 2^30 + (2 zp_out + 1) << (30 + rshift)
   * is formed in the kernel. */
  int32_t fused;
  const uint8_t* fsh; /* per channel: 31 + rshift (zero padded to a multiple of 16 entries of 31 + 1) */
} EdgeEpilogue;

/* One GEMM over rows [0, M) of x (row stride ldx elements) into y (row stride ldy elements),
 * restricted to output channels [n0, n1) (multiples of 16 except the final bound N). */
typedef void (*EdgeGemmFn)(const EdgePacked* p, const EdgeEpilogue* e, const void* x, int M, int ldx,
                           void* y, int ldy, int n0, int n1);

/* The int8 epilogue alone: y[i] = clamp(zp + requant(acc[i] + bias_s8[i])) for channels [0, n).
 * Exposed per ISA so a test can hold the vector versions against the scalar reference. */
typedef void (*EdgeRequantFn)(const EdgeEpilogue* e, const int32_t* acc, int8_t* y, int n);

/* f32, one input row, a panel layout with one-column blocks: the raw sums (no bias, no clamp) of
 * blocks [lo[pn], hi[pn]) of every panel pn into acc[16 pn .. 16 pn + 15], four chains each summed
 * as (c0 + c1) + (c2 + c3).  The part of an op split along K that one thread computes (run_pair in
 * delegate.c); every thread count computes the same parts, so results do not depend on it. */
typedef void (*EdgePartialFn)(const EdgePacked* p, const int32_t* lo, const int32_t* hi, const float* x,
                              float* acc);

/* The whole op on one thread with the same arithmetic: for every panel the sums of the nparts
 * parts [cut[t * npanels + pn], cut[(t + 1) * npanels + pn]) (each as in EdgePartialFn), added
 * in part order, plus the bias, clamped, into y[16 pn ..] (N outputs). */
typedef void (*EdgeSplitFn)(const EdgePacked* p, const EdgeEpilogue* e, const int32_t* cut, int nparts,
                            const float* x, float* y);

/* int8, one input row, a panel layout with 4-column blocks: for every panel pn the raw sums of
 * (x + 128) * w over blocks [lo[pn], hi[pn]) into acc[16 pn .. 16 pn + 15] (the unsigned input the
 * VNNI kernels feed; bias_u8 completes them).  Integer sums are exact, so an op split along K by
 * threads (run_pair) gives the same bits as the whole op on one thread. */
typedef void (*EdgePartialI8Fn)(const EdgePacked* p, const int32_t* lo, const int32_t* hi, const int8_t* x,
                                int32_t* acc);

/* int8, one input row, a chain of ops each of whose weights has the batch-1 stream (EdgePacked.s_pan),
 * op i + 1 reading op i's output: the input is converted (x ^ 0x80) once and each op's epilogue also
 * stores its output converted for the next, so only the first op pays a conversion and the chain
 * is one call; y[i] receives op i's int8 output. */
typedef void (*EdgeStreamChainFn)(const EdgePacked* const* p, const EdgeEpilogue* const* e, int nops,
                                  const int8_t* x, int8_t* const* y);

typedef struct EdgeKernelTable {
  const char* isa;
  EdgeGemmFn gemm[2][EDGE_LAYOUT_COUNT]; /* [dtype][layout]; NULL = not available */
  EdgeRequantFn requant;
  EdgePartialFn partial_f32;
  EdgeSplitFn split_f32;
  EdgePartialI8Fn partial_i8;
  EdgeStreamChainFn stream_chain_i8; /* NULL where the ISA has no batch-1 stream */
} EdgeKernelTable;

EDGE_HIDDEN void edge_kernels_scalar(EdgeKernelTable* t);
#if defined(__x86_64__)
EDGE_HIDDEN void edge_kernels_avx2(EdgeKernelTable* t);
EDGE_HIDDEN void edge_kernels_avx512(EdgeKernelTable* t);
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
EDGE_HIDDEN void edge_kernels_neon(EdgeKernelTable* t);
#endif

/* TFLite's double-rounding requantization (scalar reference, shared by all ISAs). */
static inline int32_t edge_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
  int64_t v = ab + nudge;
  /* division by 2^31 truncating toward zero */
  int64_t q = v >= 0 ? (v >> 31) : -((-v) >> 31);
  return (int32_t)q;
}

static inline int32_t edge_rdbpot(int32_t x, int e, int away) {
  int32_t mask = (int32_t)((1LL << e) - 1);
  int32_t rem = x & mask;
  int32_t thr = (mask >> 1) + (away && x < 0 ? 1 : 0);
  return (x >> e) + (rem > thr ? 1 : 0);
}

static inline int32_t edge_requant(int32_t acc, int32_t mult, int32_t ls, int32_t rs, int32_t ts, int mode) {
  if (mode == EDGE_ROUND_SINGLE) {
    int64_t v = ((int64_t)acc * mult + (1LL << (ts - 1))) >> ts;
    return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
  }
  uint32_t shifted = (uint32_t)acc << ls; /* TFLite multiplies by (1 << ls); wraps the same way */
  return edge_rdbpot(edge_srdhm((int32_t)shifted, mult), rs, mode == EDGE_ROUND_DOUBLE_AWAY);
}

#endif /* EDGE_KERNELS_H_ */
