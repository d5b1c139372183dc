// The all-reduce of expert and tensor parallelism (src/cuda/collective.h) against a scalar reference,
// BF16 and FP32: the loopback over R virtual ranks bit for bit, eager and replayed from a graph; NCCL
// on the GPUs there are; and misuse refused (those checks need no device and run everywhere).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/collective.h"
#include "cuda/cuda_check.h"
#include "op_parity.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

// The host side of an element type: its bit pattern, its conversions, its unit roundoff.
template <typename T>
struct Elem;
template <>
struct Elem<__nv_bfloat16> {
  using Bits = uint16_t;
  static constexpr const char* kName = "bf16";
  static constexpr double kUnit = kBf16HalfUlp;  // u = 2^-8
  static float to_f32(Bits b) { return bf16_to_f32(b); }
  static Bits from_f32(float f) { return f32_to_bf16(f); }  // round to nearest even
  static bool finite_nonzero(Bits b) { return (b & 0x7fff) != 0 && (b & 0x7f80) != 0x7f80; }
  static constexpr Bits kSign = 0x8000;
};
template <>
struct Elem<float> {
  using Bits = uint32_t;
  static constexpr const char* kName = "f32";
  static constexpr double kUnit = kF32Unit;  // u = 2^-24
  static float to_f32(Bits b) { return bits_to_f32(b); }
  static Bits from_f32(float f) { return f32_to_bits(f); }
  static bool finite_nonzero(Bits b) { return (b & 0x7fffffffu) != 0 && (b & 0x7f800000u) != 0x7f800000u; }
  static constexpr Bits kSign = 0x80000000u;
};
template <typename T>
using Values = std::vector<typename Elem<T>::Bits>;  // one rank's values as bit patterns

// The loopback's contract as a scalar loop: FP32 sum in rank order starting from rank 0's value
// (not from +0, which would turn a lone −0 into +0), one rounding to T.
template <typename T>
Values<T> reference_sum(const std::vector<Values<T>>& inputs) {
  Values<T> out(inputs[0].size());
  for (size_t i = 0; i < out.size(); ++i) {
    float s = Elem<T>::to_f32(inputs[0][i]);
    for (size_t r = 1; r < inputs.size(); ++r) s += Elem<T>::to_f32(inputs[r][i]);
    out[i] = Elem<T>::from_f32(s);
  }
  return out;
}

// Bit-for-bit equality with the first differing element named (a whole-vector EXPECT_EQ of a
// million elements says little).
template <typename T>
void expect_bits_equal(const std::string& what, const Values<T>& got, const Values<T>& want) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t n_bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && n_bad++ == 0) first = i;
  EXPECT_EQ(n_bad, 0u) << what << ": " << n_bad << " of " << got.size() << " elements differ; first at " << first
                       << ": got 0x" << std::hex << got[first] << " (" << Elem<T>::to_f32(got[first])
                       << "), want 0x" << want[first] << " (" << Elem<T>::to_f32(want[first]) << ")";
}

// A stream that is destroyed when the test leaves, also through a failed assertion.
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

// One rank's buffer inside an allocation with guard elements on both sides: `lead` before it
// (1 element misaligns it for the 16-byte path) and kGuard after it. The guards hold random values
// that no reduce may touch.
template <typename T>
struct RankBuffer {
  static constexpr size_t kGuard = 16 / sizeof(T);  // one 16-byte vector past the end
  DeviceBuffer<typename Elem<T>::Bits> mem;
  Values<T> guard_values;
  size_t lead = 0, count = 0;
  T* data() { return reinterpret_cast<T*>(mem.get() + lead); }
  void upload(const Values<T>& v) {
    Values<T> all = guard_values;
    std::copy(v.begin(), v.end(), all.begin() + std::ptrdiff_t(lead));
    mem.upload(all);
  }
  Values<T> download() const {
    const Values<T> all = mem.download();
    return Values<T>(all.begin() + std::ptrdiff_t(lead), all.begin() + std::ptrdiff_t(lead + count));
  }
  void expect_guards_intact(const std::string& what) const {
    const Values<T> all = mem.download();
    for (size_t i = 0; i < all.size(); ++i)
      if ((i < lead || i >= lead + count) && all[i] != guard_values[i]) {
        ADD_FAILURE() << what << ": guard element " << i << " was written";
        return;
      }
  }
};

