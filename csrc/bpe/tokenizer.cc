#include "bpe/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <stdexcept>

#if defined(__linux__)
#include <malloc.h>
#include <sys/mman.h>
#endif

#include "bpe/pretokenizer.h"
#include "common/parallel.h"
#include "bpe/unicode.h"

namespace codegen::bpe {
namespace {

constexpr uint32_t kMaxId = 1u << 24;  // far above any real vocabulary; guards allocations
constexpr size_t kDecodeSlack = 16;   // bytes past the end of the decode arena and output

// Converts the vocabulary (spelled over the byte alphabet) to raw bytes for the model.
// Tokens outside the alphabet cannot come out of BPE and are left to decoding only.
std::vector<std::pair<std::string, uint32_t>> VocabBytes(const ByteLevelAlphabet& alphabet,
                                                         const TokenizerSpec& spec) {
  std::vector<std::pair<std::string, uint32_t>> out;
  out.reserve(spec.vocab.size());
  std::string bytes;
  for (const auto& [token, id] : spec.vocab) {
    if (alphabet.ToBytes(token, &bytes) && !bytes.empty()) out.emplace_back(bytes, id);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> MergeBytes(const ByteLevelAlphabet& alphabet,
                                                            const TokenizerSpec& spec) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(spec.merges.size());
  std::string left;
  std::string right;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [l, r] = spec.merges[rank];
    if (!alphabet.ToBytes(l, &left) || !alphabet.ToBytes(r, &right) || left.empty() ||
        right.empty()) {
      throw std::invalid_argument("merge " + std::to_string(rank) + " ('" + l + "' '" + r +
                                  "') is not spelled in the byte-level alphabet");
    }
    out.emplace_back(left, right);
  }
  return out;
}

// The order a batch's workers take texts in: longest first when there are several workers,
// so the last text each one takes is short and they finish together; input order otherwise.
std::vector<size_t> BatchOrder(const std::vector<std::string_view>& texts, size_t workers) {
  std::vector<size_t> order(texts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (workers > 1) {
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return texts[a].size() > texts[b].size(); });
  }
  return order;
}

// See IdArrayPool (tokenizer.h): GPT-2 file, stdlib, 2 threads, fresh memory cost about
// 3 of 50 ms CPU per batch in page faults and clearing.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMinSpareBytes = 2 * kHugePage;
constexpr size_t kMaxSpareBytes = size_t{64} << 20;  // kept in all

size_t UsableBytes(void* p) {
#if defined(__linux__)
  return malloc_usable_size(p);
#else
  (void)p;
  return 0;  // not known: never kept
#endif
}

}  // namespace

uint32_t* IdArrayPool::Allocate(size_t count) {
  size_t bytes = std::max<size_t>(count, 1) * sizeof(uint32_t);
  void* p = nullptr;
  if (bytes >= kMinSpareBytes) {
    // The smallest kept array that is large enough and at most twice the size asked for.
    std::lock_guard<std::mutex> lock(mutex_);
    Spare* best = nullptr;
    for (Spare& spare : spare_) {
      if (spare.block != nullptr && spare.bytes >= bytes && spare.bytes / 2 <= bytes &&
          (best == nullptr || spare.bytes < best->bytes)) {
        best = &spare;
      }
    }
    if (best != nullptr) {
      p = best->block.release();
      best->bytes = 0;
    }
  }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr && bytes >= kMinSpareBytes) {
    bytes = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    p = std::aligned_alloc(kHugePage, bytes);
    if (p != nullptr) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
  }
#endif
  if (p == nullptr) p = std::malloc(bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<uint32_t*>(p);
}

void IdArrayPool::Release(uint32_t* p) {
  if (p == nullptr) return;
  std::unique_ptr<void, FreeBlock> block(p);
  const size_t bytes = UsableBytes(p);
  if (bytes < kMinSpareBytes || bytes > kMaxSpareBytes) return;  // freed by block
  // Kept as the newest; the oldest goes when both are taken or the two exceed the cap.
  std::unique_ptr<void, FreeBlock> drop[2];  // freed after the lock is released
  std::lock_guard<std::mutex> lock(mutex_);
  if (spare_[0].block != nullptr) {
    drop[0] = std::move(spare_[1].block);  // null when slot 1 was free
    spare_[1] = std::move(spare_[0]);
  }
  spare_[0].block = std::move(block);
  spare_[0].bytes = bytes;
  if (spare_[0].bytes + spare_[1].bytes > kMaxSpareBytes) {
    drop[1] = std::move(spare_[1].block);
    spare_[1].bytes = 0;
  }
}

