// Tests of kernels/moe_grouped_gemm.cu (grouped FP4 expert GEMM over a dispatch plan):
//  - host emulation, no GPU needed: one warp's K group through the kernel's own layout functions
//    (loads, quad transpose, E2M1 -> F16, NVFP4 scale fold, activation staging) and the PTX
//    m16n8k16 fragment layout, against direct sums; F16 exactness of every operand, exhaustively;
//    the work-item decode covering every (row, weight tile) once;
//  - on the GPU: parity with a double product of the scalar dequantisation (model/quant.h) on
//    shapes that hurt, untouched rows left poisoned, and batch invariance bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "cuda/kernels/moe_dispatch.cuh"
#include "cuda/kernels/moe_grouped_gemm.cuh"
#include "cuda/kernels/moe_grouped_wgmma.cuh"
#include "model/quant.h"
#include "fp8_accumulator_model.h"
#include "moe_fixtures.h"
#include "op_parity.h"
#include "support/seed.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

namespace L = moe_gemm_layout;
using Fmt = ExpertWeightFormat;

// ------------------------------------------------------------------------------------------------
// Host emulation (plain tests: they run without a GPU).

double half_value(uint32_t word, int half) { return f16_to_f32(uint16_t(half ? word >> 16 : word & 0xffffu)); }

// E2M1 nibble -> its value (§11.3).
double e2m1_value(uint32_t nibble) { return e2m1_to_f32(uint8_t(nibble & 0xfu)); }

// True when v is exactly an F16 value (finite): |v| <= 65504, a multiple of 2^-24, at most 11
// significant bits.
bool f16_exact(double v) {
  if (v == 0) return true;
  const double a = std::fabs(v);
  if (a > 65504.0) return false;
  const double scaled = a * std::ldexp(1.0, 24);  // integer when a multiple of 2^-24
  if (scaled != std::floor(scaled)) return false;
  int e = 0;
  std::frexp(a, &e);                                 // a in [2^(e-1), 2^e)
  const double ulp = std::ldexp(1.0, std::max(e - 11, -24));
  return std::fmod(a, ulp) == 0.0;
}

// One m16n8k16 step in double from the 32 lanes' fragment values, PTX ISA layout (g = lane/4,
// q = lane%4): a[lane] = {A[g][2q..2q+1], A[g+8][2q..2q+1], A[g][2q+8..2q+9], A[g+8][2q+8..2q+9]},
// b[lane] = {B[2q..2q+1][g], B[2q+8..2q+9][g]}, d[lane] = {D[g][2q], D[g][2q+1], D[g+8][2q],
// D[g+8][2q+1]}.
void emulate_mma(const double (&a)[32][4][2], const double (&b)[32][2][2], double (&d)[32][4]) {
  double A[16][16] = {}, B[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, q = lane % 4;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * q + h] = a[lane][0][h];
      A[g + 8][2 * q + h] = a[lane][1][h];
      A[g][2 * q + 8 + h] = a[lane][2][h];
      A[g + 8][2 * q + 8 + h] = a[lane][3][h];
      B[2 * q + h][g] = b[lane][0][h];
      B[2 * q + 8 + h][g] = b[lane][1][h];
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, q = lane % 4;
    for (int c = 0; c < 4; ++c) {
      const int row = g + 8 * (c >> 1), col = 2 * q + (c & 1);
      for (int k = 0; k < 16; ++k) d[lane][c] += A[row][k] * B[k][col];
    }
  }
}

