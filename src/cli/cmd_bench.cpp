// `dsv4 bench`: prefill and batched-decode speed of a model on a backend, with the bytes each
// decode step must read (dense weights, the routed experts the step's rows actually touched, the
// KV rows attention reads) as a share of the copy bandwidth measured in the same run (design.md
// "Speed principles"). Random token ids; the numbers go to bench/results/ with the card and date.
// --speculative: the cost of the mechanism (a step verifying k drafts, and drafting k, against a
// plain step, on random ids: the speed-up at any acceptance follows), then greedy decode through
// the scheduler with MTP drafts against plain decode in the same run, on real text (random ids are
// never drafted right), with the drafts kept.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/backend_args.h"
#include "cli/chat_turn.h"
#include "cli/command.h"
#include "engine/backend.h"
#include "engine/scheduler.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/model_summary.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file_read.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 bench [-m DIR] [--prompt N] [--batch B1,B2,...] [--ctx N] [--steps S] [options]\n"
    "  -m DIR                checkpoint folder (default: the embedded models/nano)\n"
    "  --prompt N            prefill: one prompt of N random tokens (default 512; 0: skip)\n"
    "  --batch LIST          decode batch sizes, comma-separated (default 1)\n"
    "  --ctx N               context of every sequence when decode is timed (default: --prompt)\n"
    "  --steps S             timed decode steps per batch size (default 16)\n"
    "  --seed S              random token ids (default 1)\n"
    "  --speculative LIST    also time greedy decode through the scheduler with K MTP drafts per\n"
    "                        step (K in 1-3, comma-separated) against K = 0, per batch size, on\n"
    "                        prompts of --ctx tokens of real text; --steps tokens per sequence\n"
    "  --text-file F         that text (default: DIR/validation.txt, nano's; without a text, e.g. a\n"
    "                        random stack, only the mechanism's cost is timed)\n"
    "  --host-cpu-shares L   with --cpu-experts: time decode once per share of the host experts\n"
    "                        whose decode rows the host's cores compute, in [0, 1], comma-separated\n"
    "                        (1: --host-decode cpu, 0: gpu, in between: split), on one load\n"
    "  --json                one JSON object with every number on stdout instead of the table\n";

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<int64_t> parse_list(const std::string& s, const char* opt, int64_t hi = 65536,
                                const char* what = "a batch size") {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > hi)
      fail(opt, ": '", item, "' is not ", what, " in [1, ", hi, "]");
    out.push_back(v);
  }
  if (out.empty()) fail(opt, ": empty list");
  return out;
}

// --host-cpu-shares: each in [0, 1].
std::vector<double> parse_shares(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(v >= 0.0 && v <= 1.0))
      fail("--host-cpu-shares: '", item, "' is not a share in [0, 1]");
    out.push_back(v);
  }
  if (out.empty()) fail("--host-cpu-shares: empty list");
  return out;
}

// Bytes the model's weights take, split the way a decode step reads them: per layer the bytes of
// one routed expert (w1 + w3 + w2 with scales), and everything a step reads whatever the routing
// (attention, shared expert, router, compressors, norms, mHC, the LM head).
struct WeightBytes {
  std::vector<double> per_expert;  // [layer]
  double dense = 0;
  double embed_row = 0;
};

WeightBytes weight_bytes(const ModelConfig& cfg, const std::filesystem::path& dir) {
  const Checkpoint ck = Checkpoint::open(dir);
  WeightBytes w;
  w.per_expert.assign(size_t(cfg.num_hidden_layers), 0.0);
  for (const auto& [name, t] : ck.tensors()) {
    if (name.rfind("mtp.", 0) == 0) continue;  // the MTP block does not run in a decode step
    if (name == "embed.weight") {
      w.embed_row = double(t.nbytes) / double(cfg.vocab_size);
      continue;
    }
    const size_t at = name.find(".ffn.experts.");
    if (at != std::string::npos && name.rfind("layers.", 0) == 0) {
      const int64_t layer = std::stoll(name.substr(7, at - 7));
      if (layer >= 0 && layer < cfg.num_hidden_layers)
        w.per_expert[size_t(layer)] += double(t.nbytes) / double(cfg.n_routed_experts);
      continue;
    }
    w.dense += double(t.nbytes);
  }
  return w;
}

