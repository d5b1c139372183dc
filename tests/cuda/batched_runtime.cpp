// The batched CUDA runtime end to end on the trained nano model (issue 12's "done when"):
// a sequence's logits do not depend on what else is in the step (64 sequences of different
// lengths, prefill chunks and decode rows in the same steps, crossing CSA/HCA window closings, vs
// each alone); batched decode replayed from the bucket graphs equals eager passes bit for bit; and
// many short requests through the scheduler leave every KV block and slot in the pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "engine/scheduler.h"
#include "model/config.h"
#include "support/greedy_requests.h"
#include "support/sanitizer.h"
#include "support/seed.h"
#include "test_options.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";

class BatchedRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// Which rows' MXFP4 experts run on the FP8 tensor cores (CudaOptions::fp8_expert_prefill,
// fp8_expert_decode).
enum class Fp8Experts { kNone, kPrefill, kAll };

std::unique_ptr<Forward> nano_cuda(bool graph, int64_t kv_tokens = 0, Fp8Experts fp8 = Fp8Experts::kNone) {
  CudaOptions o = test::cuda_test_options();
  o.use_graph = graph;
  if (kv_tokens > 0) o.kv_cache_tokens = kv_tokens;
  o.fp8_expert_prefill = fp8 != Fp8Experts::kNone;
  o.fp8_expert_decode = fp8 == Fp8Experts::kAll;
  return make_cuda_forward(kNano, o);
}

// Every position's logits of `n_seqs` teacher-forced sequences, fed by a plan: a first chunk of
// first[s] tokens, then one token per step. together: all sequences' pieces of a step in one
// forward call; else each piece alone.
std::vector<std::vector<float>> run_plan(Forward& f, const std::vector<std::vector<int32_t>>& ids,
                                         const std::vector<int64_t>& first, bool together) {
  const int64_t V = f.config().vocab_size;
  std::vector<std::unique_ptr<SequenceState>> seqs;
  for (const auto& s : ids) seqs.push_back(f.new_sequence(int64_t(s.size())));
  std::vector<std::vector<float>> out(ids.size());
  std::vector<int64_t> fed(ids.size(), 0);
  std::vector<std::vector<float>> part(ids.size());
  while (true) {
    std::vector<ForwardItem> items;
    std::vector<size_t> who;
    for (size_t s = 0; s < ids.size(); ++s) {
      const int64_t left = int64_t(ids[s].size()) - fed[s];
      if (left == 0) continue;
      const int64_t n = fed[s] == 0 ? std::min(left, first[s]) : 1;
      ForwardItem it;
      it.seq = seqs[s].get();
      it.tokens = std::span<const int32_t>(ids[s]).subspan(size_t(fed[s]), size_t(n));
      it.all_logits = true;
      it.logits = &part[s];
      items.push_back(it);
      who.push_back(s);
      fed[s] += n;
    }
    if (items.empty()) break;
    if (together) {
      f.forward(items);
    } else {
      for (ForwardItem& it : items) f.forward(std::span<ForwardItem>(&it, 1));
    }
    for (size_t s : who) out[s].insert(out[s].end(), part[s].begin(), part[s].end());
  }
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [&](const auto& o) { return o.size() % size_t(V) == 0; }));
  return out;
}

