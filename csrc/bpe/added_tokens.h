// Added tokens (special and non-special), matched before pre-tokenization.
//
// HF `tokenizers` extracts added tokens leftmost-longest: first the tokens with
// normalized=false over the raw text, then those with normalized=true over what is left
// (this core has no normalizers, so "normalized" text is the raw text). A match that is
// skipped (a special token the caller did not allow) still consumes its span, as in HF.
#ifndef CODEGEN_BPE_ADDED_TOKENS_H_
#define CODEGEN_BPE_ADDED_TOKENS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace codegen::bpe {

struct AddedToken {
  std::string content;  // UTF-8 text matched in the input
  uint32_t id = 0;
  bool special = false;     // may be disallowed per call; skippable when decoding
  bool lstrip = false;      // also swallow the whitespace on its left
  bool rstrip = false;      // also swallow the whitespace on its right
  bool normalized = false;  // matched in the second pass (see above)
};

// A piece of the input: either an added token (token >= 0) or text to pre-tokenize.
struct Segment {
  size_t begin;
  size_t end;
  int64_t token;  // added token id, or -1 for ordinary text
};

// Which special tokens an encode call may produce. A special token that is not allowed is
// encoded as ordinary text, unless it is rejected: then Split throws std::invalid_argument
// naming it and its byte offset (tiktoken's `disallowed_special`). The default is HF's: every
// special token is allowed; the Python API passes a safe policy (see tokenizer/core.py).
struct SpecialPolicy {
  bool allow_all = true;
  std::vector<uint32_t> allowed;  // sorted; used when !allow_all
  bool reject_all = false;        // every special token that is not allowed is rejected
  std::vector<uint32_t> rejected;  // sorted; used when !reject_all
  bool Allows(uint32_t id) const;
  bool Rejects(uint32_t id) const;  // asked only for tokens that are not allowed
};

// A byte trie over the contents of one group of added tokens. Owns its nodes.
class AddedTokenTrie {
 public:
  AddedTokenTrie() = default;
  void Insert(std::string_view content, uint32_t token_index);
  bool empty() const { return nodes_.empty(); }
  // Longest token starting at text[i]: returns its length (0 if none) and its index.
  size_t LongestMatch(std::string_view text, size_t i, uint32_t* token_index) const;
  bool MayStartWith(unsigned char b) const { return first_byte_[b]; }
  // The first position >= i (or n) where a token may start (a filter: MayMatchAt and
  // LongestMatch decide). With at most four distinct first bytes (GPT-2: '<'; CodeGen: ' ',
  // '\t', '<') 16 positions are tested at a time.
  size_t SkipToCandidate(const unsigned char* s, size_t i, size_t n) const {
#if defined(__SSE2__)
    if (!first_bytes_.empty() && first_bytes_.size() <= 4 && !any_single_byte_ &&
        second_bytes_.size() <= 4) {
      // Every token has two bytes or more: test the first two bytes of each position (for
      // CodeGen's whitespace tokens, a single space before a word is skipped here).
      const __m128i f0 = _mm_set1_epi8(static_cast<char>(first_bytes_[0]));
      const __m128i f1 = _mm_set1_epi8(static_cast<char>(first_bytes_[1 % first_bytes_.size()]));
      const __m128i f2 = _mm_set1_epi8(static_cast<char>(first_bytes_[2 % first_bytes_.size()]));
      const __m128i f3 = _mm_set1_epi8(static_cast<char>(first_bytes_[3 % first_bytes_.size()]));
      const __m128i g0 = _mm_set1_epi8(static_cast<char>(second_bytes_[0]));
      const __m128i g1 = _mm_set1_epi8(static_cast<char>(second_bytes_[1 % second_bytes_.size()]));
      const __m128i g2 = _mm_set1_epi8(static_cast<char>(second_bytes_[2 % second_bytes_.size()]));
      const __m128i g3 = _mm_set1_epi8(static_cast<char>(second_bytes_[3 % second_bytes_.size()]));
      for (; i + 17 <= n; i += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 1));
        const __m128i first = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, f0), _mm_cmpeq_epi8(v, f1)),
                                           _mm_or_si128(_mm_cmpeq_epi8(v, f2), _mm_cmpeq_epi8(v, f3)));
        const __m128i second = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, g0), _mm_cmpeq_epi8(w, g1)),
                                            _mm_or_si128(_mm_cmpeq_epi8(w, g2), _mm_cmpeq_epi8(w, g3)));
        const auto bits = static_cast<unsigned>(_mm_movemask_epi8(_mm_and_si128(first, second)));
        if (bits != 0) return i + static_cast<size_t>(__builtin_ctz(bits));
      }
    } else if (!first_bytes_.empty() && first_bytes_.size() <= 4) {
      const __m128i f0 = _mm_set1_epi8(static_cast<char>(first_bytes_[0]));
      const __m128i f1 = _mm_set1_epi8(static_cast<char>(first_bytes_[1 % first_bytes_.size()]));
      const __m128i f2 = _mm_set1_epi8(static_cast<char>(first_bytes_[2 % first_bytes_.size()]));
      const __m128i f3 = _mm_set1_epi8(static_cast<char>(first_bytes_[3 % first_bytes_.size()]));
      for (; i + 16 <= n; i += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        const __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, f0), _mm_cmpeq_epi8(v, f1)),
                                         _mm_or_si128(_mm_cmpeq_epi8(v, f2), _mm_cmpeq_epi8(v, f3)));
        const auto bits = static_cast<unsigned>(_mm_movemask_epi8(hit));
        if (bits != 0) return i + static_cast<size_t>(__builtin_ctz(bits));
      }
    }
