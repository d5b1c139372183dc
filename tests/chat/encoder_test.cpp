// The prompt encoder against the official encoder: its four golden cases and the cases that
// tools/make_encoder_goldens.py generated with it, byte for byte; plus bad-input errors.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "chat/encoder.h"
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

const std::string kEncoderData = std::string(DSV4_SOURCE_DIR) + "/testdata/encoder/";

// Reports the first differing byte with context, so a mismatch is readable.
void expect_same_text(const std::string& expected, const std::string& got, const std::string& name) {
  if (expected == got) return;
  size_t i = 0;
  while (i < expected.size() && i < got.size() && expected[i] == got[i]) ++i;
  const size_t from = i < 60 ? 0 : i - 60;
  ADD_FAILURE() << name << ": first difference at byte " << i << " (sizes " << expected.size()
                << " vs " << got.size() << ")\nexpected: …" << expected.substr(from, 160)
                << "\n     got: …" << got.substr(from, 160);
}

TEST(Encoder, OfficialGoldenCases) {
  const char* modes[] = {"thinking", "thinking", "thinking", "chat"};
  for (int n = 1; n <= 4; ++n) {
    const std::string in = kEncoderData + "official/test_input_" + std::to_string(n) + ".json";
    const std::string out = kEncoderData + "official/test_output_" + std::to_string(n) + ".txt";
    std::vector<Message> messages = read_conversation(parse_json(read_file(in), in), in);
    EncodeOptions opt;
    opt.mode = parse_thinking_mode(modes[n - 1]);
    expect_same_text(read_file(out), encode_messages(messages, opt), in);
  }
}

TEST(Encoder, GeneratedReferenceCases) {
  const std::string path = kEncoderData + "generated/cases.json";
  const Json doc = parse_json(read_file(path), path);
  const Json& cases = doc.at("cases");
  ASSERT_GE(cases.size(), 20u);
  for (const Json& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    EncodeOptions opt;
    opt.mode = parse_thinking_mode(c.at("thinking_mode").get<std::string>());
    opt.revision = parse_encoder_revision(c.at("encoder_revision").get<std::string>());
    if (!c.at("reasoning_effort").is_null()) opt.reasoning_effort = c["reasoning_effort"].get<std::string>();
    opt.drop_thinking = c.at("drop_thinking").get<bool>();
    std::vector<Message> messages = messages_from_json(c.at("messages"), name);
    expect_same_text(c.at("expected").get<std::string>(), encode_messages(messages, opt), name);
  }
}

