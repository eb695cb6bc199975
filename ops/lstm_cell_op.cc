// ai.dkp::LSTMCell as an onnxruntime custom op: inputs gates float32 [..., 4H] (torch's order i, f, g, o: the gate
// pre-activations, bias included) and c float32 [..., H] (the previous cell state, the same leading dims); outputs
// h_next and c_next, float32, c's shape (docs/ops.md). Every input is checked and a failure comes back as an
// onnxruntime status naming the node and the input.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "lstm_cell.h"
#include "ort_abi.h"
#include "ort_support.h"

namespace {

using dkp_ort::Api;
using dkp_ort::Status;
using dkp_ort::take_message;

constexpr const char* kName = "LSTMCell";
constexpr const char* kInputNames[2] = {"gates", "c"};
constexpr const char* kOutputNames[2] = {"h_next", "c_next"};

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

struct CellKernel {
  const Api* api = nullptr;
  std::string node;  // "LSTMCell node 'name'"

  Status* error(const std::string& msg) const {
    return api->CreateStatus(dkp_ort::ORT_INVALID_ARGUMENT, (node + ": " + msg).c_str());
  }

  Status* read(dkp_ort::KernelContext* ctx, size_t i, std::vector<int64_t>* dims, const float** data) const {
    const std::string name = std::string("input '") + kInputNames[i] + "'";
    const dkp_ort::Value* value = nullptr;
    if (Status* st = api->KernelContext_GetInput(ctx, i, &value)) return error(name + ": " + take_message(api, st));
    if (!value) return error(name + " is missing");
    dkp_ort::TensorTypeAndShapeInfo* info = nullptr;
    dkp_ort::TensorElementType type = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0;
    Status* st = api->GetTensorTypeAndShape(value, &info);
    if (!st) st = api->GetTensorElementType(info, &type);
    if (!st) st = api->GetDimensionsCount(info, &rank);
    if (!st) {
      dims->resize(rank);
      st = api->GetDimensions(info, dims->data(), rank);
    }
    if (info) api->ReleaseTensorTypeAndShapeInfo(info);
    void* p = nullptr;
    if (!st) st = api->GetTensorMutableData(const_cast<dkp_ort::Value*>(value), &p);
    if (st) return error(name + ": " + take_message(api, st));
    if (type != dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return error(name + " must be float32");
    if (rank == 0) return error(name + " must have rank >= 1, got a scalar");
    for (int64_t d : *dims) {
      if (d < 0) return error(name + " has an unknown dimension");
    }
    *data = static_cast<const float*>(p);
    return nullptr;
  }

  Status* output(dkp_ort::KernelContext* ctx, size_t i, const std::vector<int64_t>& dims, float** data) const {
    const std::string name = std::string("output '") + kOutputNames[i] + "'";
    dkp_ort::Value* value = nullptr;
    if (Status* st = api->KernelContext_GetOutput(ctx, i, dims.data(), dims.size(), &value)) {
      return error(name + ": " + take_message(api, st));
    }
    void* p = nullptr;
    if (Status* st = api->GetTensorMutableData(value, &p)) return error(name + ": " + take_message(api, st));
    *data = static_cast<float*>(p);
    return nullptr;
  }

  Status* compute(dkp_ort::KernelContext* ctx) const {
    // per thread and reused: a call allocates nothing
    thread_local std::vector<int64_t> gd, cd;
    const float* gates = nullptr;
    const float* c = nullptr;
    if (Status* st = read(ctx, 0, &gd, &gates)) return st;
    if (Status* st = read(ctx, 1, &cd, &c)) return st;
    const int64_t h = cd.back();
    int64_t four_h = 0;
    if (__builtin_mul_overflow(h, 4, &four_h)) return error("input 'c' " + shape_str(cd) + " is too large");
    if (gd.size() != cd.size() || !std::equal(cd.begin(), cd.end() - 1, gd.begin()) || gd.back() != four_h) {
      std::vector<int64_t> want = cd;
      want.back() = four_h;
      return error("input 'gates' must have shape " + shape_str(want) + " (c's shape, 4H last), got " +
                   shape_str(gd));
    }
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < cd.size(); ++i) {
      if (__builtin_mul_overflow(rows, cd[i], &rows)) return error("input 'c' " + shape_str(cd) + " is too large");
    }
    float* h_out = nullptr;
    float* c_out = nullptr;
    if (Status* st = output(ctx, 0, cd, &h_out)) return st;
    if (Status* st = output(ctx, 1, cd, &c_out)) return st;
    dkp::lstm_cell(gates, c, rows, h, h_out, c_out);
    return nullptr;
  }
};

Status* create_kernel_v2(const dkp_ort::CustomOp*, const Api* api, const dkp_ort::KernelInfo* info, void** kernel) {
  CellKernel* k = new (std::nothrow) CellKernel;
  if (!k) return api->CreateStatus(dkp_ort::ORT_FAIL, "LSTMCell: out of memory");
  try {
    k->api = api;
    k->node = dkp_ort::node_label(api, info, kName);
  } catch (const std::exception& e) {
    delete k;
    return api->CreateStatus(dkp_ort::ORT_FAIL, (std::string(kName) + ": " + e.what()).c_str());
  }
  *kernel = k;
  return nullptr;
}

const char* name(const dkp_ort::CustomOp*) { return kName; }
const char* provider(const dkp_ort::CustomOp*) { return nullptr; }
dkp_ort::TensorElementType float_type(const dkp_ort::CustomOp*, size_t) {
  return dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t two(const dkp_ort::CustomOp*) { return 2; }
dkp_ort::InputOutputCharacteristic required(const dkp_ort::CustomOp*, size_t) {
  return dkp_ort::INPUT_OUTPUT_REQUIRED;
}
dkp_ort::MemType memory(const dkp_ort::CustomOp*, size_t) { return dkp_ort::OrtMemTypeDefault; }
int one(const dkp_ort::CustomOp*) { return 1; }

constexpr dkp_ort::CustomOp kLSTMCell = {
    dkp_ort::kApiVersion, dkp_ort::create_kernel_v1<create_kernel_v2>, name, provider, float_type, two,
    float_type, two, dkp_ort::compute_v1<CellKernel>, dkp_ort::destroy_kernel<CellKernel>, required, required,
    memory, one, one, one, one, create_kernel_v2, dkp_ort::compute_v2<CellKernel>,
};

}  // namespace

namespace dkp {

const dkp_ort::CustomOp* lstm_cell_custom_op() { return &kLSTMCell; }

}  // namespace dkp
