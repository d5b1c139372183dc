// The host tier (host_experts.h): loading the host's experts into pinned memory, and one MoE
// sub-layer's host share per start/finish — on the host's cores (copies down and a host function
// on a side stream, beside the GPU's experts, then the hand-back kernel) and on the GPU: the
// grouped GEMM over the picks, with all the layer's host experts copied up (a pass of many rows)
// or only the picked ones gathered over the bus on another side stream (a decode pass's experts
// below cores_first).
#include "cuda/host_experts.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>

#include "cpu/context.h"
#include "cpu/expert_units.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/host_gather.cuh"
#include "cuda/kernels/host_picks.cuh"
#include "cuda/step.h"
#include "model/skeleton.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4::cuda {

namespace {

// Bytes of a stored matrix and of its block scales (model/quant.h layouts).
size_t data_bytes(const WeightMatrix& w) {
  const size_t n = size_t(w.rows) * size_t(w.cols);
  switch (w.format) {
    case WeightFormat::kMXFP4:
    case WeightFormat::kNVFP4: return n / 2;
    case WeightFormat::kFP8Block: return n;
    case WeightFormat::kBF16:
    case WeightFormat::kF16: return n * 2;
    case WeightFormat::kF32: return n * 4;
    default: fail(w.name, ": routed experts in ", to_string(w.format), " cannot live in the host tier");
  }
}
size_t scale_bytes(const WeightMatrix& w) {
  if (!w.scale) return 0;
  return size_t(scale_numel(w.format, w.rows, w.cols)) * (w.scale_is_f32 ? 4 : 1);
}

constexpr WeightMatrix ExpertWeights::*kMatrices[] = {&ExpertWeights::w1, &ExpertWeights::w3, &ExpertWeights::w2};

// Whether a pass of many rows can run the host's experts on the GPU: the grouped GEMM reads packed
// FP4 as stored (device_model.h DeviceExperts); other formats the upload converts, which a
// per-pass copy would have to repeat.
bool streamable(const ExpertWeights& e) {
  for (auto m : kMatrices)
    if ((e.*m).format != WeightFormat::kMXFP4 && (e.*m).format != WeightFormat::kNVFP4) return false;
  return true;
}

// One matrix (w1, w3 or w2) of a layer's n host experts in the pinned block: every expert's data,
// then every expert's scales, then (NVFP4) every expert's global scale — each one contiguous copy
// to the GPU's staging experts.
struct MatrixBlock {
  size_t data = 0, scale = 0, global = 0;  // offsets in the layer's block
  size_t data_per = 0, scale_per = 0;      // bytes per expert
};
std::vector<MatrixBlock> block_layout(const ExpertWeights& e0, size_t n, size_t* total) {
  std::vector<MatrixBlock> out;
  size_t at = 0;
  for (auto m : kMatrices) {
    const WeightMatrix& w = e0.*m;
    MatrixBlock b;
    b.data_per = data_bytes(w);
    b.scale_per = scale_bytes(w);
    b.data = at;
    b.scale = b.data + n * b.data_per;
    b.global = b.scale + n * b.scale_per;
    at = b.global + (w.format == WeightFormat::kNVFP4 ? n * sizeof(float) : 0);
    at = (at + 15) / 16 * 16;  // 16-byte aligned blocks
    out.push_back(b);
  }
  *total = at;
  return out;
}

}  // namespace

int core_experts_for(int count, double cores_share) {
  DSV4_CHECK(count >= 1 && cores_share >= 0.0 && cores_share <= 1.0);
  if (cores_share == 0.0 || cores_share == 1.0) return int(cores_share) * count;
  if (count < 2) fail("--host-decode split: a layer's one host expert cannot be split between the bus and the cores");
  return std::clamp(int(std::lround(cores_share * count)), 1, count - 1);
}

