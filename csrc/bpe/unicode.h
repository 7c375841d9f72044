// UTF-8 decoding and the character classes of the GPT-2 pre-tokenizer.
//
// The class tables are generated at build time (tools/gen_unicode_tables.py) from the
// Unicode 16.0.0 database: the version of the Oniguruma tables that HF `tokenizers` uses
// for the same pattern, so both agree on every code point.
#ifndef CODEGEN_BPE_UNICODE_H_
#define CODEGEN_BPE_UNICODE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace codegen::bpe {

// \p{L}, \p{N}, \s (White_Space) and everything else, as the GPT-2 pattern sees them.
enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// Class of any code point (0..0x10FFFF); out-of-range values are kOther.
CharClass ClassOfCodepoint(uint32_t cp);

// ASCII classes, inline for the scanner's fast path.
extern const CharClass kAsciiClass[128];

// Decodes the code point starting at text[i] (text must be valid UTF-8; see
// ValidateUtf8). Returns the code point and sets *len to its byte length.
inline uint32_t DecodeUtf8(std::string_view text, size_t i, size_t* len) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    *len = 2;
    return ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 6) |
           (static_cast<unsigned char>(text[i + 2]) & 0x3Fu);
  }
  *len = 4;
  return ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 12) |
         ((static_cast<unsigned char>(text[i + 2]) & 0x3Fu) << 6) |
         (static_cast<unsigned char>(text[i + 3]) & 0x3Fu);
}

// Class and byte length of the character at text[i].
inline CharClass ClassAt(std::string_view text, size_t i, size_t* len) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) {
    *len = 1;
    return kAsciiClass[b0];
  }
  return ClassOfCodepoint(DecodeUtf8(text, i, len));
}

// Returns the byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates
// and code points above 0x10FFFF are invalid), or std::string_view::npos if valid.
size_t FindInvalidUtf8(std::string_view text);

// Appends the UTF-8 encoding of cp to out.
void AppendUtf8(uint32_t cp, std::string* out);

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_UNICODE_H_
