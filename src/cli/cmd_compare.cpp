// `dsv4 compare`: one token list through two backends (or numerics modes) with the same chunking;
// every traced intermediate (model/forward.h TraceHook) is collected and B is measured against A,
// layer by layer in forward order. The backends are engine/backend.h's; this file only collects,
// measures and prints. A diagnostic: it exits 0 whenever both runs finished.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/command.h"
#include "cli/context_limit.h"
#include "cli/model_dir.h"
#include "cli/token_file.h"
#include "engine/backend.h"
#include "util/error.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 compare [-m DIR] --tokens FILE [--chunk N] [--a SPEC] [--b SPEC]\n"
    "                    [--synthetic-weights SEED] [--json]\n"
    "  -m DIR                checkpoint folder (config.json, safetensors; default: the embedded\n"
    "                        models/nano)\n"
    "  --tokens FILE         JSON array of token ids (as dsv4 logits --tokens)\n"
    "  --chunk N             tokens per forward call, the same for both runs (default: all)\n"
    "  --a SPEC, --b SPEC    cpu-official (default a), cpu-exact, cpu-official-bf16 or cuda (default b);\n"
    "                        cuda takes options after commas: cpu-experts=N (N routed experts of\n"
    "                        every layer in host memory) and host-decode=cpu|gpu (who computes their\n"
    "                        decode rows), e.g. cuda,cpu-experts=64,host-decode=gpu\n"
    "  --synthetic-weights SEED  cuda runs: the weights `make-skeleton --random SEED` would write,\n"
    "                        generated at load (a header-only skeleton compares at full size)\n"
    "  --threads N           CPU threads (default: all cores)\n"
    "  --json                one JSON object on stdout instead of the table\n"
    "Per traced tensor (layer, name): cosine similarity, max |a-b|, max |a|; for logits the share\n"
    "of positions whose top-1 token agrees, for indexer.topk and moe.experts the share of\n"
    "identical picks. Every intermediate of both runs is held in memory: use a short token list.\n"
    "Official numerics store indexer keys Hadamard-rotated (§6): indexer.keys of an exact run and\n"
    "an official run are in different bases (compare the picks instead).\n";

// Every traced intermediate of one run is held until the comparison; a real checkpoint over a
// long token list would need tens of GiB, which no diagnostic needs (use fewer tokens).
constexpr int64_t kMaxTraceBytes = int64_t(8) << 30;

// Traced tensors that hold indices (as FP32), compared as sets per row, not as values.
bool is_index_tensor(const std::string& name) {
  return name == "indexer.topk" || name == "moe.experts";
}

struct Spec {
  std::string text;
  BackendOptions options;
};

// SPEC: cpu-<numerics>, or cuda followed by ",key=value" options (the usage above).
Spec parse_spec(const std::string& option, const std::string& text, int n_threads) {
  Spec s{text, {}};
  s.options.n_threads = n_threads;
  if (text == "cuda" || text.rfind("cuda,", 0) == 0) {
    s.options.backend = Backend::kCuda;
    s.options.numerics = default_numerics(Backend::kCuda);
    for (size_t at = 4; at < text.size();) {
      const size_t end = std::min(text.find(',', at + 1), text.size());
      const std::string kv = text.substr(at + 1, end - at - 1);
      const size_t eq = kv.find('=');
      const std::string key = kv.substr(0, eq), value = eq == std::string::npos ? "" : kv.substr(eq + 1);
      const bool count = !value.empty() && value.size() <= 4 && value.find_first_not_of("0123456789") == std::string::npos;
      if (key == "cpu-experts" && count && std::stoi(value) > 0)
        s.options.cpu_experts = std::stoi(value);
      else if (key == "host-decode" && (value == "cpu" || value == "gpu"))
        s.options.host_cores_share = value == "cpu" ? 1.0 : 0.0;  // BackendOptions::host_cores_share
      else
        fail(option, " ", text, ": '", kv, "' is not an option of cuda (cpu-experts=N with N >= 1, host-decode=cpu|gpu)");
      at = end;
    }
    if (s.options.host_cores_share == 0.0 && s.options.cpu_experts == 0)
      fail(option, " ", text, ": host-decode=gpu needs cpu-experts=N");
  } else if (text.rfind("cpu-", 0) != 0 || !parse_numerics(text.substr(4), &s.options.numerics)) {
    fail(option, " must be cpu-<numerics> (cpu-exact, cpu-official, cpu-official-bf16) or cuda[,options]; "
         "got '", text, "'");
  }
  return s;
}

