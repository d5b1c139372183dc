// A small V4-shaped tokenizer for random tiny checkpoints: BOS 0, EOS 1, the 256 bytes as ids 2..257
// (no merges), then V4's chat markers as special tokens 258..263; and a tiny checkpoint with it beside.
// Header-only: its users link the tokenizer library (byte_level.h); the weights are tiny_model.h's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/scratch_dir.h"
#include "support/tiny_model.h"
#include "tokenizer/byte_level.h"

namespace dsv4::test {

inline constexpr int64_t kByteTokenizerVocab = 264;
inline constexpr int32_t kByteTokenizerBos = 0, kByteTokenizerEos = 1, kByteTokenizerEndThink = 261;
inline constexpr int32_t byte_token(unsigned char b) { return int32_t(b) + 2; }
// The chat markers, in id order from 258.
inline constexpr const char* kByteTokenizerMarkers[] = {"<｜User｜>", "<｜Assistant｜>", "<think>",
                                                        "</think>", "｜DSML｜", "<｜latest_reminder｜>"};

inline nlohmann::json byte_tokenizer_json() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::byte_to_char()[b]] = byte_token(static_cast<unsigned char>(b));
  json added = json::array();
  auto add = [&](int id, const char* content) {
    added.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  };
  add(kByteTokenizerBos, "<｜begin▁of▁sentence｜>");
  add(kByteTokenizerEos, "<｜end▁of▁sentence｜>");
  int id = 258;
  for (const char* t : kByteTokenizerMarkers) add(id++, t);
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                     {"vocab", vocab}, {"merges", json::array()}}}};
}

// A random tiny F32 checkpoint (tiny_model.h, seeded by DSV4_TEST_SEED) with byte_tokenizer_json()
// beside it, in a directory removed with the returned ScratchDir. The head rows of `never_argmax` are zero, so their logit is exactly 0: greedy picks one
// only when all other logits are negative, and those are dot products with independent zero-mean
// random head rows, each negative with probability ½: 2^-(264 - 1 - never_argmax.size()) per step.
inline ScratchDir write_tiny_chat_model(const std::vector<int32_t>& never_argmax = {}) {
  TinyModelOptions opt;
  opt.vocab = kByteTokenizerVocab;
  opt.f32 = true;
  opt.edit = [never_argmax](const std::string& name, std::vector<float>& v, int64_t rows, int64_t cols) {
    if (name != "head.weight") return;
    for (int32_t id : never_argmax)
      std::fill(v.begin() + id * cols, v.begin() + (id + 1) * cols, 0.0f);
    (void)rows;
  };
  ScratchDir dir = write_tiny_model(opt);
  std::ofstream(dir / "tokenizer.json") << byte_tokenizer_json().dump();
  return dir;
}

}  // namespace dsv4::test
