// NVFP4 (§11.6) through the whole CPU forward: a random tiny model whose NVFP4-selected linears
// (routed experts; every linear; or dense linears named in quantized_layers) are NVFP4, against
// the same model with those linears stored as their dequantised F32 values (each row 0 starting
// with a hand-computed vector), in exact and official numerics (which quantise activations by the
// linear's role, never by its format).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/cpu_forward.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/quant.h"
#include "model/safetensors_writer.h"
#include "model/weights.h"
#include "support/sanitizer.h"
#include "support/test_util.h"
#include "support/tiny_model.h"
#include "util/float_formats.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

std::vector<float> all_logits(Forward& f, const std::vector<int32_t>& tokens) {
  auto seq = f.new_sequence(int64_t(tokens.size()));
  std::vector<float> logits;
  ForwardItem item;
  item.seq = seq.get();
  item.tokens = std::span<const int32_t>(tokens);
  item.all_logits = true;
  item.logits = &logits;
  std::span<ForwardItem> batch(&item, 1);
  f.forward(batch);
  return logits;
}

// A hand-made NVFP4 vector (§11.6, packing as §11.3), written over the first 32 inputs (two blocks of
// 16) of row 0 of every NVFP4 linear, in the NVFP4 model as bytes and in the reference as these
// hand-computed values — independent of pack_nvfp4 and dequant_rows, which could agree with each
// other on a wrong nibble order or scale layout. Byte b holds element 2b in its LOW nibble and 2b+1
// in its HIGH nibble: the bytes spell the codes 0, 1, …, 15 in block 0 and 15, 14, …, 0 in block 1.
// E2M1 code → value: 0..7 → 0, .5, 1, 1.5, 2, 3, 4, 6; 8..15 the same negated. One E4M3 scale per
// block, row-major [rows, cols/16]: 0x78 = 0|1111|000 = 2^(15−7) = 256, 0x70 = 0|1110|000 = 2^(14−7)
// = 128. Value = code value · block scale · weight_scale_2; powers of two keep it exact in any order.
constexpr uint8_t kHandBytes[16] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE,
                                    0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01};
constexpr uint8_t kHandScaleBytes[2] = {0x78, 0x70};
constexpr float kHandScales[2] = {256.0f, 128.0f};
constexpr float kHandValues[32] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
                                   -6.0f, -4.0f, -3.0f, -2.0f, -1.5f, -1.0f, -0.5f, -0.0f,
                                   6.0f, 4.0f, 3.0f, 2.0f, 1.5f, 1.0f, 0.5f, 0.0f};

struct Nvfp4Case {
  const char* name;
  bool quantised_base;  // the model the NVFP4 one derives from: FP8 + MXFP4 (else all F32)
  std::function<void(nlohmann::json& quantization_config)> select;  // the ModelOpt config
};

class CpuNvfp4Forward : public ::testing::TestWithParam<Nvfp4Case> {};

// The linear `base` of a checkpoint as FP32 [rows, cols]: plain F32 or FP8 block + .scale.
std::vector<float> dequantised(const Checkpoint& ck, const std::string& base, int64_t* rows, int64_t* cols) {
  const TensorView& w = ck.get(base + ".weight");
  *rows = w.shape.at(0);
  *cols = w.shape.at(1);
  WeightMatrix m;
  m.name = base;
  m.rows = *rows;
  m.cols = *cols;
  m.data = w.data;
  if (const TensorView* s = ck.find(base + ".scale")) {
    EXPECT_EQ(w.dtype, DType::kF8_E4M3) << base;  // tiny models: FP8 block or F32
    m.format = WeightFormat::kFP8Block;
    m.scale = s->data;
    m.scale_is_f32 = s->dtype == DType::kF32;
  } else {
    EXPECT_EQ(w.dtype, DType::kF32) << base;
    m.format = WeightFormat::kF32;
  }
  std::vector<float> v(size_t(*rows * *cols));
  m.dequant_rows(0, *rows, v.data());
  return v;
}

