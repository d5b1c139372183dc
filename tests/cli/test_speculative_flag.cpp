// `dsv4 generate --speculative K` end to end on the embedded nano model (its MTP block drafts real
// text): greedy output and logprobs are the same for K = 0 … 3, the run reports how many drafts it
// kept, and K out of range or a checkpoint without an MTP block is refused with a non-zero exit.
// The engine's own tests (tests/engine/speculative_*) check exactness and the sampling law.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/run_command.h"
#include "support/scratch_dir.h"
#include "support/tiny_model.h"

namespace {

using nlohmann::json;

struct GenerateRun {
  int status = -1;
  json summary;     // the --json line
  std::string err;  // stderr
};

GenerateRun generate(const std::string& flags) {
  static const dsv4::test::ScratchDir io_dir("dsv4_spec_io_");  // removed at exit
  const auto err_file = io_dir / "stderr";
  const std::string cmd = std::string(DSV4_BINARY) + " generate --raw --json --threads 2 " + flags + " 2> " +
                          err_file.string();
  const dsv4::test::CommandResult c = dsv4::test::run_command(cmd);
  GenerateRun r;
  r.status = c.status;
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  if (c.status == 0) {
    const size_t end = c.out.find_last_not_of('\n');
    const size_t start = c.out.rfind('\n', end);
    const size_t from = start == std::string::npos ? 0 : start + 1;
    r.summary = json::parse(c.out.substr(from, end + 1 - from));
  }
  return r;
}

TEST(SpeculativeFlag, GreedyGenerateIsTheSameWithAnyDraftCount) {
  const std::string base = "-p 'And God said unto Moses,' --temp 0 --logprobs 1 --max-tokens 40";
  const GenerateRun plain = generate(base);
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_EQ(plain.err.find("speculative:"), std::string::npos) << "no speculation, no report";
  for (int k = 1; k <= 3; ++k) {
    const GenerateRun spec = generate(base + " --speculative " + std::to_string(k));
    ASSERT_EQ(spec.status, 0) << spec.err;
    EXPECT_EQ(spec.summary.at("tokens"), plain.summary.at("tokens")) << "k=" << k;
    EXPECT_EQ(spec.summary.at("logprobs"), plain.summary.at("logprobs")) << "k=" << k;
    EXPECT_NE(spec.err.find("speculative: "), std::string::npos) << spec.err;
    EXPECT_NE(spec.err.find("drafts kept"), std::string::npos) << spec.err;
  }
}

TEST(SpeculativeFlag, BadCountsAndModelsWithoutMtpAreRefused) {
  const GenerateRun out_of_range = generate("-p x --speculative 4");
  EXPECT_NE(out_of_range.status, 0);
  EXPECT_NE(out_of_range.err.find("--speculative"), std::string::npos) << out_of_range.err;
  const GenerateRun negative = generate("-p x --speculative -1");
  EXPECT_NE(negative.status, 0);

  dsv4::test::TinyModelOptions opt;
  opt.edit_config = [](nlohmann::json& j) {
    j["num_nextn_predict_layers"] = 0;
    j["compress_ratios"].erase(j["compress_ratios"].size() - 1);
  };
  const dsv4::test::ScratchDir dir = dsv4::test::write_tiny_model(opt);
  // The nano tokenizer over the tiny vocabulary's ids is enough to load and refuse.
  std::filesystem::copy_file(std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano/tokenizer.json",
                             dir / "tokenizer.json");
  const GenerateRun no_mtp = generate("-m " + dir.path().string() + " -p x --speculative 2");
  EXPECT_NE(no_mtp.status, 0);
  EXPECT_NE(no_mtp.err.find("cannot draft"), std::string::npos) << no_mtp.err;
}

}  // namespace
