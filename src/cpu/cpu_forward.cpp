// The CPU forward (§2): embed → L decoder blocks → HC_head, norm, lm_head, one chunk of one
// sequence at a time; a batch runs its items in order. Blocks: head.cpp, decoder_layer.cpp.
// Speculative decoding (model/forward.h's protocol): the MTP rows of a forward with `mtp`,
// draft() and rollback(); the MTP block is mtp.cpp's, the rollback sequence_state.cpp's.
#include "cpu/cpu_forward.h"

#include <algorithm>
#include <vector>

#include "cpu/cpu_model.h"
#include "cpu/decoder_layer.h"
#include "cpu/head.h"
#include "cpu/mtp.h"
#include "util/error.h"

namespace dsv4 {

std::unique_ptr<CpuModel> load_cpu_model(const std::filesystem::path& model_dir,
                                         const CpuOptions& options) {
  ModelConfig cfg = ModelConfig::load(model_dir);
  Checkpoint ckpt = Checkpoint::open(model_dir);
  ModelWeights weights = bind_weights(cfg, ckpt);
  auto m = std::unique_ptr<CpuModel>(new CpuModel{std::move(cfg), std::move(ckpt),
                                                  std::move(weights), {}, {}, {}, nullptr});
  m->rope_main = make_rope_table(m->cfg.rope_main, m->cfg.qk_rope_head_dim);
  m->rope_compress = make_rope_table(m->cfg.rope_compress, m->cfg.qk_rope_head_dim);
  m->numerics = NumericsPoints::from(options.numerics);
  m->pool = std::make_unique<ThreadPool>(options.n_threads);
  return m;
}

namespace {

// The KV accounting limits of `o` for `cfg` (cpu_forward.h CpuOptions).
KvCacheInfo cpu_kv_limits(const ModelConfig& cfg, const CpuOptions& o) {
  KvCacheInfo k;
  k.block_tokens = kKvBlockTokens;
  k.max_context = o.ctx_size > 0 ? std::min(o.ctx_size, cfg.max_position_embeddings)
                                 : cfg.max_position_embeddings;
  k.max_sequences = o.max_sequences > 0 ? o.max_sequences : kDefaultCpuSequences;
  const int64_t per_seq = k.blocks_for(k.max_context);
  k.total_blocks = o.kv_cache_tokens > 0
                       ? k.blocks_for(o.kv_cache_tokens)
                       : std::min<int64_t>(per_seq * k.max_sequences, int64_t(1) << 24);
  return k;
}

class CpuForward final : public Forward {
 public:
  CpuForward(std::unique_ptr<CpuModel> model, const CpuOptions& options)
      : model_(std::move(model)),
        limits_(cpu_kv_limits(model_->cfg, options)),
        pool_(limits_.total_blocks, limits_.max_sequences) {}

  const ModelConfig& config() const override { return model_->cfg; }

  std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) override {
    if (max_tokens <= 0) fail("new_sequence: max_tokens must be positive, got ", max_tokens);
    if (max_tokens > limits_.max_context)
      fail("a sequence of ", max_tokens, " tokens is longer than the context (", limits_.max_context,
           " tokens)");
    const int32_t slot = pool_.take_slot();
    if (slot < 0) fail("all ", limits_.max_sequences, " sequence slots are in use");
    return std::make_unique<CpuSequenceState>(model_->cfg, max_tokens, pool_, slot);
  }

  KvCacheInfo kv_cache() const override {
    KvCacheInfo k = limits_;
    k.free_blocks = pool_.free_blocks();
    k.free_sequences = pool_.free_slots();
    return k;
  }

  bool reserve(SequenceState& seq, int64_t n_tokens) override {
    return cpu_sequence(seq).reserve(n_tokens);
  }

  void forward(std::span<ForwardItem> batch, const TraceHook* trace) override {
    for (ForwardItem& item : batch) run_item(item, trace);
  }

  bool can_draft() const override { return !model_->weights.mtp.empty(); }

  void draft(std::span<DraftItem> items) override {
    require_mtp();
    for (DraftItem& item : items) draft_item(item);
  }

  void rollback(SequenceState& seq, int64_t n_tokens) override {
    cpu_sequence(seq).rollback(n_tokens);
  }

 private:
  void run_item(ForwardItem& item, const TraceHook* trace) {
    CpuSequenceState* seq = &cpu_sequence(*item.seq);
    const ModelConfig& cfg = model_->cfg;
    const int64_t T = int64_t(item.tokens.size()), pos0 = seq->position();
    const int64_t n = cfg.hc_mult, D = cfg.hidden_size, V = cfg.vocab_size;
    if (T == 0) {
      if (item.logits) item.logits->clear();
      return;
    }
    if (pos0 + T > seq->max_tokens())
      fail("forward: sequence would reach ", pos0 + T, " tokens, its limit is ",
           seq->max_tokens());
    if (!seq->reserve(pos0 + T))
      fail("the KV cache is full: ", pos0 + T, " tokens need ", kv_cache().blocks_for(pos0 + T),
           " blocks of ", kKvBlockTokens, ", ", pool_.free_blocks(), " are free");
    if (item.mtp) check_mtp_in_step(*seq);
    const CpuContext ctx = model_->context(trace);
    const ModelWeights& w = model_->weights;

    std::vector<float> X(size_t(T * n * D));  // [T, n, D] the hyper-connection streams
    embed_tokens(ctx, w.embed, item.tokens.data(), T, X.data());
    for (size_t l = 0; l < w.layers.size(); ++l)
      decoder_layer(ctx, w.layers[l], int(l), model_->rope_for(w.layers[l].spec), X.data(),
                    item.tokens.data(), T, pos0, seq->layers[l]);
    ctx.emit("final.streams", -1, X.data(), {T, n, D});  // MTP input (§10 step 2)
    if (item.mtp) run_mtp_rows(*seq, item.tokens, X.data(), pos0, trace);

    seq->advance(T);
    if (!item.logits) return;
    const int64_t first = item.all_logits ? 0 : T - 1, rows = T - first;
    item.logits->resize(size_t(rows * V));
    output_head(ctx, w.hc_head, w.norm, w.head, X.data() + first * n * D, rows,
                item.logits->data());
    ctx.emit("logits", -1, item.logits->data(), {rows, V});
  }

