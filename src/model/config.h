// ModelConfig: config.json in the official form and the HF-transformers form, validated, plus the
// per-layer schedule derived from it (architecture.md §1). Knows nothing about backends.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "model/modelopt.h"

namespace dsv4 {

enum class AttentionType { kSliding, kCSA, kHCA };  // compress ratio 0 / 4 / 128 (§1.2)
constexpr int kCsaRatio = 4;    // §1.2: CSA compresses 4 tokens per entry (overlapping windows)
constexpr int kHcaRatio = 128;  // §1.2: HCA compresses 128 tokens per entry
// §5: compressor windows overlap only at m = 4 (CSA), so its projections carry coff = 2 halves.
constexpr int64_t compressor_overlap(int64_t ratio) { return ratio == kCsaRatio ? 2 : 1; }
enum class RoutingType { kHash, kScore };            // tid2eid lookup / biased top-k (§8.1)
enum class ExpertFormat { kBF16, kFP8Block, kMXFP4, kNVFP4 };  // routed experts on disk (§11)

const char* to_string(AttentionType t);
const char* to_string(RoutingType t);
const char* to_string(ExpertFormat f);

// One RoPE frequency table (§4.4). YaRN without magnitude scaling when `yarn` is set.
struct RopeParams {
  double theta = 10000.0;
  bool yarn = false;
  double factor = 1.0;
  int64_t original_max_position = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

struct LayerSpec {
  AttentionType attention = AttentionType::kSliding;
  int compress_ratio = 0;  // 0, 4 or 128
  RoutingType routing = RoutingType::kScore;
  bool compress_rope = false;  // true: rope_compress table (ratio 4/128), false: rope_main
};

struct ModelConfig {
  std::string model_type;  // "deepseek_v4"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;           // D
  int64_t num_hidden_layers = 0;     // L (main layers, MTP not included)
  int64_t num_attention_heads = 0;   // H
  int64_t head_dim = 0;              // d (q heads and the single K=V head)
  int64_t qk_rope_head_dim = 0;      // r (rope on the LAST r dims)
  int64_t q_lora_rank = 0;           // Q
  int64_t o_groups = 0;              // G
  int64_t o_lora_rank = 0;           // R
  int64_t sliding_window = 0;        // W
  int64_t index_n_heads = 0;         // Hi
  int64_t index_head_dim = 0;        // di
  int64_t index_topk = 0;            // K_top
  int64_t n_routed_experts = 0;      // E
  int64_t n_shared_experts = 0;      // must be 1
  int64_t num_experts_per_tok = 0;   // k
  int64_t moe_intermediate_size = 0; // I
  int64_t num_hash_layers = 0;
  double routed_scaling_factor = 1.0;
  double swiglu_limit = 0.0;
  int64_t hc_mult = 0;               // n
  int64_t hc_sinkhorn_iters = 0;
  double hc_eps = 1e-6;
  double rms_norm_eps = 1e-6;
  int64_t num_nextn_predict_layers = 0;
  int64_t max_position_embeddings = 0;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  bool tie_word_embeddings = false;

  RopeParams rope_main;      // θ = rope_theta, no YaRN (ratio-0 layers and MTP)
  RopeParams rope_compress;  // θ = compress_rope_theta with YaRN (ratio-4/128 layers)

  // Weight formats. fp8_block: attention/shared-expert linears are E4M3 with 128×128 scales
  // (quantization_config with the FP8 keys). expert_format: routed experts (NVFP4 when any layer's
  // are). nvfp4: which linears a ModelOpt re-quantisation stores as NVFP4 (§11.6, modelopt.h);
  // weights.cpp resolves every linear's format from these.
  bool fp8_block = false;
  bool fp8_scale_e8m0 = true;  // scale_fmt ue8m0 (else F32 scales, as some Base exports)
  ExpertFormat expert_format = ExpertFormat::kBF16;
  Nvfp4Selection nvfp4;

  std::vector<int> compress_ratios;  // L entries for main layers (+ MTP entries stored apart)
  std::vector<LayerSpec> layers;     // L main layers
  std::vector<LayerSpec> mtp_layers; // num_nextn_predict_layers blocks

  // What parsing accepted but does not use, one sentence each (e.g. the trailing draft-layer
  // entries of a re-release's compress_ratios, §15.3), for `inspect` to report.
  std::vector<std::string> notes;

  // Parse + validate. Errors (dsv4::Error) name the field and the value.
  static ModelConfig from_json(std::string_view json_text);
  static ModelConfig load(const std::filesystem::path& model_dir);  // reads model_dir/config.json

  // Derived sizes.
  int64_t heads_per_group() const { return num_attention_heads / o_groups; }
  int64_t nope_dim() const { return head_dim - qk_rope_head_dim; }
  int64_t hc_dim() const { return hc_mult * hidden_size; }              // n·D
  int64_t hc_mix_dim() const { return (2 + hc_mult) * hc_mult; }        // (2+n)·n = 24
  const RopeParams& rope_for(const LayerSpec& l) const { return l.compress_rope ? rope_compress : rope_main; }
};

}  // namespace dsv4
