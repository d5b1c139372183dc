// The completion parser against the official parser's outputs (parse_cases.json, written by
// tools/make_encoder_goldens.py), fed whole and in random streamed splits; the lenient policy's
// repairs; and render -> parse round trips of random tool calls.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "chat/dsml.h"
#include "chat/parser.h"
#include "support/seed.h"
#include "util/error.h"

namespace dsv4::chat {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Json load_cases() {
  const std::string path = std::string(DSV4_SOURCE_DIR) + "/testdata/encoder/generated/parse_cases.json";
  return parse_json(read_file(path), path).at("cases");
}

// Replayable: DSV4_TEST_SEED reproduces a run (support/seed.h prints it).
uint64_t fresh_seed() { return test::seed_for_this_test(); }

// Feeds `text` in random pieces cut at UTF-8 character boundaries (as a StreamDecoder delivers
// it), checking that the deltas add up to the final fields.
ParsedCompletion parse_streamed(const std::string& text, ThinkingMode mode, ParsePolicy policy,
                                std::mt19937_64& rng) {
  CompletionParser p(mode, policy);
  std::string reasoning, content;
  std::vector<ToolCall> calls;
  auto take = [&](const ParseDelta& d) {
    reasoning += d.reasoning;
    content += d.content;
    calls.insert(calls.end(), d.tool_calls.begin(), d.tool_calls.end());
  };
  size_t i = 0;
  while (i < text.size()) {
    size_t n = 1 + rng() % 7;
    size_t end = std::min(text.size(), i + n);
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    take(p.push(std::string_view(text).substr(i, end - i)));
    i = end;
  }
  take(p.finish());
  EXPECT_EQ(reasoning, p.result().reasoning_content);
  EXPECT_EQ(content, p.result().content);
  EXPECT_EQ(calls.size(), p.result().tool_calls.size());
  return p.result();
}

void expect_matches_reference(const ParsedCompletion& got, const Json& expected, const std::string& what) {
  EXPECT_EQ(got.content, expected.at("content").get<std::string>()) << what;
  EXPECT_EQ(got.reasoning_content, expected.at("reasoning_content").get<std::string>()) << what;
  const Json& calls = expected.at("tool_calls");
  ASSERT_EQ(got.tool_calls.size(), calls.size()) << what;
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(got.tool_calls[i].name, calls[i].at("function").at("name").get<std::string>()) << what;
    EXPECT_EQ(got.tool_calls[i].arguments, calls[i].at("function").at("arguments").get<std::string>()) << what;
  }
}

TEST(Parser, StrictMatchesTheOfficialParser) {
  std::mt19937_64 rng(fresh_seed());
  int n_ok = 0, n_err = 0;
  for (const Json& c : load_cases()) {
    const std::string text = c.at("text").get<std::string>();
    const ThinkingMode mode = parse_thinking_mode(c.at("thinking_mode").get<std::string>());
    if (c.contains("expected")) {
      ++n_ok;
      expect_matches_reference(parse_completion(text, mode, ParsePolicy::kStrict), c["expected"], text);
      expect_matches_reference(parse_streamed(text, mode, ParsePolicy::kStrict, rng), c["expected"],
                               "streamed: " + text);
    } else {
      ++n_err;
      EXPECT_THROW(parse_completion(text, mode, ParsePolicy::kStrict), Error) << text;
      EXPECT_THROW(parse_streamed(text, mode, ParsePolicy::kStrict, rng), Error) << text;
    }
  }
  EXPECT_GE(n_ok, 10);
  EXPECT_GE(n_err, 10);
}

