// check_json_nesting (util/json_limits.h) against the depth of the parsed document: random JSON
// whose strings are full of brackets, quotes and backslashes (fresh each run) passes at its own
// depth and is refused one below it; and the refusal names the byte where the limit was passed.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "support/seed.h"
#include "util/error.h"
#include "util/json_limits.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

// Arrays and objects nested to at most `levels`, strings drawn from characters that matter to a
// bracket counter.
json random_json(std::mt19937_64& rng, int levels) {
  const int kind = levels == 0 ? int(rng() % 3) : int(rng() % 5);
  if (kind == 0) return int64_t(rng() % 1000);
  if (kind == 1) return nullptr;
  if (kind == 2) {
    static const std::string kChars = "[]{}\"\\ ab:,";
    std::string s;
    for (int n = int(rng() % 8); n > 0; --n) s += kChars[rng() % kChars.size()];
    return s;
  }
  const int n = int(rng() % 4);
  if (kind == 3) {
    json a = json::array();
    for (int i = 0; i < n; ++i) a.push_back(random_json(rng, levels - 1));
    return a;
  }
  json o = json::object();
  for (int i = 0; i < n; ++i) o["k[" + std::to_string(i) + "\"{"] = random_json(rng, levels - 1);
  return o;
}

int depth_of(const json& j) {
  if (!j.is_structured()) return 0;
  int d = 0;
  for (const json& v : j) d = std::max(d, depth_of(v));
  return d + 1;
}

TEST(JsonNesting, RandomDocumentsPassAtTheirDepthAndFailBelowIt) {
  std::mt19937_64 rng(test::seed_for_this_test());
  for (int trial = 0; trial < 2000; ++trial) {
    const json doc = random_json(rng, 1 + int(rng() % 7));
    const std::string text = doc.dump(rng() % 2 ? -1 : 1);
    const int depth = depth_of(doc);
    EXPECT_NO_THROW(check_json_nesting(text, depth, "doc")) << text;
    if (depth > 0) EXPECT_THROW(check_json_nesting(text, depth - 1, "doc"), Error) << text;
  }
}

TEST(JsonNesting, StringsAndEscapesDoNotCount) {
  EXPECT_NO_THROW(check_json_nesting(R"({"a":"[[[[{{{{"})", 1, "x"));
  EXPECT_NO_THROW(check_json_nesting(R"({"a":"\"[[[["})", 1, "x"));   // an escaped quote stays inside
  EXPECT_THROW(check_json_nesting(R"({"a":"\\","b":[[1]]})", 2, "x"), Error);  // "\\" ends there
  EXPECT_NO_THROW(check_json_nesting(R"({"a":"\\","b":[[1]]})", 3, "x"));
  try {
    check_json_nesting("[[[", 2, "body");
    ADD_FAILURE() << "depth 3 passed a limit of 2";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "body: JSON nested deeper than 2 at byte 2");
  }
}

}  // namespace
}  // namespace dsv4
