// Shared by the XLA FFI handlers: splitting a handler's work over XLA's intra-op thread pool,
// and shapes in error messages. Owns nothing beyond one call.
#ifndef CODEGEN_XLA_FFI_POOL_H_
#define CODEGEN_XLA_FFI_POOL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace codegen::xla_ffi {

namespace detail {

// Tasks [0, num_tasks) claimed from a shared counter. Shared by the caller and the pool
// tasks; pool tasks may start after the call returned (every task already claimed), so they
// hold it by shared_ptr and then only touch the counter.
struct PoolJob {
  std::function<void(int64_t)> run;
  int64_t num_tasks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Work() {
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= num_tasks) return;
      run(t);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

}  // namespace detail

// run(t) for every t in [0, num_tasks) on the pool and the calling thread; returns when all
// are done. The caller only ever waits for tasks another thread is already running, so a
// busy pool cannot deadlock it. `run` may refer to the caller's stack: it is only called for
// claimed tasks, all finished before this returns.
inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t num_tasks,
                        std::function<void(int64_t)> run) {
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), num_tasks - 1);
  if (helpers <= 0) {
    for (int64_t t = 0; t < num_tasks; ++t) run(t);
    return;
  }
  auto job = std::make_shared<detail::PoolJob>();
  job->run = std::move(run);
  job->num_tasks = num_tasks;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job] { job->Work(); });
  job->Work();
  while (job->done.load(std::memory_order_acquire) < num_tasks) std::this_thread::yield();
}

// "[2, 3]" for dims {2, 3}.
inline std::string ShapeString(xla::ffi::Span<const int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace codegen::xla_ffi

#endif  // CODEGEN_XLA_FFI_POOL_H_
