#include "bpe/byte_level.h"

#include "bpe/unicode.h"

namespace codegen::bpe {

ByteLevelAlphabet::ByteLevelAlphabet() {
  cp_to_byte_.fill(-1);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    byte_to_cp_[b] = printable ? b : next++;
    cp_to_byte_[byte_to_cp_[b]] = static_cast<int16_t>(b);
  }
}

bool ByteLevelAlphabet::ToBytes(std::string_view token, std::string* out) const {
  out->clear();
  if (FindInvalidUtf8(token) != std::string_view::npos) return false;
  size_t i = 0;
  while (i < token.size()) {
    size_t len;
    const uint32_t cp = DecodeUtf8(token, i, &len);
    if (cp >= cp_to_byte_.size() || cp_to_byte_[cp] < 0) return false;
    out->push_back(static_cast<char>(cp_to_byte_[cp]));
    i += len;
  }
  return true;
}

std::string ByteLevelAlphabet::FromBytes(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) AppendUtf8(byte_to_cp_[static_cast<uint8_t>(c)], &out);
  return out;
}

}  // namespace codegen::bpe
