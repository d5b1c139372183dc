// `dsv4 tokenize` end to end on the real V4 tokenizer.json: ids, --json, --decode (JSON array and
// comma list), --text-file with invalid UTF-8, and the exit status and message for bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/run_command.h"
#include "support/scratch_dir.h"
#include "support/v4_tokenizer.h"

namespace {

struct Result {
  int status;
  std::string out;  // stdout (stderr too when `merge_stderr`)
};

Result run(const std::string& args, bool merge_stderr = true) {
  const auto c = dsv4::test::run_command(std::string(DSV4_BINARY) + " tokenize " + args +
                                         (merge_stderr ? " 2>&1" : " 2>/dev/null"));
  return {c.status, c.out};
}

std::string v4_flag() { return "--tokenizer " + dsv4::test::require_v4_tokenizer().string(); }

// encoding.md §6.4 row 11 (the ids also agree with HF `tokenizers`, see tests/tokenizer).
const char* kChatText = "'<｜begin▁of▁sentence｜><｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>'";
const char* kChatIds = "0 128803 30594 128804 128821 36101 128822 7624 1";

TEST(TokenizeCli, EncodesAndDecodes) {
  Result r = run(v4_flag() + " --text " + kChatText, false);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, std::string(kChatIds) + "\n");

  r = run(v4_flag() + " --text 'a  b' --json", false);
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"], nlohmann::json({67, 223, 291}));
  EXPECT_EQ(j["tokens"], nlohmann::json({"a", "Ġ", "Ġb"}));

  r = run(v4_flag() + " --decode '[0, 128803, 30594, 1]'", false);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "<｜begin▁of▁sentence｜><｜User｜>你好<｜end▁of▁sentence｜>");
  r = run(v4_flag() + " --decode 0,128803,30594,1 --skip-special --json", false);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], "<｜User｜>你好");
}

TEST(TokenizeCli, InvalidUtf8FileWarnsAndEncodesReplacement) {
  const dsv4::test::ScratchDir dir("dsv4_tokenize_");
  const auto path = dir / "bad_utf8.txt";
  std::ofstream(path, std::ios::binary) << "ok\xFF!";
  const Result r = run(v4_flag() + " --text-file " + path.string());
  const Result ids = run(v4_flag() + " --text-file " + path.string(), false);
  const Result same = run(v4_flag() + " --text 'ok\xEF\xBF\xBD!'", false);
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("not valid UTF-8 at byte 2"), std::string::npos) << r.out;
  // The file's ids are exactly those of the text with U+FFFD in place of the bad byte; `same` must
  // itself be a real answer (an empty one would make any comparison vacuous), so it is decoded back.
  ASSERT_EQ(same.status, 0);
  ASSERT_NE(same.out.find_first_of("0123456789"), std::string::npos) << "no ids: '" << same.out << "'";
  EXPECT_EQ(ids.status, 0);
  EXPECT_EQ(ids.out, same.out);
  std::string list = same.out.substr(0, same.out.find_last_not_of('\n') + 1);
  for (char& c : list) if (c == ' ') c = ',';
  const Result back = run(v4_flag() + " --decode " + list, false);
  EXPECT_EQ(back.status, 0);
  EXPECT_EQ(back.out, "ok\xEF\xBF\xBD!");
}

TEST(TokenizeCli, BadInputExitsNonZeroWithAMessage) {
  Result r = run(v4_flag() + " --decode '[1, 999999]'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("token id 999999"), std::string::npos) << r.out;
  r = run(v4_flag() + " --decode '1,x'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("--decode"), std::string::npos) << r.out;
  r = run("--tokenizer /nonexistent.json --text hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("/nonexistent.json"), std::string::npos) << r.out;
  r = run(v4_flag());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("exactly one of"), std::string::npos) << r.out;
  r = run("-m /tmp --tokenizer x.json --text hi");
  EXPECT_EQ(r.status, 1);
}

}  // namespace
