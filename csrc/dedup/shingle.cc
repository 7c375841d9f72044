#include "dedup/shingle.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "common/hash.h"

namespace codegen::dedup {
namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

enum ByteClass : uint8_t { kSpace = 0, kWord = 1, kPunct = 2 };

constexpr std::array<uint8_t, 256> MakeByteClasses() {
  std::array<uint8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c >= 0x80;
    const bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
    table[c] = word ? kWord : (space ? kSpace : kPunct);
  }
  return table;
}
constexpr std::array<uint8_t, 256> kByteClass = MakeByteClasses();

using codegen::Fmix64;

inline uint32_t CombineShingle(const uint64_t* tokens, size_t n) {
  uint64_t h = 0;
  for (size_t j = 0; j < n; ++j) h = (h + tokens[j]) * kGolden;
  return static_cast<uint32_t>(Fmix64(h) >> 32);
}

}  // namespace

void ValidateShingleOptions(const ShingleOptions& options) {
  if (options.ngram < 1 || options.ngram > 64) {
    throw std::invalid_argument("shingle ngram must be in [1, 64], got " +
                                std::to_string(options.ngram));
  }
}

void TokenHashes(std::string_view text, std::vector<uint64_t>* out) {
  out->clear();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t cls = kByteClass[p[i]];
    if (cls == kSpace) {
      ++i;
      continue;
    }
    uint64_t h = kFnvOffset;  // FNV-1a, computed while scanning the token
    if (cls == kPunct) {
      h = (h ^ p[i]) * kFnvPrime;
      ++i;
    } else {
      while (i < n && kByteClass[p[i]] == kWord) {
        h = (h ^ p[i]) * kFnvPrime;
        ++i;
      }
    }
    out->push_back(h);
  }
}

namespace {

// Hashes the code tokens of text into scratch->tokens and clears *out. A document with
// fewer than n tokens has one shingle of all of them, written here; returns false then (or
// for an empty document), true when the caller must emit the n-grams.
bool BeginShingles(std::string_view text, const ShingleOptions& options, ShingleScratch* scratch,
                   std::vector<uint32_t>* out) {
  ValidateShingleOptions(options);
  std::vector<uint64_t>& tokens = scratch->tokens;
  TokenHashes(text, &tokens);
  out->clear();
  if (tokens.empty()) return false;
  if (tokens.size() < static_cast<size_t>(options.ngram)) {
    out->push_back(CombineShingle(tokens.data(), tokens.size()));
    return false;
  }
  return true;
}

}  // namespace

void ShingleSet(std::string_view text, const ShingleOptions& options, ShingleScratch* scratch,
                std::vector<uint32_t>* out) {
  if (!BeginShingles(text, options, scratch, out)) return;
  const std::vector<uint64_t>& tokens = scratch->tokens;
  const size_t n = static_cast<size_t>(options.ngram);
  const size_t count = tokens.size() - n + 1;
  out->reserve(count);
  // Open addressing on the (already well-mixed) hash bits; 0 marks an empty slot, so the
  // shingle value 0 is tracked on the side.
  size_t capacity = 16;
  while (capacity < 2 * count) capacity *= 2;
  std::vector<uint32_t>& table = scratch->table;
  table.assign(capacity, 0);
  const size_t mask = capacity - 1;
  bool seen_zero = false;
  for (size_t i = 0; i < count; ++i) {
    const uint32_t x = CombineShingle(tokens.data() + i, n);
    if (x == 0) {
      if (!seen_zero) out->push_back(0);
      seen_zero = true;
      continue;
    }
    size_t slot = x & mask;
    while (table[slot] != 0 && table[slot] != x) slot = (slot + 1) & mask;
    if (table[slot] == 0) {
      table[slot] = x;
      out->push_back(x);
    }
  }
}

namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CODEGEN_SHINGLE_AVX512 1
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_epi32(), which its flow analysis
// reports as "may be used uninitialized"; they are not.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// CombineShingle for eight consecutive shingles at once (64-bit multiplies need AVX-512DQ):
// the same arithmetic mod 2^64, so the same values. Returns how many shingles it wrote.
__attribute__((target("avx512f,avx512dq"))) size_t CombineShinglesAvx512(
    const uint64_t* tokens, size_t count, size_t n, uint32_t* out) {
  const __m512i golden = _mm512_set1_epi64(static_cast<int64_t>(kGolden));
  const __m512i c1 = _mm512_set1_epi64(static_cast<int64_t>(0xff51afd7ed558ccdULL));
  const __m512i c2 = _mm512_set1_epi64(static_cast<int64_t>(0xc4ceb9fe1a85ec53ULL));
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m512i h = _mm512_setzero_si512();
    for (size_t j = 0; j < n; ++j) {
      h = _mm512_mullo_epi64(_mm512_add_epi64(h, _mm512_loadu_si512(tokens + i + j)), golden);
    }
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 33));  // Fmix64
    h = _mm512_mullo_epi64(h, c1);
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 33));
    h = _mm512_mullo_epi64(h, c2);
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 33));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm512_cvtepi64_epi32(_mm512_srli_epi64(h, 32)));
  }
  return i;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool HasAvx512Dq() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return has;
}
#endif

}  // namespace

void ShingleSequence(std::string_view text, const ShingleOptions& options,
                     ShingleScratch* scratch, std::vector<uint32_t>* out) {
  if (!BeginShingles(text, options, scratch, out)) return;
  const std::vector<uint64_t>& tokens = scratch->tokens;
  const size_t n = static_cast<size_t>(options.ngram);
  const size_t count = tokens.size() - n + 1;
  out->resize(count);
  size_t i = 0;
#if defined(CODEGEN_SHINGLE_AVX512)
  if (HasAvx512Dq()) i = CombineShinglesAvx512(tokens.data(), count, n, out->data());
#endif
  for (; i < count; ++i) (*out)[i] = CombineShingle(tokens.data() + i, n);
}

void SortedShingleSet(std::string_view text, const ShingleOptions& options,
                      ShingleScratch* scratch, std::vector<uint32_t>* out) {
  ShingleSet(text, options, scratch, out);
  std::sort(out->begin(), out->end());
}

double SortedJaccard(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  if (a.empty() && b.empty()) return 0.0;
  size_t i = 0, j = 0, common = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] < b[j]) {
      ++i;
    } else if (b[j] < a[i]) {
      ++j;
    } else {
      ++common;
      ++i;
      ++j;
    }
  }
  const size_t uni = a.size() + b.size() - common;
  return static_cast<double>(common) / static_cast<double>(uni);
}

}  // namespace codegen::dedup
