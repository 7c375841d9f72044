// Small hashing helpers shared by the native core (tokenizer caches, MinHash, LSH).
#ifndef CODEGEN_COMMON_HASH_H_
#define CODEGEN_COMMON_HASH_H_

#include <cstdint>

namespace codegen {

// MurmurHash3's 64-bit finaliser: a fast bijective mix. MinHash signatures depend on its
// exact output (python/codegen_core/data/minhash_reference.py mirrors it in numpy).
inline uint64_t Fmix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

}  // namespace codegen

#endif  // CODEGEN_COMMON_HASH_H_
