// `dsv4 compare` end to end on the quantised Flash-shaped fixture (testdata/parity/flash_quant):
// cpu-exact against cpu-official, with the logits row re-measured from `dsv4 logits` outputs of
// both modes (an independent path to the same numbers); two identical runs that must agree
// exactly; and the --backend / --numerics / spec errors every model-running subcommand shares.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/run_command.h"
#include "support/scratch_dir.h"
#include "util/npy.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixture = fs::path(DSV4_SOURCE_DIR) / "testdata/parity/flash_quant";
const std::string kModel = (kFixture / "model").string();
const std::string kTokens = (kFixture / "tokens.json").string();
const std::string kInput = "-m " + kModel + " --tokens " + kTokens;  // the fixture, all tokens

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

struct RunResult {
  int status = -1;
  std::string out;  // stdout
  std::string all;  // stdout and stderr together
};

// `dsv4 <args>`; stderr goes to a file so that stdout stays parseable JSON.
RunResult run_dsv4(const std::string& args) {
  const dsv4::test::ScratchDir scratch("dsv4-compare-");
  const fs::path err = scratch / "stderr.txt";
  const auto c = dsv4::test::run_command(std::string(DSV4_BINARY) + " " + args + " 2>" + err.string());
  RunResult r{c.status, c.out, ""};
  std::ifstream e(err);
  r.all = r.out + std::string(std::istreambuf_iterator<char>(e), {});
  return r;
}

// A file in a directory of its own, removed when the test ends.
struct TempFile {
  dsv4::test::ScratchDir dir{"dsv4-compare-"};
  fs::path path;
  explicit TempFile(const std::string& name) : path(dir / name) {}
};

// The row of (name, layer) in compare's JSON and its index; -1 when absent.
int64_t find_row(const json& rows, const std::string& name, int layer) {
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i]["name"] == name && rows[i]["layer"] == layer) return int64_t(i);
  return -1;
}

