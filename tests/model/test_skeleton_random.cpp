// write_skeleton's random mode and override_config on the tiny config (§15.1 structure): every
// tensor binds, quantised linears (FP8 §11.2, MXFP4 §11.3, NVFP4 §11.6) dequantise to finite
// values of the intended scale with no NaN codes, tid2eid rows are distinct valid ids, output is a
// function of the seed alone. The end-to-end forward on such a checkpoint is tests/cli's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "model/checkpoint.h"
#include "model/config.h"
#include "model/known_configs.h"
#include "model/skeleton.h"
#include "model/weights.h"
#include "support/scratch_dir.h"
#include "support/test_util.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

struct TempDir : test::ScratchDir {
  TempDir() : ScratchDir("dsv4_skel_random_") {}
};

constexpr int64_t kVocab = 512;  // small embed/head/tid2eid keep the test fast

std::string tiny_config(int64_t vocab = kVocab) { return override_config(tiny_config_json(), {.vocab = vocab}); }

// The seed handed to the writer: fresh each run (printed by test_seed), overridable.
uint64_t writer_seed(uint64_t salt) { return test::test_seed() * 0x9E3779B97F4A7C15ull + salt; }

// Every quantised linear of a bound model.
void for_each_linear(const ModelWeights& w, const std::function<void(const WeightMatrix&)>& fn) {
  auto layer = [&](const LayerWeights& l) {
    const AttentionWeights& a = l.attn;
    for (const WeightMatrix* m : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b}) fn(*m);
    if (a.indexer) fn(a.indexer->wq_b);
    for (const ExpertWeights* e : {&l.ffn.shared}) for (const WeightMatrix* m : {&e->w1, &e->w2, &e->w3}) fn(*m);
    for (const ExpertWeights& e : l.ffn.experts) for (const WeightMatrix* m : {&e.w1, &e.w2, &e.w3}) fn(*m);
  };
  for (const auto& l : w.layers) layer(l);
  for (const auto& t : w.mtp) {
    layer(t.layer);
    fn(t.e_proj);
    fn(t.h_proj);
  }
}

struct Stats {
  double mean = 0, std = 0;
  bool finite = true;
};
Stats stats_of(const WeightMatrix& m) {
  std::vector<float> v(size_t(m.rows * m.cols));
  m.dequant_rows(0, m.rows, v.data());
  Stats s;
  double sum = 0, sq = 0;
  for (float x : v) {
    s.finite &= std::isfinite(x);
    sum += x;
    sq += double(x) * x;
  }
  s.mean = sum / double(v.size());
  s.std = std::sqrt(std::max(0.0, sq / double(v.size()) - s.mean * s.mean));
  return s;
}

// Checks every quantised linear of `dir` and returns how many of each format were seen.
std::map<WeightFormat, int> check_quantised(const fs::path& dir) {
  const ModelConfig cfg = ModelConfig::load(dir);
  const Checkpoint ck = Checkpoint::open(dir);
  const ModelWeights w = bind_weights(cfg, ck);
  std::map<WeightFormat, int> seen;
  for_each_linear(w, [&](const WeightMatrix& m) {
    ASSERT_TRUE(m.present()) << m.name;
    ++seen[m.format];
    if (m.format == WeightFormat::kFP8Block) {
      for (int64_t i = 0; i < m.rows * m.cols; ++i)
        ASSERT_NE(m.data[i] & 0x7f, 0x7f) << m.name << ": E4M3 NaN byte at element " << i;
    }
    if (m.format == WeightFormat::kFP8Block || m.format == WeightFormat::kMXFP4) {
      const int64_t n_scales = scale_numel(m.format, m.rows, m.cols);
      for (int64_t i = 0; i < n_scales; ++i) ASSERT_NE(m.scale[i], kE8M0Nan) << m.name << ": NaN scale " << i;
    }
    const Stats s = stats_of(m);
    ASSERT_TRUE(s.finite) << m.name;
    // Target 1/sqrt(in) (skeleton.cpp). Derived bounds: block exponents are e0 or e0 + 1, so a
    // tensor's std is within [1/√2.5, 2/√2.5] ⊂ (1/2, 2) of its expected value however few blocks
    // it has (FP8: expected = target; NVFP4: expected = target, many blocks). MXFP4 adds the √2 of
    // a power-of-two centre, so its tensors (here ≥ 1024 blocks, where E[4^u] holds to ~2 %) are
    // within √2·1.02 < 2. A factor 2 therefore cannot trip on a correct writer, and catches a wrong
    // scale exponent, code table or nibble order (each at least a factor 2 off).
    const double target = 1.0 / std::sqrt(double(m.cols));
    EXPECT_GT(s.std, target / 2) << m.name;
    EXPECT_LT(s.std, target * 2) << m.name;
    EXPECT_LT(std::fabs(s.mean), 0.1 * target) << m.name;  // symmetric codes: mean ~ std/sqrt(n)
  });
  return seen;
}

