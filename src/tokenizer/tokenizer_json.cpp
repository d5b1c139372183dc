// tokenizer.json -> TokenizerSpec: JSON structure, field types and the supported subset of HF
// `tokenizers` (see tokenizer_json.h). Vocab/merge consistency is checked where they are built (bpe.cpp).
#include "tokenizer/tokenizer_json.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace dsv4 {

namespace {

using Json = nlohmann::json;

class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void bad(const std::string& path, const std::string& what) const {
    fail(origin_, ": field '", path, "': ", what);
  }
  const Json& member(const Json& obj, const std::string& path, const char* key) const {
    const std::string sub = path.empty() ? key : cat(path, ".", key);
    if (!obj.is_object()) bad(path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) bad(sub, "missing");
    return *it;
  }
  // Absent or null counts as null.
  const Json* optional_member(const Json& obj, const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  std::string string(const Json& j, const std::string& path) const {
    if (!j.is_string()) bad(path, cat("expected a string, got ", j.type_name()));
    return j.get<std::string>();
  }
  bool boolean(const Json& j, const std::string& path) const {
    if (!j.is_boolean()) bad(path, cat("expected true/false, got ", j.type_name()));
    return j.get<bool>();
  }
  int32_t id(const Json& j, const std::string& path) const {
    if (!j.is_number_integer()) bad(path, cat("expected an integer id, got ", j.type_name()));
    const auto v = j.get<int64_t>();
    if (v < 0 || v > std::numeric_limits<int32_t>::max())
      bad(path, cat("id ", v, " is outside [0, 2^31)"));
    return static_cast<int32_t>(v);
  }
  // A boolean option that dsv4 only supports with one value (absent/null means the default).
  void require_flag(const Json& obj, const std::string& path, const char* key, bool expected) const {
    const Json* v = optional_member(obj, key);
    if (v && boolean(*v, cat(path, ".", key)) != expected)
      bad(cat(path, ".", key), cat("only ", expected ? "true" : "false", " is supported"));
  }
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

void read_normalizer(const Reader& r, const Json& root) {
  const Json* n = r.optional_member(root, "normalizer");
  if (!n) return;
  const std::string type = r.string(r.member(*n, "normalizer", "type"), "normalizer.type");
  const Json& list = r.member(*n, "normalizer", "normalizers");
  if (type != "Sequence" || !list.is_array() || !list.empty())
    r.bad("normalizer", "only null or an empty Sequence is supported (got a '" + type + "')");
}

void read_split(const Reader& r, const Json& step, const std::string& path, TokenizerSpec& spec) {
  const std::string behavior = r.string(r.member(step, path, "behavior"), path + ".behavior");
  if (behavior != "Isolated") r.bad(path + ".behavior", "only \"Isolated\" is supported, got \"" + behavior + "\"");
  r.require_flag(step, path, "invert", false);
  const Json& pattern = r.member(step, path, "pattern");
  SplitSpec split;
  if (pattern.is_object() && pattern.contains("Regex")) {
    split.pattern = r.string(pattern["Regex"], path + ".pattern.Regex");
    split.literal = false;
    split.field = path + ".pattern.Regex";
  } else if (pattern.is_object() && pattern.contains("String")) {
    split.pattern = r.string(pattern["String"], path + ".pattern.String");
    split.literal = true;
    split.field = path + ".pattern.String";
  } else {
    r.bad(path + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
  }
  if (split.pattern.empty()) r.bad(split.field, "empty pattern");
  spec.splits.push_back(std::move(split));
}

void read_pre_tokenizer(const Reader& r, const Json& root, TokenizerSpec& spec) {
  const Json* pre = r.optional_member(root, "pre_tokenizer");
  if (!pre) r.bad("pre_tokenizer", "missing; a byte-level BPE needs a ByteLevel pre-tokenizer");
  std::vector<std::pair<const Json*, std::string>> steps;
  const std::string type = r.string(r.member(*pre, "pre_tokenizer", "type"), "pre_tokenizer.type");
  if (type == "Sequence") {
    const Json& list = r.member(*pre, "pre_tokenizer", "pretokenizers");
    if (!list.is_array()) r.bad("pre_tokenizer.pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      steps.emplace_back(&list[i], cat("pre_tokenizer.pretokenizers[", i, "]"));
  } else {
    steps.emplace_back(pre, "pre_tokenizer");
  }
  bool byte_level_seen = false;
  for (const auto& [step, path] : steps) {
    const std::string step_type = r.string(r.member(*step, path, "type"), path + ".type");
    if (byte_level_seen) r.bad(path, "nothing may follow the ByteLevel step");
    if (step_type == "Split") {
      read_split(r, *step, path, spec);
    } else if (step_type == "ByteLevel") {
      // add_prefix_space would prepend a space to every piece; use_regex would add GPT-2's split
      // regex. Neither is implemented (V4 uses neither), so refuse rather than guess.
      r.require_flag(*step, path, "add_prefix_space", false);
      r.require_flag(*step, path, "use_regex", false);
      byte_level_seen = true;
    } else {
      r.bad(path + ".type", "unsupported pre-tokenizer \"" + step_type + "\" (Split and ByteLevel are)");
    }
  }
  if (!byte_level_seen) r.bad("pre_tokenizer", "must end with a ByteLevel step (only byte-level BPE is supported)");
}

void read_model(const Reader& r, const Json& root, TokenizerSpec& spec) {
  const Json& model = r.member(root, "", "model");
  const std::string type = r.string(r.member(model, "model", "type"), "model.type");
  if (type != "BPE") r.bad("model.type", "only \"BPE\" is supported, got \"" + type + "\"");
  if (const Json* d = r.optional_member(model, "dropout"))
    if (!d->is_number() || d->get<double>() != 0.0) r.bad("model.dropout", "BPE dropout is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const Json* v = r.optional_member(model, key))
      if (!r.string(*v, cat("model.", key)).empty()) r.bad(cat("model.", key), "not supported");
  r.require_flag(model, "model", "byte_fallback", false);
  if (const Json* v = r.optional_member(model, "ignore_merges"))
    spec.ignore_merges = r.boolean(*v, "model.ignore_merges");

  const Json& vocab = r.member(model, "model", "vocab");
  if (!vocab.is_object()) r.bad("model.vocab", "expected an object {token: id}");
  spec.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    spec.vocab.emplace_back(it.key(), r.id(it.value(), "model.vocab[\"" + it.key() + "\"]"));

  const Json& merges = r.member(model, "model", "merges");
  if (!merges.is_array()) r.bad("model.merges", "expected an array");
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    const std::string path = cat("model.merges[", i, "]");
    if (m.is_string()) {  // legacy "left right"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size())
        r.bad(path, "expected \"left right\", got \"" + s + "\"");
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {
      spec.merges.emplace_back(r.string(m[0], path + "[0]"), r.string(m[1], path + "[1]"));
    } else {
      r.bad(path, "expected \"left right\" or [\"left\", \"right\"]");
    }
  }
}

void read_added_tokens(const Reader& r, const Json& root, TokenizerSpec& spec) {
  const Json* list = r.optional_member(root, "added_tokens");
  if (!list) return;
  if (!list->is_array()) r.bad("added_tokens", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& t = (*list)[i];
    const std::string path = cat("added_tokens[", i, "]");
    AddedTokenSpec a;
    a.id = r.id(r.member(t, path, "id"), path + ".id");
    a.content = r.string(r.member(t, path, "content"), path + ".content");
    if (a.content.empty()) r.bad(path + ".content", "empty");
    a.special = r.boolean(r.member(t, path, "special"), path + ".special");
    const Json* normalized = r.optional_member(t, "normalized");
    a.normalized = normalized ? r.boolean(*normalized, path + ".normalized") : !a.special;
    // HF's lstrip/rstrip/single_word change what a match swallows; not implemented, so refused.
    for (const char* key : {"lstrip", "rstrip", "single_word"}) r.require_flag(t, path, key, false);
    spec.added_tokens.push_back(std::move(a));
  }
}

void read_decoder_and_post_processor(const Reader& r, const Json& root) {
  const Json* dec = r.optional_member(root, "decoder");
  if (!dec) r.bad("decoder", "missing; only the ByteLevel decoder is supported");
  const std::string type = r.string(r.member(*dec, "decoder", "type"), "decoder.type");
  if (type != "ByteLevel") r.bad("decoder.type", "only \"ByteLevel\" is supported, got \"" + type + "\"");
  // A post-processor may only adjust offsets: encode() never adds tokens (encoding.md §6.2 step 5).
  if (const Json* post = r.optional_member(root, "post_processor")) {
    const std::string ptype = r.string(r.member(*post, "post_processor", "type"), "post_processor.type");
    if (ptype != "ByteLevel")
      r.bad("post_processor.type", "only null or \"ByteLevel\" is supported, got \"" + ptype + "\"");
  }
}

}  // namespace

TokenizerSpec parse_tokenizer_json(std::string_view json_text, const std::string& origin) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::parse_error& e) {
    fail(origin, ": invalid JSON at byte ", e.byte, ": ", e.what());
  } catch (const Json::exception& e) {
    // Well-formed text the parser still refuses: a number beyond a double's range (out_of_range 406).
    fail(origin, ": invalid JSON: ", e.what());
  }
  Reader r(origin);
  if (!root.is_object()) r.bad("", "the top level must be an object");
  TokenizerSpec spec;
  spec.origin = origin;
  read_normalizer(r, root);
  read_pre_tokenizer(r, root, spec);
  read_model(r, root, spec);
  read_added_tokens(r, root, spec);
  read_decoder_and_post_processor(r, root);
  return spec;
}

}  // namespace dsv4
