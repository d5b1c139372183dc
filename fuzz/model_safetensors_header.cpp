// libFuzzer target: the safetensors header parser (model/checkpoint.cpp) on arbitrary bytes.
// The input is the whole file; only dsv4::Error may come out, never a crash, hang or huge alloc.
// Seeds (fuzz/corpus/model_safetensors_header) include the refused layouts of issue 10: bytes
// after the last tensor, gaps before or between tensors, a field repeated inside an entry.
#include <cstddef>
#include <cstdint>

#include "model/checkpoint.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const dsv4::SafetensorsHeader h = dsv4::parse_safetensors_header(data, size, "fuzz.safetensors");
    // Accepted headers must tile the data section exactly: spans inside it, disjoint, and
    // together as long as it (no byte before, between or after them belongs to no tensor).
    const size_t data_len = size - 8 - h.header_bytes;
    size_t covered = 0;
    for (const auto& e : h.entries) {
      if (e.begin > e.end || e.end > data_len) __builtin_trap();
      covered += e.end - e.begin;
    }
    if (covered != data_len) __builtin_trap();
  } catch (const dsv4::Error&) {
  }
  return 0;
}