// Lenient never throws; on well-formed output it agrees with strict and reports nothing (except
// that a string="false" value which is not JSON becomes a JSON string, so arguments stay JSON).
TEST(Parser, LenientAgreesOnWellFormedOutputAndNeverThrows) {
  std::mt19937_64 rng(fresh_seed());
  for (const Json& c : load_cases()) {
    const std::string text = c.at("text").get<std::string>();
    const ThinkingMode mode = parse_thinking_mode(c.at("thinking_mode").get<std::string>());
    ParsedCompletion whole;
    ASSERT_NO_THROW(whole = parse_completion(text, mode, ParsePolicy::kLenient)) << text;
    ParsedCompletion streamed = parse_streamed(text, mode, ParsePolicy::kLenient, rng);
    EXPECT_EQ(whole.content, streamed.content) << text;
    EXPECT_EQ(whole.reasoning_content, streamed.reasoning_content) << text;
    EXPECT_EQ(whole.tool_calls.size(), streamed.tool_calls.size()) << text;
    EXPECT_EQ(whole.issues, streamed.issues) << text;
    for (const ToolCall& tc : whole.tool_calls)
      EXPECT_TRUE(Json::accept(tc.arguments)) << tc.arguments;
    if (c.contains("expected")) {
      if (text.find("not json") != std::string::npos) {
        EXPECT_EQ(whole.tool_calls.at(0).arguments, R"({"k": "not json"})");
        EXPECT_EQ(whole.issues.size(), 1u);
      } else {
        expect_matches_reference(whole, c["expected"], text);
        EXPECT_TRUE(whole.issues.empty()) << text << ": " << whole.issues.at(0);
      }
    } else if (text.find("bad sep") == 0) {
      // A missing newline between DSML tags is whitespace, which lenient parsing tolerates.
      EXPECT_EQ(whole.tool_calls.size(), 1u);
    } else {
      EXPECT_FALSE(whole.issues.empty()) << text;
    }
  }
}

bool has_issue(const ParsedCompletion& r, const std::string& needle) {
  for (const std::string& s : r.issues)
    if (s.find(needle) != std::string::npos) return true;
  return false;
}

const std::string kEos = "<｜end▁of▁sentence｜>";
const std::string kCall =
    "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
    "<｜DSML｜parameter name=\"a\" string=\"false\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

TEST(Parser, LenientRepairs) {
  const ParsePolicy L = ParsePolicy::kLenient;
  // Truncated inside the reasoning: all of it is reasoning.
  ParsedCompletion r = parse_completion("still thinking", ThinkingMode::kThinking, L);
  EXPECT_EQ(r.reasoning_content, "still thinking");
  EXPECT_EQ(r.content, "");
  EXPECT_FALSE(r.saw_eos);
  EXPECT_TRUE(has_issue(r, "missing </think>"));

  // Tool calls without </think>: split there (vLLM's rule).
  r = parse_completion("plan\n\n" + kCall + kEos, ThinkingMode::kThinking, L);
  EXPECT_EQ(r.reasoning_content, "plan");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"a": 1})");

  // A block without the "\n\n" before it, and whitespace inside tags.
  r = parse_completion(
      "ok <｜DSML｜tool_calls>\n<｜DSML｜invoke  name = \"g\" >\n"
      "<｜DSML｜parameter name=\"x\"  string = \"true\" >v</｜DSML｜parameter>\n\n</｜DSML｜invoke>\n"
      "</｜DSML｜tool_calls>" + kEos, ThinkingMode::kChat, L);
  EXPECT_EQ(r.content, "ok ");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "g");
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"x": "v"})");

  // A malformed block is kept, verbatim, as content.
  const std::string broken = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke oops>\n</｜DSML｜tool_calls>";
  r = parse_completion("see" + broken + kEos, ThinkingMode::kChat, L);
  EXPECT_EQ(r.content, "see" + broken);
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_TRUE(has_issue(r, "malformed tool-call block"));

  // Cut off inside a block.
  r = parse_completion("x\n\n" + kCall.substr(0, 60), ThinkingMode::kChat, L);
  EXPECT_EQ(r.content, "x\n\n" + kCall.substr(0, 60));
  EXPECT_TRUE(has_issue(r, "unterminated"));

  // Text after the calls stays content; the calls survive.
  r = parse_completion("\n\n" + kCall + " and more" + kEos, ThinkingMode::kChat, L);
  EXPECT_EQ(r.content, " and more");
  EXPECT_EQ(r.tool_calls.size(), 1u);
  EXPECT_TRUE(has_issue(r, "after the tool calls"));

  // Length stop in chat mode.
  r = parse_completion("partial answ", ThinkingMode::kChat, L);
  EXPECT_EQ(r.content, "partial answ");
  EXPECT_TRUE(has_issue(r, "cut off"));
}

