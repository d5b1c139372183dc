// The CUDA forward end to end (issue 6): logits against the CPU backend's official numerics on
// every parity fixture and on the trained nano model (there also against fixed budgets), and
// graph-replayed decode against eager decode bit for bit across CSA and HCA window boundaries;
// device sampling. Op-level checks are the other files.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_forward.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "model/config.h"
#include "model/known_configs.h"
#include "model/skeleton.h"
#include "support/sanitizer.h"
#include "support/scratch_dir.h"
#include "support/seed.h"
#include "random_nano.h"
#include "test_options.h"
#include "util/error.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = DSV4_SOURCE_DIR;

std::vector<int32_t> read_tokens(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  return nlohmann::json::parse(f).get<std::vector<int32_t>>();
}

// Logits of every position, the prefill fed in chunks of `chunk` tokens; `first_in` (optional)
// receives layer 0's "attn.in" (the first block input, before any rounding-sensitive decision).
std::vector<float> all_logits(Forward& f, const std::vector<int32_t>& tokens, int64_t chunk,
                              std::vector<float>* first_in = nullptr) {
  auto seq = f.new_sequence(int64_t(tokens.size()));
  std::vector<float> out, part;
  const TraceHook hook = [&](std::string_view name, int layer, const float* data,
                             std::span<const int64_t> shape) {
    if (layer != 0 || name != "attn.in") return;
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    first_in->insert(first_in->end(), data, data + n);
  };
  for (size_t t0 = 0; t0 < tokens.size(); t0 += size_t(chunk)) {
    const size_t n = std::min(tokens.size() - t0, size_t(chunk));
    ForwardItem item{seq.get(), std::span<const int32_t>(tokens.data() + t0, n), true, &part};
    f.forward(std::span<ForwardItem>(&item, 1), first_in ? &hook : nullptr);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

struct LogitReport {
  double argmax_agree = 0, cosine = 0, max_rel = 0, mean_cos = 0;
  int64_t argmax_differ = 0;  // positions whose top-1 ids differ
};

// Agreement of top-1 ids, cosine over all logits, max|Δ| / max|ref| and the mean per-row cosine.
LogitReport compare_logits(const std::vector<float>& got, const std::vector<float>& ref, int64_t V) {
  EXPECT_EQ(got.size(), ref.size());
  const int64_t T = int64_t(ref.size()) / V;
  LogitReport r;
  double dot = 0, ng = 0, nr = 0, max_abs = 0, max_ref = 0, cos_sum = 0;
  int64_t agree = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* g = got.data() + t * V;
    const float* e = ref.data() + t * V;
    agree += std::max_element(g, g + V) - g == std::max_element(e, e + V) - e;
    double rd = 0, rg = 0, re = 0;
    for (int64_t v = 0; v < V; ++v) {
      rd += double(g[v]) * e[v];
      rg += double(g[v]) * g[v];
      re += double(e[v]) * e[v];
      max_abs = std::max(max_abs, std::abs(double(g[v]) - e[v]));
      max_ref = std::max(max_ref, std::abs(double(e[v])));
    }
    dot += rd;
    ng += rg;
    nr += re;
    cos_sum += rd / std::sqrt(rg * re);
  }
  r.argmax_agree = double(agree) / double(T);
  r.argmax_differ = T - agree;
  r.cosine = dot / std::sqrt(ng * nr);
  r.max_rel = max_abs / max_ref;
  r.mean_cos = cos_sum / double(T);
  return r;
}

// Mean over t < T−1 of −log softmax(row t)[tokens[t+1]] (teacher forcing), in double: ln PPL.
double mean_nll(const std::vector<float>& logits, const std::vector<int32_t>& tokens, int64_t V) {
  const int64_t T = int64_t(logits.size()) / V;
  double sum = 0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    const float* row = logits.data() + t * V;
    const double mx = *std::max_element(row, row + V);
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
    sum += mx + std::log(z) - double(row[tokens[size_t(t + 1)]]);
  }
  return sum / double(T - 1);
}

