// The step's building blocks (step.h): scratch allocation, the trace downloads, norms with their
// quantisation, and the linears (matmul.h's dispatch; NVFP4 weights through gemv_nvfp4.cuh).
#include "cuda/step.h"

#include <algorithm>

#include "cuda/kernels/act_quant.cuh"
#include "cuda/kernels/gemv_bf16.cuh"
#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/gemv_nvfp4.cuh"
#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/rmsnorm.cuh"
#include "cuda/matmul.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4::cuda {

namespace {

// Widest activation that goes through the §12 quantiser (D, Q, G·R, I).
int64_t max_quant_width(const ModelConfig& c) {
  return std::max({c.hidden_size, c.q_lora_rank, c.o_groups * c.o_lora_rank, c.moe_intermediate_size});
}

}  // namespace

Scratch::Scratch(const ModelConfig& c, const ScratchShape& sh, DeviceArena& arena)
    : moe(c, sh.rows, arena, sh.moe) {
  const size_t T = size_t(sh.rows), L = size_t(sh.logits), D = size_t(c.hidden_size);
  const size_t n = size_t(c.hc_mult), H = size_t(c.num_attention_heads), d = size_t(c.head_dim);
  const size_t Hi = size_t(c.index_n_heads), di = size_t(c.index_head_dim);
  const size_t Kq = size_t(max_quant_width(c));
  const size_t G = size_t(std::min(sh.rows, kAttentionGroupRows));
  pass_slot = arena.take<int32_t>(T);
  ring_slot = arena.take<int32_t>(T);
  topk = arena.take<int32_t>(G * size_t(std::max<int64_t>(c.index_topk, 1)));
  attn_indices = arena.take<int32_t>(G * size_t(sh.max_n_idx));
  attn_count = arena.take<int32_t>(G);
  sampled = arena.take<int32_t>(L);
  X = arena.take<__nv_bfloat16>(T * n * D);
  u = arena.take<__nv_bfloat16>(T * D);
  qr = arena.take<__nv_bfloat16>(T * size_t(c.q_lora_rank));
  q = arena.take<__nv_bfloat16>(T * H * d);
  kv = arena.take<__nv_bfloat16>(T * d);
  qi = arena.take<__nv_bfloat16>(T * Hi * di);
  qi_fq = arena.take<__nv_bfloat16>(T * Hi * di);
  o = arena.take<__nv_bfloat16>(T * H * d);
  zg = arena.take<__nv_bfloat16>(T * size_t(c.o_groups * c.o_lora_rank));
  attn_out = arena.take<__nv_bfloat16>(T * D);
  ffn_out = arena.take<__nv_bfloat16>(T * D);
  fake = arena.take<__nv_bfloat16>(T * Kq);
  Xh = arena.take<__nv_bfloat16>(L * n * D);
  hh = arena.take<__nv_bfloat16>(L * D);
  if (sh.mtp) mtp_in = arena.take<__nv_bfloat16>(T * n * D);
  if (sh.rows > kInvariantSliceRows) {
    if (sh.chunk_keys) {  // the window rows a chunk of `rows` sees, then every entry
      chunk_key_rows = sh.rows + int(c.sliding_window) - 1 + sh.max_entries;
      chunk_keys = arena.take<__nv_bfloat16>(size_t(chunk_key_rows) * d);
    }
    wo_a_group = arena.take<__nv_bfloat16>(size_t(c.o_lora_rank) * size_t(c.heads_per_group()) * d);
  }
  if (sh.attn_partial) attn_partial = arena.take<float>(T * D);
  aq = arena.take<uint8_t>(T * Kq);
  aqs = arena.take<uint8_t>(T * Kq / 128);
  mhc_partial = arena.take<float>(mhc_pre_partial_floats(sh.rows, int(D)));
  post = arena.take<float>(T * n);
  comb = arena.take<float>(T * n * n);
  // §5's overlapping compressors emit 2c columns per row (a and z); the others c.
  const auto compressor = [&](size_t width) {
    return CompressorScratch{arena.take<float>(T * 2 * width), arena.take<float>(T * 2 * width),
                             arena.take<__nv_bfloat16>(T * width), arena.take<int32_t>(T), arena.take<int32_t>(T)};
  };
  comp = compressor(d);
  idx_comp = compressor(di);
  hw = arena.take<float>(T * std::max<size_t>(Hi, 1));
  index_score = arena.take<float>(G * size_t(sh.max_csa_entries));
  logits = arena.take<float>(L * size_t(c.vocab_size));
}

// ---- tracing ----

namespace {

template <typename T>
std::vector<T> download(const T* p, size_t n, cudaStream_t stream) {
  std::vector<T> h(n);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (n) DSV4_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
size_t numel(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t s : shape) n *= size_t(s);
  return n;
}

}  // namespace

