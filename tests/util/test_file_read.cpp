// util/file_read and util/json_duplicates: every kind of non-file is refused with its name (and
// never blocks), reads are bounded, and a duplicate JSON key is named by its full path.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "util/error.h"
#include "util/file_read.h"
#include "util/json_duplicates.h"
#include "support/scratch_dir.h"
#include "util/mmap.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;


// The message of the Error `f` throws (a failure when it throws nothing).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(FileRead, RegularFileReads) {
  const test::ScratchDir scratch("dsv4-file-read-");
  const fs::path& d = scratch.path();
  std::ofstream(d / "a.txt") << "hello";
  EXPECT_EQ(read_regular_file(d / "a.txt", 5), "hello");
  EXPECT_EQ(read_input_file(d / "a.txt", 5), "hello");
  EXPECT_NE(error_of([&] { read_regular_file(d / "a.txt", 4); }).find("larger than the limit of 4 bytes"),
            std::string::npos);
}

TEST(FileRead, NonFilesAreNamed) {
  const test::ScratchDir scratch("dsv4-file-read-");
  const fs::path& d = scratch.path();
  fs::create_directories(d / "dir");
  ASSERT_EQ(::mkfifo((d / "fifo").c_str(), 0600), 0);
  for (const auto& [path, kind] : {std::pair{d / "dir", "is a directory"},
                                   std::pair{d / "fifo", "is a FIFO (named pipe)"},
                                   std::pair{fs::path("/dev/null"), "is a character device"},
                                   std::pair{d / "missing", "no such file"}}) {
    const std::string e = error_of([&] { read_regular_file(path, 100); });
    EXPECT_NE(e.find(path.string()), std::string::npos) << e;
    EXPECT_NE(e.find(kind), std::string::npos) << e;
    // The memory map refuses them the same way (and does not block on the FIFO).
    EXPECT_NE(error_of([&] { MappedFile::open(path); }).find(kind), std::string::npos);
  }
  // Command-line inputs: a directory is refused, a FIFO without a writer reads as empty (no hang),
  // a device is read with a bound.
  EXPECT_NE(error_of([&] { read_input_file(d / "dir", 100); }).find("is a directory"), std::string::npos);
  EXPECT_EQ(read_input_file(d / "fifo", 100), "");
  EXPECT_EQ(read_input_file("/dev/null", 100), "");
  EXPECT_NE(error_of([&] { read_input_file("/dev/zero", 1000); }).find("larger than the limit"), std::string::npos);
}

// The duplicate's full path, "" when there is none.
std::string dup_path(std::string_view text) {
  const auto d = find_duplicate_key(text);
  return d ? d->path() : "";
}

TEST(JsonDuplicates, NamedByPath) {
  EXPECT_EQ(dup_path(R"({"a": 1, "b": {"c": 2}})"), "");
  const auto top = find_duplicate_key(R"({"x.y": 1, "x.y": 2})");  // keys may contain dots
  ASSERT_TRUE(top.has_value());
  EXPECT_EQ(top->parent, "");
  EXPECT_EQ(top->key, "x.y");
  EXPECT_EQ(dup_path(R"({"a": 1, "a": 2})"), "a");
  EXPECT_EQ(dup_path(R"({"a": 1, "q": {"fmt": "e4m3", "x": [1, {}], "fmt": "e5m2"}})"), "q.fmt");
  EXPECT_EQ(dup_path(R"({"l": [{"n": 1}, {"n": 2, "n": 3}]})"), "l[1].n");
  EXPECT_EQ(dup_path(R"([{"k": 1}, [], {"k": 1, "k": 2}])"), "[2].k");
  // The same key in sibling objects is no duplicate.
  EXPECT_EQ(dup_path(R"({"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]})"), "");
  EXPECT_EQ(dup_path(R"({"a": )"), "");  // invalid JSON: the parser's to report
}

}  // namespace
}  // namespace dsv4
