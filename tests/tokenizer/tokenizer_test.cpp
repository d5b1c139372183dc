// Tokenizer behaviour beyond the goldens: a hand-built byte-level BPE (merge order, added-token
// passes), tokenizer.json validation errors, invalid UTF-8, and fresh-seeded round-trip properties.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <atomic>
#include <random>
#include <thread>

#include "support/seed.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/utf8.h"
#include "tokenizer_test_util.h"

namespace dsv4 {
namespace {

using nlohmann::json;

// A minimal V4-shaped tokenizer.json: the 256 byte tokens (ids 0..255 in byte order), then the
// given merges (each adding its result as the next id), then the added tokens.
json tiny_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges,
                    const std::vector<std::pair<std::string, bool>>& added = {}) {
  json vocab = json::object();
  const auto& alphabet = byte_level::byte_to_char();
  for (int b = 0; b < 256; ++b) vocab[alphabet[b]] = b;
  json merge_list = json::array();
  for (const auto& [l, r] : merges) {
    merge_list.push_back(l + " " + r);
    if (!vocab.contains(l + r)) vocab[l + r] = static_cast<int>(vocab.size());
  }
  json added_list = json::array();
  int next_id = static_cast<int>(vocab.size());
  for (const auto& [content, special] : added)
    added_list.push_back({{"id", next_id++}, {"content", content}, {"single_word", false},
                          {"lstrip", false}, {"rstrip", false}, {"normalized", !special},
                          {"special", special}});
  return {
      {"version", "1.0"},
      {"added_tokens", added_list},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array()}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}"}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "Split"}, {"pattern", {{"Regex", "\\s+(?!\\S)|\\s+|[^\\s]+"}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                 {"vocab", vocab}, {"merges", merge_list}}},
  };
}

Tokenizer load(const json& j) { return Tokenizer::from_json(j.dump(), "tiny.json"); }

std::vector<int32_t> ids_of(const Tokenizer& t, std::initializer_list<const char*> tokens) {
  std::vector<int32_t> out;
  for (const char* s : tokens) out.push_back(t.token_id(s).value());
  return out;
}

TEST(Tokenizer, LowestRankMergesFirstAndTiesGoLeft) {
  // "abc": (b,c) has the lower rank, so b+c merges first and (a,b) never applies.
  const Tokenizer t = load(tiny_tokenizer({{"b", "c"}, {"a", "b"}, {"a", "bc"}}));
  EXPECT_EQ(t.encode("abc"), ids_of(t, {"abc"}));
  EXPECT_EQ(t.encode("ab"), ids_of(t, {"ab"}));
  // "aaa" with (a,a): the leftmost pair merges first -> "aa","a", not "a","aa".
  const Tokenizer t2 = load(tiny_tokenizer({{"a", "a"}}));
  EXPECT_EQ(t2.encode("aaa"), ids_of(t2, {"aa", "a"}));
  EXPECT_EQ(t2.encode("aaaa"), ids_of(t2, {"aa", "aa"}));
}

TEST(Tokenizer, PairMergesAsJsonArraysWork) {
  json j = tiny_tokenizer({{"x", "y"}, {"xy", "z"}});
  j["model"]["merges"] = json::array({json::array({"x", "y"}), json::array({"xy", "z"})});
  const Tokenizer t = load(j);
  EXPECT_EQ(t.encode("xyzx"), ids_of(t, {"xyz", "x"}));
}

// A Split step with {"String": ...} isolates the literal (no regex syntax in it).
TEST(Tokenizer, StringSplitIsLiteral) {
  json j = tiny_tokenizer({{"a", ":"}, {":", ":"}, {"b", "."}});
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", "::"}};
  const Tokenizer t = load(j);
  EXPECT_EQ(t.encode("a::b"), ids_of(t, {"a", "::", "b"}));  // unsplit, "a:" would merge first
  EXPECT_EQ(t.encode("a:b."), ids_of(t, {"a:", "b."}));      // "." is no wildcard here
}

// model.ignore_merges (Llama-3 files set it): a piece that is itself a vocab token skips merging.
TEST(Tokenizer, IgnoreMergesTakesWholeWordsFromTheVocab) {
  json j = tiny_tokenizer({{"x", "y"}});
  j["model"]["vocab"]["xyz"] = static_cast<int>(j["model"]["vocab"].size());
  j["model"]["vocab"]["ĠĠ"] = static_cast<int>(j["model"]["vocab"].size());
  const Tokenizer plain = load(j);
  EXPECT_EQ(plain.encode("xyz"), ids_of(plain, {"xy", "z"}));
  j["model"]["ignore_merges"] = true;
  const Tokenizer t = load(j);
  EXPECT_EQ(t.encode("xyz"), ids_of(t, {"xyz"}));
  EXPECT_EQ(t.encode("xyzz"), ids_of(t, {"xy", "z", "z"}));
  EXPECT_EQ(t.encode("q  "), ids_of(t, {"q", "ĠĠ"}));  // the byte-level form is what is looked up
  EXPECT_EQ(plain.encode("q  "), ids_of(plain, {"q", "Ġ", "Ġ"}));
}

