// write_skeleton: expected_tensors() → shards (in layout order, cut by size) → sparse files and
// index, then (random mode) each tensor's region filled in place, chunk by chunk; RandomTensors,
// the same fill into memory; override_config.
// Header parsing/validation of what it writes is checkpoint.cpp's job.
//
// Random values (mirroring tests/support/tiny_model.cpp's choices, so a forward pass stays finite
// and O(1)): linears N(0, 1/in) as dequantised values; norms 1 + N(0, 0.1²); hc fn N(0, 1/in),
// hc base N(0, 1), hc scale N(1, 0.3²); sinks N(0, 1); ape N(0, 0.5²); router bias N(0, 0.1²);
// embed N(0, 1); tid2eid rows of k distinct expert ids. Quantised linears (§11.2, §11.3, §11.6)
// store Gaussian-shaped codes with block scales whose exponent is e0 or e0 + 1 at random per block
// (so a kernel indexing the wrong scale block cannot pass a parity check). The expected
// dequantised std is 1/sqrt(in): exactly for FP8 (the code std absorbs the power-of-two rounding)
// and NVFP4 (F32 global scale), within a factor √2 for MXFP4 (only the exponent is free). Every
// element comes from 16 random bits through a 65536-entry table, so generation runs at memory
// speed and never materialises a tensor in FP32.
#include "model/skeleton.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/hf_names.h"
#include "model/quant.h"
#include "model/safetensors_writer.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4 {

