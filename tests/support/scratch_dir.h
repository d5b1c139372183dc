// Fresh private directories for tests. The name comes from mkdtemp, so a directory left behind by
// an earlier run (whose process id may have been reused) is never picked up again; ScratchDir
// removes its directory when it goes out of scope, a function-local static one at exit.
#pragma once

#include <filesystem>
#include <string>

namespace dsv4::test {

// Creates <temporary directory>/<prefix>XXXXXX with a unique suffix; throws when it cannot.
std::filesystem::path make_fresh_temp_dir(const std::string& prefix);

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) : path_(make_fresh_temp_dir(prefix)) {}
  // Takes over a directory some helper created (e.g. write_tiny_model's).
  static ScratchDir adopt(std::filesystem::path dir) { return ScratchDir(std::move(dir), Adopted{}); }
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
  struct Adopted {};
  ScratchDir(std::filesystem::path dir, Adopted) : path_(std::move(dir)) {}

  std::filesystem::path path_;
};

}  // namespace dsv4::test
