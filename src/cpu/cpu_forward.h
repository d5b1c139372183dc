// The CPU backend: the executable specification of DeepSeek-V4 (architecture.md §2–§10, §12).
#pragma once

#include <filesystem>
#include <memory>

#include "model/forward.h"

namespace dsv4 {

struct CpuOptions {
  Numerics numerics = Numerics::kExact;
  int n_threads = 0;  // 0: hardware concurrency
  // KV accounting (model/forward.h KvCacheInfo); the CPU's memory grows with use, but a budget
  // here makes a scheduler wait and preempt exactly as on the GPU. 0: the defaults below.
  int64_t ctx_size = 0;         // longest sequence (default: the config's max_position_embeddings)
  int64_t max_sequences = 0;    // sequence slots (default kDefaultCpuSequences)
  int64_t kv_cache_tokens = 0;  // token positions in the block pool (default: unlimited in practice)
};
inline constexpr int64_t kDefaultCpuSequences = 256;

// Opens the checkpoint folder, validates it against its config and binds the weights (mmapped,
// expanded block by block on use). Throws dsv4::Error for bad input.
std::unique_ptr<Forward> make_cpu_forward(const std::filesystem::path& model_dir,
                                          const CpuOptions& options);

}  // namespace dsv4
