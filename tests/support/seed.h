// Replayable test randomness: one base seed per test process — DSV4_TEST_SEED when set, else fresh
// from random_device — printed either way, and named streams derived from it. Generators built on
// it (Rng, the tiny-model writer) are test_util.h's and tiny_model.h's.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace dsv4::test {

// The process's base seed; the first call prints it. A malformed DSV4_TEST_SEED aborts the run
// rather than silently becoming 0 (strtoull's answer for "abc").
inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("DSV4_TEST_SEED");
    uint64_t s = 0;
    if (env) {
      char* end = nullptr;
      s = std::strtoull(env, &end, 10);
      if (*env == '\0' || *end != '\0') {
        std::fprintf(stderr, "DSV4_TEST_SEED=%s is not a decimal number\n", env);
        std::abort();
      }
    } else {
      s = (uint64_t(std::random_device{}()) << 32) | std::random_device{}();
    }
    std::printf("[seed] DSV4_TEST_SEED=%llu (%s; set it to replay this run)\n", (unsigned long long)s,
                env ? "from the environment" : "fresh");
    std::fflush(stdout);
    return s;
  }();
  return seed;
}

// A seed of its own for the stream `name` (a test or fixture name): a fixed function of the base
// seed and the name, so a test draws the same inputs whichever tests ran before it. SplitMix64's
// finaliser over base ⊕ FNV-1a(name) decorrelates streams whose names differ in one character.
inline uint64_t seed_for(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  uint64_t z = test_seed() ^ h;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  std::printf("[seed] %.*s: seed %llu (derived from DSV4_TEST_SEED=%llu)\n", int(name.size()),
              name.data(), (unsigned long long)z, (unsigned long long)test_seed());
  return z;
}

// seed_for the running gtest test ("Suite.Name"): a stream per test, replayed with its filter.
inline uint64_t seed_for_this_test() {
  const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
  return seed_for(t ? std::string(t->test_suite_name()) + "." + t->name() : std::string("no test"));
}

}  // namespace dsv4::test
