// The CSR product behind ai.dkp::SparseMatVec, free of any onnxruntime type so it can be read and tested alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace dkp {

// Cache-line aligned storage: a 64-byte vector load from a 16-byte aligned buffer splits across two lines 3 times
// in 4, which costs the register-tile loop time and made its speed depend on where malloc put the arrays.
template <class T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const CacheAligned<U>&) const noexcept { return false; }
};
template <class T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

// An M x N sparse matrix in CSR form; the arrays are borrowed, never owned.
struct Csr {
  int64_t rows = 0;                 // M = len(row_ptr) - 1
  int64_t nnz = 0;                  // = row_ptr[M]
  const int32_t* row_ptr = nullptr;  // [M + 1]
  const int32_t* col_idx = nullptr;  // [nnz]
  const float* values = nullptr;     // [nnz]
};

// Checks every invariant the product relies on: row_ptr[0] == 0, row_ptr non-decreasing,
// row_ptr[M] == col_len == values_len, col_idx >= 0. Returns "" when the arrays are a valid CSR, else one message
// that names the offending input. On success fills `csr` and sets `min_cols` to the smallest N this matrix can
// multiply (largest column index + 1, or 0 when nnz == 0); the caller checks N against it.
std::string check_csr(const int32_t* row_ptr, int64_t row_ptr_len, const int32_t* col_idx, int64_t col_len,
                      const float* values, int64_t values_len, Csr* csr, int64_t* min_cols);

// The arrays of a SlicedEll, as its batch-1 kernels read them.
struct SellView {
  static constexpr int kSlice = 8;
  int64_t slices = 0;
  const int64_t* slice_start = nullptr;  // [slices + 1], offsets into cols / values, multiples of kSlice
  const int32_t* row_of = nullptr;       // [slices * kSlice], row of each lane, -1 for none
  const int32_t* cols = nullptr;
  const float* values = nullptr;     // the values, or null when they are int8 with one scale per row:
  const int8_t* qvalues = nullptr;
  const float* row_scale = nullptr;  // [rows]: row i of W is row_scale[i] * its int8 values
};

// The arrays of the register-tiled part of a SlicedEll (see there): tiles of 16 rows x 32 columns, `steps` steps
// per tile, one step = 16 values, 16 column offsets within the tile's 32 columns (bytes) and a 16-bit mask of the
// lanes that hold a non-zero. Tiles are stored row-tile by row-tile, column-tile by column-tile.
struct TileView {
  static constexpr int kRows = 16;
  static constexpr int kCols = 32;
  int64_t rows = 0;        // M: rows past it in the last row tile have empty lanes
  int64_t row_tiles = 0;   // ceil(M / 16)
  int64_t col_tiles = 0;   // ceil(min_cols / 32)
  int steps = 0;           // 1..4
  const float* values = nullptr;     // or null, and then int8 values scaled per row as in SellView
  const int8_t* qvalues = nullptr;
  const float* row_scale = nullptr;
  const uint8_t* cols = nullptr;
  const uint16_t* mask = nullptr;
};

// W re-laid out for the batch-1 product ("sliced ELLPACK", SELL-8-256): rows grouped in slices of 8, each slice
// stored column-major and padded to its longest row, rows sorted by length within windows of 256 so the padding
// stays small (about 1% on random sparsity). One step of a slice is 8 values + 8 columns, one per row, multiplied
// into 8 independent lanes: no per-row horizontal sums, no ragged row ends. Built once, from a constant W checked
// by check_csr; padding points at column `min_cols` with value 0, which the product maps to a zero.
// Where the CPU has AVX-512 (and a cost model says it pays), up to `steps` non-zeros per row and 32-column tile are
// first taken out into register tiles: x's 32 columns of a tile sit in two vector registers and one permute looks
// up 16 rows' columns at once (no load per non-zero); the SELL-8 arrays then hold only the rest.
// Floats of per-thread scratch (copies of X) a thread keeps between calls: an allocation and its page faults cost
// more than filling them; larger ones are freed after the call.
constexpr size_t kKeptScratchFloats = size_t{1} << 20;

