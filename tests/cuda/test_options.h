// CudaOptions for tests: a KV pool of a fixed size instead of everything the utilisation limit
// leaves (the default, vLLM's), so that a test can hold several CUDA forwards at once (graph vs
// eager) and the CPU reference beside them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cuda/cuda_forward.h"

namespace dsv4::test {

inline CudaOptions cuda_test_options() {
  CudaOptions o;
  o.progress = false;
  o.ctx_size = 8192;              // every test sequence fits; keeps HCA row lists and scratch small
  o.max_sequences = 128;
  o.kv_cache_tokens = 256 * 1024;
  // DSV4_TEST_PREFILL_ATTENTION=0: the suite with long chunks' queries on the decode attention
  // kernel (CudaOptions::prefill_attention, on by default), to tell the two apart.
  if (const char* e = std::getenv("DSV4_TEST_PREFILL_ATTENTION")) o.prefill_attention = std::string_view(e) != "0";
  return o;
}

// compute-sanitizer runs (scripts/gpu_suite.sh) set DSV4_CUDA_FORWARD_T to shorten the model-level
// tests' work to at most that many positions per sequence; the plain run covers it whole.
inline bool shortened() { return std::getenv("DSV4_CUDA_FORWARD_T") != nullptr; }
inline int64_t cap(int64_t full) {
  const char* env = std::getenv("DSV4_CUDA_FORWARD_T");
  return env ? std::min<int64_t>(full, std::atoll(env)) : full;
}

}  // namespace dsv4::test
