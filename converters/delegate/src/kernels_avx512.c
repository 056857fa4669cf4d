/*
 * AVX-512 (F/BW/VL) + VNNI kernels, selected at run time only when cpuid reports all of them.
 *
 * The int8 16x4 panel kernel is the one that makes int8 winning tickets fast: each stored block is
 * one broadcast of 4 input bytes and one vpdpbusd against a 64-byte weight vector (16 output rows x
 * 4 columns), with no gathers and no horizontal sums.  vpdpbusd multiplies unsigned by signed
 * bytes, so inputs are fed as x ^ 0x80 (= x + 128) and the bias carries -(zp_in + 128) * rowsum.
 * The requantization is TFLite's double-rounding arithmetic, vectorised lane-exactly.
 */
#if defined(__x86_64__)
#include <immintrin.h>

#define EDGE_SFX(name) edge_avx512_##name
#include "kernels_generic_impl.h"

/* Lane-exact SaturatingRoundingDoublingHighMul for b >= 0 (multipliers are non-negative Q31).
 * TFLite's form is  trunc((a*b + nudge) / 2^31)  with nudge = 2^30 for a*b >= 0 and 1 - 2^30 below;
 * for a*b < 0, truncation toward zero is ceil(v / 2^31) = floor((v + 2^31 - 1) / 2^31), and
 * v + 2^31 - 1 = a*b + 2^30 again, so both signs reduce to  floor((a*b + 2^30) / 2^31)  (the
 * saturating case a = b = INT32_MIN cannot occur for b >= 0).  That is one 64-bit add and one
 * shift per product; the result fits int32, so even lanes take bits 31..62 with a logical shift
 * right and odd lanes put the same bits into their high dword with a shift left by one.
 * b_odd = b >> 32 (64-bit lanes), precomputed per panel. */
static inline __m512i srdhm16(__m512i a, __m512i b, __m512i b_odd) {
  const __m512i half = _mm512_set1_epi64(1LL << 30);
  const __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(a, b), half);
  const __m512i po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), b_odd), half);
  return _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 31), _mm512_slli_epi64(po, 1));
}

/* RoundingDivideByPOT with per-lane exponent e, remainder mask (2^e - 1) and threshold (mask >> 1)
 * precomputed; away: ties away from zero (TFLite), else ties toward +inf (ruy). */
static inline __m512i rdbpot16(__m512i x, __m512i e, __m512i mask, __m512i thr, int away) {
  const __m512i rem = _mm512_and_si512(x, mask);
  if (away) thr = _mm512_add_epi32(thr, _mm512_srli_epi32(x, 31));
  const __m512i r = _mm512_srav_epi32(x, e);
  return _mm512_mask_sub_epi32(r, _mm512_cmpgt_epi32_mask(rem, thr), r, _mm512_set1_epi32(-1));
}

/* Single rounding: (x * m + 2^(t-1)) >> t in 64 bits, saturated to int32 (t = 31 - shift >= 1). */
static inline __m512i single16(__m512i x, __m512i m, __m512i t) {
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i te = _mm512_and_si512(t, _mm512_set1_epi64(0xffffffff));
  const __m512i to = _mm512_srli_epi64(t, 32);
  __m512i pe = _mm512_mul_epi32(x, m);
  __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m, 32));
  pe = _mm512_srav_epi64(_mm512_add_epi64(pe, _mm512_sllv_epi64(one, _mm512_sub_epi64(te, one))), te);
  po = _mm512_srav_epi64(_mm512_add_epi64(po, _mm512_sllv_epi64(one, _mm512_sub_epi64(to, one))), to);
  const __m512i lo = _mm512_set1_epi64(INT32_MIN), hi = _mm512_set1_epi64(INT32_MAX);
  pe = _mm512_min_epi64(_mm512_max_epi64(pe, lo), hi);
  po = _mm512_min_epi64(_mm512_max_epi64(po, lo), hi);
  return _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
}

/* Per-panel requantization constants, loaded once and reused for every row of the panel. */
typedef struct Q16 {
  __m512i bias, ls, mult, mult_odd, rs, rmask, rthr, ts, zp, lo, hi;
  __m512i rc_e, rc_o, sh32; /* fused rounding (EdgeEpilogue.fused) */
  __mmask16 lanes;
  int mode, any_ls, fused;
  int clamp_lo, clamp_hi; /* the activation range is narrower than the int8 range on that side */
} Q16;

