// CSR checks and the CSR x dense product of ai.dkp::SparseMatVec.
//
// The product is bound by streaming W (a 4-byte value + a 4-byte column per non-zero) and by one load of x per
// non-zero, so each kernel reads W exactly once per call: at batch 1 slice by slice (SlicedEll, for constant W) or
// row by row (CSR), at batch > 1 against a transposed block of up to 16 rows of X, so one column index fetches the
// matching entries of all those rows in one contiguous vector load.
// On x86-64 AVX2+FMA variants (and AVX-512F register tiles for batch 1) are chosen at run time; the portable build
// flags stay baseline.
#include "sparse_matvec.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DKP_HAVE_AVX2_PATH 1
#include <immintrin.h>
#else
#define DKP_HAVE_AVX2_PATH 0
#endif

#define DKP_ALWAYS_INLINE inline __attribute__((always_inline))

namespace dkp {

std::string check_csr(const int32_t* row_ptr, int64_t row_ptr_len, const int32_t* col_idx, int64_t col_len,
                      const float* values, int64_t values_len, Csr* csr, int64_t* min_cols) {
  if (row_ptr_len < 1) return "input 'row_ptr' must hold M + 1 >= 1 entries, got an empty tensor";
  if (row_ptr[0] != 0) return "input 'row_ptr' must start at 0, got row_ptr[0] = " + std::to_string(row_ptr[0]);
  const int64_t rows = row_ptr_len - 1;
  for (int64_t i = 0; i < rows; ++i) {
    if (row_ptr[i + 1] < row_ptr[i]) {
      return "input 'row_ptr' must be non-decreasing, got row_ptr[" + std::to_string(i) +
             "] = " + std::to_string(row_ptr[i]) + " > row_ptr[" + std::to_string(i + 1) +
             "] = " + std::to_string(row_ptr[i + 1]);
    }
  }
  const int64_t nnz = row_ptr[rows];
  if (nnz != col_len) {
    return "input 'col_idx' must hold row_ptr[M] = " + std::to_string(nnz) + " entries, got " +
           std::to_string(col_len);
  }
  if (nnz != values_len) {
    return "input 'values' must hold row_ptr[M] = " + std::to_string(nnz) + " entries, got " +
           std::to_string(values_len);
  }
  int32_t lo = 0, hi = -1;
  for (int64_t k = 0; k < nnz; ++k) {
    lo = std::min(lo, col_idx[k]);
    hi = std::max(hi, col_idx[k]);
  }
  if (lo < 0) {
    const int64_t at = std::find_if(col_idx, col_idx + nnz, [](int32_t c) { return c < 0; }) - col_idx;
    return "input 'col_idx' must be >= 0, got col_idx[" + std::to_string(at) + "] = " + std::to_string(col_idx[at]);
  }
  csr->rows = rows;
  csr->nnz = nnz;
  csr->row_ptr = row_ptr;
  csr->col_idx = col_idx;
  csr->values = values;
  *min_cols = static_cast<int64_t>(hi) + 1;
  return "";
}

namespace {

// y[i] = W[i, :] . x (+ y0[i]); four accumulators hide the add latency, the scalar loads keep it portable.
DKP_ALWAYS_INLINE void spmv_scalar(const Csr& w, const float* x, const float* y0, float* y) {
  const int32_t* rp = w.row_ptr;
  const int32_t* ci = w.col_idx;
  const float* v = w.values;
  for (int64_t i = 0; i < w.rows; ++i) {
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    for (; k + 4 <= end; k += 4) {
      a0 += v[k] * x[ci[k]];
      a1 += v[k + 1] * x[ci[k + 1]];
      a2 += v[k + 2] * x[ci[k + 2]];
      a3 += v[k + 3] * x[ci[k + 3]];
    }
    for (; k < end; ++k) a0 += v[k] * x[ci[k]];
    const float s = (a0 + a1) + (a2 + a3);
    y[i] = y0 ? s + y0[i] : s;
  }
}

// Row i of W's sums for the nb rows of X in a block (acc[j] for row j of X) into Y (+ Y0).
DKP_ALWAYS_INLINE void store_block_row(const float* acc, int64_t nb, int64_t i, const float* y0, int64_t y0_stride,
                                       float* y, int64_t y_stride) {
  if (y0) {
    for (int64_t j = 0; j < nb; ++j) y[j * y_stride + i] = acc[j] + y0[j * y0_stride + i];
  } else {
    for (int64_t j = 0; j < nb; ++j) y[j * y_stride + i] = acc[j];
  }
}

// One block of up to Width rows of X, held transposed in xt ([n][Width], zero-padded): each non-zero of W
// multiplies Width contiguous floats, i.e. Width / lanes native vector FMAs. The accumulators are arrays of native
// vectors V (GCC/Clang vector extension): left to itself the compiler vectorises over the non-zeros instead, and
// wider-than-native vectors end up in memory.
template <typename V, int Width>
DKP_ALWAYS_INLINE void spmm_block(const Csr& w, const float* xt, int64_t nb, const float* y0, int64_t y0_stride,
                                  float* y, int64_t y_stride) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  constexpr int kChunks = Width / kLanes;
  static_assert(kChunks * kLanes == Width, "Width must be a multiple of the vector width");
  const int32_t* rp = w.row_ptr;
  const int32_t* ci = w.col_idx;
  const float* v = w.values;
  // Enough independent accumulator chains (>= 4 vector FMAs in flight) to hide the FMA latency.
  constexpr int kChains = kChunks >= 4 ? 1 : 4 / kChunks;
  for (int64_t i = 0; i < w.rows; ++i) {
    V a[kChains][kChunks];
    for (int u = 0; u < kChains; ++u) {
      for (int c = 0; c < kChunks; ++c) a[u][c] = V{};
    }
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    for (; k + kChains <= end; k += kChains) {
      for (int u = 0; u < kChains; ++u) {
        const float* xr = xt + static_cast<int64_t>(ci[k + u]) * Width;
        for (int c = 0; c < kChunks; ++c) {
          V t;
          std::memcpy(&t, xr + c * kLanes, sizeof(V));
          a[u][c] += v[k + u] * t;
        }
      }
    }
    for (; k < end; ++k) {
      const float* xr = xt + static_cast<int64_t>(ci[k]) * Width;
      for (int c = 0; c < kChunks; ++c) {
        V t;
        std::memcpy(&t, xr + c * kLanes, sizeof(V));
        a[0][c] += v[k] * t;
      }
    }
    float acc[Width];
    if constexpr (kChains == 1) {
      // A lone chain (only the portable width-16 kernel: 4 chunks of 4 lanes) is copied out by value: a memcpy from
      // a[0] itself took its address, and GCC 12 then kept all 4 accumulators in memory, a load and a store each per
      // non-zero (NEON and SSE2 alike; 12 -> 6 cycles per non-zero in llvm-mca's Cortex-A72 estimate, docs/arm.md).
      V out[kChunks];
      for (int c = 0; c < kChunks; ++c) out[c] = a[0][c];
      std::memcpy(acc, out, sizeof(out));
    } else {
      for (int c = 0; c < kChunks; ++c) {
        V s = a[0][c];
        for (int u = 1; u < kChains; ++u) s += a[u][c];
        std::memcpy(acc + c * kLanes, &s, sizeof(V));
      }
    }
    store_block_row(acc, nb, i, y0, y0_stride, y, y_stride);
  }
}

typedef float Float4 __attribute__((vector_size(16)));  // SSE2 / NEON register

// out[j * width + i] = x[i * n + c0 + j] for rows i < 4 and columns j < 4 (one 4 x 4 transposition)
DKP_ALWAYS_INLINE void transpose4x4(const float* x, int64_t n, int64_t c0, float* out, int64_t width) {
#if defined(__clang__) || __GNUC__ >= 12  // __builtin_shufflevector
  Float4 a, b, c, d;
  std::memcpy(&a, x + c0, sizeof a);
  std::memcpy(&b, x + n + c0, sizeof b);
  std::memcpy(&c, x + 2 * n + c0, sizeof c);
  std::memcpy(&d, x + 3 * n + c0, sizeof d);
  const Float4 ab0 = __builtin_shufflevector(a, b, 0, 4, 1, 5), ab1 = __builtin_shufflevector(a, b, 2, 6, 3, 7);
  const Float4 cd0 = __builtin_shufflevector(c, d, 0, 4, 1, 5), cd1 = __builtin_shufflevector(c, d, 2, 6, 3, 7);
  const Float4 t[4] = {__builtin_shufflevector(ab0, cd0, 0, 1, 4, 5), __builtin_shufflevector(ab0, cd0, 2, 3, 6, 7),
                       __builtin_shufflevector(ab1, cd1, 0, 1, 4, 5), __builtin_shufflevector(ab1, cd1, 2, 3, 6, 7)};
  for (int j = 0; j < 4; ++j) std::memcpy(out + (c0 + j) * width, &t[j], sizeof(Float4));
#else
  for (int j = 0; j < 4; ++j) {
    for (int i = 0; i < 4; ++i) out[(c0 + j) * width + i] = x[i * n + c0 + j];
  }
#endif
}

// out[c * width + r] = x[r * n + c] for c < cols, r < width (zero for r >= nb): rows x[0 .. nb), nb <= width,
// width a multiple of 4.
void transpose_rows(const float* x, int64_t n, int64_t nb, int64_t cols, int64_t width, float* out) {
  for (int64_t r0 = 0; r0 < width; r0 += 4) {  // 4 lanes at a time: rows of X, then zeros past them
    int64_t c = 0;
    if (nb - r0 >= 4) {
      for (; c + 4 <= cols; c += 4) transpose4x4(x + r0 * n, n, c, out + r0, width);
    }
    for (; c < cols; ++c) {
      for (int64_t i = 0; i < 4; ++i) out[c * width + r0 + i] = r0 + i < nb ? x[(r0 + i) * n + c] : 0.f;
    }
  }
}

// Rows x[0 .. nb) (nb in 2..16) transposed to [n, width], width 4, 8 or 16 (lanes past nb zero).
void transpose_block(const float* x, int64_t nb, int64_t n, AlignedVector<float>* block) {
  const int64_t width = int64_t{4} << (nb <= 4 ? 0 : nb <= 8 ? 1 : 2);
  block->resize(static_cast<size_t>(n * width));  // every lane is written: no fill
  transpose_rows(x, n, nb, n, width, block->data());
}

// The 8 column indices at c, read as four 64-bit words where the byte order allows it.
DKP_ALWAYS_INLINE void column_pairs(const int32_t* c, uint32_t* out) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  for (int p = 0; p < 4; ++p) {
    uint64_t q;
    std::memcpy(&q, c + 2 * p, sizeof(q));
    out[2 * p] = static_cast<uint32_t>(q);
    out[2 * p + 1] = static_cast<uint32_t>(q >> 32);
  }
#else
  for (int p = 0; p < 8; ++p) out[p] = static_cast<uint32_t>(c[p]);
#endif
}
typedef float Float8 __attribute__((vector_size(32)));  // AVX register

using SpmvFn = void (*)(const Csr&, const float*, const float*, float*);
using SpmmFn = void (*)(const Csr&, const float*, int64_t, const float*, int64_t, float*, int64_t);
using SellFn = void (*)(const SellView&, const float*, const float*, float*);
using TileFn = void (*)(const TileView&, const float*, const float*, float*);
using TileRowsFn = void (*)(const TileView&, int64_t, int64_t, const float*, int64_t, float*, int64_t);
using SellRowsFn = void (*)(const SellView&, int64_t, int64_t, const float*, int64_t, const float*, int64_t, int64_t,
                            const float*, int64_t, float*, int64_t);
