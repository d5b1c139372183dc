// Safetensors header parsing/validation, index handling, shard mapping and HF-name mapping into
// canonical views (§11). Which tensors a model needs, and their shapes, is weights.cpp's concern.
#include "model/checkpoint.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "model/hf_names.h"
#include "util/error.h"
#include "util/file_read.h"
#include "util/json_duplicates.h"
#include "util/json_limits.h"
#include "util/mmap.h"

namespace dsv4 {

using json = nlohmann::json;

namespace {

constexpr size_t kHeaderPrefixBytes = 8;          // little-endian u64 header length
constexpr uint64_t kMaxHeaderBytes = 256u << 20;  // Pro's largest shard header is a few MB
constexpr uint64_t kMaxIndexBytes = 256u << 20;
constexpr int kMaxHeaderDepth = 4;  // {name: {shape: [..]}} is 3 deep
constexpr size_t kMaxRank = 8;
constexpr int64_t kMaxFusedExperts = 1 << 16;  // bounds the split loop; Pro has 384
constexpr const char* kIndexFile = "model.safetensors.index.json";

struct DTypeName {
  DType t;
  const char* name;
  size_t size;
};
constexpr DTypeName kDTypes[] = {
    {DType::kBF16, "BF16", 2}, {DType::kF16, "F16", 2},         {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8},         {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},           {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8_E4M3, "F8_E4M3", 1}, {DType::kF8_E8M0, "F8_E8M0", 1},
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Shard names come from an untrusted index: a bare file name, nothing that walks directories.
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

}  // namespace

const char* to_string(DType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d.size;
  return 0;
}

bool parse_dtype(std::string_view s, DType* out) {
  for (const auto& d : kDTypes)
    if (s == d.name) { *out = d.t; return true; }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t file_size, const std::string& name) {
  if (file_size < kHeaderPrefixBytes)
    fail(name, ": ", file_size, " bytes is too small for a safetensors file (8-byte header length missing)");
  const uint64_t n = read_u64_le(bytes);
  if (n > file_size - kHeaderPrefixBytes)
    fail(name, ": header length ", n, " exceeds the file size ", file_size, " (truncated file?)");
  if (n > kMaxHeaderBytes) fail(name, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  const std::string_view text(reinterpret_cast<const char*>(bytes + kHeaderPrefixBytes), size_t(n));
  check_json_nesting(text, kMaxHeaderDepth, name + ": header");

  // nlohmann keeps the last of duplicate keys silently; a duplicated tensor name (or field of
  // one) is an error, as in the reference safetensors library.
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(name, ": header is not valid JSON");
  if (!j.is_object()) fail(name, ": header must be a JSON object");
  if (const auto dup = find_duplicate_key(text)) {
    if (dup->parent.empty()) fail(name, ": tensor '", dup->key, "' appears twice in the header");
    fail(name, ": header key '", dup->key, "' appears twice in the entry of '", dup->parent, "'");
  }

  SafetensorsHeader h;
  h.header_bytes = size_t(n);
  const uint64_t data_len = file_size - kHeaderPrefixBytes - n;
  for (const auto& [key, v] : j.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name, ": __metadata__ must be an object of strings");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string()) fail(name, ": __metadata__.", mk, " must be a string");
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = name + ": tensor '" + key + "'";
    if (key.empty()) fail(name, ": empty tensor name");
    if (!v.is_object()) fail(where, ": entry must be an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where, ": missing or non-string 'dtype'");
    SafetensorsHeader::Entry e;
    e.name = key;
    const std::string ds = v["dtype"].get<std::string>();
    if (!parse_dtype(ds, &e.dtype)) fail(where, ": unknown dtype '", ds, "'");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(where, ": missing or non-list 'shape'");
    const json& sh = v["shape"];
    if (sh.size() > kMaxRank) fail(where, ": rank ", sh.size(), " exceeds ", kMaxRank);
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : sh) {
      if (!d.is_number_unsigned()) fail(where, ": shape ", sh.dump(), " must hold non-negative integers");
      const uint64_t x = d.get<uint64_t>();
      if (x > uint64_t(INT64_MAX)) fail(where, ": shape ", sh.dump(), " dimension out of range");
      e.shape.push_back(int64_t(x));
      overflow |= __builtin_mul_overflow(numel, x, &numel);
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      fail(where, ": 'data_offsets' must be [begin, end] with non-negative integers");
    const uint64_t b = v["data_offsets"][0].get<uint64_t>(), en = v["data_offsets"][1].get<uint64_t>();
    if (b > en) fail(where, ": data_offsets [", b, ", ", en, "] end before begin");
    if (en > data_len)
      fail(where, ": data_offsets [", b, ", ", en, "] run past the end of the data section (", data_len,
           " bytes; file truncated?)");
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, uint64_t(dtype_size(e.dtype)), &nbytes);
    if (overflow || nbytes != en - b)
      fail(where, ": ", ds, " ", shape_str(e.shape), " needs ", overflow ? std::string("overflowing") : std::to_string(nbytes),
           " bytes but data_offsets [", b, ", ", en, "] span ", en - b);
    e.begin = size_t(b);
    e.end = size_t(en);
    h.entries.push_back(std::move(e));
  }
  // The spans tile the data section exactly, as the reference safetensors library requires: no
  // two share a byte, and no byte (before, between or after them) belongs to none — such bytes
  // would be data that no tensor describes, a sign of a damaged or hand-edited file.
  std::vector<const SafetensorsHeader::Entry*> order;
  for (const auto& e : h.entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  const SafetensorsHeader::Entry* prev = nullptr;
  for (const auto* e : order) {
    if (prev && e->begin < prev->end)
      fail(name, ": tensor '", e->name, "' data_offsets [", e->begin, ", ", e->end, "] overlap tensor '",
           prev->name, "' [", prev->begin, ", ", prev->end, "]");
    const size_t covered = prev ? prev->end : 0;
    if (e->begin > covered) {
      if (!prev)
        fail(name, ": the data section starts with ", e->begin, " bytes that no tensor covers (the first tensor, '",
             e->name, "', begins at data offset ", e->begin, ")");
      fail(name, ": data bytes [", covered, ", ", e->begin, ") between tensor '", prev->name, "' and tensor '",
           e->name, "' are covered by no tensor");
    }
    prev = e;  // e.begin >= prev->end here, so e ends last of all so far
  }
  const size_t covered = prev ? prev->end : 0;
  if (covered < data_len)
    fail(name, ": ", data_len - covered, " bytes after the last tensor", prev ? " ('" + prev->name + "')" : std::string(),
         " are covered by no tensor (data section [", covered, ", ", data_len, "), file size ", file_size, ")");
  return h;
}

Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

const TensorView* Checkpoint::find(std::string_view canonical_name) const {
  auto it = tensors_.find(canonical_name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& Checkpoint::get(std::string_view canonical_name) const {
  const TensorView* t = find(canonical_name);
  if (!t) fail(dir_.string(), ": checkpoint has no tensor '", canonical_name, "'");
  return *t;
}

Checkpoint Checkpoint::open(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) fail(dir.string(), ": not a directory");
  Checkpoint ck;
  ck.dir_ = dir;

  // Which shards, and (with an index) which tensor each must hold.
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> index_map;  // tensor -> shard
  const auto index_path = dir / kIndexFile;
  const bool have_index = std::filesystem::exists(index_path, ec);
  if (have_index) {
    const std::string text = read_regular_file(index_path, kMaxIndexBytes);
    check_json_nesting(text, kMaxHeaderDepth, kIndexFile);
    const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) fail(index_path.string(), ": not a JSON object");
    if (const auto dup = find_duplicate_key(text))
      fail(index_path.string(), ": key '", dup->path(), "' appears twice (the two entries may disagree)");
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index_path.string(), ": missing object 'weight_map'");
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : j["weight_map"].items()) {
      if (!shard.is_string()) fail(index_path.string(), ": weight_map['", tensor, "'] must be a file name");
      const std::string s = shard.get<std::string>();
      if (!plain_file_name(s)) fail(index_path.string(), ": weight_map['", tensor, "'] = '", s, "' is not a plain file name");
      if (!std::filesystem::exists(dir / s, ec))
        fail(index_path.string(), ": weight_map['", tensor, "'] points at missing shard '", s, "'");
      try {
        require_regular_file(dir / s);
      } catch (const Error& e) {
        fail(index_path.string(), ": weight_map['", tensor, "'] = '", s, "': ", e.what());
      }
      index_map[tensor] = s;
      shards.insert(s);
    }
    shard_names.assign(shards.begin(), shards.end());
  } else {
    // Every *.safetensors entry is a shard: one that is a directory, FIFO or device is refused by
    // name when it is opened, never skipped silently.
    for (const auto& ent : std::filesystem::directory_iterator(dir, ec)) {
      const auto fn = ent.path().filename().string();
      if (fn.size() > 12 && fn.substr(fn.size() - 12) == ".safetensors") shard_names.push_back(fn);
    }
    if (ec) fail(dir.string(), ": cannot list: ", ec.message());
    std::sort(shard_names.begin(), shard_names.end());
  }
  if (shard_names.empty()) fail(dir.string(), ": no ", kIndexFile, " and no *.safetensors files");