TEST(Compare, ExactVsOfficialMatchesLogitsOfBothModes) {
  // All 640 fixture tokens in chunks of 129: CSA (ratio 4) entries, a selective indexer
  // (640/4 = 160 entries > index_topk 16) and HCA (ratio 128) entries all appear.
  const std::string common = kInput + " --chunk 129 --threads 2";
  const RunResult r = run_dsv4("compare " + common + " --a cpu-exact --b cpu-official --json");
  ASSERT_EQ(r.status, 0) << r.all;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["a"], "cpu-exact");
  EXPECT_EQ(j["b"], "cpu-official");
  EXPECT_EQ(j["tokens"], 640);
  const json& rows = j["rows"];

  // Forward order: layer 0's attention input first, the logits last.
  ASSERT_GE(rows.size(), 2u);
  EXPECT_EQ(find_row(rows, "attn.in", 0), 0);
  EXPECT_EQ(find_row(rows, "logits", -1), int64_t(rows.size()) - 1);
  for (const json& row : rows) {
    EXPECT_TRUE(row["notes"].empty()) << row.dump();  // both modes trace the same tensors
    EXPECT_EQ(row["shape_a"], row["shape_b"]) << row.dump();
  }
  // Official quantises the KV NoPE dims (FP8, §12) and the activations in front of wkv: the
  // KV rows of layer 0 already differ, though they point the same way.
  const int64_t kv0 = find_row(rows, "attn.kv", 0);
  ASSERT_GE(kv0, 0);
  EXPECT_GT(rows[kv0]["max_abs_err"].get<double>(), 0.0) << rows[kv0].dump();
  EXPECT_GT(rows[kv0]["cosine"].get<double>(), 0.99) << rows[kv0].dump();
  // Compressed entries concatenated over the chunks: one per 4 tokens (CSA, layer 2), one per
  // 128 (HCA, layer 3); config.json's compress_ratios.
  const int64_t csa = find_row(rows, "csa.entries", 2), hca = find_row(rows, "hca.entries", 3);
  ASSERT_GE(csa, 0);
  ASSERT_GE(hca, 0);
  EXPECT_EQ(rows[csa]["shape_a"], json({160, 128}));
  EXPECT_EQ(rows[hca]["shape_a"], json({5, 128}));
  const int64_t topk = find_row(rows, "indexer.topk", 2);
  ASSERT_GE(topk, 0);
  EXPECT_EQ(rows[topk]["shape_a"], json({640, 16}));
  EXPECT_GT(rows[topk]["picks"]["total"].get<int64_t>(), 0);
  EXPECT_LE(rows[topk]["picks"]["identical"].get<int64_t>(),
            rows[topk]["picks"]["total"].get<int64_t>());

  // The logits row, measured again from `dsv4 logits` of both modes (same chunking).
  TempFile exact("exact.npy"), official("official.npy");
  for (const auto& [mode, out] : {std::pair{"exact", &exact}, std::pair{"official", &official}}) {
    const RunResult l =
        run_dsv4("logits " + common + " --numerics " + mode + " --out " + out->path.string());
    ASSERT_EQ(l.status, 0) << l.all;
  }
  const dsv4::NpyArray a = dsv4::read_npy(exact.path), b = dsv4::read_npy(official.path);
  ASSERT_EQ(a.shape, b.shape);
  const int64_t T = a.shape[0], V = a.shape[1];
  double dot = 0, na = 0, nb = 0, max_err = 0, max_a = 0;
  int64_t agree = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* ra = a.data.data() + t * V;
    const float* rb = b.data.data() + t * V;
    for (int64_t v = 0; v < V; ++v) {
      dot += double(ra[v]) * rb[v];
      na += double(ra[v]) * ra[v];
      nb += double(rb[v]) * rb[v];
      max_err = std::max(max_err, std::fabs(double(ra[v]) - rb[v]));
      max_a = std::max(max_a, std::fabs(double(ra[v])));
    }
    agree += (std::max_element(ra, ra + V) - ra) == (std::max_element(rb, rb + V) - rb);
  }
  const double cosine = dot / std::sqrt(na * nb);
  const json& logits = rows[find_row(rows, "logits", -1)];
  std::printf("logits exact vs official: cosine %.8f, max|d| %.4g, top-1 %lld/%lld\n", cosine,
              max_err, (long long)agree, (long long)T);
  EXPECT_EQ(logits["shape_a"], json({T, V}));
  // The same FP32 values summed in double in the same order on both sides: equal up to the last
  // bits of the double sums (1e-12 is ~1e4 ulp of headroom, far below any real difference).
  EXPECT_NEAR(logits["cosine"].get<double>(), cosine, 1e-12);
  EXPECT_EQ(logits["max_abs_err"].get<double>(), max_err);
  EXPECT_EQ(logits["max_abs_a"].get<double>(), max_a);
  EXPECT_EQ(logits["top1"]["agree"].get<int64_t>(), agree);
  EXPECT_EQ(logits["top1"]["positions"].get<int64_t>(), T);
  // The two modes compute the same model: quantisation noise, not a different function.
  EXPECT_GT(cosine, 0.99);
}

