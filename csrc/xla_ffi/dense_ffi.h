// XLA FFI handler for the CPU dense kernel (linalg/dense.h), registered from Python with
// jax.ffi.register_ffi_target("codegen_core_dense", ..., platform="cpu").
//
// Call: codegen_core_dense(x: f32[..., k], w: {f32, bf16}[n, k]) -> f32[..., n], i.e.
// y = x @ w.T with fp32 accumulation. The output columns are split into chunks that XLA's
// intra-op thread pool and the calling thread claim from a shared counter; the caller only
// ever waits for chunks another thread is already running, so it cannot deadlock on a busy
// pool. Shape or dtype mismatches return an InvalidArgument error naming the operand.
#ifndef CODEGEN_XLA_FFI_DENSE_FFI_H_
#define CODEGEN_XLA_FFI_DENSE_FFI_H_

#include "xla/ffi/api/c_api.h"

extern "C" XLA_FFI_Error* CodegenDenseCpu(XLA_FFI_CallFrame* call_frame);

#endif  // CODEGEN_XLA_FFI_DENSE_FFI_H_
