/* AArch64 NEON kernels: the f32 16-row panel micro-kernel (four q registers per panel, one
 * broadcast-FMA per stored block), the layout that wins most clearly at batch 1.  The other
 * layouts use the portable kernels compiled for the same target. */
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>

#define EDGE_SFX(name) edge_neon_##name
#include "kernels_generic_impl.h"

static void neon_f32_panel(const EdgePacked* p, const EdgeEpilogue* e, const void* xv, int M, int ldx,
                           void* yv, int ldy, int n0, int n1) {
  if (p->kb != 1) {
    edge_neon_f32_panel(p, e, xv, M, ldx, yv, ldy, n0, n1);
    return;
  }
  const float* x = (const float*)xv;
  float* y = (float*)yv;
  const float* W = (const float*)p->w;
  for (int pn = n0 / 16; pn * 16 < n1; pn++) {
    const int b0 = p->ptr[pn], b1 = p->ptr[pn + 1];
    const int n = pn * 16;
    const int nr = p->N - n < 16 ? p->N - n : 16;
    for (int m = 0; m < M; m++) {
      const float* xr = x + (size_t)m * ldx;
      float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0, a2 = a0, a3 = a0;
      for (int b = b0; b < b1; b++) {
        const float* w = W + (size_t)b * 16;
        const float32x4_t xs = vdupq_n_f32(xr[p->idx[b]]);
        a0 = vfmaq_f32(a0, xs, vld1q_f32(w));
        a1 = vfmaq_f32(a1, xs, vld1q_f32(w + 4));
        a2 = vfmaq_f32(a2, xs, vld1q_f32(w + 8));
        a3 = vfmaq_f32(a3, xs, vld1q_f32(w + 12));
      }
      float acc[16];
      vst1q_f32(acc, a0);
      vst1q_f32(acc + 4, a1);
      vst1q_f32(acc + 8, a2);
      vst1q_f32(acc + 12, a3);
      edge_neon_store_f32(e, acc, y + (size_t)m * ldy + n, n, nr);
    }
  }
}

void edge_kernels_neon(EdgeKernelTable* t) {
  t->isa = "neon";
  edge_neon_fill_table(t);
  t->gemm[EDGE_F32][EDGE_LAYOUT_DENSE] = neon_f32_panel;
  t->gemm[EDGE_F32][EDGE_LAYOUT_16X1] = neon_f32_panel;
}
#endif
