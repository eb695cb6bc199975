// ai.dkp::SparseMatVec, SparseMatVecInt8 and SparseMatVecInteger as onnxruntime custom ops, and the library entry
// point RegisterCustomOps (which adds ai.dkp::LSTMCell, lstm_cell_op.cc, to the same domain).
//
// Contract (docs/ops.md): inputs X float32 [..., N], row_ptr int32 [M+1], col_idx int32 or uint16 [nnz] (or uint8:
// column gaps, each entry's column minus the previous one's in its row), values float32 [nnz] (SparseMatVecInt8:
// int8 [nnz] and row_scale float32 [M], W[i, :] = row_scale[i] * values), optional Y0 float32 [..., M] (or [M],
// broadcast); output Y float32 [..., M] = X @ W^T (+ Y0).
// SparseMatVecInteger: X uint8 as DynamicQuantizeLinear writes it, and after row_scale the scalars x_scale (float32)
// and x_zero_point (uint8); Y = x_scale * (X - x_zero_point) @ W^T (+ Y0), W as in SparseMatVecInt8. Or X float32,
// x_scale and x_zero_point left empty: the node quantizes X as DynamicQuantizeLinear does, then the same, and the
// Kronecker half reads that quantization too (X_hat = x_scale * (X_q - x_zero_point)).
// All three take the Kronecker half too, as optional inputs after Y0: B float32 [M1, N1] and C_T float32 [N2, M2]
// (M = M1 * M2, N = N1 * N2) add kron(B, C) @ x to every row (x = X; SparseMatVecInteger: its float input X_kron,
// X's shape; X_hat where X is float32).
// Every input is checked and every failure comes back as an onnxruntime status naming the input. When the three CSR
// arrays are constant initializers they are checked once, when the kernel is created; otherwise on every call.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dynamic_quantize.h"
#include "kron_matvec.h"
#include "ort_abi.h"
#include "ort_support.h"
#include "sparse_matvec.h"

using dkp_ort::Api;
using dkp_ort::Status;
using dkp_ort::take_message;

