// The CPU forward (§2): embed → L decoder blocks → HC_head, norm, lm_head, one chunk of one
// sequence at a time; a batch runs its items in order. Blocks: head.cpp, decoder_layer.cpp.
#include "cpu/cpu_forward.h"

#include <vector>

#include "cpu/cpu_model.h"
#include "cpu/decoder_layer.h"
#include "cpu/head.h"
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

class CpuForward final : public Forward {
 public:
  explicit CpuForward(std::unique_ptr<CpuModel> model) : model_(std::move(model)) {}

  const ModelConfig& config() const override { return model_->cfg; }

  std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) override {
    if (max_tokens <= 0) fail("new_sequence: max_tokens must be positive, got ", max_tokens);
    return std::make_unique<CpuSequenceState>(model_->cfg, max_tokens);
  }

  void forward(std::span<ForwardItem> batch, const TraceHook* trace) override {
    for (ForwardItem& item : batch) run_item(item, trace);
  }

 private:
  void run_item(ForwardItem& item, const TraceHook* trace) {
    auto* seq = dynamic_cast<CpuSequenceState*>(item.seq);
    if (!seq) fail("forward: the sequence state was not created by the CPU backend");
    DSV4_CHECK(item.logits != nullptr);
    const ModelConfig& cfg = model_->cfg;
    const int64_t T = int64_t(item.tokens.size()), pos0 = seq->position();
    const int64_t n = cfg.hc_mult, D = cfg.hidden_size, V = cfg.vocab_size;
    if (T == 0) {
      item.logits->clear();
      return;
    }
    if (pos0 + T > seq->max_tokens())
      fail("forward: sequence would reach ", pos0 + T, " tokens, its limit is ",
           seq->max_tokens());
    const CpuContext ctx = model_->context(trace);
    const ModelWeights& w = model_->weights;

    std::vector<float> X(size_t(T * n * D));  // [T, n, D] the hyper-connection streams
    embed_tokens(ctx, w.embed, item.tokens.data(), T, X.data());
    for (size_t l = 0; l < w.layers.size(); ++l)
      decoder_layer(ctx, w.layers[l], int(l), model_->rope_for(w.layers[l].spec), X.data(),
                    item.tokens.data(), T, pos0, seq->layers[l]);
    ctx.emit("final.streams", -1, X.data(), {T, n, D});  // MTP input (§10 step 2)

    const int64_t first = item.all_logits ? 0 : T - 1, rows = T - first;
    item.logits->resize(size_t(rows * V));
    output_head(ctx, w.hc_head, w.norm, w.head, X.data() + first * n * D, rows,
                item.logits->data());
    ctx.emit("logits", -1, item.logits->data(), {rows, V});
    seq->advance(T);
  }

  std::unique_ptr<CpuModel> model_;
};

}  // namespace

std::unique_ptr<Forward> make_cpu_forward(const std::filesystem::path& model_dir,
                                          const CpuOptions& options) {
  return std::make_unique<CpuForward>(load_cpu_model(model_dir, options));
}

}  // namespace dsv4
