// Byte-level BPE: merges by rank over the bytes of one pre-tokenized piece.
//
// Semantics are HF `tokenizers`' BPE model (and GPT-2's): start from one symbol per byte,
// then repeatedly merge the adjacent pair with the lowest merge rank, the leftmost one on
// ties, until no adjacent pair has a merge. Short pieces use a direct O(n^2) loop; long ones
// per-rank buckets of positions (or, for a non-monotone merge table, a binary heap of
// (rank, position)), so one 1 MB piece (a megabyte of "a", digits, braces) is near-linear.
#ifndef CODEGEN_BPE_BPE_MODEL_H_
#define CODEGEN_BPE_BPE_MODEL_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bpe/flat_map.h"

namespace codegen::bpe {

// Per-thread working memory of the encoder: reused buffers and a cache of piece -> ids.
// Owned by one thread at a time (see Tokenizer's scratch pool).
struct EncodeScratch {
  // Pieces of up to 16 bytes: a private copy of the model's table of whole tokens, to which
  // this thread adds the pieces it meets (one probe per piece, cold or warm, and no cache
  // line shared with another thread). Filled by BpeModel::Prepare.
  PackedPieceMap packed;
  bool packed_ready = false;
  PieceCache cache;  // longer pieces (9..kMaxCachedPiece bytes)
  // The pieces of 1..16 bytes met most recently, direct-mapped by hash: 8192 entries of one
  // cache line each (512 KB: mostly stays in the core's L2, where the piece table, megabytes,
  // does not), each with the piece's ids when it has at most kHotIds. A piece's ids never
  // change, so entries are never invalidated, only replaced.
  static constexpr uint32_t kHotIds = 11;
  struct alignas(64) HotEntry {
    uint64_t w0;
    uint64_t w1;
    uint32_t meta;  // 0: empty; else the piece's length (bits 0-4) | its id count << 5
    uint32_t ids[kHotIds];
  };
  static constexpr unsigned kHotBits = 13;
  std::vector<HotEntry> hot;
  // Batches: the short pieces this scratch's table learned (by BPE) during the current
  // batch, so the other workers' tables can take them in afterwards (BpeModel::Adopt).
  struct LearnedPiece {
    PackedPiece key;
    uint64_t hash;
    uint32_t offset;  // of its ids in learned_ids
    uint32_t count;
  };
  bool track_learned = false;
  std::vector<LearnedPiece> learned;
  std::vector<uint32_t> learned_ids;
  std::vector<uint32_t> long_ids;  // ids of one long piece, before they are copied out
  std::vector<uint32_t> out_buf;   // Tokenizer: room for the ids of one text
  std::vector<uint32_t> batch_buf; // Tokenizer::EncodeBatchFlat: this worker's texts' ids
  std::vector<uint32_t> ids;
  std::vector<uint32_t> ranks;
  struct Symbol {
    uint32_t id;
    int32_t prev;
    int32_t next;
    uint32_t rank;  // of the merge of this symbol and the next, or kNoRank: no table lookup
                    // to tell a stale queue entry
  };
  std::vector<Symbol> symbols;
  std::vector<int32_t> bucket_of_rank;  // long pieces: rank -> bucket, -1 when none
  std::vector<std::vector<uint32_t>> buckets;
  std::vector<uint8_t> bucket_unsorted;
  std::vector<uint32_t> rank_heap;
};

class BpeModel {
 public:
  // vocab: (raw bytes of the token, id); merges: pairs of raw byte strings, in rank order.
  // Throws std::invalid_argument when a byte has no token, a merge names an unknown token or
  // its result is not in the vocabulary.
  BpeModel(const std::vector<std::pair<std::string, uint32_t>>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);

  // The longest piece BPE accepts: symbol links and queued positions are 32-bit, so a longer
  // piece (2 GiB or more: one run of letters, digits or spaces) is an error, never a wrap.
  static constexpr size_t kMaxPieceBytes = std::numeric_limits<int32_t>::max();

