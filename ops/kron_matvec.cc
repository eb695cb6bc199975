// kron(B, C) @ x for the ai.dkp sparse ops' optional B and C_T inputs (see kron_matvec.h).
//
// Measured in onnxruntime on the 2600 x 1300 layer (B 52 x 65, C 50 x 20): the graph's Kronecker half (Reshape,
// MatMul, MatMul, Add, Reshape) cost 7.1 us at batch 1 and 36.7 us at batch 8 on top of the sparse node; most of it
// is per-node cost and onnxruntime broadcasting B over the batch as one small GEMM per row. Here the rows of X sit
// side by side, so B multiplies the whole batch in one product.
#include "kron_matvec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "sparse_matvec.h"

#define DKP_ALWAYS_INLINE inline __attribute__((always_inline))

namespace dkp {
namespace {

// out[r, :width] = sum_k a[r, k] * m[k, :width] for R rows, VB vectors of V and (Tail) one vector of H: width =
// VB * lanes(V) + Tail * lanes(H).
template <typename V, typename H, int R, int VB, bool Tail>
DKP_ALWAYS_INLINE void block(const float* a, int64_t lda, int64_t k_len, const float* m, int64_t ldm, float* out,
                             int64_t ldo) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  V acc[R][VB > 0 ? VB : 1];
  H tail[R];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < VB; ++v) acc[r][v] = V{};
    tail[r] = H{};
  }
  for (int64_t k = 0; k < k_len; ++k) {
    V mv[VB > 0 ? VB : 1];
    H mh{};
    for (int v = 0; v < VB; ++v) std::memcpy(&mv[v], m + k * ldm + v * kLanes, sizeof(V));
    if (Tail) std::memcpy(&mh, m + k * ldm + VB * kLanes, sizeof(H));
    for (int r = 0; r < R; ++r) {
      const float s = a[r * lda + k];
      for (int v = 0; v < VB; ++v) acc[r][v] += s * mv[v];
      if (Tail) tail[r] += s * mh;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < VB; ++v) std::memcpy(out + r * ldo + v * kLanes, &acc[r][v], sizeof(V));
    if (Tail) std::memcpy(out + r * ldo + VB * kLanes, &tail[r], sizeof(H));
  }
}

// One block of R rows over `vectors` vectors of V and `tail` vectors of H (0 or 1).
template <typename V, typename H, int R, int VB>
DKP_ALWAYS_INLINE void block_of(int vectors, bool tail, const float* a, int64_t lda, int64_t k_len, const float* m,
                                int64_t ldm, float* out, int64_t ldo) {
  static_assert(VB == 2 || VB == 4, "the cases below assume 2 or 4 vectors per block");
  constexpr int k3 = VB >= 3 ? 3 : 1;
  switch (vectors * 2 + (tail ? 1 : 0)) {
    case 1: block<V, H, R, 0, true>(a, lda, k_len, m, ldm, out, ldo); break;
    case 2: block<V, H, R, 1, false>(a, lda, k_len, m, ldm, out, ldo); break;
    case 3: block<V, H, R, 1, true>(a, lda, k_len, m, ldm, out, ldo); break;
    case 4: block<V, H, R, 2, false>(a, lda, k_len, m, ldm, out, ldo); break;
    case 5: block<V, H, R, 2, true>(a, lda, k_len, m, ldm, out, ldo); break;
    case 6: block<V, H, R, k3, false>(a, lda, k_len, m, ldm, out, ldo); break;
    case 7: block<V, H, R, k3, true>(a, lda, k_len, m, ldm, out, ldo); break;
    default: block<V, H, R, VB, false>(a, lda, k_len, m, ldm, out, ldo); break;
  }
}

