// CpuModel: what one loaded CPU backend holds — config, mapped checkpoint, bound weight views,
// the two RoPE tables, the numerics points and the thread pool — plus the CPU sequence state.
// The forward loop is cpu_forward.cpp's; the MTP block's is mtp.cpp's.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "cpu/attention.h"
#include "cpu/context.h"
#include "cpu/cpu_forward.h"
#include "cpu/rope.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace dsv4 {

struct CpuModel {
  ModelConfig cfg;
  Checkpoint ckpt;  // owns the mappings every WeightMatrix points into
  ModelWeights weights;
  RopeTable rope_main, rope_compress;  // §4.4: ratio-0 layers and MTP / ratio-4 and 128 layers
  NumericsPoints numerics;
  std::unique_ptr<ThreadPool> pool;

  const RopeTable& rope_for(const LayerSpec& spec) const {
    return spec.compress_rope ? rope_compress : rope_main;
  }
  CpuContext context(const TraceHook* trace) const {
    return CpuContext{cfg, numerics, *pool, trace};
  }
};

std::unique_ptr<CpuModel> load_cpu_model(const std::filesystem::path& model_dir,
                                         const CpuOptions& options);

// Per-sequence state (§5.5, §13): one AttentionState per main layer and per MTP block.
class CpuSequenceState final : public SequenceState {
 public:
  CpuSequenceState(const ModelConfig& cfg, int64_t max_tokens);
  int64_t position() const override { return position_; }
  void reset() override;

  int64_t max_tokens() const { return max_tokens_; }
  void advance(int64_t n) { position_ += n; }
  std::vector<AttentionState> layers;
  std::vector<AttentionState> mtp;  // the MTP block's window (its own positions, §10)
  int64_t mtp_position = 0;

 private:
  int64_t position_ = 0;
  int64_t max_tokens_ = 0;
};

}  // namespace dsv4
