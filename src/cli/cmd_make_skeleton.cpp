// `dsv4 make-skeleton`: writes a full-size checkpoint skeleton (real headers, sparse data) for
// testing `inspect` and the loaders without the real weights, or with --random a real checkpoint of
// deterministic random values (e.g. a few Flash-shaped layers for backend parity checks). The
// writer is src/model/skeleton.cpp.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>

#include "cli/args.h"
#include "cli/command.h"
#include "model/known_configs.h"
#include "model/skeleton.h"
#include "util/error.h"
#include "util/file_read.h"

namespace dsv4::cli {
namespace {

constexpr double kProgressSeconds = 2.0;  // at most one progress line per this many seconds

int run_make_skeleton(const std::vector<std::string>& argv) {
  Args args(argv, {"--family", "--config", "--shards", "--random", "--layers", "--mtp", "--vocab"},
            {"--hf", "--no-index", "--help"}, {{"-h", "--help"}}, /*max_positional=*/1);
  if (args.has("--help") || args.positional().size() != 1 || args.has("--family") == args.has("--config")) {
    std::fprintf(stderr,
                 "usage: dsv4 make-skeleton OUT_DIR (--family flash|pro|tiny | --config CONFIG.json)\n"
                 "                          [--shards N] [--hf] [--no-index]\n"
                 "                          [--random SEED] [--layers N] [--mtp M] [--vocab V]\n"
                 "Writes config.json and safetensors shards whose headers list every tensor of the\n"
                 "model while the data regions stay sparse (no disk blocks). For tests.\n"
                 "  --random SEED  fill every tensor with valid random values instead (deterministic\n"
                 "                 for SEED; quantised tensors as real FP8/MXFP4/NVFP4 codes + scales)\n"
                 "  --layers N     keep the first N main layers (compress_ratios, layer_types,\n"
                 "                 num_hash_layers trimmed to match; the MTP blocks stay)\n"
                 "  --mtp M        keep the first M MTP blocks (num_nextn_predict_layers = M)\n"
                 "  --vocab V      vocab_size = V (smaller embed, head and tid2eid)\n");
    return args.has("--help") ? 0 : 2;
  }
  std::string config;
  if (auto fam = args.get("--family")) {
    if (*fam == "flash") config = flash_config_json();
    else if (*fam == "pro") config = pro_config_json();
    else if (*fam == "tiny") config = tiny_config_json();
    else fail("option --family: '", *fam, "' is not flash, pro or tiny");
  } else {
    constexpr uint64_t kMaxConfigBytes = 16 << 20;  // as ModelConfig::load
    config = read_input_file(*args.get("--config"), kMaxConfigBytes);
  }
  // Absent options keep the config's value (0 / -1 below); given ones must make sense, checked
  // against the config itself by override_config.
  ConfigOverrides ov;
  ov.layers = args.get_int("--layers", 0, 1, INT64_MAX);
  ov.vocab = args.get_int("--vocab", 0, 1, INT64_MAX);
  ov.mtp = args.get_int("--mtp", -1, 0, INT64_MAX);
  if (ov.layers > 0 || ov.vocab > 0 || ov.mtp >= 0) config = override_config(config, ov);

  SkeletonOptions opt;
  opt.n_shards = args.get_int("--shards", 0, 1, INT64_MAX);  // absent: one per ~3.5 GB
  opt.hf_names = args.has("--hf");
  opt.with_index = !args.has("--no-index");
  if (args.has("--random")) opt.random_seed = uint64_t(args.get_int("--random", 0, 0, INT64_MAX));
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  auto last = t0;
  opt.progress = [&](uint64_t done, uint64_t total) {
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last).count() < kProgressSeconds && done != total) return;
    last = now;
    const double s = std::chrono::duration<double>(now - t0).count();
    std::fprintf(stderr, "  %.2f / %.2f GB  (%.0f MB/s)\n", double(done) / 1e9, double(total) / 1e9,
                 double(done) / 1e6 / std::max(s, 1e-9));
  };
  const SkeletonResult r = write_skeleton(args.positional()[0], config, opt);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (opt.random_seed)
    std::printf("wrote %" PRId64 " tensors in %" PRId64 " shards, %.2f GB of random values (seed %" PRIu64
                ") in %.1f s, %.0f MB/s\n",
                r.n_tensors, r.n_shards, double(r.total_bytes) / 1e9, *opt.random_seed, secs,
                double(r.total_bytes) / 1e6 / std::max(secs, 1e-9));
  else
    std::printf("wrote %" PRId64 " tensors in %" PRId64 " shards, %.2f GB apparent size (sparse)\n", r.n_tensors,
                r.n_shards, double(r.total_bytes) / 1e9);
  return 0;
}

}  // namespace

DSV4_COMMAND("make-skeleton", "write a full-size checkpoint skeleton, sparse or random (for tests)",
             run_make_skeleton);

}  // namespace dsv4::cli
