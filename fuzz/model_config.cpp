// libFuzzer target: config.json parsing and validation (model/config.cpp), plus the tensor layout
// derived from configs it accepts (model/weights.cpp). Only dsv4::Error may come out. Seeds include
// the variants of issue 10: re-released schedules, transformers-saved keys, NVFP4 beyond the
// experts, a duplicated nested key, an integer past 64 bits.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "model/config.h"
#include "model/weights.h"
#include "util/error.h"

// Deriving the layout of a 256-layer, 1024-expert config takes ~1 s; inputs that large are
// valid but only slow the fuzzer down, so the layout step is skipped for them.
constexpr int64_t kMaxFuzzLayoutExperts = 1 << 14;  // L · E

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto cfg = dsv4::ModelConfig::from_json(std::string_view(reinterpret_cast<const char*>(data), size));
    if (int64_t(cfg.layers.size()) != cfg.num_hidden_layers) __builtin_trap();
    if (cfg.num_hidden_layers * cfg.n_routed_experts <= kMaxFuzzLayoutExperts) {
      const auto expected = dsv4::expected_tensors(cfg);
      if (expected.empty()) __builtin_trap();
    }
  } catch (const dsv4::Error&) {
  }
  return 0;
}
