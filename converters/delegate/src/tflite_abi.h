/*
 * edge-lottery's own declarations of the slice of the TFLite C ABI the sparse delegate touches.
 *
 * Why our own: neither the tensorflow nor the ai-edge-litert wheel ships the C API headers, and
 * the project must not vendor upstream headers.  These declarations were written from the
 * published layout of the TFLite C API as built into ai-edge-litert 2.3.0 (x86-64 and aarch64,
 * LP64).  Only members the delegate reads are named; runtime-owned structs declare unused
 * function pointers as opaque pointer-sized slots.  Structs the delegate allocates or passes by
 * value (TfLiteDelegate, TfLiteRegistration) are declared complete and must be zero-filled.
 *
 * The static asserts at the bottom turn a layout drift (a LiteRT upgrade) into a compile error.
 * EDGE_ABI_TAG names the pinned pair; the Python helper passes it as option "abi_version" and
 * create() refuses any other value.
 */
#ifndef EDGE_TFLITE_ABI_H_
#define EDGE_TFLITE_ABI_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EDGE_ABI_TAG "litert-2.3.0/1"

typedef enum { eStatusOk = 0, eStatusError = 1 } EdgeStatus;

/* TfLiteType values used. */
enum { eTypeFloat32 = 1, eTypeInt32 = 2, eTypeInt8 = 9 };
/* TfLiteAllocationType: constant (memory-mapped read-only) tensors. */
enum { eAllocMmapRo = 1 };
/* TfLiteQuantizationType. */
enum { eQuantNone = 0, eQuantAffine = 1 };
/* TfLiteDimensionType. */
enum { eDimDense = 0, eDimSparseCSR = 1 };
/* TfLiteFusedActivation. */
enum { eActNone = 0, eActRelu = 1, eActReluN1To1 = 2, eActRelu6 = 3 };
/* TfLitePadding. */
enum { ePadUnknown = 0, ePadSame = 1, ePadValid = 2 };
/* Builtin operator codes (schema BuiltinOperator). */
enum { eOpConv2D = 3, eOpFullyConnected = 9, eOpReshape = 22, eOpDelegate = 51, eOpDensify = 124 };

typedef struct EdgeIntArray {
  int size;
  int data[];
} EdgeIntArray;

typedef struct EdgeFloatArray {
  int size;
  float data[];
} EdgeFloatArray;

typedef struct EdgeQuantParams { /* TfLiteQuantizationParams: legacy per-tensor params */
  float scale;
  int32_t zero_point;
} EdgeQuantParams;

typedef struct EdgeQuantization { /* TfLiteQuantization */
  int type;
  void* params; /* EdgeAffineQuantization* when type == eQuantAffine */
} EdgeQuantization;

typedef struct EdgeAffineQuantization {
  EdgeFloatArray* scale;
  EdgeIntArray* zero_point;
  int32_t quantized_dimension;
} EdgeAffineQuantization;

typedef struct EdgeDimensionMetadata {
  int format;
  int dense_size;
  EdgeIntArray* array_segments;
  EdgeIntArray* array_indices;
} EdgeDimensionMetadata;

typedef struct EdgeSparsity {
  EdgeIntArray* traversal_order;
  EdgeIntArray* block_map;
  EdgeDimensionMetadata* dim_metadata;
  int dim_metadata_size;
} EdgeSparsity;

typedef struct EdgeTensor { /* TfLiteTensor (runtime-owned) */
  int type;
  void* data; /* TfLitePtrUnion */
  EdgeIntArray* dims;
  EdgeQuantParams params;
  int allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  void* delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  EdgeQuantization quantization;
  EdgeSparsity* sparsity;
  const EdgeIntArray* dims_signature;
} EdgeTensor;

typedef struct EdgeNode { /* TfLiteNode (runtime-owned) */
  EdgeIntArray* inputs;
  EdgeIntArray* outputs;
  EdgeIntArray* intermediates;
  EdgeIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  void* delegate;
  bool might_have_side_effect;
} EdgeNode;

struct EdgeContext;
struct EdgeDelegate;

