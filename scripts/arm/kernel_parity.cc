// Parity of the product kernels, compiled into one program with ops/sparse_matvec.cc (scripts/arm/kernel_parity.sh
// cross-compiles it for aarch64 and runs it under qemu): every path csr_matmul can take is compared with a float64
// product written here. The ONNX models of `make arm-check` feed 2 or more rows, so they never reach the batch-1
// SELL-8 kernels (float and int8 values); this program covers every path:
// batch 1 (SELL-8 float, SELL-8 int8, CSR), 2-4 (width 4), 5-8 (width 8), 9-16 (width 16), 17 and 33 (several
// blocks, a last block of one row), with Y0, empty rows, explicit zeros, densities 1%-100%; IntegerEll (uint8 x with a
// zero point, integer tiles where the CPU has them: 1 to 9 rows of x); and kron_matmul (the ops' Kronecker half).
// Exit status 0 when every element is within 1e-5 of the sum of |terms| (+1e-6), else 1.
#include "kron_matvec.cc"
#include "sparse_matvec.cc"  // the kernels live in an anonymous namespace: one translation unit

#include <cmath>
#include <cstdio>
#include <random>

// Counts products, elements and mismatches (|got - ref| > 1e-5 * the sum of |terms| + 1e-6), printing the first few.
struct Tally {
  int64_t products = 0, checked = 0, bad = 0;
  template <typename Describe>
  void check(double got, double ref, double mag, Describe describe) {
    ++checked;
    if (std::fabs(got - ref) <= 1e-5 * mag + 1e-6) return;
    if (bad++ < 5) {
      describe();
      std::printf(": %.9g, float64 %.9g\n", got, ref);
    }
  }
};

