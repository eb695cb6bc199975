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

// out[r, :width] (+)= sum_k a[r, k] * m[k, :width] for R rows and VB vectors of V: R * VB accumulators.
template <typename V, int R, int VB>
DKP_ALWAYS_INLINE void block(const float* a, int64_t lda, int64_t k_len, const float* m, int64_t ldm, float* out,
                             int64_t ldo) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  V acc[R][VB];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < VB; ++v) acc[r][v] = V{};
  }
  for (int64_t k = 0; k < k_len; ++k) {
    V mv[VB];
    for (int v = 0; v < VB; ++v) std::memcpy(&mv[v], m + k * ldm + v * kLanes, sizeof(V));
    for (int r = 0; r < R; ++r) {
      const float s = a[r * lda + k];
      for (int v = 0; v < VB; ++v) acc[r][v] += s * mv[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < VB; ++v) std::memcpy(out + r * ldo + v * kLanes, &acc[r][v], sizeof(V));
  }
}

// out [rows, width] = a [rows, k_len] @ m [k_len, width]; width a multiple of the vector's lanes.
template <typename V, int R, int VB>
DKP_ALWAYS_INLINE void gemm(const float* a, int64_t lda, int64_t rows, int64_t k_len, const float* m, int64_t ldm,
                            int64_t width, float* out, int64_t ldo) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  for (int64_t c = 0; c < width; c += VB * kLanes) {
    const int64_t vectors = std::min<int64_t>(VB, (width - c) / kLanes);
    int64_t r = 0;
    for (; r + R <= rows; r += R) {
      const float* ar = a + r * lda;
      float* o = out + r * ldo + c;
      switch (vectors) {
        case 1: block<V, R, 1>(ar, lda, k_len, m + c, ldm, o, ldo); break;
        case 2: block<V, R, 2>(ar, lda, k_len, m + c, ldm, o, ldo); break;
        case 3: block<V, R, (VB >= 3 ? 3 : 1)>(ar, lda, k_len, m + c, ldm, o, ldo); break;
        default: block<V, R, VB>(ar, lda, k_len, m + c, ldm, o, ldo); break;
      }
    }
    for (; r < rows; ++r) {
      const float* ar = a + r * lda;
      float* o = out + r * ldo + c;
      switch (vectors) {
        case 1: block<V, 1, 1>(ar, lda, k_len, m + c, ldm, o, ldo); break;
        case 2: block<V, 1, 2>(ar, lda, k_len, m + c, ldm, o, ldo); break;
        case 3: block<V, 1, (VB >= 3 ? 3 : 1)>(ar, lda, k_len, m + c, ldm, o, ldo); break;
        default: block<V, 1, VB>(ar, lda, k_len, m + c, ldm, o, ldo); break;
      }
    }
  }
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

