// run_command: popen, read stdout to the end, pclose (run_command.h).
#include "support/run_command.h"

#include <sys/wait.h>

#include <cstdio>

namespace dsv4::test {

CommandResult run_command(const std::string& shell_command) {
  CommandResult r;
  FILE* p = ::popen(shell_command.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace dsv4::test
