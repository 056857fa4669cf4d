/* Sparse-format decoding, TFLite multiplier decomposition and weight re-encoding (pack.c). */
#ifndef EDGE_PACK_H_
#define EDGE_PACK_H_

#include <stddef.h>
#include <stdint.h>

#include "edge_kernels.h"
#include "tflite_abi.h"

EDGE_HIDDEN int edge_sparse_decode(const EdgeSparsity* s, const void* values, size_t value_bytes, int es,
                                   const int* dims, int rank, void* out, char* err, size_t errlen);
EDGE_HIDDEN void edge_quantize_multiplier(double m, int32_t* q, int* shift);
EDGE_HIDDEN int edge_epilogue_fuse(EdgeEpilogue* e, int N, uint8_t** sh_out);
EDGE_HIDDEN int edge_layout_applicable(int layout, int dtype, int K);
EDGE_HIDDEN int edge_pack(const void* w, int dtype, int N, int K, int layout, EdgePacked* p);
EDGE_HIDDEN void edge_packed_free(EdgePacked* p);

#endif
