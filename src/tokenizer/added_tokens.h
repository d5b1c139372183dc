// Finds added tokens (tokenizer.json "added_tokens") in raw text: leftmost match first, the longest
// at that position, as HF's Aho-Corasick pass does. What surrounds the matches goes to the BPE.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace dsv4 {

class AddedTokenMatcher {
 public:
  void add(std::string_view content, int32_t id);  // content non-empty and not yet added

  struct Match {
    size_t begin, end;
    int32_t id;
  };
  // The leftmost-longest match in text[from..], if any.
  std::optional<Match> find(std::string_view text, size_t from) const;
  bool empty() const { return nodes_.size() == 1; }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node index
    int32_t id = -1;                                    // token ending here, or -1
  };
  int32_t child(int32_t node, uint8_t byte) const;
  std::vector<Node> nodes_{1};        // a byte trie; nodes_[0] is the root
  std::array<bool, 256> starts_{};    // first bytes of any token: cheap skip while scanning
};

}  // namespace dsv4
