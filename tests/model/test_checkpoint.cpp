// Checkpoint + weights: safetensors header validation on malformed files, index handling, the
// tiny-model skeleton (official and HF layouts, §11.1/§11.4), completeness reporting and binding
// with real packed data written into the mapped files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "model/checkpoint.h"
#include "model/config.h"
#include "model/hf_names.h"
#include "model/known_configs.h"
#include "model/safetensors_writer.h"
#include "model/skeleton.h"
#include "model/weights.h"
#include "support/scratch_dir.h"
#include "support/seed.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct TempDir : test::ScratchDir {
  TempDir() : ScratchDir("dsv4_checkpoint_") {}
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void pwrite_at(const fs::path& p, size_t off, const void* data, size_t n) {
  const int fd = ::open(p.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, data, n, off_t(off)), ssize_t(n));
  ::close(fd);
}

TEST(Checkpoint, HeaderErrorsNameTheProblem) {
  TempDir d;
  const fs::path f = d.path() / "a.safetensors";
  auto err = [&](const std::string& header, uint64_t data) {
    write_raw_safetensors(f, header, data);
    return error_of([&] { Checkpoint::open(d.path()); });
  };
  const std::string ok = R"({"x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(err(ok, 24), "<no error>");
  EXPECT_NE(err(R"({"x":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", 8).find("unknown dtype 'F7'"), std::string::npos);
  EXPECT_NE(err(ok, 20).find("'x': data_offsets [0, 24] run past the end"), std::string::npos);
  EXPECT_NE(err(R"({"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,24]}})", 24).find("needs 16 bytes"), std::string::npos);
  const std::string overlap = err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  EXPECT_NE(overlap.find("'y'"), std::string::npos) << overlap;
  EXPECT_NE(overlap.find("overlap tensor 'x'"), std::string::npos) << overlap;
  const std::string by_one = err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("y":{"dtype":"F32","shape":[2],"data_offsets":[7,15]}})", 15);
  EXPECT_NE(by_one.find("'y' data_offsets [7, 15] overlap tensor 'x' [0, 8]"), std::string::npos) << by_one;
  EXPECT_NE(err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8).find("data_offsets [8, 0] end before begin"),
            std::string::npos);
  EXPECT_NE(err(R"({"x":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", 8).find("rank 9 exceeds 8"),
            std::string::npos);
  EXPECT_EQ(err(R"({"x":{"dtype":"F32","shape":[1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", 8), "<no error>");
  EXPECT_NE(err("{not json", 0).find("not valid JSON"), std::string::npos);
  EXPECT_NE(err(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8).find("non-negative"), std::string::npos);
  EXPECT_NE(err(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8).find("overflowing"), std::string::npos);
  EXPECT_NE(err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16)
                .find("appears twice"), std::string::npos);
  EXPECT_NE(err(std::string(1000, '['), 0).find("nested deeper"), std::string::npos);
  // Header length larger than the file.
  {
    std::ofstream o(f, std::ios::binary);
    const uint8_t len[8] = {0xff, 0xff, 0, 0, 0, 0, 0, 0};
    o.write(reinterpret_cast<const char*>(len), 8);
  }
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("exceeds the file size"), std::string::npos);
  {  // The header length counts from after its own 8 bytes: 20 claimed, 19 there.
    std::ofstream o(f, std::ios::binary | std::ios::trunc);
    const uint8_t len[8] = {20, 0, 0, 0, 0, 0, 0, 0};
    o.write(reinterpret_cast<const char*>(len), 8);
    o << std::string(19, ' ');
  }
  const std::string short_by_one = error_of([&] { Checkpoint::open(d.path()); });
  EXPECT_NE(short_by_one.find("header length 20 exceeds the file size 27"), std::string::npos) << short_by_one;
  fs::resize_file(f, 3);
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("too small"), std::string::npos);
}

