// MappedFile: a read-only memory map of one whole file (checkpoint shards). Pages are touched only
// when read, so mapping a 160 GB shard costs nothing until its data is used.
// What the bytes mean is the caller's business (model/checkpoint.cpp parses safetensors).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace dsv4 {

class MappedFile {
 public:
  // Throws dsv4::Error naming the path when it cannot be opened or mapped.
  static std::unique_ptr<MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }  // nullptr for an empty file
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dsv4
