#include "linalg/reduce.h"

#include <algorithm>
#include <cmath>

#include "common/cpu.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CODEGEN_REDUCE_X86 1
#include <immintrin.h>
#else
#define CODEGEN_REDUCE_X86 0
#endif

namespace codegen::linalg {

namespace {

// Lanes of the chunk sum: element i of a chunk goes to lane i % kLanes (8 AVX2 registers of
// 4 doubles: enough independent FMA chains to run at memory speed), the last len % kLanes
// elements to a sequential tail. Every f32 square is exact in double, so acc + x * x rounds
// the same with or without FMA: both paths below give the same bits.
constexpr int64_t kLanes = 32;

// lanes (32 doubles) -> one double, in the order the AVX2 path adds its registers:
// vector k = lanes [4k, 4k + 4); ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)), then
// the 4 elements of that vector as (e0 + e1) + (e2 + e3).
double CombineLanes(const double* lane) {
  double e[4];
  for (int k = 0; k < 4; ++k) {
    const double* v = lane + k;  // element k of each vector: lane[4 * vec + k]
    e[k] = ((v[0] + v[4]) + (v[8] + v[12])) + ((v[16] + v[20]) + (v[24] + v[28]));
  }
  return (e[0] + e[1]) + (e[2] + e[3]);
}

double TailSum(const float* x, int64_t begin, int64_t end) {
  double tail = 0.0;
  for (int64_t i = begin; i < end; ++i) tail += static_cast<double>(x[i]) * x[i];
  return tail;
}

double ChunkPortable(const float* x, int64_t len) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(x[i + l]) * x[i + l];
  }
  return CombineLanes(lane) + TailSum(x, i, len);
}

inline int64_t RowBlocks(int64_t rows) { return (rows + kTransposeBlock - 1) / kTransposeBlock; }

// The source region of block b: rows [r0, r1), columns [c0, c1).
struct Block {
  int64_t r0, r1, c0, c1;
};

Block BlockAt(int64_t rows, int64_t cols, int64_t b) {
  const int64_t nbr = RowBlocks(rows);
  const int64_t r0 = (b % nbr) * kTransposeBlock;
  const int64_t c0 = (b / nbr) * kTransposeBlock;
  return {r0, std::min(rows, r0 + kTransposeBlock), c0, std::min(cols, c0 + kTransposeBlock)};
}

void BlockScalar(const float* src, float* dst, int64_t rows, int64_t cols, int64_t r0,
                 int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
  }
}

// The log-sum-exp of a row from its max m and sum s = sum(exp(z - m)): NaN wins, then an
// infinite max is the result (+inf; -inf for a row of all -inf or an empty row).
float FinishLse(bool nan, float m, double s) {
  if (nan) return NAN;
  if (std::isinf(m)) return m;
  return static_cast<float>(static_cast<double>(m) + std::log(s));
}

template <bool kBias>
float RowPortable(const float* x, const float* b, int64_t cols) {
  float m = -INFINITY;
  bool nan = false;
  for (int64_t i = 0; i < cols; ++i) {
    const float z = kBias ? x[i] + b[i] : x[i];
    nan = nan || std::isnan(z);
    m = std::max(m, z);
  }
  if (nan || std::isinf(m)) return FinishLse(nan, m, 0.0);
  double s = 0.0;
  for (int64_t i = 0; i < cols; ++i) {
    const float z = kBias ? x[i] + b[i] : x[i];
    s += static_cast<double>(std::exp(z - m));
  }
  return FinishLse(false, m, s);
}

#if CODEGEN_REDUCE_X86
#define CODEGEN_AVX2 __attribute__((target("avx2,fma")))

CODEGEN_AVX2 double ChunkAvx2(const float* x, int64_t len) {
  __m256d acc[8];
  for (auto& a : acc) a = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int k = 0; k < 8; ++k) {
      const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k));
      acc[k] = _mm256_fmadd_pd(v, v, acc[k]);
    }
  }
  const __m256d s = _mm256_add_pd(
      _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3])),
      _mm256_add_pd(_mm256_add_pd(acc[4], acc[5]), _mm256_add_pd(acc[6], acc[7])));
  alignas(32) double e[4];
  _mm256_store_pd(e, s);
  return ((e[0] + e[1]) + (e[2] + e[3])) + TailSum(x, i, len);
}

