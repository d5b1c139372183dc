// `dsv4 inspect MODEL_DIR`: model summary (family, schedule, parameters, §13 KV cache, GPU plan)
// and a full header-level verification of the checkpoint. The facts come from src/model/.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/command.h"
#include "cli/model_dir.h"
#include "cpu/fp4_linear.h"
#include "cpu/fp4_linear_rate.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/model_summary.h"
#include "model/weights.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

using json = nlohmann::json;

constexpr double kDefaultGpuGiB = 80.0;        // H100 80 GB class
constexpr int64_t kDefaultScanBytes = 1ll << 30;
constexpr size_t kMaxPrintedProblems = 100;
constexpr size_t kMaxPrintedNotes = 10;
constexpr double kGiB = double(1ull << 30);
constexpr double kHostRateSeconds = 0.3;  // the host FP4 GEMV probe (fp4_linear_rate.h)

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e12) std::snprintf(buf, sizeof buf, "%.3f T", n / 1e12);
  else if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / kGiB);
  return buf;
}

// Data-level check (opt-in): UE8M0 scale bytes 0xFF are NaN (§11.2) and poison whole tiles.
// Reads at most `budget` bytes so a 160 GB checkpoint is never paged in by accident.
struct ScanResult {
  int64_t scanned = 0, total = 0;
  std::vector<std::string> problems;
};
ScanResult scan_scales(const Checkpoint& ck, int64_t budget) {
  ScanResult r;
  for (const auto& [name, t] : ck.tensors()) {
    if (t.dtype != DType::kF8_E8M0) continue;
    r.total += int64_t(t.nbytes);
    const int64_t n = std::min<int64_t>(int64_t(t.nbytes), budget - r.scanned);
    if (n <= 0) continue;
    const void* hit = std::memchr(t.data, 0xFF, size_t(n));
    if (hit) {
      const size_t at = size_t(static_cast<const uint8_t*>(hit) - t.data);
      r.problems.push_back(cat("tensor ", name, " in ", t.file, ": UE8M0 NaN byte 0xFF at element ", at,
                               " (file offset ", t.file_offset + at, ")"));
    }
    r.scanned += n;
  }
  return r;
}

