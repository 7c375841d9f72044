// A minimal read-only view over contiguous memory (C++17 has no std::span).
//
// Ownership: a Span never owns; the caller keeps the viewed memory alive for the
// Span's lifetime.
#ifndef CODEGEN_DEDUP_SPAN_H_
#define CODEGEN_DEDUP_SPAN_H_

#include <cstddef>
#include <vector>

namespace codegen::dedup {

template <typename T>
class Span {
 public:
  constexpr Span() = default;
  constexpr Span(const T* data, size_t size) : data_(data), size_(size) {}
  Span(const std::vector<T>& v) : data_(v.data()), size_(v.size()) {}  // NOLINT: implicit view

  constexpr const T* data() const { return data_; }
  constexpr size_t size() const { return size_; }
  constexpr bool empty() const { return size_ == 0; }
  constexpr const T& operator[](size_t i) const { return data_[i]; }
  constexpr const T* begin() const { return data_; }
  constexpr const T* end() const { return data_ + size_; }

 private:
  const T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace codegen::dedup

#endif  // CODEGEN_DEDUP_SPAN_H_
