// `dsv4 logits` end to end: the committed quantised Flash-shaped fixture (testdata/parity/flash_quant)
// through the binary against HF's golden_exact.npy, and the command's errors on bad input.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/run_command.h"
#include "support/scratch_dir.h"
#include "util/npy.h"

namespace {

namespace fs = std::filesystem;

const fs::path kFixture = fs::path(DSV4_SOURCE_DIR) / "testdata/parity/flash_quant";

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

RunResult run_dsv4(const std::string& args) {
  const auto c = dsv4::test::run_command(std::string(DSV4_BINARY) + " logits " + args + " 2>&1");
  return {c.status, c.out};
}

// A file in a directory of its own, removed when the test ends.
struct TempFile {
  dsv4::test::ScratchDir dir{"dsv4-logits-"};
  fs::path path;
  explicit TempFile(const std::string& name) : path(dir / name) {}
};

std::vector<int64_t> fixture_tokens() {
  std::ifstream in(kFixture / "tokens.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str()).get<std::vector<int64_t>>();
}

int64_t argmax(const float* row, int64_t V) { return std::max_element(row, row + V) - row; }

TEST(Logits, FixtureMatchesHfGolden) {
  // All of the fixture's tokens in chunks of 129, so chunk boundaries fall off the compression
  // blocks and the sliding window; the whole run takes well under a second.
  constexpr int64_t kChunk = 129;
  TempFile out("out.npy");
  const RunResult r = run_dsv4("-m " + (kFixture / "model").string() + " --tokens " +
                               (kFixture / "tokens.json").string() + " --chunk " + std::to_string(kChunk) +
                               " --numerics exact --threads 2 --out " + out.path.string());
  ASSERT_EQ(r.status, 0) << r.output;

  const dsv4::NpyArray got = dsv4::read_npy(out.path);
  const dsv4::NpyArray ref = dsv4::read_npy(kFixture / "golden_exact.npy");
  ASSERT_EQ(ref.shape.size(), 2u);
  const int64_t kT = ref.shape[0], V = ref.shape[1];
  ASSERT_EQ(int64_t(fixture_tokens().size()), kT);
  ASSERT_EQ(got.shape, (std::vector<int64_t>{kT, V}));

  float max_ref = 0, max_diff = 0;
  int64_t flips = 0;
  for (int64_t t = 0; t < kT; ++t) {
    const float* g = got.data.data() + t * V;
    const float* f = ref.data.data() + t * V;
    for (int64_t v = 0; v < V; ++v) {
      max_ref = std::max(max_ref, std::fabs(f[v]));
      max_diff = std::max(max_diff, std::fabs(g[v] - f[v]));
    }
    if (argmax(g, V) != argmax(f, V)) ++flips;
  }
  std::printf("dsv4 logits vs golden_exact (%lld tokens, chunk %lld): max|d| %.3g, max|ref| %.3g, "
              "argmax flips %lld\n",
              (long long)kT, (long long)kChunk, max_diff, max_ref, (long long)flips);
  // Same dequantised weights, both FP32; what differs is the summation order inside each dot
  // product and reduction (~1e-6 relative per value, compounded over the few layers of this
  // model) — the same 1e-4·max|ref| budget test_parity uses for the exact mode.
  EXPECT_LE(max_diff, 1e-4f * max_ref);
  EXPECT_EQ(flips, 0);
}

TEST(Logits, BrokenJsonIsAnError) {
  TempFile tokens("broken.json"), out("out.npy");
  std::ofstream(tokens.path) << "[1, 2, 3";
  const RunResult r = run_dsv4("-m " + (kFixture / "model").string() + " --tokens " +
                               tokens.path.string() + " --out " + out.path.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("not valid JSON"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(tokens.path.string()), std::string::npos) << r.output;
}

TEST(Logits, TokenOutsideVocabularyIsAnError) {
  TempFile tokens("oov.json"), out("out.npy");
  // vocab_size of the fixture is 128 (model/config.json); 128 is the first id outside it.
  std::ofstream(tokens.path) << "[0, 5, 128, 7]";
  const RunResult r = run_dsv4("-m " + (kFixture / "model").string() + " --tokens " +
                               tokens.path.string() + " --out " + out.path.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("outside the vocabulary"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out.path)) << "no output may be written for bad input";
}

TEST(Logits, UnknownNumericsIsAnError) {
  TempFile tokens("ok.json"), out("out.npy");
  std::ofstream(tokens.path) << "[0, 1, 2]";
  const RunResult r = run_dsv4("-m " + (kFixture / "model").string() + " --tokens " +
                               tokens.path.string() + " --numerics bogus --out " + out.path.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--numerics"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << r.output;
}

TEST(Logits, MissingModelDirIsAnError) {
  TempFile tokens("ok.json"), out("out.npy");
  std::ofstream(tokens.path) << "[0, 1, 2]";
  const RunResult r = run_dsv4("-m /nonexistent/dsv4_model --tokens " + tokens.path.string() +
                               " --out " + out.path.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/dsv4_model"), std::string::npos) << r.output;
}

}  // namespace
