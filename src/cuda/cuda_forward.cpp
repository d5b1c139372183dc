// The CUDA forward (§2): embed → L decoder blocks (attention_step, moe_step between mHC pre/post)
// → HC_head, norm, lm_head, in passes of at most kMaxChunk tokens. One-token decode steps replay
// a CUDA graph captured once per sequence: the host only writes the token and its position into
// device memory, everything position-dependent is decided by the kernels. When the caller asks,
// the next token is sampled on the device after the head (inside the graph for decode), and only
// its id comes back instead of the logits row.
#include "cuda/cuda_forward.h"

#include <cmath>
#include <cstdio>
#include <optional>

#include "cuda/cuda_check.h"
#include "cuda/device_model.h"
#include "cuda/kernels/embedding.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/sampling.cuh"
#include "cuda/step.h"
#include "model/checkpoint.h"
#include "model/kv_blocks.h"
#include "model/weights.h"
#include "util/error.h"

namespace dsv4 {

namespace {

using namespace dsv4::cuda;

constexpr double kGiB = double(1 << 30);

// HC_pre (§3.1) into s.u with s.post / s.comb, then the sub-layer's RMSNorm.
void hc_pre(const StepContext& c, const DeviceHyperConn& hc, const DeviceBuffer<__nv_bfloat16>& norm) {
  const ModelConfig& cfg = c.m.cfg;
  MhcPreParams p;
  p.x = c.s.X;
  p.fn = hc.fn.get();
  p.base = hc.base.get();
  p.scale = hc.scale.get();
  p.partial = c.s.mhc_partial;
  p.u = c.s.u;
  p.post = c.s.post;
  p.comb = c.s.comb;
  p.n_tokens = c.T;
  p.D = int(cfg.hidden_size);
  p.sinkhorn_iters = int(cfg.hc_sinkhorn_iters);
  p.hc_eps = float(cfg.hc_eps);
  p.rms_eps = float(cfg.rms_norm_eps);
  launch_mhc_pre(p, c.stream);
  rmsnorm(c, c.s.u, norm.get(), c.T, int(cfg.hidden_size));
}

// HC_post (§3.2): X = post·f + Cᵀ·X.
void hc_post(const StepContext& c, const __nv_bfloat16* f) {
  MhcPostParams p;
  p.f = f;
  p.x = c.s.X;
  p.post = c.s.post;
  p.comb = c.s.comb;
  p.out = c.s.X;
  p.n_tokens = c.T;
  p.D = int(c.m.cfg.hidden_size);
  launch_mhc_post(p, c.stream);
}

// Enqueues one pass of c.T tokens (s.tokens / s.pos already on the device) and the head for its
// last `rows` tokens into s.logits. Nothing here reads a position on the host.
void enqueue_pass(const StepContext& c, int rows) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, n = int(cfg.hc_mult), D = int(cfg.hidden_size);
  EmbeddingParams ep;
  ep.table = c.m.embed.get();
  ep.tokens = c.s.tokens;
  ep.streams = c.s.X;
  ep.T = T;
  ep.n = n;
  ep.D = D;
  ep.vocab = int(cfg.vocab_size);
  launch_embedding(ep, c.stream);
  for (size_t l = 0; l < c.m.layers.size(); ++l) {
    const DeviceLayer& w = c.m.layers[l];
    const int layer = int(l);
    hc_pre(c, w.hc_attn, w.attn_norm);
    c.emit_bf16("attn.in", layer, c.s.u, {T, D});
    attention_step(c, w, layer, c.seq.layers[l]);
    hc_post(c, c.s.attn_out);
    hc_pre(c, w.hc_ffn, w.ffn_norm);
    c.emit_bf16("moe.in", layer, c.s.u, {T, D});
    moe_step(c, w, layer);
    hc_post(c, c.s.ffn_out);
    c.emit_bf16("hc.streams", layer, c.s.X, {T, n, D});
  }
  c.emit_bf16("final.streams", -1, c.s.X, {T, n, D});

