// Full-size checkpoint skeletons: config.json + index + shards whose headers list every tensor the
// config implies (official names, shapes, dtypes) while the data regions are sparse holes. Used by
// `dsv4 make-skeleton` and the inspect tests. The layout itself comes from weights.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace dsv4 {

struct SkeletonOptions {
  int64_t n_shards = 0;         // 0: as many as needed for ~kSkeletonShardBytes each
  bool hf_names = false;        // HF-transformers layout (§11.4): fused experts, no mtp.*
  bool with_index = true;       // false: loose *.safetensors only
};

struct SkeletonResult {
  int64_t n_shards = 0;
  int64_t n_tensors = 0;
  uint64_t total_bytes = 0;  // apparent size of all shards (no disk blocks are used for data)
};

// Writes `config_json` (validated with ModelConfig::from_json) and the shards into `dir`
// (created if missing). Throws dsv4::Error on bad config or I/O failure.
SkeletonResult write_skeleton(const std::filesystem::path& dir, const std::string& config_json,
                              const SkeletonOptions& opt = {});

}  // namespace dsv4
