// Weight upload: walks ModelWeights once to count device bytes and once to copy, straight from
// the mmapped shards (packed formats are copied as they are on disk; converted to BF16 are only
// tensors whose kernel takes BF16 — F32/F16 plain tensors, dense MXFP4 linears, an NVFP4 wo_a).
#include "cuda/device_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <thread>

#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/rope.cuh"
#include "cuda/kernels/router.cuh"
#include "model/skeleton.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4::cuda {

void check_cuda_supported(const ModelConfig& c) {
  auto need = [](bool ok, const char* field, int64_t value, const char* what) {
    if (!ok) fail("the CUDA backend does not support ", field, " = ", value, " (", what, ")");
  };
  need(c.hc_mult == kHcStreams, "hc_mult", c.hc_mult, "needs 4");
  need(c.head_dim == 128 || c.head_dim == 512, "head_dim", c.head_dim, "needs 128 or 512");
  need(c.qk_rope_head_dim == kKvRope, "qk_rope_head_dim", c.qk_rope_head_dim, "needs 64");
  need(c.hidden_size % 128 == 0, "hidden_size", c.hidden_size, "needs a multiple of 128");
  need(c.q_lora_rank % 128 == 0, "q_lora_rank", c.q_lora_rank, "needs a multiple of 128");
  need(c.moe_intermediate_size % 128 == 0, "moe_intermediate_size", c.moe_intermediate_size,
       "needs a multiple of 128");
  need(c.o_groups * c.o_lora_rank % 128 == 0, "o_groups·o_lora_rank", c.o_groups * c.o_lora_rank,
       "needs a multiple of 128");
  need(c.heads_per_group() * c.head_dim % 128 == 0, "heads per group·head_dim",
       c.heads_per_group() * c.head_dim, "needs a multiple of 128");
  need(c.index_head_dim == kIndexerDim, "index_head_dim", c.index_head_dim, "needs 128");
  need(c.n_routed_experts <= kRouterMaxExperts, "n_routed_experts", c.n_routed_experts,
       "at most 512");
  need(c.num_experts_per_tok <= kRouterMaxTopK, "num_experts_per_tok", c.num_experts_per_tok,
       "at most 16");
  need(c.hidden_size <= kMxfp4MaxK && c.moe_intermediate_size <= kMxfp4MaxK, "expert K",
       std::max(c.hidden_size, c.moe_intermediate_size), "at most 8192");
  if (c.expert_format == ExpertFormat::kFP8Block)
    fail("the CUDA backend does not support FP8-block routed experts yet (expert_dtype fp8)");
}

namespace {

// Part of a weight one rank of tensor parallelism holds: rows or columns [first, first + n).
struct Slice {
  enum class Along { kRows, kCols } along = Along::kRows;
  int64_t first = 0, n = 0;
};

// One pass over the weights: counts bytes (dry) or allocates and copies them, from the mapped
// shards or (synthetic) from bytes generated per tensor (model/skeleton.h RandomTensors).
class Uploader {
 public:
  Uploader(bool dry, size_t total, bool progress, const RandomTensors* synthetic = nullptr)
      : dry_(dry), total_(total), progress_(progress), synthetic_(synthetic) {}
  size_t bytes() const { return done_; }

  template <typename T>
  DeviceBuffer<T> raw(const uint8_t* src, size_t n_elems) {
    const size_t nb = n_elems * sizeof(T);
    done_ += nb;
    if (dry_) return {};
    DeviceBuffer<T> b(n_elems);
    if (nb) DSV4_CUDA_CHECK(cudaMemcpy(b.get(), src, nb, cudaMemcpyHostToDevice));
    report();
    return b;
  }
  template <typename T>
  DeviceBuffer<T> from_host(const std::vector<T>& v) {
    return raw<T>(reinterpret_cast<const uint8_t*>(v.data()), v.size());
  }

