// Duplicate object keys in untrusted JSON (config.json, index files, safetensors headers): the
// parser keeps the last of two spellings silently, so the files where they could disagree refuse
// them instead. Everything else about JSON validity is left to the parser.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dsv4 {

struct DuplicateKey {
  std::string parent;  // path of the object holding it: "" at the top level, "a.b", "layers[2]"
  std::string key;     // the key that appears twice
  std::string path() const { return parent.empty() ? key : parent + "." + key; }
};

// The first key that appears twice in one object, at any depth ("quantization_config.fmt").
// nullopt when there is none (or when the text is not valid JSON: the parser reports that).
// One linear pass.
std::optional<DuplicateKey> find_duplicate_key(std::string_view json_text);

}  // namespace dsv4