namespace {

// The official Flash release has 46 shards for ~159.6 GB (§11.1): ~3.5 GB each.
constexpr uint64_t kSkeletonShardBytes = 3'500'000'000ull;

// Random mode.
constexpr size_t kFillChunkBytes = size_t(16) << 20;  // one pwrite per 16 MiB
constexpr size_t kTableSize = size_t(1) << 16;        // elements are looked up by 16 random bits
// E4M3 codes ~ N(0, c²) with c in [48, 96): the largest table quantile (4.33σ < 416) stays below
// kE4M3Max, so no code saturates and the NaN bytes 0x7F/0xFF never occur.
constexpr double kFp8CodeStdMin = 48.0;
// E2M1 codes ~ N(0, 2²) before rounding: ±6 (kE2M1Max) is reached only beyond ~2.7σ.
constexpr double kFp4CodeStd = 2.0;
// NVFP4 block scales: the E4M3 bytes 0x70..0x7E (128 .. 448 = kE4M3Max), uniformly.
constexpr uint8_t kNvfp4ScaleFirst = 0x70;
constexpr int kNvfp4ScaleCount = 15;
constexpr int kE8M0Bias = 127;

uint64_t nbytes_of(const TensorToWrite& t) {
  uint64_t n = dtype_size(t.dtype);
  for (auto d : t.shape) n *= uint64_t(d);
  return n;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shard_name(int64_t i, int64_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05lld-of-%05lld.safetensors", (long long)(i + 1), (long long)n);
  return buf;
}

// How random mode fills one tensor. `in` is the logical input dimension of the linear it belongs to.
enum class FillKind { kNormal, kFp8Data, kFp8Scale, kFp4Data, kMxfp4Scale, kNvfp4Scale, kNvfp4Global,
                      kNvfp4Input, kExpertIds };
struct Fill {
  FillKind kind = FillKind::kNormal;
  double mean = 0.0, std = 0.0;  // kNormal
  int64_t in = 0;                // scales: target dequantised std is 1/sqrt(in)
};
struct Planned {
  TensorToWrite t;
  Fill fill;
};

Fill fill_for(const ExpectedTensor& e, const std::map<std::string, const ExpectedTensor*>& by_name) {
  const DType dt = e.dtypes.front();
  const std::string& n = e.name;
  if (dt == DType::kI64 || dt == DType::kI32) return {FillKind::kExpertIds};
  if (dt == DType::kF8_E4M3 && ends_with(n, ".weight")) return {FillKind::kFp8Data, 0, 0, e.shape[1]};
  if ((dt == DType::kI8 || dt == DType::kU8) && ends_with(n, ".weight")) return {FillKind::kFp4Data};
  auto weight_of = [&](size_t suffix) -> const ExpectedTensor& {
    return *by_name.at(n.substr(0, n.size() - suffix) + ".weight");
  };
  if (ends_with(n, ".scale") && by_name.count(n.substr(0, n.size() - 6) + ".weight")) {
    const ExpectedTensor& w = weight_of(6);
    return w.dtypes.front() == DType::kF8_E4M3 ? Fill{FillKind::kFp8Scale, 0, 0, w.shape[1]}
                                               : Fill{FillKind::kMxfp4Scale, 0, 0, 2 * w.shape[1]};
  }
  if (ends_with(n, ".weight_scale")) return {FillKind::kNvfp4Scale};
  if (ends_with(n, ".weight_scale_2")) return {FillKind::kNvfp4Global, 0, 0, 2 * weight_of(15).shape[1]};
  if (ends_with(n, ".input_scale")) return {FillKind::kNvfp4Input};
  const int64_t cols = e.shape.empty() ? 1 : e.shape.back();
  Fill f{FillKind::kNormal, 0.0, 1.0 / std::sqrt(double(cols))};  // linears and hc fn: O(1) outputs
  if (n.find("norm") != std::string::npos) f.mean = 1.0, f.std = 0.1;
  else if (ends_with(n, "_base") || ends_with(n, "attn_sink") || n == "embed.weight") f.std = 1.0;
  else if (ends_with(n, "_scale") && n.find("hc_") != std::string::npos) f.mean = 1.0, f.std = 0.3;
  else if (ends_with(n, "ape")) f.std = 0.5;
  else if (ends_with(n, "gate.bias")) f.std = 0.1;
  return f;
}

// The official layout renamed to HF (§11.4): fused expert tensors per layer, mtp.* dropped.
std::vector<Planned> to_hf_layout(const ModelConfig& cfg, const std::vector<Planned>& official) {
  if (cfg.expert_format != ExpertFormat::kBF16)
    fail("make-skeleton: the HF layout fuses routed experts, which needs BF16 experts (config has ",
         to_string(cfg.expert_format), ")");
  std::vector<Planned> out;
  std::map<int64_t, DType> fused_layers;
  for (const auto& p : official) {
    const TensorToWrite& t = p.t;
    if (t.name.rfind("mtp.", 0) == 0) continue;
    if (t.name.find(".ffn.experts.") != std::string::npos) {
      fused_layers[std::stoll(t.name.substr(7))] = t.dtype;  // "layers.<l>."
      continue;
    }
    auto hf = official_to_hf(t.name);
    DSV4_CHECK_MSG(hf.has_value(), t.name);
    Planned h = p;
    h.t.name = *hf;
    out.push_back(std::move(h));
  }
  const int64_t E = cfg.n_routed_experts, I = cfg.moe_intermediate_size, D = cfg.hidden_size;
  auto linear = [](int64_t in) { return Fill{FillKind::kNormal, 0.0, 1.0 / std::sqrt(double(in))}; };
  for (const auto& [l, dt] : fused_layers) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    out.push_back({{p + "gate_up_proj", dt, {E, 2 * I, D}, nullptr}, linear(D)});
    out.push_back({{p + "down_proj", dt, {E, D, I}, nullptr}, linear(I)});
  }
  return out;
}

// ---- random mode ----

// splitmix64 (Steele, Lea, Flood 2014): one add and two multiply-xorshift rounds per 64 bits.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Each tensor's stream depends only on the seed and its name (FNV-1a), so values do not change
// with the shard count or the layout (official vs HF) around them.
SplitMix64 tensor_rng(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  SplitMix64 r{seed ^ h};
  r.next();
  return r;
}

// Standard normal quantile at p by bisection on Φ (table construction only, not per element).
double normal_quantile(double p) {
  double lo = -10.0, hi = 10.0;
  for (int i = 0; i < 64; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// Block-scale exponent offset 0 or 1, from one random bit of the 16: E[4^u] = 2.5, so however the
// offsets of a tensor with few blocks fall, its std is within [1/√2.5, 2/√2.5] of the expected.
int scale_offset(size_t i) { return int(i & 1); }

// Tables shared by every tensor, built once.
struct CodeTables {
  std::vector<float> normal;  // [kTableSize] N(0,1) quantiles at (i + 0.5) / kTableSize
  std::vector<uint8_t> fp4;   // [kTableSize] two E2M1 nibbles, from the low and the high byte of i
  double fp4_rms = 0;          // rms of the decoded E2M1 codes
  double offset_rms = 0;       // rms of 2^scale_offset
  double nvfp4_scale_rms = 0;  // rms of the NVFP4 block-scale values

  CodeTables() : normal(kTableSize), fp4(kTableSize) {
    for (size_t i = 0; i < kTableSize / 2; ++i) {
      normal[i] = float(normal_quantile((double(i) + 0.5) / double(kTableSize)));
      normal[kTableSize - 1 - i] = -normal[i];
    }
    uint8_t nibble[256];
    double s4 = 0;
    for (size_t b = 0; b < 256; ++b) {
      nibble[b] = f32_to_e2m1(float(normal[b * 256 + 128] * kFp4CodeStd));  // quantile (b + 0.5) / 256
      s4 += double(e2m1_to_f32(nibble[b])) * e2m1_to_f32(nibble[b]);
    }
    for (size_t i = 0; i < kTableSize; ++i) fp4[i] = uint8_t(nibble[i & 0xff] | (nibble[i >> 8] << 4));
    fp4_rms = std::sqrt(s4 / 256.0);
    double so = 0, sn = 0;
    for (size_t b = 0; b < 256; ++b) {
      so += std::ldexp(1.0, 2 * scale_offset(b));  // every offset appears equally often in 256
      const double v = e4m3_to_f32(uint8_t(kNvfp4ScaleFirst + ((b * kNvfp4ScaleCount) >> 8)));
      sn += v * v;
    }
    offset_rms = std::sqrt(so / 256.0);
    nvfp4_scale_rms = std::sqrt(sn / 256.0);
  }
};

// Writes one shard's data regions in order through a reused buffer.
class ShardFiller {
 public:
  ShardFiller(const std::filesystem::path& path, std::vector<uint64_t>& buffer,
              const std::function<void(uint64_t)>& progress)
      : path_(path), buf_(buffer), progress_(progress) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) fail(path.string(), ": cannot open for writing: ", std::strerror(errno));
  }
  ~ShardFiller() { ::close(fd_); }
  ShardFiller(const ShardFiller&) = delete;
  ShardFiller& operator=(const ShardFiller&) = delete;

  template <class T>
  T* buffer() { return reinterpret_cast<T*>(buf_.data()); }
  void seek(uint64_t off) { off_ = off; }
  void write(size_t n) {  // n bytes from the front of the buffer at the current offset
    const char* p = reinterpret_cast<const char*>(buf_.data());
    size_t left = n;
    while (left > 0) {
      const ssize_t w = ::pwrite(fd_, p, left, off_t(off_));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(path_.string(), ": write failed at offset ", off_, ": ", std::strerror(errno));
      }
      p += w, left -= size_t(w), off_ += uint64_t(w);
    }
    progress_(n);
  }