// out [rows, width] = a [rows, k_len] @ m [k_len, width]; width a multiple of H's lanes (H: V, or a vector of half
// its lanes, where the CPU runs one in half the time: AVX-512 on Zen 4 splits a zmm FMA in two ymm halves, so a
// 20-column product costs 1.5 zmm FMAs per row and k instead of 2).
template <typename V, typename H, int R, int VB>
DKP_ALWAYS_INLINE void gemm(const float* a, int64_t lda, int64_t rows, int64_t k_len, const float* m, int64_t ldm,
                            int64_t width, float* out, int64_t ldo) {
  constexpr int kLanes = sizeof(V) / sizeof(float), kHalf = sizeof(H) / sizeof(float);
  for (int64_t c = 0; c < width; c += VB * kLanes) {
    const int64_t left = std::min<int64_t>(VB * kLanes, width - c);
    const int vectors = static_cast<int>(left / kLanes);
    const bool tail = kHalf < kLanes && left % kLanes != 0;
    int64_t r = 0;
    for (; r + R <= rows; r += R) {
      block_of<V, H, R, VB>(vectors, tail, a + r * lda, lda, k_len, m + c, ldm, out + r * ldo + c, ldo);
    }
    for (; r < rows; ++r) {
      block_of<V, H, 1, VB>(vectors, tail, a + r * lda, lda, k_len, m + c, ldm, out + r * ldo + c, ldo);
    }
  }
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// dst[0, n) = src[0, n) in whole vectors of V and single floats: a std::copy of a row this short became a call to
// memcpy per row, 0.25 us of the 20x layer's Kronecker half.
template <typename V>
DKP_ALWAYS_INLINE void copy_row(const float* src, int64_t n, float* dst) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    V v;
    std::memcpy(&v, src + i, sizeof(V));
    std::memcpy(dst + i, &v, sizeof(V));
  }
  for (; i < n; ++i) dst[i] = src[i];
}

// Y[r, :] += vec(T_r @ C_T) for r < batch, T = [T_0 ... T_batch-1] [m1, wp] (B @ X_r side by side)
template <typename V, typename H, int R, int VB>
DKP_ALWAYS_INLINE void kron_second(const KronFactors::View& f, const float* t, int64_t wp, int64_t batch, float* y) {
  thread_local std::vector<float> u;
  const int64_t m1 = f.m1, n2 = f.n2, m2 = f.m2, m2p = f.m2_padded;
  u.resize(static_cast<size_t>(m1 * m2p));
  for (int64_t r = 0; r < batch; ++r) {
    gemm<V, H, R, VB>(t + r * n2, wp, m1, n2, f.ct_padded, m2p, m2p, u.data(), m2p);  // T_r @ C_T
    float* yr = y + r * m1 * m2;
    for (int64_t i = 0; i < m1; ++i) {
      for (int64_t l = 0; l < m2; ++l) yr[i * m2 + l] += u[i * m2p + l];
    }
  }
}

// Whether B @ X first costs fewer multiply-adds than X @ C_T first, counting the padding of each product's width
// (in double: no overflow), wp = batch * N2 padded.
bool b_first(const KronFactors::View& f, int64_t batch, int64_t wp) {
  const double rows = static_cast<double>(batch), n1 = static_cast<double>(f.n1);
  const double n2 = static_cast<double>(f.n2), m1 = static_cast<double>(f.m1), m2p = static_cast<double>(f.m2_padded);
  const double c_first = rows * n1 * m2p * (n2 + m1);
  const double b_cost = m1 * (n1 * static_cast<double>(wp) + rows * n2 * m2p);
  return b_cost <= c_first;
}

