// StepPlan (step_plan.h): the layout and the host-side builder.
#include "cuda/step_plan.h"

#include <cstring>

#include "util/error.h"

namespace dsv4::cuda {

StepPlan::StepPlan(int max_rows, int max_logits, DeviceArena& arena)
    : max_rows_(max_rows), max_logits_(max_logits) {
  DSV4_CHECK(max_rows >= 1 && max_logits >= 1);
  const size_t R = size_t(max_rows), L = size_t(max_logits);
  const size_t counts[kArrays] = {R, R, R, R, R, R, R, 1, L};
  size_t at = 0;
  for (int a = 0; a < kArrays; ++a) {
    offset_[a] = at;
    at += counts[a] * sizeof(int32_t);
  }
  at = (at + alignof(RowSampling) - 1) / alignof(RowSampling) * alignof(RowSampling);
  offset_[kArrays] = at;
  bytes_ = at + L * sizeof(RowSampling);
  device_ = arena.take<uint8_t>(bytes_);
  if (!arena.counting()) {
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_), bytes_));
    clear();
  }
}

StepPlan::~StepPlan() {
  if (host_) cudaFreeHost(host_);
}

void StepPlan::clear() {
  rows_ = real_rows_ = n_logits_ = 0;
  keeps_ = false;
  *host(kNReal) = 0;
}

void StepPlan::add_chunk(int slot, int64_t pos0, const int32_t* tokens, int n) {
  DSV4_CHECK_MSG(rows_ == real_rows_, "step plan: a chunk after padding rows");
  DSV4_CHECK_MSG(n >= 1 && rows_ + n <= max_rows_, "step plan: ", rows_, " + ", n, " rows of ", max_rows_);
  DSV4_CHECK(slot >= 0 && pos0 >= 0 && pos0 + n <= INT32_MAX);
  const int first = rows_, last = rows_ + n - 1;
  for (int i = 0; i < n; ++i) {
    host(kTokens)[rows_ + i] = tokens[i];
    host(kPos)[rows_ + i] = int32_t(pos0 + i);
    host(kSlot)[rows_ + i] = slot;
    host(kFirst)[rows_ + i] = first;
    host(kLast)[rows_ + i] = last;
    host(kKeep)[rows_ + i] = -1;
    host(kSource)[rows_ + i] = 0;
  }
  rows_ += n;
  real_rows_ = rows_;
  *host(kNReal) = real_rows_;
}

int StepPlan::position(int row) const {
  DSV4_CHECK(row >= 0 && row < rows_);
  return reinterpret_cast<const int32_t*>(host_ + offset_[kPos])[row];
}

void StepPlan::pad_to(int rows) {
  DSV4_CHECK(rows >= rows_ && rows <= max_rows_);
  for (int r = rows_; r < rows; ++r) {
    host(kTokens)[r] = 0;
    host(kPos)[r] = -1;
    host(kSlot)[r] = -1;
    host(kFirst)[r] = r;
    host(kLast)[r] = r;
    host(kKeep)[r] = -1;
    host(kSource)[r] = 0;
  }
  rows_ = rows;
}

void StepPlan::add_logit_row(int row, const RowSampling& sampling) {
  DSV4_CHECK_MSG(n_logits_ < max_logits_, "step plan: more than ", max_logits_, " logit rows");
  DSV4_CHECK(row >= 0 && row < rows_);
  host(kLogitRows)[n_logits_] = row;
  reinterpret_cast<RowSampling*>(host_ + offset_[kArrays])[n_logits_] = sampling;
  ++n_logits_;
}

void StepPlan::set_keep_row(int row, int kept_row) {
  DSV4_CHECK(row >= 0 && row < real_rows_ && kept_row >= 0);
  host(kKeep)[row] = kept_row;
  keeps_ = true;
}

void StepPlan::set_source(int row, int source) {
  DSV4_CHECK(row >= 0 && row < real_rows_);
  host(kSource)[row] = source;
}

void StepPlan::upload(cudaStream_t stream) const {
  DSV4_CUDA_CHECK(cudaMemcpyAsync(device_, host_, bytes_, cudaMemcpyHostToDevice, stream));
}

void StepPlan::upload_from(const StepPlan& source, cudaStream_t stream) {
  DSV4_CHECK_MSG(source.bytes_ == bytes_ && source.max_rows_ == max_rows_ && source.max_logits_ == max_logits_,
                 "step plan: a replica of another shape");
  DSV4_CUDA_CHECK(cudaMemcpyAsync(device_, source.host_, bytes_, cudaMemcpyHostToDevice, stream));
  if (&source != this) {  // the host copy is never a copy's source here, so no transfer reads it
    std::memcpy(host_, source.host_, bytes_);
    rows_ = source.rows_;
    real_rows_ = source.real_rows_;
    n_logits_ = source.n_logits_;
    keeps_ = source.keeps_;
  }
}

StepRows StepPlan::device_rows() const {
  return {dev(kPos), dev(kSlot), dev(kFirst), dev(kLast)};
}

const RowSampling* StepPlan::sampling() const {
  return reinterpret_cast<const RowSampling*>(device_ + offset_[kArrays]);
}

}  // namespace dsv4::cuda
