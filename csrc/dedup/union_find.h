// Disjoint sets over document indices 0..n-1 with a deterministic representative: the
// root of every set is its smallest index, so "keep the root" keeps the first document
// of each duplicate cluster in input order, whatever order the unions come in.
#ifndef CODEGEN_DEDUP_UNION_FIND_H_
#define CODEGEN_DEDUP_UNION_FIND_H_

#include <cstdint>
#include <numeric>
#include <vector>

namespace codegen::dedup {

class UnionFind {
 public:
  explicit UnionFind(size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0u); }

  uint32_t Find(uint32_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];  // path halving
      x = parent_[x];
    }
    return x;
  }

  // Returns true if x and y were in different sets.
  bool Union(uint32_t x, uint32_t y) {
    uint32_t rx = Find(x), ry = Find(y);
    if (rx == ry) return false;
    if (ry < rx) std::swap(rx, ry);
    parent_[ry] = rx;  // smaller index wins
    return true;
  }

  size_t size() const { return parent_.size(); }

 private:
  std::vector<uint32_t> parent_;
};

}  // namespace codegen::dedup

#endif  // CODEGEN_DEDUP_UNION_FIND_H_
