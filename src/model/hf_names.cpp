// The §11.4 rename table, applied in both directions. Fused-expert splitting is in checkpoint.cpp.
#include "model/hf_names.h"

#include <cctype>
#include <utility>

namespace dsv4 {

namespace {

struct Pair {
  const char* official;
  const char* hf;
};

// Modules (a ".weight" / ".scale" leaf follows), relative to "layers.{l}." (official) and
// "model.layers.{l}." (HF). Longest official prefixes are listed first where they nest.
constexpr Pair kLayerModules[] = {
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
    {"attn.indexer.compressor.wkv", "self_attn.compressor.indexer.kv_proj"},
    {"attn.indexer.compressor.wgate", "self_attn.compressor.indexer.gate_proj"},
    {"attn.indexer.compressor.norm", "self_attn.compressor.indexer.kv_norm"},
    {"attn.indexer.wq_b", "self_attn.compressor.indexer.q_b_proj"},
    {"attn.indexer.weights_proj", "self_attn.compressor.indexer.scorer.weights_proj"},
    {"attn.compressor.wkv", "self_attn.compressor.kv_proj"},
    {"attn.compressor.wgate", "self_attn.compressor.gate_proj"},
    {"attn.compressor.norm", "self_attn.compressor.kv_norm"},
    {"attn.wq_a", "self_attn.q_a_proj"},
    {"attn.q_norm", "self_attn.q_a_norm"},
    {"attn.wq_b", "self_attn.q_b_proj"},
    {"attn.wkv", "self_attn.kv_proj"},
    {"attn.kv_norm", "self_attn.kv_norm"},
    {"attn.wo_a", "self_attn.o_a_proj"},
    {"attn.wo_b", "self_attn.o_b_proj"},
    {"ffn.gate", "mlp.gate"},
    {"ffn.shared_experts.w1", "mlp.shared_experts.gate_proj"},
    {"ffn.shared_experts.w2", "mlp.shared_experts.down_proj"},
    {"ffn.shared_experts.w3", "mlp.shared_experts.up_proj"},
};

// Whole parameter names (no leaf), relative to the layer prefix.
constexpr Pair kLayerParams[] = {
    {"hc_attn_fn", "attn_hc.fn"},
    {"hc_attn_base", "attn_hc.base"},
    {"hc_attn_scale", "attn_hc.scale"},
    {"hc_ffn_fn", "ffn_hc.fn"},
    {"hc_ffn_base", "ffn_hc.base"},
    {"hc_ffn_scale", "ffn_hc.scale"},
    {"attn.attn_sink", "self_attn.sinks"},
    {"attn.compressor.ape", "self_attn.compressor.position_bias"},
    {"attn.indexer.compressor.ape", "self_attn.compressor.indexer.position_bias"},
    {"ffn.gate.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn.gate.tid2eid", "mlp.gate.tid2eid"},
    {"ffn.experts.gate_up_proj", "mlp.experts.gate_up_proj"},  // fused [E, 2I, D]
    {"ffn.experts.down_proj", "mlp.experts.down_proj"},        // fused [E, D, I]
};

constexpr Pair kGlobals[] = {
    {"embed.weight", "model.embed_tokens.weight"},
    {"head.weight", "lm_head.weight"},
    {"norm.weight", "model.norm.weight"},
    {"hc_head_fn", "model.hc_head.hc_fn"},
    {"hc_head_base", "model.hc_head.hc_base"},
    {"hc_head_scale", "model.hc_head.hc_scale"},
};

// Per-expert (unfused) routed weights: official w1/w2/w3 ↔ HF gate_proj/down_proj/up_proj.
constexpr Pair kExpertProj[] = {{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Splits "<prefix><digits>.<rest>"; false when the shape does not match.
bool split_index(std::string_view s, std::string_view prefix, std::string* idx, std::string_view* rest) {
  if (!starts_with(s, prefix)) return false;
  size_t i = prefix.size();
  const size_t b = i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == b || i >= s.size() || s[i] != '.') return false;
  *idx = std::string(s.substr(b, i - b));
  *rest = s.substr(i + 1);
  return true;
}

// Maps a layer-local name with `from` → `to` columns of the tables. `hf_dir` selects direction.
std::optional<std::string> map_local(std::string_view local, bool to_official) {
  auto src = [&](const Pair& p) { return std::string_view(to_official ? p.hf : p.official); };
  auto dst = [&](const Pair& p) { return std::string(to_official ? p.official : p.hf); };
  for (const auto& p : kLayerParams)
    if (local == src(p)) return dst(p);
  for (const auto& p : kLayerModules) {
    const std::string_view s = src(p);
    if (!starts_with(local, s) || local.size() <= s.size() || local[s.size()] != '.') continue;
    const std::string_view leaf = local.substr(s.size() + 1);
    if (leaf == "weight") return dst(p) + ".weight";
    if (to_official && (leaf == "weight_scale_inv" || leaf == "scale")) return dst(p) + ".scale";
    if (!to_official && leaf == "scale") return dst(p) + ".weight_scale_inv";
    // §11.6: ModelOpt's NVFP4 tensors keep their leaf names in both layouts.
    if (leaf == "weight_scale" || leaf == "weight_scale_2" || leaf == "input_scale") return dst(p) + "." + std::string(leaf);
    return std::nullopt;
  }
  // Routed experts, per expert.
  const std::string_view ex_prefix = to_official ? "mlp.experts." : "ffn.experts.";
  std::string e;
  std::string_view rest;
  if (split_index(local, ex_prefix, &e, &rest)) {
    for (const auto& p : kExpertProj) {
      const std::string_view s = to_official ? p.hf : p.official;
      if (!starts_with(rest, s) || rest.size() <= s.size() || rest[s.size()] != '.') continue;
      std::string_view leaf = rest.substr(s.size() + 1);
      std::string out_leaf(leaf);
      if (to_official && leaf == "weight_scale_inv") out_leaf = "scale";
      else if (!to_official && leaf == "scale") out_leaf = "weight_scale_inv";
      return std::string(to_official ? "ffn.experts." : "mlp.experts.") + e + "." +
             (to_official ? p.official : p.hf) + "." + out_leaf;
    }
  }
  return std::nullopt;
}

}  // namespace

bool is_hf_name(std::string_view name) {
  return starts_with(name, "model.") || starts_with(name, "lm_head.");
}

std::optional<std::string> hf_to_official(std::string_view hf) {
  for (const auto& p : kGlobals)
    if (hf == p.hf) return std::string(p.official);
  std::string l;
  std::string_view rest;
  if (!split_index(hf, "model.layers.", &l, &rest)) return std::nullopt;
  if (auto local = map_local(rest, /*to_official=*/true)) return "layers." + l + "." + *local;
  // transformers' save_pretrained (5.x) reverses its load-time renames but keeps the "model."
  // prefix, and its reversed ".norm." → ".kv_norm." rule turns attn.kv_norm into attn.norm
  // (checked on a model saved by transformers 5.24). Layer-local names are otherwise official.
  if (rest == "attn.norm.weight") return "layers." + l + ".attn.kv_norm.weight";
  return "layers." + l + "." + canonical_official_name(rest);
}

std::optional<std::string> official_to_hf(std::string_view official) {
  for (const auto& p : kGlobals)
    if (official == p.official) return std::string(p.hf);
  std::string l;
  std::string_view rest;
  if (!split_index(official, "layers.", &l, &rest)) return std::nullopt;
  // Per-expert routed weights are fused in HF files; they have no per-expert HF name here.
  std::string e;
  std::string_view erest;
  if (split_index(rest, "ffn.experts.", &e, &erest)) return std::nullopt;
  auto local = map_local(rest, /*to_official=*/false);
  if (!local) return std::nullopt;
  return "model.layers." + l + "." + *local;
}

std::optional<std::string> hf_module_name(std::string_view official_module) {
  const std::string weight = std::string(official_module) + ".weight";
  std::optional<std::string> hf = official_to_hf(weight);
  std::string l;
  std::string_view rest;
  if (!hf && split_index(weight, "layers.", &l, &rest))  // per-expert names (ModelOpt's exports)
    if (auto local = map_local(rest, /*to_official=*/false)) hf = "model.layers." + l + "." + *local;
  if (!hf) return std::nullopt;
  hf->resize(hf->size() - 7);  // ".weight"
  return hf;
}

std::string canonical_official_name(std::string_view name) {
  constexpr std::string_view kInv = ".weight_scale_inv";
  if (name.size() > kInv.size() && name.substr(name.size() - kInv.size()) == kInv)
    return std::string(name.substr(0, name.size() - kInv.size())) + ".scale";
  return std::string(name);
}

}  // namespace dsv4
