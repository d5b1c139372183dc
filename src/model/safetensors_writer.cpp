// write_safetensors / write_index: POSIX writes; the data section is extended with ftruncate so
// tensors without data cost no disk blocks. The layout rules are in the header's comment.
#include "model/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace dsv4 {

namespace {

constexpr size_t kHeaderAlign = 8;

class Fd {
 public:
  explicit Fd(const std::filesystem::path& p) : path_(p) {
    fd_ = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(p.string(), ": cannot create: ", std::strerror(errno));
  }
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  void pwrite_all(const void* buf, size_t n, uint64_t off) {
    const char* p = static_cast<const char*>(buf);
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, p, n, off_t(off));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(path_.string(), ": write failed: ", std::strerror(errno));
      }
      p += w;
      n -= size_t(w);
      off += uint64_t(w);
    }
  }
  void truncate(uint64_t size) {
    if (::ftruncate(fd_, off_t(size)) != 0) fail(path_.string(), ": ftruncate failed: ", std::strerror(errno));
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

void put_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace

uint64_t write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                           const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  std::vector<uint64_t> begins;
  for (const auto* t : order) {
    uint64_t n = dtype_size(t->dtype);
    for (auto d : t->shape) n *= uint64_t(d);
    h[t->name] = {{"dtype", to_string(t->dtype)}, {"shape", t->shape}, {"data_offsets", {off, off + n}}};
    begins.push_back(off);
    off += n;
  }
  std::string text = h.dump();
  text.append((kHeaderAlign - text.size() % kHeaderAlign) % kHeaderAlign, ' ');
  std::vector<uint8_t> head(8 + text.size());
  put_u64_le(head.data(), text.size());
  std::memcpy(head.data() + 8, text.data(), text.size());
  Fd f(path);
  f.pwrite_all(head.data(), head.size(), 0);
  const uint64_t data0 = head.size();
  for (size_t i = 0; i < order.size(); ++i) {
    if (!order[i]->data) continue;
    uint64_t n = dtype_size(order[i]->dtype);
    for (auto d : order[i]->shape) n *= uint64_t(d);
    f.pwrite_all(order[i]->data, size_t(n), data0 + begins[i]);
  }
  f.truncate(data0 + off);
  return data0 + off;
}

void write_raw_safetensors(const std::filesystem::path& path, const std::string& header_json, uint64_t data_bytes) {
  std::vector<uint8_t> head(8 + header_json.size());
  put_u64_le(head.data(), header_json.size());
  std::memcpy(head.data() + 8, header_json.data(), header_json.size());
  Fd f(path);
  f.pwrite_all(head.data(), head.size(), 0);
  f.truncate(head.size() + data_bytes);
}

void write_index(const std::filesystem::path& dir, const std::map<std::string, std::string>& weight_map,
                 uint64_t total_size) {
  nlohmann::json j = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  std::ofstream f(dir / "model.safetensors.index.json", std::ios::binary);
  f << j.dump(2);
  if (!f) fail((dir / "model.safetensors.index.json").string(), ": write failed");
}

}  // namespace dsv4
