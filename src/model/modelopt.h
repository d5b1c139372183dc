// NVIDIA ModelOpt re-quantisations (architecture.md §11.6): which linears a quantization_config
// declares as NVFP4 — every routed expert (moe_quant_algo), the modules quantized_layers names, or
// every linear but those `ignore` lists (quant_algo NVFP4) — and the pattern matching behind it.
// Parsing the config is config.cpp's; which tensors each format implies is weights.cpp's.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

// What a linear is in the reference model, which decides whether "every linear" covers it.
enum class LinearRole {
  kLinear,        // an nn.Linear of the reference (attention, compressor, indexer, experts, head, MTP)
  kRoutedExpert,  // one routed expert's w1/w2/w3 (also covered by moe_quant_algo)
  kRouter,        // ffn.gate: a bare weight in the reference, so NVFP4 only when named explicitly
};

struct Nvfp4Selection {
  bool all_linears = false;           // quant_algo NVFP4: every kLinear / kRoutedExpert not excluded
  bool routed_experts = false;        // moe_quant_algo NVFP4
  std::vector<std::string> included;  // quantized_layers keys with quant_algo NVFP4
  std::vector<std::string> excluded;  // ignore / ignored_layers / exclude_modules

  bool any() const { return all_linears || routed_experts || !included.empty(); }
  // Whether the linear `module` ("layers.3.attn.wq_a", "head", "layers.0.ffn.experts.5.w1":
  // official names, without ".weight") is NVFP4 under these rules.
  bool selects(std::string_view module, LinearRole role) const;
};

// ModelOpt's module patterns: `pattern` ('*' any run of characters, '?' one) matches the module
// when it matches the whole name, or a module that contains it ("layers.0.ffn.experts" covers
// "layers.0.ffn.experts.5.w1"), in the official spelling or the HF one
// ("model.layers.3.self_attn.q_a_proj", also without "model.", §11.4).
bool modelopt_pattern_matches(std::string_view pattern, std::string_view official_module);

}  // namespace dsv4
