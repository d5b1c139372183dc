// Runs a shell command for the end-to-end CLI tests and collects its stdout and exit status; which
// binary, arguments and stderr redirection is each test's own business.
#pragma once

#include <string>

namespace dsv4::test {

struct CommandResult {
  int status = -1;  // exit code, or −1 when the command could not run or was killed by a signal
  std::string out;  // everything it wrote to stdout
};

CommandResult run_command(const std::string& shell_command);

}  // namespace dsv4::test
