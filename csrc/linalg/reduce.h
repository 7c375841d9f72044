// Memory-bound CPU kernels for the training step: the sum of squares of a float array (the
// gradient global norm), a 2-D transpose and a row-wise log-sum-exp with bias (the LM head's
// cross-entropy). XLA:CPU runs the first two 3-5x below the memory bandwidth on the dev
// machine (a materialised x * x plus windowed reductions; a single-threaded transpose) and
// writes logits + bias out as a fresh array before its windowed log-sum-exp reductions, so
// the JAX code calls these through XLA FFI (xla_ffi/reduce_ffi.h).
//
// Sum of squares: the array is cut into fixed chunks of kSumSquaresChunk elements; each
// chunk's sum is computed in double (every f32 square is exact in double) with a fixed lane
// layout, and the chunk sums are added in chunk order. The result depends only on the data,
// not on how many threads computed which chunks, and the AVX2 + FMA path and the portable
// path give bit-identical results (same lanes, same combination order, exact products).
//
// Nothing here owns memory: callers pass views. Every function is thread-safe for disjoint
// chunks / blocks of the same call (that is how callers parallelise).
#ifndef CODEGEN_LINALG_REDUCE_H_
#define CODEGEN_LINALG_REDUCE_H_

#include <cstdint>

namespace codegen::linalg {

// Elements per sum-of-squares chunk (256 KiB of floats): the unit of work and of rounding.
constexpr int64_t kSumSquaresChunk = int64_t{1} << 16;

// Number of chunks of an n-element array (0 for n = 0).
int64_t SumSquaresNumChunks(int64_t n);

// Sum of x[i]^2 over chunk `chunk` of an n-element array, in double, with the fastest path
// this CPU has (AVX2 + FMA when present, portable loops otherwise; both give equal results).
double SumSquaresChunk(const float* x, int64_t n, int64_t chunk);

// The portable loops SumSquaresChunk falls back to (exposed so tests check them everywhere).
double SumSquaresChunkPortable(const float* x, int64_t n, int64_t chunk);

// Chunk sums added in chunk order: the whole array's sum from its partials.
double CombineChunkSums(const double* partials, int64_t num_chunks);

// The whole array on the calling thread (chunks in order): equal to any threaded split.
double SumSquares(const float* x, int64_t n);

// The plain, obvious version (one double accumulator, sequential): the reference.
double SumSquaresReference(const float* x, int64_t n);

// Transposes: src is (rows, cols) row-major, dst is (cols, rows) row-major, dst[c][r] =
// src[r][c], exact. Work is cut into square blocks of kTransposeBlock x kTransposeBlock
// source elements (edge blocks smaller); blocks are numbered column-block-major (block b
// covers source column block b / TransposeRowBlocks(rows), row block b % that), so
// consecutive blocks fill the same destination rows left to right.
constexpr int64_t kTransposeBlock = 64;

int64_t TransposeNumBlocks(int64_t rows, int64_t cols);

// Blocks [block_begin, block_end), with the fastest path this CPU has (8x8 in-register
// AVX2 transposes when present, portable loops otherwise).
void TransposeBlocks(const float* src, float* dst, int64_t rows, int64_t cols,
                     int64_t block_begin, int64_t block_end);

// The portable loops TransposeBlocks falls back to.
void TransposeBlocksPortable(const float* src, float* dst, int64_t rows, int64_t cols,
                             int64_t block_begin, int64_t block_end);

// The plain double loop: the reference.
void TransposeReference(const float* src, float* dst, int64_t rows, int64_t cols);

// Row-wise log-sum-exp with an optional bias (the LM head's cross-entropy normaliser):
// logits is (rows, cols) row-major, bias is (cols,) or null (no bias), and for each row r in
// [row_begin, row_end), with z = logits[r, :] + bias (an fp32 add, as in JAX):
//   out[r] = m + log(sum(exp(z - m))),  m = max(z),
// like jax.nn.logsumexp(z): a NaN anywhere gives NaN, else a +inf gives +inf, a row of all
// -inf (or cols = 0) gives -inf. Two passes per row (the max, then the sum; a (51200,) row
// and the bias are 400 KB, so the second pass reads them from L2, while it prefetches the
// next row of the range into L2 for the next max pass), the sum of exp in double with a
// fixed lane layout, so the result is within ~1.5e-7 relative of float64 arithmetic.
// A row is computed by one call, in a fixed order: the result does not depend on how the
// caller splits rows over threads.
//
// The fastest path this CPU has: AVX2 + FMA with a vectorised expf (Cephes range reduction
// and polynomial, ~1 ulp on [-87, 0]; below -87 the terms are negligible against the sum,
// which is at least 1), 4 terms per lane added in float before the double lanes, or the
// portable loops below. Both are within 3e-7 relative of the double reference (tested).
void RowLogSumExp(const float* logits, const float* bias, float* out, int64_t cols,
                  int64_t row_begin, int64_t row_end);

// Scalar loops with std::exp on float, the sum in double (exposed so tests check them).
void RowLogSumExpPortable(const float* logits, const float* bias, float* out, int64_t cols,
                          int64_t row_begin, int64_t row_end);

// Everything in double with std::exp (z = double(logits) + double(bias)): the reference.
void RowLogSumExpReference(const float* logits, const float* bias, float* out, int64_t cols,
                           int64_t row_begin, int64_t row_end);

// True when the kernels above use their AVX2 + FMA paths on this CPU.
bool ReduceUsesAvx2();

}  // namespace codegen::linalg

#endif  // CODEGEN_LINALG_REDUCE_H_
