// ModelConfig parsing and validation: official config.json keys and the HF-transformers keys
// (architecture.md §1.1–§1.3), and the per-layer schedule. Tensor names/shapes are weights.cpp's.
#include "model/config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "util/error.h"
#include "util/file_read.h"
#include "util/json_duplicates.h"
#include "util/json_limits.h"

namespace dsv4 {

using json = nlohmann::json;

namespace {

// Upper bounds that keep a hostile config from asking for absurd allocations later (the tensor
// list is about L·E·6 names: at most 1.6 M here). Each is well above the largest released model
// (Pro: 61 layers, 384 experts, §1.1).
constexpr int64_t kMaxLayers = 256;
constexpr int64_t kMaxExperts = 1024;
constexpr int64_t kMaxDim = 1 << 17;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxNextn = 16;
constexpr int64_t kMaxPositions = int64_t(1) << 40;
constexpr int64_t kFp8Block = 128;  // §11.2 weight_block_size
constexpr int kMaxJsonDepth = 16;    // config.json nests 3 deep

std::string show(const json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

[[noreturn]] void bad(const std::string& field, const json& v, const std::string& why) {
  fail("config.json: field '", field, "' = ", show(v), ": ", why);
}

class Reader {
 public:
  explicit Reader(const json& j) : j_(j) {}
  bool has(const char* k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  const json& raw(const char* k) const { return j_.at(k); }

  int64_t integer(const char* k, int64_t lo, int64_t hi, std::optional<int64_t> dflt = {}) const {
    if (!has(k)) {
      if (dflt) return *dflt;
      fail("config.json: missing required field '", k, "'");
    }
    return integer_value(k, j_.at(k), lo, hi);
  }
  static int64_t integer_value(const std::string& k, const json& v, int64_t lo, int64_t hi) {
    const std::string out_of_range = cat("out of range: allowed [", lo, ", ", hi, "]");
    int64_t x;
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > uint64_t(hi)) bad(k, v, out_of_range);
      x = int64_t(v.get<uint64_t>());
    } else if (v.is_number_integer()) {
      x = v.get<int64_t>();
    } else if (v.is_number_float()) {
      // Some exporters write 4096.0; accept an integral float, refuse 4096.5. Integers too large
      // for 64 bits arrive here as floats too (1e30, 99999999999999999999): out of range.
      const double d = v.get<double>();
      if (!std::isfinite(d) || d != std::floor(d)) bad(k, v, "expected an integer");
      if (d < double(lo) || d > double(hi)) bad(k, v, out_of_range);
      x = int64_t(d);
    } else {
      bad(k, v, "expected an integer");
    }
    if (x < lo || x > hi) bad(k, v, out_of_range);
    return x;
  }
  double number(const char* k, double lo, double hi, std::optional<double> dflt = {}) const {
    if (!has(k)) {
      if (dflt) return *dflt;
      fail("config.json: missing required field '", k, "'");
    }
    return number_value(k, j_.at(k), lo, hi);
  }
  static double number_value(const std::string& k, const json& v, double lo, double hi) {
    if (!v.is_number()) bad(k, v, "expected a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < lo || d > hi) bad(k, v, cat("out of range: allowed [", lo, ", ", hi, "]"));
    return d;
  }
  bool boolean(const char* k, bool dflt) const {
    if (!has(k)) return dflt;
    if (!j_.at(k).is_boolean()) bad(k, j_.at(k), "expected true or false");
    return j_.at(k).get<bool>();
  }
  std::optional<std::string> string(const char* k) const {
    if (!has(k)) return std::nullopt;
    if (!j_.at(k).is_string()) bad(k, j_.at(k), "expected a string");
    return j_.at(k).get<std::string>();
  }

 private:
  const json& j_;
};

AttentionType attention_for_ratio(int ratio) {
  return ratio == 0 ? AttentionType::kSliding
                    : ratio == kCsaRatio ? AttentionType::kCSA : AttentionType::kHCA;
}

LayerSpec make_layer(int ratio, RoutingType routing) {
  LayerSpec l;
  l.compress_ratio = ratio;
  l.attention = attention_for_ratio(ratio);
  l.routing = routing;
  l.compress_rope = ratio != 0;  // §14.1: ratio-0 layers use rope_theta without YaRN
  return l;
}

// YaRN parameters from an official `rope_scaling` object or an HF `rope_parameters.compress`.
void parse_yarn(const json& o, const std::string& field, RopeParams* rp) {
  if (!o.is_object()) bad(field, o, "expected an object");
  Reader r(o);
  std::string type = "default";
  if (r.has("type")) type = r.string("type").value();
  if (r.has("rope_type")) type = r.string("rope_type").value();
  if (type == "default") return;
  if (type != "yarn") bad(field + ".type", json(type), "only 'yarn' (or 'default') is supported");
  rp->yarn = true;
  rp->factor = Reader::number_value(field + ".factor", r.has("factor") ? o.at("factor") : json(), 1.0, 1e6);
  if (!r.has("original_max_position_embeddings"))
    fail("config.json: missing required field '", field, ".original_max_position_embeddings'");
  rp->original_max_position = Reader::integer_value(field + ".original_max_position_embeddings",
                                                    o.at("original_max_position_embeddings"), 1, kMaxPositions);
  if (r.has("beta_fast")) rp->beta_fast = Reader::number_value(field + ".beta_fast", o.at("beta_fast"), 0.0, 1e6);
  if (r.has("beta_slow")) rp->beta_slow = Reader::number_value(field + ".beta_slow", o.at("beta_slow"), 0.0, 1e6);
  if (rp->beta_slow > rp->beta_fast)
    bad(field + ".beta_slow", o.at("beta_slow"), cat("must not exceed beta_fast = ", rp->beta_fast));
  // §1.1: V4 applies no YaRN magnitude scaling; a config asking for it describes another model.
  for (const char* k : {"attention_factor", "mscale", "mscale_all_dim"}) {
    if (!r.has(k)) continue;
    const double v = Reader::number_value(field + "." + k, o.at(k), -1e9, 1e9);
    const bool neutral = std::string(k) == "attention_factor" ? v == 1.0 : v == 0.0 || v == 1.0;
    if (!neutral) bad(field + "." + k, o.at(k), "YaRN magnitude scaling is not part of DeepSeek-V4 (§1.1)");
  }
}

int ratio_value(const std::string& field, const json& v) {
  const int64_t r = Reader::integer_value(field, v, 0, kHcaRatio);
  if (r != 0 && r != kCsaRatio && r != kHcaRatio) bad(field, v, "compress ratio must be 0, 4 or 128");
  return int(r);
}

void parse_quantization(const json& q, ModelConfig* out, std::optional<std::string>* expert_dtype_in_q) {
  if (!q.is_object()) bad("quantization_config", q, "expected an object");
  Reader r(q);
  const std::string method = r.string("quant_method").value_or("");
  if (method != "fp8" && method != "modelopt")
    bad("quantization_config.quant_method", r.has("quant_method") ? q.at("quant_method") : json(),
        "expected \"fp8\" (or \"modelopt\" for NVFP4 re-quantisations)");
  if (auto fmt = r.string("fmt"); fmt && *fmt != "e4m3")
    bad("quantization_config.fmt", q.at("fmt"), "only e4m3 is supported (§11.2)");
  if (auto sf = r.string("scale_fmt")) {
    if (*sf != "ue8m0" && *sf != "float32" && *sf != "fp32")
      bad("quantization_config.scale_fmt", q.at("scale_fmt"), "expected \"ue8m0\" or \"float32\"");
    out->fp8_scale_e8m0 = *sf == "ue8m0";
  } else {
    out->fp8_scale_e8m0 = false;  // §11.2: Base exports without scale_fmt carry F32 scales
  }
  if (auto as = r.string("activation_scheme"); as && *as != "dynamic")
    bad("quantization_config.activation_scheme", q.at("activation_scheme"), "only \"dynamic\" is supported");
  if (r.has("weight_block_size")) {
    const json& wb = q.at("weight_block_size");
    if (!wb.is_array() || wb.size() != 2 || !wb[0].is_number_integer() || !wb[1].is_number_integer() ||
        wb[0].get<int64_t>() != kFp8Block || wb[1].get<int64_t>() != kFp8Block)
      bad("quantization_config.weight_block_size", wb, "only [128, 128] is supported (§11.2)");
  } else if (method == "fp8") {
    fail("config.json: missing required field 'quantization_config.weight_block_size'");
  }
  // FP8-block linears: the official config, or a ModelOpt one that kept the FP8 keys (NVIDIA's
  // re-quantisations of the FP8 release, §11.6). A ModelOpt export of a BF16 model has plain
  // BF16 linears wherever it did not write NVFP4.
  out->fp8_block = method == "fp8" || r.has("weight_block_size");
  *expert_dtype_in_q = r.string("expert_dtype");

  // NVIDIA ModelOpt NVFP4 (§11.6, modelopt.h): routed experts (moe_quant_algo), named modules
  // (quantized_layers), or every linear but the excluded ones (quant_algo NVFP4).
  Nvfp4Selection& sel = out->nvfp4;
  if (auto qa = r.string("quant_algo")) {
    if (*qa == "NVFP4") sel.all_linears = true;
    else if (*qa != "MIXED_PRECISION" && *qa != "FP8")
      bad("quantization_config.quant_algo", q.at("quant_algo"), "expected MIXED_PRECISION, NVFP4 or FP8");
  }
  if (auto mqa = r.string("moe_quant_algo")) {
    if (*mqa != "NVFP4") bad("quantization_config.moe_quant_algo", q.at("moe_quant_algo"), "only NVFP4 is supported");
    sel.routed_experts = true;
  }
  if (r.has("group_size") && Reader::integer_value("quantization_config.group_size", q.at("group_size"), 1, 1024) != 16)
    bad("quantization_config.group_size", q.at("group_size"), "NVFP4 group size must be 16 (§11.6)");
  if (r.has("quantized_layers")) {
    const json& ql = q.at("quantized_layers");
    if (!ql.is_object()) bad("quantization_config.quantized_layers", ql, "expected an object");
    for (const auto& [pattern, spec] : ql.items()) {
      const std::string f = "quantization_config.quantized_layers." + pattern;
      if (pattern.empty()) bad("quantization_config.quantized_layers", ql, "a module name is empty");
      if (!spec.is_object()) bad(f, spec, "expected an object");
      Reader s(spec);
      const auto algo = s.string("quant_algo");
      if (!algo || *algo != "NVFP4")
        bad(f + ".quant_algo", s.has("quant_algo") ? spec.at("quant_algo") : json(),
            "only NVFP4 entries are supported (FP8 linears are the FP8-block ones of quant_method fp8)");
      if (s.has("group_size") && Reader::integer_value(f + ".group_size", spec.at("group_size"), 1, 1024) != 16)
        bad(f + ".group_size", spec.at("group_size"), "NVFP4 group size must be 16 (§11.6)");
      sel.included.push_back(pattern);
    }
  }
  // Some exporters and loaders spell the exclusion list differently (§11.6); all three count.
  for (const char* k : {"ignore", "ignored_layers", "exclude_modules"}) {
    if (!r.has(k)) continue;
    const json& v = q.at(k);
    if (!v.is_array()) bad(cat("quantization_config.", k), v, "expected a list of strings");
    for (const auto& e : v) {
      if (!e.is_string()) bad(cat("quantization_config.", k), v, "expected a list of strings");
      sel.excluded.push_back(e.get<std::string>());
    }
  }
}

// A per-layer list (compress_ratios, layer_types, mlp_layer_types) may be longer than the layers
// it describes: re-releases append entries for draft layers (§15.3). The extra ones are ignored
// and reported.
void note_ignored_entries(ModelConfig* c, const char* field, const json& list, size_t used, const std::string& what) {
  if (list.size() <= used) return;
  json extra = json::array();
  for (size_t i = used; i < list.size(); ++i) extra.push_back(list[i]);
  c->notes.push_back(cat(field, ": ", list.size() - used, " trailing entr", list.size() - used == 1 ? "y " : "ies ",
                         show(extra), " beyond ", what, " ignored (draft layers of a re-release, §15.3)"));
}

}  // namespace

const char* to_string(AttentionType t) {
  switch (t) {
    case AttentionType::kSliding: return "sliding";
    case AttentionType::kCSA: return "CSA";
    case AttentionType::kHCA: return "HCA";
  }
  return "?";
}
const char* to_string(RoutingType t) { return t == RoutingType::kHash ? "hash" : "score"; }
const char* to_string(ExpertFormat f) {
  switch (f) {
    case ExpertFormat::kBF16: return "BF16";
    case ExpertFormat::kFP8Block: return "FP8-block";
    case ExpertFormat::kMXFP4: return "MXFP4";
    case ExpertFormat::kNVFP4: return "NVFP4";
  }
  return "?";
}

ModelConfig ModelConfig::from_json(std::string_view text) {
  check_json_nesting(text, kMaxJsonDepth, "config.json");
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail("config.json: not valid JSON");
  // The parser would keep the second of two spellings silently.
  if (auto dup = find_duplicate_key(text)) fail("config.json: key '", dup->path(), "' appears twice");
  if (!j.is_object()) fail("config.json: top level must be a JSON object");
  Reader r(j);
  ModelConfig c;

  c.model_type = r.string("model_type").value_or("");
  if (c.model_type != "deepseek_v4")
    bad("model_type", r.has("model_type") ? j.at("model_type") : json(), "expected \"deepseek_v4\"");
  if (r.has("architectures")) {
    const json& a = j.at("architectures");
    if (!a.is_array()) bad("architectures", a, "expected a list of strings");
    for (const auto& e : a)
      if (!e.is_string()) bad("architectures", a, "expected a list of strings");
  }

  c.vocab_size = r.integer("vocab_size", 1, kMaxVocab);
  c.hidden_size = r.integer("hidden_size", 1, kMaxDim);
  c.num_hidden_layers = r.integer("num_hidden_layers", 1, kMaxLayers);
  c.num_attention_heads = r.integer("num_attention_heads", 1, 4096);
  if (r.has("num_key_value_heads"))
    if (r.integer("num_key_value_heads", 1, 4096) != 1)
      bad("num_key_value_heads", j.at("num_key_value_heads"), "DeepSeek-V4 has one shared K=V head (§1.1)");
  c.head_dim = r.integer("head_dim", 1, 8192);
  if (r.has("qk_rope_head_dim")) {
    c.qk_rope_head_dim = r.integer("qk_rope_head_dim", 2, c.head_dim);
  }
  if (r.has("partial_rotary_factor")) {  // HF form (§1.3): r = head_dim · factor
    const double f = r.number("partial_rotary_factor", 0.0, 1.0);
    const double rd = f * double(c.head_dim);
    if (std::fabs(rd - std::round(rd)) > 1e-6 || std::round(rd) < 2)
      bad("partial_rotary_factor", j.at("partial_rotary_factor"),
          cat("head_dim ", c.head_dim, " × factor must be a whole number of rotary dims"));
    const int64_t r_hf = int64_t(std::round(rd));
    if (c.qk_rope_head_dim != 0 && c.qk_rope_head_dim != r_hf)
      bad("partial_rotary_factor", j.at("partial_rotary_factor"),
          cat("disagrees with qk_rope_head_dim = ", c.qk_rope_head_dim));
    c.qk_rope_head_dim = r_hf;
  }
  if (c.qk_rope_head_dim == 0) fail("config.json: missing required field 'qk_rope_head_dim' (or 'partial_rotary_factor')");
  if (c.qk_rope_head_dim % 2 != 0)
    bad("qk_rope_head_dim", json(c.qk_rope_head_dim), "must be even (RoPE rotates pairs, §4.4)");
  if (c.qk_rope_head_dim >= c.head_dim)
    bad("qk_rope_head_dim", json(c.qk_rope_head_dim), cat("must be smaller than head_dim = ", c.head_dim));
  c.q_lora_rank = r.integer("q_lora_rank", 1, kMaxDim);
  c.o_groups = r.integer("o_groups", 1, c.num_attention_heads);
  if (c.num_attention_heads % c.o_groups != 0)
    bad("o_groups", j.at("o_groups"), cat("must divide num_attention_heads = ", c.num_attention_heads));
  c.o_lora_rank = r.integer("o_lora_rank", 1, kMaxDim);
  c.sliding_window = r.integer("sliding_window", 1, 1 << 20);
  c.index_n_heads = r.integer("index_n_heads", 1, 4096);
  c.index_head_dim = r.integer("index_head_dim", 1, 8192);
  if (c.index_head_dim <= c.qk_rope_head_dim)
    bad("index_head_dim", j.at("index_head_dim"), cat("must exceed qk_rope_head_dim = ", c.qk_rope_head_dim, " (RoPE on its last dims, §6)"));
  c.index_topk = r.integer("index_topk", 1, 1 << 24);

  // MoE (§8). HF attribute aliases (§1.3) are accepted when the official key is absent.
  auto int_alias = [&](const char* k, const char* alias, int64_t lo, int64_t hi) {
    return (!r.has(k) && r.has(alias)) ? r.integer(alias, lo, hi) : r.integer(k, lo, hi);
  };
  c.n_routed_experts = int_alias("n_routed_experts", "num_local_experts", 1, kMaxExperts);
  c.n_shared_experts = r.integer("n_shared_experts", 0, 64);
  if (c.n_shared_experts != 1)
    bad("n_shared_experts", j.at("n_shared_experts"), "the reference asserts exactly 1 (§1.1)");
  c.num_experts_per_tok = r.integer("num_experts_per_tok", 1, c.n_routed_experts);
  c.moe_intermediate_size = int_alias("moe_intermediate_size", "intermediate_size", 1, kMaxDim);
  if (auto sf = r.string("scoring_func"); !sf || *sf != "sqrtsoftplus")
    bad("scoring_func", r.has("scoring_func") ? j.at("scoring_func") : json(), "expected \"sqrtsoftplus\" (§8.1)");
  if (auto tm = r.string("topk_method"); tm && *tm != "noaux_tc")
    bad("topk_method", j.at("topk_method"), "expected \"noaux_tc\" (§8.1)");
  if (!r.boolean("norm_topk_prob", true))
    bad("norm_topk_prob", j.at("norm_topk_prob"), "DeepSeek-V4 renormalises the selected weights (§8.1)");
  c.routed_scaling_factor = r.number("routed_scaling_factor", 1e-6, 1e6);
  c.swiglu_limit = r.number("swiglu_limit", 0.0, 1e6, 0.0);
  if (auto act = r.string("hidden_act"); act && *act != "silu")
    bad("hidden_act", j.at("hidden_act"), "expected \"silu\" (§8.2)");

  c.hc_mult = r.integer("hc_mult", 1, 64);
  c.hc_sinkhorn_iters = r.integer("hc_sinkhorn_iters", 1, 10000);
  c.hc_eps = r.number("hc_eps", 1e-30, 1.0);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-30, 1.0);
  c.num_nextn_predict_layers = r.integer("num_nextn_predict_layers", 0, kMaxNextn, 0);
  c.max_position_embeddings = r.integer("max_position_embeddings", 1, kMaxPositions);
  c.bos_token_id = r.integer("bos_token_id", 0, c.vocab_size - 1, 0);
  if (r.has("eos_token_id") && j.at("eos_token_id").is_array()) {  // HF allows a list
    const json& e = j.at("eos_token_id");
    if (e.empty()) bad("eos_token_id", e, "empty list");
    c.eos_token_id = Reader::integer_value("eos_token_id", e[0], 0, c.vocab_size - 1);
    for (const auto& v : e) Reader::integer_value("eos_token_id", v, 0, c.vocab_size - 1);
  } else {
    c.eos_token_id = r.integer("eos_token_id", 0, c.vocab_size - 1, 1);
  }
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (c.tie_word_embeddings)
    bad("tie_word_embeddings", j.at("tie_word_embeddings"), "DeepSeek-V4 has separate embed and head (§1.1)");
  if (r.boolean("attention_bias", false))
    bad("attention_bias", j.at("attention_bias"), "DeepSeek-V4 has no attention biases (§1.1)");
  if (auto td = r.string("torch_dtype"); td && *td != "bfloat16" && *td != "float16" && *td != "float32")
    bad("torch_dtype", j.at("torch_dtype"), "expected bfloat16, float16 or float32");

