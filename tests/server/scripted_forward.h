// A test-only Forward that "generates" known completion text: when a sequence's prompt holds a
// script's user text (the latest one, in a conversation), the logits after the prompt spell that
// script's completion token by token, then EOS; any other prompt gets a deterministic filler (a hash of the history), never EOS. It
// lets the server's tool-call and reasoning paths run end to end where nano cannot produce them.
// KV blocks and slots are counted in a KvBlockPool, as a real backend does.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/forward.h"
#include "model/kv_blocks.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::test {

struct Script {
  std::string user;        // the user message that selects it (its whole content)
  std::string completion;  // what the model "writes" after <｜Assistant｜><think> or </think>
};

struct ScriptedOptions {
  int64_t max_context = 4096;
  int64_t slots = 64;
  int64_t blocks = 4096;
  std::chrono::milliseconds step_delay{0};  // per forward() call: slows streams down for tests
};

class ScriptedForward : public Forward {
 public:
  ScriptedForward(const Tokenizer& tokenizer, std::vector<Script> scripts, ScriptedOptions options);

  const ModelConfig& config() const override { return config_; }
  std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) override;
  KvCacheInfo kv_cache() const override;
  bool reserve(SequenceState& seq, int64_t n_tokens) override;
  void forward(std::span<ForwardItem> batch, const TraceHook* trace) override;

  // The id that follows `history` (what the logits peak at).
  int32_t next_id(const std::vector<int32_t>& history) const;

 private:
  struct Compiled {
    std::vector<int32_t> user, completion;
  };
  ModelConfig config_;
  ScriptedOptions options_;
  std::vector<Compiled> scripts_;
  int32_t assistant_id_ = -1;
  KvBlockPool pool_;
};

}  // namespace dsv4::test