TEST(Compare, IdenticalRunsAgreeExactlyInForwardOrder) {
  // Chunks of 64: the HCA layer's first entry (position 127) is traced only in the second
  // chunk, after the first chunk's logits; it must still be listed inside layer 3.
  const RunResult r = run_dsv4("compare " + kInput +
                               " --chunk 64 --threads 2 --a cpu-exact --b cpu-exact --json");
  ASSERT_EQ(r.status, 0) << r.all;
  const json rows = json::parse(r.out)["rows"];
  for (const json& row : rows) {
    EXPECT_TRUE(row["notes"].empty()) << row.dump();
    if (row.contains("picks")) {
      EXPECT_EQ(row["picks"]["identical"], row["picks"]["total"]) << row.dump();
    } else {
      // One deterministic backend, the same threads and chunks: bit-identical tensors.
      ASSERT_TRUE(row.contains("max_abs_err")) << row.dump();
      EXPECT_EQ(row["max_abs_err"].get<double>(), 0.0) << row.dump();
      EXPECT_NEAR(row["cosine"].get<double>(), 1.0, 1e-12) << row.dump();
    }
  }
  const int64_t kv3 = find_row(rows, "attn.kv", 3), hca = find_row(rows, "hca.entries", 3);
  ASSERT_GE(kv3, 0);
  EXPECT_EQ(hca, kv3 + 1) << rows.dump();
  EXPECT_EQ(find_row(rows, "attn.core", 3), hca + 1) << rows.dump();
  EXPECT_EQ(find_row(rows, "logits", -1), int64_t(rows.size()) - 1);
}

TEST(Compare, PrintsATable) {
  TempFile tokens("short.json");
  std::ofstream(tokens.path) << "[0, 17, 42, 99, 3, 125, 8, 64]";
  const RunResult r = run_dsv4("compare -m " + kModel + " --tokens " + tokens.path.string() +
                               " --threads 2 --a cpu-official --b cpu-exact");
  ASSERT_EQ(r.status, 0) << r.all;
  EXPECT_TRUE(has(r.out, "a = cpu-official, b = cpu-exact: 8 tokens in chunks of 8")) << r.out;
  EXPECT_TRUE(has(r.out, "layer  name")) << r.out;
  EXPECT_TRUE(has(r.out, "    0  attn.kv          [8, 128]")) << r.out;
  EXPECT_TRUE(has(r.out, "    -  logits           [8, 128]")) << r.out;
  EXPECT_TRUE(has(r.out, "top-1 agrees ")) << r.out;
  EXPECT_TRUE(has(r.out, "identical picks ")) << r.out;  // moe.experts
}

TEST(Compare, MissingModelDirIsAnError) {
  const RunResult r = run_dsv4("compare -m /nonexistent/dsv4_model --tokens " + kTokens +
                               " --a cpu-exact --b cpu-official");
  EXPECT_EQ(r.status, 1) << r.all;
  EXPECT_TRUE(has(r.all, "/nonexistent/dsv4_model")) << r.all;
}

TEST(Compare, UnknownSpecIsAnError) {
  const RunResult r = run_dsv4("compare " + kInput + " --a cpu-exact --b gpu");
  EXPECT_EQ(r.status, 1) << r.all;
  EXPECT_TRUE(has(r.all, "--b")) << r.all;
  EXPECT_TRUE(has(r.all, "'gpu'")) << r.all;
}

// The cuda spec's options are checked before any model is opened, in every build.
TEST(Compare, BadCudaSpecOptionsAreErrors) {
  const std::pair<std::string, std::string> cases[] = {
      {"cuda,foo=1", "'foo=1'"},
      {"cuda,cpu-experts=0", "'cpu-experts=0'"},
      {"cuda,cpu-experts=x", "'cpu-experts=x'"},
      {"cuda,cpu-experts=4,host-decode=split", "'host-decode=split'"},
      {"cuda,host-decode=gpu", "needs cpu-experts"},
      {"cuda,", "''"},
  };
  for (const auto& [spec, what] : cases) {
    const RunResult r = run_dsv4("compare " + kInput + " --a cpu-exact --b " + spec);
    EXPECT_EQ(r.status, 1) << spec << ": " << r.all;
    EXPECT_TRUE(has(r.all, "--b")) << spec << ": " << r.all;
    EXPECT_TRUE(has(r.all, what)) << spec << ": " << r.all;
  }
  const RunResult cpu = run_dsv4("compare " + kInput + " --a cpu-exact --b cpu-official --synthetic-weights 1");
  EXPECT_EQ(cpu.status, 1) << cpu.all;
  EXPECT_TRUE(has(cpu.all, "--synthetic-weights")) << cpu.all;
}

