// check_cuda_supported (src/cuda/device_model.cpp) without a GPU: it is host code, so these run in
// every build that has nvcc (CI's release build included). Every released and shipped config is
// accepted; each rule, broken alone on the nano config, is an Error naming the field and value.
// Two rules cannot be reached through a config and have no case: num_experts_per_tok ≤ 16 (the
// config parser already allows at most 16) and heads-per-group·head_dim a multiple of 128 (implied
// by head_dim ∈ {128, 512}).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cuda/device_model.h"
#include "model/config.h"
#include "model/known_configs.h"
#include "util/error.h"

namespace dsv4::cuda {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kRoot = DSV4_SOURCE_DIR;

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  return json::parse(in);
}

// The error check_cuda_supported throws for `j`, or "" when it accepts it.
std::string cuda_error(const json& j) {
  const ModelConfig cfg = ModelConfig::from_json(j.dump());
  try {
    check_cuda_supported(cfg);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CudaSupportedConfigs, ReleasedShippedAndFixtureConfigsAreAccepted) {
  EXPECT_EQ(cuda_error(json::parse(flash_config_json())), "");
  EXPECT_EQ(cuda_error(json::parse(pro_config_json())), "");
  EXPECT_EQ(cuda_error(read_json(kRoot / "models/nano/config.json")), "");
  for (const char* f : {"flash_bf16", "flash_quant", "pro_bf16", "pro_quant"})
    EXPECT_EQ(cuda_error(read_json(kRoot / "testdata/parity" / f / "model/config.json")), "") << f;
}

struct Broken {
  const char* what;
  std::function<void(json&)> edit;  // applied to nano's config.json
  const char* message;              // must appear in the error
};

TEST(CudaSupportedConfigs, EachUnsupportedDimensionIsAnErrorNamingIt) {
  const json nano = read_json(kRoot / "models/nano/config.json");
  ASSERT_EQ(cuda_error(nano), "");
  const std::vector<Broken> cases = {
      {"hc_mult 2", [](json& j) { j["hc_mult"] = 2; }, "hc_mult = 2 (needs 4)"},
      {"head_dim 256", [](json& j) { j["head_dim"] = 256; }, "head_dim = 256 (needs 128 or 512)"},
      {"qk_rope_head_dim 32", [](json& j) { j["qk_rope_head_dim"] = 32; }, "qk_rope_head_dim = 32 (needs 64)"},
      {"hidden_size 320", [](json& j) { j["hidden_size"] = 320; }, "hidden_size = 320 (needs a multiple of 128)"},
      {"q_lora_rank 192", [](json& j) { j["q_lora_rank"] = 192; }, "q_lora_rank = 192 (needs a multiple of 128)"},
      {"moe_intermediate_size 96", [](json& j) { j["moe_intermediate_size"] = 96; },
       "moe_intermediate_size = 96 (needs a multiple of 128)"},
      {"o_lora_rank 96", [](json& j) { j["o_lora_rank"] = 96; }, "o_groups·o_lora_rank = 192 (needs a multiple of 128)"},
      {"index_head_dim 192", [](json& j) { j["index_head_dim"] = 192; }, "index_head_dim = 192 (needs 128)"},
      {"n_routed_experts 1024", [](json& j) { j["n_routed_experts"] = 1024; }, "n_routed_experts = 1024 (at most 512)"},
      {"moe_intermediate_size 8320", [](json& j) { j["moe_intermediate_size"] = 8320; }, "expert K = 8320 (at most 8192)"},
      {"expert_dtype fp8", [](json& j) { j["expert_dtype"] = "fp8"; }, "FP8-block routed experts"},
  };
  for (const Broken& b : cases) {
    json j = nano;
    b.edit(j);
    std::string err;
    try {
      err = cuda_error(j);
    } catch (const Error& e) {  // the config parser refused the edit itself: the case tests nothing
      ADD_FAILURE() << b.what << ": ModelConfig rejects it before the CUDA check: " << e.what();
      continue;
    }
    EXPECT_NE(err.find(b.message), std::string::npos) << b.what << ": got '" << err << "'";
    EXPECT_NE(err.find("the CUDA backend does not support"), std::string::npos) << b.what << ": " << err;
  }
}

}  // namespace
}  // namespace dsv4::cuda