 private:
  std::filesystem::path path_;
  std::vector<uint64_t>& buf_;  // kFillChunkBytes, 8-byte aligned for every element type
  const std::function<void(uint64_t)>& progress_;
  int fd_ = -1;
  uint64_t off_ = 0;
};

// The same chunked writes into memory (RandomTensors): the chunk buffer is the destination itself.
class MemoryFiller {
 public:
  MemoryFiller(uint8_t* dst, size_t bytes) : dst_(dst), bytes_(bytes) {}
  template <class T>
  T* buffer() { return reinterpret_cast<T*>(dst_ + off_); }
  void write(size_t n) {
    DSV4_CHECK_MSG(off_ + n <= bytes_, "random tensor: ", off_ + n, " bytes written into ", bytes_);
    off_ += n;
  }
  size_t written() const { return off_; }

 private:
  uint8_t* dst_;
  size_t bytes_, off_ = 0;
};

// n elements, each table[16 random bits]; four elements per 64-bit draw.
template <class Out, class T>
void stream_lookup(Out& out, SplitMix64& rng, const T* table, uint64_t n) {
  while (n > 0) {
    const uint64_t m = std::min<uint64_t>(n, kFillChunkBytes / sizeof(T));  // a multiple of 4 unless last
    T* dst = out.template buffer<T>();
    uint64_t i = 0;
    for (; i + 4 <= m; i += 4) {
      const uint64_t r = rng.next();
      dst[i] = table[r & 0xffff];
      dst[i + 1] = table[(r >> 16) & 0xffff];
      dst[i + 2] = table[(r >> 32) & 0xffff];
      dst[i + 3] = table[r >> 48];
    }
    if (i < m)
      for (uint64_t r = rng.next(); i < m; ++i, r >>= 16) dst[i] = table[r & 0xffff];
    out.write(size_t(m * sizeof(T)));
    n -= m;
  }
}

