// kron(B, C) @ x for the ai.dkp sparse ops' optional B and C_T inputs (see kron_matvec.h).
//
// Measured in onnxruntime on the 2600 x 1300 layer (B 52 x 65, C 50 x 20): the graph's Kronecker half (Reshape,
// MatMul, MatMul, Add, Reshape) cost 7.1 us at batch 1 and 36.7 us at batch 8 on top of the sparse node; most of it
// is per-node cost and onnxruntime broadcasting B over the batch as one small GEMM per row. Here the rows of X sit
// side by side, so B multiplies the whole batch in one product.
#include "kron_matvec.h"

#include <algorithm>
#include <cstring>
#include <vector>

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

template <typename V, typename H, int R, int VB>
DKP_ALWAYS_INLINE void kron_impl(const KronFactors::View& f, const float* x, int64_t batch, float* y) {
  const float* b = f.b;
  const float* ctp = f.ct_padded;
  const int64_t m1 = f.m1, n1 = f.n1, n2 = f.n2, m2 = f.m2, m2p = f.m2_padded;
  static_assert(KronFactors::kPad % (sizeof(H) / sizeof(float)) == 0, "widths are padded to whole vectors of H");
  // Per-thread scratch: one kernel object may run on several threads at once.
  thread_local std::vector<float> xs, t, u;
  const int64_t wp = round_up(batch * n2, KronFactors::kPad);
  u.resize(static_cast<size_t>(m1 * m2p));
  // The order with fewer multiply-adds, counting the padding of each product's width (in double: no overflow)
  const double rows = static_cast<double>(batch);
  const double c_first = rows * static_cast<double>(n1) * static_cast<double>(m2p) * static_cast<double>(n2 + m1);
  const double b_first = static_cast<double>(m1) * (static_cast<double>(n1) * static_cast<double>(wp) +
                                                    rows * static_cast<double>(n2) * static_cast<double>(m2p));
  if (c_first < b_first) {
    // C first (and a scratch of batch * N1 * M2, where B first's would be batch * M1 * N2, as large as a dense
    // product for B [M, 1], C [1, N]): T = X @ C_T with X as [batch * N1, N2], then each B @ T_r
    t.resize(static_cast<size_t>(batch * n1 * m2p));
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
  for (int64_t r = 0; r < batch; ++r) {
    gemm<V, H, R, VB>(t.data() + r * n2, wp, m1, n2, ctp, m2p, m2p, u.data(), m2p);  // T_r @ C_T
    float* yr = y + r * m1 * m2;
    for (int64_t i = 0; i < m1; ++i) {
      for (int64_t l = 0; l < m2; ++l) yr[i * m2 + l] += u[i * m2p + l];
    }
  }
}

typedef float Float4 __attribute__((vector_size(16)));

void kron_generic(const KronFactors::View& f, const float* x, int64_t batch, float* y) {
  kron_impl<Float4, Float4, 2, 4>(f, x, batch, y);  // 8 accumulators: SSE2 and NEON alike
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
#else
#define DKP_HAVE_X86_KRON 0
#endif

using KronFn = void (*)(const KronFactors::View&, const float*, int64_t, float*);

#if !DKP_HAVE_X86_KRON
constexpr KronFn kron_avx512 = nullptr, kron_avx2 = nullptr;
#endif

const IsaKernel<KronFn>& kernel() {
  static const IsaKernel<KronFn> k = pick_isa_kernel<KronFn>(kron_avx512, kron_avx2, kron_generic);
  return k;
}

}  // namespace

KronFactors::KronFactors(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2)
    : b_(b, b + m1 * n1), m1_(m1), n1_(n1), n2_(n2), m2_(m2), m2_padded_(round_up(m2, kPad)) {
  ct_padded_.assign(static_cast<size_t>(n2 * m2_padded_), 0.f);
  for (int64_t k = 0; k < n2; ++k) std::copy(ct + k * m2, ct + (k + 1) * m2, ct_padded_.begin() + k * m2_padded_);
}

void KronFactors::matmul(const float* x, int64_t batch, float* y) const {
  if (batch == 0 || m1_ == 0 || m2_ == 0) return;
  if (n1_ == 0 || n2_ == 0) return;  // an empty X: the product is 0
  kernel().fn(View{b_.data(), ct_padded_.data(), m1_, n1_, n2_, m2_, m2_padded_}, x, batch, y);
}

void kron_matmul(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2, const float* x,
                 int64_t batch, float* y) {
  KronFactors(b, m1, n1, ct, n2, m2).matmul(x, batch, y);
}

const char* kron_matmul_isa() { return kernel().isa; }

}  // namespace dkp
