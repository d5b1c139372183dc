// pdl_enabled(): the DSV4_PDL switch of launch.cuh, read once per process.
#include "cuda/kernels/launch.cuh"

#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace dsv4::cuda {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DSV4_PDL");
    if (!v || std::strcmp(v, "1") == 0) return true;
    DSV4_CHECK_MSG(std::strcmp(v, "0") == 0, "DSV4_PDL=", v, ": expected 0 or 1");
    return false;
  }();
  return enabled;
}

}  // namespace dsv4::cuda
