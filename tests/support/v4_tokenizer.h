// The real DeepSeek-V4 tokenizer.json that tests compare against, and the one way every test treats
// its absence. It is not committed: scripts/setup.sh (fetch_tokenizer.sh) unpacks it into .cache.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace dsv4::test {

inline std::filesystem::path v4_tokenizer_path() {
  return std::filesystem::path(DSV4_SOURCE_DIR) / ".cache/deepseek-v4/tokenizer.json";
}

// The path, or a thrown error (a failed test) saying how to fetch the file. A failure, not a skip:
// scripts/test.sh and CI always fetch it first, so a missing file is a broken setup, and a skip
// would let every V4-tokenizer test vanish from the results without a word.
inline std::filesystem::path require_v4_tokenizer() {
  const std::filesystem::path p = v4_tokenizer_path();
  if (!std::filesystem::exists(p))
    throw std::runtime_error(p.string() + " is missing: run scripts/fetch_tokenizer.sh (scripts/setup.sh does)");
  return p;
}

}  // namespace dsv4::test
