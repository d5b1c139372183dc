// Issue 10 end to end through the binary: real-world checkpoint variants load (re-released
// configs, NVFP4 beyond the experts), and each class of hostile input is refused at once with a
// message naming the culprit — never a crash, hang or silent garbage. One test per class; every
// command runs under `timeout`, so a hang fails instead of blocking the suite.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "model/checkpoint.h"
#include "model/known_configs.h"
#include "support/run_command.h"
#include "support/scratch_dir.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";
constexpr int kTimeoutSeconds = 120;  // far above any command here; only a hang reaches it
constexpr int kTimedOut = 124;        // timeout(1)'s exit status

struct RunResult {
  int rc = -1;
  std::string out;  // stdout and stderr together
};

RunResult dsv4(const std::string& args) {
  const auto c = dsv4::test::run_command("timeout " + std::to_string(kTimeoutSeconds) + " " +
                                         std::string(DSV4_BINARY) + " " + args + " 2>&1");
  return {c.status, c.out};
}

// Runs a command that must fail: exit 1 (dsv4::Error), no timeout, and every fragment in its output.
void expect_refused(const std::string& args, std::initializer_list<std::string> fragments) {
  const RunResult r = dsv4(args);
  EXPECT_EQ(r.rc, 1) << args << "\n" << r.out;
  for (const std::string& f : fragments) EXPECT_NE(r.out.find(f), std::string::npos) << args << ": lacks '" << f << "'\n" << r.out;
}

struct TempDir : dsv4::test::ScratchDir {
  explicit TempDir(const std::string& tag) : ScratchDir("dsv4_hostile_" + tag + "_") {}
};

