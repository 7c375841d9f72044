// Unit tests for csrc/dedup: shingling, MinHash, LSH parameters, candidate pairs, clustering.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/hash.h"
#include "dedup/lsh.h"
#include "dedup/minhash.h"
#include "dedup/near_dedup.h"
#include "dedup/shingle.h"
#include "dedup/union_find.h"
#include "tests/test_util.h"

namespace {

using codegen::dedup::ClusterRoots;
using codegen::dedup::ComputeBandKeys;
using codegen::dedup::ComputeSignatures;
using codegen::dedup::DocPair;
using codegen::dedup::LshParams;
using codegen::dedup::MinHasher;
using codegen::dedup::ShingleOptions;
using codegen::dedup::ShingleSet;
using codegen::dedup::Span;

std::vector<uint32_t> Shingles(std::string_view text, int ngram = 5) {
  codegen::dedup::ShingleScratch scratch;
  std::vector<uint32_t> out;
  codegen::dedup::SortedShingleSet(text, ShingleOptions{ngram}, &scratch, &out);
  return out;
}

}  // namespace

TEST(DedupTokensSplitWordsAndPunctuation) {
  std::vector<uint64_t> tokens;
  codegen::dedup::TokenHashes("foo(bar_1, 12)\n\t  x.y", &tokens);
  CHECK_EQ(tokens.size(), size_t{9});  // foo ( bar_1 , 12 ) x . y
  std::vector<uint64_t> utf8;
  codegen::dedup::TokenHashes("na\xc3\xafve = 1", &utf8);
  CHECK_EQ(utf8.size(), size_t{3});  // UTF-8 bytes stay inside the identifier
}

TEST(DedupShinglesIgnoreWhitespace) {
  const auto a = Shingles("def f(x):\n    return x + 1\n");
  const auto b = Shingles("def   f( x ) :\n\treturn x+1");
  CHECK(!a.empty());
  CHECK(a == b);
  CHECK(a != Shingles("def f(x):\n    return x + 2\n"));
}

TEST(DedupShortAndEmptyDocuments) {
  CHECK_EQ(Shingles("").size(), size_t{0});
  CHECK_EQ(Shingles(" \n\t ").size(), size_t{0});
  CHECK_EQ(Shingles("a b c").size(), size_t{1});       // fewer tokens than ngram: one shingle
  CHECK_EQ(Shingles("a b c d e").size(), size_t{1});   // exactly ngram tokens
  CHECK_EQ(Shingles("a b c d e f").size(), size_t{2});
  CHECK_EQ(Shingles("a b a b a b a b", 2).size(), size_t{2});  // a b / b a: a set
  CHECK_THROWS(ShingleSet("x", ShingleOptions{0}, nullptr, nullptr));
  // Unsorted and sorted sets hold the same values.
  codegen::dedup::ShingleScratch scratch;
  std::vector<uint32_t> unsorted;
  ShingleSet("a b c d e f a b c d e f g", ShingleOptions{3}, &scratch, &unsorted);
  CHECK_EQ(unsorted.size(), size_t{7});  // abc bcd cde def efa fab efg
  std::sort(unsorted.begin(), unsorted.end());
  CHECK(unsorted == Shingles("a b c d e f a b c d e f g", 3));
}

TEST(DedupMinHashMatchesDefinition) {
  const MinHasher hasher(64, 42);
  const std::vector<uint64_t> a = hasher.a(), b = hasher.b();
  for (uint64_t v : a) CHECK((v & 1) == 1);
  for (uint64_t v : b) CHECK(v < (uint64_t{1} << 32));
  std::mt19937 rng(7);
  std::vector<uint32_t> set(1000);
  for (auto& x : set) x = static_cast<uint32_t>(rng());
  std::vector<uint32_t> sig(64);
  hasher.Signature(set, sig.data());
  for (int i = 0; i < 64; ++i) {
    uint32_t expect = 0xFFFFFFFFu;
    for (uint32_t x : set) {
      const auto v = static_cast<uint32_t>((a[i] * x + b[i]) >> 32);  // mod 2^64 by wrap
      expect = v < expect ? v : expect;
    }
    CHECK_EQ(sig[i], expect);
  }
  std::vector<uint32_t> empty_sig(64);
  hasher.Signature(Span<uint32_t>(), empty_sig.data());
  for (uint32_t v : empty_sig) CHECK_EQ(v, 0xFFFFFFFFu);
  CHECK_THROWS(MinHasher(0, 1));
}

