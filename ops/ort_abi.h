// Our own declaration of the small part of onnxruntime's C ABI that the op library uses.
//
// No package that pip can install ships onnxruntime's C headers, so the library declares what it calls itself.
// The ABI is append-only: a table of function pointers (`Api`) whose slots never move, a `CustomOp` record whose
// fields are added at the end with each version, and a few C enums. Everything here is declared for API version 16
// (onnxruntime 1.16), the oldest runtime we load into. tests/test_ops_abi.py compiles this file next to the
// official header (Debian's libonnxruntime-dev) and checks every slot, field, signature and enum value.
//
// Names of the members follow the runtime's own names so that the conformance check can pair them up; all types
// live in namespace dkp_ort so that both declarations can be included in one translation unit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dkp_ort {

constexpr uint32_t kApiVersion = 16;  // the API version we request and the CustomOp version we declare
constexpr uint32_t kApiVersionParallel = 17;  // KernelContext_ParallelFor (onnxruntime's intra-op thread pool)

// Opaque handles owned by the runtime.
struct Status;
struct Value;
struct TensorTypeAndShapeInfo;
struct KernelContext;
struct KernelInfo;
struct CustomOpDomain;
struct SessionOptions;
struct CustomOp;

// Plain C enums (no fixed underlying type) so their size and representation match the runtime's.
enum ErrorCode { ORT_OK = 0, ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2, ORT_INVALID_GRAPH = 10 };

enum TensorElementType {
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 = 2,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 = 3,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16 = 4,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 = 6,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 = 7,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE = 11,
};

enum InputOutputCharacteristic { INPUT_OUTPUT_REQUIRED = 0, INPUT_OUTPUT_OPTIONAL = 1, INPUT_OUTPUT_VARIADIC = 2 };

enum MemType { OrtMemTypeCPUInput = -2, OrtMemTypeCPUOutput = -1, OrtMemTypeDefault = 0 };

// The slots of the function table we use: (slot index, member name). The conformance test walks this list.
#define DKP_ORT_API_SLOTS(X)                  \
  X(0, CreateStatus)                          \
  X(2, GetErrorMessage)                       \
  X(26, CreateCustomOpDomain)                 \
  X(27, CustomOpDomain_Add)                   \
  X(28, AddCustomOpDomain)                    \
  X(51, GetTensorMutableData)                 \
  X(60, GetTensorElementType)                 \
  X(61, GetDimensionsCount)                   \
  X(62, GetDimensions)                        \
  X(65, GetTensorTypeAndShape)                \
  X(88, KernelContext_GetInputCount)          \
  X(90, KernelContext_GetInput)               \
  X(91, KernelContext_GetOutput)              \
  X(93, ReleaseStatus)                        \
  X(99, ReleaseTensorTypeAndShapeInfo)        \
  X(244, KernelInfo_GetNodeName)              \
  X(249, KernelInfoGetConstantInput_tensor)  \
  X(274, KernelContext_ParallelFor)

// Unused slots are kept as anonymous padding so each member lands on its slot.
#define DKP_ORT_GAP(first, end) void* unused_##first[(end) - (first)];

// The function table returned by OrtApiBase::GetApi(16). Only the slots above are typed.
struct Api {
  Status* (*CreateStatus)(ErrorCode code, const char* msg) noexcept;  // 0
  DKP_ORT_GAP(1, 2)
  const char* (*GetErrorMessage)(const Status* status) noexcept;  // 2
  DKP_ORT_GAP(3, 26)
  Status* (*CreateCustomOpDomain)(const char* domain, CustomOpDomain** out) noexcept;    // 26
  Status* (*CustomOpDomain_Add)(CustomOpDomain* domain, const CustomOp* op) noexcept;     // 27
  Status* (*AddCustomOpDomain)(SessionOptions* options, CustomOpDomain* domain) noexcept;  // 28
  DKP_ORT_GAP(29, 51)
  Status* (*GetTensorMutableData)(Value* value, void** out) noexcept;  // 51
  DKP_ORT_GAP(52, 60)
  Status* (*GetTensorElementType)(const TensorTypeAndShapeInfo* info, TensorElementType* out) noexcept;  // 60
  Status* (*GetDimensionsCount)(const TensorTypeAndShapeInfo* info, size_t* out) noexcept;              // 61
  Status* (*GetDimensions)(const TensorTypeAndShapeInfo* info, int64_t* dims, size_t dims_length) noexcept;  // 62
  DKP_ORT_GAP(63, 65)
  Status* (*GetTensorTypeAndShape)(const Value* value, TensorTypeAndShapeInfo** out) noexcept;     // 65
  DKP_ORT_GAP(66, 88)
  Status* (*KernelContext_GetInputCount)(const KernelContext* context, size_t* out) noexcept;  // 88
  DKP_ORT_GAP(89, 90)
  Status* (*KernelContext_GetInput)(const KernelContext* context, size_t index, const Value** out) noexcept;  // 90
  Status* (*KernelContext_GetOutput)(KernelContext* context, size_t index, const int64_t* dims, size_t dim_count,
                                     Value** out) noexcept;  // 91
  DKP_ORT_GAP(92, 93)
  void (*ReleaseStatus)(Status* status);  // 93
  DKP_ORT_GAP(94, 99)
  void (*ReleaseTensorTypeAndShapeInfo)(TensorTypeAndShapeInfo* info);  // 99
  DKP_ORT_GAP(100, 244)
  Status* (*KernelInfo_GetNodeName)(const KernelInfo* info, char* out, size_t* size) noexcept;  // 244
  DKP_ORT_GAP(245, 249)
  Status* (*KernelInfoGetConstantInput_tensor)(const KernelInfo* info, size_t index, int* is_constant,
                                               const Value** out) noexcept;  // 249
  // Slots 250..264 complete version 16; we never touch them, and the runtime's table is at least that long.
  DKP_ORT_GAP(250, 274)
  // Version 17 (onnxruntime >= 1.17): read only through a table that GetApi(kApiVersionParallel) returned.
  Status* (*KernelContext_ParallelFor)(const KernelContext* context, void (*fn)(void*, size_t), size_t total,
                                       size_t num_batch, void* usr_data) noexcept;  // 274
};