  // ---- RoPE (§4.4): official rope_theta / compress_rope_theta / rope_scaling, or HF
  // rope_parameters {main, compress} (§1.3). ----
  c.rope_main.theta = r.number("rope_theta", 1.0, 1e12, 10000.0);
  c.rope_compress.theta = r.number("compress_rope_theta", 1.0, 1e12, 160000.0);
  if (r.has("rope_scaling")) parse_yarn(j.at("rope_scaling"), "rope_scaling", &c.rope_compress);
  if (r.has("rope_parameters")) {
    const json& rp = j.at("rope_parameters");
    if (!rp.is_object()) bad("rope_parameters", rp, "expected an object");
    if (rp.contains("main") || rp.contains("compress")) {
      if (!rp.contains("main") || !rp.contains("compress"))
        bad("rope_parameters", rp, "expected both 'main' and 'compress'");
      const json& m = rp.at("main");
      if (!m.is_object()) bad("rope_parameters.main", m, "expected an object");
      if (m.contains("rope_theta")) c.rope_main.theta = Reader::number_value("rope_parameters.main.rope_theta", m.at("rope_theta"), 1.0, 1e12);
      RopeParams mp;
      parse_yarn(m, "rope_parameters.main", &mp);
      if (mp.yarn) bad("rope_parameters.main.rope_type", m, "sliding layers use plain RoPE (§14.1)");
      const json& cp = rp.at("compress");
      if (!cp.is_object()) bad("rope_parameters.compress", cp, "expected an object");
      if (cp.contains("rope_theta")) c.rope_compress.theta = Reader::number_value("rope_parameters.compress.rope_theta", cp.at("rope_theta"), 1.0, 1e12);
      RopeParams cpp = c.rope_compress;
      cpp.yarn = false;
      parse_yarn(cp, "rope_parameters.compress", &cpp);
      c.rope_compress = cpp;
    } else {
      parse_yarn(rp, "rope_parameters", &c.rope_compress);  // flat HF form: the YaRN keys
    }
  }

