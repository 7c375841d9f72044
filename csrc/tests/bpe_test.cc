// Unit tests of the tokenizer core on small hand-made vocabularies (no data files needed).
#include <sys/mman.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bpe/bpe_model.h"
#include "bpe/byte_level.h"
#include "bpe/pretokenizer.h"
#include "bpe/tokenizer.h"
#include "bpe/unicode.h"
#include "tests/test_util.h"

namespace {
using codegen::bpe::AddedToken;
using codegen::bpe::ByteLevelAlphabet;
using codegen::bpe::CharClass;
using codegen::bpe::SpecialPolicy;
using codegen::bpe::Tokenizer;
using codegen::bpe::TokenizerSpec;

std::vector<std::string> Pieces(const std::string& text) {
  std::vector<std::string> out;
  codegen::bpe::SplitGpt2(text, [&](size_t b, size_t e) { out.push_back(text.substr(b, e - b)); });
  return out;
}

// 256 byte tokens (ids 0..255 in byte order) plus merges a+b, ab+c, a+a, aa+aa, Ġ+t.
TokenizerSpec SmallSpec() {
  ByteLevelAlphabet alphabet;
  TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) {
    spec.vocab.emplace_back(alphabet.FromBytes(std::string(1, static_cast<char>(b))),
                            static_cast<uint32_t>(b));
  }
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {"ab", "c"}, {"a", "a"}, {"aa", "aa"}, {"Ġ", "t"}};
  uint32_t next = 256;
  for (const auto& [l, r] : merges) {
    spec.merges.emplace_back(l, r);
    spec.vocab.emplace_back(l + r, next++);
  }
  spec.added_tokens.push_back(AddedToken{"<eos>", 300, true, false, false, false});
  spec.added_tokens.push_back(AddedToken{"  ", 301, false, false, false, true});
  spec.added_tokens.push_back(AddedToken{"    ", 302, false, false, false, true});
  return spec;
}

std::vector<uint32_t> Encode(const Tokenizer& tok, const std::string& text,
                             const SpecialPolicy& policy = {}) {
  std::vector<uint32_t> ids;
  tok.Encode(text, policy, &ids);
  return ids;
}

}  // namespace

TEST(UnicodeClasses) {
  CHECK(codegen::bpe::ClassOfCodepoint('a') == CharClass::kLetter);
  CHECK(codegen::bpe::ClassOfCodepoint(0x4E2D) == CharClass::kLetter);  // 中
  CHECK(codegen::bpe::ClassOfCodepoint(0x0661) == CharClass::kNumber);  // Arabic-Indic 1
  CHECK(codegen::bpe::ClassOfCodepoint(0x3000) == CharClass::kSpace);
  CHECK(codegen::bpe::ClassOfCodepoint(0x1F600) == CharClass::kOther);  // emoji
  CHECK(codegen::bpe::ClassOfCodepoint(0x110000) == CharClass::kOther);
}

TEST(Utf8Validation) {
  CHECK(codegen::bpe::FindInvalidUtf8("plain ascii") == std::string_view::npos);
  CHECK(codegen::bpe::FindInvalidUtf8("h\xC3\xA9") == std::string_view::npos);
  CHECK_EQ(codegen::bpe::FindInvalidUtf8("ab\xC3"), size_t{2});          // truncated
  CHECK_EQ(codegen::bpe::FindInvalidUtf8("\xC0\xAF"), size_t{0});        // overlong
  CHECK_EQ(codegen::bpe::FindInvalidUtf8("x\xED\xA0\x80"), size_t{1});   // surrogate
  CHECK_EQ(codegen::bpe::FindInvalidUtf8("\xF4\x90\x80\x80"), size_t{0});  // > U+10FFFF
}

TEST(ByteLevelAlphabetRoundTrips) {
  ByteLevelAlphabet alphabet;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string back;
  CHECK(alphabet.ToBytes(alphabet.FromBytes(all), &back));
  CHECK(back == all);
  CHECK_EQ(alphabet.CodepointOf(' '), 0x120u);  // "Ġ"
  CHECK(!alphabet.ToBytes(" ", &back));        // a raw space is not in the alphabet
}

