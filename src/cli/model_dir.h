// Which model a subcommand runs: -m DIR, or the embedded model (models/nano) when none is given —
// the same rule for every subcommand that takes a model. Loading it is each subcommand's own.
#pragma once

#include <filesystem>

#include "cli/args.h"

namespace dsv4::cli {

// -m DIR (--model), or ${DSV4_SOURCE_DIR}/models/nano when it exists; Error otherwise.
std::filesystem::path resolve_model_dir(const Args& args);

}  // namespace dsv4::cli
