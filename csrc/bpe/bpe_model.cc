#include "bpe/bpe_model.h"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_map>

#if defined(__GNUC__)
#define CODEGEN_ALWAYS_INLINE __attribute__((always_inline))
#else
#define CODEGEN_ALWAYS_INLINE
#endif

namespace codegen::bpe {
namespace {
constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();

std::string Printable(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7F) {
      out.push_back(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out.push_back(hex[b >> 4]);
      out.push_back(hex[b & 15]);
    }
  }
  return out;
}
}  // namespace

BpeModel::BpeModel(const std::vector<std::pair<std::string, uint32_t>>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   bool ignore_merges) {
  std::unordered_map<std::string_view, uint32_t> ids;
  ids.reserve(vocab.size() * 2);
  for (const auto& [bytes, id] : vocab) {
    if (bytes.empty()) throw std::invalid_argument("vocab token " + std::to_string(id) + " is empty");
    ids[bytes] = id;
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const auto it = ids.find(std::string_view(&c, 1));
    if (it == ids.end()) {
      throw std::invalid_argument("vocab has no token for byte " + Printable(std::string(1, c)) +
                                  ": a byte-level BPE vocabulary needs all 256");
    }
    byte_ids_[static_cast<size_t>(b)] = it->second;
  }
  compact_merges_ = true;
  for (const auto& [bytes, id] : vocab) compact_merges_ = compact_merges_ && id < 0xFFFFu;
  if (compact_merges_) {
    merges32_.Reserve(merges.size() + 1);
  } else {
    merges_.Reserve(merges.size() + 1);
  }
  merged_id_.resize(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto l = ids.find(left);
    const auto r = ids.find(right);
    joined = left + right;
    const auto m = ids.find(joined);
    if (l == ids.end() || r == ids.end() || m == ids.end()) {
      const std::string missing = l == ids.end() ? left : r == ids.end() ? right : joined;
      throw std::invalid_argument("merge " + std::to_string(rank) + " ('" + Printable(left) +
                                  "' '" + Printable(right) + "'): token '" + Printable(missing) +
                                  "' is not in the vocabulary");
    }
    // A repeated pair keeps its last rank, as HF's merge map does.
    const auto r32 = static_cast<uint32_t>(rank);
    if (compact_merges_) {
      merges32_.Put((l->second << 16) | r->second, r32);
    } else {
      merges_.Put(PairKey(l->second, r->second), r32);
    }
    merged_id_[rank] = m->second;
  }
  num_merges_ = merges.size();
  ignore_merges_ = ignore_merges;
  for (const auto& [bytes, id] : vocab) {
    for (size_t k = 0; k + 1 < bytes.size(); ++k) {
      const unsigned key = (static_cast<unsigned>(static_cast<unsigned char>(bytes[k])) << 8) |
                           static_cast<unsigned char>(bytes[k + 1]);
      joinable_[key >> 6] |= uint64_t{1} << (key & 63);
    }
  }
  split_long_ = !ignore_merges;
  byte_pair_rank_.resize(size_t{1} << 16);
  for (unsigned a = 0; a < 256; ++a) {
    for (unsigned b = 0; b < 256; ++b) {
      byte_pair_rank_[(a << 8) | b] = FindRank(byte_ids_[a], byte_ids_[b]);
    }
  }

  EncodeScratch scratch;
  std::vector<uint32_t> out;
  std::vector<std::string_view> short_tokens;
  for (const auto& [bytes, id] : vocab) {
    if (!ignore_merges) {
      out.clear();
      EncodePieceUncached(bytes, &scratch, &out);
      if (out.size() != 1 || out[0] != id) continue;
    }
    whole_tokens_.Insert(bytes, HashBytes(bytes), &id, 1);
    if (bytes.size() >= 2 && bytes.size() <= PackedPieceMap::kMaxLen) short_tokens.push_back(bytes);
  }
  // Room for the short whole tokens at under 40% load, so a thread's copy can cache as many
  // other pieces again before it is reset.
  unsigned log2_slots = 12;
  while ((size_t{1} << log2_slots) * 2 < short_tokens.size() * 5) ++log2_slots;
  packed_base_ = PackedPieceMap(log2_slots);
  for (const std::string_view bytes : short_tokens) {
    const PackedPiece key = PackPiece(bytes.data(), bytes.size(), false);
    const uint64_t h = HashPacked(key);
    // The id whole_tokens_ answers with (the first one, should a spelling repeat).
    uint32_t count = 0;
    const uint32_t* id = whole_tokens_.Find(bytes, HashBytes(bytes), &count);
    if (packed_base_.Find(key, h) == nullptr) packed_base_.Insert(key, h, id, 1);
  }
}