TEST(DedupMinHashEstimatesJaccard) {
  // |A n B| = 600, |A u B| = 1000: J = 0.6; 256 permutations: sd ~ 0.03. The keys are
  // random, as shingle hashes (fmix64 outputs) are: a 2-independent family is only
  // min-wise for well-mixed keys, and ShingleSet guarantees that.
  const MinHasher hasher(256, 1);
  std::mt19937 rng(5);
  std::vector<uint32_t> universe(1000);
  for (auto& x : universe) x = static_cast<uint32_t>(rng());
  const std::vector<uint32_t> a(universe.begin(), universe.begin() + 800);
  const std::vector<uint32_t> b(universe.begin() + 200, universe.end());
  std::vector<uint32_t> sa(256), sb(256);
  hasher.Signature(a, sa.data());
  hasher.Signature(b, sb.data());
  int equal = 0;
  for (int i = 0; i < 256; ++i) equal += sa[i] == sb[i];
  const double estimate = equal / 256.0;
  CHECK(estimate > 0.5 && estimate < 0.7);
}

TEST(DedupOnePermutationHashing) {
  using codegen::dedup::Scheme;
  const MinHasher oph(256, 1, Scheme::kOnePermutation);
  CHECK(oph.scheme() == Scheme::kOnePermutation);
  std::vector<uint32_t> sig(256);
  oph.Signature(Span<uint32_t>(), sig.data());
  for (uint32_t v : sig) CHECK_EQ(v, 0xFFFFFFFFu);
  const std::vector<uint32_t> one = {12345};
  oph.Signature(one, sig.data());  // every bin is densified from the single filled one
  for (uint32_t v : sig) CHECK_EQ(v, sig[0]);
  // J = 0.6 estimated within ~4 sd, small and large sets (many empty bins / none).
  for (const uint32_t n : {100u, 5000u}) {
    std::mt19937 rng(n);
    std::vector<uint32_t> universe(n);
    for (auto& x : universe) x = static_cast<uint32_t>(rng());
    const size_t cut = n / 5;
    const std::vector<uint32_t> a(universe.begin(), universe.end() - cut);
    const std::vector<uint32_t> b(universe.begin() + cut, universe.end());
    std::vector<uint32_t> sa(256), sb(256);
    oph.Signature(a, sa.data());
    oph.Signature(b, sb.data());
    int equal = 0;
    for (int i = 0; i < 256; ++i) equal += sa[i] == sb[i];
    CHECK(equal / 256.0 > 0.45 && equal / 256.0 < 0.75);
  }
}

TEST(DedupOptimalParamsMatchDatasketch) {
  // datasketch.lsh._optimal_param(0.85, 256, 0.5, 0.5) == (13, 19); (0.5, 128) == (25, 5).
  const LshParams p = codegen::dedup::OptimalLshParams(0.85, 256, 0.5, 0.5);
  CHECK_EQ(p.bands, 13);
  CHECK_EQ(p.rows, 19);
  const LshParams q = codegen::dedup::OptimalLshParams(0.5, 128, 0.5, 0.5);
  CHECK_EQ(q.bands, 25);
  CHECK_EQ(q.rows, 5);
  CHECK_THROWS(codegen::dedup::OptimalLshParams(1.0, 256, 0.5, 0.5));
}

TEST(DedupSignaturesAreThreadCountInvariant) {
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) {
    std::string t;
    for (int j = 0; j < 40 + i; ++j) t += "tok" + std::to_string((i * 7 + j) % 23) + " + ";
    texts.push_back(t);
  }
  std::vector<std::string_view> views(texts.begin(), texts.end());
  const MinHasher hasher(128, 3);
  std::vector<uint32_t> one(50 * 128), four(50 * 128), sizes(50);
  ComputeSignatures(views, ShingleOptions{}, hasher, 1, one.data(), nullptr);
  ComputeSignatures(views, ShingleOptions{}, hasher, 4, four.data(), sizes.data());
  CHECK(one == four);
  CHECK(sizes[0] > 0);
  std::vector<uint64_t> keys(50 * 4);
  CHECK_THROWS(ComputeBandKeys(one.data(), 50, 128, LshParams{4, 40}, 2, keys.data()));
}

