// `dsv4 tokenize`: text -> token ids (or ids -> text with --decode) with the byte-level BPE of a
// tokenizer.json. The tokenizer itself is src/tokenizer/; this file only parses options and prints.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/command.h"
#include "cli/token_file.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file_read.h"
#include "util/utf8.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 tokenize [-m DIR | --tokenizer FILE] (--text T | --text-file F) [--json]\n"
    "       dsv4 tokenize [-m DIR | --tokenizer FILE] --decode IDS [--skip-special] [--json]\n"
    "  -m DIR           use DIR/tokenizer.json (default: the embedded models/nano)\n"
    "  --tokenizer FILE use this tokenizer.json\n"
    "  --text T         text to encode; --text-file F reads it from a file ('-': stdin)\n"
    "  --decode IDS     ids as a JSON array or a comma list, e.g. [0,128803] or 0,128803\n"
    "  --json           print a JSON object (ids and token strings, or the text)\n"
    "Text that is not valid UTF-8 is encoded as if each invalid sequence were U+FFFD.\n";

std::filesystem::path tokenizer_path(const Args& args) {
  if (args.has("--tokenizer") && args.has("--model")) fail("give either -m or --tokenizer, not both");
  if (auto file = args.get("--tokenizer")) return *file;
  if (auto dir = args.get("--model")) return std::filesystem::path(*dir) / "tokenizer.json";
  const auto embedded = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano/tokenizer.json";
  if (!std::filesystem::exists(embedded))
    fail("no tokenizer given (-m DIR or --tokenizer FILE) and the embedded ", embedded.string(),
         " does not exist");
  return embedded;
}

constexpr uint64_t kMaxTextBytes = uint64_t(1) << 30;

std::string read_file(const std::string& path) {
  if (path != "-") return read_input_file(path, kMaxTextBytes);
  std::ostringstream buf;
  buf << std::cin.rdbuf();
  return buf.str();
}

// "[1, 2, 3]" (JSON) or "1,2,3".
std::vector<int32_t> parse_ids(const std::string& spec) {
  nlohmann::json j;
  const bool json_array = spec.find('[') != std::string::npos;
  try {
    j = nlohmann::json::parse(json_array ? spec : "[" + spec + "]");
  } catch (const nlohmann::json::exception& e) {
    fail("--decode: expected a JSON array or a comma list of ids: ", e.what());
  }
  if (!j.is_array()) fail("--decode: expected a JSON array of ids");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j.size(); ++i) ids.push_back(token_id_from_json(j[i], cat("--decode: element ", i)));
  return ids;
}

int run_tokenize(const std::vector<std::string>& argv) {
  const Args args(argv, {"--model", "--tokenizer", "--text", "--text-file", "--decode"},
                  {"--json", "--skip-special", "--help"}, {{"-m", "--model"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const int n_inputs = args.has("--text") + args.has("--text-file") + args.has("--decode");
  if (n_inputs != 1) fail("give exactly one of --text, --text-file, --decode\n", kUsage);
  const std::filesystem::path tokenizer_file = tokenizer_path(args);
  require_regular_file(tokenizer_file);  // before the loader opens it (a FIFO would block)
  const Tokenizer tok = Tokenizer::load(tokenizer_file);
  const bool json = args.has("--json");

  if (auto ids_spec = args.get("--decode")) {
    const std::vector<int32_t> ids = parse_ids(*ids_spec);
    const std::string text = tok.decode(ids, args.has("--skip-special"));
    if (json)
      std::cout << nlohmann::json{{"text", text}}.dump() << "\n";
    else
      std::cout << text;
    return 0;
  }
  const std::string text = args.has("--text") ? *args.get("--text") : read_file(*args.get("--text-file"));
  if (const size_t valid = utf8::valid_prefix_length(text); valid != text.size())
    std::fprintf(stderr, "dsv4 tokenize: warning: input is not valid UTF-8 at byte %zu; "
                 "invalid sequences are encoded as U+FFFD\n", valid);
  const std::vector<int32_t> ids = tok.encode(text);
  if (json) {
    nlohmann::json tokens = nlohmann::json::array();
    for (int32_t id : ids) tokens.push_back(tok.token_text(id));
    std::cout << nlohmann::json{{"ids", ids}, {"tokens", tokens}}.dump() << "\n";
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

DSV4_COMMAND("tokenize", "text -> token ids, or ids -> text (--decode)", run_tokenize);

}  // namespace dsv4::cli
