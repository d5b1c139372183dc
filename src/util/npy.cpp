// .npy reader/writer: parses the Python-literal header dict strictly ('descr', 'fortran_order',
// 'shape'), checks the payload size against the shape, writes version 1.0 headers.
#include "util/npy.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "util/error.h"

namespace dsv4 {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kMaxHeaderBytes = 1 << 20;  // real headers are < 200 bytes

// Value text of `'key': value` in the header dict (up to the next top-level comma or brace).
std::string header_field(const std::string& header, const std::string& key,
                         const std::filesystem::path& path) {
  const std::string pattern = "'" + key + "':";
  const size_t at = header.find(pattern);
  if (at == std::string::npos) fail(path.string(), ": .npy header has no '", key, "' field");
  size_t i = at + pattern.size();
  while (i < header.size() && header[i] == ' ') ++i;
  size_t end = i;
  if (i < header.size() && header[i] == '(') {
    end = header.find(')', i);
    if (end == std::string::npos) fail(path.string(), ": .npy header: unterminated shape");
    return header.substr(i, end + 1 - i);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  std::string v = header.substr(i, end - i);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

}  // namespace

NpyArray read_npy(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  char pre[10];
  if (file_size < 10 || !in.read(pre, 10)) fail(path.string(), ": too short for a .npy file");
  if (std::memcmp(pre, kMagic, kMagicLen) != 0) fail(path.string(), ": bad .npy magic");
  const int major = uint8_t(pre[6]);
  uint64_t header_len = 0, prefix = 10;
  if (major == 1) {
    header_len = uint8_t(pre[8]) | (uint16_t(uint8_t(pre[9])) << 8);
  } else if (major == 2 || major == 3) {
    char more[2];
    if (!in.read(more, 2)) fail(path.string(), ": truncated .npy header length");
    header_len = uint8_t(pre[8]) | (uint32_t(uint8_t(pre[9])) << 8) |
                 (uint32_t(uint8_t(more[0])) << 16) | (uint32_t(uint8_t(more[1])) << 24);
    prefix = 12;
  } else {
    fail(path.string(), ": unsupported .npy version ", major);
  }
  if (header_len > kMaxHeaderBytes || prefix + header_len > file_size)
    fail(path.string(), ": .npy header length ", header_len, " exceeds the file");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), std::streamsize(header_len)))
    fail(path.string(), ": truncated .npy header");

  const std::string descr = header_field(header, "descr", path);
  if (descr != "'<f4'" && descr != "'float32'")
    fail(path.string(), ": .npy dtype ", descr, " is not little-endian float32 ('<f4')");
  if (header_field(header, "fortran_order", path) != "False")
    fail(path.string(), ": .npy fortran_order arrays are not supported");
  const std::string shape_text = header_field(header, "shape", path);
  if (shape_text.size() < 2 || shape_text.front() != '(')
    fail(path.string(), ": .npy shape ", shape_text, " is not a tuple");

  NpyArray a;
  uint64_t count = 1;
  size_t i = 1;
  while (i < shape_text.size() - 1) {
    while (i < shape_text.size() && (shape_text[i] == ' ' || shape_text[i] == ',')) ++i;
    if (i >= shape_text.size() - 1) break;
    uint64_t v = 0;
    size_t digits = 0;
    while (i < shape_text.size() && shape_text[i] >= '0' && shape_text[i] <= '9') {
      v = v * 10 + uint64_t(shape_text[i] - '0');
      if (v > (uint64_t(1) << 40)) fail(path.string(), ": .npy dimension too large in ", shape_text);
      ++i;
      ++digits;
    }
    if (digits == 0) fail(path.string(), ": .npy shape ", shape_text, " is malformed");
    if (v != 0 && count > (uint64_t(1) << 40) / v)
      fail(path.string(), ": .npy shape ", shape_text, " is too large");
    count *= v;
    a.shape.push_back(int64_t(v));
  }
  const uint64_t data_bytes = file_size - prefix - header_len;
  if (data_bytes != count * sizeof(float))
    fail(path.string(), ": .npy payload is ", data_bytes, " bytes, shape ", shape_text, " needs ",
         count * sizeof(float));
  a.data.resize(count);
  if (count && !in.read(reinterpret_cast<char*>(a.data.data()), std::streamsize(data_bytes)))
    fail(path.string(), ": truncated .npy payload");
  return a;
}

void write_npy(const std::filesystem::path& path, const float* data,
               const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  uint64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
    if (i + 1 < shape.size()) dict += " ";
    count *= uint64_t(shape[i]);
  }
  dict += "), }";
  // Header (magic + 4 + dict + '\n') padded with spaces to a multiple of 64 (format spec).
  size_t total = kMagicLen + 4 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) fail(path.string(), ": cannot create");
  out.write(kMagic, kMagicLen);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const uint16_t len = uint16_t(dict.size());
  const char len_bytes[2] = {char(len & 0xff), char(len >> 8)};
  out.write(len_bytes, 2);
  out.write(dict.data(), std::streamsize(dict.size()));
  out.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(float)));
  if (!out) fail(path.string(), ": write failed");
}

}  // namespace dsv4