void write_file(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A random checkpoint of `config` (make-skeleton --random), with vocab 512 unless the config sets
// it small already, and a token file of 20 ids.
fs::path random_model(const TempDir& d, const json& config, const std::string& extra = "") {
  write_file(d.path() / "config.json.in", config.dump());
  const fs::path dir = d.path() / "model";
  const RunResult r = dsv4("make-skeleton " + dir.string() + " --config " + (d.path() / "config.json.in").string() +
                           " --random 7 " + extra);
  EXPECT_EQ(r.rc, 0) << r.out;
  write_file(d.path() / "tokens.json", "[0, 5, 17, 3, 99, 42, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]");
  return dir;
}

json tiny_config() {
  json j = json::parse(dsv4::tiny_config_json());
  j["vocab_size"] = 512;
  return j;
}

// Re-released checkpoints (§15.3): trailing draft-layer entries in compress_ratios load, and
// inspect says they were ignored.
TEST(HostileInputs, ReReleasedConfigLoads) {
  TempDir d("rerelease");
  json cfg = tiny_config();
  cfg["compress_ratios"].push_back(0);
  cfg["compress_ratios"].push_back(0);
  const fs::path dir = random_model(d, cfg);
  const RunResult r = dsv4("inspect " + dir.string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("note:        compress_ratios: 2 trailing entries [0,0]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ignored"), std::string::npos) << r.out;
  const RunResult l = dsv4("logits -m " + dir.string() + " --tokens " + (d.path() / "tokens.json").string() + " -o " +
                           (d.path() / "out.npy").string());
  EXPECT_EQ(l.rc, 0) << l.out;
}

// NVFP4 beyond the experts: a ModelOpt quant_algo NVFP4 checkpoint whose attention, compressor,
// indexer, shared-expert and head linears are NVFP4 (the router named in quantized_layers too)
// verifies and runs on the CPU.
TEST(HostileInputs, Nvfp4DenseCheckpointRuns) {
  TempDir d("nvfp4");
  json cfg = tiny_config();
  cfg.erase("expert_dtype");
  cfg["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}, {"group_size", 16},
                                {"ignore", {"mtp.*"}},
                                {"quantized_layers", {{"model.layers.*.mlp.gate", {{"quant_algo", "NVFP4"}}}}}};
  const fs::path dir = random_model(d, cfg);
  const RunResult r = dsv4("inspect " + dir.string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("NVFP4"), std::string::npos) << r.out;
  {
    const dsv4::Checkpoint ck = dsv4::Checkpoint::open(dir);
    for (const char* t : {"layers.1.attn.wq_a.weight_scale_2", "layers.1.attn.compressor.wkv.weight_scale_2",
                          "layers.1.attn.indexer.weights_proj.weight_scale_2", "layers.0.ffn.gate.weight_scale_2",
                          "layers.2.ffn.shared_experts.w2.weight_scale_2", "head.weight_scale_2"})
      EXPECT_NE(ck.find(t), nullptr) << t;
  }
  const RunResult l = dsv4("logits -m " + dir.string() + " --numerics official --tokens " +
                           (d.path() / "tokens.json").string() + " -o " + (d.path() / "out.npy").string());
  EXPECT_EQ(l.rc, 0) << l.out;
}

// A safetensors data section must be tiled exactly by its tensors: bytes after the last one, or a
// gap before or between them, are refused naming the file.
TEST(HostileInputs, SafetensorsUncoveredBytes) {
  TempDir d("gap");
  const fs::path dir = random_model(d, tiny_config(), "--shards 1");
  const fs::path shard = dir / "model-00001-of-00001.safetensors";
  const std::string original = read_file(shard);
  write_file(shard, original + "trailing");
  expect_refused("inspect " + dir.string(), {shard.filename().string(), "8 bytes after the last tensor"});
  expect_refused("logits -m " + dir.string() + " --tokens " + (d.path() / "tokens.json").string() + " -o " +
                     (d.path() / "o.npy").string(),
                 {shard.filename().string(), "covered by no tensor"});
  // A gap before the first tensor: every data offset moved up by 16 bytes, 16 zero bytes inserted.
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(original[size_t(i)]);
  json h = json::parse(original.substr(8, n));
  for (auto& [k, v] : h.items())
    if (k != "__metadata__") v["data_offsets"] = {v["data_offsets"][0].get<uint64_t>() + 16, v["data_offsets"][1].get<uint64_t>() + 16};
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[size_t(i)] = char(uint64_t(text.size()) >> (8 * i));
  write_file(shard, len + text + std::string(16, '\0') + original.substr(8 + n));
  expect_refused("inspect " + dir.string(), {shard.filename().string(), "starts with 16 bytes that no tensor covers"});
}

// A shard path that is a directory, FIFO or device — with an index and without — is named, and
// nothing waits on the FIFO.
TEST(HostileInputs, ShardThatIsNotAFile) {
  for (const bool with_index : {true, false}) {
    for (const std::string kind : {"directory", "FIFO", "device"}) {
      TempDir d("shard");
      const fs::path dir = random_model(d, tiny_config(), with_index ? "--shards 2" : "--shards 2 --no-index");
      const fs::path shard = dir / "model-00002-of-00002.safetensors";
      fs::remove(shard);
      if (kind == "directory") fs::create_directories(shard);
      else if (kind == "FIFO") ASSERT_EQ(::mkfifo(shard.c_str(), 0600), 0);
      else fs::create_symlink("/dev/zero", shard);
      const std::string what = kind == "device" ? "is a character device" : "is a " + kind;
      expect_refused("logits -m " + dir.string() + " --tokens " + (d.path() / "tokens.json").string() + " -o " +
                         (d.path() / "o.npy").string(),
                     {shard.string() + ": " + what});
      expect_refused("inspect " + dir.string(), {shard.string() + ": " + what});
    }
  }
}

TEST(HostileInputs, DuplicateConfigKeysAreNamed) {
  TempDir d("dup");
  const fs::path dir = random_model(d, tiny_config());
  std::string text = read_file(dir / "config.json");
  text.insert(text.find('{') + 1, "\"num_hidden_layers\": 2, ");
  write_file(dir / "config.json", text);
  expect_refused("inspect " + dir.string(), {"config.json", "key 'num_hidden_layers' appears twice"});
  expect_refused("logits -m " + dir.string() + " --tokens " + (d.path() / "tokens.json").string() + " -o " +
                     (d.path() / "o.npy").string(),
                 {"key 'num_hidden_layers' appears twice"});
}

// A file argument that is a directory says so, for every file option.
TEST(HostileInputs, FileArgumentThatIsADirectory) {
  TempDir d("dirarg");
  const std::string dir = d.path().string();
  expect_refused("logits --tokens " + dir + " -o " + dir + "/o.npy", {dir + ": is a directory"});
  expect_refused("compare --tokens " + dir + " --b cpu-exact", {dir + ": is a directory"});
  expect_refused("perplexity --text-file " + dir, {dir + ": is a directory"});
  expect_refused("tokenize --text-file " + dir, {dir + ": is a directory"});
  expect_refused("encode --messages " + dir, {dir + ": is a directory"});
  expect_refused("make-skeleton " + dir + "/out --config " + dir, {dir + ": is a directory"});
  expect_refused("generate -m " + dir + " -p hi", {"tokenizer.json"});
}

// Integers out of range say "out of range" and the allowed range, also past 64 bits; text that is
// not an integer says so.
TEST(HostileInputs, IntegersOutOfRange) {
  expect_refused("generate -p hi --threads 99999999999999999999", {"--threads", "out of range: allowed [0, 1024]"});
  expect_refused("generate -p hi --max-seqs 70000", {"--max-seqs", "out of range: allowed [0, 65536]"});
  expect_refused("generate -p hi --top-k 3000000000", {"--top-k", "out of range: allowed [0, 2147483647]"});
  expect_refused("generate -p hi --max-tokens 0", {"--max-tokens", "out of range: allowed [1, "});
  expect_refused("generate -p hi --logprobs 101", {"--logprobs", "out of range: allowed [0, 100]"});
  expect_refused("perplexity --text-file x --ctx 2", {"--ctx", "out of range: allowed [4, 16777216]"});
  expect_refused("logits --tokens x -o y --chunk -3", {"--chunk", "out of range"});
  expect_refused("generate -p hi --seed 12a", {"--seed", "'12a' is not an integer"});
  expect_refused("generate -p hi --ctx-size ' 5'", {"--ctx-size", "is not an integer"});
  TempDir d("ints");
  write_file(d.path() / "t.json", "[1, 99999999999999999999]");
  expect_refused("logits --tokens " + (d.path() / "t.json").string() + " -o x.npy",
                 {"element 1", "out of range: allowed [0, 2147483647]"});
  expect_refused("tokenize --decode '[1, 99999999999999999999]'", {"--decode: element 1", "out of range: allowed [0, 2147483647]"});
  json cfg = json::parse(dsv4::tiny_config_json());
  std::string text = cfg.dump();
  text.replace(text.find("\"num_hidden_layers\":6"), 21, "\"num_hidden_layers\":1e30");
  write_file(d.path() / "c.json", text);
  expect_refused("make-skeleton " + (d.path() / "m").string() + " --config " + (d.path() / "c.json").string(),
                 {"num_hidden_layers", "out of range: allowed [1, 256]"});
}

TEST(HostileInputs, StrayArgumentsAndZeroShards) {
  expect_refused("generate -p hi extra", {"unexpected argument 'extra'"});
  expect_refused("perplexity --text-file x stray", {"unexpected argument 'stray'"});
  expect_refused("logits stray", {"unexpected argument 'stray'"});
  expect_refused("encode --messages x stray", {"unexpected argument 'stray'"});
  expect_refused("inspect a b", {"unexpected argument 'b'"});
  TempDir d("shards");
  expect_refused("make-skeleton " + (d.path() / "m").string() + " --family tiny --shards 0",
                 {"--shards", "out of range: allowed [1, "});
  expect_refused("make-skeleton " + (d.path() / "m").string() + " extra --family tiny", {"unexpected argument 'extra'"});
}

// Perplexity on bytes that are not UTF-8 is refused with the offset, as generate refuses them.
TEST(HostileInputs, PerplexityTextNotUtf8) {
  TempDir d("utf8");
  write_file(d.path() / "t.txt", "valid text, then \xff\xfe and more");
  expect_refused("perplexity --text-file " + (d.path() / "t.txt").string(), {"t.txt", "not valid UTF-8 at byte 17"});
}

// A model whose layer 1 key/value projection holds a NaN: every subcommand that meets non-finite
// logits or losses names the first layer and tensor where a NaN appeared, not only the token.
class NonFiniteModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("nan");
    json cfg = json::parse(read_file(kNano / "config.json"));
    write_file(dir_->path() / "config.json.in", cfg.dump());
    model_ = dir_->path() / "model";
    const RunResult r = dsv4("make-skeleton " + model_.string() + " --config " +
                             (dir_->path() / "config.json.in").string() + " --random 3 --layers 2 --shards 1");
    ASSERT_EQ(r.rc, 0) << r.out;
    fs::copy_file(kNano / "tokenizer.json", model_ / "tokenizer.json");
    const dsv4::Checkpoint ck = dsv4::Checkpoint::open(model_);
    const dsv4::TensorView& t = ck.get("layers.1.attn.wkv.weight");  // E4M3: 0x7F is NaN
    ASSERT_EQ(t.dtype, dsv4::DType::kF8_E4M3);
    std::fstream f(model_ / t.file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(t.file_offset + 3 * t.shape[1] + 5));
    f.put(char(0x7F));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static TempDir* dir_;
  static fs::path model_;
};
TempDir* NonFiniteModel::dir_ = nullptr;
fs::path NonFiniteModel::model_;

