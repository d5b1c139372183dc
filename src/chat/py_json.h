// Python-compatible JSON text: what `json.dumps(value, ensure_ascii=False)` writes (", " and ": "
// separators, keys in insertion order, raw non-ASCII, Python float repr). The prompt encoder needs it
// byte-exact (encoding.md §3.5); parsing JSON input is nlohmann's job.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dsv4::chat {

// Insertion-ordered JSON, so that tool schemas and arguments render in the order the user wrote.
using Json = nlohmann::ordered_json;

// json.dumps(value, ensure_ascii=False). Throws dsv4::Error for NaN/Inf (Python would write "NaN").
std::string py_json_dumps(const Json& value);

// Python's bool(value) for the parsed JSON: null, false, 0, "", [] and {} are false. The reference
// tests fields such as `tools` and `response_format` this way.
bool py_truthy(const Json& value);

// json.dumps of one string: quotes plus the escapes Python writes (\" \\ \n \r \t \b \f, \u00XX).
std::string py_json_quote(std::string_view text);

// Parses JSON text; malformed JSON or invalid UTF-8 throws dsv4::Error naming `origin` and the
// byte offset.
Json parse_json(std::string_view text, std::string_view origin);

}  // namespace dsv4::chat
