// What `dsv4 inspect` reports about a model, computed from the config alone (family, schedule,
// parameter counts, §13 KV-cache sizes) plus a GPU memory plan from weight bytes. Checking the
// tensors themselves is weights.cpp's job; printing is src/cli/cmd_inspect.cpp's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/config.h"

namespace dsv4 {

struct ParamCounts {
  int64_t total = 0;       // main model (embed, layers, head), the number model cards quote
  int64_t active = 0;      // per token: k of E routed experts per layer, one embedding row
  int64_t mtp = 0;         // the mtp.* blocks, not included in total
  int64_t routed = 0;      // routed-expert parameters of the main layers
};
// Logical parameters (packed FP4 bytes count two; block scales are not parameters).
ParamCounts count_parameters(const ModelConfig& cfg);

// Floating-point operations of one prefill of `prompt` tokens, the numerator of issue 13's share
// of the FP8 peak: 2 per active parameter per token (ParamCounts::active without the embedding row,
// which is a lookup, and with the LM head once: a prefill computes the last token's logits only),
// plus attention per main layer for the token at position t: 4·H·d per attended key (Q·K and P·V)
// over the min(t+1, W) window keys and the compressed entries (HCA: ⌊(t+1)/128⌋ of them; CSA: the
// indexer's min(K_top, ⌊(t+1)/4⌋)), and for CSA the indexer's 2·Hi·di per visible entry (§6, §7).
double prefill_flops(const ModelConfig& cfg, int64_t prompt);

// "Flash", "Pro" (the §1.1 shapes) or "other".
std::string model_family(const ModelConfig& cfg);

// §13 KV cache for the main layers, amortised bytes per token and fixed per-sequence rings.
struct KvCacheSize {
  double bf16_per_token = 0;        // BF16 rows (1024 B main, 256 B indexer)
  double fp8_per_token = 0;         // FP8 NoPE rows (584 B) + FP8 indexer keys (132 B)
  double fp8_mxfp4_per_token = 0;   // FP8 rows + MXFP4 indexer keys (68 B) — the CUDA layout
  double ring_bf16_bytes = 0;       // sliding-window rings, W rows per main layer, BF16
  double ring_fp8_bytes = 0;        // the same rings in the FP8 row layout
};
KvCacheSize kv_cache_size(const ModelConfig& cfg);

// Memory plan for n GPUs: routed experts split evenly (expert parallel), everything else
// replicated on every GPU, FP8 + MXFP4-indexer KV cache for one sequence of `context` tokens.
struct GpuPlanRow {
  int n_gpus = 0;
  double weights_per_gpu = 0;   // bytes
  double kv_per_gpu = 0;        // bytes at `context`
  double reserve = 0;           // runtime allowance (activations, graphs, workspaces)
  bool fits = false;
  int64_t max_context = 0;      // longest single sequence that fits (0 when weights don't)
};
// `expert_bytes` / `other_bytes`: weight bytes of routed experts / everything else.
std::vector<GpuPlanRow> gpu_plan(const ModelConfig& cfg, double expert_bytes, double other_bytes, int64_t context,
                                 double gpu_bytes);
// The fewest GPUs of a plan that hold the model (0: not even the largest row does).
int gpus_needed(const std::vector<GpuPlanRow>& plan);

// A checkpoint's weight bytes as a GPU holds them (as stored, but int64 index tables as int32):
// routed experts (tensors under .ffn.experts.) and the rest. The CUDA upload of the same
// checkpoint with its MTP block is exactly this plus the two RoPE tables it computes
// (tests/cuda/synthetic_weights.cpp checks it on the full-size Flash layout).
// Without `with_mtp` the mtp.* tensors are left out, as the CUDA backend leaves them when nothing
// drafts.
struct WeightBytesSplit {
  double experts = 0, other = 0;
};
WeightBytesSplit split_weight_bytes(const Checkpoint& ck, bool with_mtp = true);

// One GPU with a host tier (issue 17): `host_per_layer` routed experts of every layer that has
// them stay in host memory, the rest of the weights and the KV cache of one sequence of
// `context` tokens on the GPU. host_per_layer < 0 asks for the fewest that fit.
struct HostTierPlan {
  int64_t experts_per_layer = 0;    // routed experts per layer (n_routed_experts)
  int64_t moe_layers = 0;           // layers with routed experts, main and MTP
  int64_t host_per_layer = 0;       // of each layer's experts, in host memory
  double bytes_per_expert = 0;      // one expert's w1 + w2 + w3 with their scales
  double host_bytes = 0;            // weights in host memory
  double gpu_weights = 0;           // weights on the GPU
  double kv = 0, reserve = 0;       // as GpuPlanRow
  bool fits = false;                // gpu_weights + kv + reserve <= gpu_bytes (false when even all
                                    // experts on the host leave too little)
  // Host-expert bytes a decode token reads on average: each main layer routes the token to k of
  // E experts, host_per_layer / E of them on the host (uniform routing; hash layers route by id).
  double host_bytes_per_token = 0;
};
HostTierPlan host_tier_plan(const ModelConfig& cfg, double expert_bytes, double other_bytes, int64_t context,
                            double gpu_bytes, int64_t host_per_layer);

}  // namespace dsv4