class CollectiveTest : public CudaOpTest {
 protected:
  // Non-zero values, most of magnitude 2^-4..2^5 (sums cancel and round), a quarter spread over
  // 2^-40..2^41 (sums where one rank's value is below another's last bit). Sums of 8 stay finite.
  template <typename T>
  Values<T> random_values(size_t n) {
    Values<T> v(n);
    for (auto& b : v) {
      const int e = uniform_int(0, 3) == 0 ? uniform_int(-40, 40) : uniform_int(-4, 4);
      b = Elem<T>::from_f32(std::ldexp(uniform(1.0f, 2.0f), e) * (uniform_int(0, 1) ? -1.0f : 1.0f));
    }
    return v;
  }
  template <typename T>
  std::vector<Values<T>> random_inputs(int ranks, size_t n) {
    std::vector<Values<T>> in;
    for (int r = 0; r < ranks; ++r) in.push_back(random_values<T>(n));
    return in;
  }
  // Per element one rank, at random, holds a non-zero finite value of any bit pattern (subnormals
  // and the largest values included); every other rank holds +0 or −0 at random. The sum is that
  // value exactly, whatever the order or precision of the additions.
  template <typename T>
  std::vector<Values<T>> one_nonzero_per_element(int ranks, size_t n, Values<T>& expected) {
    using Bits = typename Elem<T>::Bits;
    std::vector<Values<T>> in(static_cast<size_t>(ranks), Values<T>(n));
    expected.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      Bits x;
      do x = Bits(rng());
      while (!Elem<T>::finite_nonzero(x));
      const int owner = uniform_int(0, ranks - 1);
      for (int r = 0; r < ranks; ++r)
        in[size_t(r)][i] = r == owner ? x : uniform_int(0, 1) ? Elem<T>::kSign : Bits(0);
      expected[i] = x;
    }
    return in;
  }
  template <typename T>
  std::vector<RankBuffer<T>> rank_buffers(int ranks, size_t count, bool misaligned) {
    std::vector<RankBuffer<T>> bufs(static_cast<size_t>(ranks));
    for (int r = 0; r < ranks; ++r) {
      RankBuffer<T>& b = bufs[size_t(r)];
      b.lead = misaligned && r % 2 == 1 ? 1 : 0;  // odd ranks off the 16-byte grid
      b.count = count;
      b.mem = DeviceBuffer<typename Elem<T>::Bits>(b.lead + count + RankBuffer<T>::kGuard);
      b.guard_values = random_values<T>(b.mem.size());
    }
    return bufs;
  }
  template <typename T>
  static void upload(std::vector<RankBuffer<T>>& bufs, const std::vector<Values<T>>& in) {
    for (size_t r = 0; r < bufs.size(); ++r) bufs[r].upload(in[r]);
  }
  template <typename T>
  static std::vector<T*> pointers(std::vector<RankBuffer<T>>& bufs) {
    std::vector<T*> p;
    for (auto& b : bufs) p.push_back(b.data());
    return p;
  }
  // Every rank's buffer equals `want` bit for bit; the guards around it are untouched.
  template <typename T>
  static void expect_all_ranks(const std::string& what, std::vector<RankBuffer<T>>& bufs, const Values<T>& want) {
    for (size_t r = 0; r < bufs.size(); ++r) {
      expect_bits_equal<T>(cat(what, " rank ", r), bufs[r].download(), want);
      bufs[r].expect_guards_intact(cat(what, " rank ", r));
    }
  }

  // One loopback all-reduce of random inputs against the scalar reference.
  template <typename T>
  void check_loopback(int ranks, size_t count, bool misaligned) {
    auto coll = make_loopback_collective(ranks);
    EXPECT_EQ(coll->ranks(), ranks);
    EXPECT_EQ(coll->name(), "loopback");
    Stream stream;
    auto bufs = rank_buffers<T>(ranks, count, misaligned);
    const auto in = random_inputs<T>(ranks, count);
    upload(bufs, in);
    const std::vector<cudaStream_t> streams(static_cast<size_t>(ranks), stream.s);
    coll->all_reduce_sum(pointers(bufs), count, streams);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    expect_all_ranks(cat("loopback ", Elem<T>::kName, " R=", ranks, " count=", count), bufs, reference_sum<T>(in));
  }
  // What the MoE relies on: an element that only one rank computed comes out exactly, whatever the
  // signs of the other ranks' zeros.
  template <typename T>
  void check_loopback_one_nonzero(int ranks) {
    const size_t count = 4096 + 5;
    auto coll = make_loopback_collective(ranks);
    Stream stream;
    auto bufs = rank_buffers<T>(ranks, count, false);
    Values<T> expected;
    upload(bufs, one_nonzero_per_element<T>(ranks, count, expected));
    const std::vector<cudaStream_t> streams(static_cast<size_t>(ranks), stream.s);
    coll->all_reduce_sum(pointers(bufs), count, streams);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    expect_all_ranks(cat("loopback ", Elem<T>::kName, " one nonzero R=", ranks), bufs, expected);
  }
  // One rank on device 0: the all-reduce of one buffer is that buffer, for random values and for a
  // lone value of every finite bit pattern.
  template <typename T>
  void check_nccl_one_rank(Collective& coll) {
    Stream stream;
    const size_t count = 4096 + 3;
    auto bufs = rank_buffers<T>(1, count, false);
    const std::vector<cudaStream_t> streams{stream.s};
    const auto in = random_inputs<T>(1, count);
    upload(bufs, in);
    coll.all_reduce_sum(pointers(bufs), count, streams);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    expect_all_ranks(cat("nccl 1 rank ", Elem<T>::kName), bufs, in[0]);
    Values<T> expected;
    upload(bufs, one_nonzero_per_element<T>(1, count, expected));
    coll.all_reduce_sum(pointers(bufs), count, streams);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    expect_all_ranks(cat("nccl 1 rank ", Elem<T>::kName, ", every bit pattern"), bufs, expected);
  }
};