TEST(SkeletonRandom, TinyQuantisedBindsWithSaneValues) {
  TempDir d;
  write_skeleton(d.path(), tiny_config(), {.n_shards = 2, .random_seed = writer_seed(1)});
  const auto seen = check_quantised(d.path());
  EXPECT_GT(seen.count(WeightFormat::kFP8Block) ? seen.at(WeightFormat::kFP8Block) : 0, 0);
  EXPECT_GT(seen.count(WeightFormat::kMXFP4) ? seen.at(WeightFormat::kMXFP4) : 0, 0);

  const ModelConfig cfg = ModelConfig::load(d.path());
  const Checkpoint ck = Checkpoint::open(d.path());
  const ModelWeights w = bind_weights(cfg, ck);  // also range-checks tid2eid
  int hash_layers = 0;
  for (const auto& l : w.layers) {
    // Norms 1 + N(0, 0.1²), router bias N(0, 0.1²), plain linears N(0, 1/in) (tiny_model.cpp's
    // choices). The tables are exact quantiles, so only sampling noise remains: ≥ 128 values give
    // std within ~±9 % at 5σ (relative std error 1/sqrt(2n)), means within 5σ·std/sqrt(n).
    const Stats norm = stats_of(l.attn_norm);
    EXPECT_NEAR(norm.mean, 1.0, 5 * 0.1 / std::sqrt(double(l.attn_norm.cols))) << l.attn_norm.name;
    EXPECT_NEAR(norm.std, 0.1, 0.1 * 5 / std::sqrt(2.0 * double(l.attn_norm.cols))) << l.attn_norm.name;
    const Stats gate = stats_of(l.ffn.gate);
    const double n_gate = double(l.ffn.gate.rows * l.ffn.gate.cols), t_gate = 1 / std::sqrt(double(l.ffn.gate.cols));
    EXPECT_NEAR(gate.std, t_gate, t_gate * 5 / std::sqrt(2 * n_gate)) << l.ffn.gate.name;
    const WeightMatrix& ids = l.ffn.tid2eid;
    if (!ids.present()) continue;
    ++hash_layers;
    std::set<int64_t> all;
    for (int64_t r = 0; r < ids.rows; ++r) {
      std::set<int64_t> row;
      for (int64_t c = 0; c < ids.cols; ++c) row.insert(ids.int_at(r, c)), all.insert(ids.int_at(r, c));
      ASSERT_EQ(int64_t(row.size()), ids.cols) << ids.name << " row " << r << " repeats an expert";
    }
    EXPECT_EQ(int64_t(all.size()), cfg.n_routed_experts) << ids.name << ": some expert never chosen";
  }
  EXPECT_EQ(hash_layers, cfg.num_hash_layers);
}

TEST(SkeletonRandom, NvFp4Experts) {
  nlohmann::json j = nlohmann::json::parse(tiny_config());
  j.erase("expert_dtype");
  j["quantization_config"]["quant_algo"] = "MIXED_PRECISION";
  j["quantization_config"]["moe_quant_algo"] = "NVFP4";
  ASSERT_EQ(ModelConfig::from_json(j.dump()).expert_format, ExpertFormat::kNVFP4);
  TempDir d;
  write_skeleton(d.path(), j.dump(), {.random_seed = writer_seed(2)});
  const auto seen = check_quantised(d.path());
  EXPECT_GT(seen.count(WeightFormat::kNVFP4) ? seen.at(WeightFormat::kNVFP4) : 0, 0);
}

