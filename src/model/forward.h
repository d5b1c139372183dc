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
  // Speculative decoding (Forward::can_draft): also run the MTP block over this item's rows but
  // the last (row i with the next token tokens[i+1]) and keep the final streams of its last
  // kMaxSpeculative + 1 rows for draft(). The sequence's MTP position must equal its position, or
  // be one behind it (after a forward with mtp that draft() did not follow — a prefill chunk, or
  // a step that drafted nothing): then the MTP block first consumes that position, with its kept
  // streams and tokens[0] as the next token. Every forward of a drafting sequence needs mtp.
  bool mtp = false;
  // With all_logits and `sample`: sample every row, not only the last (speculative verification
  // reads a token per row): sampled_rows[i] for row i (a backend that samples).
  int32_t* sampled_rows = nullptr;
};

// Speculative decoding with the model's MTP block (§10). The protocol, for a sequence that has
// consumed positions [0, p) and whose MTP block has consumed the same positions:
//   1. forward(tokens = [x_p, d_1 … d_k], mtp, all_logits): the main model verifies the drafts and
//      the MTP block consumes positions p … p+k−1 with next tokens d_1 … d_k;
//   2. the caller accepts a drafts (d_1 … d_a agree with the verifier) and calls rollback(seq,
//      p + a + 1): positions from there on are forgotten in every piece of streaming state (window
//      rings, compressor windows and entries, indexer keys, KV blocks) and the MTP block's
//      position becomes p + a (its rows for rejected drafts are forgotten too);
//   3. draft(seq, token = the verifier's token after d_a): the MTP block consumes position p + a
//      with that token (from the kept streams of the verify rows) and drafts n tokens, feeding its
//      own output streams back for the next draft (§10); it then forgets those recurrent rows, so
//      its position is p + a + 1 = the sequence's.
// A prefill is step 1 with the prompt (k = len − 1, nothing rejected).
inline constexpr int kMaxSpeculative = 3;  // drafted tokens per step at most

struct DraftItem {
  SequenceState* seq = nullptr;
  int32_t token = 0;        // the token at the sequence's position (sampled, not yet fed)
  int n_draft = 0;          // 1 … kMaxSpeculative
  // Chooses each drafted token from the draft logits [vocab] (greedy, or a sample for the
  // speculative-sampling rule); nullptr: greedy (argmax, lowest id on ties).
  std::function<int32_t(std::span<const float> logits)> choose;
  std::vector<int32_t>* drafts = nullptr;  // out [n_draft]
  std::vector<float>* logits = nullptr;    // out [n_draft, vocab] when not null
};

// The checks every backend's draft() makes of an item before any state changes (Error naming the
// field): 1 ≤ n_draft ≤ kMaxSpeculative, an output, a token in [0, vocab), and the MTP block one
// position behind the sequence (`position`, `mtp_position`: the item's sequence's).
void check_draft_item(const DraftItem& item, int64_t vocab, int64_t position, int64_t mtp_position);

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

// A backend's host tier (the CUDA backend's routed experts kept in host memory and computed by
// the host's cores, cuda/host_experts.h): its share, and the work it has done since load (a
// benchmark reads differences). All zero when there is none.
struct HostTierInfo {
  int64_t host_experts = 0;  // routed experts per layer on the host
  int64_t experts = 0;       // routed experts per layer in all
  size_t host_bytes = 0;     // their weights in host memory
  double seconds = 0;        // wall time of the host's computations
  int64_t calls = 0, picks = 0;  // MoE sub-layers run, (row, pick) pairs computed
  int64_t streamed = 0;      // MoE sub-layers of many rows whose host experts were copied to the GPU
  int64_t core_experts = 0;  // of host_experts, those whose decode rows the host's cores compute
                             // (the GPU copies the others' weights over the bus and runs them)
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

  // Speculative decoding (the protocol above). can_draft(): the checkpoint has an MTP block and
  // the backend implements it; the other two throw dsv4::Error when it does not.
  virtual bool can_draft() const { return false; }
  virtual void draft(std::span<DraftItem> items);
  // Forgets positions [n_tokens, position) of `seq` (at most kMaxSpeculative + 1 of them).
  virtual void rollback(SequenceState& seq, int64_t n_tokens);

  virtual HostTierInfo host_tier() const { return {}; }
  // Who computes decode rows routed to host experts from now on, as CudaOptions::host_cores_share
  // (1: the host's cores, 0: the GPU over the bus, in between: split): lets `dsv4 bench` time
  // every mode on one load (full-size Flash takes minutes to load). Waits for the work in flight;
  // decode graphs are captured again on their next use. Throws dsv4::Error without a host tier
  // or for a share the tier cannot run.
  virtual void set_host_cores_share(double share);

  // Rows the backend runs in one pass over the model (the CUDA backend's --pass-rows), or 0 when
  // it has no such unit (the CPU backend computes a chunk's rows in one go). A step of more rows
  // runs as several passes; prompt chunks filled up to it give the expert GEMMs the most rows.
  virtual int64_t pass_rows() const { return 0; }
};

}  // namespace dsv4