// ---- loopback: every rank = the scalar reference, bit for bit ----

struct LoopbackCase {
  int ranks;
  size_t count;
  bool misaligned;  // odd ranks' buffers one element off the 16-byte grid: the one-element path
  bool fp32;
};

class CollectiveLoopbackTest : public CollectiveTest, public ::testing::WithParamInterface<LoopbackCase> {};

TEST_P(CollectiveLoopbackTest, EqualsScalarReference) {
  const auto& c = GetParam();
  if (c.fp32)
    check_loopback<float>(c.ranks, c.count, c.misaligned);
  else
    check_loopback<__nv_bfloat16>(c.ranks, c.count, c.misaligned);
}

// BF16: every rank count with counts of a single element, less than one vector, a run of vectors
// plus a 3-element tail, and a million (many blocks, grid-stride); from two ranks on, also with the
// odd ranks misaligned (the one-element path for the same counts). FP32 (4 per vector): the same
// without the million, which two aligned rows keep.
std::vector<LoopbackCase> loopback_cases() {
  std::vector<LoopbackCase> cases;
  const size_t kMillion = size_t(1) << 20;
  for (bool fp32 : {false, true})
    for (int ranks : {1, 2, 3, 4, 8})
      for (size_t count : {size_t(1), size_t(7), size_t(4096 + 3), kMillion})
        for (bool misaligned : {false, true}) {
          if (ranks == 1 && misaligned) continue;  // rank 0 is never shifted
          if (fp32 && count == kMillion && (misaligned || (ranks != 2 && ranks != 8))) continue;
          cases.push_back({ranks, count, misaligned, fp32});
        }
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Shapes, CollectiveLoopbackTest, ::testing::ValuesIn(loopback_cases()),
                         [](const ::testing::TestParamInfo<LoopbackCase>& i) {
                           return cat(i.param.fp32 ? "f32" : "bf16", "_R", i.param.ranks, "_n", i.param.count,
                                      i.param.misaligned ? "_misaligned" : "");
                         });

