// CpuModel: what one loaded CPU backend holds — config, mapped checkpoint, bound weight views,
// the two RoPE tables, the numerics points and the thread pool. The forward loop is
// cpu_forward.cpp's, the MTP block's mtp.cpp's, the per-sequence state sequence_state.h's.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "cpu/attention.h"
#include "cpu/context.h"
#include "cpu/cpu_forward.h"
#include "cpu/rope.h"
#include "cpu/sequence_state.h"
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

}  // namespace dsv4