TEST(Parser, HeldBackMarkerPrefixesAreNotEmittedEarly) {
  CompletionParser p(ThinkingMode::kThinking, ParsePolicy::kStrict);
  ParseDelta d = p.push("reason </th");
  EXPECT_EQ(d.reasoning, "reason ");
  d = p.push("ink>ans<｜end");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "ans");
  d = p.push("▁of▁sentence｜>");
  EXPECT_TRUE(d.empty());
  p.finish();
  EXPECT_TRUE(p.result().saw_eos);
  // push_eos() is the sampled EOS id.
  CompletionParser q(ThinkingMode::kChat, ParsePolicy::kStrict);
  q.push("hi");
  q.push_eos();
  ASSERT_NO_THROW(q.finish());
  EXPECT_EQ(q.result().content, "hi");
}

// The block grammar's corners: what lenient tolerates (and strict refuses), and the official
// regex's `<$`, which also ends a value at "<\n".
TEST(Parser, BlockGrammarEdges) {
  const ParsePolicy L = ParsePolicy::kLenient, S = ParsePolicy::kStrict;
  auto block = [](const std::string& invokes) {
    return "\n\n<｜DSML｜tool_calls>\n" + invokes + "</｜DSML｜tool_calls>" + kEos;
  };
  const std::string param_a1 = "<｜DSML｜parameter name=\"a\" string=\"false\">1</｜DSML｜parameter";

  // "<\n" before the closing tag ends the value as "<" does, in both policies.
  const std::string lt_nl = block(
      "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"s\" string=\"true\">x<\n/｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n");
  for (const ParsePolicy p : {S, L}) {
    const ParsedCompletion r = parse_completion(lt_nl, ThinkingMode::kChat, p);
    ASSERT_EQ(r.tool_calls.size(), 1u);
    EXPECT_EQ(r.tool_calls[0].arguments, R"({"s": "x"})");
  }

  // A '>' missing after a parameter's and an invoke's closing tags: lenient reads the call.
  const std::string no_gt = block("<｜DSML｜invoke name=\"f\">\n" + param_a1 +
                                  "<｜DSML｜parameter name=\"b\" string=\"true\">t</｜DSML｜parameter>\n"
                                  "</｜DSML｜invoke");
  ParsedCompletion r = parse_completion(no_gt, ThinkingMode::kChat, L);
  ASSERT_EQ(r.tool_calls.size(), 1u) << (r.issues.empty() ? "" : r.issues[0]);
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"a": 1, "b": "t"})");
  EXPECT_THROW(parse_completion(no_gt, ThinkingMode::kChat, S), Error);

  // A repeated parameter: lenient keeps the last and says so; strict refuses.
  const std::string dup = block("<｜DSML｜invoke name=\"f\">\n" + param_a1 +
                                ">\n<｜DSML｜parameter name=\"a\" string=\"false\">2</｜DSML｜parameter>\n"
                                "</｜DSML｜invoke>\n");
  r = parse_completion(dup, ThinkingMode::kChat, L);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"a": 2})");
  EXPECT_TRUE(has_issue(r, "duplicate parameter 'a', the last one kept"));
  EXPECT_THROW(parse_completion(dup, ThinkingMode::kChat, S), Error);

  // string="false" with a NUL after valid JSON is not JSON (nlohmann would stop at the NUL):
  // lenient keeps it as a JSON string, so the arguments stay valid JSON.
  const std::string nul = block(std::string("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
                                            "string=\"false\">2") +
                                '\0' + "</｜DSML｜parameter>\n</｜DSML｜invoke>\n");
  r = parse_completion(nul, ThinkingMode::kChat, L);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(Json::parse(r.tool_calls[0].arguments).at("a"), std::string("2\0", 2));
  EXPECT_TRUE(has_issue(r, "not JSON"));
}

