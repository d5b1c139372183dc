// Duplicate object keys in untrusted JSON (config.json, index files, safetensors headers): the
// parser keeps the last of two spellings silently, so the files where they could disagree refuse
// them instead. Everything else about JSON validity is left to the parser.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dsv4 {

// The path of the first key that appears twice in one object, at any depth: "fmt" at the top
// level, "quantization_config.fmt", "layers[2].name". nullopt when there is none (or when the
// text is not valid JSON: the parser reports that). One linear pass.
std::optional<std::string> find_duplicate_key(std::string_view json_text);

}  // namespace dsv4
