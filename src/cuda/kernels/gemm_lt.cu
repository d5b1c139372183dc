// cuBLASLt GEMMs (see gemm_lt.cuh): per device a handle, a fixed workspace (cuBLASLt's own plus
// the FP32 scale buffers), and a cache of matmul descriptors and chosen algorithms per problem
// shape, so a repeated shape costs one small scale kernel and the cublasLtMatmul call.
#include "cuda/kernels/gemm_lt.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommended size on Hopper
constexpr size_t kXScaleFloats = size_t(1) << 20;       // 4 MiB: 16384 rows at K = 8192 per chunk
constexpr size_t kWScaleFloats = size_t(1) << 18;       // 1 MiB: N·K/128² tile scales (Pro wq_b: 6144)
constexpr int kScaleRowPad = 4;                          // 2-D block scales: K blocks padded to 4

#define DSV4_CUBLAS_CHECK(call)                                                                 \
  do {                                                                                          \
    const cublasStatus_t dsv4_st_ = (call);                                                     \
    if (dsv4_st_ != CUBLAS_STATUS_SUCCESS)                                                      \
      throw ::dsv4::InternalError(::dsv4::cat(__FILE__, ":", __LINE__, ": ", #call, " -> ",     \
                                              cublasLtGetStatusName(dsv4_st_)));                \
  } while (0)

// The scales cuBLASLt reads, from the UE8M0 bytes: weights [nb, l4] (K blocks kb < n_kb, zero
// padding after), activations transposed [n_kb, M] (M contiguous: cuBLAS's "outer-dim-major"
// VEC128 layout).
__global__ void lt_scales_kernel(const uint8_t* __restrict__ w_scale, float* __restrict__ w_out, int nb, int n_kb,
                                 int l4, const uint8_t* __restrict__ x_scale, float* __restrict__ x_out, int M) {
  wait_for_prior_grids();
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t n_w = int64_t(nb) * l4, n_x = int64_t(M) * n_kb;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_w + n_x; i += stride) {
    if (i < n_w) {
      const int64_t b = i / l4, kb = i % l4;
      w_out[i] = kb < n_kb ? e8m0_to_float(w_scale[b * n_kb + kb]) : 0.0f;
    } else {
      const int64_t j = i - n_w, kb = j / M, m = j % M;  // j = kb·M + m: coalesced writes
      x_out[j] = e8m0_to_float(x_scale[m * n_kb + kb]);
    }
  }
}

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // cuBLASLt returned an algorithm
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer<uint8_t> workspace{kLtWorkspaceBytes};
  DeviceBuffer<float> w_scale{kWScaleFloats}, x_scale{kXScaleFloats};
  // (fp8, out_bf16, M, N, K, ldx, ldy, pointer alignment) → plan; descriptors hold the scale
  // pointers above, which never move.
  std::map<std::tuple<bool, bool, int, int, int, int64_t, int64_t, uint32_t>, std::unique_ptr<Plan>> plans;
  DeviceState() { DSV4_CUBLAS_CHECK(cublasLtCreate(&handle)); }
};

std::mutex g_mutex;
// Per device, created on first use and released by an exit handler: registered after the CUDA
// runtime's own (the runtime initialised before the first state exists), it runs before the
// runtime tears the context down — a static destructor might run after — so the workspace is
// freed, not leaked (compute-sanitizer's leak check).
std::vector<DeviceState*>& states() {
  static auto* v = new std::vector<DeviceState*>();
  return *v;
}

void release_states() {
  std::lock_guard lock(g_mutex);
  for (DeviceState*& s : states()) {
    if (!s) continue;
    cublasLtDestroy(s->handle);
    delete s;
    s = nullptr;
  }
}

DeviceState& state_locked(cudaStream_t stream) {
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  auto& v = states();
  if (size_t(dev) >= v.size()) v.resize(size_t(dev) + 1, nullptr);
  if (!v[size_t(dev)]) {
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (stream) DSV4_CUDA_CHECK(cudaStreamIsCapturing(stream, &cap));
    DSV4_CHECK_MSG(cap == cudaStreamCaptureStatusNone,
                   "the cuBLASLt workspace would be allocated inside a CUDA-graph capture: call "
                   "matmul_reserve() (lt_reserve) before capturing");
    static const bool registered = std::atexit(release_states) == 0;
    (void)registered;
    v[size_t(dev)] = new DeviceState();
  }
  return *v[size_t(dev)];
}

// The largest power of two (≤ 256, cudaMalloc's) dividing every address: cuBLASLt's heuristic
// assumes 256-byte aligned operands unless told otherwise.
uint32_t alignment_of(std::initializer_list<const void*> ptrs) {
  uint32_t a = 256;
  for (const void* q : ptrs)
    while (a > 1 && reinterpret_cast<uintptr_t>(q) % a != 0) a /= 2;
  return a;
}

