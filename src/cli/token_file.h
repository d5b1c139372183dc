// The token-list file of `dsv4 logits --tokens` and `dsv4 compare --tokens`: a JSON array of
// non-negative token ids. Whether an id is inside the vocabulary is the backend's check.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4::cli {

// Error naming the file (and the element) for a missing file or one that is a directory, bad
// JSON, a non-array, a non-integer id, an id out of [0, 2^31), or an empty list.
std::vector<int32_t> read_token_file(const std::string& path);

// One token id from JSON: an integer in [0, 2^31), else Error "<where> (<value>) is not an integer
// token id" or "... is out of range: allowed [0, 2147483647]" (also past 64 bits).
int32_t token_id_from_json(const nlohmann::json& v, const std::string& where);

}  // namespace dsv4::cli
