// The endpoints (openai_service.h). Both generation endpoints share start() (context check,
// defaults, submission) and respond() (the wait loop or the SSE stream around a response builder).
#include "server/openai_service.h"

#include <ctime>

#include "chat/encoder.h"
#include "server/api_error.h"
#include "server/generation_bridge.h"
#include "server/openai_response.h"
#include "util/error.h"
#include "util/json_limits.h"

namespace dsv4::server {

namespace {

using Clock = Generation::Clock;

// How often a waiting request looks at its client: a hang-up frees the KV within this time.
constexpr std::chrono::milliseconds kPollInterval{50};
// Request JSON nesting beyond this is refused before parsing (a tool schema is a few levels).
constexpr int kMaxJsonDepth = 64;

HttpReply json_reply(int status, const Json& j) {
  HttpReply r;
  r.status = status;
  r.body = dump_json(j);
  return r;
}

HttpReply error_reply(const ApiError& e) { return json_reply(e.status(), error_body(e)); }

Json parse_body(const std::string& text) {
  try {
    check_json_nesting(text, kMaxJsonDepth, "request body");
    return chat::parse_json(text, "request body");
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "", "invalid_json");
  }
}

// Counts a generation request as in flight for as long as its response is open.
class InFlight {
 public:
  explicit InFlight(std::shared_ptr<std::atomic<int64_t>> n) : n_(std::move(n)) { ++*n_; }
  ~InFlight() { --*n_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::shared_ptr<std::atomic<int64_t>> n_;
};

// An outcome without a response: the scheduler is stopping (503) or the request failed (500).
ApiError failed(const RequestOutcome& o) {
  if (o.finish == FinishReason::kCancelled)
    return ApiError(503, "the request was cancelled: the server is shutting down", "", "server_shutting_down");
  return ApiError(500, "generation failed: " + o.error, "", "generation_failed");
}

bool answered(const RequestOutcome& o) {
  return o.finish != FinishReason::kCancelled && o.finish != FinishReason::kError;
}

// SSE around a response builder: the role chunk first (chat), then a chunk per update, the
// finish chunks, and [DONE]; a failure becomes an error event (the status line is long gone).
template <class Builder>
class SseStream : public EventStream {
 public:
  SseStream(std::unique_ptr<Generation> gen, Builder builder, std::optional<Json> first, bool include_usage,
            std::unique_ptr<InFlight> in_flight)
      : gen_(std::move(gen)), builder_(std::move(builder)), first_(std::move(first)),
        include_usage_(include_usage), in_flight_(std::move(in_flight)) {}

  std::optional<std::string> next(std::chrono::milliseconds timeout) override {
    if (done_) return std::nullopt;
    std::string out;
    if (first_) {  // at once, so the client sees its stream open before the first token
      out = sse_event(*first_);
      first_.reset();
      return out;
    }
    GenerationUpdate u = gen_->wait(timeout);
    for (const Json& c : builder_.push(u.text, u.tokens)) out += sse_event(c);
    if (u.outcome) {
      if (answered(*u.outcome)) {
        for (const Json& c : builder_.finish(*u.outcome, include_usage_)) out += sse_event(c);
      } else {
        out += sse_event(error_body(failed(*u.outcome)));
      }
      out += kSseDone;
      done_ = true;
      in_flight_.reset();
    }
    return out;
  }

  void cancel() override {
    if (done_) return;
    gen_->cancel();
    done_ = true;
    in_flight_.reset();
  }

