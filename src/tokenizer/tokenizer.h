// Public tokenizer API: a byte-level BPE loaded from a Hugging Face tokenizer.json (encoding.md §6),
// and a streaming decoder that only ever emits complete UTF-8. The pieces live in their own files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

class Tokenizer {
 public:
  // Reads and validates a tokenizer.json; unsupported configurations and malformed files throw
  // dsv4::Error naming the file and the JSON field.
  static Tokenizer load(const std::filesystem::path& tokenizer_json);
  // The same from the JSON text already in memory (`origin` names it in error messages).
  static Tokenizer from_json(std::string_view json_text, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text -> ids with HF `tokenizers` semantics (encoding.md §6.2): every added token (special or
  // not) found in the text becomes its id; nothing is added (no BOS/EOS). Input that is not valid
  // UTF-8 is read as Python's bytes.decode("utf-8", "replace") would: each maximal invalid
  // subsequence becomes U+FFFD. Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;

  // ids -> text, as HF `Tokenizer.decode`: byte-level tokens map back to bytes, added tokens give
  // their literal content, and bytes that do not form UTF-8 become U+FFFD (maximal subparts).
  // `skip_special` drops added tokens flagged "special" in tokenizer.json. An id outside
  // [0, vocab_size()) or without a token throws dsv4::Error (HF would silently drop it).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The raw bytes one token stands for (byte-level tokens mapped back; may be partial UTF-8).
  // Throws dsv4::Error for an unknown id. StreamDecoder builds on this.
  const std::string& token_bytes(int32_t id) const;

  std::optional<int32_t> token_id(std::string_view token) const;  // vocab or added token string
  std::string token_text(int32_t id) const;  // the token string as in tokenizer.json ("Ġthe")
  int32_t vocab_size() const;                // largest id + 1
  bool is_special(int32_t id) const;         // an added token with "special": true
  bool is_added(int32_t id) const;           // any entry of added_tokens

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Incremental decode for generation: push ids one at a time and print what comes back. Output is
// always whole UTF-8 characters; bytes of an unfinished character wait for the next token. The
// concatenation of every push() and the final finish() equals tokenizer.decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string finish();  // flushes a trailing incomplete sequence as U+FFFD; the decoder resets

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: a prefix of a UTF-8 character still to be completed
};

}  // namespace dsv4
