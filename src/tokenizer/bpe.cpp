// BPE merging by rank (see bpe.h). Which pieces reach it, and caching their results, is
// tokenizer.cpp's business; the byte alphabet is byte_level.cpp's.
#include "tokenizer/bpe.h"

#include <algorithm>
#include <functional>

#include "tokenizer/byte_level.h"
#include "util/error.h"

namespace dsv4 {

Bpe::Bpe(const TokenizerSpec& spec) : ignore_merges_(spec.ignore_merges) {
  const std::string& origin = spec.origin;
  vocab_.reserve(spec.vocab.size());
  std::unordered_map<int32_t, const std::string*> by_id;
  by_id.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) {
    auto [it, fresh] = by_id.emplace(id, &token);
    if (!fresh)
      fail(origin, ": field 'model.vocab': id ", id, " is used by both \"", *it->second,
           "\" and \"", token, "\"");
    vocab_.emplace(token, id);
  }
  const auto& alphabet = byte_level::byte_to_char();
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(alphabet[b]);
    if (it == vocab_.end())
      fail(origin, ": field 'model.vocab': no token \"", alphabet[b], "\" for byte ", b,
           "; a byte-level BPE needs all 256 byte tokens");
    byte_id_[b] = it->second;
  }
  auto lookup = [&](const std::string& token, size_t rank) {
    auto it = vocab_.find(token);
    if (it == vocab_.end())
      fail(origin, ": field 'model.merges[", rank, "]': \"", token, "\" is not in model.vocab");
    return it->second;
  };
  merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const int32_t l = lookup(left, rank), r = lookup(right, rank);
    const int32_t result = lookup(left + right, rank);
    // A repeated pair keeps its last rank, as HF's merge map (built by inserting in order) does.
    merges_[pair_key(l, r)] = Merge{static_cast<int32_t>(rank), result};
  }
  if (ignore_merges_) {
    for (const auto& [token, id] : vocab_)
      if (auto bytes = byte_level::chars_to_bytes(token)) word_id_.emplace(std::move(*bytes), id);
  }
}

std::optional<int32_t> Bpe::find(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void Bpe::encode_piece(std::string_view bytes, std::vector<int32_t>& out) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    if (auto it = word_id_.find(bytes); it != word_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (bytes.size() == 1) {
    out.push_back(byte_id_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  // Symbols form a linked list over the piece; a min-heap holds candidate merges ordered by rank,
  // then by position, so the lowest-ranked pair merges first and ties go to the leftmost (as in
  // HF's Word::merge_all). Entries made stale by an earlier merge are skipped when popped.
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap;  // a binary heap via std::push_heap / pop_heap
  constexpr auto kLater = std::greater<>{};  // makes the std:: heap functions a min-heap
  const int32_t n = static_cast<int32_t>(bytes.size());
  sym.resize(n);
  for (int32_t i = 0; i < n; ++i)
    sym[i] = Symbol{byte_id_[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  heap.clear();
  auto push_pair = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    auto it = merges_.find(pair_key(sym[pos].id, sym[next].id));
    if (it == merges_.end()) return;
    heap.push_back(Candidate{it->second.rank, pos, sym[pos].id, sym[next].id});
    std::push_heap(heap.begin(), heap.end(), kLater);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), kLater);
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& s = sym[c.pos];
    if (!s.alive || s.next < 0 || s.id != c.left || sym[s.next].id != c.right) continue;
    Symbol& right = sym[s.next];
    s.id = merges_.find(pair_key(c.left, c.right))->second.result;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    if (s.prev >= 0) push_pair(s.prev);
    push_pair(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace dsv4