// One K group (128 columns) of one warp: 16 weight rows × 8 tokens, MXFP4 or NVFP4, emulated
// lane by lane with the kernel's layout functions; every block's MMA result must equal the
// direct sum over the block's 32 columns (exact in double: 32 products of at most 6 significant
// bits each over a range of under 40 binades).
void check_warp_group(Fmt fmt, std::mt19937_64& rng) {
  const bool nv = fmt == Fmt::kNVFP4;
  std::uniform_int_distribution<int> byte(0, 255);
  auto e4m3_byte = [&] {
    int b;
    do b = byte(rng); while ((b & 0x7f) == 0x7f);  // not NaN
    return uint8_t(b);
  };
  uint8_t w[16][64], ws[16][8], x[8][128];
  for (auto& row : w)
    for (auto& b : row) b = uint8_t(byte(rng));
  for (auto& row : ws)
    for (auto& b : row) b = e4m3_byte();  // NVFP4 scales (MXFP4 scales are applied after the MMA)
  for (auto& row : x)
    for (auto& b : row) b = e4m3_byte();
  auto w_value = [&](int row, int col) {  // e2m1 · 2^-14 (· E4M3 scale of the 16 columns)
    const uint32_t nib = (w[row][col / 2] >> (4 * (col & 1))) & 0xfu;
    const double v = e2m1_value(nib) * std::ldexp(1.0, -14);
    return nv ? v * e4m3_to_f32(ws[row][col / 16]) : v;
  };

  // Loads and the quad transpose: lane q of rows g, g+8 loads bytes [16q, 16q + 16) of the group.
  uint32_t wt[32][2][4];
  for (int lane = 0; lane < 32; ++lane)
    for (int r = 0; r < 2; ++r)
      std::memcpy(wt[lane][r], &w[lane / 4 + 8 * r][16 * (lane % 4)], 16);
  for (int round = 0; round < 2; ++round)
    for (int r = 0; r < 2; ++r) {
      uint32_t send[32][2];
      for (int lane = 0; lane < 32; ++lane) L::quad_send(wt[lane][r], lane % 4, round, send[lane]);
      for (int lane = 0; lane < 32; ++lane) L::quad_recv(wt[lane][r], lane % 4, round, send[lane ^ (1 << round)]);
    }
  // Staged activations (values): run c of token t at positions x_position(i) of columns 8c + i.
  double staged[8][128];
  for (int t = 0; t < 8; ++t)
    for (int c = 0; c < 16; ++c) {
      uint32_t lo, hi, pairs[4];
      std::memcpy(&lo, &x[t][8 * c], 4);
      std::memcpy(&hi, &x[t][8 * c + 4], 4);
      L::run_pairs(lo, hi, pairs);
      for (int word = 0; word < 4; ++word)
        for (int h = 0; h < 2; ++h) staged[t][8 * c + 2 * word + h] = e4m3_to_f32(uint8_t(pairs[word] >> (8 * h)));
    }
  for (int t = 0; t < 8; ++t)  // the permutation itself: x_position maps column 8c + i there
    for (int i = 0; i < 128; ++i)
      ASSERT_EQ(staged[t][(i & ~7) + L::x_position(i & 7)], double(e4m3_to_f32(x[t][i]))) << "run order, column " << i;

  for (int b = 0; b < L::kBlocks; ++b) {
    double d[32][4] = {};
    for (int s = 0; s < 2; ++s) {
      double a[32][4][2], bf[32][2][2];
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, q = lane % 4;
        uint32_t lo[2][2], hi[2][2];
        for (int r = 0; r < 2; ++r) {
          L::e2m1_word_to_f16x2(wt[lane][r][b], lo[r], hi[r]);
          const double scale = nv ? e4m3_to_f32(ws[g + 8 * r][L::nv_scale_byte(b, q)]) : 1.0;
          for (int h = 0; h < 2; ++h) {
            const double vlo = half_value(lo[r][s], h) * scale, vhi = half_value(hi[r][s], h) * scale;
            ASSERT_TRUE(f16_exact(vlo) && f16_exact(vhi)) << "A operand not exact in F16";
            a[lane][r][h] = vlo;      // registers 0 (row g) and 1 (row g+8): K slots 2q, 2q+1
            a[lane][2 + r][h] = vhi;  // registers 2, 3: K slots 2q+8, 2q+9
          }
        }
        // B: the 16-byte read at column 32b + 8q of token g; words 2s, 2s+1.
        const double* run = &staged[g][32 * b + 8 * q];
        for (int reg = 0; reg < 2; ++reg)
          for (int h = 0; h < 2; ++h) bf[lane][reg][h] = run[2 * (2 * s + reg) + h];
      }
      emulate_mma(a, bf, d);
    }
    for (int lane = 0; lane < 32; ++lane)
      for (int c = 0; c < 4; ++c) {
        const int row = lane / 4 + 8 * (c >> 1), tok = 2 * (lane % 4) + (c & 1);
        double direct = 0;
        for (int col = 32 * b; col < 32 * b + 32; ++col) direct += w_value(row, col) * double(e4m3_to_f32(x[tok][col]));
        ASSERT_EQ(d[lane][c], direct) << (nv ? "nvfp4" : "mxfp4") << " block " << b << " lane " << lane << " c" << c;
      }
  }
}

TEST(MoeGemmLayout, WarpGroupEmulationMatchesDirectSums) {
  std::mt19937_64 rng(dsv4::test::seed_for_this_test());
  for (int trial = 0; trial < 20; ++trial) {
    check_warp_group(Fmt::kMXFP4, rng);
    check_warp_group(Fmt::kNVFP4, rng);
    if (HasFatalFailure()) return;
  }
}

// Every operand the kernel hands the F16 MMA is an F16 value, for every code: E2M1 patterns
// (· 2^-14), E2M1 × every finite E4M3 scale (NVFP4, · 2^-14), every finite E4M3 activation.
// The decode launches' transpose through shared memory (trans_slot) hands every lane the same
// words as the shuffles (random words, fresh each run), and neither its stores nor its 16-byte
// reads meet a bank conflict: each store instruction (fixed j) covers 32 banks, each
// quarter-warp of reads (8 lanes × 4 words) too.
TEST(MoeGemmLayout, SharedMemoryTransposeEqualsShuffles) {
  std::mt19937_64 rng(dsv4::test::seed_for_this_test());
  uint32_t wt[32][4], shuffled[32][4];
  for (auto& lane : wt)
    for (uint32_t& word : lane) word = uint32_t(rng());
  std::memcpy(shuffled, wt, sizeof wt);
  for (int round = 0; round < 2; ++round) {
    uint32_t send[32][2];
    for (int lane = 0; lane < 32; ++lane) L::quad_send(shuffled[lane], lane % 4, round, send[lane]);
    for (int lane = 0; lane < 32; ++lane) L::quad_recv(shuffled[lane], lane % 4, round, send[lane ^ (1 << round)]);
  }
  std::vector<int64_t> smem(32 * 4, -1);  // one row's 32 slots of four words
  for (int j = 0; j < 4; ++j) {
    std::set<int> banks;
    for (int lane = 0; lane < 32; ++lane) {
      const int word = L::trans_slot(lane / 4, j) * 4 + lane % 4;
      ASSERT_EQ(smem[size_t(word)], -1) << "two lanes store to word " << word;
      smem[size_t(word)] = wt[lane][j];
      banks.insert(word % 32);
    }
    EXPECT_EQ(banks.size(), 32u) << "store j=" << j;
  }
  for (int quarter = 0; quarter < 4; ++quarter) {
    std::set<int> banks;
    for (int lane = 8 * quarter; lane < 8 * quarter + 8; ++lane)
      for (int b = 0; b < 4; ++b) banks.insert((L::trans_slot(lane / 4, lane % 4) * 4 + b) % 32);
    EXPECT_EQ(banks.size(), 32u) << "reads of quarter-warp " << quarter;
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int b = 0; b < 4; ++b)
      ASSERT_EQ(smem[size_t(L::trans_slot(lane / 4, lane % 4) * 4 + b)], int64_t(shuffled[lane][b]))
          << "lane " << lane << " word " << b;
}

