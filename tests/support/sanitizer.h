// Whether this is an AddressSanitizer build, and the one way a test says what it leaves out there:
// a "[sanitizer] left out: ..." line, which scripts/test.sh lists after the sanitizer run (ctest
// shows a passing test's output nowhere else). Whole cases left out are GTEST_SKIPs with a reason.
#pragma once

#include <cstdio>
#include <string>

namespace dsv4::test {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif
#else
inline constexpr bool kSanitizerBuild = false;
#endif

inline void note_left_out(const std::string& what) {
  std::printf("[sanitizer] left out: %s\n", what.c_str());
  std::fflush(stdout);
}

}  // namespace dsv4::test