using Key = std::pair<std::string, int>;  // (name, layer); layer -1 for model-level tensors

// One traced tensor, concatenated over the chunks along its first axis.
struct Traced {
  std::vector<int64_t> shape;
  std::vector<float> data;
  bool ragged = false;  // the trailing axes changed between chunks (kept: the first chunk's)
};

// Receives the trace of one run; remembers the order in which tensors first appear, each placed
// right after the tensor traced before it in the same forward call, so that a tensor first seen
// in a later chunk (a compressor's first entries) still lands at its place in the forward pass.
class TraceCollector {
 public:
  TraceHook hook() {
    return [this](std::string_view name, int layer, const float* data,
                  std::span<const int64_t> shape) { add(std::string(name), layer, data, shape); };
  }
  void start_call() { prev_.reset(); }
  const std::vector<Key>& order() const { return order_; }
  const Traced* find(const Key& k) const {
    auto it = traced_.find(k);
    return it == traced_.end() ? nullptr : &it->second;
  }

 private:
  void add(std::string name, int layer, const float* data, std::span<const int64_t> shape) {
    std::vector<int64_t> s(shape.begin(), shape.end());
    if (s.empty()) s.push_back(1);  // a scalar: one row per call
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    bytes_ += n * int64_t(sizeof(float));
    if (bytes_ > kMaxTraceBytes)
      fail("the traced intermediates of one run exceed ", kMaxTraceBytes >> 30,
           " GiB (at ", name, " of layer ", layer, "): compare fewer tokens");
    Key key{std::move(name), layer};
    auto [it, is_new] = traced_.try_emplace(key);
    Traced& t = it->second;
    if (is_new) {
      t.shape = s;
      auto at = order_.begin();
      if (prev_) at = std::find(order_.begin(), order_.end(), *prev_) + 1;
      order_.insert(at, key);
    } else {
      if (!std::equal(s.begin() + 1, s.end(), t.shape.begin() + 1, t.shape.end())) t.ragged = true;
      t.shape[0] += s[0];
    }
    if (!t.ragged) t.data.insert(t.data.end(), data, data + n);
    prev_ = std::move(key);
  }

  std::map<Key, Traced> traced_;
  std::vector<Key> order_;
  std::optional<Key> prev_;
  int64_t bytes_ = 0;
};