void Tokenizer::FreeIds::operator()(uint32_t* p) const {
  if (pool != nullptr) {
    pool->Release(p);
  } else {
    std::free(p);
  }
}

Tokenizer::Tokenizer(const TokenizerSpec& spec)
    : options_(spec.options),
      model_(VocabBytes(alphabet_, spec), MergeBytes(alphabet_, spec), spec.options.ignore_merges),
      splitter_(spec.added_tokens) {
  uint32_t max_id = 0;
  for (const auto& entry : spec.vocab) max_id = std::max(max_id, entry.second);
  for (const auto& t : spec.added_tokens) max_id = std::max(max_id, t.id);
  if (max_id >= kMaxId) {
    throw std::invalid_argument("token id " + std::to_string(max_id) + " is too large");
  }
  tokens_.resize(static_cast<size_t>(max_id) + 1);
  for (const auto& [token, id] : spec.vocab) {
    TokenInfo& info = tokens_[id];
    if (info.kind != Kind::kUnassigned) {
      throw std::invalid_argument("id " + std::to_string(id) + " is given to both '" + info.text +
                                  "' and '" + token + "'");
    }
    info.kind = Kind::kModel;
    info.text = token;
  }
  for (const AddedToken& t : spec.added_tokens) {
    TokenInfo& info = tokens_[t.id];
    // An added token may also be a vocabulary entry (GPT-2's <|endoftext|>); it is then the
    // added token that decides how the id is treated.
    info.kind = t.special ? Kind::kSpecial : Kind::kAdded;
    info.text = t.content;
  }
  decode_offsets_.reserve(tokens_.size() + 1);
  kinds_.reserve(tokens_.size());
  decode_offsets_.push_back(0);
  std::string bytes;
  for (const TokenInfo& info : tokens_) {
    // HF's ByteLevel decoder: a token outside the byte alphabet decodes to its own UTF-8.
    decode_bytes_ += alphabet_.ToBytes(info.text, &bytes) ? bytes : info.text;
    if (decode_bytes_.size() > UINT32_MAX) throw std::invalid_argument("vocabulary too large");
    decode_offsets_.push_back(static_cast<uint32_t>(decode_bytes_.size()));
    kinds_.push_back(info.kind);
  }
  decode_bytes_.append(kDecodeSlack, '\0');  // DecodeBytes copies short tokens 16 bytes at a time
  // token_to_id: an added token's content wins over a vocabulary spelling, as in HF.
  auto index = [this](std::string_view text, uint32_t id) {
    uint32_t count = 0;
    const uint64_t hash = HashBytes(text);
    if (text_to_id_.Find(text, hash, &count) == nullptr) text_to_id_.Insert(text, hash, &id, 1);
  };
  for (const AddedToken& t : spec.added_tokens) index(t.content, t.id);
  for (const auto& [token, id] : spec.vocab) index(token, id);
}

Tokenizer::ScratchLease::ScratchLease(const Tokenizer& owner) : owner_(owner) {
  {
    std::lock_guard<std::mutex> lock(owner_.pool_mutex_);
    if (!owner_.pool_.empty()) {
      scratch_ = std::move(owner_.pool_.back());
      owner_.pool_.pop_back();
    }
  }
  if (!scratch_) scratch_ = std::make_unique<EncodeScratch>();
}

Tokenizer::ScratchLease::~ScratchLease() {
  std::lock_guard<std::mutex> lock(owner_.pool_mutex_);
  if (owner_.pool_.size() < 64) owner_.pool_.push_back(std::move(scratch_));
}

