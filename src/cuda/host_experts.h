// The host tier (issue 17, docs/parallel.md "Host tier"): the routed experts [first, E) of every
// MoE layer kept in pinned host memory in their checkpoint format, and their share of each MoE
// sub-layer, inside the step. The GPU's experts leave +0 at the host's picks (moe_step.h, pick
// order); this fills those picks before the combine. A pass of many rows (prefill) touches nearly
// all of them with many rows each: their weights cross the bus once and the GPU's grouped GEMM runs
// them (packed FP4 experts; other formats stay on the host). A pass of few rows (decode) touches
// few host experts and a row or two of each, and two ways to run them compete, both bound by host
// memory: the host's cores compute them where they lie, or the GPU copies the picked ones over the
// bus and runs them. Which is faster depends on the host: on one H100 host the cores ran batch 1
// 1.3x faster than the bus, whose kernel reads of host memory reached 33 GB/s there against 51 GB/s
// on another host (bench/results/2026-12-06-h100-host-tier-paths.md). Host memory fed both at
// once there, so the tier can split them: a decode pass's picks of experts [first, cores_first)
// go over the bus, those of [cores_first, E) to the cores, at the same time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/device_model.h"
#include "cuda/moe_step.h"
#include "model/config.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace dsv4 {
class RandomTensors;
}

namespace dsv4::cuda {

struct StepContext;

// What the host tier has computed since it was made (dsv4 bench reads the difference over a run).
struct HostExpertStats {
  double seconds = 0;     // wall time inside the host computations
  int64_t calls = 0;      // MoE sub-layers that ran on the host's cores
  int64_t picks = 0;      // (row, pick) pairs the host's cores computed
  int64_t streamed = 0;   // MoE sub-layers whose host experts were copied to the GPU (eager passes)
};

// Passes of at least this many rows copy the host's experts to the GPU instead of computing on the
// host. An estimate, not a measured crossover: for Flash (256 experts, k = 6, 13.4 MB each) a pass
// of 16 rows touches about a third of the host's experts, a row each, which the host's cores read
// at their FP4 GEMV rate (28–39 GB/s with 16 threads on the H200 host, `dsv4 inspect`) in less
// time than the bus takes to carry all of them; at 32 rows most are touched with several rows
// each, and the host's GEMV slows with every row while the copy does not.
constexpr int kHostStreamRows = 32;

// How many of a layer's `count` host experts a decode pass runs on the host's cores when they take
// `cores_share` of them (0 <= cores_share <= 1): all at 1, none at 0, and in between at least one
// on each side.
int core_experts_for(int count, double cores_share);

class HostExperts {
 public:
  // Copies (with `synthetic`: generates) experts [first, E) of the main layers, and of the MTP
  // block's layer when `mtp` and the checkpoint has one, into pinned host memory, with hand-off
  // buffers for passes of up to `max_rows` rows. `threads` <= 0: every hardware thread.
  // `core_experts` of them, the highest ids, run on the host's cores in a decode pass, the rest
  // over the bus (core_experts_for); the bus needs packed FP4 experts (an error names the format
  // otherwise).
  HostExperts(const ModelConfig& cfg, const ModelWeights& w, int first, bool mtp, const RandomTensors* synthetic,
              int max_rows, int threads, int core_experts, bool progress);
  ~HostExperts();
  HostExperts(const HostExperts&) = delete;
  HostExperts& operator=(const HostExperts&) = delete;

  int first() const { return first_; }
  int count() const { return int(cfg_.n_routed_experts) - first_; }  // per layer
  int core_experts() const { return int(cfg_.n_routed_experts) - cores_first_; }  // of count(), per layer
  // Changes that count (as the constructor's `core_experts`) with no pass in flight; graphs that
  // captured the old split must be captured again.
  void set_core_experts(int core_experts);
  size_t weight_bytes() const { return weight_bytes_; }
  // Device bytes the tier takes for experts [first, E) of `w`'s layers: one layer's worth of them,
  // where a pass of many rows copies their weights (packed FP4 experts; 0 for other formats).
  static size_t device_bytes(const ModelWeights& w, int first);

