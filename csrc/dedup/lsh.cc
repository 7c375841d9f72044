#include "dedup/lsh.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/hash.h"

namespace codegen::dedup {
namespace {

constexpr int kIntervals = 2000;  // Simpson intervals per integral (even)

// Composite Simpson's rule; the integrands are smooth polynomials in s.
template <typename F>
double Integrate(F f, double lo, double hi) {
  if (hi <= lo) return 0.0;
  const double h = (hi - lo) / kIntervals;
  double sum = f(lo) + f(hi);
  for (int i = 1; i < kIntervals; ++i) sum += f(lo + i * h) * (i % 2 == 1 ? 4.0 : 2.0);
  return sum * h / 3.0;
}

inline double CandidateProbability(double s, int bands, int rows) {
  return 1.0 - std::pow(1.0 - std::pow(s, rows), bands);
}

}  // namespace

std::pair<double, double> LshErrorAreas(double threshold, int bands, int rows) {
  const double fp = Integrate([&](double s) { return CandidateProbability(s, bands, rows); }, 0.0,
                              threshold);
  const double fn = Integrate(
      [&](double s) { return 1.0 - CandidateProbability(s, bands, rows); }, threshold, 1.0);
  return {fp, fn};
}

LshParams OptimalLshParams(double threshold, int num_perm, double fp_weight, double fn_weight) {
  if (!(threshold > 0.0 && threshold < 1.0)) {
    throw std::invalid_argument("threshold must be in (0, 1), got " + std::to_string(threshold));
  }
  if (num_perm < 1) {
    throw std::invalid_argument("num_perm must be >= 1, got " + std::to_string(num_perm));
  }
  if (!(fp_weight >= 0.0 && fn_weight >= 0.0 && fp_weight + fn_weight > 0.0)) {
    throw std::invalid_argument("LSH weights must be >= 0 with a positive sum");
  }
  // The same Simpson sums as LshErrorAreas for every (b, r) with b * r <= num_perm, but for
  // a fixed r the powers (1 - s^r)^b are built by repeated multiplication over b, so the
  // whole search costs O(nodes * sum_r num_perm / r) multiply-adds instead of as many pow().
  const int k = num_perm;
  std::vector<std::vector<double>> fp(k + 1), fn(k + 1);  // [r][b]
  auto accumulate = [&](double lo, double hi, bool false_positive) {
    const double h = (hi - lo) / kIntervals;
    for (int i = 0; i <= kIntervals; ++i) {
      const double s = lo + i * h;
      const double w = (i == 0 || i == kIntervals ? 1.0 : (i % 2 == 1 ? 4.0 : 2.0)) * h / 3.0;
      for (int r = 1; r <= k; ++r) {
        const double q = 1.0 - std::pow(s, r);  // P(a band differs)
        double all_differ = 1.0;
        auto& sums = false_positive ? fp[r] : fn[r];
        for (int b = 1; b <= k / r; ++b) {
          all_differ *= q;
          sums[b] += w * (false_positive ? 1.0 - all_differ : all_differ);
        }
      }
    }
  };
  for (int r = 1; r <= k; ++r) {
    fp[r].assign(k / r + 1, 0.0);
    fn[r].assign(k / r + 1, 0.0);
  }
  accumulate(0.0, threshold, true);
  accumulate(threshold, 1.0, false);
  LshParams best{1, 1};
  double best_error = INFINITY;
  for (int b = 1; b <= k; ++b) {  // datasketch's order, first strict minimum wins
    for (int r = 1; r <= k / b; ++r) {
      const double error = fp[r][b] * fp_weight + fn[r][b] * fn_weight;
      if (error < best_error) {
        best_error = error;
        best = {b, r};
      }
    }
  }
  return best;
}

uint64_t BandKey(const uint32_t* sig, int band, int rows) {
  uint64_t h = 0x243F6A8885A308D3ULL ^ static_cast<uint64_t>(band);
  const uint32_t* v = sig + static_cast<size_t>(band) * static_cast<size_t>(rows);
  for (int j = 0; j < rows; ++j) h = (h + v[j]) * 0x9E3779B97F4A7C15ULL;
  return codegen::Fmix64(h);
}

}  // namespace codegen::dedup
