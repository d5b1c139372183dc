// Tensor-name mapping between the official upstream names (canonical in dsv4) and the
// HF-transformers names (architecture.md §11.4). Splitting HF's fused expert tensors into per-expert
// views is checkpoint.cpp's job; this file only rewrites strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dsv4 {

// True for names in the HF layout ("model.…" or "lm_head.…").
bool is_hf_name(std::string_view name);

// HF name → official name; nullopt when the name has no official counterpart. The fused expert
// tensors map to "layers.{l}.ffn.experts.gate_up_proj" / ".down_proj" (split by the caller).
// FP8 scale spelling ".weight_scale_inv" becomes ".scale". Also accepts what transformers'
// save_pretrained writes: "model.layers.{l}." + official layer-local names (attn.kv_norm spelled
// attn.norm). Unknown layer-local names come back as "layers.{l}.<rest>" (reported unexpected).
std::optional<std::string> hf_to_official(std::string_view hf);

// Official name → HF name (for writing HF-layout fixtures and for tests); nullopt for names HF
// does not have (mtp.*, per-expert routed weights, which HF fuses).
std::optional<std::string> official_to_hf(std::string_view official);

// HF name of an official module (no ".weight" leaf): "layers.3.attn.wq_a" →
// "model.layers.3.self_attn.q_a_proj", "head" → "lm_head", and per-expert routed weights
// "layers.0.ffn.experts.5.w1" → "model.layers.0.mlp.experts.5.gate_proj" (the unfused names of
// ModelOpt's exports). nullopt for modules HF does not have (mtp.*).
std::optional<std::string> hf_module_name(std::string_view official_module);

// Official spelling alternatives: "<x>.weight_scale_inv" (the converter's input spelling,
// §11.2) → "<x>.scale". Other names pass through.
std::string canonical_official_name(std::string_view name);

}  // namespace dsv4