/* The epilogue arrays are allocated to a multiple of 16 channels (zero padded), so whole
 * vectors are loaded; only the store is masked. */
static inline Q16 q16_load_bias(const EdgeEpilogue* e, const int32_t* bias, int n, int nr) {
  Q16 q;
  q.lanes = (__mmask16)((1u << nr) - 1u);
  q.bias = _mm512_loadu_si512((const void*)(bias + n));
  q.mult = _mm512_loadu_si512((const void*)(e->mult + n));
  q.mult_odd = _mm512_srli_epi64(q.mult, 32);
  q.lo = _mm512_set1_epi32(e->qmin);
  q.hi = _mm512_set1_epi32(e->qmax);
  q.clamp_lo = e->qmin > INT8_MIN;
  q.clamp_hi = e->qmax < INT8_MAX;
  q.mode = e->rmode;
  q.fused = e->fused;
  if (q.fused) { /* rc = 2^30 + (2 zp + 1) << (sh - 1) per 64-bit lane (see edge_epilogue_fuse) */
    const __m512i sh = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(e->fsh + n)));
    const __m512i one = _mm512_set1_epi64(1), half = _mm512_set1_epi64(1LL << 30);
    const __m512i zq = _mm512_set1_epi64(2 * (int64_t)e->zp_out + 1);
    const __m512i sh_e = _mm512_and_si512(sh, _mm512_set1_epi64(0xffffffff));
    const __m512i sh_o = _mm512_srli_epi64(sh, 32);
    q.rc_e = _mm512_add_epi64(half, _mm512_sllv_epi64(zq, _mm512_sub_epi64(sh_e, one)));
    q.rc_o = _mm512_add_epi64(half, _mm512_sllv_epi64(zq, _mm512_sub_epi64(sh_o, one)));
    q.sh32 = _mm512_sub_epi32(sh, _mm512_set1_epi32(32));
    return q;
  }
  const __m512i one = _mm512_set1_epi32(1);
  q.ls = _mm512_loadu_si512((const void*)(e->lshift + n));
  q.rs = _mm512_loadu_si512((const void*)(e->rshift + n));
  q.rmask = _mm512_sub_epi32(_mm512_sllv_epi32(one, q.rs), one);
  q.rthr = _mm512_srai_epi32(q.rmask, 1);
  q.ts = _mm512_loadu_si512((const void*)(e->tshift + n));
  q.zp = _mm512_set1_epi32(e->zp_out);
  q.any_ls = _mm512_test_epi32_mask(q.ls, q.ls) != 0;
  return q;
}

static inline Q16 q16_load(const EdgeEpilogue* e, int n, int nr) { return q16_load_bias(e, e->bias_u8, n, nr); }

/* Clamps to the activation range what the saturating narrowing to int8 (narrow8) does not: with
 * no activation, or one whose range covers the int8 range (ReLU with the zero point at -128, the
 * converter's usual choice), that is nothing. */
static inline __m512i clamp16(const Q16* q, __m512i v) {
  if (q->clamp_lo) v = _mm512_max_epi32(v, q->lo);
  if (q->clamp_hi) v = _mm512_min_epi32(v, q->hi);
  return v;
}

static inline __m128i narrow8(__m512i v) { return _mm512_cvtsepi32_epi8(v); }

/* v = acc + bias -> requantized, offset int32 lanes, clamped as far as narrow8 does not. */
static inline __m512i requant16(const Q16* q, __m512i v) {
  if (q->fused) { /* see EdgeEpilogue.fused: the zero point is already in rc */
    __m512i pe = _mm512_mul_epi32(v, q->mult);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), q->mult_odd);
    __m512i te = _mm512_add_epi64(pe, q->rc_e), to = _mm512_add_epi64(po, q->rc_o);
    if (q->mode == EDGE_ROUND_DOUBLE_AWAY) {
      const __m512i lim = _mm512_set1_epi64(-(1LL << 30)), two31 = _mm512_set1_epi64(1LL << 31);
      te = _mm512_mask_sub_epi64(te, _mm512_cmplt_epi64_mask(pe, lim), te, two31);
      to = _mm512_mask_sub_epi64(to, _mm512_cmplt_epi64_mask(po, lim), to, two31);
    }
    /* floor(t / 2^(31 + r)) = floor(hi32(t) / 2^(r - 1)) (r >= 1): one permute gathers the high
     * dwords of the even and odd products into channel order, then one 32-bit shift; this is
     * cheaper than two 64-bit shifts and a blend on cores that split 512-bit operations in two */
    const __m512i hi_dwords = _mm512_set_epi32(31, 15, 29, 13, 27, 11, 25, 9, 23, 7, 21, 5, 19, 3, 17, 1);
    v = _mm512_srav_epi32(_mm512_permutex2var_epi32(te, hi_dwords, to), q->sh32);
    return clamp16(q, v);
  }
  if (q->mode == EDGE_ROUND_SINGLE) {
    v = single16(v, q->mult, q->ts);
  } else {
    if (q->any_ls) v = _mm512_sllv_epi32(v, q->ls);
    v = srdhm16(v, q->mult, q->mult_odd);
    v = rdbpot16(v, q->rs, q->rmask, q->rthr, q->mode == EDGE_ROUND_DOUBLE_AWAY);
  }
  return clamp16(q, _mm512_add_epi32(v, q->zp));
}