TEST(MoeGemmLayout, F16HoldsEveryOperandExactly) {
  for (uint32_t nib = 0; nib < 16; ++nib) {
    uint32_t lo[2], hi[2];
    L::e2m1_word_to_f16x2(nib * 0x11111111u, lo, hi);  // the code in all 8 nibbles
    for (int s = 0; s < 2; ++s)
      for (int h = 0; h < 2; ++h) {
        EXPECT_EQ(half_value(lo[s], h), e2m1_value(nib) * std::ldexp(1.0, -14)) << nib;
        EXPECT_EQ(half_value(hi[s], h), e2m1_value(nib) * std::ldexp(1.0, -14)) << nib;
      }
    for (int sb = 0; sb < 256; ++sb) {
      if ((sb & 0x7f) == 0x7f) continue;
      EXPECT_TRUE(f16_exact(e2m1_value(nib) * std::ldexp(1.0, -14) * e4m3_to_f32(uint8_t(sb))))
          << "e2m1 " << nib << " × e4m3 0x" << std::hex << sb;
    }
  }
  for (int xb = 0; xb < 256; ++xb) {
    if ((xb & 0x7f) != 0x7f) {
      EXPECT_TRUE(f16_exact(e4m3_to_f32(uint8_t(xb)))) << xb;
    }
  }
  // Nibbles land in their own slots: nibble i of a word alone.
  for (int i = 0; i < 8; ++i) {
    uint32_t lo[2], hi[2];
    L::e2m1_word_to_f16x2(0x7u << (4 * i), lo, hi);  // code 7 = 6.0 at nibble i, zeros elsewhere
    const int s = i / 4, j = i % 4;                   // lo[s] = (4s, 4s+2), hi[s] = (4s+1, 4s+3)
    for (int ss = 0; ss < 2; ++ss)
      for (int h = 0; h < 2; ++h) {
        const bool here_lo = ss == s && (j & 1) == 0 && h == j / 2, here_hi = ss == s && (j & 1) == 1 && h == j / 2;
        EXPECT_EQ(half_value(lo[ss], h), here_lo ? 6.0 * std::ldexp(1.0, -14) : 0.0) << i;
        EXPECT_EQ(half_value(hi[ss], h), here_hi ? 6.0 * std::ldexp(1.0, -14) : 0.0) << i;
      }
  }
}

// The MXFP4 scale fast form: the vote's test flags exactly the words holding a 0x00 or 0xFF byte
// (every value of the special byte's position, the other bytes random), and the shifted bytes
// are the scales' values wherever the test passes.
// The wgmma kernel's A-register bytes (moe_grouped_wgmma.cuh): for every 16-bit pattern in
// either half of a word (the other half random) and every depth, the four bytes are the four
// nibbles in column order, each the E4M3 byte of the nibble's E2M1 value·2^(6 − depth) rounded to
// nearest even (the host quantiser), given the depth's table made the same way; exact to depth
// 14, and ±0 at the last depth.
TEST(MoeWgmmaLayout, E2m1HalfToE4m3FollowsTheDepthsTable) {
  namespace W = moe_wgmma_layout;
  std::mt19937_64 rng(dsv4::test::seed_for_this_test());
  for (int d = 0; d < W::kFoldDepths; ++d) {
    uint32_t table[2] = {0, 0};
    for (int c = 0; c < 8; ++c)
      table[c / 4] |= uint32_t(f32_to_e4m3(std::ldexp(float(e2m1_value(uint8_t(c))), W::kFoldTop - d))) << (8 * (c % 4));
    for (int h = 0; h < 2; ++h)
      for (uint32_t v = 0; v < 0x10000u; ++v) {
        const uint32_t other = uint32_t(rng()) & 0xffffu;
        const uint32_t w = h == 0 ? (v | (other << 16)) : ((v << 16) | other);
        const uint32_t bytes = W::e2m1x4_to_e4m3x4(w, h, table[0], table[1]);
        for (int i = 0; i < 4; ++i) {
          const double value = e2m1_value(uint8_t(v >> (4 * i)));
          const double got = std::ldexp(double(e4m3_to_f32(uint8_t(bytes >> (8 * i)))), d - W::kFoldTop);
          ASSERT_EQ(got, std::ldexp(double(round_e4m3(std::ldexp(float(value), W::kFoldTop - d))), d - W::kFoldTop))
              << "depth " << d << " half " << h << " pattern " << v << " nibble " << i;
          if (d <= 14) {
            ASSERT_EQ(got, value) << "depth " << d << " must be exact";
          }
          if (d == W::kFoldDepths - 1) {
            ASSERT_EQ(got, 0.0) << "the last depth rounds every code to zero";
          }
          ASSERT_EQ(std::signbit(got), (v >> (4 * i + 3)) & 1u) << "sign of nibble " << i;
        }
      }
  }
}

// The fold's depths: for random scale words (and words with equal or extreme bytes), top is the
// largest byte and depth b is top − byte b, clamped to the last table entry.
TEST(MoeWgmmaLayout, FoldDepthsAreDistancesBelowTheLargestScale) {
  namespace W = moe_wgmma_layout;
  std::mt19937_64 rng(dsv4::test::seed_for_this_test());
  std::vector<uint32_t> words = {0u, 0xffffffffu, 0x00ff0000u, 0x7f7f7f7fu, 0x80007f01u};
  for (int i = 0; i < 100000; ++i) words.push_back(uint32_t(rng()));
  for (const uint32_t w : words) {
    uint32_t top = 0;
    const uint32_t depths = W::fold_depths(w, top);
    uint32_t want_top = 0;
    for (int b = 0; b < 4; ++b) want_top = std::max(want_top, (w >> (8 * b)) & 0xffu);
    ASSERT_EQ(top, want_top) << std::hex << w;
    for (int b = 0; b < 4; ++b)
      ASSERT_EQ((depths >> (8 * b)) & 0xffu, std::min<uint32_t>(want_top - ((w >> (8 * b)) & 0xffu), W::kFoldDepths - 1))
          << std::hex << w << " block " << b;
  }
}

