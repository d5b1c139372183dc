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

void check_draft_item(const DraftItem& item, int64_t vocab, int64_t position, int64_t mtp_position) {
  if (item.n_draft < 1 || item.n_draft > kMaxSpeculative)
    fail("draft: the number of drafts must be in [1, ", kMaxSpeculative, "], got ", item.n_draft);
  if (!item.drafts) fail("draft: no output for the drafted tokens");
  if (item.token < 0 || item.token >= vocab)
    fail("draft: token id ", item.token, " is outside the vocabulary [0, ", vocab, ")");
  if (position < 1 || mtp_position != position - 1)
    fail("draft: the MTP block is at position ", mtp_position, "; it must be one behind the sequence (", position,
         "), as the last forward with mtp (and a rollback) leave it");
}

void Forward::draft(std::span<DraftItem>) {
  fail("speculative decoding: this backend cannot draft with the MTP block");
}

void Forward::set_host_cores_share(double) { fail("this backend has no host tier (--cpu-experts)"); }

void Forward::rollback(SequenceState&, int64_t) {
  fail("speculative decoding: this backend cannot roll a sequence back");
}

}  // namespace dsv4
