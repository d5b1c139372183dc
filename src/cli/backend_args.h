// The backend options every model-running subcommand shares (--backend, --numerics, --threads,
// --cuda-graph),
// read into engine/backend.h's BackendOptions; the factory itself is make_forward.
#pragma once

#include <set>
#include <string>

#include "cli/args.h"
#include "engine/backend.h"

namespace dsv4::cli {

// Help lines for these options, aligned like the subcommands' own usage texts.
extern const char* const kBackendUsage;
std::set<std::string> backend_value_options();  // {"--backend", "--numerics", "--threads", ...}

// The numerics default to the backend's own (default_numerics). Error naming the option for an
// unknown value, and check_backend's error for a combination this build cannot run.
BackendOptions backend_options(const Args& args);

}  // namespace dsv4::cli
