// The generation loop against a deterministic test double of Forward that "wants" to emit a
// scripted byte string then EOS: chunked prefill, stops (EOS, id, string, length), streaming
// (pieces are whole UTF-8 and add up to the text), sequence reuse, seeded reproducibility, and
// bad input; a backend that samples on the device gets the sample when the options allow it and
// the logits path otherwise. A tiny byte-level tokenizer (ids 0..255 = bytes) decodes the ids.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <random>

#include "engine/generation.h"
#include "model/config.h"
#include "model/kv_blocks.h"
#include "tokenizer/byte_level.h"
#include "util/error.h"

namespace dsv4 {
namespace {

constexpr int32_t kEosId = 256;
constexpr int64_t kVocab = 258;  // 256 bytes, <eos>, <x>

Tokenizer byte_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::byte_to_char()[b]] = b;
  nlohmann::json added = nlohmann::json::array();
  int id = 256;
  for (const char* t : {"<eos>", "<x>"})
    added.push_back({{"id", id++}, {"content", t}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  const nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                 {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  return Tokenizer::from_json(j.dump(), "byte_tokenizer.json");
}

struct FakeSequence : SequenceState {
  std::vector<int32_t> tokens;
  int64_t position() const override { return static_cast<int64_t>(tokens.size()); }
  void reset() override { tokens.clear(); }
};

// Logits peak at the scripted next byte (position - prompt_len into the script), EOS after it.
// `sharpness` sets the gap to the other tokens: large for greedy-like runs, small for sampling.
// With `device` it also samples on the device (samples_on_device): asked to, it returns the
// scripted id through ForwardItem::sampled, and its logits (when asked for any) peak at <x>
// instead, so a token the loop took from the logits shows.
class ScriptedForward : public Forward {
 public:
  ScriptedForward(std::string script, int64_t prompt_len, float sharpness = 20.0f, bool device = false)
      : script_(std::move(script)), prompt_len_(prompt_len), sharpness_(sharpness), device_(device) {
    config_.vocab_size = kVocab;
    config_.eos_token_id = kEosId;
  }
  const ModelConfig& config() const override { return config_; }
  std::unique_ptr<SequenceState> new_sequence(int64_t) override { return std::make_unique<FakeSequence>(); }
  KvCacheInfo kv_cache() const override {
    return {kKvBlockTokens, 1 << 20, 1 << 20, 1 << 10, 1 << 10, 1 << 20};
  }
  bool reserve(SequenceState&, int64_t) override { return true; }
  bool samples_on_device() const override { return device_; }
  int64_t pass_rows() const override { return pass; }
  void forward(std::span<ForwardItem> batch, const TraceHook*) override {
    for (ForwardItem& item : batch) {
      auto* seq = static_cast<FakeSequence*>(item.seq);
      const bool sample = device_ && item.sample;
      calls.push_back({seq->position(), static_cast<int64_t>(item.tokens.size()), item.all_logits,
                       item.logits != nullptr, item.sample ? *item.sample : DeviceSampling{}, sample});
      seq->tokens.insert(seq->tokens.end(), item.tokens.begin(), item.tokens.end());
      const int64_t idx = seq->position() - prompt_len_;
      const int32_t target = idx >= 0 && idx < static_cast<int64_t>(script_.size())
                                 ? static_cast<unsigned char>(script_[idx]) : kEosId;
      if (sample) *item.sampled = target;
      if (!item.logits) continue;
      item.logits->assign(kVocab, 0.0f);
      for (int64_t v = 0; v < kVocab; ++v) (*item.logits)[v] = -0.01f * static_cast<float>(v % 7);
      (*item.logits)[device_ ? kOtherId : target] = sharpness_;
    }
  }
  struct Call {
    int64_t start, n;
    bool all_logits;
    bool logits = true;         // a logits vector was passed
    DeviceSampling sample{};    // what the loop asked the device to sample with
    bool sampled = false;       // the device sampled
  };
  std::vector<Call> calls;
  int64_t pass = 0;  // what pass_rows() says
  static constexpr int32_t kOtherId = 257;  // <x>

 private:
  ModelConfig config_;
  std::string script_;
  int64_t prompt_len_;
  float sharpness_;
  bool device_;
};

std::vector<int32_t> bytes(const std::string& s) {
  std::vector<int32_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

GenerationOptions greedy() {
  GenerationOptions o;
  o.sampling.temperature = 0.0f;
  return o;
}

bool whole_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    i += len;
  }
  return true;
}

TEST(Generation, GreedyFollowsTheScriptAndStopsOnEos) {
  const Tokenizer tok = byte_tokenizer();
  const std::string script = "Hello, wörld — 中文!";
  const std::vector<int32_t> prompt = bytes("0123456789");
  ScriptedForward fwd(script, static_cast<int64_t>(prompt.size()));
  auto seq = fwd.new_sequence(4096);
  GenerationOptions opt = greedy();
  opt.prefill_chunk = 4;
  std::string streamed;
  std::vector<std::pair<int64_t, int64_t>> progress;
  GenerationCallbacks cb;
  cb.on_text = [&](std::string_view t) {
    EXPECT_TRUE(whole_utf8(t)) << "a streamed piece splits a character";
    streamed += t;
  };
  cb.on_prefill = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
  const GenerationResult r = generate(fwd, *seq, tok, prompt, opt, cb);

  EXPECT_EQ(r.text, script);
  EXPECT_EQ(streamed, script);
  EXPECT_EQ(r.finish, FinishReason::kEos);
  EXPECT_EQ(r.stop_id, kEosId);
  EXPECT_EQ(r.tokens, bytes(script));
  EXPECT_EQ(r.logprobs.size(), script.size() + 1);  // EOS included
  // Prefill in chunks 4, 4, 2; then one call per generated token (the EOS is never fed).
  ASSERT_EQ(fwd.calls.size(), 3 + script.size());
  EXPECT_EQ(fwd.calls[0].n, 4);
  EXPECT_EQ(fwd.calls[1].start, 4);
  EXPECT_EQ(fwd.calls[2].n, 2);
  for (size_t i = 3; i < fwd.calls.size(); ++i) {
    EXPECT_EQ(fwd.calls[i].n, 1);
    EXPECT_EQ(fwd.calls[i].start, static_cast<int64_t>(prompt.size() + i - 3));
    EXPECT_FALSE(fwd.calls[i].all_logits);
  }
  EXPECT_EQ((std::vector<std::pair<int64_t, int64_t>>{{4, 10}, {8, 10}, {10, 10}}), progress);
  std::vector<int32_t> fed = prompt;
  fed.insert(fed.end(), r.tokens.begin(), r.tokens.end());
  EXPECT_EQ(r.fed, fed);
  EXPECT_EQ(static_cast<FakeSequence&>(*seq).tokens, fed);
}

// prefill_chunk 0 takes the backend's pass (Forward::pass_rows()), else kDefaultPrefillChunk; a
// chunk that is given wins; a negative one is an error.
TEST(Generation, PrefillChunksDefaultToTheBackendsPass) {
  const Tokenizer tok = byte_tokenizer();
  const std::vector<int32_t> prompt = bytes("0123456789");
  auto prefill_calls = [&](int64_t pass, int64_t chunk) {
    ScriptedForward fwd("ab", static_cast<int64_t>(prompt.size()));
    fwd.pass = pass;
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt = greedy();
    opt.prefill_chunk = chunk;
    generate(fwd, *seq, tok, prompt, opt, {});
    std::vector<int64_t> n;
    for (const auto& c : fwd.calls)
      if (c.start < static_cast<int64_t>(prompt.size())) n.push_back(c.n);
    return n;
  };
  EXPECT_EQ(prefill_calls(3, 0), (std::vector<int64_t>{3, 3, 3, 1}));
  EXPECT_EQ(prefill_calls(0, 0), (std::vector<int64_t>{10}));  // kDefaultPrefillChunk = 256
  EXPECT_EQ(prefill_calls(3, 4), (std::vector<int64_t>{4, 4, 2}));
  EXPECT_THROW(prefill_calls(3, -1), Error);
}

TEST(Generation, MaxTokensStopIdAndStopStrings) {
  const Tokenizer tok = byte_tokenizer();
  const std::string script = "abc STOP def";
  const std::vector<int32_t> prompt = bytes("p");
  {
    ScriptedForward fwd(script, 1);
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt = greedy();
    opt.max_tokens = 5;
    const GenerationResult r = generate(fwd, *seq, tok, prompt, opt);
    EXPECT_EQ(r.text, "abc S");
    EXPECT_EQ(r.finish, FinishReason::kLength);
    EXPECT_EQ(fwd.calls.size(), 1u + 4u);  // the 5th token is not fed
  }
  {
    ScriptedForward fwd(script, 1);
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt = greedy();
    opt.stop_ids = {'S'};
    const GenerationResult r = generate(fwd, *seq, tok, prompt, opt);
    EXPECT_EQ(r.text, "abc ");
    EXPECT_EQ(r.finish, FinishReason::kStopId);
    EXPECT_EQ(r.stop_id, 'S');
  }
  for (const std::string stop : {"STOP", "c S", "OP d", "f"}) {
    ScriptedForward fwd(script, 1);
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt = greedy();
    opt.stop_strings = {"never", stop, "STOPPED"};
    std::string streamed;
    GenerationCallbacks cb;
    cb.on_text = [&](std::string_view t) { streamed += t; };
    const GenerationResult r = generate(fwd, *seq, tok, prompt, opt, cb);
    const std::string want = script.substr(0, script.find(stop));
    EXPECT_EQ(r.text, want) << stop;
    EXPECT_EQ(streamed, want) << stop;  // nothing past the stop string was ever shown
    EXPECT_EQ(r.finish, FinishReason::kStopString) << stop;
  }
  {
    // A held-back prefix of a stop string that never completes is shown at the end.
    ScriptedForward fwd("xyz ST", 1);
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt = greedy();
    opt.stop_strings = {"STOP"};
    std::string streamed;
    GenerationCallbacks cb;
    cb.on_text = [&](std::string_view t) { streamed += t; };
    const GenerationResult r = generate(fwd, *seq, tok, prompt, opt, cb);
    EXPECT_EQ(r.text, "xyz ST");
    EXPECT_EQ(streamed, "xyz ST");
    EXPECT_EQ(r.finish, FinishReason::kEos);
  }
}

TEST(Generation, SeededSamplingIsReproducibleAndSequencesContinue) {
  const Tokenizer tok = byte_tokenizer();
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  auto run = [&](uint64_t s) {
    ScriptedForward fwd("some scripted text", 2, /*sharpness=*/2.0f);  // soft: sampling varies
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt;
    opt.sampling = {1.0f, 0, 0.95f, 0.0f, s};
    opt.max_tokens = 30;
    return generate(fwd, *seq, tok, bytes("ab"), opt).tokens;
  };
  EXPECT_EQ(run(seed), run(seed));

  // A second call appends to the same sequence at the right positions.
  ScriptedForward fwd("xy", 2);
  auto seq = fwd.new_sequence(64);
  const GenerationResult first = generate(fwd, *seq, tok, bytes("ab"), greedy());
  EXPECT_EQ(first.text, "xy");
  const size_t n_calls = fwd.calls.size();
  generate(fwd, *seq, tok, bytes("c"), greedy(), {}, first.fed);
  EXPECT_EQ(fwd.calls[n_calls].start, 4);  // after "ab" + "xy"
}

// A backend that samples gets the sample (with the options' parameters) on the prefill's last
// chunk and every decode step, and no logits vector there; earlier prefill chunks ask for nothing.
TEST(Generation, DeviceSamplingWhenTheBackendCanAndTheOptionsAllow) {
  const Tokenizer tok = byte_tokenizer();
  const std::string script = "device sampled";
  const std::vector<int32_t> prompt = bytes("0123456789");
  ScriptedForward fwd(script, static_cast<int64_t>(prompt.size()), 20.0f, /*device=*/true);
  auto seq = fwd.new_sequence(64);
  GenerationOptions opt;
  opt.sampling = {0.7f, 5, 0.9f, 0.0f, 1234, 0};
  opt.prefill_chunk = 4;
  const GenerationResult r = generate(fwd, *seq, tok, prompt, opt);
  EXPECT_EQ(r.text, script);  // the scripted ids, not <x> (the logits' peak)
  EXPECT_EQ(r.finish, FinishReason::kEos);
  ASSERT_EQ(r.logprobs.size(), script.size() + 1);
  for (const SampleResult& s : r.logprobs) {
    EXPECT_TRUE(std::isnan(s.logprob));
    EXPECT_TRUE(s.top.empty());
  }
  ASSERT_EQ(fwd.calls.size(), 3 + script.size());
  for (size_t i = 0; i < fwd.calls.size(); ++i) {
    const bool samples = i >= 2;  // chunks 4, 4 need no output; the last chunk (2) samples
    EXPECT_EQ(fwd.calls[i].sampled, samples) << i;
    EXPECT_FALSE(fwd.calls[i].logits) << i;
    if (samples) {
      EXPECT_EQ(fwd.calls[i].sample, (DeviceSampling{0.7f, 5, 0.9f, 1234})) << i;
    }
  }
}

// Min-p and log-probabilities are the host sampler's: with either, a backend that could sample
// is given no sample request and the tokens come from the logits (which peak at <x> here).
TEST(Generation, HostSamplingWhenTheOptionsNeedIt) {
  const Tokenizer tok = byte_tokenizer();
  const std::vector<int32_t> prompt = bytes("ab");
  for (int variant = 0; variant < 2; ++variant) {
    ScriptedForward fwd("xyz", 2, 20.0f, /*device=*/true);
    auto seq = fwd.new_sequence(64);
    GenerationOptions opt = greedy();
    opt.max_tokens = 3;
    if (variant == 0) {
      opt.sampling.min_p = 0.05f;
    } else {
      opt.sampling.top_logprobs = 2;
    }
    const GenerationResult r = generate(fwd, *seq, tok, prompt, opt);
    EXPECT_EQ(r.tokens, std::vector<int32_t>(3, ScriptedForward::kOtherId)) << variant;
    for (const ScriptedForward::Call& c : fwd.calls) {
      EXPECT_FALSE(c.sampled) << variant;
      EXPECT_TRUE(c.logits) << variant;
    }
    ASSERT_EQ(r.logprobs.size(), 3u);
    EXPECT_FALSE(std::isnan(r.logprobs[0].logprob)) << variant;
    EXPECT_EQ(r.logprobs[0].top.size(), variant == 0 ? 0u : 2u);
  }
}

TEST(Generation, BadInputIsAnError) {
  const Tokenizer tok = byte_tokenizer();
  ScriptedForward fwd("x", 1);
  auto seq = fwd.new_sequence(64);
  EXPECT_THROW(generate(fwd, *seq, tok, {}, greedy()), Error);
  const std::vector<int32_t> bad = {5, static_cast<int32_t>(kVocab)};
  EXPECT_THROW(generate(fwd, *seq, tok, bad, greedy()), Error);
  GenerationOptions opt = greedy();
  opt.stop_strings = {""};
  EXPECT_THROW(generate(fwd, *seq, tok, bytes("a"), opt), Error);
  opt = greedy();
  opt.sampling.top_p = 0.0f;
  EXPECT_THROW(generate(fwd, *seq, tok, bytes("a"), opt), Error);
}

}  // namespace
}  // namespace dsv4