// NVFP4 beyond the experts (§11.6): quant_algo NVFP4 over a BF16 model with an ignore list, the
// checkpoint make-skeleton --random writes for it, and every linear bound in its format.
TEST(SkeletonRandom, NvFp4DenseLinears) {
  nlohmann::json j = nlohmann::json::parse(tiny_config());
  j.erase("expert_dtype");
  j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}, {"group_size", 16},
                              {"ignore", {"lm_head", "*.attn.wo_a", "mtp.*"}}};
  TempDir d;
  write_skeleton(d.path(), j.dump(), {.random_seed = writer_seed(4)});
  const auto seen = check_quantised(d.path());
  EXPECT_GT(seen.count(WeightFormat::kNVFP4) ? seen.at(WeightFormat::kNVFP4) : 0, 0);
  const ModelConfig cfg = ModelConfig::load(d.path());
  const Checkpoint ck = Checkpoint::open(d.path());
  EXPECT_TRUE(linear_format_notes(cfg, ck).empty());
  const ModelWeights w = bind_weights(cfg, ck);
  for (const LayerWeights& l : w.layers) {
    EXPECT_EQ(l.attn.wq_a.format, WeightFormat::kNVFP4) << l.attn.wq_a.name;
    EXPECT_EQ(l.attn.wo_b.format, WeightFormat::kNVFP4) << l.attn.wo_b.name;
    EXPECT_NE(l.attn.wo_a.format, WeightFormat::kNVFP4) << l.attn.wo_a.name;  // ignored
    EXPECT_NE(l.ffn.gate.format, WeightFormat::kNVFP4) << l.ffn.gate.name;    // the router: not "all"
    EXPECT_EQ(l.ffn.shared.w2.format, WeightFormat::kNVFP4) << l.ffn.shared.w2.name;
    EXPECT_EQ(l.ffn.experts[0].w1.format, WeightFormat::kNVFP4) << l.ffn.experts[0].w1.name;
    if (l.attn.compressor) {
      EXPECT_EQ(l.attn.compressor->wkv.format, WeightFormat::kNVFP4) << l.attn.compressor->wkv.name;
      EXPECT_TRUE(std::isfinite(stats_of(l.attn.compressor->wgate).std));
    }
    if (l.attn.indexer) {
      EXPECT_EQ(l.attn.indexer->weights_proj.format, WeightFormat::kNVFP4);
    }
  }
  EXPECT_NE(w.head.format, WeightFormat::kNVFP4);  // "lm_head": the HF spelling of head
  ASSERT_FALSE(w.mtp.empty());
  EXPECT_NE(w.mtp[0].e_proj.format, WeightFormat::kNVFP4);

  // The same tensors under a config that declares no NVFP4: loaded by what the tensors say, and
  // every difference reported.
  nlohmann::json plain = nlohmann::json::parse(tiny_config());
  plain.erase("quantization_config");
  plain.erase("expert_dtype");
  std::ofstream(d.path() / "config.json") << plain.dump();
  const ModelConfig pcfg = ModelConfig::load(d.path());
  EXPECT_TRUE(check_checkpoint(pcfg, ck).empty());
  const auto notes = linear_format_notes(pcfg, ck);
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes[0].find(": stored as NVFP4, config.json implies BF16"), std::string::npos) << notes[0];
  const ModelWeights pw = bind_weights(pcfg, ck);
  EXPECT_EQ(pw.layers[0].attn.wq_a.format, WeightFormat::kNVFP4);
}

