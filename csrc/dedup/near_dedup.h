// Bulk, multi-threaded near-duplicate detection steps. Each step is a pure function of its
// inputs so that the work can be split across shards and machines:
//
//   docs --ComputeSignatures--> signatures [n, num_perm] uint32
//        --ComputeBandKeys----> band keys  [n, bands]    uint64   (concatenate across shards)
//        --CandidatePairs-----> pairs (i < j) sharing a band key
//        --SignatureSimilarity / ExactJaccard--> similarity per pair (optional verification)
//        --ClusterRoots-------> root[i] = smallest index in i's duplicate cluster
//
// Ownership: every function reads caller-owned buffers (documents as string_views,
// row-major matrices as raw pointers with explicit sizes) that must stay alive and
// unmodified for the duration of the call, writes only to caller-owned `out` buffers or
// returns owned vectors, and keeps no state between calls. `num_threads` <= 0 means
// std::thread::hardware_concurrency(). Bad arguments throw std::invalid_argument.
#ifndef CODEGEN_DEDUP_NEAR_DEDUP_H_
#define CODEGEN_DEDUP_NEAR_DEDUP_H_

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "dedup/lsh.h"
#include "dedup/minhash.h"
#include "dedup/shingle.h"
#include "dedup/span.h"

namespace codegen::dedup {

using DocPair = std::pair<uint32_t, uint32_t>;  // (i, j) with i < j

// out: [docs.size(), hasher.num_perm()] row-major. num_shingles_out (may be null):
// [docs.size()] shingles per document, repeats included (0 = no tokens: such documents are
// never duplicates).
void ComputeSignatures(Span<std::string_view> docs, const ShingleOptions& shingles,
                       const MinHasher& hasher, int num_threads, uint32_t* out,
                       uint32_t* num_shingles_out);

// sigs: [n, num_perm]; out: [n, params.bands]. Needs bands * rows <= num_perm.
void ComputeBandKeys(const uint32_t* sigs, size_t n, int num_perm, LshParams params,
                     int num_threads, uint64_t* out);

// keys: [n, bands]. Documents with skip[i] != 0 (skip may be null) take no part. Within a
// bucket of m documents every pair is a candidate if m <= max_bucket; larger buckets (rare:
// thousands of near-identical files) contribute a star from their first member plus a
// chain of neighbours, which keeps the clustering connected at O(m) cost. Returns the
// sorted, duplicate-free pairs.
std::vector<DocPair> CandidatePairs(const uint64_t* keys, size_t n, int bands,
                                    const uint8_t* skip, size_t max_bucket, int num_threads);

// Fraction of equal signature values for each pair (an unbiased Jaccard estimate).
std::vector<double> SignatureSimilarity(const uint32_t* sigs, size_t n, int num_perm,
                                        Span<DocPair> pairs, int num_threads);

// Exact Jaccard of the shingle sets of each pair; `docs` indexed like the pairs. Only the
// documents that occur in a pair are shingled.
std::vector<double> ExactJaccard(Span<std::string_view> docs, const ShingleOptions& shingles,
                                 Span<DocPair> pairs, int num_threads);

// Union of the pairs whose keep[k] != 0 (keep may be null = all); root per document.
std::vector<uint32_t> ClusterRoots(size_t n, Span<DocPair> pairs, const uint8_t* keep);

}  // namespace codegen::dedup

#endif  // CODEGEN_DEDUP_NEAR_DEDUP_H_