// Issue 12: nano teacher-forced through a batch of 64 mixed sequences vs alone — top-1 >= 99.5 %
// and cosine >= 0.9999, or bit-identical. Which one holds is printed: rows are bit-identical when
// every kernel a row passes through computes it the same way whatever the batch (row-invariant
// GEMV / grouped-expert paths); a pass whose row count crosses a kernel-choice threshold (e.g. a
// tensor-core GEMM for many rows) changes summation order for the rows in it.
// Sets how many rows there were and how many of them were bit-identical (a void function: the
// ASSERTs inside return).
void expect_batch_independence(Fp8Experts fp8, int64_t* rows_out, int64_t* identical_out) {
  std::mt19937_64 rng(test::seed_for_this_test());
  auto f = nano_cuda(/*graph=*/false, 0, fp8);
  const int64_t V = f->config().vocab_size;
  // Sanitizer runs take 16 sequences: 64 took 199 s under memcheck (2026-12-04).
  const int n_seqs = test::shortened() ? 16 : 64;
  std::vector<std::vector<int32_t>> ids;
  std::vector<int64_t> first;
  for (int s = 0; s < n_seqs; ++s) {
    // Lengths cross the CSA (4) and HCA (128) windows and the 128-token sliding window.
    const int64_t len = test::cap(int64_t(130 + rng() % 200));
    ids.push_back(test::random_ids(rng, len, V));
    first.push_back(1 + int64_t(rng() % uint64_t(len)));
  }
  const auto alone = run_plan(*f, ids, first, false);
  const auto batched = run_plan(*f, ids, first, true);
  int64_t rows = 0, agree = 0, identical = 0;
  double dot = 0, na = 0, nb = 0;
  for (size_t s = 0; s < ids.size(); ++s) {
    ASSERT_EQ(alone[s].size(), batched[s].size());
    for (size_t r = 0; r < alone[s].size() / size_t(V); ++r) {
      const float* a = alone[s].data() + r * V;
      const float* b = batched[s].data() + r * V;
      ++rows;
      agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
      identical += std::memcmp(a, b, size_t(V) * sizeof(float)) == 0;
      for (int64_t v = 0; v < V; ++v) {
        dot += double(a[v]) * b[v];
        na += double(a[v]) * a[v];
        nb += double(b[v]) * b[v];
      }
    }
  }
  const double top1 = double(agree) / double(rows), cosine = dot / std::sqrt(na * nb);
  std::printf("[batch]%s %d sequences, %lld rows: bit-identical %lld (%.2f%%), top-1 %.3f%%, cosine %.8f\n",
              fp8 == Fp8Experts::kAll ? " fp8 experts," : fp8 == Fp8Experts::kPrefill ? " fp8 expert prefill," : "", n_seqs, (long long)rows, (long long)identical,
              100.0 * double(identical) / double(rows), 100 * top1, cosine);
  EXPECT_GE(top1, 0.995);
  EXPECT_GE(cosine, 0.9999);
  *rows_out = rows;
  *identical_out = identical;
}

TEST_F(BatchedRuntime, LogitsDoNotDependOnTheBatch) {
  int64_t rows = 0, identical = 0;
  expect_batch_independence(Fp8Experts::kNone, &rows, &identical);
}

// With --fp8-expert-prefill the rows of long prompt chunks take the FP8 expert kernel and every
// other row the F16 ones (moe_step.h moe_row_runs): a chunk's class is its own, so a sequence alone
// and inside the batch (the same chunks, the plan keeps them whole) gives the same bits.
TEST_F(BatchedRuntime, Fp8ExpertPrefillKeepsRowsBatchIndependent) {
  int64_t rows = 0, identical = 0;
  expect_batch_independence(Fp8Experts::kPrefill, &rows, &identical);
  EXPECT_GT(rows, 0);
  EXPECT_EQ(identical, rows) << "rows changed with what else was in the step";
}

// With --fp8-expert-decode as well every row takes the FP8 expert kernel, in 8-row items when the
// launch has few rows per expert and 128-row items otherwise: a row's sums are the same in both.
TEST_F(BatchedRuntime, Fp8ExpertDecodeKeepsRowsBatchIndependent) {
  int64_t rows = 0, identical = 0;
  expect_batch_independence(Fp8Experts::kAll, &rows, &identical);
  EXPECT_GT(rows, 0);
  EXPECT_EQ(identical, rows) << "rows changed with what else was in the step";
}

