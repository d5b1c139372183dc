// A small command-line option parser shared by the subcommands: `--key value`, `--key=value`,
// `-k value` (declared aliases) and boolean flags. Unknown options are an error that names them.
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
  // `aliases`: short spelling -> long ("-m" -> "--model").
  Args(const std::vector<std::string>& argv, std::set<std::string> value_options,
       std::set<std::string> flags, std::map<std::string, std::string> aliases = {});

  bool has(const std::string& opt) const;  // option given (value or flag)
  std::optional<std::string> get(const std::string& opt) const;
  std::string get_or(const std::string& opt, const std::string& fallback) const;
  std::string require(const std::string& opt) const;  // Error naming the option when missing
  int64_t get_int(const std::string& opt, int64_t fallback) const;  // Error on non-integers
  double get_double(const std::string& opt, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_set_;
  std::vector<std::string> positional_;
};

}  // namespace dsv4::cli