// Captured once (global mode: a host sync or allocation inside would fail the capture), then
// replayed on new inputs twice: the graph holds the buffer pointers, not the data of the capture.
TEST_F(CollectiveTest, LoopbackGraphReplaysOnNewInputs) {
  const int R = 4;
  const size_t count = 3 * 4096 + 5;
  auto coll = make_loopback_collective(R);
  Stream stream;
  auto bufs = rank_buffers<__nv_bfloat16>(R, count, false);
  upload(bufs, random_inputs<__nv_bfloat16>(R, count));
  const std::vector<cudaStream_t> streams(R, stream.s);
  cudaGraph_t graph = nullptr;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  coll->all_reduce_sum(pointers(bufs), count, streams);
  DSV4_CUDA_CHECK(cudaStreamEndCapture(stream.s, &graph));
  cudaGraphExec_t exec = nullptr;
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    const auto in = random_inputs<__nv_bfloat16>(R, count);
    upload(bufs, in);
    DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream.s));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    expect_all_ranks(cat("loopback graph replay ", replay), bufs, reference_sum<__nv_bfloat16>(in));
  }
  DSV4_CUDA_CHECK(cudaGraphExecDestroy(exec));
  DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
}

TEST_F(CollectiveTest, LoopbackOneNonzeroRankIsExact) {
  for (int R : {2, 4, 8}) {
    check_loopback_one_nonzero<__nv_bfloat16>(R);
    check_loopback_one_nonzero<float>(R);
  }
}

// ---- NCCL ----

TEST_F(CollectiveTest, NcclOneRankEager) {
  const int device = 0;
  auto coll = make_nccl_collective(std::span<const int>(&device, 1));
  EXPECT_EQ(coll->ranks(), 1);
  EXPECT_EQ(coll->name(), "nccl");
  EXPECT_NE(std::getenv("NCCL_NVLS_ENABLE"), nullptr) << "NVLink multicast was not switched off";
  check_nccl_one_rank<__nv_bfloat16>(*coll);
  check_nccl_one_rank<float>(*coll);
}

// A fresh communicator whose first all-reduces (a BF16 and an FP32 buffer) are captured (global
// mode, as cuda_forward.cpp captures), replayed twice on new inputs.
TEST_F(CollectiveTest, NcclOneRankCaptured) {
  const int device = 0;
  auto coll = make_nccl_collective(std::span<const int>(&device, 1));
  Stream stream;
  const size_t count = 1 << 20;
  auto bf16 = rank_buffers<__nv_bfloat16>(1, count, false);
  auto f32 = rank_buffers<float>(1, count + 1, false);
  const std::vector<cudaStream_t> streams{stream.s};
  cudaGraph_t graph = nullptr;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  coll->all_reduce_sum(pointers(bf16), count, streams);
  coll->all_reduce_sum(pointers(f32), count + 1, streams);
  DSV4_CUDA_CHECK(cudaStreamEndCapture(stream.s, &graph));
  cudaGraphExec_t exec = nullptr;
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    const auto in16 = random_inputs<__nv_bfloat16>(1, count);
    const auto in32 = random_inputs<float>(1, count + 1);
    upload(bf16, in16);
    upload(f32, in32);
    DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream.s));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    expect_all_ranks(cat("nccl 1 rank bf16 graph replay ", replay), bf16, in16[0]);
    expect_all_ranks(cat("nccl 1 rank f32 graph replay ", replay), f32, in32[0]);
  }
  DSV4_CUDA_CHECK(cudaGraphExecDestroy(exec));
  DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
}

// Every GPU of the host as one rank each (needs two or more): buffers and a stream per device.
class CollectiveNcclDevicesTest : public CollectiveTest {
 protected:
  static constexpr size_t kCount = (size_t(1) << 20) + 3;
  void SetUp() override {
    CollectiveTest::SetUp();
    if (IsSkipped()) return;
    int n_devices = 0;
    DSV4_CUDA_CHECK(cudaGetDeviceCount(&n_devices));
    if (n_devices < 2) GTEST_SKIP() << "one CUDA device: NCCL across GPUs needs two";
    R = std::min(n_devices, kMaxLoopbackRanks);
    std::vector<int> devices;
    for (int r = 0; r < R; ++r) devices.push_back(r);
    coll = make_nccl_collective(devices);
    ASSERT_EQ(coll->ranks(), R);
    for (int r = 0; r < R; ++r) {
      DSV4_CUDA_CHECK(cudaSetDevice(r));
      bf16.push_back(std::move(rank_buffers<__nv_bfloat16>(1, kCount, false)[0]));
      f32.push_back(std::move(rank_buffers<float>(1, kCount, false)[0]));
      owned_streams.push_back(std::make_unique<Stream>());
      streams.push_back(owned_streams.back()->s);
    }
    DSV4_CUDA_CHECK(cudaSetDevice(0));
  }
  void TearDown() override { cudaSetDevice(0); }
  void sync_all() {
    for (cudaStream_t st : streams) DSV4_CUDA_CHECK(cudaStreamSynchronize(st));
  }

