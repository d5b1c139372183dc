// Teacher-forced runs of the trained nano model through a CUDA forward, for tests that compare
// two ways of running it (expert parallelism, the host tier): what a run returns, the run, and how
// two runs' logits compare. The layouts compared are each test's own.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/forward.h"
#include "test_options.h"

namespace dsv4::test {

// Everything a run returns, in order: every logit row of every step, and the drafts' logits;
// which sequence (index into the prompts) each logit row belongs to.
struct Outputs {
  std::vector<float> logits;
  std::vector<int32_t> drafts;
  std::vector<int32_t> row_sequence;
};

// Three sequences of different lengths: prompts in chunks (one long enough to be its own matmul
// call, two short ones sharing slices), then decode steps of all three together — with `mtp` the
// MTP block runs along and each sequence drafts two tokens after every step.
inline Outputs teacher_forced(Forward& f, const std::vector<std::vector<int32_t>>& prompts, int decode_steps, bool mtp) {
  Outputs run;
  const size_t V = size_t(f.config().vocab_size);
  const auto append = [&](size_t seq, const std::vector<float>& rows) {
    run.logits.insert(run.logits.end(), rows.begin(), rows.end());
    run.row_sequence.insert(run.row_sequence.end(), rows.size() / V, int32_t(seq));
  };
  std::vector<std::unique_ptr<SequenceState>> seqs;
  for (const auto& p : prompts) seqs.push_back(f.new_sequence(int64_t(p.size()) + decode_steps + 4));
  std::vector<std::vector<float>> out(prompts.size());
  // Prefill: every prompt in chunks of 97 tokens, all sequences' chunks in the same forward calls.
  for (size_t at = 0;; at += 97) {
    std::vector<ForwardItem> items;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (at >= prompts[i].size() - 1) continue;  // the last prompt token is the first decode input
      const size_t n = std::min<size_t>(97, prompts[i].size() - 1 - at);
      ForwardItem it;
      it.seq = seqs[i].get();
      it.tokens = std::span(prompts[i]).subspan(at, n);
      it.all_logits = true;
      it.logits = &out[i];
      it.mtp = mtp;
      items.push_back(it);
    }
    if (items.empty()) break;
    f.forward(items);
    for (const ForwardItem& it : items) append(size_t(it.logits - out.data()), *it.logits);
  }
  // Decode: each sequence's next input is its prompt's last token, then a fixed pseudo-random walk
  // (teacher forcing: the inputs do not depend on the logits, so every layout feeds the same ids).
  std::mt19937 walk(7);
  std::vector<int32_t> next(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) next[i] = prompts[i].back();
  for (int step = 0; step < decode_steps; ++step) {
    std::vector<ForwardItem> items(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      items[i].seq = seqs[i].get();
      items[i].tokens = std::span(&next[i], 1);
      items[i].logits = &out[i];
      items[i].mtp = mtp;
    }
    f.forward(items);
    for (size_t i = 0; i < prompts.size(); ++i) append(i, out[i]);
    if (mtp) {
      std::vector<std::vector<int32_t>> drafts(prompts.size());
      std::vector<std::vector<float>> draft_logits(prompts.size());
      std::vector<DraftItem> d(prompts.size());
      for (size_t i = 0; i < prompts.size(); ++i) {
        d[i].seq = seqs[i].get();
        d[i].token = int32_t(walk() % uint32_t(f.config().vocab_size));
        d[i].n_draft = 2;
        d[i].drafts = &drafts[i];
        d[i].logits = &draft_logits[i];
      }
      f.draft(d);
      for (size_t i = 0; i < prompts.size(); ++i) {
        run.drafts.insert(run.drafts.end(), drafts[i].begin(), drafts[i].end());
        append(i, draft_logits[i]);
        next[i] = d[i].token;  // the token the drafts started from is the next input
      }
    } else {
      for (int32_t& t : next) t = int32_t(walk() % uint32_t(f.config().vocab_size));
    }
  }
  return run;
}

inline std::vector<std::vector<int32_t>> random_prompts(uint64_t seed, int64_t V) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (const int64_t len : {cap(300), cap(41), cap(130)}) {
    std::vector<int32_t> p(size_t(std::max<int64_t>(len, 2)));
    for (int32_t& t : p) t = int32_t(rng() % uint64_t(V));
    prompts.push_back(std::move(p));
  }
  return prompts;
}

inline void expect_same_run(const Outputs& want, const Outputs& got, const std::string& what) {
  ASSERT_EQ(want.logits.size(), got.logits.size()) << what;
  size_t differ = 0, first = want.logits.size();
  for (size_t i = 0; i < want.logits.size(); ++i)
    if (std::memcmp(&want.logits[i], &got.logits[i], sizeof(float)) != 0 && differ++ == 0) first = i;
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << want.logits.size()
                        << " logits differ in their bits, the first at " << first;
  EXPECT_EQ(want.drafts, got.drafts) << what;
}

// Logit rows of V: share of rows whose argmax agrees, the smallest row cosine, bit-identical rows,
// and each row's cosine.
struct RowAgreement {
  double top1 = 0, min_cosine = 1;
  size_t rows = 0, identical = 0;
  std::vector<double> cosine;
};
inline RowAgreement agreement(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  RowAgreement r;
  r.rows = a.size() / size_t(V);
  size_t same_top1 = 0;
  for (size_t i = 0; i < r.rows; ++i) {
    const float* x = a.data() + i * size_t(V);
    const float* y = b.data() + i * size_t(V);
    same_top1 += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
    r.identical += std::memcmp(x, y, size_t(V) * sizeof(float)) == 0;
    double xy = 0, xx = 0, yy = 0;
    for (int64_t j = 0; j < V; ++j) {
      xy += double(x[j]) * y[j];
      xx += double(x[j]) * x[j];
      yy += double(y[j]) * y[j];
    }
    r.cosine.push_back(xy / std::sqrt(xx * yy));
    r.min_cosine = std::min(r.min_cosine, r.cosine.back());
  }
  r.top1 = double(same_top1) / double(r.rows);
  return r;
}

}  // namespace dsv4::test
