// Whole CPU forward on random tiny checkpoints (tiny_model.h): the streaming-state contract of
// SequenceState (any chunking = one prefill, reset, several sequences per batch), causality, and
// the MTP block against the main decoder block it must equal when its projections are identities.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <vector>

#include "cpu/cpu_forward.h"
#include "cpu/cpu_model.h"
#include "cpu/mtp.h"
#include "model/config.h"
#include "util/error.h"
#include "support/test_util.h"
#include "support/tiny_model.h"
#include "support/sanitizer.h"

namespace dsv4 {
namespace {

std::vector<int32_t> random_tokens(test::Rng& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng.integer(0, vocab - 1));
  return t;
}

// Logits of every position, fed in chunks of `chunk`.
std::vector<float> run_chunked(Forward& f, const std::vector<int32_t>& tokens, int64_t chunk,
                               SequenceState* seq = nullptr) {
  std::unique_ptr<SequenceState> own;
  if (!seq) {
    own = f.new_sequence(int64_t(tokens.size()));
    seq = own.get();
  }
  std::vector<float> all, part;
  for (size_t p = 0; p < tokens.size(); p += size_t(chunk)) {
    const size_t n = std::min(size_t(chunk), tokens.size() - p);
    ForwardItem item{seq, std::span<const int32_t>(tokens.data() + p, n), true, &part};
    f.forward(std::span<ForwardItem>(&item, 1));
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

struct Case {
  const char* name;
  bool quantised;
  Numerics numerics;
};

class ChunkingTest : public ::testing::TestWithParam<Case> {};

// 300 tokens cross the window (128), emit CSA entries every 4 and HCA entries at 127 and 255, and
// make the indexer selective (index_topk 16 < 75 visible entries).
TEST_P(ChunkingTest, AnyChunkingEqualsOnePrefill) {
  const Case c = GetParam();
  test::TinyModelOptions opt;
  opt.quantised = c.quantised;
  opt.salt = c.quantised ? 2 : 1;
  const test::ScratchDir dir = test::write_tiny_model(opt);
  CpuOptions co;
  co.numerics = c.numerics;
  auto f = make_cpu_forward(dir.path(), co);
  test::Rng rng(20);
  const auto tokens = random_tokens(rng, 300, opt.vocab);
  const std::vector<float> whole = run_chunked(*f, tokens, int64_t(tokens.size()));
  const double scale = max_abs(whole);
  ASSERT_GT(scale, 0.0);
  std::vector<int64_t> chunks = {1, 7, 128, 129};
  if (test::kSanitizerBuild) {  // token by token is the slowest plan by far; 128's path: Parity.Exact
    chunks = {7, 129};
    test::note_left_out(std::string(c.name) + " chunks 1 and 128 (the release run covers them)");
  }
  for (int64_t chunk : chunks) {
    const double d = max_diff(whole, run_chunked(*f, tokens, chunk));
    // Every per-token operation is the same sequence of FP32 operations whatever the chunking;
    // allow FP32 rounding of O(1) logits through 6 layers (~1e-6 relative), nothing more.
    EXPECT_LE(d, 1e-5 * scale) << c.name << " chunk " << chunk;
    std::printf("[chunking] %s chunk %lld: max|Δ| = %.3g (scale %.3g)\n", c.name, (long long)chunk, d, scale);
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, ChunkingTest,
                         ::testing::Values(Case{"bf16_exact", false, Numerics::kExact},
                                           Case{"quant_exact", true, Numerics::kExact},
                                           Case{"quant_official", true, Numerics::kOfficial}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(CpuForward, BatchResetAndCausality) {
  test::TinyModelOptions opt;
  opt.salt = 3;
  const test::ScratchDir dir = test::write_tiny_model(opt);
  auto f = make_cpu_forward(dir.path(), CpuOptions{});
  test::Rng rng(21);
  const auto a = random_tokens(rng, 140, opt.vocab), b = random_tokens(rng, 90, opt.vocab);
  const auto la = run_chunked(*f, a, 140), lb = run_chunked(*f, b, 90);

  // Two sequences in one batch, in two steps (prefill then continuation).
  auto sa = f->new_sequence(140), sb = f->new_sequence(90);
  std::vector<float> oa1, ob1, oa2, ob2;
  ForwardItem step1[2] = {{sa.get(), std::span<const int32_t>(a.data(), 100), true, &oa1},
                          {sb.get(), std::span<const int32_t>(b.data(), 50), true, &ob1}};
  f->forward(step1);
  ForwardItem step2[2] = {{sa.get(), std::span<const int32_t>(a.data() + 100, 40), false, &oa2},
                          {sb.get(), std::span<const int32_t>(b.data() + 50, 40), true, &ob2}};
  f->forward(step2);
  const int64_t V = opt.vocab;
  EXPECT_EQ(int64_t(oa2.size()), V);  // only the last row
  std::vector<float> last_a(la.end() - V, la.end());
  EXPECT_EQ(max_diff(oa2, last_a), 0.0);
  ob1.insert(ob1.end(), ob2.begin(), ob2.end());
  EXPECT_EQ(max_diff(ob1, lb), 0.0);

  // Reset: the same state object replays a fresh sequence.
  sa->reset();
  EXPECT_EQ(sa->position(), 0);
  EXPECT_EQ(max_diff(run_chunked(*f, a, 33, sa.get()), la), 0.0);

  // Causality: changing token 120 leaves positions < 120 untouched and changes position 120.
  auto a2 = a;
  a2[120] = (a2[120] + 1) % int32_t(V);
  const auto la2 = run_chunked(*f, a2, 140);
  EXPECT_EQ(max_diff(std::vector<float>(la.begin(), la.begin() + 120 * V),
                     std::vector<float>(la2.begin(), la2.begin() + 120 * V)), 0.0);
  EXPECT_GT(max_diff(std::vector<float>(la.begin() + 120 * V, la.begin() + 121 * V),
                     std::vector<float>(la2.begin() + 120 * V, la2.begin() + 121 * V)), 0.0);

  // Hostile input: bad token ids and exceeding the sequence limit are errors, not crashes.
  std::vector<int32_t> bad = {int32_t(V)};
  auto s = f->new_sequence(1);
  std::vector<float> out;
  ForwardItem item{s.get(), bad, true, &out};
  EXPECT_THROW(f->forward(std::span<ForwardItem>(&item, 1)), Error);
  std::vector<int32_t> two = {1, 2};
  ForwardItem item2{s.get(), two, true, &out};
  EXPECT_THROW(f->forward(std::span<ForwardItem>(&item2, 1)), Error);
}

// §10 with e_proj = I, h_proj = 0, unit-RMS embeddings, unit norms and the MTP block's layer,
// hc_head and norm equal to the main model's (one sliding, score-routed layer): the MTP block
// must then reproduce the main model run on the tokens shifted by one.
TEST(Mtp, EqualsMainBlockWhenProjectionsAreIdentity) {
  test::TinyModelOptions opt;
  opt.f32 = true;
  opt.salt = 4;
  opt.edit_config = [](nlohmann::json& j) {
    j["num_hidden_layers"] = 1;
    j["compress_ratios"] = {0, 0};
    j["num_hash_layers"] = 0;
  };
  std::map<std::string, std::vector<float>> main_values;
  opt.edit = [&](const std::string& name, std::vector<float>& v, int64_t rows, int64_t cols) {
    if (name == "embed.weight") {
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t c = 0; c < cols; ++c) ss += double(v[r * cols + c]) * v[r * cols + c];
        const double s = std::sqrt(ss / double(cols) + 1e-6);  // RMSNorm_enorm(e) = e exactly
        for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = float(v[r * cols + c] / s);
      }
    }
    if (name == "mtp.0.e_proj.weight")
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = r == c ? 1.0f : 0.0f;
    if (name == "mtp.0.h_proj.weight") std::fill(v.begin(), v.end(), 0.0f);
    if (name == "mtp.0.enorm.weight") std::fill(v.begin(), v.end(), 1.0f);
    // Written in expected_tensors order: main tensors precede mtp.* ones.
    std::string main_name;
    if (name.rfind("layers.0.", 0) == 0 || name.rfind("hc_head", 0) == 0 || name == "norm.weight")
      main_values[name] = v;
    if (name.rfind("mtp.0.", 0) == 0) {
      const std::string rest = name.substr(6);
      if (main_values.count("layers.0." + rest)) v = main_values["layers.0." + rest];
      else if (main_values.count(rest)) v = main_values[rest];  // hc_head_*, norm.weight
    }
  };
  const test::ScratchDir dir = test::write_tiny_model(opt);
  auto model = load_cpu_model(dir.path(), CpuOptions{});
  ASSERT_EQ(model->weights.mtp.size(), 1u);
  auto f = make_cpu_forward(dir.path(), CpuOptions{});
  test::Rng rng(22);
  const int64_t T = 150, V = opt.vocab, n = model->cfg.hc_mult, D = model->cfg.hidden_size;
  const auto tokens = random_tokens(rng, T + 1, V);
  const std::vector<int32_t> shifted(tokens.begin() + 1, tokens.end());
  const std::vector<float> expect = run_chunked(*f, shifted, T);

  // Main streams of the unshifted sequence (their values do not matter: h_proj = 0).
  KvBlockPool pool(kKvBlockTokens, 1);
  CpuSequenceState seq(model->cfg, T + 1, pool, pool.take_slot());
  std::vector<float> streams(size_t(T * n * D), 0.5f), got(size_t(T * V));
  for (int64_t p = 0; p < T; p += 37) {  // chunked drafting advances the MTP window state
    const int64_t m = std::min<int64_t>(37, T - p);
    mtp_forward(*model, seq, 0, streams.data() + p * n * D, shifted.data() + p, m, got.data() + p * V);
  }
  const double scale = max_abs(expect), d = max_diff(got, expect);
  // Only difference: RMSNorm_enorm's eps on a unit-RMS row (~5e-7 relative) plus FP32 rounding.
  EXPECT_LE(d, 1e-5 * scale) << "max|Δ| " << d << " scale " << scale;
}

}  // namespace
}  // namespace dsv4
