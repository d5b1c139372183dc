// ModelConfig: the released Flash/Pro configs (§1.1/§1.2), the HF form (§1.3) of the same
// schedule, NVFP4 configs (§11.6), and field-naming errors for bad values.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string_view>

#include "model/config.h"
#include "model/known_configs.h"
#include "model/modelopt.h"
#include "support/seed.h"
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
    j["compress_ratios"].erase(0);
    expect_error(j, {"compress_ratios", "42 entries", "at least num_hidden_layers = 43"});
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
  // The shape rules at their edges: refused one past the bound (and accepted at it, where the
  // bound is a count).
  expect_error(with("qk_rope_head_dim", 512), {"qk_rope_head_dim", "512", "smaller than head_dim = 512"});
  expect_error(with("index_head_dim", 64), {"index_head_dim", "64", "must exceed qk_rope_head_dim = 64"});
  expect_error(with("num_experts_per_tok", 257), {"num_experts_per_tok", "257"});
  EXPECT_EQ(ModelConfig::from_json(with("num_experts_per_tok", 256).dump()).num_experts_per_tok, 256);
  // Both spellings of the rotary width given (official and HF): they must agree.
  expect_error(with("partial_rotary_factor", 0.25), {"partial_rotary_factor", "disagrees with qk_rope_head_dim = 64"});
  EXPECT_EQ(ModelConfig::from_json(with("partial_rotary_factor", 0.125).dump()).qk_rope_head_dim, 64);
  {
    json j = hf_form(json::parse(tiny_config_json()));
    j["compress_ratios"] = json::parse(tiny_config_json())["compress_ratios"];
    EXPECT_NO_THROW(ModelConfig::from_json(j.dump()));
    j["layer_types"][2] = j["layer_types"][2] == "sliding_attention" ? "heavily_compressed_attention" : "sliding_attention";
    expect_error(j, {"layer_types[2]", "disagrees with compress_ratios[2]"});
  }
  // Integers: out of range says so and gives the range, also past 64 bits (parsed as floats).
  for (const char* big : {"1e20", "99999999999999999999", "18446744073709551615", "-9223372036854775809", "300"}) {
    std::string text = good.dump();
    const std::string key = "\"num_hidden_layers\":43";
    text.replace(text.find(key), key.size(), std::string("\"num_hidden_layers\":") + big);
    try {
      ModelConfig::from_json(text);
      ADD_FAILURE() << big << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("num_hidden_layers"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("out of range: allowed [1, 256]"), std::string::npos) << e.what();
    }
  }
  expect_error(with("hidden_size", 4096.5), {"hidden_size", "4096.5", "expected an integer"});
  EXPECT_THROW(ModelConfig::from_json("{not json"), Error);
  EXPECT_THROW(ModelConfig::from_json("[1,2]"), Error);
  EXPECT_THROW(ModelConfig::from_json(std::string(100000, '[')), Error);  // nesting guard
}

// Re-released checkpoints (§15.3): compress_ratios with trailing draft-layer entries, and the
// HF-export form with one entry per main layer only; both run the released schedule.
TEST(Config, ReReleasedSchedules) {
  const ModelConfig flash = ModelConfig::from_json(flash_config_json());
  json j = json::parse(flash_config_json());
  j["compress_ratios"].push_back(0);
  j["compress_ratios"].push_back(0);  // Flash-0731: 46 entries, [..., 4, 0, 0, 0]
  const ModelConfig c = ModelConfig::from_json(j.dump());
  EXPECT_EQ(c.compress_ratios, flash.compress_ratios);
  ASSERT_EQ(c.mtp_layers.size(), 1u);
  EXPECT_EQ(c.mtp_layers[0].attention, AttentionType::kSliding);
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_NE(c.notes[0].find("compress_ratios: 2 trailing entries [0,0]"), std::string::npos) << c.notes[0];
  EXPECT_NE(c.notes[0].find("ignored"), std::string::npos) << c.notes[0];
  EXPECT_TRUE(flash.notes.empty());
  // Ignored entries must still be integers.
  json bad_tail = j;
  bad_tail["compress_ratios"][45] = "x";
  expect_error(bad_tail, {"compress_ratios[45]", "expected an integer"});

  json hf = json::parse(flash_config_json());
  hf["compress_ratios"].erase(43);  // transformers saves compress_ratios[:num_hidden_layers]
  const ModelConfig h = ModelConfig::from_json(hf.dump());
  EXPECT_EQ(h.compress_ratios, flash.compress_ratios);
  EXPECT_EQ(h.mtp_layers[0].attention, AttentionType::kSliding);

  // layer_types / mlp_layer_types with extra trailing entries, likewise.
  json t = hf_form(json::parse(tiny_config_json()));
  const ModelConfig t0 = ModelConfig::from_json(t.dump());
  t["layer_types"].push_back("sliding_attention");
  t["layer_types"].push_back("sliding_attention");
  t["mlp_layer_types"].push_back("moe");
  const ModelConfig t1 = ModelConfig::from_json(t.dump());
  EXPECT_EQ(t1.compress_ratios, t0.compress_ratios);
  EXPECT_EQ(t1.num_hash_layers, t0.num_hash_layers);
  EXPECT_EQ(t1.notes.size(), 2u);
}