// Fixed end-to-end budgets against CPU official-bf16, for the trained nano model only: there the
// logits are peaked and the numbers are stable enough to pin; on random fixtures only the
// relative criterion of expect_matches_cpu_reference is meaningful (design.md "Numerics").
struct FixedBudget {
  int64_t T;                   // the budgets hold for exactly this many positions
  int64_t max_argmax_differ;   // top-1 disagreements
  double max_one_minus_cos;    // 1 − cosine over all logits
  double max_abs_dlnppl;       // |ln PPL(gpu) − ln PPL(cpu)|, teacher-forced (prefill only)
};

// Teacher-forced prefill (chunk 129), nano, the 640 tokens of testdata/parity_nano, measured on an
// H200 (2026-11-25): 634/640 top-1 agree (6 differ), cosine 0.999937 (1 − cos 6.3e-5). Where the
// budgets come from: a disagreement needs an upstream rounding-order flip (FP8 scale or value, FP4
// grid, expert / indexer top-k) to meet a small top-1 margin; a correct change of any kernel's
// summation order re-draws which values land across a midpoint, so the count is modelled as
// Poisson with the measured mean 6: mean + 3σ = 6 + 3·√6 = 13.3 → at most 13 (97.97 %); still
// fewer than the 14–18 that separate the CPU's own numerics variants on these tokens (exact,
// official, official-bf16, pairwise). 1 − cos comes from the rows after such flips and scales
// with their number: 6.3e-5 · 13.3/6 = 1.4e-4. ln PPL: the CPU's three variants differ pairwise by
// 2.4e-4 to 6.0e-4 on these 639 predictions (measured on the CPU, 2026-12-02). Since the batched
// runtime, chunks of 129 rows run their dense linears on cuBLASLt's FP8 GEMM, whose tensor-core
// accumulation keeps ~14 bits between FP32 promotions (tests/cuda/matmul.cpp), not only another
// summation order: measured on the H200 (2026-12-02) 7 top-1 flips, 1 − cos 6.5e-5 and
// |Δ ln PPL| 1.64e-3. Like 1 − cos, the PPL gap comes from the rows after flips and scales with
// their number: 1.64e-3 · 13/7 = 3.0e-3 (0.3 % in PPL, inside issue 13's 0.5 %). A real mistake
// (wrong scale, index, mask) costs tens of disagreements and percents of PPL.
constexpr FixedBudget kNanoPrefillBudget{640, 13, 1.4e-4, 3.0e-3};
// Graph decode of positions 100..399 after a 100-token prefill, measured the same day: 296/300
// agree (4 differ), cosine 0.999918 (8.2e-5). Same model: 4 + 3·√4 = 10 disagreements,
// 1 − cos ≤ 8.2e-5 · 10/4 = 2.1e-4.
constexpr FixedBudget kNanoDecodeBudget{400, 10, 2.1e-4, 0};  // T: prefill 100 + 300 decode steps

// Checks `g` (and the PPL pair when the budget has one) against `b`; on shortened runs (fewer
// than b.T positions, DSV4_CUDA_FORWARD_T) it says what it leaves out instead.
void expect_within_fixed_budget(const std::string& what, const LogitReport& g, int64_t T,
                                double dlnppl, const FixedBudget& b) {
  if (T != b.T) {
    test::note_left_out(what + " fixed budgets (they hold for " + std::to_string(b.T) +
                        " positions, this run has " + std::to_string(T) + ")");
    return;
  }
  std::printf("[fixed] %s: top-1 differ %lld (budget %lld), 1 - cos %.3g (budget %.3g)", what.c_str(),
              (long long)g.argmax_differ, (long long)b.max_argmax_differ, 1 - g.cosine, b.max_one_minus_cos);
  if (b.max_abs_dlnppl > 0) std::printf(", |d ln PPL| %.3g (budget %.3g)", std::abs(dlnppl), b.max_abs_dlnppl);
  std::printf("\n");
  EXPECT_LE(g.argmax_differ, b.max_argmax_differ) << what;
  EXPECT_LE(1 - g.cosine, b.max_one_minus_cos) << what;
  if (b.max_abs_dlnppl > 0) {
    EXPECT_LE(std::abs(dlnppl), b.max_abs_dlnppl) << what;
  }
}

class CudaForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

struct ParityCase {
  const char* name;
  const char* model;   // relative to the source root
  const char* tokens;
  const FixedBudget* fixed = nullptr;  // besides the relative criterion (trained models only)
  bool fp8_expert_prefill = false;     // CudaOptions::fp8_expert_prefill
};