uint32_t* Tokenizer::EncodeOrdinary(std::string_view text, const char* buffer_end,
                                    EncodeScratch* scratch, uint32_t* dst) const {
  std::string prefixed;
  if (options_.add_prefix_space && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
    buffer_end = text.data() + text.size();
  }
  if (!options_.use_regex) {
    auto& ids = scratch->long_ids;
    ids.clear();
    model_.EncodePiece(text, scratch, &ids);
    return std::copy(ids.begin(), ids.end(), dst);
  }
  const char* base = text.data();
  // The pieces are collected a chunk at a time and then encoded together (EncodePieces:
  // the table probes of a chunk's pieces overlap instead of waiting behind each other).
  constexpr size_t kChunk = BpeModel::kMaxBatch;
  size_t begins[kChunk];
  size_t ends[kChunk];
  size_t count = 0;
  auto flush = [&] {
    dst = model_.EncodePieces(base, begins, ends, count, buffer_end, scratch, dst);
    count = 0;
  };
  SplitGpt2(
      text,
      [&](size_t begin, size_t end) {
        begins[count] = begin;
        ends[count] = end;
        if (++count == kChunk) flush();
      },
      static_cast<size_t>(buffer_end - base));
  flush();
  return dst;
}

void Tokenizer::EncodeWith(std::string_view text, const SpecialPolicy& policy,
                           EncodeScratch* scratch, std::vector<Segment>* segments,
                           std::vector<uint32_t>* out) const {
  const uint32_t* end = EncodeToScratch(text, policy, scratch, segments);
  out->insert(out->end(), ScratchIds(scratch), end);
}

const uint32_t* Tokenizer::ScratchIds(const EncodeScratch* scratch) {
  return scratch->out_buf.data();
}

void Tokenizer::CheckAndSplit(std::string_view text, const SpecialPolicy& policy,
                              EncodeScratch* scratch, std::vector<Segment>* segments,
                              Utf8 utf8) const {
  const size_t bad = utf8 == Utf8::kCheck ? FindInvalidUtf8(text) : std::string_view::npos;
  if (bad != std::string_view::npos) {
    throw std::invalid_argument("text is not valid UTF-8 (byte offset " + std::to_string(bad) +
                                ")");
  }
  segments->clear();
  splitter_.Split(text, policy, segments);
  model_.Prepare(scratch);
}

const uint32_t* Tokenizer::EncodeToScratch(std::string_view text, const SpecialPolicy& policy,
                                           EncodeScratch* scratch,
                                           std::vector<Segment>* segments, Utf8 utf8) const {
  CheckAndSplit(text, policy, scratch, segments, utf8);
  return EncodeSegments(text, *segments, scratch, &scratch->out_buf, 0);
}

uint32_t* Tokenizer::EncodeSegments(std::string_view text, const std::vector<Segment>& segments,
                                    EncodeScratch* scratch, std::vector<uint32_t>* out,
                                    size_t start) const {
  // Every id covers at least one byte, except that add_prefix_space adds one per segment;
  // and the hot piece cache stores kHotIds ids past a piece whatever its count.
  auto& buf = *out;
  const size_t room = start + text.size() + segments.size() + EncodeScratch::kHotIds;
  if (buf.size() < room) buf.resize(std::max(room, buf.size() * 2));
  uint32_t* dst = buf.data() + start;
  const char* buffer_end = text.data() + text.size();
  for (const Segment& s : segments) {
    if (s.token >= 0) {
      *dst++ = static_cast<uint32_t>(s.token);
    } else {
      dst = EncodeOrdinary(text.substr(s.begin, s.end - s.begin), buffer_end, scratch, dst);
    }
  }
  return dst;
}

void Tokenizer::Encode(std::string_view text, const SpecialPolicy& policy,
                       std::vector<uint32_t>* out) const {
  ScratchLease lease(*this);
  std::vector<Segment> segments;
  EncodeWith(text, policy, lease.get(), &segments, out);
}