// The keys transformers' DeepseekV4Config writes on save (V3 fields as null, router/training
// knobs, compress_rope_parameters, `dtype`) are accepted and change nothing.
TEST(Config, HfSavedKeysAccepted) {
  const ModelConfig flash = ModelConfig::from_json(flash_config_json());
  json j = json::parse(flash_config_json());
  for (const char* k : {"kv_lora_rank", "v_head_dim", "n_group", "topk_group", "first_k_dense_replace"}) j[k] = nullptr;
  j["qk_nope_head_dim"] = 448;
  j["rope_interleave"] = true;
  j["output_router_logits"] = false;
  j["router_aux_loss_coef"] = 0.001;
  j["router_jitter_noise"] = 0.0;
  j["attention_dropout"] = 0.0;
  j["partial_rotary_factor"] = 0.125;
  j["dtype"] = "bfloat16";
  j["compress_rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 160000.0}, {"factor", 16}};
  const ModelConfig c = ModelConfig::from_json(j.dump());
  EXPECT_EQ(c.compress_ratios, flash.compress_ratios);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_TRUE(c.notes.empty());
}

TEST(Config, DuplicateKeysAreNamed) {
  std::string text = json::parse(flash_config_json()).dump();
  text.insert(1, "\"hidden_size\": 4096, ");
  try {
    ModelConfig::from_json(text);
    ADD_FAILURE() << "accepted a duplicate key";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("key 'hidden_size' appears twice"), std::string::npos) << e.what();
  }
  std::string nested = json::parse(flash_config_json()).dump();
  const size_t q = nested.find("\"quantization_config\":{") + 23;
  nested.insert(q, "\"fmt\":\"e5m2\",");
  try {
    ModelConfig::from_json(nested);
    ADD_FAILURE() << "accepted a duplicate nested key";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("key 'quantization_config.fmt' appears twice"), std::string::npos) << e.what();
  }
}

// ModelOpt's module patterns (§11.6) against official and HF spellings.
TEST(Config, ModelOptPatterns) {
  EXPECT_TRUE(modelopt_pattern_matches("*.attn.*", "layers.3.attn.wq_a"));
  EXPECT_TRUE(modelopt_pattern_matches("*.attn.*", "layers.3.attn.indexer.compressor.wkv"));
  EXPECT_FALSE(modelopt_pattern_matches("*.attn.*", "layers.3.ffn.gate"));
  EXPECT_TRUE(modelopt_pattern_matches("lm_head", "head"));
  EXPECT_TRUE(modelopt_pattern_matches("head", "head"));
  EXPECT_TRUE(modelopt_pattern_matches("*self_attn*", "layers.0.attn.wkv"));
  EXPECT_TRUE(modelopt_pattern_matches("model.layers.0.mlp.experts", "layers.0.ffn.experts.3.w1"));
  EXPECT_TRUE(modelopt_pattern_matches("layers.0.mlp.experts.3.gate_proj", "layers.0.ffn.experts.3.w1"));
  EXPECT_TRUE(modelopt_pattern_matches("model.layers.1.self_attn.compressor.indexer.q_b_proj", "layers.1.attn.indexer.wq_b"));
  EXPECT_TRUE(modelopt_pattern_matches("layers.1", "layers.1.attn.wq_a"));  // a module contains its children
  EXPECT_FALSE(modelopt_pattern_matches("layers.1", "layers.10.attn.wq_a"));  // at a dot boundary only
  EXPECT_TRUE(modelopt_pattern_matches("layers.1*", "layers.10.attn.wq_a"));
  EXPECT_TRUE(modelopt_pattern_matches("mtp.*", "mtp.0.e_proj"));
  EXPECT_FALSE(modelopt_pattern_matches("layers.?.attn.wq_a", "layers.12.attn.wq_a"));
}