TEST(Tokenizer, AddedTokensLeftmostLongestRawPassFirst) {
  // "<a>" (special, raw pass) and "<a><b>" (normalized pass): the raw pass runs first over the
  // whole text, so "<a>" wins even though "<a><b>" is longer (HF's two-pass order).
  const Tokenizer t = load(tiny_tokenizer({}, {{"<a>", true}, {"<a><b>", false}, {"<a>x", true}}));
  const int32_t a = *t.token_id("<a>"), ab = *t.token_id("<a><b>"), ax = *t.token_id("<a>x");
  EXPECT_EQ(t.encode("<a><b>"), (std::vector<int32_t>{a, *t.token_id("<"), *t.token_id("b"), *t.token_id(">")}));
  EXPECT_EQ(t.encode("<a>x"), std::vector<int32_t>{ax});  // longest at the leftmost position
  const Tokenizer t2 = load(tiny_tokenizer({}, {{"<a><b>", false}, {"<b>", false}}));
  EXPECT_EQ(t2.encode("<a><b>"), std::vector<int32_t>{*t2.token_id("<a><b>")});
  EXPECT_TRUE(t.is_special(a));
  EXPECT_FALSE(t.is_special(ab));
  EXPECT_TRUE(t.is_added(ab));
  EXPECT_FALSE(t.is_added(*t.token_id("<")));
  EXPECT_EQ(t.decode(std::vector<int32_t>{a, *t.token_id("b"), ab}, true), "b<a><b>");
}

TEST(Tokenizer, InvalidUtf8IsReadAsReplacementCharacters) {
  const Tokenizer& tok = test::v4();
  // Each maximal invalid subsequence counts as one U+FFFD (Unicode §3.9, Python "replace").
  const std::string bad = "a\xE2\x82 b\xC0\xAF\xED\xA0\x80 c\xF0\x9F\x98";
  EXPECT_EQ(utf8::repair(bad), "a\xEF\xBF\xBD b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD c\xEF\xBF\xBD");
  EXPECT_EQ(tok.encode(bad), tok.encode(utf8::repair(bad)));
  EXPECT_EQ(tok.decode(tok.encode(bad)), utf8::repair(bad));
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.encode(std::string_view("a\0b", 3)).size(), 3u);  // NUL is an ordinary byte
}