  // A plain tensor as BF16 (bit copy when it is BF16 on disk, else rounded to nearest even),
  // typed as T (__nv_bfloat16, or uint8_t for DeviceLinear's untyped bytes).
  template <typename T = __nv_bfloat16>
  DeviceBuffer<T> bf16(const WeightMatrix& w) {
    return bf16_of<T>(source(w));
  }
  DeviceBuffer<float> f32(const WeightMatrix& weights, const std::optional<Slice>& part = {}) {
    const WeightMatrix w = cut(source(weights), part);
    const size_t n = size_t(w.rows * w.cols);
    if (w.format == WeightFormat::kF32 || dry_) return raw<float>(w.data, n);
    std::vector<float> f(n);
    w.dequant_rows(0, w.rows, f.data());
    return from_host(f);
  }
  DeviceBuffer<int32_t> i32(const WeightMatrix& weights) {
    const WeightMatrix w = source(weights);
    const size_t n = size_t(w.rows * w.cols);
    if (dry_) return raw<int32_t>(nullptr, n);
    std::vector<int32_t> v(n);
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t c = 0; c < w.cols; ++c) v[size_t(r * w.cols + c)] = int32_t(w.int_at(r, c));
    return from_host(v);
  }

  // A sourced plain tensor (source()) as BF16.
  template <typename T = __nv_bfloat16>
  DeviceBuffer<T> bf16_of(const WeightMatrix& w) {
    const size_t n = size_t(w.rows * w.cols), elems = n * 2 / sizeof(T);
    if (w.format == WeightFormat::kBF16 || dry_) return raw<T>(w.data, elems);
    std::vector<float> f(n);
    w.dequant_rows(0, w.rows, f.data());
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16(f[i]);
    return raw<T>(reinterpret_cast<const uint8_t*>(h.data()), elems);
  }

  // `packed_nvfp4` false: an NVFP4 linear whose consumer takes only FP8 or BF16 weights (wo_a's
  // grouped projection) is dequantised to BF16, as the reference dequantises FP8 wo_a to BF16
  // for its BF16 einsum (§12): one rounding per weight.
  DeviceLinear linear(const WeightMatrix& weights, bool packed_nvfp4 = true, const std::optional<Slice>& part = {}) {
    const WeightMatrix w = cut(source(weights), part);
    DeviceLinear d;
    d.name = w.name;
    d.N = int(w.rows);
    d.K = int(w.cols);
    if (w.format == WeightFormat::kNVFP4 && packed_nvfp4) {
      if (w.cols % 32 != 0)
        fail(w.name, ": the CUDA NVFP4 kernel needs in_features (", w.cols, ") to be a multiple of 32");
      d.nvfp4 = true;
      d.global_scale = w.global_scale;
      d.data = raw<uint8_t>(w.data, size_t(w.rows * w.cols / 2));
      d.scale = raw<uint8_t>(w.scale, size_t(scale_numel(w.format, w.rows, w.cols)));
    } else if (w.format == WeightFormat::kFP8Block) {
      d.fp8 = true;
      d.data = raw<uint8_t>(w.data, size_t(w.rows * w.cols));
      const size_t ns = size_t(scale_numel(w.format, w.rows, w.cols));
      if (!w.scale_is_f32 || dry_) {
        d.scale = raw<uint8_t>(w.scale, ns);
      } else {  // F32 scales (some Base exports): exact only when each is a power of two
        std::vector<uint8_t> e(ns);
        for (size_t i = 0; i < ns; ++i) {
          float s;
          std::memcpy(&s, w.scale + 4 * i, 4);
          int ex = 0;
          if (!(s > 0.0f) || std::frexp(s, &ex) != 0.5f || ex - 1 < -127 || ex - 1 > 127)
            fail(w.name, ": F32 block scale ", s, " at ", i,
                 " is not a power of two; the CUDA FP8 kernels take UE8M0 scales");
          e[i] = uint8_t(ex - 1 + 127);
        }
        d.scale = from_host(e);
      }
    } else {
      d.data = bf16_of<uint8_t>(w);
    }
    return d;
  }

