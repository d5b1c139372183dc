// Tokenizer: assembles the added-token passes, the pre-tokenizer and the BPE into HF's encode
// pipeline (encoding.md §6.2), and the id tables behind decode. Streaming decode: stream_decoder.cpp.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "util/error.h"
#include "util/utf8.h"

namespace dsv4 {

namespace {

// Word cache bounds: pieces longer than this rarely repeat, and the table stops growing (it is
// never evicted) once full, which caps its memory at roughly entries × (key + ids + node).
constexpr size_t kCacheMaxPieceBytes = 64;
constexpr size_t kCacheMaxEntries = 1 << 18;

}  // namespace

struct Tokenizer::Impl {
  explicit Impl(const TokenizerSpec& spec) : pre(spec.splits, spec.origin), bpe(spec) {}

  PreTokenizer pre;
  Bpe bpe;
  // HF matches added tokens in two passes: those with normalized=false on the raw text first, then
  // those with normalized=true on the (normalized) gaps between. The normalizer is the identity here.
  AddedTokenMatcher raw_added, normalized_added;
  StringMap<int32_t> added_ids;  // content -> id

  std::vector<std::string> text;   // [vocab_size] token string as in the file
  std::vector<std::string> bytes;  // [vocab_size] what the token decodes to (byte_level rule)
  std::vector<uint8_t> added, special;  // [vocab_size] flags

  mutable std::mutex cache_mutex;
  mutable StringMap<std::vector<int32_t>> cache;

  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::encode_plain(std::string_view segment, std::vector<int32_t>& out) const {
  std::vector<std::string_view> pieces;
  pre.split(segment, pieces);
  for (std::string_view piece : pieces) {
    const bool cacheable = piece.size() <= kCacheMaxPieceBytes;
    if (cacheable) {
      std::lock_guard lock(cache_mutex);
      if (auto it = cache.find(piece); it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    const size_t first = out.size();
    bpe.encode_piece(piece, out);
    if (cacheable) {
      std::lock_guard lock(cache_mutex);
      if (cache.size() < kCacheMaxEntries)
        cache.emplace(std::string(piece), std::vector<int32_t>(out.begin() + first, out.end()));
    }
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json) {
  std::ifstream in(tokenizer_json, std::ios::binary);
  if (!in) fail(tokenizer_json.string(), ": cannot open tokenizer file");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) fail(tokenizer_json.string(), ": read error");
  return from_json(buf.str(), tokenizer_json.string());
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& origin) {
  const TokenizerSpec spec = parse_tokenizer_json(json_text, origin);
  auto impl = std::make_unique<Impl>(spec);

  std::unordered_map<int32_t, const std::string*> owner;  // id -> token string
  owner.reserve(impl->bpe.vocab().size() + spec.added_tokens.size());
  for (const auto& [token, id] : impl->bpe.vocab()) owner.emplace(id, &token);
  for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
    const AddedTokenSpec& a = spec.added_tokens[i];
    const std::string field = cat("added_tokens[", i, "]");
    if (auto it = impl->added_ids.find(a.content); it != impl->added_ids.end())
      fail(origin, ": field '", field, ".content': \"", a.content, "\" is already added with id ",
           it->second);
    if (auto in_vocab = impl->bpe.find(a.content)) {  // V4: ids 0-2 are in both tables
      if (*in_vocab != a.id)
        fail(origin, ": field '", field, ".id': ", a.id, " but model.vocab gives \"", a.content,
             "\" id ", *in_vocab);
    } else if (auto [it, fresh] = owner.emplace(a.id, &a.content); !fresh) {
      fail(origin, ": field '", field, ".id': id ", a.id, " already belongs to \"", *it->second, "\"");
    }
    impl->added_ids.emplace(a.content, a.id);
    (a.normalized ? impl->normalized_added : impl->raw_added).add(a.content, a.id);
  }
  // Ids must tile [0, vocab_size): the tables below are dense, so a gap would let one large id in
  // a hostile file ask for a huge allocation, and an id without a token could not be decoded.
  int32_t max_id = -1;
  for (const auto& [id, token] : owner) max_id = std::max(max_id, id);
  const size_t vocab_size = static_cast<size_t>(max_id) + 1;
  if (owner.size() != vocab_size) {
    int32_t missing = 0;
    while (owner.count(missing)) ++missing;
    fail(origin, ": no token has id ", missing, " (the largest is ", max_id,
         "): ids must run from 0 without holes");
  }
  impl->text.resize(vocab_size);
  impl->bytes.resize(vocab_size);
  for (const auto& [id, token] : owner) {
    impl->text[id] = *token;
    impl->bytes[id] = byte_level::token_to_bytes(*token);
  }
  impl->added.assign(vocab_size, 0);
  impl->special.assign(vocab_size, 0);
  for (const AddedTokenSpec& a : spec.added_tokens) {
    impl->added[a.id] = 1;
    impl->special[a.id] = a.special;
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  // The BPE indexes pieces with int32; larger inputs are refused rather than mis-tokenized.
  if (text.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail("encode: text of ", text.size(), " bytes exceeds the 2 GiB limit");
  std::string repaired;
  if (utf8::valid_prefix_length(text) != text.size()) {
    repaired = utf8::repair(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  // Calls on_text for each gap between matches of `m` and on_token for each match.
  auto scan = [](const AddedTokenMatcher& m, std::string_view s, auto&& on_text, auto&& on_token) {
    size_t pos = 0;
    while (pos < s.size()) {
      const auto match = m.empty() ? std::nullopt : m.find(s, pos);
      const size_t gap_end = match ? match->begin : s.size();
      if (gap_end > pos) on_text(s.substr(pos, gap_end - pos));
      if (!match) break;
      on_token(match->id);
      pos = match->end;
    }
  };
  auto push = [&](int32_t id) { out.push_back(id); };
  scan(impl_->raw_added, text,
       [&](std::string_view gap) {
         scan(impl_->normalized_added, gap,
              [&](std::string_view plain) { impl_->encode_plain(plain, out); }, push);
       },
       push);
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("token id ", id, " is outside [0, ", vocab_size(), ")");
  return impl_->bytes[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string raw;
  for (int32_t id : ids) {
    const std::string& b = token_bytes(id);
    if (!(skip_special && impl_->special[id])) raw += b;
  }
  return utf8::repair(raw);
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  return impl_->bpe.find(token);
}

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("token id ", id, " is outside [0, ", vocab_size(), ")");
  return impl_->text[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->text.size()); }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}

bool Tokenizer::is_added(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->added[id];
}

}  // namespace dsv4