TEST(Tokenizer, SpecialTokensResolvedFromTheFile) {
  const Tokenizer& tok = test::v4();
  EXPECT_EQ(tok.vocab_size(), 129280);
  EXPECT_EQ(tok.token_id("Ġthe"), tok.encode(" the").at(0));
  EXPECT_EQ(tok.token_text(*tok.token_id("<｜User｜>")), "<｜User｜>");
  EXPECT_FALSE(tok.token_id("<｜no▁such｜>").has_value());
  EXPECT_THROW(tok.decode(std::vector<int32_t>{tok.vocab_size()}), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(tok.token_text(tok.vocab_size()), Error);
  StreamDecoder sd(tok);
  EXPECT_THROW(sd.push(tok.vocab_size()), Error);
}

// encoding.md §2: the V4 added-token table, from three sources independent of the tokenizer file.
TEST(Tokenizer, V4AddedTokenTableMatchesEncodingDoc) {
  const Tokenizer& tok = test::v4();
  const std::pair<const char*, int32_t> named[] = {
      {"<｜begin▁of▁sentence｜>", 0}, {"<｜end▁of▁sentence｜>", 1}, {"<｜▁pad▁｜>", 2},
      {"<｜fim▁hole｜>", 128800}, {"<｜fim▁begin｜>", 128801}, {"<｜fim▁end｜>", 128802},
      {"<｜User｜>", 128803}, {"<｜Assistant｜>", 128804}, {"<|EOT|>", 128805},
      {"<｜tool▁calls▁begin｜>", 128806}, {"<｜tool▁sep｜>", 128814}, {"<｜begin▁of▁repo▁name｜>", 128815},
      {"<｜end▁of▁file｜>", 128820}, {"<think>", 128821}, {"</think>", 128822},
      {"<｜place▁holder▁for▁copy｜>", 128823}, {"<｜place▁holder▁for▁pointer▁replace｜>", 128824},
      {"｜DSML｜", 128825}, {"<｜begin▁sys｜>", 128826}, {"<｜end▁sys｜>", 128827},
      {"<｜latest_reminder｜>", 128828}, {"<｜action｜>", 128829}, {"<｜query｜>", 128830},
      {"<｜authority｜>", 128831}, {"<｜domain｜>", 128832}, {"<｜task｜>", 128833},
      {"<｜political｜>", 128834}, {"<｜entity｜>", 128835}, {"<｜title｜>", 128836},
      {"<｜safety｜>", 128837}, {"<｜answer｜>", 128838}, {"<｜search｜>", 128839}, {"<dsml:", 128840},
      {"</dsml:", 128841}, {"<｜search▁begin｜>", 128842}, {"<｜search▁end｜>", 128843},
      {"<｜extracted_url｜>", 128844}, {"<｜read_url｜>", 128845}, {"<｜end_of_query｜>", 128846},
      {"<｜rl_image_pad｜>", 129262}, {"<｜rl_image_start｜>", 129263}, {"<｜image2｜>", 129264},
      {"<｜/table>｜", 129265}, {"<｜table｜>", 129266}, {"<｜/td｜>", 129267}, {"<｜td｜>", 129268},
      {"<｜/tr｜>", 129269}, {"<｜tr｜>", 129270}, {"<｜/polygon｜>", 129271}, {"<｜polygon｜>", 129272},
      {"<｜/point｜>", 129273}, {"<｜point｜>", 129274}, {"<｜/box｜>", 129275}, {"<｜box｜>", 129276},
      {"<｜/ref｜>", 129277}, {"<｜ref｜>", 129278}, {"<｜image｜>", 129279},
  };
  for (const auto& [text, id] : named) {
    EXPECT_EQ(tok.token_id(text), id) << text;
    EXPECT_TRUE(tok.is_added(id)) << text;
  }
  for (int n = 0; n < 800; ++n)
    EXPECT_EQ(tok.token_id(cat("<｜place▁holder▁no▁", n, "｜>")), 128000 + n) << n;
  for (int n = 21; n <= 435; ++n) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "<|place_holder_mm_span_%04d|>", n);
    EXPECT_EQ(tok.token_id(buf), 128847 + (n - 21)) << buf;
  }
  int n_added = 0;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) n_added += tok.is_added(id);
  EXPECT_EQ(n_added, 1283);  // §0: ids 0-2 and 128000-129279
}

// Properties on inputs drawn fresh each run (DSV4_TEST_SEED, printed, replays one: support/seed.h).
TEST(Tokenizer, RandomBytesRoundTripAndStream) {
  const Tokenizer& tok = test::v4();
  const uint64_t seed = test::seed_for_this_test();
  std::mt19937 rng{uint32_t(seed)};
  const std::string alphabet_pieces[] = {"a", " ", "\n", "\t", "1", "é", "中", "😀", "<｜User｜>", "<think>",
                                         "｜", "\xF0", "\x80", "\xE4\xB8", "\xFF", "  ", ".", "'s"};
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    const int n = std::uniform_int_distribution<int>(0, 60)(rng);
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 == 0)
        s += static_cast<char>(rng() & 0xFF);
      else
        s += alphabet_pieces[rng() % std::size(alphabet_pieces)];
    }
    const auto ids = tok.encode(s);
    ASSERT_EQ(tok.decode(ids), utf8::repair(s)) << "seed " << seed << " iter " << iter;
    StreamDecoder sd(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += sd.push(id);
    streamed += sd.finish();
    ASSERT_EQ(streamed, utf8::repair(s)) << "seed " << seed << " iter " << iter;
  }
  // Random ids: partial UTF-8 everywhere; the stream must still add up to decode().
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<int32_t> ids(std::uniform_int_distribution<int>(1, 20)(rng));
    for (auto& id : ids) id = static_cast<int32_t>(rng() % tok.vocab_size());
    StreamDecoder sd(tok, iter % 2 == 1);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = sd.push(id);
      ASSERT_EQ(utf8::valid_prefix_length(piece), piece.size());
      streamed += piece;
    }
    streamed += sd.finish();
    ASSERT_EQ(streamed, tok.decode(ids, iter % 2 == 1)) << "seed " << seed << " iter " << iter;
  }
}