  // Appends the ids of one piece (raw bytes, non-empty) to *out. Throws
  // std::invalid_argument for a piece longer than kMaxPieceBytes.
  void EncodePiece(std::string_view piece, EncodeScratch* scratch, std::vector<uint32_t>* out) const;

  // Adds to scratch's piece table the pieces `from` learned (its `learned` list) that the
  // table lacks, as long as it has room. Both tables map pieces to their exact ids, so this
  // only saves scratch's thread the BPE of pieces another thread has already done.
  void Adopt(const EncodeScratch& from, EncodeScratch* scratch) const;

  // Makes scratch ready for EncodePieceTo (copies the packed table on first use).
  void Prepare(EncodeScratch* scratch) const {
    if (!scratch->packed_ready) ResetPacked(scratch);
  }

  // The ids of up to kMaxBatch pieces (piece k: [begins[k], ends[k]) from base, in memory
  // readable up to buffer_end), written in order at dst; returns the end. Two passes: the
  // first hashes every short piece, reads its hot-cache entry and, where that misses, starts
  // the load of its piece-table slot; the second writes the ids (checking the hot entry
  // again: an earlier piece's miss may have replaced it), by then with the slots the misses
  // need on their way from memory instead of waited for one after another.
  static constexpr size_t kMaxBatch = 128;
  uint32_t* EncodePieces(const char* base, const size_t* begins, const size_t* ends,
                         size_t count, const char* buffer_end, EncodeScratch* scratch,
                         uint32_t* dst) const;

  // The ids of a piece of 1..16 bytes, written at dst (which has room for n + kHotIds - 1
  // ids: kHotIds are stored whatever the count), by the hot cache, then the piece table, then BPE.
  uint32_t* EncodeShortTo(const char* p, size_t n, bool overread_ok, EncodeScratch* scratch,
                          uint32_t* dst) const {
    const PackedPiece key = PackPiece(p, n, overread_ok);
    const uint64_t h = HashPacked(key);
    return EncodeShortHashed(p, key, h, scratch, dst);
  }

 private:
  static EncodeScratch::HotEntry* HotEntryOf(EncodeScratch* scratch, uint64_t h) {
    return &scratch->hot[h >> (64 - EncodeScratch::kHotBits)];
  }
  static bool HotHolds(const EncodeScratch::HotEntry& e, const PackedPiece& key) {
    return ((e.w0 ^ key.w0) | (e.w1 ^ key.w1) | ((e.meta ^ key.len) & 0x1Fu)) == 0;
  }
  // Puts key's ids [ids, ids + count) in e when they fit (else e keeps what it held).
  static void StoreHot(EncodeScratch::HotEntry* e, const PackedPiece& key, const uint32_t* ids,
                       uint32_t count) {
    if (count > EncodeScratch::kHotIds) return;
    *e = EncodeScratch::HotEntry{};
    e->w0 = key.w0;
    e->w1 = key.w1;
    e->meta = key.len | (count << 5);
    std::copy(ids, ids + count, e->ids);
  }
  uint32_t* EncodeShortHashed(const char* p, const PackedPiece& key, uint64_t h,
                              EncodeScratch* scratch, uint32_t* dst) const {
    EncodeScratch::HotEntry& e = *HotEntryOf(scratch, h);
    if (HotHolds(e, key)) {
      std::memcpy(dst, e.ids, sizeof(e.ids));
      return dst + (e.meta >> 5);
    }
    return EncodeShortMiss(p, key, h, scratch, &e, dst);
  }

 public:

  // The fast path, in two steps: Stage packs and hashes a piece, Resolve writes the ids of the piece at dst, which has room for its length in
  // ids, and returns the end of what it wrote: the ids of EncodePiece (and of
  // EncodePieceReference). Needs Prepare(scratch) first.
  struct StagedPiece {
    const char* p;
    size_t n;
    PackedPiece key;
    uint64_t hash;
  };
  // `overread_ok`: the 16 bytes at p are readable. n >= 1.
  void Stage(const char* p, size_t n, bool overread_ok, StagedPiece* staged) const {
    staged->p = p;
    staged->n = n;
    if (n >= 2 && n <= PackedPieceMap::kMaxLen) {
      staged->key = PackPiece(p, n, overread_ok);
      staged->hash = HashPacked(staged->key);
    }
  }