using IntTileFn = void (*)(const IntTileView&, const uint8_t*, uint8_t, float, const float*, float*);
using IntRowsFn = void (*)(const IntTileView&, const uint8_t*, int64_t, uint8_t, float*, int64_t);

struct Kernels {
  SpmvFn spmv;
  SpmmFn spmm[3];  // widths 4, 8, 16
  SellFn sell;
  TileFn tile[4];  // register tiles with 1..4 steps; null where the CPU has no AVX-512
  const char* isa;
  IntTileFn itile[3];  // integer tiles with 1..3 steps; null without AVX-512 VBMI + VNNI
  IntRowsFn itile_rows[3][4];  // the same for 1..4 rows of X at once ([steps - 1][rows - 1])
  bool pair_tiles = false;     // the integer tiles are PairTiles (AVX2), else IntTileView's AVX-512 layout
  TileRowsFn tile_rows[4][SlicedEll::kBatchRows] = {};  // register tiles for 1..5 rows of X ([steps - 1][rows - 1])
  SellRowsFn sell_rows = nullptr;  // SELL-8 for up to 8 rows of X, after the tiles
};

// The 8 sums of one SELL-8 slice go back to their rows (scaled by the row's scale for int8 values); lanes past
// the last row have no row.
DKP_ALWAYS_INLINE void store_slice(const int32_t* row_of, const float* out, const float* scale, const float* y0,
                                   float* y) {
  for (int r = 0; r < SellView::kSlice; ++r) {
    const int32_t row = row_of[r];
    if (row < 0) continue;
    const float s = scale ? out[r] * scale[row] : out[r];
    y[row] = y0 ? s + y0[row] : s;
  }
}

// Eight values of a SELL-8 step as two 4-lane vectors, from float or int8 storage.
DKP_ALWAYS_INLINE void load_values(const float* v, Float4* v0, Float4* v1) {
  std::memcpy(v0, v, sizeof(Float4));
  std::memcpy(v1, v + 4, sizeof(Float4));
}
#if defined(__clang__) || __GNUC__ >= 12  // __builtin_shufflevector
// int8: one 8-byte load; each byte is doubled twice (8 -> 16 -> 32 bits), so every 32-bit lane holds its byte in the
// top 8 bits (in either byte order); an arithmetic shift by 24 sign-extends it, then one vector convert. GCC 12 emits
// ldr d / zip1 / zip1 / zip2 / sshr / scvtf on NEON and movq / punpcklbw / punpck[lh]wd / psrad / cvtdq2ps on SSE2.
// A __builtin_convertvector straight from 4 int8 lanes came out as 8 scalar sign-extends and 8 scalar int -> float
// converts on both (the int8 SELL-8 step: 31 -> 26 cycles in llvm-mca's Cortex-A72 estimate, docs/arm.md).
typedef int8_t Int8x8 __attribute__((vector_size(8)));
typedef int16_t Int16x8 __attribute__((vector_size(16)));
typedef int32_t Int32x4 __attribute__((vector_size(16)));
DKP_ALWAYS_INLINE void load_values(const int8_t* v, Float4* v0, Float4* v1) {
  Int8x8 q;
  std::memcpy(&q, v, sizeof(q));
  const Int16x8 h = (Int16x8)__builtin_shufflevector(q, q, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const Int32x4 w0 = (Int32x4)__builtin_shufflevector(h, h, 0, 0, 1, 1, 2, 2, 3, 3);
  const Int32x4 w1 = (Int32x4)__builtin_shufflevector(h, h, 4, 4, 5, 5, 6, 6, 7, 7);
  *v0 = __builtin_convertvector(w0 >> 24, Float4);
  *v1 = __builtin_convertvector(w1 >> 24, Float4);
}
#else
typedef int8_t Int8x4 __attribute__((vector_size(4)));
DKP_ALWAYS_INLINE void load_values(const int8_t* v, Float4* v0, Float4* v1) {
  Int8x4 q0, q1;
  std::memcpy(&q0, v, sizeof(q0));
  std::memcpy(&q1, v + 4, sizeof(q1));
  *v0 = __builtin_convertvector(q0, Float4);
  *v1 = __builtin_convertvector(q1, Float4);
}
#endif

// Batch 1 on SELL-8 with baseline SIMD (SSE2 / NEON): two 4-lane accumulators per slice.
template <typename Val>
DKP_ALWAYS_INLINE void sell_generic_cols(const SellView& w, const int32_t* cols, const Val* vals, const float* xp,
                                         const float* y0, float* y) {
  constexpr int kSlice = SellView::kSlice;
  for (int64_t s = 0; s < w.slices; ++s) {
    Float4 a0 = {}, a1 = {};
    for (int64_t k = w.slice_start[s], end = w.slice_start[s + 1]; k < end; k += kSlice) {
      // Scalar loads of x beat hardware gathers here (AVX2 gathers ran 1.5x slower on the Zen 4 we measured);
      // columns are fetched two per load, which frees load slots for x.
      uint32_t j[kSlice];
      column_pairs(cols + k, j);
      const Float4 g0 = {xp[j[0]], xp[j[1]], xp[j[2]], xp[j[3]]};
      const Float4 g1 = {xp[j[4]], xp[j[5]], xp[j[6]], xp[j[7]]};
      Float4 v0, v1;
      load_values(vals + k, &v0, &v1);
      a0 += v0 * g0;
      a1 += v1 * g1;
    }
    float out[kSlice];
    std::memcpy(out, &a0, sizeof(Float4));
    std::memcpy(out + 4, &a1, sizeof(Float4));
    store_slice(w.row_of + s * kSlice, out, w.row_scale, y0, y);
  }
}

// One body per storage of the values (float or int8), chosen once per call.
#define DKP_SELL_DISPATCH(body, w, ...)                  \
  do {                                                   \
    if ((w).qvalues) {                                   \
      body((w), (w).cols, (w).qvalues, __VA_ARGS__);     \
    } else {                                             \
      body((w), (w).cols, (w).values, __VA_ARGS__);      \
    }                                                    \
  } while (0)

void sell_generic(const SellView& w, const float* xp, const float* y0, float* y) {
  DKP_SELL_DISPATCH(sell_generic_cols, w, xp, y0, y);
}

void spmv_generic(const Csr& w, const float* x, const float* y0, float* y) { spmv_scalar(w, x, y0, y); }

template <int Width>
void spmm_generic(const Csr& w, const float* xt, int64_t nb, const float* y0, int64_t y0s, float* y, int64_t ys) {
  spmm_block<Float4, Width>(w, xt, nb, y0, y0s, y, ys);
}

#if DKP_HAVE_AVX2_PATH
__attribute__((target("avx2,fma"))) DKP_ALWAYS_INLINE float hsum256(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Batch 1 with 8-wide gathers of x; the ragged end of each row goes through masked loads, which never touch memory
// past the row (so never past the arrays).
__attribute__((target("avx2,fma"))) void spmv_avx2(const Csr& w, const float* x, const float* y0, float* y) {
  const int32_t* rp = w.row_ptr;
  const int32_t* ci = w.col_idx;
  const float* v = w.values;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = 0; i < w.rows; ++i) {
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= end; k += 16) {
      const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + k));
      const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + k + 8));
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k), _mm256_i32gather_ps(x, c0, 4), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k + 8), _mm256_i32gather_ps(x, c1, 4), a1);
    }
    if (k + 8 <= end) {
      const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + k));
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k), _mm256_i32gather_ps(x, c0, 4), a0);
      k += 8;
    }
    if (k < end) {
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(end - k)), lane);
      const __m256i c = _mm256_maskload_epi32(ci + k, mask);
      const __m256 vv = _mm256_maskload_ps(v + k, mask);
      const __m256 g = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, c, _mm256_castsi256_ps(mask), 4);
      a1 = _mm256_fmadd_ps(vv, g, a1);
    }
    const float s = hsum256(_mm256_add_ps(a0, a1));
    y[i] = y0 ? s + y0[i] : s;
  }
}

// Batch 1 on SELL-8, one 8-lane FMA per step. A step is bound by its 13 loads and 37 instructions (0.7 cycle per
// non-zero on the Zen 4 here), not by bytes. Lanes 0-3 load x straight into a vector (vmovss / vinsertps), lanes
// 4-7 through general registers, paired into 64-bit words and moved over: that spreads the x loads over the
// integer and vector load paths and needs fewer shuffles; measured 3% faster than 8 vector-side loads and one FMA,
// 5% faster than sell_generic (docs/ops.md lists the variants that lost).
__attribute__((target("avx2,fma"))) DKP_ALWAYS_INLINE __m256 load_values8(const float* v) {
  return _mm256_loadu_ps(v);
}
__attribute__((target("avx2,fma"))) DKP_ALWAYS_INLINE __m256 load_values8(const int8_t* v) {
  int64_t q;
  std::memcpy(&q, v, sizeof(q));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(q)));
}

template <typename Val>
__attribute__((target("avx2,fma"))) DKP_ALWAYS_INLINE void sell_avx2_cols(const SellView& w, const int32_t* cols,
                                                                          const Val* vals, const float* xp,
                                                                          const float* y0, float* y) {
  constexpr int kSlice = SellView::kSlice;
  for (int64_t s = 0; s < w.slices; ++s) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = w.slice_start[s], end = w.slice_start[s + 1]; k < end; k += kSlice) {
      uint32_t j[kSlice];
      column_pairs(cols + k, j);
      const __m128 lo = _mm_setr_ps(xp[j[0]], xp[j[1]], xp[j[2]], xp[j[3]]);
      uint32_t b[4];  // bit patterns of x at columns j[4..7]
      for (int r = 0; r < 4; ++r) std::memcpy(&b[r], xp + j[4 + r], sizeof(float));
      const __m128i hi = _mm_unpacklo_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(b[0] | uint64_t{b[1]} << 32)),
                                            _mm_cvtsi64_si128(static_cast<int64_t>(b[2] | uint64_t{b[3]} << 32)));
      acc = _mm256_fmadd_ps(load_values8(vals + k), _mm256_set_m128(_mm_castsi128_ps(hi), lo), acc);
    }
    float out[kSlice];
    _mm256_storeu_ps(out, acc);
    store_slice(w.row_of + s * kSlice, out, w.row_scale, y0, y);
  }
}

__attribute__((target("avx2,fma"))) void sell_avx2(const SellView& w, const float* xp, const float* y0, float* y) {
  DKP_SELL_DISPATCH(sell_avx2_cols, w, xp, y0, y);
}

// Register tiles (see SlicedEll): per 16-row tile, per 32-column tile, x's 32 columns are loaded into two zmm
// registers once and each step looks up its 16 lanes' columns with one vpermt2ps (lanes without a non-zero are
// zeroed by the mask, so inf/NaN in x reach only rows that use the column); no load of x per non-zero. On the
// Zen 4 here a step costs ~3 of a SELL-8 non-zero's cost and a tile ~3.4 more: tiles pay where a row has about two
// or more non-zeros per 32 columns (SlicedEll's cost model). y[row] = tile sums (+ y0[row]) for every row.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's _mm512_cvtepu8_epi32 (_mm512_undefined_epi32)
#endif
__attribute__((target("avx512f"))) DKP_ALWAYS_INLINE __m512 load_values16(const float* v) {
  return _mm512_loadu_ps(v);
}
__attribute__((target("avx512f"))) DKP_ALWAYS_INLINE __m512 load_values16(const int8_t* v) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v))));
}

