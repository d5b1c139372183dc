// Where a forward pass first produces a non-finite value, for the errors about non-finite logits
// or losses: the tokens are replayed on a fresh sequence with a trace hook (model/forward.h
// TraceHook) that finds the first named intermediate holding a NaN or an infinity.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "model/forward.h"
#include "util/error.h"

namespace dsv4::cli {

// "layer 1's attn.kv (position 17)", "the model output's logits (position 3)", or nullopt when
// the replay stays finite or cannot run (no free sequence slot, memory). `chunk`: tokens per
// forward call, as the failing run fed them.
std::optional<std::string> locate_nonfinite(Forward& f, std::span<const int32_t> tokens, int64_t chunk);

// Error `message` + ": the first non-finite value appears in <where>" when the replay finds it,
// else `message` alone.
[[noreturn]] void fail_with_nonfinite_origin(const std::string& message, Forward& f,
                                             std::span<const int32_t> tokens, int64_t chunk);

}  // namespace dsv4::cli