void Tokenizer::EncodeReference(std::string_view text, const SpecialPolicy& policy,
                                std::vector<uint32_t>* out) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != std::string_view::npos) {
    throw std::invalid_argument("text is not valid UTF-8 (byte offset " + std::to_string(bad) +
                                ")");
  }
  std::vector<Segment> segments;
  splitter_.Split(text, policy, &segments);
  EncodeScratch scratch;
  for (const Segment& s : segments) {
    if (s.token >= 0) {
      out->push_back(static_cast<uint32_t>(s.token));
      continue;
    }
    std::string piece_text(text.substr(s.begin, s.end - s.begin));
    if (options_.add_prefix_space && piece_text.front() != ' ') piece_text.insert(0, 1, ' ');
    if (!options_.use_regex) {
      model_.EncodePieceReference(piece_text, &scratch, out);
      continue;
    }
    SplitGpt2Reference(piece_text, [&](size_t begin, size_t end) {
      model_.EncodePieceReference(std::string_view(piece_text).substr(begin, end - begin),
                                  &scratch, out);
    });
  }
}

std::vector<std::vector<uint32_t>> Tokenizer::EncodeBatch(
    const std::vector<std::string_view>& texts, const SpecialPolicy& policy,
    size_t num_threads) const {
  std::vector<std::vector<uint32_t>> results(texts.size());
  if (texts.empty()) return results;
  // Each worker leases one scratch for the whole batch (its piece table stays in its own
  // core's cache; no two threads touch the same one) and takes texts one at a time: file
  // sizes vary too much for static partitions. Longest first, so that the last text a
  // worker takes is a short one and the workers finish together.
  const size_t workers =
      std::min(static_cast<size_t>(ResolveThreads(static_cast<int>(num_threads))), texts.size());
  const std::vector<size_t> order = BatchOrder(texts, workers);
  std::atomic<size_t> next{0};
  RunWorkers(
      workers,
      [&](size_t) {
        ScratchLease lease(*this);
        std::vector<Segment> segments;
        for (size_t k = next.fetch_add(1); k < texts.size(); k = next.fetch_add(1)) {
          const size_t i = order[k];
          try {
            EncodeWith(texts[i], policy, lease.get(), &segments, &results[i]);
          } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("texts[" + std::to_string(i) + "]: " + e.what());
          }
        }
      },
      [&] { next.store(texts.size()); });
  return results;
}

