// check_json_nesting: a single pass over the text tracking string state and bracket depth.
// Everything else about JSON validity is left to the parser.
#include "util/json_limits.h"

#include "util/error.h"

namespace dsv4 {

void check_json_nesting(std::string_view text, int max_depth, const std::string& what) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    else if (ch == '[' || ch == '{') {
      if (++depth > max_depth) fail(what, ": JSON nested deeper than ", max_depth, " at byte ", i);
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
}

}  // namespace dsv4
