// resolve_model_dir (model_dir.h).
#include "cli/model_dir.h"

#include "util/error.h"

namespace dsv4::cli {

std::filesystem::path resolve_model_dir(const Args& args) {
  if (auto dir = args.get("--model")) return *dir;
  const auto embedded = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";
  if (!std::filesystem::exists(embedded / "config.json"))
    fail("no model given (-m DIR) and the embedded model ", embedded.string(), " does not exist");
  return embedded;
}

}  // namespace dsv4::cli