TEST(Compare, BadChunkIsAnError) {
  const RunResult r = run_dsv4("compare " + kInput + " --chunk 0 --a cpu-exact --b cpu-exact");
  EXPECT_EQ(r.status, 1) << r.all;
  EXPECT_TRUE(has(r.all, "--chunk")) << r.all;
}

// --numerics exact is refused on cuda in every build, by every model-running subcommand, before
// any file is read (the model dir does not even exist here).
TEST(Backend, CudaWithExactNumericsIsAnError) {
  for (const std::string& cmd : std::vector<std::string>{
           "logits -m /nonexistent/m --tokens " + kTokens + " --out /nonexistent/o.npy",
           "perplexity -m /nonexistent/m --text-file /nonexistent/t.txt",
           "generate -m /nonexistent/m -p hi"}) {
    const RunResult r = run_dsv4(cmd + " --backend cuda --numerics exact");
    EXPECT_EQ(r.status, 1) << cmd << "\n" << r.all;
    EXPECT_TRUE(has(r.all, "numerics 'exact' is CPU-only")) << cmd << "\n" << r.all;
  }
}

TEST(Backend, UnknownBackendIsAnError) {
  const RunResult r = run_dsv4("logits " + kInput + " --out /nonexistent/o.npy --backend tpu");
  EXPECT_EQ(r.status, 1) << r.all;
  EXPECT_TRUE(has(r.all, "--backend must be 'cpu' or 'cuda', got 'tpu'")) << r.all;
}

TEST(Backend, UnknownCudaGraphModeIsAnError) {
  const RunResult r = run_dsv4("logits " + kInput + " --out /nonexistent/o.npy --cuda-graph maybe");
  EXPECT_EQ(r.status, 1) << r.all;
  EXPECT_TRUE(has(r.all, "--cuda-graph must be 'on', 'off' or 'check', got 'maybe'")) << r.all;
}

// Synthetic weights are generated at upload by the cuda backend; the cpu backend computes from the
// mapped shards, so it refuses them by name (in any build) and points at make-skeleton --random.
TEST(Backend, SyntheticWeightsOnTheCpuAreAnError) {
  const RunResult r = run_dsv4("generate -m " + kModel + " -p hi --synthetic-weights 7");
  EXPECT_EQ(r.status, 1) << r.all;
  EXPECT_TRUE(has(r.all, "--synthetic-weights is CUDA-only")) << r.all;
  EXPECT_TRUE(has(r.all, "make-skeleton --random")) << r.all;
  const RunResult bad = run_dsv4("generate -m " + kModel + " -p hi --backend cuda --synthetic-weights x");
  EXPECT_EQ(bad.status, 1) << bad.all;
  EXPECT_TRUE(has(bad.all, "--synthetic-weights")) << bad.all;
}

