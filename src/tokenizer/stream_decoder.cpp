// StreamDecoder: emits whole UTF-8 characters as token bytes arrive (see tokenizer.h). The bytes
// each id stands for come from Tokenizer::token_bytes; the UTF-8 rules from utf8.cpp.
#include "tokenizer/tokenizer.h"
#include "util/utf8.h"

namespace dsv4 {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  const std::string& bytes = tokenizer_->token_bytes(id);  // validates id before any state changes
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += bytes;
  // Same left-to-right scan as utf8::repair, except that a truncated tail waits for more bytes
  // instead of becoming U+FFFD; so the pushed pieces concatenate to decode(all ids).
  std::string out;
  std::string_view s = pending_;
  size_t i = 0;
  while (i < s.size()) {
    const utf8::Step st = utf8::step(s.substr(i));
    if (st.kind == utf8::StepKind::kTruncated) break;
    if (st.kind == utf8::StepKind::kChar)
      out.append(s.substr(i, st.length));
    else
      out.append(utf8::kReplacement);
    i += st.length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = pending_.empty() ? std::string() : std::string(utf8::kReplacement);
  pending_.clear();
  return out;
}

}  // namespace dsv4
