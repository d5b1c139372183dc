// Weight storage formats and the scalar dequantisers that are the ground truth for every kernel
// (§11.2 FP8 128×128 blocks, §11.3 MXFP4, §11.6 NVFP4), plus the quantisers the official numerics
// need (§12: FP8 1×128 activations, FP8 1×64 KV NoPE, FP4 1×32 indexer). Scalar element
// conversions live in util/float_formats.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

enum class WeightFormat {
  kF32, kBF16, kF16,  // plain row-major
  kFP8Block,          // E4M3 [rows, cols] + scale [ceil(rows/128), ceil(cols/128)] (E8M0 or F32)
  kMXFP4,             // packed E2M1 [rows, cols/2] (low nibble = even col) + E8M0 [rows, cols/32]
  kNVFP4,             // packed E2M1 [rows, cols/2] + E4M3 [rows, cols/16] + F32 global scale
  kI64, kI32,         // integer tables (tid2eid)
};
const char* to_string(WeightFormat f);

constexpr int64_t kFP8BlockSize = 128;   // §11.2: 128×128 weight tiles
constexpr int64_t kMXFP4BlockSize = 32;  // §11.3: one E8M0 scale per 32 inputs of a row
constexpr int64_t kNVFP4BlockSize = 16;  // §11.6: one E4M3 scale per 16 inputs of a row
constexpr int64_t kActBlockSize = 128;   // §12: FP8 activations, per token, per 128 columns
constexpr int64_t kKvQuantBlock = 64;    // §12: KV NoPE dims, 1×64 blocks
constexpr int64_t kIndexerQuantBlock = 32;  // §12: indexer q/k FP4, 1×32 blocks
constexpr float kActAmaxFloor = 1e-4f;   // §12: scale uses max(amax, 1e-4)

// A read-only view of a weight matrix in its on-disk format. 1-D tensors are rows = 1.
// Views point into the mmapped checkpoint (or into buffers owned by a test).
struct WeightMatrix {
  std::string name;
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0, cols = 0;       // logical [out, in]
  const uint8_t* data = nullptr;
  const uint8_t* scale = nullptr;   // block scales (see WeightFormat); nullptr for plain formats
  bool scale_is_f32 = false;        // FP8 block scales stored as F32 instead of E8M0
  float global_scale = 1.0f;        // NVFP4 weight_scale_2
  float input_scale = 0.0f;         // NVFP4 input_scale: activation scale, never used on weights
  // The checkpoint tensors behind data and scale ("….weight", "….scale" / "….weight_scale"; the
  // scale's empty when unscaled), so that a source other than the shards can produce their bytes
  // (model/skeleton.h RandomTensors: synthetic weights).
  std::string data_tensor = {}, scale_tensor = {};

  bool present() const { return data != nullptr; }
  // Dequantise rows [r0, r0+n) into out[n][cols] (FP32). The ground truth for kernels.
  void dequant_rows(int64_t r0, int64_t n, float* out) const;
  float at(int64_t r, int64_t c) const;        // one element, dequantised
  // Dequantise columns [c0, c0+n) of row r into out[n]. A UE8M0 scale byte 0xFF (NaN) is
  // rejected with dsv4::Error naming the tensor and the scale position.
  void dequant_block(int64_t r, int64_t c0, int64_t n, float* out) const;
  int64_t int_at(int64_t r, int64_t c) const;  // kI64 / kI32 only
};

// On-disk layouts implied by a logical [rows, cols] matrix; model/weights.cpp checks every
// checkpoint tensor against these before any WeightMatrix is built, so a layout mismatch is an
// error and never an out-of-bounds read.
std::vector<int64_t> packed_data_shape(WeightFormat f, int64_t rows, int64_t cols);  // FP4: cols/2
std::vector<int64_t> scale_shape(WeightFormat f, int64_t rows, int64_t cols);  // {} when unscaled
int64_t scale_numel(WeightFormat f, int64_t rows, int64_t cols);

// ---- Quantisers (official numerics, §12). All operate in place on FP32 data and leave the
// dequantised ("fake-quant") values, which is what the reference computes with. ----

// FP8 E4M3 round-trip of n values in blocks of `block` with UE8M0 scale
// 2^ceil(log2(max(amax,1e-4)/448)). Used for activations (block 128) and KV NoPE (block 64).
void fp8_roundtrip_blocks(float* x, int64_t n, int64_t block);
// FP4 E2M1 round-trip in blocks of 32, scale 2^ceil(log2(max(amax, 6·2^-126)/6)).
void fp4_roundtrip_blocks(float* x, int64_t n, int64_t block);

// ---- Packers (inverse of dequant): for fixtures, skeletons and tests. ----
struct PackedWeight {
  std::vector<uint8_t> data;
  std::vector<uint8_t> scale;
};
// FP8 128×128 blocks with UE8M0 scales: scale = 2^ceil(log2(amax/448)) per tile.
PackedWeight pack_fp8_block(const float* w, int64_t rows, int64_t cols);
// MXFP4 with UE8M0 per-32 scales: scale = 2^ceil(log2(amax/6)) per block.
PackedWeight pack_mxfp4(const float* w, int64_t rows, int64_t cols);
// NVFP4 (§11.6): E4M3 per-16 scales = amax/6/global_scale, E2M1 values relative to scale·global.
PackedWeight pack_nvfp4(const float* w, int64_t rows, int64_t cols, float global_scale);

}  // namespace dsv4