template <int Steps, typename Val>
__attribute__((target("avx512f"))) DKP_ALWAYS_INLINE void tile_avx512_values(const TileView& w, const Val* v,
                                                                             const float* xp, const float* y0,
                                                                             float* y) {
  constexpr int kRows = TileView::kRows;
  constexpr int kCols = TileView::kCols;
  const uint8_t* c = w.cols;
  const uint16_t* m = w.mask;
  for (int64_t t = 0; t < w.row_tiles; ++t) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();  // two chains: steps alternate
    for (int64_t b = 0; b < w.col_tiles; ++b) {
      const __m512 lo = _mm512_loadu_ps(xp + b * kCols), hi = _mm512_loadu_ps(xp + b * kCols + kRows);
      for (int j = 0; j < Steps; ++j) {
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
        const __m512 g = _mm512_maskz_permutex2var_ps(static_cast<__mmask16>(*m), lo, idx, hi);
        if (j & 1) {
          a1 = _mm512_fmadd_ps(load_values16(v), g, a1);
        } else {
          a0 = _mm512_fmadd_ps(load_values16(v), g, a0);
        }
        v += kRows;
        c += kRows;
        ++m;
      }
    }
    alignas(64) float out[kRows];
    _mm512_store_ps(out, _mm512_add_ps(a0, a1));
    const int64_t r0 = t * kRows;
    const int64_t nr = std::min<int64_t>(kRows, w.rows - r0);
    for (int64_t r = 0; r < nr; ++r) {
      const float s = w.row_scale ? out[r] * w.row_scale[r0 + r] : out[r];
      y[r0 + r] = y0 ? s + y0[r0 + r] : s;
    }
  }
}

template <int Steps>
__attribute__((target("avx512f"))) void tile_avx512(const TileView& w, const float* xp, const float* y0, float* y) {
  if (w.qvalues) {
    tile_avx512_values<Steps>(w, w.qvalues, xp, y0, y);
  } else {
    tile_avx512_values<Steps>(w, w.values, xp, y0, y);
  }
}

// The register tiles for R rows of X at once (R <= SlicedEll::kBatchRows; SlicedEll::matmul_part): each row's 32
// columns of a tile sit in two zmm registers, and a step's offsets, mask and values, loaded once, serve all R rows
// (R permutes and R FMAs per step, where R one-row passes would repeat the loads and the offsets' widening R
// times). Row tiles [t0, t1); part[r * ldp + row - 16 * t0] = the unscaled tile sums of row r of X.
template <int Steps, int R, typename Val>
__attribute__((target("avx512f"))) DKP_ALWAYS_INLINE void tile_rows_avx512_values(const TileView& w, const Val* v,
                                                                                  int64_t t0, int64_t t1,
                                                                                  const float* xz, int64_t ldx,
                                                                                  float* part, int64_t ldp) {
  constexpr int kRows = TileView::kRows;
  constexpr int kCols = TileView::kCols;
  const int64_t first_step = t0 * w.col_tiles * Steps;
  const uint8_t* c = w.cols + first_step * kRows;
  const uint16_t* m = w.mask + first_step;
  v += first_step * kRows;
  for (int64_t t = t0; t < t1; ++t) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < w.col_tiles; ++b) {
      __m512 lo[R], hi[R];
      for (int r = 0; r < R; ++r) {
        lo[r] = _mm512_loadu_ps(xz + r * ldx + b * kCols);
        hi[r] = _mm512_loadu_ps(xz + r * ldx + b * kCols + kRows);
      }
      for (int j = 0; j < Steps; ++j) {
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
        const __mmask16 mask = static_cast<__mmask16>(*m);
        const __m512 values = load_values16(v);
        for (int r = 0; r < R; ++r) {
          acc[r] = _mm512_fmadd_ps(values, _mm512_maskz_permutex2var_ps(mask, lo[r], idx, hi[r]), acc[r]);
        }
        v += kRows;
        c += kRows;
        ++m;
      }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(part + r * ldp + (t - t0) * kRows, acc[r]);
  }
}

template <int Steps, int R>
__attribute__((target("avx512f"))) void tile_rows_avx512(const TileView& w, int64_t t0, int64_t t1, const float* xz,
                                                         int64_t ldx, float* part, int64_t ldp) {
  if (w.qvalues) {
    tile_rows_avx512_values<Steps, R>(w, w.qvalues, t0, t1, xz, ldx, part, ldp);
  } else {
    tile_rows_avx512_values<Steps, R>(w, w.values, t0, t1, xz, ldx, part, ldp);
  }
}

// The SELL-8 rest of SlicedEll::matmul for up to 8 rows of X, slices [s0, s1): xt is X transposed ([column][8],
// row pad_col zero), each non-zero one 8-lane FMA into its row's accumulator; then each row of W gets its tile sums
// added (part[b * ldp + row - r0]), its scale and Y0: y[b * ys + row] for b < nb.
template <typename Val>
__attribute__((target("avx512f,fma"))) DKP_ALWAYS_INLINE void sell_rows_avx512_values(
    const SellView& w, const Val* vals, int64_t s0, int64_t s1, const float* xt, int64_t nb, const float* part,
    int64_t ldp, int64_t r0, const float* y0, int64_t y0s, float* y, int64_t ys) {
  constexpr int kSlice = SellView::kSlice;
  for (int64_t s = s0; s < s1; ++s) {
    __m256 acc[kSlice];
    for (int r = 0; r < kSlice; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t k = w.slice_start[s], end = w.slice_start[s + 1]; k < end; k += kSlice) {
      for (int r = 0; r < kSlice; ++r) {
        const __m256 xv = _mm256_loadu_ps(xt + static_cast<int64_t>(w.cols[k + r]) * kSlice);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(static_cast<float>(vals[k + r])), xv, acc[r]);
      }
    }
    alignas(32) float out[kSlice][kSlice];
    for (int r = 0; r < kSlice; ++r) _mm256_store_ps(out[r], acc[r]);
    for (int r = 0; r < kSlice; ++r) {
      const int32_t row = w.row_of[s * kSlice + r];
      if (row < 0) continue;
      for (int64_t b = 0; b < nb; ++b) {
        float v = part ? part[b * ldp + row - r0] + out[r][b] : out[r][b];
        if (w.row_scale) v *= w.row_scale[row];
        y[b * ys + row] = y0 ? v + y0[b * y0s + row] : v;
      }
    }
  }
}

__attribute__((target("avx512f,fma"))) void sell_rows_avx512(const SellView& w, int64_t s0, int64_t s1,
                                                             const float* xt, int64_t nb, const float* part,
                                                             int64_t ldp, int64_t r0, const float* y0, int64_t y0s,
                                                             float* y, int64_t ys) {
  if (w.qvalues) {
    sell_rows_avx512_values(w, w.qvalues, s0, s1, xt, nb, part, ldp, r0, y0, y0s, y, ys);
  } else {
    sell_rows_avx512_values(w, w.values, s0, s1, xt, nb, part, ldp, r0, y0, y0s, y, ys);
  }
}

// X^T's 8 floats of column c[0] in lanes 0-7 and of column c[1] in lanes 8-15.
__attribute__((target("avx512f,avx512dq,fma"))) DKP_ALWAYS_INLINE __m512 x_pair(const float* xt, const int32_t* c) {
  const __m512 lo = _mm512_castps256_ps512(_mm256_loadu_ps(xt + int64_t{8} * c[0]));
  return _mm512_insertf32x8(lo, _mm256_loadu_ps(xt + int64_t{8} * c[1]), 1);
}

// Blocks of 5 to 8 rows of X (xt [n][8]): two non-zeros per 16-lane FMA, lanes 0-7 the even one's 8 floats of X,
// lanes 8-15 the odd one's, its value in each half by one permute of 8 values loaded at once. Half the FMAs of the
// 8-lane loop and fewer loads per non-zero: 20x layer's W_s at batch 8, 83 -> 65 us in a C++ harness.
__attribute__((target("avx512f,avx512dq,fma"))) void spmm_avx512_8(const Csr& w, const float* xt, int64_t nb,
                                                              const float* y0, int64_t y0s, float* y, int64_t ys) {
  const int32_t* rp = w.row_ptr;
  const int32_t* ci = w.col_idx;
  const float* v = w.values;
  // value 2p in lanes 0-7, value 2p + 1 in lanes 8-15
  const __m512i pick[4] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                           _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
                           _mm512_set_epi32(5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4),
                           _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6)};
  for (int64_t i = 0; i < w.rows; ++i) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    for (; k + 8 <= end; k += 8) {
      const __m512 vals = _mm512_castps256_ps512(_mm256_loadu_ps(v + k));
      for (int p = 0; p < 4; ++p) {
        a[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pick[p], vals), x_pair(xt, ci + k + 2 * p), a[p]);
      }
    }
    const __m512 s = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
    __m256 sum = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    for (; k < end; ++k) sum = _mm256_fmadd_ps(_mm256_set1_ps(v[k]), _mm256_loadu_ps(xt + int64_t{8} * ci[k]), sum);
    float acc[8];
    _mm256_storeu_ps(acc, sum);
    store_block_row(acc, nb, i, y0, y0s, y, ys);
  }
}

// Blocks of 9 to 16 rows of X (xt [n][16]): one 16-lane FMA per non-zero, 4 chains.
__attribute__((target("avx512f"))) void spmm_avx512_16(const Csr& w, const float* xt, int64_t nb, const float* y0,
                                                      int64_t y0s, float* y, int64_t ys) {
  const int32_t* rp = w.row_ptr;
  const int32_t* ci = w.col_idx;
  const float* v = w.values;
  for (int64_t i = 0; i < w.rows; ++i) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    for (; k + 4 <= end; k += 4) {
      for (int u = 0; u < 4; ++u) {
        a[u] = _mm512_fmadd_ps(_mm512_set1_ps(v[k + u]), _mm512_loadu_ps(xt + int64_t{16} * ci[k + u]), a[u]);
      }
    }
    for (; k < end; ++k) a[0] = _mm512_fmadd_ps(_mm512_set1_ps(v[k]), _mm512_loadu_ps(xt + int64_t{16} * ci[k]), a[0]);
    float acc[16];
    _mm512_storeu_ps(acc, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    store_block_row(acc, nb, i, y0, y0s, y, ys);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Integer tiles (see IntegerEll): per 16-row tile, per 128-column tile, x's 128 bytes sit in two zmm registers;
// a step looks up its 64 lanes' bytes with one vpermt2b and vpdpbusd multiplies them (unsigned) with the 64 int8
// values (signed), summing each row's 4 products into its int32 lane: exact integer arithmetic, no load of x per
// non-zero, 64 non-zeros per two instructions. Empty lanes hold the value 0. part[row] = (sum - zero_point *
// value_sum[row]) * row_scale[row], for the 16 lanes of every row tile (rows past M included: scale 0).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's _mm512_cvtepi32_ps (_mm512_undefined_ps)
#endif
#define DKP_INT_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni")))
// x's 128 bytes of a column tile, pinned in registers: vpermt2b overwrites one of its operands, and left alone GCC
// then reloads the table from memory at every step instead of copying a register (two more 64-byte loads per
// step, which made the load ports the bound: 4.2 -> 3.0 us for the 20x layer's tiles, 13 -> 4 us for 4 rows).
DKP_INT_TARGET DKP_ALWAYS_INLINE void load_x_tile(const uint8_t* xb, __m512i* lo, __m512i* hi) {
  *lo = _mm512_load_si512(xb);
  *hi = _mm512_load_si512(xb + 64);
  asm("" : "+v"(*lo), "+v"(*hi));
}

DKP_INT_TARGET DKP_ALWAYS_INLINE __m512i int_step(__m512i acc, __m512i lo, __m512i hi, const uint8_t* c,
                                                  const int8_t* v) {
  const __m512i g = _mm512_permutex2var_epi8(lo, _mm512_load_si512(c), hi);
  return _mm512_dpbusd_epi32(acc, g, _mm512_load_si512(v));
}

// One row tile's Steps steps of one column tile into two chains (steps alternate; `odd` starts on the second).
template <int Steps>
DKP_INT_TARGET DKP_ALWAYS_INLINE void int_tile_steps(__m512i* a0, __m512i* a1, __m512i lo, __m512i hi,
                                                     const uint8_t*& c, const int8_t*& v, bool odd) {
  constexpr int kLanes = IntTileView::kRows * IntTileView::kPerRow;
  for (int j = 0; j < Steps; ++j) {
    if (((j & 1) != 0) != odd) {
      *a1 = int_step(*a1, lo, hi, c, v);
    } else {
      *a0 = int_step(*a0, lo, hi, c, v);
    }
    c += kLanes;
    v += kLanes;
  }
}

// The last column tile's `n` steps (1..3: it may have fewer than the others, see IntegerEll).
DKP_INT_TARGET DKP_ALWAYS_INLINE void int_tile_last_steps(int n, __m512i* a0, __m512i* a1, __m512i lo, __m512i hi,
                                                          const uint8_t*& c, const int8_t*& v) {
  switch (n) {
    case 1: int_tile_steps<1>(a0, a1, lo, hi, c, v, false); break;
    case 2: int_tile_steps<2>(a0, a1, lo, hi, c, v, false); break;
    default: int_tile_steps<3>(a0, a1, lo, hi, c, v, false); break;
  }
}

DKP_INT_TARGET DKP_ALWAYS_INLINE void int_tile_store(const IntTileView& w, int64_t t, __m512i a0, __m512i a1,
                                                     __m512i zp, float* part) {
  const int64_t r0 = t * IntTileView::kRows;
  const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(a0, a1),
                                       _mm512_mullo_epi32(zp, _mm512_load_si512(w.value_sum + r0)));
  _mm512_store_ps(part + r0, _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_loadu_ps(w.row_scale + r0)));
}

