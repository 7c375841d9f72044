// The STREAM-style read against its plain reference: sizes around every vector, word and
// chunk boundary, unaligned starts, several thread counts, and a buffer with a known sum.
#include <cstdint>
#include <random>
#include <vector>

#include "linalg/stream.h"
#include "tests/test_util.h"

using codegen::linalg::StreamRead;
using codegen::linalg::StreamSum;
using codegen::linalg::StreamSumReference;

TEST(StreamSumMatchesReference) {
  std::mt19937_64 rng(7);
  std::vector<unsigned char> buf((1u << 20) + 4096 + 64);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  const size_t sizes[] = {0, 1, 7, 8, 9, 31, 127, 128, 129, 4095, 4096, 4097,
                          3 * 4096 + 13, 65536 + 120, (1u << 20) + 5};
  for (size_t offset : {size_t{0}, size_t{1}, size_t{8}, size_t{37}}) {
    for (size_t size : sizes) {
      const unsigned char* p = buf.data() + offset;
      const uint64_t want = StreamSumReference(p, size);
      for (int threads : {1, 2, 3, 4, 0}) CHECK_EQ(StreamSum(p, size, threads), want);
    }
  }
}

TEST(StreamSumKnownValue) {
  // Words 1, 2, ..., n sum to n (n + 1) / 2; a tail of 3 bytes 0x01 0x02 0x03 adds 0x030201.
  const size_t n = 100000;
  std::vector<uint64_t> words(n + 1, 0);
  for (size_t i = 0; i < n; ++i) words[i] = i + 1;
  auto* bytes = reinterpret_cast<unsigned char*>(words.data());
  bytes[n * 8] = 1;
  bytes[n * 8 + 1] = 2;
  bytes[n * 8 + 2] = 3;
  const uint64_t want = uint64_t{n} * (n + 1) / 2 + 0x030201u;
  CHECK_EQ(StreamSum(words.data(), n * 8 + 3, 2), want);
  CHECK_EQ(StreamSumReference(words.data(), n * 8 + 3), want);
}

TEST(StreamReadTimesEveryPass) {
  std::vector<uint64_t> words(50000, 3);
  const auto result = StreamRead(words.data(), words.size() * 8, 2, 3);
  CHECK_EQ(result.checksum, uint64_t{150000});
  CHECK_EQ(result.seconds.size(), size_t{3});
  for (double s : result.seconds) CHECK(s >= 0.0);
  CHECK_THROWS(StreamRead(words.data(), 8, 1, 0));
  CHECK_THROWS(StreamSum(nullptr, 8, 1));
}