class CudaForwardParity : public CudaForwardTest,
                          public ::testing::WithParamInterface<ParityCase> {};

// Issue 6 asks for top-1 agreement with the CPU reference on >= 99.9 % of positions; measured
// and printed here per fixture with cosine and max error. It cannot be asserted as written: the
// CUDA backend runs the reference's numerics (BF16 activations between ops, the CPU's
// official-bf16 mode), and any two implementations whose FP32 summation order differs round a few
// values to the other side of a BF16 / FP8 / FP4 grid midpoint; expert top-k, indexer top-k and
// FP8 activation scales turn those into discrete changes that grow layer by layer (the CPU's own
// official mode vs the patched HF golden shows the same, testdata/parity/README.md). What is
// asserted, and fails on a real error:
//  1. layer 0's block input (before any such decision) within its two BF16 roundings of the CPU's;
//  2. the GPU is closer to CPU official-bf16 than CPU official is (same quantisation points,
//     only the BF16 rounding differs): in top-1 disagreement and in 1 − cosine. A wrong
//     formula, index or scale anywhere moves the GPU far outside that rounding sensitivity.
//  3. with `fixed` (the trained nano model), absolute budgets that do not move with the two CPU
//     modes: top-1 disagreements, 1 − cosine and the teacher-forced PPL gap (kNanoPrefillBudget).
// Chunk 129 puts a pass boundary inside a chunk (the CUDA backend splits chunks at 128 tokens).
void expect_matches_cpu_reference(const std::string& name, const fs::path& dir,
                                  const std::vector<int32_t>& tokens, const FixedBudget* fixed = nullptr,
                                  bool fp8_expert_prefill = false) {
  CudaOptions go = test::cuda_test_options();
  go.progress = false;
  go.fp8_expert_prefill = fp8_expert_prefill;
  auto gpu = make_cuda_forward(dir, go);
  const int64_t V = gpu->config().vocab_size;
  std::vector<float> gpu_in, cpu_in;
  const std::vector<float> got = all_logits(*gpu, tokens, 129, &gpu_in);
  CpuOptions co;
  co.numerics = Numerics::kOfficialBf16;
  const std::vector<float> ref = all_logits(*make_cpu_forward(dir, co), tokens, 129, &cpu_in);
  co.numerics = Numerics::kOfficial;
  const std::vector<float> official = all_logits(*make_cpu_forward(dir, co), tokens, 129);

  const LogitReport g = compare_logits(got, ref, V);
  const LogitReport o = compare_logits(official, ref, V);
  const LogitReport go_ = compare_logits(got, official, V);
  const double nll_gpu = mean_nll(got, tokens, V), nll_ref = mean_nll(ref, tokens, V);
  std::printf("[parity] %-12s T=%zu cuda vs cpu official-bf16: argmax %.2f%% cosine %.6f "
              "max|d|/max|ref| %.3g PPL %.4f vs %.4f | cuda vs cpu official: argmax %.2f%% cosine %.6f | "
              "cpu official vs official-bf16: argmax %.2f%% cosine %.6f\n",
              name.c_str(), tokens.size(), 100 * g.argmax_agree, g.cosine, g.max_rel, std::exp(nll_gpu),
              std::exp(nll_ref), 100 * go_.argmax_agree, go_.cosine, 100 * o.argmax_agree, o.cosine);
  ::testing::Test::RecordProperty("argmax_agree", std::to_string(g.argmax_agree));

  ASSERT_EQ(gpu_in.size(), cpu_in.size());
  // Both sides compute attn.in = bf16(bf16(Σ_j pre_j·X_j)·r·w) (§3.1 step 8, then the RMSNorm):
  // two roundings. Their FP32 sums can put u = Σ_j pre_j·X_j on neighbouring BF16 values, one ulp
  // of u, at most 2^-7·|u|; the norm scales that to at most 2^-7·|z| (r differs only by FP32
  // summation order, ~1e-6 relative), and each side then rounds z by half an ulp. So each value
  // is within 2^-7·m + ulp(m) of the other's, m the larger magnitude (the factor 1.01 below
  // covers |z| up to half an ulp above m and r's differences): more than one ulp where the flip
  // of u lands near the top of z's binade, as for 1 of 300 × 256 values under
  // DSV4_TEST_SEED=8402077357610424949 (2026-12-05, H100). A wrong pre weight, norm weight or eps
  // moves values by far more.
  int64_t beyond_bound = 0, differ = 0;
  float worst_ulps = 0;
  for (size_t i = 0; i < gpu_in.size(); ++i) {  // both are BF16 values: one ulp = 2^(e−7)
    const float m = std::max(std::abs(gpu_in[i]), std::abs(cpu_in[i]));
    const float ulp = m > 0 ? std::ldexp(1.0f, std::ilogb(m) - 7) : 0.0f;
    const float d = std::abs(gpu_in[i] - cpu_in[i]);
    differ += d > 0;
    if (d > 0) worst_ulps = std::max(worst_ulps, d / ulp);
    beyond_bound += d > std::ldexp(m, -7) * 1.01f + ulp;
  }
  std::printf("[parity] %-12s layer 0 attn.in: %lld of %zu values differ, the largest by %.0f ulp\n", name.c_str(),
              static_cast<long long>(differ), gpu_in.size(), worst_ulps);
  EXPECT_EQ(beyond_bound, 0) << name << ": layer 0 attn.in differs by more than two roundings explain";
  EXPECT_LE(1 - g.argmax_agree, 1 - o.argmax_agree) << name;
  EXPECT_LE(1 - g.cosine, 1 - o.cosine) << name;
  if (fixed) expect_within_fixed_budget(name + " prefill", g, int64_t(tokens.size()), nll_gpu - nll_ref, *fixed);
}