// The batch-1 store: y[row] = x_scale * the row's tile sum (+ y0[row]) for the tile's rows below M, so no pass
// over a padded copy is left to do (it cost 0.35 us of the 20x layer's call in baseline SSE).
DKP_INT_TARGET DKP_ALWAYS_INLINE void int_tile_store_y(const IntTileView& w, int64_t t, __m512i a0, __m512i a1,
                                                       __m512i zp, __m512 x_scale, const float* y0, float* y) {
  const int64_t r0 = t * IntTileView::kRows;
  const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(a0, a1),
                                       _mm512_mullo_epi32(zp, _mm512_load_si512(w.value_sum + r0)));
  const int64_t left = w.rows - r0;
  const __mmask16 rows = left >= IntTileView::kRows ? __mmask16{0xffff} : static_cast<__mmask16>((1u << left) - 1);
  __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_loadu_ps(w.row_scale + r0)), x_scale);
  if (y0) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(rows, y0 + r0));
  _mm512_mask_storeu_ps(y + r0, rows, v);
}

// Two row tiles at a time: they share each column tile's two loads of x, and their four chains keep the
// vpdpbusd latency hidden.
template <int Steps>
DKP_INT_TARGET void int_tile_avx512(const IntTileView& w, const uint8_t* xp, uint8_t zero_point, float x_scale,
                                    const float* y0, float* y) {
  constexpr int kCols = IntTileView::kCols;
  constexpr int64_t kLanes = IntTileView::kRows * IntTileView::kPerRow;
  const __m512i zp = _mm512_set1_epi32(zero_point);
  const __m512 scale = _mm512_set1_ps(x_scale);
  const int64_t last = w.col_tiles - 1;
  const int64_t row_bytes = (last * Steps + w.last_steps) * kLanes;  // one row tile's steps
  int64_t t = 0;
  for (; t + 2 <= w.row_tiles; t += 2) {
    const uint8_t* c0 = w.cols + t * row_bytes;
    const int8_t* v0 = w.values + t * row_bytes;
    const uint8_t* c1 = c0 + row_bytes;
    const int8_t* v1 = v0 + row_bytes;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    __m512i b0 = _mm512_setzero_si512(), b1 = _mm512_setzero_si512();
    __m512i lo, hi;
    for (int64_t b = 0; b < last; ++b) {
      load_x_tile(xp + b * kCols, &lo, &hi);
      int_tile_steps<Steps>(&a0, &a1, lo, hi, c0, v0, (Steps & 1) && (b & 1));
      int_tile_steps<Steps>(&b0, &b1, lo, hi, c1, v1, (Steps & 1) && (b & 1));
    }
    load_x_tile(xp + last * kCols, &lo, &hi);
    int_tile_last_steps(w.last_steps, &a0, &a1, lo, hi, c0, v0);
    int_tile_last_steps(w.last_steps, &b0, &b1, lo, hi, c1, v1);
    int_tile_store_y(w, t, a0, a1, zp, scale, y0, y);
    int_tile_store_y(w, t + 1, b0, b1, zp, scale, y0, y);
  }
  if (t < w.row_tiles) {
    const uint8_t* c0 = w.cols + t * row_bytes;
    const int8_t* v0 = w.values + t * row_bytes;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    __m512i lo, hi;
    for (int64_t b = 0; b < last; ++b) {
      load_x_tile(xp + b * kCols, &lo, &hi);
      int_tile_steps<Steps>(&a0, &a1, lo, hi, c0, v0, (Steps & 1) && (b & 1));
    }
    load_x_tile(xp + last * kCols, &lo, &hi);
    int_tile_last_steps(w.last_steps, &a0, &a1, lo, hi, c0, v0);
    int_tile_store_y(w, t, a0, a1, zp, scale, y0, y);
  }
}
// Rows rows of X at once (x_stride bytes apart, each padded to whole column tiles), one chain each: every step's
// 128 bytes of W are loaded once for all of them, which is what bounds the one-row kernel (L2 -> L1 bandwidth).
template <int Steps, int Rows>
DKP_INT_TARGET void int_tile_rows_avx512(const IntTileView& w, const uint8_t* xp, int64_t x_stride,
                                         uint8_t zero_point, float* part, int64_t part_stride) {
  constexpr int kCols = IntTileView::kCols;
  constexpr int kLanes = IntTileView::kRows * IntTileView::kPerRow;
  const __m512i zp = _mm512_set1_epi32(zero_point);
  const __m512i zero = _mm512_setzero_si512();
  const uint8_t* c = w.cols;
  const int8_t* v = w.values;
  for (int64_t t = 0; t < w.row_tiles; ++t) {
    __m512i a[Rows];
    for (int r = 0; r < Rows; ++r) a[r] = zero;
    for (int64_t b = 0; b < w.col_tiles; ++b) {
      __m512i lo[Rows], hi[Rows];
      for (int r = 0; r < Rows; ++r) load_x_tile(xp + r * x_stride + b * kCols, &lo[r], &hi[r]);
      const int steps = b + 1 < w.col_tiles ? Steps : w.last_steps;
      for (int j = 0; j < steps; ++j) {
        const __m512i idx = _mm512_load_si512(c), vals = _mm512_load_si512(v);
        for (int r = 0; r < Rows; ++r) {
          a[r] = _mm512_dpbusd_epi32(a[r], _mm512_permutex2var_epi8(lo[r], idx, hi[r]), vals);
        }
        c += kLanes;
        v += kLanes;
      }
    }
    for (int r = 0; r < Rows; ++r) int_tile_store(w, t, a[r], zero, zp, part + r * part_stride);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Integer tiles on AVX2 (PairTiles): per 8-row tile, per 64-column tile, x's 64 bytes are four 16-byte tables,
// each in both halves of a ymm register. vpshufb looks up within 16 bytes only, so the four lookups are XORed:
// the tables hold t_k = x_k ^ x_(k-1) (x's bytes k*16.. of the tile, see pair_tables), and lookup k uses the offset
// minus 16k, whose top bit (offset below 16k) makes vpshufb give 0; the XOR of the lookups up to the offset's own
// 16 bytes telescopes to x there. vpmaddubsw multiplies the bytes (unsigned) by the values (signed), summing each
// pair in int16 (exact: PairTiles' rule), vpmaddwd by ones sums each row's two pairs into its int32 lane.
// Empty slots hold the value 0.
#define DKP_PAIR_TARGET __attribute__((target("avx2,fma")))
DKP_PAIR_TARGET DKP_ALWAYS_INLINE void pair_tables(const uint8_t* xb, __m256i t[4]) {
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(xb + 16 * k)));
  }
}

DKP_PAIR_TARGET DKP_ALWAYS_INLINE __m256i pair_step(__m256i acc, const __m256i t[4], const uint8_t* c,
                                                    const int8_t* v) {
  const __m256i k16 = _mm256_set1_epi8(16);
  __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(c));
  __m256i g = _mm256_shuffle_epi8(t[0], idx);
  for (int k = 1; k < 4; ++k) {
    idx = _mm256_sub_epi8(idx, k16);
    g = _mm256_xor_si256(g, _mm256_shuffle_epi8(t[k], idx));
  }
  const __m256i pairs = _mm256_maddubs_epi16(g, _mm256_load_si256(reinterpret_cast<const __m256i*>(v)));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

// The row tile's int32 sums less zero_point * its rows' value sums, scaled by the row scales, for 8 rows.
DKP_PAIR_TARGET DKP_ALWAYS_INLINE __m256 pair_tile_sum(const IntTileView& w, int64_t t, __m256i acc, __m256i zp) {
  const int64_t r0 = t * PairTiles::kRows;
  const __m256i vs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.value_sum + r0));
  const __m256i sum = _mm256_sub_epi32(acc, _mm256_mullo_epi32(zp, vs));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_loadu_ps(w.row_scale + r0));
}

// Batch 1: y[row] = x_scale * the row's tile sum (+ y0[row]) for the rows below M. `xb`: x's bytes in whole column
// tiles, as pair_tables reads them.
template <int Steps>
DKP_PAIR_TARGET void pair_tile_avx2(const IntTileView& w, const uint8_t* xb, uint8_t zero_point, float x_scale,
                                    const float* y0, float* y) {
  constexpr int kCols = PairTiles::kCols, kLanes = PairTiles::kLanes, kRows = PairTiles::kRows;
  const __m256i zp = _mm256_set1_epi32(zero_point);
  const __m256 scale = _mm256_set1_ps(x_scale);
  const uint8_t* c = w.cols;
  const int8_t* v = w.values;
  const int64_t last = w.col_tiles - 1;
  for (int64_t t = 0; t < w.row_tiles; ++t) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();  // two chains: steps alternate
    __m256i tab[4];
    for (int64_t b = 0; b < last; ++b) {
      pair_tables(xb + b * kCols, tab);
      for (int j = 0; j < Steps; ++j) {
        if (j & 1) {
          a1 = pair_step(a1, tab, c, v);
        } else {
          a0 = pair_step(a0, tab, c, v);
        }
        c += kLanes;
        v += kLanes;
      }
    }
    pair_tables(xb + last * kCols, tab);
    for (int j = 0; j < w.last_steps; ++j) {
      a0 = pair_step(a0, tab, c, v);
      c += kLanes;
      v += kLanes;
    }
    __m256 out = _mm256_mul_ps(pair_tile_sum(w, t, _mm256_add_epi32(a0, a1), zp), scale);
    const int64_t r0 = t * kRows;
    if (r0 + kRows <= w.rows) {
      if (y0) out = _mm256_add_ps(out, _mm256_loadu_ps(y0 + r0));
      _mm256_storeu_ps(y + r0, out);
    } else {
      alignas(32) float o[kRows];
      _mm256_store_ps(o, out);
      for (int64_t r = r0; r < w.rows; ++r) y[r] = y0 ? o[r - r0] + y0[r] : o[r - r0];
    }
  }
}

