// The official tensor layout (§11.1) derived from a ModelConfig, checked against a Checkpoint and
// bound into typed WeightMatrix views. Header parsing and name mapping are checkpoint.cpp's.
#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include "util/error.h"

namespace dsv4 {

namespace {

// Plain float tensors may come in any float dtype (BF16 exports, F32 fixtures); the first entry is
// the dtype of the official release (§11.1), which the skeleton writer uses.
const std::vector<DType> kFloatTypes = {DType::kBF16, DType::kF16, DType::kF32};
const std::vector<DType> kF32First = {DType::kF32, DType::kBF16, DType::kF16};
constexpr size_t kMaxListedProblems = 50;  // bind_weights' error message; check_checkpoint has all

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string dtypes_str(const std::vector<DType>& ds) {
  std::string out;
  for (size_t i = 0; i < ds.size(); ++i) {
    if (i) out += '|';
    out += to_string(ds[i]);
  }
  return out;
}

// What a linear is, for its format: an embedding table (never re-quantised), a plain-float
// linear of the official release, an FP8-block one, a routed expert, or the router (§11.1).
enum class LinearKind { kTable, kPlain, kFp8, kExpert, kRouter };

// The format config.json implies for the linear `base` (§11.2, §11.3, §11.6). kBF16 stands for
// "plain float" (BF16, F16 or F32, resolved from the tensor's dtype when binding).
WeightFormat config_format(const ModelConfig& c, LinearKind k, const std::string& base) {
  if (k == LinearKind::kTable) return WeightFormat::kBF16;
  if (k == LinearKind::kExpert) {
    switch (c.expert_format) {
      case ExpertFormat::kBF16: return WeightFormat::kBF16;
      case ExpertFormat::kFP8Block: return WeightFormat::kFP8Block;
      case ExpertFormat::kMXFP4: return WeightFormat::kMXFP4;
      case ExpertFormat::kNVFP4: return WeightFormat::kNVFP4;
    }
  }
  if (c.nvfp4.selects(base, k == LinearKind::kRouter ? LinearRole::kRouter : LinearRole::kLinear))
    return WeightFormat::kNVFP4;
  if (k == LinearKind::kFp8) return c.fp8_block ? WeightFormat::kFP8Block : WeightFormat::kBF16;
  return WeightFormat::kBF16;
}

bool is_plain_float(DType t) { return t == DType::kBF16 || t == DType::kF16 || t == DType::kF32; }

// The format the checkpoint stores `base` in, judged from which tensors exist: NVFP4's
// weight_scale(_2), a `.scale` beside E4M3 (FP8 block) or packed bytes (MXFP4), or a plain float
// weight alone. nullopt when the tensors do not say (absent, or an unknown combination).
std::optional<WeightFormat> stored_format(const Checkpoint& ck, const std::string& base) {
  const TensorView* w = ck.find(base + ".weight");
  if (!w) return std::nullopt;
  if (ck.find(base + ".weight_scale") || ck.find(base + ".weight_scale_2")) return WeightFormat::kNVFP4;
  if (ck.find(base + ".scale")) {
    if (w->dtype == DType::kF8_E4M3) return WeightFormat::kFP8Block;
    if (w->dtype == DType::kI8 || w->dtype == DType::kU8) return WeightFormat::kMXFP4;
    return std::nullopt;
  }
  if (is_plain_float(w->dtype)) return WeightFormat::kBF16;
  return std::nullopt;
}

// The format a linear is read in: the checkpoint's when its tensors say one (loaders go by the
// tensors, and re-quantisations do not always list what they converted, §11.6), else the
// config's, so that what is missing is reported against what the config implies. `inspect`
// reports every linear whose stored format differs from the config's (linear_format_notes).
WeightFormat resolve_format(const Checkpoint* ck, const std::string& base, WeightFormat from_config) {
  if (!ck) return from_config;
  return stored_format(*ck, base).value_or(from_config);
}

// FP4 formats pack two values per byte and scale whole blocks along the input dimension.
void check_block_fit(const std::string& base, int64_t cols, WeightFormat f) {
  const int64_t block = f == WeightFormat::kMXFP4 ? kMXFP4BlockSize : f == WeightFormat::kNVFP4 ? kNVFP4BlockSize : 1;
  if (cols % block != 0)
    fail(base, ": ", to_string(f), " needs the input dimension (", cols, ") to be a multiple of ", block);
}

// Walks the official layout once; `expected_tensors` records it, `bind_weights` binds it, so the
// two can never disagree.
class Visitor {
 public:
  virtual ~Visitor() = default;
  // A linear [rows, cols] stored as `base.weight` (+ scales per format).
  virtual void linear(WeightMatrix* out, const std::string& base, int64_t rows, int64_t cols, WeightFormat f,
                      bool optional) = 0;
  // A bare tensor (norm, hc, sink, ape, bias, tid2eid). 1-D tensors bind as rows = 1.
  virtual void param(WeightMatrix* out, const std::string& name, const std::vector<DType>& dtypes,
                     const std::vector<int64_t>& shape, bool optional) = 0;
};

void walk_hc(const ModelConfig& c, HyperConnWeights* w, const std::string& p, bool head, Visitor& v, bool opt) {
  const int64_t n = c.hc_mult, mix = head ? n : c.hc_mix_dim();  // §3.1 / §3.3
  v.param(&w->fn, p + "fn", kF32First, {mix, c.hc_dim()}, opt);
  v.param(&w->base, p + "base", kF32First, {mix}, opt);
  v.param(&w->scale, p + "scale", kF32First, {head ? 1 : 3}, opt);
}

void walk_compressor(const ModelConfig& c, CompressorWeights* w, const std::string& p, int64_t ratio, int64_t width,
                     Visitor& v, bool opt) {
  // §5: CSA (ratio 4) windows overlap, so its projections carry two halves (coff = 2).
  const int64_t coff = compressor_overlap(ratio);
  w->ratio = ratio;
  w->width = width;
  v.linear(&w->wkv, p + "wkv", coff * width, c.hidden_size, config_format(c, LinearKind::kPlain, p + "wkv"), opt);
  v.linear(&w->wgate, p + "wgate", coff * width, c.hidden_size, config_format(c, LinearKind::kPlain, p + "wgate"), opt);
  v.param(&w->ape, p + "ape", kF32First, {ratio, coff * width}, opt);
  v.param(&w->norm, p + "norm.weight", kFloatTypes, {width}, opt);
}

void walk_expert(const ModelConfig& c, ExpertWeights* w, const std::string& p, LinearKind k, Visitor& v, bool opt) {
  const int64_t D = c.hidden_size, I = c.moe_intermediate_size;
  v.linear(&w->w1, p + "w1", I, D, config_format(c, k, p + "w1"), opt);
  v.linear(&w->w2, p + "w2", D, I, config_format(c, k, p + "w2"), opt);
  v.linear(&w->w3, p + "w3", I, D, config_format(c, k, p + "w3"), opt);
}

void walk_layer(const ModelConfig& c, LayerWeights* w, const LayerSpec& s, const std::string& p, Visitor& v, bool opt) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads, d = c.head_dim, Q = c.q_lora_rank;
  const int64_t G = c.o_groups, R = c.o_lora_rank, E = c.n_routed_experts;
  auto fp8 = [&](const std::string& base) { return config_format(c, LinearKind::kFp8, base); };
  auto plain = [&](const std::string& base) { return config_format(c, LinearKind::kPlain, base); };
  w->spec = s;
  v.param(&w->attn_norm, p + "attn_norm.weight", kFloatTypes, {D}, opt);
  v.param(&w->ffn_norm, p + "ffn_norm.weight", kFloatTypes, {D}, opt);
  walk_hc(c, &w->hc_attn, p + "hc_attn_", false, v, opt);
  walk_hc(c, &w->hc_ffn, p + "hc_ffn_", false, v, opt);

