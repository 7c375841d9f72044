// Memory read bandwidth, measured the way CPU decoding spends it: a STREAM-style pass that
// reads a large buffer once with several threads and consumes every byte (a 64-bit sum), so
// the compiler cannot drop the loads. Decoding at batch 1 is a read of every weight once per
// token, so bytes read per second here is its ceiling (a copy, by contrast, also writes).
//
// Nothing here owns memory: callers pass a view of at least `bytes` readable bytes.
#ifndef CODEGEN_LINALG_STREAM_H_
#define CODEGEN_LINALG_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace codegen::linalg {

// Sum, modulo 2^64, of the buffer read as little-endian 64-bit words (a final partial word
// is zero-padded), split over num_threads threads (0: all cores). Exact and independent of
// the split, so the threaded, vectorised pass is checked against StreamSumReference.
uint64_t StreamSum(const void* data, size_t bytes, int num_threads);

// The same sum with one thread and a plain loop: the reference.
uint64_t StreamSumReference(const void* data, size_t bytes);

struct StreamReadResult {
  uint64_t checksum = 0;         // StreamSum of the buffer (equal in every repetition)
  std::vector<double> seconds;   // wall time of each repetition's full pass
};

// `reps` timed passes of StreamSum over the buffer (bytes read per pass: `bytes`). Throws
// std::invalid_argument for reps < 1 and std::runtime_error if two passes disagree (memory
// changed under the reader).
StreamReadResult StreamRead(const void* data, size_t bytes, int num_threads, int reps);

// True when StreamSum uses AVX2 loads on this CPU.
bool StreamUsesAvx2();

}  // namespace codegen::linalg

#endif  // CODEGEN_LINALG_STREAM_H_
