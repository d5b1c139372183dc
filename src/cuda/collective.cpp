// The two Collectives of collective.h: the loopback (one kernel over R virtual ranks on one GPU) and
// NCCL (one communicator per GPU, one process). The reduction kernel itself is kernels/loopback_reduce.cu.
#include "cuda/collective.h"

#include <nccl.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "cuda/cuda_check.h"
#include "util/error.h"

namespace dsv4::cuda {

namespace {

// What both implementations ask of all_reduce_sum's arguments: one buffer and one stream per rank,
// and rank buffers that do not overlap (an overlap would make the in-place sum depend on timing).
template <typename T>
void check_all_reduce_args(std::string_view who, int ranks, std::span<T* const> bufs, size_t count,
                           std::span<const cudaStream_t> streams) {
  if (int(bufs.size()) != ranks || int(streams.size()) != ranks)
    fail(who, " all_reduce_sum: ", bufs.size(), " buffers and ", streams.size(), " streams for ", ranks, " ranks");
  if (count == 0) return;
  for (int r = 0; r < ranks; ++r)
    if (!bufs[size_t(r)]) fail(who, " all_reduce_sum: rank ", r, "'s buffer is null");
  const uintptr_t bytes = count * sizeof(T);
  for (int r = 0; r < ranks; ++r)
    for (int s = r + 1; s < ranks; ++s) {
      const auto a = reinterpret_cast<uintptr_t>(bufs[size_t(r)]), b = reinterpret_cast<uintptr_t>(bufs[size_t(s)]);
      if (a < b + bytes && b < a + bytes)
        fail(who, " all_reduce_sum: the buffers of ranks ", r, " and ", s, " overlap (", count, " elements each)");
    }
}

// ---- loopback ----

class LoopbackCollective final : public Collective {
 public:
  explicit LoopbackCollective(int ranks) : ranks_(ranks) {}
  int ranks() const override { return ranks_; }
  std::string name() const override { return "loopback"; }

  void all_reduce_sum(std::span<__nv_bfloat16* const> bufs, size_t count,
                      std::span<const cudaStream_t> streams) override {
    reduce(bufs, count, streams);
  }
  void all_reduce_sum(std::span<float* const> bufs, size_t count, std::span<const cudaStream_t> streams) override {
    reduce(bufs, count, streams);
  }

 private:
  template <typename T>
  void reduce(std::span<T* const> bufs, size_t count, std::span<const cudaStream_t> streams) {
    check_all_reduce_args("loopback", ranks_, bufs, count, streams);
    // One kernel serves every rank, so the ranks must share the stream it runs on; distinct
    // streams would need events between them, which is what NCCL's ranks do across GPUs.
    for (int r = 1; r < ranks_; ++r)
      if (streams[size_t(r)] != streams[0])
        fail("loopback all_reduce_sum: rank ", r,
             "'s stream differs from rank 0's (the loopback's ranks share one stream)");
    if (count == 0) return;
    LoopbackReduceParams<T> p;
    for (int r = 0; r < ranks_; ++r) p.in[r] = p.out[r] = bufs[size_t(r)];
    p.ranks = ranks_;
    p.count = count;
    launch_loopback_reduce(p, streams[0]);
  }

  int ranks_;
};

// ---- NCCL ----

// A failed NCCL call: NCCL's string for the result, and its last error message when it has one.
void nccl_check(ncclResult_t result, const char* call) {
  if (result == ncclSuccess) return;
  const char* detail = ncclGetLastError(nullptr);
  throw InternalError(cat(call, " -> ", ncclGetErrorString(result),
                          detail && *detail ? cat(" (", detail, ")") : std::string()));
}
#define DSV4_NCCL_CHECK(call) nccl_check((call), #call)

class NcclCollective final : public Collective {
 public:
  explicit NcclCollective(std::vector<ncclComm_t> comms) : comms_(std::move(comms)) {}
  ~NcclCollective() override {
    // Each communicator of an ncclCommInitAll clique is destroyed in turn from this one thread, as
    // NCCL's single-process example does; a failure here cannot be reported, only ignored.
    for (ncclComm_t c : comms_) ncclCommDestroy(c);
  }
  NcclCollective(const NcclCollective&) = delete;
  NcclCollective& operator=(const NcclCollective&) = delete;

