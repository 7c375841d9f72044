// MinHash signatures over shingle sets (Broder 1997, "On the resemblance and containment
// of documents"): for each of `num_perm` hash functions h_i, signature[i] = min over the
// set of h_i(x). P(sig_A[i] == sig_B[i]) = Jaccard(A, B).
//
// The hash family is multiply-add-shift (Dietzfelbinger 1996), the 2-independent family
// for 32-bit keys:  h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32,  a_i odd 64-bit, b_i < 2^32.
// Parameters come from splitmix64 seeded with `seed`: for each i, a_i = next() | 1, then
// b_i = next() >> 32. The numpy reference (minhash_reference.py) computes the same values.
// An empty set has the all-0xFFFFFFFF signature.
//
// Scheme::kOnePermutation is one-permutation hashing (Li, Owen and Zhang, NeurIPS 2012)
// with optimal densification (Shrivastava, ICML 2017, https://arxiv.org/abs/1703.04664):
// one 64-bit hash per shingle, y = fmix64(x ^ key); its high 32 bits pick one of num_perm
// bins (multiply range reduction), its low 32 bits are the value, and each bin keeps its
// minimum. An empty bin i then copies the value of the first non-empty bin j_t, t = 1, 2, ...,
// j_t = ((fmix64(probe_key ^ (i << 32 | t)) >> 32) * num_perm) >> 32, a probe sequence that
// does not depend on the data, so P(sig_A[i] == sig_B[i]) is still Jaccard(A, B). Cost:
// O(|set| + num_perm) per document instead of O(|set| * num_perm). key and probe_key are the
// first two splitmix64 outputs from `seed ^ 0x4F50480000000000` ("OPH").
#ifndef CODEGEN_DEDUP_MINHASH_H_
#define CODEGEN_DEDUP_MINHASH_H_

#include <cstdint>
#include <vector>

#include "dedup/span.h"

namespace codegen::dedup {

enum class Scheme { kPermutations, kOnePermutation };

class MinHasher {
 public:
  // Throws std::invalid_argument unless 1 <= num_perm <= 4096.
  MinHasher(int num_perm, uint64_t seed, Scheme scheme = Scheme::kPermutations);

  int num_perm() const { return num_perm_; }
  uint64_t seed() const { return seed_; }
  Scheme scheme() const { return scheme_; }
  // The a_i and b_i of the hash family (num_perm each), for references and tests.
  std::vector<uint64_t> a() const;
  std::vector<uint64_t> b() const { return b_; }

  // Writes the signature of `shingles` (any order, duplicates allowed) to
  // out[0 .. num_perm); `out` is owned by the caller.
  void Signature(Span<uint32_t> shingles, uint32_t* out) const;

 private:
  void PermutationSignature(Span<uint32_t> shingles, uint32_t* out) const;
  void OnePermutationSignature(Span<uint32_t> shingles, uint32_t* out) const;

  int num_perm_;
  uint64_t seed_;
  Scheme scheme_;
  uint64_t oph_key_ = 0, oph_probe_key_ = 0;
  // a_i split in halves: a*x mod 2^64 >> 32 == a_hi*x + ((a_lo*x + b) >> 32) (mod 2^32) for
  // x, b < 2^32, which vectorises with 32x32->64 multiplies.
  std::vector<uint32_t> a_lo_, a_hi_;
  std::vector<uint64_t> b_;
};

}  // namespace codegen::dedup

#endif  // CODEGEN_DEDUP_MINHASH_H_
