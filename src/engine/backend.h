// The one factory every subcommand uses to open a checkpoint on a backend (cpu or cuda) in a
// numerics mode; the backends themselves are src/cpu/cpu_forward.h and src/cuda/cuda_forward.h.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "model/forward.h"

namespace dsv4 {

enum class Backend { kCpu, kCuda };
const char* to_string(Backend b);
bool parse_backend(std::string_view s, Backend* out);  // "cpu" | "cuda"

// The mode a backend runs when none is asked for: cpu is the HF-parity specification (exact),
// cuda runs the reference's quantisation natively and has no other mode (design.md "Numerics").
Numerics default_numerics(Backend b);

// How the cuda backend runs one-token decode steps: replaying a captured CUDA graph (on, the
// default), eagerly (off), or replaying and failing on any host synchronisation or allocation
// inside the step (check: the debug mode of design.md "Speed principles").
enum class CudaGraphMode { kOn, kOff, kCheck };
bool parse_cuda_graph_mode(std::string_view s, CudaGraphMode* out);  // "on" | "off" | "check"

struct BackendOptions {
  Backend backend = Backend::kCpu;
  Numerics numerics = Numerics::kExact;
  int n_threads = 0;  // CPU threads (0: hardware concurrency); the CUDA backend ignores it
  CudaGraphMode cuda_graph = CudaGraphMode::kOn;  // the CPU backend ignores it
  // KV cache (model/forward.h KvCacheInfo); 0 means the backend's default.
  int64_t ctx_size = 0;          // longest sequence (llama.cpp --ctx-size, vLLM --max-model-len)
  int64_t max_sequences = 0;     // sequence slots (vLLM --max-num-seqs)
  int64_t kv_cache_tokens = 0;   // token positions in the block pool (SGLang --max-total-tokens)
  double gpu_memory_utilization = 0.9;  // cuda: share of the device's memory dsv4 may hold (vLLM's name)
  int64_t pass_rows = 0;  // cuda: rows of one forward pass (CudaOptions::max_pass_rows); 0: its default
  // Speculative decoding will be asked for: the cuda backend uploads the MTP block only then (it
  // is a whole decoder layer of GPU memory); the CPU backend maps it anyway and ignores this.
  bool draft = false;
  // cuda: synthetic weights of this seed instead of the shards' bytes (CudaOptions::synthetic_seed);
  // the CPU backend computes from the mapped files and refuses it.
  std::optional<uint64_t> synthetic_seed;
  // cuda: ranks, one GPU each, with the routed experts split over them (CudaOptions::ep; 0: as
  // many as the model needs), attention split over them too (tp: 1 or the rank count) and how they
  // sum; the CPU backend refuses more than one.
  int ep = 0, tp = 1;
  enum class Comm { kAuto, kNccl, kLoopback } comm = Comm::kAuto;
  // cuda: the host tier (CudaOptions::cpu_experts): routed experts per layer kept in host memory
  // and computed by the host's n_threads cores; 0 none, kAutoCpuExperts the fewest that fit.
  int cpu_experts = 0;
  static constexpr int kAutoCpuExperts = -1;
  // cuda, with the host tier: the share of its experts whose decode rows the host's cores compute
  // (CudaOptions::host_cores_share): 1 all (--host-decode cpu), 0 none, the GPU reading their
  // weights over the bus instead (gpu), in between both at once (split).
  double host_cores_share = 1.0;
  // cuda: at most this many bytes of the device (0: no cap), to plan as a smaller card would.
  double gpu_memory_bytes = 0;
  // cuda: MXFP4 experts of long prompt chunks on the FP8 tensor cores (CudaOptions::fp8_expert_prefill);
  // unset: the cuda default (on).
  std::optional<bool> fp8_expert_prefill;
  // cuda: decode rows' MXFP4 experts on the FP8 tensor cores too (CudaOptions::fp8_expert_decode).
  bool fp8_expert_decode = false;
  // cuda: long prompt chunks' queries through the prefill attention kernel (CudaOptions::prefill_attention);
  // unset: the cuda default (on).
  std::optional<bool> prefill_attention;
};

// Error when this build cannot run `o` at all: numerics exact on cuda, or cuda in a build without
// CUDA ("this dsv4 was built without CUDA"). Cheap; make_forward calls it first.
void check_backend(const BackendOptions& o);

// The memory a backend computes from and its measured copy bandwidth ((read + write) bytes per
// second of a large copy: host memcpy on the CPU, device-to-device on CUDA), the denominator of a
// benchmark's roofline share.
struct MemoryBandwidth {
  std::string where;  // "host (N threads)" or the GPU's name
  double bytes_per_s = 0;
};
MemoryBandwidth measure_copy_bandwidth(const BackendOptions& o);
// cuda: bytes per second from pinned host memory into GPU 0 (the bus the host tier's experts
// cross); 0 on the cpu backend.
double measure_bus_bandwidth(const BackendOptions& o);
// cuda: FLOP/s of the dense FP8 GEMM at 8192³ on GPU 0 (cuda/ceilings.h), the denominator of a
// prefill's share of the peak; 0 on the cpu backend.
double measure_fp8_peak(const BackendOptions& o);

// Throws dsv4::Error for bad input: check_backend's cases and the checkpoint's own errors.
std::unique_ptr<Forward> make_forward(const std::filesystem::path& model_dir,
                                      const BackendOptions& o);

}  // namespace dsv4