  int ranks() const override { return int(comms_.size()); }
  std::string name() const override { return "nccl"; }

  void all_reduce_sum(std::span<__nv_bfloat16* const> bufs, size_t count,
                      std::span<const cudaStream_t> streams) override {
    reduce(bufs, count, streams, ncclBfloat16);
  }
  void all_reduce_sum(std::span<float* const> bufs, size_t count, std::span<const cudaStream_t> streams) override {
    reduce(bufs, count, streams, ncclFloat32);
  }

 private:
  template <typename T>
  void reduce(std::span<T* const> bufs, size_t count, std::span<const cudaStream_t> streams, ncclDataType_t type) {
    check_all_reduce_args("nccl", ranks(), bufs, count, streams);
    if (count == 0) return;
    // One thread drives every GPU: without the group, the first rank's call could wait for ranks
    // that are not issued yet. The group is closed even when a call in it fails.
    DSV4_NCCL_CHECK(ncclGroupStart());
    ncclResult_t issued = ncclSuccess;
    for (size_t r = 0; r < comms_.size() && issued == ncclSuccess; ++r)
      issued = ncclAllReduce(bufs[r], bufs[r], count, type, ncclSum, comms_[r], streams[r]);
    const ncclResult_t ended = ncclGroupEnd();
    nccl_check(issued, type == ncclBfloat16 ? "ncclAllReduce(ncclBfloat16, ncclSum)"
                                            : "ncclAllReduce(ncclFloat32, ncclSum)");
    nccl_check(ended, "ncclGroupEnd (after ncclAllReduce)");
  }

  std::vector<ncclComm_t> comms_;  // [ranks], rank r on devices[r]
};

}  // namespace

std::unique_ptr<Collective> make_loopback_collective(int ranks) {
  if (ranks < 1 || ranks > kMaxLoopbackRanks)
    fail("loopback collective: ", ranks, " ranks (1 to ", kMaxLoopbackRanks, ")");
  return std::make_unique<LoopbackCollective>(ranks);
}

std::unique_ptr<Collective> make_nccl_collective(std::span<const int> devices) {
  if (devices.empty()) fail("NCCL collective: no devices");
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i] < 0) fail("NCCL collective: device ", devices[i], " (rank ", i, ") is negative");
    for (size_t j = 0; j < i; ++j)
      if (devices[j] == devices[i])
        fail("NCCL collective: device ", devices[i], " is given for ranks ", j, " and ", i,
             " (NCCL puts one rank of a communicator on a GPU; virtual ranks on one GPU are the loopback's)");
  }
  int n_devices = 0;
  if (cudaGetDeviceCount(&n_devices) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error, as device_available() does
    n_devices = 0;
  }
  for (size_t i = 0; i < devices.size(); ++i)
    if (devices[i] >= n_devices)
      fail("NCCL collective: device ", devices[i], " (rank ", i, ") does not exist (", n_devices, " CUDA devices)");
  // NVLink multicast (NVLS) stays off: on shared hosts a program using it can take the GPUs out of
  // service. Without overwrite, so that an explicit setting of the environment wins.
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  int current = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&current));  // ncclCommInitAll may leave another device current
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  DSV4_NCCL_CHECK(ncclCommInitAll(comms.data(), int(devices.size()), devices.data()));
  auto collective = std::make_unique<NcclCollective>(std::move(comms));
  DSV4_CUDA_CHECK(cudaSetDevice(current));
  return collective;
}

}  // namespace dsv4::cuda