  // The layer's experts [first, first + ex.size()) of one kind.
  DeviceExperts experts(std::span<const ExpertWeights> ex, int first, WeightMatrix ExpertWeights::*which) {
    DeviceExperts d;
    DSV4_CHECK(!ex.empty());
    const WeightMatrix& w0 = ex.front().*which;
    d.E = int(ex.size());
    d.first = first;
    d.N = int(w0.rows);
    d.K = int(w0.cols);
    size_t data_per = 0, scale_per = 0;
    switch (w0.format) {
      case WeightFormat::kMXFP4:
        d.format = DeviceExperts::Format::kMXFP4;
        data_per = size_t(d.N) * d.K / 2;
        scale_per = size_t(d.N) * d.K / 32;
        break;
      case WeightFormat::kNVFP4:
        d.format = DeviceExperts::Format::kNVFP4;
        data_per = size_t(d.N) * d.K / 2;
        scale_per = size_t(d.N) * d.K / 16;
        break;
      case WeightFormat::kBF16:
      case WeightFormat::kF32:
      case WeightFormat::kF16:
        d.format = DeviceExperts::Format::kBF16;
        data_per = size_t(d.N) * d.K * 2;
        break;
      default:
        fail(w0.name, ": routed experts in ", to_string(w0.format),
             " are not supported by the CUDA backend");
    }
    done_ += (data_per + scale_per) * ex.size() +
             (d.format == DeviceExperts::Format::kNVFP4 ? ex.size() * sizeof(float) : 0);
    if (dry_) return d;
    d.data = DeviceBuffer<uint8_t>(data_per * ex.size());
    if (scale_per) d.scale = DeviceBuffer<uint8_t>(scale_per * ex.size());
    if (synthetic_ && d.format == DeviceExperts::Format::kMXFP4) {
      synthetic_experts(ex, which, d, data_per, scale_per);
      return d;
    }
    std::vector<float> global(ex.size());
    std::vector<uint16_t> conv;
    for (size_t e = 0; e < ex.size(); ++e) {
      const WeightMatrix w = source(ex[e].*which);
      if (w.format != w0.format || w.rows != w0.rows || w.cols != w0.cols)
        fail(w.name, ": experts of one layer must share format and shape");
      const uint8_t* src = w.data;
      if (d.format == DeviceExperts::Format::kBF16 && w.format != WeightFormat::kBF16) {
        std::vector<float> f(size_t(w.rows * w.cols));
        w.dequant_rows(0, w.rows, f.data());
        conv.resize(f.size());
        for (size_t i = 0; i < f.size(); ++i) conv[i] = f32_to_bf16(f[i]);
        src = reinterpret_cast<const uint8_t*>(conv.data());
      }
      DSV4_CUDA_CHECK(cudaMemcpy(d.data.get() + e * data_per, src, data_per, cudaMemcpyHostToDevice));
      if (scale_per)
        DSV4_CUDA_CHECK(cudaMemcpy(d.scale.get() + e * scale_per, w.scale, scale_per,
                                   cudaMemcpyHostToDevice));
      global[e] = w.global_scale;
      report();
    }
    if (d.format == DeviceExperts::Format::kNVFP4) d.global_scale = DeviceBuffer<float>(global);
    return d;
  }

  DeviceHyperConn hc(const HyperConnWeights& w) { return {f32(w.fn), f32(w.base), f32(w.scale)}; }

  DeviceCompressor compressor(const CompressorWeights& w) {
    DeviceCompressor d;
    d.ratio = int(w.ratio);
    d.width = int(w.width);
    d.coff = int(compressor_overlap(w.ratio));
    d.wkv = linear(w.wkv);
    d.wgate = linear(w.wgate);
    d.ape = f32(w.ape);
    d.norm = bf16(w.norm);
    return d;
  }

