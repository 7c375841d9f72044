// The CPU dense kernel against its plain reference, over shapes that hit every tile path
// (row tiles of 4 and 1, 8-row W blocks and single rows, k tails) and both weight types.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "linalg/dense.h"
#include "tests/test_util.h"

namespace {

using codegen::linalg::DenseArgs;
using codegen::linalg::WeightType;

using ColumnsFn = void (*)(const DenseArgs&, int64_t, int64_t);

// Max |fast - reference| / (1 + |reference|) over the product, with columns computed in two
// disjoint ranges (as the threaded caller splits them).
double DenseError(ColumnsFn columns, int64_t m, int64_t k, int64_t n, WeightType type,
                  uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (auto& v : x) v = normal(rng);
  std::vector<float> w32(static_cast<size_t>(n * k));
  std::vector<uint16_t> w16(w32.size());
  for (size_t i = 0; i < w32.size(); ++i) {
    w16[i] = codegen::linalg::FloatToBf16(normal(rng));
    w32[i] = codegen::linalg::Bf16ToFloat(w16[i]);
  }
  std::vector<float> fast(static_cast<size_t>(m * n), NAN), ref(fast.size(), NAN);
  DenseArgs args;
  args.x = x.data();
  args.w_type = type;
  args.w = type == WeightType::kF32 ? static_cast<const void*>(w32.data()) : w16.data();
  args.m = m;
  args.k = k;
  args.n = n;
  args.y = fast.data();
  const int64_t split = n / 3;
  columns(args, 0, split);
  columns(args, split, n);
  args.y = ref.data();
  codegen::linalg::DenseReference(args);
  double worst = 0.0;
  for (size_t i = 0; i < fast.size(); ++i) {
    const double err = std::fabs(double{fast[i]} - double{ref[i]}) / (1.0 + std::fabs(ref[i]));
    worst = std::isnan(err) ? INFINITY : std::max(worst, err);
  }
  return worst;
}

}  // namespace

struct DenseCase {
  int64_t m, k, n;
  WeightType type;
};

TEST(DenseMatchesReference) {
  const WeightType f32 = WeightType::kF32, bf16 = WeightType::kBF16;
  const DenseCase cases[] = {{1, 64, 32, f32},  {1, 1000, 37, f32}, {3, 7, 9, f32},
                             {4, 256, 8, f32},  {5, 129, 17, f32},  {8, 1024, 64, f32},
                             {9, 24, 15, f32},  {16, 8, 1, f32},    {1, 64, 32, bf16},
                             {2, 333, 19, bf16}, {4, 512, 24, bf16}, {7, 96, 41, bf16}};
  // the dispatched path (AVX2 + FMA on most x86 machines) and the portable fallback
  for (ColumnsFn columns : {&codegen::linalg::DenseColumns, &codegen::linalg::DenseColumnsPortable}) {
    for (const auto& c : cases) {
      const double err =
          DenseError(columns, c.m, c.k, c.n, c.type, static_cast<uint32_t>(c.k + c.n));
      if (!(err < 1e-5)) {
        CHECK(false && "dense differs from the reference");
        std::cerr << "  m=" << c.m << " k=" << c.k << " n=" << c.n
                  << (c.type == bf16 ? " bf16" : " f32") << " err=" << err << "\n";
      }
    }
  }
}

TEST(DenseEmptyContractionIsZero) {
  const float x = 0.0f;
  const float w = 0.0f;
  std::vector<float> y(6, NAN);
  DenseArgs args;
  args.x = &x;
  args.w = &w;
  args.y = y.data();
  args.m = 2;
  args.k = 0;
  args.n = 3;
  codegen::linalg::DenseColumns(args, 0, 3);
  for (float v : y) CHECK_EQ(v, 0.0f);
}

TEST(Bf16RoundsToNearestEven) {
  CHECK_EQ(codegen::linalg::FloatToBf16(1.0f), uint16_t{0x3f80});
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa (1.0).
  CHECK_EQ(codegen::linalg::FloatToBf16(1.00390625f), uint16_t{0x3f80});
  CHECK_EQ(codegen::linalg::FloatToBf16(1.01171875f), uint16_t{0x3f82});
  CHECK_EQ(codegen::linalg::Bf16ToFloat(0xc000), -2.0f);
  CHECK(std::isnan(codegen::linalg::Bf16ToFloat(codegen::linalg::FloatToBf16(NAN))));
}
