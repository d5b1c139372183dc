// The ceilings of ceilings.h, each timed with CUDA events after one warm-up run.
#include "cuda/ceilings.h"

#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "util/error.h"

namespace dsv4::cuda {

namespace {

// The same error as the backend's when there is no GPU, instead of the first CUDA call's.
void use_device(int device) {
  if (!device_available()) fail("--backend cuda: no CUDA device is available");
  DSV4_CUDA_CHECK(cudaSetDevice(device));
}

// Best time in seconds of five runs of `run` on the current device's null stream, after one
// warm-up run, timed with CUDA events.
template <typename F>
double best_seconds(F&& run) {
  cudaEvent_t start = nullptr, stop = nullptr;
  DSV4_CUDA_CHECK(cudaEventCreate(&start));
  DSV4_CUDA_CHECK(cudaEventCreate(&stop));
  run();
  float best_ms = 1e30f;
  for (int i = 0; i < 5; ++i) {
    DSV4_CUDA_CHECK(cudaEventRecord(start));
    run();
    DSV4_CUDA_CHECK(cudaEventRecord(stop));
    DSV4_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return double(best_ms) * 1e-3;
}

}  // namespace

CopyBandwidth measure_copy_bandwidth(int device, size_t bytes) {
  use_device(device);
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceBuffer<uint8_t> a(bytes), b(bytes);
  const double s = best_seconds(
      [&] { DSV4_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice)); });
  return {prop.name, 2.0 * double(bytes) / s};
}

double measure_bus_bandwidth(int device, size_t bytes) {
  use_device(device);
  PinnedBuffer<uint8_t> host(bytes);
  std::memset(host.get(), 1, bytes);
  DeviceBuffer<uint8_t> dev(bytes);
  const double s = best_seconds(
      [&] { DSV4_CUDA_CHECK(cudaMemcpyAsync(dev.get(), host.get(), bytes, cudaMemcpyHostToDevice)); });
  return double(bytes) / s;
}

namespace {

void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) throw InternalError(cat("measure_gemm_peak: ", what, " -> ", cublasLtGetStatusName(st)));
}

// The cuBLASLt objects of one measurement, destroyed however it ends.
struct LtObjects {
  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t in = nullptr, out = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtObjects() = default;
  LtObjects(const LtObjects&) = delete;
  LtObjects& operator=(const LtObjects&) = delete;
  ~LtObjects() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (out) cublasLtMatrixLayoutDestroy(out);
    if (in) cublasLtMatrixLayoutDestroy(in);
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (lt) cublasLtDestroy(lt);
  }
};

}  // namespace

double measure_gemm_peak(int device, bool fp8, int n) {
  use_device(device);
  const size_t elems = size_t(n) * size_t(n), in_bytes = fp8 ? 1 : 2;
  // Random bytes, A = B: finite E4M3 (0x7f and 0xff are NaN), or BF16 with |x| in [2^-7, 2).
  std::vector<uint8_t> host(elems * in_bytes);
  std::mt19937 rng(20261205);
  for (size_t i = 0; i < host.size(); ++i) {
    uint8_t b = uint8_t(rng());
    if (fp8 && (b & 0x7f) == 0x7f) b ^= 1;
    if (!fp8 && i % 2 == 1) b = uint8_t((b & 0x80) | 0x3c | (b & 0x01));  // the high byte: sign, exponent
    host[i] = b;
  }
  DeviceBuffer<uint8_t> a(host.size()), d(elems * 2), ws(size_t(32) << 20);
  DSV4_CUDA_CHECK(cudaMemcpy(a.get(), host.data(), host.size(), cudaMemcpyHostToDevice));
  LtObjects o;
  cublas_check(cublasLtCreate(&o.lt), "cublasLtCreate");
  cublas_check(cublasLtMatmulDescCreate(&o.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublas_check(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "transa");
  cublas_check(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "transb");
  cublas_check(cublasLtMatrixLayoutCreate(&o.in, fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF, n, n, n), "input layout");
  cublas_check(cublasLtMatrixLayoutCreate(&o.out, CUDA_R_16BF, n, n, n), "output layout");
  cublas_check(cublasLtMatmulPreferenceCreate(&o.pref), "preference");
  const uint64_t wsb = ws.size();
  cublas_check(cublasLtMatmulPreferenceSetAttribute(o.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb),
               "workspace");
  cublasLtMatmulHeuristicResult_t h{};
  int found = 0;
  cublas_check(cublasLtMatmulAlgoGetHeuristic(o.lt, o.desc, o.in, o.in, o.out, o.out, o.pref, 1, &h, &found), "heuristic");
  if (found == 0) fail("measure_gemm_peak: cuBLASLt has no algorithm for the ", n, "³ ", fp8 ? "FP8" : "BF16", " GEMM");
  const float alpha = 1.0f, beta = 0.0f;
  const double s = best_seconds([&] {
    cublas_check(cublasLtMatmul(o.lt, o.desc, &alpha, a.get(), o.in, a.get(), o.in, &beta, d.get(), o.out, d.get(), o.out,
                                &h.algo, ws.get(), wsb, nullptr),
                 "matmul");
  });
  return 2.0 * double(n) * double(n) * double(n) / s;
}

}  // namespace dsv4::cuda