// The 128-byte swizzle (swizzle128.cuh): the 8 chunks of a token row land on 8 distinct chunk
// slots of that row, and the 8 rows of an atom put each chunk index on 8 distinct slots (the bank
// spread wgmma's reads rely on).
TEST(MoeWgmmaLayout, SwizzleIsAPermutationPerRowAndPerChunk) {
  for (int t = 0; t < 16; ++t) {
    std::set<int> slots;
    for (int c = 0; c < 8; ++c) {
      const int off = swizzled_chunk(t, c);
      ASSERT_EQ(off / 128, t);
      slots.insert(off % 128 / 16);
    }
    EXPECT_EQ(slots.size(), 8u);
  }
  for (int c = 0; c < 8; ++c) {
    std::set<int> slots;
    for (int t = 0; t < 8; ++t) slots.insert(swizzled_chunk(t, c) % 128 / 16);
    EXPECT_EQ(slots.size(), 8u);
  }
}

TEST(MoeGemmLayout, Ue8m0FastFormAndItsTest) {
  std::mt19937_64 rng(dsv4::test::seed_for_this_test());
  const auto special = [](uint32_t w) {
    for (int b = 0; b < 4; ++b)
      if (((w >> (8 * b)) & 0xffu) == 0 || ((w >> (8 * b)) & 0xffu) == 0xffu) return true;
    return false;
  };
  for (int pos = 0; pos < 4; ++pos)
    for (uint32_t byte = 0; byte < 256; ++byte)
      for (int trial = 0; trial < 64; ++trial) {
        uint32_t w = uint32_t(rng());
        if (trial % 2) w = (w & 0x7f7f7f7fu) | 0x01010101u;  // the other bytes plain (1..127)
        w = (w & ~(0xffu << (8 * pos))) | (byte << (8 * pos));
        ASSERT_EQ(L::ue8m0_any_special(w) != 0, special(w)) << std::hex << w;
        if (special(w)) continue;
        for (int b = 0; b < 4; ++b) {
          float v = 0;
          const uint32_t bits = L::ue8m0_plain_bits(w, b);
          std::memcpy(&v, &bits, 4);
          ASSERT_EQ(double(v), double(e8m0_to_f32(uint8_t(w >> (8 * b))))) << std::hex << w << " byte " << b;
        }
      }
}

// The items a launch walks cover every (grouped row, tensor, weight tile) exactly once, inside
// the right expert's rows, for empty, small and large experts.
TEST(MoeGemmLayout, ItemDecodeCoversEveryRowOnce) {
  std::mt19937_64 rng(dsv4::test::seed_for_this_test());
  for (const int E : {1, 16, 256, 384})
    for (const int R : {8, 64})
      for (const int n_mats : {1, 2}) {
        const int tiles = 3, tile_rows = 128;
        std::vector<int> count(static_cast<size_t>(E)), offs(size_t(E) + 1, 0), start(size_t(E) + 1, 0);
        for (int e = 0; e < E; ++e) {
          const int kind = int(rng() % 4);  // empty, one row, a few, many
          count[size_t(e)] = kind == 0 ? 0 : kind == 1 ? 1 : kind == 2 ? int(rng() % 9) : int(rng() % 300);
          offs[size_t(e) + 1] = offs[size_t(e)] + count[size_t(e)];
          start[size_t(e) + 1] = start[size_t(e)] + (count[size_t(e)] + R - 1) / R;
        }
        const int n_sel = offs[size_t(E)], n_chunks = start[size_t(E)];
        std::vector<int> seen(size_t(n_sel) * n_mats * tiles, 0);
        for (int item = 0; item < n_chunks * tiles * n_mats; ++item) {
          const L::GroupedItem it = L::decode_item(item, n_chunks, start.data(), E, offs.data(), R, tiles, tile_rows);
          ASSERT_TRUE(it.expert >= 0 && it.expert < E && count[size_t(it.expert)] > 0) << "item " << item;
          ASSERT_GE(it.j0, offs[size_t(it.expert)]);
          ASSERT_TRUE(it.n_tok >= 1 && it.n_tok <= R && it.j0 + it.n_tok <= offs[size_t(it.expert) + 1]);
          ASSERT_TRUE(it.mat >= 0 && it.mat < n_mats && it.n0 % tile_rows == 0 && it.n0 / tile_rows < tiles);
          for (int j = it.j0; j < it.j0 + it.n_tok; ++j) ++seen[(size_t(j) * n_mats + it.mat) * tiles + it.n0 / tile_rows];
        }
        for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "E=" << E << " R=" << R << " at " << i;
      }
}

// ------------------------------------------------------------------------------------------------
// GPU: parity with the scalar dequantisation, and batch invariance.

class MoeGroupedGemmTest : public CudaOpTest {
 protected:
  // Every E2M1 code appears (raw random bytes). MXFP4 scales spread ±6 binades around 1; NVFP4
  // scales over the whole finite E4M3 grid with a per-expert global ~ amax/(6·448).
  void make_tensor(ExpertTensor& t, Fmt fmt, int E, int N, int K) {
    const auto global = [&] { return uniform(0x1p-12f, 0x1p-6f); };
    if (fmt == Fmt::kNVFP4)
      t.make(fmt, E, N, K, rng(), ExpertTensor::any_e4m3(), global);
    else
      t.make(fmt, E, N, K, rng(), ExpertTensor::ue8m0_around(0, 6), global);
  }
};

// A routing: [T, k] picks (−1: invalid) and their weights, plus how many rows are real.
struct Routing {
  int T = 0, k = 0, n_real = 0;
  std::vector<int32_t> idx;
  std::vector<float> wt;
};

