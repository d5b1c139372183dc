// .npy: round trip through our writer and a header written by numpy's rules; hostile files fail
// with dsv4::Error (wrong magic, dtype, order, truncated payload, absurd shape).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/scratch_dir.h"
#include "support/test_util.h"
#include "util/error.h"
#include "util/npy.h"

namespace dsv4 {
namespace {

void write_raw(const std::filesystem::path& p, const std::string& header_dict,
               size_t payload_bytes) {
  std::string dict = header_dict;
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::ofstream out(p, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = uint16_t(dict.size());
  out.put(char(len & 0xff));
  out.put(char(len >> 8));
  out << dict;
  out << std::string(payload_bytes, '\0');
}

TEST(Npy, RoundTrip) {
  test::Rng rng(1);
  const test::ScratchDir scratch("dsv4-npy-");
  for (auto shape : std::vector<std::vector<int64_t>>{{7}, {3, 5}, {2, 3, 4}, {0, 4}}) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v = rng.normals(size_t(n));
    const auto p = scratch / "rt.npy";
    write_npy(p, v.data(), shape);
    const NpyArray a = read_npy(p);
    EXPECT_EQ(a.shape, shape);
    EXPECT_EQ(a.data, v);
  }
}

TEST(Npy, HostileFilesAreErrors) {
  const test::ScratchDir scratch("dsv4-npy-");
  const auto p = scratch / "bad.npy";
  write_raw(p, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", 32);
  EXPECT_THROW(read_npy(p), Error);
  write_raw(p, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
  EXPECT_THROW(read_npy(p), Error);
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 15);
  EXPECT_THROW(read_npy(p), Error);
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999), }", 16);
  EXPECT_THROW(read_npy(p), Error);
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 16);
  EXPECT_THROW(read_npy(p), Error);
  {
    std::ofstream out(p, std::ios::binary);
    out << "NOTNUMPYATALL";
  }
  EXPECT_THROW(read_npy(p), Error);
  EXPECT_THROW(read_npy(scratch / "missing.npy"), Error);
  std::filesystem::remove(p);
  // A well-formed numpy-style header is accepted.
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 16);
  EXPECT_EQ(read_npy(p).shape, (std::vector<int64_t>{2, 2}));
}

}  // namespace
}  // namespace dsv4
