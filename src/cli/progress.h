// A progress line on stderr for long work (the prefill of a long prompt, logits over many tokens):
// "prefill 12288/65501 tokens, 812.4 tok/s", redrawn in place on a terminal and one line per
// report elsewhere, at most about once a second. The work itself is the caller's.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dsv4::cli {

class ProgressLine {
 public:
  ProgressLine(std::string what, int64_t total);
  // Reports `done` of the total: at the first call, then at most once per second, and always at
  // done == total (which ends the line).
  void update(int64_t done);

 private:
  using Clock = std::chrono::steady_clock;
  std::string what_;
  int64_t total_;
  bool tty_;
  bool printed_ = false;
  Clock::time_point start_, last_;
};

}  // namespace dsv4::cli