  uint32_t* Resolve(const StagedPiece& staged, EncodeScratch* scratch, uint32_t* dst) const {
    const size_t n = staged.n;
    if (n == 1) {
      *dst = byte_ids_[static_cast<unsigned char>(staged.p[0])];
      return dst + 1;
    }
    if (n > PackedPieceMap::kMaxLen) return EncodeLongTo(std::string_view(staged.p, n), scratch, dst);
    const PackedPiece& key = staged.key;
    const PackedPieceMap::Slot* slot = scratch->packed.Find(key, staged.hash);
    if (slot == nullptr) return EncodePackedMiss(staged.p, key, staged.hash, scratch, dst);
    const uint32_t count = slot->count();
    if (count == 1) {
      *dst = slot->value;
      return dst + 1;
    }
    const uint32_t* ids = scratch->packed.Ids(*slot);
    for (uint32_t k = 0; k < count; ++k) dst[k] = ids[k];
    return dst + count;
  }

  // One piece, Stage then Resolve.
  uint32_t* EncodePieceTo(const char* p, size_t n, bool overread_ok, EncodeScratch* scratch,
                          uint32_t* dst) const {
    StagedPiece staged;
    Stage(p, n, overread_ok, &staged);
    return Resolve(staged, scratch, dst);
  }

  // The same without any cache: the plain algorithm, for tests and the whole-token table.
  void EncodePieceUncached(std::string_view piece, EncodeScratch* scratch,
                           std::vector<uint32_t>* out) const;

  // The reference for EncodePiece: with ignore_merges a vocabulary token is itself, else
  // EncodePieceUncached.
  void EncodePieceReference(std::string_view piece, EncodeScratch* scratch,
                            std::vector<uint32_t>* out) const;

  size_t num_merges() const { return num_merges_; }

 private:
  static constexpr uint32_t kNoRank = FlatU32Map::kAbsent;
  static uint64_t PairKey(uint32_t left, uint32_t right) {
    return (static_cast<uint64_t>(left) << 32) | right;
  }
  // The rank of the merge of (left, right), or kNoRank. Vocabularies with every id below
  // 65535 (all of GPT-2's family) use the compact table (32-bit keys, 1 MB for 50k merges).
  uint32_t FindRank(uint32_t left, uint32_t right) const {
    if (compact_merges_) return merges32_.Find((left << 16) | right);
    const uint32_t* rank = merges_.Find(PairKey(left, right));
    return rank != nullptr ? *rank : kNoRank;
  }
  uint32_t MergedId(uint32_t rank) const { return merged_id_[rank]; }
  // FindRank of the tokens of two single bytes, from a direct table (256 KB; the pairs a
  // text uses stay cached, where the merge table's probes are scattered over 1 MB).
  uint32_t ByteRank(unsigned char a, unsigned char b) const {
    return byte_pair_rank_[(static_cast<size_t>(a) << 8) | b];
  }
  static void CheckPieceSize(std::string_view piece);  // throws above kMaxPieceBytes
  // EncodePieceTo's slow paths: a short piece the table lacks (BPE, then cached), and a
  // piece of more than 16 bytes (EncodePiece's caches).
  uint32_t* EncodePackedMiss(const char* p, const PackedPiece& key, uint64_t hash,
                             EncodeScratch* scratch, uint32_t* dst) const;
  void ResetPacked(EncodeScratch* scratch) const;  // packed = the base
  uint32_t* EncodeShortMiss(const char* p, const PackedPiece& key, uint64_t hash,
                            EncodeScratch* scratch, EncodeScratch::HotEntry* entry,
                            uint32_t* dst) const;
  uint32_t* EncodeLongTo(std::string_view piece, EncodeScratch* scratch, uint32_t* dst) const;
  void MergeSmall(EncodeScratch* scratch) const;  // scratch->ids in, merged in place
  // BPE of n (2..16) bytes at p, written at dst; returns the end.
  uint32_t* MergeTiny(const char* p, size_t n, uint32_t* dst) const;
  void MergeLarge(std::string_view piece, EncodeScratch* scratch, std::vector<uint32_t>* out) const;
  // One symbol per byte of piece; on_pair(rank, position) for each adjacent pair with a merge.
  template <typename OnPair>
  void InitSymbols(std::string_view piece, std::vector<EncodeScratch::Symbol>* symbols,
                   OnPair&& on_pair) const;
  // Merges the pair whose left symbol is at pos if it still is the pair of `rank` (else it is
  // a stale queue entry: false); on_pair(rank, position) for the two pairs the merge creates.
  template <typename OnPair>
  bool MergeAt(std::vector<EncodeScratch::Symbol>* symbols, size_t pos, uint32_t rank,
               OnPair&& on_pair) const;
  static void CollectSymbols(const std::vector<EncodeScratch::Symbol>& symbols,
                             std::vector<uint32_t>* out);
  // Rank-bucketed merge loop for monotone merge tables; false if the table is not monotone.
  bool MergeByRank(std::string_view piece, EncodeScratch* scratch, std::vector<uint32_t>* out) const;
  // The linked-list merge loop over a priority queue; false if the queue refused a key.
  template <typename Queue>
  bool MergeWithQueue(std::string_view piece, EncodeScratch* scratch, Queue* queue,
                      std::vector<uint32_t>* out) const;

