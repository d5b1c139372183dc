// Reads a token-list file (see token_file.h).
#include "cli/token_file.h"

#include <climits>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace dsv4::cli {

std::vector<int32_t> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open the token file");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!j.is_array()) fail(path, ": expected a JSON array of token ids");
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer() || j[i].get<int64_t>() < 0 ||
        j[i].get<int64_t>() > INT32_MAX)
      fail(path, ": element ", i, " is not a non-negative token id");
    tokens.push_back(int32_t(j[i].get<int64_t>()));
  }
  if (tokens.empty()) fail(path, ": the token list is empty");
  return tokens;
}

}  // namespace dsv4::cli