TEST(PreTokenizerFollowsGpt2Pattern) {
  CHECK(Pieces("hello world") == (std::vector<std::string>{"hello", " world"}));
  CHECK(Pieces("it's 'S") == (std::vector<std::string>{"it", "'s", " '", "S"}));
  CHECK(Pieces("a   b") == (std::vector<std::string>{"a", "  ", " b"}));
  CHECK(Pieces("x\t\ty") == (std::vector<std::string>{"x", "\t", "\t", "y"}));
  CHECK(Pieces("end  ") == (std::vector<std::string>{"end", "  "}));
  CHECK(Pieces("x123 45!!") == (std::vector<std::string>{"x", "123", " 45", "!!"}));
  CHECK(Pieces("''s") == (std::vector<std::string>{"''", "s"}));
  CHECK(Pieces("") .empty());
}

TEST(BpeMergesLowestRankFirst) {
  const Tokenizer tok(SmallSpec());
  CHECK_EQ(Encode(tok, "abc"), (std::vector<uint32_t>{257}));        // (a b) then (ab c)
  CHECK_EQ(Encode(tok, "aaaaa"), (std::vector<uint32_t>{259, 'a'}));  // aa aa -> aaaa, a
  CHECK_EQ(Encode(tok, " t"), (std::vector<uint32_t>{260}));
  CHECK_EQ(Encode(tok, "x"), (std::vector<uint32_t>{'x'}));
}

TEST(LongPiecesMatchShortPieceAlgorithm) {
  const Tokenizer tok(SmallSpec());
  // Long pieces take the bucketed path; the same text split by spaces takes the short one.
  std::string long_text(5001, 'a');
  const auto ids = Encode(tok, long_text);
  CHECK_EQ(ids.size(), size_t{1251});
  CHECK_EQ(ids.back(), uint32_t{'a'});
  std::string abc;
  for (int i = 0; i < 1000; ++i) abc += "abc";
  CHECK_EQ(Encode(tok, abc), std::vector<uint32_t>(1000, 257));
}

TEST(AddedTokensLeftmostLongestBeforePreTokenization) {
  const Tokenizer tok(SmallSpec());
  CHECK_EQ(Encode(tok, "     x"), (std::vector<uint32_t>{302, ' ', 'x'}));
  CHECK_EQ(Encode(tok, "a<eos>b"), (std::vector<uint32_t>{'a', 300, 'b'}));
  SpecialPolicy none;
  none.allow_all = false;
  const auto plain = Encode(tok, "<eos>", none);
  CHECK(plain.size() > 1);
  CHECK(tok.DecodeBytes(plain.data(), plain.size(), false) == "<eos>");
}

