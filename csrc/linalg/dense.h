// Small-batch dense products for CPU decoding: y = x * W^T.
//
// W is a weight matrix stored (n, k) row-major, like torch's Linear and the model's kernels,
// in fp32 or bf16 (raw 16-bit patterns); x is fp32 (m, k), y is fp32 (m, n). Decoding runs
// these with m = batch (1 to a few dozen): the product is bound by reading W once, so the
// kernel streams each W row exactly once and reuses it from cache for every row of x.
// bf16 weights are widened in registers (a 16-bit shift), so they cost half the bytes of
// fp32 and accumulate in fp32.
//
// Nothing here owns memory: callers pass views. The functions are thread-safe for disjoint
// column ranges [n_begin, n_end) of the same product (that is how callers parallelise).
#ifndef CODEGEN_LINALG_DENSE_H_
#define CODEGEN_LINALG_DENSE_H_

#include <cstdint>

namespace codegen::linalg {

enum class WeightType { kF32, kBF16 };

struct DenseArgs {
  const float* x = nullptr;  // (m, k) row-major
  const void* w = nullptr;   // (n, k) row-major, float or uint16_t (bf16 bits)
  WeightType w_type = WeightType::kF32;
  float* y = nullptr;  // (m, n) row-major
  int64_t m = 0;
  int64_t k = 0;
  int64_t n = 0;
};

// Columns [n_begin, n_end) of y (rows n_begin.. of W), with the fastest path this CPU has
// (AVX2 + FMA when present, portable loops otherwise). Accumulates in fp32.
void DenseColumns(const DenseArgs& args, int64_t n_begin, int64_t n_end);

// The portable loops DenseColumns falls back to on CPUs without AVX2 + FMA (exposed so the
// tests check them on every machine).
void DenseColumnsPortable(const DenseArgs& args, int64_t n_begin, int64_t n_end);

// The plain, obvious version (one dot product per output, sequential order): the reference
// the fast path is tested against. Accumulates in double.
void DenseReference(const DenseArgs& args);

// True when DenseColumns uses the AVX2 + FMA kernel on this CPU.
bool DenseUsesAvx2();

// bf16 bits -> float (exact) and float -> bf16 bits (round to nearest even, as ml_dtypes).
float Bf16ToFloat(uint16_t bits);
uint16_t FloatToBf16(float value);

}  // namespace codegen::linalg

#endif  // CODEGEN_LINALG_DENSE_H_
