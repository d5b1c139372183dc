// Fresh private directories for tests. The name comes from mkdtemp, so a directory left behind by
// an earlier run (whose process id may have been reused) is never picked up again; ScratchDir
// removes its directory when it goes out of scope, a function-local static one at exit.
#pragma once

#include <filesystem>
#include <string>

namespace dsv4::test {

class ScratchDir {
 public:
  // Creates <temporary directory>/<prefix>XXXXXX with a unique suffix; throws when it cannot.
  explicit ScratchDir(const std::string& prefix);
  ScratchDir(ScratchDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    std::error_code ignored;  // nothing useful to do if the removal fails at exit
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace dsv4::test