// tid2eid [rows, k]: each row k distinct ids in [0, E) (§8.1 gathers k different experts).
template <class T, class Out>
void stream_expert_ids(Out& out, SplitMix64& rng, int64_t rows, int64_t k, int64_t n_experts) {
  DSV4_CHECK(k >= 1 && k <= n_experts);
  const int64_t rows_per_chunk = int64_t(kFillChunkBytes / sizeof(T)) / k;
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
    const int64_t nr = std::min(rows_per_chunk, rows - r0);
    T* dst = out.template buffer<T>();
    for (int64_t r = 0; r < nr; ++r) {
      T* row = dst + r * k;
      for (int64_t j = 0; j < k; ++j) {
        do row[j] = T((uint64_t(uint32_t(rng.next())) * uint64_t(n_experts)) >> 32);
        while (std::find(row, row + j, row[j]) != row + j);
      }
    }
    out.write(size_t(nr * k) * sizeof(T));
  }
}

// Base block-scale exponents e0 (blocks use e0 or e0 + 1). FP8: the largest e0 leaving the code
// std c = 1/sqrt(in) / (offset_rms·2^e0) at least kFp8CodeStdMin (so c < 2·kFp8CodeStdMin).
// MXFP4: the codes are fixed, so e0 is log2 of the target rounded to the nearest integer.
int fp8_exponent(int64_t in, const CodeTables& tb) {
  return int(std::floor(std::log2(1.0 / std::sqrt(double(in)) / (tb.offset_rms * kFp8CodeStdMin))));
}
int mxfp4_exponent(int64_t in, const CodeTables& tb) {
  return int(std::lround(std::log2(1.0 / std::sqrt(double(in)) / (tb.fp4_rms * tb.offset_rms))));
}

std::vector<uint8_t> e8m0_scale_table(int e0) {
  DSV4_CHECK(e0 > -kE8M0Bias && e0 + 1 + kE8M0Bias < kE8M0Nan);
  std::vector<uint8_t> t(kTableSize);
  for (size_t i = 0; i < kTableSize; ++i) t[i] = uint8_t(kE8M0Bias + e0 + scale_offset(i));
  return t;
}

template <class Out>
void fill_tensor(Out& out, const Planned& p, uint64_t seed, const CodeTables& tb, const ModelConfig& cfg) {
  SplitMix64 rng = tensor_rng(seed, p.t.name);
  uint64_t numel = 1;
  for (auto d : p.t.shape) numel *= uint64_t(d);
  const Fill& f = p.fill;
  switch (f.kind) {
    case FillKind::kNormal: {
      if (p.t.dtype == DType::kBF16) {
        std::vector<uint16_t> t(kTableSize);
        for (size_t i = 0; i < kTableSize; ++i) t[i] = f32_to_bf16(float(f.mean + f.std * tb.normal[i]));
        stream_lookup(out, rng, t.data(), numel);
      } else {
        DSV4_CHECK_MSG(p.t.dtype == DType::kF32, p.t.name);
        std::vector<float> t(kTableSize);
        for (size_t i = 0; i < kTableSize; ++i) t[i] = float(f.mean + f.std * tb.normal[i]);
        stream_lookup(out, rng, t.data(), numel);
      }
      return;
    }
    case FillKind::kFp8Data: {
      const double c = 1.0 / std::sqrt(double(f.in)) / (tb.offset_rms * std::ldexp(1.0, fp8_exponent(f.in, tb)));
      std::vector<uint8_t> t(kTableSize);
      for (size_t i = 0; i < kTableSize; ++i) t[i] = f32_to_e4m3(float(c * tb.normal[i]));
      stream_lookup(out, rng, t.data(), numel);
      return;
    }
    case FillKind::kFp4Data:
      stream_lookup(out, rng, tb.fp4.data(), numel);
      return;
    case FillKind::kFp8Scale:
    case FillKind::kMxfp4Scale: {
      DSV4_CHECK_MSG(dtype_size(p.t.dtype) == 1, p.t.name);  // E8M0 (or U8 for MXFP4)
      const auto t = e8m0_scale_table(f.kind == FillKind::kFp8Scale ? fp8_exponent(f.in, tb) : mxfp4_exponent(f.in, tb));
      stream_lookup(out, rng, t.data(), numel);
      return;
    }
    case FillKind::kNvfp4Scale: {
      std::vector<uint8_t> t(kTableSize);
      for (size_t i = 0; i < kTableSize; ++i) t[i] = uint8_t(kNvfp4ScaleFirst + (((i & 0xff) * kNvfp4ScaleCount) >> 8));
      stream_lookup(out, rng, t.data(), numel);
      return;
    }
    case FillKind::kNvfp4Global:
    case FillKind::kNvfp4Input: {
      // weight_scale_2 puts the dequantised std at 1/sqrt(in); input_scale (activations only,
      // never applied to weights) is ModelOpt's amax/(6·448) for an activation amax of 1.
      *out.template buffer<float>() = f.kind == FillKind::kNvfp4Global
                                 ? float(1.0 / std::sqrt(double(f.in)) / (tb.fp4_rms * tb.nvfp4_scale_rms))
                                 : 1.0f / (kE2M1Max * kE4M3Max);
      out.write(sizeof(float));
      return;
    }
    case FillKind::kExpertIds:
      if (p.t.dtype == DType::kI64)
        stream_expert_ids<int64_t>(out, rng, p.t.shape[0], p.t.shape[1], cfg.n_routed_experts);
      else
        stream_expert_ids<int32_t>(out, rng, p.t.shape[0], p.t.shape[1], cfg.n_routed_experts);
      return;
  }
}