namespace {

constexpr const char* kDomain = "ai.dkp";
constexpr size_t kMaxInputs = 11;
// col_idx is declared with no fixed type (onnxruntime then accepts any) so that int32, uint16 and uint8 load; the
// kernel refuses every other type with an error naming the input.
constexpr dkp_ort::TensorElementType kAnyType = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
constexpr dkp_ort::TensorElementType kF32 = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr dkp_ort::TensorElementType kI32 = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
constexpr dkp_ort::TensorElementType kI8 = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
constexpr dkp_ort::TensorElementType kU8 = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
constexpr dkp_ort::TensorElementType kU16 = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
enum Input : size_t { kX = 0, kRowPtr = 1, kColIdx = 2, kValues = 3 };

// What differs between the ops: their inputs. SparseMatVecInt8 has row_scale at 4 and Y0 at 5;
// SparseMatVecInteger adds x_scale at 5 and x_zero_point at 6, Y0 at 7. The optional inputs start at Y0: Y0, B,
// C_T (and SparseMatVecInteger's X_kron).
struct OpSpec {
  const char* name;
  size_t num_inputs;
  const char* input_names[kMaxInputs];
  dkp_ort::TensorElementType input_types[kMaxInputs];
  bool quantized;  // int8 values and row_scale
  bool integer_x;  // uint8 X with x_scale and x_zero_point
  size_t y0;       // index of Y0, the first optional input; B and C_T follow it
  size_t kron_b() const { return y0 + 1; }
  size_t kron_ct() const { return y0 + 2; }
  size_t kron_x() const { return integer_x ? y0 + 3 : 0; }  // the float x of the Kronecker half
  // SparseMatVecInteger's x_scale and x_zero_point are optional too: a float32 X leaves them empty
  bool optional(size_t i) const { return i >= y0 || (integer_x && (i == kXScale || i == kXZeroPoint)); }
  size_t min_inputs() const { return integer_x ? kXScale : y0; }
  static constexpr size_t kScale = 4;
  static constexpr size_t kXScale = 5;
  static constexpr size_t kXZeroPoint = 6;
};

constexpr OpSpec kFloatSpec = {"SparseMatVec", 7, {"X", "row_ptr", "col_idx", "values", "Y0", "B", "C_T"},
                               {kF32, kI32, kAnyType, kF32, kF32, kF32, kF32}, false, false, 4};
constexpr OpSpec kInt8Spec = {"SparseMatVecInt8", 8,
                              {"X", "row_ptr", "col_idx", "values", "row_scale", "Y0", "B", "C_T"},
                              {kF32, kI32, kAnyType, kI8, kF32, kF32, kF32, kF32}, true, false, 5};
constexpr OpSpec kIntegerSpec = {
    "SparseMatVecInteger", 11,
    {"X", "row_ptr", "col_idx", "values", "row_scale", "x_scale", "x_zero_point", "Y0", "B", "C_T", "X_kron"},
    {kAnyType, kI32, kAnyType, kI8, kF32, kF32, kU8, kF32, kF32, kF32, kF32}, true, true, 7};

const char* type_name(dkp_ort::TensorElementType t) {
  switch (static_cast<int>(t)) {
    case 1: return "float32";
    case 2: return "uint8";
    case 3: return "int8";
    case 4: return "uint16";
    case 5: return "int16";
    case 6: return "int32";
    case 7: return "int64";
    case 8: return "string";
    case 9: return "bool";
    case 10: return "float16";
    case 11: return "float64";
    case 12: return "uint32";
    case 13: return "uint64";
    case 16: return "bfloat16";
    default: return "another type";
  }
}

// A tensor input as the kernel sees it: element type, shape and data.
struct Tensor {
  dkp_ort::TensorElementType type = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  void* data = nullptr;
};

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// onnxruntime's table for C API 17 (KernelContext_ParallelFor), null on onnxruntime 1.16.
const Api* g_api_parallel = nullptr;
constexpr int kParallelParts = 8;       // parts of W's rows per product at batch >= 2
constexpr int64_t kParallelMinNnz = 16384;  // below this a product is too short to share out

// After a call: a thread's kept scratch freed where it grew past dkp::kKeptScratchFloats.
template <typename Scratch>
struct KeepSmall {
  Scratch& scratch;
  size_t (*floats)(const Scratch&);
  ~KeepSmall() {
    if (floats(scratch) > dkp::kKeptScratchFloats) scratch = Scratch();
  }
};

// One product split by rows of W: part p computes rows bounds[p] .. bounds[p + 1] for every row of X.
struct RowParts {
  const dkp::Csr* w;
  const float* x;
  const std::vector<dkp::AlignedVector<float>>* xt;  // X transposed once, shared by the parts
  int64_t batch, n;
  const float* y0;
  bool y0_broadcast;
  float* y;
  std::vector<int64_t> bounds;
};

void run_row_part(void* data, size_t p) {
  const RowParts& job = *static_cast<const RowParts*>(data);
  const int64_t r0 = job.bounds[p], r1 = job.bounds[p + 1];
  if (r1 > r0) {
    dkp::csr_matmul_rows(*job.w, r0, r1, job.x, *job.xt, job.batch, job.n, job.y0, job.y0_broadcast, job.y);
  }
}

// A task on onnxruntime's pool threads must not let an exception out (the caller's try does not cover them): it
// keeps the message of one that failed (std::bad_alloc of its scratch) here, for the caller to report.
struct PoolFailure {
  std::mutex mutex;
  std::string message;
  void keep(const std::exception& e) {
    const std::lock_guard<std::mutex> lock(mutex);
    message = e.what();
  }
};

// A batch product through SlicedEll's register tiles: part p is window p of W's rows.
struct TileParts {
  const dkp::SlicedEll* ell;
  const dkp::SlicedEll::BatchX* x;
  const float* y0;
  int64_t y0_stride;
  float* y;
  PoolFailure failure;
};

void run_tile_part(void* data, size_t p) {
  TileParts& job = *static_cast<TileParts*>(data);
  const int64_t w = static_cast<int64_t>(p);
  try {
    job.ell->matmul_part(*job.x, w, w + 1, job.y0, job.y0_stride, job.y);
  } catch (const std::exception& e) {  // its scratch's allocation
    job.failure.keep(e);
  }
}

// SparseMatVecInteger with integer tiles: a block of up to kIntegerBlock rows of X per task.
constexpr int64_t kIntegerBlock = 4;  // one pass of the tiles (up to 4 rows): batch 8 is two tasks
struct IntegerRows {
  const dkp::IntegerEll* ell;
  const uint8_t* x;
  int64_t batch, n;
  uint8_t zero_point;
  float x_scale;
  const float* y0;
  bool y0_broadcast;
  float* y;
  int64_t m;
  PoolFailure failure;
};

void run_integer_rows(void* data, size_t k) {
  IntegerRows& job = *static_cast<IntegerRows*>(data);
  const int64_t b = static_cast<int64_t>(k) * kIntegerBlock;
  const int64_t rows = std::min(kIntegerBlock, job.batch - b);
  const float* y0 = job.y0 ? (job.y0_broadcast ? job.y0 : job.y0 + b * job.m) : nullptr;
  try {
    job.ell->matmul(job.x + b * job.n, rows, job.n, job.zero_point, job.x_scale, y0, job.y0_broadcast,
                    job.y + b * job.m);
  } catch (const std::exception& e) {
    job.failure.keep(e);
  }
}

// The Kronecker half's inputs, when B and C_T are given.
struct Kron {
  const float* b = nullptr;
  const float* ct = nullptr;
  const float* x = nullptr;
  const uint8_t* xq = nullptr;  // SparseMatVecInteger on a float X: the half reads X's quantization instead
  uint8_t zero_point = 0;
  float x_scale = 1.f;
  int64_t m1 = 0, n1 = 0, n2 = 0, m2 = 0;
  const dkp::KronFactors* factors = nullptr;  // B and C_T in the layout the products read