TEST_P(CudaForwardParity, MatchesCpuReference) {
  const ParityCase& pc = GetParam();
  std::vector<int32_t> tokens = read_tokens(kRoot / pc.tokens);
  tokens.resize(size_t(test::cap(int64_t(tokens.size()))));
  expect_matches_cpu_reference(pc.name, kRoot / pc.model, tokens, pc.fixed, pc.fp8_expert_prefill);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, CudaForwardParity,
    ::testing::Values(
        ParityCase{"flash_bf16", "testdata/parity/flash_bf16/model", "testdata/parity/flash_bf16/tokens.json"},
        ParityCase{"flash_quant", "testdata/parity/flash_quant/model", "testdata/parity/flash_quant/tokens.json"},
        ParityCase{"pro_bf16", "testdata/parity/pro_bf16/model", "testdata/parity/pro_bf16/tokens.json"},
        ParityCase{"pro_quant", "testdata/parity/pro_quant/model", "testdata/parity/pro_quant/tokens.json"},
        ParityCase{"nano", "models/nano", "testdata/parity_nano/tokens.json", &kNanoPrefillBudget},
        // The prefill passes' MXFP4 experts on the FP8 tensor cores (moe_grouped_wgmma.cuh): the
        // same budgets (2026-12-05, H200: 12 of 640 differ, 1 − cos 7.6e-5, |Δ ln PPL| 2.7e-3).
        ParityCase{"nano_fp8_prefill", "models/nano", "testdata/parity_nano/tokens.json", &kNanoPrefillBudget, true}),
    [](const ::testing::TestParamInfo<ParityCase>& i) { return std::string(i.param.name); });

// NVIDIA's NVFP4 re-quantisation (§11.6: routed experts E2M1 with E4M3 per-16 scales and an F32
// global scale, everything else FP8) end to end: nano's shapes with fresh random weights
// (make-skeleton --random), same criteria as the fixtures.
TEST_F(CudaForwardTest, RandomNvfp4ModelMatchesCpuReference) {
  const uint64_t seed = test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it
  const test::ScratchDir scratch = test::write_random_nano("nvfp4", test::nvfp4_experts_quantization(), seed);
  const fs::path& dir = scratch.path();
  ASSERT_EQ(ModelConfig::load(dir).expert_format, ExpertFormat::kNVFP4);
  std::mt19937 rng{static_cast<uint32_t>(seed)};
  std::vector<int32_t> tokens(size_t(test::cap(300)));
  for (auto& t : tokens) t = int32_t(rng() % 8192u);
  expect_matches_cpu_reference("nvfp4", dir, tokens);
}