// --fp8-expert-decode takes effect, and only where it should: a prompt chunk long enough to be a
// prefill run by itself (more than 64 rows: nano's 4 picks per row over 16 experts pass the
// grouped kernel's 16 rows per expert) takes the FP8 kernel either way and gives the same bits;
// the decode rows after it (at least 40, also under a sanitizer's DSV4_CUDA_FORWARD_T=140) move
// from the F16 kernels to the FP8 one, so some differ in their bits. (Their top-1 agreement is printed, not asserted: the
// FP8 path's accuracy is judged against the CPU reference, as the parity fixtures judge prefill.)
TEST_F(BatchedRuntime, Fp8ExpertDecodeMovesOnlyTheDecodeRows) {
  std::mt19937_64 rng(test::seed_for_this_test());
  auto prefill_only = nano_cuda(false, 0, Fp8Experts::kPrefill), all = nano_cuda(false, 0, Fp8Experts::kAll);
  const int64_t V = all->config().vocab_size;
  std::vector<std::vector<int32_t>> ids;
  std::vector<int64_t> first;
  for (int s = 0; s < 6; ++s) {
    const int64_t len = test::cap(int64_t(260 + rng() % 60));
    ids.push_back(test::random_ids(rng, len, V));
    first.push_back(std::min<int64_t>(200, len - 40));
    ASSERT_GT(first.back(), 64) << "DSV4_CUDA_FORWARD_T is too small for a prompt chunk to be a prefill";
  }
  const auto a = run_plan(*prefill_only, ids, first, false), b = run_plan(*all, ids, first, false);
  int64_t prompt_rows = 0, prompt_identical = 0, decode_rows = 0, decode_differ = 0, decode_agree = 0;
  for (size_t s = 0; s < ids.size(); ++s) {
    ASSERT_EQ(a[s].size(), b[s].size());
    for (size_t r = 0; r < a[s].size() / size_t(V); ++r) {
      const float* x = a[s].data() + r * V;
      const float* y = b[s].data() + r * V;
      const bool same = std::memcmp(x, y, size_t(V) * sizeof(float)) == 0;
      if (int64_t(r) < first[s]) {
        ++prompt_rows;
        prompt_identical += same;
      } else {
        ++decode_rows;
        decode_differ += !same;
        decode_agree += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
      }
    }
  }
  std::printf("[fp8 decode] %lld prompt rows (%lld identical), %lld decode rows (%lld differ, top-1 %.2f%%)\n",
              (long long)prompt_rows, (long long)prompt_identical, (long long)decode_rows, (long long)decode_differ,
              100.0 * double(decode_agree) / double(std::max<int64_t>(decode_rows, 1)));
  EXPECT_EQ(prompt_identical, prompt_rows) << "the prompt chunks' rows took another kernel";
  ASSERT_GT(decode_rows, 0);
  EXPECT_GT(decode_differ, 0) << "no decode row changed: the option did not reach the expert launches";
}

// 13 sequences whose prompt chunks go through one pass and whose decode rows then shrink the
// batch through the graph buckets 16, 8, 4, 2 and 1 as they end: ids and first-chunk lengths.
void staggered_sequences(std::mt19937_64& rng, int64_t V, std::vector<std::vector<int32_t>>& ids,
                         std::vector<int64_t>& first) {
  for (int s = 0; s < 13; ++s) {
    const int64_t prefill = 60 + 17 * s, len = test::cap(prefill + 330 - 20 * s);
    ids.push_back(test::random_ids(rng, len, V));
    first.push_back(std::min(prefill, len));
  }
}

// Batched decode steps replayed from the bucket graphs against eager passes (the test below).
void expect_graph_equals_eager(Fp8Experts fp8) {
  std::mt19937_64 rng(test::seed_for_this_test());
  auto graph = nano_cuda(true, 0, fp8), eager = nano_cuda(false, 0, fp8);
  const int64_t V = graph->config().vocab_size;
  std::vector<std::vector<int32_t>> ids;
  std::vector<int64_t> first;
  staggered_sequences(rng, V, ids, first);
  const auto g = run_plan(*graph, ids, first, true);
  const auto e = run_plan(*eager, ids, first, true);
  int64_t steps = 0, differ = 0;
  for (size_t s = 0; s < ids.size(); ++s)
    for (size_t r = size_t(first[s]); r < ids[s].size(); ++r) {
      ++steps;
      differ += std::memcmp(g[s].data() + r * V, e[s].data() + r * V, size_t(V) * sizeof(float)) != 0;
    }
  std::printf("[graph] %lld decode rows, %lld differ between graph and eager\n", (long long)steps, (long long)differ);
  EXPECT_EQ(differ, 0);
}

// Batched decode steps replayed from the bucket graphs equal eager passes bit for bit, across the
// HCA windows closing at 127, 255, 383 and every CSA window, for batches that change size (new
// buckets, padding rows) as sequences finish.
// Also with every row's experts on the FP8 kernel (--fp8-expert-decode).
TEST_F(BatchedRuntime, GraphDecodeEqualsEagerAcrossWindows) {
  for (const Fp8Experts fp8 : {Fp8Experts::kNone, Fp8Experts::kAll}) {
    SCOPED_TRACE(fp8 == Fp8Experts::kAll ? "fp8 experts" : "f16 experts");
    expect_graph_equals_eager(fp8);
  }
}