  std::map<std::string, TensorView> raw;  // on-disk name -> view
  for (const auto& sn : shard_names) {
    auto f = MappedFile::open(dir / sn);
    const SafetensorsHeader h = parse_safetensors_header(f->data(), f->size(), sn);
    const size_t data0 = kHeaderPrefixBytes + h.header_bytes;
    for (const auto& e : h.entries) {
      if (have_index) {
        auto it = index_map.find(e.name);
        if (it == index_map.end()) fail(sn, ": holds tensor '", e.name, "' which ", kIndexFile, " does not list");
        if (it->second != sn) fail(sn, ": holds tensor '", e.name, "' which ", kIndexFile, " places in '", it->second, "'");
      }
      TensorView v;
      v.name = e.name;
      v.dtype = e.dtype;
      v.shape = e.shape;
      v.data = f->data() + data0 + e.begin;
      v.nbytes = e.end - e.begin;
      v.file = sn;
      v.file_offset = data0 + e.begin;
      if (!raw.emplace(e.name, std::move(v)).second) fail(sn, ": tensor '", e.name, "' also appears in another shard");
    }
    ck.files_.push_back(std::move(f));
  }
  for (const auto& [tensor, shard] : index_map)
    if (!raw.count(tensor)) fail(kIndexFile, ": lists '", tensor, "' in shard '", shard, "' but the shard has no such tensor");

