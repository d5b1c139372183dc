// Row runs by class (row_runs.h).
#include "cuda/row_runs.h"

#include "cuda/step.h"
#include "util/error.h"

namespace dsv4::cuda {

std::vector<RowRun> row_runs(std::span<const RowRange> segments, int T, const std::function<bool(int n)>& prefill_class) {
  if (segments.empty()) return {{0, T, false}};
  std::vector<RowRun> runs;
  auto add = [&](int first, int n, bool prefill) {
    if (n == 0) return;
    if (!prefill && !runs.empty() && !runs.back().prefill && runs.back().first + runs.back().n == first)
      runs.back().n += n;
    else
      runs.push_back({first, n, prefill});
  };
  int next = 0;
  for (const RowRange& s : segments) {
    DSV4_CHECK_MSG(s.first == next, "matmul segments that do not tile the pass");
    add(s.first, s.n, s.n > kInvariantSliceRows && prefill_class(s.n));  // a long chunk is its own segment
    next = s.first + s.n;
  }
  DSV4_CHECK_MSG(next <= T, "matmul segments past the pass's ", T, " rows");
  add(next, T - next, false);
  return runs;
}

}  // namespace dsv4::cuda