/* v = acc + bias (16 lanes) for output channels n..n+15 -> int8, the valid lanes stored. */
static inline void store_q8_16(const Q16* q, __m512i v, int8_t* y) {
  _mm_mask_storeu_epi8(y, q->lanes, narrow8(requant16(q, v)));
}

/* The vector epilogue over channels [0, n) on the bias_s8 path (the kernel table's requant entry). */
static void avx512_requant(const EdgeEpilogue* e, const int32_t* acc, int8_t* y, int n) {
  for (int i = 0; i < n; i += 16) {
    const int nr = n - i < 16 ? n - i : 16;
    const Q16 q = q16_load_bias(e, e->bias_s8, i, nr);
    store_q8_16(&q, _mm512_add_epi32(_mm512_loadu_si512((const void*)(acc + i)), q.bias), y + i);
  }
}

static inline __m512i bcast_x4(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v ^ (int32_t)0x80808080u);
}

static inline __m512i bcast_u4(const int8_t* p) { /* input already stored as x ^ 0x80 */
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

static void vnni_i8_panel_impl(const EdgePacked* p, const EdgeEpilogue* e, const int8_t* x, int M, int ldx,
                               void* yv, int ldy, int n0, int n1, int pre_xored);

static void vnni_i8_stream(const EdgePacked* p, const EdgeEpilogue* e, const int8_t* xu, int8_t* y, int8_t* yu);

/* dst[0, len) = src[0, len) ^ 0x80 */
static inline void xor80(int8_t* dst, const int8_t* src, int len) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  int k = 0;
  for (; k + 64 <= len; k += 64)
    _mm512_storeu_si512((void*)(dst + k), _mm512_xor_si512(_mm512_loadu_si512((const void*)(src + k)), flip));
  if (k < len) {
    const __mmask64 tail = ((__mmask64)1 << (len - k)) - 1;
    _mm512_mask_storeu_epi8(dst + k, tail, _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, src + k), flip));
  }
}

/* Inputs are converted to unsigned (x ^ 0x80) once, in chunks of rows that fit a stack buffer, so
 * every stored block costs a single broadcast load and one vpdpbusd. Converting on the fly costs a
 * scalar load, a xor and a broadcast from a general register per block and row, which was most of
 * the time of a 1x1 convolution with few input channels at batch 8. The conversion costs about
 * K / 64 vector operations per row, so rows whose panels keep at most one block per 8 input
 * columns (where the two came out even on mobilenet shapes) convert on the fly, as do rows longer
 * than the buffer; small inputs always convert (the batch-1 stream needs it). */
