#include "data/filters.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/parallel.h"
#include "data/blake2b.h"

namespace codegen::data {
namespace {

constexpr uint64_t kHighBits = 0x8080808080808080ULL;

inline bool IsSpace(uint8_t b) { return b == ' ' || static_cast<uint8_t>(b - '\t') < 5; }
inline bool IsHex(uint8_t b) {
  return static_cast<uint8_t>(b - '0') < 10 || static_cast<uint8_t>((b | 0x20) - 'a') < 6;
}

// What the content rules need, from one pass over the bytes.
struct TextStats {
  uint64_t continuation = 0;  // bytes 10xxxxxx: characters = size - continuation
  uint64_t space = 0;         // " \t\n\r\f\v"
  uint64_t hex = 0;           // [0-9a-fA-F]
  uint64_t nul = 0;
  uint64_t newlines = 0;
  bool long_line = false;  // some line has more than max_line_length characters
  bool ascii = true;       // no byte >= 0x80: valid UTF-8 without checking further
};

// Called at each line end: a line longer than the limit in bytes is counted in characters
// (characters <= bytes, so shorter lines never are).
class LineCheck {
 public:
  LineCheck(const uint8_t* p, double max_line_length) : p_(p), max_(max_line_length) {}
  void End(size_t pos, TextStats* st) {  // the line is [start_, pos)
    if (!st->long_line && static_cast<double>(pos - start_) > max_) {
      uint64_t chars = 0;
      for (size_t i = start_; i < pos; ++i) chars += (p_[i] & 0xC0) != 0x80;
      st->long_line = static_cast<double>(chars) > max_;
    }
    start_ = pos + 1;
  }

 private:
  const uint8_t* p_;
  double max_;
  size_t start_ = 0;
};

void ScanScalar(const uint8_t* p, size_t begin, size_t end, LineCheck* lines, TextStats* st) {
  for (size_t i = begin; i < end; ++i) {
    const uint8_t b = p[i];
    st->continuation += (b & 0xC0) == 0x80;
    st->space += IsSpace(b);
    st->hex += IsHex(b);
    st->nul += b == 0;
    st->ascii &= b < 0x80;
    if (b == '\n') {
      ++st->newlines;
      lines->End(i, st);
    }
  }
}

#if defined(__SSE2__)
// Sum of the 16 byte counters of `acc` (each < 256).
inline uint64_t SumBytes(__m128i acc) {
  const __m128i sums = _mm_sad_epu8(acc, _mm_setzero_si128());
  return static_cast<uint64_t>(_mm_cvtsi128_si64(sums)) +
         static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums)));
}

// a <= hi (unsigned bytes), as 0xFF / 0x00 lanes.
inline __m128i LessEqU8(__m128i a, __m128i hi) { return _mm_cmpeq_epi8(_mm_min_epu8(a, hi), a); }
#endif

TextStats Scan(std::string_view text, double max_line_length) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  TextStats st;
  LineCheck lines(p, max_line_length);
  size_t i = 0;
#if defined(__SSE2__)
  // 16 bytes a step; per-lane byte counters (subtracting the 0xFF masks) are summed every
  // 255 steps, before they can wrap.
  const __m128i k_cont = _mm_set1_epi8(-64), k_nl = _mm_set1_epi8('\n'),
                k_sp = _mm_set1_epi8(' '), k_9 = _mm_set1_epi8('\t'), k_4 = _mm_set1_epi8(4),
                k_0 = _mm_set1_epi8('0'), k_a = _mm_set1_epi8('a'), k_20 = _mm_set1_epi8(0x20),
                k_nine = _mm_set1_epi8(9), k_five = _mm_set1_epi8(5), k_zero = _mm_setzero_si128();
  while (i + 16 <= n) {
    __m128i cont = k_zero, space = k_zero, hex = k_zero, nul = k_zero, high = k_zero;
    const size_t steps = std::min<size_t>((n - i) / 16, 255);
    for (size_t s = 0; s < steps; ++s, i += 16) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
      const __m128i nl = _mm_cmpeq_epi8(b, k_nl);
      cont = _mm_sub_epi8(cont, _mm_cmplt_epi8(b, k_cont));  // 0x80..0xBF as signed < -64
      space = _mm_sub_epi8(space, _mm_or_si128(_mm_cmpeq_epi8(b, k_sp),
                                               LessEqU8(_mm_sub_epi8(b, k_9), k_4)));
      hex = _mm_sub_epi8(hex, _mm_or_si128(LessEqU8(_mm_sub_epi8(b, k_0), k_nine),
                                           LessEqU8(_mm_sub_epi8(_mm_or_si128(b, k_20), k_a),
                                                    k_five)));
      nul = _mm_sub_epi8(nul, _mm_cmpeq_epi8(b, k_zero));
      high = _mm_or_si128(high, b);
      unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(nl));
      while (mask != 0) {
        ++st.newlines;
        lines.End(i + static_cast<size_t>(__builtin_ctz(mask)), &st);
        mask &= mask - 1;
      }
    }
    st.continuation += SumBytes(cont);
    st.space += SumBytes(space);
    st.hex += SumBytes(hex);
    st.nul += SumBytes(nul);
    st.ascii &= _mm_movemask_epi8(high) == 0;
  }
