#include "dedup/near_dedup.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/parallel.h"
#include "dedup/union_find.h"

namespace codegen::dedup {
namespace {

void CheckPairs(Span<DocPair> pairs, size_t n) {
  for (const auto& [i, j] : pairs) {
    if (i >= j || j >= n) {
      throw std::invalid_argument("pair (" + std::to_string(i) + ", " + std::to_string(j) +
                                  ") is not i < j < " + std::to_string(n));
    }
  }
}

}  // namespace

void ComputeSignatures(Span<std::string_view> docs, const ShingleOptions& shingles,
                       const MinHasher& hasher, int num_threads, uint32_t* out,
                       uint32_t* num_shingles_out) {
  ValidateShingleOptions(shingles);
  const size_t k = static_cast<size_t>(hasher.num_perm());
  // Small chunks: document sizes vary by orders of magnitude.
  ParallelFor(docs.size(), 8, num_threads, [&](size_t begin, size_t end) {
    ShingleScratch scratch;  // per-thread, reused across documents
    std::vector<uint32_t> set;
    for (size_t d = begin; d < end; ++d) {
      if (hasher.scheme() == Scheme::kOnePermutation) {
        ShingleSequence(docs[d], shingles, &scratch, &set);  // O(n) scheme: skip the dedup
      } else {
        ShingleSet(docs[d], shingles, &scratch, &set);  // O(n * k): dedup first
      }
      hasher.Signature(set, out + d * k);
      if (num_shingles_out != nullptr) {
        const size_t tokens = scratch.tokens.size();
        const size_t ngram = static_cast<size_t>(shingles.ngram);
        num_shingles_out[d] = static_cast<uint32_t>(tokens < ngram ? (tokens > 0) : tokens - ngram + 1);
      }
    }
  });
}

void ComputeBandKeys(const uint32_t* sigs, size_t n, int num_perm, LshParams params,
                     int num_threads, uint64_t* out) {
  if (params.bands < 1 || params.rows < 1 || params.bands > num_perm || params.rows > num_perm ||
      params.bands * params.rows > num_perm) {
    throw std::invalid_argument("LSH bands * rows must be in [1, num_perm=" +
                                std::to_string(num_perm) + "], got " +
                                std::to_string(params.bands) + " x " +
                                std::to_string(params.rows));
  }
  const size_t k = static_cast<size_t>(num_perm);
  const size_t b = static_cast<size_t>(params.bands);
  ParallelFor(n, 1024, num_threads, [&](size_t begin, size_t end) {
    for (size_t d = begin; d < end; ++d) {
      for (size_t band = 0; band < b; ++band) {
        out[d * b + band] = BandKey(sigs + d * k, static_cast<int>(band), params.rows);
      }
    }
  });
}

std::vector<DocPair> CandidatePairs(const uint64_t* keys, size_t n, int bands,
                                    const uint8_t* skip, size_t max_bucket, int num_threads) {
  if (bands < 1) throw std::invalid_argument("bands must be >= 1");
  if (max_bucket < 2) throw std::invalid_argument("max_bucket must be >= 2");
  if (n > 0xFFFFFFFFull) throw std::invalid_argument("too many documents for 32-bit ids");
  const size_t nb = static_cast<size_t>(bands);
  std::vector<std::vector<uint64_t>> per_band(nb);  // packed (i << 32 | j)
  ParallelFor(nb, 1, num_threads, [&](size_t begin, size_t end) {
    std::vector<std::pair<uint64_t, uint32_t>> entries;
    for (size_t band = begin; band < end; ++band) {
      entries.clear();
      entries.reserve(n);
      for (size_t d = 0; d < n; ++d) {
        if (skip != nullptr && skip[d] != 0) continue;
        entries.emplace_back(keys[d * nb + band], static_cast<uint32_t>(d));
      }
      std::sort(entries.begin(), entries.end());
      auto& found = per_band[band];
      for (size_t s = 0; s < entries.size();) {
        size_t e = s + 1;
        while (e < entries.size() && entries[e].first == entries[s].first) ++e;
        const size_t m = e - s;
        if (m <= max_bucket) {
          for (size_t x = s; x < e; ++x) {
            for (size_t y = x + 1; y < e; ++y) {
              found.push_back((uint64_t{entries[x].second} << 32) | entries[y].second);
            }
          }
        } else {
          for (size_t y = s + 1; y < e; ++y) {
            found.push_back((uint64_t{entries[s].second} << 32) | entries[y].second);
            if (y > s + 1) {
              found.push_back((uint64_t{entries[y - 1].second} << 32) | entries[y].second);
            }
          }
        }
        s = e;
      }
    }
  });
  std::vector<uint64_t> all;
  size_t total = 0;
  for (const auto& v : per_band) total += v.size();
  all.reserve(total);
  for (auto& v : per_band) {
    all.insert(all.end(), v.begin(), v.end());
    std::vector<uint64_t>().swap(v);
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  std::vector<DocPair> pairs(all.size());
  for (size_t p = 0; p < all.size(); ++p) {
    pairs[p] = {static_cast<uint32_t>(all[p] >> 32), static_cast<uint32_t>(all[p])};
  }
  return pairs;
}

std::vector<double> SignatureSimilarity(const uint32_t* sigs, size_t n, int num_perm,
                                        Span<DocPair> pairs, int num_threads) {
  CheckPairs(pairs, n);
  if (num_perm < 1) throw std::invalid_argument("num_perm must be >= 1");
  const size_t k = static_cast<size_t>(num_perm);
  std::vector<double> sim(pairs.size());
  ParallelFor(pairs.size(), 4096, num_threads, [&](size_t begin, size_t end) {
    for (size_t p = begin; p < end; ++p) {
      const uint32_t* a = sigs + pairs[p].first * k;
      const uint32_t* b = sigs + pairs[p].second * k;
      size_t equal = 0;
      for (size_t i = 0; i < k; ++i) equal += a[i] == b[i] ? 1 : 0;
      sim[p] = static_cast<double>(equal) / static_cast<double>(k);
    }
  });
  return sim;
}

std::vector<double> ExactJaccard(Span<std::string_view> docs, const ShingleOptions& shingles,
                                 Span<DocPair> pairs, int num_threads) {
  ValidateShingleOptions(shingles);
  CheckPairs(pairs, docs.size());
  // Shingle only the documents that appear in some pair.
  std::vector<uint32_t> involved;
  involved.reserve(pairs.size() * 2);
  for (const auto& [i, j] : pairs) {
    involved.push_back(i);
    involved.push_back(j);
  }
  std::sort(involved.begin(), involved.end());
  involved.erase(std::unique(involved.begin(), involved.end()), involved.end());
  std::vector<std::vector<uint32_t>> sets(involved.size());
  ParallelFor(involved.size(), 8, num_threads, [&](size_t begin, size_t end) {
    ShingleScratch scratch;
    for (size_t x = begin; x < end; ++x) {
      SortedShingleSet(docs[involved[x]], shingles, &scratch, &sets[x]);
    }
  });
  auto slot = [&](uint32_t doc) {
    return static_cast<size_t>(std::lower_bound(involved.begin(), involved.end(), doc) -
                               involved.begin());
  };
  std::vector<double> sim(pairs.size());
  ParallelFor(pairs.size(), 256, num_threads, [&](size_t begin, size_t end) {
    for (size_t p = begin; p < end; ++p) {
      sim[p] = SortedJaccard(sets[slot(pairs[p].first)], sets[slot(pairs[p].second)]);
    }
  });
  return sim;
}

std::vector<uint32_t> ClusterRoots(size_t n, Span<DocPair> pairs, const uint8_t* keep) {
  CheckPairs(pairs, n);
  UnionFind uf(n);
  for (size_t p = 0; p < pairs.size(); ++p) {
    if (keep == nullptr || keep[p] != 0) uf.Union(pairs[p].first, pairs[p].second);
  }
  std::vector<uint32_t> roots(n);
  for (size_t d = 0; d < n; ++d) roots[d] = uf.Find(static_cast<uint32_t>(d));
  return roots;
}

}  // namespace codegen::dedup