  // A long piece cut where no token can span (see joinable_): the parts, each by
  // Resolve's short path or EncodeLongTo's caches.
  uint32_t* EncodeLongParts(std::string_view piece, EncodeScratch* scratch, uint32_t* dst) const;
  uint32_t* EncodeLongWhole(std::string_view piece, EncodeScratch* scratch, uint32_t* dst) const;
  // One part (2..16 bytes) of a cut long piece: the hot cache, else BPE (then cached hot).
  uint32_t* EncodePartTo(const char* p, size_t n, bool overread_ok, EncodeScratch* scratch,
                         uint32_t* dst) const;
  bool Joinable(unsigned char a, unsigned char b) const {
    const unsigned k = (static_cast<unsigned>(a) << 8) | b;
    return (joinable_[k >> 6] >> (k & 63)) & 1u;
  }

  static constexpr size_t kSmallPiece = 48;     // bytes; above this the heap wins
  static constexpr size_t kMaxCachedPiece = 256;

  std::array<uint32_t, 256> byte_ids_{};
  // Bit (a << 8 | b): some vocabulary token holds the bytes a b next to each other. Where a
  // piece has two adjacent bytes that no token holds, no symbol BPE ever makes spans them
  // (every symbol is a byte or a vocabulary token), so no pair across that point ever merges
  // and the merges on each side run as if the other were not there: BPE of the piece is BPE
  // of the parts, exactly. (A megabyte of random letters is then short parts, not one piece
  // of a million symbols.) Not used with ignore_merges, whose whole-word rule is per piece.
  std::array<uint64_t, 1024> joinable_{};
  bool split_long_ = false;
  bool compact_merges_ = false;
  FlatU32Map merges32_;           // (left << 16 | right) -> rank, when compact_merges_
  FlatU64Map<uint32_t> merges_;   // (left << 32 | right) -> rank, otherwise
  std::vector<uint32_t> merged_id_;  // rank -> the id the merge makes
  std::vector<uint32_t> byte_pair_rank_;  // (a << 8 | b) -> ByteRank(a, b)
  size_t num_merges_ = 0;
  bool ignore_merges_ = false;
  // Pieces whose BPE is one token: every vocabulary token for which that holds (or, with
  // ignore_merges, every vocabulary token). Read-only after construction.
  PieceCache whole_tokens_{PieceCache::kUnbounded};
  // The whole tokens of 2..16 bytes, packed: the base every scratch's table copies.
  PackedPieceMap packed_base_;
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_BPE_MODEL_H_