  void matmul(int64_t b0, int64_t rows, float* y) const {
    const int64_t n = n1 * n2;
    if (xq) {
      factors->matmul_quantized(xq + b0 * n, zero_point, x_scale, rows, y + b0 * m1 * m2);
    } else {
      factors->matmul(x + b0 * n, rows, y + b0 * m1 * m2);
    }
  }
};

// The Kronecker half split by rows of X: B multiplies a part's rows side by side, which costs the same per row at
// 4 rows as at 8 (2600 x 1300 layer: 12.1 us at batch 4, 23.9 us at batch 8), so parts of >= kKronRows rows lose
// nothing on one thread.
constexpr int64_t kKronRows = 4;
struct KronRows {
  const Kron* kron;
  int64_t batch;
  size_t parts;
  float* y;
  PoolFailure failure;
};

void run_kron_rows(void* data, size_t p) {
  KronRows& job = *static_cast<KronRows*>(data);
  const Kron& k = *job.kron;
  // part p: batch / parts rows, one more for the first batch % parts parts (no product that could overflow)
  const int64_t parts = static_cast<int64_t>(job.parts), q = job.batch / parts, r = job.batch % parts;
  const int64_t i = static_cast<int64_t>(p);
  const int64_t b0 = i * q + std::min(i, r), b1 = b0 + q + (i < r ? 1 : 0);
  try {
    k.matmul(b0, b1 - b0, job.y);
  } catch (const std::exception& e) {
    job.failure.keep(e);
  }
}

// The CSR arrays in the form the products read (int32 columns, float values), where the inputs are not already:
// 16-bit columns widened, 8-bit column gaps summed, int8 values scaled by their row's scale.
struct Converted {
  std::vector<int32_t> cols;
  std::vector<float> values;
};

// The columns of a uint8 col_idx, which holds each entry's column minus the previous entry's in its row (the
// first entry's: its column). Sums run in int64 and saturate at INT32_MAX, which the column check then refuses. A
// row_ptr that does not delimit the gaps leaves the columns 0, for check_csr to name its fault.
void columns_from_gaps(const int32_t* row_ptr, int64_t row_ptr_len, const uint8_t* gaps, int64_t nnz,
                       std::vector<int32_t>* cols) {
  cols->assign(static_cast<size_t>(nnz), 0);
  if (row_ptr_len < 1 || row_ptr[0] != 0 || row_ptr[row_ptr_len - 1] != nnz) return;
  for (int64_t i = 0; i + 1 < row_ptr_len; ++i) {
    if (row_ptr[i + 1] < row_ptr[i]) return;
  }
  for (int64_t i = 0; i + 1 < row_ptr_len; ++i) {
    int64_t col = 0;
    for (int64_t k = row_ptr[i]; k < row_ptr[i + 1]; ++k) {
      col = std::min<int64_t>(col + gaps[k], INT32_MAX);
      (*cols)[k] = static_cast<int32_t>(col);
    }
  }
}

struct Kernel {
  const Api* api = nullptr;
  const OpSpec* spec = nullptr;
  std::string node;               // for error messages: "SparseMatVec node 'name'"
  bool csr_checked = false;       // row_ptr, col_idx, values (, row_scale) are constant initializers, checked at creation
  int64_t min_cols = 0;           // from that check: X's last dim must be at least this
  int64_t rows = 0;
  Converted converted;            // for constant inputs: built once, at creation
  // Type and shape of each input that is a constant initializer, read at creation: a call then asks onnxruntime
  // only for its data (reading all of an input costs ~0.15 us, ~1.5 us a call for SparseMatVecInteger's 11).
  bool constant_input[kMaxInputs] = {};
  Tensor constant_info[kMaxInputs];
  std::unique_ptr<const dkp::SlicedEll> ell;  // the constant W re-laid out for single rows of X
  std::unique_ptr<const dkp::IntegerEll> iell;  // SparseMatVecInteger: the same, for a single uint8 row
  std::unique_ptr<const dkp::KronFactors> kron_factors;  // constant B and C_T, laid out once

  Status* error(const std::string& msg) const {
    return api->CreateStatus(dkp_ort::ORT_INVALID_ARGUMENT, (node + ": " + msg).c_str());
  }

  // After a ParallelFor: the failure one of its tasks kept, if any.
  Status* pool_status(const PoolFailure& failure) const {
    if (failure.message.empty()) return nullptr;
    return api->CreateStatus(dkp_ort::ORT_FAIL, (node + ": " + failure.message).c_str());
  }

  // Reads an input's type, shape and data pointer; runtime failures come back naming the input.
  Status* read(const dkp_ort::Value* value, size_t index, Tensor* out) const {
    dkp_ort::TensorTypeAndShapeInfo* info = nullptr;
    Status* st = api->GetTensorTypeAndShape(value, &info);
    size_t rank = 0;
    if (!st) st = api->GetTensorElementType(info, &out->type);
    if (!st) st = api->GetDimensionsCount(info, &rank);
    if (!st) {
      out->dims.resize(rank);
      st = api->GetDimensions(info, out->dims.data(), rank);
    }
    if (info) api->ReleaseTensorTypeAndShapeInfo(info);
    if (!st) st = api->GetTensorMutableData(const_cast<dkp_ort::Value*>(value), &out->data);
    if (st) return error("input '" + std::string(spec->input_names[index]) + "': " + take_message(api, st));
    for (int64_t d : out->dims) {
      if (d < 0) return error("input '" + std::string(spec->input_names[index]) + "' has an unknown dimension");
    }
    return nullptr;
  }

  Status* expect(const Tensor& t, size_t index, size_t rank) const {
    // the name only on failure: expect runs for every input of every call
    const auto name = [&] { return "input '" + std::string(spec->input_names[index]) + "'"; };
    const dkp_ort::TensorElementType want = spec->input_types[index];
    if (want == kAnyType) {  // col_idx
      if (t.type != kI32 && t.type != kU16 && t.type != kU8) {
        return error(name() + " must be int32, uint16 or uint8 (column gaps), got " + type_name(t.type));
      }
    } else if (t.type != want) {
      return error(name() + " must be " + type_name(want) + ", got " + type_name(t.type));
    }
    if (rank && t.dims.size() != rank) {
      return error(name() + " must have rank " + std::to_string(rank) + ", got shape " + shape_str(t.dims));
    }
    return nullptr;
  }

