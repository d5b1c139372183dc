// DeviceModel: every weight of the model in GPU memory, each in its checkpoint precision (FP8
// 128×128 blocks, MXFP4 / NVFP4 / BF16 experts, BF16 plain tensors, F32 mHC parameters), uploaded
// once from the mmapped checkpoint. What runs on them is cuda_forward.cpp's.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <optional>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/kernels/gemv_mxfp4.cuh"
#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {
class RandomTensors;
}

namespace dsv4::cuda {

// A dense linear y = x·Wᵀ: FP8 E4M3 with UE8M0 128×128 scales (fp8), NVFP4 (nvfp4: packed E2M1,
// E4M3 per-16 scales, F32 global, §11.6; gemv_nvfp4.cuh for its numerics), or BF16 (neither;
// also MXFP4 and plain-float linears, which dequantise to BF16 exactly or are rounded once).
struct DeviceLinear {
  std::string name;                // the checkpoint tensor ("layers.3.attn.wq_b.weight"), for errors
  bool fp8 = false;
  bool nvfp4 = false;
  int N = 0, K = 0;                // [out, in]
  DeviceBuffer<uint8_t> data;      // [N, K] e4m3, [N, K/2] e2m1 (nvfp4), or [N, K] bf16 bytes
  DeviceBuffer<uint8_t> scale;     // [ceil(N/128), K/128] ue8m0 (fp8), [N, K/16] e4m3 (nvfp4)
  float global_scale = 0.0f;       // nvfp4: weight_scale_2
  const __nv_bfloat16* bf16() const { return reinterpret_cast<const __nv_bfloat16*>(data.get()); }
};

// The E routed experts' w1, w3 or w2, stacked: [E, N, K] in one format. A rank of expert
// parallelism holds the model's experts [first, first + E); one rank holds all (first 0).
struct DeviceExperts {
  enum class Format { kMXFP4, kNVFP4, kBF16 } format = Format::kMXFP4;
  int E = 0, N = 0, K = 0;
  int first = 0;
  DeviceBuffer<uint8_t> data;          // [E, N, K/2] packed e2m1, or [E, N, K] bf16 bytes
  DeviceBuffer<uint8_t> scale;         // [E, N, K/32] ue8m0 (MXFP4) or [E, N, K/16] e4m3 (NVFP4)
  DeviceBuffer<float> global_scale;    // [E] NVFP4 weight_scale_2
};

struct DeviceHyperConn {  // §3.1 / §3.3
  DeviceBuffer<float> fn, base, scale;
};

struct DeviceCompressor {  // §5
  int ratio = 0, width = 0, coff = 1;
  DeviceLinear wkv, wgate;             // BF16 [coff·c, D]
  DeviceBuffer<float> ape;             // [m, coff·c]
  DeviceBuffer<__nv_bfloat16> norm;    // [c]
};

struct DeviceLayer {
  LayerSpec spec;
  DeviceBuffer<__nv_bfloat16> attn_norm, ffn_norm, q_norm, kv_norm;
  DeviceHyperConn hc_attn, hc_ffn;
  DeviceLinear wq_a, wq_b, wkv, wo_a, wo_b;
  DeviceBuffer<float> attn_sink;       // [H]
  std::optional<DeviceCompressor> compressor;
  // Indexer (CSA layers, §6).
  DeviceLinear idx_wq_b, idx_weights_proj;
  std::optional<DeviceCompressor> idx_compressor;
  // MoE (§8).
  DeviceLinear gate;                   // BF16 [E, D]
  DeviceBuffer<float> gate_bias;       // [E] (score routing)
  DeviceBuffer<int32_t> tid2eid;       // [V, k] (hash routing)
  DeviceExperts w1, w3, w2;
  DeviceLinear shared_w1, shared_w3, shared_w2;
};

// The MTP block (§10): one decoder layer (sliding window, score routing) and its input and output
// projections; it shares embed and head with the main model.
struct DeviceMtp {
  DeviceLayer layer;
  DeviceLinear e_proj, h_proj;                     // [D, D]
  DeviceBuffer<__nv_bfloat16> enorm, hnorm, norm;  // [D]
  DeviceHyperConn hc_head;
};

struct DeviceModel {
  ModelConfig cfg;
  DeviceBuffer<__nv_bfloat16> embed;   // [V, D]
  DeviceLinear head;                   // BF16 [V, D]
  DeviceBuffer<__nv_bfloat16> norm;    // [D]
  DeviceHyperConn hc_head;
  std::vector<DeviceLayer> layers;
  std::optional<DeviceMtp> mtp;        // uploaded only for drafting (CudaOptions::draft)
  DeviceBuffer<float> inv_freq_main, inv_freq_compress;  // [rope_dim/2] (§4.4)
  bool has_bf16_act_linears = false;   // a §12 quantised-input linear with BF16 weights exists
  bool fp8_expert_prefill = false;     // CudaOptions::fp8_expert_prefill
  bool fp8_expert_decode = false;      // CudaOptions::fp8_expert_decode
  bool prefill_attention = false;      // CudaOptions::prefill_attention
  size_t bytes = 0;                    // device bytes of all weights
  // Tensor parallelism of attention (layer_pass.h): this rank holds heads() query heads —
  // groups() whole output groups — of the model's (which ones: its WeightShard::tp_rank); wq_b,
  // attn_sink, wo_a and wo_b hold only theirs, and wo_b's output is a partial sum the ranks add.
  int tp = 1;
  int heads() const { return int(cfg.num_attention_heads) / tp; }
  int groups() const { return int(cfg.o_groups) / tp; }

  const float* inv_freq(const LayerSpec& s) const {
    return s.compress_rope ? inv_freq_compress.get() : inv_freq_main.get();
  }
};

// Throws dsv4::Error naming the first unsupported dimension or format (the CUDA kernels need the
// dims of every V4 checkpoint: multiples of 128, head_dim 128 or 512, index_head_dim 128, hc_mult 4).
void check_cuda_supported(const ModelConfig& cfg);

// The routed experts one rank uploads (expert parallelism, docs/parallel.md): ids
// [first, first + count) of every layer's E; count < 0: all of them.
struct ExpertRange {
  int first = 0, count = -1;
};
// Rank `rank` of `ranks`: [⌊rank·E/ranks⌋, ⌊(rank + 1)·E/ranks⌋), every expert on exactly one rank.
ExpertRange expert_range(int E, int rank, int ranks);

// The weights one rank holds: its routed experts, and with tp > 1 its share of the attention heads
// (DeviceModel::tp). The default is the whole model.
struct WeightShard {
  ExpertRange experts;
  int tp = 1, tp_rank = 0;
};

// Device bytes the weights will take (what upload_model allocates); `mtp`: with the MTP block
// (when the checkpoint has one); `shard`: what this rank holds.
size_t device_weight_bytes(const ModelConfig& cfg, const ModelWeights& w, bool mtp, const WeightShard& shard = {});

// Uploads the weights of one rank (`shard`; the MTP block when `mtp` and the checkpoint has it);
// progress to stderr when asked. With `synthetic`, the bytes of every tensor come from it instead
// of the shards (a sparse skeleton is enough: synthetic weights, model/skeleton.h). Allocates on
// the current device.
DeviceModel upload_model(const ModelConfig& cfg, const ModelWeights& w, bool progress, bool mtp,
                         const RandomTensors* synthetic = nullptr, const WeightShard& shard = {});

}  // namespace dsv4::cuda
