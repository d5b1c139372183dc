// Nvfp4Selection::selects and ModelOpt's pattern matching (modelopt.h). The HF spellings of a
// module come from hf_names.cpp.
#include "model/modelopt.h"

#include <optional>

#include "model/hf_names.h"

namespace dsv4 {

namespace {

// fnmatch without character classes: '*' matches any run (dots included), '?' one character.
// Iterative with one backtrack point, linear in practice.
bool glob_match(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi, ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

// The pattern names this module or one that contains it (a prefix ending at a dot).
bool matches_name(std::string_view pattern, std::string_view name) {
  if (glob_match(pattern, name)) return true;
  for (size_t dot = name.find('.'); dot != std::string_view::npos; dot = name.find('.', dot + 1))
    if (glob_match(pattern, name.substr(0, dot))) return true;
  return false;
}

bool any_matches(const std::vector<std::string>& patterns, std::string_view module) {
  for (const std::string& p : patterns)
    if (modelopt_pattern_matches(p, module)) return true;
  return false;
}

}  // namespace

bool modelopt_pattern_matches(std::string_view pattern, std::string_view official_module) {
  if (matches_name(pattern, official_module)) return true;
  const std::optional<std::string> hf = hf_module_name(official_module);
  if (!hf) return false;
  constexpr std::string_view kModel = "model.";
  const std::string_view h(*hf);
  return matches_name(pattern, h) || (h.starts_with(kModel) && matches_name(pattern, h.substr(kModel.size())));
}

bool Nvfp4Selection::selects(std::string_view module, LinearRole role) const {
  if (any_matches(included, module)) return true;
  if (role == LinearRole::kRoutedExpert && routed_experts) return true;
  return all_linears && role != LinearRole::kRouter && !any_matches(excluded, module);
}

}  // namespace dsv4