  // The sparse inputs (1..3, and row_scale): types, ranks and CSR invariants. On success `csr` and `cols`
  // describe the matrix, its arrays either the inputs' own or converted into `conv`.
  Status* check_sparse(const Tensor* t, Converted* conv, dkp::Csr* csr, int64_t* cols) const {
    for (size_t i = kRowPtr; i <= kValues; ++i) {
      if (Status* st = expect(t[i], i, 1)) return st;
    }
    const int64_t nnz = t[kColIdx].dims[0];
    const int32_t* col_idx = static_cast<const int32_t*>(t[kColIdx].data);
    if (t[kColIdx].type == kU16) {
      const uint16_t* c16 = static_cast<const uint16_t*>(t[kColIdx].data);
      conv->cols.assign(c16, c16 + nnz);
      col_idx = conv->cols.data();
    } else if (t[kColIdx].type == kU8) {
      columns_from_gaps(static_cast<const int32_t*>(t[kRowPtr].data), t[kRowPtr].dims[0],
                        static_cast<const uint8_t*>(t[kColIdx].data), nnz, &conv->cols);
      col_idx = conv->cols.data();
    }
    const std::string msg = dkp::check_csr(
        static_cast<const int32_t*>(t[kRowPtr].data), t[kRowPtr].dims[0], col_idx, nnz,
        spec->quantized ? nullptr : static_cast<const float*>(t[kValues].data), t[kValues].dims[0], csr, cols);
    if (!msg.empty()) return error(msg);
    if (!spec->quantized) return nullptr;
    const Tensor& scale = t[OpSpec::kScale];
    if (Status* st = expect(scale, OpSpec::kScale, 1)) return st;
    if (scale.dims[0] != csr->rows) {
      return error("input 'row_scale' must hold M = " + std::to_string(csr->rows) + " entries (len(row_ptr) - 1), got " +
                   std::to_string(scale.dims[0]));
    }
    const int8_t* q = static_cast<const int8_t*>(t[kValues].data);
    const float* s = static_cast<const float*>(scale.data);
    for (int64_t i = 0; i < csr->rows; ++i) {
      // an inf scale on an empty row would make the batch-1 layout's 0 * scale a NaN, the CSR path not
      if (!std::isfinite(s[i])) {
        return error("input 'row_scale' must be finite, got row_scale[" + std::to_string(i) +
                     "] = " + std::to_string(s[i]));
      }
    }
    conv->values.resize(static_cast<size_t>(nnz));
    for (int64_t i = 0; i < csr->rows; ++i) {
      for (int64_t k = csr->row_ptr[i]; k < csr->row_ptr[i + 1]; ++k) conv->values[k] = s[i] * static_cast<float>(q[k]);
    }
    csr->values = conv->values.data();
    return nullptr;
  }

  // x_scale and x_zero_point of SparseMatVecInteger: one element each (a scalar, as DynamicQuantizeLinear
  // writes them, or [1]).
  Status* read_x_quantization(const Tensor* t, float* scale, uint8_t* zero_point) const {
    for (size_t i : {OpSpec::kXScale, OpSpec::kXZeroPoint}) {
      if (Status* st = expect(t[i], i, 0)) return st;
      if (t[i].dims.size() > 1 || (t[i].dims.size() == 1 && t[i].dims[0] != 1)) {
        return error("input '" + std::string(spec->input_names[i]) + "' must be a scalar (or [1]), got shape " +
                     shape_str(t[i].dims));
      }
    }
    *scale = *static_cast<const float*>(t[OpSpec::kXScale].data);
    *zero_point = *static_cast<const uint8_t*>(t[OpSpec::kXZeroPoint].data);
    return nullptr;
  }