// fnmatch without classes, written the plain recursive way: '*' any run (dots included), '?' one
// character, everything else itself.
bool glob_reference(std::string_view p, std::string_view s) {
  if (p.empty()) return s.empty();
  if (p[0] == '*') return glob_reference(p.substr(1), s) || (!s.empty() && glob_reference(p, s.substr(1)));
  return !s.empty() && (p[0] == '?' || p[0] == s[0]) && glob_reference(p.substr(1), s.substr(1));
}

// The pattern rule on random names that have no HF spelling (so only the official one counts):
// the pattern matches the name or one of its prefixes that end before a dot. Fresh each run.
TEST(Config, ModelOptPatternsMatchTheReferenceGlob) {
  std::mt19937_64 rng(test::seed_for_this_test());
  auto draw = [&](const std::string& alphabet, size_t max_len) {
    std::string s;
    for (size_t n = rng() % (max_len + 1); n > 0; --n) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  int matched = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const std::string pattern = draw("ab.*?", 6), name = "x" + draw("ab.", 8);
    bool want = glob_reference(pattern, name);
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
      want = want || glob_reference(pattern, std::string_view(name).substr(0, dot));
    ASSERT_EQ(modelopt_pattern_matches(pattern, name), want) << "pattern '" << pattern << "', name '" << name << "'";
    matched += want;
  }
  EXPECT_GT(matched, 1000) << "too few matches to test anything";
}

// NVFP4 beyond the experts: quant_algo NVFP4 with an ignore list, and quantized_layers naming
// dense linears (HF or official names); the router only when named.
TEST(Config, Nvfp4BeyondExperts) {
  json all = json::parse(flash_config_json());
  all["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}, {"group_size", 16},
                                {"ignore", {"lm_head", "*.attn.wo_a", "mtp.*"}}};
  all.erase("expert_dtype");
  const ModelConfig a = ModelConfig::from_json(all.dump());
  EXPECT_FALSE(a.fp8_block);  // a ModelOpt export of a BF16 model: the rest is BF16
  EXPECT_EQ(a.expert_format, ExpertFormat::kNVFP4);
  EXPECT_TRUE(a.nvfp4.selects("layers.3.attn.wq_a", LinearRole::kLinear));
  EXPECT_TRUE(a.nvfp4.selects("layers.2.attn.compressor.wkv", LinearRole::kLinear));
  EXPECT_TRUE(a.nvfp4.selects("layers.2.ffn.shared_experts.w2", LinearRole::kLinear));
  EXPECT_FALSE(a.nvfp4.selects("layers.3.attn.wo_a", LinearRole::kLinear));
  EXPECT_FALSE(a.nvfp4.selects("head", LinearRole::kLinear));
  EXPECT_FALSE(a.nvfp4.selects("mtp.0.e_proj", LinearRole::kLinear));
  EXPECT_FALSE(a.nvfp4.selects("layers.3.ffn.gate", LinearRole::kRouter));  // not an nn.Linear

  json named = json::parse(flash_config_json());
  named["quantization_config"]["quant_algo"] = "MIXED_PRECISION";
  named["quantization_config"]["quantized_layers"] = {
      {"model.layers.2.self_attn.compressor.indexer.q_b_proj", {{"quant_algo", "NVFP4"}, {"group_size", 16}}},
      {"layers.*.attn.compressor.wkv", {{"quant_algo", "NVFP4"}}},
      {"layers.*.ffn.gate", {{"quant_algo", "NVFP4"}}}};
  const ModelConfig n = ModelConfig::from_json(named.dump());
  EXPECT_TRUE(n.fp8_block);
  EXPECT_EQ(n.expert_format, ExpertFormat::kMXFP4);  // expert_dtype fp4, experts not named
  EXPECT_TRUE(n.nvfp4.selects("layers.2.attn.indexer.wq_b", LinearRole::kLinear));
  EXPECT_FALSE(n.nvfp4.selects("layers.4.attn.indexer.wq_b", LinearRole::kLinear));
  EXPECT_TRUE(n.nvfp4.selects("layers.7.attn.compressor.wkv", LinearRole::kLinear));
  EXPECT_FALSE(n.nvfp4.selects("layers.7.attn.compressor.wgate", LinearRole::kLinear));
  EXPECT_TRUE(n.nvfp4.selects("layers.7.ffn.gate", LinearRole::kRouter));
  EXPECT_FALSE(n.nvfp4.selects("layers.7.attn.wq_a", LinearRole::kLinear));

  json fp8_entry = named;
  fp8_entry["quantization_config"]["quantized_layers"]["layers.0.attn.wq_a"] = {{"quant_algo", "FP8"}};
  expect_error(fp8_entry, {"quantized_layers.layers.0.attn.wq_a.quant_algo", "FP8", "only NVFP4"});
}

}  // namespace
}  // namespace dsv4
