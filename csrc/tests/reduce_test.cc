// The sum-of-squares, transpose and row log-sum-exp kernels against their plain references:
// odd sizes, empty, one element, lengths around the 32-lane step and the chunk size,
// non-multiple-of-8 and non-multiple-of-block shapes; the sum's bits independent of the
// thread split and equal on the AVX2 and portable paths; log-sum-exp's NaN / inf rules.
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

namespace {

// |got - want| <= tol * max(1, |want|), or both the same non-finite value. Both paths pass
// at 1.5e-7 on this data (the float result's own rounding is 6e-8); the tests ask 3e-7.
bool LseClose(float got, float want, double tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  const double w = want;
  return std::fabs(static_cast<double>(got) - w) <= tol * std::max(1.0, std::fabs(w));
}

using LseFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);

// Every row of (rows, cols) by `fn` in two calls (as the threaded caller splits rows) against
// the double reference.
void CheckLse(LseFn fn, const std::vector<float>& x, const float* bias, int64_t rows,
              int64_t cols, double tol, const char* what) {
  std::vector<float> ref(static_cast<size_t>(rows), 0.0f), got(static_cast<size_t>(rows), 0.5f);
  la::RowLogSumExpReference(x.data(), bias, ref.data(), cols, 0, rows);
  fn(x.data(), bias, got.data(), cols, 0, rows / 2);
  fn(x.data(), bias, got.data(), cols, rows / 2, rows);
  for (int64_t r = 0; r < rows; ++r) {
    if (!LseClose(got[r], ref[r], tol)) {
      CHECK(false && "row log-sum-exp differs from the reference");
      std::cerr << "  " << what << " rows=" << rows << " cols=" << cols << " row " << r
                << " got=" << got[r] << " ref=" << ref[r] << "\n";
      return;
    }
  }
}

}  // namespace

TEST(RowLogSumExpMatchesReference) {
  const int64_t cols_list[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000, 4099, 51200};
  for (LseFn fn : {&la::RowLogSumExp, &la::RowLogSumExpPortable}) {
    for (int64_t cols : cols_list) {
      const int64_t rows = cols >= 4096 ? 3 : 6;
      auto x = Normal(rows * cols, static_cast<uint32_t>(cols * 3 + 1));
      auto bias = Normal(cols, static_cast<uint32_t>(cols + 5));
      // row 0: unit scale; row 1: large magnitudes (a spread of ~300: most terms flush);
      // row 2: tiny magnitudes (every term ~1); later rows: -inf entries and offsets
      for (int64_t c = 0; c < cols; ++c) {
        x[cols + c] *= 100.0f;
        x[2 * cols + c] *= 1e-6f;
        if (rows > 3 && c % 3 == 1) x[3 * cols + c] = -INFINITY;
        if (rows > 4) x[4 * cols + c] += 1000.0f;
        if (rows > 5) x[5 * cols + c] -= 3000.0f;
      }
      CheckLse(fn, x, bias.data(), rows, cols, 3e-7, "bias");
      CheckLse(fn, x, nullptr, rows, cols, 3e-7, "no bias");
    }
  }
}

TEST(RowLogSumExpSpecialValues) {
  const int64_t cols = 19;  // 16 + a masked tail of 3
  const int64_t rows = 7;
  std::vector<float> x(static_cast<size_t>(rows * cols), 0.25f);
  std::vector<float> bias(static_cast<size_t>(cols), 0.0f);
  for (int64_t c = 0; c < cols; ++c) x[c] = -INFINITY;  // row 0: all -inf -> -inf
  x[1 * cols + 17] = NAN;                                 // row 1: NaN in the tail -> NaN
  x[2 * cols + 4] = INFINITY;                             // row 2: +inf -> +inf
  x[3 * cols + 4] = INFINITY;                             // row 3: +inf and NaN -> NaN
  x[3 * cols + 5] = NAN;
  x[4 * cols + 18] = INFINITY;                            // row 4: +inf in the tail
  x[5 * cols + 0] = 88.0f;                                // row 5: exp(88) overflows f32
  for (int64_t c = 0; c < cols; ++c) x[6 * cols + c] = -INFINITY;
  x[6 * cols + 18] = -2.0f;  // row 6: one finite entry (in the tail) -> exactly it
  for (LseFn fn : {&la::RowLogSumExp, &la::RowLogSumExpPortable}) {
    std::vector<float> out(static_cast<size_t>(rows), 0.5f);
    fn(x.data(), bias.data(), out.data(), cols, 0, rows);
    CHECK(std::isinf(out[0]) && out[0] < 0);
    CHECK(std::isnan(out[1]));
    CHECK(std::isinf(out[2]) && out[2] > 0);
    CHECK(std::isnan(out[3]));
    CHECK(std::isinf(out[4]) && out[4] > 0);
    CHECK(LseClose(out[5], static_cast<float>(88.0 + std::log1p(18 * std::exp(0.25 - 88.0))),
                   1e-6));
    CHECK_EQ(out[6], -2.0f);
    // +inf logits and -inf bias make a NaN: jax.nn.logsumexp gives NaN too
    std::vector<float> b2(bias);
    b2[4] = -INFINITY;
    fn(x.data(), b2.data(), out.data(), cols, 2, 3);
    CHECK(std::isnan(out[2]));
    // cols = 0: log(0) = -inf; rows = 0 (an empty range): nothing written
    float empty = 0.5f;
    fn(nullptr, nullptr, &empty, 0, 0, 1);
    CHECK(std::isinf(empty) && empty < 0);
    empty = 0.5f;
    fn(x.data(), bias.data(), &empty, cols, 0, 0);
    CHECK_EQ(empty, 0.5f);
  }
}

TEST(RowLogSumExpIsIndependentOfTheRowSplit) {
  // one call over all rows (each next row prefetched) and one call per row: the same bits
  const int64_t rows = 9, cols = 5000;
  const auto x = Normal(rows * cols, 21);
  const auto bias = Normal(cols, 22);
  std::vector<float> all(rows), each(rows);
  la::RowLogSumExp(x.data(), bias.data(), all.data(), cols, 0, rows);
  for (int64_t r = 0; r < rows; ++r) {
    la::RowLogSumExp(x.data(), bias.data(), each.data(), cols, r, r + 1);
  }
  bool same = true;
  for (int64_t r = 0; r < rows; ++r) same = same && all[r] == each[r];
  CHECK(same);
}

TEST(RowLogSumExpOneColumnIsExact) {
  // V = 1: log(exp(z - z)) = 0, so the result is z itself
  const auto x = Normal(37, 11);
  const float bias = 0.75f;
  std::vector<float> out(37, 0.0f);
  la::RowLogSumExp(x.data(), &bias, out.data(), 1, 0, 37);
  bool exact = true;
  for (size_t r = 0; r < 37; ++r) exact = exact && out[r] == x[r] + bias;
  CHECK(exact);
}