static void vnni_i8_panel(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx, void* yv,
                          int ldy, int n0, int n1) {
  const int K = p->K;
  int8_t xs[EDGE_STREAM_MAX_K] __attribute__((aligned(64)));
  if (M == 1 && p->s_pan && n0 == 0 && n1 == p->N) {
    /* a whole batch-1 row straight to the stream (built only for K <= EDGE_STREAM_MAX_K): without
     * the row chunking below, whose division and checks took ~3 % of the int8 LeNet ticket's
     * invoke from Python, scratch A/B over 4 interpreters each */
    xor80(xs, (const int8_t*)xv, K);
    vnni_i8_stream(p, e, xs, (int8_t*)yv, NULL);
    return;
  }
  const int64_t blocks = (int64_t)p->ptr[(n1 + 15) / 16] - p->ptr[n0 / 16];
  if (K > EDGE_STREAM_MAX_K || ((size_t)M * K > EDGE_STREAM_MAX_K && blocks * 8 <= K)) {
    vnni_i8_panel_impl(p, e, (const int8_t*)xv, M, ldx, yv, ldy, n0, n1, 0);
    return;
  }
  int chunk = EDGE_STREAM_MAX_K / K;
  if (chunk >= 8) chunk &= ~3; /* whole groups of four rows for the row loop */
  for (int m0 = 0; m0 < M; m0 += chunk) {
    const int mc = M - m0 < chunk ? M - m0 : chunk;
    /* rows stored back to back (ldx == K, as convolutions pass them) convert as one run */
    if (ldx == K)
      xor80(xs, (const int8_t*)xv + (size_t)m0 * ldx, mc * K);
    else
      for (int r = 0; r < mc; r++) xor80(xs + (size_t)r * K, (const int8_t*)xv + (size_t)(m0 + r) * ldx, K);
    vnni_i8_panel_impl(p, e, xs, mc, K, (int8_t*)yv + (size_t)m0 * ldy, ldy, n0, n1, 1);
  }
}

#define BX(ptr) (pre_xored ? bcast_u4(ptr) : bcast_x4(ptr))

/* One row (batch 1) of one panel from the per-panel blocks: eight independent chains (vpdpbusd
 * latency is 4-6 cycles on current x86 cores). */
static inline __m512i vnni_row_acc(const EdgePacked* p, const int8_t* xr, int b0, int b1, int pre_xored) {
  const int8_t* W = (const int8_t*)p->w;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  int b = b0;
  for (; b + 8 <= b1; b += 8) {
    const int8_t* w = W + (size_t)b * 64;
    const int32_t* ix = p->idx + b;
    a0 = _mm512_dpbusd_epi32(a0, BX(xr + ix[0]), _mm512_load_si512((const void*)w));
    a1 = _mm512_dpbusd_epi32(a1, BX(xr + ix[1]), _mm512_load_si512((const void*)(w + 64)));
    a2 = _mm512_dpbusd_epi32(a2, BX(xr + ix[2]), _mm512_load_si512((const void*)(w + 128)));
    a3 = _mm512_dpbusd_epi32(a3, BX(xr + ix[3]), _mm512_load_si512((const void*)(w + 192)));
    a4 = _mm512_dpbusd_epi32(a4, BX(xr + ix[4]), _mm512_load_si512((const void*)(w + 256)));
    a5 = _mm512_dpbusd_epi32(a5, BX(xr + ix[5]), _mm512_load_si512((const void*)(w + 320)));
    a6 = _mm512_dpbusd_epi32(a6, BX(xr + ix[6]), _mm512_load_si512((const void*)(w + 384)));
    a7 = _mm512_dpbusd_epi32(a7, BX(xr + ix[7]), _mm512_load_si512((const void*)(w + 448)));
  }
  a0 = _mm512_add_epi32(a0, a4);
  a1 = _mm512_add_epi32(a1, a5);
  a2 = _mm512_add_epi32(a2, a6);
  a3 = _mm512_add_epi32(a3, a7);
  for (; b + 4 <= b1; b += 4) {
    const int8_t* w = W + (size_t)b * 64;
    a0 = _mm512_dpbusd_epi32(a0, BX(xr + p->idx[b]), _mm512_load_si512((const void*)w));
    a1 = _mm512_dpbusd_epi32(a1, BX(xr + p->idx[b + 1]), _mm512_load_si512((const void*)(w + 64)));
    a2 = _mm512_dpbusd_epi32(a2, BX(xr + p->idx[b + 2]), _mm512_load_si512((const void*)(w + 128)));
    a3 = _mm512_dpbusd_epi32(a3, BX(xr + p->idx[b + 3]), _mm512_load_si512((const void*)(w + 192)));
  }
  for (; b < b1; b++)
    a0 = _mm512_dpbusd_epi32(a0, BX(xr + p->idx[b]), _mm512_load_si512((const void*)(W + (size_t)b * 64)));
  return _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
}

/* One group of the batch-1 stream with GS panels taking turns: U accumulator chains per panel
 * (U * GS >= 8 chains in flight; vpdpbusd latency is 4-6 cycles), c entries per panel. */