TEST(DedupFindsNearDuplicatesAndClusters) {
  std::string base;
  for (int j = 0; j < 300; ++j) base += "x" + std::to_string(j) + " = f(x" + std::to_string(j) + ")\n";
  std::string near = base + "extra_line = 1\n";                 // J close to 1
  std::string other;
  for (int j = 0; j < 300; ++j) other += "y" + std::to_string(j) + " += g(" + std::to_string(j) + ")\n";
  const std::vector<std::string_view> docs = {other, base, "", near, base};
  const MinHasher hasher(256, 1);
  const LshParams params = codegen::dedup::OptimalLshParams(0.85, 256, 0.5, 0.5);
  std::vector<uint32_t> sigs(docs.size() * 256), sizes(docs.size());
  ComputeSignatures(docs, ShingleOptions{}, hasher, 2, sigs.data(), sizes.data());
  std::vector<uint64_t> keys(docs.size() * params.bands);
  ComputeBandKeys(sigs.data(), docs.size(), 256, params, 2, keys.data());
  std::vector<uint8_t> skip(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) skip[d] = sizes[d] == 0;
  const auto pairs = codegen::dedup::CandidatePairs(keys.data(), docs.size(), params.bands,
                                                    skip.data(), 100, 2);
  const std::vector<DocPair> expected = {{1, 3}, {1, 4}, {3, 4}};
  CHECK(pairs == expected);
  const auto est = codegen::dedup::SignatureSimilarity(sigs.data(), docs.size(), 256, pairs, 2);
  const auto exact = codegen::dedup::ExactJaccard(docs, ShingleOptions{}, pairs, 2);
  CHECK(exact[1] == 1.0);
  CHECK(exact[0] > 0.95 && exact[0] < 1.0);
  CHECK(est[0] > 0.9);
  const auto roots = ClusterRoots(docs.size(), pairs, nullptr);
  const std::vector<uint32_t> expected_roots = {0, 1, 2, 1, 1};
  CHECK_EQ(roots, expected_roots);
  const std::vector<DocPair> bad = {{2, 1}};
  CHECK_THROWS(ClusterRoots(3, bad, nullptr));
}

TEST(DedupLargeBucketsStayConnected) {
  // 500 identical keys: star + chain instead of 124750 pairs, still one cluster.
  std::vector<uint64_t> keys(500, 7);
  const auto pairs = codegen::dedup::CandidatePairs(keys.data(), 500, 1, nullptr, 10, 1);
  CHECK(pairs.size() < 1000);
  const auto roots = ClusterRoots(500, pairs, nullptr);
  for (uint32_t r : roots) CHECK_EQ(r, 0u);
}

TEST(DedupUnionFindKeepsSmallestIndex) {
  codegen::dedup::UnionFind uf(6);
  CHECK(uf.Union(5, 3));
  CHECK(uf.Union(4, 5));
  CHECK(!uf.Union(3, 4));
  CHECK(uf.Union(2, 4));
  CHECK_EQ(uf.Find(5), 2u);
  CHECK_EQ(uf.Find(0), 0u);
}

TEST(DedupShingleSequenceMatchesSetAndDefinition) {
  // Long enough for the 8-at-a-time path and its scalar tail; every shingle by definition.
  std::mt19937 rng(11);
  const char* words[] = {"def", "x", "(", ")", ":", "return", "+", "1", "na\xc3\xafve", "_y2"};
  for (int len : {1, 4, 5, 6, 12, 13, 100, 1001}) {
    std::string text;
    for (int k = 0; k < len; ++k) text += std::string(words[rng() % 10]) + " ";
    for (int ngram : {1, 3, 5, 9}) {
      codegen::dedup::ShingleScratch scratch;
      std::vector<uint32_t> seq;
      codegen::dedup::ShingleSequence(text, ShingleOptions{ngram}, &scratch, &seq);
      std::vector<uint64_t> tokens;
      codegen::dedup::TokenHashes(text, &tokens);
      const size_t n = static_cast<size_t>(ngram);
      CHECK_EQ(seq.size(), tokens.size() < n ? size_t{1} : tokens.size() - n + 1);
      for (size_t i = 0; i + n <= tokens.size(); ++i) {
        uint64_t h = 0;
        for (size_t j = 0; j < n; ++j) h = (h + tokens[i + j]) * 0x9E3779B97F4A7C15ULL;
        CHECK_EQ(seq[i], static_cast<uint32_t>(codegen::Fmix64(h) >> 32));
      }
      std::sort(seq.begin(), seq.end());
      seq.erase(std::unique(seq.begin(), seq.end()), seq.end());
      CHECK(seq == Shingles(text, ngram));
    }
  }
}