TEST_F(NonFiniteModel, LogitsNameLayerAndTensor) {
  write_file(dir_->path() / "t.json", "[0, 5, 17, 3]");
  expect_refused("logits -m " + model_.string() + " --tokens " + (dir_->path() / "t.json").string() + " -o " +
                     (dir_->path() / "o.npy").string(),
                 {"the logits at position 0 are not finite", "the first non-finite value appears in layer 1's attn.kv"});
  EXPECT_FALSE(fs::exists(dir_->path() / "o.npy"));
}

TEST_F(NonFiniteModel, GenerateNamesLayerAndTensor) {
  expect_refused("generate -m " + model_.string() + " --raw -p hello --max-tokens 3 --temp 0",
                 {"logits", "the first non-finite value appears in layer 1's attn.kv"});
}

TEST_F(NonFiniteModel, PerplexityNamesThePosition) {
  write_file(dir_->path() / "t.txt", "In the beginning God created the heaven and the earth.");
  const RunResult r = dsv4("perplexity -m " + model_.string() + " --ctx 8 --text-file " + (dir_->path() / "t.txt").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("chunk 1: the loss at position 5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the first non-finite value appears in layer 1's attn.kv"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("[1]nan"), std::string::npos) << r.out;
}

// encode raises where the official encoder raises, and warns about a tool result without a call.
TEST(HostileInputs, EncodeRaisesLikeTheReference) {
  TempDir d("encode");
  write_file(d.path() / "bad.json",
             R"([{"role":"user","content":"q"},{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}])");
  expect_refused("encode --messages " + (d.path() / "bad.json").string(),
                 {"messages[1].tool_calls[0].function.arguments: not valid JSON"});
  write_file(d.path() / "orphan.json", R"([{"role":"user","content":"q"},{"role":"tool","tool_call_id":"x","content":"r"}])");
  const RunResult r = dsv4("encode --messages " + (d.path() / "orphan.json").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("warning: messages[1]: a tool result before any assistant tool call"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("<tool_result>r</tool_result>"), std::string::npos) << r.out;
}

// -m defaults to the embedded model in every subcommand that takes one.
TEST(HostileInputs, EmbeddedModelByDefault) {
  if (!fs::exists(kNano / "config.json")) GTEST_SKIP() << "no embedded model";
  TempDir d("default");
  write_file(d.path() / "t.txt", read_file(kNano / "validation.txt").substr(0, 4000));
  RunResult r = dsv4("perplexity --text-file " + (d.path() / "t.txt").string() + " --ctx 64 --chunks 1");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("perplexity: "), std::string::npos) << r.out;
  write_file(d.path() / "t.json", "[0, 5, 17]");
  r = dsv4("logits --tokens " + (d.path() / "t.json").string() + " -o " + (d.path() / "o.npy").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  r = dsv4("compare --tokens " + (d.path() / "t.json").string() + " --a cpu-exact --b cpu-official");
  EXPECT_EQ(r.rc, 0) << r.out;
  r = dsv4("inspect");
  EXPECT_EQ(r.rc, 0) << r.out;
}

}  // namespace