#endif
    while (i < n && !first_byte_[s[i]]) ++i;
    return i;
  }
  // Whether a token may start at text[i] (a cheap filter: the first two bytes): false for
  // most positions even where MayStartWith is true (a space before a word, for CodeGen's
  // whitespace tokens).
  bool MayMatchAt(std::string_view text, size_t i) const {
    const auto b0 = static_cast<unsigned char>(text[i]);
    if (single_byte_[b0]) return true;
    if (i + 1 >= text.size()) return false;
    const size_t pair = (size_t{b0} << 8) | static_cast<unsigned char>(text[i + 1]);
    return (pair_bits_[pair >> 6] >> (pair & 63)) & 1u;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, uint32_t>> children;  // sorted by byte
    int64_t token_index = -1;
  };
  // 0 = none (root is never a child). Nodes have few children: a linear scan.
  uint32_t Child(uint32_t node, unsigned char b) const {
    if (node == 0) return root_children_[b];
    for (const auto& [c, child] : nodes_[node].children) {
      if (c == b) return child;
    }
    return 0;
  }
  std::vector<Node> nodes_;  // nodes_[0] is the root once anything is inserted
  std::array<bool, 256> first_byte_{};
  std::vector<unsigned char> first_bytes_;   // the bytes set in first_byte_
  std::vector<unsigned char> second_bytes_;  // the second bytes of the tokens of 2+ bytes
  bool any_single_byte_ = false;             // a token of one byte exists
  std::array<uint32_t, 256> root_children_{};  // the root's fan-out is wide: a direct table
  std::array<bool, 256> single_byte_{};         // a token of one byte is that byte
  std::array<uint64_t, 1024> pair_bits_{};      // bit (b0 << 8 | b1): a token starts b0 b1
};

// Splits text into added-token and ordinary segments.
class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;
  // Throws std::invalid_argument for empty contents or duplicate contents.
  explicit AddedTokenSplitter(std::vector<AddedToken> tokens);

  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Appends the segments of text (valid UTF-8) to *out; they tile the text, in order.
  void Split(std::string_view text, const SpecialPolicy& policy, std::vector<Segment>* out) const;

 private:
  void SplitPass(const AddedTokenTrie& trie, std::string_view text, size_t offset,
                 const SpecialPolicy& policy, std::vector<Segment>* out) const;

  std::vector<AddedToken> tokens_;
  AddedTokenTrie raw_trie_;         // normalized == false
  AddedTokenTrie normalized_trie_;  // normalized == true
  bool all_special_ = true;         // every token is special (or there are none)
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_ADDED_TOKENS_H_
