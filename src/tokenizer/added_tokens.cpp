// Leftmost-longest literal matching of added tokens (see added_tokens.h). Which tokens take part
// in which pass (raw or normalized) is decided in tokenizer.cpp.
#include "tokenizer/added_tokens.h"

#include "util/error.h"

namespace dsv4 {

int32_t AddedTokenMatcher::child(int32_t node, uint8_t byte) const {
  for (const auto& [b, next] : nodes_[node].children)
    if (b == byte) return next;
  return -1;
}

void AddedTokenMatcher::add(std::string_view content, int32_t id) {
  DSV4_CHECK(!content.empty());
  int32_t node = 0;
  for (char c : content) {
    const auto byte = static_cast<uint8_t>(c);
    int32_t next = child(node, byte);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  DSV4_CHECK(nodes_[node].id < 0);
  nodes_[node].id = id;
  starts_[static_cast<uint8_t>(content[0])] = true;
}

std::optional<AddedTokenMatcher::Match> AddedTokenMatcher::find(std::string_view text,
                                                                size_t from) const {
  for (size_t i = from; i < text.size(); ++i) {
    if (!starts_[static_cast<uint8_t>(text[i])]) continue;
    std::optional<Match> best;
    int32_t node = 0;
    for (size_t j = i; j < text.size(); ++j) {
      node = child(node, static_cast<uint8_t>(text[j]));
      if (node < 0) break;
      if (nodes_[node].id >= 0) best = Match{i, j + 1, nodes_[node].id};
    }
    if (best) return best;
  }
  return std::nullopt;
}

}  // namespace dsv4