// The data section must be tiled exactly by the tensors (the reference safetensors library's
// rule): bytes before, between or after them are refused, naming the file and the tensors.
TEST(Checkpoint, DataSectionCoveredExactly) {
  TempDir d;
  const fs::path f = d.path() / "a.safetensors";
  auto err = [&](const std::string& header, uint64_t data) {
    write_raw_safetensors(f, header, data);
    return error_of([&] { Checkpoint::open(d.path()); });
  };
  const std::string two = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("y":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  EXPECT_EQ(err(two, 16), "<no error>");
  const std::string after = err(two, 17);
  EXPECT_NE(after.find("a.safetensors: 1 bytes after the last tensor ('y') are covered by no tensor"), std::string::npos) << after;
  const std::string between = err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("y":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", 20);
  EXPECT_NE(between.find("data bytes [8, 12) between tensor 'x' and tensor 'y' are covered by no tensor"), std::string::npos)
      << between;
  const std::string one_byte = err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("y":{"dtype":"F32","shape":[2],"data_offsets":[9,17]}})", 17);
  EXPECT_NE(one_byte.find("data bytes [8, 9) between tensor 'x' and tensor 'y'"), std::string::npos) << one_byte;
  const std::string before = err(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  EXPECT_NE(before.find("starts with 4 bytes that no tensor covers"), std::string::npos) << before;
  EXPECT_NE(err(R"({"__metadata__":{"format":"pt"}})", 3).find("3 bytes after the last tensor are covered by no tensor"),
            std::string::npos);
  // Empty tensors take no bytes and may sit anywhere on the tiling.
  EXPECT_EQ(err(R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), "<no error>");
  // A field repeated inside one tensor's entry is named too.
  const std::string dup = err(R"({"x":{"dtype":"F32","dtype":"BF16","shape":[2],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(dup.find("header key 'dtype' appears twice in the entry of 'x'"), std::string::npos) << dup;
}

// A shard path that is a directory, FIFO or device is refused by name (never skipped, never
// waited on), with an index and without.
TEST(Checkpoint, ShardThatIsNotAFile) {
  for (const bool with_index : {false, true}) {
    for (const char* kind : {"directory", "FIFO", "device"}) {
      TempDir d;
      const float x[2] = {1, 2};
      write_safetensors(d.path() / "s1.safetensors", {{"a", DType::kF32, {2}, x}});
      const fs::path bad = d.path() / "s2.safetensors";
      if (std::string(kind) == "directory") fs::create_directories(bad);
      else if (std::string(kind) == "FIFO") ASSERT_EQ(::mkfifo(bad.c_str(), 0600), 0);
      else fs::create_symlink("/dev/zero", bad);
      if (with_index) write_index(d.path(), {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}, 8);
      const std::string e = error_of([&] { Checkpoint::open(d.path()); });
      EXPECT_NE(e.find(bad.string() + ": is a"), std::string::npos) << kind << ": " << e;
      EXPECT_NE(e.find(kind == std::string("device") ? "character device" : kind), std::string::npos) << e;
      if (with_index) {
        EXPECT_NE(e.find("weight_map['b'] = 's2.safetensors'"), std::string::npos) << e;
      }
    }
  }
  TempDir d;
  fs::create_directories(d.path() / "model.safetensors.index.json");
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("model.safetensors.index.json: is a directory"),
            std::string::npos);
}

TEST(Checkpoint, IndexErrors) {
  TempDir d;
  const float x[2] = {1, 2};
  write_safetensors(d.path() / "s1.safetensors", {{"a", DType::kF32, {2}, x}, {"b", DType::kF32, {2}, x}});
  write_index(d.path(), {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}, 16);
  const Checkpoint ck = Checkpoint::open(d.path());
  ASSERT_NE(ck.find("b"), nullptr);
  EXPECT_EQ(ck.get("b").numel(), 2);
  EXPECT_EQ(std::memcmp(ck.get("a").data, x, 8), 0);
  write_index(d.path(), {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}, 16);
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("weight_map['b'] points at missing shard 's2.safetensors'"),
            std::string::npos);
  write_index(d.path(), {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s1.safetensors"}}, 16);
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("lists 'c'"), std::string::npos);
  write_index(d.path(), {{"a", "s1.safetensors"}}, 16);
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("holds tensor 'b'"), std::string::npos);
  {  // A tensor listed twice in weight_map: the two places may disagree.
    std::ofstream(d.path() / "model.safetensors.index.json")
        << R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "a": "s2.safetensors"}})";
    EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("key 'weight_map.a' appears twice"), std::string::npos);
  }
  write_index(d.path(), {{"a", "../s1.safetensors"}}, 16);
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path()); }).find("not a plain file name"), std::string::npos);
  fs::remove(d.path() / "model.safetensors.index.json");
  EXPECT_EQ(Checkpoint::open(d.path()).tensors().size(), 2u);  // loose shards
}

