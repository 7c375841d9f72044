#include "linalg/reduce.h"

#include <algorithm>

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

bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif  // CODEGEN_REDUCE_X86

}  // namespace

bool ReduceUsesAvx2() {
#if CODEGEN_REDUCE_X86
  static const bool has = CpuHasAvx2Fma();  // immutable after first use
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

}  // namespace codegen::linalg