HostExperts::HostExperts(const ModelConfig& cfg, const ModelWeights& w, int first, bool mtp,
                         const RandomTensors* synthetic, int max_rows, int threads, int core_experts, bool progress)
    : cfg_(cfg), first_(first), max_rows_(max_rows), pool_(threads) {
  const int E = int(cfg.n_routed_experts);
  DSV4_CHECK_MSG(first >= 1 && first < E, "host tier: experts [", first, ", ", E, ") of ", E,
                 " (the GPU keeps at least one, the host at least one)");
  DSV4_CHECK(!w.layers.empty() && int(w.layers.front().ffn.experts.size()) == E);
  const ExpertWeights& e0 = w.layers.front().ffn.experts[size_t(first)];
  streamable_ = streamable(e0);
  format_ = e0.w1.format;
  set_core_experts(core_experts);  // before the load, which takes minutes at full size
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<const LayerWeights*> layers;
  for (const LayerWeights& l : w.layers) layers.push_back(&l);
  if (mtp && !w.mtp.empty()) layers.push_back(&w.mtp.front().layer);
  DSV4_CHECK(!layers.empty());
  for (const LayerWeights* l : layers) {
    DSV4_CHECK(int(l->ffn.experts.size()) == E);
    layers_.push_back(load_layer(l->ffn.experts, synthetic));
    weight_bytes_ += layers_.back().bytes.bytes();
    if (progress)
      std::fprintf(stderr, "\rhost tier: experts %d..%d of %zu of %zu layers in pinned host memory, %.2f GiB", first,
                   E - 1, layers_.size(), layers.size(), double(weight_bytes_) / double(1ull << 30));
  }
  if (progress)
    std::fprintf(stderr, " in %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (streamable_) {
    for (auto m : kMatrices) {
      const WeightMatrix& wm = e0.*m;
      DeviceExperts d;
      d.format = wm.format == WeightFormat::kNVFP4 ? DeviceExperts::Format::kNVFP4 : DeviceExperts::Format::kMXFP4;
      d.E = count();
      d.N = int(wm.rows);
      d.K = int(wm.cols);
      d.first = first;
      d.data = DeviceBuffer<uint8_t>(data_bytes(wm) * size_t(count()));
      d.scale = DeviceBuffer<uint8_t>(scale_bytes(wm) * size_t(count()));
      if (d.format == DeviceExperts::Format::kNVFP4) d.global_scale = DeviceBuffer<float>(size_t(count()));
      staging_.push_back(std::move(d));
    }
  }
  const size_t D = size_t(cfg.hidden_size), k = size_t(cfg.num_experts_per_tok), rows = size_t(max_rows);
  x_q_ = PinnedBuffer<uint8_t>(rows * D);
  x_scale_ = PinnedBuffer<uint8_t>(rows * D / size_t(kActBlockSize));
  expert_idx_ = PinnedBuffer<int32_t>(rows * k);
  n_real_ = PinnedBuffer<int32_t>(1);
  expert_w_ = PinnedBuffer<float>(rows * k);
  out_ = PinnedBuffer<uint16_t>(rows * k * D);
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&cores_, cudaStreamNonBlocking));
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&bus_, cudaStreamNonBlocking));
  DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
  DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&cores_done_, cudaEventDisableTiming));
  DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&bus_done_, cudaEventDisableTiming));
}

void HostExperts::set_core_experts(int core_experts) {
  const int E = int(cfg_.n_routed_experts);
  DSV4_CHECK_MSG(core_experts >= 0 && core_experts <= count(), "host tier: ", core_experts, " of ", count(),
                 " host experts on the host's cores");
  if (core_experts < count() && !streamable_)
    fail("--host-decode gpu|split: the GPU reads routed experts from host memory only as packed FP4 (MXFP4 or "
         "NVFP4), this checkpoint's are ", to_string(format_));
  cores_first_ = E - core_experts;
}

HostExperts::~HostExperts() {
  cudaEventDestroy(bus_done_);
  cudaEventDestroy(cores_done_);
  cudaEventDestroy(fork_);
  cudaStreamDestroy(bus_);
  cudaStreamDestroy(cores_);
}

size_t HostExperts::device_bytes(const ModelWeights& w, int first) {
  if (w.layers.empty()) return 0;
  const std::vector<ExpertWeights>& experts = w.layers.front().ffn.experts;
  if (first < 0 || size_t(first) >= experts.size() || !streamable(experts[size_t(first)])) return 0;
  const size_t n = experts.size() - size_t(first);
  size_t bytes = 0;
  for (auto m : kMatrices) {
    const WeightMatrix& wm = experts[size_t(first)].*m;
    bytes += n * (data_bytes(wm) + scale_bytes(wm) + (wm.format == WeightFormat::kNVFP4 ? sizeof(float) : 0));
  }
  return bytes;
}

