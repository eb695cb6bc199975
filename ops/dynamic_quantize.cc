// DynamicQuantizeLinear (dynamic_quantize.h) in GCC / Clang vector extensions: one body, compiled for the baseline
// vectors (SSE2, NEON), AVX2 and AVX-512, picked at first use like the sparse kernels.
#include "dynamic_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "sparse_matvec.h"  // pick_isa_kernel
#include "vector_ops.h"

namespace dkp {
namespace {

using vec::load;
using vec::select;

// V float32 lanes, I int32 lanes, Q uint8 lanes, all of V's lane count
template <class V, class I, class Q>
DKP_VEC_INLINE bool quantize_impl(const float* x, int64_t n, uint8_t* q, float* scale_out, uint8_t* zero_point_out) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  V lo{}, hi{}, bad{};  // from 0: the range always holds 0; bad: x * 0, NaN where x is NaN or infinite
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V v;
    load(v, x + i);
    select<V, I>(v < lo, v, lo);
    select<V, I>(v > hi, v, hi);
    bad = bad + v * 0.f;
  }
  float l = 0.f, h = 0.f, b = 0.f;
  for (int64_t k = 0; k < L; ++k) {
    l = std::min(l, lo[k]);
    h = std::max(h, hi[k]);
    b += bad[k];
  }
  for (int64_t k = i; k < n; ++k) {
    l = std::min(l, x[k]);
    h = std::max(h, x[k]);
    b += x[k] * 0.f;
  }
  if (b != b) return false;
  const float scale = h == l ? 1.f : (h - l) / 255.f;
  // clamped before rounding, in onnxruntime's order: a scale that underflows to 0 (0 / 0) gives its 255 too
  const float zf = std::nearbyint(std::max(0.f, std::min(255.f, 0.f - l / scale)));
  const int32_t zp = static_cast<int32_t>(zf);
  // x / scale clamped to [-zp, 255 - zp] (integers, so clamping before rounding is the same as after), rounded
  // half to even, plus zp: onnxruntime's order of operations
  const float qlo = -zf, qhi = 255.f - zf;
  const V s = V{} + scale, magic = V{} + vec::kRoundMagic;
  for (i = 0; i + L <= n; i += L) {
    V v;
    load(v, x + i);
    v = v / s;
    vec::clamp<V, I>(v, qlo, qhi);
    const I r = (I)(v + magic) - (I)magic + zp;
    const Q out = __builtin_convertvector(r, Q);
    std::memcpy(q + i, &out, sizeof out);
  }
  for (; i < n; ++i) {
    const float v = std::min(qhi, std::max(qlo, x[i] / scale));
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(v)) + zp);
  }
  *scale_out = scale;
  *zero_point_out = static_cast<uint8_t>(zp);
  return true;
}

typedef float Float4 __attribute__((vector_size(16)));
typedef int32_t Int4 __attribute__((vector_size(16)));
typedef uint8_t Byte4 __attribute__((vector_size(4)));

bool quantize_generic(const float* x, int64_t n, uint8_t* q, float* scale, uint8_t* zero_point) {
  return quantize_impl<Float4, Int4, Byte4>(x, n, q, scale, zero_point);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DKP_HAVE_X86_QUANTIZE 1
typedef float Float8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));
typedef uint8_t Byte8 __attribute__((vector_size(8)));
typedef float Float16 __attribute__((vector_size(64)));
typedef int32_t Int16 __attribute__((vector_size(64)));
typedef uint8_t Byte16 __attribute__((vector_size(16)));

__attribute__((target("avx2,fma"))) bool quantize_avx2(const float* x, int64_t n, uint8_t* q, float* scale,
                                                        uint8_t* zero_point) {
  return quantize_impl<Float8, Int8, Byte8>(x, n, q, scale, zero_point);
}

__attribute__((target("avx512f"))) bool quantize_avx512(const float* x, int64_t n, uint8_t* q,
                                                                  float* scale, uint8_t* zero_point) {
  return quantize_impl<Float16, Int16, Byte16>(x, n, q, scale, zero_point);
}
#else
#define DKP_HAVE_X86_QUANTIZE 0
#endif

using QuantizeFn = bool (*)(const float*, int64_t, uint8_t*, float*, uint8_t*);

#if !DKP_HAVE_X86_QUANTIZE
constexpr QuantizeFn quantize_avx512 = nullptr, quantize_avx2 = nullptr;
#endif

const IsaKernel<QuantizeFn>& kernel() {
  static const IsaKernel<QuantizeFn> k = pick_isa_kernel<QuantizeFn>(quantize_avx512, quantize_avx2, quantize_generic);
  return k;
}

}  // namespace

bool dynamic_quantize(const float* x, int64_t n, uint8_t* q, float* scale, uint8_t* zero_point) {
  return kernel().fn(x, n, q, scale, zero_point);
}

}  // namespace dkp
