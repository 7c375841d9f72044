// The sum-of-squares and transpose kernels against their plain references: odd sizes,
// empty, one element, lengths around the 32-lane step and the chunk size, non-multiple-of-8
// and non-multiple-of-block shapes; the sum's bits independent of the thread split and equal
// on the AVX2 and portable paths.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "linalg/reduce.h"
#include "tests/test_util.h"

namespace {

namespace la = codegen::linalg;

std::vector<float> Normal(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  return x;
}

// The threaded caller's scheme: `threads` threads claim chunks from a shared counter and
// store each chunk's sum in its slot; the slots are then added in chunk order.
double ThreadedSum(const std::vector<float>& x, int threads) {
  const auto n = static_cast<int64_t>(x.size());
  const int64_t chunks = la::SumSquaresNumChunks(n);
  std::vector<double> partials(static_cast<size_t>(chunks), NAN);
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      partials[c] = la::SumSquaresChunk(x.data(), n, c);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  return la::CombineChunkSums(partials.data(), chunks);
}

}  // namespace

TEST(SumSquaresMatchesReference) {
  const int64_t sizes[] = {0, 1, 2, 7, 8, 31, 32, 33, 63, 100, 1000, 4097,
                           la::kSumSquaresChunk - 1, la::kSumSquaresChunk,
                           la::kSumSquaresChunk + 1, 3 * la::kSumSquaresChunk + 45};
  for (int64_t n : sizes) {
    const auto x = Normal(n, static_cast<uint32_t>(n + 1));
    const double ref = la::SumSquaresReference(x.data(), n);
    const double fast = la::SumSquares(x.data(), n);
    double portable = 0.0;
    for (int64_t c = 0; c < la::SumSquaresNumChunks(n); ++c) {
      portable += la::SumSquaresChunkPortable(x.data(), n, c);
    }
    if (!(std::fabs(fast - ref) <= 1e-12 * (1.0 + ref))) {
      CHECK(false && "sum of squares differs from the reference");
      std::cerr << "  n=" << n << " fast=" << fast << " ref=" << ref << "\n";
    }
    CHECK_EQ(fast, portable);  // bit-identical paths
  }
  CHECK_EQ(la::SumSquaresNumChunks(0), int64_t{0});
  CHECK_EQ(la::SumSquares(nullptr, 0), 0.0);
  const float one = -3.0f;
  CHECK_EQ(la::SumSquares(&one, 1), 9.0);
}

TEST(SumSquaresIsIndependentOfTheThreadSplit) {
  const auto x = Normal(5 * la::kSumSquaresChunk + 1234, 7);
  const double one = la::SumSquares(x.data(), static_cast<int64_t>(x.size()));
  for (int threads : {1, 2, 3, 8}) CHECK_EQ(ThreadedSum(x, threads), one);
}

TEST(SumSquaresKeepsInfAndNan) {
  std::vector<float> x(100, 1.0f);
  x[57] = INFINITY;
  CHECK(std::isinf(la::SumSquares(x.data(), 100)));
  x[3] = NAN;
  CHECK(std::isnan(la::SumSquares(x.data(), 100)));
}

TEST(TransposeMatchesReference) {
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{1, 1},  {1, 9},    {9, 1},   {8, 8},   {7, 13},  {64, 64},
                          {65, 63}, {3, 200}, {200, 3}, {130, 77}, {16, 520}, {513, 40}};
  using BlocksFn = void (*)(const float*, float*, int64_t, int64_t, int64_t, int64_t);
  for (BlocksFn blocks : {&la::TransposeBlocks, &la::TransposeBlocksPortable}) {
    for (const auto& s : shapes) {
      const auto src = Normal(s.rows * s.cols, static_cast<uint32_t>(s.rows * 1000 + s.cols));
      std::vector<float> ref(src.size(), NAN), got(src.size(), NAN);
      la::TransposeReference(src.data(), ref.data(), s.rows, s.cols);
      // in two ranges of blocks, as the threaded caller splits them
      const int64_t num = la::TransposeNumBlocks(s.rows, s.cols);
      blocks(src.data(), got.data(), s.rows, s.cols, 0, num / 3);
      blocks(src.data(), got.data(), s.rows, s.cols, num / 3, num);
      bool equal = true;
      for (size_t i = 0; i < ref.size(); ++i) equal = equal && got[i] == ref[i];
      if (!equal) {
        CHECK(false && "transpose differs from the reference");
        std::cerr << "  rows=" << s.rows << " cols=" << s.cols << "\n";
      }
    }
  }
  CHECK_EQ(la::TransposeNumBlocks(0, 5), int64_t{0});
  CHECK_EQ(la::TransposeNumBlocks(5, 0), int64_t{0});
  CHECK_EQ(la::TransposeNumBlocks(65, 64), int64_t{2});
}