void StepContext::emit_bf16(const char* name, int layer, const __nv_bfloat16* p,
                            std::vector<int64_t> shape) const {
  if (!tracing()) return;
  const auto raw = download(reinterpret_cast<const uint16_t*>(p), numel(shape), stream);
  std::vector<float> f(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) f[i] = bf16_to_f32(raw[i]);
  (*trace)(name, layer, f.data(), shape);
}
void StepContext::emit_f32(const char* name, int layer, const float* p,
                           std::vector<int64_t> shape) const {
  if (!tracing()) return;
  const auto f = download(p, numel(shape), stream);
  (*trace)(name, layer, f.data(), shape);
}
void StepContext::emit_i32(const char* name, int layer, const int32_t* p,
                           std::vector<int64_t> shape) const {
  if (!tracing()) return;
  const auto v = download(p, numel(shape), stream);
  const std::vector<float> f(v.begin(), v.end());
  (*trace)(name, layer, f.data(), shape);
}
void StepContext::emit_entries(const char* name, int layer, const __nv_bfloat16* p, const int32_t* entry_idx,
                                int width) const {
  if (!tracing()) return;
  const auto idx = download(entry_idx, size_t(T), stream);
  const auto raw = download(reinterpret_cast<const uint16_t*>(p), size_t(T) * width, stream);
  std::vector<float> f;
  for (int t = 0; t < T; ++t)
    if (idx[size_t(t)] >= 0)
      for (int i = 0; i < width; ++i) f.push_back(bf16_to_f32(raw[size_t(t) * width + i]));
  if (f.empty()) return;
  (*trace)(name, layer, f.data(), std::vector<int64_t>{int64_t(f.size()) / width, width});
}

void rmsnorm_rope(const StepContext& c, __nv_bfloat16* x, const __nv_bfloat16* weight, int heads, int dim,
                  const float* inv_freq) {
  RmsNormParams p;
  p.x = x;
  p.y = x;
  p.weight = weight;
  p.n_rows = c.T * heads;
  p.dim = dim;
  p.eps = float(c.m.cfg.rms_norm_eps);
  p.pos = c.rows.pos;
  p.inv_freq = inv_freq;
  p.rope_dim = int(c.m.cfg.qk_rope_head_dim);
  p.rows_per_pos = heads;
  launch_rmsnorm(p, c.stream);
}

bool pass_branches(const StepContext& c) { return c.branch && !c.tracing(); }

bool branch_linears(const StepContext& c) {
  return pass_branches(c) && c.T <= std::min(matmul_skinny_max_rows(true), matmul_skinny_max_rows(false));
}

StepContext fork_branch(const StepContext& c) {
  if (!pass_branches(c)) return c;
  DSV4_CUDA_CHECK(cudaEventRecord(c.branch_fork, c.stream));
  DSV4_CUDA_CHECK(cudaStreamWaitEvent(c.branch, c.branch_fork));
  StepContext b = c;
  b.stream = c.branch;
  return b;
}

void end_branch(const StepContext& b) {
  if (b.branch && b.stream == b.branch) DSV4_CUDA_CHECK(cudaEventRecord(b.branch_join, b.branch));
}

void join_branch(const StepContext& c) {
  if (pass_branches(c)) DSV4_CUDA_CHECK(cudaStreamWaitEvent(c.stream, c.branch_join));
}

// ---- linears ----

QuantAct quantize(const StepContext& c, const __nv_bfloat16* x, int K, uint8_t* q, uint8_t* qs,
                  __nv_bfloat16* fake) {
  ActQuantParams p;
  p.x = x;
  p.q = q;
  p.q_scale = qs;
  p.fake = c.m.has_bf16_act_linears ? fake : nullptr;
  p.rows = c.T;
  p.K = K;
  launch_act_quant(p, c.stream);
  return QuantAct{q, qs, p.fake, K};
}

QuantAct block_input(const StepContext& c) {
  return QuantAct{c.s.aq, c.s.aqs, c.m.has_bf16_act_linears ? c.s.fake : nullptr, int(c.m.cfg.hidden_size)};
}

QuantAct rmsnorm_quantize(const StepContext& c, __nv_bfloat16* x, const __nv_bfloat16* weight, int rows,
                          int dim) {
  RmsNormParams p;
  p.x = x;
  p.y = x;
  p.weight = weight;
  p.q = c.s.aq;
  p.q_scale = c.s.aqs;
  p.fake = c.m.has_bf16_act_linears ? c.s.fake : nullptr;
  p.n_rows = rows;
  p.dim = dim;
  p.eps = float(c.m.cfg.rms_norm_eps);
  launch_rmsnorm(p, c.stream);
  return QuantAct{c.s.aq, c.s.aqs, p.fake, dim};
}

namespace {

// The matmul calls of a linear over `rows` rows (StepContext::segments): the pass's segments when
// it covers the whole pass, else slices of kInvariantSliceRows (the head's logit rows).
template <typename F>
void for_each_segment(const StepContext& c, int rows, F&& call) {
  if (rows == c.T && !c.segments.empty()) {
    for (const RowRange& r : c.segments) call(r.first, r.n);
    return;
  }
  for (int r0 = 0; r0 < rows; r0 += kInvariantSliceRows) call(r0, std::min(kInvariantSliceRows, rows - r0));
}

}  // namespace

