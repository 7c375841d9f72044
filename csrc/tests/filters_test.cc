// Unit tests for csrc/data: BLAKE2b against RFC 7693 / hashlib, the filter rules (order,
// character counting, strict UTF-8), batch filtering and file reading.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "data/blake2b.h"
#include "data/filters.h"
#include "data/walk.h"
#include "tests/test_util.h"

namespace {

using codegen::data::BytesReason;
using codegen::data::ContentReason;
using codegen::data::FilterOptions;
using codegen::data::IsValidUtf8;
using codegen::data::Reason;

std::string Hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::string Blake(std::string_view data, size_t size) {
  std::vector<uint8_t> out(size);
  codegen::data::Blake2b(data, size, out.data());
  return Hex(out.data(), size);
}

int Code(Reason r) { return static_cast<int>(r); }

}  // namespace

TEST(FiltersBlake2bMatchesRfcAndHashlib) {
  // RFC 7693 appendix A: BLAKE2b-512("abc").
  CHECK_EQ(Blake("abc", 64),
           std::string("ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
                       "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"));
  // hashlib.blake2b(data, digest_size=16).hexdigest(): empty, short, one block, one block + 1.
  CHECK_EQ(Blake("", 16), std::string("cae66941d9efbd404e4d88758ea67670"));
  CHECK_EQ(Blake("abc", 16), std::string("cf4ab791c62b8d2b2109c90275287816"));
  CHECK_EQ(Blake(std::string(128, 'x'), 16), std::string("874acca82a22239ec64a3e70c3ae494e"));
  CHECK_EQ(Blake(std::string(129, 'x'), 16), std::string("b9ee96f69e8210c624fee55d71d5a54f"));
  std::string bytes;
  for (int rep = 0; rep < 5; ++rep) {
    for (int b = 0; b < 256; ++b) bytes += static_cast<char>(b);
  }
  CHECK_EQ(Blake(bytes, 16), std::string("825c7cfa8fc12c18f57b6046a548db9f"));
  CHECK_THROWS(Blake("x", 0));
  CHECK_THROWS(Blake("x", 65));
}

TEST(FiltersBlake2bManyEqualsOneByOne) {
  // Lengths around the 128-byte block, long messages beside short ones (lanes refill at
  // different times), fewer messages than lanes, and every digest size class.
  std::mt19937 rng(5);
  std::vector<std::string> msgs;
  for (int k = 0; k < 700; ++k) {
    const size_t len = k < 300 ? static_cast<size_t>(k) : rng() % (k % 9 == 0 ? 40000 : 1500);
    std::string m(len, '\0');
    for (auto& c : m) c = static_cast<char>(rng());
    msgs.push_back(m);
  }
  const std::vector<std::string_view> views(msgs.begin(), msgs.end());
  for (size_t size : {size_t{16}, size_t{1}, size_t{33}, size_t{64}}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{5}, size_t{8}, size_t{9}, views.size()}) {
      std::vector<uint8_t> many(size * n + 1, 0xAB), one(size * n + 1, 0xAB);
      codegen::data::Blake2bMany(views.data(), n, size, many.data());
      for (size_t i = 0; i < n; ++i) codegen::data::Blake2b(views[i], size, one.data() + size * i);
      CHECK(many == one);
    }
  }
  std::vector<uint8_t> d(16);
  codegen::data::Blake2bMany(views.data() + 3, 1, 16, d.data());
  CHECK_EQ(Hex(d.data(), 16), Blake(views[3], 16));
  CHECK_THROWS(codegen::data::Blake2bMany(views.data(), 1, 0, d.data()));
}