TEST(Checkpoint, TinySkeletonIsCompleteAndBinds) {
  TempDir d;
  const ModelConfig cfg = ModelConfig::from_json(tiny_config_json());
  const SkeletonResult r = write_skeleton(d.path(), tiny_config_json(), {.n_shards = 3});
  EXPECT_EQ(r.n_shards, 3);
  const auto expected = expected_tensors(cfg);
  EXPECT_EQ(size_t(r.n_tensors), expected.size());
  Checkpoint ck = Checkpoint::open(d.path());
  EXPECT_FALSE(ck.hf_names());
  EXPECT_TRUE(check_checkpoint(cfg, ck).empty());
  // §11.1 structure: compressor on ratio>0 layers only, indexer on ratio-4, tid2eid on hash layers,
  // gate.bias on score layers and the MTP block.
  EXPECT_EQ(ck.find("layers.0.attn.compressor.ape"), nullptr);
  EXPECT_EQ(ck.get("layers.1.attn.compressor.ape").shape, (std::vector<int64_t>{4, 256}));
  EXPECT_EQ(ck.get("layers.2.attn.compressor.ape").shape, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(ck.find("layers.2.attn.indexer.wq_b.weight"), nullptr);
  EXPECT_EQ(ck.get("layers.4.attn.indexer.compressor.wkv.weight").shape, (std::vector<int64_t>{256, 256}));
  EXPECT_NE(ck.find("layers.2.ffn.gate.tid2eid"), nullptr);
  EXPECT_EQ(ck.find("layers.3.ffn.gate.tid2eid"), nullptr);
  EXPECT_NE(ck.find("mtp.0.ffn.gate.bias"), nullptr);
  EXPECT_EQ(ck.get("layers.3.ffn.experts.5.w2.weight").shape, (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(ck.get("layers.3.ffn.experts.5.w2.scale").shape, (std::vector<int64_t>{256, 4}));
  EXPECT_EQ(ck.get("layers.0.attn.wo_a.weight").shape, (std::vector<int64_t>{128, 512}));

  // Real packed data for one MXFP4 expert and one FP8 linear, written into the shard in place.
  std::mt19937 rng{uint32_t(test::seed_for("TinySkeletonIsCompleteAndBinds"))};
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w1(128 * 256), wq(128 * 256);
  for (auto& v : w1) v = nd(rng);
  for (auto& v : wq) v = nd(rng);
  const PackedWeight p1 = pack_mxfp4(w1.data(), 128, 256), pq = pack_fp8_block(wq.data(), 128, 256);
  auto put = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    const TensorView& t = ck.get(name);
    ASSERT_EQ(t.nbytes, bytes.size()) << name;
    pwrite_at(d.path() / t.file, t.file_offset, bytes.data(), bytes.size());
  };
  put("layers.3.ffn.experts.5.w1.weight", p1.data);
  put("layers.3.ffn.experts.5.w1.scale", p1.scale);
  put("layers.0.attn.wq_a.weight", pq.data);
  put("layers.0.attn.wq_a.scale", pq.scale);
  ck = Checkpoint::open(d.path());
  const ModelWeights w = bind_weights(cfg, ck);
  ASSERT_EQ(w.layers.size(), 6u);
  ASSERT_EQ(w.mtp.size(), 1u);
  const WeightMatrix& e = w.layers[3].ffn.experts[5].w1;
  EXPECT_EQ(e.format, WeightFormat::kMXFP4);
  EXPECT_EQ(e.rows, 128);
  EXPECT_EQ(e.cols, 256);
  WeightMatrix ref{.name = "ref", .format = WeightFormat::kMXFP4, .rows = 128, .cols = 256,
                   .data = p1.data.data(), .scale = p1.scale.data()};
  std::vector<float> got(128 * 256), want(128 * 256);
  e.dequant_rows(0, 128, got.data());
  ref.dequant_rows(0, 128, want.data());
  EXPECT_EQ(got, want);
  const WeightMatrix& q = w.layers[0].attn.wq_a;
  EXPECT_EQ(q.format, WeightFormat::kFP8Block);
  EXPECT_FALSE(q.scale_is_f32);
  WeightMatrix refq{.name = "refq", .format = WeightFormat::kFP8Block, .rows = 128, .cols = 256,
                    .data = pq.data.data(), .scale = pq.scale.data()};
  q.dequant_rows(0, 128, got.data());
  refq.dequant_rows(0, 128, want.data());
  EXPECT_EQ(got, want);
  EXPECT_TRUE(w.layers[1].attn.indexer.has_value());
  EXPECT_FALSE(w.layers[2].attn.indexer.has_value());
  EXPECT_TRUE(w.layers[2].attn.compressor.has_value());
  EXPECT_EQ(w.layers[2].attn.compressor->ratio, 128);
  EXPECT_TRUE(w.layers[0].ffn.tid2eid.present());
  EXPECT_FALSE(w.layers[0].ffn.gate_bias.present());

  // A tid2eid entry outside [0, E) is refused at bind time (it indexes the expert table).
  const int64_t bad = 16;
  pwrite_at(d.path() / ck.get("layers.1.ffn.gate.tid2eid").file, ck.get("layers.1.ffn.gate.tid2eid").file_offset + 8 * 7,
            &bad, 8);
  ck = Checkpoint::open(d.path());
  EXPECT_NE(error_of([&] { bind_weights(cfg, ck); }).find("layers.1.ffn.gate.tid2eid[1, 1] = 16"), std::string::npos);
}

TEST(Checkpoint, NVFP4ExpertsBindWithWeightScale2) {
  json j = json::parse(tiny_config_json());
  j["quantization_config"]["quant_algo"] = "MIXED_PRECISION";
  j["quantization_config"]["moe_quant_algo"] = "NVFP4";
  j["quantization_config"]["quantized_layers"] = {{"layers.0.ffn.experts", {{"quant_algo", "NVFP4"}, {"group_size", 16}}}};
  const ModelConfig cfg = ModelConfig::from_json(j.dump());
  ASSERT_EQ(cfg.expert_format, ExpertFormat::kNVFP4);
  TempDir d;
  write_skeleton(d.path(), j.dump(), {.n_shards = 2});
  Checkpoint ck = Checkpoint::open(d.path());
  ASSERT_TRUE(check_checkpoint(cfg, ck).empty());
  // §11.6 layout: packed [I, D/2] U8, weight_scale [I, D/16] E4M3, scalar F32 globals.
  EXPECT_EQ(ck.get("layers.2.ffn.experts.1.w1.weight").shape, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(ck.get("layers.2.ffn.experts.1.w1.weight_scale").shape, (std::vector<int64_t>{128, 16}));
  EXPECT_TRUE(ck.get("layers.2.ffn.experts.1.w1.weight_scale_2").shape.empty());
  EXPECT_EQ(ck.find("layers.2.ffn.experts.1.w1.scale"), nullptr);
  EXPECT_NE(ck.find("layers.2.ffn.shared_experts.w1.scale"), nullptr);  // shared experts stay FP8

  std::mt19937 rng{uint32_t(test::seed_for("NVFP4ExpertsBindWithWeightScale2"))};
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(256 * 128);  // w2: [D, I] = [256, 128]
  float amax = 0;
  for (auto& v : w) amax = std::max(amax, std::fabs(v = nd(rng)));
  const float global = amax / (kE2M1Max * kE4M3Max);
  const float input_scale = 123.0f;
  const PackedWeight p = pack_nvfp4(w.data(), 256, 128, global);
  const std::string base = "layers.2.ffn.experts.1.w2.";
  auto put = [&](const std::string& name, const void* bytes, size_t n) {
    const TensorView& t = ck.get(name);
    ASSERT_EQ(t.nbytes, n) << name;
    pwrite_at(d.path() / t.file, t.file_offset, bytes, n);
  };
  put(base + "weight", p.data.data(), p.data.size());
  put(base + "weight_scale", p.scale.data(), p.scale.size());
  put(base + "weight_scale_2", &global, 4);
  put(base + "input_scale", &input_scale, 4);
  // Every other NVFP4 projection needs a valid global scale too (zeros are refused).
  const float one = 1.0f;
  for (const auto& [name, t] : ck.tensors())
    if (name.ends_with(".weight_scale_2") && name != base + "weight_scale_2") put(name, &one, 4);
  ck = Checkpoint::open(d.path());
  const ModelWeights mw = bind_weights(cfg, ck);
  const WeightMatrix& m = mw.layers[2].ffn.experts[1].w2;
  EXPECT_EQ(m.format, WeightFormat::kNVFP4);
  EXPECT_EQ(m.global_scale, global);
  EXPECT_EQ(m.input_scale, input_scale);
  WeightMatrix ref{.name = "ref", .format = WeightFormat::kNVFP4, .rows = 256, .cols = 128,
                   .data = p.data.data(), .scale = p.scale.data(), .global_scale = global};
  std::vector<float> got(256 * 128), want(256 * 128);
  m.dequant_rows(0, 256, got.data());
  ref.dequant_rows(0, 256, want.data());
  EXPECT_EQ(got, want);
  // A zero global scale would silently zero the expert: refused with the tensor's name.
  const float zero = 0.0f;
  put(base + "weight_scale_2", &zero, 4);
  ck = Checkpoint::open(d.path());
  EXPECT_NE(error_of([&] { bind_weights(cfg, ck); }).find(base + "weight_scale_2 = 0"), std::string::npos);
}

TEST(Checkpoint, MismatchesAreAllReported) {
  TempDir d;
  write_skeleton(d.path(), tiny_config_json(), {.n_shards = 2});
  json j = json::parse(tiny_config_json());
  j["moe_intermediate_size"] = 64;
  j["num_hash_layers"] = 2;
  const ModelConfig cfg = ModelConfig::from_json(j.dump());
  const Checkpoint ck = Checkpoint::open(d.path());
  const auto problems = check_checkpoint(cfg, ck);
  auto has = [&](const std::string& s) {
    for (const auto& p : problems)
      if (p.find(s) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(has("tensor layers.0.ffn.experts.0.w1.weight in model-0000")) << problems.size();
  EXPECT_TRUE(has("shape [128, 128], expected [64, 128]"));
  EXPECT_TRUE(has("missing tensor layers.2.ffn.gate.bias"));
  EXPECT_TRUE(has("unexpected tensor layers.2.ffn.gate.tid2eid"));
  const std::string msg = error_of([&] { bind_weights(cfg, ck); });
  EXPECT_NE(msg.find("problems"), std::string::npos);
}

TEST(Checkpoint, HfLayoutMapsAndSplitsFusedExperts) {
  json j = json::parse(tiny_config_json());
  j.erase("quantization_config");
  j.erase("expert_dtype");
  const ModelConfig cfg = ModelConfig::from_json(j.dump());
  // Every official name except routed experts and mtp.* round-trips through the HF spelling.
  for (const auto& e : expected_tensors(cfg)) {
    if (e.name.rfind("mtp.", 0) == 0 || e.name.find(".ffn.experts.") != std::string::npos) continue;
    const auto hf = official_to_hf(e.name);
    ASSERT_TRUE(hf.has_value()) << e.name;
    EXPECT_TRUE(is_hf_name(*hf)) << *hf;
    EXPECT_EQ(hf_to_official(*hf).value_or("?"), e.name);
  }
  EXPECT_EQ(official_to_hf("layers.4.attn.indexer.compressor.ape").value(), "model.layers.4.self_attn.compressor.indexer.position_bias");
  EXPECT_EQ(official_to_hf("layers.4.attn.indexer.weights_proj.weight").value(), "model.layers.4.self_attn.compressor.indexer.scorer.weights_proj.weight");
  EXPECT_EQ(official_to_hf("layers.0.ffn.gate.bias").value(), "model.layers.0.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(hf_to_official("model.layers.7.self_attn.q_b_proj.weight_scale_inv").value(), "layers.7.attn.wq_b.scale");
  EXPECT_EQ(hf_to_official("model.layers.7.mlp.experts.3.up_proj.weight").value(), "layers.7.ffn.experts.3.w3.weight");
  EXPECT_EQ(canonical_official_name("layers.1.attn.wkv.weight_scale_inv"), "layers.1.attn.wkv.scale");
  // What transformers 5.24 save_pretrained writes (observed on a saved tiny model): "model." +
  // official layer-local names, attn.kv_norm spelled attn.norm, per-expert w1/w2/w3.
  EXPECT_EQ(hf_to_official("model.layers.2.attn.norm.weight").value(), "layers.2.attn.kv_norm.weight");
  EXPECT_EQ(hf_to_official("model.layers.1.attn.indexer.compressor.norm.weight").value(),
            "layers.1.attn.indexer.compressor.norm.weight");
  EXPECT_EQ(hf_to_official("model.layers.0.ffn.experts.3.w2.weight").value(), "layers.0.ffn.experts.3.w2.weight");
  EXPECT_EQ(hf_to_official("model.layers.0.hc_attn_fn").value(), "layers.0.hc_attn_fn");
  EXPECT_EQ(hf_to_official("model.hc_head.hc_fn").value(), "hc_head_fn");
  EXPECT_FALSE(is_hf_name("head.weight"));
  // ModelOpt NVFP4 tensors (§11.6) keep their leaf names, in both directions.
  EXPECT_EQ(hf_to_official("model.layers.1.self_attn.compressor.indexer.q_b_proj.weight_scale_2").value(),
            "layers.1.attn.indexer.wq_b.weight_scale_2");
  EXPECT_EQ(hf_to_official("model.layers.1.mlp.gate.weight_scale").value(), "layers.1.ffn.gate.weight_scale");
  EXPECT_EQ(official_to_hf("layers.2.attn.compressor.wkv.input_scale").value(), "model.layers.2.self_attn.compressor.kv_proj.input_scale");
  EXPECT_EQ(hf_module_name("layers.0.ffn.experts.5.w1").value(), "model.layers.0.mlp.experts.5.gate_proj");
  EXPECT_EQ(hf_module_name("layers.3.attn.wq_a").value(), "model.layers.3.self_attn.q_a_proj");
  EXPECT_EQ(hf_module_name("head").value(), "lm_head");
  EXPECT_FALSE(hf_module_name("mtp.0.e_proj").has_value());

  TempDir d;
  write_skeleton(d.path(), j.dump(), {.n_shards = 2, .hf_names = true});
  Checkpoint ck = Checkpoint::open(d.path());
  EXPECT_TRUE(ck.hf_names());
  EXPECT_TRUE(check_checkpoint(cfg, ck).empty());  // mtp.* absent as a whole is allowed
  // Fill layer 3's fused gate_up_proj [E, 2I, D] BF16 with distinct values; expert e's w3 row i
  // must be fused row I + i of expert e (§11.4: w1 rows first, then w3).
  const int64_t E = 16, I = 128, D = 256;
  std::vector<uint16_t> fused(size_t(E * 2 * I * D));
  for (size_t k = 0; k < fused.size(); ++k) fused[k] = f32_to_bf16(float(k % 251) - 125.0f);
  const TensorView& e0 = ck.get("layers.3.ffn.experts.0.w1.weight");
  pwrite_at(d.path() / e0.file, e0.file_offset, fused.data(), fused.size() * 2);
  ck = Checkpoint::open(d.path());
  const ModelWeights w = bind_weights(cfg, ck);
  EXPECT_TRUE(w.mtp.empty());
  for (int64_t e : {0, 7, 15})
    for (int64_t i : {0, 5, 127})
      for (int64_t c : {0, 99, 255}) {
        EXPECT_EQ(w.layers[3].ffn.experts[size_t(e)].w1.at(i, c), bf16_to_f32(fused[size_t((e * 2 * I + i) * D + c)]));
        EXPECT_EQ(w.layers[3].ffn.experts[size_t(e)].w3.at(i, c), bf16_to_f32(fused[size_t((e * 2 * I + I + i) * D + c)]));
      }
}

}  // namespace
}  // namespace dsv4
