// Reads the backend options (see backend_args.h); every message names the option.
#include "cli/backend_args.h"

#include <cstdint>

#include "util/error.h"

namespace dsv4::cli {

const char* const kBackendUsage =
    "  --backend B           cpu (default) or cuda (a Hopper GPU; needs a CUDA build)\n"
    "  --numerics M          exact (FP32, HF parity; cpu default), official (the reference's\n"
    "                        FP8/FP4 quantisation points, §12; cuda's only mode) or official-bf16\n"
    "                        (cpu: official plus BF16 activations between ops, as cuda rounds)\n"
    "  --threads N           CPU threads (default: all cores; cuda: the host tier's)\n"
    "  --cuda-graph G        cuda decode steps: on (replay one CUDA graph, default), off (eager)\n"
    "                        or check (replay; fail on a host sync or allocation in the step)\n"
    "  --ctx-size N          longest sequence in tokens (default: the model's\n"
    "                        max_position_embeddings, or what the KV cache holds)\n"
    "  --max-seqs N          sequences held at once (default 256)\n"
    "  --kv-cache-tokens N   token positions in the KV block pool (default: cpu unlimited,\n"
    "                        cuda what --gpu-memory-utilization leaves after the weights)\n"
    "  --gpu-memory-utilization F  cuda: share of the device memory to use, in (0, 1] (default 0.9)\n"
    "  --pass-rows N         cuda: rows of one forward pass, prefill chunks and decode rows together\n"
    "                        (default 8192; vLLM's --max-num-batched-tokens); the step buffers\n"
    "                        grow with it, and longer passes run the expert GEMMs faster\n"
    "  --gpu-memory GIB      cuda: use at most this many GiB of the device (plan as a smaller card)\n"
    "  --cpu-experts N|auto  cuda, one GPU: keep N routed experts of every layer (the highest ids)\n"
    "                        in host memory, computed by the host's cores; auto: the fewest that\n"
    "                        let the rest fit (`dsv4 inspect` shows the split and its cost)\n"
    "  --host-decode cpu|gpu|split  cuda, with --cpu-experts: who computes decode rows routed to\n"
    "                        host experts: cpu (the host's cores, default), gpu (the GPU copies the\n"
    "                        picked experts over the bus and runs them; packed FP4 experts) or split\n"
    "                        (both at once, each on its own share of the host experts)\n"
    "  --host-cpu-share F    with --host-decode split: the share of the host experts (the highest\n"
    "                        ids) the host's cores compute, in (0, 1) (default 0.5)\n"
    "  --synthetic-weights SEED  cuda: fill every tensor with the values `make-skeleton --random\n"
    "                        SEED` writes, generated at load: a sparse skeleton runs full size\n"
    "  --gpus N|auto         cuda: ranks on GPUs 0..N-1, the routed experts split over them (expert\n"
    "                        parallel, NCCL sums the MoE outputs; the rest on each); default auto:\n"
    "                        the fewest GPUs that hold the model (`dsv4 inspect`'s plan)\n"
    "  --ep N                the same count, named for expert parallelism (with --comm loopback:\n"
    "                        N virtual ranks on one GPU)\n"
    "  --tp N                cuda: attention heads split over the same ranks too (1 or the rank\n"
    "                        count): each rank reads its heads' q/o weights, FP32 partials summed\n"
    "  --comm C              cuda: how ranks sum: nccl (default for N > 1; with N = 1 the one-rank\n"
    "                        NCCL path) or loopback (N virtual ranks on one GPU: tests, cost)\n"
    "  --fp8-expert-prefill on|off  cuda: MXFP4 experts of long prompt chunks (over 16 rows per\n"
    "                        expert: 683 tokens for Flash) on the FP8 tensor cores, the reference's\n"
    "                        arithmetic (1.5x the expert GEMMs at 2K rows); other rows keep the\n"
    "                        F16 kernels, so a row's bits follow its chunk (default on)\n"
    "  --fp8-expert-decode on|off  cuda: with --fp8-expert-prefill, every row's MXFP4 experts on\n"
    "                        the FP8 tensor cores, decode rows too (8-row items); a GPU expert's\n"
    "                        row then never depends on its chunk (default off: the batch-64\n"
    "                        decode step takes 1.3x as long on an H100)\n"
    "  --prefill-attention on|off  cuda: queries of long prompt chunks (over 64 rows) through the\n"
    "                        prefill attention kernel, 3.4-7.8x the decode kernel on them (default on)\n";

std::set<std::string> backend_value_options() {
  return {"--backend", "--numerics", "--threads", "--cuda-graph", "--ctx-size", "--max-seqs",
          "--kv-cache-tokens", "--gpu-memory-utilization", "--pass-rows", "--gpu-memory", "--synthetic-weights", "--gpus", "--ep", "--tp",
          "--comm", "--cpu-experts", "--host-decode", "--host-cpu-share", "--fp8-expert-prefill", "--fp8-expert-decode",
          "--prefill-attention"};
}

BackendOptions backend_options(const Args& args) {
  BackendOptions o;
  const std::string backend = args.get_or("--backend", "cpu");
  if (!parse_backend(backend, &o.backend))
    fail("--backend must be 'cpu' or 'cuda', got '", backend, "'");
  o.numerics = default_numerics(o.backend);
  if (auto numerics = args.get("--numerics"); numerics && !parse_numerics(*numerics, &o.numerics))
    fail("--numerics must be 'exact', 'official' or 'official-bf16', got '", *numerics, "'");
  o.n_threads = int(args.get_int("--threads", 0, 0, 1024));
  const std::string graph = args.get_or("--cuda-graph", "on");
  if (!parse_cuda_graph_mode(graph, &o.cuda_graph))
    fail("--cuda-graph must be 'on', 'off' or 'check', got '", graph, "'");
  // 0 means the backend's default for these three (kBackendUsage).
  o.ctx_size = args.get_int("--ctx-size", 0, 0, INT64_MAX);
  o.max_sequences = args.get_int("--max-seqs", 0, 0, 65536);
  o.kv_cache_tokens = args.get_int("--kv-cache-tokens", 0, 0, INT64_MAX);
  o.pass_rows = args.get_int("--pass-rows", 0, 1, 32768);  // kernels launch up to 65,535 rows in grid y
  o.gpu_memory_utilization = args.get_double("--gpu-memory-utilization", 0.9);
  if (!(o.gpu_memory_utilization > 0.0 && o.gpu_memory_utilization <= 1.0))
    fail("--gpu-memory-utilization must be in (0, 1], got ", o.gpu_memory_utilization);
  if (args.has("--gpu-memory")) {
    const double gib = args.get_double("--gpu-memory", 0);
    if (!(gib > 0 && gib <= 1e6)) fail("--gpu-memory must be a positive number of GiB, got ", gib);
    o.gpu_memory_bytes = gib * double(1ull << 30);
  }
  if (auto cpu = args.get("--cpu-experts")) {
    o.cpu_experts = *cpu == "auto" ? BackendOptions::kAutoCpuExperts : int(args.get_int("--cpu-experts", 0, 1, 1 << 20));
  }
  const std::optional<std::string> decode = args.get("--host-decode");
  if (decode && *decode != "cpu" && *decode != "gpu" && *decode != "split")
    fail("--host-decode must be 'cpu', 'gpu' or 'split', got '", *decode, "'");
  if (decode && *decode != "cpu" && o.cpu_experts == 0)
    fail("--host-decode ", *decode, ": there is no host tier to decode (add --cpu-experts N or auto)");
  if (args.has("--host-cpu-share") && decode != "split") fail("--host-cpu-share goes with --host-decode split");
  if (decode == "gpu") o.host_cores_share = 0.0;
  if (decode == "split") {
    o.host_cores_share = args.get_double("--host-cpu-share", 0.5);
    if (!(o.host_cores_share > 0.0 && o.host_cores_share < 1.0))
      fail("--host-cpu-share must be in (0, 1), got ", o.host_cores_share);
  }
  if (args.has("--synthetic-weights"))
    o.synthetic_seed = uint64_t(args.get_int("--synthetic-weights", 0, 0, INT64_MAX));
  // --gpus and --ep name one count (0: auto); given both, they must agree.
  if (auto gpus = args.get("--gpus"); gpus && *gpus != "auto") o.ep = int(args.get_int("--gpus", 0, 1, 8));
  if (args.has("--ep")) {
    const int ep = int(args.get_int("--ep", 0, 1, 8));
    if (o.ep != 0 && o.ep != ep) fail("--gpus ", o.ep, " and --ep ", ep, " disagree: both name the number of ranks");
    o.ep = ep;
  }
  o.tp = int(args.get_int("--tp", 1, 1, 8));
  if (auto comm = args.get("--comm")) {
    if (*comm == "nccl") o.comm = BackendOptions::Comm::kNccl;
    else if (*comm == "loopback") o.comm = BackendOptions::Comm::kLoopback;
    else fail("--comm must be 'nccl' or 'loopback', got '", *comm, "'");
  }
  if (auto fp8 = args.get("--fp8-expert-prefill")) {
    if (*fp8 != "on" && *fp8 != "off") fail("--fp8-expert-prefill must be 'on' or 'off', got '", *fp8, "'");
    o.fp8_expert_prefill = *fp8 == "on";
  }
  if (auto fp8 = args.get("--fp8-expert-decode")) {
    if (*fp8 != "on" && *fp8 != "off") fail("--fp8-expert-decode must be 'on' or 'off', got '", *fp8, "'");
    o.fp8_expert_decode = *fp8 == "on";
  }
  if (auto attn = args.get("--prefill-attention")) {
    if (*attn != "on" && *attn != "off") fail("--prefill-attention must be 'on' or 'off', got '", *attn, "'");
    o.prefill_attention = *attn == "on";
  }
  // Any --speculative (generate, chat, serve: K; bench: a list) loads what drafting needs.
  o.draft = args.has("--speculative");
  check_backend(o);  // now, before any tokenizer or checkpoint is read
  return o;
}

}  // namespace dsv4::cli
