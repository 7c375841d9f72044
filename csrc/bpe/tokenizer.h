// The byte-level BPE tokenizer of GPT-2 / CodeGen / CodeGen2: added tokens, then the GPT-2
// pre-tokenizer, then BPE, exactly as HF `tokenizers` runs a tokenizer.json with a BPE model
// and a ByteLevel pre-tokenizer.
//
// A Tokenizer is immutable after construction and safe to share between threads; each
// encode call borrows working memory from a small pool the Tokenizer owns.
#ifndef CODEGEN_BPE_TOKENIZER_H_
#define CODEGEN_BPE_TOKENIZER_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bpe/added_tokens.h"
#include "bpe/bpe_model.h"
#include "bpe/byte_level.h"

namespace codegen::bpe {

struct TokenizerOptions {
  bool add_prefix_space = false;  // ByteLevel: prepend " " to text that does not start with one
  bool use_regex = true;          // ByteLevel: split with the GPT-2 pattern (else BPE whole segments)
  bool ignore_merges = false;     // BPE: a piece that is a vocabulary token is that token
};

// Everything that defines a tokenizer, as read from tokenizer.json or vocab.json + merges.txt.
struct TokenizerSpec {
  std::vector<std::pair<std::string, uint32_t>> vocab;  // token spelled over the byte alphabet
  std::vector<std::pair<std::string, std::string>> merges;  // pairs over the byte alphabet
  std::vector<AddedToken> added_tokens;
  TokenizerOptions options;
};

// Whether an encode call checks that its text is UTF-8 (kKnownValid: the caller vouches,
// e.g. the UTF-8 of a Python str, which is always valid).
enum class Utf8 : uint8_t { kCheck, kKnownValid };

// The id arrays of EncodeBatchFlat. Large ones (4 MB and up) are aligned to 2 MB and asked
// to be backed by huge pages, and the two freed last are kept (owned here, 64 MB in all at
// most) for the next batches of about their size: their pages are already faulted in and
// cleared, where fresh memory costs a fault and a clear per page every call (a pipeline's
// encode_batch_flat calls, each dropping an earlier output; two, because a caller often
// still holds the previous output while the next is made). Thread-safe.
class IdArrayPool {
 public:
  IdArrayPool() = default;
  IdArrayPool(const IdArrayPool&) = delete;
  IdArrayPool& operator=(const IdArrayPool&) = delete;
  // Room for count ids (at least one); never null (throws std::bad_alloc).
  uint32_t* Allocate(size_t count);
  // Takes back an array from Allocate: keeps it (freeing the oldest kept one past the cap)
  // or frees it.
  void Release(uint32_t* p);

 private:
  struct FreeBlock {
    void operator()(void* p) const { std::free(p); }
  };
  struct Spare {
    std::unique_ptr<void, FreeBlock> block;
    size_t bytes = 0;  // usable bytes of block
  };
  std::mutex mutex_;
  Spare spare_[2];  // [0]: the newest
};

class Tokenizer {
 public:
  // Throws std::invalid_argument naming the offending entry when the spec is inconsistent.
  explicit Tokenizer(const TokenizerSpec& spec);

  // Appends the ids of text (must be valid UTF-8, else std::invalid_argument) to *out.
  void Encode(std::string_view text, const SpecialPolicy& policy, std::vector<uint32_t>* out) const;

  // Encode without the copy into a vector: calls consume(ids, count) once, with the ids of
  // text in this call's working memory (valid only during the call). The binding builds its
  // Python list or numpy array straight from them.
  template <typename Consume>
  void EncodeAndConsume(std::string_view text, const SpecialPolicy& policy, Consume&& consume,
                        Utf8 utf8 = Utf8::kCheck) const {
    ScratchLease lease(*this);
    std::vector<Segment> segments;
    const uint32_t* end = EncodeToScratch(text, policy, lease.get(), &segments, utf8);
    const uint32_t* begin = ScratchIds(lease.get());
    consume(begin, static_cast<size_t>(end - begin));
  }

  // The same ids by the plain path: the reference pre-tokenizer and BPE without any cache
  // or table of whole tokens. For tests of the fast path; slow.
  void EncodeReference(std::string_view text, const SpecialPolicy& policy,
                       std::vector<uint32_t>* out) const;

  // Encodes many texts on up to num_threads threads (0 = one per hardware thread).
  std::vector<std::vector<uint32_t>> EncodeBatch(const std::vector<std::string_view>& texts,
                                                 const SpecialPolicy& policy,
                                                 size_t num_threads) const;

