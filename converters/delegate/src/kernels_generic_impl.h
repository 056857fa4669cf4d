/*
 * Portable GEMM kernels, written so gcc's auto-vectoriser maps the 16-lane inner loops onto
 * whatever vector ISA the including translation unit is compiled for.  Included by
 * kernels_scalar.c (baseline x86-64 / any ARM), kernels_avx2.c (-mavx2 -mfma) and
 * kernels_avx512.c, each defining EDGE_SFX to give the functions a unique name.
 */
#include <string.h>

#include "edge_kernels.h"

#ifndef EDGE_SFX
#error "define EDGE_SFX(name) before including kernels_generic_impl.h"
#endif

static inline float EDGE_SFX(clampf)(float v, float lo, float hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

static inline void EDGE_SFX(store_f32)(const EdgeEpilogue* e, const float* acc, float* y, int n, int nr) {
  for (int j = 0; j < nr; j++) y[j] = EDGE_SFX(clampf)(acc[j] + e->fbias[n + j], e->fmin, e->fmax);
}

static inline int8_t EDGE_SFX(q8)(const EdgeEpilogue* e, int32_t acc, int n) {
  /* the output offset is added in wrapping int32 arithmetic, as the vector epilogues do */
  int32_t v = (int32_t)((uint32_t)edge_requant(acc, e->mult[n], e->lshift[n], e->rshift[n], e->tshift[n],
                                               e->rmode) + (uint32_t)e->zp_out);
  if (v < e->qmin) v = e->qmin;
  if (v > e->qmax) v = e->qmax;
  return (int8_t)v;
}

/* An including unit may define EDGE_STORE_I8_16(e, acc, y, n, nr) as a vectorised epilogue for a
 * 16-channel panel; it returns nonzero when it handled the panel (else the scalar loop runs). */
static inline void EDGE_SFX(store_i8)(const EdgeEpilogue* e, const int32_t* acc, int8_t* y, int n, int nr) {
#ifdef EDGE_STORE_I8_16
  if (EDGE_STORE_I8_16(e, acc, y, n, nr)) return;
#endif
  for (int j = 0; j < nr; j++) y[j] = EDGE_SFX(q8)(e, acc[j] + e->bias_s8[n + j], n + j);
}

/* Scalar/portable int8 epilogue over channels [0, n) (the reference for the vector versions). */
static void EDGE_SFX(requant)(const EdgeEpilogue* e, const int32_t* acc, int8_t* y, int n) {
  for (int i = 0; i < n; i += 16) EDGE_SFX(store_i8)(e, acc + i, y + i, i, n - i < 16 ? n - i : 16);
}

/* Blocks [b, b1) of a 16x1 f32 panel on one input row: four chains, summed as (c0 + c1) + (c2 + c3). */
static inline void EDGE_SFX(f32_part_sum)(const EdgePacked* p, int b, int b1, const float* x, float* sum) {
  const float* W = (const float*)p->w;
  float a[4][16];
  memset(a, 0, sizeof(a));
  for (; b + 4 <= b1; b += 4)
    for (int u = 0; u < 4; u++) {
      const float xs = x[p->idx[b + u]];
      const float* w = W + (size_t)(b + u) * 16;
      for (int j = 0; j < 16; j++) a[u][j] += xs * w[j];
    }
  for (; b < b1; b++) {
    const float xs = x[p->idx[b]];
    const float* w = W + (size_t)b * 16;
    for (int j = 0; j < 16; j++) a[0][j] += xs * w[j];
  }
  for (int j = 0; j < 16; j++) sum[j] = (a[0][j] + a[1][j]) + (a[2][j] + a[3][j]);
}

/* f32, panels of 16 output rows; block = kb columns x 16 rows stored column-major (16 contiguous). */
static void EDGE_SFX(f32_panel)(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                                void* yv, int ldy, int n0, int n1) {
  const float* x = (const float*)xv;
  float* y = (float*)yv;
  const float* W = (const float*)p->w;
  const int kb = p->kb;
  for (int pn = n0 / 16; pn * 16 < n1; pn++) {
    const int b0 = p->ptr[pn], b1 = p->ptr[pn + 1];
    const int n = pn * 16;
    const int nr = p->N - n < 16 ? p->N - n : 16;
    int m = 0;
    for (; m + 4 <= M; m += 4) {
      float acc[4][16];
      memset(acc, 0, sizeof(acc));
      for (int b = b0; b < b1; b++) {
        const float* w = W + (size_t)b * 16 * kb;
        const int k = p->idx[b];
        for (int kk = 0; kk < kb; kk++) {
          for (int i = 0; i < 4; i++) {
            const float xs = x[(size_t)(m + i) * ldx + k + kk];
            for (int j = 0; j < 16; j++) acc[i][j] += xs * w[kk * 16 + j];
          }
        }
      }
      for (int i = 0; i < 4; i++) EDGE_SFX(store_f32)(e, acc[i], y + (size_t)(m + i) * ldy + n, n, nr);
    }
    for (; m < M; m++) {
      /* four independent accumulator chains hide FMA latency at batch 1 */
      const float* xr = x + (size_t)m * ldx;
      float acc[16];
      if (kb == 1) {
        EDGE_SFX(f32_part_sum)(p, b0, b1, xr, acc);
      } else {
        float a[4][16];
        memset(a, 0, sizeof(a));
        for (int b = b0; b < b1; b++) {
          const float* w = W + (size_t)b * 16 * kb;
          const int k = p->idx[b];
          for (int kk = 0; kk < kb; kk++) {
            const float xs = xr[k + kk];
            for (int j = 0; j < 16; j++) a[kk & 3][j] += xs * w[kk * 16 + j];
          }
        }
        for (int j = 0; j < 16; j++) acc[j] = (a[0][j] + a[1][j]) + (a[2][j] + a[3][j]);
      }
      EDGE_SFX(store_f32)(e, acc, y + (size_t)m * ldy + n, n, nr);
    }
  }
}

/* int8, panels of 16 output rows; block = 16 rows x 4 columns stored row-major (4 bytes a row). */
static void EDGE_SFX(i8_panel)(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                               void* yv, int ldy, int n0, int n1) {
  const int8_t* x = (const int8_t*)xv;
  int8_t* y = (int8_t*)yv;
  const int8_t* W = (const int8_t*)p->w;
  for (int pn = n0 / 16; pn * 16 < n1; pn++) {
    const int b0 = p->ptr[pn], b1 = p->ptr[pn + 1];
    const int n = pn * 16;
    const int nr = p->N - n < 16 ? p->N - n : 16;
    for (int m = 0; m < M; m++) {
      int32_t acc[16];
      memset(acc, 0, sizeof(acc));
      const int8_t* xr = x + (size_t)m * ldx;
      for (int b = b0; b < b1; b++) {
        const int8_t* w = W + (size_t)b * 64;
        const int k = p->idx[b];
        const int32_t x0 = xr[k], x1 = xr[k + 1], x2 = xr[k + 2], x3 = xr[k + 3];
        for (int j = 0; j < 16; j++)
          acc[j] += x0 * w[4 * j] + x1 * w[4 * j + 1] + x2 * w[4 * j + 2] + x3 * w[4 * j + 3];
      }
      EDGE_SFX(store_i8)(e, acc, y + (size_t)m * ldy + n, n, nr);
    }
  }
}

static void EDGE_SFX(f32_csr)(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                              void* yv, int ldy, int n0, int n1) {
  const float* x = (const float*)xv;
  float* y = (float*)yv;
  const float* W = (const float*)p->w;
  for (int n = n0; n < n1 && n < p->N; n++) {
    const int i0 = p->ptr[n], i1 = p->ptr[n + 1];
    for (int m = 0; m < M; m++) {
      const float* xr = x + (size_t)m * ldx;
      float a0 = 0.f, a1 = 0.f;
      int i = i0;
      for (; i + 2 <= i1; i += 2) {
        a0 += W[i] * xr[p->idx[i]];
        a1 += W[i + 1] * xr[p->idx[i + 1]];
      }
      if (i < i1) a0 += W[i] * xr[p->idx[i]];
      y[(size_t)m * ldy + n] = EDGE_SFX(clampf)(a0 + a1 + e->fbias[n], e->fmin, e->fmax);
    }
  }
}

static void EDGE_SFX(i8_csr)(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                             void* yv, int ldy, int n0, int n1) {
  const int8_t* x = (const int8_t*)xv;
  int8_t* y = (int8_t*)yv;
  const int8_t* W = (const int8_t*)p->w;
  for (int n = n0; n < n1 && n < p->N; n++) {
    const int i0 = p->ptr[n], i1 = p->ptr[n + 1];
    for (int m = 0; m < M; m++) {
      const int8_t* xr = x + (size_t)m * ldx;
      int32_t a = 0;
      for (int i = i0; i < i1; i++) a += (int32_t)W[i] * xr[p->idx[i]];
      y[(size_t)m * ldy + n] = EDGE_SFX(q8)(e, a + e->bias_s8[n], n);
    }
  }
}

static void EDGE_SFX(f32_1x16)(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                               void* yv, int ldy, int n0, int n1) {
  const float* x = (const float*)xv;
  float* y = (float*)yv;
  const float* W = (const float*)p->w;
  for (int n = n0; n < n1 && n < p->N; n++) {
    const int b0 = p->ptr[n], b1 = p->ptr[n + 1];
    for (int m = 0; m < M; m++) {
      const float* xr = x + (size_t)m * ldx;
      float acc[16];
      memset(acc, 0, sizeof(acc));
      for (int b = b0; b < b1; b++) {
        const float* w = W + (size_t)b * 16;
        const float* xb = xr + p->idx[b];
        for (int j = 0; j < 16; j++) acc[j] += w[j] * xb[j];
      }
      float s = 0.f;
      for (int j = 0; j < 16; j++) s += acc[j];
      y[(size_t)m * ldy + n] = EDGE_SFX(clampf)(s + e->fbias[n], e->fmin, e->fmax);
    }
  }
}

static void EDGE_SFX(i8_1x16)(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                              void* yv, int ldy, int n0, int n1) {
  const int8_t* x = (const int8_t*)xv;
  int8_t* y = (int8_t*)yv;
  const int8_t* W = (const int8_t*)p->w;
  for (int n = n0; n < n1 && n < p->N; n++) {
    const int b0 = p->ptr[n], b1 = p->ptr[n + 1];
    for (int m = 0; m < M; m++) {
      const int8_t* xr = x + (size_t)m * ldx;
      int32_t acc[16];
      memset(acc, 0, sizeof(acc));
      for (int b = b0; b < b1; b++) {
        const int8_t* w = W + (size_t)b * 16;
        const int8_t* xb = xr + p->idx[b];
        for (int j = 0; j < 16; j++) acc[j] += (int32_t)w[j] * xb[j];
      }
      int32_t s = 0;
      for (int j = 0; j < 16; j++) s += acc[j];
      y[(size_t)m * ldy + n] = EDGE_SFX(q8)(e, s + e->bias_s8[n], n);
    }
  }
}

static void EDGE_SFX(f32_partial)(const EdgePacked* p, const int32_t* lo, const int32_t* hi, const float* x,
                                  float* acc) {
  for (int pn = 0; pn < p->npanels; pn++) EDGE_SFX(f32_part_sum)(p, lo[pn], hi[pn], x, acc + (size_t)pn * 16);
}

static void EDGE_SFX(f32_split)(const EdgePacked* p, const EdgeEpilogue* e, const int32_t* cut, int nparts,
                                const float* x, float* y) {
  const int np = p->npanels;
  for (int pn = 0; pn < np; pn++) {
    float acc[16], part[16];
    EDGE_SFX(f32_part_sum)(p, cut[pn], cut[np + pn], x, acc);
    for (int t = 1; t < nparts; t++) {
      EDGE_SFX(f32_part_sum)(p, cut[(size_t)t * np + pn], cut[(size_t)(t + 1) * np + pn], x, part);
      for (int j = 0; j < 16; j++) acc[j] += part[j];
    }
    const int n = pn * 16;
    EDGE_SFX(store_f32)(e, acc, y + n, n, p->N - n < 16 ? p->N - n : 16);
  }
}

static void EDGE_SFX(i8_partial)(const EdgePacked* p, const int32_t* lo, const int32_t* hi, const int8_t* x,
                                 int32_t* acc) {
  const int8_t* W = (const int8_t*)p->w;
  for (int pn = 0; pn < p->npanels; pn++) {
    int32_t* a = acc + (size_t)pn * 16;
    memset(a, 0, 16 * sizeof(int32_t));
    for (int b = lo[pn]; b < hi[pn]; b++) {
      const int8_t* w = W + (size_t)b * 64;
      const int k = p->idx[b];
      const int32_t x0 = x[k] + 128, x1 = x[k + 1] + 128, x2 = x[k + 2] + 128, x3 = x[k + 3] + 128;
      for (int j = 0; j < 16; j++) a[j] += x0 * w[4 * j] + x1 * w[4 * j + 1] + x2 * w[4 * j + 2] + x3 * w[4 * j + 3];
    }
  }
}

static void EDGE_SFX(fill_table)(EdgeKernelTable* t) {
  t->requant = EDGE_SFX(requant);
  t->partial_f32 = EDGE_SFX(f32_partial);
  t->split_f32 = EDGE_SFX(f32_split);
  t->partial_i8 = EDGE_SFX(i8_partial);
  t->gemm[EDGE_F32][EDGE_LAYOUT_DENSE] = EDGE_SFX(f32_panel);
  t->gemm[EDGE_F32][EDGE_LAYOUT_16X1] = EDGE_SFX(f32_panel);
  t->gemm[EDGE_F32][EDGE_LAYOUT_16X4] = EDGE_SFX(f32_panel);
  t->gemm[EDGE_F32][EDGE_LAYOUT_CSR] = EDGE_SFX(f32_csr);
  t->gemm[EDGE_F32][EDGE_LAYOUT_1X16] = EDGE_SFX(f32_1x16);
  t->gemm[EDGE_I8][EDGE_LAYOUT_DENSE] = EDGE_SFX(i8_panel);
  t->gemm[EDGE_I8][EDGE_LAYOUT_16X1] = NULL; /* int8 panels are 4 columns wide (one dot product) */
  t->gemm[EDGE_I8][EDGE_LAYOUT_16X4] = EDGE_SFX(i8_panel);
  t->gemm[EDGE_I8][EDGE_LAYOUT_CSR] = EDGE_SFX(i8_csr);
  t->gemm[EDGE_I8][EDGE_LAYOUT_1X16] = EDGE_SFX(i8_1x16);
}