namespace {

// The matmul of rows [r0, r0 + n) of a linear with FP8 or BF16 weights into y (all rows, BF16 or
// FP32 rows of N): FP8 weights take the FP8 activations; BF16 weights the same values as BF16
// (fake).
MatmulParams quantized_rows(const DeviceLinear& w, const QuantAct& x, int r0, int n, void* y, bool out_bf16) {
  DSV4_CHECK_MSG(w.K == x.K, w.name, ": in_features ", w.K, ", the activations have ", x.K);
  DSV4_CHECK_MSG(w.fp8 || x.fake, w.name, ": BF16 linear fed without fake-quantised activations");
  MatmulParams p;
  p.w = w.data.get();
  p.w_scale = w.fp8 ? w.scale.get() : nullptr;
  p.x = w.fp8 ? static_cast<const void*>(x.q + size_t(r0) * w.K) : static_cast<const void*>(x.fake + size_t(r0) * w.K);
  p.x_scale = w.fp8 ? x.scale + size_t(r0) * (w.K / 128) : nullptr;
  p.y = static_cast<uint8_t*>(y) + size_t(r0) * w.N * (out_bf16 ? 2 : 4);
  p.M = n;
  p.N = w.N;
  p.K = w.K;
  p.out_bf16 = out_bf16;
  return p;
}

// y = x̃·Wᵀ, BF16 (out_bf16) or FP32 rows of N.
void quantized_linear(const StepContext& c, const DeviceLinear& w, const QuantAct& x, int rows, void* y,
                      bool out_bf16) {
  const size_t out_bytes = out_bf16 ? 2 : 4;
  auto row_ptr = [&](int r0) { return static_cast<uint8_t*>(y) + size_t(r0) * w.N * out_bytes; };
  if (w.nvfp4) {  // the FP8 activations of the FP8 linear it replaces (gemv_nvfp4.cuh)
    DSV4_CHECK_MSG(w.K == x.K, w.name, ": in_features ", w.K, ", the activations have ", x.K);
    for (int r0 = 0; r0 < rows; r0 += kGemvMaxBatch) {
      GemvNvfp4Params p;
      p.w = w.data.get();
      p.w_scale = w.scale.get();
      p.global_scale = w.global_scale;
      p.x_fp8 = x.q + size_t(r0) * w.K;
      p.x_scale = x.scale + size_t(r0) * (w.K / 128);
      p.y = row_ptr(r0);
      p.M = std::min(kGemvMaxBatch, rows - r0);
      p.N = w.N;
      p.K = w.K;
      p.out_bf16 = out_bf16;
      launch_gemv_nvfp4(p, c.stream);
    }
    return;
  }
  for_each_segment(c, rows, [&](int r0, int n) { matmul(quantized_rows(w, x, r0, n, y, out_bf16), c.stream); });
}

}  // namespace

void linear_q(const StepContext& c, const DeviceLinear& w, const QuantAct& x, int rows, __nv_bfloat16* y) {
  quantized_linear(c, w, x, rows, y, true);
}

void linear_q_pair(const StepContext& c, const DeviceLinear& wa, __nv_bfloat16* ya, const DeviceLinear& wb,
                   __nv_bfloat16* yb, const QuantAct& x, int rows) {
  if (!wa.fp8 || !wb.fp8) {
    linear_q(c, wa, x, rows, ya);
    linear_q(c, wb, x, rows, yb);
    return;
  }
  for_each_segment(c, rows, [&](int r0, int n) {
    matmul_pair(quantized_rows(wa, x, r0, n, ya, true), quantized_rows(wb, x, r0, n, yb, true), c.stream);
  });
}

void linear_q_f32(const StepContext& c, const DeviceLinear& w, const QuantAct& x, int rows, float* y) {
  quantized_linear(c, w, x, rows, y, false);
}

void linear_f32(const StepContext& c, const DeviceLinear& w, const __nv_bfloat16* x, int rows,
                float* y) {
  DSV4_CHECK_MSG(!w.fp8, "linear_f32 takes BF16 or NVFP4 weights");
  if (w.nvfp4) {  // the unquantised BF16 input of the BF16 linear it replaces (gemv_nvfp4.cuh)
    for (int r0 = 0; r0 < rows; r0 += kGemvMaxBatch) {
      GemvNvfp4Params p;
      p.w = w.data.get();
      p.w_scale = w.scale.get();
      p.global_scale = w.global_scale;
      p.x_bf16 = x + size_t(r0) * w.K;
      p.y = y + size_t(r0) * w.N;
      p.M = std::min(kGemvMaxBatch, rows - r0);
      p.N = w.N;
      p.K = w.K;
      launch_gemv_nvfp4(p, c.stream);
    }
    return;
  }
  for_each_segment(c, rows, [&](int r0, int n) {
    MatmulParams p;
    p.w = w.data.get();
    p.x = x + size_t(r0) * w.K;
    p.y = y + size_t(r0) * w.N;
    p.M = n;
    p.N = w.N;
    p.K = w.K;
    p.out_bf16 = false;
    matmul(p, c.stream);
  });
}

}  // namespace dsv4::cuda