static inline __attribute__((always_inline)) void stream_group(const uint16_t** colp, const int8_t** Wp,
                                                               const int8_t* xu, int c, __m512i* acc,
                                                               const int GS, const int U) {
  const uint16_t* col = *colp;
  const int8_t* W = *Wp;
  __m512i a[8][4];
  for (int t = 0; t < U; t++)
    for (int u = 0; u < GS; u++) a[t][u] = _mm512_setzero_si512();
  int j = 0;
  for (; j + U <= c; j += U, col += U * GS, W += 64 * U * GS)
    for (int t = 0; t < U; t++)
      for (int u = 0; u < GS; u++)
        a[t][u] = _mm512_dpbusd_epi32(a[t][u], bcast_u4(xu + col[t * GS + u]),
                                      _mm512_load_si512((const void*)(W + 64 * (t * GS + u))));
  for (; j < c; j++, col += GS, W += 64 * GS)
    for (int u = 0; u < GS; u++)
      a[0][u] = _mm512_dpbusd_epi32(a[0][u], bcast_u4(xu + col[u]), _mm512_load_si512((const void*)(W + 64 * u)));
  for (int u = 0; u < GS; u++) {
    __m512i s = a[0][u];
    for (int t = 1; t < U; t++) s = _mm512_add_epi32(s, a[t][u]);
    acc[u] = s;
  }
  *colp = col;
  *Wp = W;
}

/* Batch 1 from the grouped stream (see EdgePacked.s_pan): four panels at a time, with independent
 * accumulator chains per panel, one loop per group; a last group of 1-3 panels has its own loop.
 * With yu, the outputs are also stored there as y ^ 0x80 (the next op's converted input). */
static void vnni_i8_stream(const EdgePacked* p, const EdgeEpilogue* e, const int8_t* xu, int8_t* y, int8_t* yu) {
  const uint16_t* col = p->s_col;
  const int8_t* W = (const int8_t*)p->s_w;
  const int np = p->npanels;
  for (int g = 0; g < p->s_ngroups; g++) {
    const int gs = np - 4 * g < 4 ? np - 4 * g : 4;
    __m512i acc[4];
    switch (gs) {
      case 4: stream_group(&col, &W, xu, p->s_cnt[g], acc, 4, 2); break;
      case 3: stream_group(&col, &W, xu, p->s_cnt[g], acc, 3, 2); break;
      case 2: stream_group(&col, &W, xu, p->s_cnt[g], acc, 2, 4); break;
      default: stream_group(&col, &W, xu, p->s_cnt[g], acc, 1, 8); break;
    }
    for (int u = 0; u < gs; u++) {
      const int n = p->s_pan[4 * g + u] * 16;
      const Q16 q = q16_load(e, n, p->N - n < 16 ? p->N - n : 16);
      const __m128i r = narrow8(requant16(&q, _mm512_add_epi32(acc[u], q.bias)));
      _mm_mask_storeu_epi8(y + n, q.lanes, r);
      if (yu) _mm_mask_storeu_epi8(yu + n, q.lanes, _mm_xor_si128(r, _mm_set1_epi8((char)0x80)));
    }
  }
}

static void vnni_i8_stream_chain(const EdgePacked* const* p, const EdgeEpilogue* const* e, int nops,
                                 const int8_t* x, int8_t* const* y) {
  int8_t xa[EDGE_STREAM_MAX_K] __attribute__((aligned(64)));
  int8_t xb[EDGE_STREAM_MAX_K] __attribute__((aligned(64)));
  int8_t *in = xa, *out = xb;
  xor80(in, x, p[0]->K);
  for (int i = 0; i < nops; i++) {
    vnni_i8_stream(p[i], e[i], in, y[i], i + 1 < nops ? out : NULL);
    int8_t* t = in;
    in = out;
    out = t;
  }
}

/* Not inlined: one copy of the row loop for both of vnni_i8_panel's paths (two inlined copies made
 * the on-the-fly path ~4 % slower in a harness). */