typedef struct EdgeRegistration { /* TfLiteRegistration (passed by value: complete, zeroed) */
  void* (*init)(struct EdgeContext* context, const char* buffer, size_t length);
  void (*free)(struct EdgeContext* context, void* buffer);
  int (*prepare)(struct EdgeContext* context, EdgeNode* node);
  int (*invoke)(struct EdgeContext* context, EdgeNode* node);
  const char* (*profiling_string)(const struct EdgeContext* context, const EdgeNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;
  void* async_kernel;
  uint64_t inplace_operator;
} EdgeRegistration;

typedef struct EdgeContext { /* TfLiteContext (runtime-owned) */
  size_t tensors_size;
  int (*GetExecutionPlan)(struct EdgeContext* context, EdgeIntArray** execution_plan);
  EdgeTensor* tensors;
  void* impl_;
  void* ResizeTensor;
  void (*ReportError)(struct EdgeContext* context, const char* format, ...);
  void* AddTensors;
  int (*GetNodeAndRegistration)(struct EdgeContext* context, int node_index, EdgeNode** node,
                                EdgeRegistration** registration);
  int (*ReplaceNodeSubsetsWithDelegateKernels)(struct EdgeContext* context, EdgeRegistration registration,
                                               const EdgeIntArray* nodes_to_replace,
                                               struct EdgeDelegate* delegate);
  int recommended_num_threads;
  void* slots_after_threads[15]; /* GetExternalContext .. ReleaseSubgraphContext; unused */
} EdgeContext;

typedef struct EdgeDelegate { /* TfLiteDelegate (allocated by us: complete, zeroed) */
  void* data_;
  int (*Prepare)(EdgeContext* context, struct EdgeDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} EdgeDelegate;

typedef struct EdgeDelegateParams { /* TfLiteDelegateParams: the buffer handed to init */
  EdgeDelegate* delegate;
  EdgeIntArray* nodes_to_replace;
  EdgeIntArray* input_tensors;
  EdgeIntArray* output_tensors;
} EdgeDelegateParams;

typedef struct EdgeFullyConnectedParams { /* TfLiteFullyConnectedParams */
  int activation;
  int weights_format; /* 0 = default */
  bool keep_num_dims;
  bool asymmetric_quantize_inputs;
  int quantized_bias_type;
} EdgeFullyConnectedParams;

typedef struct EdgeConvParams { /* TfLiteConvParams */
  int padding;
  int stride_width;
  int stride_height;
  int activation;
  int dilation_width_factor;
  int dilation_height_factor;
  int quantized_bias_type;
} EdgeConvParams;

/* Layout checks for LP64 (x86-64, aarch64), pinned to ai-edge-litert 2.3.0. */
#if defined(__LP64__) || defined(_LP64)
#define EDGE_ABI_ASSERT(c, m) _Static_assert(c, "TFLite ABI mismatch: " m)
EDGE_ABI_ASSERT(sizeof(EdgeTensor) == 112, "TfLiteTensor size");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, data) == 8, "TfLiteTensor.data");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, dims) == 16, "TfLiteTensor.dims");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, params) == 24, "TfLiteTensor.params");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, allocation_type) == 32, "TfLiteTensor.allocation_type");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, bytes) == 40, "TfLiteTensor.bytes");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, quantization) == 80, "TfLiteTensor.quantization");
EDGE_ABI_ASSERT(offsetof(EdgeTensor, sparsity) == 96, "TfLiteTensor.sparsity");
EDGE_ABI_ASSERT(sizeof(EdgeNode) == 80, "TfLiteNode size");
EDGE_ABI_ASSERT(offsetof(EdgeNode, user_data) == 32, "TfLiteNode.user_data");
EDGE_ABI_ASSERT(offsetof(EdgeNode, builtin_data) == 40, "TfLiteNode.builtin_data");
EDGE_ABI_ASSERT(sizeof(EdgeContext) == 200, "TfLiteContext size");
EDGE_ABI_ASSERT(offsetof(EdgeContext, tensors) == 16, "TfLiteContext.tensors");
EDGE_ABI_ASSERT(offsetof(EdgeContext, ReportError) == 40, "TfLiteContext.ReportError");
EDGE_ABI_ASSERT(offsetof(EdgeContext, GetNodeAndRegistration) == 56, "TfLiteContext.GetNodeAndRegistration");
EDGE_ABI_ASSERT(offsetof(EdgeContext, ReplaceNodeSubsetsWithDelegateKernels) == 64,
                "TfLiteContext.ReplaceNodeSubsetsWithDelegateKernels");
EDGE_ABI_ASSERT(offsetof(EdgeContext, recommended_num_threads) == 72, "TfLiteContext.recommended_num_threads");
EDGE_ABI_ASSERT(sizeof(EdgeRegistration) == 88, "TfLiteRegistration size");
EDGE_ABI_ASSERT(offsetof(EdgeRegistration, builtin_code) == 40, "TfLiteRegistration.builtin_code");
EDGE_ABI_ASSERT(offsetof(EdgeRegistration, inplace_operator) == 80, "TfLiteRegistration.inplace_operator");
EDGE_ABI_ASSERT(sizeof(EdgeDelegate) == 56, "TfLiteDelegate size");
EDGE_ABI_ASSERT(offsetof(EdgeDelegate, flags) == 40, "TfLiteDelegate.flags");
EDGE_ABI_ASSERT(sizeof(EdgeDelegateParams) == 32, "TfLiteDelegateParams size");
EDGE_ABI_ASSERT(sizeof(EdgeFullyConnectedParams) == 16, "TfLiteFullyConnectedParams size");
EDGE_ABI_ASSERT(sizeof(EdgeConvParams) == 28, "TfLiteConvParams size");
EDGE_ABI_ASSERT(sizeof(EdgeSparsity) == 32, "TfLiteSparsity size");
EDGE_ABI_ASSERT(sizeof(EdgeDimensionMetadata) == 24, "TfLiteDimensionMetadata size");
EDGE_ABI_ASSERT(sizeof(EdgeAffineQuantization) == 24, "TfLiteAffineQuantization size");
#endif

#endif /* EDGE_TFLITE_ABI_H_ */
