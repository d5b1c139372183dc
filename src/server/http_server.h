// The HTTP side of `dsv4 serve` on cpp-httplib: routes (/v1/chat/completions, /v1/completions,
// /v1/models, /health, /metrics), Bearer auth, OpenAI-shaped errors for every failure the library
// itself answers (404, 413, malformed HTTP), SSE through chunked content providers, and the
// loading -> ready -> draining states. What each endpoint does is openai_service.h's.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "server/metrics.h"
#include "server/openai_service.h"

namespace dsv4::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;            // 0: any free port (bind() says which)
  std::string api_key;        // "": no authentication
  // cpp-httplib runs each connection on one pool thread for its whole life (keep-alive and
  // streams included), so the pool bounds the open connections served at once: >= 256 streams
  // plus idle keep-alive connections.
  int threads = 512;
  size_t max_body_bytes = size_t(32) << 20;  // larger bodies get 413
};

class HttpServer {
 public:
  HttpServer(HttpOptions options, ServerMetrics& metrics);
  ~HttpServer();

  // Binds and listens (the backlog widened for bursts of connections); returns the port. Throws
  // dsv4::Error when the address cannot be bound.
  int bind();
  void serve();  // accepts until stop(); returns after every connection thread has ended

  // Loading -> ready: the /v1 endpoints and /metrics start answering through `service`, which
  // must outlive serve().
  void set_ready(OpenAiService& service, Scheduler& scheduler);
  // Ready -> draining: /health and new /v1 requests answer 503; running responses go on.
  void begin_draining();
  void stop();  // closes the listening socket; serve() returns once open connections end

 private:
  class Listener;
  void install_routes();

  HttpOptions options_;
  ServerMetrics& metrics_;
  std::unique_ptr<Listener> http_;
  std::atomic<OpenAiService*> service_{nullptr};
  std::atomic<Scheduler*> scheduler_{nullptr};
  std::atomic<bool> draining_{false};
  std::mutex run_mu_;  // serve() vs stop()
  bool stop_requested_ = false, serving_ = false;
  std::atomic<bool> serve_returned_{false};
};

}  // namespace dsv4::server