class SlicedEll {
 public:
  static constexpr int kSlice = SellView::kSlice;
  static constexpr int kSortWindow = 256;
  // With `qvalues` and `row_scale` (W = diag(row_scale) @ qvalues in w's pattern) the values are kept as int8, a
  // quarter of the bytes, and each row's sum is scaled once; w.values is then not read.
  SlicedEll(const Csr& w, int64_t min_cols, const int8_t* qvalues = nullptr, const float* row_scale = nullptr);
  SlicedEll(const SlicedEll&) = delete;  // tiles_ points into this object's own arrays
  SlicedEll& operator=(const SlicedEll&) = delete;
  // y = W @ x (+ y0); x has at least min_cols entries.
  void matvec(const float* x, const float* y0, float* y) const;

  // Products with 2 to kBatchRows rows of X through the register tiles, all rows in one pass (one load of a step
  // serves them all), the rest by SELL-8 with 8-lane FMAs on X transposed. Served where W has tiles (AVX-512
  // CPUs). From 6 rows on csr_matmul's 8- and 16-lane products cost less (20x layer: tiles 42 / 50 / 55 / 87 us at
  // 2 / 4 / 5 / 6 rows, csr_matmul 66 / 70 / 60 / 65 us).
  static constexpr int kBatchRows = 5;
  bool serves_batch(int64_t batch) const;
  // X [batch, n] as the pass reads it: rows padded for the tiles (zeros past min_cols), and transposed for the
  // rest ([column][8], with an exact 0 at the padding's column).
  struct BatchX {
    AlignedVector<float> padded, transposed;
    int64_t batch = 0, ld = 0;
    size_t floats() const { return padded.capacity() + transposed.capacity(); }
  };
  void prepare_batch(const float* x, int64_t batch, int64_t n, BatchX* bx) const;
  // Windows of kSortWindow rows of W: the parts a batch product splits into.
  int64_t windows() const;
  // Y's rows in windows [w0, w1): y [batch, M]; y0 null, or [batch, M] with y0_stride M, or one row for all with
  // y0_stride 0.
  void matmul_part(const BatchX& bx, int64_t w0, int64_t w1, const float* y0, int64_t y0_stride, float* y) const;
  // All of it on this thread (serves_batch(batch) must hold); X's copies are kept for the next call up to
  // kKeptScratchFloats.
  void matmul(const float* x, int64_t batch, int64_t n, const float* y0, int64_t y0_stride, float* y) const;
  int64_t rows() const { return rows_; }
  int64_t stored() const { return static_cast<int64_t>(values_.size()); }  // SELL-8 non-zeros + padding
  int tile_steps() const { return tiles_.steps; }  // 0: no register tiles

 private:
  template <typename Val>
  void build_sell(const int32_t* rp, const int32_t* ci, const Val* v);
  SellView sell_view() const;
  int64_t rows_ = 0;
  int64_t pad_col_ = 0;
  std::vector<int64_t> slice_start_;  // offset of each slice in cols_/values_, one more than slices
  std::vector<int32_t> row_of_;       // original row of each lane, -1 for lanes past the last row
  AlignedVector<int32_t> cols_;  // 32-bit even where N < 65536: unpacking 16-bit ones cost 3-9% (docs/ops.md)
  AlignedVector<float> values_;    // empty when qvalues_ holds the values
  AlignedVector<int8_t> qvalues_;
  std::vector<float> row_scale_;
  TileView tiles_;  // steps == 0: none; else points into the three vectors below
  AlignedVector<float> tile_values_;
  AlignedVector<int8_t> tile_qvalues_;
  AlignedVector<uint8_t> tile_cols_;
  std::vector<uint16_t> tile_mask_;
};

// The integer tiles of an IntegerEll (see there), in one of two layouts.
// AVX-512 (VBMI + VNNI): 16 rows x 128 columns, `steps` steps per tile; one step = 64 column offsets within the
// tile's 128 columns (bytes) and 64 int8 values, 4 per row (lane 4r + j: row r's j-th non-zero of the step, value 0
// where the row has no more).
// AVX2 (PairTiles): 8 rows x 64 columns; one step = 32 column offsets within the tile's 64 columns and 32 int8
// values, 4 slots per row (row r's at bytes 16 * (r / 4) + 4 * (r % 4) + j), slots (0, 1) and (2, 3) each a pair.
struct IntTileView {
  static constexpr int kRows = 16;
  static constexpr int kCols = 128;
  static constexpr int kPerRow = 4;
  int64_t rows = 0;
  int64_t row_tiles = 0;
  int64_t col_tiles = 0;
  int steps = 0;       // 1..3
  int last_steps = 0;  // 1..steps: the last column tile's (fewer where it is narrow: N % 128 columns)
  const uint8_t* cols = nullptr;   // a row tile's steps: (col_tiles - 1) * steps + last_steps
  const int8_t* values = nullptr;
  const int32_t* value_sum = nullptr;  // [row_tiles * 16]: each row's sum of its tile values (for the zero point)
  const float* row_scale = nullptr;    // [rows]
};