// A block format needs whole blocks along the input dimension; the linear is named.
TEST(SkeletonRandom, Nvfp4NeedsWholeBlocks) {
  nlohmann::json j = nlohmann::json::parse(tiny_config());
  j.erase("expert_dtype");
  j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}};
  j["q_lora_rank"] = 136;  // wq_b's input: 136 = 8.5 blocks of 16
  try {
    expected_tensors(ModelConfig::from_json(j.dump()));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.attn.wq_b: NVFP4 needs the input dimension (136) to be a multiple of 16"),
              std::string::npos) << e.what();
  }
}

// All tensors of two checkpoints, by name: equal bytes (true) or not, per tensor.
std::map<std::string, bool> compare_tensors(const fs::path& a, const fs::path& b) {
  const Checkpoint ca = Checkpoint::open(a), cb = Checkpoint::open(b);
  std::map<std::string, bool> out;
  EXPECT_EQ(ca.tensors().size(), cb.tensors().size());
  for (const auto& [name, t] : ca.tensors()) {
    const TensorView& u = cb.get(name);
    out[name] = t.nbytes == u.nbytes && std::memcmp(t.data, u.data, t.nbytes) == 0;
  }
  return out;
}

TEST(SkeletonRandom, ValuesDependOnlyOnTheSeed) {
  TempDir a, b, c;
  const uint64_t seed = writer_seed(3);
  write_skeleton(a.path(), tiny_config(), {.n_shards = 1, .random_seed = seed});
  write_skeleton(b.path(), tiny_config(), {.n_shards = 3, .random_seed = seed});  // other sharding
  write_skeleton(c.path(), tiny_config(), {.n_shards = 1, .random_seed = seed + 1});
  for (const auto& [name, same] : compare_tensors(a.path(), b.path())) EXPECT_TRUE(same) << name;
  const std::string shard = "model-00001-of-00001.safetensors";
  EXPECT_EQ(fs::file_size(a.path() / shard), fs::file_size(c.path() / shard));
  const Checkpoint ck = Checkpoint::open(a.path());
  for (const auto& [name, same] : compare_tensors(a.path(), c.path())) {
    // Every element carries at least one random bit (block-scale exponents exactly one), so a
    // tensor of ≥ 64 elements repeats under another seed with probability ≤ 2^-64.
    if (ck.get(name).nbytes / dtype_size(ck.get(name).dtype) >= 64) {
      EXPECT_FALSE(same) << name;
    }
  }
}

// RandomTensors (synthetic weights): for every tensor of the layout, the bytes it generates in
// memory are the bytes the random skeleton of the same seed holds on disk — on the quantised tiny
// config (FP8 and MXFP4 linears, E8M0 scales, tid2eid) and its NVFP4 variant; a wrong size or an
// unknown name is an error naming the tensor.
TEST(SkeletonRandom, RandomTensorsAreTheSkeletonsBytes) {
  for (const char* expert_dtype : {"fp4", "nvfp4"}) {
    nlohmann::json j = nlohmann::json::parse(tiny_config());
    if (std::string(expert_dtype) == "nvfp4") {  // as NvFp4Experts configures it
      j.erase("expert_dtype");
      j["quantization_config"]["quant_algo"] = "MIXED_PRECISION";
      j["quantization_config"]["moe_quant_algo"] = "NVFP4";
    }
    TempDir dir;
    const uint64_t seed = writer_seed(11);
    write_skeleton(dir.path(), j.dump(), {.n_shards = 2, .random_seed = seed});
    const ModelConfig cfg = ModelConfig::load(dir.path());
    const Checkpoint ck = Checkpoint::open(dir.path());
    const RandomTensors synthetic(cfg, seed);
    int64_t n = 0, differ = 0;
    std::string first;
    std::vector<uint8_t> buf;
    for (const auto& [name, view] : ck.tensors()) {
      ASSERT_EQ(synthetic.bytes(name), view.nbytes) << name;
      buf.assign(view.nbytes, 0xA5);
      synthetic.fill(name, buf.data(), buf.size());
      ++n;
      if (std::memcmp(buf.data(), view.data, view.nbytes) != 0) {
        ++differ;
        if (first.empty()) first = name;
      }
    }
    EXPECT_GT(n, 100) << expert_dtype;
    EXPECT_EQ(differ, 0) << expert_dtype << ": " << differ << " of " << n << " tensors differ, first " << first;
    const std::string any = ck.tensors().begin()->first;
    buf.resize(size_t(synthetic.bytes(any)) + 1);
    try {
      synthetic.fill(any, buf.data(), buf.size());
      ADD_FAILURE() << "a destination of the wrong size was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(any), std::string::npos) << e.what();
    }
    try {
      synthetic.bytes("layers.0.attn.no_such.weight");
      ADD_FAILURE() << "an unknown tensor was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no_such"), std::string::npos) << e.what();
    }
  }
}