// Graph-replayed decode equals eager decode bit for bit, step by step, from a prefill of P tokens
// through positions that close many CSA windows (every 4) and the HCA windows at 127, 255, 383
// (nano has both kinds); the graph's logits sit closer to CPU official-bf16 than CPU official
// does (the criterion of MatchesCpuReference, here for decode) and within kNanoDecodeBudget.
// fp8_expert_decode: every row's routed experts on the FP8 tensor cores (CudaOptions).
void expect_graph_decode_matches_cpu(bool fp8_expert_decode) {
  const fs::path dir = kRoot / "models/nano";
  std::vector<int32_t> tokens = read_tokens(kRoot / "testdata/parity_nano/tokens.json");
  const int64_t T = test::cap(400), P = std::min<int64_t>(100, T / 2);
  ASSERT_LE(T, int64_t(tokens.size()));
  ASSERT_GT(T, P);
  CudaOptions eager_opt = test::cuda_test_options(), graph_opt = test::cuda_test_options();
  eager_opt.progress = graph_opt.progress = false;
  eager_opt.use_graph = false;
  eager_opt.fp8_expert_decode = graph_opt.fp8_expert_decode = fp8_expert_decode;
  graph_opt.check_step = true;  // fails on an allocation inside a step; capture fails on a sync
  auto eager = make_cuda_forward(dir, eager_opt);
  auto graph = make_cuda_forward(dir, graph_opt);
  CpuOptions co;
  co.numerics = Numerics::kOfficialBf16;  // the GPU's rounding points (see MatchesCpuReference)
  auto cpu = make_cpu_forward(dir, co);
  co.numerics = Numerics::kOfficial;
  auto cpu_official = make_cpu_forward(dir, co);
  const int64_t V = cpu->config().vocab_size;

  auto se = eager->new_sequence(T), sg = graph->new_sequence(T), sc = cpu->new_sequence(T),
       so = cpu_official->new_sequence(T);
  std::vector<float> le, lg, lc, lo;
  auto step = [&](Forward& f, SequenceState* s, int64_t t0, int64_t n, std::vector<float>* out) {
    ForwardItem item{s, std::span<const int32_t>(tokens.data() + t0, size_t(n)), false, out};
    f.forward(std::span<ForwardItem>(&item, 1));
  };
  step(*eager, se.get(), 0, P, &le);
  step(*graph, sg.get(), 0, P, &lg);
  step(*cpu, sc.get(), 0, P, &lc);
  step(*cpu_official, so.get(), 0, P, &lo);
  int64_t bit_mismatch_steps = 0;
  std::vector<float> got_all, ref_all, official_all;
  for (int64_t t = P; t < T; ++t) {
    step(*eager, se.get(), t, 1, &le);
    step(*graph, sg.get(), t, 1, &lg);
    step(*cpu, sc.get(), t, 1, &lc);
    step(*cpu_official, so.get(), t, 1, &lo);
    if (std::memcmp(le.data(), lg.data(), size_t(V) * 4) != 0) {
      if (bit_mismatch_steps == 0)
        std::printf("[graph] first bit mismatch at position %lld\n", (long long)t);
      ++bit_mismatch_steps;
    }
    got_all.insert(got_all.end(), lg.begin(), lg.end());
    ref_all.insert(ref_all.end(), lc.begin(), lc.end());
    official_all.insert(official_all.end(), lo.begin(), lo.end());
  }
  const LogitReport g = compare_logits(got_all, ref_all, V);
  const LogitReport o = compare_logits(official_all, ref_all, V);
  std::printf("[graph] decode %lld..%lld: %lld steps differ from eager; graph vs cpu "
              "official-bf16: argmax %.2f%% cosine %.6f max|d|/max|ref| %.3g | cpu official vs "
              "official-bf16: argmax %.2f%% cosine %.6f\n",
              (long long)P, (long long)T - 1, (long long)bit_mismatch_steps,
              100 * g.argmax_agree, g.cosine, g.max_rel, 100 * o.argmax_agree, o.cosine);
  EXPECT_EQ(bit_mismatch_steps, 0);
  EXPECT_LE(1 - g.argmax_agree, 1 - o.argmax_agree);
  EXPECT_LE(1 - g.cosine, 1 - o.cosine);
  expect_within_fixed_budget(fp8_expert_decode ? "nano graph decode, fp8 experts" : "nano graph decode", g, T, 0,
                             kNanoDecodeBudget);  // T = 400 ⇔ P = 100
}

