/* Baseline kernels: built with the compiler's default target flags (x86-64 baseline, or any ARM),
 * so the library runs on every CPU of the architecture. */
#define EDGE_SFX(name) edge_scalar_##name
#include "kernels_generic_impl.h"

void edge_kernels_scalar(EdgeKernelTable* t) {
  t->isa = "scalar";
  edge_scalar_fill_table(t);
}