// KV bytes one decode step of one sequence at context `ctx` reads (the CUDA layout, §12.1/§13):
// the window rows, the compressed rows attention gathers (CSA: its top-k; HCA: all visible) and
// every visible FP4 indexer key the indexer scores.
double kv_read_bytes(const ModelConfig& cfg, int64_t ctx) {
  const double d = double(cfg.head_dim), row = (d - 64) + 2 * 64 + (d - 64) / 64 + 1;
  const double key = double(cfg.index_head_dim) / 2 + double(cfg.index_head_dim) / 32;
  const int64_t t = ctx + 1;
  double b = 0;
  for (const LayerSpec& s : cfg.layers) {
    b += double(std::min<int64_t>(t, cfg.sliding_window)) * row;
    if (s.attention == AttentionType::kCSA)
      b += double(std::min<int64_t>(cfg.index_topk, t / kCsaRatio)) * row + double(t / kCsaRatio) * key;
    if (s.attention == AttentionType::kHCA) b += double(t / kHcaRatio) * row;
  }
  return b;
}

struct DecodeResult {
  int64_t batch = 0, ctx = 0, steps = 0;
  double seconds_per_step = 0, weight_bytes = 0, kv_bytes = 0, experts_touched = 0;
  double host_seconds_per_step = 0, host_picks_per_step = 0;  // the host tier's share (HostTierInfo)
};

// Mean seconds of one plain decode step, of one step verifying k drafts per sequence (k + 1 rows
// with the MTP block along), and of drafting k tokens per sequence.
struct MechanismCost {
  double plain = 0, verify = 0, draft = 0;
};

// Greedy decode of `batch` sequences through the scheduler after their prompts are prefilled: the
// tokens sampled from then on, the time they took, the steps, and the drafts kept.
struct SchedulerDecode {
  int64_t tokens = 0, steps = 0;
  double seconds = 0;
  SpeculativeCounts counts;
};

SchedulerDecode scheduler_decode(Forward& f, const std::vector<std::vector<int32_t>>& prompts, int64_t n_tokens,
                                 int k) {
  SchedulerOptions o;
  o.max_running = int64_t(prompts.size());
  o.speculative = k;
  Scheduler s(f, o);
  SchedulerDecode r;
  int64_t started = 0;
  bool timing = false;
  std::vector<char> first(prompts.size(), 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request q;
    q.prompt = prompts[i];
    q.sampling.temperature = 0.0f;
    q.max_tokens = n_tokens + 1;  // the first token ends the prefill
    q.ignore_eos = true;
    q.on_token = [&, i](const SampleResult&) {
      if (!first[i]) {
        first[i] = 1;
        ++started;
      } else if (timing) {
        ++r.tokens;
      }
      return true;
    };
    q.on_finish = [&](const RequestOutcome& oc) {
      if (oc.finish == FinishReason::kError) fail("bench: ", oc.error);
      r.counts += oc.speculative;
    };
    s.submit(std::move(q));
  }
  while (started < int64_t(prompts.size()) && s.step()) {
  }
  const int64_t steps0 = s.stats().steps;
  timing = true;
  const auto t0 = Clock::now();
  while (s.step()) {
  }
  r.seconds = since(t0);
  r.steps = s.stats().steps - steps0;
  return r;
}

// `batch` prompts of `ctx` tokens (BOS, then the text from evenly spread offsets).
std::vector<std::vector<int32_t>> text_prompts(const std::vector<int32_t>& text, int64_t batch, int64_t ctx,
                                               int32_t bos) {
  if (int64_t(text.size()) < ctx) fail("--text-file: ", text.size(), " tokens, shorter than --ctx ", ctx);
  std::vector<std::vector<int32_t>> out;
  const int64_t span = int64_t(text.size()) - ctx + 1;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t at = span * b / batch;
    std::vector<int32_t> p = {bos};
    p.insert(p.end(), text.begin() + at, text.begin() + at + ctx - 1);
    out.push_back(std::move(p));
  }
  return out;
}

class Bench {
 public:
  Bench(Forward& f, uint64_t seed) : f_(f), rng_(seed) {}

