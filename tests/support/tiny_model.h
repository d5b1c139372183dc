// Random tiny checkpoints for the CPU tests: the §15.1 structure (or a caller's edit of it) with
// small vocab, every tensor the config implies (weights.cpp's expected_tensors) filled with fresh
// random values of sensible scale, FP8/MXFP4 tensors packed with model/quant.h's packers.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "support/scratch_dir.h"

namespace dsv4::test {

struct TinyModelOptions {
  bool quantised = false;  // FP8 block linears + MXFP4 experts (else BF16/F32 everything)
  bool f32 = false;        // plain tensors as F32 instead of BF16
  int64_t vocab = 1024;
  uint64_t salt = 0;       // mixed into the test seed
  std::function<void(nlohmann::json&)> edit_config;  // applied after the defaults
  // Called with (name, values) for every float tensor before it is written (in FP32, row-major
  // [rows, cols]); lets a test pin values (e.g. identity projections).
  std::function<void(const std::string&, std::vector<float>&, int64_t rows, int64_t cols)> edit;
};

// Writes config.json + model.safetensors into a fresh temporary directory, removed with the
// returned ScratchDir.
ScratchDir write_tiny_model(const TinyModelOptions& opt);

}  // namespace dsv4::test
