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
#include <cstdint>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// End of the piece that starts at byte i < text.size(): the pattern's leftmost-first match
// there, written out plainly for any character. The reference the fast scanner falls back to.
inline size_t NextPieceEnd(std::string_view text, size_t i) {
  using internal::RunEnd;
  const size_t n = text.size();
  size_t len;
  const CharClass cls = ClassAt(text, i, &len);
  if (text[i] == '\'') {
    const size_t k = internal::ContractionLength(text, i);
    if (k != 0) return i + k;
  }
  // \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+
  if (cls != CharClass::kSpace) return RunEnd(text, i + len, cls);
  if (text[i] == ' ' && i + 1 < n) {
    // " ?\p{L}+" and friends: a single space glued to the run that follows it.
    size_t next_len;
    const CharClass next = ClassAt(text, i + 1, &next_len);
    if (next != CharClass::kSpace) return RunEnd(text, i + 1 + next_len, next);
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
  if (end == n) return end;
  return last > i ? last : end;
}

// Calls emit(begin, end) with the byte range of every piece of `text` (valid UTF-8), in order.
// The pieces tile the text. The reference scanner: one NextPieceEnd per piece.
template <typename Emit>
void SplitGpt2Reference(std::string_view text, Emit&& emit) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t end = NextPieceEnd(text, i);
    emit(i, end);
    i = end;
  }
}

namespace internal {
// Byte -> class for the fast scanner: the ASCII classes, and kNonAscii for every byte of a
// multi-byte character (the scanner then asks the Unicode tables).
constexpr uint8_t kNonAscii = 4;
struct ByteClassTable {
  uint8_t cls[256];
};
constexpr ByteClassTable MakeByteClassTable() {
  ByteClassTable t{};
  for (int b = 0; b < 256; ++b) {
    uint8_t c = static_cast<uint8_t>(CharClass::kOther);
    if (b >= 0x80) {
      c = kNonAscii;
    } else if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) {
      c = static_cast<uint8_t>(CharClass::kLetter);
    } else if (b >= '0' && b <= '9') {
      c = static_cast<uint8_t>(CharClass::kNumber);
    } else if ((b >= 0x09 && b <= 0x0D) || b == ' ') {
      c = static_cast<uint8_t>(CharClass::kSpace);
    }
    t.cls[b] = c;
  }
  return t;
}
inline constexpr ByteClassTable kByteClass = MakeByteClassTable();
}  // namespace internal

namespace internal {

// End of the piece that starts at s[i] (i < n), by the byte-class table; pieces that meet a
// non-ASCII character are finished by the reference code.
inline size_t ScalarPieceEnd(std::string_view text, size_t i) {
  constexpr auto kSpace = static_cast<uint8_t>(CharClass::kSpace);
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const unsigned char b = s[i];
  uint8_t cls = kByteClass.cls[b];
  size_t j = i + 1;
  if (cls == kNonAscii) return NextPieceEnd(text, i);
  if (cls == kSpace) {
    const uint8_t next = j < n ? kByteClass.cls[s[j]] : kSpace;
    if (b == ' ' && next != kSpace && next != kNonAscii) {
      // " ?\p{L}+" and friends: the space and the run of the next character's class.
      cls = next;
      ++j;
    } else {
      while (j < n && kByteClass.cls[s[j]] == kSpace) ++j;
      // The run may go on in non-ASCII whitespace: the reference decides.
      if (j < n && kByteClass.cls[s[j]] == kNonAscii) return NextPieceEnd(text, i);
      // All but the last whitespace character before a non-space; all at the end.
      return (j == n || j - 1 == i) ? j : j - 1;
    }
  } else if (b == '\'') {
    const size_t k = ContractionLength(text, i);
    if (k != 0) return i + k;
  }
  while (j < n && kByteClass.cls[s[j]] == cls) ++j;
  return (j < n && kByteClass.cls[s[j]] == kNonAscii)
             ? RunEnd(text, j, static_cast<CharClass>(cls))
             : j;
}

#if defined(__SSE2__)
// The classes of 16 bytes as kByteClass gives them (0 other, 1 letter, 2 number, 3 space,
// 4 any byte of a non-ASCII character), by range compares.
inline __m128i Classify16(__m128i v) {
  // x in [lo, lo + len) <=> (int8)(x + 0x80 - lo) < -128 + len
  const __m128i lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
  const __m128i letter =
      _mm_cmplt_epi8(_mm_add_epi8(lower, _mm_set1_epi8(0x1F)), _mm_set1_epi8(-128 + 26));
  const __m128i digit =
      _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x50)), _mm_set1_epi8(-128 + 10));
  const __m128i control =
      _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x77)), _mm_set1_epi8(-128 + 5));
  const __m128i space = _mm_or_si128(control, _mm_cmpeq_epi8(v, _mm_set1_epi8(' ')));
  const __m128i non_ascii = _mm_cmplt_epi8(v, _mm_setzero_si128());
  __m128i c = _mm_and_si128(letter, _mm_set1_epi8(1));
  c = _mm_or_si128(c, _mm_and_si128(digit, _mm_set1_epi8(2)));
  c = _mm_or_si128(c, _mm_and_si128(space, _mm_set1_epi8(3)));
  return _mm_or_si128(c, _mm_and_si128(non_ascii, _mm_set1_epi8(4)));
}
#endif

}  // namespace internal