  // ---- schedule (§1.2, §1.3) ----
  const int64_t L = c.num_hidden_layers, nextn = c.num_nextn_predict_layers;
  std::vector<int> ratios;
  if (r.has("compress_ratios")) {
    const json& cr = j.at("compress_ratios");
    if (!cr.is_array()) bad("compress_ratios", cr, "expected a list of integers");
    // §1.2: one entry per main layer, then one per MTP block (HF exports drop those: ratio 0),
    // then possibly entries for draft layers this engine does not run (§15.3).
    if (int64_t(cr.size()) < L)
      bad("compress_ratios", cr, cat("has ", cr.size(), " entries; needs at least num_hidden_layers = ", L,
                                     " (then one per MTP block, num_nextn_predict_layers = ", nextn, ")"));
    const size_t used = std::min(cr.size(), size_t(L + nextn));
    for (size_t i = 0; i < cr.size(); ++i) {
      const std::string f = cat("compress_ratios[", i, "]");
      if (i < used) ratios.push_back(ratio_value(f, cr[i]));
      else Reader::integer_value(f, cr[i], 0, kHcaRatio);
    }
    note_ignored_entries(&c, "compress_ratios", cr, used, cat("the ", L, " layers + ", nextn, " MTP blocks"));
  }
  if (r.has("layer_types")) {
    int csa = kCsaRatio, hca = kHcaRatio;
    if (r.has("compress_rates")) {
      const json& rates = j.at("compress_rates");
      if (!rates.is_object()) bad("compress_rates", rates, "expected an object");
      for (const auto& [k, v] : rates.items()) {
        const int x = ratio_value("compress_rates." + k, v);
        if (k == "compressed_sparse_attention" || k == "csa") csa = x;
        else if (k == "heavily_compressed_attention" || k == "hca") hca = x;
        else bad("compress_rates." + k, v, "unknown attention type");
      }
      if (csa != kCsaRatio) bad("compress_rates.compressed_sparse_attention", json(csa), "must be 4 (§1.2)");
      if (hca != kHcaRatio) bad("compress_rates.heavily_compressed_attention", json(hca), "must be 128 (§1.2)");
    }
    const json& lt = j.at("layer_types");
    if (!lt.is_array()) bad("layer_types", lt, "expected a list of strings");
    if (int64_t(lt.size()) < L)
      bad("layer_types", lt, cat("has ", lt.size(), " entries; needs at least num_hidden_layers = ", L));
    const size_t used = std::min(lt.size(), size_t(L + nextn));
    note_ignored_entries(&c, "layer_types", lt, used, cat("the ", L, " layers + ", nextn, " MTP blocks"));
    std::vector<int> from_types;
    for (size_t i = 0; i < used; ++i) {
      const json& t = lt[i];
      const std::string s = t.is_string() ? t.get<std::string>() : "";
      if (s == "sliding_attention") from_types.push_back(0);
      else if (s == "compressed_sparse_attention") from_types.push_back(csa);
      else if (s == "heavily_compressed_attention") from_types.push_back(hca);
      else bad(cat("layer_types[", i, "]"), t, "expected sliding_attention, compressed_sparse_attention or heavily_compressed_attention");
    }
    if (!ratios.empty()) {
      for (int64_t i = 0; i < L; ++i)
        if (ratios[size_t(i)] != from_types[size_t(i)])
          bad(cat("layer_types[", i, "]"), lt[size_t(i)], cat("disagrees with compress_ratios[", i, "] = ", ratios[size_t(i)]));
    } else {
      ratios = from_types;
    }
  }
  if (ratios.empty()) fail("config.json: missing required field 'compress_ratios' (or 'layer_types')");
  c.compress_ratios.assign(ratios.begin(), ratios.begin() + L);

