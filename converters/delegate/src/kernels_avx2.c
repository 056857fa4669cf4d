/* AVX2 + FMA kernels: the portable kernels re-compiled with -mavx2 -mfma (see setup.py); the
 * 16-lane inner loops vectorise onto two ymm registers.  Selected at run time by cpuid only. */
#if defined(__x86_64__)
#define EDGE_SFX(name) edge_avx2_##name
#include "kernels_generic_impl.h"

void edge_kernels_avx2(EdgeKernelTable* t) {
  t->isa = "avx2";
  edge_avx2_fill_table(t);
}
#endif