// encode() is documented thread-safe: the word cache is shared, the match scratch is per thread.
TEST(Tokenizer, ConcurrentEncodesAgreeWithSerial) {
  const Tokenizer& reference = test::v4();
  const Tokenizer tok = Tokenizer::from_json(test::v4_json(), "v4");  // its cache starts empty
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back(cat("Thread ", i, " 深度求索 ", i * 7919, " <think>x</think> café 😀\n\t", std::string(i % 13, ' ')));
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(reference.encode(t));
  std::vector<std::thread> threads;
  std::atomic<int> n_bad{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < texts.size(); ++i) {
        const size_t k = (i * 31 + t * 17) % texts.size();
        if (tok.encode(texts[k]) != serial[k]) ++n_bad;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(n_bad.load(), 0);
}

TEST(Tokenizer, StreamHoldsBackHalfCharacters) {
  const Tokenizer t = load(tiny_tokenizer({}));
  auto byte_id = [&](uint8_t b) { return *t.token_id(byte_level::byte_to_char()[b]); };
  StreamDecoder sd(t);
  EXPECT_EQ(sd.push(byte_id(0xE4)), "");
  EXPECT_EQ(sd.push(byte_id(0xB8)), "");
  EXPECT_EQ(sd.push(byte_id(0xAD)), "中");
  EXPECT_EQ(sd.push(byte_id(0xF0)), "");
  EXPECT_EQ(sd.push(byte_id('x')), "\xEF\xBF\xBDx");  // the lead byte can't be completed any more
  EXPECT_EQ(sd.push(byte_id(0xF0)), "");
  EXPECT_EQ(sd.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(sd.finish(), "");
}

// Each malformed or unsupported file is refused with a message naming the field.
TEST(Tokenizer, BadFilesNameTheField) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    try {
      Tokenizer::from_json(text, "bad.json");
      ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto with = [](auto edit) {
    json j = tiny_tokenizer({{"a", "b"}}, {{"<s>", true}});
    edit(j);
    return j.dump();
  };
  expect_error("{\"model\": ", "invalid JSON");
  expect_error("{\"padding\": 1e999}", "invalid JSON");  // beyond a double: nlohmann's out_of_range
  expect_error("{\"padding\": -2e2222}", "invalid JSON");
  expect_error("[1, 2]", "top level");
  expect_error(with([](json& j) { j.erase("model"); }), "'model'");
  expect_error(with([](json& j) { j["model"]["type"] = "WordPiece"; }), "model.type");
  expect_error(with([](json& j) { j["model"]["merges"].push_back("a zz"); }), "model.merges[1]");
  expect_error(with([](json& j) { j["model"]["merges"].push_back("nospace"); }), "model.merges[1]");
  expect_error(with([](json& j) { j["model"]["merges"].push_back(json::array({"a", 3})); }), "model.merges[1][1]");
  expect_error(with([](json& j) { j["model"]["vocab"]["zz"] = 5; }), "id 5 is used by both");
  expect_error(with([](json& j) { j["model"]["vocab"]["zz"] = -1; }), "model.vocab[\"zz\"]");
  expect_error(with([](json& j) { j["model"]["vocab"]["zz"] = 1000000; }), "no token has id 258");
  expect_error(with([](json& j) { j["model"]["vocab"].erase("Ġ"); }), "byte 32");
  expect_error(with([](json& j) { j["model"]["byte_fallback"] = true; }), "model.byte_fallback");
  expect_error(with([](json& j) { j["model"]["dropout"] = 0.1; }), "model.dropout");
  expect_error(with([](json& j) { j["added_tokens"][0]["id"] = 3; }), "added_tokens[0].id");
  expect_error(with([](json& j) { j["added_tokens"][0]["id"] = 99999; }), "no token has id 257");
  expect_error(with([](json& j) { j["added_tokens"][0]["id"] = "x"; }), "added_tokens[0].id");
  expect_error(with([](json& j) { j["added_tokens"][0]["lstrip"] = true; }), "added_tokens[0].lstrip");
  expect_error(with([](json& j) { j["added_tokens"][0]["content"] = ""; }), "added_tokens[0].content");
  expect_error(with([](json& j) { j["added_tokens"].push_back(j["added_tokens"][0]); }), "added_tokens[1].content");
  expect_error(with([](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }), "normalizer");
  expect_error(with([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(["; }),
               "pre_tokenizer.pretokenizers[0].pattern.Regex");
  expect_error(with([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[a[b]]"; }),
               "nested character classes");
  expect_error(with([](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["behavior"] = "Removed"; }),
               "pre_tokenizer.pretokenizers[1].behavior");
  expect_error(with([](json& j) { j["pre_tokenizer"]["pretokenizers"][2]["use_regex"] = true; }),
               "pre_tokenizer.pretokenizers[2].use_regex");
  expect_error(with([](json& j) { j["pre_tokenizer"]["pretokenizers"].erase(2); }), "ByteLevel");
  expect_error(with([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Whitespace"; }),
               "pre_tokenizer.pretokenizers[0].type");
  expect_error(with([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }), "decoder.type");
  expect_error(with([](json& j) { j["post_processor"] = {{"type", "TemplateProcessing"}}; }), "post_processor.type");
  EXPECT_THROW(Tokenizer::load("/nonexistent/tokenizer.json"), Error);
}

}  // namespace
}  // namespace dsv4
