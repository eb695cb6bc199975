/* Batch-1 CSR mat-vec variants, to choose the SparseMatVec inner loop by measurement (spmv_variants.py runs them).
 * Signature of each: (rows, row_ptr, col_idx, values, x, y), y = W @ x. Not part of the package. */
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

/* The op's first generic path: scalar, four accumulators: three scalar loads per non-zero. */
void spmv_scalar(int64_t rows, const int32_t* rp, const int32_t* ci, const float* v, const float* x, float* y) {
  for (int64_t i = 0; i < rows; ++i) {
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
    y[i] = (a0 + a1) + (a2 + a3);
  }
}

/* The op's first avx2 path: 8-wide vgatherdps of x. */
__attribute__((target("avx2,fma"))) void spmv_gather(int64_t rows, const int32_t* rp, const int32_t* ci,
                                                     const float* v, const float* x, float* y) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= end; k += 16) {
      const __m256i c0 = _mm256_loadu_si256((const __m256i*)(ci + k));
      const __m256i c1 = _mm256_loadu_si256((const __m256i*)(ci + k + 8));
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k), _mm256_i32gather_ps(x, c0, 4), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k + 8), _mm256_i32gather_ps(x, c1, 4), a1);
    }
    const __m256 a = _mm256_add_ps(a0, a1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float s = _mm_cvtss_f32(s4);
    for (; k < end; ++k) s += v[k] * x[ci[k]];
    y[i] = s;
  }
}

/* SSE2 only: column indices loaded two per 64-bit load, values four per vector load, x by scalar loads assembled
 * into a vector. ~1.5 loads per non-zero instead of 3 (scalar) and no slow hardware gather. */
void spmv_pairv(int64_t rows, const int32_t* rp, const int32_t* ci, const float* v, const float* x, float* y) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    __m128 acc = _mm_setzero_ps(), acc2 = _mm_setzero_ps();
    for (; k + 8 <= end; k += 8) {
      uint64_t p0, p1, p2, p3;
      memcpy(&p0, ci + k, 8);
      memcpy(&p1, ci + k + 2, 8);
      memcpy(&p2, ci + k + 4, 8);
      memcpy(&p3, ci + k + 6, 8);
      const __m128 g = _mm_set_ps(x[(uint32_t)(p1 >> 32)], x[(uint32_t)p1], x[(uint32_t)(p0 >> 32)], x[(uint32_t)p0]);
      const __m128 h = _mm_set_ps(x[(uint32_t)(p3 >> 32)], x[(uint32_t)p3], x[(uint32_t)(p2 >> 32)], x[(uint32_t)p2]);
      acc = _mm_add_ps(acc, _mm_mul_ps(_mm_loadu_ps(v + k), g));
      acc2 = _mm_add_ps(acc2, _mm_mul_ps(_mm_loadu_ps(v + k + 4), h));
    }
    acc = _mm_add_ps(acc, acc2);
    acc = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    acc = _mm_add_ss(acc, _mm_shuffle_ps(acc, acc, 1));
    float s = _mm_cvtss_f32(acc);
    for (; k < end; ++k) s += v[k] * x[ci[k]];
    y[i] = s;
  }
}

/* As pairv with uint16 column indices (N <= 65536; repacked once when the CSR is constant): 6 bytes per non-zero
 * instead of 8, four indices per 64-bit load. */
void spmv_i16v(int64_t rows, const int32_t* rp, const int32_t* ci32, const float* v, const float* x, float* y) {
  const uint16_t* ci = (const uint16_t*)ci32;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t k = rp[i];
    const int64_t end = rp[i + 1];
    __m128 acc = _mm_setzero_ps(), acc2 = _mm_setzero_ps();
    for (; k + 8 <= end; k += 8) {
      uint64_t q, r;
      memcpy(&q, ci + k, 8);
      memcpy(&r, ci + k + 4, 8);
      const __m128 g = _mm_set_ps(x[q >> 48], x[(q >> 32) & 0xffff], x[(q >> 16) & 0xffff], x[q & 0xffff]);
      const __m128 h = _mm_set_ps(x[r >> 48], x[(r >> 32) & 0xffff], x[(r >> 16) & 0xffff], x[r & 0xffff]);
      acc = _mm_add_ps(acc, _mm_mul_ps(_mm_loadu_ps(v + k), g));
      acc2 = _mm_add_ps(acc2, _mm_mul_ps(_mm_loadu_ps(v + k + 4), h));
    }
    acc = _mm_add_ps(acc, acc2);
    acc = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    acc = _mm_add_ss(acc, _mm_shuffle_ps(acc, acc, 1));
    float s = _mm_cvtss_f32(acc);
    for (; k < end; ++k) s += v[k] * x[ci[k]];
    y[i] = s;
  }
}