  Status* compute(dkp_ort::KernelContext* ctx) const {
    size_t count = 0;
    if (Status* st = api->KernelContext_GetInputCount(ctx, &count)) return error(take_message(api, st));
    const size_t y0_index = spec->y0;
    if (count < spec->min_inputs() || count > spec->num_inputs) {
      return error("expects " + std::to_string(spec->min_inputs()) + " to " + std::to_string(spec->num_inputs) +
                   " inputs, got " + std::to_string(count));
    }
    // Per-thread and reused: the dims vectors keep their storage, so a call allocates none of them (a fresh array
    // cost a malloc and a free per input, 0.3 us of SparseMatVecInteger's fixed cost)
    thread_local Tensor t[kMaxInputs];
    thread_local std::vector<int64_t> out_dims;
    for (Tensor& ti : t) {
      ti.type = dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      ti.dims.clear();
      ti.data = nullptr;
    }
    bool given[kMaxInputs] = {};
    for (size_t i = 0; i < count; ++i) {
      const dkp_ort::Value* value = nullptr;
      if (Status* st = api->KernelContext_GetInput(ctx, i, &value)) return error(take_message(api, st));
      if (!value) {
        if (spec->optional(i)) continue;  // an optional input left out or given as "" on the node
        return error("input '" + std::string(spec->input_names[i]) + "' is missing");
      }
      if (constant_input[i]) {
        t[i].type = constant_info[i].type;
        t[i].dims = constant_info[i].dims;
        if (Status* st = api->GetTensorMutableData(const_cast<dkp_ort::Value*>(value), &t[i].data)) {
          return error("input '" + std::string(spec->input_names[i]) + "': " + take_message(api, st));
        }
      } else if (Status* st = read(value, i, &t[i])) {
        return st;
      }
      given[i] = true;
    }
    const bool has_y0 = given[y0_index];
    const Tensor& x = t[kX];
    const bool quantize_x = spec->integer_x && x.type == kF32;  // SparseMatVecInteger quantizing X itself
    if (Status* st = spec->integer_x ? check_integer_x(x, given) : expect(x, kX, 0)) return st;
    if (x.dims.empty()) return error("input 'X' must have rank >= 1 ([..., N]), got a scalar");
    const int64_t n = x.dims.back();
    int64_t batch = 1;
    for (size_t d = 0; d + 1 < x.dims.size(); ++d) {
      if (__builtin_mul_overflow(batch, x.dims[d], &batch)) {
        return error("input 'X' has too many rows to address, shape " + shape_str(x.dims));
      }
    }

    dkp::Csr csr;
    int64_t cols = 0;
    Converted per_call;  // conversions of inputs that are not constants
    if (csr_checked) {
      // Constant initializers cannot change after the check at kernel creation: only bind the arrays.
      for (size_t i = kRowPtr; i <= kValues; ++i) {
        if (Status* st = expect(t[i], i, 1)) return st;
      }
      if (t[kRowPtr].dims[0] != rows + 1) return error("input 'row_ptr' changed shape since the kernel was created");
      csr.rows = rows;
      csr.nnz = t[kColIdx].dims[0];
      csr.row_ptr = static_cast<const int32_t*>(t[kRowPtr].data);
      csr.col_idx = converted.cols.empty() ? static_cast<const int32_t*>(t[kColIdx].data) : converted.cols.data();
      csr.values = spec->quantized ? converted.values.data() : static_cast<const float*>(t[kValues].data);
      cols = min_cols;
    } else if (Status* st = check_sparse(t, &per_call, &csr, &cols)) {
      return st;
    }
    if (n < cols) {
      return error("input 'col_idx' must be < N = " + std::to_string(n) + " (the last dim of input 'X', shape " +
                   shape_str(x.dims) + "), got column " + std::to_string(cols - 1));
    }

    int64_t out_bytes = 0;
    if (__builtin_mul_overflow(batch, csr.rows, &out_bytes) || __builtin_mul_overflow(out_bytes, 4, &out_bytes)) {
      return error("input 'X' (shape " + shape_str(x.dims) + ") and input 'row_ptr' (M = " +
                   std::to_string(csr.rows) + ") give an output too large to address");
    }
    out_dims.assign(x.dims.begin(), x.dims.end());
    out_dims.back() = csr.rows;
    bool y0_broadcast = false;
    if (has_y0) {
      const Tensor& y0 = t[y0_index];
      if (Status* st = expect(y0, y0_index, 0)) return st;
      y0_broadcast = y0.dims.size() == 1 && y0.dims[0] == csr.rows && out_dims.size() > 1;
      if (y0.dims != out_dims && !y0_broadcast) {
        const std::string or_row = out_dims.size() > 1 ? " (or [" + std::to_string(csr.rows) + "])" : "";
        return error("input 'Y0' must have shape " + shape_str(out_dims) + or_row + ", got " + shape_str(y0.dims));
      }
    }

    Kron kron;
    if (Status* st = check_kron(t, given, x, quantize_x, n, csr.rows, &kron)) return st;

    dkp_ort::Value* out = nullptr;
    if (Status* st = api->KernelContext_GetOutput(ctx, 0, out_dims.data(), out_dims.size(), &out)) {
      return error("output 'Y': " + take_message(api, st));
    }
    void* y = nullptr;
    if (Status* st = api->GetTensorMutableData(out, &y)) return error("output 'Y': " + take_message(api, st));
    float x_scale = 1.f;
    uint8_t zero_point = 0;
    if (spec->integer_x && !quantize_x) {
      if (Status* st = read_x_quantization(t, &x_scale, &zero_point)) return st;
    }
    if (batch == 0 || csr.rows == 0) return nullptr;
    const float* y0s = has_y0 ? static_cast<const float*>(t[y0_index].data) : nullptr;
    float* ys = static_cast<float*>(y);
    const void* xs = x.data;
    if (quantize_x) {
      thread_local std::vector<uint8_t> xq;  // reused: grows to the largest X this thread has seen
      xq.resize(static_cast<size_t>(batch * n));
      if (!dkp::dynamic_quantize(static_cast<const float*>(x.data), batch * n, xq.data(), &x_scale, &zero_point)) {
        // a NaN or an infinity in X: no scale quantizes it (onnxruntime's DynamicQuantizeLinear maps a NaN to the
        // zero point and an infinity makes its scale inf): Y says so rather than hide it
        std::fill(ys, ys + batch * csr.rows, std::nanf(""));
        return nullptr;
      }
      xs = xq.data();
      kron.xq = xq.data();  // the Kronecker half reads X's quantization too
      kron.zero_point = zero_point;
      kron.x_scale = x_scale;
    }
    if (Status* st = sparse_part(ctx, csr, xs, batch, n, y0s, y0_broadcast, x_scale, zero_point, ys)) return st;
    if (kron.b) return kron_part(ctx, kron, batch, ys);
    return nullptr;
  }

  // Y += the Kronecker half: in parts of about kKronRows rows of X on onnxruntime's thread pool at batch >= 2 *
  // kKronRows (with one thread the parts run in turn here), else here in one product.
  Status* kron_part(dkp_ort::KernelContext* ctx, Kron kron, int64_t batch, float* ys) const {
    std::unique_ptr<const dkp::KronFactors> per_call;  // B or C_T not constant: laid out for this call
    if (kron_factors) {
      kron.factors = kron_factors.get();
    } else {
      per_call = std::make_unique<const dkp::KronFactors>(kron.b, kron.m1, kron.n1, kron.ct, kron.n2, kron.m2);
      kron.factors = per_call.get();
    }
    const size_t parts = static_cast<size_t>(batch / kKronRows);
    if (parts < 2 || !g_api_parallel) {
      kron.matmul(0, batch, ys);
      return nullptr;
    }
    KronRows job{&kron, batch, parts, ys, {}};
    if (Status* st = g_api_parallel->KernelContext_ParallelFor(ctx, run_kron_rows, parts, 0, &job)) {
      return error(take_message(api, st));
    }
    return pool_status(job.failure);
  }