int main() {
  using dkp::Csr;
  using dkp::SlicedEll;
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  const double densities[] = {0.01, 0.05, 0.3, 1.0};
  Tally tally;
  for (int trial = 0; trial < 40; ++trial) {
    const int m = 1 + static_cast<int>(gen() % 300), n = 1 + static_cast<int>(gen() % 200);
    std::bernoulli_distribution keep(densities[trial % 4]);
    std::vector<int32_t> rp{0}, ci;
    std::vector<float> v, scale(static_cast<size_t>(m));
    std::vector<int8_t> q;
    for (int i = 0; i < m; ++i) {
      scale[i] = 1e-3f + static_cast<float>(gen() % 100) * 1e-4f;
      if (gen() % 5 != 0) {  // a fifth of the rows empty
        for (int j = 0; j < n; ++j) {
          if (!keep(gen)) continue;
          ci.push_back(j);
          v.push_back(gen() % 50 == 0 ? 0.f : uni(gen));  // some explicit zeros
          q.push_back(static_cast<int8_t>(static_cast<int>(gen() % 255) - 127));
        }
      }
      rp.push_back(static_cast<int32_t>(ci.size()));
    }
    Csr w;
    int64_t min_cols = 0;
    const std::string err = dkp::check_csr(rp.data(), static_cast<int64_t>(rp.size()), ci.data(),
                                           static_cast<int64_t>(ci.size()), v.data(),
                                           static_cast<int64_t>(v.size()), &w, &min_cols);
    if (!err.empty()) {
      std::printf("kernel_parity: check_csr refused a valid CSR: %s\n", err.c_str());
      return 2;
    }
    const SlicedEll ell_f32(w, min_cols), ell_i8(w, min_cols, q.data(), scale.data());
    std::vector<float> deq(v.size());  // what SparseMatVecInt8 multiplies at batch > 1
    for (int i = 0; i < m; ++i) {
      for (int k = rp[i]; k < rp[i + 1]; ++k) deq[k] = scale[i] * q[k];
    }
    Csr wq = w;
    wq.values = deq.data();
    const dkp::IntegerEll iell(w, min_cols, q.data(), scale.data());
    for (int batch : {1, 2, 3, 4, 5, 9}) {
      std::vector<uint8_t> xq(static_cast<size_t>(batch) * n);
      for (uint8_t& e : xq) e = static_cast<uint8_t>(gen() % 256);
      const uint8_t zp = static_cast<uint8_t>(gen() % 256);
      const float xs = 0.01f + static_cast<float>(gen() % 100) * 1e-3f;
      std::vector<float> y0(static_cast<size_t>(batch) * m), y(static_cast<size_t>(batch) * m);
      for (float& e : y0) e = uni(gen);
      if (batch == 1) {
        iell.matvec(xq.data(), zp, xs, y0.data(), y.data());
      } else {
        iell.matmul(xq.data(), batch, n, zp, xs, y0.data(), false, y.data());
      }
      ++tally.products;
      for (int r = 0; r < batch; ++r) {
        for (int i = 0; i < m; ++i) {
          double ref = y0[static_cast<size_t>(r) * m + i], mag = std::fabs(ref);
          for (int k = rp[i]; k < rp[i + 1]; ++k) {
            const int xv = xq[static_cast<size_t>(r) * n + ci[k]];
            const double t = static_cast<double>(deq[k]) * xs * (xv - zp);
            ref += t;
            mag += std::fabs(t);
          }
          tally.check(y[static_cast<size_t>(r) * m + i], ref, mag,
                      [&] { std::printf("MISMATCH m=%d n=%d integer batch %d row %d", m, n, batch, i); });
        }
      }
    }
    for (int batch : {1, 2, 3, 4, 5, 8, 9, 12, 16, 17, 33}) {
      std::vector<float> x(static_cast<size_t>(batch) * n), y0(static_cast<size_t>(batch) * m),
          y(static_cast<size_t>(batch) * m);
      for (float& e : x) e = uni(gen);
      for (float& e : y0) e = uni(gen);
      for (int mode = 0; mode < 3; ++mode) {  // 0: float values via SELL-8, 1: int8 via SELL-8, 2: CSR only
        const Csr& ww = mode == 1 ? wq : w;
        const SlicedEll* ell = mode == 0 ? &ell_f32 : mode == 1 ? &ell_i8 : nullptr;
        dkp::csr_matmul(ww, ell, x.data(), batch, n, mode == 2 ? nullptr : y0.data(), false, y.data());
        ++tally.products;
        for (int r = 0; r < batch; ++r) {
          for (int i = 0; i < m; ++i) {
            double ref = mode == 2 ? 0.0 : y0[static_cast<size_t>(r) * m + i], mag = std::fabs(ref);
            for (int k = rp[i]; k < rp[i + 1]; ++k) {
              const double t = static_cast<double>(mode == 1 ? deq[k] : v[k]) * x[static_cast<size_t>(r) * n + ci[k]];
              ref += t;
              mag += std::fabs(t);
            }
            tally.check(y[static_cast<size_t>(r) * m + i], ref, mag, [&] {
              std::printf("MISMATCH m=%d n=%d batch=%d %s row %d of x %d", m, n, batch,
                          mode == 0 ? "float SELL" : mode == 1 ? "int8 SELL" : "CSR", i, r);
            });
          }
        }
      }
    }
  }
  for (int trial = 0; trial < 60; ++trial) {  // the Kronecker half: y += vec(B @ X_r @ C^T), both orders of products
    const int m1 = 1 + static_cast<int>(gen() % 40), n1 = 1 + static_cast<int>(gen() % 40);
    const int m2 = 1 + static_cast<int>(gen() % 40), n2 = 1 + static_cast<int>(gen() % 40);
    const int batch = 1 + static_cast<int>(gen() % 9);
    std::vector<float> b(static_cast<size_t>(m1) * n1), ct(static_cast<size_t>(n2) * m2),
        x(static_cast<size_t>(batch) * n1 * n2), y(static_cast<size_t>(batch) * m1 * m2);
    for (float& e : b) e = uni(gen);
    for (float& e : ct) e = uni(gen);
    for (float& e : x) e = uni(gen);
    for (float& e : y) e = uni(gen);
    const std::vector<float> y0 = y;
    dkp::kron_matmul(b.data(), m1, n1, ct.data(), n2, m2, x.data(), batch, y.data());
    ++tally.products;
    for (int r = 0; r < batch; ++r) {
      for (int i = 0; i < m1; ++i) {
        for (int l = 0; l < m2; ++l) {
          const size_t at = (static_cast<size_t>(r) * m1 + i) * m2 + l;
          double ref = y0[at], mag = std::fabs(ref);
          for (int j = 0; j < n1; ++j) {
            for (int k = 0; k < n2; ++k) {
              const double t = static_cast<double>(b[static_cast<size_t>(i) * n1 + j]) *
                               x[(static_cast<size_t>(r) * n1 + j) * n2 + k] * ct[static_cast<size_t>(k) * m2 + l];
              ref += t;
              mag += std::fabs(t);
            }
          }
          tally.check(y[at], ref, mag,
                      [&] { std::printf("MISMATCH kron %dx%d, %dx%d batch %d", m1, n1, m2, n2, batch); });
        }
      }
    }
  }
  std::printf("kernel_parity (%s kernels, integer tiles %s, kron %s): %lld products, %lld elements, %lld mismatches\n",
              dkp::csr_matmul_isa(), dkp::integer_tiles_isa(), dkp::kron_matmul_isa(),
              static_cast<long long>(tally.products), static_cast<long long>(tally.checked),
              static_cast<long long>(tally.bad));
  return tally.bad == 0 ? 0 : 1;
}
