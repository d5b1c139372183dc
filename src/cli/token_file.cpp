// Reads a token-list file (see token_file.h).
#include "cli/token_file.h"

#include <climits>
#include <cmath>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/file_read.h"

namespace dsv4::cli {

// A token list of 2^28 ids is ~3 GB of text; anything larger is not a token list.
constexpr uint64_t kMaxTokenFileBytes = uint64_t(4) << 30;

std::vector<int32_t> read_token_file(const std::string& path) {
  const std::string text = read_input_file(path, kMaxTokenFileBytes);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!j.is_array()) fail(path, ": expected a JSON array of token ids");
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < j.size(); ++i) tokens.push_back(token_id_from_json(j[i], cat(path, ": element ", i)));
  if (tokens.empty()) fail(path, ": the token list is empty");
  return tokens;
}

int32_t token_id_from_json(const nlohmann::json& v, const std::string& where) {
  // Integers too large for 64 bits parse as floats: out of range too, not "not an id".
  const bool integral = v.is_number_integer() ||
                        (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()));
  if (!integral) fail(where, " (", v.dump(), ") is not an integer token id");
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(INT32_MAX)
                        : v.is_number_integer() ? v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX
                                                : v.get<double>() >= 0 && v.get<double>() <= INT32_MAX;
  if (!in_range) fail(where, " (", v.dump(), ") is out of range: allowed [0, ", INT32_MAX, "]");
  return v.is_number_float() ? int32_t(v.get<double>()) : int32_t(v.get<int64_t>());
}

}  // namespace dsv4::cli