 private:
  // Synthetic MXFP4 experts of one kind, generated on all host threads (expert e by thread
  // e mod n) into one staging copy of the stacked layout, then one copy per buffer: the bulk of a
  // full-size model's bytes, which one thread would generate at ~1.3 GB/s.
  void synthetic_experts(std::span<const ExpertWeights> ex, WeightMatrix ExpertWeights::*which, DeviceExperts& d,
                         size_t data_per, size_t scale_per) {
    std::vector<uint8_t> data(data_per * ex.size()), scale(scale_per * ex.size());
    const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 64);
    std::vector<std::exception_ptr> errors(n_threads);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < n_threads; ++t)
      threads.emplace_back([&, t] {
        try {
          for (size_t e = t; e < ex.size(); e += n_threads) {
            const WeightMatrix& w = ex[e].*which;
            synthetic_->fill(w.data_tensor, data.data() + e * data_per, data_per);
            synthetic_->fill(w.scale_tensor, scale.data() + e * scale_per, scale_per);
          }
        } catch (...) {
          errors[t] = std::current_exception();
        }
      });
    for (std::thread& th : threads) th.join();
    for (const std::exception_ptr& err : errors)
      if (err) std::rethrow_exception(err);
    DSV4_CUDA_CHECK(cudaMemcpy(d.data.get(), data.data(), data.size(), cudaMemcpyHostToDevice));
    DSV4_CUDA_CHECK(cudaMemcpy(d.scale.get(), scale.data(), scale.size(), cudaMemcpyHostToDevice));
    report();
  }

  // `w` (sourced) cut to `part`: a row range is a view (FP8 tiles whole), a column range a staged
  // copy. Plain and FP8-block tensors only; the dry pass only changes the shape.
  WeightMatrix cut(const WeightMatrix& w, const std::optional<Slice>& part) {
    if (!part) return w;
    const bool rows = part->along == Slice::Along::kRows;
    const int64_t extent = rows ? w.rows : w.cols, first = part->first, n = part->n;
    if (first < 0 || n < 1 || first + n > extent)
      fail(w.name, ": tensor-parallel part [", first, ", ", first + n, ") of ", extent, rows ? " rows" : " columns");
    int64_t elem = 0;
    switch (w.format) {
      case WeightFormat::kF32: elem = 4; break;
      case WeightFormat::kBF16:
      case WeightFormat::kF16: elem = 2; break;
      case WeightFormat::kFP8Block: elem = 1; break;
      default:
        fail(w.name, ": tensor parallelism cannot cut ", to_string(w.format), " weights (FP8 blocks and plain ones only)");
    }
    const bool fp8 = w.format == WeightFormat::kFP8Block;
    if (fp8 && (first % kFP8BlockSize != 0 || (n % kFP8BlockSize != 0 && first + n != extent)))
      fail(w.name, ": a tensor-parallel part must hold whole 128×128 tiles, got [", first, ", ", first + n, ")");
    WeightMatrix v = w;
    const int64_t scale_bytes = w.scale_is_f32 ? 4 : 1;
    const int64_t tile_cols = (w.cols + kFP8BlockSize - 1) / kFP8BlockSize;
    if (rows) {
      v.rows = n;
      if (dry_) return v;
      v.data = w.data + first * w.cols * elem;
      if (fp8) v.scale = w.scale + (first / kFP8BlockSize) * tile_cols * scale_bytes;
      return v;
    }
    v.cols = n;
    if (dry_) return v;
    staged_part_.resize(size_t(w.rows * n * elem));
    for (int64_t r = 0; r < w.rows; ++r)
      std::memcpy(&staged_part_[size_t(r * n * elem)], w.data + (r * w.cols + first) * elem, size_t(n * elem));
    v.data = staged_part_.data();
    if (fp8) {
      const int64_t tile_rows = (w.rows + kFP8BlockSize - 1) / kFP8BlockSize, n_tiles = (n + kFP8BlockSize - 1) / kFP8BlockSize;
      staged_part_scale_.resize(size_t(tile_rows * n_tiles * scale_bytes));
      for (int64_t r = 0; r < tile_rows; ++r)
        std::memcpy(&staged_part_scale_[size_t(r * n_tiles * scale_bytes)],
                    w.scale + (r * tile_cols + first / kFP8BlockSize) * scale_bytes, size_t(n_tiles * scale_bytes));
      v.scale = staged_part_scale_.data();
    }
    return v;
  }

  // The tensor's bytes: as mapped, or generated into the staging buffers (valid until the next
  // call) when synthetic. The dry pass reads nothing.
  WeightMatrix source(const WeightMatrix& w) {
    if (!synthetic_ || dry_ || !w.present()) return w;
    if (w.format == WeightFormat::kNVFP4)  // its global scale is read at bind time, from the shard
      fail(w.name, ": synthetic weights do not cover NVFP4 linears (their weight_scale_2 is bound from the file)");
    WeightMatrix s = w;
    s.data = stage(w.data_tensor, staged_data_);
    if (!w.scale_tensor.empty()) s.scale = stage(w.scale_tensor, staged_scale_);
    return s;
  }
  const uint8_t* stage(const std::string& tensor, std::vector<uint8_t>& buffer) {
    const uint64_t n = synthetic_->bytes(tensor);
    buffer.resize(size_t(n));
    synthetic_->fill(tensor, buffer.data(), n);
    return buffer.data();
  }

  void report() {
    if (!progress_ || total_ == 0) return;
    const int pct = int(100.0 * double(done_) / double(total_));
    if (pct == last_pct_) return;
    last_pct_ = pct;
    std::fprintf(stderr, "\rcuda: uploading weights %5.2f / %5.2f GiB (%3d%%)", double(done_) / (1 << 30),
                 double(total_) / (1 << 30), pct);
    if (pct >= 100) std::fprintf(stderr, "\n");
  }
  bool dry_;
  size_t total_, done_ = 0;
  bool progress_;
  int last_pct_ = -1;
  const RandomTensors* synthetic_;
  std::vector<uint8_t> staged_data_, staged_scale_;
  std::vector<uint8_t> staged_part_, staged_part_scale_;  // cut()'s column ranges
};