void BpeModel::ResetPacked(EncodeScratch* scratch) const {
  scratch->packed.CopyFrom(packed_base_);
  scratch->packed_ready = true;
  if (scratch->hot.empty()) {
    scratch->hot.assign(size_t{1} << EncodeScratch::kHotBits, EncodeScratch::HotEntry{});
  }
}

uint32_t* BpeModel::EncodePieces(const char* base, const size_t* begins, const size_t* ends,
                                 size_t count, const char* buffer_end, EncodeScratch* scratch,
                                 uint32_t* dst) const {
  PackedPiece keys[kMaxBatch];
  uint64_t hashes[kMaxBatch];
  count = std::min(count, kMaxBatch);
  for (size_t k = 0; k < count; ++k) {
    const size_t n = ends[k] - begins[k];
    if (n > PackedPieceMap::kMaxLen) continue;
    const char* p = base + begins[k];
    keys[k] = PackPiece(p, n, buffer_end - p >= 16);
    hashes[k] = HashPacked(keys[k]);
    // No branch on the outcome (a miss is too rare to predict and too common to ignore):
    // the address prefetched is the slot's on a miss, the hot entry's own on a hit.
    const EncodeScratch::HotEntry* e = HotEntryOf(scratch, hashes[k]);
    const bool hit = n == 1 || HotHolds(*e, keys[k]);
    const void* slot = scratch->packed.SlotAddress(hashes[k]);
    __builtin_prefetch(hit ? static_cast<const void*>(e) : slot);
  }
  for (size_t k = 0; k < count; ++k) {
    const size_t n = ends[k] - begins[k];
    const char* p = base + begins[k];
    if (n > PackedPieceMap::kMaxLen) {
      dst = EncodePieceTo(p, n, buffer_end - p >= 16, scratch, dst);
    } else {
      dst = EncodeShortHashed(p, keys[k], hashes[k], scratch, dst);
    }
  }
  return dst;
}

uint32_t* BpeModel::EncodeShortMiss(const char* p, const PackedPiece& key, uint64_t hash,
                                    EncodeScratch* scratch, EncodeScratch::HotEntry* entry,
                                    uint32_t* dst) const {
  uint32_t* end;
  if (key.len == 1) {
    *dst = byte_ids_[static_cast<unsigned char>(p[0])];
    end = dst + 1;
  } else if (const PackedPieceMap::Slot* slot = scratch->packed.Find(key, hash)) {
    const uint32_t count = slot->count();
    const uint32_t* ids = scratch->packed.Ids(*slot);
    for (uint32_t k = 0; k < count; ++k) dst[k] = ids[k];
    end = dst + count;
  } else {
    end = EncodePackedMiss(p, key, hash, scratch, dst);
  }
  StoreHot(entry, key, dst, static_cast<uint32_t>(end - dst));
  return end;
}

uint32_t* BpeModel::EncodePackedMiss(const char* p, const PackedPiece& key, uint64_t hash,
                                     EncodeScratch* scratch, uint32_t* dst) const {
  static_assert(PackedPieceMap::kMaxLen <= kSmallPiece, "packed pieces take the small loop");
  uint32_t* end = MergeTiny(p, key.len, dst);
  const auto count = static_cast<uint32_t>(end - dst);
  if (scratch->track_learned) {
    scratch->learned.push_back({key, hash, static_cast<uint32_t>(scratch->learned_ids.size()),
                                count});
    scratch->learned_ids.insert(scratch->learned_ids.end(), dst, end);
  }
  if (scratch->packed.Insert(key, hash, dst, count) == nullptr) {
    ResetPacked(scratch);  // full: back to the whole tokens
    scratch->packed.Insert(key, hash, dst, count);
  }
  return end;
}