const Plan& plan_for(DeviceState& s, const LtGemmParams& p, int M, int64_t ldx, int64_t ldy, uint32_t align) {
  auto& slot = s.plans[{p.fp8, p.out_bf16, M, p.N, p.K, ldx, ldy, align}];
  if (slot) return *slot;
  slot = std::make_unique<Plan>();
  Plan& pl = *slot;
  DSV4_CUBLAS_CHECK(cublasLtMatmulDescCreate(&pl.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  DSV4_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  DSV4_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const cudaDataType_t in_t = p.fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF, out_t = p.out_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  if (p.fp8) {
    const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    const float* a_scale = s.w_scale.get();
    const float* b_scale = s.x_scale.get();
    // A mode the library does not know is refused here: report "no algorithm", not an error.
    if (cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof a_mode) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof b_mode) !=
            CUBLAS_STATUS_SUCCESS)
      return pl;
    DSV4_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof a_scale));
    DSV4_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof b_scale));
  }
  DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.a, in_t, uint64_t(p.K), uint64_t(p.N), int64_t(p.K)));
  DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.b, in_t, uint64_t(p.K), uint64_t(M), ldx));
  DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.d, out_t, uint64_t(p.N), uint64_t(M), ldy));
  cublasLtMatmulPreference_t pref = nullptr;
  DSV4_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kLtWorkspaceBytes;
  DSV4_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    DSV4_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align));
  // Split-K partial sums only in FP32 (the compute type): the in-place and output-type schemes
  // add the partials in the output's BF16, one more rounding per split that no reference has.
  const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  DSV4_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions, sizeof reductions));
  cublasLtMatmulHeuristicResult_t result{};
  int n_results = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(s.handle, pl.desc, pl.a, pl.b, pl.d, pl.d, pref, 1, &result, &n_results);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && n_results > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    pl.algo = result.algo;
    pl.ok = true;
  }
  return pl;
}

}  // namespace

size_t lt_workspace_bytes() {
  return kLtWorkspaceBytes + (kXScaleFloats + kWScaleFloats) * sizeof(float);
}

void lt_reserve() {
  std::lock_guard<std::mutex> lock(g_mutex);
  (void)state_locked(nullptr);
}

bool lt_gemm(const LtGemmParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.x && p.y);
  DSV4_CHECK_MSG(p.M >= 1 && p.N >= 1 && p.K >= 1, "cuBLASLt GEMM M=", p.M, " N=", p.N, " K=", p.K);
  DSV4_CHECK_MSG(!p.fp8 || (p.ldx == 0 && p.ldy == 0), "cuBLASLt GEMM: row strides are for BF16 operands");
  const int64_t ldx = p.ldx ? p.ldx : p.K, ldy = p.ldy ? p.ldy : p.N;
  DSV4_CHECK_MSG(ldx >= p.K && ldy >= p.N, "cuBLASLt GEMM ldx=", ldx, " ldy=", ldy, " K=", p.K, " N=", p.N);
  const int n_kb = p.K / int(kFP8BlockSize), nb = (p.N + int(kFP8BlockSize) - 1) / int(kFP8BlockSize);
  const int l4 = (n_kb + kScaleRowPad - 1) / kScaleRowPad * kScaleRowPad;
  if (p.fp8) {
    DSV4_CHECK(p.w_scale && p.x_scale);
    DSV4_CHECK_MSG(p.K % int(kFP8BlockSize) == 0, "FP8 GEMM K=", p.K);
    if (size_t(nb) * l4 > kWScaleFloats) return false;  // a matrix larger than any V4 linear
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& s = state_locked(stream);
  // Rows per call: as many as the activation-scale buffer holds.
  const int max_rows = p.fp8 ? int(std::min<size_t>(kXScaleFloats / size_t(n_kb), size_t(p.M))) : p.M;
  const int in_bytes = p.fp8 ? 1 : 2, out_bytes = p.out_bf16 ? 2 : 4;
  struct Chunk {
    int r0, M;
    const uint8_t* x;
    uint8_t* y;
    const Plan* plan;
  };
  std::vector<Chunk> chunks;  // every chunk is checked before the first is enqueued
  for (int r0 = 0; r0 < p.M; r0 += max_rows) {
    Chunk c{r0, std::min(max_rows, p.M - r0), static_cast<const uint8_t*>(p.x) + r0 * ldx * in_bytes,
            static_cast<uint8_t*>(p.y) + r0 * ldy * out_bytes, nullptr};
    // With explicit row strides every row must be as aligned as the first: the strides count too.
    const auto stride = [](int64_t ld, int64_t given, int bytes) {
      return reinterpret_cast<const void*>(given ? ld * bytes : 256);
    };
    const uint32_t align =
        alignment_of({p.w, c.x, c.y, stride(ldx, p.ldx, in_bytes), stride(ldy, p.ldy, out_bytes)});
    if (align < 16) return false;  // tensor-core GEMMs load 16-byte vectors
    c.plan = &plan_for(s, p, c.M, ldx, ldy, align);
    if (!c.plan->ok) return false;
    chunks.push_back(c);
  }
  bool weights_scaled = false;
  for (const Chunk& c : chunks) {
    if (p.fp8) {
      const int w_blocks = weights_scaled ? 0 : nb;  // the weight scales once per call
      const int64_t n = int64_t(w_blocks) * l4 + int64_t(c.M) * n_kb;
      const int threads = 256, blocks = int(std::min<int64_t>((n + threads - 1) / threads, 1024));
      launch_kernel(lt_scales_kernel, blocks, threads, 0, stream, p.w_scale, s.w_scale.get(), w_blocks, n_kb, l4,
                    p.x_scale + int64_t(c.r0) * n_kb, s.x_scale.get(), c.M);
      weights_scaled = true;
    }
    const float alpha = 1.0f, beta = 0.0f;
    DSV4_CUBLAS_CHECK(cublasLtMatmul(s.handle, c.plan->desc, &alpha, p.w, c.plan->a, c.x, c.plan->b, &beta, c.y,
                                     c.plan->d, c.y, c.plan->d, &c.plan->algo, s.workspace.get(), kLtWorkspaceBytes,
                                     stream));
  }
  return true;
}

}  // namespace dsv4::cuda
