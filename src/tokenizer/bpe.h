// The BPE model of a byte-level tokenizer: vocab, merge ranks, and merging one pre-tokenized piece
// into ids (HF `tokenizers` BPE semantics). Splitting text into pieces is pretokenizer.h's job.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer_json.h"

namespace dsv4 {

// Heterogeneous string keys: look up a std::string_view without building a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

class Bpe {
 public:
  // Validates model.vocab (unique ids, all 256 byte characters present) and model.merges (every
  // part and every result in the vocab); throws dsv4::Error naming the field.
  explicit Bpe(const TokenizerSpec& spec);

  // Appends the ids of one piece, given as raw bytes (before the byte-level mapping).
  void encode_piece(std::string_view bytes, std::vector<int32_t>& out) const;

  std::optional<int32_t> find(std::string_view token) const;  // token string as in the vocab
  const StringMap<int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

  StringMap<int32_t> vocab_;
  std::array<int32_t, 256> byte_id_{};              // id of each byte's one-character token
  std::unordered_map<uint64_t, Merge> merges_;      // (left id, right id) -> rank, merged id
  bool ignore_merges_ = false;
  StringMap<int32_t> word_id_;  // raw bytes -> id of whole-word tokens (only with ignore_merges)
};

}  // namespace dsv4