void BpeModel::Adopt(const EncodeScratch& from, EncodeScratch* scratch) const {
  Prepare(scratch);
  for (const EncodeScratch::LearnedPiece& piece : from.learned) {
    if (scratch->packed.Find(piece.key, piece.hash) != nullptr) continue;
    if (scratch->packed.Insert(piece.key, piece.hash, from.learned_ids.data() + piece.offset,
                               piece.count) == nullptr) {
      return;  // full: the rest is left to BPE when met
    }
  }
}

uint32_t* BpeModel::EncodeLongTo(std::string_view piece, EncodeScratch* scratch,
                                 uint32_t* dst) const {
  if (!split_long_) return EncodeLongWhole(piece, scratch, dst);
  if (piece.size() > kMaxCachedPiece) return EncodeLongParts(piece, scratch, dst);
  // Pieces of 17..256 bytes (deep indentation, long names, rules of '#') recur in code:
  // cached whole, so the second time is one probe instead of BPE part by part.
  const uint64_t hash = HashBytes(piece);
  uint32_t count = 0;
  if (const uint32_t* ids = scratch->cache.Find(piece, hash, &count)) {
    return std::copy(ids, ids + count, dst);
  }
  uint32_t* end = EncodeLongParts(piece, scratch, dst);
  scratch->cache.Insert(piece, hash, dst, static_cast<uint32_t>(end - dst));
  return end;
}

uint32_t* BpeModel::EncodeLongParts(std::string_view piece, EncodeScratch* scratch,
                                    uint32_t* dst) const {
  const char* p = piece.data();
  const size_t n = piece.size();
  auto part = [&](size_t begin, size_t stop) {
    const size_t len = stop - begin;
    if (len > PackedPieceMap::kMaxLen) {
      dst = EncodeLongWhole(std::string_view(p + begin, len), scratch, dst);
    } else if (len == 1) {
      *dst++ = byte_ids_[static_cast<unsigned char>(p[begin])];
    } else {
      // Parts are short (random letters: 2.3 bytes on average): the hot cache (in L2)
      // answers the ones that recur, plain BPE on the stack the others. Not the piece
      // table: a probe there is a likely cache miss, and so many distinct parts would fill
      // it and force resets (a 3 MB copy each).
      dst = EncodePartTo(p + begin, len, begin + 16 <= n, scratch, dst);
    }
  };
  size_t start = 0;
  for (size_t k = 1; k < n; ++k) {
    if (!Joinable(static_cast<unsigned char>(p[k - 1]), static_cast<unsigned char>(p[k]))) {
      part(start, k);
      start = k;
    }
  }
  if (start == 0) return EncodeLongWhole(piece, scratch, dst);
  part(start, n);
  return dst;
}

uint32_t* BpeModel::EncodePartTo(const char* p, size_t n, bool overread_ok,
                                 EncodeScratch* scratch, uint32_t* dst) const {
  if (scratch->hot.empty()) return MergeTiny(p, n, dst);
  const PackedPiece key = PackPiece(p, n, overread_ok);
  EncodeScratch::HotEntry& e = *HotEntryOf(scratch, HashPacked(key));
  if (HotHolds(e, key)) {
    std::memcpy(dst, e.ids, sizeof(e.ids));
    return dst + (e.meta >> 5);
  }
  uint32_t* end = MergeTiny(p, n, dst);
  StoreHot(&e, key, dst, static_cast<uint32_t>(end - dst));
  return end;
}

uint32_t* BpeModel::EncodeLongWhole(std::string_view piece, EncodeScratch* scratch,
                                    uint32_t* dst) const {
  auto& ids = scratch->long_ids;
  ids.clear();
  EncodePiece(piece, scratch, &ids);
  std::copy(ids.begin(), ids.end(), dst);
  return dst + ids.size();
}

