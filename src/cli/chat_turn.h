// What `dsv4 generate` and `dsv4 chat` share: finding and loading a model (progress on stderr),
// the sampling flags, and one streamed turn (generate -> parse -> print). The subcommands own
// their own option sets and loops; the engine and chat libraries own the logic.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "chat/parser.h"
#include "cli/args.h"
#include "cli/model_dir.h"
#include "engine/generation.h"
#include "model/forward.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::cli {

struct LoadedModel {
  std::filesystem::path dir;
  Tokenizer tokenizer;
  std::unique_ptr<Forward> forward;
};

// Reads DIR/tokenizer.json and opens the checkpoint on the backend the options name (--backend,
// --numerics, --threads; cli/backend_args.h), reporting on stderr. --speculative K > 0 on a model
// or backend that cannot draft is an Error here.
LoadedModel load_model(const std::filesystem::path& dir, const Args& args);

// Options shared by generate and chat: sampling, limits, backend (the usage text ends with
// kBackendUsage's lines).
extern const char* const kGenerationUsage;
std::set<std::string> generation_value_options();
// Reads them; prints the seed on stderr when it was drawn at random (so the run can be repeated).
GenerationOptions generation_options(const Args& args);

// The options of the chat encoder: --thinking-mode, --reasoning-effort, --encoder-revision.
chat::EncodeOptions encode_options(const Args& args);

struct TurnResult {
  GenerationResult generation;
  chat::ParsedCompletion message;
};

// generate() (engine/generation.h) on the last `n_fresh` ids of `prompt` (the earlier ones `seq`
// already holds) with what every subcommand adds around it: a progress line on stderr while a long
// prompt is prefilled and, when the logits turn non-finite, the layer and tensor where the first
// NaN or infinity appeared (a replay of `prompt` and the sampled ids, nonfinite.h). The caller
// fits options.max_tokens to the context first (context_limit.h).
GenerationResult generate_reporting(Forward& forward, SequenceState& seq, const Tokenizer& tokenizer,
                                    std::span<const int32_t> prompt, size_t n_fresh,
                                    const GenerationOptions& options, GenerationCallbacks callbacks = {});

// Feeds `prompt` (the whole conversation's ids) to `seq`, reusing the tokens it already holds
// when `held` (the ids fed so far, updated here) is a prefix of `prompt`; generates; streams the
// content to stdout and the reasoning to stderr (unless hidden); parses leniently. max_tokens is
// capped to what the context leaves after the conversation; a conversation that fills the context
// is an Error naming both lengths.
TurnResult run_turn(LoadedModel& model, SequenceState& seq, std::vector<int32_t>& held,
                    const std::vector<int32_t>& prompt, chat::ThinkingMode mode,
                    const GenerationOptions& options, bool show_reasoning);

// "N prompt + M generated tokens, prefill X tok/s, decode Y tok/s, finish: eos" on stderr.
void print_stats(const GenerationResult& g);

}  // namespace dsv4::cli
