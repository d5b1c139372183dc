// make_forward: picks the backend and checks that it can run the numerics asked for. The CUDA
// path exists only where the CUDA library is linked (DSV4_WITH_CUDA, set by CMakeLists.txt).
#include "engine/backend.h"

#include "cpu/cpu_forward.h"
#include "util/error.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#ifdef DSV4_WITH_CUDA
#include "cuda/ceilings.h"
#include "cuda/cuda_forward.h"
#endif

namespace dsv4 {

const char* to_string(Backend b) { return b == Backend::kCpu ? "cpu" : "cuda"; }

bool parse_backend(std::string_view s, Backend* out) {
  if (s == "cpu") { *out = Backend::kCpu; return true; }
  if (s == "cuda") { *out = Backend::kCuda; return true; }
  return false;
}

bool parse_cuda_graph_mode(std::string_view s, CudaGraphMode* out) {
  if (s == "on") { *out = CudaGraphMode::kOn; return true; }
  if (s == "off") { *out = CudaGraphMode::kOff; return true; }
  if (s == "check") { *out = CudaGraphMode::kCheck; return true; }
  return false;
}

Numerics default_numerics(Backend b) {
  return b == Backend::kCuda ? Numerics::kOfficial : Numerics::kExact;
}

void check_backend(const BackendOptions& o) {
  if (o.backend == Backend::kCpu) {
    if (o.ep > 1 || o.tp != 1 || o.comm != BackendOptions::Comm::kAuto)
      fail("--gpus, --ep, --tp and --comm are CUDA-only: the cpu backend runs the whole model in one process on one host");
    if (o.cpu_experts != 0 || o.gpu_memory_bytes > 0 || o.host_cores_share != 1.0)
      fail("--cpu-experts, --host-decode and --gpu-memory are CUDA-only: the cpu backend keeps every expert in host "
           "memory already");
    if (o.fp8_expert_prefill.value_or(false))
      fail("--fp8-expert-prefill is CUDA-only: the cpu backend sums its experts in FP32");
    if (o.fp8_expert_decode) fail("--fp8-expert-decode is CUDA-only: the cpu backend sums its experts in FP32");
    if (o.prefill_attention.value_or(false)) fail("--prefill-attention is CUDA-only: the cpu backend has one attention");
    if (o.pass_rows > 0) fail("--pass-rows is CUDA-only: the cpu backend computes a chunk's rows in one go");
    if (o.synthetic_seed)
      fail("--synthetic-weights is CUDA-only: the cpu backend computes from the checkpoint's files "
           "(write them with `dsv4 make-skeleton --random SEED`)");
    return;
  }
  // Checked before the build so that the mistake is named the same way in every build.
  if (o.fp8_expert_decode && !o.fp8_expert_prefill.value_or(true))
    fail("--fp8-expert-decode on needs --fp8-expert-prefill on: decode rows on the FP8 kernel, prompt rows not");
  if (o.numerics != Numerics::kOfficial)
    fail("numerics '", to_string(o.numerics), "' is CPU-only: the cuda backend runs the official "
         "numerics (the reference's FP8/FP4 quantisation, natively)");
#ifndef DSV4_WITH_CUDA
  fail("backend cuda: this dsv4 was built without CUDA (it needs nvcc at configure time and "
       "-DDSV4_CUDA=ON)");
#endif
}

double measure_bus_bandwidth(const BackendOptions& o) {
  check_backend(o);
#ifdef DSV4_WITH_CUDA
  if (o.backend == Backend::kCuda) return cuda::measure_bus_bandwidth(0);
#endif
  return 0;
}

double measure_fp8_peak(const BackendOptions& o) {
  check_backend(o);
#ifdef DSV4_WITH_CUDA
  if (o.backend == Backend::kCuda) return cuda::measure_gemm_peak(0, true);
#endif
  return 0;
}

MemoryBandwidth measure_copy_bandwidth(const BackendOptions& o) {
  check_backend(o);
  if (o.backend == Backend::kCuda) {
#ifdef DSV4_WITH_CUDA
    const cuda::CopyBandwidth b = cuda::measure_copy_bandwidth(0);
    return {b.device, b.bytes_per_s};
#endif
  }
  // One thread's memcpy of 256 MiB, best of 5 (the CPU forward reads weights from many threads,
  // so this is a lower bound on what it can reach; the report says so).
  const size_t bytes = size_t(256) << 20;
  std::vector<char> a(bytes, 1), b(bytes);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return {"host memcpy (one thread)", 2.0 * double(bytes) / best};
}

std::unique_ptr<Forward> make_forward(const std::filesystem::path& model_dir,
                                      const BackendOptions& o) {
  check_backend(o);
  if (o.backend == Backend::kCpu) {
    CpuOptions cpu;
    cpu.numerics = o.numerics;
    cpu.n_threads = o.n_threads;
    cpu.ctx_size = o.ctx_size;
    cpu.max_sequences = o.max_sequences;
    cpu.kv_cache_tokens = o.kv_cache_tokens;
    return make_cpu_forward(model_dir, cpu);
  }
#ifdef DSV4_WITH_CUDA
  CudaOptions cuda;
  cuda.use_graph = o.cuda_graph != CudaGraphMode::kOff;
  cuda.check_step = o.cuda_graph == CudaGraphMode::kCheck;
  cuda.ctx_size = o.ctx_size;
  if (o.pass_rows > 0) cuda.max_pass_rows = int(o.pass_rows);
  cuda.max_sequences = o.max_sequences;
  cuda.kv_cache_tokens = o.kv_cache_tokens;
  cuda.gpu_memory_utilization = o.gpu_memory_utilization;
  cuda.draft = o.draft;
  cuda.synthetic_seed = o.synthetic_seed;
  cuda.ep = o.ep;
  cuda.tp = o.tp;
  cuda.cpu_experts = o.cpu_experts == BackendOptions::kAutoCpuExperts ? CudaOptions::kAutoCpuExperts : o.cpu_experts;
  cuda.host_threads = o.n_threads;
  cuda.host_cores_share = o.host_cores_share;
  if (o.fp8_expert_prefill) cuda.fp8_expert_prefill = *o.fp8_expert_prefill;
  cuda.fp8_expert_decode = o.fp8_expert_decode;
  if (o.prefill_attention) cuda.prefill_attention = *o.prefill_attention;
  cuda.gpu_memory_limit = size_t(o.gpu_memory_bytes);
  cuda.comm = o.comm == BackendOptions::Comm::kNccl       ? CudaOptions::Comm::kNccl
              : o.comm == BackendOptions::Comm::kLoopback ? CudaOptions::Comm::kLoopback
                                                          : CudaOptions::Comm::kAuto;
  return make_cuda_forward(model_dir, cuda);
#else
  throw InternalError("make_forward: check_backend let cuda through in a build without CUDA");
#endif
}

}  // namespace dsv4