// Rows rows of X at once (x_stride bytes apart): every step's 64 bytes of W are loaded once for all of them; the
// tables are re-read from L1 per step (4 rows' 16 tables would not stay in registers). part as int_tile_store.
template <int Steps, int Rows>
DKP_PAIR_TARGET void pair_tile_rows_avx2(const IntTileView& w, const uint8_t* xb, int64_t x_stride,
                                         uint8_t zero_point, float* part, int64_t part_stride) {
  constexpr int kCols = PairTiles::kCols, kLanes = PairTiles::kLanes, kRows = PairTiles::kRows;
  const __m256i zp = _mm256_set1_epi32(zero_point);
  const uint8_t* c = w.cols;
  const int8_t* v = w.values;
  for (int64_t t = 0; t < w.row_tiles; ++t) {
    __m256i a[Rows];
    for (int r = 0; r < Rows; ++r) a[r] = _mm256_setzero_si256();
    for (int64_t b = 0; b < w.col_tiles; ++b) {
      const int steps = b + 1 < w.col_tiles ? Steps : w.last_steps;
      for (int j = 0; j < steps; ++j) {
        for (int r = 0; r < Rows; ++r) {
          __m256i tab[4];
          pair_tables(xb + r * x_stride + b * kCols, tab);
          a[r] = pair_step(a[r], tab, c, v);
        }
        c += kLanes;
        v += kLanes;
      }
    }
    for (int r = 0; r < Rows; ++r) {
      _mm256_storeu_ps(part + r * part_stride + t * kRows, pair_tile_sum(w, t, a[r], zp));
    }
  }
}

template <int Width>
__attribute__((target("avx2,fma"))) void spmm_avx2(const Csr& w, const float* xt, int64_t nb, const float* y0,
                                                   int64_t y0s, float* y, int64_t ys) {
  if constexpr (Width == 4) {
    spmm_block<Float4, Width>(w, xt, nb, y0, y0s, y, ys);
  } else {
    spmm_block<Float8, Width>(w, xt, nb, y0, y0s, y, ys);
  }
}
#endif

// DKP_OPS_ISA=generic forces the portable kernels, DKP_OPS_ISA=avx2 the AVX2 ones without the AVX-512 tiles (tests
// run all three; useful to compare).
Kernels pick_kernels() {
#if DKP_HAVE_AVX2_PATH
  const char* forced = std::getenv("DKP_OPS_ISA");
  const bool generic = forced && std::strcmp(forced, "generic") == 0;
  const bool no_avx512 = generic || (forced && std::strcmp(forced, "avx2") == 0);
  __builtin_cpu_init();
  if (!generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    // integer tiles: AVX-512 VBMI + VNNI's, else (AVX2 CPUs, and AVX-512 ones without VBMI or VNNI such as
    // Skylake-X) the AVX2 pair tiles
    Kernels k{spmv_avx2,
              {spmm_avx2<4>, spmm_avx2<8>, spmm_avx2<16>},
              sell_avx2,
              {},
              "avx2+fma",
              {pair_tile_avx2<1>, pair_tile_avx2<2>, pair_tile_avx2<3>},
              {{pair_tile_rows_avx2<1, 1>, pair_tile_rows_avx2<1, 2>, pair_tile_rows_avx2<1, 3>,
                pair_tile_rows_avx2<1, 4>},
               {pair_tile_rows_avx2<2, 1>, pair_tile_rows_avx2<2, 2>, pair_tile_rows_avx2<2, 3>,
                pair_tile_rows_avx2<2, 4>},
               {pair_tile_rows_avx2<3, 1>, pair_tile_rows_avx2<3, 2>, pair_tile_rows_avx2<3, 3>,
                pair_tile_rows_avx2<3, 4>}},
              true};
    if (!no_avx512 && __builtin_cpu_supports("avx512f")) {
      k.tile[0] = tile_avx512<1>;
      k.tile[1] = tile_avx512<2>;
      k.tile[2] = tile_avx512<3>;
      k.tile[3] = tile_avx512<4>;
      const TileRowsFn rows[4][SlicedEll::kBatchRows] = {
          {tile_rows_avx512<1, 1>, tile_rows_avx512<1, 2>, tile_rows_avx512<1, 3>,
           tile_rows_avx512<1, 4>, tile_rows_avx512<1, 5>},
          {tile_rows_avx512<2, 1>, tile_rows_avx512<2, 2>, tile_rows_avx512<2, 3>,
           tile_rows_avx512<2, 4>, tile_rows_avx512<2, 5>},
          {tile_rows_avx512<3, 1>, tile_rows_avx512<3, 2>, tile_rows_avx512<3, 3>,
           tile_rows_avx512<3, 4>, tile_rows_avx512<3, 5>},
          {tile_rows_avx512<4, 1>, tile_rows_avx512<4, 2>, tile_rows_avx512<4, 3>,
           tile_rows_avx512<4, 4>, tile_rows_avx512<4, 5>}};
      std::memcpy(k.tile_rows, rows, sizeof(rows));
      k.sell_rows = sell_rows_avx512;
      k.spmm[2] = spmm_avx512_16;
      if (__builtin_cpu_supports("avx512dq")) k.spmm[1] = spmm_avx512_8;
      k.isa = "avx512f+avx2+fma";
      if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi") &&
          __builtin_cpu_supports("avx512vnni")) {
        const IntTileFn one[3] = {int_tile_avx512<1>, int_tile_avx512<2>, int_tile_avx512<3>};
        const IntRowsFn rows[3][4] = {
            {int_tile_rows_avx512<1, 1>, int_tile_rows_avx512<1, 2>, int_tile_rows_avx512<1, 3>,
             int_tile_rows_avx512<1, 4>},
            {int_tile_rows_avx512<2, 1>, int_tile_rows_avx512<2, 2>, int_tile_rows_avx512<2, 3>,
             int_tile_rows_avx512<2, 4>},
            {int_tile_rows_avx512<3, 1>, int_tile_rows_avx512<3, 2>, int_tile_rows_avx512<3, 3>,
             int_tile_rows_avx512<3, 4>}};
        std::memcpy(k.itile, one, sizeof(one));
        std::memcpy(k.itile_rows, rows, sizeof(rows));
        k.pair_tiles = false;
      }
    }
    return k;
  }
#endif
  return {spmv_generic, {spmm_generic<4>, spmm_generic<8>, spmm_generic<16>}, sell_generic, {}, "generic", {}, {}};
}

const Kernels& kernels() {
  static const Kernels k = pick_kernels();
  return k;
}

}  // namespace

const char* csr_matmul_isa() { return kernels().isa; }
const char* integer_tiles_isa() {
  return !kernels().itile[0] ? "none" : kernels().pair_tiles ? "avx2" : "avx512vbmi+avx512vnni";
}

// A tiling's cost model, in units of one SELL-8 non-zero: a tile of `rows` x `cols` costs `tile`, each of its steps
// `step`; a step takes up to `per_step` non-zeros of each row; what the tiles leave costs `rest` per non-zero plus
// `rest_per_row` per row of W when there is any. Tiles are used only where they beat SELL-8 alone for one row.
struct TileCosts {
  int64_t rows, cols;
  int per_step, max_steps;
  double tile, step, rest, rest_per_row;
};

// The tiling of W in the model's terms: its number of tiles and the rest's per-row cost. False where no step count
// can beat SELL-8 alone, because every one costs at least tiles * (tile + step): answered before any count over W,
// which is O(M * N / cols) whatever nnz is (seconds for a 1e5 x 4e6 W).
static bool tiles_may_pay(const Csr& w, int64_t min_cols, const TileCosts& c, double* tiles, double* rest_fixed) {
  const int64_t row_tiles = (w.rows + c.rows - 1) / c.rows;
  const int64_t col_tiles = (min_cols + c.cols - 1) / c.cols;
  if (w.nnz == 0 || row_tiles == 0 || col_tiles == 0) return false;
  *tiles = static_cast<double>(row_tiles) * static_cast<double>(col_tiles);
  *rest_fixed = c.rest_per_row * static_cast<double>(w.rows);
  return *tiles * (c.tile + c.step) < static_cast<double>(w.nnz) + *rest_fixed;
}

// The step count (0: none, SELL-8 alone for one row of X) the model finds cheapest, covered[s] being the non-zeros
// that s = 1..max_steps steps take.
static int cheapest_steps(const int64_t* covered, int max_steps, int64_t nnz, double tiles, double rest_fixed,
                          const TileCosts& c) {
  int best = 0;
  double best_cost = static_cast<double>(nnz) + rest_fixed;
  for (int s = 1; s <= max_steps; ++s) {
    const double rest = static_cast<double>(nnz - covered[s]);
    const double cost = tiles * (c.tile + c.step * s) + c.rest * rest + (rest > 0 ? rest_fixed : 0.0);
    if (cost < best_cost) {
      best = s;
      best_cost = cost;
    }
  }
  return best;
}

// The last column tile's step count (1..steps) where it is narrower than the others, covered[s] being its
// non-zeros that s steps take; the rest's cost is counted relative to `steps`' rest.
static int cheapest_last_steps(const int64_t* covered, int steps, double row_tiles, const TileCosts& c) {
  int best = steps;
  double best_cost = row_tiles * c.step * steps;
  for (int s = 1; s < steps; ++s) {
    const double cost = row_tiles * c.step * s + c.rest * static_cast<double>(covered[steps] - covered[s]);
    if (cost < best_cost) {
      best = s;
      best_cost = cost;
    }
  }
  return best;
}

// How many steps per tile (0: none) the model finds cheapest for W.
static int tile_steps_for(const Csr& w, int64_t min_cols, const TileCosts& c) {
  constexpr int kMaxSteps = 4;
  const int max_steps = std::min(c.max_steps, kMaxSteps);
  double tiles = 0, rest_fixed = 0;
  if (!tiles_may_pay(w, min_cols, c, &tiles, &rest_fixed)) return 0;
  const int64_t col_tiles = (min_cols + c.cols - 1) / c.cols;
  int64_t covered[kMaxSteps + 1] = {};  // non-zeros the tiles take with 0..max_steps steps
  std::vector<int32_t> count(static_cast<size_t>(col_tiles));
  for (int64_t i = 0; i < w.rows; ++i) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t k = w.row_ptr[i]; k < w.row_ptr[i + 1]; ++k) ++count[w.col_idx[k] / c.cols];
    for (int32_t n : count) {
      for (int s = 1; s <= max_steps; ++s) covered[s] += std::min(n, c.per_step * s);
    }
  }
  return cheapest_steps(covered, max_steps, w.nnz, tiles, rest_fixed, c);
}

// Walks W row by row: the first `capacity` non-zeros of each row in each `tile_cols`-wide column tile (the last
// column tile: `last_capacity`, when >= 0) go to place(k, row tile, lane, column tile, slot), the others to rest(k).
// Returns the rest's row pointers.
template <typename Place, typename Rest>
static std::vector<int32_t> split_tiles(const Csr& w, int64_t tile_rows, int64_t tile_cols, int64_t col_tiles,
                                        int capacity, Place place, Rest rest, int last_capacity = -1) {
  std::vector<int32_t> rest_rp(static_cast<size_t>(w.rows + 1), 0);
  std::vector<int32_t> used(static_cast<size_t>(col_tiles));
  int32_t rest_nnz = 0;
  for (int64_t i = 0; i < w.rows; ++i) {
    std::fill(used.begin(), used.end(), 0);
    for (int64_t k = w.row_ptr[i]; k < w.row_ptr[i + 1]; ++k) {
      const int64_t b = w.col_idx[k] / tile_cols;
      if (used[b] < (b + 1 == col_tiles && last_capacity >= 0 ? last_capacity : capacity)) {
        place(k, i / tile_rows, i % tile_rows, b, used[b]++);
      } else {
        rest(k);
        ++rest_nnz;
      }
    }
    rest_rp[i + 1] = rest_nnz;
  }
  return rest_rp;
}