TEST(FiltersStrictUtf8AsPython) {
  CHECK(IsValidUtf8(""));
  CHECK(IsValidUtf8("plain ascii, longer than eight bytes"));
  CHECK(IsValidUtf8("caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80"));
  CHECK(IsValidUtf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  CHECK(!IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK(!IsValidUtf8("caf\xe9"));           // Latin-1
  CHECK(!IsValidUtf8("\xc0\xaf"));          // overlong "/"
  CHECK(!IsValidUtf8("\xe0\x80\xaf"));      // overlong
  CHECK(!IsValidUtf8("\xed\xa0\x80"));      // surrogate U+D800
  CHECK(!IsValidUtf8("\xe4\xb8"));          // truncated
  CHECK(!IsValidUtf8("\x80"));              // lone continuation
  CHECK(!IsValidUtf8("\xff"));
  CHECK(!IsValidUtf8("12345678\xc3"));      // truncated after the fast path
}

TEST(FiltersByteChecksInOrder) {
  FilterOptions o;
  CHECK_EQ(Code(BytesReason("print('hi')\n", o)), Code(Reason::kKeep));
  CHECK_EQ(Code(BytesReason("", o)), Code(Reason::kEmpty));
  CHECK_EQ(Code(BytesReason(" \t\r\n\f\v", o)), Code(Reason::kEmpty));
  CHECK_EQ(Code(BytesReason(std::string_view("x = 1\0\x01", 7), o)), Code(Reason::kBinary));
  CHECK_EQ(Code(BytesReason(std::string_view("\xff\0", 2), o)), Code(Reason::kBinary));  // NUL first
  CHECK_EQ(Code(BytesReason("caf\xe9 = 1\n", o)), Code(Reason::kNotUtf8));
  o.max_file_bytes = 4;
  CHECK_EQ(Code(BytesReason("     ", o)), Code(Reason::kTooLarge));  // size before empty
  CHECK_EQ(Code(BytesReason("x=1", o)), Code(Reason::kKeep));
}

TEST(FiltersContentRulesCountCharacters) {
  FilterOptions o;
  o.max_mean_line_length = 3;
  o.max_line_length = 4;
  // "\xc3\xa9" is one character: "ab\xc3\xa9" is a 3-character line.
  CHECK_EQ(Code(ContentReason("ab\xc3\xa9\nxy\n", o)), Code(Reason::kKeep));
  // mean (3 + 4) / 2 = 3.5 > 3
  CHECK_EQ(Code(ContentReason("ab\xc3\xa9\nwxyz", o)), Code(Reason::kMeanLineLength));
  // a final newline does not start a line; a missing one does not shorten the last line
  CHECK_EQ(Code(ContentReason("xyz\nxyz\n", o)), Code(Reason::kKeep));
  o.max_mean_line_length = 100;
  CHECK_EQ(Code(ContentReason("a\nabcde\n", o)), Code(Reason::kMaxLineLength));
  CHECK_EQ(Code(ContentReason("a\n\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\n", o)),
           Code(Reason::kKeep));  // 4 characters, 12 bytes
  CHECK_EQ(Code(ContentReason("\r\n\r\n", o)), Code(Reason::kEmpty));
  CHECK_EQ(Code(ContentReason("", o)), Code(Reason::kEmpty));
  // digits: [0-9a-fA-F] over non-whitespace; "\r" is whitespace and part of the line
  o.max_line_length = 1000;
  CHECK_EQ(Code(ContentReason("DEADBEEF 0123456789\r\n", o)), Code(Reason::kDigitFraction));
  CHECK_EQ(Code(ContentReason("data = [0x1F, 0x2A]\n", o)), Code(Reason::kKeep));
  o.max_digit_fraction = 1.0;
  CHECK_EQ(Code(ContentReason("ffff\n", o)), Code(Reason::kKeep));  // 1.0 is not > 1.0
}

TEST(FiltersBatchAndFiles) {
  const FilterOptions o;
  const std::vector<std::string_view> docs = {"x = 1\n", "", "caf\xe9", "caf\xe9"};
  const uint8_t text_only[] = {0, 0, 0, 1};  // the last is "text": no UTF-8 check
  std::vector<Reason> reasons(docs.size());
  std::vector<uint8_t> digests(16 * docs.size(), 0xAA);
  codegen::data::FilterDocuments(docs, text_only, o, 2, reasons.data(), digests.data());
  CHECK_EQ(Code(reasons[0]), Code(Reason::kKeep));
  CHECK_EQ(Code(reasons[1]), Code(Reason::kEmpty));
  CHECK_EQ(Code(reasons[2]), Code(Reason::kNotUtf8));
  CHECK_EQ(Code(reasons[3]), Code(Reason::kKeep));
  CHECK_EQ(Hex(digests.data(), 16), Blake("x = 1\n", 16));
  CHECK_EQ(Hex(digests.data() + 16, 16), std::string(32, '0'));  // dropped: zeroed

  char dir_template[] = "/tmp/codegen_filters_test_XXXXXX";
  const char* dir = mkdtemp(dir_template);
  CHECK(dir != nullptr);
  if (dir == nullptr) return;
  const std::string good = std::string(dir) + "/good.py", big = std::string(dir) + "/big.py";
  std::ofstream(good) << "def f():\n    return 1\n";
  std::ofstream(big) << std::string(2000, 'x');
  FilterOptions small = o;
  small.max_file_bytes = 1000;
  std::vector<std::string> contents;
  const std::vector<std::string> paths = {good, big, std::string(dir), std::string(dir) + "/none"};
  std::vector<Reason> file_reasons(paths.size());
  std::vector<uint8_t> file_digests(16 * paths.size());
  codegen::data::ReadAndFilterFiles(paths, small, 2, &contents, file_reasons.data(),
                                    file_digests.data());
  CHECK_EQ(Code(file_reasons[0]), Code(Reason::kKeep));
  CHECK_EQ(contents[0], std::string("def f():\n    return 1\n"));
  CHECK_EQ(Hex(file_digests.data(), 16), Blake(contents[0], 16));
  CHECK_EQ(Code(file_reasons[1]), Code(Reason::kTooLarge));
  CHECK_EQ(Code(file_reasons[2]), Code(Reason::kUnreadable));  // a directory
  CHECK_EQ(Code(file_reasons[3]), Code(Reason::kUnreadable));  // missing
  CHECK(contents[1].empty() && contents[2].empty());
  // Stat then read into a caller's buffer; a size change in between is reported.
  uint64_t size = 0;
  CHECK_EQ(Code(codegen::data::StatFile(good, 1000, &size)), Code(Reason::kKeep));
  CHECK_EQ(size, uint64_t{22});
  std::string buf(size, '\0');
  CHECK_EQ(Code(codegen::data::ReadExact(good, size, buf.data())), Code(Reason::kKeep));
  CHECK_EQ(buf, contents[0]);
  CHECK_EQ(Code(codegen::data::ReadExact(good, size - 1, buf.data())), Code(Reason::kTooLarge));
  CHECK_EQ(Code(codegen::data::ReadExact(good, size + 1, buf.data())), Code(Reason::kTooLarge));
  CHECK_EQ(Code(codegen::data::ReadExact(std::string(dir) + "/none", 1, buf.data())),
           Code(Reason::kUnreadable));
  CHECK_EQ(Code(codegen::data::StatFile(big, 1000, &size)), Code(Reason::kTooLarge));
  CHECK_EQ(Code(codegen::data::StatFile(std::string(dir), 1000, &size)), Code(Reason::kUnreadable));
  std::remove(good.c_str());
  std::remove(big.c_str());
  rmdir(dir);
}

TEST(FiltersWalkInSortedOsWalkOrder) {
  char dir_template[] = "/tmp/codegen_walk_test_XXXXXX";
  const char* dir = mkdtemp(dir_template);
  CHECK(dir != nullptr);
  if (dir == nullptr) return;
  const std::string root = dir;
  for (const char* sub : {"/b", "/a", "/a/__pycache__", "/a/z"}) mkdir((root + sub).c_str(), 0755);
  for (const char* f : {"/b.py", "/B.py", "/a/y.py", "/a/__pycache__/x.pyc", "/a/z/w.py", "/b/v"}) {
    std::ofstream(root + f) << "x";
  }
  CHECK(symlink((root + "/a").c_str(), (root + "/link_to_a").c_str()) == 0);  // not entered
  CHECK(symlink((root + "/b.py").c_str(), (root + "/c_link.py").c_str()) == 0);  // a file
  std::vector<std::string> paths;
  CHECK(codegen::data::WalkFiles(root, "R/", {"__pycache__"}, &paths));
  const std::vector<std::string> want = {"R/B.py", "R/b.py", "R/c_link.py", "R/a/y.py",
                                         "R/a/z/w.py", "R/b/v"};
  CHECK(paths == want);
  std::ofstream(root + "/bad\xff.py") << "x";  // not UTF-8: the caller must use Python
  paths.clear();
  CHECK(!codegen::data::WalkFiles(root, "R/", {"__pycache__"}, &paths));
  paths.clear();
  CHECK(codegen::data::WalkFiles(root + "/missing", "", {}, &paths));  // skipped, as os.walk
  CHECK(paths.empty());
  for (const char* f : {"/b.py", "/B.py", "/a/y.py", "/a/__pycache__/x.pyc", "/a/z/w.py", "/b/v",
                        "/link_to_a", "/c_link.py", "/bad\xff.py"}) {
    std::remove((root + f).c_str());
  }
  for (const char* sub : {"/a/__pycache__", "/a/z", "/a", "/b", ""}) rmdir((root + sub).c_str());
}