  std::vector<int32_t> random_ids(int64_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& x : v) x = int32_t(2 + rng_() % uint64_t(f_.config().vocab_size - 2));
    return v;
  }

  // Seconds to prefill one prompt of n tokens, after a warm-up prompt of the same length: the
  // timed one then launches no kernel for the first time (CUDA loads modules lazily) and meets
  // no GEMM shape cuBLASLt has not planned.
  double prefill(int64_t n) {
    run_prefill(random_ids(n));
    const auto ids = random_ids(n);
    const auto t0 = Clock::now();
    run_prefill(ids);
    return since(t0);
  }

  // The speculative protocol's steps on random ids (every draft rejected, so each step keeps one
  // token): verify [next, k drafts] with mtp, roll back, draft k; and plain one-token steps on
  // other sequences at the same context.
  MechanismCost mechanism(int64_t batch, int64_t ctx, int64_t steps, int k) {
    const int64_t need_tokens = ctx + steps + 8;
    std::vector<std::unique_ptr<SequenceState>> spec, plain;
    std::vector<std::vector<int32_t>> prompts;
    for (int64_t b = 0; b < batch; ++b) {
      spec.push_back(f_.new_sequence(need_tokens));
      plain.push_back(f_.new_sequence(need_tokens));
      prompts.push_back(random_ids(ctx));
    }
    std::vector<int32_t> next(static_cast<size_t>(batch)), next_plain(next.size());
    step(spec, prompts, next, nullptr, /*mtp=*/true);
    step(plain, prompts, next_plain);
    std::vector<std::vector<int32_t>> drafts(next.size());
    auto draft_all = [&] {
      std::vector<DraftItem> items(spec.size());
      for (size_t i = 0; i < spec.size(); ++i) items[i] = {spec[i].get(), next[i], k, nullptr, &drafts[i], nullptr};
      f_.draft(items);
    };
    auto verify_all = [&] {
      std::vector<std::vector<int32_t>> tokens(spec.size());
      for (size_t i = 0; i < spec.size(); ++i) {
        tokens[i] = {next[i]};
        tokens[i].insert(tokens[i].end(), drafts[i].begin(), drafts[i].end());
      }
      const std::vector<int64_t> pos = positions(spec);
      step(spec, tokens, next, nullptr, /*mtp=*/true, /*all_rows=*/true);
      for (size_t i = 0; i < spec.size(); ++i) f_.rollback(*spec[i], pos[i] + 1);
    };
    draft_all();
    for (int i = 0; i < 2; ++i) {  // warm-up (graph capture)
      verify_all();
      draft_all();
      step_one(plain, next_plain, nullptr);
    }
    MechanismCost c;
    for (int64_t i = 0; i < steps; ++i) {
      auto t0 = Clock::now();
      verify_all();
      c.verify += since(t0);
      t0 = Clock::now();
      draft_all();
      c.draft += since(t0);
      t0 = Clock::now();
      step_one(plain, next_plain, nullptr);
      c.plain += since(t0);
    }
    c.verify /= double(steps);
    c.draft /= double(steps);
    c.plain /= double(steps);
    return c;
  }

  DecodeResult decode(int64_t batch, int64_t ctx, int64_t steps, const WeightBytes& wb) {
    const KvCacheInfo kv = f_.kv_cache();
    const int64_t need_tokens = ctx + steps + 4;
    if (batch > kv.free_sequences)
      fail("--batch ", batch, ": the backend has ", kv.free_sequences, " free sequence slots (--max-seqs)");
    if (need_tokens > kv.max_context) fail("--ctx ", ctx, " + the steps exceed the context (", kv.max_context, ")");
    if (batch * kv.blocks_for(need_tokens) > kv.free_blocks)
      fail("--batch ", batch, " at --ctx ", ctx, " needs ", batch * kv.blocks_for(need_tokens),
           " KV blocks, ", kv.free_blocks, " are free (--kv-cache-tokens, --gpu-memory-utilization)");
    std::vector<std::unique_ptr<SequenceState>> seqs;
    std::vector<std::vector<int32_t>> prompts;
    for (int64_t b = 0; b < batch; ++b) {
      seqs.push_back(f_.new_sequence(need_tokens));
      prompts.push_back(random_ids(ctx));
    }
    std::vector<int32_t> next(static_cast<size_t>(batch));
    step(seqs, prompts, next);  // prefill all: the context decode is timed at
    for (int i = 0; i < 2; ++i) step_one(seqs, next, nullptr);  // warm-up (graph capture)
    const HostTierInfo host0 = f_.host_tier();
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) step_one(seqs, next, nullptr);
    DecodeResult r;
    r.batch = batch;
    r.ctx = ctx;
    r.steps = steps;
    r.seconds_per_step = since(t0) / double(steps);
    const HostTierInfo host1 = f_.host_tier();
    r.host_seconds_per_step = (host1.seconds - host0.seconds) / double(steps);
    r.host_picks_per_step = double(host1.picks - host0.picks) / double(steps);
    // One traced step: which experts the step's rows touched, per layer.
    std::map<int, std::set<int>> touched;
    const TraceHook hook = [&](std::string_view name, int layer, const float* data, std::span<const int64_t> shape) {
      if (name != "moe.experts") return;
      int64_t n = 1;
      for (int64_t s : shape) n *= s;
      for (int64_t i = 0; i < n; ++i)
        if (data[i] >= 0) touched[layer].insert(int(data[i]));
    };
    step_one(seqs, next, &hook);
    r.weight_bytes = wb.dense + double(batch) * wb.embed_row;
    for (const auto& [layer, experts] : touched) {
      r.weight_bytes += double(experts.size()) * wb.per_expert[size_t(layer)];
      r.experts_touched += double(experts.size());
    }
    r.experts_touched /= std::max<double>(1, double(touched.size()));
    r.kv_bytes = double(batch) * kv_read_bytes(f_.config(), ctx);
    return r;
  }

 private:
  void run_prefill(const std::vector<int32_t>& ids) {
    auto seq = f_.new_sequence(int64_t(ids.size()) + 1);
    std::vector<std::vector<int32_t>> prompts = {ids};
    std::vector<std::unique_ptr<SequenceState>> seqs;
    seqs.push_back(std::move(seq));
    std::vector<int32_t> next(1);
    step(seqs, prompts, next);
  }

  static std::vector<int64_t> positions(const std::vector<std::unique_ptr<SequenceState>>& seqs) {
    std::vector<int64_t> p;
    for (const auto& s : seqs) p.push_back(s->position());
    return p;
  }

  // One forward call over every sequence (tokens[i] appended to seqs[i]); next[i] = its greedy
  // next token (sampled on the device when the backend can, else the logits' argmax). With
  // all_rows (a speculative verify) every row is scored, next[i] taken from the first row.
  void step(std::vector<std::unique_ptr<SequenceState>>& seqs, const std::vector<std::vector<int32_t>>& tokens,
            std::vector<int32_t>& next, const TraceHook* trace = nullptr, bool mtp = false, bool all_rows = false) {
    const bool device = f_.samples_on_device();
    const DeviceSampling greedy{};
    std::vector<ForwardItem> items(seqs.size());
    std::vector<std::vector<float>> logits(seqs.size());
    std::vector<std::vector<int32_t>> rows(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      items[i].seq = seqs[i].get();
      items[i].tokens = tokens[i];
      items[i].mtp = mtp;
      items[i].all_logits = all_rows;
      if (device) {
        items[i].sample = &greedy;
        items[i].sampled = &next[i];
        if (all_rows) {
          rows[i].resize(tokens[i].size());
          items[i].sampled_rows = rows[i].data();
        }
      } else {
        items[i].logits = &logits[i];
      }
    }
    f_.forward(items, trace);
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (device) {
        if (all_rows) next[i] = rows[i][0];
        continue;
      }
      const size_t V = size_t(f_.config().vocab_size);
      next[i] = int32_t(std::max_element(logits[i].begin(), logits[i].begin() + std::ptrdiff_t(V)) - logits[i].begin());
    }
  }

  void step_one(std::vector<std::unique_ptr<SequenceState>>& seqs, std::vector<int32_t>& next, const TraceHook* trace) {
    std::vector<std::vector<int32_t>> tokens;
    for (int32_t t : next) tokens.push_back({t});
    step(seqs, tokens, next, trace);
  }

  Forward& f_;
  std::mt19937_64 rng_;
};