__attribute__((noinline)) static void vnni_i8_panel_impl(const EdgePacked* p, const EdgeEpilogue* e,
                                                         const int8_t* x, int M, int ldx, void* yv, int ldy,
                                                         int n0, int n1, int pre_xored) {
  int8_t* y = (int8_t*)yv;
  const int8_t* W = (const int8_t*)p->w;
  for (int pn = n0 / 16; pn * 16 < n1; pn++) {
    const int b0 = p->ptr[pn], b1 = p->ptr[pn + 1];
    const int n = pn * 16;
    const int nr = p->N - n < 16 ? p->N - n : 16;
    const Q16 q = q16_load(e, n, nr);
    if (b0 == b1) { /* a fully pruned panel: every row is the requantized bias (90 % of a conv's
                     * 2 x 16 blocks is none of them) */
      const __m128i c = narrow8(requant16(&q, q.bias));
      for (int m = 0; m < M; m++) _mm_mask_storeu_epi8(y + (size_t)m * ldy + n, q.lanes, c);
      continue;
    }
    int m = 0;
    for (; m + 4 <= M; m += 4) {
      /* the accumulators start at the bias (one add less per row in the epilogue, which is most
       * of the work of a 1x1 convolution at 90 % block sparsity) */
      __m512i a0 = q.bias, a1 = a0, a2 = a0, a3 = a0;
      const int8_t* x0 = x + (size_t)m * ldx;
      for (int b = b0; b < b1; b++) {
        const __m512i w = _mm512_load_si512((const void*)(W + (size_t)b * 64));
        const int k = p->idx[b];
        a0 = _mm512_dpbusd_epi32(a0, BX(x0 + k), w);
        a1 = _mm512_dpbusd_epi32(a1, BX(x0 + ldx + k), w);
        a2 = _mm512_dpbusd_epi32(a2, BX(x0 + 2 * (size_t)ldx + k), w);
        a3 = _mm512_dpbusd_epi32(a3, BX(x0 + 3 * (size_t)ldx + k), w);
      }
      store_q8_16(&q, a0, y + (size_t)m * ldy + n);
      store_q8_16(&q, a1, y + (size_t)(m + 1) * ldy + n);
      store_q8_16(&q, a2, y + (size_t)(m + 2) * ldy + n);
      store_q8_16(&q, a3, y + (size_t)(m + 3) * ldy + n);
    }
    for (; m < M; m++) {
      const __m512i acc = vnni_row_acc(p, x + (size_t)m * ldx, b0, b1, pre_xored);
      store_q8_16(&q, _mm512_add_epi32(acc, q.bias), y + (size_t)m * ldy + n);
    }
  }
}

/* f32 16x1 panels: one broadcast-FMA per stored block, four chains at batch 1. */
static inline void store_f32_16(const EdgeEpilogue* e, __m512 acc, float* y, int n, int nr) {
  const __mmask16 lanes = (__mmask16)((1u << nr) - 1u);
  __m512 v = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(lanes, e->fbias + n));
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(e->fmin)), _mm512_set1_ps(e->fmax));
  _mm512_mask_storeu_ps(y, lanes, v);
}

/* Sums of blocks [b, b1) of 16x1 f32 panels into four chains (one input row). */
#define F32_ROW_BLOCKS(W, ix, xr, b, b1, a0, a1, a2, a3)                                   \
  do {                                                                                     \
    for (; b + 4 <= b1; b += 4) {                                                          \
      const float* w_ = W + (size_t)b * 16;                                                \
      a0 = _mm512_fmadd_ps(_mm512_set1_ps(xr[ix[b]]), _mm512_load_ps(w_), a0);             \
      a1 = _mm512_fmadd_ps(_mm512_set1_ps(xr[ix[b + 1]]), _mm512_load_ps(w_ + 16), a1);    \
      a2 = _mm512_fmadd_ps(_mm512_set1_ps(xr[ix[b + 2]]), _mm512_load_ps(w_ + 32), a2);    \
      a3 = _mm512_fmadd_ps(_mm512_set1_ps(xr[ix[b + 3]]), _mm512_load_ps(w_ + 48), a3);    \
    }                                                                                      \
    for (; b < b1; b++) a0 = _mm512_fmadd_ps(_mm512_set1_ps(xr[ix[b]]), _mm512_load_ps(W + (size_t)b * 16), a0); \
  } while (0)

/* Blocks [b, b1) of a panel on one input row, summed as (c0 + c1) + (c2 + c3). */
static inline __m512 f32_part_sum(const EdgePacked* p, int b, int b1, const float* x) {
  const float* W = (const float*)p->w;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  if (p->idx16) /* 16-bit column numbers: fewer bytes to stream */
    F32_ROW_BLOCKS(W, p->idx16, x, b, b1, a0, a1, a2, a3);
  else
    F32_ROW_BLOCKS(W, p->idx, x, b, b1, a0, a1, a2, a3);
  return _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
}

