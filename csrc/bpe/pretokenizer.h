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
#include <cstring>
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
// The ASCII classes of 64 bytes as bit masks: bit j stands for byte j.
struct BlockMasks {
  uint64_t valid = 0;      // j < the text's length
  uint64_t space = 0;      // \t \n \v \f \r and ' '
  uint64_t blank = 0;      // ' '
  uint64_t letter = 0;     // A-Z a-z
  uint64_t digit = 0;      // 0-9
  uint64_t quote = 0;      // '
  uint64_t non_ascii = 0;  // any byte of a multi-byte character
  uint64_t other() const { return valid & ~(space | letter | digit | non_ascii); }
};

// p: 64 readable bytes, of which the first `len` (any count; 64 or more: all) are text.
inline BlockMasks ClassifyBlock(const unsigned char* p, size_t len) {
  BlockMasks m;
  const __m128i lower_bias = _mm_set1_epi8(0x1F);
  for (int q = 0; q < 4; ++q) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * q));
    auto bits = [](__m128i x) {
      return static_cast<uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(x)));
    };
    // x in [lo, lo + len) <=> (int8)(x + 0x80 - lo) < -128 + len
    const __m128i lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
    const __m128i letter =
        _mm_cmplt_epi8(_mm_add_epi8(lower, lower_bias), _mm_set1_epi8(-128 + 26));
    const __m128i digit =
        _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x50)), _mm_set1_epi8(-128 + 10));
    const __m128i control =
        _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x77)), _mm_set1_epi8(-128 + 5));
    const __m128i blank = _mm_cmpeq_epi8(v, _mm_set1_epi8(' '));
    const unsigned shift = 16 * static_cast<unsigned>(q);
    m.letter |= bits(letter) << shift;
    m.digit |= bits(digit) << shift;
    m.blank |= bits(blank) << shift;
    m.space |= bits(_mm_or_si128(control, blank)) << shift;
    m.quote |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8('\''))) << shift;
    m.non_ascii |= bits(v) << shift;
  }
  m.valid = len >= 64 ? ~uint64_t{0} : (uint64_t{1} << len) - 1;
  m.letter &= m.valid;
  m.digit &= m.valid;
  m.blank &= m.valid;
  m.space &= m.valid;
  m.quote &= m.valid;
  m.non_ascii &= m.valid;
  return m;
}

// Every position of a block where the pattern starts a piece, from the classes of the
// block, the one before (prev) and the one after (next); exact when the block, the last four
// bytes of prev and the first byte of next are ASCII (the caller checks). For ASCII text
// the pattern's pieces are fixed by each position's neighbours:
//  - whitespace starts a piece where a run of it starts, and its last character starts
//    one when a non-space follows (\s+(?!\S) leaves it: alone, or glued as " ?X+");
//  - a non-space starts a piece after whitespace other than ' ' (a ' ' before it is glued
//    to it), and where the class (letter, digit, other) changes;
//  - a quote that starts a piece (after a letter, a digit, whitespace other than ' ', or
//    at the start) and spells 's 't 'm 'd 're 've 'll is a piece of its own: the letter
//    after the quote starts none, the byte after the contraction does.
// `contraction_starts` / `contraction_inside`: the starts and non-starts the contractions
// of the previous block left in this one; set to those of this block on the next one.
struct ContractionCarry {
  uint64_t starts = 0;
  uint64_t inside = 0;
};