TEST_F(CudaForwardTest, GraphDecodeEqualsEagerAcrossBoundaries) { expect_graph_decode_matches_cpu(false); }

// The same with --fp8-expert-decode: the decode rows' experts on the FP8 kernel's 8-row items
// meet the same criteria against the CPU reference.
TEST_F(CudaForwardTest, Fp8ExpertDecodeMatchesCpuReference) { expect_graph_decode_matches_cpu(true); }

// A model larger than the card is refused before any upload, naming needed and free bytes: the
// real Pro layout (1.6 T parameters) as a sparse skeleton (headers only, 13 MB on disk).
TEST_F(CudaForwardTest, ModelThatDoesNotFitIsAnError) {
  const test::ScratchDir scratch("dsv4-pro-skeleton-");
  const fs::path& dir = scratch.path();
  write_skeleton(dir, pro_config_json(), SkeletonOptions{});
  CudaOptions go = test::cuda_test_options();
  go.progress = false;
  try {
    make_cuda_forward(dir, go);
    ADD_FAILURE() << "a 1.6 T-parameter model was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    std::printf("[fit] %s\n", what.c_str());
    EXPECT_NE(what.find("GiB of GPU memory"), std::string::npos) << what;
    EXPECT_NE(what.find("GiB free"), std::string::npos) << what;
  }
}

// Unsupported shapes and bad input are errors, never crashes.
TEST_F(CudaForwardTest, RejectsBadInput) {
  CudaOptions go = test::cuda_test_options();
  go.progress = false;
  auto gpu = make_cuda_forward(kRoot / "models/nano", go);
  auto seq = gpu->new_sequence(8);
  std::vector<float> out;
  const std::vector<int32_t> bad = {1, int32_t(gpu->config().vocab_size)};
  ForwardItem item{seq.get(), bad, false, &out};
  EXPECT_THROW(gpu->forward(std::span<ForwardItem>(&item, 1)), Error);
  const std::vector<int32_t> long_seq(9, 1);
  ForwardItem too_long{seq.get(), long_seq, false, &out};
  EXPECT_THROW(gpu->forward(std::span<ForwardItem>(&too_long, 1)), Error);
  EXPECT_THROW(make_cuda_forward(kRoot / "testdata/does-not-exist", go), Error);
}