#endif
  ScanScalar(p, i, n, &lines, &st);
  lines.End(n, &st);  // the last line (empty after a final newline)
  return st;
}

// The content rules, in order, from the counts.
Reason ContentDecision(const TextStats& st, size_t size, bool ends_with_newline,
                       const FilterOptions& options) {
  if (st.space == size) return Reason::kEmpty;
  const uint64_t chars = size - st.continuation;
  const uint64_t lines = st.newlines + (ends_with_newline ? 0 : 1);
  if (static_cast<double>(chars - st.newlines) / static_cast<double>(lines) >
      options.max_mean_line_length) {
    return Reason::kMeanLineLength;
  }
  if (st.long_line) return Reason::kMaxLineLength;
  const uint64_t non_space = chars - st.space;  // > 0: not all whitespace
  if (static_cast<double>(st.hex) / static_cast<double>(non_space) >
      options.max_digit_fraction) {
    return Reason::kDigitFraction;
  }
  return Reason::kKeep;
}

}  // namespace

const char* ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kKeep: return "";
    case Reason::kUnreadable: return "unreadable";
    case Reason::kTooLarge: return "too_large";
    case Reason::kEmpty: return "empty";
    case Reason::kBinary: return "binary";
    case Reason::kNotUtf8: return "not_utf8";
    case Reason::kMeanLineLength: return "mean_line_length";
    case Reason::kMaxLineLength: return "max_line_length";
    case Reason::kDigitFraction: return "digit_fraction";
  }
  return "?";
}

bool IsValidUtf8(std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {  // ASCII fast path, 8 bytes at a time
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & kHighBits) == 0) {
        i += 8;
        continue;
      }
    }
    const uint8_t b = p[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    // Unicode 15, table 3-7 (well-formed UTF-8 byte sequences).
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;  // no overlong forms
      if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;  // no overlong forms
      if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return false;  // continuation byte, C0/C1 or F5..FF as a lead
    }
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

Reason ContentReason(std::string_view utf8, const FilterOptions& options) {
  const TextStats st = Scan(utf8, options.max_line_length);
  return ContentDecision(st, utf8.size(), !utf8.empty() && utf8.back() == '\n', options);
}

Reason BytesReason(std::string_view bytes, const FilterOptions& options) {
  if (bytes.size() > options.max_file_bytes) return Reason::kTooLarge;
  const TextStats st = Scan(bytes, options.max_line_length);  // one pass for every count
  if (st.space == bytes.size()) return Reason::kEmpty;
  if (st.nul != 0) return Reason::kBinary;
  if (!st.ascii && !IsValidUtf8(bytes)) return Reason::kNotUtf8;
  return ContentDecision(st, bytes.size(), bytes.back() == '\n', options);
}

void ContentDigest(std::string_view utf8, uint8_t* out) { Blake2b(utf8, kDigestSize, out); }

void ContentDigests(const std::string_view* docs, size_t n, uint8_t* out) {
  Blake2bMany(docs, n, kDigestSize, out);
}

void DigestKept(const std::string_view* docs, const Reason* reasons, size_t n,
                uint8_t* digests) {
  std::vector<std::string_view> kept;
  std::vector<size_t> where;
  for (size_t i = 0; i < n; ++i) {
    std::memset(digests + kDigestSize * i, 0, kDigestSize);
    if (reasons[i] != Reason::kKeep) continue;
    kept.push_back(docs[i]);
    where.push_back(i);
  }
  std::vector<uint8_t> out(kDigestSize * kept.size());
  ContentDigests(kept.data(), kept.size(), out.data());
  for (size_t k = 0; k < where.size(); ++k) {
    std::memcpy(digests + kDigestSize * where[k], out.data() + kDigestSize * k, kDigestSize);
  }
}

namespace {
// Documents per work item: sizes vary, so small chunks; but enough of them to fill the
// eight lanes of the vector hash.
constexpr size_t kDocsPerChunk = 32;
}  // namespace

void FilterDocuments(const std::vector<std::string_view>& docs, const uint8_t* text_only,
                     const FilterOptions& options, int num_threads, Reason* reasons,
                     uint8_t* digests) {
  ParallelFor(docs.size(), kDocsPerChunk, num_threads, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const bool text = text_only != nullptr && text_only[i] != 0;
      reasons[i] = text ? ContentReason(docs[i], options) : BytesReason(docs[i], options);
    }
    DigestKept(docs.data() + begin, reasons + begin, end - begin,
               digests + kDigestSize * begin);
  });
}