Tokenizer::FlatIds Tokenizer::EncodeBatchFlat(const std::vector<std::string_view>& texts,
                                              const SpecialPolicy& policy,
                                              size_t num_threads, Utf8 utf8) const {
  FlatIds flat;
  flat.offsets.assign(texts.size() + 1, 0);
  if (texts.empty()) {
    flat.ids = OwnedIds(id_pool_->Allocate(1), FreeIds{id_pool_});  // never null: for numpy
    return flat;
  }
  const size_t workers =
      std::min(static_cast<size_t>(ResolveThreads(static_cast<int>(num_threads))), texts.size());
  const std::vector<size_t> order = BatchOrder(texts, workers);
  // Text i's ids: its worker's buffer (the worker lists it in `mine`) from start_of[i],
  // offsets[i + 1] of them (for now).
  std::vector<size_t> start_of(texts.size());
  std::vector<std::unique_ptr<ScratchLease>> leases(workers);
  for (auto& lease : leases) lease = std::make_unique<ScratchLease>(*this);
  // Two phases with a barrier between them: every worker encodes texts as it takes them;
  // the last one to finish sums the counts into offsets and allocates the result; then
  // every worker copies its own texts' ids there (the copy and the page faults of fresh
  // memory shared out, not left to one thread) and takes into its piece table the pieces
  // the other workers learned, so that each table knows every piece of the batch when the
  // next one comes (whatever texts the worker gets then).
  std::mutex barrier_mutex;
  std::condition_variable barrier;
  size_t arrived = 0;
  bool ready = false;
  bool failed = false;
  std::atomic<size_t> next{0};
  RunWorkers(
      workers,
      [&](size_t w) {
        EncodeScratch* scratch = leases[w]->get();
        scratch->track_learned = workers > 1;
        scratch->learned.clear();
        scratch->learned_ids.clear();
        // The ids go straight into this worker's buffer (kept, with its size, across calls:
        // `used` is how much of it this call filled), not through the one-text buffer.
        std::vector<uint32_t>& buf = scratch->batch_buf;
        size_t used = 0;
        std::vector<Segment> segments;
        std::vector<size_t> mine;
        for (size_t k = next.fetch_add(1); k < texts.size(); k = next.fetch_add(1)) {
          const size_t i = order[k];
          try {
            CheckAndSplit(texts[i], policy, scratch, &segments, utf8);
            const uint32_t* end = EncodeSegments(texts[i], segments, scratch, &buf, used);
            const auto count = static_cast<size_t>(end - (buf.data() + used));
            start_of[i] = used;
            flat.offsets[i + 1] = static_cast<int64_t>(count);
            used += count;
            mine.push_back(i);
          } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("texts[" + std::to_string(i) + "]: " + e.what());
          }
        }
        scratch->track_learned = false;
        {
          std::unique_lock<std::mutex> lock(barrier_mutex);
          if (++arrived == workers) {
            for (size_t i = 0; i < texts.size(); ++i) flat.offsets[i + 1] += flat.offsets[i];
            flat.total = static_cast<size_t>(flat.offsets.back());
            flat.ids = OwnedIds(id_pool_->Allocate(flat.total), FreeIds{id_pool_});
            ready = true;
            barrier.notify_all();
          } else {
            barrier.wait(lock, [&] { return ready || failed; });
            if (failed) return;
          }
        }
        for (const size_t i : mine) {
          const auto count = static_cast<size_t>(flat.offsets[i + 1] - flat.offsets[i]);
          std::memcpy(flat.ids.get() + flat.offsets[i], buf.data() + start_of[i],
                      count * sizeof(uint32_t));
        }
        for (size_t other = 0; other < workers; ++other) {
          if (other != w) model_.Adopt(*leases[other]->get(), scratch);
        }
      },
      [&] {
        next.store(texts.size());
        std::lock_guard<std::mutex> lock(barrier_mutex);
        failed = true;
        barrier.notify_all();
      });
  for (auto& lease : leases) {
    lease->get()->learned.clear();
    lease->get()->learned_ids.clear();
  }
  return flat;
}

std::string Tokenizer::DecodeBytes(const uint32_t* ids, size_t count, bool skip_special) const {
  const size_t vocab = kinds_.size();
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    const uint32_t id = ids[i];
    if (id >= vocab || kinds_[id] == Kind::kUnassigned) {
      throw std::invalid_argument("unknown token id " + std::to_string(id) + " at position " +
                                  std::to_string(i) + " (vocabulary size " +
                                  std::to_string(vocab) + ")");
    }
    total += decode_offsets_[id + 1] - decode_offsets_[id];
  }
  // Tokens of up to 16 bytes (nearly all) are copied as 16 bytes, a fixed-size copy with no
  // call, into room left past the end; dst then advances by the token's length.
  std::string out(total + kDecodeSlack, '\0');
  char* dst = out.data();
  const char* src = decode_bytes_.data();
  for (size_t i = 0; i < count; ++i) {
    const uint32_t id = ids[i];
    if (skip_special && kinds_[id] == Kind::kSpecial) continue;
    const uint32_t begin = decode_offsets_[id];
    const uint32_t len = decode_offsets_[id + 1] - begin;
    if (len <= kDecodeSlack) {
      std::memcpy(dst, src + begin, kDecodeSlack);
    } else {
      std::memcpy(dst, src + begin, len);
    }
    dst += len;
  }
  out.resize(static_cast<size_t>(dst - out.data()));
  return out;
}

std::optional<uint32_t> Tokenizer::TokenToId(std::string_view token) const {
  uint32_t count = 0;
  const uint32_t* id = text_to_id_.Find(token, HashBytes(token), &count);
  if (id == nullptr) return std::nullopt;
  return *id;
}

std::optional<std::string> Tokenizer::IdToToken(uint32_t id) const {
  if (id >= tokens_.size() || tokens_[id].kind == Kind::kUnassigned) return std::nullopt;
  return tokens_[id].text;
}

bool Tokenizer::IsSpecial(uint32_t id) const {
  return id < tokens_.size() && tokens_[id].kind == Kind::kSpecial;
}

}  // namespace codegen::bpe
