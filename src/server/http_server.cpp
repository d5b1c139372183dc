// HttpServer (http_server.h) on cpp-httplib 0.11 (Debian's libcpp-httplib-dev): a thread pool
// sized for long-lived streams, handlers that check auth and state after the body is read (so
// nothing unread is left on a keep-alive connection), and a content provider per SSE stream.
#include "server/http_server.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include <httplib.h>

#include "server/api_error.h"
#include "server/connection_watch.h"
#include "server/openai_response.h"
#include "util/error.h"

namespace dsv4::server {

namespace {

// How long a stream's content provider waits for news before it checks the client again.
constexpr std::chrono::milliseconds kStreamPoll{50};
// The listen queue: room for a burst of hundreds of clients connecting at once.
constexpr int kListenBacklog = 1024;
// Requests on one keep-alive connection before the server closes it (cpp-httplib's default is 5).
constexpr size_t kKeepAliveRequests = 100;
// A client that neither sends nor reads for this long is dropped (and its request cancelled).
constexpr time_t kSocketTimeoutSeconds = 30;

void send_json(httplib::Response& res, int status, const Json& j) {
  res.status = status;
  res.set_content(dump_json(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status(), error_body(e)); }

void send_reply(httplib::Response& res, HttpReply reply) {
  res.status = reply.status;
  if (!reply.stream) {
    res.set_content(reply.body, reply.content_type);
    return;
  }
  std::shared_ptr<EventStream> stream(std::move(reply.stream));
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // reverse proxies: do not buffer the stream
  // Exactly "text/event-stream": cpp-httplib never compresses that type, so every event goes out
  // as it is written.
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream](size_t, httplib::DataSink& sink) {
        std::optional<std::string> text = stream->next(kStreamPoll);
        if (!text) {
          sink.done();
          return true;
        }
        if (!text->empty()) return sink.write(text->data(), text->size());
        return sink.is_writable();  // false when the client hung up: the releaser cancels
      },
      // Runs however the response ends; after a complete stream cancel() does nothing.
      [stream](bool) { stream->cancel(); });
}

// Endpoint label for the request counter: the known routes, everything else as "other" (the
// label set must not grow with whatever paths clients try).
std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"})
    if (path == known) return known;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{model}";
  return "other";
}

bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;  // no early exit: the time taken does not reveal the matching prefix
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string status_message(int status, const httplib::Request& req, size_t max_body) {
  switch (status) {
    case 400: return "malformed HTTP request";
    case 404: return cat("no route ", req.method, " ", req.path);
    case 413: return cat("the request body is larger than ", max_body, " bytes");
    case 414: return "the request URI is too long";
    default: return cat("HTTP ", status);
  }
}

}  // namespace

// cpp-httplib 0.11 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into the
// packaged library): a burst of clients would wait for SYN retransmits (1 s, 3 s, ...). listen()
// again on a listening socket only resizes its queue.
class HttpServer::Listener : public httplib::Server {
 public:
  void widen_backlog(int n) { ::listen(svr_sock_, n); }
};

HttpServer::HttpServer(HttpOptions options, ServerMetrics& metrics)
    : options_(std::move(options)), metrics_(metrics), http_(std::make_unique<Listener>()) {
  if (options_.threads < 1) fail("HTTP threads must be >= 1, got ", options_.threads);
  install_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
    if (port < 0) fail("cannot listen on ", options_.host, ": ", std::strerror(errno));
  } else if (!http_->bind_to_port(options_.host, port)) {
    fail("cannot listen on ", options_.host, ":", port, ": ", std::strerror(errno));
  }
  http_->widen_backlog(kListenBacklog);
  return port;
}

void HttpServer::serve() {
  {
    std::lock_guard lock(run_mu_);
    if (stop_requested_) return;
    serving_ = true;
  }
  http_->listen_after_bind();
  serve_returned_ = true;
}

void HttpServer::set_ready(OpenAiService& service, Scheduler& scheduler) {
  scheduler_ = &scheduler;
  service_ = &service;
}

void HttpServer::begin_draining() { draining_ = true; }

