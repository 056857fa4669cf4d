/* AVX2 + FMA kernels: the portable kernels re-compiled with -mavx2 -mfma (see setup.py); the
 * 16-lane inner loops vectorise onto two ymm registers, and the int8 panel epilogue is the
 * hand-vectorised requantization below (gcc does not vectorise the 64-bit rounding arithmetic).
 * Selected at run time by cpuid only. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

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

/* int8 panels (16 rows x 4 columns a block, 4 bytes a row) without VNNI: each 16-byte quarter of a
 * block (4 rows) is sign-extended to int16 and multiplied with the 4 inputs by vpmaddwd, which
 * leaves two exact int32 partial sums per row; the pairs are added once per panel.  Sums wrap
 * modulo 2^32 exactly like the scalar kernel's, so the result is bit-identical. */
static void avx2_i8_panel(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx, void* yv,
                          int ldy, int n0, int n1) {
  const int8_t* x = (const int8_t*)xv;
  int8_t* y = (int8_t*)yv;
  const int8_t* W = (const int8_t*)p->w;
  for (int pn = n0 / 16; pn * 16 < n1; pn++) {
    const int b0 = p->ptr[pn], b1 = p->ptr[pn + 1];
    const int n = pn * 16;
    const int nr = p->N - n < 16 ? p->N - n : 16;
    for (int m = 0; m < M; m++) {
      const int8_t* xr = x + (size_t)m * ldx;
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      for (int b = b0; b < b1; b++) {
        const int8_t* w = W + (size_t)b * 64;
        int32_t x4;
        memcpy(&x4, xr + p->idx[b], 4);
        const __m256i xs = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(x4)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128((const __m128i*)w)), xs));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128((const __m128i*)(w + 16))), xs));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128((const __m128i*)(w + 32))), xs));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128((const __m128i*)(w + 48))), xs));
      }
      /* a_i lanes: rows 4i..4i+3, two partial sums each; hadd pairs them (per 128-bit half) */
      const __m256i h01 = _mm256_hadd_epi32(a0, a1); /* r0 r1 r4 r5 | r2 r3 r6 r7 */
      const __m256i h23 = _mm256_hadd_epi32(a2, a3); /* r8 r9 r12 r13 | r10 r11 r14 r15 */
      const __m256i perm = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
      int32_t acc[16];
      _mm256_storeu_si256((__m256i*)acc, _mm256_permutevar8x32_epi32(h01, perm));
      _mm256_storeu_si256((__m256i*)(acc + 8), _mm256_permutevar8x32_epi32(h23, perm));
      edge_avx2_store_i8(e, acc, y + (size_t)m * ldy + n, n, nr);
    }
  }
}

void edge_kernels_avx2(EdgeKernelTable* t) {
  t->isa = "avx2";
  edge_avx2_fill_table(t);
  t->gemm[EDGE_I8][EDGE_LAYOUT_DENSE] = avx2_i8_panel;
  t->gemm[EDGE_I8][EDGE_LAYOUT_16X4] = avx2_i8_panel;
}
#endif