// Several ranks are the cuda backend's (docs/parallel.md); the count's two names must agree, and
// the options are checked before any checkpoint is read, in any build.
TEST(Backend, RankOptionsAreCheckedByName) {
  const std::pair<const char*, const char*> cases[] = {  // options, what the error must say
      {"--ep 2", "--gpus, --ep, --tp and --comm are CUDA-only"},
      {"--tp 2", "CUDA-only"},
      {"--backend cuda --gpus 2 --ep 4", "--gpus 2 and --ep 4 disagree"},
      {"--backend cuda --comm carrier-pigeon", "--comm must be 'nccl' or 'loopback', got 'carrier-pigeon'"},
      {"--backend cuda --gpus 9", "--gpus"},
      {"--cpu-experts 4", "--cpu-experts, --host-decode and --gpu-memory are CUDA-only"},
      {"--gpu-memory 75", "--cpu-experts, --host-decode and --gpu-memory are CUDA-only"},
      {"--cpu-experts 4 --host-decode gpu", "--cpu-experts, --host-decode and --gpu-memory are CUDA-only"},
      {"--backend cuda --cpu-experts many", "--cpu-experts"},
      {"--backend cuda --host-decode gpu", "--host-decode gpu: there is no host tier to decode"},
      {"--backend cuda --cpu-experts 4 --host-decode fpga", "--host-decode must be 'cpu', 'gpu' or 'split', got 'fpga'"},
      {"--cpu-experts 4 --host-decode split", "--cpu-experts, --host-decode and --gpu-memory are CUDA-only"},
      {"--backend cuda --host-decode split", "--host-decode split: there is no host tier to decode"},
      {"--backend cuda --cpu-experts 4 --host-cpu-share 0.3", "--host-cpu-share goes with --host-decode split"},
      {"--backend cuda --cpu-experts 4 --host-decode gpu --host-cpu-share 0.3",
       "--host-cpu-share goes with --host-decode split"},
      {"--backend cuda --cpu-experts 4 --host-decode split --host-cpu-share 1", "--host-cpu-share must be in (0, 1), got 1"},
      {"--backend cuda --cpu-experts 4 --host-decode split --host-cpu-share half", "--host-cpu-share"},
      {"--pass-rows 4096", "--pass-rows is CUDA-only"},
      {"--backend cuda --pass-rows 0", "--pass-rows"},
      {"--backend cuda --pass-rows 40000", "--pass-rows"},
      {"--backend cuda --gpu-memory -3", "--gpu-memory must be a positive number of GiB, got -3"},
      {"--fp8-expert-prefill on", "--fp8-expert-prefill is CUDA-only"},
      {"--backend cuda --fp8-expert-prefill yes", "--fp8-expert-prefill must be 'on' or 'off', got 'yes'"},
      {"--fp8-expert-decode on", "--fp8-expert-decode is CUDA-only"},
      {"--backend cuda --fp8-expert-decode 1", "--fp8-expert-decode must be 'on' or 'off', got '1'"},
      {"--backend cuda --fp8-expert-prefill off --fp8-expert-decode on", "--fp8-expert-decode on needs --fp8-expert-prefill on"},
      {"--prefill-attention on", "--prefill-attention is CUDA-only"},
      {"--backend cuda --prefill-attention fast", "--prefill-attention must be 'on' or 'off', got 'fast'"},
  };
  for (const auto& [options, message] : cases) {
    const RunResult r = run_dsv4("generate -m " + kModel + " -p hi " + options);
    EXPECT_EQ(r.status, 1) << options << ": " << r.all;
    EXPECT_TRUE(has(r.all, message)) << options << ": " << r.all;
  }
  // The cpu backend takes the default count (auto) and an explicit one rank.
  const RunResult one = run_dsv4("generate -p hi --max-tokens 1 --gpus 1");
  EXPECT_EQ(one.status, 0) << one.all;
}

TEST(Backend, CudaInABuildWithoutCudaIsAnError) {
#ifdef DSV4_WITH_CUDA
  GTEST_SKIP() << "this build has CUDA";
#endif
  for (const std::string& cmd : std::vector<std::string>{
           "logits " + kInput + " --out /nonexistent/o.npy --backend cuda",
           "perplexity -m " + kModel + " --text-file /nonexistent/t.txt --backend cuda",
           "generate -m " + kModel + " -p hi --backend cuda",
           // compare's default b is cuda: refused before a (cpu) runs.
           "compare " + kInput + " --a cpu-exact"}) {
    const RunResult r = run_dsv4(cmd);
    EXPECT_EQ(r.status, 1) << cmd << "\n" << r.all;
    EXPECT_TRUE(has(r.all, "this dsv4 was built without CUDA")) << cmd << "\n" << r.all;
    EXPECT_FALSE(has(r.all, "ran in")) << cmd << "\n" << r.all;
  }
}

}  // namespace
