// The official-bf16 numerics mode (design.md "Numerics"): official plus BF16 activations between
// ops. Checked on a random quantised tiny checkpoint: close to but not equal to official, every
// traced activation the reference stores as BF16 is BF16-exact, and chunking stays bit-exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cpu/context.h"
#include "cpu/cpu_forward.h"
#include "model/forward.h"
#include "util/float_formats.h"
#include "support/test_util.h"
#include "support/tiny_model.h"
#include "support/sanitizer.h"

namespace dsv4 {
namespace {

// 300 tokens: past the 128-token window, HCA entries at 127 and 255, CSA entries every 4 and a
// selective indexer (75 visible entries > index_topk 16), so every traced path carries data.
constexpr int64_t kTokens = 300;

using Traces = std::map<std::pair<std::string, int>, std::vector<float>>;

struct RunResult {
  std::vector<float> logits;  // [kTokens, vocab]
  Traces traces;              // (name, layer) → values, chunks concatenated
};

class OfficialBf16 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::TinyModelOptions opt;
    opt.quantised = true;
    opt.salt = 61;
    dir_ = new test::ScratchDir(test::write_tiny_model(opt));
    test::Rng rng(62);
    tokens_ = new std::vector<int32_t>(size_t(kTokens));
    for (auto& t : *tokens_) t = int32_t(rng.integer(0, opt.vocab - 1));
  }
  static void TearDownTestSuite() {
    delete dir_;  // removes the checkpoint
    delete tokens_;
  }

  // All logits of the token list fed in chunks of `chunk`; traces collected when `trace` is set.
  static RunResult run(Numerics numerics, int64_t chunk, bool trace) {
    CpuOptions co;
    co.numerics = numerics;
    auto f = make_cpu_forward(dir_->path(), co);
    RunResult r;
    const TraceHook hook = [&](std::string_view name, int layer, const float* data,
                               std::span<const int64_t> shape) {
      int64_t n = 1;
      for (int64_t s : shape) n *= s;
      auto& v = r.traces[{std::string(name), layer}];
      v.insert(v.end(), data, data + n);
    };
    auto seq = f->new_sequence(kTokens);
    std::vector<float> part;
    for (int64_t p = 0; p < kTokens; p += chunk) {
      const int64_t n = std::min(chunk, kTokens - p);
      ForwardItem item{seq.get(), std::span<const int32_t>(tokens_->data() + p, size_t(n)), true,
                       &part};
      f->forward(std::span<ForwardItem>(&item, 1), trace ? &hook : nullptr);
      r.logits.insert(r.logits.end(), part.begin(), part.end());
    }
    return r;
  }

  static test::ScratchDir* dir_;
  static std::vector<int32_t>* tokens_;
};

test::ScratchDir* OfficialBf16::dir_ = nullptr;
std::vector<int32_t>* OfficialBf16::tokens_ = nullptr;

bool is_bf16(float v) { return (f32_to_bits(v) & 0xffffu) == 0; }

int64_t count_not_bf16(const std::vector<float>& v) {
  int64_t n = 0;
  for (float x : v) n += !is_bf16(x);
  return n;
}

TEST(NumericsName, ParsesAndPrintsOfficialBf16) {
  Numerics n = Numerics::kExact;
  ASSERT_TRUE(parse_numerics("official-bf16", &n));
  EXPECT_EQ(n, Numerics::kOfficialBf16);
  EXPECT_STREQ(to_string(n), "official-bf16");
  for (Numerics m : {Numerics::kExact, Numerics::kOfficial, Numerics::kOfficialBf16}) {
    Numerics back = Numerics::kExact;
    ASSERT_TRUE(parse_numerics(to_string(m), &back)) << to_string(m);
    EXPECT_EQ(back, m);
  }
  for (const char* bad : {"official_bf16", "bf16", "official-bf16 ", "OFFICIAL-BF16", ""})
    EXPECT_FALSE(parse_numerics(bad, &n)) << "'" << bad << "'";
  // official-bf16 keeps every official quantisation point and adds the BF16 activations.
  const NumericsPoints o = NumericsPoints::from(Numerics::kOfficial);
  const NumericsPoints b = NumericsPoints::from(Numerics::kOfficialBf16);
  EXPECT_TRUE(b.act_fp8 && b.kv_fp8 && b.indexer_fp4 && b.route_before_w2 && b.bf16_act);
  EXPECT_TRUE(o.act_fp8 && o.kv_fp8 && o.indexer_fp4 && o.route_before_w2 && !o.bf16_act);
  EXPECT_FALSE(NumericsPoints::from(Numerics::kExact).bf16_act);
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    dot += double(a[i]) * b[i];
    na += double(a[i]) * a[i];
    nb += double(b[i]) * b[i];
  }
  return dot / std::sqrt(na * nb);
}

