// Test fixtures of the routed-MoE kernels (moe_grouped_gemm.cpp, moe_step.cpp): random packed
// expert tensors with host copies for the scalar reference, and the dispatch plan by its
// definition (moe_dispatch.cuh) computed on the host.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/kernels/gemv_mxfp4.cuh"
#include "model/quant.h"
#include "util/float_formats.h"
#include "util/error.h"

namespace dsv4::cuda::test {

// Fast random bytes (the Flash-shaped tensors are a GiB): xorshift64* from `seed`.
inline void fill_random(std::vector<uint8_t>& v, uint64_t seed) {
  uint64_t s = seed | 1;
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const uint64_t r = s * 0x2545F4914F6CDD1Dull;
    std::memcpy(v.data() + i, &r, 8);
  }
  for (; i < v.size(); ++i) v[i] = uint8_t(i * 131 + seed);
}

// Weight k of a row as the grouped MXFP4 prefill kernel hands it to the tensor core
// (moe_grouped_wgmma.cuh): w = e2m1·2^(s−127) of a block whose group's largest scale byte is
// top, as the E4M3 value of w·2^(133 − top) (rounded to nearest even), scaled back. Equal to w
// when the block's scale is at most 14 binades below top.
inline double folded_mxfp4_weight(float w, int top) {
  return std::ldexp(double(round_e4m3(float(std::ldexp(double(w), 133 - top)))), top - 133);
}

// E experts of one tensor [E, N, K], packed (MXFP4 or NVFP4), host bytes and device copies.
struct ExpertTensor {
  ExpertWeightFormat fmt = ExpertWeightFormat::kMXFP4;
  int E = 0, N = 0, K = 0;
  std::vector<uint8_t> w, s;  // [E, N, K/2] e2m1; [E, N, K/block] ue8m0 or e4m3
  std::vector<float> gs;      // [E] NVFP4 weight_scale_2
  DeviceBuffer<uint8_t> dw, ds;
  DeviceBuffer<float> dgs;

  // Scale byte maps for make(): MXFP4 UE8M0 within ±spread binades of 2^centre; NVFP4 any
  // finite E4M3 (NaN codes moved to their neighbour).
  static auto ue8m0_around(int centre, int spread) {
    return [=](uint8_t r) { return uint8_t(127 + centre - spread + r % (2 * spread + 1)); };
  }
  static auto any_e4m3() {
    return [](uint8_t r) { return (r & 0x7f) == 0x7f ? uint8_t(r ^ 1) : r; };
  }

  int64_t block() const { return fmt == ExpertWeightFormat::kNVFP4 ? kNVFP4BlockSize : kMXFP4BlockSize; }
  // Random codes (every E2M1 value appears); scale bytes scale_of(a random byte), globals from
  // `global()`; then the device copies.
  template <typename ScaleOf, typename Global>
  void make(ExpertWeightFormat f, int e, int n, int k, uint64_t seed, ScaleOf scale_of, Global global) {
    fmt = f;
    E = e;
    N = n;
    K = k;
    w.resize(size_t(E) * N * K / 2);
    fill_random(w, seed);
    s.resize(size_t(E) * N * size_t(K / block()));
    fill_random(s, seed ^ 0x5851F42D4C957F2Dull);
    for (auto& b : s) b = scale_of(b);
    gs.resize(size_t(E));
    for (auto& g : gs) g = global();
    dw = DeviceBuffer<uint8_t>(w);
    ds = DeviceBuffer<uint8_t>(s);
    dgs = DeviceBuffer<float>(gs);
  }
  // The scalar ground truth's view of expert e (model/quant.h).
  WeightMatrix view(int e) const {
    WeightMatrix m;
    m.name = cat("test.experts.", e, ".w");
    m.format = fmt == ExpertWeightFormat::kNVFP4 ? WeightFormat::kNVFP4 : WeightFormat::kMXFP4;
    m.rows = N;
    m.cols = K;
    m.data = w.data() + size_t(e) * N * K / 2;
    m.scale = s.data() + size_t(e) * N * size_t(K / block());
    m.global_scale = fmt == ExpertWeightFormat::kNVFP4 ? gs[size_t(e)] : 1.0f;
    return m;
  }
};

// The dispatch plan by its definition (moe_dispatch.cuh): selections expert by expert,
// ascending (row, slot) inside an expert, rows >= n_real and ids outside [0, E) left out.
struct HostPlan {
  std::vector<int32_t> offsets, sel_row, sel_slot, pos_of;
  int n_sel() const { return offsets.empty() ? 0 : offsets.back(); }
  int expert_of(int j) const {  // the expert whose grouped rows hold j
    int e = 0;
    while (offsets[size_t(e) + 1] <= j) ++e;
    return e;
  }
};
inline HostPlan host_plan(const std::vector<int32_t>& idx, int T, int k, int n_real, int E) {
  HostPlan p;
  p.offsets.assign(size_t(E) + 1, 0);
  p.pos_of.assign(size_t(T) * k, -1);
  for (int e = 0; e < E; ++e) {
    for (int t = 0; t < n_real; ++t)
      for (int i = 0; i < k; ++i)
        if (idx[size_t(t) * k + i] == e) {
          p.pos_of[size_t(t) * k + i] = int32_t(p.sel_row.size());
          p.sel_row.push_back(t);
          p.sel_slot.push_back(i);
        }
    p.offsets[size_t(e) + 1] = int32_t(p.sel_row.size());
  }
  return p;
}

}  // namespace dsv4::cuda::test
