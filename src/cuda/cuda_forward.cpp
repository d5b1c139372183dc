// The CUDA runtime (cuda_forward.h): device choice, weight upload and the memory plan (weights,
// step scratch, the paged KV pool, one size table through DeviceArena), sequences as slots plus
// KV blocks, and forward(): every item of a call goes through passes over the model whose rows
// hold chunks of many sequences (step_plan.h, layer_pass.h). A call whose items are all one-token
// decode steps replays the CUDA graph captured once for the smallest batch bucket that holds them;
// only the plan (and new page-table entries) change between replays. Speculative decoding
// (model/forward.h's protocol): the MTP block runs after a pass over its items' rows, draft()
// runs it recurrently, rollback() truncates — every ring keeps model/rollback.h's margin.
#include "cuda/cuda_forward.h"

#include <cuda_profiler_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/collective.h"
#include "cuda/cuda_check.h"
#include "cuda/device_model.h"
#include "cuda/host_experts.h"
#include "cuda/kernels/mtp_streams.cuh"
#include "cuda/kv_pool.h"
#include "cuda/layer_pass.h"
#include "cuda/sequence_state.h"
#include "cuda/matmul.h"
#include "cuda/step.h"
#include "cuda/step_plan.h"
#include "model/checkpoint.h"
#include "model/kv_blocks.h"
#include "model/model_summary.h"
#include "model/skeleton.h"
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

// Everything the device holds besides the weights, sized from one shape (device_arena.h).
struct DeviceState {
  DeviceState(const DeviceModel& m, const KvPoolShape& kv_shape, const ScratchShape& sh, DeviceArena& arena)
      : plan(sh.rows, sh.logits, arena), kv(m, kv_shape, arena), scratch(m.cfg, sh, arena) {
    if (m.mtp) mtp_plan.emplace(sh.rows, sh.logits, arena);
  }
  StepPlan plan;
  KvPool kv;
  Scratch scratch;
  std::optional<StepPlan> mtp_plan;  // the MTP block's rows (§10), when it is on the device
};

ScratchShape scratch_shape(const DeviceModel& m, const KvPoolShape& kv, int logit_rows, const MoeShard& moe) {
  DeviceArena count;
  KvPool sizing(m, kv, count);
  return {kv.pass_rows, logit_rows, sizing.max_n_idx(), sizing.max_csa_entries(), sizing.max_entries(),
          m.prefill_attention, m.mtp.has_value(), moe, m.tp > 1};
}

// A pass's matmul segments (StepContext::segments) grow chunk by chunk: a chunk longer than
// kInvariantSliceRows is its own call; short chunks share slices of up to kInvariantSliceRows.
void append_segment(std::vector<RowRange>& segments, int first, int n) {
  if (n <= kInvariantSliceRows && !segments.empty() && segments.back().n < kInvariantSliceRows &&
      segments.back().first + segments.back().n == first && segments.back().n + n <= kInvariantSliceRows) {
    segments.back().n += n;
    return;
  }
  segments.push_back({first, n});
}

// DSV4_PROFILE_PASS=N: the process's N-th eager pass (1-based; a prefill of P tokens is
// ceil(P / pass rows) of them) runs between cudaProfilerStart and cudaProfilerStop, so that
// `ncu --profile-from-start off` times that pass's kernels alone, not the thousands before it
// (scripts/gpu_kernel_profile.sh PASS=N). DSV4_PROFILE_PASS=traced: every traced pass instead —
// `dsv4 bench` traces one decode step after the timed ones (the experts it touched), eagerly,
// so its kernels are those of a replayed step without the prefill of the context before it.
// Unset or 0: no profiler calls.
class ProfiledPass {
 public:
  ProfiledPass() {
    if (const char* v = std::getenv("DSV4_PROFILE_PASS"); v && *v) {
      if (std::string_view(v) == "traced") {
        traced_ = true;
        return;
      }
      char* end = nullptr;
      target_ = std::strtol(v, &end, 10);
      if (*end != '\0' || target_ < 0)
        fail("DSV4_PROFILE_PASS=", v, ": expected a pass number (1 is the first) or \"traced\"");
    }
  }
  void before(bool traced) {
    on_ = ++count_ == target_ || (traced_ && traced);
    if (on_) DSV4_CUDA_CHECK(cudaProfilerStart());
  }
  void after() {
    if (on_) DSV4_CUDA_CHECK(cudaProfilerStop());
  }

 private:
  long target_ = 0, count_ = 0;
  bool traced_ = false, on_ = false;
};

size_t device_state_bytes(const DeviceModel& m, const KvPoolShape& kv, int logit_rows, const MoeShard& moe) {
  DeviceArena count;
  DeviceState sizing(m, kv, scratch_shape(m, kv, logit_rows, moe), count);
  return count.used();
}

constexpr int kMaxRanks = kMaxLoopbackRanks;  // the GPUs of one host (an H200 host has 8)

// One rank of the model (expert parallelism, layer_pass.h): its device, its routed experts, its
// weights, step state and stream.
struct Rank {
  int device = 0;
  WeightShard shard;  // its routed experts and attention heads
  std::unique_ptr<DeviceModel> model;
  std::unique_ptr<DeviceArena> arena;
  std::unique_ptr<DeviceState> state;
  cudaStream_t stream = nullptr;
  bool owns_stream = false;  // virtual ranks of one device share the first one's
  // One rank alone: a second stream and its fork/join events for the stretches of a pass that run
  // beside the rest (StepContext::branch).
  cudaStream_t branch = nullptr;
  cudaEvent_t branch_fork = nullptr, branch_join = nullptr;
};

// What a rank's MoE scratch holds: its experts, pick-order outputs when a collective or the host
// tier adds to them, and a dispatch plan for the host tier's experts when they can run on the GPU.
MoeShard moe_shard(const Rank& rank, bool picks, int host_experts_on_gpu) {
  return {rank.shard.experts.count > 0 ? rank.shard.experts.count : 0, picks, host_experts_on_gpu};
}

// One device's share of the memory plan.
struct DevicePlan {
  int ranks = 0;
  size_t free = 0, usable = 0;
  size_t weights = 0;  // its ranks' weights and the cuBLASLt workspace
  size_t minimum = 0;  // + per rank the step buffers and one sequence at full context
};

// A device's free bytes and what the utilisation limit (and the cap, CudaOptions::gpu_memory_limit,
// when set) lets dsv4 use of them.
std::pair<size_t, size_t> device_memory(int device, const CudaOptions& opt) {
  DSV4_CUDA_CHECK(cudaSetDevice(device));
  size_t free_b = 0, total_b = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t limit = size_t(double(total_b) * opt.gpu_memory_utilization);
  const size_t in_use = total_b - free_b;
  const size_t usable = limit > in_use ? std::min(limit - in_use, free_b) : 0;
  return {free_b, opt.gpu_memory_limit > 0 ? std::min(usable, opt.gpu_memory_limit) : usable};
}