// Runs `tokens` through one backend in chunks of `chunk`, all logits, tracing everything.
void run_traced(const std::string& model_dir, const Spec& spec, const std::vector<int32_t>& tokens,
                int64_t chunk, TraceCollector* out) {
  const auto t0 = std::chrono::steady_clock::now();
  auto fwd = make_forward(model_dir, spec.options);
  check_fits_context(*fwd, int64_t(tokens.size()), "--tokens");
  const int64_t T = int64_t(tokens.size());
  auto seq = fwd->new_sequence(T);
  const TraceHook hook = out->hook();
  std::vector<float> logits;
  for (int64_t p = 0; p < T; p += chunk) {
    ForwardItem item;
    item.seq = seq.get();
    item.tokens = std::span<const int32_t>(tokens.data() + p, size_t(std::min(chunk, T - p)));
    item.all_logits = true;
    item.logits = &logits;
    out->start_call();
    fwd->forward(std::span<ForwardItem>(&item, 1), &hook);
  }
  std::fprintf(stderr, "dsv4 compare: %s (%s numerics) ran in %.2f s\n", spec.text.c_str(),
               to_string(spec.options.numerics),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  // What the host tier did, so that a comparison against it is seen not to be vacuous.
  if (const HostTierInfo h = fwd->host_tier(); h.host_experts > 0)
    std::fprintf(stderr,
                 "dsv4 compare: %s: %lld of %lld routed experts per layer on the host, %lld of them on its cores; "
                 "%lld (row, pick) pairs on the cores, %lld MoE sub-layers streamed to the GPU\n",
                 spec.text.c_str(), (long long)h.host_experts, (long long)h.experts, (long long)h.core_experts,
                 (long long)h.picks, (long long)h.streamed);
}

// A's order, with B-only tensors inserted after the tensor B traced before them.
std::vector<Key> merged_order(const TraceCollector& a, const TraceCollector& b) {
  std::vector<Key> order = a.order();
  const Key* prev = nullptr;
  for (const Key& k : b.order()) {
    if (!a.find(k)) {
      auto at = prev ? std::find(order.begin(), order.end(), *prev) + 1 : order.begin();
      order.insert(at, k);
    }
    prev = &k;
  }
  return order;
}

struct Row {
  Key key;
  const Traced* a = nullptr;
  const Traced* b = nullptr;
  bool measured = false;  // value metrics below are set
  double cosine = 0, max_err = 0, max_a = 0;
  int64_t nonfinite = 0;  // entries not finite in a or b, left out of the metrics
  std::optional<std::pair<int64_t, int64_t>> top1;   // logits: positions agreeing, positions
  std::optional<std::pair<int64_t, int64_t>> picks;  // index tensors: identical picks, picks
  std::vector<std::string> notes;
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Per row of [rows, K] indices: |A ∩ B| over max(|A|, |B|), negatives (no pick) left out.
std::pair<int64_t, int64_t> pick_overlap(const float* a, const float* b, int64_t rows, int64_t K) {
  int64_t same = 0, total = 0;
  std::vector<float> sa, sb, both;
  for (int64_t r = 0; r < rows; ++r) {
    sa.clear();
    sb.clear();
    for (int64_t i = 0; i < K; ++i) {
      if (a[r * K + i] >= 0) sa.push_back(a[r * K + i]);
      if (b[r * K + i] >= 0) sb.push_back(b[r * K + i]);
    }
    std::sort(sa.begin(), sa.end());
    std::sort(sb.begin(), sb.end());
    sa.erase(std::unique(sa.begin(), sa.end()), sa.end());
    sb.erase(std::unique(sb.begin(), sb.end()), sb.end());
    both.clear();
    std::set_intersection(sa.begin(), sa.end(), sb.begin(), sb.end(), std::back_inserter(both));
    same += int64_t(both.size());
    total += int64_t(std::max(sa.size(), sb.size()));
  }
  return {same, total};
}

Row measure(const Key& key, const Traced* a, const Traced* b) {
  Row r;
  r.key = key;
  r.a = a;
  r.b = b;
  if (!a || !b) {
    r.notes.push_back(a ? "only in a" : "only in b");
    return r;
  }
  if (a->ragged || b->ragged) {
    r.notes.push_back(cat("shape changed between chunks in ", a->ragged ? "a" : "b"));
    return r;
  }
  if (a->data.size() != b->data.size()) {
    r.notes.push_back(
        cat("shape mismatch: a ", shape_text(a->shape), ", b ", shape_text(b->shape)));
    return r;
  }
  if (a->shape != b->shape)
    r.notes.push_back(cat("shapes differ (b ", shape_text(b->shape), "), compared element-wise"));
  const int64_t n = int64_t(a->data.size());
  const int64_t K = a->shape.back(), rows = K > 0 ? n / K : 0;
  if (is_index_tensor(key.first)) {
    r.picks = pick_overlap(a->data.data(), b->data.data(), rows, K);
    return r;
  }
  double dot = 0, na = 0, nb = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = a->data[size_t(i)], y = b->data[size_t(i)];
    if (!std::isfinite(x) || !std::isfinite(y)) {
      ++r.nonfinite;
      continue;
    }
    dot += x * y;
    na += x * x;
    nb += y * y;
    r.max_err = std::max(r.max_err, std::fabs(x - y));
    r.max_a = std::max(r.max_a, std::fabs(x));
  }
  // Two all-zero tensors agree; one zero and one not share no direction.
  r.cosine = (na == 0 && nb == 0) ? 1.0 : (na == 0 || nb == 0) ? 0.0 : dot / std::sqrt(na * nb);
  r.measured = true;
  if (r.nonfinite > 0) r.notes.push_back(cat(r.nonfinite, " non-finite entries left out"));
  if (key.first == "logits" && K > 0) {
    int64_t agree = 0;
    for (int64_t t = 0; t < rows; ++t) {
      const float* ra = a->data.data() + t * K;
      const float* rb = b->data.data() + t * K;
      agree += (std::max_element(ra, ra + K) - ra) == (std::max_element(rb, rb + K) - rb);
    }
    r.top1 = std::make_pair(agree, rows);
  }
  return r;
}

// "639/640 (99.84 %)"; nothing to count (no picks at all) reads as full agreement.
std::string ratio_text(const std::pair<int64_t, int64_t>& p) {
  char pct[32];
  const double pc = p.second > 0 ? 100.0 * double(p.first) / double(p.second) : 100.0;
  std::snprintf(pct, sizeof pct, "%.2f", pc);
  return cat(p.first, "/", p.second, " (", pct, " %)");
}

void print_table(const std::vector<Row>& rows) {
  std::printf("%5s  %-16s %-20s %12s %11s %11s  %s\n", "layer", "name", "shape", "cosine",
              "max|a-b|", "max|a|", "notes");
  for (const Row& r : rows) {
    const std::string layer = r.key.second < 0 ? "-" : std::to_string(r.key.second);
    const Traced* t = r.a ? r.a : r.b;
    std::string extra;
    if (r.top1) extra = "top-1 agrees " + ratio_text(*r.top1);
    if (r.picks) extra = "identical picks " + ratio_text(*r.picks);
    for (const std::string& note : r.notes) extra += (extra.empty() ? "" : "; ") + note;
    if (r.measured)
      std::printf("%5s  %-16s %-20s %12.8f %11.3e %11.3e  %s\n", layer.c_str(),
                  r.key.first.c_str(), shape_text(t->shape).c_str(), r.cosine, r.max_err, r.max_a,
                  extra.c_str());
    else
      std::printf("%5s  %-16s %-20s %12s %11s %11s  %s\n", layer.c_str(), r.key.first.c_str(),
                  shape_text(t->shape).c_str(), "-", "-", "-", extra.c_str());
  }
}

nlohmann::json rows_json(const std::vector<Row>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const Row& r : rows) {
    nlohmann::json j{{"layer", r.key.second}, {"name", r.key.first}};
    if (r.a) j["shape_a"] = r.a->shape;
    if (r.b) j["shape_b"] = r.b->shape;
    if (r.measured) {
      j["cosine"] = r.cosine;
      j["max_abs_err"] = r.max_err;
      j["max_abs_a"] = r.max_a;
      j["nonfinite"] = r.nonfinite;
    }
    if (r.top1) j["top1"] = {{"agree", r.top1->first}, {"positions", r.top1->second}};
    if (r.picks) j["picks"] = {{"identical", r.picks->first}, {"total", r.picks->second}};
    j["notes"] = r.notes;
    out.push_back(std::move(j));
  }
  return out;
}

