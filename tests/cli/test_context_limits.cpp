// Issue 10, context limits and progress, end to end on the embedded nano model (CPU): every
// subcommand knows the context it serves (--ctx-size, Forward::kv_cache().max_context), refuses
// an input longer than it at once with both lengths, caps --max-tokens to what is left (finish
// reason "length"), and reports progress on stderr during long prefills and long logits runs.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "support/run_command.h"
#include "support/sanitizer.h"
#include "support/scratch_dir.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";
constexpr int kTimeoutSeconds = 120;  // far above any command here; only a hang reaches it

struct RunResult {
  int rc = -1;
  std::string out;    // stdout (or stdout and stderr together, see dsv4())
  double seconds = 0;
};

// `merge_stderr`: stderr into the output; else stderr goes to `stderr_file` when given.
RunResult dsv4(const std::string& args, bool merge_stderr = true, const fs::path& stderr_file = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string redirect = merge_stderr ? " 2>&1" : stderr_file.empty() ? " 2>/dev/null" : " 2>" + stderr_file.string();
  const auto c = dsv4::test::run_command("timeout " + std::to_string(kTimeoutSeconds) + " " + std::string(DSV4_BINARY) +
                                         " " + args + redirect);
  return {c.status, c.out, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class ContextLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kNano / "config.json")) GTEST_SKIP() << "no embedded model at " << kNano;
    scratch_.emplace("dsv4-context-");
    dir_ = scratch_->path();
  }
  // A text file of `n` words.
  fs::path words(int n, const char* name) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "word ";
    std::ofstream(dir_ / name) << s;
    return dir_ / name;
  }
  // How many tokens `generate --raw -p "$(cat file)"` feeds (the shell drops a trailing newline).
  int64_t tokens_of(const fs::path& file) {
    const RunResult r = dsv4("tokenize --json --text \"$(cat " + file.string() + ")\"", false);
    EXPECT_EQ(r.rc, 0) << r.out;
    return int64_t(json::parse(r.out)["ids"].size());
  }
  std::optional<dsv4::test::ScratchDir> scratch_;  // made in SetUp, after the skip check
  fs::path dir_;
};

// A prompt longer than the context is refused before any forward pass, naming both lengths.
TEST_F(ContextLimits, LongPromptRefusedAtOnce) {
  const fs::path prompt = words(300, "p.txt");
  const int64_t P = tokens_of(prompt);
  ASSERT_GT(P, 100);
  const RunResult r = dsv4("generate --raw --ctx-size 100 -p \"$(cat " + prompt.string() + ")\"");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("the prompt is " + std::to_string(P) + " tokens, longer than the context of 100 tokens"),
            std::string::npos) << r.out;
  // Refused before the first chunk: no "prefill N/M tokens" progress (a bare "prefill" would also
  // match a checkout path such as /tmp/ci_prefill/).
  EXPECT_EQ(r.out.find("prefill "), std::string::npos) << r.out;
  // A prompt exactly as long as the context leaves no room for an answer.
  const std::string p = std::to_string(P);
  const RunResult eq = dsv4("generate --raw --ctx-size " + p + " -p \"$(cat " + prompt.string() + ")\"");
  EXPECT_EQ(eq.rc, 1) << eq.out;
  EXPECT_NE(eq.out.find("the prompt is " + p + " tokens, as long as the context of " + p + " tokens"), std::string::npos)
      << eq.out;
}

