// `dsv4 serve`: the OpenAI-compatible HTTP server. Listens first (GET /health answers 503 while
// the model loads), then runs the scheduler on its own thread; SIGINT/SIGTERM drain (no new
// requests, running ones finish within --shutdown-timeout, then the rest are cancelled) and exit
// 0. The endpoints are src/server; this file owns options, threads and the shutdown order.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/backend_args.h"
#include "cli/chat_turn.h"
#include "cli/command.h"
#include "engine/scheduler.h"
#include "model/config.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_service.h"
#include "util/error.h"

#ifdef DSV4_WITH_CUDA
#include "cuda/cuda_check.h"
#endif

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 serve [-m DIR] [options]\n"
    "  -m DIR                checkpoint folder with tokenizer.json (default: the embedded models/nano)\n"
    "  --host H              address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)\n"
    "  --port P              TCP port (default 8000; 0 picks a free one, printed on stderr)\n"
    "  --api-key K           require \"Authorization: Bearer K\" on /v1 (default: $DSV4_API_KEY, else none)\n"
    "  --served-model-name N the model name requests must give (default: the folder's name)\n"
    "  --max-running N       sequences decoded together in one step (default 64)\n"
    "  --max-step-tokens N   tokens in one forward step, decode rows + prefill chunks (default:\n"
    "                        cuda's --pass-rows, 8192; cpu 2048)\n"
    "  --max-waiting N       queued requests beyond which new ones get 429 (default 4096)\n"
    "  --speculative K       draft K tokens per step with the model's MTP block (0-3, default 0)\n"
    "  --max-tokens N        output limit for requests that set none (default 2048; capped by the context)\n"
    "  --thinking-mode M     default for requests that do not choose: thinking (default) or chat\n"
    "  --reasoning-effort E  default effort (original revision: high|max; 0731: low|high|max)\n"
    "  --encoder-revision R  original (default) or 0731\n"
    "  --http-threads N      connections served at once (one thread each; default 512)\n"
    "  --max-body-bytes N    larger request bodies get 413 (default 33554432)\n"
    "  --shutdown-timeout S  on SIGINT/SIGTERM, seconds running requests may finish (default 30)\n"
    "  --backend B           auto (default: cuda when built with CUDA and a GPU is present, else\n"
    "                        cpu), cpu or cuda; the options below as for generate\n";

// --backend auto, serve's default: cuda when this build has it and a device is present.
std::vector<std::string> resolve_auto_backend(std::vector<std::string> argv) {
#ifdef DSV4_WITH_CUDA
  const char* chosen = cuda::device_available() ? "cuda" : "cpu";
#else
  const char* chosen = "cpu";
#endif
  bool given = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--backend" && i + 1 < argv.size()) {
      given = true;
      if (argv[i + 1] == "auto") argv[i + 1] = chosen;
    } else if (argv[i] == "--backend=auto") {
      given = true;
      argv[i] = std::string("--backend=") + chosen;
    } else if (argv[i].rfind("--backend=", 0) == 0) {
      given = true;
    }
  }
  if (!given) argv.insert(argv.end(), {"--backend", chosen});
  return argv;
}