  std::vector<RoutingType> routing(size_t(L), RoutingType::kScore);
  if (r.has("mlp_layer_types")) {
    const json& mt = j.at("mlp_layer_types");
    if (!mt.is_array() || int64_t(mt.size()) < L)
      bad("mlp_layer_types", mt, cat("expected a list of at least num_hidden_layers = ", L, " strings"));
    note_ignored_entries(&c, "mlp_layer_types", mt, size_t(L), cat("the ", L, " layers (MTP blocks are never hash-routed)"));
    for (size_t i = 0; i < size_t(L); ++i) {
      const std::string s = mt[i].is_string() ? mt[i].get<std::string>() : "";
      if (s == "hash_moe") routing[i] = RoutingType::kHash;
      else if (s != "moe") bad(cat("mlp_layer_types[", i, "]"), mt[i], "expected \"hash_moe\" or \"moe\"");
    }
    int64_t n_hash = 0;
    for (auto t : routing) n_hash += t == RoutingType::kHash;
    if (r.has("num_hash_layers")) {
      const int64_t nh = r.integer("num_hash_layers", 0, L);
      for (int64_t i = 0; i < L; ++i)
        if ((i < nh) != (routing[size_t(i)] == RoutingType::kHash))
          bad(cat("mlp_layer_types[", i, "]"), mt[size_t(i)], cat("disagrees with num_hash_layers = ", nh));
    }
    c.num_hash_layers = n_hash;
  } else {
    c.num_hash_layers = r.integer("num_hash_layers", 0, L);
    for (int64_t i = 0; i < c.num_hash_layers; ++i) routing[size_t(i)] = RoutingType::kHash;
  }
  for (int64_t i = 0; i < L; ++i) c.layers.push_back(make_layer(c.compress_ratios[size_t(i)], routing[size_t(i)]));
  // §1.2/§10: MTP blocks take the trailing ratio entries (0 when the config has none, as HF
  // exports) and are never hash-routed.
  for (int64_t m = 0; m < nextn; ++m) {
    const size_t idx = size_t(L + m);
    c.mtp_layers.push_back(make_layer(idx < ratios.size() ? ratios[idx] : 0, RoutingType::kScore));
  }