uint32_t* BpeModel::MergeTiny(const char* p, size_t n, uint32_t* dst) const {
  // MergeSmall's loop over arrays on the stack: the lowest rank, leftmost on ties.
  uint32_t ids[PackedPieceMap::kMaxLen];
  uint32_t ranks[PackedPieceMap::kMaxLen];
  for (size_t k = 0; k < n; ++k) ids[k] = byte_ids_[static_cast<unsigned char>(p[k])];
  for (size_t k = 0; k + 1 < n; ++k) {
    ranks[k] = ByteRank(static_cast<unsigned char>(p[k]), static_cast<unsigned char>(p[k + 1]));
  }
  ranks[n - 1] = kNoRank;
  while (n > 1) {
    size_t best = 0;
    for (size_t k = 1; k + 1 < n; ++k) {
      if (ranks[k] < ranks[best]) best = k;
    }
    if (ranks[best] == kNoRank) break;
    ids[best] = MergedId(ranks[best]);
    for (size_t k = best + 1; k + 1 < n; ++k) {
      ids[k] = ids[k + 1];
      ranks[k] = ranks[k + 1];
    }
    --n;
    if (best > 0) ranks[best - 1] = FindRank(ids[best - 1], ids[best]);
    ranks[best] = best + 1 < n ? FindRank(ids[best], ids[best + 1]) : kNoRank;
  }
  return std::copy(ids, ids + n, dst);
}

void BpeModel::MergeSmall(EncodeScratch* scratch) const {
  auto& ids = scratch->ids;
  auto& ranks = scratch->ranks;  // ranks[k]: rank of the pair (ids[k], ids[k + 1])
  ranks.resize(ids.size());
  auto rank_of = [&](size_t k) { return FindRank(ids[k], ids[k + 1]); };
  for (size_t k = 0; k + 1 < ids.size(); ++k) ranks[k] = rank_of(k);
  ranks.back() = kNoRank;
  while (ids.size() > 1) {
    size_t best = 0;
    for (size_t k = 1; k + 1 < ids.size(); ++k) {
      if (ranks[k] < ranks[best]) best = k;
    }
    if (ranks[best] == kNoRank) break;
    ids[best] = MergedId(ranks[best]);
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    if (best > 0) ranks[best - 1] = rank_of(best - 1);
    ranks[best] = best + 1 < ids.size() ? rank_of(best) : kNoRank;
  }
}

namespace {

// The textbook binary heap, for merge tables that break the radix heap's monotonicity.
class BinaryHeap {
 public:
  void Clear() { heap_.clear(); }
  bool empty() const { return heap_.empty(); }
  bool Push(uint64_t key) {
    heap_.push_back(key);
    std::push_heap(heap_.begin(), heap_.end(), std::greater<uint64_t>());
    return true;
  }
  uint64_t Pop() {
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<uint64_t>());
    const uint64_t key = heap_.back();
    heap_.pop_back();
    return key;
  }

 private:
  std::vector<uint64_t> heap_;
};

}  // namespace

namespace {
constexpr uint32_t kDeadSymbol = std::numeric_limits<uint32_t>::max();
}  // namespace

template <typename OnPair>
void BpeModel::InitSymbols(std::string_view piece, std::vector<EncodeScratch::Symbol>* symbols,
                           OnPair&& on_pair) const {
  auto& sym = *symbols;
  const size_t n = piece.size();
  sym.resize(n);
  for (size_t k = 0; k < n; ++k) {
    sym[k] = {byte_ids_[static_cast<unsigned char>(piece[k])], static_cast<int32_t>(k) - 1,
              k + 1 < n ? static_cast<int32_t>(k + 1) : -1, kNoRank};
  }
  for (size_t k = 0; k + 1 < n; ++k) {
    const uint32_t rank =
        ByteRank(static_cast<unsigned char>(piece[k]), static_cast<unsigned char>(piece[k + 1]));
    sym[k].rank = rank;
    if (rank != kNoRank) on_pair(rank, k);
  }
}

