// Prompts of real text for speculative-decoding tests on nano (the MTP block drafts real text
// right often; random ids hardly ever): BOS and stretches of models/nano/validation.txt. Header-
// only, so the support library needs no tokenizer; its users link one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/file_read.h"

namespace dsv4::test {

// n prompts of min_len … max_len tokens: BOS and the validation text at a random offset.
inline std::vector<std::vector<int32_t>> nano_text_prompts(std::mt19937_64& rng, int n, int64_t min_len,
                                                           int64_t max_len) {
  const std::filesystem::path nano = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";
  const Tokenizer tok = Tokenizer::load(nano / "tokenizer.json");
  const std::vector<int32_t> ids = tok.encode(read_regular_file(nano / "validation.txt", uint64_t(1) << 24));
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    const int64_t len = min_len + int64_t(rng() % uint64_t(max_len - min_len + 1));
    const size_t at = size_t(rng() % uint64_t(ids.size() - size_t(len)));
    std::vector<int32_t> p = {0};
    p.insert(p.end(), ids.begin() + std::ptrdiff_t(at), ids.begin() + std::ptrdiff_t(at) + len - 1);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace dsv4::test
