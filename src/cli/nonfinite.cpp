// locate_nonfinite (nonfinite.h): the replay stops feeding chunks once a non-finite value was
// seen; within a chunk the pass runs to its end (the hook cannot stop a backend mid-pass).
#include "cli/nonfinite.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsv4::cli {

std::optional<std::string> locate_nonfinite(Forward& f, std::span<const int32_t> tokens, int64_t chunk) {
  if (tokens.empty() || chunk < 1) return std::nullopt;
  std::optional<std::string> where;
  int64_t pos0 = 0, n = 0;  // the chunk being fed
  const TraceHook hook = [&](std::string_view name, int layer, const float* data, std::span<const int64_t> shape) {
    if (where) return;
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const float* bad = std::find_if(data, data + numel, [](float v) { return !std::isfinite(v); });
    if (bad == data + numel) return;
    const int64_t rows = shape.empty() ? 1 : shape[0];
    const int64_t row = rows > 0 ? (bad - data) / std::max<int64_t>(1, numel / rows) : 0;
    // Per-token tensors have one row per token of the pass; the logits only the last one (the
    // replay asks for no more); others (compressed entries) are rows of their own.
    const std::string at = rows == n                       ? cat("position ", pos0 + row)
                           : name == "logits" && rows == 1 ? cat("position ", pos0 + n - 1)
                                                           : cat("row ", row, " of ", rows);
    where = layer >= 0 ? cat("layer ", layer, "'s ", name, " (", at, ")")
                       : cat("the model output's ", name, " (", at, ")");
  };
  try {
    auto seq = f.new_sequence(int64_t(tokens.size()));
    std::vector<float> logits;
    for (; pos0 < int64_t(tokens.size()) && !where; pos0 += n) {
      n = std::min<int64_t>(chunk, int64_t(tokens.size()) - pos0);
      ForwardItem item{seq.get(), tokens.subspan(size_t(pos0), size_t(n)), false, &logits};
      f.forward(std::span<ForwardItem>(&item, 1), &hook);
    }
  } catch (const Error&) {
    return where;  // what was found before the replay failed, if anything
  }
  return where;
}

void fail_with_nonfinite_origin(const std::string& message, Forward& f, std::span<const int32_t> tokens,
                                int64_t chunk) {
  if (auto where = locate_nonfinite(f, tokens, chunk))
    fail(message, ": the first non-finite value appears in ", *where);
  fail(message);
}

}  // namespace dsv4::cli
