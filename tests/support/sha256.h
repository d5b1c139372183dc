// SHA-256 (FIPS 180-4) of bytes or of a file, as lowercase hex: how tests tell that a golden was
// made from the very file they load (tokenizer.json, the nano shards). Its own test vectors are in
// tests/util/test_sha256.cpp; what a golden records is each test's business.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace dsv4::test {

std::string sha256_hex(std::string_view bytes);
// Throws std::runtime_error naming the file when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace dsv4::test