  // ---- weight formats (§11) ----
  std::optional<std::string> expert_dtype = r.string("expert_dtype"), expert_dtype_q;
  if (r.has("quantization_config")) parse_quantization(j.at("quantization_config"), &c, &expert_dtype_q);
  if (!expert_dtype) expert_dtype = expert_dtype_q;
  // Routed experts are NVFP4 when the ModelOpt rules select any layer's (one format for all: the
  // re-quantisations convert every expert, §11.6).
  for (int64_t l = 0; l < L + nextn; ++l) {
    const std::string experts = cat(l < L ? "layers." : "mtp.", l < L ? l : l - L, ".ffn.experts.0.w1");
    if (c.nvfp4.selects(experts, LinearRole::kRoutedExpert)) c.expert_format = ExpertFormat::kNVFP4;
  }
  if (c.expert_format != ExpertFormat::kNVFP4) {
    if (expert_dtype) {
      if (*expert_dtype == "fp4") c.expert_format = ExpertFormat::kMXFP4;
      else if (*expert_dtype == "fp8") c.expert_format = ExpertFormat::kFP8Block;
      else if (*expert_dtype == "bf16" || *expert_dtype == "bfloat16") c.expert_format = ExpertFormat::kBF16;
      else bad("expert_dtype", json(*expert_dtype), "expected \"fp4\", \"fp8\" or \"bf16\"");
    } else {
      c.expert_format = c.fp8_block ? ExpertFormat::kFP8Block : ExpertFormat::kBF16;  // §15.3 Base
    }
  }
  if (c.expert_format == ExpertFormat::kFP8Block && !c.fp8_block)
    bad("expert_dtype", json("fp8"), "FP8 experts need a quantization_config (§11.2)");
  const int64_t group = c.expert_format == ExpertFormat::kMXFP4 ? 32 : c.expert_format == ExpertFormat::kNVFP4 ? 16 : 1;
  if (c.hidden_size % group != 0)
    bad("hidden_size", j.at("hidden_size"), cat("must be a multiple of ", group, " for ", to_string(c.expert_format), " experts"));
  if (c.moe_intermediate_size % group != 0)
    bad("moe_intermediate_size", j.at(r.has("moe_intermediate_size") ? "moe_intermediate_size" : "intermediate_size"),
        cat("must be a multiple of ", group, " for ", to_string(c.expert_format), " experts"));
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  constexpr uint64_t kMaxConfigBytes = 16 << 20;  // real configs are ~2 KB
  const std::string text = read_regular_file(path, kMaxConfigBytes);
  try {
    return from_json(text);
  } catch (const Error& e) {
    // from_json names "config.json"; name the actual path instead.
    std::string msg = e.what();
    const std::string prefix = "config.json: ";
    if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
    fail(path.string(), ": ", msg);
  }
}

}  // namespace dsv4
