// Args (args.h): one pass over argv into values, flags and positionals; typed getters that name
// the option and the allowed range in every error.
#include "cli/args.h"

#include <cerrno>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <limits>

#include "util/error.h"

namespace dsv4::cli {

Args::Args(const std::vector<std::string>& argv, std::set<std::string> value_options,
           std::set<std::string> flags, std::map<std::string, std::string> aliases,
           size_t max_positional) {
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
  if (positional_.size() > max_positional)
    fail("unexpected argument '", positional_[max_positional], "'",
         max_positional == 0 ? " (this command takes only options)" : "");
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

int64_t Args::get_int(const std::string& opt, int64_t fallback, int64_t lo, int64_t hi) const {
  auto v = get(opt);
  if (!v) return fallback;
  // An optional sign and decimal digits, nothing else (strtoll would skip leading blanks).
  const std::string& s = *v;
  const size_t digits = s.find_first_not_of("+-") == 1 ? 1 : 0;
  if (s.size() <= digits || s.find_first_not_of("0123456789", digits) != std::string::npos)
    fail("option ", opt, ": '", s, "' is not an integer");
  errno = 0;
  const long long x = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE || x < lo || x > hi)
    fail("option ", opt, ": ", s, " is out of range: allowed [", lo, ", ", hi, "]");
  return x;
}

int64_t Args::get_int(const std::string& opt, int64_t fallback) const {
  return get_int(opt, fallback, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
}

double Args::get_double(const std::string& opt, double fallback) const {
  auto v = get(opt);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || std::isspace(static_cast<unsigned char>(v->front())))
    fail("option ", opt, ": '", *v, "' is not a number");
  if (errno == ERANGE || !std::isfinite(x)) fail("option ", opt, ": ", *v, " is out of range: not a finite number");
  return x;
}

}  // namespace dsv4::cli