// The pass's branches (step.h: fork_branch — the shared expert and the attention's kv path on a
// second stream) change no bit: 13 sequences' prompt chunks in one pass (where only the kv path
// branches: too many rows for the shared expert's), then their decode rows replayed from the
// bucket graphs (both branch), with the branches against without.
TEST_F(BatchedRuntime, BranchesChangeNoBit) {
  std::mt19937_64 rng(test::seed_for_this_test());
  CudaOptions o = test::cuda_test_options();
  auto branched = make_cuda_forward(kNano, o);
  o.graph_branches = false;
  auto single = make_cuda_forward(kNano, o);
  const int64_t V = branched->config().vocab_size;
  std::vector<std::vector<int32_t>> ids;
  std::vector<int64_t> first;
  staggered_sequences(rng, V, ids, first);
  const auto a = run_plan(*branched, ids, first, true);
  const auto b = run_plan(*single, ids, first, true);
  int64_t rows = 0, differ = 0;
  for (size_t s = 0; s < ids.size(); ++s) {
    ASSERT_EQ(a[s].size(), b[s].size());
    for (size_t r = 0; r < a[s].size() / size_t(V); ++r) {
      ++rows;
      differ += std::memcmp(a[s].data() + r * V, b[s].data() + r * V, size_t(V) * sizeof(float)) != 0;
    }
  }
  std::printf("[branches] %lld rows, %lld differ with the branches against without\n", (long long)rows,
              (long long)differ);
  EXPECT_GT(rows, 0);
  EXPECT_EQ(differ, 0);
}

// Short requests through the scheduler on the GPU, on a pool small enough that admission waits:
// greedy outputs equal their solo runs (the same sequences alone), and afterwards every block and
// slot is back in the pool.
TEST_F(BatchedRuntime, SchedulerReturnsEveryBlock) {
  std::mt19937_64 rng(test::seed_for_this_test());
  auto f = nano_cuda(true, 40 * 256);
  const int64_t V = f->config().vocab_size;
  const int n_req = int(test::cap(1000));
  SchedulerOptions o;
  o.max_running = 64;
  o.max_step_tokens = 512;
  Scheduler s(*f, o);
  std::vector<test::GreedyRequest> outs = test::submit_greedy_requests(s, rng, n_req, 40, 12, V);
  s.run_until_idle();
  const KvCacheInfo kv = f->kv_cache();
  EXPECT_EQ(kv.free_blocks, kv.total_blocks);
  EXPECT_EQ(kv.free_sequences, kv.max_sequences);
  int64_t checked = 0, equal = 0;
  for (int i = 0; i < n_req; i += std::max(1, n_req / 40)) {
    const test::GreedyRequest& out = outs[size_t(i)];
    ASSERT_TRUE(out.done) << i;
    ASSERT_EQ(int64_t(out.ids.size()), out.max_tokens) << i;
    auto seq = f->new_sequence(128);
    std::vector<int32_t> fed = out.prompt, solo;
    int32_t sampled = -1;
    const DeviceSampling greedy{};
    for (int64_t t = 0; t < out.max_tokens; ++t) {
      ForwardItem it;
      it.seq = seq.get();
      it.tokens = t == 0 ? std::span<const int32_t>(fed) : std::span<const int32_t>(&fed.back(), 1);
      it.sample = &greedy;
      it.sampled = &sampled;
      f->forward(std::span<ForwardItem>(&it, 1));
      solo.push_back(sampled);
      fed.push_back(sampled);
    }
    ++checked;
    equal += solo == out.ids;
  }
  // Greedy ids agree unless a near-tie meets a batch-dependent summation order (see
  // LogitsDoNotDependOnTheBatch); with row-invariant kernels every one is equal.
  std::printf("[scheduler] %d requests; %lld of %lld solo reruns give the same ids\n", n_req, (long long)equal,
              (long long)checked);
  EXPECT_GE(double(equal), 0.95 * double(checked));
}

}  // namespace
}  // namespace dsv4