HostExperts::Layer HostExperts::load_layer(const std::vector<ExpertWeights>& experts, const RandomTensors* synthetic) {
  const size_t n = experts.size() - size_t(first_);
  const ExpertWeights& e0 = experts[size_t(first_)];
  size_t total = 0;
  const std::vector<MatrixBlock> blocks = block_layout(e0, n, &total);
  Layer l;
  l.bytes = PinnedBuffer<uint8_t>(total);
  l.experts.resize(n);
  for (size_t mi = 0; mi < 3; ++mi) {
    const WeightMatrix& w0 = e0.*kMatrices[mi];
    const MatrixBlock& b = blocks[mi];
    for (size_t j = 0; j < n; ++j) {
      const WeightMatrix& src = experts[size_t(first_) + j].*kMatrices[mi];
      if (src.format != w0.format || src.rows != w0.rows || src.cols != w0.cols || src.scale_is_f32 != w0.scale_is_f32 ||
          (src.scale == nullptr) != (w0.scale == nullptr))
        fail(src.name, ": experts of one layer must share format and shape");
      WeightMatrix& dst = l.experts[j].*kMatrices[mi];
      dst = src;
      dst.data = l.bytes.get() + b.data + j * b.data_per;
      dst.scale = src.scale ? l.bytes.get() + b.scale + j * b.scale_per : nullptr;
      if (w0.format == WeightFormat::kNVFP4)
        reinterpret_cast<float*>(l.bytes.get() + b.global)[j] = src.global_scale;
    }
  }
  // Fill on every thread, expert by expert: copies out of the mapped shards, or generated bytes.
  pool_.parallel_for(int64_t(n), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j)
      for (auto m : kMatrices) {
        const WeightMatrix& src = experts[size_t(first_) + size_t(j)].*m;
        const WeightMatrix& dst = l.experts[size_t(j)].*m;
        uint8_t* data = const_cast<uint8_t*>(dst.data);
        uint8_t* scale = const_cast<uint8_t*>(dst.scale);
        if (synthetic) {
          synthetic->fill(src.data_tensor, data, data_bytes(src));
          if (scale) synthetic->fill(src.scale_tensor, scale, scale_bytes(src));
        } else {
          std::memcpy(data, src.data, data_bytes(src));
          if (scale) std::memcpy(scale, src.scale, scale_bytes(src));
        }
      }
  });
  return l;
}

bool HostExperts::streams_to_gpu(const StepContext& c) const { return c.T >= kHostStreamRows && !staging_.empty(); }

void HostExperts::check_pass(const StepContext& c, int layer) const {
  DSV4_CHECK_MSG(c.T <= max_rows_, "host tier: a pass of ", c.T, " rows, buffers for ", max_rows_);
  DSV4_CHECK_MSG(layer >= 0 && size_t(layer) < layers_.size(), "host tier: layer ", layer, " of ", layers_.size());
  DSV4_CHECK_MSG(c.s.moe.picks, "host tier: the pass's routed outputs are not in pick order");
}

void HostExperts::start(const StepContext& c, int layer) {
  check_pass(c, layer);
  if (streams_to_gpu(c)) return;
  // Fork: the side streams see the router's picks and the quantised input; the pass's stream goes
  // on to the GPU's experts (the shared expert has run, or runs on its own branch: moe_step.h),
  // which read them too and write neither. They come after the previous layer's finish, which
  // joined them (the gather overwrites the staging experts, the host function the hand-off
  // buffers).
  DSV4_CUDA_CHECK(cudaEventRecord(fork_, c.stream));
  const int E = int(cfg_.n_routed_experts);
  if (cores_first_ > first_) {
    DSV4_CUDA_CHECK(cudaStreamWaitEvent(bus_, fork_));
    enqueue_gather(c, layer);
    DSV4_CUDA_CHECK(cudaEventRecord(bus_done_, bus_));
  }
  if (cores_first_ < E) {
    DSV4_CUDA_CHECK(cudaStreamWaitEvent(cores_, fork_));
    enqueue_cores(c, layer);
    DSV4_CUDA_CHECK(cudaEventRecord(cores_done_, cores_));
  }
}

