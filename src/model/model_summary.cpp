// Parameter counting from the expected layout, the §13 cache arithmetic and the GPU plan.
// The layout itself is weights.cpp's; the printing is cmd_inspect.cpp's.
#include "model/model_summary.h"

#include <algorithm>
#include <cmath>

#include "model/known_configs.h"
#include "model/quant.h"
#include "model/weights.h"

namespace dsv4 {

namespace {

// §13 / §12 row layouts.
constexpr int64_t kBf16Bytes = 2;
constexpr int64_t kRowAlign = 8;            // fp8_ds_mla pads 7 scale bytes to 8
constexpr int64_t kIndexerFp8ScaleBytes = 4;  // one FP32 scale per FP8 indexer key
// Runtime allowance per GPU for activations, CUDA graphs and GEMM workspaces. An estimate until
// the CUDA backend measures it; the plan says so when it prints.
constexpr double kRuntimeReserveBytes = 4.0 * (1ull << 30);

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

bool is_scale(const std::string& name) {
  return ends_with(name, ".scale") || ends_with(name, ".weight_scale") || ends_with(name, ".weight_scale_2") ||
         ends_with(name, ".input_scale");
}

int64_t fp8_row_bytes(const ModelConfig& c) {  // 448 E4M3 + 64 BF16 rope + 7 UE8M0 → 584
  const int64_t nope = c.nope_dim(), r = c.qk_rope_head_dim;
  const int64_t raw = nope + r * kBf16Bytes + (nope + kKvQuantBlock - 1) / kKvQuantBlock;  // §12
  return (raw + kRowAlign - 1) / kRowAlign * kRowAlign;
}

}  // namespace

ParamCounts count_parameters(const ModelConfig& cfg) {
  ParamCounts p;
  for (const auto& e : expected_tensors(cfg)) {
    if (is_scale(e.name)) continue;
    int64_t n = 1;
    for (auto d : e.shape) n *= d;
    const bool routed = e.name.find(".ffn.experts.") != std::string::npos;
    const bool fp4 = ends_with(e.name, ".weight") && (e.dtypes.front() == DType::kI8 || e.dtypes.front() == DType::kU8);
    if (fp4) n *= 2;  // two E2M1 values per byte (MXFP4 experts, any NVFP4 linear)
    if (e.name.rfind("mtp.", 0) == 0) {
      p.mtp += n;
      continue;
    }
    p.total += n;
    if (routed) p.routed += n;
  }
  // Each token runs k of the E routed experts of every layer, and reads one row (D values) of the
  // embedding table rather than all of it; the model cards' 13 B / 49 B count it the same way.
  const int64_t embed = cfg.vocab_size * cfg.hidden_size;
  p.active = p.total - p.routed + p.routed / cfg.n_routed_experts * cfg.num_experts_per_tok - embed + cfg.hidden_size;
  return p;
}

double prefill_flops(const ModelConfig& cfg, int64_t prompt) {
  if (prompt <= 0) return 0;
  const double D = double(cfg.hidden_size), head = double(cfg.vocab_size) * D;
  const double linear = double(count_parameters(cfg).active) - D - head;
  // Attended keys summed over the prompt's positions, per kind of layer.
  double window = 0, csa_picks = 0, csa_visible = 0, hca_entries = 0;
  for (int64_t t = 0; t < prompt; ++t) {
    window += double(std::min<int64_t>(t + 1, cfg.sliding_window));
    csa_visible += double((t + 1) / kCsaRatio);
    csa_picks += double(std::min<int64_t>(cfg.index_topk, (t + 1) / kCsaRatio));
    hca_entries += double((t + 1) / kHcaRatio);
  }
  const double per_key = 4.0 * double(cfg.num_attention_heads) * double(cfg.head_dim);
  const double per_index_key = 2.0 * double(cfg.index_n_heads) * double(cfg.index_head_dim);
  double attention = 0;
  for (const LayerSpec& l : cfg.layers) {
    attention += per_key * window;
    if (l.attention == AttentionType::kCSA) attention += per_key * csa_picks + per_index_key * csa_visible;
    if (l.attention == AttentionType::kHCA) attention += per_key * hca_entries;
  }
  return 2.0 * linear * double(prompt) + 2.0 * head + attention;
}

std::string model_family(const ModelConfig& cfg) {
  auto same = [&](const ModelConfig& ref) {
    return cfg.hidden_size == ref.hidden_size && cfg.num_hidden_layers == ref.num_hidden_layers &&
           cfg.num_attention_heads == ref.num_attention_heads && cfg.n_routed_experts == ref.n_routed_experts &&
           cfg.moe_intermediate_size == ref.moe_intermediate_size && cfg.q_lora_rank == ref.q_lora_rank &&
           cfg.o_groups == ref.o_groups && cfg.compress_ratios == ref.compress_ratios;
  };
  if (same(ModelConfig::from_json(flash_config_json()))) return "Flash";
  if (same(ModelConfig::from_json(pro_config_json()))) return "Pro";
  return "other";
}

KvCacheSize kv_cache_size(const ModelConfig& cfg) {
  KvCacheSize k;
  const double d = double(cfg.head_dim), di = double(cfg.index_head_dim);
  const double row_bf16 = d * kBf16Bytes, row_fp8 = double(fp8_row_bytes(cfg));
  const double idx_bf16 = di * kBf16Bytes, idx_fp8 = di + kIndexerFp8ScaleBytes;
  const double idx_fp4 = di / 2 + di / kIndexerQuantBlock;  // packed E2M1 + one UE8M0 per 32 (§12)
  for (const auto& l : cfg.layers) {
    k.ring_bf16_bytes += double(cfg.sliding_window) * row_bf16;
    k.ring_fp8_bytes += double(cfg.sliding_window) * row_fp8;
    if (l.compress_ratio == 0) continue;
    const double m = l.compress_ratio;
    k.bf16_per_token += row_bf16 / m;
    k.fp8_per_token += row_fp8 / m;
    k.fp8_mxfp4_per_token += row_fp8 / m;
    if (l.attention == AttentionType::kCSA) {  // indexer keys, one per compressed entry (§6)
      k.bf16_per_token += idx_bf16 / m;
      k.fp8_per_token += idx_fp8 / m;
      k.fp8_mxfp4_per_token += idx_fp4 / m;
    }
  }
  return k;
}

std::vector<GpuPlanRow> gpu_plan(const ModelConfig& cfg, double expert_bytes, double other_bytes, int64_t context,
                                 double gpu_bytes) {
  const KvCacheSize kv = kv_cache_size(cfg);
  std::vector<GpuPlanRow> rows;
  for (int n : {1, 2, 4, 8}) {
    GpuPlanRow r;
    r.n_gpus = n;
    r.weights_per_gpu = other_bytes + expert_bytes / n;
    r.kv_per_gpu = kv.ring_fp8_bytes + kv.fp8_mxfp4_per_token * double(context);
    r.reserve = kRuntimeReserveBytes;
    r.fits = r.weights_per_gpu + r.kv_per_gpu + r.reserve <= gpu_bytes;
    const double left = gpu_bytes - r.weights_per_gpu - r.reserve - kv.ring_fp8_bytes;
    r.max_context = left > 0 && kv.fp8_mxfp4_per_token > 0
                        ? std::min<int64_t>(cfg.max_position_embeddings, int64_t(left / kv.fp8_mxfp4_per_token))
                        : 0;
    rows.push_back(r);
  }
  return rows;
}

int gpus_needed(const std::vector<GpuPlanRow>& plan) {
  for (const GpuPlanRow& r : plan)
    if (r.fits) return r.n_gpus;
  return 0;
}

WeightBytesSplit split_weight_bytes(const Checkpoint& ck, bool with_mtp) {
  WeightBytesSplit s;
  for (const auto& [name, t] : ck.tensors()) {
    if (!with_mtp && name.rfind("mtp.", 0) == 0) continue;
    // A GPU keeps the hash layers' int64 expert tables (tid2eid) as int32 (cuda/device_model.cpp).
    const double bytes = t.dtype == DType::kI64 ? double(t.nbytes) / 2 : double(t.nbytes);
    (name.find(".ffn.experts.") != std::string::npos ? s.experts : s.other) += bytes;
  }
  return s;
}

HostTierPlan host_tier_plan(const ModelConfig& cfg, double expert_bytes, double other_bytes, int64_t context,
                            double gpu_bytes, int64_t host_per_layer) {
  const KvCacheSize kv = kv_cache_size(cfg);
  HostTierPlan p;
  p.experts_per_layer = cfg.n_routed_experts;
  p.moe_layers = cfg.num_hidden_layers + int64_t(cfg.mtp_layers.size());
  p.bytes_per_expert = p.experts_per_layer > 0 && p.moe_layers > 0
                           ? expert_bytes / double(p.experts_per_layer * p.moe_layers)
                           : 0;
  p.kv = kv.ring_fp8_bytes + kv.fp8_mxfp4_per_token * double(context);
  p.reserve = kRuntimeReserveBytes;
  const auto set = [&](int64_t h) {
    p.host_per_layer = h;
    p.host_bytes = double(h * p.moe_layers) * p.bytes_per_expert;
    p.gpu_weights = other_bytes + expert_bytes - p.host_bytes;
    p.fits = p.gpu_weights + p.kv + p.reserve <= gpu_bytes;
    const double share = p.experts_per_layer > 0 ? double(h) / double(p.experts_per_layer) : 0;
    p.host_bytes_per_token = double(cfg.num_hidden_layers) * double(cfg.num_experts_per_tok) * share * p.bytes_per_expert;
  };
  if (host_per_layer >= 0) {
    set(std::min(host_per_layer, p.experts_per_layer));
    return p;
  }
  for (int64_t h = 0; h <= p.experts_per_layer; ++h) {  // E <= a few hundred: a scan is clearer than algebra
    set(h);
    if (p.fits) return p;
  }
  return p;  // all on the host and still no fit: fits = false
}

}  // namespace dsv4
