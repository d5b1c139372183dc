// Full-size checkpoint skeletons: config.json + index + shards whose headers list every tensor the
// config implies (official names, shapes, dtypes) while the data regions are sparse holes, or
// (random mode) filled with valid random values streamed chunk by chunk. Used by
// `dsv4 make-skeleton`, the inspect tests and the CUDA-vs-CPU checks on Flash-shaped stacks.
// The layout itself comes from weights.cpp; the number formats from model/quant.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace dsv4 {

struct SkeletonOptions {
  int64_t n_shards = 0;         // 0: as many as needed for ~kSkeletonShardBytes each
  bool hf_names = false;        // HF-transformers layout (§11.4): fused experts, no mtp.*
  bool with_index = true;       // false: loose *.safetensors only
  // Set: every tensor gets deterministic random values for this seed (see skeleton.cpp's header
  // comment for the distributions); unset: data regions stay sparse holes.
  std::optional<uint64_t> random_seed = std::nullopt;
  // Random mode only: called after each written chunk with (bytes written, bytes in total).
  std::function<void(uint64_t done, uint64_t total)> progress = nullptr;
};

struct SkeletonResult {
  int64_t n_shards = 0;
  int64_t n_tensors = 0;
  uint64_t total_bytes = 0;  // size of all shards (apparent size when sparse)
};

// Writes `config_json` (validated with ModelConfig::from_json) and the shards into `dir`
// (created if missing). Throws dsv4::Error on bad config or I/O failure.
SkeletonResult write_skeleton(const std::filesystem::path& dir, const std::string& config_json,
                              const SkeletonOptions& opt = {});

struct ModelConfig;

// The values random mode writes, produced in memory tensor by tensor instead of read from shards:
// fill(name) gives exactly the bytes `make-skeleton --random SEED` writes for that tensor of the
// official layout (each tensor's stream depends only on the seed and its name). A sparse
// skeleton plus this is a full-size random checkpoint that needs no disk (synthetic weights).
class RandomTensors {
 public:
  RandomTensors(const ModelConfig& cfg, uint64_t seed);
  ~RandomTensors();
  RandomTensors(const RandomTensors&) = delete;
  RandomTensors& operator=(const RandomTensors&) = delete;
  // Bytes of tensor `name` (its dtype and shape); Error when the layout has no such tensor.
  uint64_t bytes(const std::string& name) const;
  // Writes them to dst (n_bytes must equal bytes(name)). Const and re-entrant: threads may fill
  // different tensors at once.
  void fill(const std::string& name, uint8_t* dst, uint64_t n_bytes) const;

 private:
  struct Tables;
  std::unique_ptr<ModelConfig> cfg_;
  uint64_t seed_;
  std::unique_ptr<Tables> tables_;
};

// Edits of a config for smaller stacks of the same shape (each 0 / -1 = keep). `layers` keeps the
// first N main layers: compress_ratios keeps its first N entries plus the MTP tail (§1.2),
// layer_types / mlp_layer_types their first N, num_hash_layers is capped at N. `mtp` keeps the
// first M of the num_nextn_predict_layers MTP blocks (§10). `vocab` sets vocab_size.
struct ConfigOverrides {
  int64_t layers = 0;
  int64_t mtp = -1;
  int64_t vocab = 0;
};
// Returns the edited config.json text; Error naming the option when a value is out of range.
std::string override_config(const std::string& config_json, const ConfigOverrides& o);

}  // namespace dsv4