TEST_F(OfficialBf16, CloseToOfficialButNotEqual) {
  const RunResult off = run(Numerics::kOfficial, kTokens, true);
  const RunResult bf = run(Numerics::kOfficialBf16, kTokens, true);
  const RunResult ex = run(Numerics::kExact, kTokens, false);
  ASSERT_EQ(off.logits.size(), bf.logits.size());
  double max_d = 0;
  for (size_t i = 0; i < off.logits.size(); ++i) {
    ASSERT_TRUE(std::isfinite(bf.logits[i])) << "logit " << i;
    max_d = std::max(max_d, double(std::abs(off.logits[i] - bf.logits[i])));
  }
  // The rounding points must change something: hundreds of BF16 roundings per token cannot all
  // be no-ops unless the mode is not wired in.
  EXPECT_GT(max_d, 0.0);

  // Layer 0's attention input is the first place the modes meet with nothing but BF16 rounding
  // between them: official u = RMSNorm(HC_pre(X)), official-bf16 rounds HC_pre's output and the
  // norm's output (the embedding rows are BF16 already). Each rounding moves a value by at most
  // 2^-8 of itself; the norm is scale-free, so a relative input change of ≤ 2^-8 per element
  // moves each output by ≤ 2·2^-8 of itself (element and RMS), plus the final rounding's 2^-8.
  // Bound: 3·2^-8·|v| + 1e-6·|v| for FP32 rounding of the norm itself.
  {
    const auto& a = off.traces.at({"attn.in", 0});
    const auto& b = bf.traces.at({"attn.in", 0});
    ASSERT_EQ(a.size(), b.size());
    int64_t over = 0;
    for (size_t i = 0; i < a.size(); ++i)
      over += std::abs(a[i] - b[i]) > (3.0 / 256 + 1e-6) * std::abs(a[i]);
    EXPECT_EQ(over, 0) << "layer 0 attn.in: values moved by more than three BF16 roundings";
  }

  // Beyond layer 0 the BF16 changes pass through the FP8 1×128 activation grid, where they flip
  // rounding decisions, and then through top-k choices; on random weights both amplify every
  // perturbation (official vs exact is typically only ~0.99 cosine on this model). The bound is
  // therefore relative to official vs exact on the same tokens: both perturb official by
  // grid-sized steps at the same quantisation points; a BF16 change δ < one FP8 step moves a
  // quantised value by at most one step, while exact mode removes the quantisation error itself
  // (at most half a step), so the BF16-induced error is at most 2× as large per element and the
  // cosine gap (quadratic in the error) at most 4× as large.
  const double cos_bf = cosine(off.logits, bf.logits), cos_ex = cosine(off.logits, ex.logits);
  const int64_t V = int64_t(off.logits.size()) / kTokens;
  int64_t agree = 0;
  for (int64_t t = 0; t < kTokens; ++t) {
    const float* a = off.logits.data() + t * V;
    const float* b = bf.logits.data() + t * V;
    agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
  }
  std::printf("[official-bf16] logits vs official: cosine %.6f (exact vs official %.6f), "
              "max|Δ| %.3g, top-1 %lld/%lld\n",
              cos_bf, cos_ex, max_d, (long long)agree, (long long)kTokens);
  EXPECT_LE(1.0 - cos_bf, 4.0 * (1.0 - cos_ex));
}

TEST_F(OfficialBf16, TracedActivationsAreBf16) {
  const RunResult bf = run(Numerics::kOfficialBf16, kTokens, true);
  const RunResult off = run(Numerics::kOfficial, kTokens, true);
  // Tensors the reference stores as BF16 (FP8 KV rows and FP4 indexer keys are on BF16's grid).
  const std::set<std::string> bf16_names = {
      "attn.in", "attn.q",       "attn.kv",      "attn.core",   "attn.out",      "moe.in",
      "moe.out", "hc.streams",   "csa.entries",  "hca.entries", "indexer.keys",  "final.hidden",
      "final.streams"};
  // Of those, the ones official mode keeps in FP32 somewhere (indexer keys are FP4 in both).
  const std::set<std::string> fp32_in_official = {
      "attn.in",    "attn.q",      "attn.kv",      "attn.core",   "attn.out", "moe.in", "moe.out",
      "hc.streams", "csa.entries", "hca.entries",  "final.hidden", "final.streams"};
  std::set<std::string> seen;
  for (const auto& [key, v] : bf.traces) {
    if (!bf16_names.count(key.first)) continue;
    seen.insert(key.first);
    ASSERT_FALSE(v.empty()) << key.first << " layer " << key.second;
    EXPECT_EQ(count_not_bf16(v), 0) << key.first << " layer " << key.second << ": "
                                     << count_not_bf16(v) << " of " << v.size()
                                     << " values are not BF16";
    // The check can fail: the same tensor in official mode has values off the BF16 grid.
    if (fp32_in_official.count(key.first)) {
      const auto it = off.traces.find(key);
      ASSERT_NE(it, off.traces.end()) << key.first << " layer " << key.second;
      EXPECT_GT(count_not_bf16(it->second), 0) << key.first << " layer " << key.second;
    }
  }
  EXPECT_EQ(seen, bf16_names);
  // Every layer traces its streams (6 layers of the tiny config).
  for (int l = 0; l < 6; ++l) EXPECT_TRUE(bf.traces.count({"hc.streams", l})) << l;
  // The logits stay FP32 (computed from the BF16 head input, not rounded).
  EXPECT_GT(count_not_bf16(bf.logits), 0);
}

TEST_F(OfficialBf16, AnyChunkingEqualsOnePrefillBitForBit) {
  const RunResult whole = run(Numerics::kOfficialBf16, kTokens, false);
  std::vector<int64_t> chunks = {1, 7, 128, 129};
  if (test::kSanitizerBuild) {
    chunks = {7, 129};
    test::note_left_out("official-bf16 chunkings 1 and 128 (the release run covers them)");
  }
  for (int64_t chunk : chunks) {
    const RunResult r = run(Numerics::kOfficialBf16, chunk, false);
    ASSERT_EQ(r.logits.size(), whole.logits.size());
    // Every per-token operation is the same FP32 sequence whatever the chunking, so the BF16
    // roundings see identical inputs: the results must agree to the bit.
    int64_t differ = 0;
    for (size_t i = 0; i < r.logits.size(); ++i)
      differ += f32_to_bits(r.logits[i]) != f32_to_bits(whole.logits[i]);
    EXPECT_EQ(differ, 0) << "chunk " << chunk;
    std::printf("[official-bf16] chunk %lld: %lld logits differ from one prefill\n",
                (long long)chunk, (long long)differ);
  }
}

}  // namespace
}  // namespace dsv4
