// Reads --backend, --numerics and --threads (see backend_args.h); every message names the option.
#include "cli/backend_args.h"

#include "util/error.h"

namespace dsv4::cli {

const char* const kBackendUsage =
    "  --backend B           cpu (default) or cuda (a Hopper GPU; needs a CUDA build)\n"
    "  --numerics M          exact (FP32, HF parity; cpu default), official (the reference's\n"
    "                        FP8/FP4 quantisation points, §12; cuda's only mode) or official-bf16\n"
    "                        (cpu: official plus BF16 activations between ops, as cuda rounds)\n"
    "  --threads N           CPU threads (default: all cores)\n"
    "  --cuda-graph G        cuda decode steps: on (replay one CUDA graph, default), off (eager)\n"
    "                        or check (replay; fail on a host sync or allocation in the step)\n";

std::set<std::string> backend_value_options() {
  return {"--backend", "--numerics", "--threads", "--cuda-graph"};
}

BackendOptions backend_options(const Args& args) {
  BackendOptions o;
  const std::string backend = args.get_or("--backend", "cpu");
  if (!parse_backend(backend, &o.backend))
    fail("--backend must be 'cpu' or 'cuda', got '", backend, "'");
  o.numerics = default_numerics(o.backend);
  if (auto numerics = args.get("--numerics"); numerics && !parse_numerics(*numerics, &o.numerics))
    fail("--numerics must be 'exact', 'official' or 'official-bf16', got '", *numerics, "'");
  const int64_t threads = args.get_int("--threads", 0);
  if (threads < 0 || threads > 1024) fail("--threads must be in [0, 1024], got ", threads);
  o.n_threads = int(threads);
  const std::string graph = args.get_or("--cuda-graph", "on");
  if (!parse_cuda_graph_mode(graph, &o.cuda_graph))
    fail("--cuda-graph must be 'on', 'off' or 'check', got '", graph, "'");
  check_backend(o);  // now, before any tokenizer or checkpoint is read
  return o;
}

}  // namespace dsv4::cli