  // SparseMatVecInteger's X: uint8 with x_scale and x_zero_point, or float32 (the node quantizes it) without.
  Status* check_integer_x(const Tensor& x, const bool* given) const {
    if (x.type == kU8) {
      for (size_t i : {OpSpec::kXScale, OpSpec::kXZeroPoint}) {
        if (!given[i]) {
          return error("input '" + std::string(spec->input_names[i]) + "' is missing: a uint8 X needs x_scale and "
                       "x_zero_point");
        }
      }
      return nullptr;
    }
    if (x.type != kF32) {
      return error(std::string("input 'X' must be uint8 (with x_scale and x_zero_point) or float32 (quantized by "
                               "the node), got ") + type_name(x.type));
    }
    if (given[OpSpec::kXScale] || given[OpSpec::kXZeroPoint]) {
      return error("inputs 'x_scale' and 'x_zero_point' are for a uint8 X: the node quantizes a float32 X itself "
                   "(leave them empty)");
    }
    return nullptr;
  }

  // B and C_T: both or neither, float32 rank 2, M1 * M2 = M and N1 * N2 = N; SparseMatVecInteger's X_kron: X's shape
  // (uint8 X only: a float32 X's half reads X_hat).
  Status* check_kron(const Tensor* t, const bool* given, const Tensor& x, bool float_x, int64_t n, int64_t m,
                     Kron* kron) const {
    const size_t ib = spec->kron_b(), ic = spec->kron_ct();
    if (!given[ib] && !given[ic]) {
      if (spec->integer_x && given[spec->kron_x()]) return error("input 'X_kron' is given without 'B' and 'C_T'");
      return nullptr;
    }
    if (given[ib] != given[ic]) {
      return error(std::string("input '") + (given[ib] ? "C_T" : "B") + "' is missing: B and C_T come together");
    }
    if (Status* st = expect(t[ib], ib, 2)) return st;
    if (Status* st = expect(t[ic], ic, 2)) return st;
    kron->m1 = t[ib].dims[0];
    kron->n1 = t[ib].dims[1];
    kron->n2 = t[ic].dims[0];
    kron->m2 = t[ic].dims[1];
    int64_t mm = 0, nn = 0;
    if (__builtin_mul_overflow(kron->m1, kron->m2, &mm) || mm != m) {
      return error("inputs 'B' " + shape_str(t[ib].dims) + " and 'C_T' " + shape_str(t[ic].dims) +
                   " must give M1 * M2 = M = " + std::to_string(m) + " (len(row_ptr) - 1)");
    }
    if (__builtin_mul_overflow(kron->n1, kron->n2, &nn) || nn != n) {
      return error("inputs 'B' " + shape_str(t[ib].dims) + " and 'C_T' " + shape_str(t[ic].dims) +
                   " must give N1 * N2 = N = " + std::to_string(n) + " (the last dim of input 'X')");
    }
    kron->b = static_cast<const float*>(t[ib].data);
    kron->ct = static_cast<const float*>(t[ic].data);
    const size_t ix = spec->kron_x();
    if (float_x && given[ix]) {
      return error("input 'X_kron' is for a uint8 X: with a float32 X the Kronecker half reads X's quantization");
    }
    if (!spec->integer_x || float_x) {
      kron->x = static_cast<const float*>(x.data);
      return nullptr;
    }
    if (!given[ix]) return error("input 'X_kron' is missing: with a uint8 X, the Kronecker half reads float x from it");
    if (Status* st = expect(t[ix], ix, 0)) return st;
    if (t[ix].dims != x.dims) {
      return error("input 'X_kron' must have the shape of input 'X' " + shape_str(x.dims) + ", got " +
                   shape_str(t[ix].dims));
    }
    kron->x = static_cast<const float*>(t[ix].data);
    return nullptr;
  }

  // Y = the sparse product (+ Y0).
  // X is float32 (SparseMatVec, SparseMatVecInt8) or uint8 (SparseMatVecInteger).
  Status* sparse_part(dkp_ort::KernelContext* ctx, const dkp::Csr& csr, const void* x, int64_t batch, int64_t n,
                      const float* y0s, bool y0_broadcast, float x_scale, uint8_t zero_point, float* ys) const {
    if (!spec->integer_x) return product(ctx, csr, static_cast<const float*>(x), batch, n, y0s, y0_broadcast, ys);
    const uint8_t* xq = static_cast<const uint8_t*>(x);
    if (iell && iell->serves(batch)) {
      // Through the integer tiles, up to 4 rows of X per pass over W, in blocks of rows on onnxruntime's thread
      // pool when there are several (or one row through IntegerEll's SELL-8 copy where it has no tiles). AVX2's
      // tiles serve up to 3 rows: more go the float way below (IntegerEll::serves).
      IntegerRows job{iell.get(), xq, batch, n, zero_point, x_scale, y0s, y0_broadcast, ys, csr.rows, {}};
      const size_t blocks = static_cast<size_t>((batch + kIntegerBlock - 1) / kIntegerBlock);
      if (blocks >= 2 && g_api_parallel) {
        if (Status* st = g_api_parallel->KernelContext_ParallelFor(ctx, run_integer_rows, blocks, 0, &job)) {
          return error(take_message(api, st));
        }
      } else {
        for (size_t k = 0; k < blocks; ++k) run_integer_rows(&job, k);
      }
      return pool_status(job.failure);
    }
    // Other shapes run the float products on the integers X - x_zero_point (exact in float32), then scale.
    std::vector<float> xf(static_cast<size_t>(batch * n));
    for (size_t i = 0; i < xf.size(); ++i) xf[i] = static_cast<float>(static_cast<int>(xq[i]) - zero_point);
    if (Status* st = product(ctx, csr, xf.data(), batch, n, nullptr, false, ys)) return st;
    for (int64_t b = 0; b < batch; ++b) {
      float* yb = ys + b * csr.rows;
      const float* y0b = y0s ? (y0_broadcast ? y0s : y0s + b * csr.rows) : nullptr;
      for (int64_t r = 0; r < csr.rows; ++r) yb[r] = y0b ? yb[r] * x_scale + y0b[r] : yb[r] * x_scale;
    }
    return nullptr;
  }

