// The CPU backend: the executable specification of DeepSeek-V4 (architecture.md §2–§10, §12).
#pragma once

#include <filesystem>
#include <memory>

#include "model/forward.h"

namespace dsv4 {

struct CpuOptions {
  Numerics numerics = Numerics::kExact;
  int n_threads = 0;  // 0: hardware concurrency
};

// Opens the checkpoint folder, validates it against its config and binds the weights (mmapped,
// expanded block by block on use). Throws dsv4::Error for bad input.
std::unique_ptr<Forward> make_cpu_forward(const std::filesystem::path& model_dir,
                                          const CpuOptions& options);

}  // namespace dsv4
