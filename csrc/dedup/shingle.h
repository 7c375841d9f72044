// Code-aware shingling: source text -> the set of hashed token n-grams.
//
// Tokens are what a code tokenizer would see, without needing a vocabulary:
//   * a maximal run of "word" bytes: ASCII letters, digits, '_' and every byte >= 0x80
//     (so UTF-8 identifiers and string contents stay whole),
//   * every other non-whitespace byte on its own (operators, brackets, quotes, ...).
// Whitespace separates tokens and is otherwise ignored, so re-indentation or trailing
// spaces do not change the shingle set. A shingle is `ngram` consecutive tokens; a
// document with fewer tokens than `ngram` (but at least one) has one shingle made of all
// its tokens, and a document with no tokens has none.
//
// Hashes (the numpy reference python/codegen_core/data/minhash_reference.py follows them
// bit for bit):
//   token   t = FNV-1a-64(token bytes)
//   shingle h = 0; for each token: h = (h + t) * 0x9E3779B97F4A7C15 (mod 2^64);
//           h = fmix64(h) (MurmurHash3 finaliser); shingle = uint32(h >> 32)
#ifndef CODEGEN_DEDUP_SHINGLE_H_
#define CODEGEN_DEDUP_SHINGLE_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace codegen::dedup {

struct ShingleOptions {
  int ngram = 5;  // tokens per shingle (BigCode's near-dedup uses 5)
};

// Throws std::invalid_argument if the options are out of range.
void ValidateShingleOptions(const ShingleOptions& options);

// 64-bit hash of every token of `text`, in order. `out` is cleared first; the caller owns
// it and may reuse it across calls to avoid allocations.
void TokenHashes(std::string_view text, std::vector<uint64_t>* out);

// Scratch buffers for ShingleSet, owned by the caller and reused across documents so the
// hot loop does not allocate. One per thread.
struct ShingleScratch {
  std::vector<uint64_t> tokens;
  std::vector<uint32_t> table;
};

// The duplicate-free shingle hashes of `text`, in order of first occurrence (MinHash does
// not need them sorted; deduplicating with a small hash table is ~10x cheaper than sorting).
// `out` is cleared first. Throws std::invalid_argument on bad options.
void ShingleSet(std::string_view text, const ShingleOptions& options, ShingleScratch* scratch,
                std::vector<uint32_t>* out);

// Every shingle hash of `text` in order, repeats included (enough for MinHash schemes whose
// cost is linear in the shingles, where deduplicating would cost more than it saves).
void ShingleSequence(std::string_view text, const ShingleOptions& options,
                     ShingleScratch* scratch, std::vector<uint32_t>* out);

// ShingleSet, sorted ascending (what SortedJaccard needs).
void SortedShingleSet(std::string_view text, const ShingleOptions& options,
                      ShingleScratch* scratch, std::vector<uint32_t>* out);

// Jaccard similarity |A n B| / |A u B| of two sorted duplicate-free sets; 0 if both empty.
double SortedJaccard(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b);

}  // namespace codegen::dedup

#endif  // CODEGEN_DEDUP_SHINGLE_H_
