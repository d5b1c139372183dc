// The pre-tokenizer: HF "Split" steps with behavior Isolated, run one after another with PCRE2
// (UTF + UCP, JIT). Added tokens are cut out before this (added_tokens.h); BPE runs after (bpe.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/stand_ins.h"
#include "tokenizer/tokenizer_json.h"

namespace dsv4 {

class PreTokenizer {
 public:
  PreTokenizer(const std::vector<SplitSpec>& splits, const std::string& origin);
  PreTokenizer(PreTokenizer&&) noexcept;
  ~PreTokenizer();

  // Appends the pieces of `text` (valid UTF-8) to `pieces`, in order; they tile `text` exactly.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Regex;
  std::vector<std::unique_ptr<Regex>> steps_;
  bool uses_categories_ = false;  // some step has \p{..}: drifting text needs care
  std::unique_ptr<DriftStandIns> stand_ins_;  // set when uses_categories_
};

}  // namespace dsv4