/* One input row over panels [n0 / 16, n1 / 16). */
static void avx512_f32_row(const EdgePacked* p, const EdgeEpilogue* e, const float* x, float* y, int n0, int n1) {
  for (int pn = n0 / 16; pn * 16 < n1; pn++) {
    const int n = pn * 16;
    store_f32_16(e, f32_part_sum(p, p->ptr[pn], p->ptr[pn + 1], x), y + n, n, p->N - n < 16 ? p->N - n : 16);
  }
}

static void avx512_f32_panel(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                             void* yv, int ldy, int n0, int n1) {
  if (p->kb != 1) {
    edge_avx512_f32_panel(p, e, xv, M, ldx, yv, ldy, n0, n1);
    return;
  }
  const float* x = (const float*)xv;
  float* y = (float*)yv;
  const float* W = (const float*)p->w;
  const int M4 = M & ~3;
  for (int pn = n0 / 16; M4 && pn * 16 < n1; pn++) { /* four rows at a time share each weight load */
    const int b0 = p->ptr[pn], b1 = p->ptr[pn + 1];
    const int n = pn * 16;
    const int nr = p->N - n < 16 ? p->N - n : 16;
    for (int m = 0; m < M4; m += 4) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float* x0 = x + (size_t)m * ldx;
      for (int b = b0; b < b1; b++) {
        const __m512 w = _mm512_load_ps(W + (size_t)b * 16);
        const int k = p->idx[b];
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(x0[k]), w, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(x0[ldx + k]), w, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(x0[2 * (size_t)ldx + k]), w, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(x0[3 * (size_t)ldx + k]), w, a3);
      }
      store_f32_16(e, a0, y + (size_t)m * ldy + n, n, nr);
      store_f32_16(e, a1, y + (size_t)(m + 1) * ldy + n, n, nr);
      store_f32_16(e, a2, y + (size_t)(m + 2) * ldy + n, n, nr);
      store_f32_16(e, a3, y + (size_t)(m + 3) * ldy + n, n, nr);
    }
  }
  for (int m = M4; m < M; m++) avx512_f32_row(p, e, x + (size_t)m * ldx, y + (size_t)m * ldy, n0, n1);
}

static void avx512_f32_partial(const EdgePacked* p, const int32_t* lo, const int32_t* hi, const float* x,
                               float* acc) {
  for (int pn = 0; pn < p->npanels; pn++) _mm512_store_ps(acc + (size_t)pn * 16, f32_part_sum(p, lo[pn], hi[pn], x));
}

static void avx512_f32_split(const EdgePacked* p, const EdgeEpilogue* e, const int32_t* cut, int nparts,
                             const float* x, float* y) {
  const int np = p->npanels;
  for (int pn = 0; pn < np; pn++) {
    __m512 acc = f32_part_sum(p, cut[pn], cut[np + pn], x);
    for (int t = 1; t < nparts; t++)
      acc = _mm512_add_ps(acc, f32_part_sum(p, cut[(size_t)t * np + pn], cut[(size_t)(t + 1) * np + pn], x));
    const int n = pn * 16;
    store_f32_16(e, acc, y + n, n, p->N - n < 16 ? p->N - n : 16);
  }
}

static void vnni_i8_partial(const EdgePacked* p, const int32_t* lo, const int32_t* hi, const int8_t* x,
                            int32_t* acc) {
  for (int pn = 0; pn < p->npanels; pn++)
    _mm512_store_si512((void*)(acc + (size_t)pn * 16), vnni_row_acc(p, x, lo[pn], hi[pn], 0));
}

void edge_kernels_avx512(EdgeKernelTable* t) {
  t->isa = "avx512-vnni";
  edge_avx512_fill_table(t);
  t->requant = avx512_requant;
  t->partial_f32 = avx512_f32_partial;
  t->split_f32 = avx512_f32_split;
  t->partial_i8 = vnni_i8_partial;
  t->stream_chain_i8 = vnni_i8_stream_chain;
  t->gemm[EDGE_F32][EDGE_LAYOUT_DENSE] = avx512_f32_panel;
  t->gemm[EDGE_F32][EDGE_LAYOUT_16X1] = avx512_f32_panel;
  t->gemm[EDGE_F32][EDGE_LAYOUT_16X4] = avx512_f32_panel;
  t->gemm[EDGE_I8][EDGE_LAYOUT_DENSE] = vnni_i8_panel;
  t->gemm[EDGE_I8][EDGE_LAYOUT_16X4] = vnni_i8_panel;
}
#endif
