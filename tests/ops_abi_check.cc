// Compiled by tests/test_ops_abi.py next to onnxruntime's official C header: every function-table slot, custom-op
// field, entry-table field and enum value that ops/ort_abi.h declares must sit where, and have the type, the
// official header gives it. Only compiles when they all agree (static_assert); the program itself does nothing.
#include <cstddef>
#include <type_traits>

#include "onnxruntime_c_api.h"
#include "ort_abi.h"

namespace {

// Maps a type written with dkp_ort names onto the official one, through pointers, const and function pointers.
template <class T>
struct Official {
  using type = T;
};
#define DKP_SAME_AS(ours, theirs) \
  template <>                     \
  struct Official<dkp_ort::ours> { \
    using type = theirs;          \
  };
DKP_SAME_AS(Status, OrtStatus)
DKP_SAME_AS(Value, OrtValue)
DKP_SAME_AS(TensorTypeAndShapeInfo, OrtTensorTypeAndShapeInfo)
DKP_SAME_AS(KernelContext, OrtKernelContext)
DKP_SAME_AS(KernelInfo, OrtKernelInfo)
DKP_SAME_AS(CustomOpDomain, OrtCustomOpDomain)
DKP_SAME_AS(SessionOptions, OrtSessionOptions)
DKP_SAME_AS(CustomOp, OrtCustomOp)
DKP_SAME_AS(Api, OrtApi)
DKP_SAME_AS(ErrorCode, OrtErrorCode)
DKP_SAME_AS(TensorElementType, ONNXTensorElementDataType)
DKP_SAME_AS(InputOutputCharacteristic, OrtCustomOpInputOutputCharacteristic)
DKP_SAME_AS(MemType, OrtMemType)
#undef DKP_SAME_AS
template <class T>
struct Official<T*> {
  using type = typename Official<T>::type*;
};
template <class T>
struct Official<const T> {
  using type = const typename Official<T>::type;
};
template <class R, class... A>
struct Official<R (*)(A...)> {
  using type = typename Official<R>::type (*)(typename Official<A>::type...);
};
template <class R, class... A>
struct Official<R (*)(A...) noexcept> {
  using type = typename Official<R>::type (*)(typename Official<A>::type...) noexcept;
};
template <class T>
using official_t = typename Official<T>::type;

#ifdef DKP_ABI_CHECK_MUTANT
// Self-test of this check: pair one of our slots with a neighbouring official one; the build must then fail.
#define DKP_THEIRS(name) KernelContext_GetOutput
#else
#define DKP_THEIRS(name) name
#endif

#define DKP_CHECK_API_SLOT(slot, name)                                                                \
  static_assert(offsetof(dkp_ort::Api, name) == offsetof(OrtApi, DKP_THEIRS(name)), "slot of " #name); \
  static_assert(std::is_same_v<official_t<decltype(dkp_ort::Api::name)>, decltype(OrtApi::DKP_THEIRS(name))>, \
                "signature of " #name);
DKP_ORT_API_SLOTS(DKP_CHECK_API_SLOT)

#define DKP_CHECK_OP_FIELD(name)                                                                      \
  static_assert(offsetof(dkp_ort::CustomOp, name) == offsetof(OrtCustomOp, name), "field " #name);     \
  static_assert(std::is_same_v<official_t<decltype(dkp_ort::CustomOp::name)>, decltype(OrtCustomOp::name)>, \
                "type of field " #name);
DKP_ORT_CUSTOM_OP_FIELDS(DKP_CHECK_OP_FIELD)
// version 16 ends where the official record's next field begins.
static_assert(sizeof(dkp_ort::CustomOp) == offsetof(OrtCustomOp, InferOutputShapeFn), "CustomOp v16 size");

static_assert(offsetof(dkp_ort::ApiBase, GetApi) == offsetof(OrtApiBase, GetApi), "ApiBase::GetApi");
static_assert(offsetof(dkp_ort::ApiBase, GetVersionString) == offsetof(OrtApiBase, GetVersionString), "ApiBase");
static_assert(sizeof(dkp_ort::ApiBase) == sizeof(OrtApiBase), "ApiBase size");
static_assert(std::is_same_v<official_t<decltype(dkp_ort::ApiBase::GetApi)>, decltype(OrtApiBase::GetApi)>, "GetApi");
static_assert(std::is_same_v<official_t<decltype(dkp_ort::ApiBase::GetVersionString)>,
                             decltype(OrtApiBase::GetVersionString)>,
              "GetVersionString");

// Enum values and sizes.
#define DKP_CHECK_ENUM(name) static_assert(static_cast<long>(dkp_ort::name) == static_cast<long>(::name), #name);
DKP_CHECK_ENUM(ORT_OK)
DKP_CHECK_ENUM(ORT_FAIL)
DKP_CHECK_ENUM(ORT_INVALID_ARGUMENT)
DKP_CHECK_ENUM(ORT_INVALID_GRAPH)
DKP_CHECK_ENUM(ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
DKP_CHECK_ENUM(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
DKP_CHECK_ENUM(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
DKP_CHECK_ENUM(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
DKP_CHECK_ENUM(ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE)
DKP_CHECK_ENUM(INPUT_OUTPUT_REQUIRED)
DKP_CHECK_ENUM(INPUT_OUTPUT_OPTIONAL)
DKP_CHECK_ENUM(INPUT_OUTPUT_VARIADIC)
DKP_CHECK_ENUM(OrtMemTypeCPUInput)
DKP_CHECK_ENUM(OrtMemTypeCPUOutput)
DKP_CHECK_ENUM(OrtMemTypeDefault)
static_assert(sizeof(dkp_ort::ErrorCode) == sizeof(OrtErrorCode), "ErrorCode size");
static_assert(sizeof(dkp_ort::TensorElementType) == sizeof(ONNXTensorElementDataType), "element type size");
static_assert(sizeof(dkp_ort::InputOutputCharacteristic) == sizeof(OrtCustomOpInputOutputCharacteristic), "size");
static_assert(sizeof(dkp_ort::MemType) == sizeof(OrtMemType), "MemType size");

// The header we compare against must know every version we rely on.
static_assert(dkp_ort::kApiVersion <= ORT_API_VERSION, "official header older than the API version we request");

}  // namespace

int main() { return 0; }