template <typename V, typename H, int R, int VB>
DKP_ALWAYS_INLINE void kron_impl(const KronFactors::View& f, const float* x, int64_t batch, float* y) {
  const float* b = f.b;
  const float* ctp = f.ct_padded;
  const int64_t m1 = f.m1, n1 = f.n1, n2 = f.n2, m2 = f.m2, m2p = f.m2_padded;
  static_assert(KronFactors::kPad % (sizeof(H) / sizeof(float)) == 0, "widths are padded to whole vectors of H");
  // Per-thread scratch: one kernel object may run on several threads at once.
  thread_local std::vector<float> xs, t, u;
  const int64_t wp = round_up(batch * n2, KronFactors::kPad);
  if (!b_first(f, batch, wp)) {  // the order with fewer multiply-adds
    // C first (and a scratch of batch * N1 * M2, where B first's would be batch * M1 * N2, as large as a dense
    // product for B [M, 1], C [1, N]): T = X @ C_T with X as [batch * N1, N2], then each B @ T_r
    t.resize(static_cast<size_t>(batch * n1 * m2p));
    u.resize(static_cast<size_t>(m1 * m2p));
    gemm<V, H, R, VB>(x, n2, batch * n1, n2, ctp, m2p, m2p, t.data(), m2p);
    for (int64_t r = 0; r < batch; ++r) {
      gemm<V, H, R, VB>(b, n1, m1, n1, t.data() + r * n1 * m2p, m2p, m2p, u.data(), m2p);
      float* yr = y + r * m1 * m2;
      for (int64_t i = 0; i < m1; ++i) {
        for (int64_t l = 0; l < m2; ++l) yr[i * m2 + l] += u[i * m2p + l];
      }
    }
    return;
  }
  xs.assign(static_cast<size_t>(n1 * wp), 0.f);  // xs[j, r * n2 + k] = X_r[j, k]: the batch side by side
  for (int64_t r = 0; r < batch; ++r) {
    for (int64_t j = 0; j < n1; ++j) copy_row<V>(x + (r * n1 + j) * n2, n2, xs.data() + j * wp + r * n2);
  }
  t.resize(static_cast<size_t>(m1 * wp));
  gemm<V, H, R, VB>(b, n1, m1, n1, xs.data(), wp, wp, t.data(), wp);  // T = B @ xs
  kron_second<V, H, R, VB>(f, t.data(), wp, batch, y);
}

// B @ X_hat for matmul_quantized, B = diag(scale) @ Q, X_hat = x_scale * (xq - zero_point), the batch side by side
// (t [m1, wp]): on the integers, exact, each row scaled once. `vnni`: vpdpbusd (null: float32 products of the
// integers, which float32 holds exactly for N1 <= 518, so both give the same T).
using Stage1Fn = void (*)(const KronFactors::IntView&, int64_t m1, int64_t n1, int64_t n2, const uint8_t* xq,
                          int64_t batch, uint8_t zero_point, float x_scale, int64_t wp, float* t);

template <typename V, typename H, int R, int VB>
DKP_ALWAYS_INLINE void kron_quantized_impl(const KronFactors::View& f, const KronFactors::IntView& q,
                                           const float* q_float, Stage1Fn vnni, const uint8_t* xq, uint8_t zero_point,
                                           float x_scale, int64_t batch, float* y) {
  const int64_t m1 = f.m1, n1 = f.n1, n2 = f.n2;
  thread_local std::vector<float> xs, t;
  // whole zmm of int32 lanes for vpdpbusd; the float products only need whole vectors (at 20 columns 24, not 32:
  // a quarter of B @ X_hat's multiply-adds on AVX2 CPUs)
  const int64_t wp = round_up(batch * n2, vnni ? 16 : KronFactors::kPad);
  t.resize(static_cast<size_t>(m1 * wp));
  if (vnni) {
    vnni(q, m1, n1, n2, xq, batch, zero_point, x_scale, wp, t.data());
  } else {
    xs.assign(static_cast<size_t>(n1 * wp), 0.f);  // xs[j, r * n2 + k] = xq_r[j, k] - zero_point
    for (int64_t r = 0; r < batch; ++r) {
      for (int64_t j = 0; j < n1; ++j) {
        const uint8_t* src = xq + (r * n1 + j) * n2;
        float* dst = xs.data() + j * wp + r * n2;
        for (int64_t k = 0; k < n2; ++k) dst[k] = static_cast<float>(static_cast<int>(src[k]) - zero_point);
      }
    }
    gemm<V, H, R, VB>(q_float, n1, m1, n1, xs.data(), wp, wp, t.data(), wp);
    for (int64_t i = 0; i < m1; ++i) {
      const float s = q.scale[i] * x_scale;
      for (int64_t k = 0; k < wp; ++k) t[i * wp + k] *= s;
    }
  }
  kron_second<V, H, R, VB>(f, t.data(), wp, batch, y);
}

typedef float Float4 __attribute__((vector_size(16)));

void kron_generic(const KronFactors::View& f, const float* x, int64_t batch, float* y) {
  kron_impl<Float4, Float4, 2, 4>(f, x, batch, y);  // 8 accumulators: SSE2 and NEON alike
}

