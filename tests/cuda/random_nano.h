// nano's shapes with another quantisation and fresh random weights (make-skeleton --random): the
// CUDA tests of NVIDIA's NVFP4 re-quantisations (§11.6), which no trained checkpoint here has.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "model/skeleton.h"
#include "support/scratch_dir.h"

namespace dsv4::test {

// The routed experts in NVFP4 (E2M1, E4M3 per-16 scales, an F32 global scale), everything else FP8.
inline nlohmann::json nvfp4_experts_quantization() {
  return {{"quant_method", "modelopt"}, {"quant_algo", "MIXED_PRECISION"},
          {"moe_quant_algo", "NVFP4"},  {"group_size", 16},
          {"fmt", "e4m3"},              {"scale_fmt", "ue8m0"},
          {"activation_scheme", "dynamic"}, {"weight_block_size", {128, 128}}};
}

// Writes nano's config with `quantization` as its quantization_config, and random weights from
// `seed`, into a fresh temporary folder named after `tag`, removed with the returned ScratchDir.
inline ScratchDir write_random_nano(const std::string& tag, const nlohmann::json& quantization, uint64_t seed) {
  std::ifstream f(std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano/config.json");
  nlohmann::json cfg = nlohmann::json::parse(f);
  cfg["quantization_config"] = quantization;
  cfg.erase("expert_dtype");
  ScratchDir dir("dsv4-" + tag + "-");
  SkeletonOptions so;
  so.random_seed = seed;
  write_skeleton(dir.path(), cfg.dump(), so);
  return dir;
}

}  // namespace dsv4::test
