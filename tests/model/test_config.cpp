// ModelConfig: the released Flash/Pro configs (§1.1/§1.2), the HF form (§1.3) of the same
// schedule, NVFP4 configs (§11.6), and field-naming errors for bad values.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/known_configs.h"
#include "util/error.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

int count_attn(const ModelConfig& c, AttentionType t) {
  int n = 0;
  for (const auto& l : c.layers) n += l.attention == t;
  return n;
}

// Expects from_json to throw an Error whose message contains every fragment.
void expect_error(const json& j, std::initializer_list<const char*> fragments) {
  try {
    ModelConfig::from_json(j.dump());
    ADD_FAILURE() << "accepted: " << j.dump().substr(0, 200);
  } catch (const Error& e) {
    for (const char* f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what() << " lacks " << f;
  }
}

TEST(Config, FlashSchedule) {
  const ModelConfig c = ModelConfig::from_json(flash_config_json());
  EXPECT_EQ(c.hidden_size, 4096);
  ASSERT_EQ(c.layers.size(), 43u);
  EXPECT_EQ(count_attn(c, AttentionType::kSliding), 2);
  EXPECT_EQ(count_attn(c, AttentionType::kCSA), 21);
  EXPECT_EQ(count_attn(c, AttentionType::kHCA), 20);
  for (int l = 0; l < 43; ++l) {
    EXPECT_EQ(c.layers[size_t(l)].routing, l < 3 ? RoutingType::kHash : RoutingType::kScore) << l;
    EXPECT_EQ(c.layers[size_t(l)].compress_rope, l >= 2) << l;
  }
  ASSERT_EQ(c.mtp_layers.size(), 1u);
  EXPECT_EQ(c.mtp_layers[0].attention, AttentionType::kSliding);
  EXPECT_EQ(c.mtp_layers[0].routing, RoutingType::kScore);
  EXPECT_TRUE(c.rope_compress.yarn);
  EXPECT_EQ(c.rope_compress.theta, 160000.0);
  EXPECT_EQ(c.rope_compress.factor, 16.0);
  EXPECT_EQ(c.rope_compress.original_max_position, 65536);
  EXPECT_FALSE(c.rope_main.yarn);
  EXPECT_EQ(c.rope_main.theta, 10000.0);
  EXPECT_TRUE(c.fp8_block);
  EXPECT_TRUE(c.fp8_scale_e8m0);
  EXPECT_EQ(c.expert_format, ExpertFormat::kMXFP4);
  EXPECT_EQ(c.num_hash_layers, 3);
  EXPECT_EQ(c.hc_mix_dim(), 24);
}

TEST(Config, ProSchedule) {
  const ModelConfig c = ModelConfig::from_json(pro_config_json());
  ASSERT_EQ(c.layers.size(), 61u);
  EXPECT_EQ(count_attn(c, AttentionType::kSliding), 0);
  EXPECT_EQ(count_attn(c, AttentionType::kCSA), 30);
  EXPECT_EQ(count_attn(c, AttentionType::kHCA), 31);
  EXPECT_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.heads_per_group(), 8);
}

// The HF form of the tiny config (§1.3): layer_types, mlp_layer_types, rope_parameters,
// compress_rates, partial_rotary_factor; no legacy keys.
json hf_form(const json& official) {
  json j = official;
  const char* names[] = {"sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"};
  json lt = json::array(), mt = json::array();
  const int L = j["num_hidden_layers"];
  for (int l = 0; l < L; ++l) {
    const int r = j["compress_ratios"][size_t(l)];
    lt.push_back(names[r == 0 ? 0 : r == 4 ? 1 : 2]);
    mt.push_back(l < int(j["num_hash_layers"]) ? "hash_moe" : "moe");
  }
  j["layer_types"] = lt;
  j["mlp_layer_types"] = mt;
  j["compress_rates"] = {{"compressed_sparse_attention", 4}, {"heavily_compressed_attention", 128}};
  j["partial_rotary_factor"] = double(j["qk_rope_head_dim"]) / double(j["head_dim"]);
  j["rope_parameters"] = {
      {"main", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
      {"compress", {{"rope_type", "yarn"}, {"rope_theta", 160000.0}, {"factor", 16.0},
                    {"original_max_position_embeddings", 65536}, {"beta_fast", 32}, {"beta_slow", 1},
                    {"attention_factor", 1.0}}}};
  j["num_local_experts"] = j["n_routed_experts"];
  for (const char* k : {"compress_ratios", "num_hash_layers", "qk_rope_head_dim", "rope_scaling", "rope_theta",
                        "compress_rope_theta", "n_routed_experts"})
    j.erase(k);
  return j;
}

TEST(Config, HfFormMatchesOfficial) {
  const json off = json::parse(tiny_config_json());
  const ModelConfig a = ModelConfig::from_json(off.dump());
  const ModelConfig b = ModelConfig::from_json(hf_form(off).dump());
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    EXPECT_EQ(a.layers[l].attention, b.layers[l].attention) << l;
    EXPECT_EQ(a.layers[l].routing, b.layers[l].routing) << l;
  }
  EXPECT_EQ(b.qk_rope_head_dim, 64);
  EXPECT_EQ(b.n_routed_experts, 16);
  EXPECT_EQ(b.num_hash_layers, 3);
  EXPECT_TRUE(b.rope_compress.yarn);
  EXPECT_EQ(b.rope_compress.theta, 160000.0);
  EXPECT_EQ(b.rope_compress.factor, 16.0);
  EXPECT_EQ(b.mtp_layers.size(), 1u);  // HF drops the MTP entry: defaults to sliding + score
  EXPECT_EQ(b.mtp_layers[0].attention, AttentionType::kSliding);
  // Coverage claimed by §15.1: every attention type with both routings.
  EXPECT_EQ(a.layers[0].attention, AttentionType::kSliding);
  EXPECT_EQ(a.layers[1].attention, AttentionType::kCSA);
  EXPECT_EQ(a.layers[5].attention, AttentionType::kHCA);
  EXPECT_EQ(a.layers[5].routing, RoutingType::kScore);
}

