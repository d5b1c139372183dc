// Tiny checkpoint writer (tests only). Values: linears N(0, 1/cols) so activations stay O(1);
// norms 1 + N(0, 0.1²); hc fn N(0, 1/cols), base N(0,1), scale N(1, 0.3²); sinks N(0,1);
// ape N(0, 0.5²); router bias N(0, 0.1²); tid2eid uniform experts; embed N(0,1).
#include "support/tiny_model.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

#include "model/config.h"
#include "model/known_configs.h"
#include "model/quant.h"
#include "model/safetensors_writer.h"
#include "model/weights.h"
#include "support/scratch_dir.h"
#include "support/test_util.h"
#include "util/float_formats.h"

namespace dsv4::test {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<float> random_values(Rng& rng, const std::string& name, int64_t rows, int64_t cols) {
  float mean = 0.0f, std = float(1.0 / std::sqrt(double(cols)));  // linears: O(1) activations
  if (name.find("norm") != std::string::npos) mean = 1.0f, std = 0.1f;
  else if (ends_with(name, "_base") || ends_with(name, "attn_sink") || name == "embed.weight") std = 1.0f;
  else if (ends_with(name, "_scale") && name.find("hc_") != std::string::npos) mean = 1.0f, std = 0.3f;
  else if (ends_with(name, "ape")) std = 0.5f;
  else if (ends_with(name, "gate.bias")) std = 0.1f;
  std::vector<float> v(size_t(rows * cols));
  for (float& x : v) x = mean + rng.normal(std);
  return v;
}

}  // namespace

ScratchDir write_tiny_model(const TinyModelOptions& opt) {
  nlohmann::json j = nlohmann::json::parse(tiny_config_json());
  j["vocab_size"] = opt.vocab;
  if (!opt.quantised) {
    j.erase("quantization_config");
    j.erase("expert_dtype");
  }
  if (opt.edit_config) opt.edit_config(j);
  const ModelConfig cfg = ModelConfig::from_json(j.dump());

  ScratchDir dir("dsv4_cpu_tiny_");
  {
    std::ofstream(dir / "config.json") << j.dump(2);
  }

  Rng rng(1000 + opt.salt);
  std::map<std::string, std::vector<uint8_t>> blobs;  // keeps data alive until written
  std::vector<TensorToWrite> out;
  const std::vector<ExpectedTensor> expected = expected_tensors(cfg);
  std::map<std::string, const ExpectedTensor*> by_name;
  for (const auto& e : expected) by_name[e.name] = &e;
  auto put = [&](const std::string& name, DType dt, std::vector<int64_t> shape,
                 std::vector<uint8_t> bytes) {
    blobs[name] = std::move(bytes);
    out.push_back(TensorToWrite{name, dt, std::move(shape), blobs[name].data()});
  };
  for (const auto& e : expected) {
    const DType dt = e.dtypes.front();
    if (ends_with(e.name, ".scale") && by_name.count(e.name.substr(0, e.name.size() - 6) + ".weight"))
      continue;  // written with its weight
    if (dt == DType::kI64 || dt == DType::kI32) {
      std::vector<int64_t> ids(size_t(e.shape[0] * e.shape[1]));
      for (auto& id : ids) id = rng.integer(0, cfg.n_routed_experts - 1);
      std::vector<uint8_t> bytes(ids.size() * 8);
      std::memcpy(bytes.data(), ids.data(), bytes.size());
      put(e.name, DType::kI64, e.shape, std::move(bytes));
      continue;
    }
    const int64_t rows = e.shape.size() == 2 ? e.shape[0] : 1;
    int64_t cols = e.shape.empty() ? 1 : e.shape.back();
    const bool fp8 = dt == DType::kF8_E4M3, fp4 = dt == DType::kI8 || dt == DType::kU8;
    if (fp4) cols *= 2;  // packed two per byte
    std::vector<float> v = random_values(rng, e.name, rows, cols);
    if (opt.edit) opt.edit(e.name, v, rows, cols);
    if (fp8 || fp4) {
      PackedWeight p = fp8 ? pack_fp8_block(v.data(), rows, cols) : pack_mxfp4(v.data(), rows, cols);
      const std::string base = e.name.substr(0, e.name.size() - 7);  // strip ".weight"
      const ExpectedTensor* s = by_name.at(base + ".scale");
      put(e.name, dt, e.shape, std::move(p.data));
      put(s->name, DType::kF8_E8M0, s->shape, std::move(p.scale));
      continue;
    }
    // §11.1: hc_*, ape, attn_sink and gate.bias are F32 in the official checkpoint.
    const bool official_f32 = e.name.find("hc_") != std::string::npos || ends_with(e.name, "ape") ||
                              ends_with(e.name, "attn_sink") || ends_with(e.name, "gate.bias");
    const bool as_f32 = opt.f32 || official_f32 ||
                        std::find(e.dtypes.begin(), e.dtypes.end(), DType::kBF16) == e.dtypes.end();
    std::vector<uint8_t> bytes;
    if (as_f32) {
      bytes.resize(v.size() * 4);
      std::memcpy(bytes.data(), v.data(), bytes.size());
    } else {
      bytes.resize(v.size() * 2);
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t h = f32_to_bf16(v[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    put(e.name, as_f32 ? DType::kF32 : DType::kBF16, e.shape, std::move(bytes));
  }
  write_safetensors(dir / "model.safetensors", out);
  return dir;
}

}  // namespace dsv4::test