inline uint64_t BlockStarts(const BlockMasks& prev, const BlockMasks& cur, const BlockMasks& next,
                            bool text_start, const unsigned char* s, size_t base, size_t n,
                            ContractionCarry* carry) {
  auto before = [](uint64_t c, uint64_t p) { return (c << 1) | (p >> 63); };  // bit j: j - 1
  const uint64_t prev_space = before(cur.space, prev.space);
  const uint64_t prev_blank = before(cur.blank, prev.blank);
  const uint64_t prev_letter = before(cur.letter, prev.letter);
  const uint64_t prev_digit = before(cur.digit, prev.digit);
  const uint64_t other = cur.other();
  const uint64_t prev_other = before(other, prev.other());
  const uint64_t next_space = (cur.space >> 1) | (next.space << 63);
  const uint64_t next_valid = (cur.valid >> 1) | (next.valid << 63);
  const uint64_t non_space = cur.valid & ~cur.space;
  uint64_t starts = cur.space & (~prev_space | (next_valid & ~next_space));
  starts |= non_space & prev_space & ~prev_blank;
  starts |= non_space & ~prev_space &
            ((cur.letter & ~prev_letter) | (cur.digit & ~prev_digit) | (other & ~prev_other));
  uint64_t inside = carry->inside;
  starts |= carry->starts;
  carry->starts = 0;
  carry->inside = 0;
  uint64_t quotes = cur.quote & (prev_letter | prev_digit | (prev_space & ~prev_blank) |
                                 (text_start ? uint64_t{1} : 0));
  while (quotes != 0) {
    const auto j = static_cast<unsigned>(__builtin_ctzll(quotes));
    quotes &= quotes - 1;
    const size_t i = base + j;
    const unsigned char c1 = i + 1 < n ? s[i + 1] : 0;
    const unsigned char c2 = i + 2 < n ? s[i + 2] : 0;
    unsigned len = 0;
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
      len = 2;
    } else if ((c2 == 'e' && (c1 == 'r' || c1 == 'v')) || (c1 == 'l' && c2 == 'l')) {
      len = 3;
    }
    if (len == 0) continue;
    // Bit j + 1 (inside) and bit j + len (a start), in this block or the next.
    const unsigned in = j + 1;
    const unsigned end = j + len;
    if (in < 64) {
      inside |= uint64_t{1} << in;
    } else {
      carry->inside |= uint64_t{1} << (in - 64);
    }
    if (end < 64) {
      starts |= uint64_t{1} << end;
    } else {
      carry->starts |= uint64_t{1} << (end - 64);
    }
  }
  return starts & ~inside & cur.valid;
}
#endif

}  // namespace internal

// The same pieces as SplitGpt2Reference, fast: the text is classified 64 bytes at a time
// with SIMD compares into bit masks, every piece start of an ASCII block comes out of a few
// mask operations (BlockStarts), and the pieces are emitted by walking the start bits - no
// branch per byte and none that depends on a piece's length. Blocks near non-ASCII text
// are split piece by piece by the byte-class scanner (and the reference code for non-ASCII
// characters). `readable`: how many bytes from text.data() may be read (text.size() or
// more: the buffer text lies in); bytes past text.size() are read but never part of a piece.
template <typename Emit>
void SplitGpt2(std::string_view text, Emit&& emit, size_t readable = 0) {
  const size_t n = text.size();
  if (readable < n) readable = n;
  size_t pos = 0;  // the start of the piece not emitted yet
#if defined(__SSE2__)
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  auto classify = [&](size_t base) {
    if (base >= n) return internal::BlockMasks{};
    if (base + 64 <= readable) return internal::ClassifyBlock(s + base, n - base);
    alignas(16) unsigned char tail[64] = {};
    std::memcpy(tail, s + base, n - base);  // n - base < 64 here
    return internal::ClassifyBlock(tail, n - base);
  };
  internal::BlockMasks prev;
  internal::BlockMasks cur = classify(0);
  internal::ContractionCarry carry;
  for (size_t base = 0; base < n; base += 64) {
    const internal::BlockMasks next = classify(base + 64);
    const bool ascii = ((prev.non_ascii >> 60) | cur.non_ascii | (next.non_ascii & 1)) == 0;
    if (ascii) {
      uint64_t starts =
          internal::BlockStarts(prev, cur, next, base == 0, s, base, n, &carry);
      if (pos >= base) {  // only the starts after pos
        const size_t off = pos - base;
        starts = off >= 63 ? 0 : starts & (~uint64_t{0} << (off + 1));
      }
      while (starts != 0) {
        const size_t q = base + static_cast<size_t>(__builtin_ctzll(starts));
        starts &= starts - 1;
        emit(pos, q);
        pos = q;
      }
    } else {
      // Contractions of this block that reach the next one: BlockStarts tells on the
      // next block only when this one is ASCII too; otherwise the scanner goes on there.
      carry = internal::ContractionCarry{};
      if (pos < base + 64) {
        while (pos < n && pos < base + 64) {
          const size_t end = internal::ScalarPieceEnd(text, pos);
          emit(pos, end);
          pos = end;
        }
      }
    }
    prev = cur;
    cur = next;
  }
  if (pos < n) emit(pos, n);  // no start after pos: the last piece
  return;
#endif
  while (pos < n) {
    const size_t end = internal::ScalarPieceEnd(text, pos);
    emit(pos, end);
    pos = end;
  }
}

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_PRETOKENIZER_H_
