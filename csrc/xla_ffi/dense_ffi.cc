#include "xla_ffi/dense_ffi.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "linalg/dense.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi/pool.h"

namespace ffi = xla::ffi;

namespace codegen::xla_ffi {
namespace {

using linalg::DenseArgs;

ffi::Error DenseImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w,
                     ffi::ResultBuffer<ffi::F32> y) {
  const auto x_dims = x.dimensions();
  const auto w_dims = w.dimensions();
  if (x_dims.size() < 1) return ffi::Error::InvalidArgument("codegen_core_dense: x is a scalar");
  if (w_dims.size() != 2) {
    return ffi::Error::InvalidArgument("codegen_core_dense: w must be 2-D (n, k), got " +
                                       ShapeString(w_dims));
  }
  DenseArgs args;
  args.k = x_dims.back();
  args.n = w_dims[0];
  args.m = 1;  // the product of x's leading dims (not element_count / k: k may be 0)
  for (size_t i = 0; i + 1 < x_dims.size(); ++i) args.m *= x_dims[i];
  if (w_dims[1] != args.k) {
    return ffi::Error::InvalidArgument("codegen_core_dense: x " + ShapeString(x_dims) +
                                       " and w " + ShapeString(w_dims) +
                                       " disagree on the contracted size k");
  }
  if (w.element_type() == ffi::DataType::F32) {
    args.w_type = linalg::WeightType::kF32;
  } else if (w.element_type() == ffi::DataType::BF16) {
    args.w_type = linalg::WeightType::kBF16;
  } else {
    return ffi::Error::InvalidArgument("codegen_core_dense: w must be float32 or bfloat16");
  }
  const auto y_dims = y->dimensions();
  if (static_cast<int64_t>(y->element_count()) != args.m * args.n ||
      y_dims.size() != x_dims.size() || y_dims.back() != args.n) {
    return ffi::Error::InvalidArgument("codegen_core_dense: result " + ShapeString(y_dims) +
                                       " is not x's shape with its last dim set to n");
  }
  args.x = x.typed_data();
  args.w = w.untyped_data();
  args.y = y->typed_data();
  if (args.m == 0 || args.n == 0) return ffi::Error::Success();

  // Chunks of W rows: about 256 KB of weights each, a multiple of the 8-row block.
  const int64_t row_bytes = args.k * (args.w_type == linalg::WeightType::kF32 ? 4 : 2);
  int64_t chunk = std::max<int64_t>(8, (int64_t{256} << 10) / std::max<int64_t>(row_bytes, 1));
  chunk = (chunk + 7) / 8 * 8;
  const int64_t num_chunks = (args.n + chunk - 1) / chunk;
  ParallelFor(pool, num_chunks, [&args, chunk](int64_t c) {
    linalg::DenseColumns(args, c * chunk, std::min(args.n, (c + 1) * chunk));
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace codegen::xla_ffi

XLA_FFI_DEFINE_HANDLER_SYMBOL(CodegenDenseCpu, codegen::xla_ffi::DenseImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