// Error text must name the offending field.
void expect_error(const std::string& json_text, const std::string& needle) {
  try {
    std::vector<Message> m = read_conversation(parse_json(json_text, "input.json"), "input.json");
    encode_messages(m, EncodeOptions{});
    ADD_FAILURE() << "no error for " << json_text;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Encoder, BadInputIsAClearError) {
  expect_error(R"([{"role":"robot","content":"x"}])", "messages[0].role");
  expect_error(R"([{"content":"x"}])", "messages[0].role: missing");
  expect_error(R"([{"role":"user","content":5}])", "messages[0].content");
  expect_error(R"([{"role":"user","content":[{"type":"image_url"}]}])", "messages[0].content[0]");
  expect_error(R"([{"role":"developer","content":""}])", "developer");
  expect_error(R"([{"role":"user","content":"x","task":"nope"}])", "messages[0].task");
  expect_error(R"([{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"[1,2]"}}]}])",
               "must be a JSON object");
  expect_error(R"([{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}])",
               "tool_calls[0].function.name");
  expect_error(R"({"messages":[], "tools":[{"type":"function"}]})", "tools[0].function");
  expect_error(R"([{"role":"user","content":"x"})", "invalid JSON at byte");
  expect_error("[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]", "invalid JSON");
  expect_error(R"({"msgs":[]})", "messages");
}

TEST(Encoder, InvalidUtf8InCodeBuiltMessagesIsAnError) {
  Message m;
  m.role = Role::kUser;
  m.content = "ok \xc3\x28";
  try {
    encode_messages(std::vector<Message>{m}, EncodeOptions{});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[0].content"), std::string::npos) << e.what();
  }
}

TEST(Encoder, EffortLevelsAreCheckedPerRevision) {
  EXPECT_THROW(reasoning_effort_prefix(EncoderRevision::kOriginal, "low"), Error);
  EXPECT_THROW(reasoning_effort_prefix(EncoderRevision::k0731, "medium"), Error);
  EXPECT_EQ(reasoning_effort_prefix(EncoderRevision::kOriginal, "high"), "");
  EXPECT_EQ(reasoning_effort_prefix(EncoderRevision::k0731, "max").substr(0, 33),
            "Reasoning Effort: Beyond maximum ");
  EXPECT_THROW(parse_thinking_mode("reasoning"), Error);
  EXPECT_THROW(parse_encoder_revision("0801"), Error);
}

// Arguments given as an object (vLLM accepts this) render like their JSON text. Where the
// official encoder (sglang 0.5.18's encoding_dsv4.py, tools/make_encoder_goldens.py) raises —
// arguments that are not JSON, empty, null or absent, or JSON but not an object — this one
// raises too, naming the message and the call; a user message with null content likewise.
TEST(Encoder, ToolCallArgumentForms) {
  auto render = [](const std::string& args_json) {
    Json doc = parse_json(cat(R"([{"role":"user","content":"q"},{"role":"assistant","content":"","tool_calls":[{"id":"1","function":{"name":"f","arguments":)",
                              args_json, "}}]}]"), "t");
    std::vector<Message> m = read_conversation(doc, "t");
    EncodeOptions opt;
    opt.mode = ThinkingMode::kChat;
    return encode_messages(m, opt);
  };
  EXPECT_EQ(render(R"({"b":1,"a":"x"})"), render(R"("{\"b\": 1, \"a\": \"x\"}")"));
  EXPECT_NE(render(R"("{}")").find("<｜DSML｜invoke name=\"f\">\n\n</｜DSML｜invoke>"), std::string::npos);
  for (const char* bad : {R"("not json")", R"("")", "null", R"("{} x")", R"("[1]")", R"("null")",
                          R"("{\"x\": 1e999}")"}) {
    try {
      render(bad);
      ADD_FAILURE() << "accepted arguments " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("messages[1].tool_calls[0].function.arguments"), std::string::npos)
          << e.what();
    }
  }
  expect_error(R"([{"role":"user","content":null}])", "messages[0].content: null");
  // A message without the key reads as empty text, as in the reference.
  EXPECT_EQ(encode_messages(read_conversation(parse_json(R"([{"role":"user"}])", "t"), "t"), EncodeOptions{}),
            "<｜begin▁of▁sentence｜><｜User｜><｜Assistant｜><think>");
}

// A tool result that answers no call is rendered (the reference does) but reported.
TEST(Encoder, UnmatchedToolResultsAreReported) {
  const auto m = read_conversation(
      parse_json(R"([{"role":"tool","tool_call_id":"a","content":"r0"},
                     {"role":"user","content":"q"},
                     {"role":"assistant","content":"","tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]},
                     {"role":"tool","tool_call_id":"c1","content":"r1"},
                     {"role":"tool","tool_call_id":"zz","content":"r2"}])",
                 "t"),
      "t");
  const auto notes = unmatched_tool_results(m);
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[0].find("messages[0]: a tool result before any assistant tool call"), std::string::npos) << notes[0];
  EXPECT_NE(notes[1].find("messages[4]: a tool result for call id 'zz'"), std::string::npos) << notes[1];
  EXPECT_NO_THROW(encode_messages(m, EncodeOptions{}));
}

}  // namespace
}  // namespace dsv4::chat
