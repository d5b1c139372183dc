#include "cli/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "util/error.h"

namespace dsv4::cli {

Args::Args(const std::vector<std::string>& argv, std::set<std::string> value_options,
           std::set<std::string> flags, std::map<std::string, std::string> aliases) {
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string a = argv[i];
    if (a.size() < 2 || a[0] != '-' || a == "--") {
      if (a == "--") {
        positional_.insert(positional_.end(), argv.begin() + i + 1, argv.end());
        break;
      }
      positional_.push_back(a);
      continue;
    }
    std::optional<std::string> inline_value;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    if (auto it = aliases.find(a); it != aliases.end()) a = it->second;
    if (value_options.count(a)) {
      if (inline_value) {
        values_[a] = *inline_value;
      } else {
        if (i + 1 >= argv.size()) fail("option ", a, " needs a value");
        values_[a] = argv[++i];
      }
    } else if (flags.count(a)) {
      if (inline_value) fail("option ", a, " takes no value");
      flags_set_.insert(a);
    } else {
      fail("unknown option ", a);
    }
  }
}

bool Args::has(const std::string& opt) const {
  return values_.count(opt) > 0 || flags_set_.count(opt) > 0;
}

std::optional<std::string> Args::get(const std::string& opt) const {
  auto it = values_.find(opt);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(const std::string& opt, const std::string& fallback) const {
  auto v = get(opt);
  return v ? *v : fallback;
}

std::string Args::require(const std::string& opt) const {
  auto v = get(opt);
  if (!v) fail("missing required option ", opt);
  return *v;
}

int64_t Args::get_int(const std::string& opt, int64_t fallback) const {
  auto v = get(opt);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE) fail("option ", opt, ": '", *v, "' is not an integer");
  return x;
}

double Args::get_double(const std::string& opt, double fallback) const {
  auto v = get(opt);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x))
    fail("option ", opt, ": '", *v, "' is not a finite number");
  return x;
}

}  // namespace dsv4::cli
