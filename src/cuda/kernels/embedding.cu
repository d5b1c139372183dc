// Embedding kernel and launcher; see embedding.cuh for the contract.
// One block per token copies the row into all n streams, 16 bytes per access when D allows it.
#include "cuda/kernels/embedding.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;                   // bf16 per 16-byte access
constexpr uint16_t kBf16QuietNan = 0x7fc0;

template <typename Word>  // uint4 (8 bf16) or uint16_t (1 bf16)
__global__ void __launch_bounds__(kThreads) embedding_kernel(EmbeddingParams p) {
  wait_for_prior_grids();
  constexpr int kPer = sizeof(Word) / sizeof(uint16_t);
  const int t = blockIdx.x;
  const int id = p.tokens[t];
  const bool valid = id >= 0 && id < p.vocab;
  const int words = p.D / kPer;
  const Word* src = reinterpret_cast<const Word*>(p.table) + int64_t(valid ? id : 0) * words;
  Word* dst = reinterpret_cast<Word*>(p.streams) + int64_t(t) * p.n * words;
  Word nan_word;
  uint16_t* nan_halves = reinterpret_cast<uint16_t*>(&nan_word);
#pragma unroll
  for (int j = 0; j < kPer; ++j) nan_halves[j] = kBf16QuietNan;
  for (int i = threadIdx.x; i < words; i += kThreads) {
    const Word w = valid ? src[i] : nan_word;
    for (int s = 0; s < p.n; ++s) dst[int64_t(s) * words + i] = w;
  }
}

}  // namespace

void launch_embedding(const EmbeddingParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.table && p.tokens && p.streams && p.T >= 0 && p.n >= 1 && p.D >= 1 && p.vocab >= 1);
  if (p.T == 0) return;
  const bool aligned = (reinterpret_cast<uintptr_t>(p.table) | reinterpret_cast<uintptr_t>(p.streams)) % 16 == 0;
  if (p.D % kVec == 0 && aligned)
    launch_kernel(embedding_kernel<uint4>, p.T, kThreads, 0, stream, p);
  else
    launch_kernel(embedding_kernel<uint16_t>, p.T, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
