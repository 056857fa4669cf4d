/* AVX2 + FMA kernels: the portable kernels re-compiled with -mavx2 -mfma (see setup.py); the
 * 16-lane inner loops vectorise onto two ymm registers, and the int8 panel epilogue is the
 * hand-vectorised requantization below (gcc does not vectorise the 64-bit rounding arithmetic).
 * Selected at run time by cpuid only. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "edge_kernels.h"

/* 8 lanes of TFLite's double-rounding requantization, lane-exact with edge_requant() (see the
 * derivation at srdhm16 in kernels_avx512.c: SRDHM = floor((a*b + 2^30) / 2^31) for b >= 0). */
static inline __m256i avx2_requant8(const EdgeEpilogue* e, __m256i acc, int n, int away) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i half = _mm256_set1_epi64x(1LL << 30);
  __m256i v = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i*)(e->bias_s8 + n)));
  const __m256i ls = _mm256_loadu_si256((const __m256i*)(e->lshift + n));
  if (!_mm256_testz_si256(ls, ls)) v = _mm256_sllv_epi32(v, ls);
  const __m256i m = _mm256_loadu_si256((const __m256i*)(e->mult + n));
  const __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(v, m), half);
  const __m256i po = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(v, 32), _mm256_srli_epi64(m, 32)), half);
  v = _mm256_blend_epi32(_mm256_srli_epi64(pe, 31), _mm256_slli_epi64(po, 1), 0xAA);
  const __m256i rs = _mm256_loadu_si256((const __m256i*)(e->rshift + n));
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, rs), one);
  __m256i thr = _mm256_srai_epi32(mask, 1);
  if (away) thr = _mm256_add_epi32(thr, _mm256_srli_epi32(v, 31));
  const __m256i up = _mm256_cmpgt_epi32(_mm256_and_si256(v, mask), thr); /* -1 where rounding up */
  v = _mm256_sub_epi32(_mm256_srav_epi32(v, rs), up);
  v = _mm256_add_epi32(v, _mm256_set1_epi32(e->zp_out));
  return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(e->qmin)), _mm256_set1_epi32(e->qmax));
}

static inline int avx2_store_i8_16(const EdgeEpilogue* e, const int32_t* acc, int8_t* y, int n, int nr) {
  if (nr != 16 || e->rmode == EDGE_ROUND_SINGLE) return 0;
  const int away = e->rmode == EDGE_ROUND_DOUBLE_AWAY;
  const __m256i v0 = avx2_requant8(e, _mm256_loadu_si256((const __m256i*)acc), n, away);
  const __m256i v1 = avx2_requant8(e, _mm256_loadu_si256((const __m256i*)(acc + 8)), n + 8, away);
  /* values are already within int8, so the saturating packs only narrow */
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
  _mm_storeu_si128((__m128i*)y, _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
  return 1;
}

#define EDGE_STORE_I8_16 avx2_store_i8_16
#define EDGE_SFX(name) edge_avx2_##name
#include "kernels_generic_impl.h"

void edge_kernels_avx2(EdgeKernelTable* t) {
  t->isa = "avx2";
  edge_avx2_fill_table(t);
}
#endif
