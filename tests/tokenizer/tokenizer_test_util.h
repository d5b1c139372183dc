// Shared helpers of the tokenizer tests: where the real V4 tokenizer.json and the goldens live.
// The tests themselves are in the *_test.cpp files beside this one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "support/v4_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"

namespace dsv4::test {

inline std::filesystem::path testdata(const std::string& name) {
  return std::filesystem::path(DSV4_SOURCE_DIR) / "testdata/tokenizer" / name;
}

inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// The real V4 file (support/v4_tokenizer.h: fetched by scripts/setup.sh, a failure when absent).
inline std::string v4_json() { return read_all(require_v4_tokenizer()); }

inline TokenizerSpec load_v4_spec() { return parse_tokenizer_json(v4_json(), v4_tokenizer_path().string()); }

// Loaded once per test binary: the 6 MB JSON takes a while to parse.
inline const Tokenizer& v4() {
  static const Tokenizer tok = Tokenizer::from_json(v4_json(), v4_tokenizer_path().string());
  return tok;
}

}  // namespace dsv4::test