void HostExperts::enqueue_cores(const StepContext& c, int layer) {
  const int T = c.T, D = int(cfg_.hidden_size), k = int(cfg_.num_experts_per_tok);
  const QuantAct x = block_input(c);
  const cudaMemcpyKind down = cudaMemcpyDeviceToHost;
  DSV4_CUDA_CHECK(cudaMemcpyAsync(x_q_.get(), x.q, size_t(T) * D, down, cores_));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(x_scale_.get(), x.scale, size_t(T) * D / kActBlockSize, down, cores_));
  DSV4_CUDA_CHECK(
      cudaMemcpyAsync(expert_idx_.get(), c.s.moe.expert_idx, size_t(T) * k * sizeof(int32_t), down, cores_));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(expert_w_.get(), c.s.moe.expert_w, size_t(T) * k * sizeof(float), down, cores_));
  if (c.n_real) DSV4_CUDA_CHECK(cudaMemcpyAsync(n_real_.get(), c.n_real, sizeof(int32_t), down, cores_));
  // Inserted once per key and never written again: in an eager pass the host function of the
  // last step's same layer may still be reading it.
  const bool has_n_real = c.n_real != nullptr;
  Call& call = calls_.try_emplace({layer, T, has_n_real}, Call{this, layer, T, has_n_real}).first->second;
  DSV4_CUDA_CHECK(cudaLaunchHostFunc(cores_, &HostExperts::run_call, &call));
}

void HostExperts::finish(const StepContext& c, int layer) {
  check_pass(c, layer);
  if (streams_to_gpu(c)) {
    enqueue_streamed(c, layer);
    return;
  }
  const int E = int(cfg_.n_routed_experts);
  if (cores_first_ > first_) {  // the bus's experts first: their GEMM keeps the cores' picks as they are
    DSV4_CUDA_CHECK(cudaStreamWaitEvent(c.stream, bus_done_));
    enqueue_on_gpu(c, cores_first_ - first_);
  }
  if (cores_first_ < E) {
    DSV4_CUDA_CHECK(cudaStreamWaitEvent(c.stream, cores_done_));
    TakeHostPicksParams p;
    p.host = reinterpret_cast<const __nv_bfloat16*>(out_.device());
    p.expert_idx = c.s.moe.expert_idx;
    p.n_real = c.n_real;
    p.picks = c.s.moe.picks;
    p.T = c.T;
    p.k = int(cfg_.num_experts_per_tok);
    p.D = int(cfg_.hidden_size);
    p.first = cores_first_;
    p.end = E;
    launch_take_host_picks(p, c.stream);
  }
}

void HostExperts::enqueue_gather(const StepContext& c, int layer) {
  const Layer& l = layers_[size_t(layer)];
  size_t total = 0;
  const std::vector<MatrixBlock> blocks = block_layout(l.experts.front(), size_t(count()), &total);
  GatherHostExpertsParams p;
  p.expert_idx = c.s.moe.expert_idx;
  p.n_real = c.n_real;
  p.T = c.T;
  p.k = int(cfg_.num_experts_per_tok);
  p.first = first_;
  p.end = cores_first_;
  const auto add = [&](size_t offset, uint8_t* dst, size_t per_expert) {
    p.regions[p.n_regions++] = {l.bytes.device() + offset, dst, per_expert};
  };
  for (size_t mi = 0; mi < 3; ++mi) {
    DeviceExperts& d = staging_[mi];
    const MatrixBlock& b = blocks[mi];
    add(b.data, d.data.get(), b.data_per);
    add(b.scale, d.scale.get(), b.scale_per);
    if (d.global_scale.size()) add(b.global, reinterpret_cast<uint8_t*>(d.global_scale.get()), sizeof(float));
  }
  launch_gather_host_experts(p, bus_);
}

void HostExperts::enqueue_streamed(const StepContext& c, int layer) {
  const Layer& l = layers_[size_t(layer)];
  size_t total = 0;
  const std::vector<MatrixBlock> blocks = block_layout(l.experts.front(), size_t(count()), &total);
  for (size_t mi = 0; mi < 3; ++mi) {
    DeviceExperts& d = staging_[mi];
    const MatrixBlock& b = blocks[mi];
    const cudaMemcpyKind up = cudaMemcpyHostToDevice;
    DSV4_CUDA_CHECK(cudaMemcpyAsync(d.data.get(), l.bytes.get() + b.data, d.data.bytes(), up, c.stream));
    DSV4_CUDA_CHECK(cudaMemcpyAsync(d.scale.get(), l.bytes.get() + b.scale, d.scale.bytes(), up, c.stream));
    if (d.global_scale.size())
      DSV4_CUDA_CHECK(cudaMemcpyAsync(d.global_scale.get(), l.bytes.get() + b.global, d.global_scale.bytes(), up, c.stream));
  }
  enqueue_on_gpu(c, count());
  const std::lock_guard lock(mutex_);
  stats_.streamed += 1;
}

