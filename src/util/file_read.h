// Reading whole files that come from outside: files of a model folder (config.json, index, shards,
// tokenizer.json), which must be regular files, and files named on the command line (--tokens,
// --text-file, --messages), which may also be pipes. Every refusal names the path and what it is
// ("is a directory"); nothing here blocks on a FIFO without a writer or reads without bound.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace dsv4 {

// Error "<path>: is a directory" (FIFO, device, socket, missing) unless path (after symlinks) is
// a regular file. Checked before open(): opening a FIFO for reading blocks until a writer comes.
void require_regular_file(const std::filesystem::path& path);

// The contents of a regular file (require_regular_file), refused when larger than max_bytes.
std::string read_regular_file(const std::filesystem::path& path, uint64_t max_bytes);

// A command-line input file: a regular file, a pipe (process substitution, a named FIFO) or a
// character device. Directories (and sockets) are refused; reading stops with an error past
// max_bytes (so /dev/zero cannot exhaust memory); a FIFO without a writer reads as empty.
std::string read_input_file(const std::filesystem::path& path, uint64_t max_bytes);

}  // namespace dsv4
