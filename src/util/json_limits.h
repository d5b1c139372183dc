// Guards applied to untrusted JSON text before it reaches the parser (config.json, safetensors
// headers, index files): bounded nesting, so no input can exhaust the stack. Parsing is nlohmann's.
#pragma once

#include <string>
#include <string_view>

namespace dsv4 {

// Throws dsv4::Error ("<what>: JSON nested deeper than N at byte B") when arrays/objects nest
// deeper than max_depth. Brackets inside strings (with escapes) are not counted.
void check_json_nesting(std::string_view text, int max_depth, const std::string& what);

}  // namespace dsv4
