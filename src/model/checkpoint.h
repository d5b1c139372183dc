// Checkpoint: a folder of safetensors shards (with model.safetensors.index.json or loose
// *.safetensors), memory-mapped and validated; hands out read-only typed views by canonical
// (official upstream) name. HF-transformers names are mapped onto official ones here (§11.4),
// fused HF experts split per expert. Knows nothing about what the tensors mean: see weights.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

enum class DType { kBF16, kF16, kF32, kF64, kI64, kI32, kI16, kI8, kU8, kBool, kF8_E4M3, kF8_E8M0 };

const char* to_string(DType t);        // safetensors spelling: "BF16", "F8_E4M3", ...
size_t dtype_size(DType t);            // bytes per element
bool parse_dtype(std::string_view s, DType* out);

// A read-only view of one tensor inside a mapped shard.
struct TensorView {
  std::string name;            // canonical name
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;            // shard file name, for error messages
  size_t file_offset = 0;      // absolute offset of data in the shard

  int64_t numel() const;
  int64_t dim(size_t i) const { return shape.at(i); }
};

// Parsed header of one safetensors file (validated: JSON, dtypes, offsets inside the file,
// no overlaps, byte span == shape × dtype size). Exposed for the fuzz target and tests.
struct SafetensorsHeader {
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t begin = 0, end = 0;  // relative to the data section
  };
  size_t header_bytes = 0;      // length of the JSON header (the 8-byte prefix value)
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};
// `file_size` is the whole file's size; `name` is used in error messages.
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t file_size,
                                           const std::string& name);

class MappedFile;

class Checkpoint {
 public:
  // Opens and validates every shard header and the index. Throws dsv4::Error naming the file.
  static Checkpoint open(const std::filesystem::path& dir);

  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

  const TensorView* find(std::string_view canonical_name) const;  // nullptr when absent
  const TensorView& get(std::string_view canonical_name) const;   // throws Error when absent
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }
  const std::filesystem::path& dir() const { return dir_; }
  bool hf_names() const { return hf_names_; }  // true when the folder used HF-transformers names

 private:
  Checkpoint() = default;
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView, std::less<>> tensors_;
  bool hf_names_ = false;
};

}  // namespace dsv4
