// MTP stream plumbing (mtp_streams.cuh): a block per row, 16-byte copies; the add works on 8
// BF16 values per thread.
#include "cuda/kernels/mtp_streams.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void copy_row(const __nv_bfloat16* src, __nv_bfloat16* dst, int64_t width) {
  const uint4* s = reinterpret_cast<const uint4*>(src);
  uint4* d = reinterpret_cast<uint4*>(dst);
  for (int64_t k = threadIdx.x; k < width / 8; k += kThreads) d[k] = s[k];
}

__global__ void keep_streams_kernel(KeepStreamsParams p) {
  wait_for_prior_grids();
  const int r = blockIdx.x, to = p.keep_row[r];
  if (to < 0) return;  // block-uniform
  copy_row(p.X + int64_t(r) * p.width, p.kept + int64_t(to) * p.width, p.width);
}

__global__ void mtp_input_kernel(MtpInputParams p) {
  wait_for_prior_grids();
  const int r = blockIdx.x, from = p.source[r];
  const __nv_bfloat16* src = from >= 0 ? p.X + int64_t(from) * p.width : p.kept + int64_t(-1 - from) * p.width;
  copy_row(src, p.dst + int64_t(r) * p.width, p.width);
}

__global__ void add_to_streams_kernel(AddToStreamsParams p) {
  wait_for_prior_grids();
  const int t = blockIdx.x;
  const int64_t chunks = int64_t(p.n) * p.D / 8;
  for (int64_t k = threadIdx.x; k < chunks; k += kThreads) {
    const int64_t col = (k * 8) % p.D;  // the stream's column: e is shared by all n streams
    uint4* xp = reinterpret_cast<uint4*>(p.X + int64_t(t) * p.n * p.D) + k;
    const uint4 ev = *reinterpret_cast<const uint4*>(p.e + int64_t(t) * p.D + col);
    uint4 xv = *xp;
    __nv_bfloat162* x2 = reinterpret_cast<__nv_bfloat162*>(&xv);
    const __nv_bfloat162* e2 = reinterpret_cast<const __nv_bfloat162*>(&ev);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = __bfloat1622float2(x2[i]), b = __bfloat1622float2(e2[i]);
      x2[i] = __floats2bfloat162_rn(a.x + b.x, a.y + b.y);
    }
    *xp = xv;
  }
}

}  // namespace

void launch_keep_streams(const KeepStreamsParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.X && p.keep_row && p.kept && p.T >= 0 && p.width > 0 && p.width % 8 == 0);
  if (p.T == 0) return;
  launch_kernel(keep_streams_kernel, p.T, kThreads, 0, stream, p);
}

void launch_mtp_input(const MtpInputParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.X && p.kept && p.source && p.dst && p.T >= 0 && p.width > 0 && p.width % 8 == 0);
  if (p.T == 0) return;
  launch_kernel(mtp_input_kernel, p.T, kThreads, 0, stream, p);
}

void launch_add_to_streams(const AddToStreamsParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.X && p.e && p.T >= 0 && p.n >= 1 && p.D > 0 && p.D % 8 == 0);
  if (p.T == 0) return;
  launch_kernel(add_to_streams_kernel, p.T, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
