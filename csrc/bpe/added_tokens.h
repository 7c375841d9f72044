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

 private:
  struct Node {
    std::vector<std::pair<unsigned char, uint32_t>> children;  // sorted by byte
    int64_t token_index = -1;
  };
  uint32_t Child(uint32_t node, unsigned char b) const;  // 0 = none (root is never a child)
  std::vector<Node> nodes_;  // nodes_[0] is the root once anything is inserted
  std::array<bool, 256> first_byte_{};
  std::array<uint32_t, 256> root_children_{};  // the root's fan-out is wide: a direct table
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
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_ADDED_TOKENS_H_
