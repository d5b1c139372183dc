// `dsv4 generate`, `dsv4 chat` and `dsv4 encode` end to end on a random tiny checkpoint with a
// small V4-shaped tokenizer (BOS 0, EOS 1, the 256 bytes, then the chat markers). The oracle for
// the generation loop is a plain greedy recomputation: the whole prefix re-run from scratch on a
// fresh sequence for every token, which shares nothing with the loop's incremental decode.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cpu/cpu_forward.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

#include "support/byte_tokenizer.h"
#include "support/run_command.h"
#include "support/scratch_dir.h"
#include "support/v4_tokenizer.h"

namespace {

using nlohmann::json;

// EOS and </think> are never the argmax (byte_tokenizer.h): greedy thinking mode then always
// reasons before it answers, so the reasoning display is checked on every run, not by chance.
const std::filesystem::path& model_dir() {
  static const dsv4::test::ScratchDir dir = dsv4::test::write_tiny_chat_model(
      {dsv4::test::kByteTokenizerEos, dsv4::test::kByteTokenizerEndThink});
  return dir.path();
}

struct RunResult {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// This process's stdin, stderr and message files, removed at exit.
const dsv4::test::ScratchDir& io_dir() {
  static const dsv4::test::ScratchDir dir("dsv4_gen_io_");
  return dir;
}

RunResult run(const std::string& args, const std::string& stdin_text = "") {
  const auto err_file = io_dir() / "stderr";
  const auto in_file = io_dir() / "stdin";
  std::ofstream(in_file) << stdin_text;
  const bool runs_model = args.rfind("generate", 0) == 0 || args.rfind("chat", 0) == 0;
  const std::string cmd = std::string(DSV4_BINARY) + " " + args + (runs_model ? " --threads 2" : "") + " < " + in_file.string() +
                          " 2> " + err_file.string();
  const auto c = dsv4::test::run_command(cmd);
  RunResult r{c.status, c.out, ""};
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

// The last line of stdout, parsed (the --json summary).
json last_json_line(const std::string& out) {
  const size_t end = out.find_last_not_of('\n');
  const size_t start = out.rfind('\n', end);
  return json::parse(out.substr(start == std::string::npos ? 0 : start + 1, end + 1 - (start == std::string::npos ? 0 : start + 1)));
}

// Greedy ids by full recomputation of the prefix each step (argmax, lowest id on ties).
std::vector<int32_t> reference_greedy(const std::filesystem::path& dir, const std::vector<int32_t>& prompt, int n) {
  auto fwd = dsv4::make_cpu_forward(dir, {dsv4::Numerics::kExact, 2});
  std::vector<int32_t> ids = prompt, out;
  for (int step = 0; step < n; ++step) {
    auto seq = fwd->new_sequence(static_cast<int64_t>(ids.size()));
    std::vector<float> logits;
    dsv4::ForwardItem item{seq.get(), ids, false, &logits};
    fwd->forward(std::span<dsv4::ForwardItem>(&item, 1));
    int32_t best = 0;
    for (int32_t v = 1; v < static_cast<int32_t>(logits.size()); ++v)
      if (logits[v] > logits[best]) best = v;
    if (best == 1) break;  // EOS (id 1 in both the fixture and nano)
    out.push_back(best);
    ids.push_back(best);
  }
  return out;
}

TEST(Generate, RawGreedyMatchesFullRecomputation) {
  const int n = 6;
  const RunResult r = run("generate -m " + model_dir().string() + " --raw -p 'abc' --temp 0 --json --max-tokens " +
                          std::to_string(n));
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = last_json_line(r.out);
  std::vector<int32_t> got = j.at("tokens").get<std::vector<int32_t>>();
  const std::vector<int32_t> want = reference_greedy(model_dir(), {'a' + 2, 'b' + 2, 'c' + 2}, n);
  EXPECT_EQ(got, want);
  EXPECT_EQ(j.at("finish_reason").get<std::string>(), want.size() == static_cast<size_t>(n) ? "length" : "eos");
  EXPECT_NE(r.err.find("loaded in"), std::string::npos) << r.err;

  // Log-probabilities: greedy picks the most likely token, so each chosen one heads its list.
  const RunResult lp = run("generate -m " + model_dir().string() + " --raw -p 'abc' --temp 0 --json --logprobs 3 --max-tokens 3");
  ASSERT_EQ(lp.status, 0) << lp.err;
  const json lj = last_json_line(lp.out);
  ASSERT_GE(lj.at("logprobs").size(), 1u);
  for (const json& t : lj.at("logprobs")) {
    ASSERT_EQ(t.at("top").size(), 3u);
    EXPECT_EQ(t.at("top")[0][0], t.at("id"));
    EXPECT_LE(t.at("logprob").get<double>(), 0.0);
  }
}

// The embedded nano model (FP8 + MXFP4 weights), found without -m: chat-encoded greedy generation
// equals the full-recompute oracle on the same prompt ids.
TEST(Generate, EmbeddedNanoGreedyMatchesFullRecomputation) {
  const auto nano = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";
  if (!std::filesystem::exists(nano / "config.json")) GTEST_SKIP() << "no embedded model at " << nano;
  const int n = 5;
  const RunResult r = run("generate -p 'And it came to pass' --thinking-mode chat --temp 0 --json --max-tokens " +
                          std::to_string(n));
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = last_json_line(r.out);
  const dsv4::Tokenizer tok = dsv4::Tokenizer::load(nano / "tokenizer.json");
  const std::vector<int32_t> prompt =
      tok.encode("<｜begin▁of▁sentence｜><｜User｜>And it came to pass<｜Assistant｜></think>");
  EXPECT_EQ(j.at("usage").at("prompt_tokens").get<size_t>(), prompt.size());
  EXPECT_EQ(j.at("tokens").get<std::vector<int32_t>>(), reference_greedy(nano, prompt, n));
}

TEST(Generate, ChatModeRunsEndToEndAndSeedsReproduce) {
  const std::string base = "generate -m " + model_dir().string() +
                           " -p 'Hi' --system 'Be brief.' --thinking-mode chat --max-tokens 8 --json";
  const RunResult a = run(base + " --temp 0.9 --top-p 0.95 --top-k 50 --min-p 0.01 --seed 7");
  ASSERT_EQ(a.status, 0) << a.err;
  const json ja = last_json_line(a.out);
  EXPECT_EQ(ja.at("role"), "assistant");
  EXPECT_TRUE(ja.at("content").is_string());
  // <BOS>Be brief.<｜User｜>Hi<｜Assistant｜></think>: 1 + 9 + 1 + 2 + 1 + 1 ids.
  EXPECT_EQ(ja.at("usage").at("prompt_tokens"), 15);
  const RunResult b = run(base + " --temp 0.9 --top-p 0.95 --top-k 50 --min-p 0.01 --seed 7");
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(a.out, b.out);  // same seed, same output

  // Thinking mode: the reasoning is kept apart (stderr), the answer alone on stdout. Greedy never
  // picks EOS or </think> on this model (model_dir), so all 6 tokens are reasoning.
  const std::string thinking = "generate -m " + model_dir().string() + " -p 'Hi' --temp 0 --max-tokens 6 --json";
  const RunResult t = run(thinking);
  ASSERT_EQ(t.status, 0) << t.err;
  const json jt = last_json_line(t.out);
  const std::string reasoning = jt.at("reasoning_content").get<std::string>();
  ASSERT_FALSE(reasoning.empty()) << t.out;
  EXPECT_EQ(jt.at("content").get<std::string>(), "");
  EXPECT_NE(t.err.find("[reasoning]\n" + reasoning + "\n[/reasoning]\n"), std::string::npos) << t.err;
  const RunResult hidden = run(thinking + " --hide-reasoning");
  ASSERT_EQ(hidden.status, 0) << hidden.err;
  EXPECT_EQ(hidden.err.find("[reasoning]"), std::string::npos) << hidden.err;
  EXPECT_EQ(last_json_line(hidden.out).at("reasoning_content").get<std::string>(), reasoning);
}

TEST(Generate, BadOptionsAreClearErrors) {
  const std::string m = " -m " + model_dir().string();
  RunResult r = run("generate" + m);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--prompt"), std::string::npos) << r.err;
  r = run("generate" + m + " -p x --temp -1");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("temperature"), std::string::npos) << r.err;
  r = run("generate" + m + " -p x --thinking-mode fast");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("thinking mode"), std::string::npos) << r.err;
  r = run("generate" + m + " -p x --raw --system s");
  EXPECT_EQ(r.status, 1);
  r = run("generate -m /nonexistent/dir -p x");
  EXPECT_EQ(r.status, 1);
}

TEST(Chat, MultiTurnResetAndExit) {
  const RunResult r = run("chat -m " + model_dir().string() + " --thinking-mode chat --temp 0 --max-tokens 4",
                          "Hello\nSecond turn\n/reset\nAgain\n/exit\nnever read\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("(conversation cleared)"), std::string::npos) << r.err;
  // Three turns ran (one stats line each).
  size_t turns = 0;
  for (size_t at = r.err.find("generated tokens"); at != std::string::npos; at = r.err.find("generated tokens", at + 1)) ++turns;
  EXPECT_EQ(turns, 3u) << r.err;
}

TEST(Encode, TextIdsAndErrors) {
  const auto file = io_dir() / "messages.json";
  std::ofstream(file) << R"([{"role":"user","content":"Hi"}])";
  RunResult r = run("encode --messages " + file.string() + " --thinking-mode chat");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>");
  r = run("encode --messages " + file.string() + " --ids -m " + model_dir().string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[0, 258, 74, 107, 259, 260]\n");  // 'H'+2, 'i'+2; thinking: <think>
  r = run("encode --messages " + file.string() + " --reasoning-effort max --encoder-revision 0731");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("Beyond maximum"), std::string::npos);
  r = run("encode --messages " + file.string() + " --reasoning-effort low");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("reasoning effort"), std::string::npos) << r.err;
  std::ofstream(file) << "[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]";
  r = run("encode --messages " + file.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("invalid JSON"), std::string::npos) << r.err;
}

// The encoder's text through the real V4 tokenizer gives the ids encoding.md §4 lists (E1, E2),
// which came from an independent tokenizer oracle. The tokenizer file is fetched by
// scripts/fetch_tokenizer.sh into the git-ignored .cache; without it the test fails saying so.
TEST(Encode, RealTokenizerIdsMatchTheDocumentedOnes) {
  const auto dir = dsv4::test::require_v4_tokenizer().parent_path();
  const auto file = io_dir() / "messages.json";
  std::ofstream(file) << R"([{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is 2+2?"}])";
  RunResult r = run("encode --messages " + file.string() + " --thinking-mode chat --ids -m " + dir.string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[0, 3476, 477, 260, 11502, 22896, 16, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 128822]\n");
  std::ofstream(file) << R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},)"
                         R"({"role":"assistant","reasoning_content":"Greet.","content":"Hello!"},{"role":"user","content":"2+2?"}])";
  r = run("encode --messages " + file.string() + " --ids -m " + dir.string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[0, 7153, 9708, 16, 128803, 23166, 128804, 128822, 19923, 3, 1, 128803, 20, 13, 20, 33, 128804, 128821]\n");
}

}  // namespace