int run_compare(const std::vector<std::string>& argv) {
  const Args args(argv, {"--model", "--tokens", "--chunk", "--a", "--b", "--threads", "--synthetic-weights"},
                  {"--json", "--help"}, {{"-m", "--model"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::filesystem::path model_dir = resolve_model_dir(args);
  const std::vector<int32_t> tokens = read_token_file(args.require("--tokens"));
  const int64_t T = int64_t(tokens.size());
  const int64_t chunk = args.get_int("--chunk", T, 1, INT64_MAX);
  const int64_t threads = args.get_int("--threads", 0, 0, 1024);
  Spec spec_a = parse_spec("--a", args.get_or("--a", "cpu-official"), int(threads));
  Spec spec_b = parse_spec("--b", args.get_or("--b", "cuda"), int(threads));
  if (args.has("--synthetic-weights")) {
    const uint64_t seed = uint64_t(args.get_int("--synthetic-weights", 0, 0, INT64_MAX));
    for (Spec* s : {&spec_a, &spec_b}) {
      if (s->options.backend != Backend::kCuda)
        fail("--synthetic-weights: ", s->text, " computes from the checkpoint's files (cuda runs only)");
      s->options.synthetic_seed = seed;
    }
  }

  // Both specs are checked before the first run; the runs take one backend at a time, so that
  // two GPU-sized models never share the memory.
  check_backend(spec_a.options);
  check_backend(spec_b.options);
  TraceCollector a, b;
  run_traced(model_dir.string(), spec_a, tokens, chunk, &a);
  run_traced(model_dir.string(), spec_b, tokens, chunk, &b);

  std::vector<Row> rows;
  for (const Key& k : merged_order(a, b)) rows.push_back(measure(k, a.find(k), b.find(k)));
  if (args.has("--json")) {
    const nlohmann::json j{{"a", spec_a.text}, {"b", spec_b.text}, {"tokens", T},
                           {"chunk", chunk}, {"rows", rows_json(rows)}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("a = %s, b = %s: %lld tokens in chunks of %lld\n", spec_a.text.c_str(),
                spec_b.text.c_str(), (long long)T, (long long)std::min(chunk, T));
    print_table(rows);
  }
  return 0;
}

}  // namespace

DSV4_COMMAND("compare", "run two backends over one token list and compare every traced tensor",
             run_compare);

}  // namespace dsv4::cli
