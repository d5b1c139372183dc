// CudaOptions for tests: a KV pool of a fixed size instead of everything the utilisation limit
// leaves (the default, vLLM's), so that a test can hold several CUDA forwards at once (graph vs
// eager) and the CPU reference beside them.
#pragma once

#include "cuda/cuda_forward.h"

namespace dsv4::test {

inline CudaOptions cuda_test_options() {
  CudaOptions o;
  o.progress = false;
  o.ctx_size = 8192;              // every test sequence fits; keeps HCA row lists and scratch small
  o.max_sequences = 128;
  o.kv_cache_tokens = 256 * 1024;
  return o;
}

}  // namespace dsv4::test
