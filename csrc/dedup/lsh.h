// Locality-sensitive hashing over MinHash signatures (banding; Leskovec, Rajaraman and
// Ullman, "Mining of Massive Datasets", ch. 3.4).
//
// A signature of num_perm values is cut into `bands` bands of `rows` values; two documents
// become a candidate pair if any band is equal. With Jaccard s, P(candidate) =
// 1 - (1 - s^rows)^bands. OptimalLshParams picks (bands, rows) the way datasketch does:
// minimise fp_weight * FP + fn_weight * FN, where FP is the area under that curve below
// the threshold and FN the area above the curve beyond it.
#ifndef CODEGEN_DEDUP_LSH_H_
#define CODEGEN_DEDUP_LSH_H_

#include <cstdint>
#include <utility>
#include <vector>

namespace codegen::dedup {

struct LshParams {
  int bands = 0;
  int rows = 0;
};

// Throws std::invalid_argument unless 0 < threshold < 1, num_perm >= 1 and the weights are
// non-negative with a positive sum.
LshParams OptimalLshParams(double threshold, int num_perm, double fp_weight, double fn_weight);

// The false-positive and false-negative areas of (bands, rows) at `threshold`.
std::pair<double, double> LshErrorAreas(double threshold, int bands, int rows);

// The 64-bit key of band `band` of one signature (values sig[band*rows .. (band+1)*rows)).
// Keys are mixed with the band index, so they never collide across bands by construction
// of the input. Stable across runs and machines: keys from different shards can be merged.
uint64_t BandKey(const uint32_t* sig, int band, int rows);

}  // namespace codegen::dedup

#endif  // CODEGEN_DEDUP_LSH_H_
