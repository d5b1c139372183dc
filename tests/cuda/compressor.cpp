// Parity of kernels/compressor.cu against a double-precision reference written from §5: whole
// sequences streamed in several chunkings (one token at a time, 7, 129, whole, random sizes) for
// CSA (m = 4) and HCA (m = 128), fresh (poisoned ring) and resumed at a large position (ring
// pre-filled in its documented layout), with rings of coff·m rows and of coff·m + the rollback
// margin; every entry, every entry_idx, the final ring, and bit-identical results across
// chunkings. Then several sequences per pass (step_rows.cuh): each entry bit-identical to its
// sequence's single-sequence run, every slot's ring as the contract leaves it after every pass,
// padding rows and non-emitting rows untouched. Then speculative rollbacks: a sequence whose
// drafts are rejected and re-fed emits, bit for bit, what the accepted tokens alone emit.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "cuda/kernels/compressor.cuh"
#include "cuda/kernels/rope.cuh"
#include "model/rollback.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kRopeDim = 64;     // qk_rope_head_dim
constexpr float kEps = 1e-6f;    // rms_norm_eps
constexpr int kIdxPoison = 0x7B;  // entry_idx poison byte: 0x7B7B7B7B is neither −1 nor a valid j
// Rows the pool adds to each ring beyond coff·m: the positions a speculative step can roll back
// (model/rollback.h compressor_ring_rows: the pool and the CPU backend keep the same margin).
constexpr int kMargin = int(kRollbackPositions);

RopeParams compress_table() {  // §4.4: θ = 160000 with YaRN (the table of ratio-4/128 layers)
  RopeParams t;
  t.theta = 160000;
  t.yarn = true;
  t.factor = 16;
  t.original_max_position = 65536;
  t.beta_fast = 32;
  t.beta_slow = 1;
  return t;
}

struct CompressorCase {
  int m, c, len, start;  // ratio, width, tokens streamed, position of the first streamed token
  int margin;            // ring rows beyond coff·m: 0 (the exact ring) or kMargin
};

// Host data of positions [base, start + len): base = start for a fresh sequence (start = 0), else
// start − ring_rows (those rows pre-fill the ring, as an earlier chunk would have left it).
struct SequenceData {
  int coff = 0, cw = 0, base = 0, ring_rows = 0;
  std::vector<float> a, z;       // [start + len − base, cw] fp32
  std::vector<float> ape;        // [m, cw] fp32
  std::vector<uint16_t> norm;    // [c] bf16
  std::vector<float> inv_freq;   // [kRopeDim / 2]
  // The FP32 biased logit z + ape[q mod m] (§5): stored in FP32 by the streaming state (§5.5),
  // so the reference uses that FP32 sum too.
  float logit(const CompressorCase& k, int q, int col) const {
    return z[size_t(q - base) * cw + col] + ape[size_t(q % k.m) * cw + col];
  }
  float value(int q, int col) const { return a[size_t(q - base) * cw + col]; }
};

// Reference entry for every streamed token that closes a window, in streaming order, and budgets.
struct Reference {
  std::vector<int> rows;           // token index (pos − start) of each entry
  std::vector<double> y, budget;   // [rows.size(), c]
};

