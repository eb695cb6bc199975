// The LSTM cell (lstm_cell.h) in GCC / Clang vector extensions: one body, compiled for the baseline vectors (SSE2,
// NEON), AVX2+FMA and AVX-512, picked at first use like the sparse kernels.
#include "lstm_cell.h"

#include <cstring>

#include "sparse_matvec.h"  // pick_isa_kernel
#include "vector_ops.h"

#define DKP_CELL_INLINE DKP_VEC_INLINE

namespace dkp {
namespace {

using vec::clamp;
using vec::select;

// x = exp(x), x first clamped to [-104, 88.3] (exp(-104) is below half the smallest denormal): x = n ln2 + r,
// |r| <= ln2 / 2, exp(r) by its Taylor polynomial of degree 7 (truncation below 1e-8 relative), times 2^n as two
// powers of two built in the exponent bits (2^n alone is not a normal float below n = -126).
template <class V, class I>
DKP_CELL_INLINE void exp_clamped(V& x) {
  clamp<V, I>(x, -104.f, 88.3f);
  const V magic = V{} + vec::kRoundMagic;
  const V t = x * 1.44269504088896341f + magic;
  const V n = t - magic;
  // ln2 in two parts: the first has few mantissa bits, so n * part is exact for |n| <= 150
  V r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  V p = V{} + 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const I k = (I)t - (I)magic;
  const I k1 = k >> 1;
  x = p * (V)((k1 + 127) << 23) * (V)((k - k1 + 127) << 23);
}

// sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|): a few ulp everywhere, denormals included
template <class V, class I>
DKP_CELL_INLINE void sigmoid(V& x) {
  V e = (V)((I)x | (int32_t)0x80000000u);  // -|x|
  exp_clamped<V, I>(e);
  V s = 1.f / (1.f + e);
  const V low = e * s;
  select<V, I>(x < 0.f, low, s);
  x = s;
}

// tanh(|x|) = 1 - 2 / (exp(2|x|) + 1) from |x| = 0.5 (a few ulp there, exact 1 from 9), below it the odd Taylor
// series to x^17 (the next term is under 5e-10); the sign put back at the end.
template <class V, class I>
DKP_CELL_INLINE void tanh(V& x) {
  const I sign = (I)x & (int32_t)0x80000000u;
  const V a = (V)((I)x & 0x7fffffff);
  V big = a + a;
  exp_clamped<V, I>(big);
  big = 1.f - 2.f / (big + 1.f);
  const V s = a * a;
  V p = V{} + 6404582.f / 10854718875.f;
  p = p * s - 929569.f / 638512875.f;
  p = p * s + 21844.f / 6081075.f;
  p = p * s - 1382.f / 155925.f;
  p = p * s + 62.f / 2835.f;
  p = p * s - 17.f / 315.f;
  p = p * s + 2.f / 15.f;
  p = p * s - 1.f / 3.f;
  select<V, I>(a < 0.5f, a + a * s * p, big);
  x = (V)((I)big | sign);
}

template <class V, class I>
DKP_CELL_INLINE void cell_block(const float* g, int64_t h, const float* c, float* h_out, float* c_out) {
  V i, f, gg, o, cv;
  std::memcpy(&i, g, sizeof(V));
  std::memcpy(&f, g + h, sizeof(V));
  std::memcpy(&gg, g + 2 * h, sizeof(V));
  std::memcpy(&o, g + 3 * h, sizeof(V));
  std::memcpy(&cv, c, sizeof(V));
  sigmoid<V, I>(i);
  sigmoid<V, I>(f);
  tanh<V, I>(gg);
  sigmoid<V, I>(o);
  V cn = f * cv + i * gg;
  std::memcpy(c_out, &cn, sizeof(V));
  tanh<V, I>(cn);
  o = o * cn;
  std::memcpy(h_out, &o, sizeof(V));
}

template <class V, class I>
DKP_CELL_INLINE void cell_impl(const float* gates, const float* c, int64_t rows, int64_t h, float* h_out,
                               float* c_out) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gates + r * 4 * h;
    const float* cr = c + r * h;
    float* hr = h_out + r * h;
    float* crr = c_out + r * h;
    int64_t j = 0;
    for (; j + L <= h; j += L) cell_block<V, I>(g + j, h, cr + j, hr + j, crr + j);
    if (j < h) {  // the last lanes through a zero-padded copy: [i f g o] with a stride of L, then c
      float in[5 * L] = {}, out[2 * L];
      const int64_t k = h - j;
      for (int q = 0; q < 4; ++q) std::memcpy(in + q * L, g + q * h + j, sizeof(float) * k);
      std::memcpy(in + 4 * L, cr + j, sizeof(float) * k);
      cell_block<V, I>(in, L, in + 4 * L, out, out + L);
      std::memcpy(hr + j, out, sizeof(float) * k);
      std::memcpy(crr + j, out + L, sizeof(float) * k);
    }
  }
}

typedef float Float4 __attribute__((vector_size(16)));
typedef int32_t Int4 __attribute__((vector_size(16)));

void cell_generic(const float* gates, const float* c, int64_t rows, int64_t h, float* h_out, float* c_out) {
  cell_impl<Float4, Int4>(gates, c, rows, h, h_out, c_out);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DKP_HAVE_X86_CELL 1
typedef float Float8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));
typedef float Float16 __attribute__((vector_size(64)));
typedef int32_t Int16 __attribute__((vector_size(64)));

__attribute__((target("avx2,fma"))) void cell_avx2(const float* gates, const float* c, int64_t rows, int64_t h,
                                                   float* h_out, float* c_out) {
  cell_impl<Float8, Int8>(gates, c, rows, h, h_out, c_out);
}

__attribute__((target("avx512f"))) void cell_avx512(const float* gates, const float* c, int64_t rows, int64_t h,
                                                    float* h_out, float* c_out) {
  cell_impl<Float16, Int16>(gates, c, rows, h, h_out, c_out);
}
#else
#define DKP_HAVE_X86_CELL 0
#endif

using CellFn = void (*)(const float*, const float*, int64_t, int64_t, float*, float*);

#if !DKP_HAVE_X86_CELL
constexpr CellFn cell_avx512 = nullptr, cell_avx2 = nullptr;
#endif

const IsaKernel<CellFn>& kernel() {
  static const IsaKernel<CellFn> k = pick_isa_kernel<CellFn>(cell_avx512, cell_avx2, cell_generic);
  return k;
}

}  // namespace

void lstm_cell(const float* gates, const float* c, int64_t rows, int64_t h, float* h_out, float* c_out) {
  if (rows > 0 && h > 0) kernel().fn(gates, c, rows, h, h_out, c_out);
}

const char* lstm_cell_isa() { return kernel().isa; }

}  // namespace dkp
