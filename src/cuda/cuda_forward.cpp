// The CUDA runtime (cuda_forward.h): device choice, weight upload and the memory plan (weights,
// step scratch, the paged KV pool, one size table through DeviceArena), sequences as slots plus
// KV blocks, and forward(): every item of a call goes through passes over the model whose rows
// hold chunks of many sequences (step_plan.h, layer_pass.h). A call whose items are all one-token
// decode steps replays the CUDA graph captured once for the smallest batch bucket that holds them;
// only the plan (and new page-table entries) change between replays.
#include "cuda/cuda_forward.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>

#include "cuda/cuda_check.h"
#include "cuda/device_model.h"
#include "cuda/kv_pool.h"
#include "cuda/layer_pass.h"
#include "cuda/matmul.h"
#include "cuda/step.h"
#include "cuda/step_plan.h"
#include "model/checkpoint.h"
#include "model/kv_blocks.h"
#include "model/model_summary.h"
#include "model/weights.h"
#include "util/error.h"

namespace dsv4 {

namespace {

using namespace dsv4::cuda;

constexpr double kGiB = double(1 << 30);
constexpr int kDefaultCudaSequences = 256;
constexpr int kMaxLogitRows = 256;  // logit rows per pass: the widest decode batch

size_t free_device_bytes() {
  size_t free_b = 0, total_b = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

// ForwardItem::sample comes from the caller: bad values are errors, not launcher invariants.
void validate(const DeviceSampling& d) {
  if (!(d.temperature >= 0.0f) || !std::isfinite(d.temperature))
    fail("device sampling: temperature must be a finite number >= 0, got ", d.temperature);
  if (d.top_k < 0) fail("device sampling: top-k must be >= 0, got ", d.top_k);
  if (!(d.top_p > 0.0f && d.top_p <= 1.0f))
    fail("device sampling: top-p must be in (0, 1], got ", d.top_p);
}

// Decode batch buckets: powers of two up to the largest batch (design.md "decode graphs per
// batch-size bucket"); a step of b sequences replays the smallest bucket >= b.
int bucket_for(int b) {
  int n = 1;
  while (n < b) n *= 2;
  return n;
}

// A sequence: a slot (window ring, compressor rings, page-table row) and the KV blocks it holds.
class CudaSequenceState final : public SequenceState {
 public:
  CudaSequenceState(KvBlockPool& pool, int32_t* page_mirror, int pages_per_slot, int32_t slot,
                    int64_t max_tokens)
      : pool_(&pool), pages_(page_mirror + int64_t(slot) * pages_per_slot), slot_(slot),
        max_tokens_(max_tokens) {}
  ~CudaSequenceState() override {
    pool_->give_blocks(blocks_);
    pool_->give_slot(slot_);
  }
  int64_t position() const override { return position_; }
  // Stale rows are never read (visibility is by position), so a reset only gives the blocks back.
  void reset() override {
    position_ = 0;
    pool_->give_blocks(blocks_);
    uploaded_ = 0;
  }
  int64_t max_tokens() const { return max_tokens_; }
  int32_t slot() const { return slot_; }
  void advance(int64_t n) { position_ += n; }
  bool reserve(int64_t n_tokens) {
    const int64_t need = (n_tokens + kKvBlockTokens - 1) / kKvBlockTokens - int64_t(blocks_.size());
    if (need <= 0) return true;
    const size_t had = blocks_.size();
    if (!pool_->take_blocks(need, blocks_)) return false;
    std::copy(blocks_.begin() + std::ptrdiff_t(had), blocks_.end(), pages_ + had);
    return true;
  }
  // Copies the page-table entries the device has not seen yet (pinned mirror -> device).
  void upload_pages(int32_t* device_row, cudaStream_t stream) {
    if (uploaded_ == blocks_.size()) return;
    DSV4_CUDA_CHECK(cudaMemcpyAsync(device_row + uploaded_, pages_ + uploaded_,
                                    (blocks_.size() - uploaded_) * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, stream));
    uploaded_ = blocks_.size();
  }

 private:
  KvBlockPool* pool_;
  int32_t* pages_;  // this slot's row of the pinned page-table mirror
  int32_t slot_;
  int64_t position_ = 0, max_tokens_ = 0;
  std::vector<int32_t> blocks_;
  size_t uploaded_ = 0;
};

CudaSequenceState& cuda_sequence(SequenceState* s) {
  auto* c = dynamic_cast<CudaSequenceState*>(s);
  if (!c) fail("forward: the sequence state was not created by the CUDA backend");
  return *c;
}

// Everything the device holds besides the weights, sized from one shape (device_arena.h).
struct DeviceState {
  DeviceState(const DeviceModel& m, const KvPoolShape& kv_shape, const ScratchShape& sh, DeviceArena& arena)
      : plan(sh.rows, sh.logits, arena), kv(m, kv_shape, arena), scratch(m.cfg, sh, arena) {}
  StepPlan plan;
  KvPool kv;
  Scratch scratch;
};

ScratchShape scratch_shape(const DeviceModel& m, const KvPoolShape& kv, int logit_rows) {
  DeviceArena count;
  KvPool sizing(m, kv, count);
  return {kv.pass_rows, logit_rows, sizing.max_n_idx(), sizing.max_csa_entries()};
}

size_t device_state_bytes(const DeviceModel& m, const KvPoolShape& kv, int logit_rows) {
  DeviceArena count;
  DeviceState sizing(m, kv, scratch_shape(m, kv, logit_rows), count);
  return count.used();
}

class CudaForward final : public Forward {
 public:
  CudaForward(const std::filesystem::path& dir, const CudaOptions& opt) : opt_(opt) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0)
      fail("--backend cuda: no CUDA device is available");
    if (opt.device < 0 || opt.device >= n_dev)
      fail("CUDA device ", opt.device, " does not exist (", n_dev, " devices)");
    DSV4_CUDA_CHECK(cudaSetDevice(opt.device));
    ModelConfig cfg = ModelConfig::load(dir);
    check_cuda_supported(cfg);
    Checkpoint ckpt = Checkpoint::open(dir);
    const ModelWeights w = bind_weights(cfg, ckpt);

    // The memory plan: weights, then the step buffers and one sequence slot at full context must
    // fit; what the utilisation limit leaves after them goes to slots and KV blocks.
    size_t free_b = 0, total_b = 0;
    DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const int64_t ctx = opt.ctx_size > 0 ? std::min(opt.ctx_size, cfg.max_position_embeddings)
                                         : cfg.max_position_embeddings;
    // cuBLASLt's workspace (matmul.h) is taken before anything is captured.
    const size_t weights = device_weight_bytes(cfg, w) + matmul_workspace_bytes();
    const size_t limit = size_t(double(total_b) * opt.gpu_memory_utilization);
    const size_t in_use = total_b - free_b;
    const size_t usable = limit > in_use ? std::min(limit - in_use, free_b) : 0;
    DeviceModel shell;  // sizing needs only the config and the layer specs
    shell.cfg = cfg;
    shell.layers = layer_shells(w);
    KvPoolShape shape;
    shape.max_context = ctx;
    shape.pass_rows = opt.max_pass_rows;
    shape.n_slots = 1;
    shape.n_blocks = int(std::min<int64_t>((ctx + kKvBlockTokens - 1) / kKvBlockTokens, INT32_MAX));
    const size_t minimum = weights + device_state_bytes(shell, shape, kMaxLogitRows);
    if (minimum > usable) {
      // inspect's plan for GPUs of this usable size: experts split across them, the rest replicated.
      const WeightBytesSplit split = split_weight_bytes(ckpt);
      const int n = gpus_needed(gpu_plan(cfg, split.experts, split.other, ctx, double(usable)));
      const std::string gpus = n > 1 ? cat("; the weights need ", n, " GPUs of this size with the routed experts split "
                                           "across them (`dsv4 inspect --gpu-gib ", int64_t(usable / kGiB), "`)")
                                     : n == 0 ? std::string("; not even 8 GPUs of this size hold the weights")
                                              : std::string("; a smaller --ctx-size needs less");
      fail("the model needs ", minimum / kGiB, " GiB of GPU memory (weights ", weights / kGiB,
           " GiB, step buffers and one sequence of ", ctx, " tokens), ", usable / kGiB,
           " GiB are usable on device ", opt.device, " (", free_b / kGiB, " GiB free, --gpu-memory-utilization ",
           opt.gpu_memory_utilization, ")", gpus);
    }
    model_ = std::make_unique<DeviceModel>(upload_model(cfg, w, opt.progress));
    matmul_reserve();

    // Slots, then blocks from what is left (the KV budget).
    shape.n_slots = opt.max_sequences > 0 ? int(opt.max_sequences) : kDefaultCudaSequences;
    shape.n_blocks = 0;
    const size_t left = usable - weights;
    const size_t fixed = device_state_bytes(*model_, shape, kMaxLogitRows);
    if (fixed > left)
      fail(shape.n_slots, " sequence slots need ", fixed / kGiB, " GiB, ", left / kGiB,
           " GiB are left after the weights: lower --max-seqs");
    if (opt.kv_cache_tokens > 0) {
      shape.n_blocks = int(std::min<int64_t>((opt.kv_cache_tokens + kKvBlockTokens - 1) / kKvBlockTokens, INT32_MAX));
      if (device_state_bytes(*model_, shape, kMaxLogitRows) > left)
        fail("--kv-cache-tokens ", opt.kv_cache_tokens, " needs more GPU memory than the ", left / kGiB,
             " GiB left after the weights");
    } else {
      shape.n_blocks = fit_blocks(shape, left);
    }
    // One sequence never holds more than the pool.
    shape.max_context = std::min<int64_t>(ctx, int64_t(shape.n_blocks) * kKvBlockTokens);
    if (shape.max_context < 1) fail("no KV cache fits in the GPU memory left after the weights");
    arena_ = std::make_unique<DeviceArena>(device_state_bytes(*model_, shape, kMaxLogitRows));
    state_ = std::make_unique<DeviceState>(*model_, shape, scratch_shape(*model_, shape, kMaxLogitRows), *arena_);
    blocks_ = std::make_unique<KvBlockPool>(shape.n_blocks, shape.n_slots);
    const size_t mirror = size_t(shape.n_slots) * shape.pages_per_slot();
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&page_mirror_), mirror * sizeof(int32_t)));
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&sampled_host_), kMaxLogitRows * sizeof(int32_t)));
    DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    if (opt.progress)
      std::fprintf(stderr, "KV cache: %d slots, %d blocks of %lld tokens (%.2f GiB with the step buffers), context %lld\n",
                   shape.n_slots, shape.n_blocks, (long long)kKvBlockTokens, arena_->used() / kGiB,
                   (long long)shape.max_context);
  }

  ~CudaForward() override {
    for (auto& [b, g] : graphs_) cudaGraphExecDestroy(g);
    if (stream_) cudaStreamDestroy(stream_);
    if (page_mirror_) cudaFreeHost(page_mirror_);
    if (sampled_host_) cudaFreeHost(sampled_host_);
  }

  const ModelConfig& config() const override { return model_->cfg; }
  bool samples_on_device() const override { return true; }

  KvCacheInfo kv_cache() const override {
    const KvPoolShape& s = state_->kv.shape;
    KvCacheInfo k;
    k.block_tokens = kKvBlockTokens;
    k.total_blocks = s.n_blocks;
    k.free_blocks = blocks_->free_blocks();
    k.max_sequences = s.n_slots;
    k.free_sequences = blocks_->free_slots();
    k.max_context = s.max_context;
    return k;
  }

  std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) override {
    const KvPoolShape& s = state_->kv.shape;
    if (max_tokens <= 0) fail("new_sequence: max_tokens must be positive, got ", max_tokens);
    if (max_tokens > s.max_context)
      fail("a sequence of ", max_tokens, " tokens is longer than the context (", s.max_context, " tokens)");
    const int32_t slot = blocks_->take_slot();
    if (slot < 0) fail("all ", s.n_slots, " sequence slots are in use");
    return std::make_unique<CudaSequenceState>(*blocks_, page_mirror_, s.pages_per_slot(), slot, max_tokens);
  }

  bool reserve(SequenceState& seq, int64_t n_tokens) override {
    return cuda_sequence(&seq).reserve(n_tokens);
  }

  void forward(std::span<ForwardItem> batch, const TraceHook* trace) override {
    const ModelConfig& cfg = model_->cfg;
    const int64_t V = cfg.vocab_size;
    bool all_decode = true;
    for (ForwardItem& item : batch) {
      CudaSequenceState& seq = cuda_sequence(item.seq);
      DSV4_CHECK(item.sample == nullptr || item.sampled != nullptr);
      if (item.sample) validate(*item.sample);
      const int64_t T = int64_t(item.tokens.size());
      if (T == 0 && item.sample) fail("forward: a chunk of no tokens has no next token to sample");
      if (seq.position() + T > seq.max_tokens())
        fail("forward: sequence would reach ", seq.position() + T, " tokens, its limit is ", seq.max_tokens());
      for (int64_t t = 0; t < T; ++t)
        if (item.tokens[size_t(t)] < 0 || item.tokens[size_t(t)] >= V)
          fail("token ", t, " of the chunk: id ", item.tokens[size_t(t)], " is outside the vocabulary [0, ", V, ")");
      if (!seq.reserve(seq.position() + T))
        fail("the KV cache is full: a sequence of ", seq.position() + T, " tokens needs ",
             kv_cache().blocks_for(seq.position() + T), " blocks, ", blocks_->free_blocks(), " are free");
      if (item.logits) item.logits->assign(size_t((item.all_logits ? T : (T > 0 ? 1 : 0)) * V), 0.0f);
      all_decode = all_decode && T == 1;
    }
    for (size_t i = 0; i < batch.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (batch[i].seq == batch[j].seq) fail("forward: a sequence appears twice in one batch");
    const bool tracing = trace && *trace;
    if (all_decode && !batch.empty() && opt_.use_graph && !tracing &&
        int(batch.size()) <= max_decode_batch()) {
      decode_with_graph(batch);
    } else {
      run_passes(batch, trace);
    }
  }

 private:
  // Layer specs and compressor shapes without device memory: what sizing needs before upload.
  static std::vector<DeviceLayer> layer_shells(const ModelWeights& w) {
    std::vector<DeviceLayer> out;
    for (const LayerWeights& lw : w.layers) {
      DeviceLayer l;
      l.spec = lw.spec;
      auto shell = [](const CompressorWeights& c) {
        DeviceCompressor d;
        d.ratio = int(c.ratio);
        d.width = int(c.width);
        d.coff = int(compressor_overlap(c.ratio));
        return d;
      };
      if (lw.attn.compressor) l.compressor = shell(*lw.attn.compressor);
      if (lw.attn.indexer) l.idx_compressor = shell(lw.attn.indexer->compressor);
      out.push_back(std::move(l));
    }
    return out;
  }

  int fit_blocks(KvPoolShape shape, size_t budget) const {
    auto fits = [&](int64_t n) {
      shape.n_blocks = int(n);
      try {
        return device_state_bytes(*model_, shape, kMaxLogitRows) <= budget;
      } catch (const Error&) {  // past the int32 row limit of a layer pool
        return false;
      }
    };
    if (!fits(0)) return 0;
    int64_t lo = 0, hi = 1;
    while (hi < INT32_MAX / 2 && fits(hi)) lo = hi, hi *= 2;
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (fits(mid) ? lo : hi) = mid;
    }
    return int(lo);
  }

  int max_decode_batch() const {
    return std::min({state_->kv.shape.n_slots, state_->plan.max_rows(), kMaxLogitRows});
  }

  StepContext context(int T, int n_logits, const TraceHook* trace) {
    return StepContext{*model_, state_->kv, state_->scratch, state_->plan, stream_, trace, T, n_logits,
                       state_->plan.device_rows(), state_->plan.tokens(), state_->plan.n_real(), {}};
  }

  static RowSampling row_sampling(const DeviceSampling* d, int64_t sampled_position) {
    RowSampling r;
    if (!d) return r;  // greedy: a value nobody reads
    r.temperature = d->temperature;
    r.top_k = d->top_k;
    r.top_p = d->top_p;
    r.seed = d->seed;
    r.step = uint64_t(sampled_position);  // draws depend on (seed, position) only
    return r;
  }

  void upload_pages(std::span<ForwardItem> items) {
    const int P = state_->kv.shape.pages_per_slot();
    for (ForwardItem& it : items) {
      CudaSequenceState& s = cuda_sequence(it.seq);
      s.upload_pages(state_->kv.page_table + int64_t(s.slot()) * P, stream_);
    }
  }

  // The device's choice for logit row `row` (the token at `position`), after the stream
  // synchronised; the kernel's sentinel for NaN / +inf / all −inf logits becomes an error.
  int32_t checked_sample(int row, int64_t position) const {
    const int32_t id = sampled_host_[row];
    if (id == kSampleInvalidToken)
      fail("non-finite logits before position ", position,
           " (NaN, +inf or every logit -inf): no token can be sampled");
    DSV4_CHECK_MSG(id >= 0 && id < model_->cfg.vocab_size, "device sampler returned id ", id);
    return id;
  }

  // Eager passes: each holds chunks of several sequences, at most pass_rows rows and
  // kMaxLogitRows logit rows. An item that does not fit what is left of a pass waits for the next
  // one; only an item longer than a whole pass is split, at the same boundaries as when it runs
  // alone. Inside a pass the short chunks come first and each long chunk is its own matmul call
  // (StepContext::segments), so a sequence's rows are computed as if alone (batch invariance).
  void run_passes(std::span<ForwardItem> batch, const TraceHook* trace) {
    const int64_t V = model_->cfg.vocab_size;
    StepPlan& plan = state_->plan;
    std::vector<int64_t> done(batch.size(), 0);
    struct Part {
      size_t item;
      int64_t t0, n;
      int first_row = 0, first_logit = 0, n_logits = 0;
      bool samples = false;
    };
    while (true) {
      // Which chunks go in this pass.
      std::vector<Part> parts;
      int64_t rows = 0, logits = 0;
      for (size_t i = 0; i < batch.size(); ++i) {
        const ForwardItem& it = batch[i];
        const int64_t left = int64_t(it.tokens.size()) - done[i];
        if (left == 0) continue;
        const bool wants_row = it.logits || it.sample;
        auto logit_rows = [&](int64_t n) { return it.all_logits ? n : (n == left && wants_row ? 1 : 0); };
        int64_t n = left;
        if (rows + n > plan.max_rows() || logits + logit_rows(n) > plan.max_logits()) {
          if (!parts.empty()) continue;  // waits for a pass of its own
          n = std::min<int64_t>(n, plan.max_rows());
          if (it.all_logits) n = std::min<int64_t>(n, plan.max_logits());
        }
        parts.push_back({i, done[i], n});
        rows += n;
        logits += logit_rows(n);
      }
      if (parts.empty()) break;
      std::stable_sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) {
        return (x.n <= kInvariantSliceRows) > (y.n <= kInvariantSliceRows);
      });

      // The plan, and the matmul segments: the short chunks' rows in slices, each long chunk alone.
      plan.clear();
      segments_.clear();
      for (Part& p : parts) {
        ForwardItem& it = batch[p.item];
        CudaSequenceState& seq = cuda_sequence(it.seq);
        const int64_t pos0 = seq.position();
        const bool last_chunk = p.t0 + p.n == int64_t(it.tokens.size());
        p.first_row = plan.rows();
        p.first_logit = plan.logit_rows();
        plan.add_chunk(seq.slot(), pos0, it.tokens.data() + p.t0, int(p.n));
        if (it.all_logits) {
          for (int64_t r = 0; r < p.n; ++r)
            plan.add_logit_row(p.first_row + int(r),
                               row_sampling(last_chunk && r == p.n - 1 ? it.sample : nullptr, pos0 + r + 1));
        } else if (last_chunk && (it.logits || it.sample)) {
          plan.add_logit_row(p.first_row + int(p.n - 1), row_sampling(it.sample, pos0 + p.n));
        }
        p.n_logits = plan.logit_rows() - p.first_logit;
        p.samples = last_chunk && it.sample != nullptr;
        if (p.n > kInvariantSliceRows) {
          segments_.push_back({p.first_row, int(p.n)});
        } else if (!segments_.empty() && segments_.back().n < kInvariantSliceRows &&
                   segments_.back().first + segments_.back().n == p.first_row &&
                   segments_.back().n + int(p.n) <= kInvariantSliceRows) {
          segments_.back().n += int(p.n);
        } else {
          segments_.push_back({p.first_row, int(p.n)});
        }
        done[p.item] += p.n;
        seq.advance(p.n);  // positions of this pass are in the plan; the host state moves on now
      }
      std::vector<ForwardItem> in_pass;
      for (const Part& p : parts) in_pass.push_back(batch[p.item]);
      upload_pages(in_pass);
      plan.upload(stream_);
      const bool sample = std::any_of(parts.begin(), parts.end(), [](const Part& p) { return p.samples; });
      StepContext c = context(plan.rows(), plan.logit_rows(), trace);
      c.segments = segments_;
      enqueue_pass(c, sample);
      for (const Part& p : parts) {
        ForwardItem& it = batch[p.item];
        if (!it.logits || p.n_logits == 0) continue;
        const int64_t out_row = it.all_logits ? p.t0 : 0;
        DSV4_CUDA_CHECK(cudaMemcpyAsync(it.logits->data() + out_row * V,
                                        state_->scratch.logits + int64_t(p.first_logit) * V,
                                        size_t(p.n_logits * V) * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      }
      if (sample)
        DSV4_CUDA_CHECK(cudaMemcpyAsync(sampled_host_, state_->scratch.sampled, plan.logit_rows() * sizeof(int32_t),
                                        cudaMemcpyDeviceToHost, stream_));
      DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (const Part& p : parts) {
        if (!p.samples) continue;
        ForwardItem& it = batch[p.item];
        *it.sampled = checked_sample(p.first_logit + p.n_logits - 1, cuda_sequence(it.seq).position());
      }
    }
  }

  // One-token steps of up to max_decode_batch() sequences: the bucket's graph, captured on first use.
  void decode_with_graph(std::span<ForwardItem> batch) {
    const int64_t V = model_->cfg.vocab_size;
    const int b = int(batch.size()), B = bucket_for(b);
    StepPlan& plan = state_->plan;
    plan.clear();
    for (int i = 0; i < b; ++i) {
      CudaSequenceState& seq = cuda_sequence(batch[size_t(i)].seq);
      plan.add_chunk(seq.slot(), seq.position(), batch[size_t(i)].tokens.data(), 1);
    }
    plan.pad_to(B);
    for (int i = 0; i < B; ++i) {
      const ForwardItem* it = i < b ? &batch[size_t(i)] : nullptr;
      plan.add_logit_row(i, row_sampling(it ? it->sample : nullptr,
                                         it ? cuda_sequence(it->seq).position() + 1 : 0));
    }
    auto graph = graphs_.find(B);
    if (graph == graphs_.end()) graph = graphs_.emplace(B, capture(B)).first;
    const bool check = opt_.check_step && replays_[B] > 0;
    const size_t free_before = check ? free_device_bytes() : 0;
    upload_pages(batch);
    DSV4_CUDA_CHECK(cudaGraphLaunch(graph->second, stream_));
    for (int i = 0; i < b; ++i)
      if (batch[size_t(i)].logits)
        DSV4_CUDA_CHECK(cudaMemcpyAsync(batch[size_t(i)].logits->data(), state_->scratch.logits + int64_t(i) * V,
                                        size_t(V) * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    ++replays_[B];
    if (check && free_device_bytes() != free_before)
      fail("check-step: device memory changed during a decode step (an allocation inside the step)");
    for (int i = 0; i < b; ++i) {
      ForwardItem& it = batch[size_t(i)];
      CudaSequenceState& seq = cuda_sequence(it.seq);
      seq.advance(1);
      if (it.sample) *it.sampled = checked_sample(i, seq.position());
    }
  }

  // Global capture mode: a host synchronisation or allocation inside the step fails the capture
  // with a CUDA error instead of being baked into the graph. The plan's upload and the sampled
  // ids' download are part of the graph; only the plan's pinned contents change between replays.
  cudaGraphExec_t capture(int B) {
    if (opt_.progress) std::fprintf(stderr, "capturing the decode graph for batch %d\n", B);
    cudaGraph_t graph = nullptr;
    DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    try {
      state_->plan.upload(stream_);
      enqueue_pass(context(B, B, nullptr), true);
      DSV4_CUDA_CHECK(cudaMemcpyAsync(sampled_host_, state_->scratch.sampled, size_t(B) * sizeof(int32_t),
                                      cudaMemcpyDeviceToHost, stream_));
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (end != cudaSuccess)
      fail("the decode step could not be captured as one CUDA graph (", cudaGetErrorString(end),
           "): a host synchronisation or allocation happened inside the step");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    DSV4_CUDA_CHECK(inst);
    return exec;
  }

  CudaOptions opt_;
  std::unique_ptr<DeviceModel> model_;
  std::unique_ptr<DeviceArena> arena_;
  std::unique_ptr<DeviceState> state_;
  std::unique_ptr<KvBlockPool> blocks_;
  int32_t* page_mirror_ = nullptr;   // pinned [n_slots, pages_per_slot]
  int32_t* sampled_host_ = nullptr;  // pinned [kMaxLogitRows]
  cudaStream_t stream_ = nullptr;
  std::map<int, cudaGraphExec_t> graphs_;  // decode graph per batch bucket
  std::map<int, int64_t> replays_;
  std::vector<RowRange> segments_;  // the current pass's matmul segments (StepContext::segments)
};

}  // namespace

std::unique_ptr<Forward> make_cuda_forward(const std::filesystem::path& model_dir,
                                           const CudaOptions& options) {
  return std::make_unique<CudaForward>(model_dir, options);
}

}  // namespace dsv4
