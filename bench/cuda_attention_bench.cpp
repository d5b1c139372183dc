// Sparse attention for prefill-shaped launches: the decode kernel (FP8 cache, a cluster of 8 blocks
// per 16 heads of a query) against the prefill kernel (one block per query over BF16 key rows) on
// the same lists, in one process, plus the gather that feeds the prefill kernel; and the CSA
// indexer's scores (with its top-k) on the CUDA cores against the tensor cores. Launches of 128
// queries, as attention_step.cpp issues them (kAttentionGroupRows). Useful FLOPs: Q·Kᵀ and P·V,
// 4·H·d per listed key; the indexer's 2·Hi·128 per visible key. Shares are of cuBLASLt's BF16 GEMM
// at 8192³ measured in the same run.
//
// Usage: bench_cuda_attention_bench [--quick]
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/kernels/indexer.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/kv_gather.cuh"
#include "cuda/kernels/sparse_attention.cuh"
#include "cuda_bench_util.h"

int main(int argc, char** argv) {
  using namespace dsv4::cuda;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  try {
    if (!device_available()) {
      std::fprintf(stderr, "no CUDA device\n");
      return 1;
    }
    bench::print_card();
    bench::Timer timer;
    bench::Filler fill;
    const int reps = quick ? 3 : 7, iters = quick ? 10 : 30;
    const double bf16_peak = bench::lt_peak_tflops(false, 8192);
    std::printf("cuBLASLt BF16 GEMM 8192^3: %.0f TFLOP/s\n\n", bf16_peak);

    // Key rows a 2,048-row pass at position 6,144 of an 8K prompt can see: the window rows and up
    // to 2,048 CSA entries (at random rows of a pool of 2^16).
    constexpr int kDim = kKvDimV4, kBlockSize = 64, kPoolRows = 1 << 16, kKeyRows = 2175 + 2048;
    DeviceBuffer<uint8_t> cache(size_t(kv_page_bytes(kBlockSize, kDim)) * (kPoolRows / kBlockSize));
    {
      std::vector<int32_t> slots(static_cast<size_t>(kPoolRows));
      for (int i = 0; i < kPoolRows; ++i) slots[size_t(i)] = i;
      DeviceBuffer<uint16_t> kv(fill.bf16(size_t(kPoolRows) * kDim));
      DeviceBuffer<int32_t> d_slots(slots);
      KvPackParams kp;
      kp.kv = reinterpret_cast<const __nv_bfloat16*>(kv.get());
      kp.slot = d_slots.get();
      kp.cache = cache.get();
      kp.n_tokens = kPoolRows;
      kp.block_size = kBlockSize;
      kp.dim = kDim;
      launch_kv_pack(kp, nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    }

    // The gather of that pass's key rows for one CSA layer (a 2,048-row chunk at position 6,144:
    // 2,175 window rows, 2,048 entries through a page table).
    {
      const int n = 2048, pos0 = 6144, per_block = 64, n_blocks = (pos0 + n) / 256;
      std::vector<int32_t> pos(static_cast<size_t>(n)), zeros(static_cast<size_t>(n), 0), pages(static_cast<size_t>(n_blocks));
      for (int i = 0; i < n; ++i) pos[size_t(i)] = pos0 + i;
      for (int b = 0; b < n_blocks; ++b) pages[size_t(b)] = int32_t(fill.next() % uint64_t((kPoolRows - 4096) / per_block));
      DeviceBuffer<int32_t> d_pos(pos), d_zero(zeros), d_pages(pages);
      DeviceBuffer<uint16_t> keys(size_t(kKeyRows) * kDim);
      KvGatherParams g;
      g.cache = cache.get();
      g.block_size = kBlockSize;
      g.dim = kDim;
      g.rows = {d_pos.get(), d_zero.get(), d_zero.get(), d_zero.get()};
      g.n_window = n + 127;
      g.window = 128;
      g.pass_base = 0;
      g.ring_base = 2048;
      g.ring_rows = 136;
      g.pages = {d_pages.get(), n_blocks};
      g.comp_base = 4096;
      g.per_block = per_block;
      g.n_entries = (pos0 + n) / 4;
      g.entry_row0 = g.n_window;
      g.out = reinterpret_cast<__nv_bfloat16*>(keys.get());
      const double t = timer.median(reps, iters, true, [&](int, cudaStream_t st) { launch_kv_gather(g, st); });
      const double bytes = double(g.n_window + g.n_entries) * (kv_row_data_bytes(kDim) + kv_row_scale_bytes(kDim) + 2 * kDim);
      std::printf("kv_gather, 2,048-row chunk at 6,144 (CSA): %.1f us, %.0f GB/s\n\n", t * 1e6, bytes / t * 1e-9);
    }

    struct Shape {
      const char* name;
      int H, n_idx;
    };
    const std::vector<Shape> shapes = {{"Flash sliding (128 keys)", 64, 128},
                                       {"Flash HCA at 8K (192 keys)", 64, 128 + 8192 / 128},
                                       {"Flash CSA (640 keys)", 64, 640},
                                       {"Pro CSA (1,152 keys)", 128, 1152}};
    std::printf("%-28s %8s %12s %12s %8s %10s %10s\n", "128 queries", "keys", "decode_us", "prefill_us", "speedup",
                "dec_share", "pre_share");
    const int n_q = 128;
    DeviceBuffer<uint16_t> keys(fill.bf16(size_t(kKeyRows) * kDim));
    for (const Shape& s : shapes) {
      DeviceBuffer<uint16_t> q(fill.bf16(size_t(n_q) * s.H * kDim)), out(size_t(n_q) * s.H * kDim);
      // Decode kernel: pool slots; prefill kernel: key rows. Same list length, random rows.
      std::vector<int32_t> slots(size_t(n_q) * s.n_idx), rows(slots.size());
      for (size_t i = 0; i < slots.size(); ++i) {
        slots[i] = int32_t(fill.next() % uint64_t(kPoolRows));
        rows[i] = int32_t(fill.next() % uint64_t(kKeyRows));
      }
      DeviceBuffer<int32_t> d_slots(slots), d_rows(rows), pos(std::vector<int32_t>(size_t(n_q), 7000));
      DeviceBuffer<float> sink(std::vector<float>(size_t(s.H), 0.5f)), freq(std::vector<float>(32, 1e-3f));
      SparseAttnParams p;
      p.q = reinterpret_cast<const __nv_bfloat16*>(q.get());
      p.cache = cache.get();
      p.sink = sink.get();
      p.pos = pos.get();
      p.inv_freq = freq.get();
      p.out = reinterpret_cast<__nv_bfloat16*>(out.get());
      p.n_q = n_q;
      p.H = s.H;
      p.n_idx = s.n_idx;
      p.block_size = kBlockSize;
      p.dim = kDim;
      p.softmax_scale = 1.0f / 22.627417f;
      p.indices = d_slots.get();
      const double t_dec = timer.median(reps, iters, true, [&](int, cudaStream_t st) { launch_sparse_attention(p, st); });
      p.indices = d_rows.get();
      p.keys = reinterpret_cast<const __nv_bfloat16*>(keys.get());
      const double t_pre = timer.median(reps, iters, true, [&](int, cudaStream_t st) { launch_sparse_attention(p, st); });
      const double flops = 4.0 * n_q * s.H * kDim * s.n_idx;
      std::printf("%-28s %8d %12.1f %12.1f %7.2fx %9.1f%% %9.1f%%\n", s.name, s.n_idx, t_dec * 1e6, t_pre * 1e6,
                  t_dec / t_pre, 100 * flops / t_dec * 1e-12 / bf16_peak, 100 * flops / t_pre * 1e-12 / bf16_peak);
    }

    // The indexer of a CSA layer for 128 queries of a chunk at positions 6,144 … 6,271 (1,536 to
    // 1,568 visible entries each), Flash's 64 heads and top-512, scores then selection.
    {
      const int Hi = 64, K = 512, max_entries = 1 << 14, n_blocks = max_entries / kIndexerKeysPerBlock, pos0 = 6144;
      std::vector<int32_t> pos(static_cast<size_t>(n_q)), slot(static_cast<size_t>(n_q), 0), pages(static_cast<size_t>(n_blocks));
      for (int i = 0; i < n_q; ++i) pos[size_t(i)] = pos0 + i;
      for (int b = 0; b < n_blocks; ++b) pages[size_t(b)] = b;
      DeviceBuffer<int32_t> d_pos(pos), d_slot(slot), d_pages(pages), topk(size_t(n_q) * K);
      DeviceBuffer<uint16_t> q(fill.bf16(size_t(n_q) * Hi * 128));
      DeviceBuffer<float> hw(std::vector<float>(size_t(n_q) * Hi, 0.25f)), score(size_t(n_q) * max_entries);
      DeviceBuffer<uint8_t> packed(fill.bytes(size_t(max_entries) * 64, 0, 255, false)),
          scales(fill.bytes(size_t(max_entries) * 4, 120, 130, false));
      IndexerTopkParams ip;
      ip.q = reinterpret_cast<const __nv_bfloat16*>(q.get());
      ip.head_weight = hw.get();
      ip.key_packed = packed.get();
      ip.key_scale = scales.get();
      ip.pos = d_pos.get();
      ip.slot = d_slot.get();
      ip.pages = {d_pages.get(), n_blocks};
      ip.score = score.get();
      ip.topk = topk.get();
      ip.n_q = n_q;
      ip.Hi = Hi;
      ip.K = K;
      ip.ratio = 4;
      ip.max_entries = max_entries;
      double t[2];
      for (int mma = 0; mma < 2; ++mma) {
        ip.prefill = mma == 1;
        t[mma] = timer.median(reps, iters, true, [&](int, cudaStream_t st) { launch_indexer_topk(ip, st); });
      }
      double pairs = 0;
      for (int i = 0; i < n_q; ++i) pairs += (pos0 + i + 1) / 4;
      const double flops = 2.0 * Hi * 128 * pairs;
      std::printf("\nindexer, 128 queries at 6,144, Hi 64, top-512 (scores + selection): CUDA cores %.1f us (%.1f%%), "
                  "tensor cores %.1f us (%.1f%%), %.2fx\n",
                  t[0] * 1e6, 100 * flops / t[0] * 1e-12 / bf16_peak, t[1] * 1e6, 100 * flops / t[1] * 1e-12 / bf16_peak,
                  t[0] / t[1]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_attention_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