/* ---- Sliced ELLPACK (SELL-8) variants: rows in slices of 8, each slice column-major, padded to its longest row
 * (the op's batch-1 layout). cols/vals hold slice_start[s]..slice_start[s+1] entries, 8 per step; padding points at
 * a zero appended to x. row_of maps slice lanes to rows (-1: none). */

/* uint16 columns four per 64-bit load, 256-bit value loads, FMA (AVX + FMA). */
__attribute__((target("avx,fma"))) void sell8_u16_avx(int64_t slices, const int64_t* start, const uint16_t* cols,
                                                    const float* vals, const int32_t* row_of, const float* x, float* y) {
  for (int64_t s = 0; s < slices; ++s) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t k = start[s];
    const int64_t end = start[s + 1];
    for (; k + 16 <= end; k += 16) {
      uint64_t q[4];
      memcpy(q, cols + k, 32);
      const __m128 g0 = _mm_set_ps(x[q[0] >> 48], x[(q[0] >> 32) & 0xffff], x[(q[0] >> 16) & 0xffff], x[q[0] & 0xffff]);
      const __m128 g1 = _mm_set_ps(x[q[1] >> 48], x[(q[1] >> 32) & 0xffff], x[(q[1] >> 16) & 0xffff], x[q[1] & 0xffff]);
      const __m128 g2 = _mm_set_ps(x[q[2] >> 48], x[(q[2] >> 32) & 0xffff], x[(q[2] >> 16) & 0xffff], x[q[2] & 0xffff]);
      const __m128 g3 = _mm_set_ps(x[q[3] >> 48], x[(q[3] >> 32) & 0xffff], x[(q[3] >> 16) & 0xffff], x[q[3] & 0xffff]);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k), _mm256_set_m128(g1, g0), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k + 8), _mm256_set_m128(g3, g2), a1);
    }
    if (k < end) {
      uint64_t q[2];
      memcpy(q, cols + k, 16);
      const __m128 g0 = _mm_set_ps(x[q[0] >> 48], x[(q[0] >> 32) & 0xffff], x[(q[0] >> 16) & 0xffff], x[q[0] & 0xffff]);
      const __m128 g1 = _mm_set_ps(x[q[1] >> 48], x[(q[1] >> 32) & 0xffff], x[(q[1] >> 16) & 0xffff], x[q[1] & 0xffff]);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k), _mm256_set_m128(g1, g0), a0);
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(a0, a1));
    for (int r = 0; r < 8; ++r) if (row_of[s * 8 + r] >= 0) y[row_of[s * 8 + r]] = out[r];
  }
}

/* uint16 columns, SSE only (baseline x86-64 / NEON-like): four columns per 64-bit load. */
void sell8_u16(int64_t slices, const int64_t* start, const uint16_t* cols, const float* vals, const int32_t* row_of,
               const float* x, float* y) {
  for (int64_t s = 0; s < slices; ++s) {
    __m128 a0 = _mm_setzero_ps(), a1 = _mm_setzero_ps();
    for (int64_t k = start[s]; k < start[s + 1]; k += 8) {
      uint64_t q[2];
      memcpy(q, cols + k, 16);
      const __m128 g0 = _mm_set_ps(x[q[0] >> 48], x[(q[0] >> 32) & 0xffff], x[(q[0] >> 16) & 0xffff], x[q[0] & 0xffff]);
      const __m128 g1 = _mm_set_ps(x[q[1] >> 48], x[(q[1] >> 32) & 0xffff], x[(q[1] >> 16) & 0xffff], x[q[1] & 0xffff]);
      a0 = _mm_add_ps(a0, _mm_mul_ps(_mm_loadu_ps(vals + k), g0));
      a1 = _mm_add_ps(a1, _mm_mul_ps(_mm_loadu_ps(vals + k + 4), g1));
    }
    float out[8];
    _mm_storeu_ps(out, a0);
    _mm_storeu_ps(out + 4, a1);
    for (int r = 0; r < 8; ++r) if (row_of[s * 8 + r] >= 0) y[row_of[s * 8 + r]] = out[r];
  }
}

