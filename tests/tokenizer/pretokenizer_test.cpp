// Pre-tokenizer split steps against HF `tokenizers`, for every Unicode scalar value: the piece
// lengths of a probe string per code point must equal testdata/tokenizer/v4_pretokenizer_classes.txt.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode_drift.h"
#include "tokenizer_test_util.h"
#include "util/utf8.h"

namespace dsv4 {
namespace {

// Must match probe() in tools/make_tokenizer_goldens.py: the code point next to a letter, a digit,
// a space, punctuation, a newline, itself and a tab, so each regex class it belongs to shows.
std::string probe(const std::string& c) {
  return "a" + c + "1" + c + " " + c + "b" + c + "!" + c + "\n" + c + c + "\t" + c;
}

// Each line "<first code point, hex> <piece lengths>" holds until the next line's code point.
std::vector<std::pair<uint32_t, std::string>> hf_runs() {
  std::ifstream in(test::testdata("v4_pretokenizer_classes.txt"));
  if (!in) throw std::runtime_error("missing testdata/tokenizer/v4_pretokenizer_classes.txt");
  std::vector<std::pair<uint32_t, std::string>> runs;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string cp_hex, sig;
    ls >> cp_hex >> sig;
    runs.emplace_back(std::stoul(cp_hex, nullptr, 16), sig);
  }
  return runs;
}

// Compares the split of probe(cp) with HF for every code point that `wanted` selects.
void check_code_points(const TokenizerSpec& spec, bool (*wanted)(uint32_t)) {
  const PreTokenizer pre(spec.splits, spec.origin);
  const auto runs = hf_runs();
  ASSERT_GT(runs.size(), 1000u);
  size_t run = 0, n_checked = 0, n_bad = 0;
  std::vector<std::string_view> pieces;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if ((cp >= 0xD800 && cp <= 0xDFFF) || !wanted(cp)) continue;
    while (run + 1 < runs.size() && runs[run + 1].first <= cp) ++run;
    std::string ch;
    utf8::append(ch, cp);
    const std::string s = probe(ch);
    pieces.clear();
    pre.split(s, pieces);
    std::string sig;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (i) sig += ',';
      sig += std::to_string(pieces[i].size());
    }
    ++n_checked;
    if (sig != runs[run].second && ++n_bad <= 20)
      ADD_FAILURE() << "U+" << std::hex << cp << std::dec << ": pieces " << sig << ", HF "
                    << runs[run].second;
  }
  EXPECT_EQ(n_bad, 0u) << "of " << n_checked << " code points";
  std::printf("  %zu code points checked\n", n_checked);
}

// The normal path: PCRE2's native categories, with stand-ins for the drifting code points.
TEST(PreTokenizer, EveryCodePointSplitsLikeHf) {
  std::printf("  %zu code points drift between PCRE2's tables and Unicode %s\n",
              unicode::drift_count(), unicode::kVersion);
  check_code_points(test::load_v4_spec(), [](uint32_t) { return true; });
}

// The fallback path: a \d in the pattern (here in a never-matching branch) rules stand-ins out,
// so drifting text runs the explicit Unicode 16 ranges.
TEST(PreTokenizer, DriftingCodePointsSplitLikeHfWithExactRanges) {
  TokenizerSpec spec = test::load_v4_spec();
  spec.splits.at(0).pattern += "|\\d(?!)";
  check_code_points(spec, [](uint32_t cp) { return unicode::is_drift(cp); });
}

}  // namespace
}  // namespace dsv4
