// The OpenAI endpoints without the HTTP transport: a request body in, a reply (status + JSON, or
// a stream of SSE text) out. Chat: parse -> encode (chat encoder) -> tokenize -> context check ->
// Generation on the scheduler -> ChatResponseBuilder; completions the same without the encoder.
// Sockets, routing, auth and shutdown are http_server.cpp's.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::server {

class Generation;

struct ServiceConfig {
  std::string model_name;          // what requests must name in "model"
  int64_t max_context = 0;         // prompt + max_tokens may not exceed it (Forward::kv_cache())
  int32_t eos_id = 1;
  int32_t vocab_size = 0;
  int64_t default_max_tokens = 2048;  // when a request gives none (then capped by the context)
  RequestDefaults defaults;
};

// The SSE text of one streaming response, pulled by the HTTP layer's content provider.
class EventStream {
 public:
  virtual ~EventStream() = default;
  // The next SSE text: "" when nothing new came within `timeout`, nullopt after the last event.
  virtual std::optional<std::string> next(std::chrono::milliseconds timeout) = 0;
  virtual void cancel() = 0;  // the client went away: end the request and free its KV now
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::unique_ptr<EventStream> stream;  // set for a streaming reply (status 200, body unused)
};

class OpenAiService {
 public:
  OpenAiService(Scheduler& scheduler, const Tokenizer& tokenizer, ServerMetrics& metrics, ServiceConfig config);

  // `client_gone` is polled while a non-streaming request runs; true cancels it.
  HttpReply chat_completions(const std::string& body, const std::function<bool()>& client_gone);
  HttpReply completions(const std::string& body, const std::function<bool()>& client_gone);
  HttpReply models() const;
  HttpReply model(const std::string& name) const;  // GET /v1/models/{model}: the entry, or 404

  // Generation requests whose response is not finished (streams included).
  int64_t in_flight() const { return *in_flight_; }
  const ServiceConfig& config() const { return config_; }

 private:
  // Model and context checks, defaults, submission; throws ApiError (404, 400, 429).
  std::unique_ptr<Generation> start(const GenerationRequest& g, std::vector<int32_t> prompt,
                                    std::chrono::steady_clock::time_point arrival);
  chat::Json model_json() const;
  std::string random_hex(size_t n);
  uint64_t random_seed();

  Scheduler& scheduler_;
  const Tokenizer& tokenizer_;
  ServerMetrics& metrics_;
  ServiceConfig config_;
  std::shared_ptr<std::atomic<int64_t>> in_flight_;
  std::mutex rng_mu_;
  std::mt19937_64 rng_;
};

}  // namespace dsv4::server
