// serve_scripted: the real HTTP server (src/server) over ScriptedForward, for the Python client
// tests of what nano cannot write (tool calls, reasoning then an answer) and of the loading state.
// usage: serve_scripted SCRIPTS.json [--load-delay-ms N] [--step-ms N]
//   SCRIPTS.json: [{"user": "...", "completion": "..."}]; model name "scripted", a free port
//   printed on stderr as "listening on http://127.0.0.1:PORT"; SIGINT/SIGTERM stop it (exit 0).
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "server/http_server.h"
#include "server/scripted_forward.h"

using namespace dsv4;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: serve_scripted SCRIPTS.json [--load-delay-ms N] [--step-ms N]\n");
    return 2;
  }
  int load_delay_ms = 0, step_ms = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--load-delay-ms")) load_delay_ms = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--step-ms")) step_ms = std::atoi(argv[i + 1]);
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  try {
    std::ifstream f(argv[1]);
    std::stringstream text;
    text << f.rdbuf();
    std::vector<test::Script> scripts;
    for (const chat::Json& s : chat::parse_json(text.str(), argv[1]))
      scripts.push_back({s.at("user").get<std::string>(), s.at("completion").get<std::string>()});
    const Tokenizer tok = Tokenizer::load(std::string(DSV4_SOURCE_DIR) + "/models/nano/tokenizer.json");
    // 256 slots, all decoded together: the 256-streams test keeps every request running at once.
    test::ScriptedOptions fo;
    fo.step_delay = std::chrono::milliseconds(step_ms);
    fo.slots = 256;
    test::ScriptedForward forward(tok, scripts, fo);
    SchedulerOptions so;
    so.max_running = fo.slots;

    Scheduler scheduler(forward, so);
    server::ServiceConfig config;
    config.model_name = "scripted";
    config.max_context = forward.kv_cache().max_context;
    config.eos_id = int32_t(forward.config().eos_token_id);
    config.vocab_size = int32_t(forward.config().vocab_size);
    server::ServerMetrics metrics;
    server::OpenAiService service(scheduler, tok, metrics, config);
    server::HttpOptions ho;
    ho.port = 0;
    server::HttpServer http(ho, metrics);
    const int port = http.bind();

    // Nothing below throws: the threads are always joined.
    std::thread http_thread([&] { http.serve(); });
    std::fprintf(stderr, "listening on http://127.0.0.1:%d\n", port);
    std::this_thread::sleep_for(std::chrono::milliseconds(load_delay_ms));  // "loading the model"
    std::thread scheduler_thread([&] { scheduler.run(); });
    http.set_ready(service, scheduler);
    std::fprintf(stderr, "ready\n");

    int sig = 0;
    sigwait(&stop_signals, &sig);
    http.begin_draining();
    scheduler.stop(/*cancel_all=*/true);
    scheduler_thread.join();
    http.stop();
    http_thread.join();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve_scripted: %s\n", e.what());
    return 1;
  }
}