  // Canonical (official) names. HF names are rewritten (§11.4); the fused HF expert tensors are
  // split into per-expert views that point into the fused data.
  auto add = [&](std::string canon, TensorView v, const std::string& source) {
    v.name = canon;
    if (!ck.tensors_.emplace(canon, std::move(v)).second)
      fail(source, ": maps to '", canon, "', which another tensor of the checkpoint already provides");
  };
  for (auto& entry : raw) {
    const std::string& disk_name = entry.first;  // plain references: clang 14 cannot capture
    TensorView& v = entry.second;                // structured bindings in the lambda below
    if (!is_hf_name(disk_name)) {
      add(canonical_official_name(disk_name), std::move(v), disk_name);
      continue;
    }
    ck.hf_names_ = true;
    auto canon = hf_to_official(disk_name);
    if (!canon) {  // kept under its own name: check_checkpoint reports it as unexpected
      add(disk_name, std::move(v), disk_name);
      continue;
    }
    const bool gate_up = canon->ends_with(".ffn.experts.gate_up_proj");
    const bool down = canon->ends_with(".ffn.experts.down_proj");
    if (!gate_up && !down) {
      add(*canon, std::move(v), disk_name);
      continue;
    }
    const std::string where = v.file + ": tensor '" + disk_name + "'";
    if (v.dtype != DType::kBF16 && v.dtype != DType::kF16 && v.dtype != DType::kF32)
      fail(where, ": fused experts in ", to_string(v.dtype), " cannot be split (only BF16/F16/F32)");
    if (v.shape.size() != 3 || v.shape[0] <= 0 || v.shape[0] > kMaxFusedExperts || v.shape[1] <= 0 ||
        v.shape[2] <= 0 || (gate_up && v.shape[1] % 2 != 0))
      fail(where, ": shape ", shape_str(v.shape), gate_up ? " is not [E, 2I, D]" : " is not [E, D, I]");
    const std::string prefix = canon->substr(0, canon->size() - (gate_up ? 12 : 9));  // "...ffn.experts."
    const int64_t E = v.shape[0], rows = v.shape[1], cols = v.shape[2];
    const size_t esz = dtype_size(v.dtype);
    const size_t expert_bytes = size_t(rows * cols) * esz;
    for (int64_t e = 0; e < E; ++e) {
      const std::string ep = prefix + std::to_string(e) + ".";
      const int64_t half = gate_up ? rows / 2 : rows;
      auto part = [&](const char* proj, int64_t row0) {
        TensorView p = v;
        p.shape = {half, cols};
        p.nbytes = size_t(half * cols) * esz;
        const size_t off = size_t(e) * expert_bytes + size_t(row0 * cols) * esz;
        p.data = v.data + off;
        p.file_offset = v.file_offset + off;
        add(ep + proj + ".weight", std::move(p), disk_name);
      };
      if (gate_up) {
        part("w1", 0);     // §11.4: w1 rows first, then w3
        part("w3", half);
      } else {
        part("w2", 0);
      }
    }
  }
  return ck;
}

}  // namespace dsv4
