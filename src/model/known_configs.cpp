// The §1.1 / §15.1 values written out as config.json text (official key names).
#include "model/known_configs.h"

#include "util/error.h"

namespace dsv4 {

namespace {

std::string ratios_json(int L, bool pro) {
  // §1.2: Flash [0, 0, 4, 128, ..., 4, 0]; Pro [128, 128, 4, 128, ..., 4, 0]; last = MTP.
  std::string s = "[";
  for (int l = 0; l < L; ++l) {
    const int r = l < 2 ? (pro ? 128 : 0) : (l % 2 == 0 ? 4 : 128);
    s += std::to_string(r) + ", ";
  }
  return s + "0]";
}

std::string release_config(bool pro) {
  const int L = pro ? 61 : 43;
  return cat(R"({
  "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
  "vocab_size": 129280, "hidden_size": )", pro ? 7168 : 4096, R"(, "num_hidden_layers": )", L, R"(,
  "num_attention_heads": )", pro ? 128 : 64, R"(, "num_key_value_heads": 1, "head_dim": 512,
  "qk_rope_head_dim": 64, "q_lora_rank": )", pro ? 1536 : 1024, R"(, "o_groups": )", pro ? 16 : 8, R"(,
  "o_lora_rank": 1024, "sliding_window": 128, "rope_theta": 10000, "compress_rope_theta": 160000,
  "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                   "beta_fast": 32, "beta_slow": 1},
  "max_position_embeddings": 1048576, "compress_ratios": )", ratios_json(L, pro), R"(,
  "index_n_heads": 64, "index_head_dim": 128, "index_topk": )", pro ? 1024 : 512, R"(,
  "n_routed_experts": )", pro ? 384 : 256, R"(, "n_shared_experts": 1, "num_experts_per_tok": 6,
  "moe_intermediate_size": )", pro ? 3072 : 2048, R"(, "num_hash_layers": 3,
  "scoring_func": "sqrtsoftplus", "topk_method": "noaux_tc", "norm_topk_prob": true,
  "routed_scaling_factor": )", pro ? "2.5" : "1.5", R"(, "swiglu_limit": 10.0, "hidden_act": "silu",
  "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-06, "rms_norm_eps": 1e-06,
  "num_nextn_predict_layers": 1, "bos_token_id": 0, "eos_token_id": 1,
  "tie_word_embeddings": false, "attention_bias": false, "torch_dtype": "bfloat16",
  "initializer_range": 0.02, "expert_dtype": "fp4",
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                          "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
})");
}

}  // namespace

std::string flash_config_json() { return release_config(false); }
std::string pro_config_json() { return release_config(true); }

std::string tiny_config_json() {
  return R"({
  "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
  "vocab_size": 129280, "hidden_size": 256, "num_hidden_layers": 6,
  "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 128, "qk_rope_head_dim": 64,
  "q_lora_rank": 128, "o_groups": 2, "o_lora_rank": 64,
  "sliding_window": 128, "compress_ratios": [0, 4, 128, 0, 4, 128, 0],
  "rope_theta": 10000, "compress_rope_theta": 160000,
  "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                   "beta_fast": 32, "beta_slow": 1},
  "max_position_embeddings": 1048576,
  "index_n_heads": 4, "index_head_dim": 128, "index_topk": 16,
  "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 6,
  "moe_intermediate_size": 128, "num_hash_layers": 3,
  "scoring_func": "sqrtsoftplus", "topk_method": "noaux_tc", "norm_topk_prob": true,
  "routed_scaling_factor": 1.5, "swiglu_limit": 10.0, "hidden_act": "silu",
  "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-06, "rms_norm_eps": 1e-06,
  "num_nextn_predict_layers": 1, "bos_token_id": 0, "eos_token_id": 1,
  "tie_word_embeddings": false, "attention_bias": false, "torch_dtype": "bfloat16",
  "expert_dtype": "fp4",
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                          "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
})";
}

}  // namespace dsv4