Reference reference(const CompressorCase& k, const SequenceData& s) {
  const double u = kF32Unit;
  // RMS Σp² in the kernel: ≤ ceil(c/512) fmaf per thread, a 5-level warp tree, ≤ 16 warp partials
  // added in sequence: relative error ≤ depth·u on a sum of positive terms.
  const double depth = std::ceil(k.c / 512.0) + 5 + 16;
  Reference ref;
  const auto wf = from_bf16(s.norm);
  std::vector<double> pooled(size_t(k.c)), dpool(size_t(k.c)), y(size_t(k.c)), dy(size_t(k.c));
  for (int pos = k.start; pos < k.start + k.len; ++pos) {
    if ((pos + 1) % k.m != 0) continue;
    const int j = (pos + 1) / k.m - 1, w0 = j * k.m;
    // §5.1/§5.2 slots (position, column offset): CSA previous window through series A (absent for
    // j = 0) and this window through series B; HCA this window.
    std::vector<std::pair<int, int>> slots;
    if (s.coff == 2 && j > 0)
      for (int q = w0 - k.m; q < w0; ++q) slots.emplace_back(q, 0);
    for (int q = w0; q <= pos; ++q) slots.emplace_back(q, (s.coff - 1) * k.c);
    const double n = double(slots.size());
    for (int e = 0; e < k.c; ++e) {
      double mx = -INFINITY;
      for (auto [q, off] : slots) mx = std::max(mx, double(s.logit(k, q, off + e)));
      double den = 0, num = 0;
      for (auto [q, off] : slots) {
        const double p = std::exp(double(s.logit(k, q, off + e)) - mx);
        den += p;
        num += p * s.value(q, off + e);
      }
      pooled[size_t(e)] = num / den;
      // Pooling budget. The kernel's weight of slot s is exp(fl(z_s − mx))·(1 + ≤4u) (expf ≤ 2 ulp),
      // i.e. p_s(1 + θ_s) with |θ_s| ≤ (d_s + 4)u, d_s = mx − z_s; den and num are n-term
      // sequential FP32 sums ((n−1)u, n·u with fmaf), then one division (u). To first order
      // |Δpooled| ≤ Σw|a|(|θ| + n·u) + |pooled|·Σw(|θ| + (n−1)u) + u·|pooled|
      //          ≤ u·((2n + 9)·A1 + A2 + A1·D),  A1 = Σw|a|, A2 = Σw·d·|a|, D = Σw·d.
      double a1 = 0, a2 = 0, dd = 0;
      for (auto [q, off] : slots) {
        const double d = mx - s.logit(k, q, off + e);
        const double w = std::exp(-d) / den;
        a1 += w * std::fabs(s.value(q, off + e));
        a2 += w * d * std::fabs(s.value(q, off + e));
        dd += w * d;
      }
      dpool[size_t(e)] = u * ((2 * n + 9) * a1 + a2 + a1 * dd);
    }
    // §5.3 step 1: RMSNorm. ms = mean(p²) + eps; a perturbation δ of p moves ms by ≤ 2Σ|p|δ/c, so
    // r = ms^(−1/2) moves by ρ ≤ Σ|p|δ/(c·ms) + (depth/2 + 6)u (Σp², /c, +eps, rsqrtf ≤ 2 ulp);
    // y = p·r·w adds two roundings: |Δy| ≤ |r·w|·(δ + |p|·(ρ + 2u)).
    double ss = 0, pd = 0;
    for (int e = 0; e < k.c; ++e) {
      ss += pooled[size_t(e)] * pooled[size_t(e)];
      pd += std::fabs(pooled[size_t(e)]) * dpool[size_t(e)];
    }
    const double ms = ss / k.c + kEps, r = 1 / std::sqrt(ms);
    const double rho = pd / (k.c * ms) + (depth / 2 + 6) * u;
    for (int e = 0; e < k.c; ++e) {
      y[size_t(e)] = pooled[size_t(e)] * r * wf[size_t(e)];
      dy[size_t(e)] = std::fabs(r * wf[size_t(e)]) * (dpool[size_t(e)] + std::fabs(pooled[size_t(e)]) * (rho + 2 * u));
    }
    // §5.3 step 2 / §4.4: RoPE at position j·m with the FP32 angle fl(j·m · ω_i); the rotation
    // adds sincosf (≤ 2 ulp each) and two products and an add: ≤ 6u·(|y0| + |y1|) per output.
    const int nope = k.c - kRopeDim;
    std::vector<double> out(y), b(dy);
    for (int i = 0; i < kRopeDim / 2; ++i) {
      const float angle = float(w0) * s.inv_freq[size_t(i)];
      const double cs = std::cos(double(angle)), sn = std::sin(double(angle));
      const size_t k0 = size_t(nope + 2 * i), k1 = k0 + 1;
      out[k0] = y[k0] * cs - y[k1] * sn;
      out[k1] = y[k0] * sn + y[k1] * cs;
      const double slack = dy[k0] + dy[k1] + 6 * u * (std::fabs(y[k0]) + std::fabs(y[k1]));
      b[k0] = b[k1] = slack;
    }
    // Final BF16 rounding: half an ulp of the (perturbed) FP32 value.
    ref.rows.push_back(pos - k.start);
    for (int e = 0; e < k.c; ++e) {
      ref.y.push_back(out[size_t(e)]);
      ref.budget.push_back(kBf16HalfUlp * (std::fabs(out[size_t(e)]) + b[size_t(e)]) + b[size_t(e)]);
    }
  }
  return ref;
}

class CompressorTest : public CudaOpTest, public ::testing::WithParamInterface<CompressorCase> {};

