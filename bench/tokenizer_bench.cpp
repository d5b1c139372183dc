// Encode throughput of the tokenizer on one core, against the 5 MB/s target of issue 4: a multi-MB
// corpus of Debian text and code plus the multilingual golden strings, cold and warm word cache.
// Prints MB/s, the ratio to the target, the CPU and the date. Correctness is tests/tokenizer.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {

constexpr double kTargetMBps = 5.0;  // issue 4: >= 5 MB/s encode on one core
constexpr size_t kCorpusBytes = 8u << 20;

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// Texts of the golden cases: English, code, CJK, emoji, digits, whitespace, other scripts.
std::string golden_texts(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string out, line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("text")) out += j["text"].get<std::string>() + "\n";
  }
  return out;
}

std::string repeat_to(const std::string& unit, size_t bytes) {
  std::string out;
  if (unit.empty()) return out;
  while (out.size() < bytes) out += unit;
  return out;
}

struct Result {
  double cold_mbps, warm_mbps;
  size_t n_tokens;
};

Result measure(const std::filesystem::path& tok_path, const std::string& text) {
  const dsv4::Tokenizer tok = dsv4::Tokenizer::load(tok_path);  // fresh word cache
  auto run = [&](size_t& n_tokens) {
    const auto t0 = std::chrono::steady_clock::now();
    n_tokens = tok.encode(text).size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<double>(text.size()) / 1e6 / s;
  };
  Result r{};
  r.cold_mbps = run(r.n_tokens);
  r.warm_mbps = 0;
  for (int i = 0; i < 3; ++i) r.warm_mbps = std::max(r.warm_mbps, run(r.n_tokens));
  return r;
}

}  // namespace

// usage: bench_tokenizer_bench [SOURCE_ROOT [TEXT_FILE...]]
//   SOURCE_ROOT holds .cache/deepseek-v4/tokenizer.json and testdata/ (default: this checkout);
//   TEXT_FILEs replace the default Debian license and C++ header texts.
int main(int argc, char** argv) {
  const std::filesystem::path src = argc > 1 ? argv[1] : DSV4_SOURCE_DIR;
  const std::filesystem::path tok_path = src / ".cache/deepseek-v4/tokenizer.json";
  std::vector<std::string> text_files(argv + std::min(argc, 2), argv + argc);
  if (text_files.empty())
    text_files = {"/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0",
                  "/usr/include/c++/12/bits/stl_algo.h", "/usr/include/c++/12/bits/basic_string.h"};
  try {
    std::string debian;
    for (const std::string& f : text_files) {
      if (!std::filesystem::exists(f)) dsv4::fail(f, ": no such text file");
      debian += read_all(f);
    }
    const std::string golden = golden_texts(src / "testdata/tokenizer/v4_encode_goldens.jsonl");
    std::string cjk_only, emoji_only;
    {
      std::ifstream in(src / "testdata/tokenizer/v4_encode_goldens.jsonl");
      for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line);
        if (!j.contains("text")) continue;
        if (j["label"] == "cjk") cjk_only += j["text"].get<std::string>() + "\n";
        if (j["label"] == "emoji" || j["label"] == "random_unicode") emoji_only += j["text"].get<std::string>() + "\n";
      }
    }
    struct Corpus {
      const char* name;
      std::string text;
    };
    const Corpus corpora[] = {
        {"mix: Debian text+code and golden strings", repeat_to(debian + golden, kCorpusBytes)},
        {"Debian text+code only", repeat_to(debian, kCorpusBytes)},
        {"golden strings only (multilingual)", repeat_to(golden, kCorpusBytes)},
        {"CJK golden strings only", repeat_to(cjk_only, kCorpusBytes / 4)},
        {"emoji + random code points", repeat_to(emoji_only, kCorpusBytes / 4)},
    };
    const std::time_t now = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    std::printf("tokenizer encode, one thread; %s; %s\ntokenizer: %s\ntext files:", cpu_name().c_str(),
                date, tok_path.string().c_str());
    for (const std::string& f : text_files) std::printf(" %s", f.c_str());
    std::printf("\n");
    for (const Corpus& c : corpora) {
      const Result r = measure(tok_path, c.text);
      std::printf("%-42s %5.1f MB %8zu tokens  cold %6.2f MB/s (%.2fx target)  warm %6.2f MB/s (%.2fx)\n",
                  c.name, c.text.size() / 1e6, r.n_tokens, r.cold_mbps, r.cold_mbps / kTargetMBps,
                  r.warm_mbps, r.warm_mbps / kTargetMBps);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