template <typename V, int R, int VB>
DKP_ALWAYS_INLINE void kron_impl(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2,
                                 const float* x, int64_t batch, float* y) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  static_assert(VB == 2 || VB == 4, "the tail cases of gemm assume 2 or 4 vectors per block");
  // Per-thread scratch: one kernel object may run on several threads at once.
  thread_local std::vector<float> xs, t, ctp, u;
  const int64_t wp = round_up(batch * n2, kLanes), m2p = round_up(m2, kLanes);
  ctp.assign(static_cast<size_t>(n2 * m2p), 0.f);
  for (int64_t k = 0; k < n2; ++k) std::copy(ct + k * m2, ct + (k + 1) * m2, ctp.begin() + k * m2p);
  u.resize(static_cast<size_t>(m1 * m2p));
  if (n1 * m2 * (n2 + m1) < m1 * n2 * (n1 + m2)) {
    // C first has fewer MACs (and a scratch of batch * N1 * M2, where B first's would be batch * M1 * N2, as large as
    // a dense product for B [M, 1], C [1, N]): T = X @ C_T with X as [batch * N1, N2], then each B @ T_r
    t.resize(static_cast<size_t>(batch * n1 * m2p));
    gemm<V, R, VB>(x, n2, batch * n1, n2, ctp.data(), m2p, m2p, t.data(), m2p);
    for (int64_t r = 0; r < batch; ++r) {
      gemm<V, R, VB>(b, n1, m1, n1, t.data() + r * n1 * m2p, m2p, m2p, u.data(), m2p);
      float* yr = y + r * m1 * m2;
      for (int64_t i = 0; i < m1; ++i) {
        for (int64_t l = 0; l < m2; ++l) yr[i * m2 + l] += u[i * m2p + l];
      }
    }
    return;
  }
  xs.assign(static_cast<size_t>(n1 * wp), 0.f);  // xs[j, r * n2 + k] = X_r[j, k]: the batch side by side
  for (int64_t r = 0; r < batch; ++r) {
    for (int64_t j = 0; j < n1; ++j) {
      std::copy(x + (r * n1 + j) * n2, x + (r * n1 + j + 1) * n2, xs.begin() + j * wp + r * n2);
    }
  }
  t.resize(static_cast<size_t>(m1 * wp));
  gemm<V, R, VB>(b, n1, m1, n1, xs.data(), wp, wp, t.data(), wp);  // T = B @ xs
  for (int64_t r = 0; r < batch; ++r) {
    gemm<V, R, VB>(t.data() + r * n2, wp, m1, n2, ctp.data(), m2p, m2p, u.data(), m2p);  // T_r @ C_T
    float* yr = y + r * m1 * m2;
    for (int64_t i = 0; i < m1; ++i) {
      for (int64_t l = 0; l < m2; ++l) yr[i * m2 + l] += u[i * m2p + l];
    }
  }
}

typedef float Float4 __attribute__((vector_size(16)));

void kron_generic(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2, const float* x,
                  int64_t batch, float* y) {
  kron_impl<Float4, 2, 4>(b, m1, n1, ct, n2, m2, x, batch, y);  // 8 accumulators: SSE2 and NEON alike
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DKP_HAVE_X86_KRON 1
typedef float Float8 __attribute__((vector_size(32)));
typedef float Float16 __attribute__((vector_size(64)));

__attribute__((target("avx2,fma"))) void kron_avx2(const float* b, int64_t m1, int64_t n1, const float* ct,
                                                   int64_t n2, int64_t m2, const float* x, int64_t batch, float* y) {
  kron_impl<Float8, 4, 2>(b, m1, n1, ct, n2, m2, x, batch, y);  // 8 of the 16 ymm registers accumulate
}

__attribute__((target("avx512f"))) void kron_avx512(const float* b, int64_t m1, int64_t n1, const float* ct,
                                                    int64_t n2, int64_t m2, const float* x, int64_t batch, float* y) {
  kron_impl<Float16, 4, 4>(b, m1, n1, ct, n2, m2, x, batch, y);  // 16 of the 32 zmm registers accumulate
}
#else
#define DKP_HAVE_X86_KRON 0
#endif

using KronFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                        float*);

struct KronKernel {
  KronFn fn;
  const char* isa;
};

// The same level as the sparse kernels (csr_matmul_isa, which honours DKP_OPS_ISA).
KronKernel pick() {
#if DKP_HAVE_X86_KRON
  const char* isa = csr_matmul_isa();
  if (std::strncmp(isa, "avx512f", 7) == 0) return {kron_avx512, "avx512f"};
  if (std::strncmp(isa, "avx2", 4) == 0) return {kron_avx2, "avx2+fma"};
#endif
  return {kron_generic, "generic"};
}

const KronKernel& kernel() {
  static const KronKernel k = pick();
  return k;
}

}  // namespace

void kron_matmul(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2, const float* x,
                 int64_t batch, float* y) {
  if (batch == 0 || m1 == 0 || m2 == 0) return;
  if (n1 == 0 || n2 == 0) return;  // an empty X: the product is 0
  kernel().fn(b, m1, n1, ct, n2, m2, x, batch, y);
}

const char* kron_matmul_isa() { return kernel().isa; }

}  // namespace dkp
