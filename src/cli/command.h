// Subcommand registry: each src/cli/cmd_*.cpp registers itself with DSV4_COMMAND, so adding a
// subcommand touches one file. main.cpp dispatches and turns dsv4::Error into exit code 1.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace dsv4::cli {

using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct CommandInfo {
  std::string summary;
  CommandFn run;
};

std::map<std::string, CommandInfo>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(const char* name, const char* summary, CommandFn fn) {
    command_registry()[name] = CommandInfo{summary, std::move(fn)};
  }
};

}  // namespace dsv4::cli

#define DSV4_COMMAND(name, summary, fn) \
  static ::dsv4::cli::CommandRegistrar dsv4_command_registrar_##fn(name, summary, fn)