// A captured step: one graph per distinct stream of the ranks (virtual ranks share one).
using StepGraph = std::vector<std::pair<cudaStream_t, cudaGraphExec_t>>;
void destroy(StepGraph& g) {
  for (auto& [stream, exec] : g) cudaGraphExecDestroy(exec);
}

class CudaForward final : public Forward {
 public:
  CudaForward(const std::filesystem::path& dir, const CudaOptions& opt) : opt_(opt) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0)
      fail("--backend cuda: no CUDA device is available");
    if (opt.ep < 0 || opt.ep > kMaxRanks) fail("--gpus / --ep must be in [1, ", kMaxRanks, "], got ", opt.ep);
    const bool loopback = opt.comm == CudaOptions::Comm::kLoopback;
    if (opt.ep == 0 && loopback) fail("--comm loopback needs the number of virtual ranks (--ep N)");
    if (opt.device < 0 || opt.device >= n_dev) fail("CUDA device ", opt.device, " does not exist (", n_dev, " devices)");
    ModelConfig cfg = ModelConfig::load(dir);
    check_cuda_supported(cfg);
    Checkpoint ckpt = Checkpoint::open(dir);
    const ModelWeights w = bind_weights(cfg, ckpt);
    const int64_t ctx = opt.ctx_size > 0 ? std::min(opt.ctx_size, cfg.max_position_embeddings)
                                         : cfg.max_position_embeddings;
    // The host tier runs beside one GPU; auto's count is known once the memory plan below can
    // size the GPU's share.
    const bool host_asked = opt.cpu_experts != 0;
    const int E = int(cfg.n_routed_experts);
    if (host_asked && (opt.ep > 1 || opt.tp != 1 || opt.comm != CudaOptions::Comm::kAuto))
      fail("--cpu-experts: the host tier runs beside one GPU (no --gpus/--ep/--tp/--comm)");
    if (host_asked && opt.cpu_experts != CudaOptions::kAutoCpuExperts && (opt.cpu_experts < 1 || opt.cpu_experts >= E))
      fail("--cpu-experts ", opt.cpu_experts, ": between 1 and ", E - 1, " of the model's ", E,
           " routed experts per layer (the GPU keeps at least one)");
    const int n_ranks = host_asked ? 1 : opt.ep > 0 ? opt.ep : gpus_needed_here(cfg, ckpt, ctx, n_dev);
    opt_.ep = n_ranks;
    const int last_device = loopback ? opt.device : opt.device + n_ranks - 1;
    if (last_device >= n_dev)
      fail(n_ranks, " expert-parallel ranks need CUDA devices ", opt.device, "..", last_device, " (", n_dev, " devices)");
    if (n_ranks > cfg.n_routed_experts)
      fail("--ep ", n_ranks, ": the model has only ", cfg.n_routed_experts, " routed experts to split");
    if (opt.tp != 1 && opt.tp != n_ranks)
      fail("--tp ", opt.tp, ": attention is split over all the ranks or none (--tp 1 or --tp ", n_ranks, " with ",
           n_ranks, " ranks)");
    if (cfg.o_groups % opt.tp != 0)
      fail("--tp ", opt.tp, ": the model's ", cfg.o_groups, " attention output groups do not split evenly");

    // The ranks: the routed experts split over them, everything else on each (docs/parallel.md); a
    // collective sums their routed outputs unless one rank runs alone.
    const bool collective = n_ranks > 1 || opt.comm != CudaOptions::Comm::kAuto;
    ranks_.resize(size_t(n_ranks));
    for (int r = 0; r < n_ranks; ++r) {
      ranks_[size_t(r)].device = loopback ? opt.device : opt.device + r;
      WeightShard& shard = ranks_[size_t(r)].shard;
      if (n_ranks > 1) shard.experts = expert_range(int(cfg.n_routed_experts), r, n_ranks);
      shard.tp = opt.tp;
      shard.tp_rank = opt.tp > 1 ? r : 0;
    }

    // The memory plan, per device: the weights of its ranks, then per rank the step buffers and one
    // sequence slot at full context must fit; what the utilisation limit leaves after them goes to
    // slots and KV blocks (the same number on every rank: they hold the same sequences).
    DeviceModel shell;  // sizing needs only the config, the layer specs and the head split
    shell.cfg = cfg;
    shell.tp = opt.tp;
    shell.prefill_attention = opt.prefill_attention;  // its chunk key rows are step scratch
    shell.layers = layer_shells(w);
    if (opt.draft && !w.mtp.empty()) {
      shell.mtp.emplace();
      shell.mtp->layer.spec = w.mtp.front().layer.spec;  // §10: sliding window, no compressor
    }
    KvPoolShape shape;
    shape.max_context = ctx;
    shape.pass_rows = opt.max_pass_rows;
    shape.n_slots = 1;
    shape.n_blocks = int(std::min<int64_t>((ctx + kKvBlockTokens - 1) / kKvBlockTokens, INT32_MAX));
    const int host_experts =  // per layer; 0 when auto finds that everything fits
        opt.cpu_experts == CudaOptions::kAutoCpuExperts ? fewest_host_experts(cfg, w, shell, shape) : opt.cpu_experts;
    const bool host_tier = host_experts > 0;
    // Of those, the ones whose decode rows the host's cores compute (the rest cross the bus).
    const int core_experts = host_tier ? core_experts_for(host_experts, opt.host_cores_share) : 0;
    if (host_tier) ranks_.front().shard.experts = {0, E - host_experts};
    const bool picks = collective || host_tier;  // routed outputs in pick order (moe_step.h)
    // The host tier's GPU share: one layer of its experts (a pass of many rows copies them there).
    const size_t host_staging = host_tier ? HostExperts::device_bytes(w, E - host_experts) : 0;
    const int host_on_gpu = host_staging > 0 ? host_experts : 0;
    std::map<int, DevicePlan> devices;  // per device ordinal
    for (Rank& rank : ranks_) {
      DevicePlan& d = devices[rank.device];
      if (d.ranks == 0) {
        std::tie(d.free, d.usable) = device_memory(rank.device, opt);
        d.weights = matmul_workspace_bytes();  // cuBLASLt's, taken before anything is captured
      }
      ++d.ranks;
      d.weights += device_weight_bytes(cfg, w, opt.draft, rank.shard) + host_staging;
      d.minimum = d.weights +
                  size_t(d.ranks) * device_state_bytes(shell, shape, kMaxLogitRows, moe_shard(rank, picks, host_on_gpu));
    }
    for (const auto& [device, d] : devices) {
      if (d.minimum <= d.usable) continue;
      // inspect's plan for GPUs of this usable size: experts split across them, the rest replicated.
      const WeightBytesSplit split = split_weight_bytes(ckpt, opt.draft);
      const int n = gpus_needed(gpu_plan(cfg, split.experts, split.other, ctx, double(d.usable)));
      const std::string gpus = n > n_ranks ? cat("; the weights need ", n, " GPUs of this size with the routed experts split "
                                                "across them (`dsv4 inspect --gpu-gib ", int64_t(d.usable / kGiB), "`), "
                                                "or some routed experts in host memory (--cpu-experts auto)")
                               : n == 0 ? std::string("; not even 8 GPUs of this size hold the weights")
                                        : std::string("; a smaller --ctx-size needs less");
      fail("the model needs ", d.minimum / kGiB, " GiB of GPU memory on device ", device, " (weights ",
           d.weights / kGiB, " GiB for ", d.ranks, d.ranks == 1 ? " rank" : " ranks",
           ", step buffers and one sequence of ", ctx, " tokens), ", d.usable / kGiB, " GiB are usable (",
           d.free / kGiB, " GiB free, --gpu-memory-utilization ", opt.gpu_memory_utilization, ")", gpus);
    }
    std::optional<RandomTensors> synthetic;
    if (opt.synthetic_seed) synthetic.emplace(cfg, *opt.synthetic_seed);
    for (Rank& rank : ranks_) {
      DSV4_CUDA_CHECK(cudaSetDevice(rank.device));
      if (opt.progress && ranks_.size() > 1)
        std::fprintf(stderr, "rank %d of %zu: device %d, routed experts [%d, %d), attention heads %d of %lld\n",
                     int(&rank - ranks_.data()), ranks_.size(), rank.device, rank.shard.experts.first,
                     rank.shard.experts.first + rank.shard.experts.count, int(cfg.num_attention_heads) / opt.tp,
                     (long long)cfg.num_attention_heads);
      rank.model = std::make_unique<DeviceModel>(
          upload_model(cfg, w, opt.progress, opt.draft, synthetic ? &*synthetic : nullptr, rank.shard));
      rank.model->fp8_expert_prefill = opt.fp8_expert_prefill;
      rank.model->fp8_expert_decode = opt.fp8_expert_decode;
      rank.model->prefill_attention = opt.prefill_attention;
      matmul_reserve();
    }
    checkpoint_has_mtp_ = !w.mtp.empty();
    if (host_tier) {
      const int first = ranks_.front().shard.experts.count;
      if (opt.progress)
        std::fprintf(stderr, "host tier: %d of %d routed experts per layer in host memory (ids %d..%d)\n", E - first, E,
                     first, E - 1);
      host_ = std::make_unique<HostExperts>(cfg, w, first, opt.draft, synthetic ? &*synthetic : nullptr,
                                            opt.max_pass_rows, opt.host_threads,
                                            core_experts, opt.progress);
    }

    // Slots, then blocks from what is left (the KV budget) on the tightest rank.
    shape.n_slots = opt.max_sequences > 0 ? int(opt.max_sequences) : kDefaultCudaSequences;
    shape.n_blocks = 0;
    int fit = INT32_MAX;
    for (const Rank& rank : ranks_) {
      const DevicePlan& d = devices[rank.device];
      const size_t left = (d.usable - d.weights) / size_t(d.ranks);
      const MoeShard ms = moe_shard(rank, picks, host_on_gpu);
      const size_t fixed = device_state_bytes(*rank.model, shape, kMaxLogitRows, ms);
      if (fixed > left)
        fail(shape.n_slots, " sequence slots need ", fixed / kGiB, " GiB per rank, ", left / kGiB,
             " GiB are left after the weights: lower --max-seqs");
      if (opt.kv_cache_tokens > 0) {
        KvPoolShape asked = shape;
        asked.n_blocks = int(std::min<int64_t>((opt.kv_cache_tokens + kKvBlockTokens - 1) / kKvBlockTokens, INT32_MAX));
        if (device_state_bytes(*rank.model, asked, kMaxLogitRows, ms) > left)
          fail("--kv-cache-tokens ", opt.kv_cache_tokens, " needs more GPU memory than the ", left / kGiB,
               " GiB left per rank after the weights");
        fit = asked.n_blocks;
      } else {
        fit = std::min(fit, fit_blocks(*rank.model, shape, left, ms));
      }
    }
    shape.n_blocks = fit;
    // One sequence never holds more than the pool.
    shape.max_context = std::min<int64_t>(ctx, int64_t(shape.n_blocks) * kKvBlockTokens);
    if (shape.max_context < 1) fail("no KV cache fits in the GPU memory left after the weights");
    for (Rank& rank : ranks_) {
      DSV4_CUDA_CHECK(cudaSetDevice(rank.device));
      const MoeShard ms = moe_shard(rank, picks, host_on_gpu);
      rank.arena = std::make_unique<DeviceArena>(device_state_bytes(*rank.model, shape, kMaxLogitRows, ms));
      rank.state = std::make_unique<DeviceState>(*rank.model, shape,
                                                 scratch_shape(*rank.model, shape, kMaxLogitRows, ms), *rank.arena);
      // Virtual ranks of one device share its stream: their work is ordered, and the loopback
      // collective is one kernel on it (collective.h).
      const Rank* same = &rank == &ranks_.front() || !loopback ? nullptr : &ranks_.front();
      if (same) {
        rank.stream = same->stream;
      } else {
        DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&rank.stream, cudaStreamNonBlocking));
        rank.owns_stream = true;
      }
      if (ranks_.size() == 1 && opt.graph_branches) {
        DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&rank.branch, cudaStreamNonBlocking));
        DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&rank.branch_fork, cudaEventDisableTiming));
        DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&rank.branch_join, cudaEventDisableTiming));
      }
    }
    DSV4_CUDA_CHECK(cudaSetDevice(opt.device));
    if (collective) {
      if (loopback) {
        comm_ = make_loopback_collective(n_ranks);
      } else {
        std::vector<int> ordinals;
        for (const Rank& rank : ranks_) ordinals.push_back(rank.device);
        comm_ = make_nccl_collective(ordinals);
        DSV4_CUDA_CHECK(cudaSetDevice(opt.device));
      }
    }
    model_ = ranks_.front().model.get();
    state_ = ranks_.front().state.get();
    stream_ = ranks_.front().stream;
    blocks_ = std::make_unique<KvBlockPool>(shape.n_blocks, shape.n_slots);
    const size_t mirror = size_t(shape.n_slots) * shape.pages_per_slot();
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&page_mirror_), mirror * sizeof(int32_t)));
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&sampled_host_), kMaxLogitRows * sizeof(int32_t)));
    if (opt.progress)
      std::fprintf(stderr, "KV cache: %d slots, %d blocks of %lld tokens (%.2f GiB with the step buffers%s), context %lld\n",
                   shape.n_slots, shape.n_blocks, (long long)kKvBlockTokens, ranks_.front().arena->used() / kGiB,
                   ranks_.size() > 1 ? ", per rank" : "", (long long)shape.max_context);
  }

  ~CudaForward() override {
    for (auto& [key, g] : step_graphs_) destroy(g);
    for (auto& [key, g] : draft_graphs_) destroy(g);
    for (Rank& rank : ranks_) {
      if (rank.owns_stream) cudaStreamDestroy(rank.stream);
      if (rank.branch) cudaStreamDestroy(rank.branch);
      if (rank.branch_fork) cudaEventDestroy(rank.branch_fork);
      if (rank.branch_join) cudaEventDestroy(rank.branch_join);
    }
    if (page_mirror_) cudaFreeHost(page_mirror_);
    if (sampled_host_) cudaFreeHost(sampled_host_);
  }

  const ModelConfig& config() const override { return model_->cfg; }
  bool samples_on_device() const override { return true; }
  int64_t pass_rows() const override { return opt_.max_pass_rows; }

  HostTierInfo host_tier() const override {
    if (!host_) return {};
    const HostExpertStats s = host_->stats();
    return {host_->count(), model_->cfg.n_routed_experts, host_->weight_bytes(), s.seconds, s.calls, s.picks,
            s.streamed, host_->core_experts()};
  }

  void set_host_cores_share(double share) override {
    if (!host_) Forward::set_host_cores_share(share);
    if (!(share >= 0.0 && share <= 1.0)) fail("host tier: the cores' share must be in [0, 1], got ", share);
    const int n = core_experts_for(host_->count(), share);
    synchronize();  // a host function or gather in flight reads the current split
    host_->set_core_experts(n);
    forget_graphs(step_graphs_);  // they hold the old split's nodes
    forget_graphs(draft_graphs_);
  }

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

  bool can_draft() const override { return model_->mtp.has_value(); }

  void rollback(SequenceState& seq, int64_t n_tokens) override {
    require_draft();
    cuda_sequence(&seq).rollback(n_tokens);
  }

  // §10 drafting, all items together: step i runs the MTP block over one row per item that wants
  // more than i drafts — position P − 1 + i with the item's token (i = 0: the kept streams of
  // P − 1; then the block's own output streams and the previous draft) — and chooses on the host.
  // The rows fed at P and after stand on drafted tokens and are forgotten afterwards.
  void draft(std::span<DraftItem> items) override {
    require_draft();
    const int64_t V = model_->cfg.vocab_size;
    for (size_t i = 0; i < items.size(); ++i) {
      const DraftItem& item = items[i];
      CudaSequenceState& seq = cuda_sequence(item.seq);
      const int64_t P = seq.position();
      check_draft_item(item, V, P, seq.mtp_position());
      if (!seq.kept(P - 1))
        fail("draft: the streams of position ", P - 1, " were not kept (the last forward ran without mtp)");
      if (P - 1 + item.n_draft > seq.max_tokens())
        fail("draft: the MTP block would reach ", P - 1 + item.n_draft, " tokens, the sequence's limit is ",
             seq.max_tokens());
      for (size_t j = 0; j < i; ++j)
        if (items[j].seq == item.seq) fail("draft: a sequence appears twice in one call");
    }
    const size_t group = size_t(state_->mtp_plan->max_logits());
    for (size_t g0 = 0; g0 < items.size(); g0 += group)
      draft_group(items.subspan(g0, std::min(group, items.size() - g0)));
  }

  void forward(std::span<ForwardItem> batch, const TraceHook* trace) override {
    const ModelConfig& cfg = model_->cfg;
    const int64_t V = cfg.vocab_size;
    for (ForwardItem& item : batch) {
      CudaSequenceState& seq = cuda_sequence(item.seq);
      DSV4_CHECK(item.sample == nullptr || item.sampled != nullptr);
      if (item.sample) validate(*item.sample);
      if (item.sampled_rows && !(item.all_logits && item.sample))
        fail("forward: sampled_rows needs all_logits and a device sampling choice");
      if (item.mtp) check_mtp_in_step(seq);
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
    }
    for (size_t i = 0; i < batch.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (batch[i].seq == batch[j].seq) fail("forward: a sequence appears twice in one batch");
    const bool tracing = trace && *trace;
    if (opt_.use_graph && !tracing && graph_shaped(batch)) {
      step_with_graph(batch);
    } else {
      run_passes(batch, trace);
    }
  }

 private:
  // --gpus auto: the fewest GPUs (inspect's plan: 1, 2, 4 or 8 of the usable size of `device`, the
  // routed experts split across them) that hold the weights and one sequence of `ctx` tokens.
  int gpus_needed_here(const ModelConfig& cfg, const Checkpoint& ckpt, int64_t ctx, int n_dev) const {
    const size_t usable = device_memory(opt_.device, opt_).second;
    const WeightBytesSplit split = split_weight_bytes(ckpt, opt_.draft);
    const int n = gpus_needed(gpu_plan(cfg, split.experts, split.other, ctx, double(usable)));
    const std::string inspect = cat("(`dsv4 inspect --gpu-gib ", int64_t(usable / kGiB), "`)");
    if (n == 0) fail("not even 8 GPUs of ", usable / kGiB, " usable GiB hold the model ", inspect);
    if (opt_.device + n > n_dev)
      fail("the model needs ", n, " GPUs of ", usable / kGiB, " usable GiB with the routed experts split across them ",
           inspect, "; ", n_dev - opt_.device, " are visible from device ", opt_.device);
    return n;
  }

  // --cpu-experts auto: the fewest routed experts per layer (the highest ids) that the host must keep
  // for the GPU to hold the rest of the weights, the step buffers, the sequence slots asked for and
  // a KV pool of --kv-cache-tokens (at least one sequence of the full context); 0 when everything
  // fits.
  int fewest_host_experts(const ModelConfig& cfg, const ModelWeights& w, const DeviceModel& shell,
                          KvPoolShape shape) const {
    shape.n_slots = opt_.max_sequences > 0 ? int(opt_.max_sequences) : kDefaultCudaSequences;
    const int64_t tokens = std::max<int64_t>(shape.max_context, opt_.kv_cache_tokens);
    shape.n_blocks = int(std::min<int64_t>((tokens + kKvBlockTokens - 1) / kKvBlockTokens, INT32_MAX));
    const size_t usable = device_memory(opt_.device, opt_).second;
    const int E = int(cfg.n_routed_experts);
    const auto need = [&](int host) {
      WeightShard shard;
      if (host > 0) shard.experts = {0, E - host};
      const size_t staging = host > 0 ? HostExperts::device_bytes(w, E - host) : 0;
      const MoeShard moe{host > 0 ? E - host : 0, host > 0, staging > 0 ? host : 0};
      return matmul_workspace_bytes() + device_weight_bytes(cfg, w, opt_.draft, shard) + staging +
             device_state_bytes(shell, shape, kMaxLogitRows, moe);
    };
    if (need(0) <= usable) return 0;
    if (need(E - 1) > usable)
      fail("--cpu-experts auto: even with ", E - 1, " of ", E, " routed experts per layer in host memory the model needs ",
           need(E - 1) / kGiB, " GiB of GPU memory (weights, step buffers, ", shape.n_slots, " sequence slots and ", tokens,
           " tokens of KV), ", usable / kGiB, " GiB are usable; a smaller --ctx-size, --kv-cache-tokens or --max-seqs needs less");
    int lo = 0, hi = E - 1;  // need(lo) > usable >= need(hi): the bytes fall as the host takes more
    while (hi - lo > 1) {
      const int mid = lo + (hi - lo) / 2;
      (need(mid) <= usable ? hi : lo) = mid;
    }
    return hi;
  }

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

  static int fit_blocks(const DeviceModel& m, KvPoolShape shape, size_t budget, const MoeShard& moe) {
    auto fits = [&](int64_t n) {
      shape.n_blocks = int(n);
      try {
        return device_state_bytes(m, shape, kMaxLogitRows, moe) <= budget;
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

  // A pass's contexts, one per rank, over each rank's plan (the MTP block's with `mtp`); the trace
  // goes to rank 0 only (every rank computes the same values but the routed experts' parts).
  std::vector<StepContext> contexts(bool mtp, int T, int n_logits, const TraceHook* trace,
                                    std::span<const RowRange> segments) {
    std::vector<StepContext> out;
    for (Rank& r : ranks_) {
      const StepPlan& plan = mtp ? *r.state->mtp_plan : r.state->plan;
      out.push_back(StepContext{r.device, *r.model, r.state->kv, r.state->scratch, plan, r.stream,
                                &r == &ranks_.front() ? trace : nullptr, T, n_logits, plan.device_rows(),
                                plan.tokens(), plan.n_real(), segments, r.branch, r.branch_fork,
                                r.branch_join});
    }
    return out;
  }
  Ranks ranks(const std::vector<StepContext>& contexts) const { return {contexts, comm_.get(), host_.get()}; }

  // Rank 0's plan (the host writes only there) to every rank's device copy.
  void upload_plan(bool mtp) {
    const StepPlan& host = mtp ? *state_->mtp_plan : state_->plan;
    for (Rank& r : ranks_) {
      DSV4_CUDA_CHECK(cudaSetDevice(r.device));
      (mtp ? *r.state->mtp_plan : r.state->plan).upload_from(host, r.stream);
    }
    DSV4_CUDA_CHECK(cudaSetDevice(opt_.device));
  }

  // Waits for every rank's stream (the pinned plans and pages are rewritten next).
  void synchronize() {
    for (Rank& r : ranks_)
      if (r.owns_stream) DSV4_CUDA_CHECK(cudaStreamSynchronize(r.stream));
    if (host_) host_->check();
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
    std::vector<int32_t*> rows(ranks_.size());
    std::vector<cudaStream_t> streams(ranks_.size());
    for (ForwardItem& it : items) {
      CudaSequenceState& s = cuda_sequence(it.seq);
      for (size_t r = 0; r < ranks_.size(); ++r) {
        rows[r] = ranks_[r].state->kv.page_table + int64_t(s.slot()) * P;
        streams[r] = ranks_[r].stream;
      }
      s.upload_pages(rows, streams);  // copies between pinned and device memory: no device switch
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

  // A chunk of an item in one eager pass (run_passes).
  struct Part {
    size_t item;
    int64_t t0, n;      // the item's tokens [t0, t0 + n)
    int64_t pos0 = 0;   // the sequence's position at the chunk's first token
    int first_row = 0, first_logit = 0, n_logits = 0;
    bool last = false;     // the item's last chunk
    bool samples = false;  // the device samples a row of it
  };

  void require_draft() const {
    if (can_draft()) return;
    fail(checkpoint_has_mtp_ ? "speculative decoding: the MTP block was not uploaded (load with drafting on: --speculative)"
                             : "speculative decoding: the checkpoint has no MTP block (mtp.0.*)");
  }

  // A forward with mtp needs the MTP block at most one position behind (model/forward.h), and the
  // streams of that position kept. Checked before any state changes.
  void check_mtp_in_step(const CudaSequenceState& seq) const {
    require_draft();
    const int64_t q = seq.mtp_position(), pos0 = seq.position();
    if (q != pos0 && q != pos0 - 1)
      fail("speculative decoding: the MTP block is at position ", q, " but the sequence at ", pos0,
           ": every forward of a drafting sequence must run with mtp");
    if (q < pos0 && !seq.kept(q)) fail("speculative decoding: the streams of position ", q, " were not kept");
  }

  // Eager passes: each holds chunks of several sequences, at most pass_rows rows and
  // kMaxLogitRows logit rows. An item that does not fit what is left of a pass waits for the next
  // one; only an item longer than a whole pass is split, at the same boundaries as when it runs
  // alone. Inside a pass the short chunks come first and each long chunk is its own matmul call
  // (StepContext::segments), so a sequence's rows are computed as if alone (batch invariance).
  // An mtp item's MTP rows (enqueue_mtp) may start one position before its chunk, so each counts
  // one row more against the MTP pass, which has the same size.
  void run_passes(std::span<ForwardItem> batch, const TraceHook* trace) {
    const int64_t V = model_->cfg.vocab_size;
    StepPlan& plan = state_->plan;
    std::vector<int64_t> done(batch.size(), 0);
    while (true) {
      // Which chunks go in this pass.
      std::vector<Part> parts;
      int64_t rows = 0, mtp_rows = 0, logits = 0;
      for (size_t i = 0; i < batch.size(); ++i) {
        const ForwardItem& it = batch[i];
        const int64_t left = int64_t(it.tokens.size()) - done[i];
        if (left == 0) continue;
        const bool wants_row = it.logits || it.sample;
        auto logit_rows = [&](int64_t n) { return it.all_logits ? n : (n == left && wants_row ? 1 : 0); };
        const int64_t extra = it.mtp ? 1 : 0;
        int64_t n = left;
        if (rows + n > plan.max_rows() || (it.mtp && mtp_rows + n + extra > plan.max_rows()) ||
            logits + logit_rows(n) > plan.max_logits()) {
          if (!parts.empty()) continue;  // waits for a pass of its own
          n = std::min<int64_t>(n, plan.max_rows() - extra);
          if (it.all_logits) n = std::min<int64_t>(n, plan.max_logits());
        }
        parts.push_back({i, done[i], n});
        rows += n;
        if (it.mtp) mtp_rows += n + extra;
        logits += logit_rows(n);
      }
      if (parts.empty()) break;
      std::stable_sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) {
        return (x.n <= kInvariantSliceRows) > (y.n <= kInvariantSliceRows);
      });

      // The plan, and the matmul segments: the short chunks' rows in slices, each long chunk alone.
      plan.clear();
      segments_.clear();
      bool any_mtp = false;
      for (Part& p : parts) {
        ForwardItem& it = batch[p.item];
        CudaSequenceState& seq = cuda_sequence(it.seq);
        const int64_t pos0 = seq.position();
        p.pos0 = pos0;
        p.last = p.t0 + p.n == int64_t(it.tokens.size());
        p.first_row = plan.rows();
        p.first_logit = plan.logit_rows();
        plan.add_chunk(seq.slot(), pos0, it.tokens.data() + p.t0, int(p.n));
        if (it.all_logits) {  // with sampled_rows every row is sampled, else only the item's last
          for (int64_t r = 0; r < p.n; ++r) {
            const bool sampled = it.sampled_rows || (p.last && r == p.n - 1);
            plan.add_logit_row(p.first_row + int(r), row_sampling(sampled ? it.sample : nullptr, pos0 + r + 1));
          }
        } else if (p.last && (it.logits || it.sample)) {
          plan.add_logit_row(p.first_row + int(p.n - 1), row_sampling(it.sample, pos0 + p.n));
        }
        p.n_logits = plan.logit_rows() - p.first_logit;
        p.samples = it.sample != nullptr && (p.last || it.sampled_rows);
        if (it.mtp) {  // the final streams the MTP block may still need (enqueue_mtp)
          any_mtp = true;
          for (int64_t r = std::max<int64_t>(0, p.n - kKeptStreamRows); r < p.n; ++r)
            plan.set_keep_row(p.first_row + int(r), seq.kept_row(pos0 + r));
        }
        append_segment(segments_, p.first_row, int(p.n));
        done[p.item] += p.n;
        seq.advance(p.n);  // positions of this pass are in the plan; the host state moves on now
      }
      std::vector<ForwardItem> in_pass;
      for (const Part& p : parts) in_pass.push_back(batch[p.item]);
      upload_pages(in_pass);
      upload_plan(false);
      const bool sample = std::any_of(parts.begin(), parts.end(), [](const Part& p) { return p.samples; });
      profiled_pass_.before(trace && *trace);
      enqueue_pass(ranks(contexts(false, plan.rows(), plan.logit_rows(), trace, segments_)), sample);
      if (any_mtp) enqueue_mtp(batch, parts);
      profiled_pass_.after();
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
      synchronize();
      for (const Part& p : parts) {
        if (!p.samples) continue;
        ForwardItem& it = batch[p.item];
        if (it.sampled_rows)
          for (int64_t r = 0; r < p.n; ++r)
            it.sampled_rows[p.t0 + r] = checked_sample(p.first_logit + int(r), p.pos0 + r + 1);
        if (p.last) *it.sampled = checked_sample(p.first_logit + p.n_logits - 1, p.pos0 + p.n);
      }
    }
  }

  // ForwardItem::mtp, after a pass is enqueued: the MTP block consumes every position of the pass's
  // mtp parts whose next token is known — from the sequence's MTP position (one before the part:
  // that row's streams were kept by an earlier pass) to the part's last row, or the item's
  // second-to-last — and the parts' last kKeptStreamRows rows' final streams are kept
  // (enqueue_mtp_after_pass).
  void enqueue_mtp(std::span<ForwardItem> batch, const std::vector<Part>& parts) {
    StepPlan& mp = *state_->mtp_plan;
    mp.clear();
    mtp_segments_.clear();
    for (const Part& p : parts) {
      ForwardItem& it = batch[p.item];
      if (!it.mtp) continue;
      CudaSequenceState& seq = cuda_sequence(it.seq);
      const int64_t item_pos0 = p.pos0 - p.t0;
      const int64_t q = seq.mtp_position();
      DSV4_CHECK(q == p.pos0 || q == p.pos0 - 1);  // check_mtp_in_step, then each part moves it on
      const int64_t last = std::min(p.pos0 + p.n - 1, item_pos0 + int64_t(it.tokens.size()) - 2);
      if (last >= q) {
        const int rows = int(last - q + 1), r0 = mp.rows();
        mp.add_chunk(seq.slot(), q, it.tokens.data() + (q + 1 - item_pos0), rows);
        for (int r = 0; r < rows; ++r) {
          const int64_t pos = q + r;
          mp.set_source(r0 + r, pos < p.pos0 ? -1 - seq.kept_row(pos) : p.first_row + int(pos - p.pos0));
        }
        append_segment(mtp_segments_, r0, rows);
        seq.mtp_advance(rows);
      }
      seq.keep(p.pos0, p.n);
    }
    enqueue_mtp_after_pass(state_->plan.rows(), mp.rows(), mtp_segments_);
  }

  // After a pass whose final streams are in s.X, with the MTP plan filled: the MTP rows' input
  // streams are gathered first (before the keep, which may overwrite the kept row of the position
  // before a chunk, and before the MTP block overwrites s.X), then the pass's rows with a keep row
  // are kept, then the MTP pass runs over its `mtp_rows` rows.
  void enqueue_mtp_after_pass(int pass_rows, int mtp_rows, std::span<const RowRange> mtp_segments) {
    const int64_t width = model_->cfg.hc_mult * model_->cfg.hidden_size;
    if (mtp_rows > 0) upload_plan(true);
    for (Rank& r : ranks_) {
      DSV4_CUDA_CHECK(cudaSetDevice(r.device));
      const DeviceState& st = *r.state;
      const Scratch& s = st.scratch;
      if (mtp_rows > 0)
        launch_mtp_input({s.X, st.kv.kept_streams, st.mtp_plan->sources(), s.mtp_in, mtp_rows, width}, r.stream);
      launch_keep_streams({s.X, st.plan.keep_rows(), st.kv.kept_streams, pass_rows, width}, r.stream);
    }
    if (mtp_rows > 0) enqueue_mtp_pass(ranks(contexts(true, mtp_rows, 0, nullptr, mtp_segments)));
    DSV4_CUDA_CHECK(cudaSetDevice(opt_.device));
  }

  // draft() for at most max_logits items (one MTP pass per drafting step).
  void draft_group(std::span<DraftItem> items) {
    const int64_t V = model_->cfg.vocab_size;
    StepPlan& mp = *state_->mtp_plan;
    Scratch& s = state_->scratch;
    int steps = 0;
    std::vector<int32_t> token(items.size());
    std::vector<int> row(items.size(), -1);  // the item's row in the last MTP pass
    for (size_t i = 0; i < items.size(); ++i) {
      steps = std::max(steps, items[i].n_draft);
      token[i] = items[i].token;
      items[i].drafts->clear();
      if (items[i].logits) items[i].logits->clear();
    }
    std::vector<float> logits;
    try {
      for (int step = 0; step < steps; ++step) {
        mp.clear();
        for (size_t i = 0; i < items.size(); ++i) {
          if (items[i].n_draft <= step) continue;
          CudaSequenceState& seq = cuda_sequence(items[i].seq);
          const int64_t P = seq.position();
          const int r = mp.rows();
          mp.add_chunk(seq.slot(), P - 1 + step, &token[i], 1);
          mp.set_source(r, step == 0 ? -1 - seq.kept_row(P - 1) : row[i]);
          mp.add_logit_row(r, RowSampling{});
          row[i] = r;
          seq.mtp_advance(1);
        }
        const int n = mp.rows();
        // The MTP pass and each row's argmax on the device: one graph per batch bucket, or eager.
        if (opt_.use_graph) {
          const int B = bucket_for(n);
          mp.pad_to(B);
          for (int r = n; r < B; ++r) mp.add_logit_row(r, RowSampling{});
          launch_graph(draft_graphs_, B, [&] { return capture_draft(B); });
        } else {
          enqueue_draft_step(n);
        }
        logits.resize(size_t(n) * size_t(V));
        const bool want_logits = std::any_of(items.begin(), items.end(), [&](const DraftItem& it) {
          return it.n_draft > step && (it.choose || it.logits);
        });
        if (want_logits)
          DSV4_CUDA_CHECK(cudaMemcpyAsync(logits.data(), s.logits, logits.size() * sizeof(float),
                                          cudaMemcpyDeviceToHost, stream_));
        synchronize();
        for (size_t i = 0; i < items.size(); ++i) {
          DraftItem& item = items[i];
          if (item.n_draft <= step) continue;
          CudaSequenceState& seq = cuda_sequence(item.seq);
          const std::span<const float> l(logits.data() + size_t(row[i]) * size_t(V), size_t(V));
          const int32_t d = item.choose ? item.choose(l) : checked_sample(row[i], seq.position() - 1 + step);
          if (d < 0 || d >= V) fail("draft: the chooser returned id ", d, ", outside the vocabulary [0, ", V, ")");
          item.drafts->push_back(d);
          if (item.logits) item.logits->insert(item.logits->end(), l.begin(), l.end());
          token[i] = d;
        }
      }
    } catch (...) {
      for (DraftItem& item : items) {  // as before the call, so that the sequence can still draft
        CudaSequenceState& seq = cuda_sequence(item.seq);
        seq.mtp_rewind(seq.position() - 1);
      }
      throw;
    }
    for (DraftItem& item : items) {
      CudaSequenceState& seq = cuda_sequence(item.seq);
      seq.mtp_rewind(seq.position());  // the recurrent rows stand on drafted tokens: forgotten
    }
  }

  // A step a graph can replay (design.md "decode graphs per batch-size bucket"): every item has the
  // same r rows — one-token decode steps (r = 1), or verify steps (r = 1 + drafts, all_logits) — the
  // same mtp flag, and with mtp the MTP block exactly at the sequence's position (what draft()
  // leaves; one behind, after a prefill chunk, goes eagerly). B·r rows fit a pass and its logits.
  bool graph_shaped(std::span<const ForwardItem> batch) const {
    if (batch.empty()) return false;
    const int r = int(batch[0].tokens.size());
    const bool mtp = batch[0].mtp;
    if (r < 1 || r > int(kRollbackPositions)) return false;
    const int B = bucket_for(int(batch.size()));
    if (B > max_decode_batch() || B * r > state_->plan.max_rows() || B * r > state_->plan.max_logits()) return false;
    for (const ForwardItem& it : batch) {
      if (int(it.tokens.size()) != r || it.mtp != mtp || (r > 1 && !it.all_logits)) return false;
      if (mtp && cuda_sequence(it.seq).mtp_position() != cuda_sequence(it.seq).position()) return false;
    }
    return true;
  }

  // Destroys captured graphs: the next use of each key captures it again.
  template <class Key>
  void forget_graphs(std::map<Key, StepGraph>& graphs) {
    for (auto& [key, g] : graphs) {
      graph_replays_.erase(g.front().second);
      destroy(g);
    }
    graphs.clear();
  }

  // Replays the graph of `key` (captured on first use by `capture`) on the stream; with --cuda-graph
  // check, fails when device memory changed across a replay after the first.
  template <typename Key, typename Capture>
  void launch_graph(std::map<Key, StepGraph>& graphs, const Key& key, Capture&& capture) {
    auto graph = graphs.find(key);
    if (graph == graphs.end()) graph = graphs.emplace(key, capture()).first;
    int64_t& replays = graph_replays_[graph->second.front().second];
    const bool check = opt_.check_step && replays > 0;
    const size_t free_before = check ? free_device_bytes() : 0;
    for (auto& [stream, exec] : graph->second) DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    if (check) {
      synchronize();
      if (free_device_bytes() != free_before)
        fail("check-step: device memory changed during a decode step (an allocation inside the step)");
    }
    ++replays;
  }

  // A graph_shaped step: b items of r rows in the graph of (bucket B, r, mtp), captured on first
  // use. Every row is a logit row (sampled where the item asks, greedy elsewhere: nobody reads it);
  // with mtp the MTP block consumes each item's first r − 1 positions and the slot keeps all r
  // rows' streams. Only the plans' pinned contents change between replays.
  void step_with_graph(std::span<ForwardItem> batch) {
    const int64_t V = model_->cfg.vocab_size;
    const int b = int(batch.size()), B = bucket_for(b), r = int(batch[0].tokens.size());
    const bool mtp = batch[0].mtp;
    StepPlan& plan = state_->plan;
    plan.clear();
    if (mtp) state_->mtp_plan->clear();
    for (int i = 0; i < b; ++i) {
      const ForwardItem& it = batch[size_t(i)];
      CudaSequenceState& seq = cuda_sequence(it.seq);
      plan.add_chunk(seq.slot(), seq.position(), it.tokens.data(), r);
      if (!mtp) continue;
      for (int j = 0; j < r; ++j) plan.set_keep_row(i * r + j, seq.kept_row(seq.position() + j));
      if (r == 1) continue;
      StepPlan& mp = *state_->mtp_plan;
      mp.add_chunk(seq.slot(), seq.position(), it.tokens.data() + 1, r - 1);
      for (int j = 0; j + 1 < r; ++j) mp.set_source(i * (r - 1) + j, i * r + j);
    }
    plan.pad_to(B * r);
    if (mtp && r > 1) state_->mtp_plan->pad_to(B * (r - 1));
    for (int i = 0; i < B; ++i) {
      const ForwardItem* it = i < b ? &batch[size_t(i)] : nullptr;
      const int64_t pos0 = it ? cuda_sequence(it->seq).position() : 0;
      for (int j = 0; j < r; ++j) {
        const bool sampled = it && (it->sampled_rows || j == r - 1);
        plan.add_logit_row(i * r + j, row_sampling(sampled ? it->sample : nullptr, pos0 + j + 1));
      }
    }
    upload_pages(batch);
    launch_graph(step_graphs_, std::tuple{B, r, mtp}, [&] { return capture_step(B, r, mtp); });
    for (int i = 0; i < b; ++i) {
      const ForwardItem& it = batch[size_t(i)];
      if (it.logits) {
        const int64_t first = it.all_logits ? int64_t(i) * r : int64_t(i) * r + r - 1;
        const int64_t n = it.all_logits ? r : 1;
        DSV4_CUDA_CHECK(cudaMemcpyAsync(it.logits->data(), state_->scratch.logits + first * V,
                                        size_t(n * V) * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      }
    }
    synchronize();
    for (int i = 0; i < b; ++i) {
      ForwardItem& it = batch[size_t(i)];
      CudaSequenceState& seq = cuda_sequence(it.seq);
      const int64_t pos0 = seq.position();
      seq.advance(r);
      if (mtp) {
        seq.mtp_advance(r - 1);
        seq.keep(pos0, r);
      }
      if (it.sampled_rows)
        for (int j = 0; j < r; ++j) it.sampled_rows[j] = checked_sample(i * r + j, pos0 + j + 1);
      if (it.sample) *it.sampled = checked_sample(i * r + r - 1, pos0 + r);
    }
  }

  // Global capture mode: a host synchronisation or allocation inside the step fails the capture
  // with a CUDA error instead of being baked into the graph. `enqueue` is the step; the plan
  // uploads inside it and the sampled ids' download are part of the graph.
  // Every rank's stream is captured at once (the collective's calls span them); one graph per
  // distinct stream, launched together.
  template <typename Enqueue>
  StepGraph capture(Enqueue&& enqueue) {
    std::vector<Rank*> owners;
    for (Rank& r : ranks_)
      if (r.owns_stream) owners.push_back(&r);
    for (Rank* r : owners) {
      DSV4_CUDA_CHECK(cudaSetDevice(r->device));
      DSV4_CUDA_CHECK(cudaStreamBeginCapture(r->stream, cudaStreamCaptureModeGlobal));
    }
    std::vector<cudaGraph_t> graphs(owners.size(), nullptr);
    auto end_all = [&] {
      cudaError_t first = cudaSuccess;
      for (size_t i = 0; i < owners.size(); ++i) {
        cudaSetDevice(owners[i]->device);
        const cudaError_t e = cudaStreamEndCapture(owners[i]->stream, &graphs[i]);
        if (first == cudaSuccess) first = e;
      }
      cudaSetDevice(opt_.device);
      return first;
    };
    auto destroy_graphs = [&] {
      for (cudaGraph_t g : graphs)
        if (g) cudaGraphDestroy(g);
    };
    try {
      enqueue();
    } catch (...) {
      end_all();
      destroy_graphs();
      throw;
    }
    const cudaError_t end = end_all();
    if (end != cudaSuccess) {
      destroy_graphs();
      fail("the decode step could not be captured as one CUDA graph (", cudaGetErrorString(end),
           "): a host synchronisation or allocation happened inside the step");
    }
    StepGraph out;
    cudaError_t inst = cudaSuccess;
    for (size_t i = 0; i < owners.size() && inst == cudaSuccess; ++i) {
      cudaGraphExec_t exec = nullptr;
      DSV4_CUDA_CHECK(cudaSetDevice(owners[i]->device));
      inst = cudaGraphInstantiate(&exec, graphs[i], 0);
      if (inst == cudaSuccess) out.emplace_back(owners[i]->stream, exec);
    }
    destroy_graphs();
    DSV4_CUDA_CHECK(cudaSetDevice(opt_.device));
    if (inst != cudaSuccess) destroy(out);
    DSV4_CUDA_CHECK(inst);
    return out;
  }

  // The step graph of (B, r, mtp): the pass over B·r rows (matmuls in slices of
  // kInvariantSliceRows: every item's r rows are computed as in an eager pass), the sampler, and
  // with mtp the MTP input gather, the kept streams and the MTP pass over B·(r − 1) rows.
  StepGraph capture_step(int B, int r, bool mtp) {
    if (opt_.progress)
      std::fprintf(stderr, "capturing the %s graph for batch %d%s\n", r == 1 ? "decode" : "verify", B,
                   r == 1 ? "" : cat(" × ", r, " rows").c_str());
    return capture([&] {
      upload_plan(false);
      enqueue_pass(ranks(contexts(false, B * r, B * r, nullptr, {})), true);
      if (mtp) enqueue_mtp_after_pass(B * r, B * (r - 1), {});
      DSV4_CUDA_CHECK(cudaMemcpyAsync(sampled_host_, state_->scratch.sampled, size_t(B * r) * sizeof(int32_t),
                                      cudaMemcpyDeviceToHost, stream_));
    });
  }

  // One drafting step over the n rows of the MTP plan: input gather, the MTP pass with its head,
  // each row's argmax (the plan's rows sample greedily), the ids to the host.
  void enqueue_draft_step(int n) {
    Scratch& s = state_->scratch;
    StepPlan& mp = *state_->mtp_plan;
    const int64_t width = model_->cfg.hc_mult * model_->cfg.hidden_size;
    upload_plan(true);
    for (Rank& r : ranks_) {
      DSV4_CUDA_CHECK(cudaSetDevice(r.device));
      const DeviceState& st = *r.state;
      launch_mtp_input({st.scratch.X, st.kv.kept_streams, st.mtp_plan->sources(), st.scratch.mtp_in, n, width},
                       r.stream);
    }
    enqueue_mtp_pass(ranks(contexts(true, n, n, nullptr, {})));
    DSV4_CUDA_CHECK(cudaSetDevice(opt_.device));
    SampleParams sp;
    sp.logits = s.logits;
    sp.token = s.sampled;
    sp.per_row = mp.sampling();
    sp.rows = n;
    sp.vocab = int(model_->cfg.vocab_size);
    launch_sample(sp, stream_);
    DSV4_CUDA_CHECK(cudaMemcpyAsync(sampled_host_, s.sampled, size_t(n) * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                    stream_));
  }

  StepGraph capture_draft(int B) {
    if (opt_.progress) std::fprintf(stderr, "capturing the draft graph for batch %d\n", B);
    return capture([&] { enqueue_draft_step(B); });
  }

  CudaOptions opt_;
  std::vector<Rank> ranks_;
  std::unique_ptr<Collective> comm_;  // sums the ranks' routed outputs; null for one rank alone
  std::unique_ptr<HostExperts> host_;  // the host tier (CudaOptions::cpu_experts); null without
  // Rank 0's: the host writes plans there (upload_plan mirrors them), the head and sampler run
  // there, logits and sampled ids come back from there.
  DeviceModel* model_ = nullptr;
  DeviceState* state_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<KvBlockPool> blocks_;
  int32_t* page_mirror_ = nullptr;   // pinned [n_slots, pages_per_slot]
  int32_t* sampled_host_ = nullptr;  // pinned [kMaxLogitRows]
  std::map<std::tuple<int, int, bool>, StepGraph> step_graphs_;  // per (bucket, rows per item, mtp)
  std::map<int, StepGraph> draft_graphs_;                        // draft step per bucket
  std::map<cudaGraphExec_t, int64_t> graph_replays_;
  std::vector<RowRange> segments_;  // the current pass's matmul segments (StepContext::segments)
  ProfiledPass profiled_pass_;
  std::vector<RowRange> mtp_segments_;  // the MTP pass's
  bool checkpoint_has_mtp_ = false;
};

}  // namespace

std::unique_ptr<Forward> make_cuda_forward(const std::filesystem::path& model_dir,
                                           const CudaOptions& options) {
  return std::make_unique<CudaForward>(model_dir, options);
}

}  // namespace dsv4
