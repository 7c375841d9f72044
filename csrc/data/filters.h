// CodeGen's file filters on a batch of documents, and the content hash exact dedup uses.
//
// The rules, their order and the way lines and characters are counted are those of
// python/codegen_core/data/filters.py (decode_source, then content_reason); its plain-Python
// content_reason_reference is the specification the tests compare against:
//
//   too_large          more than max_file_bytes bytes
//   empty              nothing but ASCII whitespace " \t\n\r\f\v" (or no bytes at all)
//   binary             a NUL byte
//   not_utf8           not strict UTF-8 (what Python's decoder rejects: overlong forms,
//                      surrogates U+D800..DFFF, code points above U+10FFFF, truncation)
//   mean_line_length   (characters - newlines) / lines > max_mean_line_length, where lines
//                      are split on "\n" only and a final "\n" does not start a new line
//   max_line_length    the longest line, in characters, > max_line_length
//   digit_fraction     [0-9a-fA-F] characters / non-whitespace characters > max_digit_fraction
//
// "Characters" are code points, counted as the UTF-8 bytes that are not continuation bytes
// (10xxxxxx); the ratios are IEEE double divisions of exact integer counts, as in Python.
// The byte-level checks (the first four) apply to raw file bytes; text that is already
// decoded (a Python str) gets only the content checks, on its UTF-8 form (lone surrogates
// encoded as three bytes, as Python's "surrogatepass" does, count as one character each).
#ifndef CODEGEN_DATA_FILTERS_H_
#define CODEGEN_DATA_FILTERS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace codegen::data {

// Drop reasons, numbered for the bindings; kKeep (0) keeps the document.
enum class Reason : uint8_t {
  kKeep = 0,
  kUnreadable,
  kTooLarge,
  kEmpty,
  kBinary,
  kNotUtf8,
  kMeanLineLength,
  kMaxLineLength,
  kDigitFraction,
};
inline constexpr int kNumReasons = 9;

// The Python name of a reason ("too_large", ...); "" for kKeep.
const char* ReasonName(Reason reason);

// Thresholds, as FilterConfig in filters.py (defaults: CodeGen's).
struct FilterOptions {
  uint64_t max_file_bytes = uint64_t{1} << 20;
  double max_mean_line_length = 100.0;
  double max_line_length = 1000;  // compared as a double: exact for integers below 2^53
  double max_digit_fraction = 0.9;
};

// True if `bytes` is strict UTF-8 (exactly what Python's bytes.decode("utf-8") accepts).
bool IsValidUtf8(std::string_view bytes);

// too_large, empty, binary, not_utf8 (decode_source), then the content checks.
Reason BytesReason(std::string_view bytes, const FilterOptions& options);

// The content checks alone (content_reason) on UTF-8 text: empty, mean_line_length,
// max_line_length, digit_fraction.
Reason ContentReason(std::string_view utf8, const FilterOptions& options);

// Size of the exact-dedup content hash: 16-byte BLAKE2b of the UTF-8 bytes
// (python/codegen_core/data/exact.py content_hash).
inline constexpr size_t kDigestSize = 16;
void ContentDigest(std::string_view utf8, uint8_t* out);
// ContentDigest of n documents into out[16 i ..) (several at a time where the CPU allows).
void ContentDigests(const std::string_view* docs, size_t n, uint8_t* out);
// digests[16 i ..) = ContentDigest(docs[i]) where reasons[i] is kKeep, else 16 zero bytes.
void DigestKept(const std::string_view* docs, const Reason* reasons, size_t n,
                uint8_t* digests);

// A batch of documents. reasons[i] gets the reason of docs[i]: BytesReason, or ContentReason
// where text_only != nullptr and text_only[i] != 0. For a kept document digests[16 i ..
// 16 i + 16) gets its ContentDigest; for a dropped one it is zeroed. `reasons` (n) and
// `digests` (16 n) are owned by the caller. Runs on up to num_threads threads (0: all cores).
void FilterDocuments(const std::vector<std::string_view>& docs, const uint8_t* text_only,
                     const FilterOptions& options, int num_threads, Reason* reasons,
                     uint8_t* digests);

// Reads one file as filters.py's _read_file does: unreadable unless stat() (following
// symlinks) succeeds on a regular file that can be opened and read; too_large if stat's size
// or the bytes read exceed max_file_bytes. On kKeep `out` holds the whole file.
Reason ReadFileBytes(const std::string& path, uint64_t max_file_bytes, std::string* out);

// The two halves of ReadFileBytes, for callers that own the buffers (the bindings read
// straight into Python bytes objects): StatFile gives kKeep and the size of a regular file
// of at most max_file_bytes (else kUnreadable or kTooLarge, as ReadFileBytes); ReadExact then
// reads it into buf[0 .. size). ReadExact returns kUnreadable if the file cannot be opened or
// read, and kTooLarge if its size is no longer `size` (it changed: redo it with
// ReadFileBytes), else kKeep.
//
// With a DirCache, both look the file up relative to its directory, opened once for a run
// of files in the same directory (one path walk for the directory instead of one per file
// and call; same results).
class DirCache;
Reason StatFile(const std::string& path, uint64_t max_file_bytes, uint64_t* size,
                DirCache* dirs = nullptr);
Reason ReadExact(const std::string& path, uint64_t size, char* buf, DirCache* dirs = nullptr);

class DirCache {
 public:
  DirCache() = default;
  ~DirCache();
  DirCache(const DirCache&) = delete;
  DirCache& operator=(const DirCache&) = delete;
  // (dirfd, name) for the *at system calls: the directory of `path` (kept open until the
  // next directory) and the last component; (AT_FDCWD, path) if there is no directory part
  // or it cannot be opened. The name points into `path`.
  std::pair<int, const char*> Resolve(const std::string& path);

 private:
  std::string dir_;
  int fd_ = -1;
};

// A batch of files: read (ReadFileBytes), filter (BytesReason) and hash (ContentDigest) each,
// on up to num_threads threads. contents[i] holds the bytes of a kept file, and is empty for a
// dropped one; `reasons` and `digests` as in FilterDocuments.
void ReadAndFilterFiles(const std::vector<std::string>& paths, const FilterOptions& options,
                        int num_threads, std::vector<std::string>* contents, Reason* reasons,
                        uint8_t* digests);

}  // namespace codegen::data

#endif  // CODEGEN_DATA_FILTERS_H_
