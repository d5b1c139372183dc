#include "model/forward.h"

namespace dsv4 {

const char* to_string(Numerics n) { return n == Numerics::kExact ? "exact" : "official"; }

bool parse_numerics(std::string_view s, Numerics* out) {
  if (s == "exact") { *out = Numerics::kExact; return true; }
  if (s == "official") { *out = Numerics::kOfficial; return true; }
  return false;
}

}  // namespace dsv4
