// ProgressLine (progress.h): throttled by wall time; the rate is over the whole run so far.
#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace dsv4::cli {

namespace {
constexpr double kReportSeconds = 1.0;  // at most one line per second
}  // namespace

ProgressLine::ProgressLine(std::string what, int64_t total)
    : what_(std::move(what)), total_(total), tty_(isatty(fileno(stderr)) != 0), start_(Clock::now()),
      last_(start_) {}

void ProgressLine::update(int64_t done) {
  const Clock::time_point now = Clock::now();
  const bool last = done >= total_;
  if (printed_ && !last && std::chrono::duration<double>(now - last_).count() < kReportSeconds) return;
  const double s = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "%s%s %lld/%lld tokens, %.1f tok/s%s", tty_ ? "\r" : "", what_.c_str(), (long long)done,
               (long long)total_, s > 0 ? double(done) / s : 0.0, tty_ && !last ? "" : "\n");
  std::fflush(stderr);
  printed_ = true;
  last_ = now;
}

}  // namespace dsv4::cli
