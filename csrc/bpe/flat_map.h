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
  if (s.size() >= 8) {
    if (i < s.size()) std::memcpy(&tail, s.data() + s.size() - 8, 8);  // overlapping, fixed size
  } else {
    for (size_t k = 0; k < s.size(); ++k) tail |= uint64_t{static_cast<unsigned char>(s[k])} << (8 * k);
  }
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

// uint32 -> uint32, fixed after construction: 8-byte slots, so a table of 50k merge pairs
// is 1 MB (fits a core's L2) where 64-bit keys take 2. Key ~0u is reserved as empty.
class FlatU32Map {
 public:
  static constexpr uint32_t kAbsent = ~0u;
  void Reserve(size_t n) {
    unsigned bits = 4;
    while ((size_t{1} << bits) < n * 2) ++bits;
    slots_.assign(size_t{1} << bits, Slot{kEmpty, 0});
    mask_ = slots_.size() - 1;
    shift_ = 32 - bits;
  }
  void Put(uint32_t key, uint32_t value) {
    size_t i = Index(key);
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    slots_[i] = Slot{key, value};
  }
  uint32_t Find(uint32_t key) const {
    size_t i = Index(key);
    while (true) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return slot.value;
      if (slot.key == kEmpty) return kAbsent;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint32_t kEmpty = ~0u;
  struct Slot {
    uint32_t key;
    uint32_t value;
  };
  size_t Index(uint32_t key) const {
    return static_cast<size_t>(static_cast<uint32_t>(key * 0x9e3779b1u) >> shift_);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  unsigned shift_ = 32;
};

// A piece of 1..16 bytes packed as two little-endian words, zero-padded, and its length.
struct PackedPiece {
  uint64_t w0;
  uint64_t w1;
  uint32_t len;
};

// The masks that keep the first n (0..16) bytes of two little-endian words.
struct PackMasks {
  uint64_t lo[17];
  uint64_t hi[17];
};
constexpr PackMasks MakePackMasks() {
  PackMasks m{};
  for (unsigned n = 0; n <= 16; ++n) {
    m.lo[n] = n >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * n)) - 1;
    m.hi[n] = n <= 8 ? 0 : n >= 16 ? ~uint64_t{0} : (uint64_t{1} << (8 * (n - 8))) - 1;
  }
  return m;
}
inline constexpr PackMasks kPackMasks = MakePackMasks();

// `overread_ok`: the 16 bytes at p are readable (the piece is not near the very end of its
// buffer), so two loads and two masks do it, with no branch on n; otherwise byte by byte.
inline PackedPiece PackPiece(const char* p, size_t n, bool overread_ok) {
  PackedPiece k{0, 0, static_cast<uint32_t>(n)};
  if (overread_ok) {
    std::memcpy(&k.w0, p, 8);
    std::memcpy(&k.w1, p + 8, 8);
    k.w0 &= kPackMasks.lo[n];
    k.w1 &= kPackMasks.hi[n];
    return k;
  }
  for (size_t j = 0; j < n; ++j) {
    const uint64_t b = static_cast<unsigned char>(p[j]);
    if (j < 8) {
      k.w0 |= b << (8 * j);
    } else {
      k.w1 |= b << (8 * (j - 8));
    }
  }
  return k;
}

inline uint64_t HashPacked(const PackedPiece& k) {
  uint64_t h = (k.w0 + k.len) * 0x9e3779b97f4a7c15ull;
  h ^= (h >> 32) ^ k.w1;
  h *= 0xd6e8feb86659fd93ull;
  return h ^ (h >> 29);
}

// Pieces of 1..16 bytes -> token ids, the piece itself packed into the key: a probe reads one
// 24-byte slot and nothing else (no key arena, no allocation, no call). A piece of one id
// keeps it in the slot; longer id lists live in an arena. Fixed capacity: Insert refuses
// when the table is at its load limit (the caller then resets it to a base copy).
class PackedPieceMap {
 public:
  static constexpr size_t kMaxLen = 16;
  struct Slot {
    uint64_t w0;
    uint64_t w1;
    uint32_t meta;   // 0: empty; else len (bits 0-4) | count << 5
    uint32_t value;  // the id (count 1) or the offset of the ids in values()
    bool Holds(const PackedPiece& k) const {
      return w0 == k.w0 && w1 == k.w1 && (meta & 0x1Fu) == k.len;
    }
    uint32_t count() const { return meta >> 5; }
  };

  explicit PackedPieceMap(unsigned log2_slots = 4) {
    slots_.assign(size_t{1} << log2_slots, Slot{0, 0, 0, 0});
    mask_ = slots_.size() - 1;
    shift_ = 64 - log2_slots;
    limit_ = slots_.size() / 10 * 7;
  }

  // The slot holding k (hash h = HashPacked(k)), or nullptr.
  const Slot* Find(const PackedPiece& k, uint64_t h) const {
    size_t i = static_cast<size_t>(h >> shift_);
    while (true) {
      const Slot& s = slots_[i];
      if (s.Holds(k)) return &s;
      if (s.meta == 0) return nullptr;
      i = (i + 1) & mask_;
    }
  }

  // The slot a probe for hash h reads first (to prefetch).
  const void* SlotAddress(uint64_t h) const { return slots_.data() + (h >> shift_); }

  const uint32_t* Ids(const Slot& s) const {
    return s.count() == 1 ? &s.value : values_.data() + s.value;
  }

  // Adds a piece that is not present (count >= 1); returns its slot, or nullptr (nothing
  // added) when the table is full.
  const Slot* Insert(const PackedPiece& k, uint64_t h, const uint32_t* ids, uint32_t count) {
    if (size_ >= limit_ || count >= (1u << 26)) return nullptr;
    uint32_t value = ids[0];
    if (count > 1) {
      value = static_cast<uint32_t>(values_.size());
      values_.insert(values_.end(), ids, ids + count);
    }
    size_t i = static_cast<size_t>(h >> shift_);
    while (slots_[i].meta != 0) i = (i + 1) & mask_;
    slots_[i] = Slot{k.w0, k.w1, k.len | (count << 5), value};
    ++size_;
    return &slots_[i];
  }

  // Becomes a copy of base: how a per-thread cache starts and restarts.
  void CopyFrom(const PackedPieceMap& base) { *this = base; }

  size_t size() const { return size_; }

 private:
  std::vector<Slot> slots_;
  std::vector<uint32_t> values_;
  size_t mask_ = 0;
  unsigned shift_ = 64;
  size_t limit_ = 0;
  size_t size_ = 0;
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