template <typename OnPair>
bool BpeModel::MergeAt(std::vector<EncodeScratch::Symbol>* symbols, size_t pos, uint32_t rank,
                       OnPair&& on_pair) const {
  auto& sym = *symbols;
  auto& left = sym[pos];
  if (left.id == kDeadSymbol || left.next < 0) return false;
  const auto next = static_cast<size_t>(left.next);
  // Invariant: a live symbol's rank is FindRank(its id, its next's id).
  if (left.rank != rank) return false;  // a stale entry
  left.id = MergedId(rank);
  left.next = sym[next].next;
  sym[next].id = kDeadSymbol;
  if (left.next >= 0) sym[static_cast<size_t>(left.next)].prev = static_cast<int32_t>(pos);
  if (left.prev >= 0) {
    const auto prev = static_cast<size_t>(left.prev);
    const uint32_t prev_rank = FindRank(sym[prev].id, left.id);
    sym[prev].rank = prev_rank;
    if (prev_rank != kNoRank) on_pair(prev_rank, prev);
  }
  left.rank = kNoRank;
  if (left.next >= 0) {
    left.rank = FindRank(left.id, sym[static_cast<size_t>(left.next)].id);
    if (left.rank != kNoRank) on_pair(left.rank, pos);
  }
  return true;
}

void BpeModel::CollectSymbols(const std::vector<EncodeScratch::Symbol>& sym,
                              std::vector<uint32_t>* out) {
  for (int32_t k = 0; k >= 0; k = sym[static_cast<size_t>(k)].next) {
    out->push_back(sym[static_cast<size_t>(k)].id);
  }
}

template <typename Queue>
bool BpeModel::MergeWithQueue(std::string_view piece, EncodeScratch* scratch, Queue* queue,
                              std::vector<uint32_t>* out) const {
  // Queue keys are (rank << 32 | position of the left symbol): popped lowest rank first,
  // leftmost first on ties, exactly HF's order.
  queue->Clear();
  bool accepted = true;
  auto push = [&](uint32_t rank, size_t pos) {
    accepted = accepted && queue->Push((static_cast<uint64_t>(rank) << 32) | pos);
  };
  InitSymbols(piece, &scratch->symbols, push);
  while (!queue->empty() && accepted) {
    const uint64_t top = queue->Pop();
    MergeAt(&scratch->symbols, static_cast<size_t>(top & 0xFFFFFFFFu),
            static_cast<uint32_t>(top >> 32), push);
  }
  if (!accepted) return false;
  CollectSymbols(scratch->symbols, out);
  return true;
}

bool BpeModel::MergeByRank(std::string_view piece, EncodeScratch* scratch,
                           std::vector<uint32_t>* out) const {
  // Real merge tables are monotone: a merge's parts are made by lower-ranked merges, so every
  // pair a merge of rank r creates has a rank above r. HF's (rank, position) heap then pops
  // whole ranks at a time, in position order. So: one bucket of positions per rank, a small
  // heap of the ranks that have a bucket, and each bucket sorted once when its turn comes.
  // A pair created at or below the rank being processed breaks monotonicity: return false.
  auto& bucket_of = scratch->bucket_of_rank;  // rank -> index into buckets, or -1
  auto& buckets = scratch->buckets;
  auto& unsorted = scratch->bucket_unsorted;  // per bucket: a position came out of order
  unsorted.resize(buckets.size());
  auto& ranks = scratch->rank_heap;  // min-heap of ranks with a bucket
  if (bucket_of.size() != num_merges_) bucket_of.assign(num_merges_, -1);
  size_t used = 0;
  ranks.clear();
  const auto cmp = std::greater<uint32_t>();
  uint32_t current = 0;  // the rank being merged
  bool merging = false;
  bool monotone = true;
  // Inlined into the merge loop (1 MB of one letter: two million calls, ~12% of its time
  // when it was a call).
  auto push = [&](uint32_t rank, size_t pos) CODEGEN_ALWAYS_INLINE {
    if (merging && rank <= current) {
      monotone = false;
      return;
    }
    int32_t b = bucket_of[rank];
    if (b < 0) {
      b = static_cast<int32_t>(used++);
      if (buckets.size() < used) {
        buckets.emplace_back();
        unsorted.push_back(0);
      }
      buckets[static_cast<size_t>(b)].clear();
      unsorted[static_cast<size_t>(b)] = 0;
      bucket_of[rank] = b;
      ranks.push_back(rank);
      std::push_heap(ranks.begin(), ranks.end(), cmp);
    }
    auto& bucket = buckets[static_cast<size_t>(b)];
    // Positions mostly come in order: note when one does not (then the bucket is sorted
    // when its turn comes), instead of checking the whole bucket then.
    if (!bucket.empty() && bucket.back() > pos) unsorted[static_cast<size_t>(b)] = 1;
    bucket.push_back(static_cast<uint32_t>(pos));
  };
  InitSymbols(piece, &scratch->symbols, push);
  merging = true;
  std::vector<uint32_t> positions;
  while (!ranks.empty() && monotone) {
    std::pop_heap(ranks.begin(), ranks.end(), cmp);
    current = ranks.back();
    ranks.pop_back();
    const auto b = static_cast<size_t>(bucket_of[current]);
    positions.swap(buckets[b]);
    bucket_of[current] = -1;
    if (unsorted[b] != 0) std::sort(positions.begin(), positions.end());
    // A bucket's positions are spread over the whole piece: fetch the symbols a few entries
    // ahead, or every step waits on a cache miss (1 MB of random letters: ~3x slower).
    constexpr size_t kAhead = 8;
    const auto* sym = scratch->symbols.data();
    for (size_t i = 0; i < positions.size(); ++i) {
      if (i + kAhead < positions.size()) __builtin_prefetch(sym + positions[i + kAhead]);
      MergeAt(&scratch->symbols, positions[i], current, push);
      if (!monotone) break;
    }
    positions.clear();
  }
  // Leave the rank table clean for the next piece.
  for (const uint32_t r : ranks) bucket_of[r] = -1;
  if (!monotone) return false;
  CollectSymbols(scratch->symbols, out);
  return true;
}