  // §9: HC_head → RMSNorm → lm_head over the last `rows` tokens.
  MhcHeadParams hp;
  hp.x = c.s.X + size_t(T - rows) * n * D;
  hp.fn = c.m.hc_head.fn.get();
  hp.base = c.m.hc_head.base.get();
  hp.scale = c.m.hc_head.scale.get();
  hp.partial = c.s.mhc_partial;
  hp.h = c.s.hh;
  hp.n_tokens = rows;
  hp.D = D;
  hp.hc_eps = float(cfg.hc_eps);
  hp.rms_eps = float(cfg.rms_norm_eps);
  launch_mhc_head(hp, c.stream);
  rmsnorm(c, c.s.hh, c.m.norm.get(), rows, D);
  c.emit_bf16("final.hidden", -1, c.s.hh, {rows, D});
  linear_f32(c, c.m.head, c.s.hh, rows, c.s.logits);
}

// The pinned host side of a step's small transfers.
struct HostIo {
  int32_t token = 0, pos = 0;  // in: a decode step's token and its position
  uint64_t step = 0;           // in: the sampler's Philox step (the sampled token's position)
  int32_t sampled = 0;         // out: the device's choice
};

// ForwardItem::sample comes from the caller: bad values are errors, not launcher invariants.
void validate(const DeviceSampling& d) {
  if (!(d.temperature >= 0.0f) || !std::isfinite(d.temperature))
    fail("device sampling: temperature must be a finite number >= 0, got ", d.temperature);
  if (d.top_k < 0) fail("device sampling: top-k must be >= 0, got ", d.top_k);
  if (!(d.top_p > 0.0f && d.top_p <= 1.0f))
    fail("device sampling: top-p must be in (0, 1], got ", d.top_p);
}

size_t free_device_bytes() {
  size_t free_b = 0, total_b = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
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
    DeviceArena count;
    { Scratch sizing(cfg, kMaxChunk, count); }
    const size_t need = device_weight_bytes(cfg, w) + count.used();
    const size_t free_b = free_device_bytes();
    if (need > free_b)
      fail("the model needs ", need / kGiB, " GiB of GPU memory (weights and step buffers), ",
           free_b / kGiB, " GiB are free on device ", opt.device);
    model_ = std::make_unique<DeviceModel>(upload_model(cfg, w, opt.progress));
    arena_ = std::make_unique<DeviceArena>(count.used());
    scratch_ = std::make_unique<Scratch>(model_->cfg, kMaxChunk, *arena_);
    DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_io_), sizeof(HostIo)));
    *host_io_ = HostIo{};
    sample_step_ = DeviceBuffer<uint64_t>(1);
    sampled_ = DeviceBuffer<int32_t>(1);
  }
  ~CudaForward() override {
    if (stream_) cudaStreamDestroy(stream_);
    if (host_io_) cudaFreeHost(host_io_);
  }

  const ModelConfig& config() const override { return model_->cfg; }
  bool samples_on_device() const override { return true; }

  std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) override {
    if (max_tokens <= 0) fail("new_sequence: max_tokens must be positive, got ", max_tokens);
    if (max_tokens > int64_t(INT32_MAX) / 2)
      fail("new_sequence: max_tokens ", max_tokens, " is beyond the CUDA backend's int32 positions");
    const size_t need = CudaSequenceState::bytes_needed(model_->cfg, max_tokens);
    const size_t free_b = free_device_bytes();
    if (need > free_b)
      fail("a sequence of ", max_tokens, " tokens needs ", need / kGiB, " GiB of GPU memory, ",
           free_b / kGiB, " GiB are free");
    return std::make_unique<CudaSequenceState>(*model_, max_tokens);
  }

  // Each sequence preallocates for its max_tokens here (the paged pool replaces this).
  KvCacheInfo kv_cache() const override {
    KvCacheInfo k;
    k.block_tokens = kKvBlockTokens;
    k.max_context = model_->cfg.max_position_embeddings;
    k.total_blocks = k.free_blocks = k.blocks_for(k.max_context);
    k.max_sequences = k.free_sequences = 1;
    return k;
  }
  bool reserve(SequenceState& seq, int64_t n_tokens) override {
    auto* s = dynamic_cast<CudaSequenceState*>(&seq);
    return s && n_tokens <= s->max_tokens();
  }

  void forward(std::span<ForwardItem> batch, const TraceHook* trace) override {
    for (ForwardItem& item : batch) run_item(item, trace);
  }

 private:
  void run_item(ForwardItem& item, const TraceHook* trace) {
    auto* seq = dynamic_cast<CudaSequenceState*>(item.seq);
    if (!seq) fail("forward: the sequence state was not created by the CUDA backend");
    DSV4_CHECK(item.logits != nullptr || item.sample != nullptr);
    DSV4_CHECK(item.sample == nullptr || item.sampled != nullptr);
    if (item.sample) validate(*item.sample);
    const ModelConfig& cfg = model_->cfg;
    const int64_t T = int64_t(item.tokens.size()), V = cfg.vocab_size;
    if (T == 0) {
      if (item.logits) item.logits->clear();
      if (item.sample) fail("forward: a chunk of no tokens has no next token to sample");
      return;
    }
    if (seq->position() + T > seq->max_tokens())
      fail("forward: sequence would reach ", seq->position() + T, " tokens, its limit is ",
           seq->max_tokens());
    for (int64_t t = 0; t < T; ++t)
      if (item.tokens[size_t(t)] < 0 || item.tokens[size_t(t)] >= V)
        fail("token ", t, " of the chunk: id ", item.tokens[size_t(t)],
             " is outside the vocabulary [0, ", V, ")");
    const bool tracing = trace && *trace;
    if (item.logits) item.logits->resize(size_t((item.all_logits ? T : 1) * V));
    float* out = item.logits ? item.logits->data() : nullptr;

    if (T == 1 && opt_.use_graph && !tracing) {
      decode_with_graph(*seq, item.tokens[0], out, item.sample);
    } else {
      run_eager(seq, item, trace, out);
    }
    if (item.sample) *item.sampled = checked_sample(*seq);
  }

  // Prefill chunks and traced or graph-less steps: passes of at most kMaxChunk tokens.
  void run_eager(CudaSequenceState* seq, const ForwardItem& item, const TraceHook* trace,
                 float* out) {
    const int64_t T = int64_t(item.tokens.size()), V = model_->cfg.vocab_size;
    for (int64_t t0 = 0; t0 < T; t0 += kMaxChunk) {
      const int Tc = int(std::min<int64_t>(kMaxChunk, T - t0));
      const bool last = t0 + Tc == T;
      const int rows = item.all_logits ? Tc : (last ? 1 : 0);
      std::vector<int32_t> pos(static_cast<size_t>(Tc));
      for (int i = 0; i < Tc; ++i) pos[size_t(i)] = int32_t(seq->position() + i);
      DSV4_CUDA_CHECK(cudaMemcpyAsync(scratch_->tokens, item.tokens.data() + t0,
                                      size_t(Tc) * 4, cudaMemcpyHostToDevice, stream_));
      DSV4_CUDA_CHECK(cudaMemcpyAsync(scratch_->pos, pos.data(), size_t(Tc) * 4,
                                      cudaMemcpyHostToDevice, stream_));
      const StepContext c{*model_, *seq, *scratch_, stream_, trace, Tc};
      enqueue_pass(c, std::max(rows, 1));
      if (last && item.sample) {
        host_io_->step = uint64_t(seq->position() + Tc);
        DSV4_CUDA_CHECK(cudaMemcpyAsync(sample_step_.get(), &host_io_->step, 8,
                                        cudaMemcpyHostToDevice, stream_));
        enqueue_sample(*item.sample, scratch_->logits + size_t(std::max(rows, 1) - 1) * V);
        DSV4_CUDA_CHECK(cudaMemcpyAsync(&host_io_->sampled, sampled_.get(), 4,
                                        cudaMemcpyDeviceToHost, stream_));
      }
      if (rows > 0 && out) {
        DSV4_CUDA_CHECK(cudaMemcpyAsync(out, scratch_->logits, size_t(rows * V) * 4,
                                        cudaMemcpyDeviceToHost, stream_));
        out += rows * V;
      }
      if (rows > 0) c.emit_f32("logits", -1, scratch_->logits, {rows, V});
      DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));  // pos / tokens host vectors die here
      seq->advance(Tc);
    }
  }

  // The sampler over one logits row [vocab] into sampled_, at the Philox step in sample_step_.
  void enqueue_sample(const DeviceSampling& d, const float* row) {
    SampleParams p;
    p.logits = row;
    p.token = sampled_.get();
    p.step = sample_step_.get();
    p.rows = 1;
    p.vocab = int(model_->cfg.vocab_size);
    p.top_k = int(d.top_k);
    p.temperature = d.temperature;
    p.top_p = d.top_p;
    p.seed = d.seed;
    launch_sample(p, stream_);
  }

  // The token the last step sampled (host_io_->sampled, synchronised), after the sequence
  // advanced: the kernel's sentinel for NaN / +inf / all −inf logits becomes an error naming the
  // position whose logits they were.
  int32_t checked_sample(const CudaSequenceState& seq) const {
    const int32_t id = host_io_->sampled;
    if (id == kSampleInvalidToken)
      fail("non-finite logits at position ", seq.position() - 1,
           " (NaN, +inf or every logit -inf): no token can be sampled");
    DSV4_CHECK_MSG(id >= 0 && id < model_->cfg.vocab_size, "device sampler returned id ", id);
    return id;
  }

  // One token: write token and position (and, when sampling, the Philox step: the sampled
  // token's position, so draws depend on (seed, position) only and graph and eager steps agree)
  // into the fixed device inputs, replay the sequence's graph (captured on its first decode step,
  // again when the sampling parameters change: they are baked into the sampler's launch), read
  // the logits row and / or the sampled id.
  void decode_with_graph(CudaSequenceState& seq, int32_t token, float* logits,
                         const DeviceSampling* sample) {
    const std::optional<DeviceSampling> want =
        sample ? std::optional<DeviceSampling>(*sample) : std::nullopt;
    // Dropped before check_step's measurement (destroying frees memory).
    if (seq.decode_graph && seq.decode_sampling != want) {
      DSV4_CUDA_CHECK(cudaGraphExecDestroy(seq.decode_graph));
      seq.decode_graph = nullptr;
    }
    // Capturing and instantiating a graph may allocate, and so may its first replay (lazy kernel
    // module loading): the check covers every later replay, which is what decode repeats.
    if (!seq.decode_graph) capture_decode(seq, want);
    const bool check = opt_.check_step && seq.decode_replays > 0;
    const size_t free_before = check ? free_device_bytes() : 0;
    host_io_->token = token;
    host_io_->pos = int32_t(seq.position());
    host_io_->step = uint64_t(seq.position() + 1);
    DSV4_CUDA_CHECK(cudaMemcpyAsync(scratch_->tokens, &host_io_->token, 4,
                                    cudaMemcpyHostToDevice, stream_));
    DSV4_CUDA_CHECK(cudaMemcpyAsync(scratch_->pos, &host_io_->pos, 4,
                                    cudaMemcpyHostToDevice, stream_));
    if (sample)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(sample_step_.get(), &host_io_->step, 8,
                                      cudaMemcpyHostToDevice, stream_));
    DSV4_CUDA_CHECK(cudaGraphLaunch(seq.decode_graph, stream_));
    if (logits)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(logits, scratch_->logits,
                                      size_t(model_->cfg.vocab_size) * 4, cudaMemcpyDeviceToHost,
                                      stream_));
    if (sample)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(&host_io_->sampled, sampled_.get(), 4,
                                      cudaMemcpyDeviceToHost, stream_));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    ++seq.decode_replays;
    if (check && free_device_bytes() != free_before)
      fail("check-step: device memory changed during a decode step (an allocation inside the step)");
    seq.advance(1);
  }

  // Global capture mode: any host synchronisation or allocation inside the step fails the capture
  // with a CUDA error instead of being baked into the graph.
  void capture_decode(CudaSequenceState& seq, const std::optional<DeviceSampling>& sample) {
    cudaGraph_t graph = nullptr;
    DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    try {
      const StepContext c{*model_, seq, *scratch_, stream_, nullptr, 1};
      enqueue_pass(c, 1);
      if (sample) enqueue_sample(*sample, scratch_->logits);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (end != cudaSuccess)
      fail("the decode step could not be captured as one CUDA graph (", cudaGetErrorString(end),
           "): a host synchronisation or allocation happened inside the step");
    const cudaError_t inst = cudaGraphInstantiate(&seq.decode_graph, graph, 0);
    cudaGraphDestroy(graph);
    DSV4_CUDA_CHECK(inst);
    seq.decode_sampling = sample;
    seq.decode_replays = 0;
  }

  CudaOptions opt_;
  std::unique_ptr<DeviceModel> model_;
  std::unique_ptr<DeviceArena> arena_;
  std::unique_ptr<Scratch> scratch_;
  cudaStream_t stream_ = nullptr;
  HostIo* host_io_ = nullptr;        // pinned
  DeviceBuffer<uint64_t> sample_step_;  // [1] the sampler's Philox step, written before each sample
  DeviceBuffer<int32_t> sampled_;       // [1] the sampled id
};

}  // namespace

std::unique_ptr<Forward> make_cuda_forward(const std::filesystem::path& model_dir,
                                           const CudaOptions& options) {
  return std::make_unique<CudaForward>(model_dir, options);
}

}  // namespace dsv4
