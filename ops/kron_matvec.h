// The Kronecker half of a doped W.x, kron(B, C) @ x = vec(B @ X @ C^T) with X = x reshaped row-major to [N1, N2],
// as the ai.dkp sparse ops compute it when given B and C_T: free of any onnxruntime type.
#pragma once

#include <cstdint>
#include <vector>

namespace dkp {

// The factors of one Kronecker half, kept in the layout its products read: B as given, C_T with its rows padded
// to whole vectors (kPad floats). Built once per constant B and C_T (at kernel creation), else once per call.
class KronFactors {
 public:
  static constexpr int64_t kPad = 8;  // every kernel's vector (or half vector) width divides it
  struct View {
    const float* b;
    const float* ct_padded;
    int64_t m1, n1, n2, m2, m2_padded;
  };
  // B's integers where B = diag(scale) @ Q exactly, Q int8 (int8 files' B after its Cast + Mul): Q with its rows
  // padded to whole groups of 4 columns (kGroup), each row's scale and the sum of its Q.
  struct IntView {
    const int8_t* q;
    const float* scale;
    const int32_t* sum;
    int64_t n1_padded;
  };
  static constexpr int64_t kGroup = 4;
  // b [m1, n1], ct [n2, m2] (C^T), both copied.
  KronFactors(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2);
  // Y[r, :] += vec(B @ X_r @ C_T) for r < batch, as kron_matmul.
  void matmul(const float* x, int64_t batch, float* y) const;
  // The same on the dequantized X_hat = x_scale * (xq - zero_point), xq uint8 [batch, n1 * n2]. Where B has int8
  // rows (integer_b) and B @ X goes first, that product runs on the integers (exact: vpdpbusd where the CPU has
  // AVX-512 VNNI, else float32 products of integers, exact for N1 <= 518), each row scaled once; else on X_hat.
  void matmul_quantized(const uint8_t* xq, uint8_t zero_point, float x_scale, int64_t batch, float* y) const;
  bool integer_b() const { return !q_.empty(); }

 private:
  View view() const { return View{b_.data(), ct_padded_.data(), m1_, n1_, n2_, m2_, m2_padded_}; }
  std::vector<float> b_, ct_padded_;
  std::vector<int8_t> q_;
  std::vector<float> q_float_, q_scale_;
  std::vector<int32_t> q_sum_;
  int64_t m1_, n1_, n2_, m2_, m2_padded_;
};

// Y[r, :] += vec(B @ X_r @ C_T) for r < batch: x [batch, n1 * n2] row-major, b [m1, n1], ct [n2, m2] (C^T),
// y [batch, m1 * m2], through a KronFactors built for this call. Two small GEMMs per call, in the order with fewer
// MACs (padding counted): T = B @ [X_0 ... X_batch-1] (the rows of X side by side, one product for the whole
// batch), then each T_r @ C_T; or X @ C_T first (X as [batch * n1, n2]), then each B @ T_r. In register blocks of
// rows x vectors (AVX-512 or AVX2+FMA where the CPU has them, else the baseline vectors), float32 accumulation.
void kron_matmul(const float* b, int64_t m1, int64_t n1, const float* ct, int64_t n2, int64_t m2, const float* x,
                 int64_t batch, float* y);

// Which vectors kron_matmul uses on this CPU ("avx512f", "avx2+fma" or "generic"; DKP_OPS_ISA caps it like the
// sparse kernels).
const char* kron_matmul_isa();

}  // namespace dkp