void kron_quantized_generic(const KronFactors::View& f, const KronFactors::IntView& q, const float* q_float,
                            Stage1Fn vnni, const uint8_t* xq, uint8_t zero_point, float x_scale, int64_t batch,
                            float* y) {
  kron_quantized_impl<Float4, Float4, 2, 4>(f, q, q_float, vnni, xq, zero_point, x_scale, batch, y);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DKP_HAVE_X86_KRON 1
typedef float Float8 __attribute__((vector_size(32)));
typedef float Float16 __attribute__((vector_size(64)));

__attribute__((target("avx2,fma"))) void kron_avx2(const KronFactors::View& f, const float* x, int64_t batch,
                                                   float* y) {
  kron_impl<Float8, Float8, 4, 2>(f, x, batch, y);  // 8 of the 16 ymm registers accumulate
}

__attribute__((target("avx512f"))) void kron_avx512(const KronFactors::View& f, const float* x, int64_t batch,
                                                    float* y) {
  // 16 zmm and 4 ymm of the 32 registers accumulate
  kron_impl<Float16, Float8, 4, 4>(f, x, batch, y);
}

__attribute__((target("avx2,fma"))) void kron_quantized_avx2(const KronFactors::View& f, const KronFactors::IntView& q,
                                                             const float* q_float, Stage1Fn vnni, const uint8_t* xq,
                                                             uint8_t zero_point, float x_scale, int64_t batch,
                                                             float* y) {
  kron_quantized_impl<Float8, Float8, 4, 2>(f, q, q_float, vnni, xq, zero_point, x_scale, batch, y);
}

__attribute__((target("avx512f"))) void kron_quantized_avx512(const KronFactors::View& f,
                                                              const KronFactors::IntView& q, const float* q_float,
                                                              Stage1Fn vnni, const uint8_t* xq, uint8_t zero_point,
                                                              float x_scale, int64_t batch, float* y) {
  kron_quantized_impl<Float16, Float8, 4, 4>(f, q, q_float, vnni, xq, zero_point, x_scale, batch, y);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's _mm512_cvtepi32_ps (_mm512_undefined_ps)
#endif
#define DKP_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

// R rows of T from row i, NV vectors of 16 columns from column 16 * v0: the 4 bytes of xs8 at each (group, column)
// are x's at rows 4g .. 4g + 3 of that column, one vpdpbusd with Q's 4 bytes of the group per lane.
template <int R, int NV>
DKP_VNNI_TARGET DKP_ALWAYS_INLINE void vnni_block(const KronFactors::IntView& q, const uint8_t* xs8, int64_t wp,
                                                  int64_t groups, int64_t i, int64_t v0, uint8_t zero_point,
                                                  float x_scale, float* t) {
  __m512i acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  }
  for (int64_t g = 0; g < groups; ++g) {
    __m512i xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_si512(xs8 + (g * wp + (v0 + v) * 16) * 4);
    for (int r = 0; r < R; ++r) {
      int32_t w;
      std::memcpy(&w, q.q + (i + r) * q.n1_padded + g * KronFactors::kGroup, sizeof w);
      const __m512i bw = _mm512_set1_epi32(w);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], xv[v], bw);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512i zp = _mm512_set1_epi32(static_cast<int32_t>(zero_point) * q.sum[i + r]);
    const __m512 s = _mm512_set1_ps(q.scale[i + r] * x_scale);
    for (int v = 0; v < NV; ++v) {
      const __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], zp));
      _mm512_storeu_ps(t + (i + r) * wp + (v0 + v) * 16, _mm512_mul_ps(sum, s));
    }
  }
}