// SIGINT/SIGTERM, taken synchronously by one thread (every other thread inherits the blocked
// mask, so no handler runs in the middle of a library call). The first starts the drain, a
// second one cancels whatever still runs.
class ShutdownSignals {
 public:
  ShutdownSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    // A client that disconnects mid-write must give EPIPE, not kill the server.
    signal(SIGPIPE, SIG_IGN);
    thread_ = std::thread([this] { watch(); });
  }
  ~ShutdownSignals() {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    thread_.join();
  }

  int count() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  void wait_for_first() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return count_ > 0; });
  }
  // Waits until `done` or a second signal, checking `done` every 50 ms.
  template <class Done>
  bool wait_until(std::chrono::steady_clock::time_point deadline, Done done) {
    while (!done()) {
      if (count() > 1 || std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  }

 private:
  void watch() {
    const timespec poll{0, 100'000'000};  // 100 ms: how soon the destructor's quit is noticed
    while (true) {
      {
        std::lock_guard lock(mu_);
        if (quit_) return;
      }
      const int sig = sigtimedwait(&set_, nullptr, &poll);
      if (sig <= 0) continue;
      std::lock_guard lock(mu_);
      ++count_;
      std::fprintf(stderr, "dsv4 serve: %s received, %s\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                   count_ == 1 ? "draining (a second signal cancels running requests)" : "cancelling");
      cv_.notify_all();
    }
  }

  sigset_t set_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
  bool quit_ = false;
  std::thread thread_;
};

// A thread with the call that makes it return; stop() (or the destructor) calls it and joins.
class JoinedThread {
 public:
  JoinedThread(std::function<void()> body, std::function<void()> ask_to_return)
      : ask_(std::move(ask_to_return)), thread_(std::move(body)) {}
  ~JoinedThread() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    ask_();
    thread_.join();
  }

 private:
  std::function<void()> ask_;
  std::thread thread_;
};

int64_t positive(const Args& args, const std::string& opt, int64_t fallback) {
  const int64_t v = args.get_int(opt, fallback);
  if (v < 1) fail(opt, " must be >= 1, got ", v);
  return v;
}

int run_serve(const std::vector<std::string>& raw_argv) {
  std::set<std::string> values = backend_value_options();
  values.insert({"--model", "--host", "--port", "--api-key", "--served-model-name", "--max-running",
                 "--max-step-tokens", "--max-waiting", "--max-tokens", "--thinking-mode", "--reasoning-effort",
                 "--encoder-revision", "--http-threads", "--max-body-bytes", "--shutdown-timeout",
                 "--speculative"});
  const Args args(resolve_auto_backend(raw_argv), values, {"--help"}, {{"-m", "--model"}, {"-h", "--help"}});
  if (args.has("--help")) {
    // kBackendUsage's own --backend line (cpu default) is replaced by kUsage's (auto default).
    const std::string_view backend = kBackendUsage;
    std::fprintf(stdout, "%s%s", kUsage, std::string(backend.substr(backend.find('\n') + 1)).c_str());
    return 0;
  }

  server::HttpOptions http_options;
  http_options.host = args.get_or("--host", http_options.host);
  const int64_t port = args.get_int("--port", http_options.port);
  if (port < 0 || port > 65535) fail("--port must be in [0, 65535], got ", port);
  http_options.port = int(port);
  const char* env_key = std::getenv("DSV4_API_KEY");
  http_options.api_key = args.get_or("--api-key", env_key ? env_key : "");
  http_options.threads = int(std::min<int64_t>(positive(args, "--http-threads", http_options.threads), 4096));
  http_options.max_body_bytes = size_t(positive(args, "--max-body-bytes", int64_t(http_options.max_body_bytes)));

  SchedulerOptions scheduler_options;
  scheduler_options.max_running = positive(args, "--max-running", scheduler_options.max_running);
  if (args.has("--max-step-tokens"))  // else the backend's pass (SchedulerOptions)
    scheduler_options.max_step_tokens = positive(args, "--max-step-tokens", kDefaultStepTokens);
  scheduler_options.max_waiting = positive(args, "--max-waiting", scheduler_options.max_waiting);
  scheduler_options.speculative = int(args.get_int("--speculative", 0, 0, kMaxSpeculative));

  const chat::EncodeOptions encode = encode_options(args);  // validates the server defaults now
  server::ServiceConfig config;
  config.defaults.thinking_mode = encode.mode;
  config.defaults.revision = encode.revision;
  config.defaults.reasoning_effort = encode.reasoning_effort;
  config.default_max_tokens = positive(args, "--max-tokens", kDefaultMaxTokens);
  const int64_t shutdown_timeout = args.get_int("--shutdown-timeout", 30);
  if (shutdown_timeout < 0) fail("--shutdown-timeout must be >= 0, got ", shutdown_timeout);
  backend_options(args);  // fails now, before listening, on a backend this build cannot run
  const std::filesystem::path model_dir = resolve_model_dir(args);
  std::filesystem::path folder = std::filesystem::absolute(model_dir).lexically_normal();
  if (!folder.has_filename()) folder = folder.parent_path();  // "models/nano/"
  config.model_name = args.get_or("--served-model-name", folder.filename().string());
  if (config.model_name.empty()) fail("--served-model-name must not be empty");

  ShutdownSignals signals;  // before any other thread exists, so that all inherit the mask
  server::ServerMetrics metrics;
  server::HttpServer http(http_options, metrics);
  const int bound_port = http.bind();
  // Stopped on every way out, a model that fails to load included; stopped explicitly below
  // before `service` goes, since handlers use it until their connections end.
  JoinedThread http_thread([&] { http.serve(); }, [&] { http.stop(); });
  std::fprintf(stderr, "dsv4 serve: listening on http://%s:%d (model loading)\n", http_options.host.c_str(),
               bound_port);

  LoadedModel model = load_model(model_dir, args);
  const KvCacheInfo kv = model.forward->kv_cache();
  config.max_context = kv.max_context;
  config.eos_id = int32_t(model.forward->config().eos_token_id);
  config.vocab_size = int32_t(model.forward->config().vocab_size);
  if (signals.count() > 0) return 0;  // asked to stop while loading: nothing runs yet

  Scheduler scheduler(*model.forward, scheduler_options);
  bool cancel_all = true;  // unless the drain below completes
  JoinedThread scheduler_thread([&] { scheduler.run(); }, [&] { scheduler.stop(cancel_all); });
  server::OpenAiService service(scheduler, model.tokenizer, metrics, config);
  http.set_ready(service, scheduler);
  std::fprintf(stderr,
               "dsv4 serve: ready: model '%s', context %lld tokens, %lld sequence slots, %lld KV blocks of %lld "
               "tokens\n",
               config.model_name.c_str(), static_cast<long long>(kv.max_context),
               static_cast<long long>(kv.max_sequences), static_cast<long long>(kv.total_blocks),
               static_cast<long long>(kv.block_tokens));

  signals.wait_for_first();
  http.begin_draining();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(shutdown_timeout);
  cancel_all = !signals.wait_until(deadline, [&] { return service.in_flight() == 0; });
  if (cancel_all)
    std::fprintf(stderr, "dsv4 serve: cancelling %lld running requests\n",
                 static_cast<long long>(service.in_flight()));
  scheduler_thread.stop();
  // Cancelled responses end (503 or an error event) as soon as their handlers see the outcome.
  signals.wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(5),
                     [&] { return service.in_flight() == 0; });
  http_thread.stop();
  std::fprintf(stderr, "dsv4 serve: stopped\n");
  return 0;
}

}  // namespace

DSV4_COMMAND("serve", "OpenAI-compatible HTTP server (chat, completions, streaming, metrics)", run_serve);

}  // namespace dsv4::cli
