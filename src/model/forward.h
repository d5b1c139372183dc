// Forward: the one seam between the engine and a backend (cpu, cuda), declared in model/ because
// both sides depend on it and it names no backend. A backend owns the weights
// and per-sequence streaming state; prefill chunks and decode steps are the same call.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace dsv4 {

struct ModelConfig;

// design.md "Numerics": exact = FP32, no fake quantisation; official = the reference's
// quantisation points (§12), FP32 between them; official-bf16 = official plus the reference's
// BF16 activations (every tensor it stores as BF16 between ops is rounded to BF16), the rounding
// points the CUDA backend has, so the CPU can check it tightly.
enum class Numerics { kExact, kOfficial, kOfficialBf16 };
const char* to_string(Numerics n);
bool parse_numerics(std::string_view s, Numerics* out);

// Receives every named intermediate ("attn.q", "csa.entries", ...) of layer `layer` (-1 for
// model-level tensors such as "logits"), FP32, row-major with the given shape. Used by
// `dsv4 compare` and by tests to compare two backends by name.
using TraceHook = std::function<void(std::string_view name, int layer, const float* data,
                                     std::span<const int64_t> shape)>;

// Per-sequence streaming state (§5.5, §13): position, window rings, compressor partial windows,
// compressed entries, indexer keys. Backend-specific; reset for a new sequence.
class SequenceState {
 public:
  virtual ~SequenceState() = default;
  virtual int64_t position() const = 0;  // tokens consumed so far
  virtual void reset() = 0;
};

// Next-token choice done by the backend (Forward::samples_on_device), in engine/sampler.h's
// semantics without min-p or log-probabilities: temperature 0 is greedy (argmax, lowest id on
// ties), else top-k then top-p then one draw. A backend's random numbers are its own (the CUDA
// backend keys Philox by seed and the sampled token's position), not the CPU sampler's.
struct DeviceSampling {
  float temperature = 0.0f;
  int32_t top_k = 0;     // 0: off
  float top_p = 1.0f;    // 1: off
  uint64_t seed = 0;
  bool operator==(const DeviceSampling&) const = default;
};

struct ForwardItem {
  SequenceState* seq = nullptr;
  std::span<const int32_t> tokens;  // appended at positions seq->position() ...
  bool all_logits = false;          // logits for every token, else only the last one
  // out: [n_rows, vocab] FP32 (resized by the backend). Null: no logits come back (a prefill chunk
  // that is not the prompt's last, or a step whose token the backend samples on the device).
  std::vector<float>* logits = nullptr;
  const DeviceSampling* sample = nullptr;  // when the backend samples: choose the next token
  int32_t* sampled = nullptr;  // out: the token chosen for the last row, when the backend samples
};

// What the backend's KV cache can hold (design.md "Paged KV pools"). Compressed entries, indexer
// keys and (CSA) their scratch live in blocks of `block_tokens` token positions taken from one
// pool; window rings and compressor state live in per-sequence slots. A scheduler admits and
// grows sequences against these numbers.
struct KvCacheInfo {
  int64_t block_tokens = 0;    // token positions per block
  int64_t total_blocks = 0;    // in the pool
  int64_t free_blocks = 0;
  int64_t max_sequences = 0;   // sequence slots
  int64_t free_sequences = 0;
  int64_t max_context = 0;     // the longest sequence one slot can reach (tokens)
  // Blocks a sequence of n tokens holds.
  int64_t blocks_for(int64_t n) const { return block_tokens > 0 ? (n + block_tokens - 1) / block_tokens : 0; }
};

class Forward {
 public:
  virtual ~Forward() = default;
  virtual const ModelConfig& config() const = 0;
  // An empty sequence that may grow to max_tokens (<= kv_cache().max_context); it holds a
  // sequence slot until destroyed. Throws dsv4::Error when max_tokens is out of range or no slot
  // is free.
  virtual std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) = 0;
  virtual KvCacheInfo kv_cache() const = 0;
  // Takes blocks so that `seq` can hold `n_tokens` tokens in all; false (nothing taken) when the
  // pool has too few free blocks. forward() reserves what it needs itself and throws when it
  // cannot; a scheduler calls this first so that a full pool means waiting, never an error.
  // Blocks go back to the pool when the sequence is reset or destroyed.
  virtual bool reserve(SequenceState& seq, int64_t n_tokens) = 0;
  // Whether forward() honours ForwardItem::sample (else it ignores it and needs `logits`).
  virtual bool samples_on_device() const { return false; }
  // Runs every item (several sequences in one batch); advances each sequence's state.
  virtual void forward(std::span<ForwardItem> batch, const TraceHook* trace = nullptr) = 0;
};

}  // namespace dsv4
