// write_skeleton: expected_tensors() → shards (in layout order, cut by size) → sparse files and
// index. Header parsing/validation of what it writes is checkpoint.cpp's job.
#include "model/skeleton.h"

#include <fstream>
#include <map>

#include "model/config.h"
#include "model/hf_names.h"
#include "model/safetensors_writer.h"
#include "model/weights.h"
#include "util/error.h"

namespace dsv4 {

namespace {

// The official Flash release has 46 shards for ~159.6 GB (§11.1): ~3.5 GB each.
constexpr uint64_t kSkeletonShardBytes = 3'500'000'000ull;

uint64_t nbytes_of(const TensorToWrite& t) {
  uint64_t n = dtype_size(t.dtype);
  for (auto d : t.shape) n *= uint64_t(d);
  return n;
}

std::string shard_name(int64_t i, int64_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05lld-of-%05lld.safetensors", (long long)(i + 1), (long long)n);
  return buf;
}

// The official layout renamed to HF (§11.4): fused expert tensors per layer, mtp.* dropped.
std::vector<TensorToWrite> to_hf_layout(const ModelConfig& cfg, const std::vector<TensorToWrite>& official) {
  if (cfg.expert_format != ExpertFormat::kBF16)
    fail("make-skeleton: the HF layout fuses routed experts, which needs BF16 experts (config has ",
         to_string(cfg.expert_format), ")");
  std::vector<TensorToWrite> out;
  std::map<int64_t, DType> fused_layers;
  for (const auto& t : official) {
    if (t.name.rfind("mtp.", 0) == 0) continue;
    if (t.name.find(".ffn.experts.") != std::string::npos) {
      fused_layers[std::stoll(t.name.substr(7))] = t.dtype;  // "layers.<l>."
      continue;
    }
    auto hf = official_to_hf(t.name);
    DSV4_CHECK_MSG(hf.has_value(), t.name);
    TensorToWrite h = t;
    h.name = *hf;
    out.push_back(std::move(h));
  }
  const int64_t E = cfg.n_routed_experts, I = cfg.moe_intermediate_size, D = cfg.hidden_size;
  for (const auto& [l, dt] : fused_layers) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    out.push_back({p + "gate_up_proj", dt, {E, 2 * I, D}, nullptr});
    out.push_back({p + "down_proj", dt, {E, D, I}, nullptr});
  }
  return out;
}

}  // namespace

SkeletonResult write_skeleton(const std::filesystem::path& dir, const std::string& config_json,
                              const SkeletonOptions& opt) {
  const ModelConfig cfg = ModelConfig::from_json(config_json);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(dir.string(), ": cannot create: ", ec.message());
  {
    std::ofstream f(dir / "config.json", std::ios::binary);
    f << config_json;
    if (!f) fail((dir / "config.json").string(), ": write failed");
  }
  std::vector<TensorToWrite> tensors;
  for (const auto& e : expected_tensors(cfg))
    tensors.push_back({e.name, e.dtypes.front(), e.shape, nullptr});
  if (opt.hf_names) tensors = to_hf_layout(cfg, tensors);

  uint64_t total = 0;
  for (const auto& t : tensors) total += nbytes_of(t);
  int64_t n_shards = opt.n_shards > 0 ? opt.n_shards : int64_t((total + kSkeletonShardBytes - 1) / kSkeletonShardBytes);
  n_shards = std::max<int64_t>(1, std::min<int64_t>(n_shards, int64_t(tensors.size())));

  // Cut the layout-ordered list into n_shards runs of roughly equal bytes.
  std::vector<std::vector<TensorToWrite>> shards(static_cast<size_t>(n_shards));
  uint64_t acc = 0;
  for (const auto& t : tensors) {
    const size_t s = std::min<size_t>(size_t(n_shards - 1), size_t((acc * uint64_t(n_shards)) / std::max<uint64_t>(total, 1)));
    shards[s].push_back(t);
    acc += nbytes_of(t);
  }
  std::erase_if(shards, [](const auto& s) { return s.empty(); });
  SkeletonResult r;
  r.n_shards = int64_t(shards.size());
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shard_name(int64_t(i), r.n_shards);
    r.total_bytes += write_safetensors(dir / name, shards[i], {{"format", "pt"}});
    for (const auto& t : shards[i]) weight_map[t.name] = name;
    r.n_tensors += int64_t(shards[i].size());
  }
  if (opt.with_index) write_index(dir, weight_map, total);
  return r;
}

}  // namespace dsv4
