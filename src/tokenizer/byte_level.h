// The GPT-2 byte <-> unicode alphabet of HF's ByteLevel pre-tokenizer and decoder: every byte
// becomes one printable character (space -> "Ġ", '\n' -> "Ċ"). BPE itself lives in bpe.h.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace dsv4::byte_level {

// The alphabet character for each byte, UTF-8 encoded (1 or 2 bytes).
const std::array<std::string, 256>& byte_to_char();

// The bytes a token string stands for when every character of it is in the alphabet;
// nullopt otherwise (or when `token` is not valid UTF-8).
std::optional<std::string> chars_to_bytes(std::string_view token);

// HF ByteLevel decoder rule, applied per token: the mapped bytes when the whole token is in the
// alphabet, else the token's own UTF-8 bytes (how "<｜User｜>" decodes to itself).
std::string token_to_bytes(std::string_view token);

}  // namespace dsv4::byte_level