template <int R>
DKP_VNNI_TARGET DKP_ALWAYS_INLINE void vnni_rows(const KronFactors::IntView& q, const uint8_t* xs8, int64_t wp,
                                                 int64_t groups, int64_t i, uint8_t zero_point, float x_scale,
                                                 float* t) {
  const int64_t vectors = wp / 16;
  for (int64_t v0 = 0; v0 < vectors; v0 += 4) {
    switch (std::min<int64_t>(4, vectors - v0)) {
      case 1: vnni_block<R, 1>(q, xs8, wp, groups, i, v0, zero_point, x_scale, t); break;
      case 2: vnni_block<R, 2>(q, xs8, wp, groups, i, v0, zero_point, x_scale, t); break;
      case 3: vnni_block<R, 3>(q, xs8, wp, groups, i, v0, zero_point, x_scale, t); break;
      default: vnni_block<R, 4>(q, xs8, wp, groups, i, v0, zero_point, x_scale, t); break;
    }
  }
}

DKP_VNNI_TARGET void kron_stage1_vnni(const KronFactors::IntView& q, int64_t m1, int64_t n1, int64_t n2,
                                      const uint8_t* xq, int64_t batch, uint8_t zero_point, float x_scale, int64_t wp,
                                      float* t) {
  constexpr int64_t kG = KronFactors::kGroup;
  const int64_t groups = q.n1_padded / kG;
  // xs8[(g * wp + r * n2 + k) * 4 + j % 4] = xq_r[j, k] for j in group g: each column's 4 rows of the group in
  // one int32 lane; rows past N1 (and columns past batch * N2) stay 0
  thread_local std::vector<uint8_t> xs8;
  xs8.assign(static_cast<size_t>(groups * wp * kG), 0);
  for (int64_t r = 0; r < batch; ++r) {
    for (int64_t j = 0; j < n1; ++j) {
      const uint8_t* src = xq + (r * n1 + j) * n2;
      uint8_t* dst = xs8.data() + ((j / kG) * wp + r * n2) * kG + j % kG;
      for (int64_t k = 0; k < n2; ++k) dst[k * kG] = src[k];
    }
  }
  int64_t i = 0;
  for (; i + 4 <= m1; i += 4) vnni_rows<4>(q, xs8.data(), wp, groups, i, zero_point, x_scale, t);
  for (; i < m1; ++i) vnni_rows<1>(q, xs8.data(), wp, groups, i, zero_point, x_scale, t);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#else
#define DKP_HAVE_X86_KRON 0
#endif

using KronFn = void (*)(const KronFactors::View&, const float*, int64_t, float*);
using KronQuantizedFn = void (*)(const KronFactors::View&, const KronFactors::IntView&, const float*, Stage1Fn,
                                 const uint8_t*, uint8_t, float, int64_t, float*);

#if !DKP_HAVE_X86_KRON
constexpr KronFn kron_avx512 = nullptr, kron_avx2 = nullptr;
constexpr KronQuantizedFn kron_quantized_avx512 = nullptr, kron_quantized_avx2 = nullptr;
#endif

const IsaKernel<KronFn>& kernel() {
  static const IsaKernel<KronFn> k = pick_isa_kernel<KronFn>(kron_avx512, kron_avx2, kron_generic);
  return k;
}

const IsaKernel<KronQuantizedFn>& quantized_kernel() {
  static const IsaKernel<KronQuantizedFn> k =
      pick_isa_kernel<KronQuantizedFn>(kron_quantized_avx512, kron_quantized_avx2, kron_quantized_generic);
  return k;
}

// vpdpbusd for B @ X_hat where the sparse ops' integer tiles run (AVX-512 VBMI + VNNI; DKP_OPS_ISA caps both)
Stage1Fn stage1_vnni() {
#if DKP_HAVE_X86_KRON
  static const Stage1Fn fn =
      std::strcmp(integer_tiles_isa(), "avx512vbmi+avx512vnni") == 0 ? kron_stage1_vnni : nullptr;
  return fn;
#else
  return nullptr;
#endif
}

// B = diag(scale) @ Q with Q int8, exactly (each B[i, k] == float32(Q[i, k] * scale[i])), as an int8 file's
// Cast + Mul computes it: the scale is max |B[i, :]| / 127 up to a float32 rounding, so its neighbours are tried too.
bool integer_rows(const float* b, int64_t m1, int64_t n1, std::vector<int8_t>* q, std::vector<float>* scale) {
  q->assign(static_cast<size_t>(m1 * n1), 0);
  scale->assign(static_cast<size_t>(m1), 1.f);
  for (int64_t i = 0; i < m1; ++i) {
    const float* row = b + i * n1;
    float peak = 0.f;
    for (int64_t k = 0; k < n1; ++k) {
      if (!std::isfinite(row[k])) return false;  // NaN or inf: the float path on X_hat keeps it (max() drops NaN)
      peak = std::max(peak, std::fabs(row[k]));
    }
    if (peak == 0.f) continue;  // a row of zeros: scale 1, Q 0
    bool found = false;
    float s = peak / 127.f;
    s = std::nextafter(std::nextafter(s, 0.f), 0.f);
    for (int attempt = 0; attempt < 5 && !found; ++attempt, s = std::nextafter(s, INFINITY)) {
      if (!(s > 0.f)) continue;
      found = true;
      for (int64_t k = 0; k < n1 && found; ++k) {
        const float v = std::nearbyint(row[k] / s);
        found = std::fabs(v) <= 127.f && v * s == row[k];
        (*q)[i * n1 + k] = static_cast<int8_t>(found ? v : 0.f);
      }
      (*scale)[i] = s;
    }
    if (!found) return false;
  }
  return true;
}

}  // namespace

