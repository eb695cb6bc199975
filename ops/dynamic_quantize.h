// ONNX DynamicQuantizeLinear (uint8) in the op library, free of any onnxruntime type: SparseMatVecInteger
// quantizes a float32 X itself with it, which saves the graph a node.
#pragma once

#include <cstdint>

namespace dkp {

// DynamicQuantizeLinear of x[0 .. n), one scale and zero point for all of it, in float32 as the operator defines
// it: scale = (max(0, max x) - min(0, min x)) / 255 (1 where both are 0, as onnxruntime gives), zero_point =
// saturate(round(-min(0, min x) / scale)), q = saturate(round(x / scale) + zero_point), rounding half to even:
// what onnxruntime's kernel computes, bit for bit. Returns false, q untouched, when x holds a NaN or an infinity
// (no scale quantizes those).
bool dynamic_quantize(const float* x, int64_t n, uint8_t* q, float* scale, uint8_t* zero_point);

}  // namespace dkp