  // Y = X @ W^T (+ Y0) for float X: on onnxruntime's thread pool at batch >= 2, else here.
  Status* product(dkp_ort::KernelContext* ctx, const dkp::Csr& csr, const float* xs, int64_t batch, int64_t n,
                  const float* y0s, bool y0_broadcast, float* y) const {
    if (g_api_parallel && csr.nnz >= kParallelMinNnz && ell && ell->serves_batch(batch)) {
      // 2 to 5 rows of X through W's register tiles, windows of W's rows on onnxruntime's pool; X's copies are
      // this thread's, kept between calls (KeepSmall)
      thread_local dkp::SlicedEll::BatchX bx;
      ell->prepare_batch(xs, batch, n, &bx);
      const KeepSmall<dkp::SlicedEll::BatchX> keep{bx, [](const dkp::SlicedEll::BatchX& s) { return s.floats(); }};
      TileParts job{ell.get(), &bx, y0s, y0_broadcast ? 0 : csr.rows, y, {}};
      if (Status* st = g_api_parallel->KernelContext_ParallelFor(ctx, run_tile_part,
                                                                 static_cast<size_t>(ell->windows()), 0, &job)) {
        return error(take_message(api, st));
      }
      return pool_status(job.failure);
    }
    if (batch >= 2 && g_api_parallel && csr.nnz >= kParallelMinNnz) {
      // Rows of W split into parts of about equal nnz, run on onnxruntime's intra-op thread pool (its size is the
      // session's intra_op_num_threads; with one thread the parts run in turn here).
      // X's transposition is short (~1 us at 8 x 1300): on this thread, one pool dispatch fewer. Its storage is
      // this thread's, kept between calls (KeepSmall).
      using Blocks = std::vector<dkp::AlignedVector<float>>;
      thread_local Blocks xt;
      dkp::transpose_blocks(xs, batch, n, &xt);
      const KeepSmall<Blocks> keep{xt, [](const Blocks& s) {
        size_t floats = 0;
        for (const dkp::AlignedVector<float>& block : s) floats += block.capacity();
        return floats;
      }};
      RowParts job{&csr, xs, &xt, batch, n, y0s, y0_broadcast, y, {}};
      job.bounds.push_back(0);
      for (int p = 1; p < kParallelParts; ++p) {
        const int64_t target = csr.nnz * p / kParallelParts;
        const int32_t* at = std::lower_bound(csr.row_ptr, csr.row_ptr + csr.rows + 1, static_cast<int32_t>(target));
        job.bounds.push_back(std::max<int64_t>(job.bounds.back(), at - csr.row_ptr));
      }
      job.bounds.push_back(csr.rows);
      if (Status* st = g_api_parallel->KernelContext_ParallelFor(ctx, run_row_part, kParallelParts, 0, &job)) {
        return error(take_message(api, st));
      }
      return nullptr;
    }
    dkp::csr_matmul(csr, ell.get(), xs, batch, n, y0s, y0_broadcast, y);
    return nullptr;
  }
};

// Builds the kernel of one node: learns its name and, when the CSR arrays are constant initializers, checks them
// here so that Run never has to, and keeps a copy laid out for the batch-1 product.
Status* create_kernel(const Api* api, const OpSpec* spec, const dkp_ort::KernelInfo* info, Kernel* k) {
  k->api = api;
  k->spec = spec;
  k->node = dkp_ort::node_label(api, info, spec->name);
  Tensor t[kMaxInputs];
  for (size_t i = 0; i < spec->num_inputs; ++i) {  // an optional input left out is not constant
    int is_constant = 0;
    const dkp_ort::Value* value = nullptr;
    if (Status* st = api->KernelInfoGetConstantInput_tensor(info, i, &is_constant, &value)) {
      return k->error(take_message(api, st));
    }
    if (!is_constant || !value) continue;
    if (Status* st = k->read(value, i, &t[i])) return st;
    k->constant_input[i] = true;
    k->constant_info[i].type = t[i].type;
    k->constant_info[i].dims = t[i].dims;
  }
  const size_t ib = spec->kron_b(), ic = spec->kron_ct();
  if (k->constant_input[ib] && k->constant_input[ic] && t[ib].type == kF32 && t[ic].type == kF32 &&
      t[ib].dims.size() == 2 && t[ic].dims.size() == 2) {  // else each call checks them and names the fault
    k->kron_factors = std::make_unique<const dkp::KronFactors>(static_cast<const float*>(t[ib].data), t[ib].dims[0],
                                                               t[ib].dims[1], static_cast<const float*>(t[ic].data),
                                                               t[ic].dims[0], t[ic].dims[1]);
  }
  for (size_t i = kRowPtr; i <= (spec->quantized ? OpSpec::kScale : kValues); ++i) {
    if (!k->constant_input[i]) return nullptr;  // the CSR arrays are checked on every call instead
  }
  dkp::Csr csr;
  if (Status* st = k->check_sparse(t, &k->converted, &csr, &k->min_cols)) return st;
  k->rows = csr.rows;
  k->csr_checked = true;
  if (spec->integer_x) {
    k->iell = std::make_unique<const dkp::IntegerEll>(csr, k->min_cols, static_cast<const int8_t*>(t[kValues].data),
                                                      static_cast<const float*>(t[OpSpec::kScale].data));
  } else if (spec->quantized) {  // the batch-1 layout keeps the values as int8 (a quarter of the bytes of floats)
    k->ell = std::make_unique<const dkp::SlicedEll>(csr, k->min_cols, static_cast<const int8_t*>(t[kValues].data),
                                                    static_cast<const float*>(t[OpSpec::kScale].data));
  } else {
    k->ell = std::make_unique<const dkp::SlicedEll>(csr, k->min_cols);
  }
  return nullptr;
}

// --- the custom-op record ------------------------------------------------------------------------------------

// The custom-op record of one op with its spec: onnxruntime hands callbacks the record's address, which is the
// address of `op`, its first member.
struct OpRecord {
  dkp_ort::CustomOp op;
  const OpSpec* spec;
};

const OpSpec& spec_of(const dkp_ort::CustomOp* op) { return *reinterpret_cast<const OpRecord*>(op)->spec; }

Status* op_create_kernel_v2(const dkp_ort::CustomOp* op, const Api* api, const dkp_ort::KernelInfo* info,
                            void** kernel) {
  const OpSpec& spec = spec_of(op);
  Kernel* k = new (std::nothrow) Kernel;
  if (!k) return api->CreateStatus(dkp_ort::ORT_FAIL, (std::string(spec.name) + ": out of memory").c_str());
  Status* st = nullptr;
  try {
    st = create_kernel(api, &spec, info, k);
  } catch (const std::exception& e) {  // std::bad_alloc while repacking a large constant W
    st = api->CreateStatus(dkp_ort::ORT_FAIL, (std::string(spec.name) + ": " + e.what()).c_str());
  }
  if (st) {
    delete k;
    return st;
  }
  *kernel = k;
  return nullptr;
}

const char* op_name(const dkp_ort::CustomOp* op) { return spec_of(op).name; }
const char* op_provider(const dkp_ort::CustomOp*) { return nullptr; }  // null means the CPU provider
dkp_ort::TensorElementType op_input_type(const dkp_ort::CustomOp* op, size_t i) {
  return i < spec_of(op).num_inputs ? spec_of(op).input_types[i] : dkp_ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}
size_t op_input_count(const dkp_ort::CustomOp* op) { return spec_of(op).num_inputs; }
dkp_ort::TensorElementType op_output_type(const dkp_ort::CustomOp*, size_t) { return kF32; }
size_t op_output_count(const dkp_ort::CustomOp*) { return 1; }
dkp_ort::InputOutputCharacteristic op_input_characteristic(const dkp_ort::CustomOp* op, size_t i) {
  return spec_of(op).optional(i) ? dkp_ort::INPUT_OUTPUT_OPTIONAL : dkp_ort::INPUT_OUTPUT_REQUIRED;
}
dkp_ort::InputOutputCharacteristic op_output_characteristic(const dkp_ort::CustomOp*, size_t) {
  return dkp_ort::INPUT_OUTPUT_REQUIRED;
}
dkp_ort::MemType op_input_memory(const dkp_ort::CustomOp*, size_t) { return dkp_ort::OrtMemTypeDefault; }
int op_min_arity(const dkp_ort::CustomOp*) { return 1; }
int op_homogeneous(const dkp_ort::CustomOp*) { return 1; }

constexpr dkp_ort::CustomOp kCallbacks = {
    dkp_ort::kApiVersion,
    dkp_ort::create_kernel_v1<op_create_kernel_v2>,
    op_name,
    op_provider,
    op_input_type,
    op_input_count,
    op_output_type,
    op_output_count,
    dkp_ort::compute_v1<Kernel>,
    dkp_ort::destroy_kernel<Kernel>,
    op_input_characteristic,
    op_output_characteristic,
    op_input_memory,
    op_min_arity,
    op_homogeneous,
    op_min_arity,
    op_homogeneous,
    op_create_kernel_v2,
    dkp_ort::compute_v2<Kernel>,
};

const OpRecord kSparseMatVec = {kCallbacks, &kFloatSpec};
const OpRecord kSparseMatVecInt8 = {kCallbacks, &kInt8Spec};
const OpRecord kSparseMatVecInteger = {kCallbacks, &kIntegerSpec};

// One domain for the whole process, built on first registration and never released: sessions may outlive the
// SessionOptions they were made from, and registering the library again must not add the op twice.
std::once_flag g_domain_once;
dkp_ort::CustomOpDomain* g_domain = nullptr;
std::string g_domain_error;

}  // namespace

