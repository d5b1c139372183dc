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

// The value of the stdout line "perplexity: X +/- E" (stderr's "dsv4 perplexity: ..." is not it).
double parse_ppl(const std::string& out) {
  const std::string key = "perplexity: ";
  for (size_t at = out.find(key); at != std::string::npos; at = out.find(key, at + 1))
    if (at == 0 || out[at - 1] == '\n') return std::stod(out.substr(at + key.size()));
  return NAN;
}

TEST(Perplexity, NanoMatchesHfTransformers) {
  std::ifstream in(kNano / "hf_reference.json");
  ASSERT_TRUE(in) << "missing " << (kNano / "hf_reference.json") << " (tools/nano/eval_ppl.py --json-out)";
  const nlohmann::json ref = nlohmann::json::parse(in);
  const double want = ref.at("perplexity").get<double>();
  const RunResult r = run_dsv4(
      "-m " + kNano.string() + " --text-file " + (kNano / ref.at("text_file").get<std::string>()).string() +
      " --ctx " + std::to_string(ref.at("ctx").get<int>()) + " --chunks " +
      std::to_string(ref.at("chunks").get<int>()) + " --numerics exact --threads 2");
  ASSERT_EQ(r.status, 0) << r.output;
  const double got = parse_ppl(r.output);
  // Same weights (the shipped FP8/MXFP4 tensors dequantised), both FP32: what remains is the
  // summation order inside each dot product (~1e-6 relative per logit) and, rarely, a flipped
  // indexer top-k tie. 0.5 % on PPL is exp(0.005) of mean NLL — far below what any real mistake
  // (a wrong mask, rope or routing) costs, which moves PPL by tens of percent on this model.
  EXPECT_NEAR(got, want, 0.005 * want) << r.output;
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
  const std::filesystem::path tiny = std::filesystem::temp_directory_path() / "dsv4_ppl_tiny.txt";
  std::ofstream(tiny) << "In the beginning";
  const RunResult r = run_dsv4("-m " + kNano.string() + " --text-file " + tiny.string() + " --ctx 64");
  std::filesystem::remove(tiny);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("less than one chunk"), std::string::npos) << r.output;
}

}  // namespace
