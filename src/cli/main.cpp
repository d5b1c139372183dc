// dsv4: entry point. Dispatches to the registered subcommands (src/cli/cmd_*.cpp); hostile input
// surfaces as dsv4::Error and exits 1 with the message; internal invariant failures exit 3.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/command.h"
#include "util/error.h"

namespace dsv4::cli {

std::map<std::string, CommandInfo>& command_registry() {
  static std::map<std::string, CommandInfo> registry;
  return registry;
}

static void print_usage() {
  std::fprintf(stderr, "usage: dsv4 <command> [options]\n\ncommands:\n");
  for (const auto& [name, info] : command_registry())
    std::fprintf(stderr, "  %-12s %s\n", name.c_str(), info.summary.c_str());
}

}  // namespace dsv4::cli

int main(int argc, char** argv) {
  using namespace dsv4::cli;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  auto it = command_registry().find(name);
  if (it == command_registry().end()) {
    std::fprintf(stderr, "dsv4: unknown command '%s'\n", name.c_str());
    print_usage();
    return 2;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    return it->second.run(args);
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "dsv4 %s: error: %s\n", name.c_str(), e.what());
    return 1;
  } catch (const dsv4::InternalError& e) {
    std::fprintf(stderr, "dsv4 %s: internal error: %s\n", name.c_str(), e.what());
    return 3;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "dsv4 %s: error: out of memory\n", name.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: error: %s\n", name.c_str(), e.what());
    return 1;
  }
}
