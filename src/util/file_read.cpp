// require_regular_file / read_regular_file / read_input_file: stat first (what kind of file), then
// a bounded read through one file descriptor.
#include "util/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace dsv4 {

namespace {

// What a stat'ed path is, in the words of an error message.
const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

struct stat stat_or_fail(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) fail(path.string(), ": cannot open: no such file");
    fail(path.string(), ": cannot stat: ", std::strerror(err));
  }
  return st;
}

std::string read_fd(int fd, const std::filesystem::path& path, uint64_t max_bytes) {
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      fail(path.string(), ": read error: ", std::strerror(err));
    }
    if (n == 0) break;
    if (out.size() + size_t(n) > max_bytes) {
      ::close(fd);
      fail(path.string(), ": larger than the limit of ", max_bytes, " bytes");
    }
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

}  // namespace

void require_regular_file(const std::filesystem::path& path) {
  const struct stat st = stat_or_fail(path);
  if (!S_ISREG(st.st_mode)) {
    const char* kind = kind_of(st.st_mode);
    fail(path.string(), ": is ", kind, S_ISDIR(st.st_mode) ? "" : ", not a regular file");
  }
}

std::string read_regular_file(const std::filesystem::path& path, uint64_t max_bytes) {
  require_regular_file(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path.string(), ": cannot open: ", std::strerror(errno));
  return read_fd(fd, path, max_bytes);
}

std::string read_input_file(const std::filesystem::path& path, uint64_t max_bytes) {
  const struct stat st = stat_or_fail(path);
  if (S_ISDIR(st.st_mode)) fail(path.string(), ": is a directory");
  if (S_ISSOCK(st.st_mode)) fail(path.string(), ": is a socket, not a file");
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; blocking
  // reads are restored right after (a pipe with a writer then delivers everything until EOF).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path.string(), ": cannot open: ", std::strerror(errno));
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return read_fd(fd, path, max_bytes);
}

}  // namespace dsv4
