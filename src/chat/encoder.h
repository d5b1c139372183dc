// The V4 prompt encoder: messages -> prompt text, byte-identical to the official
// encoding_dsv4.py `encode_messages` (encoding.md §3). Tokenizing the text is the tokenizer's job;
// reading a completion back is parser.h.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "chat/messages.h"

namespace dsv4::chat {

// What follows <｜Assistant｜>: <think> (reasoning first) or </think> (answer directly), §3.4, §7.
enum class ThinkingMode { kChat, kThinking };
const char* to_string(ThinkingMode m);
ThinkingMode parse_thinking_mode(std::string_view s);  // "chat" | "thinking", else dsv4::Error

// The two published encoder revisions differ only in the reasoning-effort prefixes (§1, §3.6):
// original (V4 release): efforts {high, max}, only max adds text; 0731: {low, high, max}.
enum class EncoderRevision { kOriginal, k0731 };
const char* to_string(EncoderRevision r);
EncoderRevision parse_encoder_revision(std::string_view s);  // "original" | "0731"

struct EncodeOptions {
  ThinkingMode mode = ThinkingMode::kThinking;
  EncoderRevision revision = EncoderRevision::kOriginal;
  // Empty: the revision's default (original: high, 0731: low), which adds no text. Checked against
  // the revision's levels even in chat mode, where the prefix is never written.
  std::string reasoning_effort;
  bool drop_thinking = true;  // drop earlier turns' reasoning (thinking mode, no tools), §3.2
  bool add_bos = true;
};

// The effort prefix written between BOS and the first message in thinking mode (§3.6); "" for
// levels that add nothing. Unknown levels throw dsv4::Error listing the valid ones.
std::string_view reasoning_effort_prefix(EncoderRevision revision, std::string_view effort);

// Throws dsv4::Error for text fields that are not UTF-8, an invalid effort level, or assistant
// tool-call arguments that are not the text of a JSON object (as the official encoder raises).
std::string encode_messages(std::span<const Message> messages, const EncodeOptions& options);

}  // namespace dsv4::chat