// One decoder layer (§2): a main layer, or the MTP block's (§10). Notes in `m` whether a §12
// quantised-input linear has BF16 weights.
DeviceLayer upload_layer(Uploader& up, const LayerWeights& lw, const WeightShard& shard, DeviceModel& m) {
  DeviceLayer l;
  l.spec = lw.spec;
  l.attn_norm = up.bf16(lw.attn_norm);
  l.ffn_norm = up.bf16(lw.ffn_norm);
  l.hc_attn = up.hc(lw.hc_attn);
  l.hc_ffn = up.hc(lw.hc_ffn);
  const AttentionWeights& a = lw.attn;
  l.wq_a = up.linear(a.wq_a);
  l.q_norm = up.bf16(a.q_norm);
  // Tensor parallelism (DeviceModel::tp): this rank's query heads — whole output groups — in wq_b's
  // rows, attn_sink, wo_a's group rows and wo_b's input columns (§4.5).
  std::optional<Slice> q_rows, sink_cols, group_rows, z_cols;
  if (shard.tp > 1) {
    const int64_t heads = m.heads(), d = m.cfg.head_dim, zr = m.groups() * m.cfg.o_lora_rank;
    q_rows = Slice{Slice::Along::kRows, shard.tp_rank * heads * d, heads * d};
    sink_cols = Slice{Slice::Along::kCols, shard.tp_rank * heads, heads};
    group_rows = Slice{Slice::Along::kRows, shard.tp_rank * zr, zr};
    z_cols = Slice{Slice::Along::kCols, shard.tp_rank * zr, zr};
  }
  l.wq_b = up.linear(a.wq_b, true, q_rows);
  l.wkv = up.linear(a.wkv);
  l.kv_norm = up.bf16(a.kv_norm);
  l.wo_a = up.linear(a.wo_a, /*packed_nvfp4=*/false, group_rows);  // grouped_out_proj: FP8 or BF16 only
  l.wo_b = up.linear(a.wo_b, true, z_cols);
  l.attn_sink = up.f32(a.attn_sink, sink_cols);
  if (a.compressor) l.compressor = up.compressor(*a.compressor);
  if (a.indexer) {
    l.idx_wq_b = up.linear(a.indexer->wq_b);
    l.idx_weights_proj = up.linear(a.indexer->weights_proj);
    l.idx_compressor = up.compressor(a.indexer->compressor);
  }
  const MoEWeights& f = lw.ffn;
  l.gate = up.linear(f.gate);
  if (lw.spec.routing == RoutingType::kScore) l.gate_bias = up.f32(f.gate_bias);
  else l.tid2eid = up.i32(f.tid2eid);
  const int E = int(f.experts.size());
  ExpertRange range = shard.experts;
  if (range.count < 0) range = {0, E};
  DSV4_CHECK_MSG(range.first >= 0 && range.count >= 1 && range.first + range.count <= E, "upload: experts [",
                 range.first, ", ", range.first + range.count, ") of a layer of ", E);
  const std::span<const ExpertWeights> mine = std::span(f.experts).subspan(size_t(range.first), size_t(range.count));
  l.w1 = up.experts(mine, range.first, &ExpertWeights::w1);
  l.w3 = up.experts(mine, range.first, &ExpertWeights::w3);
  l.w2 = up.experts(mine, range.first, &ExpertWeights::w2);
  l.shared_w1 = up.linear(f.shared.w1);
  l.shared_w3 = up.linear(f.shared.w3);
  l.shared_w2 = up.linear(f.shared.w2);
  for (const DeviceLinear* q : {&l.wq_a, &l.wq_b, &l.wkv, &l.wo_b, &l.idx_wq_b, &l.shared_w1,
                                &l.shared_w3, &l.shared_w2})
    if (q->N > 0 && !q->fp8 && !q->nvfp4) m.has_bf16_act_linears = true;
  if (l.w1.format == DeviceExperts::Format::kBF16) m.has_bf16_act_linears = true;
  return l;
}

