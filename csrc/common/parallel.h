// RunWorkers: run work(w) for w in [0, workers), w = 0 on the calling thread.
// ParallelFor: run fn(begin, end) over [0, n) in chunks on up to num_threads threads.
// Threads are created per call and joined before returning (no pool, no global state); the
// first exception thrown by any worker is rethrown in the caller.
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

// Runs work(w) for every w in [0, workers): w = 0 on the calling thread, the others on
// threads joined before returning. When a worker throws, stop() is called once per throw
// (under a lock, so the others can stop taking work) and the first exception is rethrown
// here after every worker has finished.
template <typename Work, typename Stop>
void RunWorkers(size_t workers, Work&& work, Stop&& stop) {
  std::exception_ptr error;
  std::mutex error_mutex;
  auto guarded = [&](size_t w) {
    try {
      work(w);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      stop();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers > 0 ? workers - 1 : 0);
  for (size_t t = 1; t < workers; ++t) threads.emplace_back(guarded, t);
  guarded(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
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
  RunWorkers(
      workers,
      [&](size_t) {
        for (size_t c = next.fetch_add(1); c < num_chunks; c = next.fetch_add(1)) {
          fn(c * chunk, std::min(n, (c + 1) * chunk));
        }
      },
      [&] { next.store(num_chunks); });
}

}  // namespace codegen

#endif  // CODEGEN_COMMON_PARALLEL_H_