// The float register tiles, fitted on the Zen 4 here at 2600 x 1300: a tile costs 3.4, a step 3.3, and the SELL-8
// pass over the rest ~2.3 per row on top of its non-zeros. Lane r of a tile covers min(steps, its row's non-zeros
// in those 32 columns).
constexpr TileCosts kFloatTileCosts = {TileView::kRows, TileView::kCols, 1, 4, 3.4, 3.3, 1.0, 2.3};

SlicedEll::SlicedEll(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale)
    : rows_(w.rows), pad_col_(min_cols) {
  if (qvalues) row_scale_.assign(row_scale, row_scale + rows_);
  const int steps = kernels().tile[0] ? tile_steps_for(w, min_cols, kFloatTileCosts) : 0;
  if (steps == 0) {
    if (qvalues) {
      build_sell(w.row_ptr, w.col_idx, qvalues);
    } else {
      build_sell(w.row_ptr, w.col_idx, w.values);
    }
    return;
  }
  constexpr int kRows = TileView::kRows;
  constexpr int kCols = TileView::kCols;
  tiles_.rows = rows_;
  tiles_.row_tiles = (rows_ + kRows - 1) / kRows;
  tiles_.col_tiles = (min_cols + kCols - 1) / kCols;
  tiles_.steps = steps;
  const size_t total = static_cast<size_t>(tiles_.row_tiles * tiles_.col_tiles * steps);
  if (qvalues) {
    tile_qvalues_.assign(total * kRows, 0);
  } else {
    tile_values_.assign(total * kRows, 0.f);
  }
  tile_cols_.assign(total * kRows, 0);
  tile_mask_.assign(total, 0);
  // What the tiles do not take stays in CSR form for the SELL-8 pass.
  std::vector<int32_t> rest_ci;
  std::vector<float> rest_v;
  std::vector<int8_t> rest_q;
  const auto place = [&](int64_t k, int64_t t, int64_t lane, int64_t b, int slot) {
    const size_t step = static_cast<size_t>((t * tiles_.col_tiles + b) * steps + slot);
    if (qvalues) {
      tile_qvalues_[step * kRows + lane] = qvalues[k];
    } else {
      tile_values_[step * kRows + lane] = w.values[k];
    }
    tile_cols_[step * kRows + lane] = static_cast<uint8_t>(w.col_idx[k] % kCols);
    tile_mask_[step] = static_cast<uint16_t>(tile_mask_[step] | (1u << lane));
  };
  const auto to_rest = [&](int64_t k) {
    rest_ci.push_back(w.col_idx[k]);
    if (qvalues) {
      rest_q.push_back(qvalues[k]);
    } else {
      rest_v.push_back(w.values[k]);
    }
  };
  const std::vector<int32_t> rest_rp = split_tiles(w, kRows, kCols, tiles_.col_tiles, steps, place, to_rest);
  tiles_.values = qvalues ? nullptr : tile_values_.data();
  tiles_.qvalues = qvalues ? tile_qvalues_.data() : nullptr;
  tiles_.row_scale = qvalues ? row_scale_.data() : nullptr;
  tiles_.cols = tile_cols_.data();
  tiles_.mask = tile_mask_.data();
  if (qvalues) {
    build_sell(rest_rp.data(), rest_ci.data(), rest_q.data());
  } else {
    build_sell(rest_rp.data(), rest_ci.data(), rest_v.data());
  }
}

template <typename Val>
void SlicedEll::build_sell(const int32_t* rp, const int32_t* ci, const Val* v) {
  std::vector<int32_t> order(static_cast<size_t>(rows_));
  for (int64_t i = 0; i < rows_; ++i) order[i] = static_cast<int32_t>(i);
  for (int64_t b = 0; b < rows_; b += kSortWindow) {
    const int64_t e = std::min<int64_t>(rows_, b + kSortWindow);
    std::stable_sort(order.begin() + b, order.begin() + e,
                     [rp](int32_t a, int32_t c) { return rp[a + 1] - rp[a] > rp[c + 1] - rp[c]; });
  }
  const int64_t slices = (rows_ + kSlice - 1) / kSlice;
  row_of_.assign(static_cast<size_t>(slices * kSlice), -1);
  std::copy(order.begin(), order.end(), row_of_.begin());
  slice_start_.assign(1, 0);
  int64_t stored = 0;
  for (int64_t s = 0; s < slices; ++s) {
    int64_t len = 0;
    for (int r = 0; r < kSlice; ++r) {
      const int32_t row = row_of_[s * kSlice + r];
      if (row >= 0) len = std::max<int64_t>(len, rp[row + 1] - rp[row]);
    }
    stored += len * kSlice;
    slice_start_.push_back(stored);
  }
  cols_.assign(static_cast<size_t>(stored), static_cast<int32_t>(pad_col_));
  constexpr bool kInt8 = std::is_same_v<Val, int8_t>;
  if constexpr (kInt8) {
    qvalues_.assign(static_cast<size_t>(stored), 0);
  } else {
    values_.assign(static_cast<size_t>(stored), 0.f);
  }
  for (int64_t s = 0; s < slices; ++s) {
    for (int r = 0; r < kSlice; ++r) {
      const int32_t row = row_of_[s * kSlice + r];
      if (row < 0) continue;
      for (int64_t k = rp[row], j = 0; k < rp[row + 1]; ++k, ++j) {
        cols_[slice_start_[s] + j * kSlice + r] = ci[k];
        if constexpr (kInt8) {
          qvalues_[slice_start_[s] + j * kSlice + r] = v[k];
        } else {
          values_[slice_start_[s] + j * kSlice + r] = v[k];
        }
      }
    }
  }
}

SellView SlicedEll::sell_view() const {
  return SellView{static_cast<int64_t>(slice_start_.size()) - 1, slice_start_.data(), row_of_.data(), cols_.data(),
                  row_scale_.empty() ? values_.data() : nullptr, row_scale_.empty() ? nullptr : qvalues_.data(),
                  row_scale_.empty() ? nullptr : row_scale_.data()};
}

bool SlicedEll::serves_batch(int64_t batch) const {
  return batch >= 2 && batch <= kBatchRows && tiles_.steps > 0 && kernels().sell_rows;
}

int64_t SlicedEll::windows() const { return (rows_ + kSortWindow - 1) / kSortWindow; }

void SlicedEll::prepare_batch(const float* x, int64_t batch, int64_t n, BatchX* bx) const {
  constexpr int64_t kLanes = SellView::kSlice;  // the rest's FMAs: 8 lanes, one per row of X
  const int64_t ld = std::max<int64_t>(tiles_.col_tiles * TileView::kCols, pad_col_ + 1);
  bx->batch = batch;
  bx->ld = ld;
  bx->padded.resize(static_cast<size_t>(batch * ld));
  for (int64_t b = 0; b < batch; ++b) {  // columns past min_cols zero, as the one-row product's copy
    float* row = bx->padded.data() + b * ld;
    std::memcpy(row, x + b * n, static_cast<size_t>(pad_col_) * sizeof(float));
    std::fill(row + pad_col_, row + ld, 0.f);
  }
  bx->transposed.resize(static_cast<size_t>((pad_col_ + 1) * kLanes));
  float* out = bx->transposed.data();
  transpose_rows(x, n, batch, pad_col_, kLanes, out);
  std::fill(out + pad_col_ * kLanes, out + (pad_col_ + 1) * kLanes, 0.f);  // the padding's column: an exact 0
}

void SlicedEll::matmul_part(const BatchX& bx, int64_t w0, int64_t w1, const float* y0, int64_t y0_stride,
                            float* y) const {
  constexpr int kRows = TileView::kRows;
  const Kernels& kn = kernels();
  const int64_t r0 = w0 * kSortWindow, r1 = std::min(rows_, w1 * kSortWindow);
  if (r1 <= r0) return;
  const int64_t t0 = r0 / kRows, t1 = (r1 + kRows - 1) / kRows;
  const int64_t ldp = (t1 - t0) * kRows;
  thread_local AlignedVector<float> part;  // the tiles' sums, which the SELL-8 pass adds the rest to
  part.resize(static_cast<size_t>(bx.batch * ldp));
  kn.tile_rows[tiles_.steps - 1][bx.batch - 1](tiles_, t0, t1, bx.padded.data(), bx.ld, part.data(), ldp);
  const SellView view = sell_view();
  constexpr int64_t kWindowSlices = kSortWindow / kSlice;
  const int64_t s1 = std::min(view.slices, w1 * kWindowSlices);
  kn.sell_rows(view, w0 * kWindowSlices, s1, bx.transposed.data(), bx.batch, part.data(), ldp, r0, y0, y0_stride, y,
               rows_);
}

void SlicedEll::matmul(const float* x, int64_t batch, int64_t n, const float* y0, int64_t y0_stride,
                       float* y) const {
  thread_local BatchX bx;
  prepare_batch(x, batch, n, &bx);
  matmul_part(bx, 0, windows(), y0, y0_stride, y);
  if (bx.floats() > kKeptScratchFloats) bx = BatchX();
}

void SlicedEll::matvec(const float* x, const float* y0, float* y) const {
  // Padding reads column pad_col_, which must hold an exact 0 (0 * inf would be NaN): use a copy of the columns
  // W can touch, plus that zero.
  // The register tiles read whole 32-column tiles: columns past min_cols are zeros too.
  thread_local AlignedVector<float> xz;
  xz.assign(x, x + pad_col_);
  xz.resize(static_cast<size_t>(std::max(pad_col_ + 1, tiles_.col_tiles * TileView::kCols)), 0.f);
  const SellView view = sell_view();
  if (tiles_.steps == 0) {
    kernels().sell(view, xz.data(), y0, y);
    return;
  }
  thread_local AlignedVector<float> part;  // the tiles' sums (+ y0), which the SELL-8 pass adds the rest to
  part.resize(static_cast<size_t>(rows_));
  kernels().tile[tiles_.steps - 1](tiles_, xz.data(), y0, part.data());
  kernels().sell(view, xz.data(), part.data(), y);
}

// The integer tiles, fitted on the Zen 4 here at 2600 x 1300 and 1-5% density: a tile (two loads of x) costs 1, a
// step (64 lanes) 5, a non-zero left to the rest 5 (it costs a SELL-8 non-zero for one row of X, but rows of X in
// blocks of 4 share a step and not the rest: the model leans to covering almost everything), plus a little per row
// when there is a rest. C++ harness, 20x layer's W_s (164,354 non-zeros): one row 21.0 us with the float tiles,
// 8.3 / 8.0 us with 2 / 3 integer steps; 8 rows 37 / 29 us.
constexpr TileCosts kIntegerTileCosts = {IntTileView::kRows, IntTileView::kCols, IntTileView::kPerRow, 3,
                                         1.0, 5.0, 5.0, 0.5};

// The tiles sum a row's products in int32 lanes: exact while a row has at most this many non-zeros (|q| <= 128,
// x - zero_point in [-255, 255]: each product below 32640 in magnitude). A longer row (N above ~700k columns)
// keeps W out of the tiles, so that every CPU computes the same function.
constexpr int64_t kMaxIntegerRow = INT32_MAX / (128 * 255);

static int64_t longest_row(const Csr& w) {
  int64_t longest = 0;
  for (int64_t i = 0; i < w.rows; ++i) longest = std::max<int64_t>(longest, w.row_ptr[i + 1] - w.row_ptr[i]);
  return longest;
}

