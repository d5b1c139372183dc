// `dsv4 perplexity` end to end: the embedded nano model on the first chunks of its validation
// text against HF transformers' perplexity of the same weights (models/nano/hf_reference.json,
// written by tools/nano/eval_ppl.py), and the command's errors on bad input.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/run_command.h"
#include "support/scratch_dir.h"
#include "support/sanitizer.h"

namespace {

const std::filesystem::path kNano = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

RunResult run_dsv4(const std::string& args) {
  const auto c = dsv4::test::run_command(std::string(DSV4_BINARY) + " perplexity " + args + " 2>&1");
  return {c.status, c.out};
}

// The number after `key` on the stdout line that starts with it ("perplexity: X +/- E",
// "tokens: N scored ..."; stderr's "dsv4 perplexity: ..." is not such a line); NaN when absent.
double parse_line(const std::string& out, const std::string& key) {
  for (size_t at = out.find(key); at != std::string::npos; at = out.find(key, at + 1))
    if (at == 0 || out[at - 1] == '\n') return std::stod(out.substr(at + key.size()));
  return NAN;
}

TEST(Perplexity, NanoMatchesHfTransformers) {
  if (dsv4::test::kSanitizerBuild) {
    // The same command on half the window (two chunks of 256, half the tokens): the code paths
    // without the comparison, which needs HF's numbers for 512.
    dsv4::test::note_left_out("Perplexity: the HF comparison (ctx 512; run at ctx 256 here)");
    const RunResult r = run_dsv4("-m " + kNano.string() + " --text-file " + (kNano / "validation.txt").string() +
                                 " --ctx 256 --chunks 2 --numerics exact --threads 2");
    ASSERT_EQ(r.status, 0) << r.output;
    const double got = parse_line(r.output, "perplexity: ");
    EXPECT_TRUE(std::isfinite(got) && got > 1.0) << r.output;
    EXPECT_EQ(parse_line(r.output, "tokens: "), double(2 * (256 - 128 - 1))) << r.output;
    return;
  }
  std::ifstream in(kNano / "hf_reference.json");
  ASSERT_TRUE(in) << "missing " << (kNano / "hf_reference.json") << " (tools/nano/eval_ppl.py --json-out)";
  const nlohmann::json ref = nlohmann::json::parse(in);
  const double want = ref.at("perplexity").get<double>();
  const RunResult r = run_dsv4(
      "-m " + kNano.string() + " --text-file " + (kNano / ref.at("text_file").get<std::string>()).string() +
      " --ctx " + std::to_string(ref.at("ctx").get<int>()) + " --chunks " +
      std::to_string(ref.at("chunks").get<int>()) + " --numerics exact --threads 2");
  ASSERT_EQ(r.status, 0) << r.output;
  const double got = parse_line(r.output, "perplexity: ");
  // Same weights (the shipped FP8/MXFP4 tensors dequantised), both FP32: what remains is the
  // summation order inside each dot product. Two FP32 implementations of this graph agree to
  // ε·max|logit| per logit, ε ≤ 4.1e-7 on nano vs HF (testdata/parity_nano) and ≤ 1.35e-6 on the
  // random fixtures (testdata/parity); max|logit| ≈ 19 on nano. A token's NLL, lse(row) − row[target],
  // moves by at most 2·ε·max|logit| ≤ 5.1e-5, and so does the mean NLL, i.e. ln PPL. Budget: 1e-4
  // relative (2× that worst case; the printed 4 decimals add 1.5e-6). Measured: 32.4193 vs HF
  // 32.41929 (2026-11-26), below the printed resolution. For scale: the weights' quantisation moves
  // PPL by 0.33 % (HF BF16 master 31.676 vs shipped 31.781), a wrong mask, rope or routing by tens
  // of percent, and an indexer top-k tie flipped by FP32 noise would show as a larger gap too.
  EXPECT_NEAR(got, want, 1e-4 * want) << r.output;
  // The same scoring window as the oracle: chunks·(ctx/2 − 1) predictions (cmd_perplexity.cpp's
  // definition, tools/nano/common.py strided_perplexity); an off-by-one in the window changes it.
  const int64_t ctx = ref.at("ctx").get<int64_t>(), chunks = ref.at("chunks").get<int64_t>();
  ASSERT_EQ(ref.at("scored_tokens").get<int64_t>(), chunks * (ctx - ctx / 2 - 1));
  EXPECT_EQ(parse_line(r.output, "tokens: "), double(ref.at("scored_tokens").get<int64_t>())) << r.output;
  EXPECT_NE(r.output.find("tokens/s: "), std::string::npos) << r.output;
}

TEST(Perplexity, MissingTextFileIsAnError) {
  const RunResult r = run_dsv4("-m " + kNano.string() + " --text-file /nonexistent/nano.txt");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/nano.txt"), std::string::npos) << r.output;
}

TEST(Perplexity, BadContextIsAnError) {
  const RunResult r = run_dsv4("-m " + kNano.string() + " --text-file " +
                               (kNano / "validation.txt").string() + " --ctx 2");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--ctx"), std::string::npos) << r.output;
}

TEST(Perplexity, TextShorterThanOneChunkIsAnError) {
  const dsv4::test::ScratchDir dir("dsv4_ppl_");
  const std::filesystem::path tiny = dir / "tiny.txt";
  std::ofstream(tiny) << "In the beginning";
  const RunResult r = run_dsv4("-m " + kNano.string() + " --text-file " + tiny.string() + " --ctx 64");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("less than one chunk"), std::string::npos) << r.output;
}

}  // namespace
