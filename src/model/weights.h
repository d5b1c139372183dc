// ModelWeights: typed views of every tensor the config implies (§11.1), each linear in the format
// its config and tensors say (FP8 block, MXFP4, NVFP4, plain; §11.2–§11.6), bound by canonical
// name from a Checkpoint and validated for presence, shape and dtype. No copies: every
// WeightMatrix points into the mapped shards.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/config.h"
#include "model/quant.h"

namespace dsv4 {

struct HyperConnWeights {  // §3.1 / §3.3
  WeightMatrix fn;     // [(2+n)·n, n·D] F32 (head: [n, n·D])
  WeightMatrix base;   // [(2+n)·n] F32 (head: [n])
  WeightMatrix scale;  // [3] F32 (head: [1])
};

struct CompressorWeights {  // §5
  int64_t ratio = 0;   // m: 4 or 128
  int64_t width = 0;   // c: 512 (main) or index_head_dim (indexer)
  WeightMatrix wkv;    // [coff·c, D] BF16
  WeightMatrix wgate;  // [coff·c, D] BF16
  WeightMatrix ape;    // [m, coff·c] F32
  WeightMatrix norm;   // [c] BF16
};

struct IndexerWeights {  // §6
  WeightMatrix wq_b;          // [Hi·di, Q] FP8
  WeightMatrix weights_proj;  // [Hi, D] BF16
  CompressorWeights compressor;
};

struct AttentionWeights {  // §4
  WeightMatrix wq_a;       // [Q, D]
  WeightMatrix q_norm;     // [Q]
  WeightMatrix wq_b;       // [H·d, Q]
  WeightMatrix wkv;        // [d, D]
  WeightMatrix kv_norm;    // [d]
  WeightMatrix wo_a;       // [G·R, (H/G)·d]
  WeightMatrix wo_b;       // [D, G·R]
  WeightMatrix attn_sink;  // [H] F32
  std::optional<CompressorWeights> compressor;  // ratio 4 / 128 layers
  std::optional<IndexerWeights> indexer;        // ratio 4 layers
};

struct ExpertWeights {  // §8.2 / §8.3: SwiGLU
  WeightMatrix w1;  // [I, D] gate
  WeightMatrix w3;  // [I, D] up
  WeightMatrix w2;  // [D, I] down
};

struct MoEWeights {  // §8
  WeightMatrix gate;       // [E, D] BF16 router
  WeightMatrix gate_bias;  // [E] F32, score-routed layers only (absent on hash layers)
  WeightMatrix tid2eid;    // [V, k] I64/I32, hash layers only
  std::vector<ExpertWeights> experts;  // E routed experts
  ExpertWeights shared;                // the one shared expert
};

struct LayerWeights {
  LayerSpec spec;
  WeightMatrix attn_norm, ffn_norm;  // [D]
  HyperConnWeights hc_attn, hc_ffn;
  AttentionWeights attn;
  MoEWeights ffn;
};

struct MtpWeights {  // §10
  LayerWeights layer;
  WeightMatrix e_proj, h_proj;       // [D, D]
  WeightMatrix enorm, hnorm, norm;   // [D]
  HyperConnWeights hc_head;
};

struct ModelWeights {
  WeightMatrix embed;  // [V, D]
  WeightMatrix head;   // [V, D]
  WeightMatrix norm;   // [D]
  HyperConnWeights hc_head;
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;  // empty when the checkpoint has no mtp.* tensors
};

// One expected tensor of the official layout (§11.1), derived from the config alone.
struct ExpectedTensor {
  std::string name;
  std::vector<DType> dtypes;   // accepted dtypes
  std::vector<int64_t> shape;
  bool optional = false;       // e.g. mtp.* (HF exports drop them)
  bool unused = false;         // read by no backend, may be absent (NVFP4 input_scale, §11.6)
};
// Every linear in the format config.json implies (ModelConfig::fp8_block, expert_format, nvfp4).
// With `stored`, a linear whose tensors in that checkpoint say another format (NVFP4's
// weight_scale(_2), FP8's E4M3 + .scale, MXFP4's packed bytes + .scale, a plain float weight) is
// expected in that format instead: loaders go by the tensors. A block format whose block does not
// divide the input dimension is an Error naming the linear.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg, const Checkpoint* stored = nullptr);

// One line per linear the checkpoint stores in another format than config.json implies
// ("layers.0.ffn.gate: stored as NVFP4, config.json implies BF16"), for `inspect`.
std::vector<std::string> linear_format_notes(const ModelConfig& cfg, const Checkpoint& ckpt);

// Every problem (missing, unexpected, mis-shaped, wrong dtype, bad scale layout) in one list,
// each naming the tensor. Empty = complete and consistent.
std::vector<std::string> check_checkpoint(const ModelConfig& cfg, const Checkpoint& ckpt);

// Binds views; throws dsv4::Error with the whole problem list when check_checkpoint finds any.
ModelWeights bind_weights(const ModelConfig& cfg, const Checkpoint& ckpt);

}  // namespace dsv4