  // EncodeBatch as one flat array: the ids of text i are ids[offsets[i], offsets[i + 1]).
  // No vector per text: each worker appends to a buffer it keeps between calls, and the
  // parts are copied once into the result.
  // Releases a FlatIds array through the pool of the tokenizer that made it (also from the
  // binding's numpy capsule, after the tokenizer may be gone: the pool lives as long as the
  // last array or tokenizer holding it).
  struct FreeIds {
    std::shared_ptr<IdArrayPool> pool;  // null: plain std::free
    void operator()(uint32_t* p) const;
  };
  using OwnedIds = std::unique_ptr<uint32_t[], FreeIds>;
  struct FlatIds {
    OwnedIds ids;  // released through the pool that made it
    size_t total = 0;
    std::vector<int64_t> offsets;  // texts.size() + 1
  };
  FlatIds EncodeBatchFlat(const std::vector<std::string_view>& texts, const SpecialPolicy& policy,
                          size_t num_threads, Utf8 utf8 = Utf8::kCheck) const;

  // The raw bytes the ids stand for (added tokens as their text). Throws
  // std::invalid_argument on an id that is not in the vocabulary.
  std::string DecodeBytes(const uint32_t* ids, size_t count, bool skip_special) const;

  std::optional<uint32_t> TokenToId(std::string_view token) const;
  std::optional<std::string> IdToToken(uint32_t id) const;
  bool IsSpecial(uint32_t id) const;
  // One more than the largest id (ids below it may be unassigned in unusual files).
  uint32_t VocabSize() const { return static_cast<uint32_t>(tokens_.size()); }
  const std::vector<AddedToken>& added_tokens() const { return splitter_.tokens(); }

 private:
  enum class Kind : uint8_t { kUnassigned, kModel, kAdded, kSpecial };
  struct TokenInfo {
    Kind kind = Kind::kUnassigned;
    std::string text;  // the token as spelled in the vocabulary / added token content
  };

  // Working memory leased from the pool for the duration of one call (RAII).
  class ScratchLease {
   public:
    explicit ScratchLease(const Tokenizer& owner);
    ~ScratchLease();
    ScratchLease(const ScratchLease&) = delete;
    ScratchLease& operator=(const ScratchLease&) = delete;
    EncodeScratch* get() const { return scratch_.get(); }

   private:
    const Tokenizer& owner_;
    std::unique_ptr<EncodeScratch> scratch_;
  };

  void EncodeWith(std::string_view text, const SpecialPolicy& policy, EncodeScratch* scratch,
                  std::vector<Segment>* segments, std::vector<uint32_t>* out) const;
  // Writes the ids of text at ScratchIds(scratch) and returns their end.
  const uint32_t* EncodeToScratch(std::string_view text, const SpecialPolicy& policy,
                                  EncodeScratch* scratch, std::vector<Segment>* segments,
                                  Utf8 utf8 = Utf8::kCheck) const;
  static const uint32_t* ScratchIds(const EncodeScratch* scratch);
  // Checks text (UTF-8) and splits it at added tokens into *segments; readies scratch.
  void CheckAndSplit(std::string_view text, const SpecialPolicy& policy, EncodeScratch* scratch,
                     std::vector<Segment>* segments, Utf8 utf8 = Utf8::kCheck) const;
  // Writes the ids of text (split as CheckAndSplit did) at out->data() + start, growing *out
  // as needed (its contents before start are kept), and returns their end.
  uint32_t* EncodeSegments(std::string_view text, const std::vector<Segment>& segments,
                           EncodeScratch* scratch, std::vector<uint32_t>* out,
                           size_t start) const;
  // Writes the ids of text (no added tokens in it) at dst and returns the end; dst has
  // room for text.size() + 1 ids. buffer_end: the end of the readable memory text lies in.
  uint32_t* EncodeOrdinary(std::string_view text, const char* buffer_end, EncodeScratch* scratch,
                           uint32_t* dst) const;

  TokenizerOptions options_;
  ByteLevelAlphabet alphabet_;
  BpeModel model_;
  AddedTokenSplitter splitter_;
  std::vector<TokenInfo> tokens_;  // indexed by id
  // Decoding reads only these: the bytes of id i are decode_bytes_[decode_offsets_[i],
  // decode_offsets_[i + 1]) - one flat arena instead of a string object per id.
  std::string decode_bytes_;
  std::vector<uint32_t> decode_offsets_;
  std::vector<Kind> kinds_;
  PieceCache text_to_id_{PieceCache::kUnbounded};  // spelling / added content -> id

  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<EncodeScratch>> pool_;
  // Shared with every FlatIds array handed out (the arrays may outlive the tokenizer).
  std::shared_ptr<IdArrayPool> id_pool_ = std::make_shared<IdArrayPool>();
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_TOKENIZER_H_
