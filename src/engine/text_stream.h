// Sampled ids -> text a client may be shown: whole UTF-8 characters only (tokenizer's
// StreamDecoder), never a stop string nor any text that could still become one (it is held back
// until it cannot). Used by generate/chat and by the server's streaming responses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace dsv4 {

class TextStream {
 public:
  // Stop strings must not be empty (Error).
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings);

  struct Piece {
    std::string text;      // newly final text (may be empty)
    bool stopped = false;  // a stop string completed: `text` ends right before it; push no more
  };
  Piece push(int32_t id);  // the id's text (stop and EOS ids are the caller's to leave out)
  Piece finish();          // end of output: releases held-back text (a partial character as U+FFFD)
  const std::string& text() const { return text_; }  // everything emitted so far

 private:
  Piece take(std::string_view more, bool final);

  StreamDecoder decoder_;
  std::vector<std::string> stops_;
  std::string pending_;  // decoded, not yet emitted (a possible stop-string prefix)
  std::string text_;
  bool stopped_ = false;
};

}  // namespace dsv4
