// The token-list file of `dsv4 logits --tokens` and `dsv4 compare --tokens`: a JSON array of
// non-negative token ids. Whether an id is inside the vocabulary is the backend's check.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsv4::cli {

// Error naming the file (and the element) for a missing file or one that is a directory, bad
// JSON, a non-array, a non-integer id, an id out of [0, 2^31), or an empty list.
std::vector<int32_t> read_token_file(const std::string& path);

}  // namespace dsv4::cli
