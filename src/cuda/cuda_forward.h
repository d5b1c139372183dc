// The CUDA backend's entry point: a Forward (model/forward.h) that runs the whole model on one
// Hopper GPU in the official numerics (design.md "Numerics"). How a step runs is cuda_forward.cpp's,
// where the weights live device_model.h's.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "model/forward.h"

namespace dsv4 {

struct CudaOptions {
  int device = 0;            // CUDA device ordinal
  bool use_graph = true;     // one-token decode steps replay one captured CUDA graph
  bool check_step = false;   // debug: fail when a decode step syncs with the host or allocates
  bool progress = true;      // print weight-upload progress to stderr
  // One GPU: the stretches of a pass that depend on nothing beside them (the shared expert, the
  // attention's kv path) run on a second stream (step.h: fork_branch). Off only to show that
  // they change no bit (tests/cuda/batched_runtime.cpp).
  bool graph_branches = true;
  // KV cache (engine/backend.h BackendOptions); 0: derived from the free memory.
  int64_t ctx_size = 0, max_sequences = 0, kv_cache_tokens = 0;
  double gpu_memory_utilization = 0.9;
  // A cap on the device memory dsv4 may hold, in bytes (0: none): to plan as a smaller card would,
  // e.g. an H100's 80 GB on an H200.
  size_t gpu_memory_limit = 0;
  // Rows of one pass over the model (prefill chunks + decode rows). More rows per pass give each
  // routed expert more rows per GEMM: an 8K prompt on the 6-layer Flash stack prefilled in 0.204 s
  // with 2,048, 0.144 s with 8,192 (H100, bench/results/2026-12-05-h100-pass-rows.md), for 2.8 GiB
  // more step buffers. 8,192 is also SGLang's chunked prefill on 80-160 GB cards.
  int max_pass_rows = 8192;
  // Upload the MTP block (§10) so that the forward can draft (speculative decoding); without it
  // can_draft() is false and the block takes no GPU memory.
  bool draft = false;
  // Synthetic weights: every tensor gets the values `dsv4 make-skeleton --random SEED` would
  // write, generated at upload (model/skeleton.h RandomTensors), so a sparse skeleton (headers
  // only) is a full-size random model that needs no weight files.
  std::optional<uint64_t> synthetic_seed;
  // Expert parallelism (docs/parallel.md): the routed experts split over `ep` ranks,
  // everything else on each, the ranks' routed outputs summed after every MoE. Ranks run on
  // devices device, device + 1, … and sum through NCCL; with kLoopback all run on `device` as
  // virtual ranks summed by one kernel (collective.h), which is how tests compare several ranks
  // with one on one GPU and how the layer's cost is measured there. kNccl with ep = 1 runs the
  // one-rank NCCL path (pick-order outputs and the collective) instead of the plain one.
  // 0: the fewest GPUs that hold the model (inspect's plan for GPUs of this device's size).
  int ep = 1;
  // Tensor parallelism of attention over the same ranks (1 or ep): each rank holds the query heads
  // of o_groups/tp output groups (wq_b, attn_sink, wo_a, wo_b cut; the rest of attention, its KV
  // and compressors whole) and the ranks add their wo_b partial sums in FP32.
  int tp = 1;
  enum class Comm { kAuto, kNccl, kLoopback } comm = Comm::kAuto;  // kAuto: NCCL for several ranks
  // The host tier (cuda/host_experts.h; one GPU): this many routed experts of every MoE layer, the
  // highest ids, stay in pinned host memory and run on the host's cores. 0: none; kAutoCpuExperts:
  // the fewest that let the rest fit.
  int cpu_experts = 0;
  static constexpr int kAutoCpuExperts = -1;
  int host_threads = 0;  // host tier threads; 0: every hardware thread
  // The share of the host tier's experts (the highest ids) whose decode rows the host's cores
  // compute; the GPU copies the rest over the bus and runs them, at the same time (host_experts.h).
  double host_cores_share = 1.0;
  // MXFP4 routed experts of long prompt chunks on the FP8 tensor cores (moe_grouped_wgmma.cuh, the
  // reference's own arithmetic: FP4 upcast to FP8), every other row on the F16 kernels
  // (moe_step.h moe_row_runs): faster prefill; a row's bits follow its chunk, not the rest of the step.
  bool fp8_expert_prefill = true;
  // With fp8_expert_prefill, every row's MXFP4 experts on the FP8 tensor cores, decode rows in
  // 8-row items (moe_grouped_wgmma.cu's DecodeShape): one kernel family for all rows, so no row's
  // GPU-expert sums depend on its chunk. (The host tier's experts still follow the pass size:
  // small passes compute them on the CPU in FP32, host_experts.h.) Off by default: measured on an
  // H100, its grouped GEMMs read the weights at 45 % of copy at batch 64 against the F16 decode
  // kernel's 64 %, and the 6-layer stack's batch-64 step took 14.3 ms against 11.1 ms
  // (bench/results/2026-12-05-h100-fold-and-wgmma-skinny.md).
  bool fp8_expert_decode = false;
  // The queries of long prompt chunks through the prefill attention kernel over BF16 key rows
  // gathered once per chunk (sparse_attention_prefill.cuh, kv_gather.cuh): 3.4-7.8x the decode
  // kernel on those rows (H100). Its sums are chained as short as the decode kernel's, so it
  // rounds no more often than that kernel (bench/results/2026-12-05-h100-prefill-attention-chains.md).
  bool prefill_attention = true;
};

// Loads and validates the checkpoint, checks that it fits (error naming needed and free bytes),
// uploads the weights in their checkpoint precision. Throws dsv4::Error for unsupported shapes.
std::unique_ptr<Forward> make_cuda_forward(const std::filesystem::path& model_dir,
                                           const CudaOptions& options);

}  // namespace dsv4
