// Writing safetensors files and index JSON: for fixtures, tests and full-size sparse skeletons
// (data regions left as holes). Reading/validation is checkpoint.cpp's.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint.h"

namespace dsv4 {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // nbytes = numel × dtype_size; nullptr leaves a sparse hole
};

// Header keys sorted, data laid out in that order, header padded with spaces to 8 bytes (as the
// safetensors library does). Returns the file size.
uint64_t write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                           const std::map<std::string, std::string>& metadata = {});

// A file with the given header text verbatim and `data_bytes` of zeros (malformed-input tests).
void write_raw_safetensors(const std::filesystem::path& path, const std::string& header_json, uint64_t data_bytes);

// model.safetensors.index.json with weight_map tensor -> shard and metadata.total_size.
void write_index(const std::filesystem::path& dir, const std::map<std::string, std::string>& weight_map,
                 uint64_t total_size);

}  // namespace dsv4