// The same pieces as SplitGpt2Reference, fast: 16 bytes at a time are classified with SIMD
// compares and a piece's end found from a bit mask (no loop per byte, no branch that
// depends on the piece's length); the byte-class table does the rest, and a piece that
// meets a non-ASCII character is finished by the reference code. `readable`: how many bytes
// from text.data() may be read (text.size() or more: the buffer text lies in); bytes past
// text.size() are read but never part of a piece.
template <typename Emit>
void SplitGpt2(std::string_view text, Emit&& emit, size_t readable = 0) {
  const size_t n = text.size();
  if (readable < n) readable = n;
  size_t i = 0;
#if defined(__SSE2__)
  using internal::kByteClass;
  using internal::kNonAscii;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  // 64-byte blocks: classified once (four 16-byte compares), then every piece that starts
  // in the first 48 bytes of the block is found by a shift and a count of trailing ones.
  {
    size_t block = 0;
    bool have = false;
    uint64_t mask[4] = {0, 0, 0, 0};  // bit j: byte block + j (< n) is of class k
    alignas(16) uint8_t cls_of[64];   // the class of byte block + j
    while (i < n && i + 64 <= readable) {
      if (!have || i - block > 48) {
        block = i;
        have = true;
        for (auto& m : mask) m = 0;
        for (int q = 0; q < 4; ++q) {
          const __m128i c = internal::Classify16(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + block + 16 * q)));
          _mm_store_si128(reinterpret_cast<__m128i*>(cls_of + 16 * q), c);
          for (int k = 0; k < 4; ++k) {
            const auto bits = static_cast<uint64_t>(static_cast<unsigned>(
                _mm_movemask_epi8(_mm_cmpeq_epi8(c, _mm_set1_epi8(static_cast<char>(k))))));
            mask[k] |= bits << (16 * q);
          }
        }
        if (n - block < 64) {
          const uint64_t valid = (uint64_t{1} << (n - block)) - 1;
          for (auto& m : mask) m &= valid;
        }
      }
      const auto off = static_cast<unsigned>(i - block);
      const unsigned lim = 64 - off;  // bytes of this block from i on
      // Length of the run of class k from i (at most lim: the shift brings in zeros).
      auto run_of = [&](unsigned k, uint64_t extra) {
        const uint64_t ones = ~((mask[k] >> off) | extra);
        return ones == 0 ? 64u : static_cast<unsigned>(__builtin_ctzll(ones));
      };
      unsigned cls = cls_of[off];
      unsigned run = 0;  // the piece is [i, i + run) when run is not 0
      if (cls == 3) {
        const unsigned next = cls_of[off + 1];
        if (s[i] == ' ' && n - i >= 2 && next <= 2) {
          cls = next;  // a space glued to the run that follows it
          run = run_of(next, 1);
        } else {
          const unsigned spaces = run_of(3, 0);
          if (spaces < lim && (i + spaces == n || s[i + spaces] < 0x80)) {
            const unsigned end = (i + spaces == n || spaces == 1) ? spaces : spaces - 1;
            emit(i, i + end);
            i += end;
            continue;
          }
        }
      } else if (cls != kNonAscii && s[i] != '\'') {
        run = run_of(cls, 0);
      }
      if (run == 0) {  // a non-ASCII start, a quote, or a long whitespace run: byte by byte
        const size_t end = internal::ScalarPieceEnd(text, i);
        emit(i, end);
        i = end;
        continue;
      }
      size_t end = i + run;
      if (run >= lim) {
        while (end < n && kByteClass.cls[s[end]] == cls) ++end;
      }
      if (end < n && s[end] >= 0x80) end = internal::RunEnd(text, end, static_cast<CharClass>(cls));
      emit(i, end);
      i = end;
    }
  }
  while (i < n && i + 16 <= readable) {
    const __m128i c =
        internal::Classify16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    const unsigned valid = n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1;
    auto same_as = [&](unsigned k) {
      return static_cast<unsigned>(
                 _mm_movemask_epi8(_mm_cmpeq_epi8(c, _mm_set1_epi8(static_cast<char>(k))))) &
             valid;
    };
    const auto low = static_cast<unsigned>(_mm_cvtsi128_si32(c));
    unsigned cls = low & 0xFFu;
    unsigned run = 0;  // the piece is [i, i + run) when run is not 0
    if (cls == 3) {
      const unsigned next = (low >> 8) & 0xFFu;
      if (s[i] == ' ' && n - i >= 2 && next <= 2) {
        cls = next;  // a space glued to the run that follows it
        run = static_cast<unsigned>(__builtin_ctz(~(same_as(next) | 1u)));
      } else {
        const auto spaces = static_cast<unsigned>(__builtin_ctz(~same_as(3)));
        if (spaces < 16 && (i + spaces == n || s[i + spaces] < 0x80)) {
          const unsigned end = (i + spaces == n || spaces == 1) ? spaces : spaces - 1;
          emit(i, i + end);
          i += end;
          continue;
        }
      }
    } else if (cls != kNonAscii && s[i] != '\'') {
      run = static_cast<unsigned>(__builtin_ctz(~same_as(cls)));
    }
    if (run == 0) {  // a non-ASCII start, a quote, or a long whitespace run: byte by byte
      const size_t end = internal::ScalarPieceEnd(text, i);
      emit(i, end);
      i = end;
      continue;
    }
    size_t end = i + run;
    if (run == 16) {
      while (end < n && kByteClass.cls[s[end]] == cls) ++end;
    }
    if (end < n && s[end] >= 0x80) end = internal::RunEnd(text, end, static_cast<CharClass>(cls));
    emit(i, end);
    i = end;
  }
#endif
  while (i < n) {
    const size_t end = internal::ScalarPieceEnd(text, i);
    emit(i, end);
    i = end;
  }
}

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_PRETOKENIZER_H_