DeviceModel walk(Uploader& up, const ModelConfig& cfg, const ModelWeights& w, bool mtp, const WeightShard& shard) {
  DeviceModel m;
  m.cfg = cfg;
  DSV4_CHECK_MSG(shard.tp >= 1 && shard.tp_rank >= 0 && shard.tp_rank < shard.tp && cfg.o_groups % shard.tp == 0,
                 "upload: tensor-parallel rank ", shard.tp_rank, " of ", shard.tp, " over ", cfg.o_groups, " output groups");
  m.tp = shard.tp;
  m.embed = up.bf16(w.embed);
  m.head = up.linear(w.head);
  m.norm = up.bf16(w.norm);
  m.hc_head = up.hc(w.hc_head);
  for (const LayerWeights& lw : w.layers) m.layers.push_back(upload_layer(up, lw, shard, m));
  if (mtp && !w.mtp.empty()) {
    const MtpWeights& t = w.mtp.front();  // §10: drafting reuses block 0 recurrently
    DeviceMtp d;
    d.layer = upload_layer(up, t.layer, shard, m);
    d.e_proj = up.linear(t.e_proj);
    d.h_proj = up.linear(t.h_proj);
    for (const DeviceLinear* q : {&d.e_proj, &d.h_proj})
      if (!q->fp8 && !q->nvfp4) m.has_bf16_act_linears = true;
    d.enorm = up.bf16(t.enorm);
    d.hnorm = up.bf16(t.hnorm);
    d.norm = up.bf16(t.norm);
    d.hc_head = up.hc(t.hc_head);
    m.mtp = std::move(d);
  }
  m.inv_freq_main = up.from_host(rope_inv_freq(cfg.rope_main, int(cfg.qk_rope_head_dim)));
  m.inv_freq_compress = up.from_host(rope_inv_freq(cfg.rope_compress, int(cfg.qk_rope_head_dim)));
  m.bytes = up.bytes();
  return m;
}

}  // namespace

ExpertRange expert_range(int E, int rank, int ranks) {
  DSV4_CHECK_MSG(ranks >= 1 && rank >= 0 && rank < ranks && E >= ranks, "expert_range: rank ", rank, " of ", ranks,
                 " over ", E, " experts");
  const int first = int(int64_t(rank) * E / ranks), end = int(int64_t(rank + 1) * E / ranks);
  return {first, end - first};
}

size_t device_weight_bytes(const ModelConfig& cfg, const ModelWeights& w, bool mtp, const WeightShard& shard) {
  Uploader dry(true, 0, false);
  return walk(dry, cfg, w, mtp, shard).bytes;
}

DeviceModel upload_model(const ModelConfig& cfg, const ModelWeights& w, bool progress, bool mtp,
                         const RandomTensors* synthetic, const WeightShard& shard) {
  Uploader up(false, device_weight_bytes(cfg, w, mtp, shard), progress, synthetic);
  return walk(up, cfg, w, mtp, shard);
}

}  // namespace dsv4::cuda