#undef DKP_ORT_GAP

#define DKP_ORT_CHECK_SLOT(slot, name) \
  static_assert(offsetof(Api, name) == (slot) * sizeof(void*), "Api::" #name " is not on slot " #slot);
DKP_ORT_API_SLOTS(DKP_ORT_CHECK_SLOT)
#undef DKP_ORT_CHECK_SLOT

// The entry table handed to RegisterCustomOps.
struct ApiBase {
  const Api* (*GetApi)(uint32_t version) noexcept;
  const char* (*GetVersionString)() noexcept;
};

// The fields of the runtime's custom-op record, in order, up to and including version 16. `version` must equal
// the number of the last group declared (kApiVersion): the runtime reads the fields the version promises.
#define DKP_ORT_CUSTOM_OP_FIELDS(X) \
  X(version)                        \
  X(CreateKernel)                   \
  X(GetName)                        \
  X(GetExecutionProviderType)       \
  X(GetInputType)                   \
  X(GetInputTypeCount)              \
  X(GetOutputType)                  \
  X(GetOutputTypeCount)             \
  X(KernelCompute)                  \
  X(KernelDestroy)                  \
  X(GetInputCharacteristic)         \
  X(GetOutputCharacteristic)        \
  X(GetInputMemoryType)             \
  X(GetVariadicInputMinArity)       \
  X(GetVariadicInputHomogeneity)    \
  X(GetVariadicOutputMinArity)      \
  X(GetVariadicOutputHomogeneity)   \
  X(CreateKernelV2)                 \
  X(KernelComputeV2)

struct CustomOp {
  uint32_t version;
  // version 1
  void* (*CreateKernel)(const CustomOp* op, const Api* api, const KernelInfo* info);
  const char* (*GetName)(const CustomOp* op);
  const char* (*GetExecutionProviderType)(const CustomOp* op);
  TensorElementType (*GetInputType)(const CustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const CustomOp* op);
  TensorElementType (*GetOutputType)(const CustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const CustomOp* op);
  void (*KernelCompute)(void* kernel, KernelContext* context);
  void (*KernelDestroy)(void* kernel);
  // version 8: read by every runtime that knows them, whatever `version` says, so never leave them null
  InputOutputCharacteristic (*GetInputCharacteristic)(const CustomOp* op, size_t index);
  InputOutputCharacteristic (*GetOutputCharacteristic)(const CustomOp* op, size_t index);
  // version 13
  MemType (*GetInputMemoryType)(const CustomOp* op, size_t index);
  // version 14
  int (*GetVariadicInputMinArity)(const CustomOp* op);
  int (*GetVariadicInputHomogeneity)(const CustomOp* op);
  int (*GetVariadicOutputMinArity)(const CustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const CustomOp* op);
  // version 16: the status-returning kernel entry points (onnxruntime >= 1.17 calls them; 1.16, although it serves
  // C API 16, still calls CreateKernel / KernelCompute above)
  Status* (*CreateKernelV2)(const CustomOp* op, const Api* api, const KernelInfo* info, void** kernel);
  Status* (*KernelComputeV2)(void* kernel, KernelContext* context);
};

// The version word is padded to pointer size; KernelComputeV2 is the 18th pointer.
static_assert(offsetof(CustomOp, KernelComputeV2) == 18 * sizeof(void*), "CustomOp version 16 layout");

}  // namespace dkp_ort
