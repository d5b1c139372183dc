// NVFP4 routed experts (§11.6) through the whole CPU forward: a random tiny model whose routed
// experts are NVFP4 against the same model with those experts stored as their dequantised F32 values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
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
#include "support/test_util.h"
#include "support/tiny_model.h"
#include "util/float_formats.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

// Routed experts only: "layers.N.ffn.experts.E.wK.weight" (and mtp.N...); shared experts stay FP8.
bool is_routed_expert_weight(const std::string& name) {
  return name.find(".ffn.experts.") != std::string::npos && name.ends_with(".weight");
}

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

TEST(CpuForward, Nvfp4ExpertsEqualTheirDequantisedValues) {
  // Reference model: FP8 block linears (NVFP4 checkpoints keep everything but the routed experts
  // in FP8, §11.6) and plain F32 routed experts. F32, not BF16: an NVFP4 value is
  // E2M1 · E4M3 · F32 global (up to 2 + 4 + 24 significant bits), generally not BF16-exact.
  // The edit hook quantises each routed expert with pack_nvfp4 (global scale amax/(6·448), the
  // ModelOpt choice, so it is an arbitrary F32 number) and stores the dequantised values instead.
  struct Packed {
    PackedWeight p;
    float global_scale;
  };
  std::map<std::string, Packed> packed;
  float worst_roundtrip = 0.0f;  // max over blocks of max|dequant − original| / block amax
  test::TinyModelOptions opt;
  opt.quantised = true;
  opt.f32 = true;
  opt.salt = 41;  // mixed into the printed test seed (test_util.h)
  opt.edit_config = [](nlohmann::json& j) { j["expert_dtype"] = "bf16"; };
  opt.edit = [&](const std::string& name, std::vector<float>& v, int64_t rows, int64_t cols) {
    if (!is_routed_expert_weight(name)) return;
    float amax = 0.0f;
    for (float x : v) amax = std::max(amax, std::fabs(x));
    const float global = amax / (kE2M1Max * kE4M3Max);
    Packed& pk = packed[name];
    pk.p = pack_nvfp4(v.data(), rows, cols, global);
    pk.global_scale = global;
    WeightMatrix w{.name = name, .format = WeightFormat::kNVFP4, .rows = rows, .cols = cols,
                   .data = pk.p.data.data(), .scale = pk.p.scale.data(), .global_scale = global};
    std::vector<float> deq(v.size());
    w.dequant_rows(0, rows, deq.data());
    // Independent sanity check of the round trip, per block of 16: the E4M3 scale s·g is within
    // a factor 1 ± 2^-4 of amax/6 and the E2M1 grid step is at most 2 (between 4 and 6) in units
    // of s·g, so rounding moves a value by at most (amax/6)·(1 + 2^-4) ≈ 0.177·amax, and clamping
    // at 6 by at most 2^-4·amax: under 0.25·amax. A wrong nibble order or scale placement moves
    // values by up to 2·amax.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c0 = 0; c0 < cols; c0 += kNVFP4BlockSize) {
        const float* x = v.data() + r * cols + c0;
        const float* d = deq.data() + r * cols + c0;
        float block_amax = 0.0f, err = 0.0f;
        for (int64_t k = 0; k < kNVFP4BlockSize; ++k) {
          block_amax = std::max(block_amax, std::fabs(x[k]));
          err = std::max(err, std::fabs(x[k] - d[k]));
        }
        worst_roundtrip = std::max(worst_roundtrip, err / block_amax);
      }
    v = std::move(deq);  // the reference holds exactly what NVFP4 decodes to
  };
  const fs::path ref_dir = test::write_tiny_model(opt);
  ASSERT_FALSE(packed.empty());
  std::printf("[nvfp4 forward] pack/dequant round trip: worst |Δ|/block amax = %.3g\n", worst_roundtrip);
  ASSERT_LT(worst_roundtrip, 0.25f);

  // NVFP4 model: the reference's tensors, routed experts replaced by their packed form, and the
  // ModelOpt quantization_config that selects NVFP4 experts (config.cpp parse_quantization).
  const fs::path nv_dir = ref_dir.string() + "_nvfp4";
  fs::create_directories(nv_dir);
  {
    std::ifstream in(ref_dir / "config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j.erase("expert_dtype");
    j["quantization_config"]["quant_algo"] = "MIXED_PRECISION";
    j["quantization_config"]["moe_quant_algo"] = "NVFP4";
    j["quantization_config"]["quantized_layers"] = {{"layers.*.ffn.experts", {{"quant_algo", "NVFP4"}, {"group_size", 16}}}};
    std::ofstream(nv_dir / "config.json") << j.dump(2);
    ASSERT_EQ(ModelConfig::from_json(j.dump()).expert_format, ExpertFormat::kNVFP4);
  }
  {
    const Checkpoint ck = Checkpoint::open(ref_dir);
    const float input_scale = 1.0f;  // activation scale; unused by the weight path (quant.h)
    std::vector<TensorToWrite> out;
    size_t n_nvfp4 = 0;
    for (const auto& [name, t] : ck.tensors()) {
      const auto it = packed.find(name);
      if (it == packed.end()) {
        out.push_back(TensorToWrite{name, t.dtype, t.shape, t.data});
        continue;
      }
      ASSERT_EQ(t.shape.size(), 2u) << name;
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const std::string base = name.substr(0, name.size() - 7);  // strip ".weight"
      out.push_back(TensorToWrite{name, DType::kU8, packed_data_shape(WeightFormat::kNVFP4, rows, cols),
                                  it->second.p.data.data()});
      out.push_back(TensorToWrite{base + ".weight_scale", DType::kF8_E4M3,
                                  scale_shape(WeightFormat::kNVFP4, rows, cols), it->second.p.scale.data()});
      out.push_back(TensorToWrite{base + ".weight_scale_2", DType::kF32, {}, &it->second.global_scale});
      out.push_back(TensorToWrite{base + ".input_scale", DType::kF32, {}, &input_scale});
      ++n_nvfp4;
    }
    ASSERT_EQ(n_nvfp4, packed.size());
    write_safetensors(nv_dir / "model.safetensors", out);
  }

  CpuOptions co;
  co.numerics = Numerics::kExact;
  auto ref = make_cpu_forward(ref_dir, co);
  auto nv = make_cpu_forward(nv_dir, co);
  const int64_t V = ref->config().vocab_size;
  ASSERT_EQ(nv->config().expert_format, ExpertFormat::kNVFP4);
  test::Rng rng(42);
  std::vector<int32_t> tokens(150);
  for (auto& t : tokens) t = int32_t(rng.integer(0, V - 1));
  const std::vector<float> a = all_logits(*ref, tokens), b = all_logits(*nv, tokens);
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
  std::printf("[nvfp4 forward] %zu NVFP4 expert projections, %zu tokens: max|Δlogit| = %.3g "
              "(max|logit| %.3g), argmax flips %lld\n",
              packed.size(), tokens.size(), diff, scale, (long long)flips);
  ASSERT_GT(scale, 0.0);
  // Both models hold bit-identical FP32 expert values (the reference stores exactly what NVFP4
  // decodes to) and every other tensor byte for byte; routing sees identical inputs. The only
  // freedom left to a backend is the FP32 summation order inside a dot product over K ≤ 256
  // inputs, worth ≤ K·2^-24 ≈ 1.5e-5 relative to Σ|w·x| in the worst case and ~√K·2^-24 ≈ 1e-6
  // typically, compounded over the few layers of this model: 1e-5·max|logit| leaves room for that
  // and for nothing else (a wrong nibble order, scale or global factor moves logits by O(1)).
  // The current CPU path expands NVFP4 and F32 rows into the same FP32 tile and runs the same
  // dot, so it is expected to print 0.
  EXPECT_LE(diff, 1e-5 * scale);
  EXPECT_EQ(flips, 0);
  fs::remove_all(ref_dir);
  fs::remove_all(nv_dir);
}

}  // namespace
}  // namespace dsv4