// Reasoning and special tokens: a duplicate leading <think> (lenient drops it, also when it
// arrives in pieces), EOS inside the reasoning, and control tokens left in the text fields.
TEST(Parser, ReasoningEdgesAndSpecialTokens) {
  const ParsePolicy L = ParsePolicy::kLenient, S = ParsePolicy::kStrict;
  for (const std::vector<std::string>& pieces : {std::vector<std::string>{"<think>why</think>ans" + kEos},
                                                 std::vector<std::string>{"<th", "ink>wh", "y</think>ans" + kEos}}) {
    CompletionParser p(ThinkingMode::kThinking, L);
    for (const std::string& s : pieces) p.push(s);
    p.finish();
    EXPECT_EQ(p.result().reasoning_content, "why");
    EXPECT_EQ(p.result().content, "ans");
    EXPECT_TRUE(has_issue(p.result(), "a leading <think> was dropped"));
  }

  ParsedCompletion r = parse_completion("only reasoning" + kEos + "ignored", ThinkingMode::kThinking, L);
  EXPECT_EQ(r.reasoning_content, "only reasoning");
  EXPECT_EQ(r.content, "");
  EXPECT_TRUE(r.saw_eos);
  EXPECT_TRUE(has_issue(r, "missing </think>"));
  EXPECT_TRUE(has_issue(r, "text after the end of the output"));
  EXPECT_THROW(parse_completion("only reasoning" + kEos, ThinkingMode::kThinking, S), Error);

  const std::vector<std::pair<std::string, std::string>> tokens = {
      {"<｜begin▁of▁sentence｜>", "content"}, {"<think>", "content"}, {"｜DSML｜", "content"},
      {"<｜begin▁of▁sentence｜>", "reasoning"}, {"｜DSML｜", "reasoning"}};
  for (const auto& [tok, field] : tokens) {
    const bool in_reasoning = field == "reasoning";
    const std::string text = (in_reasoning ? "a" + tok + "b</think>c" : "a" + tok + "b") + kEos;
    const ThinkingMode mode = in_reasoning ? ThinkingMode::kThinking : ThinkingMode::kChat;
    r = parse_completion(text, mode, L);
    EXPECT_TRUE(has_issue(r, field + " contains the special token '" + tok + "'")) << text;
    EXPECT_THROW(parse_completion(text, mode, S), Error) << text;
  }
}

// Random tool calls rendered into a prompt's DSML and parsed back give the same arguments.
TEST(Parser, RenderParseRoundTrip) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<std::string> pieces = {"a", "b c", "中文", "\"q\"", "\\", "\n", "<", ">", "x=\"y\"", "1", "-"};
  auto random_text = [&] {
    std::string s;
    for (int i = rng() % 5; i > 0; --i) s += pieces[rng() % pieces.size()];
    return s;
  };
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<ToolCall> calls(1 + rng() % 3);
    for (size_t c = 0; c < calls.size(); ++c) {
      calls[c].name = "tool_" + std::to_string(rng() % 100);
      Json args = Json::object();
      for (int k = rng() % 4; k > 0; --k) {
        const std::string key = "k" + std::to_string(k);
        switch (rng() % 4) {
          case 0: args[key] = random_text(); break;
          case 1: args[key] = static_cast<int64_t>(rng() % 2000) - 1000; break;
          case 2: args[key] = Json::array({random_text(), (rng() % 2) == 1, nullptr}); break;
          default: args[key] = Json{{"n", std::ldexp(static_cast<double>(rng() % 1000), -3)}}; break;
        }
      }
      calls[c].arguments = args.dump();
    }
    // A value ending in '<' plus a closing tag is ambiguous in DSML itself; the reference has the
    // same limit, so such values are not drawn (pieces never end a value with "</").
    const std::string text = "pre" + render_tool_calls(calls) + kEos;
    const ParsedCompletion r = parse_completion(text, ThinkingMode::kChat, ParsePolicy::kStrict);
    ASSERT_EQ(r.tool_calls.size(), calls.size()) << text;
    EXPECT_EQ(r.content, "pre");
    for (size_t c = 0; c < calls.size(); ++c) {
      EXPECT_EQ(r.tool_calls[c].name, calls[c].name);
      EXPECT_EQ(Json::parse(r.tool_calls[c].arguments), Json::parse(calls[c].arguments)) << text;
    }
  }
}

}  // namespace
}  // namespace dsv4::chat