TEST_P(CompressorTest, StreamsLikeTheReference) {
  const auto k = GetParam();
  SequenceData s;
  s.coff = k.m == 4 ? 2 : 1;  // §5: overlapping windows only at m = 4
  s.cw = s.coff * k.c;
  s.ring_rows = s.coff * k.m + k.margin;
  ASSERT_TRUE(k.start == 0 || k.start >= s.ring_rows);
  s.base = k.start == 0 ? 0 : k.start - s.ring_rows;
  const int n_rows = k.start + k.len - s.base;
  s.a = normals(size_t(n_rows) * s.cw);
  s.z = normals(size_t(n_rows) * s.cw, 2.0f);
  // Every 17th channel gets logits near 100: expf would overflow without the max shift (e^88.7).
  for (int r = 0; r < n_rows; ++r)
    for (int col = 0; col < s.cw; col += 17) s.z[size_t(r) * s.cw + col] += 100.0f;
  s.ape = normals(size_t(k.m) * s.cw);
  s.norm = to_bf16(normals(size_t(k.c), 0.5f));
  s.inv_freq = rope_inv_freq(compress_table(), kRopeDim);
  const Reference ref = reference(k, s);
  ASSERT_GE(ref.rows.size(), 2u) << "the case must cross several windows";

  // Ring before the first streamed token: poison for a fresh sequence (rows of positions < 0 must
  // never be read), else the last ring_rows positions in the documented layout.
  std::vector<float> ring_a0(size_t(s.ring_rows) * s.cw), ring_z0(ring_a0.size());
  if (k.start > 0)
    for (int q = s.base; q < k.start; ++q)
      for (int col = 0; col < s.cw; ++col) {
        const size_t dst = size_t(q % s.ring_rows) * s.cw + col;
        ring_a0[dst] = s.value(q, col);
        ring_z0[dst] = s.logit(k, q, col);
      }

  const size_t first_row = size_t(k.start - s.base) * s.cw;  // streamed tokens' rows in a/z
  DeviceBuffer<float> d_a(std::vector<float>(s.a.begin() + first_row, s.a.end()));
  DeviceBuffer<float> d_z(std::vector<float>(s.z.begin() + first_row, s.z.end()));
  DeviceBuffer<float> d_ape(s.ape), d_freq(s.inv_freq);
  DeviceBuffer<uint16_t> d_norm(s.norm);
  std::vector<int32_t> pos(size_t(k.len));
  for (int i = 0; i < k.len; ++i) pos[size_t(i)] = k.start + i;
  DeviceBuffer<int32_t> d_pos(pos);
  DeviceBuffer<float> d_ring_a(ring_a0.size()), d_ring_z(ring_z0.size());
  DeviceBuffer<uint16_t> d_entry(size_t(k.len) * k.c);
  DeviceBuffer<int32_t> d_idx(size_t(k.len));

  std::vector<std::pair<std::string, std::vector<int>>> chunkings;
  for (int T : {1, 7, 129, k.len}) chunkings.emplace_back(cat("T=", T), std::vector<int>(size_t((k.len + T - 1) / T), T));
  std::vector<int> random_sizes;
  for (int n = 0; n < k.len;) n += random_sizes.emplace_back(uniform_int(1, 2 * s.ring_rows + 3));
  chunkings.emplace_back("random", random_sizes);

  std::vector<uint16_t> first_bits;  // emitted entries of the first chunking, for bitwise agreement
  for (auto& [name, sizes] : chunkings) {
    if (k.start > 0) {
      d_ring_a.upload(ring_a0);
      d_ring_z.upload(ring_z0);
    } else {
      d_ring_a.fill_bytes(kPoisonByte);
      d_ring_z.fill_bytes(kPoisonByte);
    }
    d_entry.fill_bytes(kPoisonByte);
    d_idx.fill_bytes(kIdxPoison);
    for (int done = 0, i = 0; done < k.len; done += sizes[size_t(i++)]) {
      CompressorParams p;
      p.T = std::min(sizes[size_t(i)], k.len - done);
      // One sequence in slot 0: this launch's rows are its chunk [0, T).
      const std::vector<int32_t> slot(size_t(p.T), 0), first(size_t(p.T), 0), last(size_t(p.T), p.T - 1);
      DeviceBuffer<int32_t> d_slot(slot), d_first(first), d_last(last);
      p.a = d_a.get() + size_t(done) * s.cw;
      p.z = d_z.get() + size_t(done) * s.cw;
      p.ape = d_ape.get();
      p.norm = bf16_ptr(d_norm);
      p.inv_freq = d_freq.get();
      p.rows = {d_pos.get() + done, d_slot.get(), d_first.get(), d_last.get()};
      p.ring_a = d_ring_a.get();
      p.ring_z = d_ring_z.get();
      p.entry = bf16_ptr(d_entry) + size_t(done) * k.c;
      p.entry_idx = d_idx.get() + done;
      p.m = k.m;
      p.c = k.c;
      p.coff = s.coff;
      p.rope_dim = kRopeDim;
      p.eps = kEps;
      p.ring_rows = s.ring_rows;
      launch_compressor(p, nullptr);
    }
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::string what =
        cat("compressor m=", k.m, " c=", k.c, " start=", k.start, " ring_rows=", s.ring_rows, " ", name);

    // entry_idx: j at every token that closes a window (§5.4), −1 elsewhere.
    const auto idx = d_idx.download();
    int64_t idx_bad = 0;
    for (int i = 0; i < k.len; ++i) {
      const int p1 = k.start + i + 1;
      idx_bad += idx[size_t(i)] != (p1 % k.m == 0 ? p1 / k.m - 1 : -1);
    }
    EXPECT_EQ(idx_bad, 0) << what << ": wrong entry_idx";

    const auto bits = d_entry.download();
    std::vector<uint16_t> emitted;
    for (int row : ref.rows)
      emitted.insert(emitted.end(), bits.begin() + size_t(row) * k.c, bits.begin() + size_t(row + 1) * k.c);
    expect_parity(what, from_bf16(emitted), ref.y, ref.budget);
    // Chunkings agree bit for bit: every slot is the same FP32 value whether read from the chunk
    // or the ring (the ring stores the same one-add z + ape), and each entry is pooled by the same
    // operations in the same order.
    if (first_bits.empty())
      first_bits = emitted;
    else
      EXPECT_TRUE(emitted == first_bits) << what << ": differs from " << chunkings[0].first;

    // The ring after the sequence holds the last ring_rows positions (§5.5 layout, bitwise).
    const auto ring_a = d_ring_a.download(), ring_z = d_ring_z.download();
    int64_t ring_bad = 0;
    for (int q = std::max(k.start + k.len - s.ring_rows, 0); q < k.start + k.len; ++q)
      for (int col = 0; col < s.cw; ++col) {
        const size_t at = size_t(q % s.ring_rows) * s.cw + col;
        const float ea = s.value(q, col), ez = s.logit(k, q, col);
        ring_bad += std::memcmp(&ring_a[at], &ea, sizeof(float)) != 0 || std::memcmp(&ring_z[at], &ez, sizeof(float)) != 0;
      }
    EXPECT_EQ(ring_bad, 0) << what << ": ring rows differ from a, z + ape of the last positions";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CompressorTest,
    ::testing::Values(CompressorCase{4, 512, 300, 0, kMargin},          // CSA main compressor, fresh sequence
                      CompressorCase{4, 128, 300, 0, 0},                // CSA indexer compressor, exact ring
                      CompressorCase{128, 512, 600, 0, kMargin},        // HCA, 4 windows + a partial one
                      CompressorCase{4, 512, 101, 1000001, kMargin},    // CSA resumed mid-window near 2^20
                      CompressorCase{4, 512, 101, 1000001, 0},          // the same, exact ring
                      CompressorCase{128, 512, 300, 1000037, kMargin},  // HCA resumed mid-window
                      CompressorCase{128, 512, 300, 1000037, 0}),       // the same, exact ring
    [](const ::testing::TestParamInfo<CompressorCase>& info) {
      return cat("m", info.param.m, "_c", info.param.c, "_len", info.param.len, "_start", info.param.start,
                 "_margin", info.param.margin);
    });

// ---- Several sequences per pass ----

struct BatchCase {
  int m, c;              // ratio, width
  int n_seqs;            // sequences in distinct slots (one more reuses a finished one's slot)
  int min_len, max_len;  // tokens per sequence
  int margin;            // ring rows beyond coff·m: 0 or kMargin
};

constexpr int kSlots = 16;  // slots of the ring arrays; the sequences take random ones
constexpr uint32_t kPoisonF32 = 0xFFFFFFFFu;  // kPoisonByte in every byte: a NaN
constexpr uint16_t kPoisonBf16 = 0xFFFFu;

// One sequence of a batch case: its slot and data (positions [s.base, k.start + k.len)), how far
// it has streamed, and the entries of its single-sequence run.
struct Stream {
  CompressorCase k;
  SequenceData s;
  int slot = 0, done = 0;
  int after = -1;                  // ≥ 0: joins once that stream (same slot) has finished
  std::vector<uint16_t> solo;      // [len, c] entry rows of the single-sequence run (bf16 bits)
  std::vector<uint16_t> batched;   // [len, c] entry rows as the passes emitted them
  std::vector<int> n_emitted;      // [len] times row (pos − start) emitted an entry
  bool finished() const { return done == k.len; }
};

class CompressorBatchTest : public CudaOpTest, public ::testing::WithParamInterface<BatchCase> {
 protected:
  // One launch over the rows of L with a/z [rows, cw] (host), rings of `n_ring_slots` slots; the
  // entry rows (poisoned first) and entry_idx (poisoned first) come back.
  void run_pass(const BatchCase& b, int coff, const StepLayout& L, const std::vector<float>& a,
                const std::vector<float>& z, DeviceBuffer<float>& ring_a, DeviceBuffer<float>& ring_z,
                std::vector<uint16_t>& entry, std::vector<int32_t>& idx) {
    const DeviceStepLayout D(L);
    DeviceBuffer<float> d_a(a), d_z(z);
    DeviceBuffer<uint16_t> d_entry(size_t(L.rows()) * b.c);
    DeviceBuffer<int32_t> d_idx(size_t(L.rows()));
    d_entry.fill_bytes(kPoisonByte);
    d_idx.fill_bytes(kIdxPoison);
    CompressorParams p;
    p.a = d_a.get();
    p.z = d_z.get();
    p.ape = ape_.get();
    p.norm = bf16_ptr(norm_);
    p.inv_freq = freq_.get();
    p.rows = D.rows();
    p.ring_a = ring_a.get();
    p.ring_z = ring_z.get();
    p.entry = bf16_ptr(d_entry);
    p.entry_idx = d_idx.get();
    p.T = L.rows();
    p.m = b.m;
    p.c = b.c;
    p.coff = coff;
    p.rope_dim = kRopeDim;
    p.eps = kEps;
    p.ring_rows = coff * b.m + b.margin;
    launch_compressor(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    entry = d_entry.download();
    idx = d_idx.download();
  }
  DeviceBuffer<float> ape_, freq_;
  DeviceBuffer<uint16_t> norm_;
};

// The contract's ring update (compressor.cuh), on the host: each chunk rewrites its slot's rows
// q mod ring_rows with a and z + ape of its last min(n, ring_rows) positions; nothing else moves.
void update_ring_model(const Stream& st, int pos0, int n, std::vector<float>& model_a, std::vector<float>& model_z) {
  const int rr = st.s.ring_rows, cw = st.s.cw;
  for (int q = std::max(pos0, pos0 + n - rr); q < pos0 + n; ++q)
    for (int col = 0; col < cw; ++col) {
      const size_t at = (size_t(st.slot) * rr + size_t(q % rr)) * cw + col;
      model_a[at] = st.s.value(q, col);
      model_z[at] = st.s.logit(st.k, q, col);
    }
}

int64_t count_bit_differences(const std::vector<float>& got, const std::vector<float>& want) {
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
  return bad;
}

TEST_P(CompressorBatchTest, EverySequenceAsIfAlone) {
  const BatchCase b = GetParam();
  const int coff = b.m == 4 ? 2 : 1;  // §5: overlapping windows only at m = 4
  const int cw = coff * b.c, rr = coff * b.m + b.margin;

  // The layer's parameters, shared by every sequence (as one layer's compressor is).
  const std::vector<float> ape = normals(size_t(b.m) * cw);
  const std::vector<uint16_t> norm = to_bf16(normals(size_t(b.c), 0.5f));
  const std::vector<float> inv_freq = rope_inv_freq(compress_table(), kRopeDim);
  ape_ = DeviceBuffer<float>(ape);
  freq_ = DeviceBuffer<float>(inv_freq);
  norm_ = DeviceBuffer<uint16_t>(norm);

  // Sequences: distinct random slots; stream 1 resumes mid-window near 2^20 (its ring pre-filled
  // as an earlier pass would have left it); a last, fresh one reuses stream 0's slot after it
  // finishes, over the old sequence's ring rows (a fresh sequence needs no ring reset).
  std::vector<int> slots(kSlots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<Stream> streams(size_t(b.n_seqs) + 1);
  for (size_t i = 0; i < streams.size(); ++i) {
    Stream& st = streams[i];
    const bool reuse = i == size_t(b.n_seqs);
    st.slot = reuse ? streams[0].slot : slots[i];
    st.after = reuse ? 0 : -1;
    st.k = {b.m, b.c, uniform_int(b.min_len, b.max_len), i == 1 ? 1000000 + uniform_int(rr, 3 * rr) : 0, b.margin};
    st.s.coff = coff;
    st.s.cw = cw;
    st.s.ring_rows = rr;
    st.s.base = st.k.start == 0 ? 0 : st.k.start - rr;
    const int n_rows = st.k.start + st.k.len - st.s.base;
    st.s.a = normals(size_t(n_rows) * cw);
    st.s.z = normals(size_t(n_rows) * cw, 2.0f);
    for (int r = 0; r < n_rows; ++r)  // logits near 100 on every 17th channel: the max shift matters
      for (int col = 0; col < cw; col += 17) st.s.z[size_t(r) * cw + col] += 100.0f;
    st.s.ape = ape;
    st.s.norm = norm;
    st.s.inv_freq = inv_freq;
  }
  auto fill_ring = [&](const Stream& st, std::vector<float>& ra, std::vector<float>& rz, int slot) {
    for (int q = st.s.base; q < st.k.start; ++q)
      for (int col = 0; col < cw; ++col) {
        const size_t at = (size_t(slot) * rr + size_t(q % rr)) * cw + col;
        ra[at] = st.s.value(q, col);
        rz[at] = st.s.logit(st.k, q, col);
      }
  };
  float poison;
  std::memcpy(&poison, &kPoisonF32, sizeof(float));

  // The single-sequence runs: each stream alone, one chunk, in slot 0 of a one-slot ring.
  for (Stream& st : streams) {
    std::vector<float> ra(size_t(rr) * cw, poison), rz(ra.size(), poison);
    fill_ring(st, ra, rz, 0);
    DeviceBuffer<float> d_ra(ra), d_rz(rz);
    StepLayout L;
    L.add_chunk(0, st.k.start, st.k.len);
    const size_t off = size_t(st.k.start - st.s.base) * cw;
    const std::vector<float> a(st.s.a.begin() + int64_t(off), st.s.a.end()), z(st.s.z.begin() + int64_t(off), st.s.z.end());
    std::vector<int32_t> idx;
    run_pass(b, coff, L, a, z, d_ra, d_rz, st.solo, idx);
    st.batched.assign(st.solo.size(), kPoisonBf16);
    st.n_emitted.assign(size_t(st.k.len), 0);
  }

  // The batched run: passes until every stream has finished. Each pass takes each ready stream
  // with probability 3/4, in random order, with a chunk of one token (decode), up to the ring
  // size, or longer than the ring (long prefill); then 0–3 padding rows with random a/z.
  std::vector<float> model_a(size_t(kSlots) * rr * cw, poison), model_z(model_a.size(), poison);
  fill_ring(streams[1], model_a, model_z, streams[1].slot);
  DeviceBuffer<float> ring_a(model_a), ring_z(model_z);
  int n_passes = 0, n_rows_total = 0, n_pad_total = 0;
  int64_t idx_bad = 0, untouched_bad = 0, solo_bad = 0, ring_bad = 0;
  auto ready = [&](const Stream& st) {
    return !st.finished() && (st.after < 0 || streams[size_t(st.after)].finished());
  };
  while (std::any_of(streams.begin(), streams.end(), [](const Stream& st) { return !st.finished(); })) {
    std::vector<size_t> order;
    for (size_t i = 0; i < streams.size(); ++i)
      if (ready(streams[i]) && uniform_int(0, 3) > 0) order.push_back(i);
    if (order.empty())
      for (size_t i = 0; i < streams.size() && order.empty(); ++i)
        if (ready(streams[i])) order.push_back(i);
    std::shuffle(order.begin(), order.end(), rng);
    StepLayout L;
    std::vector<float> a, z;
    std::vector<int> owner;  // stream of each row, −1 for padding
    for (size_t i : order) {
      Stream& st = streams[i];
      const int kind = uniform_int(0, 9);
      int n = kind < 4 ? 1 : kind < 7 ? uniform_int(2, rr) : uniform_int(rr + 1, std::max(3 * rr + 5, 150));
      n = std::min(n, st.k.len - st.done);
      const int pos0 = st.k.start + st.done;
      L.add_chunk(st.slot, pos0, n);
      const size_t r0 = size_t(pos0 - st.s.base) * cw;
      a.insert(a.end(), st.s.a.begin() + int64_t(r0), st.s.a.begin() + int64_t(r0 + size_t(n) * cw));
      z.insert(z.end(), st.s.z.begin() + int64_t(r0), st.s.z.begin() + int64_t(r0 + size_t(n) * cw));
      owner.insert(owner.end(), size_t(n), int(i));
      update_ring_model(st, pos0, n, model_a, model_z);
      st.done += n;
    }
    const int n_pad = uniform_int(0, 3);
    L.add_padding(n_pad);
    const auto pad_a = normals(size_t(n_pad) * cw), pad_z = normals(size_t(n_pad) * cw);
    a.insert(a.end(), pad_a.begin(), pad_a.end());
    z.insert(z.end(), pad_z.begin(), pad_z.end());
    owner.insert(owner.end(), size_t(n_pad), -1);

    std::vector<uint16_t> entry;
    std::vector<int32_t> idx;
    run_pass(b, coff, L, a, z, ring_a, ring_z, entry, idx);
    ++n_passes;
    n_rows_total += L.rows();
    n_pad_total += n_pad;
    for (int r = 0; r < L.rows(); ++r) {
      const int pos = L.pos[size_t(r)];
      const int32_t want = pos >= 0 && (pos + 1) % b.m == 0 ? (pos + 1) / b.m - 1 : -1;  // §5.4
      if (idx[size_t(r)] != want && idx_bad++ < 5)
        ADD_FAILURE() << "pass " << n_passes << " row " << r << " pos " << pos << ": entry_idx " << idx[size_t(r)]
                      << ", want " << want;
      const auto row = entry.begin() + int64_t(r) * b.c;
      if (want < 0) {  // padding or no window closes: the entry row is not written
        untouched_bad += std::count_if(row, row + b.c, [](uint16_t v) { return v != kPoisonBf16; });
        continue;
      }
      Stream& st = streams[size_t(owner[size_t(r)])];
      const size_t at = size_t(pos - st.k.start) * b.c;
      solo_bad += !std::equal(row, row + b.c, st.solo.begin() + int64_t(at));
      std::copy(row, row + b.c, st.batched.begin() + int64_t(at));
      ++st.n_emitted[size_t(pos - st.k.start)];
    }
    // Every slot's ring, in the pass or not, used or never used, equals the contract's model.
    ring_bad += count_bit_differences(ring_a.download(), model_a) + count_bit_differences(ring_z.download(), model_z);
  }
  const std::string what = cat("compressor batch m=", b.m, " c=", b.c, " ring_rows=", rr);
  std::printf("%s: %zu sequences, %d passes, %d rows (%d padding)\n", what.c_str(), streams.size(), n_passes,
              n_rows_total, n_pad_total);
  EXPECT_EQ(idx_bad, 0) << what << ": wrong entry_idx";
  EXPECT_EQ(untouched_bad, 0) << what << ": entry rows of padding / non-closing tokens were written";
  EXPECT_EQ(solo_bad, 0) << what << ": entries differ from the single-sequence run (the batch changed the arithmetic)";
  EXPECT_EQ(ring_bad, 0) << what << ": ring floats differ from the contract (chunk's last ring_rows rows, others untouched)";

  // Each sequence: every window-closing token emitted exactly once, within the §5 budget of the
  // double reference, and the final ring holds its last ring_rows positions (the model says the same;
  // this states it directly for the sequence that ended last in each slot).
  const auto ring_a_final = ring_a.download(), ring_z_final = ring_z.download();
  for (size_t i = 0; i < streams.size(); ++i) {
    const Stream& st = streams[i];
    const Reference ref = reference(st.k, st.s);
    ASSERT_GE(ref.rows.size(), 2u) << "every sequence must cross several windows";
    std::vector<int> want_emitted(size_t(st.k.len), 0);
    std::vector<uint16_t> emitted;
    for (int row : ref.rows) {
      want_emitted[size_t(row)] = 1;
      emitted.insert(emitted.end(), st.batched.begin() + int64_t(row) * b.c, st.batched.begin() + int64_t(row + 1) * b.c);
    }
    EXPECT_EQ(st.n_emitted, want_emitted) << what << " sequence " << i << ": entries emitted not exactly once";
    expect_parity(cat(what, " seq ", i, " slot ", st.slot, " start ", st.k.start), from_bf16(emitted), ref.y, ref.budget);
    if (i == 0) continue;  // its slot was taken over by the last stream
    int64_t bad = 0;
    const int end = st.k.start + st.k.len;
    for (int q = std::max(end - rr, st.s.base); q < end; ++q)
      for (int col = 0; col < cw; ++col) {
        const size_t at = (size_t(st.slot) * rr + size_t(q % rr)) * cw + col;
        const float ea = st.s.value(q, col), ez = st.s.logit(st.k, q, col);
        bad += std::memcmp(&ring_a_final[at], &ea, sizeof(float)) != 0 ||
               std::memcmp(&ring_z_final[at], &ez, sizeof(float)) != 0;
      }
    EXPECT_EQ(bad, 0) << what << " sequence " << i << ": final ring is not its last " << rr << " positions";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CompressorBatchTest,
    ::testing::Values(BatchCase{4, 512, 5, 40, 300, kMargin},     // CSA main compressor (ring 8 + 4 rows)
                      BatchCase{4, 128, 6, 40, 300, 0},           // CSA indexer compressor, exact ring (8 rows)
                      BatchCase{128, 512, 4, 300, 700, kMargin}),  // HCA (ring 128 + 4 rows), 2–5 windows each
    [](const ::testing::TestParamInfo<BatchCase>& info) {
      return cat("m", info.param.m, "_c", info.param.c, "_seqs", info.param.n_seqs, "_margin", info.param.margin);
    });

// ---- Speculative rollback ----

// One feed of a rollback schedule: positions [pos0, pos0 + n) — the last `junk` of them rejected
// drafts, fed with rows of their own (other tokens than the accepted ones) — after which the
// sequence goes back `back` positions (model/forward.h: the next feed starts at pos0 + n − back).
struct Feed {
  int pos0 = 0, n = 0, back = 0, junk = 0;
  std::vector<float> junk_a, junk_z;  // [junk, cw]
};

class CompressorRollbackTest : public CudaOpTest, public ::testing::WithParamInterface<CompressorCase> {
 protected:
  // Streams `feeds` through the kernel, the sequence in a one-slot ring of ring_rows rows (poisoned
  // when fresh, else the ring_rows positions before k.start in the documented layout). Returns,
  // per streamed token, the entry of its latest emission ([len, c] bf16 bits, poison where none)
  // and counts wrong entry_idx values into idx_bad.
  std::vector<uint16_t> run(const CompressorCase& k, const SequenceData& s, int ring_rows,
                            const std::vector<Feed>& feeds, int64_t& idx_bad) {
    float poison;
    std::memcpy(&poison, &kPoisonF32, sizeof(float));
    std::vector<float> ring_a0(size_t(ring_rows) * s.cw, poison), ring_z0(ring_a0.size(), poison);
    if (k.start > 0)
      for (int q = k.start - ring_rows; q < k.start; ++q)
        for (int col = 0; col < s.cw; ++col) {
          const size_t at = size_t(q % ring_rows) * s.cw + col;
          ring_a0[at] = s.value(q, col);
          ring_z0[at] = s.logit(k, q, col);
        }
    DeviceBuffer<float> d_ring_a(ring_a0), d_ring_z(ring_z0), d_ape(s.ape), d_freq(s.inv_freq);
    DeviceBuffer<uint16_t> d_norm(s.norm);
    std::vector<uint16_t> latest(size_t(k.len) * k.c, kPoisonBf16);
    for (const Feed& f : feeds) {
      std::vector<float> a(size_t(f.n) * s.cw), z(a.size());
      std::vector<int32_t> pos(size_t(f.n));
      for (int i = 0; i < f.n; ++i) {
        const int q = f.pos0 + i, junk_row = i - (f.n - f.junk);
        pos[size_t(i)] = q;
        for (int col = 0; col < s.cw; ++col) {
          const size_t at = size_t(i) * s.cw + col;
          a[at] = junk_row >= 0 ? f.junk_a[size_t(junk_row) * s.cw + col] : s.a[size_t(q - s.base) * s.cw + col];
          z[at] = junk_row >= 0 ? f.junk_z[size_t(junk_row) * s.cw + col] : s.z[size_t(q - s.base) * s.cw + col];
        }
      }
      const std::vector<int32_t> slot(size_t(f.n), 0), first(size_t(f.n), 0), last(size_t(f.n), f.n - 1);
      DeviceBuffer<int32_t> d_pos(pos), d_slot(slot), d_first(first), d_last(last);
      DeviceBuffer<float> d_a(a), d_z(z);
      DeviceBuffer<uint16_t> d_entry(size_t(f.n) * k.c);
      DeviceBuffer<int32_t> d_idx(size_t(f.n));
      d_entry.fill_bytes(kPoisonByte);
      d_idx.fill_bytes(kIdxPoison);
      CompressorParams p;
      p.a = d_a.get();
      p.z = d_z.get();
      p.ape = d_ape.get();
      p.norm = bf16_ptr(d_norm);
      p.inv_freq = d_freq.get();
      p.rows = {d_pos.get(), d_slot.get(), d_first.get(), d_last.get()};
      p.ring_a = d_ring_a.get();
      p.ring_z = d_ring_z.get();
      p.entry = bf16_ptr(d_entry);
      p.entry_idx = d_idx.get();
      p.T = f.n;
      p.m = k.m;
      p.c = k.c;
      p.coff = s.coff;
      p.rope_dim = kRopeDim;
      p.eps = kEps;
      p.ring_rows = ring_rows;
      launch_compressor(p, nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      const auto entry = d_entry.download();
      const auto idx = d_idx.download();
      for (int i = 0; i < f.n; ++i) {
        const int q = f.pos0 + i;
        const int32_t want = (q + 1) % k.m == 0 ? (q + 1) / k.m - 1 : -1;  // §5.4
        idx_bad += idx[size_t(i)] != want;
        if (want >= 0)
          std::copy(entry.begin() + int64_t(i) * k.c, entry.begin() + int64_t(i + 1) * k.c,
                    latest.begin() + int64_t(q - k.start) * k.c);
      }
    }
    return latest;
  }
};

// A sequence streamed in random feeds (decode tokens, verify chunks of up to kMargin + 1, long
// prefills), a third of them followed by a rollback of up to kMargin positions behind its
// furthest feed (the CPU backend's floor rule, cpu/sequence_state.h), the rejected positions
// of the feed carrying other tokens' rows; then it resumes from the rollback target with the
// accepted rows. Each window-closing token's latest entry must equal, bit for bit, the entry of
// the accepted tokens fed alone in one chunk (the same FP32 operations in the same order: the ring
// and the chunk hold the same values), which is checked against the §5 reference. One rollback is
// forced: kMargin drafts rejected right after token P closes a window, P ≥ coff·m − 1. The drafts
// P … P + kMargin − 1 land on the exact ring's rows of positions P − coff·m … P + kMargin − 1 −
// coff·m, three of which (P + 1 − coff·m …) the re-fed window at P reads; so the same schedule on
// an exact ring (ring_rows = coff·m) must get some entry wrong — the margin is what makes
// rollback exact, and this test sees it.
TEST_P(CompressorRollbackTest, RolledBackStreamEmitsWhatTheAcceptedTokensEmit) {
  const CompressorCase k = GetParam();
  SequenceData s;
  s.coff = k.m == 4 ? 2 : 1;  // §5: overlapping windows only at m = 4
  s.cw = s.coff * k.c;
  const int exact_rows = s.coff * k.m;
  s.ring_rows = exact_rows + k.margin;
  ASSERT_GE(k.margin, kMargin) << "a ring that cannot take back kMargin positions";
  ASSERT_TRUE(k.start == 0 || k.start >= s.ring_rows);
  s.base = k.start == 0 ? 0 : k.start - s.ring_rows;
  const int n_rows = k.start + k.len - s.base, end = k.start + k.len;
  auto logits = [&](size_t n) {  // logits near 100 on every 17th channel: the max shift matters
    std::vector<float> z = normals(n * s.cw, 2.0f);
    for (size_t r = 0; r < n; ++r)
      for (int col = 0; col < s.cw; col += 17) z[r * s.cw + col] += 100.0f;
    return z;
  };
  s.a = normals(size_t(n_rows) * s.cw);
  s.z = logits(size_t(n_rows));
  s.ape = normals(size_t(k.m) * s.cw);
  s.norm = to_bf16(normals(size_t(k.c), 0.5f));
  s.inv_freq = rope_inv_freq(compress_table(), kRopeDim);

  // The schedule. Before the forced rollback, feeds stop at force_at so that one starts there.
  int force_at = std::max(k.start, exact_rows - 1) + uniform_int(0, 2 * exact_rows);
  while ((force_at + 1) % k.m != 0) ++force_at;
  ASSERT_LT(force_at + kMargin, end) << "the case must be long enough for the forced rollback";
  std::vector<Feed> feeds;
  int next = k.start, furthest = k.start, n_back = 0, n_refed = 0;
  bool forced = false;
  while (next < end) {
    Feed f;
    f.pos0 = next;
    if (!forced && next == force_at) {
      f.n = f.back = kMargin;
      forced = true;
    } else {
      const int kind = uniform_int(0, 9);
      f.n = kind < 4 ? 1 : kind < 7 ? uniform_int(2, kMargin + 1) : uniform_int(2, 2 * s.ring_rows + 3);
      f.n = std::min(f.n, (forced ? end : force_at) - next);
      const int lowest = std::max(k.start, std::max(furthest, next + f.n) - kMargin);  // the rollback floor
      f.back = uniform_int(0, 2) == 0 ? uniform_int(1, next + f.n - lowest) : 0;
    }
    furthest = std::max(furthest, next + f.n);
    f.junk = std::min(f.back, f.n);
    f.junk_a = normals(size_t(f.junk) * s.cw);
    f.junk_z = logits(size_t(f.junk));
    next += f.n - f.back;
    n_back += f.back > 0;
    n_refed += f.back;
    feeds.push_back(std::move(f));
  }

  std::vector<Feed> accepted_only(1);
  accepted_only[0].pos0 = k.start;
  accepted_only[0].n = k.len;
  int64_t idx_bad = 0;
  const auto accepted = run(k, s, s.ring_rows, accepted_only, idx_bad);
  const auto rolled = run(k, s, s.ring_rows, feeds, idx_bad);
  const auto exact = run(k, s, exact_rows, feeds, idx_bad);

  const Reference ref = reference(k, s);
  ASSERT_GE(ref.rows.size(), 2u) << "the case must cross several windows";
  const std::string what = cat("compressor rollback m=", k.m, " c=", k.c, " start=", k.start);
  std::printf("%s: %zu feeds, %d rollbacks, %d positions re-fed, forced at %d\n", what.c_str(), feeds.size(), n_back,
              n_refed, force_at);
  std::vector<uint16_t> emitted;
  int64_t rolled_bad = 0, exact_bad = 0;
  for (int row : ref.rows) {
    const auto at = accepted.begin() + int64_t(row) * k.c;
    emitted.insert(emitted.end(), at, at + k.c);
    rolled_bad += !std::equal(at, at + k.c, rolled.begin() + int64_t(row) * k.c);
    exact_bad += !std::equal(at, at + k.c, exact.begin() + int64_t(row) * k.c);
  }
  expect_parity(what + " accepted tokens alone", from_bf16(emitted), ref.y, ref.budget);
  EXPECT_EQ(idx_bad, 0) << what << ": wrong entry_idx";
  EXPECT_EQ(rolled_bad, 0) << what << ": entries after a rollback differ from the accepted tokens' (ring_rows "
                           << s.ring_rows << ")";
  EXPECT_GT(exact_bad, 0) << what << ": the exact ring (" << exact_rows
                          << " rows) survived the forced rollback, so this test cannot see the margin";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CompressorRollbackTest,
    ::testing::Values(CompressorCase{4, 512, 300, 0, kMargin},          // CSA main compressor, fresh sequence
                      CompressorCase{4, 128, 101, 1000001, kMargin},    // CSA indexer compressor, resumed
                      CompressorCase{128, 512, 600, 0, kMargin},        // HCA, 4 windows + a partial one
                      CompressorCase{128, 512, 300, 1000037, kMargin}),  // HCA resumed mid-window
    [](const ::testing::TestParamInfo<CompressorCase>& info) {
      return cat("m", info.param.m, "_c", info.param.c, "_len", info.param.len, "_start", info.param.start);
    });

// The launcher refuses a ring shorter than the positions a window pools, before anything touches
// the device (host pointers suffice: the checks fire first). Host-only: runs without a GPU.
TEST(CompressorArgs, RejectsARingShorterThanItsWindows) {
  std::vector<float> f(64);
  std::vector<int32_t> rows(1, 0), idx(1);
  std::vector<__nv_bfloat16> bf(64);
  for (const int coff : {1, 2}) {
    CompressorParams p;
    p.a = p.z = p.ape = p.inv_freq = f.data();
    p.norm = bf.data();
    p.rows = {rows.data(), rows.data(), rows.data(), rows.data()};
    p.ring_a = p.ring_z = f.data();
    p.entry = bf.data();
    p.entry_idx = idx.data();
    p.T = 1;
    p.m = 4;
    p.c = 8;
    p.coff = coff;
    p.rope_dim = 4;
    p.ring_rows = coff * p.m - 1;
    EXPECT_THROW(launch_compressor(p, nullptr), InternalError) << "coff " << coff;
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
