// The GPT-2 pre-tokenizer as a hand-written scanner.
//
// It splits text exactly as the regular expression
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does under leftmost-first alternation (Oniguruma in HF `tokenizers`, `regex` in
// openai/gpt-2), with \p{L}, \p{N} and \s from the Unicode 16.0.0 tables. A scanner is an
// order of magnitude faster than a backtracking engine and has no pathological inputs:
// every byte is looked at a constant number of times.
#ifndef CODEGEN_BPE_PRETOKENIZER_H_
#define CODEGEN_BPE_PRETOKENIZER_H_

#include <cstddef>
#include <string_view>

#include "bpe/unicode.h"

namespace codegen::bpe {

namespace internal {

// End of the run of characters of class `cls` that starts at byte i.
inline size_t RunEnd(std::string_view text, size_t i, CharClass cls) {
  const size_t n = text.size();
  while (i < n) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      if (kAsciiClass[b] != cls) break;
      ++i;
    } else {
      size_t len;
      if (ClassOfCodepoint(DecodeUtf8(text, i, &len)) != cls) break;
      i += len;
    }
  }
  return i;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd, case-sensitive) at text[i] == '\'',
// or 0.
inline size_t ContractionLength(std::string_view text, size_t i) {
  if (i + 1 >= text.size()) return 0;
  const char c1 = text[i + 1];
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (i + 2 >= text.size()) return 0;
  const char c2 = text[i + 2];
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

}  // namespace internal

// Calls emit(begin, end) with the byte range of every piece of `text` (valid UTF-8), in order.
// The pieces tile the text.
template <typename Emit>
void SplitGpt2(std::string_view text, Emit&& emit) {
  using internal::RunEnd;
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    size_t len;
    const CharClass cls = ClassAt(text, i, &len);
    if (text[i] == '\'') {
      const size_t k = internal::ContractionLength(text, i);
      if (k != 0) {
        emit(i, i + k);
        i += k;
        continue;
      }
    }
    if (cls != CharClass::kSpace) {
      // \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+
      const size_t end = RunEnd(text, i + len, cls);
      emit(i, end);
      i = end;
      continue;
    }
    if (text[i] == ' ' && i + 1 < n) {
      // " ?\p{L}+" and friends: a single space glued to the run that follows it.
      size_t next_len;
      const CharClass next = ClassAt(text, i + 1, &next_len);
      if (next != CharClass::kSpace) {
        const size_t end = RunEnd(text, i + 1 + next_len, next);
        emit(i, end);
        i = end;
        continue;
      }
    }
    // A whitespace run. \s+(?!\S) takes all of it at the end of the text, otherwise all but
    // its last character (which then starts the next piece); a single whitespace character
    // before a non-space falls through to \s+.
    size_t last = i;  // start of the last character of the run
    size_t end = i + len;
    while (end < n) {
      size_t l;
      if (ClassAt(text, end, &l) != CharClass::kSpace) break;
      last = end;
      end += l;
    }
    if (end == n) {
      emit(i, end);
      i = end;
    } else if (last > i) {
      emit(i, last);
      i = last;
    } else {
      emit(i, end);
      i = end;
    }
  }
}

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_PRETOKENIZER_H_