extern "C" __attribute__((visibility("default"))) Status* RegisterCustomOps(dkp_ort::SessionOptions* options,
                                                                            const dkp_ort::ApiBase* base) {
  const Api* api = base->GetApi(dkp_ort::kApiVersion);
  if (!api) {
    const Api* v1 = base->GetApi(1);
    const std::string msg = std::string("dkp_deploy ops library needs onnxruntime >= 1.16 (C API 16); this is ") +
                            base->GetVersionString();
    return v1 ? v1->CreateStatus(dkp_ort::ORT_FAIL, msg.c_str()) : nullptr;
  }
  g_api_parallel = base->GetApi(dkp_ort::kApiVersionParallel);
  std::call_once(g_domain_once, [api] {
    Status* st = api->CreateCustomOpDomain(kDomain, &g_domain);
    if (!st) st = api->CustomOpDomain_Add(g_domain, &kSparseMatVec.op);
    if (!st) st = api->CustomOpDomain_Add(g_domain, &kSparseMatVecInt8.op);
    if (!st) st = api->CustomOpDomain_Add(g_domain, &kSparseMatVecInteger.op);
    if (!st) st = api->CustomOpDomain_Add(g_domain, dkp::lstm_cell_custom_op());
    if (st) {
      g_domain_error = take_message(api, st);
      g_domain = nullptr;
    }
  });
  if (!g_domain) {
    return api->CreateStatus(dkp_ort::ORT_FAIL, ("dkp_deploy ops library: " + g_domain_error).c_str());
  }
  return api->AddCustomOpDomain(options, g_domain);
}
