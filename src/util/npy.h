// NumPy .npy files: float32, C order, any rank (version 1.0 / 2.0 headers). Used for golden logits
// and `dsv4 logits --out`. Other dtypes and Fortran order are refused, never guessed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace dsv4 {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, product(shape) values
};

// Throws dsv4::Error naming the file and what is wrong (magic, header, dtype, order, size).
NpyArray read_npy(const std::filesystem::path& path);
void write_npy(const std::filesystem::path& path, const float* data,
               const std::vector<int64_t>& shape);

}  // namespace dsv4