// The device plan for a routing (moe_dispatch.cuh), in buffers owned by the caller.
struct DevicePlan {
  DeviceArena arena;
  MoeDispatchPlan plan;
  DeviceBuffer<int32_t> idx, n_real;
  DeviceBuffer<float> wt;
  DevicePlan(const Routing& r, int E) : arena(bytes(r, E)) {
    plan = MoeDispatchPlan::carve(arena, E, std::max(r.T, 1), r.k);
    idx = DeviceBuffer<int32_t>(r.idx);
    wt = DeviceBuffer<float>(r.wt);
    n_real = DeviceBuffer<int32_t>(std::vector<int32_t>{r.n_real});
    MoeDispatchParams p;
    p.expert_idx = idx.get();
    p.expert_weight = wt.get();
    p.n_real = n_real.get();
    p.T = r.T;
    p.plan = plan;
    launch_moe_dispatch(p, nullptr);
  }
  static size_t bytes(const Routing& r, int E) {
    DeviceArena counting;
    MoeDispatchPlan::carve(counting, E, std::max(r.T, 1), r.k);
    return counting.used();
  }
};

// Routing kinds of the shape table.
enum class Pick { kRandom, kOnePerExpert, kAllOnOne, kFewExperts };
Routing make_routing(std::mt19937_64& rng, int T, int k, int E, Pick kind, int n_real) {
  Routing r;
  r.T = T;
  r.k = k;
  r.n_real = n_real;
  r.idx.resize(size_t(T) * k);
  r.wt.resize(size_t(T) * k);
  const int few[3] = {1 % E, 3 % E, 7 % E};
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < k; ++i) {
      int32_t& e = r.idx[size_t(t) * k + i];
      switch (kind) {
        case Pick::kOnePerExpert: e = (t * k + i) % E; break;
        case Pick::kAllOnOne: e = 5 % E; break;
        case Pick::kFewExperts: e = few[(t + i) % 3]; break;
        case Pick::kRandom: {
          bool again = true;  // distinct picks per row, as top-k gives
          while (again) {
            e = int32_t(rng() % uint64_t(E));
            again = std::find(&r.idx[size_t(t) * k], &e, e) != &e;
          }
        } break;
      }
      r.wt[size_t(t) * k + i] = float(rng() % 1000) / 1000.0f;
    }
  return r;
}

// MXFP4 scale bytes of a case: kNarrow, ±6 binades around 1 (make_tensor); kSomeZero, one byte in
// 16 is 0 (2^-127), so nearly every warp's K group takes the F16 kernel's select form of the
// scales instead of the fast one, and the FP8 kernel folds those blocks to zero; kWide, ±10
// binades, so the FP8 kernel rounds the blocks 15–20 binades below their group's top.
enum class Scales { kNarrow, kSomeZero, kWide };

struct GroupedCase {
  const char* name;
  Fmt fmt;
  int E, N, K, T, k;
  Pick pick;
  int n_real;       // < 0: all T
  int n_mats;
  bool out_f32;
  int check_every;  // compare every n-th grouped row with the reference (big shapes), all rows otherwise
  Scales scales;
};

class MoeGroupedGemmParity : public MoeGroupedGemmTest, public ::testing::WithParamInterface<GroupedCase> {};