// Every tensor of the official layout with its random-mode fill.
std::vector<Planned> planned_tensors(const ModelConfig& cfg) {
  const std::vector<ExpectedTensor> expected = expected_tensors(cfg);
  std::map<std::string, const ExpectedTensor*> by_name;
  for (const auto& e : expected) by_name[e.name] = &e;
  std::vector<Planned> tensors;
  for (const auto& e : expected) tensors.push_back({{e.name, e.dtypes.front(), e.shape, nullptr}, fill_for(e, by_name)});
  return tensors;
}

// Data offsets of every tensor in a shard we just wrote, read back from its header so the fill
// never assumes write_safetensors' layout.
std::map<std::string, uint64_t> data_offsets(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  uint8_t len[8] = {};
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  std::string text(n, ' ');
  f.read(text.data(), std::streamsize(n));
  if (!f) fail(path.string(), ": cannot read back the header just written");
  std::map<std::string, uint64_t> out;
  const nlohmann::json header = nlohmann::json::parse(text);
  for (const auto& [name, v] : header.items())
    if (name != "__metadata__") out[name] = 8 + n + v.at("data_offsets")[0].get<uint64_t>();
  return out;
}

}  // namespace

SkeletonResult write_skeleton(const std::filesystem::path& dir, const std::string& config_json,
                              const SkeletonOptions& opt) {
  const ModelConfig cfg = ModelConfig::from_json(config_json);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(dir.string(), ": cannot create: ", ec.message());
  {
    std::ofstream f(dir / "config.json", std::ios::binary);
    f << config_json;
    if (!f) fail((dir / "config.json").string(), ": write failed");
  }
  std::vector<Planned> tensors = planned_tensors(cfg);
  if (opt.hf_names) tensors = to_hf_layout(cfg, tensors);

  uint64_t total = 0;
  for (const auto& p : tensors) total += nbytes_of(p.t);
  int64_t n_shards = opt.n_shards > 0 ? opt.n_shards : int64_t((total + kSkeletonShardBytes - 1) / kSkeletonShardBytes);
  n_shards = std::max<int64_t>(1, std::min<int64_t>(n_shards, int64_t(tensors.size())));

  // Cut the layout-ordered list into n_shards runs of roughly equal bytes.
  std::vector<std::vector<Planned>> shards(static_cast<size_t>(n_shards));
  uint64_t acc = 0;
  for (const auto& p : tensors) {
    const size_t s = std::min<size_t>(size_t(n_shards - 1), size_t((acc * uint64_t(n_shards)) / std::max<uint64_t>(total, 1)));
    shards[s].push_back(p);
    acc += nbytes_of(p.t);
  }
  std::erase_if(shards, [](const auto& s) { return s.empty(); });

  std::optional<CodeTables> tables;
  std::vector<uint64_t> buffer;
  uint64_t done = 0;
  const std::function<void(uint64_t)> advance = [&](uint64_t n) {
    done += n;
    if (opt.progress) opt.progress(done, total);
  };
  if (opt.random_seed) {
    tables.emplace();
    buffer.resize(kFillChunkBytes / sizeof(uint64_t));
  }

  SkeletonResult r;
  r.n_shards = int64_t(shards.size());
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shard_name(int64_t(i), r.n_shards);
    std::vector<TensorToWrite> headers;
    for (const auto& p : shards[i]) headers.push_back(p.t);
    r.total_bytes += write_safetensors(dir / name, headers, {{"format", "pt"}});
    for (const auto& p : shards[i]) weight_map[p.t.name] = name;
    r.n_tensors += int64_t(shards[i].size());
    if (!opt.random_seed) continue;
    const auto offsets = data_offsets(dir / name);
    ShardFiller out(dir / name, buffer, advance);
    for (const auto& p : shards[i]) {
      out.seek(offsets.at(p.t.name));
      fill_tensor(out, p, *opt.random_seed, *tables, cfg);
    }
  }
  if (opt.with_index) write_index(dir, weight_map, total);
  return r;
}

