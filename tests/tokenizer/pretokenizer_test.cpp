// Pre-tokenizer split steps against HF `tokenizers`, for every Unicode scalar value: the piece
// lengths of a probe string per code point must equal testdata/tokenizer/v4_pretokenizer_classes.txt.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tokenizer/pretokenizer.h"
#include "tokenizer_test_util.h"

namespace dsv4 {
namespace {

// Must match probe() in tools/make_tokenizer_goldens.py: the code point next to a letter, a digit,
// a space, punctuation, a newline, itself and a tab, so each regex class it belongs to shows.
std::string probe(const std::string& c) {
  return "a" + c + "1" + c + " " + c + "b" + c + "!" + c + "\n" + c + c + "\t" + c;
}

TEST(PreTokenizer, EveryCodePointSplitsLikeHf) {
  const TokenizerSpec spec = test::load_v4_spec();
  const PreTokenizer pre(spec.splits, spec.origin);
  std::ifstream in(test::testdata("v4_pretokenizer_classes.txt"));
  ASSERT_TRUE(in) << "missing testdata/tokenizer/v4_pretokenizer_classes.txt";
  // Each line "<first code point, hex> <piece lengths>" holds until the next line's code point.
  std::vector<std::pair<uint32_t, std::string>> runs;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string cp_hex, sig;
    ls >> cp_hex >> sig;
    runs.emplace_back(std::stoul(cp_hex, nullptr, 16), sig);
  }
  ASSERT_GT(runs.size(), 1000u);
  size_t run = 0, n_checked = 0, n_bad = 0;
  std::vector<std::string_view> pieces;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    while (run + 1 < runs.size() && runs[run + 1].first <= cp) ++run;
    const std::string s = probe(test::utf8_encode(cp));
    pieces.clear();
    pre.split(s, pieces);
    std::string sig;
    for (size_t i = 0; i < pieces.size(); ++i) sig += (i ? "," : "") + std::to_string(pieces[i].size());
    ++n_checked;
    if (sig != runs[run].second && ++n_bad <= 20)
      ADD_FAILURE() << "U+" << std::hex << cp << std::dec << ": pieces " << sig << ", HF "
                    << runs[run].second;
  }
  EXPECT_EQ(n_bad, 0u) << "of " << n_checked << " code points";
  EXPECT_EQ(n_checked, 0x110000u - 0x800u);
}

}  // namespace
}  // namespace dsv4
