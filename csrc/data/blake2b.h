// BLAKE2b (RFC 7693), unkeyed, any digest size from 1 to 64 bytes. The content hash of
// exact dedup is its 16-byte form, the same bytes as Python's
// hashlib.blake2b(data, digest_size=16).digest() (python/codegen_core/data/exact.py), so a
// digest computed here and one computed in Python name the same document.
#ifndef CODEGEN_DATA_BLAKE2B_H_
#define CODEGEN_DATA_BLAKE2B_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace codegen::data {

// Writes the `digest_size`-byte BLAKE2b digest of `data` to out[0 .. digest_size).
// Throws std::invalid_argument unless 1 <= digest_size <= 64.
void Blake2b(std::string_view data, size_t digest_size, uint8_t* out);

// The digests of n messages: message i's to out[i * digest_size ..). Where the CPU has
// AVX-512 this hashes eight messages at a time, one per 64-bit vector lane (BLAKE2b's rounds
// have little parallelism inside one message); the bytes are those of Blake2b either way.
void Blake2bMany(const std::string_view* messages, size_t n, size_t digest_size, uint8_t* out);

// Blake2bMany without the vector path (for tests), and whether the vector path is used here.
void Blake2bManyPortable(const std::string_view* messages, size_t n, size_t digest_size,
                         uint8_t* out);
bool Blake2bManyUsesAvx512();

}  // namespace codegen::data

#endif  // CODEGEN_DATA_BLAKE2B_H_