TEST(DisallowedSpecialTokensAreRejectedNotEncoded) {
  const Tokenizer tok(SmallSpec());
  SpecialPolicy safe;  // the Python default: nothing allowed, every special token rejected
  safe.allow_all = false;
  safe.reject_all = true;
  CHECK_EQ(Encode(tok, "ab  c", safe), Encode(tok, "ab  c"));  // non-special added tokens stay
  CHECK_THROWS(Encode(tok, "a<eos>b", safe));
  std::string message;
  try {
    Encode(tok, "xy<eos>", safe);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  CHECK(message.find("'<eos>' (id 300) at byte offset 2") != std::string::npos);
  SpecialPolicy listed;  // reject only the listed ids; the others become text
  listed.allow_all = false;
  listed.rejected = {300};
  CHECK_THROWS(Encode(tok, "<eos>", listed));
  listed.rejected = {299};
  CHECK(Encode(tok, "<eos>", listed).size() > 1);
  SpecialPolicy allowed = safe;  // an allowed token is never rejected
  allowed.allowed = {300};
  CHECK_EQ(Encode(tok, "a<eos>", allowed), (std::vector<uint32_t>{'a', 300}));
  const std::vector<std::string_view> batch = {"fine", "bad<eos>"};
  message.clear();
  try {
    tok.EncodeBatch(batch, safe, 2);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  CHECK(message.rfind("texts[1]: ", 0) == 0);
}

TEST(PiecesOf2GiBAreAnErrorNotAWrap) {
  // 2^31 zero bytes, backed by the kernel's zero page (MAP_NORESERVE): no real memory.
  const size_t size = size_t{1} << 31;
  void* data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(data != MAP_FAILED);
  if (data == MAP_FAILED) return;
  const std::string_view huge(static_cast<const char*>(data), size);
  std::vector<std::pair<std::string, uint32_t>> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(std::string(1, static_cast<char>(b)), b);
  const codegen::bpe::BpeModel model(vocab, {}, false);
  codegen::bpe::EncodeScratch scratch;
  std::vector<uint32_t> out;
  CHECK(codegen::bpe::BpeModel::kMaxPieceBytes == size - 1);
  // The size check comes first: invalid_argument naming the size, before any allocation.
  for (const bool cached : {true, false}) {
    std::string message;
    try {
      if (cached) {
        model.EncodePiece(huge, &scratch, &out);
      } else {
        model.EncodePieceUncached(huge, &scratch, &out);
      }
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    CHECK(message.find("piece of 2147483648 bytes") != std::string::npos);
  }
  CHECK(out.empty() && scratch.symbols.empty());
  munmap(data, size);
}

TEST(DecodeRejectsUnknownIds) {
  const Tokenizer tok(SmallSpec());
  const std::vector<uint32_t> ids = {'a', 300, 9999};
  CHECK_THROWS(tok.DecodeBytes(ids.data(), ids.size(), false));
  CHECK(tok.DecodeBytes(ids.data(), 2, true) == "a");
  CHECK(tok.DecodeBytes(ids.data(), 2, false) == "a<eos>");
}

TEST(InvalidInputThrows) {
  const Tokenizer tok(SmallSpec());
  std::vector<uint32_t> ids;
  CHECK_THROWS(tok.Encode("bad \xFF byte", SpecialPolicy{}, &ids));
  TokenizerSpec broken = SmallSpec();
  broken.merges.emplace_back("zz", "q");
  CHECK_THROWS(Tokenizer{broken});
  TokenizerSpec duplicate = SmallSpec();
  duplicate.added_tokens.push_back(AddedToken{"<eos>", 303, true, false, false, false});
  CHECK_THROWS(Tokenizer{duplicate});
}

TEST(BatchEqualsSingle) {
  const Tokenizer tok(SmallSpec());
  const std::vector<std::string> texts = {"abc abc", "", "  aaaa", "<eos>x", std::string(300, 'a')};
  std::vector<std::string_view> views(texts.begin(), texts.end());
  const auto batch = tok.EncodeBatch(views, SpecialPolicy{}, 3);
  for (size_t i = 0; i < texts.size(); ++i) CHECK(batch[i] == Encode(tok, texts[i]));
}

TEST(NonMonotoneMergeTablesFallBackToTheHeap) {
  // ("a", "bc") is ranked before ("b", "c"), the merge that makes "bc": the rank-bucketed
  // loop must notice and hand long pieces to the (rank, position) heap, which gets it right.
  ByteLevelAlphabet alphabet;
  TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) {
    spec.vocab.emplace_back(alphabet.FromBytes(std::string(1, static_cast<char>(b))),
                            static_cast<uint32_t>(b));
  }
  spec.vocab.emplace_back("bc", 256);
  spec.vocab.emplace_back("abc", 257);
  spec.merges = {{"a", "bc"}, {"b", "c"}};
  const Tokenizer tok(spec);
  CHECK_EQ(Encode(tok, "abc"), (std::vector<uint32_t>{257}));
  std::string text;
  for (int i = 0; i < 40; ++i) text += "abc";
  CHECK_EQ(Encode(tok, text), std::vector<uint32_t>(40, 257));
  CHECK_EQ(Encode(tok, text + "bc"), [] {
    std::vector<uint32_t> ids(40, 257);
    ids.push_back(256);
    return ids;
  }());
}

TEST(FastScannerMatchesReferenceAtBlockEdges) {
  // Runs of every class around the 16-byte SIMD block, followed by ASCII and non-ASCII
  // characters, with and without readable bytes past the end of the text.
  const std::vector<std::string> fill = {"a", "7", "{", " ", "\n", "\xC3\xA9", "\xC2\xA0"};
  const std::vector<std::string> after = {"", "x", " ", "'s", "\xE4\xB8\xAD", "\xE3\x80\x80", "9"};
  for (const auto& f : fill) {
    for (const auto& a : after) {
      for (size_t n = 1; n < 140; ++n) {
        std::string text = n % 3 == 0 ? "ab  cd = 1, " : "";  // pieces before the run
        for (size_t k = 0; k < n; ++k) text += f;
        text += a;
        text += n % 2 == 0 ? " tail  text" : "";
        std::vector<std::pair<size_t, size_t>> fast;
        std::vector<std::pair<size_t, size_t>> ref;
        const std::string padded = text + std::string(32, 'z');
        const std::string_view view(padded.data(), text.size());
        codegen::bpe::SplitGpt2(view, [&](size_t b, size_t e) { fast.emplace_back(b, e); },
                                padded.size());
        codegen::bpe::SplitGpt2Reference(view, [&](size_t b, size_t e) { ref.emplace_back(b, e); });
        CHECK(fast == ref);
        fast.clear();
        codegen::bpe::SplitGpt2(text, [&](size_t b, size_t e) { fast.emplace_back(b, e); });
        CHECK(fast == ref);
      }
    }
  }
}

TEST(FastEncodeMatchesReference) {
  const Tokenizer tok(SmallSpec());
  const std::vector<std::string> texts = {
      "aaaa abc abcabc  <eos>    x", "ab'll 'sabc\n\n  \t aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      std::string(100, 'a') + " " + std::string(17, 'b') + "c", "t tt ttt \xC3\xA9\xC3\xA9 aa"};
  for (const auto& text : texts) {
    std::vector<uint32_t> ref;
    tok.EncodeReference(text, SpecialPolicy{}, &ref);
    CHECK(Encode(tok, text) == ref);
    CHECK(Encode(tok, text) == ref);  // the second time from the piece table
  }
}

TEST(BatchIdsArrayIsReusedAfterRelease) {
  const Tokenizer tok(SmallSpec());
  // Two texts of 600000 "abc" (one id each): 1.2M ids, 4.8 MB, large enough to be kept.
  std::string abc;
  for (int i = 0; i < 600000; ++i) abc += "abc";
  const std::vector<std::string_view> texts = {abc, abc};
  Tokenizer::FlatIds first = tok.EncodeBatchFlat(texts, {}, 2);
  CHECK_EQ(first.total, size_t{1200000});
  const uint32_t* kept = first.ids.get();
  std::fill(first.ids.get(), first.ids.get() + first.total, 7u);  // stale ids left behind
  first.ids.reset();
  // A small batch in between takes fresh memory, not the kept array.
  const Tokenizer::FlatIds small = tok.EncodeBatchFlat({std::string_view("abc abc")}, {}, 1);
  CHECK(small.ids.get() != kept);
  Tokenizer::FlatIds second = tok.EncodeBatchFlat(texts, {}, 2);
#if defined(__linux__)
  CHECK(second.ids.get() == kept);
#endif
  CHECK_EQ(second.total, size_t{1200000});
  CHECK(second.offsets == (std::vector<int64_t>{0, 600000, 1200000}));
  CHECK_EQ(std::vector<uint32_t>(second.ids.get(), second.ids.get() + second.total),
           std::vector<uint32_t>(1200000, 257));
  // Two are kept: a batch made while the previous output is still held, then both freed.
  Tokenizer::FlatIds third = tok.EncodeBatchFlat(texts, {}, 2);
  const uint32_t* other = third.ids.get();
  CHECK(other != kept);
  second.ids.reset();
  third.ids.reset();
  const Tokenizer::FlatIds a = tok.EncodeBatchFlat(texts, {}, 2);
  const Tokenizer::FlatIds b = tok.EncodeBatchFlat(texts, {}, 1);
#if defined(__linux__)
  CHECK((a.ids.get() == kept && b.ids.get() == other) ||
        (a.ids.get() == other && b.ids.get() == kept));
#endif
  CHECK_EQ(std::vector<uint32_t>(b.ids.get(), b.ids.get() + b.total),
           std::vector<uint32_t>(1200000, 257));
}

TEST(BatchIdsArraysBelongToTheirTokenizer) {
  std::string abc;
  for (int i = 0; i < 600000; ++i) abc += "abc";
  const std::vector<std::string_view> texts = {abc, abc};
  Tokenizer::FlatIds outlives;
  const uint32_t* kept = nullptr;
  {
    const auto tok = std::make_unique<Tokenizer>(SmallSpec());
    Tokenizer::FlatIds first = tok->EncodeBatchFlat(texts, {}, 2);
    kept = first.ids.get();
    first.ids.reset();  // kept by tok's pool
    // Another tokenizer does not take tok's kept array.
    const Tokenizer other(SmallSpec());
    const Tokenizer::FlatIds theirs = other.EncodeBatchFlat(texts, {}, 2);
    CHECK(theirs.ids.get() != kept);
    outlives = tok->EncodeBatchFlat(texts, {}, 2);
  }
  // The array outlives its tokenizer: still readable, and freed through the pool it holds.
  CHECK_EQ(outlives.total, size_t{1200000});
  CHECK_EQ(outlives.ids[0], 257u);
  CHECK_EQ(outlives.ids[outlives.total - 1], 257u);
  outlives.ids.reset();
}
