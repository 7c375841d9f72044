// ParallelFor: run fn(begin, end) over [0, n) in chunks on up to num_threads threads.
// Threads are created per call and joined before returning (no pool, no global state); the
// first exception thrown by any chunk is rethrown in the caller.
#ifndef CODEGEN_COMMON_PARALLEL_H_
#define CODEGEN_COMMON_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace codegen {

inline int ResolveThreads(int num_threads) {
  if (num_threads > 0) return num_threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

template <typename F>
void ParallelFor(size_t n, size_t chunk, int num_threads, F&& fn) {
  if (n == 0) return;
  chunk = std::max<size_t>(chunk, 1);
  const size_t num_chunks = (n + chunk - 1) / chunk;
  const size_t workers = std::min<size_t>(static_cast<size_t>(ResolveThreads(num_threads)),
                                          num_chunks);
  if (workers <= 1) {
    fn(size_t{0}, n);
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&]() {
    for (;;) {
      const size_t c = next.fetch_add(1);
      if (c >= num_chunks) return;
      try {
        fn(c * chunk, std::min(n, (c + 1) * chunk));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(num_chunks);
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (size_t t = 0; t + 1 < workers; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace codegen

#endif  // CODEGEN_COMMON_PARALLEL_H_