  // NCCL adds pairs in T in its own order (ring or tree), so its BF16 sum is not the loopback's bit
  // for bit: every rank must hold the same bits, within R−1 roundings to T of the exact sum — each
  // at most u of a partial sum, and a partial sum is at most Σ|x| grown by the earlier roundings:
  // ((1+u)^(R−1) − 1)·Σ|x|.
  template <typename T>
  void expect_sum(const std::string& what, std::vector<RankBuffer<T>>& bufs, const std::vector<Values<T>>& in) {
    const Values<T> got0 = bufs[0].download();
    for (int r = 1; r < R; ++r)
      expect_bits_equal<T>(cat(what, ": rank ", r, " vs rank 0"), bufs[size_t(r)].download(), got0);
    const double growth = std::pow(1 + Elem<T>::kUnit, R - 1) - 1;
    std::vector<float> got(kCount);
    std::vector<double> ref(kCount), budget(kCount);
    for (size_t i = 0; i < kCount; ++i) {
      double sum = 0, sum_abs = 0;
      for (int r = 0; r < R; ++r) {
        const double x = Elem<T>::to_f32(in[size_t(r)][i]);
        sum += x;
        sum_abs += std::fabs(x);
      }
      got[i] = Elem<T>::to_f32(got0[i]);
      ref[i] = sum;
      budget[i] = (growth + R * 0x1p-53) * sum_abs;  // plus the double reference's own rounding
    }
    expect_parity(what, got, ref, budget);
    for (int r = 0; r < R; ++r) bufs[size_t(r)].expect_guards_intact(cat(what, " rank ", r));
  }
  template <typename T>
  void check_eager(std::vector<RankBuffer<T>>& bufs) {
    const auto in = random_inputs<T>(R, kCount);
    upload(bufs, in);
    coll->all_reduce_sum(pointers(bufs), kCount, streams);
    sync_all();
    expect_sum(cat("nccl ", Elem<T>::kName, " all-reduce over ", R, " GPUs"), bufs, in);
    Values<T> expected;
    upload(bufs, one_nonzero_per_element<T>(R, kCount, expected));
    coll->all_reduce_sum(pointers(bufs), kCount, streams);
    sync_all();
    expect_all_ranks(cat("nccl ", Elem<T>::kName, " ", R, " GPUs, one nonzero rank"), bufs, expected);
  }

  int R = 0;
  std::unique_ptr<Collective> coll;
  std::vector<RankBuffer<__nv_bfloat16>> bf16;
  std::vector<RankBuffer<float>> f32;
  std::vector<std::unique_ptr<Stream>> owned_streams;
  std::vector<cudaStream_t> streams;
};

// Eager: the sum within its budget on every rank alike; one non-zero rank per element exactly.
TEST_F(CollectiveNcclDevicesTest, Eager) {
  check_eager(bf16);
  check_eager(f32);
}