// --max-tokens beyond the context is capped: the answer fills the context exactly and ends with
// finish reason "length"; stderr says so.
TEST_F(ContextLimits, MaxTokensCappedToTheContext) {
  const fs::path err = dir_ / "err.txt";
  const RunResult r = dsv4("generate --raw --json --temp 0 --ctx-size 40 --max-tokens 1000000000000 -p hi", false, err);
  ASSERT_EQ(r.rc, 0) << r.out << read_file(err);
  const std::string line = r.out.substr(r.out.rfind("{\"text\""));
  const json j = json::parse(line);
  const int64_t prompt = j["usage"]["prompt_tokens"].get<int64_t>();
  const std::string finish = j["finish_reason"].get<std::string>();
  if (finish == "length") {
    EXPECT_EQ(j["usage"]["completion_tokens"].get<int64_t>(), 40 - prompt) << line;
  } else {  // an EOS inside the context: nothing to cap, but still within it
    EXPECT_LE(j["usage"]["completion_tokens"].get<int64_t>(), 40 - prompt) << line;
  }
  EXPECT_NE(read_file(err).find("note: --max-tokens 1000000000000 capped to " + std::to_string(40 - prompt)),
            std::string::npos) << read_file(err);
}

// Chat: a turn whose conversation no longer fits is refused and the session goes on.
TEST_F(ContextLimits, ChatTurnBeyondTheContext) {
  std::string long_line;
  for (int i = 0; i < 300; ++i) long_line += "word ";
  std::ofstream(dir_ / "in.txt") << long_line << "\nhi\n/exit\n";
  const RunResult r = dsv4("chat --thinking-mode chat --temp 0 --max-tokens 4 --ctx-size 200 < " + (dir_ / "in.txt").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("error: the prompt is"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("longer than the context of 200 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("finish:"), std::string::npos) << r.out;  // the next turn ran
}

// logits and perplexity check their lengths against the context before running.
TEST_F(ContextLimits, OtherSubcommandsCheckTheContext) {
  std::ofstream(dir_ / "t.json") << "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
  RunResult r = dsv4("logits --ctx-size 8 --tokens " + (dir_ / "t.json").string() + " -o " + (dir_ / "o.npy").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("--tokens: 10 tokens, longer than the context of 8 tokens"), std::string::npos) << r.out;
  r = dsv4("perplexity --ctx-size 100 --ctx 128 --text-file " + words(400, "w.txt").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("--ctx: 128 tokens, longer than the context of 100 tokens"), std::string::npos) << r.out;
}

// Long work shows progress on stderr: tokens done / total and a rate, from the first chunk on.
TEST_F(ContextLimits, ProgressLines) {
  // Under the sanitizers half the lengths: still two prefill chunks of at most 256 and two logits calls.
  const bool short_run = dsv4::test::kSanitizerBuild;
  if (short_run) dsv4::test::note_left_out("ProgressLines: a 300-word prompt (not 600) and 200 logits tokens (not 300)");
  const fs::path prompt = words(short_run ? 300 : 600, "long.txt");
  const std::string P = std::to_string(tokens_of(prompt));
  const fs::path err = dir_ / "err.txt";
  RunResult r = dsv4("generate --raw --temp 0 --max-tokens 1 -p \"$(cat " + prompt.string() + ")\"", false, err);
  ASSERT_EQ(r.rc, 0) << read_file(err);
  const std::string e = read_file(err);
  EXPECT_NE(e.find("prefill 256/" + P + " tokens, "), std::string::npos) << e;  // the first chunk
  EXPECT_NE(e.find("prefill " + P + "/" + P + " tokens, "), std::string::npos) << e;
  EXPECT_NE(e.find(" tok/s"), std::string::npos) << e;
  // logits in several forward calls (explicit --chunk; by default calls of 4096 tokens).
  const std::string n = short_run ? "200" : "300";
  std::string ids = "[0";
  for (int i = 1; i < std::stoi(n); ++i) ids += ", " + std::to_string(i);
  std::ofstream(dir_ / "t.json") << ids << "]";
  r = dsv4("logits --chunk 100 --tokens " + (dir_ / "t.json").string() + " -o " + (dir_ / "o.npy").string(), false, err);
  ASSERT_EQ(r.rc, 0) << read_file(err);
  EXPECT_NE(read_file(err).find("logits 100/" + n + " tokens, "), std::string::npos) << read_file(err);
  EXPECT_NE(read_file(err).find("logits " + n + "/" + n + " tokens, "), std::string::npos) << read_file(err);
}

}  // namespace