// The AVX2 layout of IntTileView. vpmaddubsw sums a pair's two products u8 x s8 in int16 and saturates past
// 32767, so a pair holds two values of opposite signs (the sum lies between the two products, each at most
// 255 * 128 = 32640 in magnitude), or two with |a| + |b| <= 128, or one value and a 0: every sum is exact.
struct PairTiles {
  static constexpr int kRows = 8;
  static constexpr int kCols = 64;
  static constexpr int kPairsPerRow = 2;  // per step
  static constexpr int kLanes = 32;       // bytes per step
  static int byte_of(int row, int slot) { return 16 * (row / 4) + 4 * (row % 4) + slot; }
};

// W = diag(row_scale) @ Wq (int8 values) laid out for a uint8 x with a zero point (ai.dkp::SparseMatVecInteger
// with a constant W): y = x_scale * diag(row_scale) @ Wq @ (x - zero_point) (+ y0). Where the CPU has AVX-512 VBMI
// and VNNI (and a cost model says it pays), up to 4 * `steps` non-zeros per row and 128-column tile go into integer
// tiles: x's 128 bytes of a tile sit in two zmm registers, one vpermt2b looks up 64 non-zeros' bytes (16 rows x 4)
// and one vpdpbusd multiplies and sums them into 16 int32 lanes, exactly; up to 4 rows of x share each pass over
// the tiles. The rest is added entry by entry when it is small, else (and all of W on other CPUs) through float
// products of the integers x - zero_point (exact too: every product and partial sum is an integer below 2^24 for
// rows of up to 518 non-zeros), so every CPU computes the same function up to the final scaling. On AVX2 CPUs the
// tiles are PairTiles: x's 64 bytes of a tile sit in four 16-byte tables (each in both halves of a ymm register),
// four vpshufb look up a step's 32 bytes (8 rows x 4 slots), and vpmaddubsw + vpmaddwd sum each row's
// 4 products into its int32 lane, exactly (the pairing rule); on AVX-512 CPUs without VBMI or VNNI too. From 4 rows
// of x on, AVX2's tiles leave the product to the op's float products of x - zero_point with the dequantized values
// (serves): the same up to float32 rounding, which then differs from batch 1's in the last bits.
class IntegerEll {
 public:
  IntegerEll(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale);
  IntegerEll(const IntegerEll&) = delete;
  IntegerEll& operator=(const IntegerEll&) = delete;
  // x has at least min_cols entries.
  void matvec(const uint8_t* x, uint8_t zero_point, float x_scale, const float* y0, float* y) const;
  // The same for `batch` rows of x (each n >= min_cols long): the tiles take up to 4 rows per pass over W, the rest
  // goes through csr_matmul; y0 null, [batch, rows] or (y0_broadcast) [rows].
  void matmul(const uint8_t* x, int64_t batch, int64_t n, uint8_t zero_point, float x_scale, const float* y0,
              bool y0_broadcast, float* y) const;
  int tile_steps() const { return tiles_.steps; }  // 0: no integer tiles
  // Whether matmul is the faster way to a product of `batch` rows of x: with tiles, on AVX-512 at every batch, on
  // AVX2 below kPairTileBatch rows (their lookups are per row of x: from 4 rows on, csr_matmul's float products on
  // x - zero_point, one FMA per non-zero for 8 rows, win); without tiles only for one row (its SELL-8 copy).
  bool serves(int64_t batch) const;
  static constexpr int64_t kPairTileBatch = 4;

