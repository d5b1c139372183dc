// `dsv4 make-skeleton`: writes a full-size checkpoint skeleton (real headers, sparse data) for
// testing `inspect` and the loaders without the real weights. The writer is src/model/skeleton.cpp.
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/args.h"
#include "cli/command.h"
#include "model/known_configs.h"
#include "model/skeleton.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

int run_make_skeleton(const std::vector<std::string>& argv) {
  Args args(argv, {"--family", "--config", "--shards"}, {"--hf", "--no-index", "--help"});
  if (args.has("--help") || args.positional().size() != 1 || args.has("--family") == args.has("--config")) {
    std::fprintf(stderr,
                 "usage: dsv4 make-skeleton OUT_DIR (--family flash|pro|tiny | --config CONFIG.json)\n"
                 "                          [--shards N] [--hf] [--no-index]\n"
                 "Writes config.json and safetensors shards whose headers list every tensor of the\n"
                 "model while the data regions stay sparse (no disk blocks). For tests.\n");
    return args.has("--help") ? 0 : 2;
  }
  std::string config;
  if (auto fam = args.get("--family")) {
    if (*fam == "flash") config = flash_config_json();
    else if (*fam == "pro") config = pro_config_json();
    else if (*fam == "tiny") config = tiny_config_json();
    else fail("option --family: '", *fam, "' is not flash, pro or tiny");
  } else {
    std::ifstream f(*args.get("--config"), std::ios::binary);
    if (!f) fail(*args.get("--config"), ": cannot open");
    std::ostringstream ss;
    ss << f.rdbuf();
    config = ss.str();
  }
  SkeletonOptions opt;
  opt.n_shards = args.get_int("--shards", 0);
  if (opt.n_shards < 0) fail("option --shards: must be non-negative");
  opt.hf_names = args.has("--hf");
  opt.with_index = !args.has("--no-index");
  const SkeletonResult r = write_skeleton(args.positional()[0], config, opt);
  std::printf("wrote %" PRId64 " tensors in %" PRId64 " shards, %.2f GB apparent size (sparse)\n", r.n_tensors,
              r.n_shards, double(r.total_bytes) / 1e9);
  return 0;
}

}  // namespace

DSV4_COMMAND("make-skeleton", "write a sparse full-size checkpoint skeleton (for tests)", run_make_skeleton);

}  // namespace dsv4::cli
