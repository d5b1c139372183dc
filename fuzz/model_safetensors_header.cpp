// libFuzzer target: the safetensors header parser (model/checkpoint.cpp) on arbitrary bytes.
// The input is the whole file; only dsv4::Error may come out, never a crash, hang or huge alloc.
#include <cstddef>
#include <cstdint>

#include "model/checkpoint.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const dsv4::SafetensorsHeader h = dsv4::parse_safetensors_header(data, size, "fuzz.safetensors");
    // Accepted headers must describe spans inside the data section.
    const size_t data_len = size - 8 - h.header_bytes;
    for (const auto& e : h.entries)
      if (e.begin > e.end || e.end > data_len) __builtin_trap();
  } catch (const dsv4::Error&) {
  }
  return 0;
}
