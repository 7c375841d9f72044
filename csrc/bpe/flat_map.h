// Small open-addressing hash tables for the hot paths of the BPE encoder.
#ifndef CODEGEN_BPE_FLAT_MAP_H_
#define CODEGEN_BPE_FLAT_MAP_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/hash.h"

namespace codegen::bpe {

inline uint64_t Mix64(uint64_t x) { return Fmix64(x); }

// Hash of a short byte string, eight bytes at a time.
inline uint64_t HashBytes(std::string_view s) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (s.size() * 0x100000001b3ull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = Mix64(h ^ w) * 0x9e3779b97f4a7c15ull;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  return Mix64(h ^ tail);
}

// uint64 -> V, fixed after construction. Owns its slots; a key and its value share a slot
// (one cache line per probe). Key ~0 is reserved as empty.
template <typename V>
class FlatU64Map {
 public:
  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{kEmpty, V{}});
    mask_ = cap - 1;
  }
  // Inserts or overwrites.
  void Put(uint64_t key, const V& value) {
    size_t i = Mix64(key) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    slots_[i] = Slot{key, value};
  }
  const V* Find(uint64_t key) const {
    size_t i = Mix64(key) & mask_;
    while (true) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return &slot.value;
      if (slot.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key;
    V value;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// Equality of two byte strings of the same length n, without a call for short ones.
inline bool SameBytes(const char* a, const char* b, size_t n) {
  if (n <= 8) {
    uint64_t x = 0;
    uint64_t y = 0;
    std::memcpy(&x, a, n);
    std::memcpy(&y, b, n);
    return x == y;
  }
  return std::memcmp(a, b, n) == 0;
}

// Byte string -> list of token ids, for caching the BPE of pieces. Keys and values live in
// two arenas owned by the map; Clear() drops everything (used to bound memory).
class PieceCache {
 public:
  // max_slots bounds memory: reaching it clears the cache. Use kUnbounded for a fixed table.
  static constexpr size_t kUnbounded = ~size_t{0};
  explicit PieceCache(size_t max_slots = size_t{1} << 20) : max_slots_(max_slots) { Rehash(1 << 12); }

  // Returns the cached ids (pointer, count) or nullptr.
  const uint32_t* Find(std::string_view piece, uint64_t hash, uint32_t* count) const {
    size_t slot = hash & mask_;
    while (true) {
      const Entry& e = entries_[slot];
      if (e.key_len == kEmptyLen) return nullptr;
      if (e.hash == hash && e.key_len == piece.size() &&
          SameBytes(keys_.data() + e.key_off, piece.data(), piece.size())) {
        *count = e.val_len;
        return values_.data() + e.val_off;
      }
      slot = (slot + 1) & mask_;
    }
  }

  void Insert(std::string_view piece, uint64_t hash, const uint32_t* ids, uint32_t count) {
    if (size_ * 2 >= entries_.size()) {
      if (entries_.size() >= max_slots_) {
        Clear();
      } else {
        Grow();
      }
    }
    Entry e{hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(piece.size()),
            static_cast<uint32_t>(values_.size()), count};
    keys_.append(piece.data(), piece.size());
    values_.insert(values_.end(), ids, ids + count);
    Place(e);
    ++size_;
  }

  void Clear() {
    keys_.clear();
    values_.clear();
    Rehash(entries_.size());
    size_ = 0;
  }

 private:
  static constexpr uint32_t kEmptyLen = ~0u;
  struct Entry {
    uint64_t hash = 0;
    uint32_t key_off = 0;
    uint32_t key_len = kEmptyLen;
    uint32_t val_off = 0;
    uint32_t val_len = 0;
  };
  void Rehash(size_t cap) {
    entries_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  void Place(const Entry& e) {
    size_t slot = e.hash & mask_;
    while (entries_[slot].key_len != kEmptyLen) slot = (slot + 1) & mask_;
    entries_[slot] = e;
  }
  void Grow() {
    std::vector<Entry> old;
    old.swap(entries_);
    Rehash(old.size() * 2);
    for (const Entry& e : old) {
      if (e.key_len != kEmptyLen) Place(e);
    }
  }

  std::vector<Entry> entries_;
  std::string keys_;
  std::vector<uint32_t> values_;
  size_t max_slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_FLAT_MAP_H_
