// ScriptedForward (scripted_forward.h): next ids are a pure function of the ids a sequence holds,
// so chunked prefill, batching and preemption with recompute all give the same output.
#include "server/scripted_forward.h"

#include <algorithm>
#include <thread>

#include "support/pooled_forward.h"
#include "util/error.h"

namespace dsv4::test {

namespace {

using ScriptedSequence = PooledSequence;

// Logit of the scripted id; every other id gets 0, so even a temperature-1 draw picks it except
// with probability vocab * e^-kPeak (below 1e-9 for vocabularies up to 10^4 ids).
constexpr float kPeak = 30.0f;

int32_t required_id(const Tokenizer& tok, const char* token) {
  const std::optional<int32_t> id = tok.token_id(token);
  if (!id) fail("scripted forward: the tokenizer has no ", token);
  return *id;
}

}  // namespace

ScriptedForward::ScriptedForward(const Tokenizer& tokenizer, std::vector<Script> scripts, ScriptedOptions options)
    : options_(options), pool_(options.blocks, options.slots) {
  config_.vocab_size = tokenizer.vocab_size();
  config_.eos_token_id = required_id(tokenizer, "<｜end▁of▁sentence｜>");
  assistant_id_ = required_id(tokenizer, "<｜Assistant｜>");
  for (const Script& s : scripts) scripts_.push_back({tokenizer.encode(s.user), tokenizer.encode(s.completion)});
}

std::unique_ptr<SequenceState> ScriptedForward::new_sequence(int64_t max_tokens) {
  if (max_tokens > options_.max_context) fail("a sequence of ", max_tokens, " tokens exceeds the context");
  const int32_t slot = pool_.take_slot();
  if (slot < 0) fail("no free sequence slot");
  return std::make_unique<ScriptedSequence>(pool_, slot);
}

KvCacheInfo ScriptedForward::kv_cache() const {
  KvCacheInfo k;
  k.block_tokens = kKvBlockTokens;
  k.total_blocks = pool_.total_blocks();
  k.free_blocks = pool_.free_blocks();
  k.max_sequences = pool_.total_slots();
  k.free_sequences = pool_.free_slots();
  k.max_context = options_.max_context;
  return k;
}

bool ScriptedForward::reserve(SequenceState& seq, int64_t n_tokens) {
  auto& s = static_cast<ScriptedSequence&>(seq);
  const int64_t need = kv_cache().blocks_for(n_tokens) - int64_t(s.blocks.size());
  return need <= 0 || pool_.take_blocks(need, s.blocks);
}

int32_t ScriptedForward::next_id(const std::vector<int32_t>& h) const {
  // The prompt ends at the last <｜Assistant｜> and the thinking token after it (a script never
  // writes <｜Assistant｜>); the script is the one whose user text comes last before that.
  const auto assistant = std::find(h.rbegin(), h.rend(), assistant_id_);
  if (assistant != h.rend()) {
    const auto prompt_end = assistant.base() - 1;
    const Compiled* script = nullptr;
    auto script_at = prompt_end;
    for (const Compiled& s : scripts_) {
      auto at = std::find_end(h.begin(), prompt_end, s.user.begin(), s.user.end());
      if (at != prompt_end && (!script || at > script_at)) {
        script = &s;
        script_at = at;
      }
    }
    const int64_t n_out = int64_t(h.end() - prompt_end) - 2;
    if (script && n_out >= 0)
      return n_out < int64_t(script->completion.size()) ? script->completion[size_t(n_out)]
                                                        : int32_t(config_.eos_token_id);
  }
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over the history
  for (int32_t v : h) hash = (hash ^ uint64_t(v)) * 1099511628211ull;
  const int32_t id = int32_t(hash % uint64_t(config_.vocab_size));
  return id == config_.eos_token_id ? id + 1 : id;
}

void ScriptedForward::forward(std::span<ForwardItem> batch, const TraceHook*) {
  if (options_.step_delay.count() > 0) std::this_thread::sleep_for(options_.step_delay);
  for (ForwardItem& it : batch) {
    auto& s = static_cast<ScriptedSequence&>(*it.seq);
    if (!reserve(s, s.position() + int64_t(it.tokens.size()))) fail("the KV cache is full");
    const size_t first_row = it.all_logits ? s.ids.size() + 1 : s.ids.size() + it.tokens.size();
    s.ids.insert(s.ids.end(), it.tokens.begin(), it.tokens.end());
    const size_t rows = s.ids.size() + 1 - first_row;
    it.logits->assign(rows * size_t(config_.vocab_size), 0.0f);
    for (size_t r = 0; r < rows; ++r) {
      const std::vector<int32_t> prefix(s.ids.begin(), s.ids.begin() + std::ptrdiff_t(first_row + r));
      (*it.logits)[r * size_t(config_.vocab_size) + size_t(next_id(prefix))] = kPeak;
    }
  }
}

}  // namespace dsv4::test