std::string override_config(const std::string& config_json, const ConfigOverrides& o) {
  const ModelConfig cfg = ModelConfig::from_json(config_json);  // the original must be valid first
  const int64_t L = cfg.num_hidden_layers, nextn = cfg.num_nextn_predict_layers;
  if (o.layers < 0 || o.layers > L)
    fail("option --layers: ", o.layers, " is outside [1, ", L, "] (the config's num_hidden_layers)");
  if (o.mtp > nextn) fail("option --mtp: ", o.mtp, " is outside [0, ", nextn, "] (the config's num_nextn_predict_layers)");
  if (o.vocab < 0) fail("option --vocab: ", o.vocab, " must be positive");
  const int64_t n = o.layers > 0 ? o.layers : L, m = o.mtp >= 0 ? o.mtp : nextn;
  nlohmann::json j = nlohmann::json::parse(config_json);
  // The first n main entries, then (for lists that carry them) the first m MTP entries (§1.2).
  auto trim = [&](const char* key, bool has_mtp_tail) {
    if (!j.contains(key)) return;
    const nlohmann::json a = j.at(key);
    nlohmann::json b = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i) b.push_back(a[size_t(i)]);
    if (has_mtp_tail && int64_t(a.size()) > L)
      for (int64_t i = 0; i < m && size_t(L + i) < a.size(); ++i) b.push_back(a[size_t(L + i)]);
    j[key] = b;
  };
  trim("compress_ratios", true);
  trim("layer_types", true);
  trim("mlp_layer_types", false);
  j["num_hidden_layers"] = n;
  if (j.contains("num_hash_layers")) j["num_hash_layers"] = std::min(j["num_hash_layers"].get<int64_t>(), n);
  if (j.contains("num_nextn_predict_layers") || m != nextn) j["num_nextn_predict_layers"] = m;
  if (o.vocab > 0) j["vocab_size"] = o.vocab;
  const std::string out = j.dump(2);
  ModelConfig::from_json(out);  // e.g. bos/eos ids beyond a smaller vocab: the field is named
  return out;
}

struct RandomTensors::Tables {
  CodeTables codes;
  std::map<std::string, Planned> by_name;
};

RandomTensors::RandomTensors(const ModelConfig& cfg, uint64_t seed)
    : cfg_(std::make_unique<ModelConfig>(cfg)), seed_(seed), tables_(std::make_unique<Tables>()) {
  for (Planned& p : planned_tensors(cfg)) {
    const std::string name = p.t.name;
    tables_->by_name.emplace(name, std::move(p));
  }
}

RandomTensors::~RandomTensors() = default;

uint64_t RandomTensors::bytes(const std::string& name) const {
  auto it = tables_->by_name.find(name);
  if (it == tables_->by_name.end()) fail("random weights: the official layout has no tensor '", name, "'");
  return nbytes_of(it->second.t);
}

void RandomTensors::fill(const std::string& name, uint8_t* dst, uint64_t n_bytes) const {
  const uint64_t want = bytes(name);
  if (n_bytes != want) fail("random weights: tensor '", name, "' has ", want, " bytes, the destination ", n_bytes);
  MemoryFiller out(dst, size_t(n_bytes));
  fill_tensor(out, tables_->by_name.at(name), seed_, tables_->codes, *cfg_);
  DSV4_CHECK(out.written() == n_bytes);
}

}  // namespace dsv4