int run_bench(const std::vector<std::string>& argv) {
  std::set<std::string> values = backend_value_options();
  values.insert({"--model", "--prompt", "--batch", "--ctx", "--steps", "--seed", "--speculative", "--text-file",
                 "--host-cpu-shares"});
  const Args args(argv, values, {"--help", "--json"}, {{"-m", "--model"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fprintf(stdout, "%s%s", kUsage, kBackendUsage);
    return 0;
  }
  if (!args.positional().empty()) fail("bench: unexpected argument '", args.positional()[0], "'");
  const int64_t prompt = args.get_int("--prompt", 512);
  if (prompt < 0) fail("--prompt must be >= 0, got ", prompt);
  const std::vector<int64_t> batches = parse_list(args.get_or("--batch", "1"), "--batch");
  const int64_t ctx = args.get_int("--ctx", std::max<int64_t>(prompt, 1));
  if (ctx < 1) fail("--ctx must be >= 1, got ", ctx);
  const int64_t steps = args.get_int("--steps", 16);
  if (steps < 1 || steps > 100000) fail("--steps must be in [1, 100000], got ", steps);
  const int64_t seed = args.get_int("--seed", 1);
  const bool json = args.has("--json");
  // The decode modes to time, the first one loaded; checked before the backend's options, so the
  // mistake is named the same way in every build.
  std::vector<double> shares;
  if (auto list = args.get("--host-cpu-shares")) {
    if (args.has("--host-decode") || args.has("--host-cpu-share"))
      fail("--host-cpu-shares names the decode modes itself: drop --host-decode and --host-cpu-share");
    if (!args.has("--cpu-experts")) fail("--host-cpu-shares: there is no host tier (add --cpu-experts N or auto)");
    shares = parse_shares(*list);
  }
  BackendOptions opt = backend_options(args);
  if (shares.empty())
    shares = {opt.host_cores_share};
  else
    opt.host_cores_share = shares.front();
  const std::filesystem::path dir = resolve_model_dir(args);
  std::vector<int64_t> drafts;
  std::vector<int32_t> text;
  std::filesystem::path text_file;
  if (auto list = args.get("--speculative")) {
    drafts = parse_list(*list, "--speculative", kMaxSpeculative, "a draft count");
    text_file = args.has("--text-file") ? std::filesystem::path(*args.get("--text-file")) : dir / "validation.txt";
    if (args.has("--text-file") || std::filesystem::exists(text_file)) {
      const Tokenizer tok = Tokenizer::load(dir / "tokenizer.json");
      text = tok.encode(read_input_file(text_file, uint64_t(1) << 30));
    } else {
      std::fprintf(stderr, "bench: %s does not exist and no --text-file was given: the real-text decode is "
                   "skipped (random ids are never drafted right), only the mechanism's cost is timed\n",
                   text_file.string().c_str());
    }
  } else if (args.has("--text-file")) {
    fail("--text-file is the text of --speculative's prompts: give --speculative too");
  }

  const MemoryBandwidth bw = measure_copy_bandwidth(opt);
  const double fp8_peak = prompt > 0 ? measure_fp8_peak(opt) : 0;  // before the weights take the memory
  const auto load_start = std::chrono::steady_clock::now();
  auto f = make_forward(dir, opt);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const ModelConfig& cfg = f->config();
  const WeightBytes wb = weight_bytes(cfg, dir);
  Bench bench(*f, uint64_t(seed));

  nlohmann::json out;
  out["model"] = dir.string();
  out["backend"] = to_string(opt.backend);
  out["device"] = bw.where;
  out["copy_bandwidth_gbs"] = bw.bytes_per_s / 1e9;
  out["layers"] = cfg.num_hidden_layers;
  out["load_seconds"] = load_s;
  out["synthetic_weights"] = opt.synthetic_seed.has_value();
  if (!json)
    std::printf("dsv4 bench: %s, %s backend on %s, copy bandwidth %.0f GB/s (measured now); loaded in %.1f s%s\n",
                dir.string().c_str(), to_string(opt.backend), bw.where.c_str(), bw.bytes_per_s / 1e9, load_s,
                opt.synthetic_seed ? " (synthetic weights)" : "");
  HostTierInfo host = f->host_tier();
  // Decode rows' host experts read by the GPU cross the bus: its rate is their roofline, measured
  // once when any of the modes timed reads over it.
  const bool over_bus = host.host_experts > 0 && *std::min_element(shares.begin(), shares.end()) < 1.0;
  const double bus = over_bus ? measure_bus_bandwidth(opt) : 0;
  const auto decode_mode = [](const HostTierInfo& h) {
    return h.core_experts == h.host_experts ? "cpu" : h.core_experts == 0 ? "gpu" : "split";
  };
  const auto describe_host_tier = [&](const HostTierInfo& h) {
    if (json) return;
    const int64_t bus_experts = h.host_experts - h.core_experts;
    const std::string read_over_bus = cat("read by the GPU over the bus (pinned host to GPU copy ", int64_t(bus / 1e9),
                                          " GB/s, measured now)");
    const std::string rows =
        bus_experts == 0      ? std::string("computed by the host's cores")
        : h.core_experts == 0 ? read_over_bus
                              : cat("of ", h.core_experts, " of them computed by the host's cores, of the other ",
                                    bus_experts, " ", read_over_bus);
    std::printf("host tier: %" PRId64 " of %" PRId64 " routed experts per layer in host memory (%.2f GiB); "
                "decode rows %s\n",
                h.host_experts, h.experts, double(h.host_bytes) / double(1ull << 30), rows.c_str());
  };
  if (host.host_experts > 0) {
    out["host_tier"] = {{"host_experts_per_layer", host.host_experts}, {"experts_per_layer", host.experts},
                        {"host_bytes", host.host_bytes}};
    if (over_bus) out["host_tier"]["bus_bandwidth_gbs"] = bus / 1e9;
    describe_host_tier(host);
  }
  if (prompt > 0) {
    const double host0 = f->host_tier().seconds;
    const double s = bench.prefill(prompt);
    const double host_s = f->host_tier().seconds - host0;
    const double flops = prefill_flops(cfg, prompt);  // model_summary.h: 2 × active parameters + attention
    out["prefill"] = {{"tokens", prompt}, {"seconds", s}, {"tok_per_s", double(prompt) / s}, {"host_seconds", host_s},
                      {"tflop", flops * 1e-12}, {"tflop_per_s", flops / s * 1e-12}};
    if (fp8_peak > 0) {
      out["fp8_peak_tflop_per_s"] = fp8_peak * 1e-12;
      out["prefill"]["share_of_fp8_peak"] = flops / s / fp8_peak;
    }
    if (!json) {
      std::printf("prefill: %" PRId64 " tokens in %.3f s = %.0f tok/s (%.0f tok/s per layer)%s\n", prompt, s,
                  double(prompt) / s, double(prompt) / s * double(cfg.num_hidden_layers),
                  host.host_experts > 0 ? cat(", ", host_s, " s of it in host experts").c_str() : "");
      const bool tera = flops / s >= 1e12;  // nano on the cpu backend does a few GFLOP/s
      std::printf("         %.2f %sFLOP (2 × active parameters per token + attention) = %.1f %sFLOP/s",
                  flops * (tera ? 1e-12 : 1e-9), tera ? "T" : "G", flops / s * (tera ? 1e-12 : 1e-9), tera ? "T" : "G");
      if (fp8_peak > 0)
        std::printf(" = %.1f %% of the FP8 GEMM peak measured now (%.0f TFLOP/s at 8192³)", 100 * flops / s / fp8_peak,
                    fp8_peak * 1e-12);
      std::printf("\n");
    }
  }
  if (!json)
    std::printf("%6s %7s %9s %9s %9s %8s %12s %12s %8s %7s\n", "batch", "ctx", "ms/step", "us/layer", "tok/s",
                "experts", "weights MB", "KV MB", "GB/s", "of copy");
  out["decode"] = nlohmann::json::array();
  for (size_t mode = 0; mode < shares.size(); ++mode) {
    if (mode > 0) {
      f->set_host_cores_share(shares[mode]);
      host = f->host_tier();
      describe_host_tier(host);
    }
    for (int64_t b : batches) {
      const DecodeResult r = bench.decode(b, ctx, steps, wb);
      const double bytes = r.weight_bytes + r.kv_bytes, gbs = bytes / r.seconds_per_step / 1e9;
      const double share = bytes / r.seconds_per_step / bw.bytes_per_s;
      out["decode"].push_back({{"batch", b},
                               {"ctx", ctx},
                               {"ms_per_step", r.seconds_per_step * 1e3},
                               {"us_per_layer", r.seconds_per_step * 1e6 / double(cfg.num_hidden_layers)},
                               {"tok_per_s", double(b) / r.seconds_per_step},
                               {"experts_touched_per_layer", r.experts_touched},
                               {"weight_bytes", r.weight_bytes},
                               {"kv_bytes", r.kv_bytes},
                               {"gb_per_s", gbs},
                               {"share_of_copy_bandwidth", share},
                               {"host_ms_per_step", r.host_seconds_per_step * 1e3},
                               {"host_picks_per_step", r.host_picks_per_step}});
      if (host.host_experts > 0) {
        out["decode"].back()["host_decode"] = decode_mode(host);
        out["decode"].back()["core_experts_per_layer"] = host.core_experts;
      }
      if (!json)
        std::printf("%6" PRId64 " %7" PRId64 " %9.3f %9.1f %9.0f %8.1f %12.1f %12.1f %8.0f %6.1f%%\n", b, ctx,
                    r.seconds_per_step * 1e3, r.seconds_per_step * 1e6 / double(cfg.num_hidden_layers),
                    double(b) / r.seconds_per_step, r.experts_touched, r.weight_bytes / 1e6, r.kv_bytes / 1e6, gbs,
                    100 * share);
      if (!json && host.core_experts > 0)
        std::printf("       host tier: %.3f ms of the step (%.1f %%) in host experts, %.1f (row, pick) pairs\n",
                    r.host_seconds_per_step * 1e3, 100 * r.host_seconds_per_step / r.seconds_per_step,
                    r.host_picks_per_step);
    }
  }
  if (!drafts.empty()) {
    if (!f->can_draft()) fail("--speculative: ", dir.string(), " cannot draft on this backend (no MTP block)");
    out["speculative"] = nlohmann::json::array();
    if (!json)
      std::printf("speculative mechanism (random ids, every draft rejected), ms; a speculative step pays off when it\n"
                  "emits more tokens per sequence than `ratio` = (verify + draft) / plain\n%6s %3s %9s %9s %9s %9s\n",
                  "batch", "k", "plain", "verify", "draft", "ratio");
    out["speculative_cost"] = nlohmann::json::array();
    for (int64_t b : batches)
      for (int64_t k : drafts) {
        const MechanismCost c = bench.mechanism(b, ctx, steps, int(k));
        const double ratio = (c.verify + c.draft) / c.plain;
        out["speculative_cost"].push_back({{"batch", b},
                                           {"k", k},
                                           {"ctx", ctx},
                                           {"plain_ms", c.plain * 1e3},
                                           {"verify_ms", c.verify * 1e3},
                                           {"draft_ms", c.draft * 1e3},
                                           {"step_ratio", ratio}});
        if (!json)
          std::printf("%6" PRId64 " %3" PRId64 " %9.3f %9.3f %9.3f %9.2f\n", b, k, c.plain * 1e3, c.verify * 1e3,
                      c.draft * 1e3, ratio);
      }
    if (!json && !text.empty())
      std::printf("speculative greedy decode through the scheduler: %s, prompts of %" PRId64
                  " tokens, %" PRId64 " tokens per sequence\n%6s %3s %9s %8s %9s %11s %12s\n",
                  text_file.string().c_str(), ctx, steps, "batch", "k", "tok/s", "vs k=0", "ms/step", "drafts kept",
                  "tokens/step");
    for (int64_t b : batches) {
      if (text.empty()) break;
      const auto prompts = text_prompts(text, b, ctx, int32_t(cfg.bos_token_id));
      std::vector<int64_t> ks = {0};
      ks.insert(ks.end(), drafts.begin(), drafts.end());
      double base_tps = 0;
      for (int64_t k : ks) {
        const SchedulerDecode r = scheduler_decode(*f, prompts, steps, int(k));
        const double tps = double(r.tokens) / r.seconds;
        if (k == 0) base_tps = tps;
        out["speculative"].push_back({{"batch", b},
                                      {"k", k},
                                      {"ctx", ctx},
                                      {"tokens", r.tokens},
                                      {"seconds", r.seconds},
                                      {"steps", r.steps},
                                      {"tok_per_s", tps},
                                      {"speedup_vs_k0", tps / base_tps},
                                      {"drafted", r.counts.drafted},
                                      {"accepted", r.counts.accepted},
                                      {"verify_steps", r.counts.verify_steps},
                                      {"acceptance_rate", r.counts.acceptance_rate()},
                                      {"mean_accepted_length", r.counts.mean_accepted_length()}});
        if (!json)
          std::printf("%6" PRId64 " %3" PRId64 " %9.1f %7.2fx %9.3f %10.1f%% %12.2f\n", b, k, tps, tps / base_tps,
                      r.seconds * 1e3 / double(std::max<int64_t>(r.steps, 1)), 100.0 * r.counts.acceptance_rate(),
                      double(r.tokens) / double(std::max<int64_t>(r.steps, 1)) / double(b));
      }
    }
  }
  if (json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace

DSV4_COMMAND("bench", "prefill and batched-decode speed with the roofline share of each step", run_bench);

}  // namespace dsv4::cli
