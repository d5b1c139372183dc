// Reads a Hugging Face tokenizer.json into a plain description of a byte-level BPE, refusing any
// configuration dsv4 does not implement. Building the matcher/BPE from it is tokenizer.cpp's job.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv4 {

struct AddedTokenSpec {
  int32_t id;
  std::string content;
  bool special;     // dropped by decode(skip_special = true)
  bool normalized;  // matched after the normalizer (identity here), in HF's second pass
};

// One pre-tokenizer Split with behavior "Isolated": every match and every gap is a piece.
struct SplitSpec {
  std::string pattern;
  bool literal;  // {"String": ...} rather than {"Regex": ...}
  std::string field;  // JSON path, for error messages
};

struct TokenizerSpec {
  std::string origin;                               // file name, for messages
  std::vector<SplitSpec> splits;                    // applied in order, then ByteLevel
  std::vector<std::pair<std::string, int32_t>> vocab;  // model.vocab
  std::vector<std::pair<std::string, std::string>> merges;  // model.merges, rank = index
  bool ignore_merges = false;  // model.ignore_merges: a word in the vocab skips merging
  std::vector<AddedTokenSpec> added_tokens;
};

// Throws dsv4::Error naming `origin` and the JSON field for malformed or unsupported input.
TokenizerSpec parse_tokenizer_json(std::string_view json_text, const std::string& origin);

}  // namespace dsv4