// Captured as one multi-GPU graph, the way a layer pass over several GPUs would be: stream 0 forks
// to the other ranks' streams through events and joins them back; the fresh communicator's first
// all-reduce is the captured one. Replayed twice on new inputs. NCCL's guide warns that one thread
// driving several GPUs' graphs may deadlock in cudaGraphLaunch: a hang here is that.
TEST_F(CollectiveNcclDevicesTest, CapturedAsOneGraph) {
  std::vector<cudaEvent_t> fork(static_cast<size_t>(R)), join(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    DSV4_CUDA_CHECK(cudaSetDevice(r));  // an event is recorded on a stream of its own device
    DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&fork[size_t(r)], cudaEventDisableTiming));
    DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&join[size_t(r)], cudaEventDisableTiming));
  }
  DSV4_CUDA_CHECK(cudaSetDevice(0));
  cudaGraph_t graph = nullptr;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(streams[0], cudaStreamCaptureModeGlobal));
  DSV4_CUDA_CHECK(cudaEventRecord(fork[0], streams[0]));
  for (int r = 1; r < R; ++r) DSV4_CUDA_CHECK(cudaStreamWaitEvent(streams[size_t(r)], fork[0], 0));
  coll->all_reduce_sum(pointers(bf16), kCount, streams);
  for (int r = 1; r < R; ++r) {
    DSV4_CUDA_CHECK(cudaEventRecord(join[size_t(r)], streams[size_t(r)]));
    DSV4_CUDA_CHECK(cudaStreamWaitEvent(streams[0], join[size_t(r)], 0));
  }
  DSV4_CUDA_CHECK(cudaStreamEndCapture(streams[0], &graph));
  cudaGraphExec_t exec = nullptr;
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    const auto in = random_inputs<__nv_bfloat16>(R, kCount);
    upload(bf16, in);
    DSV4_CUDA_CHECK(cudaGraphLaunch(exec, streams[0]));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(streams[0]));
    expect_sum(cat("nccl ", R, " GPUs, graph replay ", replay), bf16, in);
  }
  DSV4_CUDA_CHECK(cudaGraphExecDestroy(exec));
  DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
  for (int r = 0; r < R; ++r) {
    cudaEventDestroy(fork[size_t(r)]);
    cudaEventDestroy(join[size_t(r)]);
  }
}

// ---- misuse (no device needed: every check comes before any launch or NCCL call) ----

void expect_error(const std::function<void()>& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no dsv4::Error; expected one mentioning \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(CollectiveMisuse, LoopbackRankCount) {
  expect_error([] { make_loopback_collective(0); }, "0 ranks");
  expect_error([] { make_loopback_collective(kMaxLoopbackRanks + 1); }, "9 ranks");
  expect_error([] { make_loopback_collective(-1); }, "-1 ranks");
  EXPECT_EQ(make_loopback_collective(1)->ranks(), 1);
  EXPECT_EQ(make_loopback_collective(kMaxLoopbackRanks)->ranks(), kMaxLoopbackRanks);
}

// Host arrays stand in for rank buffers: the arguments are refused before anything is launched
// (a launch here would fail differently, with InternalError, and so fail the test).
TEST(CollectiveMisuse, LoopbackArguments) {
  auto coll = make_loopback_collective(2);
  __nv_bfloat16 a[16], b[16];
  float fa[16], fb[16];
  using Bf16Ptrs = std::vector<__nv_bfloat16*>;
  using Streams = std::vector<cudaStream_t>;
  const Streams same{nullptr, nullptr}, different{cudaStreamLegacy, cudaStreamPerThread};
  expect_error([&] { coll->all_reduce_sum(Bf16Ptrs{a, b}, 16, different); }, "stream differs");
  expect_error([&] { coll->all_reduce_sum(std::vector<float*>{fa, fb}, 16, different); }, "stream differs");
  expect_error([&] { coll->all_reduce_sum(Bf16Ptrs{a}, 16, same); }, "1 buffers and 2 streams for 2 ranks");
  expect_error([&] { coll->all_reduce_sum(Bf16Ptrs{a, b}, 16, Streams{nullptr}); }, "2 buffers and 1 streams");
  expect_error([&] { coll->all_reduce_sum(Bf16Ptrs{a, a + 8}, 9, same); }, "overlap");
  expect_error([&] { coll->all_reduce_sum(std::vector<float*>{fa, fa + 8}, 9, same); }, "overlap");
  expect_error([&] { coll->all_reduce_sum(Bf16Ptrs{a, nullptr}, 16, same); }, "null");
  // An empty reduce is accepted and launches nothing.
  coll->all_reduce_sum(Bf16Ptrs{a, a + 8}, 0, same);
}

TEST(CollectiveMisuse, NcclDevices) {
  expect_error([] { make_nccl_collective(std::vector<int>{0, 0}); }, "device 0 is given for ranks 0 and 1");
  expect_error([] { make_nccl_collective(std::vector<int>{1, 0, 1}); }, "device 1 is given for ranks 0 and 2");
  expect_error([] { make_nccl_collective(std::vector<int>{}); }, "no devices");
  expect_error([] { make_nccl_collective(std::vector<int>{-1}); }, "negative");
  expect_error([] { make_nccl_collective(std::vector<int>{1000}); }, "device 1000 (rank 0) does not exist");
}

}  // namespace
}  // namespace dsv4::cuda::test
