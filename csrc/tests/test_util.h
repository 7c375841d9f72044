// A minimal test harness for the native core (no third-party framework needed offline).
//
//   TEST(SuiteCase) { CHECK(cond); CHECK_EQ(a, b); CHECK_THROWS(expr); }
//
// Tests register themselves at static-initialisation time; test_main.cc runs them all and
// returns non-zero if any check failed, which is what ctest looks at.
#ifndef CODEGEN_TESTS_TEST_UTIL_H_
#define CODEGEN_TESTS_TEST_UTIL_H_

#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace codegen::testing {

struct TestCase {
  const char* name;
  std::function<void()> fn;
};

// The registry is a function-local static: filled once before main, read-only after.
std::vector<TestCase>& Registry();
int& FailureCount();

struct Registrar {
  Registrar(const char* name, std::function<void()> fn) {
    Registry().push_back({name, std::move(fn)});
  }
};

template <typename T>
std::string Show(const T& value) {
  std::ostringstream os;
  if constexpr (std::is_same_v<T, std::vector<uint32_t>> || std::is_same_v<T, std::vector<int>>) {
    os << "[";
    for (size_t i = 0; i < value.size(); ++i) os << (i ? ", " : "") << value[i];
    os << "]";
  } else {
    os << value;
  }
  return os.str();
}

inline void Fail(const char* file, int line, const std::string& what) {
  ++FailureCount();
  std::cerr << file << ":" << line << ": FAILED: " << what << "\n";
}

}  // namespace codegen::testing

#define CODEGEN_CAT_(a, b) a##b
#define CODEGEN_CAT(a, b) CODEGEN_CAT_(a, b)
#define TEST(name)                                                              \
  static void name();                                                           \
  static ::codegen::testing::Registrar CODEGEN_CAT(registrar_, name)(#name, name); \
  static void name()

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) ::codegen::testing::Fail(__FILE__, __LINE__, #cond);   \
  } while (0)

#define CHECK_EQ(a, b)                                                                  \
  do {                                                                                  \
    const auto& va_ = (a);                                                              \
    const auto& vb_ = (b);                                                              \
    if (!(va_ == vb_))                                                                  \
      ::codegen::testing::Fail(__FILE__, __LINE__,                                      \
                               std::string(#a " == " #b ": ") +                         \
                                   ::codegen::testing::Show(va_) + " vs " +             \
                                   ::codegen::testing::Show(vb_));                      \
  } while (0)

#define CHECK_THROWS(expr)                                                            \
  do {                                                                                \
    bool threw_ = false;                                                              \
    try {                                                                             \
      (void)(expr);                                                                   \
    } catch (const std::exception&) {                                                 \
      threw_ = true;                                                                  \
    }                                                                                 \
    if (!threw_) ::codegen::testing::Fail(__FILE__, __LINE__, "no exception: " #expr); \
  } while (0)

#endif  // CODEGEN_TESTS_TEST_UTIL_H_