// Steps for the last column tile when it is narrower than the others (min_cols % 128 columns: 20 of the 2600 x
// 1300 layer's, 10 of the 650-column decoder's): by the same cost model, its rows' non-zeros past 4 per step going
// to the rest. At 20 columns one step holds nearly all of them, where `steps` = 3 left 2 of 3 empty (9% of the
// layer's tile bytes, 1/6 of the decoder's).
static int last_tile_steps(const Csr& w, int64_t min_cols, int steps) {
  constexpr int64_t kCols = IntTileView::kCols;
  const int64_t col_tiles = (min_cols + kCols - 1) / kCols;
  if (col_tiles < 2 || min_cols % kCols == 0) return steps;
  const int64_t first = (col_tiles - 1) * kCols;  // the last tile's first column
  int64_t covered[4] = {};                        // its non-zeros that 1..3 steps hold
  for (int64_t i = 0; i < w.rows; ++i) {
    int64_t n = 0;
    for (int64_t k = w.row_ptr[i]; k < w.row_ptr[i + 1]; ++k) n += w.col_idx[k] >= first ? 1 : 0;
    for (int s = 1; s <= steps; ++s) covered[s] += std::min<int64_t>(n, IntTileView::kPerRow * s);
  }
  const double row_tiles = static_cast<double>((w.rows + IntTileView::kRows - 1) / IntTileView::kRows);
  return cheapest_last_steps(covered, steps, row_tiles, kIntegerTileCosts);
}

// The AVX2 integer tiles (PairTiles), fitted on the Zen 3 here (C++ harness, 2600 x 1300 at 4% density, 130,180
// non-zeros; best of 5 rounds): the tiles alone take 14.3 us with one step per tile, 24.8 us with two; what one
// step leaves (17,800 non-zeros) costs ~8.7 us more through SELL-8 (0.5 us per thousand: the unit here). So a
// step costs 3.0 SELL-8 non-zeros, a tile 1.7 more. Whole product, batch 1 / 8: 23 / 174 us with one step,
// 31 / 198 us with two, 65 / 283 us through SELL-8 alone.
constexpr TileCosts kPairTileCosts = {PairTiles::kRows, PairTiles::kCols, 2 * PairTiles::kPairsPerRow, 3,
                                      1.7, 3.0, 1.0, 0.5};

// A row's non-zeros `ks` (all in one PairTiles column tile) in pairs that vpmaddubsw sums exactly: opposite signs,
// then two of one sign with |a| + |b| <= 128 (smallest with largest), then singles (second entry -1); pairs of two
// come first, so the steps take as many non-zeros as they can.
static void pair_up(std::vector<int64_t>* ks, const int8_t* q, std::vector<std::array<int64_t, 2>>* pairs) {
  pairs->clear();
  std::vector<int64_t> pos, neg;
  for (int64_t k : *ks) (q[k] >= 0 ? pos : neg).push_back(k);
  while (!pos.empty() && !neg.empty()) {
    pairs->push_back({pos.back(), neg.back()});
    pos.pop_back();
    neg.pop_back();
  }
  std::vector<int64_t>& left = pos.empty() ? neg : pos;
  std::sort(left.begin(), left.end(), [q](int64_t a, int64_t b) { return std::abs(q[a]) < std::abs(q[b]); });
  std::vector<int64_t> singles;
  size_t lo = 0, hi = left.size();
  while (lo < hi) {
    if (hi - lo >= 2 && std::abs(q[left[lo]]) + std::abs(q[left[hi - 1]]) <= 128) {
      pairs->push_back({left[lo++], left[--hi]});
    } else {
      singles.push_back(left[--hi]);
    }
  }
  for (int64_t k : singles) pairs->push_back({k, -1});
}

// Calls f(row, column tile, pairs) for every row's non-empty PairTiles column tiles, in column tile order.
template <typename F>
static void for_each_pair_tile(const Csr& w, const int8_t* q, F f) {
  constexpr int64_t kCols = PairTiles::kCols;
  std::vector<std::pair<int64_t, int64_t>> by_tile;  // (column tile, k)
  std::vector<int64_t> ks;
  std::vector<std::array<int64_t, 2>> pairs;
  for (int64_t i = 0; i < w.rows; ++i) {
    by_tile.clear();
    for (int64_t k = w.row_ptr[i]; k < w.row_ptr[i + 1]; ++k) by_tile.push_back({w.col_idx[k] / kCols, k});
    std::sort(by_tile.begin(), by_tile.end());
    for (size_t a = 0; a < by_tile.size();) {
      size_t e = a;
      ks.clear();
      while (e < by_tile.size() && by_tile[e].first == by_tile[a].first) ks.push_back(by_tile[e++].second);
      pair_up(&ks, q, &pairs);
      f(i, by_tile[a].first, pairs);
      a = e;
    }
  }
}

bool IntegerEll::lay_out_pair_tiles(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale,
                                    std::vector<int32_t>* rest_rp, std::vector<int32_t>* rest_ci,
                                    std::vector<int8_t>* rest_q) {
  constexpr int kRows = PairTiles::kRows, kCols = PairTiles::kCols, kLanes = PairTiles::kLanes;
  constexpr int kPairs = PairTiles::kPairsPerRow, kMaxSteps = 3;
  const TileCosts& c = kPairTileCosts;
  double tiles = 0, rest_fixed = 0;
  if (!tiles_may_pay(w, min_cols, c, &tiles, &rest_fixed)) return false;
  const int64_t row_tiles = (w.rows + kRows - 1) / kRows, col_tiles = (min_cols + kCols - 1) / kCols;
  // the non-zeros that 1..3 steps hold, in the full column tiles and in the last one (narrower where N % 64 != 0)
  int64_t covered[kMaxSteps + 1] = {}, covered_last[kMaxSteps + 1] = {};
  for_each_pair_tile(w, qvalues, [&](int64_t, int64_t b, const std::vector<std::array<int64_t, 2>>& pairs) {
    for (int s = 1; s <= kMaxSteps; ++s) {
      int64_t n = 0;
      for (size_t p = 0; p < pairs.size() && p < static_cast<size_t>(kPairs * s); ++p) n += pairs[p][1] < 0 ? 1 : 2;
      (b + 1 == col_tiles ? covered_last : covered)[s] += n;
    }
  });
  int64_t covered_all[kMaxSteps + 1] = {};
  for (int s = 1; s <= kMaxSteps; ++s) covered_all[s] = covered[s] + covered_last[s];
  const int steps = cheapest_steps(covered_all, kMaxSteps, w.nnz, tiles, rest_fixed, c);
  if (steps == 0) return false;
  const int last_steps = col_tiles >= 2 && min_cols % kCols != 0
                             ? cheapest_last_steps(covered_last, steps, static_cast<double>(row_tiles), c)
                             : steps;
  tile_height_ = kRows;
  tile_width_ = kCols;
  tiles_.rows = rows_;
  tiles_.row_tiles = row_tiles;
  tiles_.col_tiles = col_tiles;
  tiles_.steps = steps;
  tiles_.last_steps = last_steps;
  const int64_t row_steps = (col_tiles - 1) * steps + last_steps;  // one row tile's
  const size_t total = static_cast<size_t>(row_tiles * row_steps) * kLanes;
  tile_cols_.assign(total, 0);
  tile_values_.assign(total, 0);
  value_sum_.assign(static_cast<size_t>(row_tiles * kRows), 0);
  row_scale_.assign(static_cast<size_t>(row_tiles * kRows), 0.f);  // rows past M: scale 0
  std::copy(row_scale, row_scale + rows_, row_scale_.begin());
  std::vector<std::vector<int64_t>> rest_of(static_cast<size_t>(rows_));  // each row's, sorted at the end
  for_each_pair_tile(w, qvalues, [&](int64_t i, int64_t b, const std::vector<std::array<int64_t, 2>>& pairs) {
    const size_t cap = static_cast<size_t>(kPairs * (b + 1 == col_tiles ? last_steps : steps));
    const int64_t t = i / kRows, r = i % kRows;
    for (size_t p = 0; p < pairs.size(); ++p) {
      for (int e = 0; e < 2; ++e) {
        const int64_t k = pairs[p][e];
        if (k < 0) continue;
        if (p >= cap) {
          rest_of[static_cast<size_t>(i)].push_back(k);
          continue;
        }
        const int64_t step = t * row_steps + b * steps + static_cast<int64_t>(p / kPairs);
        const int slot = 2 * static_cast<int>(p % kPairs) + e;
        const size_t at = static_cast<size_t>(step * kLanes + PairTiles::byte_of(static_cast<int>(r), slot));
        tile_cols_[at] = static_cast<uint8_t>(w.col_idx[k] % kCols);
        tile_values_[at] = qvalues[k];
        value_sum_[static_cast<size_t>(i)] += qvalues[k];
      }
    }
  });
  rest_rp->assign(1, 0);
  for (int64_t i = 0; i < rows_; ++i) {
    std::vector<int64_t>& ks = rest_of[static_cast<size_t>(i)];
    std::sort(ks.begin(), ks.end());  // CSR order
    for (int64_t k : ks) {
      rest_ci->push_back(w.col_idx[k]);
      rest_q->push_back(qvalues[k]);
    }
    rest_rp->push_back(static_cast<int32_t>(rest_ci->size()));
  }
  return true;
}

bool IntegerEll::lay_out_int_tiles(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale,
                                   std::vector<int32_t>* rest_rp, std::vector<int32_t>* rest_ci,
                                   std::vector<int8_t>* rest_q) {
  const int steps = tile_steps_for(w, min_cols, kIntegerTileCosts);
  if (steps == 0) return false;
  constexpr int kRows = IntTileView::kRows, kCols = IntTileView::kCols, kPerRow = IntTileView::kPerRow;
  constexpr int kLanes = kRows * kPerRow;
  tile_height_ = kRows;
  tile_width_ = kCols;
  tiles_.rows = rows_;
  tiles_.row_tiles = (rows_ + kRows - 1) / kRows;
  tiles_.col_tiles = (min_cols + kCols - 1) / kCols;
  tiles_.steps = steps;
  tiles_.last_steps = last_tile_steps(w, min_cols, steps);
  const int64_t row_steps = (tiles_.col_tiles - 1) * steps + tiles_.last_steps;  // one row tile's
  const size_t total = static_cast<size_t>(tiles_.row_tiles * row_steps) * kLanes;
  tile_cols_.assign(total, 0);
  tile_values_.assign(total, 0);
  value_sum_.assign(static_cast<size_t>(tiles_.row_tiles * kRows), 0);
  row_scale_.assign(static_cast<size_t>(tiles_.row_tiles * kRows), 0.f);  // rows past M: scale 0
  std::copy(row_scale, row_scale + rows_, row_scale_.begin());
  const auto place = [&](int64_t k, int64_t t, int64_t lane, int64_t b, int slot) {
    const size_t at = static_cast<size_t>(t * row_steps + b * steps + slot / kPerRow) * kLanes +
                      static_cast<size_t>(lane * kPerRow + slot % kPerRow);
    tile_cols_[at] = static_cast<uint8_t>(w.col_idx[k] % kCols);
    tile_values_[at] = qvalues[k];
    value_sum_[static_cast<size_t>(t * kRows + lane)] += qvalues[k];
  };
  const auto to_rest = [&](int64_t k) {
    rest_ci->push_back(w.col_idx[k]);
    rest_q->push_back(qvalues[k]);
  };
  *rest_rp = split_tiles(w, kRows, kCols, tiles_.col_tiles, kPerRow * steps, place, to_rest,
                         kPerRow * tiles_.last_steps);
  return true;
}

