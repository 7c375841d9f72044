// Runs every TEST registered in the linked test files; exit status 1 on any failure.
#include <iostream>

#include "tests/test_util.h"

namespace codegen::testing {
std::vector<TestCase>& Registry() {
  static std::vector<TestCase> registry;
  return registry;
}
int& FailureCount() {
  static int failures = 0;
  return failures;
}
}  // namespace codegen::testing

int main() {
  using codegen::testing::FailureCount;
  using codegen::testing::Registry;
  int failed_tests = 0;
  for (const auto& test : Registry()) {
    const int before = FailureCount();
    try {
      test.fn();
    } catch (const std::exception& e) {
      ++FailureCount();
      std::cerr << test.name << ": unexpected exception: " << e.what() << "\n";
    }
    const bool ok = FailureCount() == before;
    failed_tests += ok ? 0 : 1;
    std::cout << (ok ? "[ OK ] " : "[FAIL] ") << test.name << "\n";
  }
  std::cout << Registry().size() - failed_tests << " passed, " << failed_tests << " failed\n";
  return failed_tests == 0 ? 0 : 1;
}