  void require_mtp() const {
    if (!can_draft()) fail("speculative decoding: the checkpoint has no MTP block (mtp.0.*)");
  }

  // The MTP rows of a forward with `mtp` (model/forward.h): positions mtp_position … pos0+T−2,
  // each with the main model's final streams there and the token after it. The MTP block may be one
  // position behind (after a forward whose last row had no next token yet): that row's streams are
  // the kept ones. Keeps this item's last streams for the next forward or draft().
  // Before any state changes: a forward with mtp needs the MTP block at most one behind.
  void check_mtp_in_step(const CpuSequenceState& seq) const {
    require_mtp();
    const int64_t q = seq.mtp_position(), pos0 = seq.position();
    if (q != pos0 && q != pos0 - 1)
      fail("speculative decoding: the MTP block is at position ", q, " but the sequence at ", pos0,
           ": every forward of a drafting sequence must run with mtp");
    if (q < pos0 && !seq.kept_streams(q))
      fail("speculative decoding: the streams of position ", q, " were not kept");
  }

  void run_mtp_rows(CpuSequenceState& seq, std::span<const int32_t> tokens, const float* X,
                    int64_t pos0, const TraceHook* trace) {
    const int64_t T = int64_t(tokens.size()), w = model_->cfg.hc_mult * model_->cfg.hidden_size;
    const int64_t q = seq.mtp_position();
    const int64_t rows = pos0 + T - 1 - q;
    if (rows > 0) {
      std::vector<float> streams(size_t(rows * w));
      std::vector<int32_t> next(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t p = q + r;
        const float* src = p < pos0 ? seq.kept_streams(p) : X + (p - pos0) * w;  // checked before
        std::copy(src, src + w, streams.data() + r * w);
        next[size_t(r)] = tokens[size_t(p + 1 - pos0)];
      }
      mtp_forward(*model_, seq, 0, streams.data(), next.data(), rows, nullptr, nullptr, trace);
    }
    seq.keep_streams(pos0, X, T);
  }

  // §10 drafting: the MTP block consumes position P − 1 (kept streams, item.token at P), then feeds
  // its own output streams back with each drafted token; the recurrent rows are forgotten after.
  void draft_item(DraftItem& item) {
    CpuSequenceState& seq = cpu_sequence(*item.seq);
    const int64_t P = seq.position(), V = model_->cfg.vocab_size;
    const int64_t w = model_->cfg.hc_mult * model_->cfg.hidden_size;
    check_draft_item(item, V, P, seq.mtp_position());
    const float* kept = seq.kept_streams(P - 1);
    if (!kept) fail("draft: the streams of position ", P - 1, " were not kept (the last forward ran without mtp)");
    std::vector<float> in(kept, kept + w), out(static_cast<size_t>(w)), logits(static_cast<size_t>(V));
    int32_t token = item.token;
    item.drafts->clear();
    if (item.logits) item.logits->clear();
    try {
      for (int i = 0; i < item.n_draft; ++i) {
        mtp_forward(*model_, seq, 0, in.data(), &token, 1, logits.data(), out.data());
        const int32_t d = item.choose ? item.choose(logits)
                                      : int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (d < 0 || d >= V) fail("draft: the chooser returned id ", d, ", outside the vocabulary [0, ", V, ")");
        item.drafts->push_back(d);
        if (item.logits) item.logits->insert(item.logits->end(), logits.begin(), logits.end());
        in.swap(out);
        token = d;
      }
    } catch (...) {
      seq.mtp_rollback(P - 1);  // as before the call, so that the sequence can still draft
      throw;
    }
    seq.mtp_rollback(P);  // the recurrent rows stand on drafted tokens: forgotten
  }

  static CpuSequenceState& cpu_sequence(SequenceState& s) {
    auto* seq = dynamic_cast<CpuSequenceState*>(&s);
    if (!seq) fail("forward: the sequence state was not created by the CPU backend");
    return *seq;
  }

  std::unique_ptr<CpuModel> model_;
  KvCacheInfo limits_;
  KvBlockPool pool_;
};

}  // namespace

std::unique_ptr<Forward> make_cpu_forward(const std::filesystem::path& model_dir,
                                          const CpuOptions& options) {
  return std::make_unique<CpuForward>(load_cpu_model(model_dir, options), options);
}

}  // namespace dsv4