TEST_P(MoeGroupedGemmParity, MatchesScalarDequantisation) {
  const GroupedCase& c = GetParam();
  const bool nv = c.fmt == Fmt::kNVFP4;
  const int n_real = c.n_real < 0 ? c.T : c.n_real;
  ExpertTensor wt[2];
  for (int m = 0; m < c.n_mats; ++m) {
    if (c.scales == Scales::kSomeZero)
      wt[m].make(c.fmt, c.E, c.N, c.K, rng(), [](uint8_t b) { return b % 16 == 0 ? uint8_t(0) : uint8_t(121 + b % 13); },
                 [] { return 1.0f; });
    else if (c.scales == Scales::kWide)
      wt[m].make(c.fmt, c.E, c.N, c.K, rng(), ExpertTensor::ue8m0_around(0, 10), [] { return 1.0f; });
    else
      make_tensor(wt[m], c.fmt, c.E, c.N, c.K);
  }
  const Routing r = make_routing(rng, c.T, c.k, c.E, c.pick, n_real);
  const HostPlan hp = host_plan(r.idx, r.T, r.k, r.n_real, c.E);
  const int n_sel = hp.n_sel(), max_sel = c.T * c.k;
  DevicePlan dp(r, c.E);
  const auto x = random_e4m3(size_t(c.T) * c.K), xs = random_e8m0(size_t(c.T) * (c.K / kActBlockSize), 8);
  DeviceBuffer<uint8_t> d_x(x), d_xs(xs);
  DeviceBuffer<float> d_y32[2];
  DeviceBuffer<uint16_t> d_y16[2];
  // Every case through the kernel the default launch takes; MXFP4 cases also through the FP8 wgmma
  // kernel (MoeGroupedParams::fp8_rows), whatever their shape: the rows of a long prompt chunk take
  // it however few of them an expert gets.
  for (const bool fp8 : {false, true}) {
    if (fp8 && nv) continue;
    MoeGroupedParams p;
    p.format = c.fmt;
    p.n_mats = c.n_mats;
    for (int m = 0; m < c.n_mats; ++m) {
      d_y32[m] = DeviceBuffer<float>(c.out_f32 ? size_t(max_sel) * c.N : 0);
      d_y16[m] = DeviceBuffer<uint16_t>(c.out_f32 ? 0 : size_t(max_sel) * c.N);
      d_y32[m].fill_bytes(kPoisonByte);
      d_y16[m].fill_bytes(kPoisonByte);
      p.w[m] = wt[m].dw.get();
      p.w_scale[m] = wt[m].ds.get();
      p.global_scale[m] = nv ? wt[m].dgs.get() : nullptr;
      p.y[m] = c.out_f32 ? static_cast<void*>(d_y32[m].get()) : static_cast<void*>(d_y16[m].get());
    }
    p.x = d_x.get();
    p.x_scale = d_xs.get();
    p.x_row = dp.plan.sel_row;
    p.offsets = dp.plan.offsets;
    p.E = c.E;
    p.N = c.N;
    p.K = c.K;
    p.max_sel = max_sel;
    p.out_f32 = c.out_f32;
    p.fp8_rows = fp8;
    launch_moe_grouped_gemm(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());

    // The device plan is the host plan (moe_dispatch's own test covers it in depth).
    std::vector<int32_t> d_off(size_t(c.E) + 1);
    DSV4_CUDA_CHECK(cudaMemcpy(d_off.data(), dp.plan.offsets, d_off.size() * 4, cudaMemcpyDeviceToHost));
    ASSERT_EQ(d_off, hp.offsets) << "device plan offsets";

    // Budget (u = 2^-24, S = Σ|w·x| of the output), by the kernel the launch took:
    //  F16 mma.sync (moe_grouped_gemm.cuh's arithmetic): one m16n8k16 step D = C + Σ16 a·b:
    //  products exact, at worst one truncation of 2u per aligned addend and one of the result:
    //  18·2u·(|C| + Σ|a·b|);
    //   MXFP4: a block is two steps (72u·S_block), 4 exact-product FFMAs per group into t (4u·S),
    //   G = K/128 FFMAs into the total (G·u·S); the 2^14 is exact;
    //   NVFP4: eight chained steps per group (8·36u·S_group), G FFMAs, the ×2^14·global (u·|y|) and
    //   the reference's own FP32 rounding of each dequantised weight (u·S).
    //  FP8 wgmma (moe_grouped_wgmma.cuh, MXFP4): the weights as the kernel folds them
    //   (moe_fixtures.h's folded_mxfp4_weight; Σ|w − w_folded|·|x| where a block sits more than
    //   14 binades below its group's top), per 128 columns the tensor core's chained e8m13 sum
    //   (fp8_accumulator_model.h) of the folded products, then G FFMAs into the total (the
    //   scales' product and the 2^-6 are exact).
    //  Then one BF16 rounding of the output (half an ulp) unless FP32.
    const int G = c.K / int(kActBlockSize);
    const bool fp8_tc = grouped_launch_uses_fp8_tensor_cores(p);
    EXPECT_EQ(fp8_tc, fp8) << "the kernel this pass was meant for";
    const double gamma = (nv ? 288.0 + G + 2 : fp8_tc ? double(G) : 72.0 + 4 + G) * kF32Unit;
    std::vector<double> xv(size_t(c.K));  // the row's dequantised activations
    std::vector<double> pr(size_t(c.K));  // the element's products as the kernel forms them
    for (int m = 0; m < c.n_mats; ++m) {
      const auto y = c.out_f32 ? d_y32[m].download() : from_bf16(d_y16[m].download());
      std::vector<float> got;
      std::vector<double> ref, budget;
      int64_t unwritten_poison_kept = 0;
      // The expert's weights [N, K], dequantised and (FP8 kernel) folded once per expert: the
      // grouped rows come in expert order, so each expert's matrix is expanded once, not per row.
      int cached_e = -1;
      std::vector<float> w_deq;
      std::vector<double> w_fold;
      const auto expand_expert = [&](int e) {
        if (e == cached_e) return;
        cached_e = e;
        const WeightMatrix wm = wt[m].view(e);
        w_deq.resize(size_t(c.N) * c.K);
        wm.dequant_rows(0, c.N, w_deq.data());
        if (!fp8_tc) return;
        w_fold.resize(w_deq.size());
        for (int n = 0; n < c.N; ++n) {
          const uint8_t* scales = wm.scale + size_t(n) * (c.K / kMXFP4BlockSize);
          for (int k = 0; k < c.K; ++k) {
            const uint8_t* group = scales + k / kActBlockSize * (kActBlockSize / kMXFP4BlockSize);
            const size_t i = size_t(n) * c.K + k;
            w_fold[i] = folded_mxfp4_weight(w_deq[i], *std::max_element(group, group + 4));
          }
        }
      };
      for (int j = 0; j < max_sel; ++j) {
        if (j >= n_sel) {  // rows past the plan must stay untouched (poison)
          for (int n = 0; n < c.N; ++n) unwritten_poison_kept += std::isnan(y[size_t(j) * c.N + n]);
          continue;
        }
        if (j % c.check_every != 0) {
          for (int n = 0; n < c.N; ++n) ASSERT_TRUE(std::isfinite(y[size_t(j) * c.N + n])) << "row " << j << " unwritten";
          continue;
        }
        expand_expert(hp.expert_of(j));
        const int row = hp.sel_row[size_t(j)];
        for (int k = 0; k < c.K; ++k) {
          const size_t xo = size_t(row) * c.K + k;
          xv[size_t(k)] = double(e4m3_to_f32(x[xo])) * e8m0_to_f32(xs[xo / kActBlockSize]);
        }
        for (int n = 0; n < c.N; ++n) {
          const float* wr = w_deq.data() + size_t(n) * c.K;
          const double* wf = fp8_tc ? w_fold.data() + size_t(n) * c.K : nullptr;
          double acc = 0, sa = 0, fold = 0;
          for (int k = 0; k < c.K; ++k) {
            double w = wr[k];
            if (fp8_tc) {
              fold += std::fabs(w - wf[k]) * std::fabs(xv[size_t(k)]);
              w = wf[k];
            }
            pr[size_t(k)] = w * xv[size_t(k)];
            acc += double(wr[k]) * xv[size_t(k)];
            sa += std::fabs(pr[size_t(k)]);
          }
          const double tc = fp8_tc ? fp8_group_sum_error(pr.data(), c.K) + fold : 0.0;
          got.push_back(y[size_t(j) * c.N + n]);
          ref.push_back(acc);
          // (The BF16 rounding acts on the computed value: half an ulp of |acc| + the error.)
          const double err = gamma * sa + tc;
          budget.push_back(err * (1 + kBf16HalfUlp) + (c.out_f32 ? 0 : kBf16HalfUlp * std::fabs(acc)) + 1e-30);
        }
      }
      EXPECT_EQ(unwritten_poison_kept, int64_t(max_sel - n_sel) * c.N) << "rows past n_sel were written";
      expect_parity(cat("grouped ", c.name, nv ? " nvfp4" : fp8 ? " mxfp4 fp8-tc" : " mxfp4", " mat", m, " sel=", n_sel, " N=", c.N, " K=", c.K,
                        c.out_f32 ? " f32" : " bf16"),
                    got, ref, budget);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MoeGroupedGemmParity,
    ::testing::Values(
        // name, fmt, E, N, K, T, k, pick, n_real, mats, f32, check_every, scales
        GroupedCase{"flash_w1_one_row", Fmt::kMXFP4, 256, 2048, 4096, 1, 6, Pick::kRandom, -1, 1, false, 1, Scales::kNarrow},
        GroupedCase{"flash_w2_one_row", Fmt::kMXFP4, 256, 4096, 2048, 1, 6, Pick::kRandom, -1, 1, true, 1, Scales::kNarrow},
        GroupedCase{"flash_w1_64x6", Fmt::kMXFP4, 256, 2048, 4096, 64, 6, Pick::kRandom, -1, 1, false, 7, Scales::kNarrow},
        GroupedCase{"flash_w1_64x6_nv", Fmt::kNVFP4, 256, 2048, 4096, 64, 6, Pick::kRandom, -1, 1, true, 7, Scales::kNarrow},
        GroupedCase{"flash_w2_1024x6", Fmt::kMXFP4, 256, 4096, 2048, 1024, 6, Pick::kRandom, -1, 1, false, 97, Scales::kNarrow},
        GroupedCase{"random_1024x6", Fmt::kMXFP4, 256, 256, 512, 1024, 6, Pick::kRandom, -1, 2, true, 1, Scales::kNarrow},
        GroupedCase{"random_1024x6_nv", Fmt::kNVFP4, 256, 256, 512, 1024, 6, Pick::kRandom, -1, 2, false, 1, Scales::kNarrow},
        GroupedCase{"one_row_per_expert", Fmt::kMXFP4, 256, 256, 512, 256, 1, Pick::kOnePerExpert, -1, 1, true, 1, Scales::kNarrow},
        GroupedCase{"all_rows_one_expert", Fmt::kMXFP4, 16, 256, 512, 300, 1, Pick::kAllOnOne, -1, 1, true, 1, Scales::kNarrow},
        GroupedCase{"all_rows_one_expert_nv", Fmt::kNVFP4, 16, 256, 512, 300, 1, Pick::kAllOnOne, -1, 1, true, 1, Scales::kNarrow},
        GroupedCase{"300_rows_few_experts", Fmt::kMXFP4, 256, 512, 1024, 300, 2, Pick::kFewExperts, -1, 2, false, 1, Scales::kNarrow},
        GroupedCase{"300_rows_few_experts_nv", Fmt::kNVFP4, 256, 512, 1024, 300, 2, Pick::kFewExperts, -1, 1, true, 1, Scales::kNarrow},
        GroupedCase{"padding_rows", Fmt::kMXFP4, 256, 256, 512, 64, 6, Pick::kRandom, 37, 2, true, 1, Scales::kNarrow},
        GroupedCase{"nano_w13", Fmt::kMXFP4, 16, 128, 256, 128, 4, Pick::kRandom, -1, 2, false, 1, Scales::kNarrow},
        GroupedCase{"nano_w2", Fmt::kMXFP4, 16, 256, 128, 128, 4, Pick::kRandom, -1, 1, true, 1, Scales::kNarrow},
        GroupedCase{"nano_w13_nv", Fmt::kNVFP4, 16, 128, 256, 7, 4, Pick::kRandom, -1, 2, true, 1, Scales::kNarrow},
        GroupedCase{"pro_w1_two_rows", Fmt::kMXFP4, 16, 3072, 7168, 2, 6, Pick::kRandom, -1, 1, true, 1, Scales::kNarrow},  // Pro N, K (E cut: 4 GiB)
        GroupedCase{"zero_scales_decode", Fmt::kMXFP4, 256, 512, 1024, 64, 6, Pick::kRandom, -1, 2, true, 1, Scales::kSomeZero},
        GroupedCase{"zero_scales_prefill", Fmt::kMXFP4, 64, 256, 1024, 1024, 6, Pick::kRandom, -1, 1, true, 5, Scales::kSomeZero},
        // K = 384: three K groups, so a block's step count is odd whenever its item count is
        // (the FP8 kernel's empty last step), in either item shape.
        GroupedCase{"odd_groups_decode", Fmt::kMXFP4, 64, 256, 384, 8, 6, Pick::kRandom, -1, 2, true, 1, Scales::kNarrow},
        GroupedCase{"odd_groups_prefill", Fmt::kMXFP4, 16, 256, 384, 512, 6, Pick::kRandom, -1, 1, false, 3, Scales::kNarrow},
        GroupedCase{"wide_scales_prefill", Fmt::kMXFP4, 64, 256, 1024, 1024, 6, Pick::kRandom, -1, 2, false, 5, Scales::kWide},
        GroupedCase{"no_real_rows", Fmt::kMXFP4, 16, 128, 256, 8, 4, Pick::kRandom, 0, 1, true, 1, Scales::kNarrow}),
    [](const ::testing::TestParamInfo<GroupedCase>& i) { return std::string(i.param.name); });

// Batch invariance: a few rows computed alone (T = 3: the decode launch shape) give the same bits
// as the same rows inside a big batch (T = 1024: the prefill shape, their experts crowded so that
// they land in later chunks and other tile columns) and a mid-size one (T = 64: decode shape,
// other chunk boundaries). MXFP4 with fp8_rows: the same, all on the FP8 wgmma kernel. FP32
// outputs compared bit for bit (and BF16, which follows).
TEST_F(MoeGroupedGemmTest, RowsAloneEqualRowsInsideABatch) {
  for (const Fmt fmt : {Fmt::kMXFP4, Fmt::kNVFP4}) {
    const int E = 256, N = 512, K = 2048, k = 6, n_test = 3;
    ExpertTensor wt;
    make_tensor(wt, fmt, E, N, K);
    // The test rows: picks and activations.
    const Routing alone = make_routing(rng, n_test, k, E, Pick::kRandom, n_test);
    const auto x_test = random_e4m3(size_t(n_test) * K), xs_test = random_e8m0(size_t(n_test) * (K / kActBlockSize), 8);

    auto run = [&](const Routing& r, const std::vector<uint8_t>& x, const std::vector<uint8_t>& xs, bool f32,
                   int max_sel, bool fp8) {
      DevicePlan dp(r, E);
      DeviceBuffer<uint8_t> d_x(x), d_xs(xs);
      DeviceBuffer<uint8_t> d_y(size_t(max_sel) * N * (f32 ? 4 : 2));
      d_y.fill_bytes(kPoisonByte);
      MoeGroupedParams p;
      p.format = fmt;
      p.w[0] = wt.dw.get();
      p.w_scale[0] = wt.ds.get();
      p.global_scale[0] = wt.dgs.get();
      p.y[0] = d_y.get();
      p.x = d_x.get();
      p.x_scale = d_xs.get();
      p.x_row = dp.plan.sel_row;
      p.offsets = dp.plan.offsets;
      p.E = E;
      p.N = N;
      p.K = K;
      p.max_sel = max_sel;
      p.out_f32 = f32;
      p.fp8_rows = fp8;
      EXPECT_EQ(grouped_launch_uses_fp8_tensor_cores(p), fp8 && fmt == Fmt::kMXFP4);
      launch_moe_grouped_gemm(p, nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      return d_y.download();
    };

    for (const int T : {64, 1024}) {
      // A batch with the test rows at random places and their experts crowded (a third of all
      // picks go to the test rows' experts).
      Routing big = make_routing(rng, T, k, E, Pick::kRandom, T);
      std::vector<int> place(static_cast<size_t>(T));
      std::iota(place.begin(), place.end(), 0);
      std::shuffle(place.begin(), place.end(), rng);
      for (int t = 0; t < T; ++t)
        if (rng() % 3 == 0) {  // replace pick 0 by a test row's expert unless the row has it
          const int32_t e = alone.idx[size_t(rng() % (n_test * k))];
          int32_t* row = &big.idx[size_t(t) * k];
          if (std::find(row, row + k, e) == row + k) row[0] = e;
        }
      auto x = random_e4m3(size_t(T) * K), xs = random_e8m0(size_t(T) * (K / kActBlockSize), 8);
      for (int i = 0; i < n_test; ++i) {
        const int t = place[size_t(i)];
        std::copy(&alone.idx[size_t(i) * k], &alone.idx[size_t(i + 1) * k], &big.idx[size_t(t) * k]);
        std::copy(&x_test[size_t(i) * K], &x_test[size_t(i + 1) * K], &x[size_t(t) * K]);
        std::copy(&xs_test[size_t(i) * (K / kActBlockSize)], &xs_test[size_t(i + 1) * (K / kActBlockSize)],
                  &xs[size_t(t) * (K / kActBlockSize)]);
      }
      const HostPlan hp_alone = host_plan(alone.idx, alone.T, k, alone.n_real, E), hp_big = host_plan(big.idx, big.T, k, big.n_real, E);
      for (const auto& [f32, fp8] : {std::pair{true, false}, {false, false}, {true, true}, {false, true}}) {
        if (fp8 && fmt != Fmt::kMXFP4) continue;
        const auto y_alone = run(alone, x_test, xs_test, f32, n_test * k, fp8),
                   y_big = run(big, x, xs, f32, T * k, fp8);
        const size_t row_bytes = size_t(N) * (f32 ? 4 : 2);
        int64_t differing = 0;
        for (int i = 0; i < n_test; ++i)
          for (int s = 0; s < k; ++s) {
            const int ja = hp_alone.pos_of[size_t(i) * k + s], jb = hp_big.pos_of[size_t(place[size_t(i)]) * k + s];
            ASSERT_TRUE(ja >= 0 && jb >= 0);
            differing += std::memcmp(&y_alone[size_t(ja) * row_bytes], &y_big[size_t(jb) * row_bytes], row_bytes) != 0;
          }
        std::printf("[invariance] %s T=%d %s: %lld of %d rows differ alone vs in the batch\n",
                    fmt == Fmt::kNVFP4 ? "nvfp4" : fp8 ? "mxfp4 fp8-tc" : "mxfp4", T, f32 ? "f32" : "bf16",
                    (long long)differing, n_test * k);
        EXPECT_EQ(differing, 0);
        // The rows are real results (written, finite): the first element of each.
        for (int i = 0; i < n_test * k; ++i) {
          const uint8_t* at = &y_alone[size_t(i) * row_bytes];
          float v = 0;
          if (f32)
            std::memcpy(&v, at, 4);
          else
            v = bf16_to_f32(uint16_t(at[0] | (at[1] << 8)));
          EXPECT_TRUE(std::isfinite(v)) << "row " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