  // One MoE sub-layer's host share, in two calls around the GPU's own experts (layer_pass.cpp):
  // `start` once moe_route has left the picks and their weights while block_input(c) holds the
  // quantised MoE input; `finish` once moe_experts has left the pass's routed outputs in pick
  // order (c.s.moe.picks, +0 at the host's picks). `layer`: the main layer, or the MTP block's as
  // layer L.
  //   - A pass of kHostStreamRows rows or more runs them on the GPU: `start` does nothing,
  //     `finish` copies their weights up and runs the grouped GEMM over the host's picks (it
  //     shares the GPU experts' scratch, so it comes after them).
  //   - A smaller pass, while the GPU runs its own experts: the picks of experts
  //     [cores_first, E) run on the host's cores — `start` forks a side stream off c.stream that
  //     copies the input, the picks and their weights to the host and runs a host function (a
  //     graph node under capture) computing them (cpu/expert_units.h, official numerics); `finish`
  //     joins it back and launches the kernel that reads their outputs into c.s.moe.picks. Those
  //     of experts [first, cores_first) cross the bus — `start` forks a second side stream that
  //     gathers their weights into the staging experts; `finish` joins it and runs the same
  //     grouped GEMM over them.
  void start(const StepContext& c, int layer);
  void finish(const StepContext& c, int layer);

  // Rethrows, once the stream has synchronised, the first error a host computation raised (a NaN
  // scale byte in a host expert, say): a host function cannot throw into the stream.
  void check();
  HostExpertStats stats() const;

 private:
  // A layer's host experts: for w1, w3 and w2 in turn, every expert's data, then every expert's
  // scales, as stored (so each is one contiguous copy to the GPU's staging experts).
  struct Layer {
    PinnedBuffer<uint8_t> bytes;
    std::vector<ExpertWeights> experts;  // views into `bytes`, expert first + j at j
  };
  struct Call {  // one host node's arguments: stable addresses (a graph keeps the pointer)
    HostExperts* self;
    int layer, T;
    bool has_n_real;
  };
  static void run_call(void* call);
  void run(const Call& call);
  Layer load_layer(const std::vector<ExpertWeights>& experts, const RandomTensors* synthetic);
  bool streams_to_gpu(const StepContext& c) const;
  void check_pass(const StepContext& c, int layer) const;
  // The picked experts [first, cores_first) of layer `layer` into staging_, on bus_.
  void enqueue_gather(const StepContext& c, int layer);
  // The copies down and the host function of the picks of experts [cores_first, E), on cores_.
  void enqueue_cores(const StepContext& c, int layer);
  void enqueue_streamed(const StepContext& c, int layer);
  // The grouped GEMM over the host's picks of experts [first, first + n) (their own dispatch
  // plan) and the staging experts, outputs into those picks.
  void enqueue_on_gpu(const StepContext& c, int n);

  ModelConfig cfg_;
  int first_, cores_first_, max_rows_;
  // Whether the experts are packed FP4, which the GPU can read from here (the bus's share, and a
  // pass of many rows), and their format (for the error when they are not).
  bool streamable_ = false;
  WeightFormat format_ = WeightFormat::kMXFP4;
  ThreadPool pool_;
  std::vector<Layer> layers_;  // main layers, then the MTP block's
  size_t weight_bytes_ = 0;
  // w1, w3, w2 of one layer's host experts on the GPU (all their weights copied in by a pass of
  // many rows, the bus's picked ones gathered by a decode pass); empty when the experts are not
  // packed FP4.
  std::vector<DeviceExperts> staging_;
  // The side streams a decode pass's host share runs on (the cores' copies and host function; the
  // bus gather), and the events that fork them off and join them back to the pass's stream
  // (created on the device that was current at construction: the rank's).
  cudaStream_t cores_ = nullptr, bus_ = nullptr;
  cudaEvent_t fork_ = nullptr, cores_done_ = nullptr, bus_done_ = nullptr;
  // Hand-off buffers of one pass. Layer l + 1's copies into them fork after layer l's join and
  // hand-back kernel, so one set serves every layer.
  PinnedBuffer<uint8_t> x_q_, x_scale_;   // [rows, D] e4m3, [rows, D/128] ue8m0
  PinnedBuffer<int32_t> expert_idx_, n_real_;
  PinnedBuffer<float> expert_w_;          // [rows, k]
  PinnedBuffer<uint16_t> out_;            // [rows, k, D] BF16 bits
  // By (layer, T, has_n_real): a captured graph keeps its Call's address, and a later pass with the
  // same key finds the same values there.
  std::map<std::tuple<int, int, bool>, Call> calls_;
  // Written by host functions, read after a stream sync.
  mutable std::mutex mutex_;
  std::string error_;
  HostExpertStats stats_;
};

}  // namespace dsv4::cuda