TEST_P(CpuNvfp4Forward, EqualsTheDequantisedModel) {
  const Nvfp4Case& c = GetParam();
  test::TinyModelOptions opt;
  opt.quantised = c.quantised_base;
  opt.f32 = true;  // an NVFP4 value is E2M1 · E4M3 · F32 global: F32, not BF16, holds it exactly
  opt.salt = 41;   // mixed into the printed test seed (test_util.h)
  if (c.quantised_base) opt.edit_config = [](nlohmann::json& j) { j["expert_dtype"] = "bf16"; };
  const test::ScratchDir base = test::write_tiny_model(opt);
  const fs::path& base_dir = base.path();

  // The NVFP4 model's config, and the linears it selects (those with a weight_scale_2).
  nlohmann::json nv_cfg;
  {
    std::ifstream in(base_dir / "config.json");
    nv_cfg = nlohmann::json::parse(in);
  }
  nlohmann::json& q = nv_cfg["quantization_config"];
  if (!c.quantised_base) q = {{"quant_method", "modelopt"}};
  c.select(q);  // expert_dtype stays: experts the selection does not cover keep the base's format
  const ModelConfig nv = ModelConfig::from_json(nv_cfg.dump());
  std::set<std::string> selected;
  for (const ExpectedTensor& e : expected_tensors(nv))
    if (e.name.ends_with(".weight_scale_2")) selected.insert(e.name.substr(0, e.name.size() - 15));
  ASSERT_FALSE(selected.empty());

  // Both models from the base: every selected linear quantised with pack_nvfp4 (global scale
  // amax/(6·448), ModelOpt's choice, an arbitrary F32 number) — packed in the NVFP4 model, its
  // dequantised values as F32 in the reference; every other tensor byte for byte in both.
  const fs::path ref_dir = base_dir / "ref", nv_dir = base_dir / "nvfp4";  // removed with the base
  fs::create_directories(ref_dir);
  fs::create_directories(nv_dir);
  fs::copy_file(base_dir / "config.json", ref_dir / "config.json");
  std::ofstream(nv_dir / "config.json") << nv_cfg.dump(2);
  struct Packed {
    PackedWeight p;
    float global_scale;
    std::vector<float> deq;
  };
  std::map<std::string, Packed> packed;
  float worst_roundtrip = 0.0f;  // max over blocks of max|dequant − original| / block amax
  const float input_scale = 1.0f;  // activation scale; unused by the weight path (quant.h)
  {
    const Checkpoint ck = Checkpoint::open(base_dir);
    std::vector<TensorToWrite> ref_out, nv_out;
    for (const auto& [name, t] : ck.tensors()) {
      const std::string base = name.substr(0, name.rfind('.'));
      const bool weight = name.ends_with(".weight") && selected.count(base);
      if (name.ends_with(".scale") && selected.count(base)) continue;  // FP8: rewritten with its weight
      if (!weight) {  // anything else, including the router's bias / tid2eid beside gate.weight
        ref_out.push_back(TensorToWrite{name, t.dtype, t.shape, t.data});
        nv_out.push_back(TensorToWrite{name, t.dtype, t.shape, t.data});
        continue;
      }
      int64_t rows = 0, cols = 0;
      const std::vector<float> v = dequantised(ck, base, &rows, &cols);
      float amax = 0.0f;
      for (float x : v) amax = std::max(amax, std::fabs(x));
      Packed& pk = packed[base];
      pk.global_scale = amax / (kE2M1Max * kE4M3Max);
      pk.p = pack_nvfp4(v.data(), rows, cols, pk.global_scale);
      const WeightMatrix w{.name = base, .format = WeightFormat::kNVFP4, .rows = rows, .cols = cols,
                           .data = pk.p.data.data(), .scale = pk.p.scale.data(), .global_scale = pk.global_scale};
      pk.deq.resize(v.size());
      w.dequant_rows(0, rows, pk.deq.data());
      // Independent sanity check of the round trip, per block of 16: the E4M3 scale s·g is
      // within a factor 1 ± 2^-4 of amax/6 and the E2M1 grid step is at most 2 (between 4 and 6)
      // in units of s·g, so rounding moves a value by at most (amax/6)·(1 + 2^-4) ≈ 0.177·amax,
      // and clamping at 6 by at most 2^-4·amax: under 0.25·amax. A wrong nibble order or scale
      // placement moves values by up to 2·amax.
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c0 = 0; c0 < cols; c0 += kNVFP4BlockSize) {
          const float* x = v.data() + r * cols + c0;
          const float* d = pk.deq.data() + r * cols + c0;
          float block_amax = 0.0f, err = 0.0f;
          for (int64_t k = 0; k < kNVFP4BlockSize; ++k) {
            block_amax = std::max(block_amax, std::fabs(x[k]));
            err = std::max(err, std::fabs(x[k] - d[k]));
          }
          if (block_amax > 0) worst_roundtrip = std::max(worst_roundtrip, err / block_amax);
        }
      ASSERT_GE(cols, 2 * kNVFP4BlockSize) << base;  // the hand vector (kHandBytes)
      std::copy(std::begin(kHandBytes), std::end(kHandBytes), pk.p.data.begin());
      std::copy(std::begin(kHandScaleBytes), std::end(kHandScaleBytes), pk.p.scale.begin());
      for (int64_t k = 0; k < 2 * kNVFP4BlockSize; ++k)
        pk.deq[size_t(k)] = kHandValues[k] * kHandScales[k / kNVFP4BlockSize] * pk.global_scale;
      std::vector<float> row0(static_cast<size_t>(cols));  // the decoder alone: a failure here names it
      w.dequant_rows(0, 1, row0.data());
      int64_t hand_mismatches = 0;
      for (int64_t k = 0; k < 2 * kNVFP4BlockSize; ++k) hand_mismatches += row0[size_t(k)] != pk.deq[size_t(k)];
      EXPECT_EQ(hand_mismatches, 0) << base << ": dequant_rows disagrees with the hand vector";
      ref_out.push_back(TensorToWrite{name, DType::kF32, {rows, cols}, pk.deq.data()});
      nv_out.push_back(TensorToWrite{name, DType::kU8, packed_data_shape(WeightFormat::kNVFP4, rows, cols),
                                     pk.p.data.data()});
      nv_out.push_back(TensorToWrite{base + ".weight_scale", DType::kF8_E4M3,
                                     scale_shape(WeightFormat::kNVFP4, rows, cols), pk.p.scale.data()});
      nv_out.push_back(TensorToWrite{base + ".weight_scale_2", DType::kF32, {}, &pk.global_scale});
      nv_out.push_back(TensorToWrite{base + ".input_scale", DType::kF32, {}, &input_scale});
    }
    ASSERT_EQ(packed.size(), selected.size());
    write_safetensors(ref_dir / "model.safetensors", ref_out);
    write_safetensors(nv_dir / "model.safetensors", nv_out);
  }
  std::printf("[nvfp4 forward] %s: %zu NVFP4 linears, pack/dequant round trip: worst |Δ|/block amax = %.3g\n",
              c.name, packed.size(), worst_roundtrip);
  ASSERT_LT(worst_roundtrip, 0.25f);
  {  // The NVFP4 model binds every selected linear as NVFP4, and nothing else.
    const ModelConfig cfg = ModelConfig::load(nv_dir);
    const Checkpoint ck = Checkpoint::open(nv_dir);
    EXPECT_TRUE(check_checkpoint(cfg, ck).empty());
    const auto notes = linear_format_notes(cfg, ck);
    EXPECT_TRUE(notes.empty()) << notes.size() << " notes, first: " << notes.front();
  }

  // Under the sanitizers official numerics only: the same NVFP4 weight paths, plus the activation
  // quantisation exact mode leaves out.
  std::vector<Numerics> modes = {Numerics::kExact, Numerics::kOfficial};
  if (test::kSanitizerBuild) {
    modes = {Numerics::kOfficial};
    test::note_left_out(std::string("nvfp4 forward ") + c.name + ": exact numerics (the release run covers them)");
  }
  for (const Numerics numerics : modes) {
    CpuOptions co;
    co.numerics = numerics;
    auto ref = make_cpu_forward(ref_dir, co);
    auto nvf = make_cpu_forward(nv_dir, co);
    const int64_t V = ref->config().vocab_size;
    test::Rng rng(42);
    std::vector<int32_t> tokens(150);
    for (auto& t : tokens) t = int32_t(rng.integer(0, V - 1));
    const std::vector<float> a = all_logits(*ref, tokens), b = all_logits(*nvf, tokens);
    ASSERT_EQ(a.size(), tokens.size() * size_t(V));
    ASSERT_EQ(b.size(), a.size());
    double scale = 0, diff = 0;
    int64_t flips = 0;
    for (size_t t = 0; t < tokens.size(); ++t) {
      const float* ra = a.data() + t * size_t(V);
      const float* rb = b.data() + t * size_t(V);
      for (int64_t v = 0; v < V; ++v) {
        scale = std::max(scale, double(std::fabs(ra[v])));
        diff = std::max(diff, double(std::fabs(ra[v] - rb[v])));
      }
      if (std::max_element(ra, ra + V) - ra != std::max_element(rb, rb + V) - rb) ++flips;
    }
    std::printf("[nvfp4 forward] %s, %s numerics, %zu tokens: max|Δlogit| = %.3g (max|logit| %.3g), "
                "argmax flips %lld\n",
                c.name, to_string(numerics), tokens.size(), diff, scale, (long long)flips);
    ASSERT_GT(scale, 0.0);
    // Both models hold bit-identical FP32 weights (the reference stores exactly what NVFP4
    // decodes to) and every other tensor byte for byte; routing and the activation quantisation
    // (by role, §12) see identical inputs. The only freedom left to a backend is the FP32
    // summation order inside a dot product over K ≤ 512 inputs, worth ≤ K·2^-24 ≈ 3e-5 relative
    // to Σ|w·x| in the worst case and ~√K·2^-24 ≈ 1.3e-6 typically, compounded over the few
    // layers of this model: 1e-5·max|logit| leaves room for that and for nothing else (a wrong
    // nibble order, scale or global factor moves logits by O(1)). The CPU path expands NVFP4 and
    // F32 rows into the same FP32 tile and runs the same dot, so it is expected to print 0.
    EXPECT_LE(diff, 1e-5 * scale) << c.name << " " << to_string(numerics);
    EXPECT_EQ(flips, 0) << c.name << " " << to_string(numerics);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Selections, CpuNvfp4Forward,
    ::testing::Values(
        // NVIDIA's re-quantisations: routed experts NVFP4, everything else the FP8 release.
        Nvfp4Case{"experts", true,
                  [](nlohmann::json& q) {
                    q["quant_algo"] = "MIXED_PRECISION";
                    q["moe_quant_algo"] = "NVFP4";
                    q["quantized_layers"] = {{"layers.*.ffn.experts", {{"quant_algo", "NVFP4"}, {"group_size", 16}}}};
                  }},
        // quant_algo NVFP4 over a BF16 model: every linear (attention incl. wo_a, compressors,
        // indexer, shared and routed experts, head, MTP), the router excepted (§11.6).
        Nvfp4Case{"all_linears", false,
                  [](nlohmann::json& q) {
                    q["quant_algo"] = "NVFP4";
                    q["group_size"] = 16;
                  }},
        // Dense linears named in quantized_layers, in HF and official spellings, over the FP8
        // release: the compressors' kv/gate, the indexer's q_b_proj and weights_proj, the router
        // and the shared experts (what the seed's own checkpoint stored as NVFP4).
        Nvfp4Case{"named_dense", true,
                  [](nlohmann::json& q) {
                    q["quant_algo"] = "MIXED_PRECISION";
                    const nlohmann::json nv = {{"quant_algo", "NVFP4"}, {"group_size", 16}};
                    q["quantized_layers"] = {{"model.layers.*.self_attn.compressor.kv_proj", nv},
                                             {"model.layers.*.self_attn.compressor.gate_proj", nv},
                                             {"model.layers.*.self_attn.compressor.indexer.q_b_proj", nv},
                                             {"layers.*.attn.indexer.weights_proj", nv},
                                             {"layers.*.ffn.gate", nv},
                                             {"model.layers.*.mlp.shared_experts", nv}};
                  }}),
    [](const ::testing::TestParamInfo<Nvfp4Case>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace dsv4