/* ---- int32 columns, read two per 64-bit load (the op's SELL layout). */

static inline void col_pairs(const int32_t* c, uint32_t* j) {
  for (int p = 0; p < 4; ++p) {
    uint64_t q;
    memcpy(&q, c + 2 * p, 8);
    j[2 * p] = (uint32_t)q;
    j[2 * p + 1] = (uint32_t)(q >> 32);
  }
}

static inline void store8(const int32_t* row_of, const float* out, float* y) {
  for (int r = 0; r < 8; ++r) if (row_of[r] >= 0) y[row_of[r]] = out[r];
}

/* SSE2 only: the op's portable batch-1 kernel (sell_generic). */
void sell8_sse(int64_t slices, const int64_t* start, const int32_t* cols, const float* vals, const int32_t* row_of,
               const float* x, float* y) {
  for (int64_t s = 0; s < slices; ++s) {
    __m128 a0 = _mm_setzero_ps(), a1 = _mm_setzero_ps();
    for (int64_t k = start[s]; k < start[s + 1]; k += 8) {
      uint32_t j[8];
      col_pairs(cols + k, j);
      a0 = _mm_add_ps(a0, _mm_mul_ps(_mm_loadu_ps(vals + k), _mm_setr_ps(x[j[0]], x[j[1]], x[j[2]], x[j[3]])));
      a1 = _mm_add_ps(a1, _mm_mul_ps(_mm_loadu_ps(vals + k + 4), _mm_setr_ps(x[j[4]], x[j[5]], x[j[6]], x[j[7]])));
    }
    float out[8];
    _mm_storeu_ps(out, a0);
    _mm_storeu_ps(out + 4, a1);
    store8(row_of + s * 8, out, y);
  }
}

/* AVX2+FMA: 8 x loads on the vector side (vmovss / vinsertps), one 8-lane FMA per step. */
__attribute__((target("avx2,fma"))) void sell8_avx8(int64_t slices, const int64_t* start, const int32_t* cols,
                                                    const float* vals, const int32_t* row_of, const float* x, float* y) {
  for (int64_t s = 0; s < slices; ++s) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t k = start[s]; k < start[s + 1]; k += 8) {
      uint32_t j[8];
      col_pairs(cols + k, j);
      const __m256 g = _mm256_setr_ps(x[j[0]], x[j[1]], x[j[2]], x[j[3]], x[j[4]], x[j[5]], x[j[6]], x[j[7]]);
      a = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k), g, a);
    }
    float out[8];
    _mm256_storeu_ps(out, a);
    store8(row_of + s * 8, out, y);
  }
}

/* AVX2+FMA, the op's kernel (sell_avx2): x of lanes 0-3 loaded on the vector side, of lanes 4-7 through general
 * registers paired into 64-bit words, which spreads the loads over both load paths. */
__attribute__((target("avx2,fma"))) void sell8_gpr(int64_t slices, const int64_t* start, const int32_t* cols,
                                                   const float* vals, const int32_t* row_of, const float* x, float* y) {
  const uint32_t* xb = (const uint32_t*)x;
  for (int64_t s = 0; s < slices; ++s) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t k = start[s]; k < start[s + 1]; k += 8) {
      uint32_t j[8];
      col_pairs(cols + k, j);
      const __m128 lo = _mm_setr_ps(x[j[0]], x[j[1]], x[j[2]], x[j[3]]);
      const __m128i hi = _mm_unpacklo_epi64(_mm_cvtsi64_si128((int64_t)(xb[j[4]] | (uint64_t)xb[j[5]] << 32)),
                                            _mm_cvtsi64_si128((int64_t)(xb[j[6]] | (uint64_t)xb[j[7]] << 32)));
      a = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k), _mm256_set_m128(_mm_castsi128_ps(hi), lo), a);
    }
    float out[8];
    _mm256_storeu_ps(out, a);
    store8(row_of + s * 8, out, y);
  }
}
