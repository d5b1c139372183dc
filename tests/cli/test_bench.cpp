// `dsv4 bench` end to end on the embedded nano model (CPU): the JSON report has a prefill and one
// decode row per batch size, its prefill FLOPs are model_summary.h's count for the prompt (so the
// TFLOP/s printed are that count over the measured time), and bad lists are refused by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "model/model_summary.h"
#include "support/run_command.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";

test::CommandResult bench(const std::string& args, bool merge_stderr) {
  return test::run_command("timeout 300 " + std::string(DSV4_BINARY) + " bench -m " + kNano.string() + " " + args +
                           (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

TEST(Bench, JsonReportCountsThePrefillsFlops) {
  const test::CommandResult r = bench("--prompt 48 --batch 1,3 --ctx 20 --steps 2 --json", false);
  ASSERT_EQ(r.status, 0) << r.out;
  const json j = json::parse(r.out);
  const ModelConfig cfg = ModelConfig::load(kNano);
  const json& p = j.at("prefill");
  EXPECT_EQ(p.at("tokens").get<int64_t>(), 48);
  const double seconds = p.at("seconds").get<double>();
  ASSERT_GT(seconds, 0.0);
  EXPECT_DOUBLE_EQ(p.at("tflop").get<double>(), prefill_flops(cfg, 48) * 1e-12);
  EXPECT_NEAR(p.at("tflop_per_s").get<double>(), prefill_flops(cfg, 48) * 1e-12 / seconds,
              1e-9 * p.at("tflop_per_s").get<double>());
  EXPECT_FALSE(p.contains("share_of_fp8_peak")) << "the cpu backend has no FP8 GEMM peak to share";
  const json& decode = j.at("decode");
  ASSERT_EQ(decode.size(), 2u);
  EXPECT_EQ(decode[0].at("batch").get<int64_t>(), 1);
  EXPECT_EQ(decode[1].at("batch").get<int64_t>(), 3);
  for (const json& row : decode) {
    EXPECT_EQ(row.at("ctx").get<int64_t>(), 20);
    EXPECT_GT(row.at("ms_per_step").get<double>(), 0.0);
    EXPECT_GT(row.at("weight_bytes").get<double>(), 0.0);
  }
}

TEST(Bench, TextReportNamesTheFlops) {
  const test::CommandResult r = bench("--prompt 32 --batch 1 --ctx 8 --steps 1", true);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("FLOP (2 × active parameters per token + attention)"), std::string::npos) << r.out;
}

TEST(Bench, BadListsAreRefusedByName) {
  for (const char* args : {"--batch 0", "--batch 1,x", "--prompt -3", "--steps 0"}) {
    const test::CommandResult r = bench(std::string(args) + " --ctx 8", true);
    EXPECT_NE(r.status, 0) << args << ": " << r.out;
    const std::string name = std::string(args).substr(0, std::string(args).find(' '));
    EXPECT_NE(r.out.find(name), std::string::npos) << args << ": " << r.out;
  }
}

// --host-cpu-shares (several decode modes on one load) is checked before anything loads or a GPU
// is looked for.
TEST(Bench, HostCpuSharesAreCheckedFirst) {
  for (const char* args : {"--host-cpu-shares 1,0", "--cpu-experts 4 --host-cpu-shares 1,2",
                           "--cpu-experts 4 --host-cpu-shares 1,,0", "--cpu-experts 4 --host-cpu-shares x",
                           "--cpu-experts 4 --host-decode gpu --host-cpu-shares 1,0"}) {
    const test::CommandResult r = bench(std::string(args) + " --backend cuda --ctx 8", true);
    EXPECT_NE(r.status, 0) << args << ": " << r.out;
    EXPECT_NE(r.out.find("--host-cpu-shares"), std::string::npos) << args << ": " << r.out;
  }
}

}  // namespace
}  // namespace dsv4