int run_inspect(const std::vector<std::string>& argv) {
  Args args(argv, {"--model", "--context", "--gpu-gib", "--scan-bytes", "--host-experts"},
            {"--json", "--scan-scales", "--help"},
            {{"-m", "--model"}, {"-h", "--help"}}, /*max_positional=*/1);
  if (args.has("--help")) {
    std::fprintf(stdout,
                 "usage: dsv4 inspect [MODEL_DIR | -m DIR] [--json] [--context TOKENS] [--gpu-gib GIB]\n"
                 "                    [--scan-scales [--scan-bytes N]] [--host-experts N]\n"
                 "Prints the model summary and verifies every tensor header against config.json\n"
                 "(default model: the embedded models/nano). Exit 0 only when the checkpoint is\n"
                 "complete and consistent.\n"
                 "When the weights do not fit one GPU (or with --host-experts N: N routed experts of\n"
                 "every layer), also the host tier: the experts kept in host memory and what a decode\n"
                 "token then reads from them, timed with this host's FP4 GEMV.\n");
    return 0;
  }
  if (!args.positional().empty() && args.has("--model")) fail("give the model folder once: MODEL_DIR or -m DIR");
  const std::filesystem::path dir =
      args.positional().empty() ? resolve_model_dir(args) : std::filesystem::path(args.positional()[0]);
  const double gpu_gib = args.get_double("--gpu-gib", kDefaultGpuGiB);
  if (!(gpu_gib > 0)) fail("option --gpu-gib: must be positive");
  const int64_t scan_budget = args.get_int("--scan-bytes", kDefaultScanBytes, 0, INT64_MAX);
  args.get_int("--context", 1, 1, INT64_MAX);  // a malformed value is named before the config is read
  const int64_t host_experts = args.get_int("--host-experts", -1, 0, INT64_MAX);

  const ModelConfig cfg = ModelConfig::load(dir);
  // The KV and GPU numbers are for one sequence of `context` tokens: at most what the model serves.
  const int64_t context = args.get_int("--context", cfg.max_position_embeddings, 1, cfg.max_position_embeddings);
  if (host_experts > cfg.n_routed_experts)
    fail("option --host-experts: ", host_experts, " is more than the ", cfg.n_routed_experts, " routed experts of a layer");
  const std::string family = model_family(cfg);
  const ParamCounts params = count_parameters(cfg);
  const KvCacheSize kv = kv_cache_size(cfg);
  std::map<AttentionType, int> by_attn;
  std::map<RoutingType, int> by_route;
  for (const auto& l : cfg.layers) {
    by_attn[l.attention]++;
    by_route[l.routing]++;
  }

  // Header-level verification: every shard header, the index, then completeness vs the config.
  std::vector<std::string> problems;
  std::map<std::string, uint64_t> bytes_by_dtype;
  double expert_bytes = 0, other_bytes = 0;
  int64_t n_tensors = 0, n_files = 0;
  bool hf = false;
  ScanResult scan;
  std::vector<std::string> format_notes;  // linears stored in another format than the config says
  std::optional<Checkpoint> ck;
  try {
    ck.emplace(Checkpoint::open(dir));
  } catch (const Error& e) {
    problems.push_back(e.what());
  }
  if (ck) {
    hf = ck->hf_names();
    std::set<std::string> files;
    for (const auto& [name, t] : ck->tensors()) {
      bytes_by_dtype[to_string(t.dtype)] += t.nbytes;
      files.insert(t.file);
      ++n_tensors;
    }
    n_files = int64_t(files.size());
    const WeightBytesSplit split = split_weight_bytes(*ck);
    expert_bytes = split.experts;
    other_bytes = split.other;
    const auto p = check_checkpoint(cfg, *ck);
    problems.insert(problems.end(), p.begin(), p.end());
    if (p.empty()) format_notes = linear_format_notes(cfg, *ck);
    if (args.has("--scan-scales")) {
      scan = scan_scales(*ck, scan_budget);
      problems.insert(problems.end(), scan.problems.begin(), scan.problems.end());
    }
  }
  const auto plan = gpu_plan(cfg, expert_bytes, other_bytes, context, gpu_gib * kGiB);
  // The host tier: asked for, or the way one GPU can still hold the model.
  const bool show_host = host_experts >= 0 || (!plan.empty() && !plan[0].fits && cfg.n_routed_experts > 0);
  HostTierPlan host;
  HostFp4Rate host_rate;
  if (show_host) {
    host = host_tier_plan(cfg, expert_bytes, other_bytes, context, gpu_gib * kGiB, host_experts);
    const bool fp4 = cfg.expert_format == ExpertFormat::kMXFP4 || cfg.expert_format == ExpertFormat::kNVFP4;
    if (fp4 && host.host_per_layer > 0)
      host_rate = measure_host_fp4_rate(
          cfg.expert_format == ExpertFormat::kMXFP4 ? WeightFormat::kMXFP4 : WeightFormat::kNVFP4, 0, kHostRateSeconds);
  }
  // Expected host-expert time of one decode token, 0 when there is no rate to divide by.
  const double host_seconds_per_token =
      host_rate.weight_bytes_per_s > 0 ? host.host_bytes_per_token / host_rate.weight_bytes_per_s : 0;
  const bool ok = problems.empty();

  if (args.has("--json")) {
    json j;
    j["model_dir"] = dir.string();
    j["family"] = family;
    j["layers"] = {{"main", cfg.num_hidden_layers}, {"mtp", cfg.mtp_layers.size()},
                   {"sliding", by_attn[AttentionType::kSliding]}, {"csa", by_attn[AttentionType::kCSA]},
                   {"hca", by_attn[AttentionType::kHCA]}, {"hash", by_route[RoutingType::kHash]},
                   {"score", by_route[RoutingType::kScore]}};
    j["experts"] = {{"routed", cfg.n_routed_experts}, {"per_token", cfg.num_experts_per_tok},
                    {"shared", cfg.n_shared_experts}, {"format", to_string(cfg.expert_format)}};
    j["parameters"] = {{"total", params.total}, {"active", params.active}, {"mtp", params.mtp}};
    j["tensors"] = n_tensors;
    j["shards"] = n_files;
    j["hf_names"] = hf;
    j["bytes_by_dtype"] = bytes_by_dtype;
    j["kv_cache"] = {{"per_token_bf16", kv.bf16_per_token}, {"per_token_fp8", kv.fp8_per_token},
                     {"per_token_fp8_mxfp4", kv.fp8_mxfp4_per_token}, {"context", context},
                     {"at_context_bf16", kv.bf16_per_token * double(context) + kv.ring_bf16_bytes},
                     {"at_context_fp8_mxfp4", kv.fp8_mxfp4_per_token * double(context) + kv.ring_fp8_bytes}};
    json pj = json::array();
    for (const auto& r : plan)
      pj.push_back({{"gpus", r.n_gpus}, {"weights_per_gpu", r.weights_per_gpu}, {"kv_per_gpu", r.kv_per_gpu},
                    {"reserve", r.reserve}, {"fits", r.fits}, {"max_context", r.max_context}});
    j["gpu_plan"] = {{"gpu_bytes", gpu_gib * kGiB}, {"rows", pj}};
    if (show_host)
      j["host_tier"] = {{"gpus", 1}, {"experts_per_layer", host.experts_per_layer}, {"moe_layers", host.moe_layers},
                        {"host_per_layer", host.host_per_layer}, {"bytes_per_expert", host.bytes_per_expert},
                        {"host_bytes", host.host_bytes}, {"gpu_weights", host.gpu_weights}, {"kv", host.kv},
                        {"reserve", host.reserve}, {"fits", host.fits},
                        {"host_bytes_per_token", host.host_bytes_per_token},
                        {"host_fp4_bytes_per_s", host_rate.weight_bytes_per_s}, {"host_threads", host_rate.threads},
                        {"host_seconds_per_token", host_seconds_per_token}};
    if (args.has("--scan-scales")) j["scale_scan"] = {{"scanned", scan.scanned}, {"total", scan.total}};
    std::vector<std::string> notes = cfg.notes;
    notes.insert(notes.end(), format_notes.begin(), format_notes.end());
    j["notes"] = notes;
    j["context"] = {{"max_position_embeddings", cfg.max_position_embeddings}};
    j["ok"] = ok;
    j["problems_total"] = problems.size();
    j["problems"] = std::vector<std::string>(problems.begin(), problems.begin() + std::min(problems.size(), size_t(1000)));
    std::printf("%s\n", j.dump(2).c_str());
    return ok ? 0 : 1;
  }

  std::printf("model:       %s\n", dir.string().c_str());
  std::printf("family:      %s\n", family == "other" ? "other (not a released V4 shape)" : ("DeepSeek-V4-" + family).c_str());
  std::printf("layers:      %" PRId64 " main + %zu MTP\n", cfg.num_hidden_layers, cfg.mtp_layers.size());
  std::printf("  attention: %d sliding, %d CSA, %d HCA\n", by_attn[AttentionType::kSliding], by_attn[AttentionType::kCSA],
              by_attn[AttentionType::kHCA]);
  std::printf("  routing:   %d hash, %d score\n", by_route[RoutingType::kHash], by_route[RoutingType::kScore]);
  std::printf("experts:     %" PRId64 " routed (%" PRId64 " per token) + %" PRId64 " shared, %s\n", cfg.n_routed_experts,
              cfg.num_experts_per_tok, cfg.n_shared_experts, to_string(cfg.expert_format));
  std::printf("parameters:  %s total (+ %s MTP), %s active per token\n", human_count(double(params.total)).c_str(),
              human_count(double(params.mtp)).c_str(), human_count(double(params.active)).c_str());
  std::printf("context:     %" PRId64 " tokens (max_position_embeddings; --ctx-size may lower it)\n",
              cfg.max_position_embeddings);
  std::printf("tensors:     %" PRId64 " in %" PRId64 " shards%s\n", n_tensors, n_files, hf ? " (HF names)" : "");
  std::printf("bytes:      ");
  for (const auto& [dt, b] : bytes_by_dtype) std::printf(" %s %s,", dt.c_str(), gib(double(b)).c_str());
  std::printf(" total %s\n", gib(expert_bytes + other_bytes).c_str());
  std::printf("KV cache per token: %.0f B BF16, %.0f B FP8 + FP8 indexer, %.0f B FP8 + MXFP4 indexer\n",
              kv.bf16_per_token, kv.fp8_per_token, kv.fp8_mxfp4_per_token);
  std::printf("KV cache at %" PRId64 " tokens: %s BF16, %s FP8 + MXFP4 indexer (incl. window rings %.1f MiB BF16)\n",
              context, gib(kv.bf16_per_token * double(context) + kv.ring_bf16_bytes).c_str(),
              gib(kv.fp8_mxfp4_per_token * double(context) + kv.ring_fp8_bytes).c_str(), kv.ring_bf16_bytes / (1 << 20));
  std::printf("GPU plan (%.0f GiB per GPU; routed experts split across GPUs, the rest replicated; FP8 KV;\n"
              "          %s reserved for activations and workspaces, an estimate):\n",
              gpu_gib, plan.empty() ? "" : gib(plan[0].reserve).c_str());
  for (const auto& r : plan)
    std::printf("  %d GPU%s: weights %s + KV %s -> %s (max context %" PRId64 ")\n", r.n_gpus, r.n_gpus > 1 ? "s" : " ",
                gib(r.weights_per_gpu).c_str(), gib(r.kv_per_gpu).c_str(), r.fits ? "fits" : "does not fit",
                r.max_context);
  if (show_host) {
    std::printf("host tier (1 GPU of %.0f GiB): %" PRId64 " of %" PRId64 " routed experts per layer in host memory "
                "(%" PRId64 " layers, %s)\n",
                gpu_gib, host.host_per_layer, host.experts_per_layer, host.moe_layers, gib(host.host_bytes).c_str());
    std::printf("           GPU: weights %s + KV %s -> %s\n", gib(host.gpu_weights).c_str(), gib(host.kv).c_str(),
                host.fits ? "fits" : "does not fit even with every routed expert on the host");
    std::printf("           a decode token reads %.1f MB of host experts on average (k·%" PRId64 "/%" PRId64
                " of each main layer's)\n",
                host.host_bytes_per_token / 1e6, host.host_per_layer, host.experts_per_layer);
    if (host_seconds_per_token > 0)
      std::printf("           = %.2f ms per token at %.1f GB/s (this host's FP4 GEMV, %s, %d threads, measured)\n",
                  host_seconds_per_token * 1e3, host_rate.weight_bytes_per_s / 1e9, to_string(fp4_best_kernel()),
                  host_rate.threads);
  }
  if (args.has("--scan-scales"))
    std::printf("scale scan:  %" PRId64 " of %" PRId64 " UE8M0 bytes read (--scan-bytes bounds it)\n", scan.scanned,
                scan.total);
  for (const std::string& n : cfg.notes) std::printf("note:        %s\n", n.c_str());
  if (!format_notes.empty()) {
    std::printf("note:        %zu linear%s stored in another format than config.json implies (loaded as stored):\n",
                format_notes.size(), format_notes.size() == 1 ? "" : "s");
    for (size_t i = 0; i < format_notes.size() && i < kMaxPrintedNotes; ++i)
      std::printf("               %s\n", format_notes[i].c_str());
    if (format_notes.size() > kMaxPrintedNotes)
      std::printf("               ... and %zu more (--json lists them all)\n", format_notes.size() - kMaxPrintedNotes);
  }
  if (ok) {
    std::printf("verify:      OK, %" PRId64 " tensors complete and consistent with config.json\n", n_tensors);
    return 0;
  }
  std::printf("verify:      %zu problem%s\n", problems.size(), problems.size() == 1 ? "" : "s");
  for (size_t i = 0; i < problems.size() && i < kMaxPrintedProblems; ++i) std::printf("  %s\n", problems[i].c_str());
  if (problems.size() > kMaxPrintedProblems)
    std::printf("  ... and %zu more (--json lists up to 1000)\n", problems.size() - kMaxPrintedProblems);
  return 1;
}

}  // namespace

DSV4_COMMAND("inspect", "summarise a model folder and verify its checkpoint", run_inspect);

}  // namespace dsv4::cli