TEST(SkeletonRandom, HfLayoutBinds) {
  nlohmann::json j = nlohmann::json::parse(tiny_config());
  j.erase("quantization_config");
  j.erase("expert_dtype");
  TempDir d;
  write_skeleton(d.path(), j.dump(), {.hf_names = true, .random_seed = writer_seed(4)});
  const Checkpoint ck = Checkpoint::open(d.path());
  ASSERT_TRUE(ck.hf_names());
  const ModelWeights w = bind_weights(ModelConfig::load(d.path()), ck);
  // Fused experts split back per expert (§11.4) keep the N(0, 1/in) of their linear.
  const WeightMatrix& e = w.layers[0].ffn.experts[3].w2;
  const Stats s = stats_of(e);
  const double t = 1 / std::sqrt(double(e.cols)), n = double(e.rows * e.cols);
  EXPECT_NEAR(s.std, t, t * 5 / std::sqrt(2 * n)) << e.name;
}

TEST(SkeletonRandom, OverrideConfigTrimsTheSchedule) {
  // Flash's first 4 layers: ratios 0, 0, 4, 128 (§1.2), hash routing on 3; the MTP entry stays.
  const ModelConfig f4 = ModelConfig::from_json(override_config(flash_config_json(), {.layers = 4}));
  EXPECT_EQ(f4.num_hidden_layers, 4);
  EXPECT_EQ(f4.compress_ratios, (std::vector<int>{0, 0, 4, 128}));
  EXPECT_EQ(f4.num_hash_layers, 3);
  ASSERT_EQ(f4.mtp_layers.size(), 1u);
  EXPECT_EQ(f4.hidden_size, 4096);
  EXPECT_EQ(f4.vocab_size, 129280);
  const ModelConfig f2 = ModelConfig::from_json(override_config(flash_config_json(), {.layers = 2, .mtp = 0, .vocab = 4096}));
  EXPECT_EQ(f2.num_hidden_layers, 2);
  EXPECT_EQ(f2.num_hash_layers, 2);
  EXPECT_TRUE(f2.mtp_layers.empty());
  EXPECT_EQ(f2.vocab_size, 4096);

  // HF form (layer_types / mlp_layer_types) trims the same way.
  nlohmann::json hf = nlohmann::json::parse(tiny_config_json());
  hf.erase("compress_ratios");
  hf.erase("num_hash_layers");
  hf["layer_types"] = {"sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                       "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"};
  hf["mlp_layer_types"] = {"hash_moe", "hash_moe", "hash_moe", "moe", "moe", "moe"};
  const ModelConfig h3 = ModelConfig::from_json(override_config(hf.dump(), {.layers = 3}));
  EXPECT_EQ(h3.compress_ratios, (std::vector<int>{0, 4, 128}));
  EXPECT_EQ(h3.num_hash_layers, 3);
}

TEST(SkeletonRandom, OverrideConfigErrorsNameTheOption) {
  auto error_of = [](const ConfigOverrides& o) {
    try {
      override_config(tiny_config_json(), o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of({.layers = 7}).find("--layers"), std::string::npos);   // tiny has 6
  EXPECT_NE(error_of({.layers = -1}).find("--layers"), std::string::npos);
  EXPECT_NE(error_of({.mtp = 2}).find("--mtp"), std::string::npos);         // tiny has 1
  EXPECT_NE(error_of({.vocab = 1}).find("eos_token_id"), std::string::npos);  // eos 1 needs vocab ≥ 2
}

}  // namespace
}  // namespace dsv4