 private:
  std::unique_ptr<Generation> gen_;
  Builder builder_;
  std::optional<Json> first_;
  bool include_usage_;
  std::unique_ptr<InFlight> in_flight_;
  bool done_ = false;
};

// Non-streaming: wait for the outcome, cancelling when the client hangs up (then the reply is
// nginx's 499 "client closed request": nobody reads it, the request counter does).
template <class Builder>
HttpReply respond_whole(Generation& gen, Builder& builder, const std::function<bool()>& client_gone) {
  bool hung_up = false;
  while (true) {
    GenerationUpdate u = gen.wait(kPollInterval);
    builder.push(u.text, u.tokens);
    if (u.outcome) {
      if (hung_up && u.outcome->finish == FinishReason::kCancelled)
        return error_reply(ApiError(499, "the client closed the connection", "", "client_closed_request"));
      if (!answered(*u.outcome)) return error_reply(failed(*u.outcome));
      builder.finish(*u.outcome, false);
      return json_reply(200, builder.response(*u.outcome));
    }
    if (!hung_up && client_gone && client_gone()) {
      hung_up = true;
      gen.cancel();  // the outcome (kCancelled) follows at the scheduler's next step
    }
  }
}

}  // namespace

OpenAiService::OpenAiService(Scheduler& scheduler, const Tokenizer& tokenizer, ServerMetrics& metrics,
                             ServiceConfig config)
    : scheduler_(scheduler), tokenizer_(tokenizer), metrics_(metrics), config_(std::move(config)),
      in_flight_(std::make_shared<std::atomic<int64_t>>(0)), rng_(std::random_device{}()) {}

std::string OpenAiService::random_hex(size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::lock_guard lock(rng_mu_);
  std::string s(n, '0');
  for (char& c : s) c = kHex[rng_() & 15];
  return s;
}

uint64_t OpenAiService::random_seed() {
  std::lock_guard lock(rng_mu_);
  return rng_();
}

std::unique_ptr<Generation> OpenAiService::start(const GenerationRequest& g, std::vector<int32_t> prompt,
                                                 Clock::time_point arrival) {
  if (g.model != config_.model_name)
    throw ApiError(404, cat("The model '", g.model, "' does not exist (this server serves '", config_.model_name, "')"),
                   "model", "model_not_found");
  const int64_t n_prompt = int64_t(prompt.size());
  if (n_prompt == 0) bad_field("prompt", "the prompt is empty after tokenization");
  const int64_t room = config_.max_context - n_prompt;
  if (g.max_tokens ? n_prompt + *g.max_tokens > config_.max_context : room < 1)
    throw ApiError(400,
                   cat("This model's maximum context length is ", config_.max_context, " tokens. However, you requested ",
                       n_prompt + (g.max_tokens ? *g.max_tokens : 1), " tokens (", n_prompt, " in the prompt, ",
                       g.max_tokens ? *g.max_tokens : 1, " in the completion). Reduce the prompt or max_tokens."),
                   g.max_tokens ? "max_tokens" : "messages", "context_length_exceeded");
  for (int32_t id : g.stop_token_ids)
    if (id >= config_.vocab_size)
      bad_field("stop_token_ids", cat("stop_token_ids: ", id, " is outside the vocabulary [0, ", config_.vocab_size, ")"));

  GenerationSpec spec;
  spec.prompt = std::move(prompt);
  spec.sampling = g.sampling;
  spec.sampling.seed = g.seed ? *g.seed : random_seed();
  // The device sampler computes no log-probabilities: asking for them makes the scheduler sample
  // on the host (engine/sampler.h SamplingParams::logprobs).
  spec.sampling.logprobs = g.logprobs;
  spec.max_tokens = g.max_tokens ? *g.max_tokens : std::min(config_.default_max_tokens, room);
  spec.stop_strings = g.stop;
  spec.stop_ids = g.stop_token_ids;
  spec.ignore_eos = g.ignore_eos;
  try {
    return std::make_unique<Generation>(scheduler_, tokenizer_, config_.eos_id, std::move(spec), metrics_, arrival);
  } catch (const QueueFullError& e) {
    throw ApiError(429, cat("The server is busy: ", e.what(), ". Retry later."), "", "queue_full");
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "", "invalid_request");
  }
}

HttpReply OpenAiService::chat_completions(const std::string& body, const std::function<bool()>& client_gone) {
  const Clock::time_point arrival = Clock::now();
  try {
    const ChatRequest req = parse_chat_request(parse_body(body), config_.defaults);
    std::string text;
    try {
      text = chat::encode_messages(req.messages, req.encode);
    } catch (const Error& e) {
      bad_field("messages", e.what());
    }
    auto in_flight = std::make_unique<InFlight>(in_flight_);
    std::unique_ptr<Generation> gen = start(req.gen, tokenizer_.encode(text), arrival);
    ResponseMeta meta{"chatcmpl-" + random_hex(24), int64_t(std::time(nullptr)), config_.model_name};
    ChatResponseBuilder builder(meta, req.encode.mode, tokenizer_, {req.gen.logprobs, req.gen.top_logprobs},
                                req.gen.stream, [this] { return "call_" + random_hex(24); });
    if (!req.gen.stream) return respond_whole(*gen, builder, client_gone);
    HttpReply r;
    r.content_type = "text/event-stream";
    Json first = builder.role_chunk();
    r.stream = std::make_unique<SseStream<ChatResponseBuilder>>(std::move(gen), std::move(builder), std::move(first),
                                                                req.gen.include_usage, std::move(in_flight));
    return r;
  } catch (const ApiError& e) {
    return error_reply(e);
  }
}

HttpReply OpenAiService::completions(const std::string& body, const std::function<bool()>& client_gone) {
  const Clock::time_point arrival = Clock::now();
  try {
    CompletionRequest req = parse_completion_request(parse_body(body), config_.defaults);
    std::vector<int32_t> prompt = req.prompt_is_ids ? std::move(req.prompt_ids) : tokenizer_.encode(req.prompt);
    auto in_flight = std::make_unique<InFlight>(in_flight_);
    std::unique_ptr<Generation> gen = start(req.gen, std::move(prompt), arrival);
    ResponseMeta meta{"cmpl-" + random_hex(24), int64_t(std::time(nullptr)), config_.model_name};
    CompletionResponseBuilder builder(meta, tokenizer_, {req.gen.logprobs, req.gen.top_logprobs}, req.gen.stream);
    if (!req.gen.stream) return respond_whole(*gen, builder, client_gone);
    HttpReply r;
    r.content_type = "text/event-stream";
    r.stream = std::make_unique<SseStream<CompletionResponseBuilder>>(std::move(gen), std::move(builder), std::nullopt,
                                                                      req.gen.include_usage, std::move(in_flight));
    return r;
  } catch (const ApiError& e) {
    return error_reply(e);
  }
}

Json OpenAiService::model_json() const {
  return {{"id", config_.model_name},
          {"object", "model"},
          {"created", 0},
          {"owned_by", "dsv4"},
          {"max_model_len", config_.max_context}};
}

HttpReply OpenAiService::models() const {
  return json_reply(200, Json{{"object", "list"}, {"data", Json::array({model_json()})}});
}

HttpReply OpenAiService::model(const std::string& name) const {
  if (name != config_.model_name)
    return error_reply(ApiError(404, cat("The model '", name, "' does not exist (this server serves '",
                                         config_.model_name, "')"),
                                "model", "model_not_found"));
  return json_reply(200, model_json());
}

}  // namespace dsv4::server
