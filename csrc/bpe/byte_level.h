// GPT-2's reversible map between bytes and printable Unicode characters.
//
// Byte-level BPE vocabularies store tokens as strings over a 256-character alphabet:
// printable bytes map to themselves, the others (space, control bytes, ...) to U+0100 and
// up ("Ġ" is the space). Reference: openai/gpt-2 encoder.py bytes_to_unicode().
#ifndef CODEGEN_BPE_BYTE_LEVEL_H_
#define CODEGEN_BPE_BYTE_LEVEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace codegen::bpe {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();

  // The alphabet character that stands for byte b.
  uint32_t CodepointOf(uint8_t b) const { return byte_to_cp_[b]; }

  // Maps a vocabulary token (UTF-8 text over the alphabet) back to raw bytes. Returns false,
  // leaving *out unspecified, when the token holds a character outside the alphabet.
  bool ToBytes(std::string_view token, std::string* out) const;

  // The vocabulary spelling (UTF-8 over the alphabet) of raw bytes.
  std::string FromBytes(std::string_view bytes) const;

 private:
  std::array<uint32_t, 256> byte_to_cp_{};
  std::array<int16_t, 324> cp_to_byte_{};  // the alphabet lies below U+0144; -1 = not in it
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_BYTE_LEVEL_H_
