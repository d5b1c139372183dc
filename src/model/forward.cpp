#include "model/forward.h"

#include "util/error.h"

namespace dsv4 {

const char* to_string(Numerics n) {
  switch (n) {
    case Numerics::kExact: return "exact";
    case Numerics::kOfficial: return "official";
    case Numerics::kOfficialBf16: return "official-bf16";
  }
  return "?";
}

bool parse_numerics(std::string_view s, Numerics* out) {
  if (s == "exact") { *out = Numerics::kExact; return true; }
  if (s == "official") { *out = Numerics::kOfficial; return true; }
  if (s == "official-bf16") { *out = Numerics::kOfficialBf16; return true; }
  return false;
}

void Forward::draft(std::span<DraftItem>) {
  fail("speculative decoding: this backend cannot draft with the MTP block");
}

void Forward::rollback(SequenceState&, int64_t) {
  fail("speculative decoding: this backend cannot roll a sequence back");
}

}  // namespace dsv4
