#include "bpe/added_tokens.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include "bpe/unicode.h"

namespace codegen::bpe {

bool SpecialPolicy::Allows(uint32_t id) const {
  return allow_all || std::binary_search(allowed.begin(), allowed.end(), id);
}

bool SpecialPolicy::Rejects(uint32_t id) const {
  return reject_all || std::binary_search(rejected.begin(), rejected.end(), id);
}

void AddedTokenTrie::Insert(std::string_view content, uint32_t token_index) {
  if (nodes_.empty()) nodes_.emplace_back();
  uint32_t node = 0;
  if (!first_byte_[static_cast<unsigned char>(content[0])]) {
    first_bytes_.push_back(static_cast<unsigned char>(content[0]));
  }
  first_byte_[static_cast<unsigned char>(content[0])] = true;
  if (content.size() == 1) {
    single_byte_[static_cast<unsigned char>(content[0])] = true;
    any_single_byte_ = true;
  } else {
    const auto second = static_cast<unsigned char>(content[1]);
    if (std::find(second_bytes_.begin(), second_bytes_.end(), second) == second_bytes_.end()) {
      second_bytes_.push_back(second);
    }
    const size_t pair = (size_t{static_cast<unsigned char>(content[0])} << 8) |
                        static_cast<unsigned char>(content[1]);
    pair_bits_[pair >> 6] |= uint64_t{1} << (pair & 63);
  }
  for (const char ch : content) {
    const auto b = static_cast<unsigned char>(ch);
    uint32_t child = Child(node, b);
    if (child == 0) {
      child = static_cast<uint32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& kids = nodes_[node].children;
      kids.insert(std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, 0u)),
                  std::make_pair(b, child));
      if (node == 0) root_children_[b] = child;
    }
    node = child;
  }
  nodes_[node].token_index = token_index;
}

size_t AddedTokenTrie::LongestMatch(std::string_view text, size_t i, uint32_t* token_index) const {
  size_t best = 0;
  uint32_t node = 0;
  for (size_t j = i; j < text.size(); ++j) {
    node = Child(node, static_cast<unsigned char>(text[j]));
    if (node == 0) break;
    if (nodes_[node].token_index >= 0) {
      best = j + 1 - i;
      *token_index = static_cast<uint32_t>(nodes_[node].token_index);
    }
  }
  return best;
}

AddedTokenSplitter::AddedTokenSplitter(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::unordered_set<std::string_view> seen;
  for (size_t k = 0; k < tokens_.size(); ++k) {
    const AddedToken& t = tokens_[k];
    if (t.content.empty()) {
      throw std::invalid_argument("added token " + std::to_string(t.id) + " has empty content");
    }
    if (FindInvalidUtf8(t.content) != std::string_view::npos) {
      throw std::invalid_argument("added token " + std::to_string(t.id) +
                                  " is not valid UTF-8");
    }
    if (!seen.insert(t.content).second) {
      throw std::invalid_argument("added token content '" + t.content + "' appears twice");
    }
    (t.normalized ? normalized_trie_ : raw_trie_).Insert(t.content, static_cast<uint32_t>(k));
    all_special_ = all_special_ && t.special;
  }
}

namespace {
bool IsSpaceAt(std::string_view text, size_t i, size_t* len) {
  return ClassAt(text, i, len) == CharClass::kSpace;
}
}  // namespace

void AddedTokenSplitter::SplitPass(const AddedTokenTrie& trie, std::string_view text,
                                   size_t offset, const SpecialPolicy& policy,
                                   std::vector<Segment>* out) const {
  const size_t n = text.size();
  size_t text_start = 0;  // start of the pending ordinary text
  size_t i = 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  while (i < n) {
    i = trie.SkipToCandidate(bytes, i, n);
    if (i >= n) break;
    if (!trie.MayMatchAt(text, i)) {
      ++i;
      continue;
    }
    uint32_t index = 0;
    const size_t len = trie.LongestMatch(text, i, &index);
    if (len == 0) {
      ++i;
      continue;
    }
    const AddedToken& token = tokens_[index];
    if (token.special && !policy.Allows(token.id)) {
      if (policy.Rejects(token.id)) {
        throw std::invalid_argument(
            "text contains the special token '" + token.content + "' (id " +
            std::to_string(token.id) + ") at byte offset " + std::to_string(offset + i) +
            ", which is disallowed: encode it as text (encode_ordinary, or "
            "disallowed_special=()) or as the control token (allowed_special={'" +
            token.content + "'})");
      }
      i += len;  // the span is consumed but stays ordinary text
      continue;
    }
    size_t begin = i;
    size_t end = i + len;
    if (token.lstrip) {
      // Walk back over whitespace characters (UTF-8 continuation bytes are skipped).
      size_t b = begin;
      while (b > text_start) {
        size_t p = b - 1;
        while (p > text_start && (static_cast<unsigned char>(text[p]) & 0xC0u) == 0x80u) --p;
        size_t l;
        if (!IsSpaceAt(text, p, &l)) break;
        b = p;
      }
      begin = b;
    }
    if (token.rstrip) {
      size_t l;
      while (end < n && IsSpaceAt(text, end, &l)) end += l;
    }
    if (text_start < begin) out->push_back({offset + text_start, offset + begin, -1});
    out->push_back({offset + begin, offset + end, static_cast<int64_t>(token.id)});
    text_start = end;
    i = end;
  }
  if (text_start < n) out->push_back({offset + text_start, offset + n, -1});
}

void AddedTokenSplitter::Split(std::string_view text, const SpecialPolicy& policy,
                               std::vector<Segment>* out) const {
  // Every added token special and none allowed or rejected (encode_ordinary): no token can
  // make a segment of its own, so there is nothing to look for.
  const bool inert = all_special_ && !policy.allow_all && policy.allowed.empty() &&
                     !policy.reject_all && policy.rejected.empty();
  if (inert || (raw_trie_.empty() && normalized_trie_.empty())) {
    if (!text.empty()) out->push_back({0, text.size(), -1});
    return;
  }
  if (normalized_trie_.empty()) {
    SplitPass(raw_trie_, text, 0, policy, out);
    return;
  }
  if (raw_trie_.empty()) {
    SplitPass(normalized_trie_, text, 0, policy, out);
    return;
  }
  std::vector<Segment> first;
  SplitPass(raw_trie_, text, 0, policy, &first);
  for (const Segment& s : first) {
    if (s.token >= 0) {
      out->push_back(s);
    } else {
      SplitPass(normalized_trie_, text.substr(s.begin, s.end - s.begin), s.begin, policy, out);
    }
  }
}

}  // namespace codegen::bpe