void HttpServer::stop() {
  {
    std::lock_guard lock(run_mu_);
    stop_requested_ = true;
    if (!serving_) return;  // serve() has not started and now never will
  }
  // httplib's stop() does nothing before its accept loop runs: wait for that loop to start.
  while (!http_->is_running() && !serve_returned_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http_->stop();
}

void HttpServer::install_routes() {
  httplib::Server& s = *http_;
  const size_t threads = size_t(options_.threads);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.set_payload_max_length(options_.max_body_bytes);
  s.set_keep_alive_max_count(kKeepAliveRequests);
  s.set_read_timeout(kSocketTimeoutSeconds);
  s.set_write_timeout(kSocketTimeoutSeconds);

  // Before the body is read: a chunked request body has no size the library would check against
  // the payload limit, so it is refused, and the rest of it is not read as a next request.
  s.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(411, "a request body needs a Content-Length (chunked bodies are not accepted)"));
    ConnectionWatch(req.local_addr, req.local_port, req.remote_addr, req.remote_port).stop_reading();
    return httplib::Server::HandlerResponse::Handled;
  });
  // Statuses the library sets itself (no route, body too large, malformed HTTP) get OpenAI's
  // error shape; replies that already carry a body are left alone.
  const size_t max_body = options_.max_body_bytes;
  s.set_error_handler(httplib::Server::HandlerWithResponse(
      [max_body](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty() || res.status < 400) return httplib::Server::HandlerResponse::Unhandled;
        res.set_content(dump_json(error_body(res.status, status_message(res.status, req, max_body))),
                        "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body(500, "internal error: " + what));
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.count_http(endpoint_label(req.path), res.status);
  });

  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_) return send_json(res, 503, {{"status", "draining"}});
    if (!service_) return send_json(res, 503, {{"status", "loading"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    Scheduler* scheduler = scheduler_;
    OpenAiService* service = service_;
    const std::string text = metrics_.render(scheduler ? scheduler->stats() : SchedulerStats{},
                                             service ? service->in_flight() : 0);
    res.set_content(text, "text/plain; version=0.0.4");
  });

  // The /v1 routes: auth, then state; checked here, after cpp-httplib has read the body.
  using V1Handler = std::function<void(OpenAiService&, const httplib::Request&, httplib::Response&)>;
  auto v1 = [this](V1Handler handler) {
    return [this, handler](const httplib::Request& req, httplib::Response& res) {
      if (!options_.api_key.empty()) {
        const std::string auth = req.get_header_value("Authorization");
        const std::string prefix = "Bearer ";
        if (auth.compare(0, prefix.size(), prefix) != 0 || !same_secret(auth.substr(prefix.size()), options_.api_key))
          return send_error(res, ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)", "",
                                          "invalid_api_key"));
      }
      OpenAiService* service = service_;
      if (draining_) return send_error(res, ApiError(503, "the server is shutting down", "", "server_shutting_down"));
      if (!service) return send_error(res, ApiError(503, "the model is still loading; retry shortly", "", "loading"));
      handler(*service, req, res);
    };
  };
  // A non-streaming request watches its connection, so that a client that gives up frees the KV.
  auto client_gone = [](const httplib::Request& req) {
    return [&req, watch = std::optional<ConnectionWatch>()]() mutable {
      if (!watch) watch.emplace(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
      return watch->hung_up();
    };
  };
  s.Get("/v1/models", v1([](OpenAiService& svc, const httplib::Request&, httplib::Response& res) {
    send_reply(res, svc.models());
  }));
  s.Get("/v1/models/(.+)", v1([](OpenAiService& svc, const httplib::Request& req, httplib::Response& res) {
    send_reply(res, svc.model(req.matches[1]));
  }));
  s.Post("/v1/chat/completions", v1([client_gone](OpenAiService& svc, const httplib::Request& req, httplib::Response& res) {
    send_reply(res, svc.chat_completions(req.body, client_gone(req)));
  }));
  s.Post("/v1/completions", v1([client_gone](OpenAiService& svc, const httplib::Request& req, httplib::Response& res) {
    send_reply(res, svc.completions(req.body, client_gone(req)));
  }));
}

}  // namespace dsv4::server