void BpeModel::MergeLarge(std::string_view piece, EncodeScratch* scratch,
                          std::vector<uint32_t>* out) const {
  if (MergeByRank(piece, scratch, out)) return;
  BinaryHeap heap;
  MergeWithQueue(piece, scratch, &heap, out);
}

void BpeModel::CheckPieceSize(std::string_view piece) {
  if (piece.size() > kMaxPieceBytes) {
    throw std::invalid_argument("a single pre-tokenized piece of " + std::to_string(piece.size()) +
                                " bytes is longer than the tokenizer's limit of " +
                                std::to_string(kMaxPieceBytes) + " bytes");
  }
}

void BpeModel::EncodePieceUncached(std::string_view piece, EncodeScratch* scratch,
                                   std::vector<uint32_t>* out) const {
  CheckPieceSize(piece);
  if (piece.size() > kSmallPiece) {
    MergeLarge(piece, scratch, out);
    return;
  }
  auto& ids = scratch->ids;
  ids.clear();
  for (const char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
  MergeSmall(scratch);
  out->insert(out->end(), ids.begin(), ids.end());
}

void BpeModel::EncodePiece(std::string_view piece, EncodeScratch* scratch,
                           std::vector<uint32_t>* out) const {
  CheckPieceSize(piece);
  if (piece.size() == 1) {
    out->push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  const uint64_t hash = HashBytes(piece);
  uint32_t count = 0;
  if (const uint32_t* ids = whole_tokens_.Find(piece, hash, &count)) {
    out->push_back(ids[0]);
    return;
  }
  if (piece.size() > kMaxCachedPiece) {
    EncodePieceUncached(piece, scratch, out);
    return;
  }
  if (const uint32_t* ids = scratch->cache.Find(piece, hash, &count)) {
    out->insert(out->end(), ids, ids + count);
    return;
  }
  const size_t before = out->size();
  EncodePieceUncached(piece, scratch, out);
  scratch->cache.Insert(piece, hash, out->data() + before,
                        static_cast<uint32_t>(out->size() - before));
}

}  // namespace codegen::bpe

namespace codegen::bpe {

void BpeModel::EncodePieceReference(std::string_view piece, EncodeScratch* scratch,
                                    std::vector<uint32_t>* out) const {
  if (ignore_merges_) {
    uint32_t count = 0;
    if (const uint32_t* id = whole_tokens_.Find(piece, HashBytes(piece), &count)) {
      out->push_back(*id);
      return;
    }
  }
  EncodePieceUncached(piece, scratch, out);
}

}  // namespace codegen::bpe
