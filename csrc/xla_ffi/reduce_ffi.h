// XLA FFI handlers for the memory-bound training kernels (linalg/reduce.h), registered from
// Python with jax.ffi.register_ffi_target(name, ..., platform="cpu"):
//
//   codegen_core_sum_squares(x: f32[any shape]) -> f32[]   sum of x^2 (no sqrt), computed in
//       double over fixed chunks added in chunk order (deterministic), rounded to f32 once.
//   codegen_core_transpose(x: f32[r, c]) -> f32[c, r]       exact.
//   codegen_core_row_logsumexp(logits: f32[n, v], bias: f32[v]) -> f32[n]
//       log(sum(exp(logits + bias), axis=-1)) with jax.nn.logsumexp's NaN / inf rules, the
//       sum in double (within ~2e-7 relative of float64), one row per thread (deterministic).
//
// All split their work (sum chunks, transpose blocks, rows) into tasks that XLA's intra-op thread
// pool and the calling thread claim from a shared counter; the caller only ever waits for
// tasks another thread is already running, so it cannot deadlock on a busy pool (the scheme
// of dense_ffi.h). Bad operands return an InvalidArgument error naming the operand. A large
// transpose result is advised to use transparent huge pages before its first write (XLA's
// fresh result memory otherwise costs a page fault per 4 KiB, 2-3x the transpose itself).
#ifndef CODEGEN_XLA_FFI_REDUCE_FFI_H_
#define CODEGEN_XLA_FFI_REDUCE_FFI_H_

#include "xla/ffi/api/c_api.h"

extern "C" XLA_FFI_Error* CodegenSumSquaresCpu(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* CodegenTransposeCpu(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* CodegenRowLogSumExpCpu(XLA_FFI_CallFrame* call_frame);

#endif  // CODEGEN_XLA_FFI_REDUCE_FFI_H_
