// TextStream (text_stream.h): the stop-string hold-back. A stop string can only start inside the
// pending text, so the longest pending suffix that is a prefix of some stop string stays pending.
#include "engine/text_stream.h"

#include <algorithm>

#include "util/error.h"

namespace dsv4 {

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : decoder_(tokenizer), stops_(std::move(stop_strings)) {
  for (const std::string& s : stops_)
    if (s.empty()) fail("stop strings must not be empty");
}

TextStream::Piece TextStream::push(int32_t id) {
  DSV4_CHECK_MSG(!stopped_, "TextStream::push after a stop string");
  return take(decoder_.push(id), false);
}

TextStream::Piece TextStream::finish() {
  if (stopped_) return {};
  return take(decoder_.finish(), true);
}

TextStream::Piece TextStream::take(std::string_view more, bool final) {
  pending_ += more;
  Piece out;
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
  size_t emit = pending_.size();
  if (first != std::string::npos) {
    emit = first;
    out.stopped = stopped_ = true;
  } else if (!final) {
    size_t keep = 0;
    for (const std::string& s : stops_)
      for (size_t n = std::min(pending_.size(), s.size() - 1); n > keep; --n)
        if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
    emit = pending_.size() - keep;
  }
  out.text = pending_.substr(0, emit);
  text_ += out.text;
  pending_.erase(0, out.stopped ? pending_.size() : emit);
  return out;
}

}  // namespace dsv4