  AttentionWeights& a = w->attn;  // §4
  v.param(&a.attn_sink, p + "attn.attn_sink", kF32First, {H}, opt);
  v.linear(&a.wq_a, p + "attn.wq_a", Q, D, fp8(p + "attn.wq_a"), opt);
  v.param(&a.q_norm, p + "attn.q_norm.weight", kFloatTypes, {Q}, opt);
  v.linear(&a.wq_b, p + "attn.wq_b", H * d, Q, fp8(p + "attn.wq_b"), opt);
  v.linear(&a.wkv, p + "attn.wkv", d, D, fp8(p + "attn.wkv"), opt);
  v.param(&a.kv_norm, p + "attn.kv_norm.weight", kFloatTypes, {d}, opt);
  v.linear(&a.wo_a, p + "attn.wo_a", G * R, (H / G) * d, fp8(p + "attn.wo_a"), opt);  // §4.5
  v.linear(&a.wo_b, p + "attn.wo_b", D, G * R, fp8(p + "attn.wo_b"), opt);
  if (s.compress_ratio != 0) {
    a.compressor.emplace();
    walk_compressor(c, &*a.compressor, p + "attn.compressor.", s.compress_ratio, d, v, opt);
  }
  if (s.attention == AttentionType::kCSA) {  // §6: the indexer exists on ratio-4 layers only
    a.indexer.emplace();
    v.linear(&a.indexer->wq_b, p + "attn.indexer.wq_b", c.index_n_heads * c.index_head_dim, Q, fp8(p + "attn.indexer.wq_b"), opt);
    v.linear(&a.indexer->weights_proj, p + "attn.indexer.weights_proj", c.index_n_heads, D, plain(p + "attn.indexer.weights_proj"), opt);
    walk_compressor(c, &a.indexer->compressor, p + "attn.indexer.compressor.", s.compress_ratio, c.index_head_dim, v, opt);
  }

