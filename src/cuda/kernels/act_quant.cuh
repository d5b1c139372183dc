// Standalone FP8 1×128 activation quantisation of a BF16 matrix (§12, the reference's act_quant),
// for linears whose input is not produced by a kernel that fuses it (rmsnorm.cuh, swiglu.cuh).
// The per-block arithmetic is device_common.cuh's; the GEMVs that consume q are gemv_*.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// Per row, per 128 columns: s = 2^ceil(log2(max(amax, 1e-4)/448)) (UE8M0), q = e4m3(x/s) (round
// to nearest even, saturating at ±448). q/q_scale feed FP8 GEMVs; `fake` = bf16(q·s) is the same
// values in BF16 (exact: an E4M3 value times a power of two fits BF16) for linears whose weights
// are BF16 (BF16 checkpoints in official numerics). At least one of q, fake is set.
struct ActQuantParams {
  const __nv_bfloat16* x = nullptr;  // [rows, K] bf16
  uint8_t* q = nullptr;              // [rows, K] e4m3, or nullptr
  uint8_t* q_scale = nullptr;        // [rows, K/128] ue8m0, with q
  __nv_bfloat16* fake = nullptr;     // [rows, K] bf16, or nullptr; may alias x
  int rows = 0, K = 0;               // K % 128 == 0
};

void launch_act_quant(const ActQuantParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