IntegerEll::IntegerEll(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale)
    : rows_(w.rows), min_cols_(min_cols) {
  std::vector<int32_t> rest_rp, rest_ci;
  std::vector<int8_t> rest_q;
  const auto lay_out = kernels().pair_tiles ? &IntegerEll::lay_out_pair_tiles : &IntegerEll::lay_out_int_tiles;
  const bool tiled = kernels().itile[0] && longest_row(w) <= kMaxIntegerRow &&
                     (this->*lay_out)(w, min_cols, qvalues, row_scale, &rest_rp, &rest_ci, &rest_q);
  if (!tiled) {
    rest_ = std::make_unique<const SlicedEll>(w, min_cols, qvalues, row_scale);
    return;
  }
  tiles_.cols = tile_cols_.data();
  tiles_.values = tile_values_.data();
  tiles_.value_sum = value_sum_.data();
  tiles_.row_scale = row_scale_.data();
  small_rest_ = static_cast<int64_t>(rest_ci.size()) < min_cols;
  if (!small_rest_) {  // one row at a time adds a large rest by SELL-8 (a small one entry by entry, see matmul)
    Csr rest;
    rest.rows = rows_;
    rest.nnz = static_cast<int64_t>(rest_ci.size());
    rest.row_ptr = rest_rp.data();
    rest.col_idx = rest_ci.data();
    rest_ = std::make_unique<const SlicedEll>(rest, min_cols, rest_q.data(), row_scale);
  }
  // the rest again, for several rows of X at once: a CSR of its non-empty rows only (usually few), values scaled
  rest_values_.resize(rest_q.size());
  rest_row_ptr_.assign(1, 0);
  for (int64_t i = 0; i < rows_; ++i) {
    if (rest_rp[i + 1] == rest_rp[i]) continue;
    for (int32_t k = rest_rp[i]; k < rest_rp[i + 1]; ++k) rest_values_[k] = row_scale[i] * rest_q[k];
    rest_rows_.push_back(static_cast<int32_t>(i));
    rest_row_ptr_.push_back(rest_rp[i + 1]);
    if (small_rest_) {
      rest_entry_rows_.insert(rest_entry_rows_.end(), rest_rp[i + 1] - rest_rp[i], static_cast<int32_t>(i));
    }
  }
  rest_cols_ = std::move(rest_ci);
}

void IntegerEll::matmul(const uint8_t* x, int64_t batch, int64_t n, uint8_t zero_point, float x_scale,
                        const float* y0, bool y0_broadcast, float* y) const {
  if (tiles_.steps == 0 || (batch == 1 && !small_rest_)) {
    for (int64_t b = 0; b < batch; ++b) {
      matvec_sell(x + b * n, zero_point, x_scale, y0 ? (y0_broadcast ? y0 : y0 + b * rows_) : nullptr,
                  y + b * rows_);
    }
    return;
  }
  constexpr int kGroup = 4;
  const int64_t stride = tiles_.col_tiles * tile_width_;  // a multiple of 64: every row stays aligned
  const int64_t part_stride = tiles_.row_tiles * tile_height_;
  thread_local AlignedVector<uint8_t> xb;
  thread_local AlignedVector<float> part;
  xb.resize(static_cast<size_t>(batch * stride));
  for (int64_t b = 0; b < batch; ++b) tile_bytes(x + b * n, xb.data() + b * stride);
  if (batch == 1) {  // the tiles write y (scaled, + y0), the small rest is added to it
    kernels().itile[tiles_.steps - 1](tiles_, xb.data(), zero_point, x_scale, y0, y);
    add_small_rest(x, 1, n, zero_point, x_scale, y, rows_);
    return;
  }
  part.resize(static_cast<size_t>(batch * part_stride));
  for (int64_t b = 0; b < batch; b += kGroup) {
    const int64_t rows = std::min<int64_t>(kGroup, batch - b);
    kernels().itile_rows[tiles_.steps - 1][rows - 1](tiles_, xb.data() + b * stride, stride, zero_point,
                                                     part.data() + b * part_stride, part_stride);
  }
  // the rest's rows added to the tiles' sums (part's rows are padded to whole row tiles)
  const int64_t nrest = static_cast<int64_t>(rest_rows_.size());
  if (small_rest_) {  // costs less than converting X for csr_matmul: entry by entry, from the bytes
    add_small_rest(x, batch, n, zero_point, 1.f, part.data(), part_stride);
  } else if (nrest > 0) {
    thread_local AlignedVector<float> xf;
    thread_local std::vector<float> rest_y;
    xf.resize(static_cast<size_t>(batch * min_cols_));
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t c = 0; c < min_cols_; ++c) {
        xf[b * min_cols_ + c] = static_cast<float>(static_cast<int>(x[b * n + c]) - zero_point);
      }
    }
    Csr rest;
    rest.rows = nrest;
    rest.nnz = static_cast<int64_t>(rest_cols_.size());
    rest.row_ptr = rest_row_ptr_.data();
    rest.col_idx = rest_cols_.data();
    rest.values = rest_values_.data();
    rest_y.resize(static_cast<size_t>(batch * nrest));
    csr_matmul(rest, nullptr, xf.data(), batch, min_cols_, nullptr, false, rest_y.data());
    for (int64_t b = 0; b < batch; ++b) {
      float* pb = part.data() + b * part_stride;
      for (int64_t k = 0; k < nrest; ++k) pb[rest_rows_[k]] += rest_y[b * nrest + k];
    }
  }
  for (int64_t b = 0; b < batch; ++b) {
    const float* y0b = y0 ? (y0_broadcast ? y0 : y0 + b * rows_) : nullptr;
    const float* pb = part.data() + b * part_stride;
    float* yb = y + b * rows_;
    if (y0b) {
      for (int64_t r = 0; r < rows_; ++r) yb[r] = pb[r] * x_scale + y0b[r];
    } else {
      for (int64_t r = 0; r < rows_; ++r) yb[r] = pb[r] * x_scale;
    }
  }
}

bool IntegerEll::serves(int64_t batch) const {
  if (tiles_.steps == 0) return batch == 1;
  return !kernels().pair_tiles || batch < kPairTileBatch;
}

void IntegerEll::tile_bytes(const uint8_t* x, uint8_t* out) const {
  const int64_t width = tiles_.col_tiles * tile_width_;
  std::copy(x, x + min_cols_, out);
  std::fill(out + min_cols_, out + width, uint8_t{0});  // columns past min_cols meet only zeros
  if (!kernels().pair_tiles) return;
  for (int64_t b = 0; b < width; b += PairTiles::kCols) {  // t_k = x_k ^ x_(k-1), from the top (pair_tables)
    for (int64_t k = PairTiles::kCols / 16 - 1; k >= 1; --k) {
      for (int64_t j = b + 16 * k; j < b + 16 * (k + 1); ++j) out[j] ^= out[j - 16];
    }
  }
}

void IntegerEll::add_small_rest(const uint8_t* x, int64_t batch, int64_t n, uint8_t zero_point, float scale,
                                float* out, int64_t stride) const {
  for (size_t e = 0; e < rest_entry_rows_.size(); ++e) {  // one flat loop: a row's few entries mispredicted less
    const float v = scale * rest_values_[e];
    const int64_t row = rest_entry_rows_[e], col = rest_cols_[e];
    for (int64_t b = 0; b < batch; ++b) {
      out[b * stride + row] += v * static_cast<float>(static_cast<int>(x[b * n + col]) - zero_point);
    }
  }
}

void IntegerEll::matvec(const uint8_t* x, uint8_t zero_point, float x_scale, const float* y0, float* y) const {
  matmul(x, 1, min_cols_, zero_point, x_scale, y0, false, y);
}

void IntegerEll::matvec_sell(const uint8_t* x, uint8_t zero_point, float x_scale, const float* y0,
                             float* y) const {
  thread_local AlignedVector<float> xf, sum, part;
  xf.resize(static_cast<size_t>(min_cols_));
  for (int64_t c = 0; c < min_cols_; ++c) xf[c] = static_cast<float>(static_cast<int>(x[c]) - zero_point);
  const float* tiled = nullptr;
  if (tiles_.steps) {
    thread_local AlignedVector<uint8_t> xb;
    xb.resize(static_cast<size_t>(tiles_.col_tiles * tile_width_));
    tile_bytes(x, xb.data());
    part.resize(static_cast<size_t>(tiles_.row_tiles * tile_height_));
    kernels().itile[tiles_.steps - 1](tiles_, xb.data(), zero_point, 1.f, nullptr, part.data());
    tiled = part.data();
  }
  sum.resize(static_cast<size_t>(rows_));
  rest_->matvec(xf.data(), tiled, sum.data());
  if (y0) {
    for (int64_t r = 0; r < rows_; ++r) y[r] = sum[r] * x_scale + y0[r];
  } else {
    for (int64_t r = 0; r < rows_; ++r) y[r] = sum[r] * x_scale;
  }
}

void csr_matmul(const Csr& w, const SlicedEll* ell, const float* x, int64_t batch, int64_t n, const float* y0,
                bool y0_broadcast, float* y) {
  const Kernels& kn = kernels();
  const int64_t m = w.rows;
  if (batch == 1) {
    if (ell) {
      ell->matvec(x, y0, y);
    } else {
      kn.spmv(w, x, y0, y);
    }
    return;
  }
  if (ell && ell->serves_batch(batch)) {
    ell->matmul(x, batch, n, y0, y0_broadcast ? 0 : m, y);
    return;
  }
  // Per-thread scratch: one kernel object may run on several threads at once (concurrent Run calls).
  thread_local AlignedVector<float> xt;
  const int64_t y0_stride = y0_broadcast ? 0 : m;
  for (int64_t b0 = 0; b0 < batch; b0 += 16) {
    const int64_t nb = std::min<int64_t>(16, batch - b0);
    const float* y0b = y0 ? (y0_broadcast ? y0 : y0 + b0 * m) : nullptr;
    if (nb == 1) {
      if (ell) {
        ell->matvec(x + b0 * n, y0b, y + b0 * m);
      } else {
        kn.spmv(w, x + b0 * n, y0b, y + b0 * m);
      }
      continue;
    }
    transpose_block(x + b0 * n, nb, n, &xt);
    kn.spmm[nb <= 4 ? 0 : nb <= 8 ? 1 : 2](w, xt.data(), nb, y0b, y0_stride, y + b0 * m, m);
  }
}

void transpose_blocks(const float* x, int64_t batch, int64_t n, std::vector<AlignedVector<float>>* xt) {
  xt->resize(static_cast<size_t>((batch + 15) / 16));
  for (int64_t b0 = 0, k = 0; b0 < batch; b0 += 16, ++k) {
    AlignedVector<float>& block = (*xt)[static_cast<size_t>(k)];
    const int64_t nb = std::min<int64_t>(16, batch - b0);
    if (nb == 1) {  // a single row is read as it is
      block.clear();
    } else {
      transpose_block(x + b0 * n, nb, n, &block);
    }
  }
}

void csr_matmul_rows(const Csr& w, int64_t r0, int64_t r1, const float* x,
                     const std::vector<AlignedVector<float>>& xt, int64_t batch, int64_t n, const float* y0,
                     bool y0_broadcast, float* y) {
  const Kernels& kn = kernels();
  const int64_t m = w.rows;
  Csr part = w;  // rows r0..r1: row_ptr holds absolute offsets into col_idx / values, so a view is enough
  part.rows = r1 - r0;
  part.row_ptr = w.row_ptr + r0;
  const int64_t y0_stride = y0_broadcast ? 0 : m;
  for (int64_t b0 = 0, k = 0; b0 < batch; b0 += 16, ++k) {
    const int64_t nb = std::min<int64_t>(16, batch - b0);
    const float* y0b = y0 ? (y0_broadcast ? y0 + r0 : y0 + b0 * m + r0) : nullptr;
    float* yb = y + b0 * m + r0;
    if (nb == 1) {
      kn.spmv(part, x + b0 * n, y0b, yb);
    } else {
      kn.spmm[nb <= 4 ? 0 : nb <= 8 ? 1 : 2](part, xt[static_cast<size_t>(k)].data(), nb, y0b, y0_stride, yb, m);
    }
  }
}

}  // namespace dkp