TEST(Config, NVFP4AndBaseVariants) {
  json j = json::parse(flash_config_json());
  j["quantization_config"]["quant_algo"] = "MIXED_PRECISION";
  j["quantization_config"]["moe_quant_algo"] = "NVFP4";
  j["quantization_config"]["group_size"] = 16;
  j["quantization_config"]["ignore"] = {"*.attn.*", "head", "mtp.*"};
  j["quantization_config"]["quantized_layers"] = {{"layers.3.ffn.experts", {{"quant_algo", "NVFP4"}, {"group_size", 16}}}};
  EXPECT_EQ(ModelConfig::from_json(j.dump()).expert_format, ExpertFormat::kNVFP4);
  j["quantization_config"]["quantized_layers"]["layers.3.ffn.experts"]["group_size"] = 32;
  expect_error(j, {"quantized_layers.layers.3.ffn.experts.group_size", "32"});

  json base = json::parse(flash_config_json());
  base["expert_dtype"] = "fp8";
  EXPECT_EQ(ModelConfig::from_json(base.dump()).expert_format, ExpertFormat::kFP8Block);
  json bf16 = json::parse(tiny_config_json());
  bf16.erase("quantization_config");
  bf16.erase("expert_dtype");
  const ModelConfig c = ModelConfig::from_json(bf16.dump());
  EXPECT_FALSE(c.fp8_block);
  EXPECT_EQ(c.expert_format, ExpertFormat::kBF16);
}

TEST(Config, ErrorsNameFieldAndValue) {
  const json good = json::parse(flash_config_json());
  auto with = [&](const char* k, json v) { json j = good; j[k] = v; return j; };
  expect_error(with("hidden_size", -5), {"hidden_size", "-5"});
  expect_error(with("hidden_size", "4096"), {"hidden_size", "\"4096\""});
  expect_error(with("hidden_size", 4100), {"hidden_size", "4100", "multiple of 32"});
  expect_error(with("model_type", "llama"), {"model_type", "llama"});
  expect_error(with("o_groups", 7), {"o_groups", "7", "divide"});
  expect_error(with("num_experts_per_tok", 300), {"num_experts_per_tok", "300"});
  expect_error(with("n_shared_experts", 2), {"n_shared_experts", "2"});
  expect_error(with("num_key_value_heads", 8), {"num_key_value_heads", "8"});
  expect_error(with("qk_rope_head_dim", 63), {"qk_rope_head_dim", "63"});
  expect_error(with("scoring_func", "softmax"), {"scoring_func", "softmax"});
  expect_error(with("rms_norm_eps", 0), {"rms_norm_eps", "0"});
  expect_error(with("num_hash_layers", 44), {"num_hash_layers", "44"});
  expect_error(with("expert_dtype", "int4"), {"expert_dtype", "int4"});
  {
    json j = good;
    j["compress_ratios"].erase(0);
    expect_error(j, {"compress_ratios", "43 entries", "44"});
  }
  {
    json j = good;
    j["compress_ratios"][5] = 3;
    expect_error(j, {"compress_ratios[5]", "3"});
  }
  {
    json j = good;
    j["rope_scaling"]["type"] = "linear";
    expect_error(j, {"rope_scaling.type", "linear"});
  }
  {
    json j = good;
    j["rope_scaling"]["mscale"] = 0.707;
    expect_error(j, {"rope_scaling.mscale", "0.707"});
  }
  {
    json j = good;
    j["quantization_config"]["weight_block_size"] = {64, 64};
    expect_error(j, {"quantization_config.weight_block_size", "[64,64]"});
  }
  {
    json j = hf_form(json::parse(tiny_config_json()));
    j["layer_types"][2] = "full_attention";
    expect_error(j, {"layer_types[2]", "full_attention"});
  }
  {
    json j = good;
    j.erase("hidden_size");
    expect_error(j, {"missing", "hidden_size"});
  }
  EXPECT_THROW(ModelConfig::from_json("{not json"), Error);
  EXPECT_THROW(ModelConfig::from_json("[1,2]"), Error);
  EXPECT_THROW(ModelConfig::from_json(std::string(100000, '[')), Error);  // nesting guard
}

}  // namespace
}  // namespace dsv4