  MoEWeights& m = w->ffn;  // §8
  v.linear(&m.gate, p + "ffn.gate", E, D, config_format(c, LinearKind::kRouter, p + "ffn.gate"), opt);
  if (s.routing == RoutingType::kHash)
    v.param(&m.tid2eid, p + "ffn.gate.tid2eid", {DType::kI64, DType::kI32}, {c.vocab_size, c.num_experts_per_tok}, opt);
  else
    v.param(&m.gate_bias, p + "ffn.gate.bias", kF32First, {E}, opt);
  m.experts.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e)
    walk_expert(c, &m.experts[size_t(e)], p + "ffn.experts." + std::to_string(e) + ".", LinearKind::kExpert, v, opt);
  walk_expert(c, &m.shared, p + "ffn.shared_experts.", LinearKind::kFp8, v, opt);
}

void walk_model(const ModelConfig& c, ModelWeights* w, bool with_mtp, Visitor& v) {
  const int64_t V = c.vocab_size, D = c.hidden_size;
  v.linear(&w->embed, "embed", V, D, config_format(c, LinearKind::kTable, "embed"), false);
  v.linear(&w->head, "head", V, D, config_format(c, LinearKind::kPlain, "head"), false);
  v.param(&w->norm, "norm.weight", kFloatTypes, {D}, false);
  walk_hc(c, &w->hc_head, "hc_head_", true, v, false);
  w->layers.resize(size_t(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    walk_layer(c, &w->layers[size_t(l)], c.layers[size_t(l)], "layers." + std::to_string(l) + ".", v, false);
  if (!with_mtp) return;
  // §10: HF exports drop mtp.*, so the block is optional as a whole (see check_checkpoint).
  w->mtp.resize(c.mtp_layers.size());
  for (size_t i = 0; i < c.mtp_layers.size(); ++i) {
    const std::string p = "mtp." + std::to_string(i) + ".";
    MtpWeights& t = w->mtp[i];
    walk_layer(c, &t.layer, c.mtp_layers[i], p, v, true);
    v.linear(&t.e_proj, p + "e_proj", D, D, config_format(c, LinearKind::kFp8, p + "e_proj"), true);
    v.linear(&t.h_proj, p + "h_proj", D, D, config_format(c, LinearKind::kFp8, p + "h_proj"), true);
    v.param(&t.enorm, p + "enorm.weight", kFloatTypes, {D}, true);
    v.param(&t.hnorm, p + "hnorm.weight", kFloatTypes, {D}, true);
    v.param(&t.norm, p + "norm.weight", kFloatTypes, {D}, true);
    walk_hc(c, &t.hc_head, p + "hc_head_", true, v, true);
  }
}

class ExpectVisitor : public Visitor {
 public:
  explicit ExpectVisitor(const Checkpoint* stored) : stored_(stored) {}
  std::vector<ExpectedTensor> out;
  std::vector<std::string> notes;  // linears stored in another format than the config implies
  void linear(WeightMatrix*, const std::string& base, int64_t rows, int64_t cols, WeightFormat config,
              bool opt) override {
    const WeightFormat f = resolve_format(stored_, base, config);
    if (f != config)
      notes.push_back(cat(base, ": stored as ", to_string(f), ", config.json implies ", to_string(config)));
    check_block_fit(base, cols, f);
    switch (f) {
      case WeightFormat::kFP8Block:  // §11.2
        add(base + ".weight", {DType::kF8_E4M3}, {rows, cols}, opt);
        add(base + ".scale", {DType::kF8_E8M0, DType::kF32}, scale_shape(f, rows, cols), opt);
        break;
      case WeightFormat::kMXFP4:  // §11.3: packed in int8 (the release) or uint8
        add(base + ".weight", {DType::kI8, DType::kU8}, packed_data_shape(f, rows, cols), opt);
        add(base + ".scale", {DType::kF8_E8M0, DType::kU8}, scale_shape(f, rows, cols), opt);
        break;
      case WeightFormat::kNVFP4:  // §11.6
        add(base + ".weight", {DType::kU8, DType::kI8}, packed_data_shape(f, rows, cols), opt);
        add(base + ".weight_scale", {DType::kF8_E4M3}, scale_shape(f, rows, cols), opt);
        add(base + ".weight_scale_2", {DType::kF32}, {}, opt);
        add(base + ".input_scale", {DType::kF32}, {}, opt, /*unused=*/true);
        break;
      default:
        add(base + ".weight", kFloatTypes, {rows, cols}, opt);
    }
  }
  void param(WeightMatrix*, const std::string& name, const std::vector<DType>& dtypes, const std::vector<int64_t>& shape,
             bool opt) override {
    add(name, dtypes, shape, opt);
  }

 private:
  void add(const std::string& name, std::vector<DType> dtypes, std::vector<int64_t> shape, bool opt,
           bool unused = false) {
    out.push_back(ExpectedTensor{name, std::move(dtypes), std::move(shape), opt, unused});
  }
  const Checkpoint* stored_;
};

WeightFormat plain_format(DType t) {
  return t == DType::kF32 ? WeightFormat::kF32 : t == DType::kF16 ? WeightFormat::kF16 : WeightFormat::kBF16;
}

float read_f32_scalar(const TensorView& t) {
  DSV4_CHECK(t.nbytes == 4);
  float v;
  std::memcpy(&v, t.data, 4);
  return v;
}

// Binds views after check_checkpoint has confirmed every name, dtype and shape.
class BindVisitor : public Visitor {
 public:
  BindVisitor(const Checkpoint& ck, bool have_mtp) : ck_(ck), have_mtp_(have_mtp) {}
  void linear(WeightMatrix* out, const std::string& base, int64_t rows, int64_t cols, WeightFormat config,
              bool opt) override {
    if (opt && !have_mtp_) return;
    const WeightFormat f = resolve_format(&ck_, base, config);
    const TensorView& w = ck_.get(base + ".weight");
    out->name = base;
    out->rows = rows;
    out->cols = cols;
    out->data = w.data;
    out->data_tensor = base + ".weight";
    switch (f) {
      case WeightFormat::kFP8Block: {
        const TensorView& s = ck_.get(base + ".scale");
        out->format = f;
        out->scale = s.data;
        out->scale_is_f32 = s.dtype == DType::kF32;
        out->scale_tensor = base + ".scale";
        break;
      }
      case WeightFormat::kMXFP4:
        out->format = f;
        out->scale = ck_.get(base + ".scale").data;
        out->scale_tensor = base + ".scale";
        break;
      case WeightFormat::kNVFP4: {
        out->format = f;
        out->scale = ck_.get(base + ".weight_scale").data;
        out->scale_tensor = base + ".weight_scale";
        out->global_scale = read_f32_scalar(ck_.get(base + ".weight_scale_2"));
        if (const TensorView* in = ck_.find(base + ".input_scale")) out->input_scale = read_f32_scalar(*in);
        if (!std::isfinite(out->global_scale) || out->global_scale <= 0.0f)
          fail(base, ".weight_scale_2 = ", out->global_scale, ": must be a positive finite number");
        if (!std::isfinite(out->input_scale) || out->input_scale < 0.0f)
          fail(base, ".input_scale = ", out->input_scale, ": must be a non-negative finite number");
        break;
      }
      default:
        out->format = plain_format(w.dtype);
    }
  }
  void param(WeightMatrix* out, const std::string& name, const std::vector<DType>&, const std::vector<int64_t>& shape,
             bool opt) override {
    if (opt && !have_mtp_) return;
    const TensorView& t = ck_.get(name);
    out->name = name;
    out->data_tensor = name;
    out->rows = shape.size() == 2 ? shape[0] : 1;
    out->cols = shape.size() == 2 ? shape[1] : shape.empty() ? 1 : shape[0];
    out->data = t.data;
    out->format = t.dtype == DType::kI64 ? WeightFormat::kI64
                  : t.dtype == DType::kI32 ? WeightFormat::kI32 : plain_format(t.dtype);
  }

 private:
  const Checkpoint& ck_;
  bool have_mtp_;
};

bool has_mtp_tensors(const Checkpoint& ck) {
  auto it = ck.tensors().lower_bound(std::string_view("mtp."));
  return it != ck.tensors().end() && it->first.rfind("mtp.", 0) == 0;
}

bool shape_matches(const std::vector<int64_t>& got, const std::vector<int64_t>& want) {
  if (want.empty()) return got.empty() || (got.size() == 1 && got[0] == 1);  // scalar, [] or [1]
  return got == want;
}

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg, const Checkpoint* stored) {
  ModelWeights scratch;
  ExpectVisitor v(stored);
  walk_model(cfg, &scratch, true, v);
  return std::move(v.out);
}

std::vector<std::string> linear_format_notes(const ModelConfig& cfg, const Checkpoint& ckpt) {
  ModelWeights scratch;
  ExpectVisitor v(&ckpt);
  walk_model(cfg, &scratch, true, v);
  return std::move(v.notes);
}

std::vector<std::string> check_checkpoint(const ModelConfig& cfg, const Checkpoint& ckpt) {
  const auto expected = expected_tensors(cfg, &ckpt);
  const bool have_mtp = has_mtp_tensors(ckpt);
  std::vector<std::string> problems;
  std::unordered_map<std::string_view, bool> known;
  known.reserve(expected.size());
  for (const auto& e : expected) {
    known[e.name] = true;
    const TensorView* t = ckpt.find(e.name);
    if (!t) {
      if (!e.unused && !(e.optional && !have_mtp))
        problems.push_back(cat("missing tensor ", e.name, " (", dtypes_str(e.dtypes), " ", shape_str(e.shape), ")"));
      continue;
    }
    if (std::find(e.dtypes.begin(), e.dtypes.end(), t->dtype) == e.dtypes.end())
      problems.push_back(cat("tensor ", e.name, " in ", t->file, ": dtype ", to_string(t->dtype), ", expected ",
                             dtypes_str(e.dtypes)));
    if (!shape_matches(t->shape, e.shape))
      problems.push_back(cat("tensor ", e.name, " in ", t->file, ": shape ", shape_str(t->shape), ", expected ",
                             shape_str(e.shape)));
  }
  for (const auto& [name, t] : ckpt.tensors())
    if (!known.count(name)) problems.push_back(cat("unexpected tensor ", name, " in ", t.file));
  return problems;
}

ModelWeights bind_weights(const ModelConfig& cfg, const Checkpoint& ckpt) {
  const auto problems = check_checkpoint(cfg, ckpt);
  if (!problems.empty()) {
    std::string msg = cat(ckpt.dir().string(), ": checkpoint does not match config.json (", problems.size(),
                          " problems):");
    for (size_t i = 0; i < problems.size() && i < kMaxListedProblems; ++i) msg += "\n  " + problems[i];
    if (problems.size() > kMaxListedProblems) msg += cat("\n  ... and ", problems.size() - kMaxListedProblems, " more");
    throw Error(msg);
  }
  ModelWeights w;
  BindVisitor v(ckpt, has_mtp_tensors(ckpt));
  walk_model(cfg, &w, true, v);
  if (!has_mtp_tensors(ckpt)) w.mtp.clear();
  // tid2eid values index the expert table on every hash-routed token (§8.1): validate before use.
  for (const auto& l : w.layers) {
    const WeightMatrix& t = l.ffn.tid2eid;
    if (!t.present()) continue;
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t c = 0; c < t.cols; ++c) {
        const int64_t e = t.int_at(r, c);
        if (e < 0 || e >= cfg.n_routed_experts)
          fail(t.name, "[", r, ", ", c, "] = ", e, ": expert id outside [0, ", cfg.n_routed_experts, ")");
      }
  }
  return w;
}

}  // namespace dsv4