void HostExperts::enqueue_on_gpu(const StepContext& c, int n) {
  DSV4_CHECK_MSG(c.s.moe.host_plan.E == count(), "host tier: the pass has no dispatch plan for the host's experts");
  DSV4_CHECK(n >= 1 && n <= count());
  // The same routed pass as the GPU's own experts (moe_step.cpp), over the host's first n: its own
  // dispatch plan (picks of other experts left out of it), outputs into those picks only.
  MoeScratch ms = c.s.moe;
  ms.plan = c.s.moe.host_plan;
  ms.plan.E = n;
  const QuantAct x = block_input(c);
  MoeRoutedInput in;
  in.x_q = x.q;
  in.x_scale = x.scale;
  in.expert_idx = c.s.moe.expert_idx;
  in.expert_w = c.s.moe.expert_w;
  in.n_real = c.n_real;
  in.T = c.T;
  in.expert_base = first_;
  in.keep_other_picks = true;
  moe_routed_runs(cfg_, staging_[0], staging_[1], staging_[2], ms, in, moe_row_runs(c), c.stream);
}

void HostExperts::run_call(void* call) {
  const Call& c = *static_cast<const Call*>(call);
  c.self->run(c);
}

void HostExperts::run(const Call& call) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t D = cfg_.hidden_size, k = cfg_.num_experts_per_tok, E = cfg_.n_routed_experts;
  int64_t picks = 0;
  try {
    const int64_t n_real = call.has_n_real ? std::clamp<int64_t>(*n_real_.get(), 0, call.T) : call.T;
    // The cores' picks, expert by expert (ascending row within one: the order is fixed).
    std::vector<std::vector<int64_t>> by_expert(size_t(E - first_));
    for (int64_t p = 0; p < n_real * k; ++p) {
      const int32_t e = expert_idx_.get()[p];
      if (e >= cores_first_ && e < E) by_expert[size_t(e - first_)].push_back(p);
    }
    const CpuContext ctx{cfg_, NumericsPoints::from(Numerics::kOfficialBf16), pool_};
    // Per touched expert: its rows' inputs (the GPU's §12 quantisation of the MoE input expanded,
    // FP8 values times their 1×128 scales: already what expert_act_quant would make of them, since
    // a second quantisation returns the first's values — tests/model/test_quant.cpp) and routing
    // weights.
    std::vector<ExpertRows> work;
    std::vector<size_t> work_expert;  // work[i] is host expert work_expert[i]
    const std::vector<ExpertWeights>& experts = layers_[size_t(call.layer)].experts;
    for (size_t j = 0; j < by_expert.size(); ++j) {
      const std::vector<int64_t>& rows = by_expert[j];
      if (rows.empty()) continue;
      ExpertRows w;
      w.weights = &experts[j];
      w.n = int64_t(rows.size());
      w.x.resize(size_t(w.n * D));
      w.row_weight.resize(size_t(w.n));
      for (int64_t r = 0; r < w.n; ++r) {
        const int64_t t = rows[size_t(r)] / k;
        const uint8_t* q = x_q_.get() + t * D;
        const uint8_t* s = x_scale_.get() + t * (D / kActBlockSize);
        for (int64_t col = 0; col < D; ++col)
          w.x[size_t(r * D + col)] = e4m3_to_f32(q[col]) * e8m0_to_f32(s[col / kActBlockSize]);
        w.row_weight[size_t(r)] = expert_w_.get()[rows[size_t(r)]];
      }
      picks += w.n;
      work.push_back(std::move(w));
      work_expert.push_back(j);
    }
    run_expert_rows(ctx, work);
    for (size_t i = 0; i < work.size(); ++i) {  // into the picks' rows of the hand-back buffer (BF16 already)
      const std::vector<int64_t>& rows = by_expert[work_expert[i]];
      for (int64_t r = 0; r < work[i].n; ++r) {
        uint16_t* out = out_.get() + rows[size_t(r)] * D;
        const float* y = work[i].y.data() + r * D;
        for (int64_t col = 0; col < D; ++col) out[col] = f32_to_bf16(y[col]);
      }
    }
  } catch (const std::exception& e) {
    const std::lock_guard lock(mutex_);
    if (error_.empty()) error_ = e.what();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::lock_guard lock(mutex_);
  stats_.seconds += s;
  stats_.calls += 1;
  stats_.picks += picks;
}

void HostExperts::check() {
  const std::lock_guard lock(mutex_);
  if (error_.empty()) return;
  const std::string e = std::exchange(error_, {});
  fail("host tier: ", e);
}

HostExpertStats HostExperts::stats() const {
  const std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace dsv4::cuda