 private:
  int64_t rows_ = 0;
  int64_t min_cols_ = 0;
  int64_t tile_height_ = 0, tile_width_ = 0;  // rows and columns of one tile (IntTileView's or PairTiles')
  IntTileView tiles_;
  AlignedVector<uint8_t> tile_cols_;
  AlignedVector<int8_t> tile_values_;
  AlignedVector<int32_t> value_sum_;
  std::vector<float> row_scale_;
  std::unique_ptr<const SlicedEll> rest_;
  std::vector<int32_t> rest_rows_, rest_row_ptr_, rest_cols_;  // the rest's non-empty rows as CSR, values scaled
  std::vector<float> rest_values_;
  std::vector<int32_t> rest_entry_rows_;  // a small rest's row of each entry (add_small_rest)
  bool small_rest_ = false;  // fewer non-zeros left than columns: added entry by entry, else by csr_matmul / SELL-8
  // Lay W's tiles out (AVX-512 or AVX2 layout) and hand back what they leave, as CSR; false: no tiles pay.
  bool lay_out_int_tiles(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale,
                         std::vector<int32_t>* rest_rp, std::vector<int32_t>* rest_ci, std::vector<int8_t>* rest_q);
  bool lay_out_pair_tiles(const Csr& w, int64_t min_cols, const int8_t* qvalues, const float* row_scale,
                          std::vector<int32_t>* rest_rp, std::vector<int32_t>* rest_ci, std::vector<int8_t>* rest_q);
  // x's bytes as the tile kernels read them: whole column tiles (zeros past min_cols), XORed for PairTiles
  void tile_bytes(const uint8_t* x, uint8_t* out) const;
  // a small rest: out[b * stride + row] += scale * value * (x[b, col] - zero_point), entry by entry
  void add_small_rest(const uint8_t* x, int64_t batch, int64_t n, uint8_t zero_point, float scale, float* out,
                      int64_t stride) const;
  // one row, the rest by the SELL-8 copy (where there are no tiles, or a large rest)
  void matvec_sell(const uint8_t* x, uint8_t zero_point, float x_scale, const float* y0, float* y) const;
};

// Which integer tile kernel IntegerEll uses on this CPU ("avx512vbmi+avx512vnni", "avx2" or "none"; DKP_OPS_ISA
// caps it).
const char* integer_tiles_isa();

// Y[b, :] = W @ X[b, :] (+ Y0[b, :]) for b < batch. X is [batch, n] row-major and Y is [batch, W.rows].
// y0 is null, or [batch, W.rows] when y0_broadcast is false, or [W.rows] added to every row when it is true.
// Requires a CSR accepted by check_csr with min_cols <= n. W is streamed once per block of up to 16 rows of X;
// single rows go through `ell` when given (the same W, re-laid out), else through the CSR arrays.
void csr_matmul(const Csr& w, const SlicedEll* ell, const float* x, int64_t batch, int64_t n, const float* y0,
                bool y0_broadcast, float* y);

// X [batch, n] in blocks of up to 16 rows, each transposed to [n, width] (width 4, 8 or 16, lanes past the block's
// rows zero; empty for a block of one row): what csr_matmul_rows reads, made once per product and shared by its
// parts. Reuses xt's storage.
void transpose_blocks(const float* x, int64_t batch, int64_t n, std::vector<AlignedVector<float>>* xt);

// Rows [r0, r1) of csr_matmul's Y for every b < batch (W streamed once per block of X's rows): one part of a
// product split over threads. `xt` from transpose_blocks(x, batch, n); y0 and y as in csr_matmul (full
// [batch, W.rows] layouts).
void csr_matmul_rows(const Csr& w, int64_t r0, int64_t r1, const float* x,
                     const std::vector<AlignedVector<float>>& xt, int64_t batch, int64_t n, const float* y0,
                     bool y0_broadcast, float* y);

// Which instruction set csr_matmul dispatches to on this CPU ("avx512f+avx2+fma", "avx2+fma" or
// "generic"; DKP_OPS_ISA=avx2 or =generic at run time caps it), for benchmarks and docs.
const char* csr_matmul_isa();

// One kernel of a family built for AVX-512, AVX2+FMA and the baseline vectors, at the level csr_matmul_isa chose
// (null where a build has no such variant), with that level's name: how the dense kernels follow the sparse ones.
template <class Fn>
struct IsaKernel {
  Fn fn;
  const char* isa;
};
template <class Fn>
IsaKernel<Fn> pick_isa_kernel(Fn avx512, Fn avx2, Fn generic) {
  const char* isa = csr_matmul_isa();
  if (avx512 && std::string(isa).compare(0, 7, "avx512f") == 0) return {avx512, "avx512f"};
  if (avx2 && std::string(isa).compare(0, 4, "avx2") == 0) return {avx2, "avx2+fma"};
  return {generic, "generic"};
}

}  // namespace dkp
