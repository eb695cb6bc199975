// Helpers on GCC / Clang vector extensions, shared by the kernels written once for every ISA (lstm_cell.cc,
// dynamic_quantize.cc): V float32 lanes, I int32 lanes of the same width. They take and give vectors by reference:
// passed by value, a vector wider than the baseline's would change the ABI of a function compiled without its ISA
// (GCC warns), though every helper is inlined.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define DKP_VEC_INLINE inline __attribute__((always_inline))
#else
#define DKP_VEC_INLINE inline
#endif

namespace dkp {
namespace vec {

// b = mask ? a : b (comparisons of V give I masks; a cast between V and I keeps the bits)
template <class V, class I>
DKP_VEC_INLINE void select(const I& mask, const V& a, V& b) {
  b = (V)(((I)a & mask) | ((I)b & ~mask));
}

// x clamped to [lo, hi] with NaN kept (a comparison with NaN is false, so NaN falls through both selects)
template <class V, class I>
DKP_VEC_INLINE void clamp(V& x, float lo, float hi) {
  select<V, I>(x < lo, V{} + lo, x);
  select<V, I>(x > hi, V{} + hi, x);
}

template <class V>
DKP_VEC_INLINE void load(V& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}

// 1.5 * 2^23: for |x| < 2^22, (x + kRoundMagic) - kRoundMagic is x rounded to an integer in the current rounding
// mode (to nearest, ties to even), and the low mantissa bits of x + kRoundMagic hold that integer
constexpr float kRoundMagic = 12582912.f;

}  // namespace vec
}  // namespace dkp
