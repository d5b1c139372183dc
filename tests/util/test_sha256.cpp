// The tests' SHA-256 (tests/support/sha256.h) on the FIPS 180-2 / NIST example messages, which
// cover one block, padding that spills into a second block (56 bytes), two blocks and 10^6 bytes;
// and a file hash equal to the in-memory hash across the 1 MiB read boundary.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "support/scratch_dir.h"
#include "support/seed.h"
#include "support/sha256.h"

namespace dsv4::test {
namespace {

TEST(Sha256, NistExampleMessages) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopq"
                       "rlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileEqualsBytesAndMissingFileIsAnError) {
  std::mt19937_64 rng(seed_for_this_test());
  std::string bytes((size_t(1) << 20) * 2 + 17, '\0');  // crosses sha256_file's 1 MiB reads
  for (char& c : bytes) c = char(rng());
  const ScratchDir scratch("dsv4-sha256-");
  const auto path = scratch / "bytes";
  std::ofstream(path, std::ios::binary) << bytes;
  EXPECT_EQ(sha256_file(path), sha256_hex(bytes));
  std::filesystem::remove(path);
  EXPECT_THROW(sha256_file(path), std::runtime_error);
}

}  // namespace
}  // namespace dsv4::test