// Float32 products and sums of B's integers with X's (|Q| <= 127, |xq - zero_point| <= 255) are exact for up to
// this many terms: every partial sum stays below 2^24.
constexpr int64_t kMaxExactTerms = (int64_t{1} << 24) / (127 * 255);

KronFactors::KronFactors(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2)
    : b_(b, b + m1 * n1), m1_(m1), n1_(n1), n2_(n2), m2_(m2), m2_padded_(round_up(m2, kPad)) {
  ct_padded_.assign(static_cast<size_t>(n2 * m2_padded_), 0.f);
  for (int64_t k = 0; k < n2; ++k) std::copy(ct + k * m2, ct + (k + 1) * m2, ct_padded_.begin() + k * m2_padded_);
  std::vector<int8_t> q;
  if (m1 > 0 && n1 > 0 && n1 <= kMaxExactTerms && integer_rows(b, m1, n1, &q, &q_scale_)) {
    const int64_t n1p = round_up(n1, kGroup);
    q_.assign(static_cast<size_t>(m1 * n1p), 0);
    q_sum_.assign(static_cast<size_t>(m1), 0);
    q_float_.assign(q.begin(), q.end());  // for the float32 products, where there is no vpdpbusd
    for (int64_t i = 0; i < m1; ++i) {
      for (int64_t k = 0; k < n1; ++k) {
        q_[i * n1p + k] = q[i * n1 + k];
        q_sum_[i] += q[i * n1 + k];
      }
    }
  }
}

void KronFactors::matmul(const float* x, int64_t batch, float* y) const {
  if (batch == 0 || m1_ == 0 || m2_ == 0) return;
  if (n1_ == 0 || n2_ == 0) return;  // an empty X: the product is 0
  kernel().fn(view(), x, batch, y);
}

void KronFactors::matmul_quantized(const uint8_t* xq, uint8_t zero_point, float x_scale, int64_t batch,
                                   float* y) const {
  if (batch == 0 || m1_ == 0 || m2_ == 0 || n1_ == 0 || n2_ == 0) return;
  const View view = this->view();
  if (integer_b() && b_first(view, batch, round_up(batch * n2_, kPad))) {
    const int64_t n1p = round_up(n1_, kGroup);
    quantized_kernel().fn(view, IntView{q_.data(), q_scale_.data(), q_sum_.data(), n1p}, q_float_.data(),
                          stage1_vnni(), xq, zero_point, x_scale, batch, y);
    return;
  }
  thread_local std::vector<float> x_hat;
  const int64_t n = batch * n1_ * n2_;
  x_hat.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x_hat[i] = x_scale * static_cast<float>(static_cast<int>(xq[i]) - zero_point);
  matmul(x_hat.data(), batch, y);
}

void kron_matmul(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2, const float* x,
                 int64_t batch, float* y) {
  KronFactors(b, m1, n1, ct, n2, m2).matmul(x, batch, y);
}

const char* kron_matmul_isa() { return kernel().isa; }

}  // namespace dkp
