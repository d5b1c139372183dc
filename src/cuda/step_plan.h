// The step plan (design.md "Step plan", plan/run): what one pass over the layers computes, written
// by the host into pinned memory and copied to the device in one transfer; every kernel reads
// positions, slots and chunk bounds from it, so a captured graph needs only a new plan to replay.
// Who fills it is cuda_forward.cpp; how kernels see it is kernels/step_rows.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/device_arena.h"
#include "cuda/kernels/sampling.cuh"
#include "cuda/kernels/step_rows.cuh"

namespace dsv4::cuda {

// One layout, two copies (pinned host, device) at the same offsets: int32 arrays of max_rows
// (token, position, slot, chunk first/last row, and for the MTP block (§10) the kept-stream row
// and the input source), the real-row count, max_logits logit rows (the rows whose logits the
// head computes) and their sampling parameters.
class StepPlan {
 public:
  StepPlan(int max_rows, int max_logits, DeviceArena& arena);  // counting arena: no host memory
  ~StepPlan();
  StepPlan(const StepPlan&) = delete;
  StepPlan& operator=(const StepPlan&) = delete;

  int max_rows() const { return max_rows_; }
  int max_logits() const { return max_logits_; }

  // Host side (pinned). clear() starts a plan; add_chunk() appends a sequence's consecutive rows.
  void clear();
  void add_chunk(int slot, int64_t pos0, const int32_t* tokens, int n);
  void pad_to(int rows);  // padding rows (pos −1) up to `rows`
  void add_logit_row(int row, const RowSampling& sampling);
  // MTP (mtp_streams.cuh): row `row`'s final streams go to kept-stream row `kept_row` (every row
  // starts with none); an MTP pass's row `row` takes its input streams from `source` (≥ 0: that
  // row of the pass just run; < 0: kept row −1 − source).
  void set_keep_row(int row, int kept_row);
  void set_source(int row, int source);
  bool keeps_streams() const { return keeps_; }
  int rows() const { return rows_; }
  int position(int row) const;  // host copy: row's position (−1 for padding)
  int real_rows() const { return real_rows_; }
  int logit_rows() const { return n_logits_; }
  // The whole plan (fixed size) host -> device on `stream`; capturable in a CUDA graph.
  void upload(cudaStream_t stream) const;
  // `source`'s host plan to this plan's device copy: another rank's replica of the same plan
  // (expert parallelism); the shapes must match. The replica's host copy takes the plan too, so
  // host reads (position()) see the same rows on every rank.
  void upload_from(const StepPlan& source, cudaStream_t stream);

  // Device side.
  StepRows device_rows() const;
  const int32_t* tokens() const { return dev(kTokens); }
  const int32_t* n_real() const { return dev(kNReal); }
  const int32_t* logit_row_index() const { return dev(kLogitRows); }
  const int32_t* keep_rows() const { return dev(kKeep); }
  const int32_t* sources() const { return dev(kSource); }
  const RowSampling* sampling() const;

 private:
  enum Array { kTokens, kPos, kSlot, kFirst, kLast, kKeep, kSource, kNReal, kLogitRows, kArrays };
  const int32_t* dev(Array a) const { return reinterpret_cast<const int32_t*>(device_ + offset_[a]); }
  int32_t* host(Array a) { return reinterpret_cast<int32_t*>(host_ + offset_[a]); }

  int max_rows_ = 0, max_logits_ = 0;
  size_t offset_[kArrays + 1] = {};  // byte offsets; the last is the RowSampling array
  size_t bytes_ = 0;
  uint8_t* device_ = nullptr;
  uint8_t* host_ = nullptr;  // pinned
  int rows_ = 0, real_rows_ = 0, n_logits_ = 0;
  bool keeps_ = false;
};

}  // namespace dsv4::cuda