// dst rows [0, 8) (stride ds) = columns of the 8x8 source tile at s (stride ss).
CODEGEN_AVX2 inline void Transpose8x8(const float* s, int64_t ss, float* d, int64_t ds) {
  const __m256 r0 = _mm256_loadu_ps(s + 0 * ss), r1 = _mm256_loadu_ps(s + 1 * ss);
  const __m256 r2 = _mm256_loadu_ps(s + 2 * ss), r3 = _mm256_loadu_ps(s + 3 * ss);
  const __m256 r4 = _mm256_loadu_ps(s + 4 * ss), r5 = _mm256_loadu_ps(s + 5 * ss);
  const __m256 r6 = _mm256_loadu_ps(s + 6 * ss), r7 = _mm256_loadu_ps(s + 7 * ss);
  // rows a..h: t0 = a0 b0 a1 b1 | a4 b4 a5 b5, t1 = a2 b2 a3 b3 | a6 b6 a7 b7, ...
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  // u0 = a0 b0 c0 d0 | a4 b4 c4 d4, u1 = a1.. | a5.., u2 = a2.. | a6.., u3 = a3.. | a7..
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(d + 0 * ds, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(d + 1 * ds, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(d + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(d + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(d + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(d + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(d + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(d + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}

CODEGEN_AVX2 void BlocksAvx2(const float* src, float* dst, int64_t rows, int64_t cols,
                             int64_t block_begin, int64_t block_end) {
  for (int64_t b = block_begin; b < block_end; ++b) {
    const Block k = BlockAt(rows, cols, b);
    const int64_t r8 = k.r0 + (k.r1 - k.r0) / 8 * 8;
    const int64_t c8 = k.c0 + (k.c1 - k.c0) / 8 * 8;
    // 8 destination rows at a time, each written left to right across the block
    for (int64_t c = k.c0; c < c8; c += 8) {
      for (int64_t r = k.r0; r < r8; r += 8) {
        Transpose8x8(src + r * cols + c, cols, dst + c * rows + r, rows);
      }
    }
    BlockScalar(src, dst, rows, cols, k.r0, k.r1, c8, k.c1);  // right edge columns
    BlockScalar(src, dst, rows, cols, r8, k.r1, k.c0, c8);    // bottom edge rows
  }
}

// exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, with ln2 in two parts so
// r is nearly exact; exp(r) = 1 + r + r^2 p(r), p of degree 5; times 2^n from the exponent
// bits). ~1 ulp on [-87, 0]. Arguments below -87 (so -inf too) give exp(-87) = 1.6e-38
// rather than 0: in a row's sum, which is at least 1 (the max term), that is below double
// rounding for any cols < 1e21, so the sums are those of a flush to 0, and no result is
// ever a denormal (no slow microcode assists). n is rounded by adding 1.5 * 2^23: the
// float's low mantissa bits then hold n, so the exponent bits are (bits + 127) << 23 (the
// constant's own bits all shift out). NaN gives garbage (callers have ruled NaN out).
CODEGEN_AVX2 inline __m256 ExpNonPositive(__m256 x) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);  // round(x / ln2), in [-126, 0]
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// z = x + b (or x) at [i, i + 8).
template <bool kBias>
CODEGEN_AVX2 inline __m256 LoadZ(const float* x, const float* b, int64_t i) {
  const __m256 v = _mm256_loadu_ps(x + i);
  return kBias ? _mm256_add_ps(v, _mm256_loadu_ps(b + i)) : v;
}

// z at [i, i + rem), rem in [1, 8), and -inf in the other lanes (no out-of-bounds reads).
template <bool kBias>
CODEGEN_AVX2 inline __m256 LoadZTail(const float* x, const float* b, int64_t i, int64_t rem) {
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256 v = _mm256_maskload_ps(x + i, mask);
  if (kBias) v = _mm256_add_ps(v, _mm256_maskload_ps(b + i, mask));
  return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(mask));
}

CODEGEN_AVX2 inline float HorizontalMax(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// lo, hi += the 8 floats of e (elements 0-3, 4-7), in double.
CODEGEN_AVX2 inline void AddToDouble(__m256 e, __m256d& lo, __m256d& hi) {
  lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
  hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
}

// Lanes: pass 1 keeps 4 x 8 running maxima (elements i % 32), then an 8-element step and a
// masked tail. Pass 2 takes 32 elements per step: exp of 4 vectors added pairwise in float
// (2 roundings of terms <= 1: < 1.2e-7 relative on the step's 8 lane sums), those 8 sums
// added into 2 x 4 double lanes; then 8-element steps and the masked tail straight into the
// double lanes; the lanes combine in a fixed order. `next` (or null): the row to prefetch
// into L2 during pass 2, so that its pass 1 does not wait on memory (single thread,
// (512, 51200): 18-19 ms without, 14.5-15 ms with).
template <bool kBias>
CODEGEN_AVX2 float RowAvx2(const float* x, const float* b, int64_t cols, const float* next) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 mx[4] = {ninf, ninf, ninf, ninf};
  __m256 unord = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    for (int k = 0; k < 4; ++k) {
      const __m256 z = LoadZ<kBias>(x, b, i + 8 * k);
      unord = _mm256_or_ps(unord, _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
      mx[k] = _mm256_max_ps(mx[k], z);
    }
  }
  for (; i < cols; i += 8) {
    const __m256 z = i + 8 <= cols ? LoadZ<kBias>(x, b, i) : LoadZTail<kBias>(x, b, i, cols - i);
    unord = _mm256_or_ps(unord, _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
    mx[0] = _mm256_max_ps(mx[0], z);
  }
  const bool nan = _mm256_movemask_ps(unord) != 0;
  const float m =
      HorizontalMax(_mm256_max_ps(_mm256_max_ps(mx[0], mx[1]), _mm256_max_ps(mx[2], mx[3])));
  if (nan || std::isinf(m)) return FinishLse(nan, m, 0.0);

  const __m256 vm = _mm256_set1_ps(m);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (i = 0; i + 32 <= cols; i += 32) {
    const __m256 e0 = ExpNonPositive(_mm256_sub_ps(LoadZ<kBias>(x, b, i), vm));
    const __m256 e1 = ExpNonPositive(_mm256_sub_ps(LoadZ<kBias>(x, b, i + 8), vm));
    const __m256 e2 = ExpNonPositive(_mm256_sub_ps(LoadZ<kBias>(x, b, i + 16), vm));
    const __m256 e3 = ExpNonPositive(_mm256_sub_ps(LoadZ<kBias>(x, b, i + 24), vm));
    if (next) {  // the next row's 2 cache lines here into L2, under this pass's arithmetic
      _mm_prefetch(reinterpret_cast<const char*>(next + i), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(next + i + 16), _MM_HINT_T1);
    }
    AddToDouble(_mm256_add_ps(_mm256_add_ps(e0, e1), _mm256_add_ps(e2, e3)), lo, hi);
  }
  for (; i < cols; i += 8) {
    const __m256 z = i + 8 <= cols ? LoadZ<kBias>(x, b, i) : LoadZTail<kBias>(x, b, i, cols - i);
    AddToDouble(ExpNonPositive(_mm256_sub_ps(z, vm)), lo, hi);
  }
  alignas(32) double e[4];
  _mm256_store_pd(e, _mm256_add_pd(lo, hi));
  return FinishLse(false, m, (e[0] + e[1]) + (e[2] + e[3]));
}

#endif  // CODEGEN_REDUCE_X86

}  // namespace

bool ReduceUsesAvx2() {
#if CODEGEN_REDUCE_X86
  static const bool has = CpuSupportsAvx2(/*need_fma=*/true);  // set once
  return has;
#else
  return false;
#endif
}

int64_t SumSquaresNumChunks(int64_t n) { return (n + kSumSquaresChunk - 1) / kSumSquaresChunk; }

double SumSquaresChunk(const float* x, int64_t n, int64_t chunk) {
#if CODEGEN_REDUCE_X86
  if (ReduceUsesAvx2()) {
    const int64_t begin = chunk * kSumSquaresChunk;
    return ChunkAvx2(x + begin, std::min(n - begin, kSumSquaresChunk));
  }
#endif
  return SumSquaresChunkPortable(x, n, chunk);
}

double SumSquaresChunkPortable(const float* x, int64_t n, int64_t chunk) {
  const int64_t begin = chunk * kSumSquaresChunk;
  return ChunkPortable(x + begin, std::min(n - begin, kSumSquaresChunk));
}

double CombineChunkSums(const double* partials, int64_t num_chunks) {
  double total = 0.0;
  for (int64_t c = 0; c < num_chunks; ++c) total += partials[c];
  return total;
}

double SumSquares(const float* x, int64_t n) {
  double total = 0.0;  // CombineChunkSums' order, without the partials array
  for (int64_t c = 0; c < SumSquaresNumChunks(n); ++c) total += SumSquaresChunk(x, n, c);
  return total;
}

double SumSquaresReference(const float* x, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return total;
}

int64_t TransposeNumBlocks(int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return 0;
  return RowBlocks(rows) * ((cols + kTransposeBlock - 1) / kTransposeBlock);
}

void TransposeBlocks(const float* src, float* dst, int64_t rows, int64_t cols,
                     int64_t block_begin, int64_t block_end) {
#if CODEGEN_REDUCE_X86
  if (ReduceUsesAvx2()) {
    BlocksAvx2(src, dst, rows, cols, block_begin, block_end);
    return;
  }
#endif
  TransposeBlocksPortable(src, dst, rows, cols, block_begin, block_end);
}

void TransposeBlocksPortable(const float* src, float* dst, int64_t rows, int64_t cols,
                             int64_t block_begin, int64_t block_end) {
  for (int64_t b = block_begin; b < block_end; ++b) {
    const Block k = BlockAt(rows, cols, b);
    BlockScalar(src, dst, rows, cols, k.r0, k.r1, k.c0, k.c1);
  }
}

void TransposeReference(const float* src, float* dst, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  }
}

void RowLogSumExp(const float* logits, const float* bias, float* out, int64_t cols,
                  int64_t row_begin, int64_t row_end) {
#if CODEGEN_REDUCE_X86
  if (ReduceUsesAvx2()) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* x = logits + r * cols;
      const float* next = r + 1 < row_end ? x + cols : nullptr;
      out[r] = bias ? RowAvx2<true>(x, bias, cols, next) : RowAvx2<false>(x, nullptr, cols, next);
    }
    return;
  }
#endif
  RowLogSumExpPortable(logits, bias, out, cols, row_begin, row_end);
}

void RowLogSumExpPortable(const float* logits, const float* bias, float* out, int64_t cols,
                          int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* x = logits + r * cols;
    out[r] = bias ? RowPortable<true>(x, bias, cols) : RowPortable<false>(x, nullptr, cols);
  }
}

void RowLogSumExpReference(const float* logits, const float* bias, float* out, int64_t cols,
                           int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* x = logits + r * cols;
    auto z = [&](int64_t i) {
      return static_cast<double>(x[i]) + (bias ? static_cast<double>(bias[i]) : 0.0);
    };
    double m = -INFINITY;
    bool nan = false;
    for (int64_t i = 0; i < cols; ++i) {
      nan = nan || std::isnan(z(i));
      m = std::max(m, z(i));
    }
    if (nan || std::isinf(m)) {
      out[r] = nan ? NAN : static_cast<float>(m);
      continue;
    }
    double s = 0.0;
    for (int64_t i = 0; i < cols; ++i) s += std::exp(z(i) - m);
    out[r] = static_cast<float>(m + std::log(s));
  }
}

}  // namespace codegen::linalg
