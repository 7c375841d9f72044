#include "dedup/minhash.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/hash.h"

namespace codegen::dedup {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The hot loop: one shingle against all permutations, a block of permutations at a time so
// the running minima stay in registers / L1. Built twice on x86-64 GCC/Clang (AVX2 and
// baseline) and picked at load time, so the wheel needs no -march flag.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define CODEGEN_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define CODEGEN_MULTIVERSION
#endif

CODEGEN_MULTIVERSION
void MinHashKernel(const uint32_t* shingles, size_t num_shingles, const uint32_t* a_lo,
                   const uint32_t* a_hi, const uint64_t* b, size_t num_perm, uint32_t* out) {
  constexpr size_t kBlock = 64;
  for (size_t p0 = 0; p0 < num_perm; p0 += kBlock) {
    const size_t pn = std::min(kBlock, num_perm - p0);
    uint32_t acc[kBlock];
    for (size_t i = 0; i < kBlock; ++i) acc[i] = 0xFFFFFFFFu;
    for (size_t s = 0; s < num_shingles; ++s) {
      const uint32_t x = shingles[s];
      for (size_t i = 0; i < pn; ++i) {
        const uint32_t v = a_hi[p0 + i] * x +
                           static_cast<uint32_t>((static_cast<uint64_t>(a_lo[p0 + i]) * x +
                                                  b[p0 + i]) >> 32);
        acc[i] = v < acc[i] ? v : acc[i];
      }
    }
    for (size_t i = 0; i < pn; ++i) out[p0 + i] = acc[i];
  }
}

using codegen::Fmix64;

// Lemire's multiply-shift range reduction of a 32-bit hash to [0, n).
inline uint32_t Reduce(uint32_t hash, uint32_t n) {
  return static_cast<uint32_t>((static_cast<uint64_t>(hash) * n) >> 32);
}

}  // namespace

MinHasher::MinHasher(int num_perm, uint64_t seed, Scheme scheme)
    : num_perm_(num_perm), seed_(seed), scheme_(scheme) {
  if (num_perm < 1 || num_perm > 4096) {
    throw std::invalid_argument("num_perm must be in [1, 4096], got " + std::to_string(num_perm));
  }
  uint64_t state = seed;
  a_lo_.resize(num_perm);
  a_hi_.resize(num_perm);
  b_.resize(num_perm);
  for (int i = 0; i < num_perm; ++i) {
    const uint64_t a = SplitMix64(&state) | 1ULL;
    a_lo_[i] = static_cast<uint32_t>(a);
    a_hi_[i] = static_cast<uint32_t>(a >> 32);
    b_[i] = SplitMix64(&state) >> 32;
  }
  uint64_t oph_state = seed ^ 0x4F50480000000000ULL;
  oph_key_ = SplitMix64(&oph_state);
  oph_probe_key_ = SplitMix64(&oph_state);
}

std::vector<uint64_t> MinHasher::a() const {
  std::vector<uint64_t> a(num_perm_);
  for (int i = 0; i < num_perm_; ++i) a[i] = (static_cast<uint64_t>(a_hi_[i]) << 32) | a_lo_[i];
  return a;
}

void MinHasher::Signature(Span<uint32_t> shingles, uint32_t* out) const {
  if (scheme_ == Scheme::kOnePermutation) {
    OnePermutationSignature(shingles, out);
  } else {
    PermutationSignature(shingles, out);
  }
}

void MinHasher::OnePermutationSignature(Span<uint32_t> shingles, uint32_t* out) const {
  const auto k = static_cast<uint32_t>(num_perm_);
  std::fill(out, out + k, 0xFFFFFFFFu);
  if (shingles.empty()) return;
  std::vector<uint8_t> filled(k, 0);
  for (const uint32_t x : shingles) {
    const uint64_t y = Fmix64(x ^ oph_key_);
    const uint32_t bin = Reduce(static_cast<uint32_t>(y >> 32), k);
    const auto value = static_cast<uint32_t>(y);
    out[bin] = value < out[bin] ? value : out[bin];
    filled[bin] = 1;
  }
  // Optimal densification: empty bins copy from a data-independent probe sequence.
  for (uint32_t i = 0; i < k; ++i) {
    if (filled[i]) continue;
    for (uint64_t t = 1;; ++t) {
      const uint64_t probe = Fmix64(oph_probe_key_ ^ ((static_cast<uint64_t>(i) << 32) | t));
      const uint32_t j = Reduce(static_cast<uint32_t>(probe >> 32), k);
      if (filled[j]) {
        out[i] = out[j];
        break;
      }
    }
  }
}

void MinHasher::PermutationSignature(Span<uint32_t> shingles, uint32_t* out) const {
  MinHashKernel(shingles.data(), shingles.size(), a_lo_.data(), a_hi_.data(), b_.data(),
                static_cast<size_t>(num_perm_), out);
}

}  // namespace codegen::dedup