Reason ReadFileBytes(const std::string& path, uint64_t max_file_bytes, std::string* out) {
  out->clear();
  if (path.find('\0') != std::string::npos) return Reason::kUnreadable;
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) return Reason::kUnreadable;
  // Only regular files: a FIFO or a device would block or never end.
  if (!S_ISREG(info.st_mode)) return Reason::kUnreadable;
  if (static_cast<uint64_t>(info.st_size) > max_file_bytes) return Reason::kTooLarge;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Reason::kUnreadable;
  // Read to the end (the file may have changed since stat), never past max_file_bytes + 1.
  out->resize(static_cast<size_t>(info.st_size) + 1);
  size_t got = 0;
  Reason reason = Reason::kKeep;
  for (;;) {
    if (got == out->size()) {
      if (got > max_file_bytes) {
        reason = Reason::kTooLarge;
        break;
      }
      out->resize(std::min<uint64_t>(std::max<size_t>(2 * got, 4096), max_file_bytes + 1));
    }
    const ssize_t r = ::read(fd, out->data() + got, out->size() - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      reason = Reason::kUnreadable;
      break;
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  if (reason == Reason::kKeep && got > max_file_bytes) reason = Reason::kTooLarge;
  if (reason != Reason::kKeep) {
    out->clear();
    return reason;
  }
  out->resize(got);
  return Reason::kKeep;
}

DirCache::~DirCache() {
  if (fd_ >= 0) ::close(fd_);
}

std::pair<int, const char*> DirCache::Resolve(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return {AT_FDCWD, path.c_str()};
  if (fd_ < 0 || path.compare(0, slash, dir_) != 0 || dir_.size() != slash) {
    if (fd_ >= 0) ::close(fd_);
    dir_.assign(path, 0, slash);
    fd_ = ::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
  if (fd_ < 0) return {AT_FDCWD, path.c_str()};
  return {fd_, path.c_str() + slash + 1};
}

Reason StatFile(const std::string& path, uint64_t max_file_bytes, uint64_t* size,
                DirCache* dirs) {
  *size = 0;
  if (path.find('\0') != std::string::npos) return Reason::kUnreadable;
  const auto [dirfd, name] = dirs ? dirs->Resolve(path) : std::pair{AT_FDCWD, path.c_str()};
  struct stat info;
  if (::fstatat(dirfd, name, &info, 0) != 0 || !S_ISREG(info.st_mode)) {
    return Reason::kUnreadable;
  }
  if (static_cast<uint64_t>(info.st_size) > max_file_bytes) return Reason::kTooLarge;
  *size = static_cast<uint64_t>(info.st_size);
  return Reason::kKeep;
}

Reason ReadExact(const std::string& path, uint64_t size, char* buf, DirCache* dirs) {
  const auto [dirfd, name] = dirs ? dirs->Resolve(path) : std::pair{AT_FDCWD, path.c_str()};
  const int fd = ::openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Reason::kUnreadable;
  uint64_t got = 0;
  Reason reason = Reason::kKeep;
  char probe;
  for (;;) {  // up to `size` bytes, then one more read that must find the end
    const bool full = got == size;
    const ssize_t r = full ? ::read(fd, &probe, 1) : ::read(fd, buf + got, size - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      reason = Reason::kUnreadable;
      break;
    }
    if (r == 0) {
      if (!full) reason = Reason::kTooLarge;  // shrank since stat
      break;
    }
    if (full) {
      reason = Reason::kTooLarge;  // grew since stat
      break;
    }
    got += static_cast<uint64_t>(r);
  }
  ::close(fd);
  return reason;
}

void ReadAndFilterFiles(const std::vector<std::string>& paths, const FilterOptions& options,
                        int num_threads, std::vector<std::string>* contents, Reason* reasons,
                        uint8_t* digests) {
  contents->assign(paths.size(), std::string());
  ParallelFor(paths.size(), kDocsPerChunk, num_threads, [&](size_t begin, size_t end) {
    std::vector<std::string_view> views;
    for (size_t i = begin; i < end; ++i) {
      std::string& data = (*contents)[i];
      reasons[i] = ReadFileBytes(paths[i], options.max_file_bytes, &data);
      if (reasons[i] == Reason::kKeep) reasons[i] = BytesReason(data, options);
      if (reasons[i] != Reason::kKeep) std::string().swap(data);
      views.push_back(data);
    }
    DigestKept(views.data(), reasons + begin, end - begin, digests + kDigestSize * begin);
  });
}

}  // namespace codegen::data
