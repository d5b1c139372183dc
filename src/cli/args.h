// A small command-line option parser shared by the subcommands: `--key value`, `--key=value`,
// `-k value` (declared aliases) and boolean flags. Unknown options, and positional arguments
// beyond what the subcommand takes, are errors that name them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace dsv4::cli {

class Args {
 public:
  // `value_options`: options that take a value ("--model", ...); `flags`: booleans;
  // `aliases`: short spelling -> long ("-m" -> "--model"); `max_positional`: how many bare
  // arguments the subcommand takes (a stray word such as `generate -p hi extra` is an error).
  Args(const std::vector<std::string>& argv, std::set<std::string> value_options,
       std::set<std::string> flags, std::map<std::string, std::string> aliases = {},
       size_t max_positional = 0);

  bool has(const std::string& opt) const;  // option given (value or flag)
  std::optional<std::string> get(const std::string& opt) const;
  std::string get_or(const std::string& opt, const std::string& fallback) const;
  std::string require(const std::string& opt) const;  // Error naming the option when missing
  // An integer in [lo, hi]; Error "option --x: '12a' is not an integer" or "option --x: 5000 is
  // out of range: allowed [1, 1024]" (also for values past 64 bits).
  int64_t get_int(const std::string& opt, int64_t fallback, int64_t lo, int64_t hi) const;
  int64_t get_int(const std::string& opt, int64_t fallback) const;  // any int64
  double get_double(const std::string& opt, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_set_;
  std::vector<std::string> positional_;
};

}  // namespace dsv4::cli