// Sampling on the device (issue 6): n tokens after `prompt`, each chosen by the device with
// sample_at(i) when that is non-null (only the id comes back), else by the host as the argmax of
// the downloaded logits row (lowest id on ties: max_element keeps the first, as the CPU sampler).
// Returns the ids and the decode rate in tok/s from the second decode step on (the first one
// captures the graph).
struct SampledRun {
  std::vector<int32_t> ids;
  double tok_per_s = 0;
  double log_p = 0;  // host path: Σ log softmax(row)[id] over the chosen ids (T = 1)
};
SampledRun sample_tokens(Forward& f, std::span<const int32_t> prompt, int64_t n,
                         const std::function<const DeviceSampling*(int64_t)>& sample_at) {
  auto seq = f.new_sequence(int64_t(prompt.size()) + n);
  std::vector<float> logits;
  int32_t next = -1;
  SampledRun r;
  auto step = [&](std::span<const int32_t> in, const DeviceSampling* sample) {
    ForwardItem item{seq.get(), in, false, sample ? nullptr : &logits, sample, &next};
    f.forward(std::span<ForwardItem>(&item, 1));
    if (sample) return;
    next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    double z = 0;
    for (float x : logits) z += std::exp(double(x) - double(logits[size_t(next)]));
    r.log_p -= std::log(z);  // log softmax at the argmax: −log Σ exp(x − max)
  };
  step(prompt, sample_at(0));
  std::chrono::steady_clock::time_point t0;
  for (int64_t i = 0; i < n; ++i) {
    r.ids.push_back(next);
    if (i == 1) t0 = std::chrono::steady_clock::now();
    if (i + 1 < n) step(std::span<const int32_t>(&r.ids.back(), 1), sample_at(i + 1));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tok_per_s = n > 2 ? double(n - 2) / s : 0;
  return r;
}

// Greedy on the device gives the host's ids (graph decode, eager decode, and one sequence that
// switches between the two paths every step, so its graph is re-captured each time); a seeded
// temperature-1 run gives the same ids twice, and in eager mode too (the draw is keyed by seed
// and position, and eager logits equal the graph's bit for bit:
// GraphDecodeEqualsEagerAcrossBoundaries).
TEST_F(CudaForwardTest, DeviceSamplingMatchesHostGreedyAndIsReproducible) {
  const fs::path dir = kRoot / "models/nano";
  const std::vector<int32_t> tokens = read_tokens(kRoot / "testdata/parity_nano/tokens.json");
  const int64_t P = 40, n = test::cap(64);
  ASSERT_LE(P, int64_t(tokens.size()));
  ASSERT_GE(n, 3);
  const std::span<const int32_t> prompt(tokens.data(), size_t(P));
  CudaOptions go = test::cuda_test_options();
  go.progress = false;
  auto graph = make_cuda_forward(dir, go);
  go.use_graph = false;
  auto eager = make_cuda_forward(dir, go);
  ASSERT_TRUE(graph->samples_on_device());

  const DeviceSampling greedy{};
  const uint64_t seed = test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it
  const DeviceSampling hot{1.0f, 0, 1.0f, seed};
  auto host = [](int64_t) -> const DeviceSampling* { return nullptr; };
  auto always = [](const DeviceSampling& d) {
    return [&d](int64_t) -> const DeviceSampling* { return &d; };
  };
  auto alternate = [&](int64_t i) -> const DeviceSampling* { return i % 2 ? &greedy : nullptr; };

  const SampledRun host_greedy = sample_tokens(*graph, prompt, n, host);
  const SampledRun dev_greedy = sample_tokens(*graph, prompt, n, always(greedy));
  EXPECT_EQ(dev_greedy.ids, host_greedy.ids);
  EXPECT_EQ(sample_tokens(*eager, prompt, n, always(greedy)).ids, host_greedy.ids);
  EXPECT_EQ(sample_tokens(*graph, prompt, n, alternate).ids, host_greedy.ids);

  const SampledRun hot_a = sample_tokens(*graph, prompt, n, always(hot));
  const SampledRun hot_b = sample_tokens(*graph, prompt, n, always(hot));
  EXPECT_EQ(hot_a.ids, hot_b.ids);
  EXPECT_EQ(sample_tokens(*eager, prompt, n, always(hot)).ids, hot_a.ids);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += hot_a.ids[size_t(i)] != host_greedy.ids[size_t(i)];
  std::printf("[sample] nano, %lld tokens after a %lld-token prompt: graph decode with host argmax "
              "of the logits row %.1f tok/s, with device greedy %.1f tok/s, device temperature 1 "
              "%.1f tok/s; the temperature-1 run differs from greedy at %lld positions; "
              "P(temperature 1 repeats greedy) = exp(%.1f)\n",
              (long long)n, (long long)P, host_greedy.tok_per_s, dev_greedy.tok_per_s,
              hot_a.tok_per_s, (long long)differ, host_greedy.log_p);
  // Temperature 1 acts on the device: an unfiltered temperature-1 draw picks id g with
  // probability softmax(row)[g], and the rows along greedy's path are the ones the host run
  // downloaded (same graph, same prefix: bit-identical, GraphDecodeEqualsEagerAcrossBoundaries), so
  // the whole run equals greedy's with probability exp(log_p). Asserted below 1e-9 (the printed
  // exp(…) says how far below), so equal ids mean a sampler that ignores the temperature.
  ASSERT_LT(host_greedy.log_p, std::log(1e-9)) << "too few or too certain tokens to tell";
  EXPECT_GT(differ, 0) << "device temperature-1 sampling reproduced greedy";

  auto seq = graph->new_sequence(8);
  int32_t id = -1;
  const DeviceSampling bad{-1.0f};
  ForwardItem item{seq.get(), prompt.subspan(0, 1), false, nullptr, &bad, &id};
  EXPECT_THROW(graph->forward(std::span<ForwardItem>(&item, 1)), Error);
}

}  // namespace
}  // namespace dsv4
