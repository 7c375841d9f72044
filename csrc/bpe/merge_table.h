// The BPE merge table: (left id, right id) -> (rank, merged id).
//
// Entries are grouped by left id and sorted by right id within a group, so the lookups one
// piece makes touch a few hot groups (the merges that start with "a", say) instead of one
// random slot of a hash table each: on long pieces that is the difference between a cache
// hit and a miss per lookup. Immutable after construction; owns its arrays.
#ifndef CODEGEN_BPE_MERGE_TABLE_H_
#define CODEGEN_BPE_MERGE_TABLE_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace codegen::bpe {

class MergeTable {
 public:
  struct Merge {
    uint32_t rank;
    uint32_t new_id;
  };
  struct Entry {
    uint32_t left;
    uint32_t right;
    Merge merge;
  };

  MergeTable() = default;
  // entries in rank order; a repeated (left, right) keeps its last entry, as HF's map does.
  explicit MergeTable(std::vector<Entry> entries) {
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    uint32_t max_left = 0;
    for (const Entry& e : entries) max_left = std::max(max_left, e.left);
    begin_.assign(entries.empty() ? 1 : static_cast<size_t>(max_left) + 2, 0);
    for (size_t i = 0; i < entries.size(); ++i) {
      const bool last_of_pair = i + 1 == entries.size() || entries[i + 1].left != entries[i].left ||
                                entries[i + 1].right != entries[i].right;
      if (!last_of_pair) continue;  // stable sort: the later duplicate comes last
      rights_.push_back(entries[i].right);
      merges_.push_back(entries[i].merge);
      ++begin_[static_cast<size_t>(entries[i].left) + 1];
    }
    for (size_t i = 1; i < begin_.size(); ++i) begin_[i] += begin_[i - 1];
  }

  const Merge* Find(uint32_t left, uint32_t right) const {
    if (static_cast<size_t>(left) + 1 >= begin_.size()) return nullptr;
    const uint32_t* first = rights_.data() + begin_[left];
    const uint32_t* last = rights_.data() + begin_[left + 1];
    const uint32_t* it = std::lower_bound(first, last, right);
    if (it == last || *it != right) return nullptr;
    return &merges_[static_cast<size_t>(it - rights_.data())];
  }

 private:
  std::vector<uint32_t> begin_;   // begin_[l]..begin_[l + 1]: the group of left id l
  std::vector<uint32_t> rights_;  // right ids, sorted within each group
  std::vector<Merge> merges_;     // parallel to rights_
};

}  // namespace codegen::bpe

#endif  // CODEGEN_BPE_MERGE_TABLE_H_
