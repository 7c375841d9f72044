#include "xla_ffi/reduce_ffi.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "linalg/reduce.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi/pool.h"

namespace ffi = xla::ffi;

namespace codegen::xla_ffi {
namespace {

namespace la = linalg;

ffi::Error SumSquaresImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::ResultBuffer<ffi::F32> out) {
  if (out->element_count() != 1 || out->dimensions().size() != 0) {
    return ffi::Error::InvalidArgument("codegen_core_sum_squares: result must be a scalar, got " +
                                       ShapeString(out->dimensions()));
  }
  const float* data = x.typed_data();
  const auto n = static_cast<int64_t>(x.element_count());
  const int64_t chunks = la::SumSquaresNumChunks(n);
  std::vector<double> partials(static_cast<size_t>(chunks));
  double* slots = partials.data();
  ParallelFor(pool, chunks,
              [data, n, slots](int64_t c) { slots[c] = la::SumSquaresChunk(data, n, c); });
  *out->typed_data() = static_cast<float>(la::CombineChunkSums(slots, chunks));
  return ffi::Error::Success();
}

// XLA:CPU hands a large result fresh memory on every call (glibc mmaps big allocations), so
// a transpose that writes it first pays one page fault per 4 KiB: measured on the dev
// machine, a (512, 51200) transpose took 41-64 ms that way against 14-20 ms into memory
// already mapped. Asking for transparent huge pages on the 2 MiB-aligned part of the result
// before writing it (a hint only: the contents are unaffected, and the kernel ignores it when
// THP is off) brings the first write down to 14-16 ms. Small results are left alone.
void AdviseHugePages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < static_cast<int64_t>(4 * kHuge)) return;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (begin + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // a hint
#else
  (void)data;
  (void)bytes;
#endif
}

// Blocks per task: 16 blocks of 64 x 64 floats, 256 KiB read and written.
constexpr int64_t kBlocksPerTask = 16;

ffi::Error TransposeImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                         ffi::ResultBuffer<ffi::F32> y) {
  const auto x_dims = x.dimensions();
  const auto y_dims = y->dimensions();
  if (x_dims.size() != 2) {
    return ffi::Error::InvalidArgument("codegen_core_transpose: x must be 2-D (r, c), got " +
                                       ShapeString(x_dims));
  }
  const int64_t rows = x_dims[0], cols = x_dims[1];
  if (y_dims.size() != 2 || y_dims[0] != cols || y_dims[1] != rows) {
    return ffi::Error::InvalidArgument("codegen_core_transpose: result " + ShapeString(y_dims) +
                                       " is not x " + ShapeString(x_dims) + " transposed");
  }
  const float* src = x.typed_data();
  float* dst = y->typed_data();
  AdviseHugePages(dst, rows * cols * static_cast<int64_t>(sizeof(float)));
  const int64_t blocks = la::TransposeNumBlocks(rows, cols);
  const int64_t tasks = (blocks + kBlocksPerTask - 1) / kBlocksPerTask;
  ParallelFor(pool, tasks, [=](int64_t t) {
    la::TransposeBlocks(src, dst, rows, cols, t * kBlocksPerTask,
                        std::min(blocks, (t + 1) * kBlocksPerTask));
  });
  return ffi::Error::Success();
}

// Rows per task: about 512 Ki elements (2 MiB of logits; 10 rows of 51200) each, at least
// one row: within a task the kernel prefetches each next row under the current row's exp
// pass (1 row per task measured 9.5 ms against 8 ms for the (512, 51200) logits on 2
// threads), and 50-odd tasks still balance the 2 threads.
constexpr int64_t kLseTaskElements = int64_t{1} << 19;

ffi::Error RowLogSumExpImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits,
                            ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> out) {
  const auto l_dims = logits.dimensions();
  const auto b_dims = bias.dimensions();
  const auto o_dims = out->dimensions();
  if (l_dims.size() != 2) {
    return ffi::Error::InvalidArgument(
        "codegen_core_row_logsumexp: logits must be 2-D (n, v), got " + ShapeString(l_dims));
  }
  const int64_t rows = l_dims[0], cols = l_dims[1];
  if (b_dims.size() != 1 || b_dims[0] != cols) {
    return ffi::Error::InvalidArgument("codegen_core_row_logsumexp: bias must be (v,) = [" +
                                       std::to_string(cols) + "] for logits " +
                                       ShapeString(l_dims) + ", got " + ShapeString(b_dims));
  }
  if (o_dims.size() != 1 || o_dims[0] != rows) {
    return ffi::Error::InvalidArgument("codegen_core_row_logsumexp: result must be (n,) = [" +
                                       std::to_string(rows) + "] for logits " +
                                       ShapeString(l_dims) + ", got " + ShapeString(o_dims));
  }
  const float* x = logits.typed_data();
  const float* b = bias.typed_data();
  float* y = out->typed_data();
  const int64_t rows_per_task = std::max<int64_t>(1, kLseTaskElements / std::max<int64_t>(cols, 1));
  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;
  ParallelFor(pool, tasks, [=](int64_t t) {
    la::RowLogSumExp(x, b, y, cols, t * rows_per_task, std::min(rows, (t + 1) * rows_per_task));
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace codegen::xla_ffi

XLA_FFI_DEFINE_HANDLER_SYMBOL(CodegenSumSquaresCpu, codegen::xla_ffi::SumSquaresImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CodegenTransposeCpu, codegen::xla_ffi::TransposeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CodegenRowLogSumExpCpu, codegen::xla_ffi::RowLogSumExpImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
