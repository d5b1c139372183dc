// CpuContext: what every CPU block needs besides its weights — config, numerics mode, thread pool,
// optional trace hook. The blocks themselves live one per file (mhc, attention, moe, ...).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/forward.h"
#include "util/float_formats.h"
#include "util/thread_pool.h"

namespace dsv4 {

// The quantisation points of design.md "Numerics" / architecture.md §12, all off in exact mode.
struct NumericsPoints {
  bool act_fp8 = false;          // FP8 1×128 activations in front of the §12 FP8/FP4 linears
  bool kv_fp8 = false;           // FP8 1×64 round-trip of the KV NoPE dims (window + compressed)
  bool indexer_fp4 = false;      // Hadamard + FP4 1×32 round-trip of indexer q and keys (§6)
  bool route_before_w2 = false;  // routing weight applied to h before w2 (§8.2)
  bool bf16_act = false;         // official-bf16: activations stored as BF16 between ops (§12)
  static NumericsPoints from(Numerics n) {
    const bool o = n != Numerics::kExact;
    return {o, o, o, o, n == Numerics::kOfficialBf16};
  }
};

struct CpuContext {
  const ModelConfig& cfg;
  NumericsPoints numerics;
  ThreadPool& pool;
  const TraceHook* trace = nullptr;

  // Official-bf16: x[n] ← round_bf16(x) (nearest even), at each point where the reference stores
  // an activation as BF16 (design.md "Numerics"); a no-op in the other modes.
  void bf16(float* x /* [n] */, int64_t n) const {
    if (!numerics.bf16_act) return;
    for (int64_t i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
  }

  // Hands a named intermediate to the trace hook (no-op without one).
  void emit(const std::string& name, int layer, const float* data,
            std::initializer_list<int64_t> shape) const {
    if (!trace || !*trace) return;
    const std::vector<int64_t> s(shape);
    (*trace)(name, layer, data, s);
  }
};

}  // namespace dsv4
